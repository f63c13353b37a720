"""GET /metrics: counters and histograms kept in Redis by the web and the worker, gauges read when scraped.

The counters live in the tests' Redis database and outlive each test, so every test compares a scrape
after with a scrape before (exact deltas), never absolute values.
"""

from __future__ import annotations

import time
import types
import uuid
from typing import Any

import django_ratelimit.core
import dramatiq
import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from runs import metrics
from runs.tasks import execute_run
from tests.api import assert_error, wait_for
from tests.api.conftest import SMALL_LIMITS
from tests.support import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Any, **headers: str) -> Samples:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# ---- runs through a real worker ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_counts_runs_by_status_and_language(alice, anonymous, ready_worker) -> None:
    before = scrape(anonymous)
    succeeded = alice.post_run(code="print('hi')")
    failed = alice.post_run(code="import sys\nsys.exit(3)")
    timed_out = alice.post_run(code="import time\ntime.sleep(30)", limits={**SMALL_LIMITS, "timeout_ms": 1000})
    statuses = [r.json()["status"] for r in (succeeded, failed, timed_out)]
    assert statuses == ["succeeded", "failed", "timeout"], [r.content[:300] for r in (succeeded, failed, timed_out)]

    # The worker records before it announces the end, but a waiting request may reread the row first.
    after = wait_for(
        lambda: (
            lambda s: s if delta(before, s, "codeexec_run_duration_seconds_count", language="python") >= 3 else None
        )(scrape(anonymous)),
        timeout_s=10,
        what="the worker's metrics",
    )
    for status in ("succeeded", "failed", "timeout"):
        assert delta(before, after, "codeexec_runs_total", status=status, language="python") == 1, status
    for status in ("oom", "cancelled", "error"):
        assert delta(before, after, "codeexec_runs_total", status=status, language="python") == 0, status
    assert delta(before, after, "codeexec_run_duration_seconds_count", language="python") == 3
    assert delta(before, after, "codeexec_run_duration_seconds_bucket", language="python", le="+Inf") == 3
    # The timed-out run alone spent a second in the sandbox.
    assert delta(before, after, "codeexec_run_duration_seconds_sum", language="python") >= 1.0
    assert delta(before, after, "codeexec_run_duration_seconds_bucket", language="python", le="0.5") <= 2
    assert delta(before, after, "codeexec_run_queue_wait_seconds_count") == 3
    for code in ("sandbox_error", "storage_error", "worker_lost"):
        assert delta(before, after, "codeexec_sandbox_failures_total", code=code) == 0
    assert (
        delta(
            before, after, "codeexec_http_request_duration_seconds_count", method="POST", route="run-list", status="200"
        )
        == 3
    )
    # Gauges: nothing left queued or running, and this process's worker is alive.
    assert value(after, "codeexec_queue_depth") == 0
    assert value(after, "codeexec_runs_running") == 0
    assert value(after, "codeexec_workers", backend_ok="true") >= 1
    assert value(after, "codeexec_metrics_store_up") == 1


@pytest.mark.django_db(transaction=True)
def test_it_shows_the_queue_when_no_worker_consumes_it(alice, anonymous, no_worker) -> None:
    broker = dramatiq.get_broker()
    broker.flush_all()
    try:
        before = scrape(anonymous)
        assert value(before, "codeexec_queue_depth") == 0
        run_ids = [alice.post_run(code="print(1)", wait=False).json()["id"] for _ in range(3)]
        during = scrape(anonymous)
        assert value(during, "codeexec_queue_depth") == 3
        assert value(during, "codeexec_broker_queue_messages", queue="runs") == 3
        assert value(during, "codeexec_workers", backend_ok="true") == 0

        # Cancelling a queued run ends it in the web: counted there, once.
        assert alice.client.post(f"/v1/runs/{run_ids[0]}/cancel").json()["status"] == "cancelled"
        after = scrape(anonymous)
        assert value(after, "codeexec_queue_depth") == 2
        assert delta(before, after, "codeexec_runs_total", status="cancelled", language="python") == 1
        # A cancelled run never started: no sandbox time, no queue wait.
        assert delta(before, after, "codeexec_run_duration_seconds_count", language="python") == 0
        assert delta(before, after, "codeexec_run_queue_wait_seconds_count") == 0
    finally:
        broker.flush_all()


# ---- the worker's failure paths, the actor called in this thread -------------------------------------


@pytest.mark.django_db
def test_it_counts_sandbox_failures_by_code(alice, anonymous, make_run) -> None:
    # An input file that vanished before the worker staged it: the run ends in error/storage_error.
    run = make_run(alice.key, status="queued", input_files=[{"file_id": "file-gone", "path": "in.csv"}])
    before = scrape(anonymous)
    execute_run.fn(run.public_id)
    run.refresh_from_db()
    assert (run.status, run.error_code) == ("error", "storage_error")
    after = scrape(anonymous)
    assert delta(before, after, "codeexec_sandbox_failures_total", code="storage_error") == 1
    assert delta(before, after, "codeexec_runs_total", status="error", language="python") == 1
    assert delta(before, after, "codeexec_run_queue_wait_seconds_count") == 1
    assert delta(before, after, "codeexec_run_duration_seconds_count", language="python") == 0  # never ran


@pytest.mark.django_db
def test_it_counts_a_run_once_whoever_reports_it(alice, anonymous, make_run) -> None:
    run = make_run(alice.key, status="succeeded", wall_ms=120)
    before = scrape(anonymous)
    metrics.run_finished(run)
    metrics.run_finished(run)  # a second report (another process noticing the same end) changes nothing
    after = scrape(anonymous)
    assert delta(before, after, "codeexec_runs_total", status="succeeded", language="python") == 1
    assert delta(before, after, "codeexec_run_duration_seconds_count", language="python") == 1
    assert delta(before, after, "codeexec_run_duration_seconds_bucket", language="python", le="0.25") == 1
    assert delta(before, after, "codeexec_run_duration_seconds_bucket", language="python", le="0.1") == 0
    assert delta(before, after, "codeexec_run_duration_seconds_sum", language="python") == pytest.approx(0.12)


@pytest.mark.django_db
def test_it_ignores_runs_that_have_not_ended(alice, anonymous, make_run) -> None:
    run = make_run(alice.key, status="running")
    before = scrape(anonymous)
    metrics.run_finished(run)
    after = scrape(anonymous)
    assert (
        sum(delta(before, after, "codeexec_runs_total", status=s, language="python") for s in metrics.TERMINAL_STATUSES)
        == 0
    )


# ---- HTTP --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_labels_requests_by_url_pattern_never_by_path(alice, anonymous, make_run) -> None:
    run = make_run(alice.key)
    before = scrape(anonymous)
    assert alice.client.get(f"/v1/runs/{run.public_id}").status_code == 200
    assert alice.client.get("/v1/runs/run_doesnotexist").status_code == 404
    assert anonymous.get("/no/such/page").status_code == 404
    response = anonymous.get("/metrics")
    after = scrape(anonymous)
    route = {"method": "GET", "route": "run-detail"}
    assert delta(before, after, "codeexec_http_request_duration_seconds_count", **route, status="200") == 1
    assert delta(before, after, "codeexec_http_request_duration_seconds_count", **route, status="404") == 1
    assert (
        delta(
            before, after, "codeexec_http_request_duration_seconds_count", method="GET", route="unmatched", status="404"
        )
        == 1
    )
    text = response.content.decode()
    assert run.public_id not in text and "run_doesnotexist" not in text and "/no/such/page" not in text
    assert alice.key.label not in {v for (_, labels) in after for _, v in labels}


@pytest.mark.django_db
def test_it_groups_unknown_http_methods(anonymous) -> None:
    before = scrape(anonymous)
    anonymous.generic("BREW", "/healthz")
    after = scrape(anonymous)
    assert (
        delta(
            before, after, "codeexec_http_request_duration_seconds_count", method="other", route="healthz", status="200"
        )
        == 1
    )
    assert not any(("method", "BREW") in labels for _, labels in after)


@pytest.mark.django_db
def test_it_is_not_in_the_openapi_schema(anonymous) -> None:
    paths = anonymous.get("/v1/openapi.json").json()["paths"]
    assert not any("metrics" in p for p in paths), sorted(paths)


@pytest.mark.django_db
def test_it_reports_the_build(anonymous, settings) -> None:
    samples = scrape(anonymous)
    builds = [dict(labels) for name, labels in samples if name == "codeexec_build_info"]
    assert len(builds) == 1
    assert builds[0]["sandbox_backend"] == settings.SANDBOX_BACKEND
    assert builds[0]["version"] != "unknown"


# ---- METRICS_TOKEN -----------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="metrics-s3cret")
def test_it_wants_the_metrics_token_when_one_is_set(anonymous, alice) -> None:
    assert_error(anonymous.get("/metrics"), 401, "authentication_error", code="invalid_metrics_token")
    wrong = anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-guess")
    assert_error(wrong, 401, "authentication_error", code="invalid_metrics_token")
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    # An API key is not the metrics token.
    assert_error(alice.client.get("/metrics"), 401, "authentication_error", code="invalid_metrics_token")
    samples = scrape(anonymous, HTTP_AUTHORIZATION="Bearer metrics-s3cret")
    assert value(samples, "codeexec_metrics_store_up") == 1


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="metrics-s3cret", UNAUTHENTICATED_RATE="2/m", TRUSTED_PROXIES=[])
def test_it_limits_guessing_the_metrics_token(anonymous, monkeypatch) -> None:
    frozen = time.time()  # the fixed window must not roll over mid-test
    monkeypatch.setattr(django_ratelimit.core, "time", types.SimpleNamespace(time=lambda: frozen))
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"  # a fresh budget
    codes = [
        anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Bearer guess-{i}", REMOTE_ADDR=address).status_code
        for i in range(3)
    ]
    assert codes == [401, 401, 429], codes


@pytest.mark.django_db
def test_it_only_answers_get(anonymous) -> None:
    assert_error(anonymous.post("/metrics"), 405, "invalid_request_error", code="method_not_allowed")


# ---- Redis down ----------------------------------------------------------------------------------------


@pytest.fixture
def metrics_redis_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics store (only it) is a port nothing listens on; the recorder starts unpaused."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    connect = metrics._client_for
    monkeypatch.setattr(metrics, "_client_for", lambda url: connect(dead))
    monkeypatch.setattr(metrics._recorder, "paused_until", 0.0)


@pytest.mark.django_db
def test_it_never_fails_a_request_or_a_run_when_redis_is_down(alice, anonymous, make_run, metrics_redis_down) -> None:
    assert anonymous.get("/healthz").status_code == 200
    run = make_run(alice.key, status="queued", code="print('still runs')")
    execute_run.fn(run.public_id)
    run.refresh_from_db()
    assert (run.status, run.stdout) == ("succeeded", "still runs\n")
    samples = scrape(anonymous)  # what can be read (database gauges) still is
    assert value(samples, "codeexec_metrics_store_up") == 0
    assert ("codeexec_queue_depth", frozenset()) in samples


# ---- the count and the completion message in one round trip --------------------------------------------


def _subscribed(channel: str) -> Any:
    from runs import redis as cx_redis

    pubsub = cx_redis.client().pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    return pubsub


@pytest.mark.django_db
def test_the_completion_message_goes_out_with_the_count(alice, anonymous, make_run) -> None:
    run = make_run(alice.key, status="succeeded", wall_ms=80)
    channel, message = f"codeexec:test-done:{uuid.uuid4().hex}", "the result"
    pubsub = _subscribed(channel)
    before = scrape(anonymous)
    assert metrics.run_finished(run, publish=(channel, message)) is True
    received = pubsub.get_message(timeout=5)
    after = scrape(anonymous)  # the pipeline wrote the count before it published
    pubsub.close()
    assert received is not None and received["data"] == message.encode()
    assert delta(before, after, "codeexec_runs_total", status="succeeded", language="python") == 1
    # Reported again: counted once, and the message still goes out.
    pubsub = _subscribed(channel)
    assert metrics.run_finished(run, publish=(channel, message)) is True
    assert pubsub.get_message(timeout=2)["data"] == message.encode()
    assert delta(after, scrape(anonymous), "codeexec_runs_total", status="succeeded", language="python") == 0
    pubsub.close()


@pytest.mark.django_db
def test_a_run_is_announced_when_the_metrics_store_is_down(alice, make_run, metrics_redis_down) -> None:
    from runs import redis as cx_redis

    run = make_run(alice.key, status="queued", code="print('announced')")
    pubsub = _subscribed(cx_redis.DONE_CHANNEL.format(run_id=run.public_id))
    assert metrics.run_finished(run, publish=("codeexec:unused", "x")) is False  # not terminal: not sent
    execute_run.fn(run.public_id)
    received = pubsub.get_message(timeout=5)
    pubsub.close()
    assert received is not None and received["type"] == "message"
    assert b"announced" in received["data"]  # the saved result travels with it, through the other client
