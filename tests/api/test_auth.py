"""Authentication: `Authorization: Bearer <key>` on every /v1 endpoint, errors in OpenAI's envelope."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from runs.models import ApiKey, hash_token
from tests.api import assert_error

# Every /v1 endpoint that needs a key (method, path); ids need not exist: auth comes first.
PROTECTED = [
    ("get", "/v1/runs"),
    ("post", "/v1/runs"),
    ("get", "/v1/runs/run_doesnotexist"),
    ("post", "/v1/runs/run_doesnotexist/cancel"),
    ("delete", "/v1/runs/run_doesnotexist"),
    ("get", "/v1/files"),
    ("post", "/v1/files"),
    ("get", "/v1/files/file-doesnotexist"),
    ("get", "/v1/files/file-doesnotexist/content"),
    ("delete", "/v1/files/file-doesnotexist"),
    ("get", "/v1/runtimes"),
]


def _client(header: str | None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_it_requires_a_key_on_every_endpoint(method: str, path: str) -> None:
    response = getattr(_client(None), method)(path)
    error = assert_error(response, 401, "authentication_error", code="invalid_api_key", param=None)
    assert "Bearer" in error["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_it_rejects_a_wrong_key_on_every_endpoint(method: str, path: str) -> None:
    response = getattr(_client("Bearer cx_not-a-real-key"), method)(path)
    assert_error(response, 401, "authentication_error", code="invalid_api_key", param=None)


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc", "cx_just-the-token"])
def test_it_rejects_a_malformed_authorization_header(header: str) -> None:
    assert_error(_client(header).get("/v1/runs"), 401, "authentication_error", code="invalid_api_key")


def test_it_accepts_a_valid_key(alice) -> None:
    response = alice.client.get("/v1/runs")
    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_it_accepts_the_scheme_in_any_case(alice) -> None:
    assert _client(f"bearer {alice.token}").get("/v1/runs").status_code == 200


def test_it_rejects_a_revoked_key(alice) -> None:
    alice.key.revoke()
    error = assert_error(alice.client.get("/v1/runs"), 401, "authentication_error", code="invalid_api_key")
    assert "revoked" in error["message"]


def test_it_rejects_a_deactivated_key(alice) -> None:
    ApiKey.objects.filter(pk=alice.key.pk).update(is_active=False)
    assert_error(alice.client.get("/v1/runs"), 401, "authentication_error", code="invalid_api_key")


def test_it_rejects_a_revoked_key_on_writes_too(alice) -> None:
    alice.key.revoke()
    response = alice.post_run(code="print(1)", wait=False)
    assert_error(response, 401, "authentication_error")
    assert not alice.key.runs.exists()


def test_it_records_when_a_key_was_last_used(alice) -> None:
    assert alice.key.last_used_at is None
    assert alice.client.get("/v1/runs").status_code == 200
    alice.key.refresh_from_db()
    assert alice.key.last_used_at is not None


def test_it_stores_tokens_hashed(alice) -> None:
    alice.key.refresh_from_db()
    assert alice.key.token_hash == hash_token(alice.token)
    assert alice.token not in alice.key.token_hash
    assert len(alice.key.prefix) < len(alice.token)
    assert alice.token.startswith(alice.key.prefix)
    assert not ApiKey.objects.filter(token_hash=alice.token).exists()


def test_it_does_not_leak_the_token_in_errors(alice) -> None:
    response = _client(f"Bearer {alice.token}x").get("/v1/runs")
    assert_error(response, 401, "authentication_error")
    assert alice.token.encode() not in response.content


def test_it_gives_every_response_a_request_id(alice) -> None:
    ok = alice.client.get("/v1/runs")
    denied = _client(None).get("/v1/runs")
    missing = alice.client.get("/v1/runs/run_nope")
    ids = [r["x-request-id"] for r in (ok, denied, missing)]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,128}", i) for i in ids), ids
    assert len(set(ids)) == 3


def test_it_echoes_a_safe_incoming_request_id(alice) -> None:
    assert alice.client.get("/v1/runs", HTTP_X_REQUEST_ID="trace-123.abc")["x-request-id"] == "trace-123.abc"
    replaced = alice.client.get("/v1/runs", HTTP_X_REQUEST_ID="bad id\twith spaces")["x-request-id"]
    assert replaced != "bad id\twith spaces"
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", replaced)


def test_it_answers_unknown_urls_with_the_envelope(alice) -> None:
    assert_error(alice.client.get("/v1/nothing-here"), 404, "invalid_request_error", code="unknown_url")


def test_it_answers_an_unsupported_method_with_the_envelope(alice) -> None:
    assert_error(alice.client.put("/v1/runs", {}, format="json"), 405, "invalid_request_error")
