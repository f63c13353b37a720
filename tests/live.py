"""A live stack of this project for end-to-end tests that need a real HTTP server (browser tests, the
Open WebUI tool's tests):

- gunicorn (gthread) serving `codeexec_site.wsgi` on a free port of 127.0.0.1, static files through
  WhiteNoise as in production;
- `manage.py rundramatiq` executing runs with the bwrap backend;

both on pytest-django's test database, a Redis database of the tests' own (CODEEXEC_TEST_REDIS_DB,
default 15, like tests/api), and a private sandbox directory, cgroup parent and storage directory.
A suite makes one per module (`live_stack` in its conftest.py) and it is gone before later suites run,
so no stray worker consumes their queue. Servers' logs go to test-artifacts/<suite>/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from tests.support import database_url, free_port, with_redis_db

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
WORKER_ARGV = [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4"]
GUNICORN_OPTIONS = ["-k", "gthread", "--workers", "1", "--threads", "8", "--timeout", "200", "--graceful-timeout", "10"]
TEST_REDIS_DB = int(os.environ.get("CODEEXEC_TEST_REDIS_DB", "15"))
STARTUP_TIMEOUT_S = 120


def get_status(url: str) -> int | None:
    return get(url)[0]


def get(url: str) -> tuple[int | None, str]:
    """Status and body of a GET (None when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return None, str(exc)


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclasses.dataclass
class LiveStack:
    url: str
    redis_url: str
    sandbox_dir: Path
    cgroup_parent: str
    web: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    web_log: Path
    worker_log: Path

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def check_alive(self) -> None:
        for name, proc, log in (("gunicorn", self.web, self.web_log), ("rundramatiq", self.worker, self.worker_log)):
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{tail(log)}")


def _our_worker_heartbeat(client: redis.Redis, worker: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    """A healthy heartbeat of a process in the rundramatiq process group this stack started."""
    for key in client.scan_iter(match="codeexec:worker:*"):
        raw = client.get(key)
        if not raw:
            continue
        beat = json.loads(raw)
        try:
            pid = int(str(beat.get("worker_id", "")).rsplit(":", 1)[1])
            ours = os.getpgid(pid) == worker.pid
        except (IndexError, ValueError, ProcessLookupError):
            continue
        if ours and beat.get("ok") and beat.get("versions"):
            return dict(beat)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this stack started (never anything else), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@contextmanager
def live_stack(django_db_blocker: Any, suite: str, extra_env: dict[str, str] | None = None) -> Iterator[LiveStack]:
    """Start gunicorn + rundramatiq on the test database, wait until /readyz answers 200 and the worker's
    heartbeat is healthy, and stop both (and clean the sandbox's leftovers) afterwards. `suite` names the
    log directory and the cgroup parent; `extra_env` sets the servers' settings for this suite."""
    if not GUNICORN.exists():
        pytest.fail(f"{GUNICORN} is missing: run `make venv`")
    with django_db_blocker.unblock():
        db_url = database_url()
    root = Path(tempfile.mkdtemp(prefix=f"codeexec-{suite}-", dir="/tmp"))
    os.chmod(root, 0o711)  # bubblewrap's uid must traverse it
    sandbox_dir, storage_dir = root / "sandbox", root / "storage"
    storage_dir.mkdir()
    logs = ARTIFACTS / suite
    logs.mkdir(parents=True, exist_ok=True)
    web_log, worker_log = logs / "gunicorn.log", logs / "rundramatiq.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    redis_url = with_redis_db(settings.REDIS_URL, TEST_REDIS_DB)
    cgroup_parent = f"codeexec-{suite}test-{os.getpid()}"
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "SANDBOX_WORKDIR": str(sandbox_dir),
        "SANDBOX_CGROUP_PARENT": cgroup_parent,
        "STORAGE_DIR": str(storage_dir),
        "PUBLIC_BASE_URL": url,  # signed artifact links must point at this server
        "API_KEYS": "",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the servers keep Django's check
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [*WORKER_ARGV, "--worker-shutdown-timeout", "30000"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with web_log.open("wb") as log:
        web = subprocess.Popen(
            [str(GUNICORN), "codeexec_site.wsgi", "-b", f"127.0.0.1:{port}", *GUNICORN_OPTIONS],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = LiveStack(url, redis_url, sandbox_dir, cgroup_parent, web, worker, web_log, worker_log)
    try:
        client = stack.redis()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (_our_worker_heartbeat(client, worker) and get_status(f"{url}/readyz") == 200):
            stack.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the stack did not become ready in {STARTUP_TIMEOUT_S}s (/readyz: {get(url + '/readyz')})\n"
                    f"gunicorn:\n{tail(web_log)}\nrundramatiq:\n{tail(worker_log)}"
                )
            time.sleep(0.2)
        yield stack
    finally:
        _stop(web)
        _stop(worker)
        from sandbox import get_backend
        from sandbox.backends.base import SandboxConfig

        backend = get_backend("bwrap", SandboxConfig(workdir=sandbox_dir, cgroup_parent=cgroup_parent))
        backend.cleanup_orphans()
        backend.cgroups.remove_parent()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)
