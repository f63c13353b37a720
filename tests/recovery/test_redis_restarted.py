"""Redis restarted under load, keeping nothing: every run that got a 2xx still reaches a terminal state,
because queued runs whose message was lost are sent again from the database."""

from __future__ import annotations

import time

from tests.recovery.stack import JANITOR_INTERVAL_S, REQUEUE_GRACE_S, RecoveryStack, wait_until

RUNS = 20
CODE = "import time\ntime.sleep(1)\nprint('run {i}')\n"


def test_every_accepted_run_finishes_after_redis_lost_everything(healthy: RecoveryStack) -> None:
    stack = healthy
    accepted: dict[str, int] = {}
    for i in range(RUNS):
        status, body = stack.post_run(CODE.format(i=i))
        assert status == 202, body
        accepted[body["id"]] = i
    # 4 worker threads, 1 s each: most of them are still queued, their messages only in Redis.
    queued_before = [run_id for run_id in accepted if stack.row(run_id)["status"] == "queued"]
    assert len(queued_before) >= RUNS // 2, "the runs finished before Redis could lose their messages"

    stack.redis_server.crash()
    try:
        # Requests while Redis is down may fail (503 in the error envelope, not 500), but a run that is
        # accepted must run.
        for i in range(RUNS, RUNS + 2):
            status, body = stack.post_run(CODE.format(i=i))
            if 200 <= status < 300:
                accepted[body["id"]] = i
            else:
                assert status == 503, (status, body)
                assert body["error"]["code"] == "broker_unavailable", body
        time.sleep(1)
    finally:
        stack.redis_server.start()  # empty: every queued message is gone
    restarted = time.monotonic()
    assert stack.redis_server.client().hlen("dramatiq:runs.msgs") == 0

    # Bound: the grace period, a janitor period, then the backlog at 4 runs per second.
    bound_s = REQUEUE_GRACE_S + JANITOR_INTERVAL_S + len(accepted) / 4 * 1.5 + 20
    for run_id, i in accepted.items():
        remaining = max(1.0, bound_s - (time.monotonic() - restarted))
        run = stack.wait_run(run_id, remaining)
        assert run["status"] == "succeeded", run
        assert run["stdout"] == f"run {i}\n"
    log = stack.worker_log.read_text(errors="replace")
    resent = [run_id for run_id in queued_before if f"run {run_id} was queued with no live message" in log]
    assert resent, "no run was sent again: the test did not exercise lost messages"
    for run_id in accepted:
        assert stack.row(run_id)["attempts"] == 1, run_id  # re-sent, never executed twice

    # The stack itself recovered: readiness, and a run that waits for its result.
    wait_until(lambda: stack.request("GET", "/readyz", auth=False)[0] == 200, 30, "/readyz to answer 200")
    status, after = stack.post_run("print('after')", wait=True)
    assert (status, after["status"]) == (200, "succeeded"), after
    stack.check_alive()
