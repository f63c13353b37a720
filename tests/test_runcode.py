"""`manage.py runcode`: one JSON object on stdout, exit 0 whenever the run executed, clear errors otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.cgroups import CgroupDriver

ROOT = Path(__file__).resolve().parent.parent
# bubblewrap runs as the sandbox uid and must traverse every parent of the work dir.
SANDBOX_WORKDIR = tempfile.mkdtemp(prefix="codeexec-runcode-", dir="/tmp")
os.chmod(SANDBOX_WORKDIR, 0o711)
CGROUP_PARENT = f"codeexec-test-runcode-{os.getpid()}"


@pytest.fixture(autouse=True, scope="module")
def _cleanup_workdir() -> Iterator[None]:
    yield
    shutil.rmtree(SANDBOX_WORKDIR, ignore_errors=True)
    CgroupDriver(CGROUP_PARENT).remove_parent()


def runcode(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, tmp_path: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {
        **os.environ,
        "DEBUG": "1",
        "SANDBOX_WORKDIR": SANDBOX_WORKDIR,
        "SANDBOX_CGROUP_PARENT": CGROUP_PARENT,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "runcode", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        env=full_env,
        timeout=120,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_it_prints_one_json_object(workdir: Path) -> None:
    src = workdir / "hello.py"
    src.write_text("import sys\nprint('hi', sys.argv[1:])\n")
    proc = runcode("--language", "python", str(src), tmp_path=workdir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "succeeded"
    assert doc["stdout"] == "hi []\n"
    assert doc["exit_code"] == 0
    assert doc["runtime_version"]
    assert doc["limits"]["timeout_ms"] == 10_000
    assert set(doc["usage"]) == {"wall_ms", "cpu_ms", "memory_peak_bytes", "output_bytes", "artifact_bytes"}


def test_it_reads_the_program_from_stdin_and_stdin_from_a_file(workdir: Path) -> None:
    data = workdir / "in.txt"
    data.write_text("hello world")
    proc = runcode("-l", "py", "--stdin", str(data), "-", stdin=b"print(input()[::-1])\n", tmp_path=workdir)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stdout"] == "dlrow olleh\n"


def test_it_exits_zero_for_a_failed_program(workdir: Path) -> None:
    proc = runcode("-l", "ruby", "-", stdin=b"exit 3\n", tmp_path=workdir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed"
    assert doc["exit_code"] == 3


def test_it_applies_limits_and_reports_timeouts(workdir: Path) -> None:
    proc = runcode(
        "-l", "python", "--limits", '{"timeout_ms": 500}', "-", stdin=b"import time\ntime.sleep(30)\n", tmp_path=workdir
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "timeout"
    assert doc["error"]["code"] == "wall_timeout"
    assert doc["limits"]["timeout_ms"] == 500
    assert doc["limits"]["cpu_ms"] == 500


def test_it_copies_artifacts_to_the_given_dir(workdir: Path) -> None:
    out = workdir / "out"
    code = b"open('outputs/result.txt', 'w').write('42')\n"
    proc = runcode("-l", "python", "--artifacts-dir", str(out), "-", stdin=code, tmp_path=workdir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["artifacts"] == [{"path": "outputs/result.txt", "bytes": 2}]
    assert (out / "outputs" / "result.txt").read_text() == "42"


def test_it_reports_go_compile_errors(workdir: Path) -> None:
    proc = runcode("-l", "go", "-", stdin=b"package main\nfunc main() { undefined() }\n", tmp_path=workdir)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed"
    assert doc["error"]["code"] == "compile_error"
    assert "undefined" in doc["stderr"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-l", "cobol", "-"], "Unsupported language 'cobol'"),
        (["-l", "python", "--limits", '{"memory_mb": 999999}', "-"], "limits.memory_mb"),
        (["-l", "python", "--limits", "not json", "-"], "--limits is not valid JSON"),
        (["-l", "python", "--limits", '{"bogus": 1}', "-"], "limits.bogus"),
        (["-l", "python", "/nonexistent/file.py"], "cannot read program file"),
        (["-l", "python", "--stdin", "-", "-"], "cannot both be read from standard input"),
    ],
)
def test_it_rejects_bad_arguments_clearly(workdir: Path, args: list[str], message: str) -> None:
    proc = runcode(*args, stdin=b"print(1)\n", tmp_path=workdir)
    assert proc.returncode != 0
    assert proc.stdout == b""
    assert message in proc.stderr.decode()


def test_it_refuses_a_non_empty_artifacts_dir(workdir: Path) -> None:
    out = workdir / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = runcode("-l", "python", "--artifacts-dir", str(out), "-", stdin=b"print(1)\n", tmp_path=workdir)
    assert proc.returncode != 0
    assert "not empty" in proc.stderr.decode()
    assert (out / "keep.txt").read_text() == "mine"


def test_it_leaves_no_mount_or_cgroup_behind(workdir: Path) -> None:
    """A one-shot command: the run's deferred teardown (tmpfs, cgroups, the version probe's) is done
    before it exits, not left to a thread that dies with it."""
    for code in (b"print('done')\n", b"package main\nfunc main() { undefined() }\n"):
        lang = "python" if code.startswith(b"print") else "go"
        proc = runcode("-l", lang, "-", stdin=code, tmp_path=workdir)
        assert proc.returncode == 0, proc.stderr
    mounts = Path("/proc/self/mountinfo").read_text()
    assert SANDBOX_WORKDIR not in mounts
    driver = CgroupDriver(CGROUP_PARENT)
    assert driver.existing_groups() == []
