"""The bwrap backend's warm pool: sandboxes started ahead for runs with default settings. A run that
takes one gets its own limits, environment and files exactly as on the cold path; anything else runs
cold; the pool refills, survives a dead entry, and close() leaves nothing behind."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Limits, RunSpec, SandboxConfig, Status, get_backend, get_language
from sandbox.backends.steps import BASE_ENV
from sandbox.spec import InputFile

POOL = 2


@pytest.fixture(scope="module")
def pooled() -> Iterator[Any]:
    root = Path(tempfile.mkdtemp(prefix="codeexec-pool-", dir="/tmp"))
    os.chmod(root, 0o711)
    backend = get_backend(
        "bwrap", SandboxConfig(workdir=root / "w", cgroup_parent=f"codeexec-pool-{os.getpid()}", warm_pool=POOL)
    )
    backend.check()
    backend.start_pool()
    yield backend
    backend.close()
    leftovers = backend.leftovers()
    backend.cleanup_orphans()
    backend.cgroups.remove_parent()  # type: ignore[attr-defined]
    assert leftovers == []


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _full(backend: Any, language: str = "python") -> None:
    _wait(lambda: len(backend._pool.get(language, [])) == POOL, f"a full {language} pool")


def _run(backend: Any, code: str, language: str = "python", **fields: Any) -> Any:
    if not get_language(language).compiled:
        _full(backend, language)
    before = backend.warm_used
    result = backend.run(RunSpec(language=language, code=code, **fields))
    return result, backend.warm_used - before


def test_a_default_run_takes_a_warm_sandbox_and_gets_its_own_limits(pooled: Any) -> None:
    result, used = _run(pooled, "print('warm')")
    assert (result.status, result.stdout, used) == (Status.SUCCEEDED, "warm\n", 1)
    # Memory below the pool's default: set on the group when the run takes it, before its program starts.
    hog = "data = bytearray(200 * 1024 * 1024)\nprint(len(data))\n"
    result, used = _run(pooled, hog, limits=Limits(memory_mb=64))
    assert used == 1 and result.status == Status.OOM, (result.status, result.stderr[-300:])
    result, used = _run(pooled, "import time\ntime.sleep(10)\n", limits=Limits(timeout_ms=500))
    assert used == 1 and result.status == Status.TIMEOUT
    fork = "import os\nkids = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(5); os._exit(0)\n        kids += 1\nexcept OSError:\n    print('stopped at', kids)\n"
    result, used = _run(pooled, fork, limits=Limits(pids=8))
    assert used == 1 and result.status == Status.SUCCEEDED, result.stderr[-300:]
    assert int(result.stdout.split()[-1]) < 8


def test_a_warm_run_sees_its_own_files_and_a_clean_environment(pooled: Any) -> None:
    code = "import os, json\nprint(json.dumps({'cwd': os.getcwd(), 'files': sorted(os.listdir('.')), 'env': dict(os.environ), 'stdin': input()}))\n"
    result, used = _run(pooled, code, stdin="from stdin")
    assert used == 1 and result.status == Status.SUCCEEDED, result.stderr
    import json

    seen = json.loads(result.stdout)
    assert seen["cwd"] == "/work" and seen["files"] == ["inputs", "main.py", "outputs"]
    assert seen["stdin"] == "from stdin"
    assert "warm" not in " ".join(seen["env"].values())
    assert seen["env"] == {**BASE_ENV, **get_language("python").env, "PWD": "/work"}


def test_runs_that_do_not_fit_take_the_cold_path(pooled: Any) -> None:
    data = b"x"
    for fields in (
        {"env": {"GREETING": "hi"}},
        {"args": ("a",)},
        {"limits": Limits(disk_mb=32)},
        {"files": (InputFile(path="d.txt", size=1, open=lambda: __import__("io").BytesIO(data)),)},
    ):
        result, used = _run(pooled, "print('cold')", **fields)
        assert (result.status, result.stdout, used) == (Status.SUCCEEDED, "cold\n", 0), fields
    result, used = _run(pooled, 'package main\nimport "fmt"\nfunc main() { fmt.Println("go") }\n', language="go")
    assert result.status == Status.SUCCEEDED and used == 0  # compiled languages are never warm


def test_every_interpreted_language_has_warm_sandboxes(pooled: Any) -> None:
    code = {"node": "console.log('n')", "ruby": "puts 'r'", "php": '<?php echo "p\\n";'}
    for language, program in code.items():
        result, used = _run(pooled, program, language=language)
        assert used == 1 and result.status == Status.SUCCEEDED and result.stdout.strip() in "nrp", language


def test_a_dead_warm_sandbox_is_replaced_and_never_used(pooled: Any) -> None:
    _full(pooled)
    killed = list(pooled._pool["python"])
    for entry in killed:
        os.kill(entry.proc.pid, signal.SIGKILL)  # e.g. an operator's kill, while idle
    _wait(lambda: all(e.proc.poll() is not None for e in killed), "the killed sandboxes to be gone")
    result = pooled.run(RunSpec(language="python", code="print('still fine')"))
    assert result.status == Status.SUCCEEDED and result.stdout == "still fine\n"
    _wait(
        lambda: len(pooled._pool["python"]) == POOL and all(e.proc.poll() is None for e in pooled._pool["python"]),
        "the dead sandboxes to be replaced",
    )


def test_close_leaves_no_process_directory_mount_or_group() -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="codeexec-pool-close-", dir="/tmp"))
    os.chmod(tmp_path, 0o711)
    backend: Any = get_backend(
        "bwrap", SandboxConfig(workdir=tmp_path / "w", cgroup_parent=f"codeexec-pool-close-{os.getpid()}", warm_pool=1)
    )
    backend.start_pool()
    _wait(lambda: all(len(backend._pool.get(n, [])) == 1 for n in ("python", "node", "ruby", "php")), "the pool")
    pids = [e.proc.pid for pool in backend._pool.values() for e in pool]
    assert len(pids) == 4
    dirs_before = sorted(os.listdir(tmp_path / "w" / "runs"))
    assert len(dirs_before) == 4 and all(name.startswith("warm-") for name in dirs_before)
    assert backend.leftovers() == []  # the pool's own sandboxes are not leftovers of runs
    backend.close()
    assert os.listdir(tmp_path / "w" / "runs") == []
    assert backend.leftovers() == []
    assert backend.cgroups.existing_groups() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    backend.cgroups.remove_parent()
    os.rmdir(tmp_path / "w" / "runs")
