"""The janitor's decisions, one at a time, in this process: real PostgreSQL (pytest-django's database),
real Redis (the broker moved to the tests' Redis database), the real bwrap backend's cleanup."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
import redis
from django.core.management import CommandError, call_command
from django.utils import timezone
from dramatiq.brokers import redis as dramatiq_redis

from runs.janitor import live_message_run_ids, run_janitor
from runs.locks import lock_key
from runs.models import ApiKey, Run
from runs.sandbox import get_sandbox
from runs.tasks import _clear_previous_attempt, execute_run
from sandbox import RunResult, Status, Usage, get_backend
from sandbox.backends.base import SandboxConfig
from tests.support import database_url, with_redis_db

TEST_REDIS_DB = int(os.environ.get("CODEEXEC_TEST_REDIS_DB", "15"))
LEASE = timedelta(seconds=30)


@pytest.fixture
def broker(settings: Any) -> Iterator[dramatiq.Broker]:
    """The process's broker on the tests' Redis database, emptied before and after."""
    b = dramatiq.get_broker()
    saved = b.client, b.scripts
    b.client = redis.Redis.from_url(with_redis_db(settings.REDIS_URL, TEST_REDIS_DB))
    b.scripts = {name: b.client.register_script(s) for name, s in dramatiq_redis._scripts.items()}
    assert execute_run.queue_name in b.get_declared_queues()
    b.flush_all()
    try:
        yield b
    finally:
        b.flush_all()
        b.client, b.scripts = saved


@pytest.fixture
def alice(db: None) -> ApiKey:
    return ApiKey.create_with_token("alice")[0]


def make_run(owner: ApiKey, **fields: Any) -> Run:
    fields.setdefault("language", "python")
    fields.setdefault("code", "print(1)")
    fields.setdefault("limits", {})
    return Run.objects.create(owner=owner, **fields)


def lost_run(owner: ApiKey, attempts: int, **fields: Any) -> Run:
    """A run whose worker stopped renewing its lease a while ago."""
    now = timezone.now()
    return make_run(
        owner,
        status="running",
        worker_id="gone:1:1",
        attempts=attempts,
        started_at=now - timedelta(minutes=2),
        lease_expires_at=now - timedelta(seconds=1),
        **fields,
    )


# ---- lost workers ---------------------------------------------------------------------------------------


def test_it_requeues_a_run_whose_worker_was_lost(alice: ApiKey, broker: dramatiq.Broker) -> None:
    run = lost_run(alice, attempts=1)
    report = run_janitor(sandbox=False)
    assert report.requeued == [run.public_id]
    run.refresh_from_db()
    assert (run.status, run.attempts, run.worker_id) == ("queued", 1, "")
    assert run.started_at is None and run.lease_expires_at is None and run.completed_at is None
    assert timezone.now() - run.queued_at < timedelta(seconds=5)
    assert live_message_run_ids() == {run.public_id}  # sent to the workers again


def test_it_ends_a_run_worker_lost_after_its_last_attempt(
    alice: ApiKey, broker: dramatiq.Broker, settings: Any
) -> None:
    settings.RUN_MAX_ATTEMPTS = 2
    run = lost_run(alice, attempts=2)
    report = run_janitor(sandbox=False)
    assert report.worker_lost == [run.public_id] and report.requeued == []
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("error", "worker_lost")
    assert run.error_message == (
        "The worker executing this run was lost (attempt 2 of at most 2); the run is not retried again."
    )
    assert run.completed_at is not None and run.lease_expires_at is None
    assert live_message_run_ids() == set()


def test_it_follows_run_max_attempts(alice: ApiKey, broker: dramatiq.Broker, settings: Any) -> None:
    settings.RUN_MAX_ATTEMPTS = 1  # no retry at all
    run = lost_run(alice, attempts=1)
    assert run_janitor(sandbox=False).worker_lost == [run.public_id]


def test_it_cancels_a_lost_run_whose_cancel_was_requested(alice: ApiKey, broker: dramatiq.Broker) -> None:
    run = lost_run(alice, attempts=1, cancel_requested_at=timezone.now())
    assert run_janitor(sandbox=False).cancelled == [run.public_id]
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("cancelled", "cancelled")


def test_it_leaves_runs_whose_lease_is_current(alice: ApiKey, broker: dramatiq.Broker) -> None:
    run = make_run(alice, status="queued")
    assert run.claim("alive:1:1", LEASE)
    done = make_run(alice, status="succeeded", attempts=1, completed_at=timezone.now())
    report = run_janitor(sandbox=False)
    assert report.requeued == report.worker_lost == report.resent == []
    run.refresh_from_db()
    done.refresh_from_db()
    assert (run.status, run.worker_id, run.attempts) == ("running", "alive:1:1", 1)
    assert done.status == "succeeded"


def test_a_lost_attempt_can_no_longer_renew_finish_or_fail_the_run(alice: ApiKey, broker: dramatiq.Broker) -> None:
    run = make_run(alice, status="queued")
    old = Run.objects.get(pk=run.pk)
    assert old.claim("slow:1:1", timedelta(seconds=-1))  # a lease that already expired
    assert run_janitor(sandbox=False).requeued == [run.public_id]
    new = Run.objects.get(pk=run.pk)
    # The same worker thread may even claim it again: the attempt number tells the two apart.
    assert new.claim("slow:1:1", LEASE)
    assert new.attempts == 2

    late = RunResult(status=Status.SUCCEEDED, exit_code=0, stdout="late\n", usage=Usage())
    assert old.renew_lease("slow:1:1", LEASE) is False
    assert old.finish(late, "slow:1:1") is False
    assert old.fail("sandbox_error", "late", worker_id="slow:1:1") is False
    current = Run.objects.get(pk=run.pk)
    assert (current.status, current.stdout, current.attempts) == ("running", "", 2)

    assert new.finish(RunResult(status=Status.SUCCEEDED, exit_code=0, stdout="ok\n", usage=Usage()), "slow:1:1")
    current.refresh_from_db()
    assert (current.status, current.stdout) == ("succeeded", "ok\n")


# ---- lost messages ----------------------------------------------------------------------------------------


def test_it_resends_a_queued_run_whose_message_was_lost(alice: ApiKey, broker: dramatiq.Broker, settings: Any) -> None:
    settings.RUN_REQUEUE_GRACE_SECONDS = 60
    old = timezone.now() - timedelta(seconds=61)
    run = make_run(alice, status="queued", created_at=old, queued_at=old)
    report = run_janitor(sandbox=False)
    assert report.resent == [run.public_id]
    assert live_message_run_ids() == {run.public_id}
    # Sent streamed: a client may be reading its event stream, and no earlier attempt wrote to it.
    [raw] = broker.client.hvals(f"{broker.namespace}:{execute_run.queue_name}.msgs")
    assert dramatiq.Message.decode(raw).kwargs == {"stream": True}
    run.refresh_from_db()
    assert run.status == "queued" and timezone.now() - run.queued_at < timedelta(seconds=5)

    # Its message is live now, and its grace period started again: later passes leave it alone.
    assert run_janitor(sandbox=False).resent == []
    assert run_janitor(now=timezone.now() + timedelta(seconds=120), sandbox=False).resent == []


def test_it_resends_a_requeued_run_unstreamed(alice: ApiKey, broker: dramatiq.Broker, settings: Any) -> None:
    # Its first attempt may have streamed output: a streamed second attempt would repeat it to the reader.
    settings.RUN_REQUEUE_GRACE_SECONDS = 60
    old = timezone.now() - timedelta(seconds=61)
    run = make_run(alice, status="queued", created_at=old, queued_at=old, attempts=1)
    assert run_janitor(sandbox=False).resent == [run.public_id]
    [raw] = broker.client.hvals(f"{broker.namespace}:{execute_run.queue_name}.msgs")
    assert dramatiq.Message.decode(raw).kwargs == {"stream": False}


def test_it_leaves_a_queued_run_whose_message_is_live(alice: ApiKey, broker: dramatiq.Broker) -> None:
    old = timezone.now() - timedelta(hours=1)
    waiting = make_run(alice, status="queued", created_at=old, queued_at=old)
    delayed = make_run(alice, status="queued", created_at=old, queued_at=old)
    execute_run.send(waiting.public_id)
    execute_run.send_with_options(args=(delayed.public_id,), delay=60_000)  # a retry waiting in the delay queue
    assert live_message_run_ids() == {waiting.public_id, delayed.public_id}
    assert run_janitor(sandbox=False).resent == []


def test_it_leaves_a_run_queued_within_the_grace_period(alice: ApiKey, broker: dramatiq.Broker) -> None:
    make_run(alice, status="queued")  # its message may not have been sent yet
    assert run_janitor(sandbox=False).resent == []


# ---- one pass at a time in the cluster ---------------------------------------------------------------------


@pytest.fixture
def other_janitor(db: None) -> Iterator[psycopg.Connection]:
    """Another process's database session, holding the janitor's lock."""
    with psycopg.connect(database_url().replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [lock_key("janitor")])
        yield conn


def test_only_one_pass_at_a_time_runs_the_cluster_steps(
    alice: ApiKey, broker: dramatiq.Broker, other_janitor: psycopg.Connection
) -> None:
    run = lost_run(alice, attempts=1)
    report = run_janitor(sandbox=False)
    assert report.skipped_cluster_steps and report.requeued == []
    run.refresh_from_db()
    assert run.status == "running"

    other_janitor.execute("SELECT pg_advisory_unlock(%s)", [lock_key("janitor")])
    assert run_janitor(sandbox=False).requeued == [run.public_id]


def test_the_janitor_command_runs_one_pass(alice: ApiKey, broker: dramatiq.Broker) -> None:
    run = lost_run(alice, attempts=1)
    out = StringIO()
    call_command("janitor", "--skip-sandbox", stdout=out)
    assert json.loads(out.getvalue())["requeued"] == [run.public_id]


def test_the_janitor_command_says_when_another_pass_holds_the_lock(
    broker: dramatiq.Broker, other_janitor: psycopg.Connection
) -> None:
    with pytest.raises(CommandError, match="cluster lock"):
        call_command("janitor", "--skip-sandbox", stdout=StringIO())


# ---- sandbox leftovers ----------------------------------------------------------------------------------------


@pytest.fixture
def bwrap_backend() -> Iterator[Any]:
    root = Path(tempfile.mkdtemp(prefix="codeexec-janitor-", dir="/tmp"))
    os.chmod(root, 0o711)
    backend = get_backend(
        "bwrap", SandboxConfig(workdir=root / "sandbox", cgroup_parent=f"codeexec-janitortest-{os.getpid()}")
    )
    backend.prepare()
    try:
        yield backend
    finally:
        backend.cleanup_orphans()
        backend.cgroups.remove_parent()
        shutil.rmtree(root, ignore_errors=True)


def _run_dir(backend: Any, name: str, locked: bool) -> int | None:
    """A run directory with its lock file, held (a live run) or not (its process died)."""
    path = backend.runs_dir / name
    path.mkdir(parents=True)
    fd = os.open(path / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    if not locked:
        os.close(fd)
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_it_removes_the_sandbox_leftovers_of_dead_runs_only(bwrap_backend: Any) -> None:
    backend = bwrap_backend
    live_fd = _run_dir(backend, "run_live", locked=True)
    _run_dir(backend, "run_dead", locked=False)
    for name in ("run_live.run", "run_dead.run", "run_nodir.run"):
        backend.cgroups.group(name).create(64 << 20, 16)
    # A process the crash left in the dead run's group.
    orphan = subprocess.Popen(["sleep", "300"])
    try:
        backend.cgroups.group("run_dead.run").add(orphan.pid)
        removed = backend.cleanup_orphans()
        assert sorted(removed) == ["cgroup:run_dead.run", "cgroup:run_nodir.run", "dir:run_dead"]
        assert orphan.wait(timeout=10) == -9  # killed with its group
        assert [p.name for p in backend.runs_dir.iterdir()] == ["run_live"]
        assert backend.cgroups.existing_groups() == ["run_live.run"]
    finally:
        if orphan.poll() is None:
            orphan.kill()
        assert live_fd is not None
        os.close(live_fd)
    assert sorted(backend.cleanup_orphans()) == ["cgroup:run_live.run", "dir:run_live"]  # its process is gone now


@pytest.fixture
def process_sandbox(settings: Any) -> Iterator[Any]:
    """The process's backend (runs.sandbox.get_sandbox) on a directory and cgroup parent of this test."""
    root = Path(tempfile.mkdtemp(prefix="codeexec-janitor-", dir="/tmp"))
    os.chmod(root, 0o711)
    settings.SANDBOX_WORKDIR = settings.HOST_SANDBOX_DIR = root / "sandbox"
    settings.SANDBOX_CGROUP_PARENT = f"codeexec-janitortest-{os.getpid()}"
    settings.SANDBOX_WARM_POOL = 0
    settings.RUN_LEASE_SECONDS = 10
    get_sandbox.cache_clear()
    backend = get_sandbox()
    backend.prepare()
    try:
        yield backend
    finally:
        backend.cleanup_orphans()
        backend.cgroups.remove_parent()
        get_sandbox.cache_clear()
        shutil.rmtree(root, ignore_errors=True)


def test_a_new_attempt_waits_for_the_sandbox_of_a_lost_attempt_still_tearing_down(process_sandbox: Any) -> None:
    backend = process_sandbox
    fd = _run_dir(backend, "run_again", locked=True)  # the lost attempt, alive on this host
    assert fd is not None
    backend.cgroups.group("run_again.run").create(64 << 20, 16)

    def tear_down() -> None:  # what the lost attempt does once its renewal is refused
        time.sleep(1.0)
        backend.cgroups.group("run_again.run").destroy()
        shutil.rmtree(backend.runs_dir / "run_again")
        os.close(fd)

    threading.Thread(target=tear_down).start()
    started = time.monotonic()
    _clear_previous_attempt("run_again")
    assert 0.9 < time.monotonic() - started < 5
    assert backend.leftovers() == []


def test_a_new_attempt_removes_what_a_dead_attempt_left(process_sandbox: Any) -> None:
    backend = process_sandbox
    _run_dir(backend, "run_again", locked=False)  # its worker was killed
    backend.cgroups.group("run_again.run").create(64 << 20, 16)
    started = time.monotonic()
    _clear_previous_attempt("run_again")
    assert time.monotonic() - started < 1
    assert backend.leftovers() == []
