"""Crash recovery suite: real crashes of real processes.

The live tests share one stack for the session (tests/recovery/stack.py): a private PostgreSQL and a
private Redis on free ports (never the machine's shared servers, which are never stopped), gunicorn and
one `rundramatiq` worker at a time with a 3 s lease and a 1 s janitor, and a 4 MiB tmpfs as the
artifact storage (so a big artifact really meets ENOSPC). Each test leaves the stack healthy for the
next: it restarts what it crashed. The tmpfs is unmounted and every server stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.recovery.services import PrivatePostgres, PrivateRedis
from tests.recovery.stack import RecoveryStack, wait_until

STORAGE_TMPFS_MB = 4


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def storage_tmpfs() -> Iterator[Path]:
    """A small tmpfs for artifacts: full after STORAGE_TMPFS_MB."""
    if os.geteuid() != 0:
        pytest.fail("the recovery suite needs root (tmpfs storage, the bwrap sandbox)")
    path = Path(tempfile.mkdtemp(prefix="codeexec-recovery-storage-", dir="/tmp"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={STORAGE_TMPFS_MB}m,mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(
    private_postgres: PrivatePostgres, private_redis: PrivateRedis, storage_tmpfs: Path
) -> Iterator[RecoveryStack]:
    root = Path(tempfile.mkdtemp(prefix="codeexec-recovery-", dir="/tmp"))
    os.chmod(root, 0o711)  # the sandbox uid must traverse it
    live = RecoveryStack(private_postgres, private_redis, root, storage_tmpfs)
    try:
        live.prepare()
        live.start_web()
        live.start_worker()
        yield live
    finally:
        live.stop()
        from sandbox import get_backend
        from sandbox.backends.base import SandboxConfig

        backend = get_backend("bwrap", SandboxConfig(workdir=live.sandbox_dir, cgroup_parent=live.cgroup_parent))
        backend.cleanup_orphans()
        backend.cgroups.remove_parent()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def healthy(stack: RecoveryStack) -> RecoveryStack:
    """The stack with a live worker and a ready API (a previous test may have crashed something)."""
    if stack.worker is None or stack.worker.poll() is not None:
        stack.start_worker()
    wait_until(lambda: stack.request("GET", "/readyz", auth=False)[0] == 200, 60, "/readyz to answer 200")
    return stack
