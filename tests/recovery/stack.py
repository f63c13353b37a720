"""gunicorn + `manage.py rundramatiq` on a private PostgreSQL and Redis, with short leases and a fast janitor,
whose processes a test can SIGKILL and start again one at a time (tests/live.py starts both together on
pytest-django's database; this one reuses its pieces).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.live import ARTIFACTS, GUNICORN, GUNICORN_OPTIONS, ROOT, WORKER_ARGV, _our_worker_heartbeat, _stop, get, tail
from tests.recovery.services import PrivatePostgres, PrivateRedis
from tests.support import free_port

T = TypeVar("T")

LEASE_S = 3
JANITOR_INTERVAL_S = 1
REQUEUE_GRACE_S = 3
MAX_ATTEMPTS = 2
STARTUP_TIMEOUT_S = 120
TERMINAL = {"succeeded", "failed", "timeout", "oom", "cancelled", "error"}


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


class RecoveryStack:
    def __init__(
        self, postgres: PrivatePostgres, redis: PrivateRedis, root: Path, storage_dir: Path, suite: str = "recovery"
    ) -> None:
        self.postgres, self.redis_server = postgres, redis
        self.sandbox_dir = root / "sandbox"
        self.storage_dir = storage_dir
        self.cgroup_parent = f"codeexec-recoverytest-{os.getpid()}"
        self.logs = ARTIFACTS / suite
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_log = self.logs / "rundramatiq-0.log"
        self.workers_started = 0
        self.env = {
            **os.environ,
            "DEBUG": "1",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "SANDBOX_WORKDIR": str(self.sandbox_dir),
            "SANDBOX_CGROUP_PARENT": self.cgroup_parent,
            "SANDBOX_WARM_POOL": "0",  # every sandbox on the host then belongs to a run: leftovers are exact
            "STORAGE_DIR": str(storage_dir),
            "PUBLIC_BASE_URL": self.url,
            "API_KEYS": "",
            "PYTHONUNBUFFERED": "1",
            "dramatiq_worker_timeout": "20",
            "RUN_LEASE_SECONDS": str(LEASE_S),
            "JANITOR_INTERVAL_SECONDS": str(JANITOR_INTERVAL_S),
            "RUN_REQUEUE_GRACE_SECONDS": str(REQUEUE_GRACE_S),
            "RUN_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "UNAUTHENTICATED_RATE": "100000/m",
        }
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)

    # ---- processes -----------------------------------------------------------------------------------

    def manage(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0 and check:
            pytest.fail(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def prepare(self) -> None:
        self.manage("migrate", "--noinput")
        self.token = self.manage(
            "createapikey", "recovery", "--rps", "1000", "--burst", "1000", "--max-concurrent-runs", "100"
        ).strip()

    def start_web(self) -> None:
        with (self.logs / "gunicorn.log").open("ab") as log:
            self.web = subprocess.Popen(
                [str(GUNICORN), "codeexec_site.wsgi", "-b", f"127.0.0.1:{self.port}", *GUNICORN_OPTIONS],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: get(f"{self.url}/healthz")[0] == 200, STARTUP_TIMEOUT_S, "gunicorn to answer /healthz")

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A new rundramatiq (its own process group), returned once its heartbeat says it can run code."""
        assert self.worker is None or self.worker.poll() is not None, "a worker is already running"
        self.worker_log = self.logs / f"rundramatiq-{self.workers_started}.log"
        self.workers_started += 1
        with self.worker_log.open("wb") as log:
            self.worker = subprocess.Popen(
                [*WORKER_ARGV, "--worker-shutdown-timeout", "30000"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = self.worker
        client = self.redis_server.client()

        def ready() -> bool:
            if worker.poll() is not None:
                pytest.fail(f"rundramatiq exited with {worker.returncode}:\n{tail(self.worker_log)}")
            try:
                return _our_worker_heartbeat(client, worker) is not None
            except Exception:
                return False

        wait_until(ready, STARTUP_TIMEOUT_S, "the worker's healthy heartbeat", interval_s=0.2)
        return worker

    def kill_worker(self) -> None:
        """SIGKILL every process of the worker's group at once, as a crash would (its sandboxes are in
        sessions of their own and are left behind)."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=30)

    def pause_worker(self, paused: bool) -> None:
        """SIGSTOP / SIGCONT the worker's processes (not its sandboxes): a worker that stops answering
        for a while, then comes back."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def check_alive(self) -> None:
        for name, proc, log in (
            ("gunicorn", self.web, self.logs / "gunicorn.log"),
            ("rundramatiq", self.worker, self.worker_log),
        ):
            if proc is None or proc.poll() is not None:
                pytest.fail(f"{name} is not running:\n{tail(log)}")

    def stop(self) -> None:
        for proc in (self.web, self.worker):
            if proc is not None:
                _stop(proc)

    # ---- HTTP ----------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, auth: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def post_run(self, code: str, **fields: Any) -> tuple[int, Any]:
        body = {"language": "python", "code": code, "wait": False, **fields}
        return self.request("POST", "/v1/runs", body)

    def get_run(self, run_id: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/v1/runs/{run_id}")
        assert status == 200, body
        return dict(body)

    def wait_run(self, run_id: str, timeout_s: float, statuses: set[str] = TERMINAL) -> dict[str, Any]:
        return wait_until(
            lambda: (lambda r: r if r["status"] in statuses else None)(self.get_run(run_id)),
            timeout_s,
            f"run {run_id} to reach {sorted(statuses)}",
            interval_s=0.2,
        )

    # ---- what is on disk and in the database -----------------------------------------------------------

    def row(self, run_id: str) -> dict[str, Any]:
        with self.postgres.connect() as conn:
            cursor = conn.execute(
                "SELECT status, attempts, worker_id, error_code FROM runs_run WHERE public_id = %s", [run_id]
            )
            status, attempts, worker_id, error_code = cursor.fetchone()
        return {"status": status, "attempts": attempts, "worker_id": worker_id, "error_code": error_code}

    def run_dirs(self) -> list[str]:
        runs = self.sandbox_dir / "runs"
        return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []

    def cgroups(self) -> list[str]:
        from sandbox.cgroups import CgroupDriver

        return CgroupDriver(self.cgroup_parent).existing_groups()

    def leftovers_of(self, run_id: str) -> list[str]:
        return [f"dir:{d}" for d in self.run_dirs() if d == run_id] + [
            f"cgroup:{g}" for g in self.cgroups() if g.rsplit(".", 1)[0] == run_id
        ]
