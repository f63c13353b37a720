"""The worker's periodic jobs: once at start, then every interval; cluster-wide jobs one at a time; a failing
job does not stop the others. (That `rundramatiq` starts the janitor is shown by test_worker_killed.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from runs.locks import lock_key
from runs.scheduler import JOBS, PeriodicJob, Scheduler
from tests.support import database_url

CALLS: dict[str, list[float]] = {"probe": [], "locked": [], "broken": []}
CALLED = threading.Condition()


def _record(name: str) -> None:
    with CALLED:
        CALLS[name].append(time.monotonic())
        CALLED.notify_all()


def probe() -> None:
    _record("probe")


def locked() -> None:
    _record("locked")


def broken() -> None:
    _record("broken")
    raise RuntimeError("this job always fails")


def _wait_calls(name: str, count: int, timeout_s: float) -> list[float]:
    with CALLED:
        assert CALLED.wait_for(lambda: len(CALLS[name]) >= count, timeout=timeout_s), (name, CALLS[name])
        return list(CALLS[name])


@pytest.fixture
def scheduler(transactional_db: None, settings: Any) -> Iterator[Scheduler]:
    settings.PROBE_INTERVAL_SECONDS = 1
    settings.OFF_INTERVAL_SECONDS = 0
    for calls in CALLS.values():
        calls.clear()
    s = Scheduler()
    try:
        yield s
    finally:
        s.stop()


def test_the_janitor_and_retention_are_registered_jobs() -> None:
    assert [(j.name, j.func, j.interval_setting, j.cluster_lock) for j in JOBS] == [
        ("janitor", "runs.janitor.run_janitor", "JANITOR_INTERVAL_SECONDS", False),
        ("retention", "runs.retention.run_retention", "RETENTION_INTERVAL_SECONDS", True),
    ]


def test_it_runs_a_job_at_start_and_then_every_interval(scheduler: Scheduler) -> None:
    started = time.monotonic()
    scheduler.start([PeriodicJob("probe", f"{__name__}.probe", "PROBE_INTERVAL_SECONDS")])
    first, second, third = _wait_calls("probe", 3, timeout_s=10)[:3]
    assert first - started < 1.0  # at start, not after a first interval
    assert 0.5 < second - first < 2.0 and 0.5 < third - second < 2.0
    scheduler.stop()
    count = len(CALLS["probe"])
    time.sleep(1.5)
    assert len(CALLS["probe"]) == count  # stopped means stopped


def test_it_skips_a_job_whose_interval_is_zero(scheduler: Scheduler) -> None:
    scheduler.start([PeriodicJob("probe", f"{__name__}.probe", "OFF_INTERVAL_SECONDS")])
    assert not scheduler.running
    time.sleep(0.5)
    assert CALLS["probe"] == []


def test_a_failing_job_does_not_stop_the_others(scheduler: Scheduler) -> None:
    scheduler.start(
        [
            PeriodicJob("broken", f"{__name__}.broken", "PROBE_INTERVAL_SECONDS"),
            PeriodicJob("probe", f"{__name__}.probe", "PROBE_INTERVAL_SECONDS"),
        ]
    )
    _wait_calls("broken", 2, timeout_s=10)  # and it is tried again
    _wait_calls("probe", 2, timeout_s=10)


def test_a_cluster_job_waits_while_another_process_runs_it(scheduler: Scheduler) -> None:
    with psycopg.connect(database_url().replace("postgres://", "postgresql://", 1), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [lock_key("locked")])
        scheduler.start([PeriodicJob("locked", f"{__name__}.locked", "PROBE_INTERVAL_SECONDS", cluster_lock=True)])
        time.sleep(2.5)  # at start and twice more: each time the lock is held elsewhere
        assert CALLS["locked"] == []
        other.execute("SELECT pg_advisory_unlock(%s)", [lock_key("locked")])
        _wait_calls("locked", 1, timeout_s=5)
