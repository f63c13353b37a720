"""Fixtures for the API suite: tenants alice and bob, a real Dramatiq worker, a private sandbox and store.

Isolation from anything else on the machine (a development stack may be running beside the tests):
- the sandbox works in its own directory under /tmp (mode 0711: bubblewrap's uid must traverse it)
  and its own cgroup parent;
- uploads and artifacts go to a temporary storage directory;
- Redis traffic (the Dramatiq queues and worker heartbeats) uses a separate Redis database
  (CODEEXEC_TEST_REDIS_DB, default 15), so another worker consuming the `runs` queue of the
  development database can never steal a test's message.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from dramatiq import worker as dramatiq_worker
from dramatiq.brokers import redis as dramatiq_redis
from rest_framework.test import APIClient

from runs import redis as cx_redis
from runs.models import ApiKey, Run
from runs.sandbox import get_sandbox
from runs.tasks import execute_run  # declares the `runs` queue before any test worker starts
from runs.worker import PRESENCE
from tests.api import TERMINAL, wait_for
from tests.support import with_redis_db

TEST_REDIS_DB = int(os.environ.get("CODEEXEC_TEST_REDIS_DB", "15"))
# Small limits: the suite checks the API, not what a big program can do.
SMALL_LIMITS = {"timeout_ms": 20_000, "memory_mb": 256, "pids": 64, "disk_mb": 16}


@dataclasses.dataclass(frozen=True)
class ApiEnvironment:
    root: Path
    sandbox_dir: Path
    storage_dir: Path
    cgroup_parent: str
    redis_url: str


@pytest.fixture(autouse=True)
def _in_api_environment(api_environment: ApiEnvironment) -> ApiEnvironment:
    """Every API test runs in the session's environment (tests/conftest.py makes it, once a session,
    for whichever suite asks first: tests/api, tests/fuzz)."""
    return api_environment


def api_environment_session() -> Iterator[ApiEnvironment]:
    """Point the sandbox, the storage and Redis at places of this test session only."""
    root = Path(tempfile.mkdtemp(prefix="codeexec-api-", dir="/tmp"))
    os.chmod(root, 0o711)
    sandbox_dir = root / "sandbox"
    storage_dir = root / "storage"
    storage_dir.mkdir()
    env = ApiEnvironment(
        root=root,
        sandbox_dir=sandbox_dir,
        storage_dir=storage_dir,
        cgroup_parent=f"codeexec-apitest-{os.getpid()}",
        redis_url=with_redis_db(settings.REDIS_URL, TEST_REDIS_DB),
    )
    storages = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], "location": str(storage_dir)},
        },
    }
    override = override_settings(
        SANDBOX_WORKDIR=sandbox_dir,
        HOST_SANDBOX_DIR=sandbox_dir,
        SANDBOX_CGROUP_PARENT=env.cgroup_parent,
        SANDBOX_WARM_POOL=0,  # in-process workers come and go with each test; tests/sandbox covers the pool
        STORAGE_DIR=storage_dir,
        STORAGES=storages,
        REDIS_URL=env.redis_url,
        # Address limits are tested on their own (test_limits.py); elsewhere they would only add noise.
        UNAUTHENTICATED_RATE="100000/m",
    )
    override.enable()
    get_sandbox.cache_clear()
    cx_redis.client.cache_clear()

    # The broker was built by django_dramatiq at start-up; move it to the test database.
    broker = dramatiq.get_broker()
    saved = broker.client, broker.scripts
    broker.client = redis.Redis.from_url(env.redis_url)
    broker.scripts = {name: broker.client.register_script(s) for name, s in dramatiq_redis._scripts.items()}
    assert "runs" in broker.get_declared_queues(), execute_run
    _delete_heartbeats()
    try:
        yield env
    finally:
        broker.flush_all()
        broker.client, broker.scripts = saved
        _delete_heartbeats()
        backend = get_sandbox()
        try:
            backend.cleanup_orphans()
            backend.cgroups.remove_parent()  # type: ignore[attr-defined]
        finally:
            override.disable()
            get_sandbox.cache_clear()
            cx_redis.client.cache_clear()
            shutil.rmtree(root, ignore_errors=True)


def _delete_heartbeats() -> None:
    r = cx_redis.client()
    for key in list(r.scan_iter(match=cx_redis.WORKER_PATTERN)):
        r.delete(key)


# ---- tenants ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tenant:
    """An API key with its token and a client that sends it."""

    key: ApiKey
    token: str
    client: APIClient

    def post_run(self, **body: Any) -> Any:
        body.setdefault("language", "python")
        body.setdefault("limits", dict(SMALL_LIMITS))
        return self.client.post("/v1/runs", body, format="json")

    def get_run(self, run_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.content
        return response.json()

    def wait_run(self, run_id: str, timeout_s: float = 120.0, statuses: set[str] = TERMINAL) -> dict[str, Any]:
        """Poll GET /v1/runs/{id} (bounded) until the run reaches one of `statuses`."""
        return wait_for(
            lambda: (lambda r: r if r["status"] in statuses else None)(self.get_run(run_id)),
            timeout_s=timeout_s,
            interval_s=0.2,
            what=f"run {run_id} to reach {sorted(statuses)}",
        )

    def upload(self, content: bytes, filename: str = "data.csv", purpose: str = "user_data") -> dict[str, Any]:
        from django.core.files.uploadedfile import SimpleUploadedFile

        response = self.client.post(
            "/v1/files", {"file": SimpleUploadedFile(filename, content), "purpose": purpose}, format="multipart"
        )
        assert response.status_code == 200, response.content
        return response.json()


def make_tenant(label: str, **fields: Any) -> Tenant:
    # Generous limits by default: these tests are about behaviour, not admission (tests/api/test_limits.py).
    fields = {"rps": 1000.0, "burst": 1000, "max_concurrent_runs": 100, **fields}
    key, token = ApiKey.create_with_token(label, **fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return Tenant(key=key, token=token, client=client)


@pytest.fixture
def alice(db: None) -> Tenant:
    return make_tenant("alice")


@pytest.fixture
def bob(db: None) -> Tenant:
    return make_tenant("bob")


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def make_run() -> Callable[..., Run]:
    """A run row made directly in the database (for reading, listing, cancelling, deleting)."""

    def make(owner: ApiKey, **fields: Any) -> Run:
        status = fields.setdefault("status", "succeeded")
        fields.setdefault("language", "python")
        fields.setdefault("code", "print(1)")
        fields.setdefault("limits", dict(SMALL_LIMITS))
        if status != "queued":
            fields.setdefault("started_at", timezone.now())
            fields.setdefault("worker_id", "test:0")
        if status in TERMINAL:
            fields.setdefault("completed_at", timezone.now())
            fields.setdefault("exit_code", 0 if status == "succeeded" else None)
        return Run.objects.create(owner=owner, **fields)

    return make


# ---- worker -------------------------------------------------------------------------------------


@pytest.fixture
def worker(transactional_db: None, api_environment: ApiEnvironment) -> Iterator[dramatiq.Worker]:
    """A real Dramatiq worker in this process (2 threads); its middleware starts heartbeat and cancel threads."""
    broker = dramatiq.get_broker()
    broker.flush_all()
    w = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    w.start()
    try:
        yield w
    finally:
        for run_id in list(PRESENCE.local_runs):  # never leave a sandbox running past its test
            get_sandbox().cancel(run_id)
        w.stop(timeout=120_000)
        # Dramatiq leaves each stopped worker's middleware on the broker; a queue declared later would
        # give that dead worker consumers that take messages nobody processes.
        broker.middleware = [
            m for m in broker.middleware if not (isinstance(m, dramatiq_worker._WorkerMiddleware) and m.worker is w)
        ]
        broker.flush_all()


def _our_heartbeat() -> dict[str, Any] | None:
    for beat in cx_redis.live_workers():
        if beat.get("worker_id") == PRESENCE.id and beat.get("ok") and beat.get("versions"):
            return beat
    return None


@pytest.fixture
def ready_worker(worker: dramatiq.Worker) -> dramatiq.Worker:
    """The worker, once it has published a healthy heartbeat with runtime versions."""
    wait_for(_our_heartbeat, timeout_s=120, interval_s=0.2, what="the worker's first heartbeat")
    return worker


@pytest.fixture
def no_worker() -> None:
    """No worker of this process is alive and no heartbeat is stored."""
    wait_for(
        lambda: not any(t.name in ("cx-heartbeat", "cx-cancel") and t.is_alive() for t in threading.enumerate()),
        timeout_s=120,
        what="the previous test's worker threads to stop",
    )
    _delete_heartbeats()
