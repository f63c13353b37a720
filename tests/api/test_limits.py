"""Rate limits and admission: per-key token buckets in Redis (across processes), per-key concurrency,
the global queue cap, and the per-address limit for missing or bad keys (behind trusted proxies)."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import subprocess
import threading
import time
import types
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import django_ratelimit.core
import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import RequestFactory
from rest_framework.test import APIClient

from runs import redis as cx_redis
from runs.models import Run
from runs.ratelimit import client_address, take
from tests.api import assert_error, wait_for
from tests.api.conftest import make_tenant
from tests.support import database_url, free_port

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"


def _fresh_bucket(key) -> None:
    # Key ids restart with every test database; a bucket of an earlier session must not leak in.
    cx_redis.client().delete(f"codeexec:bucket:key:{key.pk}")


def _tiny_rate_tenant(label: str, burst: int):
    tenant = make_tenant(label, rps=0.001, burst=burst)  # one token every 1000 s: no refill during a test
    _fresh_bucket(tenant.key)
    return tenant


# ---- per-key token bucket -------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_allows_exactly_the_burst_then_answers_429() -> None:
    carol = _tiny_rate_tenant("carol", burst=3)
    remaining = []
    for _ in range(3):
        response = carol.client.get("/v1/runs")
        assert response.status_code == 200, response.content
        assert response["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(response["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]

    refused = carol.client.get("/v1/runs")
    error = assert_error(refused, 429, "rate_limit_error", code="rate_limit_exceeded")
    assert error["message"]
    assert int(refused["Retry-After"]) >= 1
    assert refused["x-ratelimit-limit-requests"] == "3"
    assert refused["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.django_db
def test_it_limits_every_endpoint_from_one_bucket() -> None:
    carol = _tiny_rate_tenant("carol", burst=3)
    assert carol.client.get("/v1/runs").status_code == 200
    assert carol.client.get("/v1/files").status_code == 200
    assert carol.client.get("/v1/usage").status_code == 200
    assert_error(carol.post_run(code="print(1)", wait=False), 429, "rate_limit_error", code="rate_limit_exceeded")
    assert not Run.objects.exists()  # a refused request creates nothing


@pytest.mark.django_db
def test_it_keeps_one_bucket_per_key() -> None:
    carol = _tiny_rate_tenant("carol", burst=1)
    dave = _tiny_rate_tenant("dave", burst=1)
    assert carol.client.get("/v1/runs").status_code == 200
    assert_error(carol.client.get("/v1/runs"), 429, "rate_limit_error", code="rate_limit_exceeded")
    # Carol's empty bucket is not Dave's.
    response = dave.client.get("/v1/runs")
    assert response.status_code == 200, response.content
    assert response["x-ratelimit-remaining-requests"] == "0"


def test_it_refills_one_token_per_interval_with_an_injected_clock() -> None:
    bucket = f"test-{uuid.uuid4().hex}"
    rps, burst, now_ms = 2.0, 3, 1_700_000_000_000
    try:
        results = [take(bucket, rps, burst, now_ms=now_ms) for _ in range(burst)]
        assert [r.allowed for r in results] == [True, True, True]
        assert [r.remaining for r in results] == [2, 1, 0]
        empty = take(bucket, rps, burst, now_ms=now_ms)
        assert not empty.allowed
        assert empty.retry_after_s == pytest.approx(1 / rps)

        # Just short of one interval: still nothing.
        assert not take(bucket, rps, burst, now_ms=now_ms + int(1000 / rps) - 1).allowed
        # One interval after the burst was used: exactly one more.
        later = now_ms + int(1000 / rps)
        assert take(bucket, rps, burst, now_ms=later).allowed
        assert not take(bucket, rps, burst, now_ms=later).allowed
        # Two more intervals: two more, not three.
        later += 2 * int(1000 / rps)
        assert [take(bucket, rps, burst, now_ms=later).allowed for _ in range(3)] == [True, True, False]
    finally:
        cx_redis.client().delete(f"codeexec:bucket:{bucket}")


def test_it_never_refills_above_the_burst() -> None:
    bucket = f"test-{uuid.uuid4().hex}"
    rps, burst, now_ms = 10.0, 2, 1_700_000_000_000
    try:
        assert take(bucket, rps, burst, now_ms=now_ms).allowed
        hour_later = now_ms + 3600 * 1000
        allowed = [take(bucket, rps, burst, now_ms=hour_later).allowed for _ in range(burst + 1)]
        assert allowed == [True] * burst + [False]
    finally:
        cx_redis.client().delete(f"codeexec:bucket:{bucket}")


def test_it_does_not_refill_when_the_clock_goes_backwards() -> None:
    bucket = f"test-{uuid.uuid4().hex}"
    rps, burst, now_ms = 1.0, 1, 1_700_000_000_000
    try:
        assert take(bucket, rps, burst, now_ms=now_ms).allowed
        assert not take(bucket, rps, burst, now_ms=now_ms - 60_000).allowed
        assert not take(bucket, rps, burst, now_ms=now_ms).allowed
    finally:
        cx_redis.client().delete(f"codeexec:bucket:{bucket}")


# ---- the bucket across two server processes -----------------------------------------------------


def _get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _healthy(port: int) -> bool:
    try:
        return _get(port, "/healthz")[0] == 200
    except OSError:
        return False


@pytest.mark.django_db(transaction=True)
def test_it_shares_the_bucket_across_two_server_processes(tmp_path) -> None:
    burst = 4
    carol = _tiny_rate_tenant("carol", burst=burst)  # committed: the servers see it
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "1",
        "API_KEYS": "",
        "PYTHONUNBUFFERED": "1",
    }
    servers: list[tuple[int, subprocess.Popen]] = []
    try:
        for n in range(2):
            port = free_port()
            log = open(tmp_path / f"gunicorn-{n}.log", "wb")  # noqa: SIM115 (closed with the process)
            process = subprocess.Popen(
                [str(GUNICORN), "codeexec_site.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "1"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            servers.append((port, process))
        for n, (port, process) in enumerate(servers):
            wait_for(
                lambda port=port, process=process, n=n: (
                    _healthy(port) or (process.poll() is not None and _fail_with_log(tmp_path, n))
                ),
                timeout_s=60,
                interval_s=0.2,
                what=f"gunicorn {n} on port {port}",
            )
        assert servers[0][1].pid != servers[1][1].pid

        answers = []
        for i in range(burst + 2):
            port = servers[i % 2][0]
            status, headers, body = _get(port, "/v1/runs", carol.token)
            answers.append((status, headers.get("x-ratelimit-remaining-requests"), body))
        statuses = [a[0] for a in answers]
        assert statuses == [200] * burst + [429, 429], answers
        assert [a[1] for a in answers[:burst]] == [str(n) for n in range(burst - 1, -1, -1)], answers
        assert b"rate_limit_exceeded" in answers[burst][2]
    finally:
        for _port, process in servers:
            process.terminate()
        for _port, process in servers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _fail_with_log(tmp_path: Path, n: int) -> bool:
    raise AssertionError(f"gunicorn {n} exited:\n" + (tmp_path / f"gunicorn-{n}.log").read_text(errors="replace"))


# ---- admission: per-key concurrency and the global queue cap ------------------------------------


@pytest.mark.django_db
def test_it_refuses_a_run_over_the_key_concurrency_cap(make_run) -> None:
    carol = make_tenant("carol", max_concurrent_runs=2)
    make_run(carol.key, status="queued")
    make_run(carol.key, status="running")
    response = carol.post_run(code="print(1)", wait=False)
    error = assert_error(response, 429, "rate_limit_error", code="concurrency_limit_exceeded")
    assert "2" in error["message"]
    assert int(response["Retry-After"]) >= 1
    assert Run.objects.filter(owner=carol.key).count() == 2


@pytest.mark.django_db
def test_it_admits_a_run_below_the_concurrency_cap(make_run) -> None:
    carol = make_tenant("carol", max_concurrent_runs=2)
    make_run(carol.key, status="running")
    response = carol.post_run(code="print(1)", wait=False)
    assert response.status_code == 202, response.content
    # Now two are active: the next one is refused.
    assert_error(
        carol.post_run(code="print(1)", wait=False), 429, "rate_limit_error", code="concurrency_limit_exceeded"
    )


@pytest.mark.django_db
def test_it_does_not_count_finished_runs_against_the_concurrency_cap(make_run) -> None:
    carol = make_tenant("carol", max_concurrent_runs=2)
    for status in ("succeeded", "failed", "timeout", "oom", "cancelled", "error"):
        make_run(carol.key, status=status)
    make_run(carol.key, status="queued")
    response = carol.post_run(code="print(1)", wait=False)
    assert response.status_code == 202, response.content


@pytest.mark.django_db
def test_it_counts_concurrency_per_key(make_run, bob) -> None:
    carol = make_tenant("carol", max_concurrent_runs=1)
    make_run(bob.key, status="queued")
    make_run(bob.key, status="running")
    response = carol.post_run(code="print(1)", wait=False)
    assert response.status_code == 202, response.content
    # Carol's own active run now fills her cap; Bob's generous cap is unaffected.
    assert_error(
        carol.post_run(code="print(1)", wait=False), 429, "rate_limit_error", code="concurrency_limit_exceeded"
    )
    assert bob.post_run(code="print(1)", wait=False).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_requests_at_the_same_moment_never_pass_the_concurrency_cap(no_worker) -> None:
    """Admission and the insert are one round trip (runs.services.insert_if_admitted); the key's row lock
    still serialises them, so of many requests released together exactly the cap is admitted."""
    carol = make_tenant("carol", max_concurrent_runs=3)
    requests = 12
    start = threading.Barrier(requests)

    def post(_: int) -> int:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {carol.token}")
        start.wait()
        try:
            response = client.post("/v1/runs", {"language": "python", "code": "print(1)", "wait": False}, format="json")
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "concurrency_limit_exceeded"
            return response.status_code
        finally:
            connection.close()  # this thread's own connection

    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        codes = list(pool.map(post, range(requests)))
    assert sorted(codes) == [202] * 3 + [429] * (requests - 3), codes
    runs = Run.objects.filter(owner=carol.key)
    assert runs.count() == 3
    assert all(run.status == "queued" and run.limits and run.created_at for run in runs)


@pytest.mark.django_db
def test_it_answers_503_when_the_queue_is_full(alice, bob, make_run, settings) -> None:
    settings.MAX_QUEUED_RUNS = 3
    for _ in range(3):
        make_run(bob.key, status="queued")
    response = alice.post_run(code="print(1)", wait=False)
    assert_error(response, 503, "server_error", code="server_overloaded")
    assert int(response["Retry-After"]) >= 1
    assert not Run.objects.filter(owner=alice.key).exists()


@pytest.mark.django_db
def test_it_counts_only_queued_runs_against_the_queue_cap(alice, bob, make_run, settings) -> None:
    settings.MAX_QUEUED_RUNS = 3
    make_run(bob.key, status="queued")
    make_run(bob.key, status="queued")
    for status in ("running", "running", "succeeded", "cancelled"):
        make_run(bob.key, status=status)
    response = alice.post_run(code="print(1)", wait=False)
    assert response.status_code == 202, response.content
    # That run was the third queued one: the queue is full now.
    assert_error(alice.post_run(code="print(1)", wait=False), 503, "server_error", code="server_overloaded")


# ---- missing or bad keys: limited per client address ---------------------------------------------


@pytest.fixture
def address_limit(settings, monkeypatch):
    """UNAUTHENTICATED_RATE=3/m from a clean slate, with django-ratelimit's clock frozen so the
    fixed window cannot roll over in the middle of a test."""
    settings.UNAUTHENTICATED_RATE = "3/m"
    settings.TRUSTED_PROXIES = []
    cache.clear()  # the test Redis database only (settings.CACHES points at it)
    frozen = time.time()
    monkeypatch.setattr(django_ratelimit.core, "time", types.SimpleNamespace(time=lambda: frozen))
    yield settings
    cache.clear()


def _bad_key_client() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer cx_not-a-real-key")
    return client


@pytest.mark.django_db
def test_it_limits_bad_keys_per_address(address_limit) -> None:
    client = _bad_key_client()
    for _ in range(3):
        assert_error(client.get("/v1/runs"), 401, "authentication_error", code="invalid_api_key")
    response = client.get("/v1/runs")
    assert_error(response, 429, "rate_limit_error", code="rate_limit_exceeded")
    assert int(response["Retry-After"]) >= 1
    # Another wrong key from the same address is in the same budget.
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer cx_another-wrong-key")
    assert_error(other.get("/v1/files"), 429, "rate_limit_error", code="rate_limit_exceeded")


@pytest.mark.django_db
def test_it_limits_missing_keys_per_address(address_limit, anonymous) -> None:
    for _ in range(3):
        assert_error(anonymous.get("/v1/runs"), 401, "authentication_error")
    assert_error(anonymous.get("/v1/runs"), 429, "rate_limit_error", code="rate_limit_exceeded")


@pytest.mark.django_db
def test_it_limits_a_revoked_key_per_address(address_limit) -> None:
    carol = make_tenant("carol")
    carol.key.revoke()
    for _ in range(3):
        assert_error(carol.client.get("/v1/runs"), 401, "authentication_error")
    assert_error(carol.client.get("/v1/runs"), 429, "rate_limit_error", code="rate_limit_exceeded")


@pytest.mark.django_db
def test_it_still_serves_valid_keys_from_a_limited_address(address_limit, alice) -> None:
    client = _bad_key_client()
    for _ in range(4):
        client.get("/v1/runs")
    assert_error(client.get("/v1/runs"), 429, "rate_limit_error")
    response = alice.client.get("/v1/runs")
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_it_ignores_x_forwarded_for_without_a_trusted_proxy(address_limit) -> None:
    client = _bad_key_client()
    for n in range(3):
        response = client.get("/v1/runs", HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}")
        assert_error(response, 401, "authentication_error")
    response = client.get("/v1/runs", HTTP_X_FORWARDED_FOR="198.51.100.77")
    assert_error(response, 429, "rate_limit_error", code="rate_limit_exceeded")


@pytest.mark.django_db
def test_it_gives_each_client_behind_a_trusted_proxy_its_own_budget(address_limit) -> None:
    address_limit.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32")]
    client = _bad_key_client()  # REMOTE_ADDR of the test client is 127.0.0.1: the proxy
    for _ in range(3):
        assert_error(client.get("/v1/runs", HTTP_X_FORWARDED_FOR="203.0.113.1"), 401, "authentication_error")
    assert_error(client.get("/v1/runs", HTTP_X_FORWARDED_FOR="203.0.113.1"), 429, "rate_limit_error")
    # A different client behind the same proxy still has its budget.
    assert_error(client.get("/v1/runs", HTTP_X_FORWARDED_FOR="203.0.113.2"), 401, "authentication_error")
    # The limited client cannot escape by prepending a made-up hop: the proxy appends the real one.
    spoofed = client.get("/v1/runs", HTTP_X_FORWARDED_FOR="198.51.100.9, 203.0.113.1")
    assert_error(spoofed, 429, "rate_limit_error")


@pytest.mark.django_db
def test_it_ignores_x_forwarded_for_from_an_untrusted_peer(address_limit) -> None:
    address_limit.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    client = _bad_key_client()  # 127.0.0.1 is not one of the trusted proxies
    for n in range(3):
        assert_error(client.get("/v1/runs", HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}"), 401, "authentication_error")
    assert_error(client.get("/v1/runs", HTTP_X_FORWARDED_FOR="203.0.113.99"), 429, "rate_limit_error")


# ---- client_address -------------------------------------------------------------------------------


def _request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/v1/runs", **extra)


def test_it_takes_remote_addr_without_trusted_proxies(settings) -> None:
    settings.TRUSTED_PROXIES = []
    assert client_address(_request("192.0.2.10", "203.0.113.5")) == "192.0.2.10"
    assert client_address(_request("192.0.2.10")) == "192.0.2.10"


def test_it_takes_remote_addr_when_the_peer_is_not_a_trusted_proxy(settings) -> None:
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address(_request("192.0.2.10", "203.0.113.5")) == "192.0.2.10"


def test_it_takes_the_right_most_untrusted_hop_behind_trusted_proxies(settings) -> None:
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    assert client_address(_request("10.0.0.1", "203.0.113.5")) == "203.0.113.5"
    # Left-most hops come from the client and may be made up; only the proxies' own hops count.
    assert client_address(_request("10.0.0.1", "1.1.1.1, 8.8.8.8, 203.0.113.5")) == "203.0.113.5"
    # Several trusted proxies in a chain: skip them all, from the right.
    assert client_address(_request("10.0.0.1", "1.1.1.1, 203.0.113.5, 10.2.3.4, 10.0.0.9")) == "203.0.113.5"
    assert client_address(_request("10.0.0.1", " 203.0.113.5 ,fd00::1")) == "203.0.113.5"
    assert client_address(_request("fd00::2", "2001:db8::7")) == "2001:db8::7"


def test_it_takes_the_proxy_itself_when_no_hop_is_forwarded(settings) -> None:
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address(_request("10.0.0.1")) == "10.0.0.1"
    assert client_address(_request("10.0.0.1", "")) == "10.0.0.1"
