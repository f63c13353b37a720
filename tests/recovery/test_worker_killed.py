"""A worker SIGKILLed mid-run: the run is executed again (RUN_MAX_ATTEMPTS=2) or ends error/worker_lost, within
a bound that follows from the lease and the janitor's period, and nothing of its sandbox stays behind."""

from __future__ import annotations

import json
import time
import uuid

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from tests.recovery.stack import JANITOR_INTERVAL_S, LEASE_S, RecoveryStack, wait_until
from tests.support import with_redis_db

# Seconds between a new worker being ready and the janitor having moved a lost run: the lease (it may
# not have expired yet), one janitor period, and slack for a loaded machine.
RECOVERY_BOUND_S = LEASE_S + JANITOR_INTERVAL_S + 4

LONG = "import time\nprint('long started', flush=True)\ntime.sleep(45)\nprint('long done')\n"
SHORT = "import time\nprint('short started', flush=True)\ntime.sleep(4)\nprint('short done')\n"


def _running_here(stack: RecoveryStack, run_id: str, attempt: int) -> bool:
    """Running its `attempt`-th attempt, with its sandbox on this host."""
    row = stack.row(run_id)
    return row["status"] == "running" and row["attempts"] == attempt and bool(stack.leftovers_of(run_id))


def test_it_reexecutes_a_run_of_a_killed_worker_then_ends_it_worker_lost(healthy: RecoveryStack) -> None:
    stack = healthy
    limits = {"timeout_ms": 60_000}
    status, long_run = stack.post_run(LONG, limits=limits)
    assert status == 202, long_run
    status, short_run = stack.post_run(SHORT, limits=limits)
    assert status == 202, short_run
    long_id, short_id = long_run["id"], short_run["id"]
    wait_until(lambda: _running_here(stack, long_id, 1) and _running_here(stack, short_id, 1), 30, "both runs to start")

    # Crash 1: both runs lose their worker during their first attempt.
    stack.kill_worker()
    assert stack.leftovers_of(long_id) and stack.leftovers_of(short_id), "the crash left no sandbox behind?"
    assert stack.row(long_id)["status"] == "running"
    stack.start_worker()
    ready = time.monotonic()
    wait_until(
        lambda: stack.row(long_id)["attempts"] == 2 and stack.row(short_id)["attempts"] == 2,
        RECOVERY_BOUND_S,
        "the janitor to re-queue both runs and the new worker to claim them",
    )
    assert time.monotonic() - ready <= RECOVERY_BOUND_S

    short = stack.wait_run(short_id, 30)
    assert short["status"] == "succeeded", (short["error"], short["stdout"], short["stderr"])
    assert short["stdout"] == "short started\nshort done\n"  # one attempt's output, not two
    assert stack.row(short_id)["attempts"] == 2

    # Crash 2: the long run loses its worker during its last allowed attempt.
    wait_until(lambda: _running_here(stack, long_id, 2), 30, "the long run's second attempt to run")
    stack.kill_worker()
    assert stack.leftovers_of(long_id)
    stack.start_worker()
    ready = time.monotonic()
    lost = stack.wait_run(long_id, RECOVERY_BOUND_S)
    assert time.monotonic() - ready <= RECOVERY_BOUND_S
    assert lost["status"] == "error", lost
    assert lost["error"]["code"] == "worker_lost"
    assert "attempt 2 of at most 2" in lost["error"]["message"]
    assert lost["completed_at"] is not None
    assert stack.row(long_id)["attempts"] == 2

    # The sandboxes of both crashes are gone (the janitor's sandbox step, on worker start and periodically).
    wait_until(lambda: not stack.run_dirs() and not stack.cgroups(), 10, "no run directory or cgroup to remain")
    assert not stack.leftovers_of(long_id) and not stack.leftovers_of(short_id)

    # The new worker works.
    status, after = stack.post_run("print('after')", wait=True)
    assert (status, after["status"], after["stdout"]) == (200, "succeeded", "after\n")


def test_a_worker_that_comes_back_after_losing_its_run_cannot_finish_it(healthy: RecoveryStack) -> None:
    """A worker frozen past its lease (SIGSTOP) loses the run to the janitor; once it runs again, its renewal is
    refused, it kills its own sandbox and saves nothing, and the new attempt runs the code once more."""
    stack = healthy
    code = "import time\nprint('started', flush=True)\ntime.sleep(6)\nprint('done')\n"
    status, created = stack.post_run(code, limits={"timeout_ms": 60_000})
    assert status == 202, created
    run_id = created["id"]
    wait_until(lambda: _running_here(stack, run_id, 1), 30, "the run to start")
    requeued = False
    for _ in range(5):  # the worker may have been frozen holding the janitor's lock: thaw and try again
        stack.pause_worker(True)
        try:
            time.sleep(LEASE_S + 0.5)
            report = json.loads(stack.manage("janitor", "--skip-sandbox", check=False) or "{}")
        finally:
            stack.pause_worker(False)
        if report.get("requeued") == [run_id]:
            requeued = True
            break
        time.sleep(0.5)
    assert requeued, "the janitor never re-queued the frozen worker's run"

    run = stack.wait_run(run_id, 30)
    assert run["status"] == "succeeded", run
    assert run["stdout"] == "started\ndone\n"
    assert stack.row(run_id)["attempts"] == 2
    assert f"run {run_id}: its lease was taken over; stopping its sandbox" in stack.worker_log.read_text()
    wait_until(lambda: not stack.run_dirs() and not stack.cgroups(), 10, "no run directory or cgroup to remain")


def test_it_executes_a_duplicated_message_once(healthy: RecoveryStack) -> None:
    """The janitor may send a run's message again while a copy is still on its way; a second delivery must
    never execute the run twice (the claim is conditional)."""
    stack = healthy
    code = "import time, uuid\ntime.sleep(1)\nprint(uuid.uuid4().hex)\n"
    status, created = stack.post_run(code)
    assert status == 202, created
    run_id = created["id"]
    broker = RedisBroker(url=with_redis_db(stack.redis_server.url, 0))
    try:
        for _ in range(3):  # three more deliveries of the same run
            broker.enqueue(dramatiq.Message("runs", "execute_run", (run_id,), {}, {}, message_id=str(uuid.uuid4())))
        run = stack.wait_run(run_id, 30)
        assert run["status"] == "succeeded", run
        client = stack.redis_server.client()
        # (Messages of workers killed by other tests may wait there for Dramatiq's own redelivery.)
        wait_until(
            lambda: not any(run_id.encode() in raw for raw in client.hvals("dramatiq:runs.msgs")),
            30,
            "every copy of the message to be processed",
        )
    finally:
        broker.close()
    assert stack.row(run_id)["attempts"] == 1
    assert stack.get_run(run_id)["stdout"] == run["stdout"]
    log = stack.worker_log.read_text(errors="replace")
    assert log.count(f"run {run_id} not claimed") == 3, log[-3000:]
