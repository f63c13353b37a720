"""Periodic jobs of a worker process (the janitor, and whatever joins the JOBS registry).

Each Dramatiq worker process runs an APScheduler `BackgroundScheduler`, started by
`WorkerPresenceMiddleware.after_worker_boot` and stopped (waiting for a running job) before the worker
shuts down. Why APScheduler in the worker and not a Dramatiq-native mechanism: Dramatiq has no periodic
messages of its own (its add-ons run a separate scheduler process, or APScheduler themselves), and a
periodic *message* would depend on the broker, while the janitor must work precisely when the broker
lost its messages. In the worker it needs nothing more to deploy, runs every job once as the worker
starts (a crashed worker's leftovers go as soon as a worker is back on that host), and scales with the
workers: a job that must run once per cluster takes a PostgreSQL advisory lock (`runs.locks`), so any
number of worker processes on any number of hosts run it one at a time; per-host work (sandbox
leftovers) runs in every process, where it is idempotent.

To add a job, append a `PeriodicJob` to JOBS (as retention is: once per cluster at a time, every
RETENTION_INTERVAL_SECONDS).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils.module_loading import import_string

from .locks import cluster_lock

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PeriodicJob:
    name: str
    # dotted path of a callable taking no arguments, imported when the job runs
    func: str
    # name of the setting that holds the period in seconds; 0 turns the job off
    interval_setting: str
    # run in one process of the whole cluster at a time (an advisory lock named after the job)
    cluster_lock: bool = False

    @property
    def interval_s(self) -> int:
        return int(getattr(settings, self.interval_setting))


JOBS: list[PeriodicJob] = [
    # Takes the cluster lock itself: its sandbox step is per host.
    PeriodicJob("janitor", "runs.janitor.run_janitor", "JANITOR_INTERVAL_SECONDS"),
    # Daily usage roll-up, then deletion of expired runs, artifacts and files (runs/retention.py).
    PeriodicJob("retention", "runs.retention.run_retention", "RETENTION_INTERVAL_SECONDS", cluster_lock=True),
]


def run_job(job: PeriodicJob) -> None:
    """One execution of `job` with a fresh database connection on this thread; failures are logged and
    the next period tries again."""
    close_old_connections()
    try:
        func = import_string(job.func)
        if job.cluster_lock:
            with cluster_lock(job.name) as held:
                if not held:
                    log.debug("periodic job %s: running elsewhere in the cluster", job.name)
                    return
                func()
        else:
            func()
    except Exception:
        log.exception("periodic job %s failed; it runs again in %s s", job.name, job.interval_s)
    finally:
        connection.close()


class Scheduler:
    """The process's scheduler; start() and stop() may be called again (in-process test workers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scheduler: Any = None

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    def start(self, jobs: Sequence[PeriodicJob] | None = None) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        jobs = [job for job in (JOBS if jobs is None else jobs) if job.interval_s > 0]
        with self._lock:
            if self._scheduler is not None or not jobs:
                return
            # Each run is logged by the jobs themselves; APScheduler's own lines would only repeat it.
            if logging.getLogger("apscheduler").level == logging.NOTSET:
                logging.getLogger("apscheduler").setLevel(logging.WARNING)
            scheduler = BackgroundScheduler(
                executors={"default": ThreadPoolExecutor(max_workers=len(jobs))},
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
                timezone=datetime.UTC,
            )
            now = datetime.datetime.now(datetime.UTC)
            for job in jobs:
                interval = job.interval_s
                scheduler.add_job(
                    run_job,
                    # jitter spreads the passes of many worker processes started together
                    IntervalTrigger(seconds=interval, jitter=interval / 10 if interval >= 10 else None),
                    args=[job],
                    id=job.name,
                    name=job.name,
                    next_run_time=now,  # once at start, then every interval
                )
            scheduler.start()
            self._scheduler = scheduler
            log.info("periodic jobs started: %s", ", ".join(f"{j.name} every {j.interval_s}s" for j in jobs))

    def stop(self) -> None:
        """Stop scheduling and wait for a job that is running."""
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)


SCHEDULER = Scheduler()
