"""The janitor: what a crash left behind is finished, executed again or removed.

The database is the source of truth for runs; the broker's messages and the worker's memory are not.
One pass (`run_janitor`) does, in this order:

1. Sandbox leftovers on this host (per host, no lock): run directories whose owning process is gone
   (their lock file can be taken), cgroups of no live run directory, labelled containers of the docker
   backend (`Backend.cleanup_orphans`). First, so a run re-queued below never meets its old sandbox.
2. Lost workers (cluster-wide, see the lock below). A claim holds a lease of RUN_LEASE_SECONDS that
   the executing worker renews every third of it; a run still `running` after its lease expired has
   lost its worker (killed, host gone, or cut off from the database). The policy:
     - its cancel was requested -> it ends `cancelled`;
     - it was claimed fewer than RUN_MAX_ATTEMPTS times (default 2: one retry) -> back to `queued`
       and sent again: it executes once more from the start, on any worker;
     - otherwise -> it ends `error` with code `worker_lost`.
   Every transition is one UPDATE guarded by the worker id and the attempt number, so a lost worker
   that comes back can neither renew, finish nor fail the run once the janitor moved it (the watcher
   of that old attempt notices the refused renewal and kills its sandbox).
   A run is therefore terminal at most RUN_LEASE_SECONDS + JANITOR_INTERVAL_SECONDS after its last
   worker died (plus the new attempt's own run time, when it is re-queued), provided a worker is up.
3. Lost messages (cluster-wide). A run `queued` for longer than RUN_REQUEUE_GRACE_SECONDS whose
   message is not live is sent again. "Live" means: present in the Redis broker's message hashes of
   the `runs` queue or its delay queue (`<namespace>:runs.msgs`, `<namespace>:runs.DQ.msgs`, read
   together in one MULTI), which hold every message from enqueue until its ack, so also those a worker
   has fetched and is executing. A Redis restart that kept nothing, a message dead-lettered after a
   database outage, or a failed send at creation all leave a queued run with no live message. The
   grace covers the moment between the commit of a new run and its send. A duplicate is harmless:
   the claim is conditional, so a second delivery of a run's message never executes it twice. With
   another broker than Redis liveness cannot be read, and this step does nothing.

Steps 2 and 3 run in one worker of the whole cluster at a time (a PostgreSQL advisory lock,
`runs.locks`); a pass that finds the lock held skips them. The janitor runs when each worker process
starts and every JANITOR_INTERVAL_SECONDS (runs/scheduler.py), and `manage.py janitor` runs one pass.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta

import dramatiq
from django.conf import settings
from django.utils import timezone

from . import metrics
from . import redis as cx_redis
from .locks import cluster_lock
from .models import Run

log = logging.getLogger(__name__)

# Rows handled per pass and step; more wait for the next pass.
BATCH = 500


@dataclasses.dataclass
class JanitorReport:
    sandbox_removed: list[str] = dataclasses.field(default_factory=list)
    requeued: list[str] = dataclasses.field(default_factory=list)
    worker_lost: list[str] = dataclasses.field(default_factory=list)
    cancelled: list[str] = dataclasses.field(default_factory=list)
    resent: list[str] = dataclasses.field(default_factory=list)
    # another worker held the cluster lock: steps 2 and 3 were left to it
    skipped_cluster_steps: bool = False

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def run_janitor(now: datetime | None = None, sandbox: bool = True) -> JanitorReport:
    """One pass (see the module docstring); `sandbox=False` leaves this host's sandbox alone."""
    report = JanitorReport()
    if sandbox:
        report.sandbox_removed = clean_sandbox_leftovers()
    with cluster_lock("janitor") as held:
        if not held:
            report.skipped_cluster_steps = True
            return report
        recover_lost_runs(report, now or timezone.now())
        resend_lost_messages(report, now or timezone.now())
    return report


def clean_sandbox_leftovers() -> list[str]:
    from .sandbox import get_sandbox

    try:
        removed = get_sandbox().cleanup_orphans()
    except Exception:
        log.warning("janitor: could not clean this host's sandbox leftovers", exc_info=True)
        return []
    if removed:
        log.warning("janitor: removed sandbox leftovers of crashed runs: %s", ", ".join(removed))
    return removed


def recover_lost_runs(report: JanitorReport, now: datetime) -> None:
    """Step 2: running runs whose lease expired."""
    from .services import enqueue_run

    max_attempts = settings.RUN_MAX_ATTEMPTS
    stale = Run.objects.filter(status=Run.StatusChoices.RUNNING, lease_expires_at__lt=now).order_by("lease_expires_at")[
        :BATCH
    ]
    for run in stale.only(
        "id", "public_id", "status", "worker_id", "attempts", "lease_expires_at", "cancel_requested_at"
    ):
        worker = run.worker_id
        outcome = run.recover_lost(max_attempts, now)
        if outcome is None:
            continue  # renewed or finished meanwhile
        log.warning(
            "janitor: run %s lost its worker %s after %d attempt(s): %s", run.public_id, worker, run.attempts, outcome
        )
        if outcome == "requeued":
            report.requeued.append(run.public_id)
            enqueue_run(run.public_id)
            continue
        (report.cancelled if outcome == "cancelled" else report.worker_lost).append(run.public_id)
        metrics.run_finished(run)  # counted (worker_lost as a sandbox failure), once whoever reports it
        try:
            cx_redis.publish_done(run.public_id)  # wake waiting requests now
        except Exception:
            log.warning("janitor: could not publish the end of %s", run.public_id, exc_info=True)


def resend_lost_messages(report: JanitorReport, now: datetime) -> None:
    """Step 3: queued runs past the grace period whose message is not live."""
    from .services import enqueue_run

    cutoff = now - timedelta(seconds=settings.RUN_REQUEUE_GRACE_SECONDS)
    candidates = list(
        Run.objects.filter(status=Run.StatusChoices.QUEUED, queued_at__lt=cutoff)
        .order_by("queued_at")
        .values_list("pk", "public_id", "attempts")[:BATCH]
    )
    if not candidates:
        return
    live = live_message_run_ids()
    if live is None:
        return
    for pk, public_id, attempts in candidates:
        if public_id in live:
            continue
        # Conditional: skip a run claimed meanwhile; the new queued_at restarts its grace period.
        if Run.objects.filter(pk=pk, status=Run.StatusChoices.QUEUED, queued_at__lt=cutoff).update(queued_at=now):
            log.warning("janitor: run %s was queued with no live message; sent again", public_id)
            report.resent.append(public_id)
            # A run that never started has written no events: it is sent streamed, since a client may
            # be reading its event stream (whether it asked for one is not stored); unread, the events
            # expire with the stream. A run re-queued after a lost worker is not (attempts > 0): its
            # first attempt may have streamed output that a second one would repeat to the same reader.
            enqueue_run(public_id, stream=attempts == 0)


def live_message_run_ids() -> set[str] | None:
    """Run ids with a message in the Redis broker (queued, delayed, or fetched and not yet acked);
    None when the broker is not Redis (liveness unknown)."""
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.common import dq_name

    from .tasks import execute_run

    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        log.debug("janitor: the broker is not Redis; lost messages cannot be detected")
        return None
    queue = execute_run.queue_name
    pipe = broker.client.pipeline(transaction=True)  # one snapshot of both hashes
    for name in (queue, dq_name(queue)):
        pipe.hvals(f"{broker.namespace}:{name}.msgs")
    found: set[str] = set()
    for values in pipe.execute():
        for raw in values:
            try:
                message = dramatiq.Message.decode(raw)
            except Exception:
                log.warning("janitor: undecodable message in the %s queue", queue)
                continue
            if message.actor_name == execute_run.actor_name and message.args:
                found.add(str(message.args[0]))
    return found
