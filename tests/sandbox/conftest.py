"""Fixtures for the sandbox conformance suite: a real backend running real interpreters."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sandbox import Backend, Limits, RunResult, RunSpec, SandboxConfig, get_backend
from sandbox.spec import InputFile, SourceFile

# Backends the suite runs against (CI: bwrap,docker).
BACKENDS = [b for b in os.environ.get("CODEEXEC_TEST_BACKENDS", "bwrap").split(",") if b]


@pytest.fixture(scope="session")
def sandbox_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="codeexec-test-", dir="/tmp"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, sandbox_root: Path) -> Iterator[Backend]:
    config = SandboxConfig(workdir=sandbox_root / request.param, cgroup_parent=f"codeexec-test-{os.getpid()}")
    b = get_backend(request.param, config)
    b.check()  # fails loudly when bwrap, root, cgroups or seccomp are missing
    b.start_pool()  # as a worker does: runs that fit take warm sandboxes, so the suite covers both paths
    yield b
    warm_used = getattr(b, "warm_used", 0)
    b.close()
    leftovers = b.leftovers()
    b.cleanup_orphans()
    if request.param == "bwrap":
        b.cgroups.remove_parent()  # type: ignore[attr-defined]
    assert leftovers == [], f"the backend left these behind: {leftovers}"
    assert warm_used > 0, "no run of the suite took a warm sandbox: only the cold path was tested"


class Runner:
    """Small helper so tests read as 'run this code in that language with these limits'."""

    def __init__(self, backend: Backend, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path

    def __call__(
        self,
        language: str,
        code: str,
        *,
        stdin: str | bytes = b"",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        sources: tuple[SourceFile, ...] = (),
        files: tuple[InputFile, ...] = (),
        artifacts: bool = True,
        on_output: Callable[[str, bytes], None] | None = None,
        **limits: int,
    ) -> RunResult:
        spec = RunSpec(
            language=language,
            code=code,
            stdin=stdin,
            args=args,
            env=env or {},
            sources=sources,
            files=files,
            limits=Limits(**{**Limits().as_dict(), **limits}),
        )
        out = self.tmp_path / "artifacts" if artifacts else None
        if out is not None:
            out.mkdir(exist_ok=True)
        return self.backend.run(spec, artifacts_dir=out, on_output=on_output)


@pytest.fixture
def run(backend: Backend, tmp_path: Path) -> Runner:
    return Runner(backend, tmp_path)


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1 that a sandbox must not reach."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def _new_backend(name: str, root: Path, parent: str, warm_pool: int, **config: Any) -> Any:
    config = SandboxConfig(workdir=root / "w", cgroup_parent=f"{parent}-{os.getpid()}", warm_pool=warm_pool, **config)
    return get_backend(name, config)


def _finish(backend: Any) -> None:
    backend.close()
    leftovers = backend.leftovers()
    backend.cleanup_orphans()
    if backend.name == "bwrap":
        backend.cgroups.remove_parent()
    assert leftovers == [], leftovers


def run_in_thread(backend: Backend, spec: RunSpec) -> tuple[threading.Thread, list[RunResult]]:
    """Start `backend.run(spec)` on a thread; its result is appended to the list when it ends."""
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(backend.run(spec)), daemon=True)
    thread.start()
    return thread, results


@contextmanager
def fresh_pool(name: str, parent: str, size: int, **config: Any) -> Iterator[tuple[Any, Path]]:
    """A backend of its own (SandboxConfig fields as given), on its own work directory, with its pool
    started; it must leave nothing."""
    root = Path(tempfile.mkdtemp(prefix=f"{parent}-", dir="/tmp"))
    os.chmod(root, 0o711)
    try:
        backend = _new_backend(name, root, parent, size, **config)
        backend.check()
        backend.start_pool()
        yield backend, root
        _finish(backend)
    finally:
        shutil.rmtree(root, ignore_errors=True)
