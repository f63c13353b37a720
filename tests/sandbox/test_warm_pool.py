"""The warm pool, on every backend: sandboxes (bwrap) and containers (docker) started ahead for runs with
default settings. A run that takes one gets its own limits, zeroed counters, environment and files
exactly as on the cold path, and can be cancelled and timed out as a cold one; anything else runs cold;
the pool refills, survives a dead entry, and close() leaves nothing behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Limits, RunResult, RunSpec, Status, get_backend, get_language
from sandbox.backends.steps import BASE_ENV
from sandbox.cgroups import RunCgroup
from sandbox.result import ErrorCode
from sandbox.spec import InputFile

from .conftest import BACKENDS, fresh_pool, run_in_thread

POOL = 2
INTERPRETED = ("python", "node", "ruby", "php")
MIB = 1024 * 1024


@pytest.fixture(scope="module", params=BACKENDS)
def pooled(request: pytest.FixtureRequest) -> Iterator[Any]:
    with fresh_pool(request.param, "codeexec-pool", POOL) as (backend, _root):
        yield backend


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _full(backend: Any, language: str = "python") -> None:
    _wait(lambda: len(backend._pool.get(language, [])) == POOL, f"a full {language} pool")


def _run(backend: Any, code: str, language: str = "python", **fields: Any) -> tuple[RunResult, int]:
    if not get_language(language).compiled:
        _full(backend, language)
    before = backend.warm_used
    result = backend.run(RunSpec(language=language, code=code, **fields))
    return result, backend.warm_used - before


def _group(entry: Any) -> RunCgroup:
    """The cgroup the warm sandbox's processes are in (bwrap makes it; Docker makes a container's)."""
    return entry.cgroup if hasattr(entry, "cgroup") else entry.gated.cgroup  # type: ignore[no-any-return]


def _kill_idle(entry: Any) -> None:
    """What an operator might do to an idle warm sandbox: kill its process, or `docker kill` it."""
    if hasattr(entry, "proc"):
        os.kill(entry.proc.pid, signal.SIGKILL)
    else:
        entry.gated.container.kill()


def test_a_default_run_runs_in_a_sandbox_started_before_it(pooled: Any) -> None:
    _full(pooled)
    idle = {e.name for e in pooled._pool["python"]}
    spec = RunSpec(language="python", code="import time\ntime.sleep(2)\nprint('done')\n")
    thread, results = run_in_thread(pooled, spec)
    seen: set[str] = set()

    def taken() -> bool:
        seen.update(pooled.leftovers())  # what is on the host and not the pool's idle sandboxes
        return any(f"dir:{name}" in seen for name in idle)

    _wait(taken, "the run's sandbox")
    thread.join(30)
    assert results and results[0].status == Status.SUCCEEDED and results[0].stdout == "done\n"
    # While it ran, the run's directory, and its container or group, were those of an idle warm sandbox
    # (named before the run existed); nothing was made under the run's own id.
    (taken,) = {item[4:] for item in seen if item.startswith("dir:")}
    assert taken in idle
    kind, name = ("container", f"codeexec-{taken}-run") if pooled.name == "docker" else ("cgroup", f"{taken}.run")
    assert f"{kind}:{name}" in seen, seen
    assert not [item for item in seen if spec.run_id in item], seen


def test_a_warm_run_gets_its_own_limits(pooled: Any) -> None:
    result, used = _run(pooled, "print('warm')")
    assert (result.status, result.stdout, used) == (Status.SUCCEEDED, "warm\n", 1)
    # Memory below the pool's default: set in the cgroup when the run takes it, before its program starts.
    hog = "data = bytearray(200 * 1024 * 1024)\nprint(len(data))\n"
    result, used = _run(pooled, hog, limits=Limits(memory_mb=64))
    assert used == 1 and result.status == Status.OOM, (result.status, result.stderr[-300:])
    # And above it (the pool's sandboxes start with the default 256 MiB).
    big = "data = bytearray(300 * 1024 * 1024)\nfor i in range(0, len(data), 4096):\n    data[i] = 1\nprint('ok')\n"
    result, used = _run(pooled, big, limits=Limits(memory_mb=512))
    assert used == 1 and (result.status, result.stdout) == (Status.SUCCEEDED, "ok\n"), result.stderr[-300:]
    result, used = _run(pooled, "import time\ntime.sleep(10)\n", limits=Limits(timeout_ms=500))
    assert used == 1 and (result.status, result.error and result.error.code.value) == (Status.TIMEOUT, "wall_timeout")
    spin = "while True:\n    pass\n"
    result, used = _run(pooled, spin, limits=Limits(cpu_ms=300, timeout_ms=10_000))
    assert used == 1 and (result.status, result.error and result.error.code.value) == (Status.TIMEOUT, "cpu_timeout")
    fork = "import os\nkids = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(5); os._exit(0)\n        kids += 1\nexcept OSError:\n    print('stopped at', kids)\n"
    result, used = _run(pooled, fork, limits=Limits(pids=8))
    assert used == 1 and result.status == Status.SUCCEEDED, result.stderr[-300:]
    assert int(result.stdout.split()[-1]) < 8


def test_a_warm_run_counts_its_usage_from_zero(pooled: Any) -> None:
    _full(pooled)
    entries = list(pooled._pool["python"])
    burn = (
        "import sys, time\nsys.stdin.readline()\n"
        "data = bytearray(120 * 1024 * 1024)\nfor i in range(0, len(data), 4096):\n    data[i] = 1\n"
        "end = time.process_time() + 1.0\nwhile time.process_time() < end:\n    pass\n"
    )
    for entry in entries:  # the idle sandbox's group is charged a second of CPU and 120 MiB by another process
        group = _group(entry)
        proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
        group.add(proc.pid)
        proc.communicate(b"go\n", timeout=60)
        assert proc.returncode == 0
        assert (group.cpu_usage_ms() or 0) >= 900  # the charge is there: the assertions below can fail
    result, used = _run(pooled, "print('light')")
    assert used == 1 and result.status == Status.SUCCEEDED
    assert result.usage.cpu_ms is not None and result.usage.cpu_ms < 500, result.usage
    if not _group(entries[0]).v2:  # cgroup v2 cannot reset a group's memory peak (it is kept as is)
        assert result.usage.memory_peak_bytes is not None and result.usage.memory_peak_bytes < 100 * MIB


def test_a_warm_run_sees_its_own_files_and_a_clean_environment(pooled: Any) -> None:
    code = "import os, json\nprint(json.dumps({'cwd': os.getcwd(), 'files': sorted(os.listdir('.')), 'env': dict(os.environ), 'stdin': input()}))\n"
    result, used = _run(pooled, code, stdin="from stdin")
    assert used == 1 and result.status == Status.SUCCEEDED, result.stderr
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
        {"files": (InputFile(path="d.txt", size=1, open=lambda: io.BytesIO(data)),)},
    ):
        result, used = _run(pooled, "print('cold')", **fields)
        assert (result.status, result.stdout, used) == (Status.SUCCEEDED, "cold\n", 0), fields
    result, used = _run(pooled, 'package main\nimport "fmt"\nfunc main() { fmt.Println("go") }\n', language="go")
    assert result.status == Status.SUCCEEDED and used == 0  # compiled languages are never in the pool


def test_every_interpreted_language_has_warm_sandboxes(pooled: Any) -> None:
    code = {"node": "console.log('n')", "ruby": "puts 'r'", "php": '<?php echo "p\\n";'}
    for language, program in code.items():
        result, used = _run(pooled, program, language=language)
        assert used == 1 and result.status == Status.SUCCEEDED and result.stdout.strip() in "nrp", language


def test_a_dead_warm_sandbox_is_replaced_and_never_used(pooled: Any) -> None:
    _full(pooled)
    killed = list(pooled._pool["python"])
    # Holding the pool's lock keeps its thread from pruning them first: the run itself meets them.
    with pooled._pool_cond:
        for entry in killed:
            _kill_idle(entry)  # e.g. an operator's kill, while idle
        _wait(lambda: not any(e.alive() for e in killed), "the killed sandboxes to be gone")
        before = pooled.warm_used
        result = pooled.run(RunSpec(language="python", code="print('still fine')"))
    assert result.status == Status.SUCCEEDED and result.stdout == "still fine\n"
    assert pooled.warm_used == before  # it ran cold
    _wait(
        lambda: (
            len(pooled._pool["python"]) == POOL and all(e.alive() and e not in killed for e in pooled._pool["python"])
        ),
        "the dead sandboxes to be replaced",
    )


@pytest.mark.parametrize("where", ["this process", "another process"])
def test_a_run_on_a_warm_sandbox_can_be_cancelled(pooled: Any, where: str) -> None:
    _full(pooled)
    before = pooled.warm_used
    spec = RunSpec(language="python", code="import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    thread, results = run_in_thread(pooled, spec)
    _wait(lambda: pooled.warm_used > before, "the run to take a warm sandbox")
    time.sleep(0.3)
    # A worker cancels through its own backend; another process on this host has a backend of its own.
    canceller = pooled if where == "this process" else get_backend(pooled.name, pooled.config)
    started = time.monotonic()
    assert canceller.cancel(spec.run_id)
    thread.join(20)
    assert results, "the cancelled run did not end"
    assert time.monotonic() - started < 10
    assert results[0].status == Status.CANCELLED, (results[0].status, results[0].stderr[-300:])


@pytest.mark.parametrize("name", BACKENDS)
def test_close_leaves_no_sandbox_directory_mount_group_or_container(name: str) -> None:
    with fresh_pool(name, "codeexec-pool-close", 1) as (backend, root):
        _wait(lambda: all(len(backend._pool.get(n, [])) == 1 for n in INTERPRETED), "the pool")
        entries = [e for pool in backend._pool.values() for e in pool]
        dirs_before = sorted(os.listdir(root / "w" / "runs"))
        assert len(dirs_before) == 4 and all(d.startswith("warm-") for d in dirs_before)
        assert sorted(e.name for e in entries) == dirs_before
        assert backend.leftovers() == []  # the pool's own sandboxes are not leftovers of runs
        if name == "docker":
            running = backend._own_containers()
            assert sorted(c.name for c in running) == [f"codeexec-{d}-run" for d in dirs_before]
            assert all(c.attrs["HostConfig"]["NetworkMode"] == "none" for c in running)
        backend.close()
        assert os.listdir(root / "w" / "runs") == []
        assert backend.leftovers() == []
        if name == "docker":
            assert backend._own_containers() == []
        else:
            assert backend.cgroups.existing_groups() == []
            for entry in entries:
                pid = entry.proc.pid
                assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.parametrize("name", BACKENDS)
def test_the_janitor_removes_what_a_dead_workers_pool_left(name: str) -> None:
    with fresh_pool(name, "codeexec-pool-janitor", 1) as (backend, root):
        # The pool's thread must not prune them first: the janitor meets them as a crashed worker left them.
        with backend._pool_cond:
            assert backend.wait_for_pool(90)  # holds the lock again when it returns
            entries = [e for pool in backend._pool.values() for e in pool]
            for entry in entries:  # what the worker's death does to them: their directory locks are released
                os.close(entry.ws.lock_fd)
                entry.ws.lock_fd = None
            janitor = get_backend(name, backend.config)  # another process's backend on the same work dir
            removed = set(janitor.cleanup_orphans())
            kind, of = ("container", "codeexec-{}-run") if name == "docker" else ("cgroup", "{}.run")
            for entry in entries:
                assert {f"dir:{entry.name}", f"{kind}:{of.format(entry.name)}"} <= removed, removed
            assert os.listdir(root / "w" / "runs") == []
            if name == "docker":
                assert janitor._own_containers() == []
        new_pool = lambda: backend.wait_for_pool(1) and not set(backend._pool_names()) & {e.name for e in entries}  # noqa: E731
        _wait(new_pool, "a new pool")
        result = backend.run(RunSpec(language="python", code="print('after the janitor')"))
        assert result.status == Status.SUCCEEDED and backend.warm_used == 1


# ---- a compiled run's own step, started while it compiles ---------------------------------------------

GO_HELLO = 'package main\n\nimport "fmt"\n\nfunc main() {{ fmt.Println("built {tag}") }}\n'
GO_BROKEN = "package main\n\nfunc main() {{ undefined_{tag}() }}\n"


def _go(template: str) -> str:
    """A program no build cache has seen: its compile step really runs."""
    return template.format(tag=f"{os.getpid()}_{time.monotonic_ns()}")


def _own_items(backend: Any, run_id: str) -> set[str]:
    return {item for item in backend.leftovers() if run_id in item}


def test_a_compiled_runs_program_step_is_started_while_it_compiles(pooled: Any) -> None:
    code = _go(GO_HELLO)
    spec = RunSpec(language="go", code=code)
    before, warm_before = pooled.prestarted_used, pooled.warm_used
    thread, results = run_in_thread(pooled, spec)
    kind = "container" if pooled.name == "docker" else "cgroup"
    run_item, compile_item = (
        (f"container:codeexec-{spec.run_id}-run", f"container:codeexec-{spec.run_id}-compile")
        if pooled.name == "docker"
        else (f"cgroup:{spec.run_id}.run", f"cgroup:{spec.run_id}.compile")
    )
    both_seen = False
    while thread.is_alive():
        items = _own_items(pooled, spec.run_id)
        both_seen = both_seen or {run_item, compile_item} <= items
        time.sleep(0.01)
    thread.join()
    assert results and results[0].status == Status.SUCCEEDED, results[0].as_dict() if results else None
    assert results[0].stdout.startswith("built ")
    # The program ran in the sandbox started during the compile: the two existed at the same time.
    assert (pooled.prestarted_used, pooled.warm_used) == (before + 1, warm_before)
    assert both_seen, f"the run step's {kind} did not exist while the compiler ran"
    pooled.drain_cleanups()
    assert _own_items(pooled, spec.run_id) == set()


def test_a_failed_compile_discards_the_program_step_started_ahead(pooled: Any) -> None:
    before = pooled.prestarted_used
    spec = RunSpec(language="go", code=_go(GO_BROKEN))
    result = pooled.run(spec)
    assert result.status == Status.FAILED and result.error is not None
    assert result.error.code == ErrorCode.COMPILE_ERROR, result.as_dict()
    assert pooled.prestarted_used == before
    assert spec.run_id not in pooled._prestarting and spec.run_id not in pooled._warm_taken
    pooled.drain_cleanups()
    assert _own_items(pooled, spec.run_id) == set()


def test_a_run_cancelled_while_it_compiles_leaves_nothing(pooled: Any) -> None:
    # A compile that takes long: many generated functions.
    body = "\n".join(f"func f{i}(x int) int {{ return x*{i} + {i} }}" for i in range(4000))
    code = _go(
        'package main\n\nimport "fmt"\n\n'
        + body.replace("{", "{{").replace("}", "}}")
        + '\n\nfunc main() {{ fmt.Println(f1(1), "{tag}") }}\n'
    )
    spec = RunSpec(language="go", code=code)
    thread, results = run_in_thread(pooled, spec)
    compile_item = (
        f"container:codeexec-{spec.run_id}-compile" if pooled.name == "docker" else f"cgroup:{spec.run_id}.compile"
    )
    _wait(lambda: compile_item in _own_items(pooled, spec.run_id), "the compile step", 60)
    assert pooled.cancel(spec.run_id)
    thread.join(60)
    assert results and results[0].status == Status.CANCELLED, results[0].as_dict() if results else None
    pooled.drain_cleanups()
    assert _own_items(pooled, spec.run_id) == set()
