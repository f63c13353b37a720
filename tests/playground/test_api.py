"""The playground's JSON endpoints: session + CSRF, the per-user playground key, ownership, and the
API's own validation, rate limit and admission with its error envelope."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from playground.keys import get_or_create_key, key_label
from runs.models import ApiKey, Run
from tests.api import assert_error

from .conftest import fresh_bucket, logged_in, make_user, playground_keys

RUNS = "/playground/api/runs"
HELLO = {"language": "python", "code": "print('hi')"}


def post(client: Client, body: Any, **extra: Any) -> Any:
    return client.post(RUNS, json.dumps(body), content_type="application/json", **extra)


def playground_key(user: User) -> ApiKey:
    return ApiKey.objects.get(label=f"playground:{user.username}", source=ApiKey.Source.PLAYGROUND)


# ---- who may call -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("get", RUNS), ("post", RUNS), ("get", f"{RUNS}/run_x"), ("get", f"{RUNS}/run_x/events")]
)
def test_it_refuses_anonymous_requests_in_the_error_envelope(db, method, path) -> None:
    response = getattr(Client(), method)(path)
    assert_error(response, 403, "permission_error", code="not_authenticated")
    assert not playground_keys().exists()


@pytest.mark.parametrize(
    ("method", "path"), [("get", RUNS), ("post", RUNS), ("get", f"{RUNS}/run_x"), ("get", f"{RUNS}/run_x/events")]
)
def test_it_refuses_users_who_are_not_staff(charlie, method, path) -> None:
    response = getattr(logged_in(charlie), method)(path)
    assert_error(response, 403, "permission_error", code="permission_denied")
    assert not playground_keys().exists()


def test_it_ignores_a_bearer_key(db) -> None:
    """The playground authenticates the session only; an API key does not open it."""
    _key, token = ApiKey.create_with_token("api")
    response = Client().get(RUNS, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_error(response, 403, "permission_error", code="not_authenticated")


def test_it_requires_the_csrf_token(alice) -> None:
    client = logged_in(alice, enforce_csrf_checks=True)
    page = client.get("/")
    assert page.status_code == 200
    token = client.cookies["csrftoken"].value

    refused = post(client, HELLO)
    error = assert_error(refused, 403, "permission_error", code="csrf_failed")
    assert "CSRF" in error["message"]
    assert not Run.objects.exists()
    assert_error(post(client, HELLO, HTTP_X_CSRFTOKEN="not-the-token"), 403, "permission_error", code="csrf_failed")

    accepted = post(client, HELLO, HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 202, accepted.content
    # Reading needs no token: GETs change nothing.
    assert client.get(RUNS).status_code == 200


# ---- the playground key -------------------------------------------------------------------------


def test_it_creates_the_playground_key_once_and_reuses_it(alice_client, alice) -> None:
    first = post(alice_client, HELLO)
    second = post(alice_client, {**HELLO, "code": "print(2)"})
    assert (first.status_code, second.status_code) == (202, 202), (first.content, second.content)
    key = playground_key(alice)
    assert playground_keys().count() == 1
    assert key.label == "playground:alice"
    assert key.source == ApiKey.Source.PLAYGROUND
    assert key.is_usable
    owners = set(
        Run.objects.filter(public_id__in=[first.json()["id"], second.json()["id"]]).values_list("owner", flat=True)
    )
    assert owners == {key.pk}
    assert get_or_create_key(alice) == key


def test_it_gives_each_user_a_key_of_their_own(alice_client, alice, bob) -> None:
    assert post(alice_client, HELLO).status_code == 202
    assert post(logged_in(bob), HELLO).status_code == 202
    assert playground_key(alice) != playground_key(bob)
    assert Run.objects.get(owner=playground_key(bob)).language == "python"


def test_it_does_not_take_over_an_admin_key_with_the_same_label(alice_client, alice) -> None:
    impostor, _token = ApiKey.create_with_token("playground:alice", source=ApiKey.Source.ADMIN)
    assert post(alice_client, HELLO).status_code == 202
    assert playground_key(alice) != impostor
    assert not Run.objects.filter(owner=impostor).exists()


def test_it_keeps_labels_unique_for_long_usernames(db) -> None:
    long_a = make_user("a" * 140 + "x", staff=True)
    long_b = make_user("a" * 140 + "y", staff=True)
    labels = {key_label(long_a), key_label(long_b)}
    assert len(labels) == 2
    assert all(len(label) <= 100 and label.startswith("playground:aaa") for label in labels)
    assert get_or_create_key(long_a) != get_or_create_key(long_b)


def test_it_refuses_new_runs_with_a_revoked_key(alice_client, alice, make_run) -> None:
    assert post(alice_client, HELLO).status_code == 202
    key = playground_key(alice)
    key.revoke()
    assert_error(post(alice_client, HELLO), 403, "permission_error", code="key_revoked")
    assert Run.objects.filter(owner=key).count() == 1
    assert playground_keys().count() == 1  # not replaced by a fresh key behind the operator's back


# ---- creating, reading, listing -----------------------------------------------------------------


def test_it_queues_the_run_without_waiting(alice_client, alice) -> None:
    response = post(alice_client, {**HELLO, "wait": True, "stdin": "x", "limits": {"timeout_ms": 1500}})
    assert response.status_code == 202, response.content
    run = response.json()
    assert run["object"] == "run"
    assert run["id"].startswith("run_")
    assert run["status"] == "queued"
    assert run["limits"]["timeout_ms"] == 1500 and run["limits"]["cpu_ms"] == 1500
    row = Run.objects.get(public_id=run["id"])
    assert row.owner == playground_key(alice)
    assert (row.stdin, row.code) == ("x", "print('hi')")
    assert response["x-ratelimit-limit-requests"] == str(row.owner.burst)


def test_it_reads_a_run_as_the_api_renders_it(alice_client, alice, make_run) -> None:
    assert post(alice_client, HELLO).status_code == 202
    key = playground_key(alice)
    run = make_run(key, stdout="hi\n", exit_code=0, wall_ms=12)
    body = alice_client.get(f"{RUNS}/{run.public_id}").json()

    api = APIClient()
    _api_key, token = ApiKey.create_with_token("same-shape")
    Run.objects.filter(pk=run.pk).update(owner=_api_key)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    through_api = api.get(f"/v1/runs/{run.public_id}").json()
    assert body == through_api
    assert body["stdout"] == "hi\n"


def test_it_lists_the_users_runs_newest_first_with_admin_links(alice_client, alice, make_run) -> None:
    assert post(alice_client, HELLO).status_code == 202
    key = playground_key(alice)
    older = Run.objects.get(owner=key)
    newer = make_run(key)
    body = alice_client.get(RUNS).json()
    assert body["object"] == "list"
    assert [r["id"] for r in body["data"]] == [newer.public_id, older.public_id]
    assert body["admin_urls"] == {
        run.public_id: reverse("admin:runs_run_change", args=[run.pk]) for run in (newer, older)
    }
    limited = alice_client.get(f"{RUNS}?limit=1").json()
    assert [r["id"] for r in limited["data"]] == [newer.public_id] and limited["has_more"] is True


def test_it_lists_nothing_before_the_first_run(alice_client) -> None:
    body = alice_client.get(RUNS).json()
    assert body["data"] == [] and body["admin_urls"] == {}
    assert not playground_keys().exists()


def test_it_hides_another_users_runs(alice_client, bob, make_run) -> None:
    assert post(logged_in(bob), HELLO).status_code == 202
    bobs_run = Run.objects.get()
    assert_error(alice_client.get(f"{RUNS}/{bobs_run.public_id}"), 404, "invalid_request_error", param="id")
    assert post(alice_client, HELLO).status_code == 202
    assert_error(alice_client.get(f"{RUNS}/{bobs_run.public_id}"), 404, "invalid_request_error", param="id")
    assert bobs_run.public_id not in {r["id"] for r in alice_client.get(RUNS).json()["data"]}


def test_it_streams_only_the_users_own_runs(alice_client, bob, make_run) -> None:
    assert post(logged_in(bob), HELLO).status_code == 202
    bobs_run = Run.objects.get()
    assert post(alice_client, HELLO).status_code == 202
    assert_error(alice_client.get(f"{RUNS}/{bobs_run.public_id}/events"), 404, "invalid_request_error", param="id")
    # Her own finished run: the whole stream at once, ending with the run as GET renders it.
    own = make_run(ApiKey.objects.get(label="playground:alice"), stdout="hi\n", exit_code=0)
    response = alice_client.get(f"{RUNS}/{own.public_id}/events")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    body = b"".join(response.streaming_content).decode()
    assert body.startswith("event: run.created\n") and "event: run.completed\n" in body
    assert '"stdout":"hi\\n"' in body.split("event: run.completed\n", 1)[1]


def test_it_hides_runs_of_ordinary_api_keys(alice_client, make_run) -> None:
    api_key, _token = ApiKey.create_with_token("alice-api")
    run = make_run(api_key)
    assert post(alice_client, HELLO).status_code == 202
    assert_error(alice_client.get(f"{RUNS}/{run.public_id}"), 404, "invalid_request_error", param="id")


# ---- the API's validation, limits and admission -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"language": "cobol", "code": "x"}, "language", "invalid_value"),
        ({"language": "python", "code": "x", "limits": {"memory_mb": 4096}}, "limits.memory_mb", "invalid_value"),
        ({"language": "python", "code": "x", "limits": {"timeout_ms": "fast"}}, "limits.timeout_ms", "invalid_value"),
        ({"language": "python", "code": "x", "network": True}, "network", "unknown_parameter"),
        ({"language": "python", "code": "x", "env": {"LD_PRELOAD": "/x"}}, "env.LD_PRELOAD", "invalid_value"),
        ({"language": "python"}, "code", "invalid_value"),
        (["not", "an", "object"], None, "invalid_json"),
    ],
)
def test_it_validates_exactly_like_the_api(alice_client, body, param, code) -> None:
    response = post(alice_client, body)
    error = assert_error(response, 400, "invalid_request_error", param=param, code=code)
    assert not Run.objects.exists()

    api = APIClient()
    _key, token = ApiKey.create_with_token("api", rps=1000, burst=1000)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    api_body = {**body, "wait": False} if isinstance(body, dict) else body
    through_api = api.post("/v1/runs", api_body, format="json")
    assert through_api.status_code == 400
    assert through_api.json()["error"] == error


def test_it_answers_malformed_json_in_the_envelope(alice_client) -> None:
    response = alice_client.post(RUNS, "{not json", content_type="application/json")
    assert_error(response, 400, "invalid_request_error", code="invalid_json")


def test_it_refuses_a_body_that_is_not_json(alice_client) -> None:
    response = alice_client.post(RUNS, {"language": "python", "code": "x"})  # multipart form
    assert_error(response, 415, "invalid_request_error", code="unsupported_media_type")


def test_it_refuses_an_oversized_body_before_reading_it(alice_client, settings) -> None:
    settings.MAX_REQUEST_BYTES = 2048
    response = post(alice_client, {"language": "python", "code": "#" * 4096})
    assert_error(response, 413, "invalid_request_error", code="request_too_large")


def test_it_refuses_code_over_the_size_cap(alice_client, settings) -> None:
    settings.MAX_CODE_BYTES = 100
    response = post(alice_client, {"language": "python", "code": "#" * 101})
    assert_error(response, 413, "invalid_request_error", code="request_too_large", param="code")


def test_it_rate_limits_with_the_keys_own_bucket(alice_client, alice) -> None:
    key = get_or_create_key(alice)
    ApiKey.objects.filter(pk=key.pk).update(rps=0.001, burst=2)  # one token every 1000 s: no refill here
    fresh_bucket(key)
    answers = [post(alice_client, HELLO) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert [a["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]
    error = assert_error(answers[2], 429, "rate_limit_error", code="rate_limit_exceeded")
    assert "throttled" in error["message"]
    assert int(answers[2]["Retry-After"]) >= 1
    assert Run.objects.filter(owner=key).count() == 2
    # Reading is not rate limited: the page polls a running run every 300 ms.
    assert alice_client.get(RUNS).status_code == 200
    fresh_bucket(key)


def test_it_caps_concurrent_runs_like_any_key(alice_client, alice, make_run) -> None:
    key = get_or_create_key(alice)
    ApiKey.objects.filter(pk=key.pk).update(max_concurrent_runs=1)
    fresh_bucket(key)
    make_run(key, status="running")
    error = assert_error(post(alice_client, HELLO), 429, "rate_limit_error", code="concurrency_limit_exceeded")
    assert "limit is 1" in error["message"]
    assert Run.objects.filter(owner=key).count() == 1


def test_it_answers_unknown_methods_in_the_envelope(alice_client) -> None:
    assert_error(alice_client.delete(RUNS), 405, "invalid_request_error")
