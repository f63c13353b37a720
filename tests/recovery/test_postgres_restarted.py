"""PostgreSQL stopped and started again: meanwhile the API answers 503 in the error envelope (never 500),
/readyz says the database is down, and afterwards everything works again with the same web and worker
processes; a run cut off from the database mid-way still reaches a terminal state."""

from __future__ import annotations

import time

from tests.recovery.stack import JANITOR_INTERVAL_S, LEASE_S, RecoveryStack, wait_until


def _assert_database_unavailable(status: int, body: object) -> None:
    assert status == 503, (status, body)
    assert isinstance(body, dict), body
    error = body["error"]
    assert error["code"] == "database_unavailable", body
    assert error["type"] == "server_error"
    assert error["message"] and error["param"] is None


def test_the_api_answers_503_while_postgres_is_down_and_recovers_without_restarts(healthy: RecoveryStack) -> None:
    stack = healthy
    web_pid, worker_pid = stack.web.pid, stack.worker.pid  # type: ignore[union-attr]
    status, created = stack.post_run("import time\ntime.sleep(2)\nprint('survived')\n")
    assert status == 202, created
    run_id = created["id"]
    stack.wait_run(run_id, 30, statuses={"running"})

    stack.postgres.stop()
    try:
        _assert_database_unavailable(*stack.request("GET", "/v1/runs"))
        _assert_database_unavailable(*stack.request("GET", f"/v1/runs/{run_id}"))
        _assert_database_unavailable(*stack.post_run("print(1)"))
        status, ready = stack.request("GET", "/readyz", auth=False)
        _assert_database_unavailable(status, ready)
        assert ready["checks"]["database"].startswith("error"), ready
        time.sleep(3)  # the run's sandbox ends while its result cannot be saved
    finally:
        stack.postgres.start()
    back = time.monotonic()

    wait_until(lambda: stack.request("GET", "/v1/runs")[0] == 200, 15, "GET /v1/runs to answer 200 again")
    wait_until(lambda: stack.request("GET", "/readyz", auth=False)[0] == 200, 15, "/readyz to answer 200 again")
    # Its result was lost with the connection: the lease recovers it (re-executed, RUN_MAX_ATTEMPTS=2).
    run = stack.wait_run(run_id, LEASE_S + JANITOR_INTERVAL_S + 20)
    assert run["status"] == "succeeded", run
    assert run["stdout"] == "survived\n"
    assert time.monotonic() - back < LEASE_S + JANITOR_INTERVAL_S + 20

    status, after = stack.post_run("print('after')", wait=True)
    assert (status, after["status"], after["stdout"]) == (200, "succeeded", "after\n"), after
    stack.check_alive()
    assert (stack.web.pid, stack.worker.pid) == (web_pid, worker_pid)  # type: ignore[union-attr]
