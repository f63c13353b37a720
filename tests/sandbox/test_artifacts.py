"""Artifacts: only regular files under /work/outputs, never through links, within the caps;
and after every run, whatever its end, the host keeps no run directory, cgroup or mount."""

from __future__ import annotations

import io
import os
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Backend, Limits, RunResult, RunSpec, Status
from sandbox.spec import InputFile

HOST_PASSWD = Path("/etc/passwd").read_bytes()


def _src(code: str) -> str:
    return textwrap.dedent(code).lstrip("\n")


def _leftovers(backend: Backend) -> list[str]:
    """Everything a finished run must not leave on the host (dirs, mounts, cgroups, containers)."""
    return backend.leftovers()


@pytest.fixture(autouse=True)
def no_leftovers(backend: Backend) -> Iterator[None]:
    """Every test in this file also checks that its runs left nothing behind."""
    yield
    assert _leftovers(backend) == []


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _assert_nothing_of_host_passwd(tmp_path: Path) -> None:
    """No copied artifact holds the host's /etc/passwd (the sandbox's own synthetic one differs)."""
    for path in _files_under(tmp_path / "artifacts"):
        assert not path.is_symlink(), path
        data = path.read_bytes()
        assert data != HOST_PASSWD, path
        assert b"root:x:0:0:root:/root:" not in data, path


def test_it_collects_regular_files_beside_refused_symlinks(run, tmp_path: Path) -> None:
    code = _src("""
        import os
        os.symlink("/etc/passwd", "outputs/passwd")
        os.symlink("/etc", "outputs/etc-dir")
        os.symlink("../main.py", "outputs/main-link.py")
        os.symlink("/nonexistent", "outputs/dangling")
        with open("outputs/ok.txt", "w") as f:
            f.write("regular")
        """)
    result = run("python", code)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert [a.path for a in result.artifacts] == ["outputs/ok.txt"]
    assert Path(result.artifacts[0].local_path or "").read_bytes() == b"regular"
    skipped = {s.path for s in result.skipped_artifacts}
    assert {"outputs/passwd", "outputs/etc-dir", "outputs/main-link.py", "outputs/dangling"} <= skipped
    assert _files_under(tmp_path / "artifacts") == [tmp_path / "artifacts" / "outputs" / "ok.txt"]
    _assert_nothing_of_host_passwd(tmp_path)


def test_it_never_collects_a_symlink_to_etc_passwd(run, tmp_path: Path) -> None:
    result = run("python", "import os\nos.symlink('/etc/passwd', 'outputs/passwd.txt')\n")
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.artifacts == []
    assert [s.path for s in result.skipped_artifacts] == ["outputs/passwd.txt"]
    assert result.usage.artifact_bytes == 0
    assert _files_under(tmp_path / "artifacts") == []
    _assert_nothing_of_host_passwd(tmp_path)


@pytest.mark.parametrize("target", ["/", "/etc", "/work"])
def test_it_collects_nothing_when_outputs_itself_is_a_symlink(run, tmp_path: Path, target: str) -> None:
    code = _src(f"""
        import os, shutil
        with open("stray.txt", "w") as f:
            f.write("not an artifact")
        shutil.rmtree("outputs")
        os.symlink({target!r}, "outputs")
        """)
    result = run("python", code)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.artifacts == []
    assert result.usage.artifact_bytes == 0
    assert _files_under(tmp_path / "artifacts") == []


def test_it_collects_nothing_when_outputs_is_a_regular_file(run, tmp_path: Path) -> None:
    code = "import shutil\nshutil.rmtree('outputs')\nopen('outputs', 'w').write('a file, not a dir')\n"
    result = run("python", code)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.artifacts == []
    assert _files_under(tmp_path / "artifacts") == []


def test_it_skips_a_fifo_without_hanging(backend: Backend, tmp_path: Path) -> None:
    code = _src("""
        import os
        os.mkfifo("outputs/pipe")
        os.makedirs("outputs/sub")
        os.mkfifo("outputs/sub/pipe2")
        with open("outputs/after.txt", "w") as f:
            f.write("still collected")
        """)
    out = tmp_path / "artifacts"
    out.mkdir()
    box: list[RunResult | BaseException] = []

    def target() -> None:
        try:
            box.append(backend.run(RunSpec(language="python", code=code), artifacts_dir=out))
        except BaseException as exc:  # reported below, on the test's thread
            box.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "collecting artifacts hung on a FIFO"
    result = box[0]
    assert isinstance(result, RunResult), result
    assert result.status == Status.SUCCEEDED, result.stderr
    assert [a.path for a in result.artifacts] == ["outputs/after.txt"]
    skipped = {s.path: s.reason for s in result.skipped_artifacts}
    assert set(skipped) == {"outputs/pipe", "outputs/sub/pipe2"}
    assert _files_under(out) == [out / "outputs" / "after.txt"]


def test_it_never_exposes_a_hard_linked_file_from_outside_outputs(run, tmp_path: Path) -> None:
    secret = b"input-secret-content"
    code = _src("""
        import os
        made = []
        for src, name in (("/work/main.py", "code-link.py"), ("/work/private.txt", "private-link.txt"),
                          ("/work/inputs/secret.txt", "input-link.txt"), ("/tmp/t.txt", "tmp-link.txt")):
            if src == "/work/private.txt":
                open(src, "w").write("private-but-in-work")
            if src == "/tmp/t.txt":
                open(src, "w").write("tmp-content")
            try:
                os.link(src, "outputs/" + name)
                made.append(name)
            except OSError as exc:
                pass
        print(" ".join(made))
        """)
    result = run("python", code, files=(InputFile.from_bytes("secret.txt", secret),))
    assert result.status == Status.SUCCEEDED, result.stderr
    made = result.stdout.split()
    assert "private-link.txt" in made  # a hard link inside /work is possible, so the collector must face it
    for artifact in result.artifacts:
        data = Path(artifact.local_path or "").read_bytes()
        # Only files of this run's /work may ever show up, and never an input nor /tmp through a link.
        assert data in (code.encode(), b"private-but-in-work"), (artifact.path, data[:100])
    collected = {a.path for a in result.artifacts}
    assert "outputs/input-link.txt" not in collected
    assert "outputs/tmp-link.txt" not in collected
    for name in made:
        assert f"outputs/{name}" in collected | {s.path for s in result.skipped_artifacts}
    for path in _files_under(tmp_path / "artifacts"):
        assert path.read_bytes() != secret


def test_it_skips_hard_links_inside_outputs(run) -> None:
    # SPEC: hard links are never copied; a link between two outputs is one file under two names.
    code = _src("""
        import os
        open("outputs/a.txt", "w").write("linked")
        os.link("outputs/a.txt", "outputs/b.txt")
        open("outputs/c.txt", "w").write("single")
        """)
    result = run("python", code)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert [a.path for a in result.artifacts] == ["outputs/c.txt"]
    assert {s.path for s in result.skipped_artifacts} == {"outputs/a.txt", "outputs/b.txt"}


def test_it_stops_at_max_artifacts(run, tmp_path: Path) -> None:
    code = "for name in 'abcde':\n    open(f'outputs/{name}.txt', 'w').write(name * 3)\n"
    result = run("python", code, max_artifacts=3)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert len(result.artifacts) == 3
    assert [a.path for a in result.artifacts] == ["outputs/a.txt", "outputs/b.txt", "outputs/c.txt"]
    assert [s.path for s in result.skipped_artifacts] == ["outputs/d.txt", "outputs/e.txt"]
    assert all("max_artifacts" in s.reason for s in result.skipped_artifacts)
    assert len(_files_under(tmp_path / "artifacts")) == 3
    assert result.usage.artifact_bytes == 9


def test_it_collects_nothing_with_max_artifacts_zero(run, tmp_path: Path) -> None:
    result = run("python", "open('outputs/a.txt', 'w').write('a')\n", max_artifacts=0)
    assert result.status == Status.SUCCEEDED
    assert result.artifacts == []
    assert [s.path for s in result.skipped_artifacts] == ["outputs/a.txt"]
    assert _files_under(tmp_path / "artifacts") == []


def test_it_skips_a_file_larger_than_max_artifact_bytes(run, tmp_path: Path) -> None:
    code = _src("""
        open("outputs/big.bin", "wb").write(b"B" * 5000)
        open("outputs/exact.bin", "wb").write(b"E" * 1000)
        open("outputs/small.txt", "w").write("small")
        """)
    result = run("python", code, max_artifact_bytes=1000)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert [a.path for a in result.artifacts] == ["outputs/exact.bin", "outputs/small.txt"]
    assert [s.path for s in result.skipped_artifacts] == ["outputs/big.bin"]
    assert "max_artifact_bytes" in result.skipped_artifacts[0].reason
    assert not (tmp_path / "artifacts" / "outputs" / "big.bin").exists()
    assert (tmp_path / "artifacts" / "outputs" / "exact.bin").read_bytes() == b"E" * 1000


def test_it_respects_max_artifacts_total_bytes(run, tmp_path: Path) -> None:
    code = "for name in ('a', 'b', 'c', 'd'):\n    open(f'outputs/{name}.bin', 'wb').write(name.encode() * 1000)\n"
    result = run("python", code, max_artifacts_total_bytes=2500)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert [a.path for a in result.artifacts] == ["outputs/a.bin", "outputs/b.bin"]
    assert sum(a.bytes for a in result.artifacts) <= 2500
    assert result.usage.artifact_bytes == 2000
    assert [s.path for s in result.skipped_artifacts] == ["outputs/c.bin", "outputs/d.bin"]
    assert all("max_artifacts_total_bytes" in s.reason for s in result.skipped_artifacts)
    on_disk = sum(p.stat().st_size for p in _files_under(tmp_path / "artifacts"))
    assert on_disk == 2000


def test_it_collects_nested_directories_with_relative_paths(run, tmp_path: Path) -> None:
    code = _src("""
        import os, json
        os.makedirs("outputs/a/b", exist_ok=True)
        os.makedirs("outputs/x", exist_ok=True)
        os.makedirs("outputs/empty", exist_ok=True)
        open("outputs/a/b/c.txt", "w").write("deep")
        open("outputs/top.txt", "w").write("top")
        json.dump({"k": 1}, open("outputs/x/data.json", "w"))
        """)
    result = run("python", code)
    assert result.status == Status.SUCCEEDED, result.stderr
    by_path = {a.path: a for a in result.artifacts}
    assert set(by_path) == {"outputs/a/b/c.txt", "outputs/top.txt", "outputs/x/data.json"}
    expected = {"outputs/a/b/c.txt": b"deep", "outputs/top.txt": b"top", "outputs/x/data.json": b'{"k": 1}'}
    for path, content in expected.items():
        artifact = by_path[path]
        assert artifact.local_path == str(tmp_path / "artifacts" / path)
        assert Path(artifact.local_path).read_bytes() == content
        assert artifact.bytes == len(content)
    assert by_path["outputs/x/data.json"].content_type == "application/json"
    assert result.skipped_artifacts == []


def test_it_collects_artifacts_of_a_failed_run(run) -> None:
    result = run("python", "open('outputs/partial.txt', 'w').write('partial')\nraise SystemExit(2)\n")
    assert result.status == Status.FAILED
    assert [a.path for a in result.artifacts] == ["outputs/partial.txt"]


def test_it_does_not_collect_files_outside_outputs(run, tmp_path: Path) -> None:
    code = "open('elsewhere.txt', 'w').write('x')\nopen('/tmp/t.txt', 'w').write('y')\n"
    result = run("python", code)
    assert result.status == Status.SUCCEEDED
    assert result.artifacts == []
    assert result.skipped_artifacts == []
    assert _files_under(tmp_path / "artifacts") == []


# ---- nothing left behind ------------------------------------------------------------------------


def test_it_leaves_nothing_behind_after_success(run, backend: Backend) -> None:
    result = run("python", "open('outputs/a.txt', 'w').write('a')\nprint('ok')\n")
    assert result.status == Status.SUCCEEDED
    assert _leftovers(backend) == []


def test_it_leaves_nothing_behind_after_a_failure(run, backend: Backend) -> None:
    result = run("python", "raise RuntimeError('x')\n")
    assert result.status == Status.FAILED
    assert _leftovers(backend) == []


def test_it_leaves_nothing_behind_after_a_timeout_with_orphans(run, backend: Backend) -> None:
    code = _src("""
        import os, subprocess, time
        subprocess.Popen(["sleep", "600"], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        open("outputs/before-timeout.txt", "w").write("t")
        while True:
            pass
        """)
    result = run("python", code, timeout_ms=1000, cpu_ms=10_000)
    assert result.status == Status.TIMEOUT
    assert _leftovers(backend) == []


def test_it_leaves_nothing_behind_after_a_go_build(run, backend: Backend) -> None:
    result = run("go", 'package main\n\nfunc main() { println("built") }\n')
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.stderr == "built\n"
    assert _leftovers(backend) == []


def test_it_leaves_nothing_behind_after_a_go_compile_error(run, backend: Backend) -> None:
    result = run("go", "package main\n\nfunc main() { nope }\n")
    assert result.status == Status.FAILED
    assert result.error is not None
    assert _leftovers(backend) == []


def _failing_input(exc: BaseException) -> InputFile:
    def open_() -> io.BytesIO:
        raise exc

    return InputFile(path="data.csv", size=10, open=open_)


@pytest.mark.parametrize(
    "exc", [OSError(5, "storage read failed"), RuntimeError("storage client crashed")], ids=["oserror", "runtime"]
)
def test_it_leaves_nothing_behind_when_staging_an_input_raises(
    backend: Backend, tmp_path: Path, exc: BaseException
) -> None:
    spec = RunSpec(language="python", code="print('never')", files=(_failing_input(exc),))
    try:
        result = backend.run(spec, artifacts_dir=tmp_path)
    except Exception as raised:  # either way is acceptable here; the host must stay clean
        assert raised is exc
    else:
        assert result.status == Status.ERROR
        assert result.error is not None
        assert result.stdout == ""
    assert _leftovers(backend) == []


def test_it_leaves_nothing_behind_when_the_artifact_destination_is_unusable(backend: Backend, tmp_path: Path) -> None:
    # The destination is a file, so copying the artifact fails half-way through collection.
    dest = tmp_path / "not-a-dir"
    dest.write_text("x")
    spec = RunSpec(language="python", code="open('outputs/a.txt', 'w').write('a')\n")
    try:
        result = backend.run(spec, artifacts_dir=dest)
    except Exception:
        pass
    else:
        assert result.status in (Status.ERROR, Status.SUCCEEDED)
    assert _leftovers(backend) == []


def test_it_leaves_nothing_behind_after_many_runs_in_parallel(backend: Backend, tmp_path: Path) -> None:
    results: list[RunResult] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        out = tmp_path / f"a{i}"
        out.mkdir()
        code = f"open('outputs/n.txt', 'w').write('{i}')\n" + ("while True: pass\n" if i % 2 else "")
        # The looping runs hit a short wall clock; the quick ones get plenty, so load cannot flip them.
        limits = Limits(timeout_ms=800 if i % 2 else 20_000, memory_mb=64)
        r = backend.run(RunSpec(language="python", code=code, limits=limits), artifacts_dir=out)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 4
    assert sorted(r.status.value for r in results) == ["succeeded", "succeeded", "timeout", "timeout"]
    assert _leftovers(backend) == []
    # Beyond the leftover check: only the warm pool's own sandboxes (bwrap) may be in the runs dir.
    assert [n for n in os.listdir(Path(backend.runs_dir)) if not n.startswith("warm-")] == []  # type: ignore[attr-defined]


def test_it_sees_a_live_run_in_the_leftover_check(backend: Backend, tmp_path: Path) -> None:
    # Proves the leftover check above is not vacuous: while a run is alive, all three kinds show up.
    done = threading.Event()

    def target() -> None:
        try:
            backend.run(RunSpec(language="python", code="import time\ntime.sleep(3)\n"), artifacts_dir=tmp_path)
        finally:
            done.set()

    threading.Thread(target=target, daemon=True).start()
    # bwrap makes the run's cgroup itself; under docker the engine owns the cgroup and we own the container.
    expected = {"dir", "mount", "container" if backend.name == "docker" else "cgroup"}
    kinds: set[str] = set()
    while not done.is_set() and kinds != expected:
        kinds |= {item.split(":", 1)[0] for item in _leftovers(backend)}
        done.wait(0.02)
    assert kinds == expected
    assert done.wait(30)


def test_it_reports_artifact_paths_as_valid_utf8_text(run) -> None:
    # Artifact paths go into JSON and the database; a name that is not UTF-8 cannot be text there.
    # It must be skipped (or renamed), never returned as a str holding lone surrogates.
    code = "open(b'outputs/\\xff\\xfe.txt', 'wb').write(b'x')\nopen('outputs/caf\\u00e9.txt', 'w').write('y')\n"
    result = run("python", code)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert "outputs/café.txt" in [a.path for a in result.artifacts]
    for item in [*result.artifacts, *result.skipped_artifacts]:
        item.path.encode("utf-8")  # raises UnicodeEncodeError for surrogate-escaped bytes
    assert len(result.artifacts) + len(result.skipped_artifacts) == 2
