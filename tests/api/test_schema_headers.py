"""The response headers of /v1/openapi.json (x-request-id, x-ratelimit-*, Retry-After) and the answers
that really carry them."""

from __future__ import annotations

import re
import uuid
from typing import Any

import jsonschema
import pytest

from runs import redis as cx_redis
from runs.idempotency import Idempotency
from tests.api import assert_error, test_runtimes_health
from tests.api.conftest import make_tenant

# The fixture that fetches /v1/openapi.json without a key, shared with test_runtimes_health.py.
schema = test_runtimes_health.schema

REQUEST_ID = "x-request-id"
RATELIMIT = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests")
RETRY_AFTER = "Retry-After"


def _resolve(document: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """`obj`, or what its `$ref` (`#/components/...`) points to."""
    while "$ref" in obj:
        node: Any = document
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def _headers(document: dict[str, Any], response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A response's documented headers, by lower-case name, references resolved."""
    return {name.lower(): _resolve(document, header) for name, header in response.get("headers", {}).items()}


def _needs_key(document: dict[str, Any], operation: dict[str, Any]) -> bool:
    """No alternative of the operation's security is empty: it cannot be called without a key."""
    security = operation.get("security", document.get("security", []))
    return bool(security) and all(requirement for requirement in security)


def _documented_header(header: dict[str, Any]) -> None:
    assert isinstance(header.get("description"), str) and header["description"], header
    assert header["schema"]["type"] in ("string", "integer"), header


def _assert_conforms(document: dict[str, Any], path: str, method: str, response: Any) -> None:
    """The answer's status is documented for the operation, every header documented as required is there,
    and every documented header it carries matches its schema."""
    responses = document["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in responses, (method, path, status)
    for name, header in _headers(document, responses[status]).items():
        if not response.has_header(name):
            assert not header.get("required", False), f"{name} is documented as required on {status}"
            continue
        value: Any = response[name]
        if header["schema"]["type"] == "integer":
            assert re.fullmatch(r"[0-9]+", value), (name, value)
            value = int(value)
        jsonschema.validate(value, header["schema"])


# ---- the schema -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_response_of_every_operation_documents_the_request_id(schema) -> None:
    operations = _operations(schema)
    assert len(operations) >= 11
    missing = [
        f"{label} {status}"
        for label, operation in operations
        for status, response in operation["responses"].items()
        if REQUEST_ID not in _headers(schema, response)
    ]
    assert missing == []
    header = _headers(schema, schema["paths"]["/v1/runs"]["post"]["responses"]["401"])[REQUEST_ID]
    _documented_header(header)
    # RequestIdMiddleware is the outermost middleware: no answer of the application goes without it.
    assert header["required"] is True
    assert header["schema"]["type"] == "string"


@pytest.mark.django_db
def test_the_rate_limit_headers_are_documented_exactly_on_operations_that_need_a_key(schema) -> None:
    keyed = [(label, op) for label, op in _operations(schema) if _needs_key(schema, op)]
    open_ = [(label, op) for label, op in _operations(schema) if not _needs_key(schema, op)]
    assert {"POST /v1/runs", "GET /v1/runs", "GET /v1/files", "GET /v1/runtimes"} <= {label for label, _ in keyed}
    # A signed download link needs no key.
    assert "GET /v1/files/{public_id}/content" in {label for label, _ in open_}

    for label, operation in keyed:
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert successes, label
        for status, response in successes.items():
            headers = _headers(schema, response)
            for name in RATELIMIT:
                assert name in headers, f"{label} {status} lacks {name}"
                _documented_header(headers[name])
                assert headers[name]["schema"]["type"] == "integer"
                # Absent on answers given before the key's bucket is touched (a 401, a 413 from the size cap).
                assert headers[name].get("required", False) is False, (label, status, name)
    for label, operation in open_:
        for status, response in operation["responses"].items():
            assert not set(RATELIMIT) & set(_headers(schema, response)), f"{label} {status}"


@pytest.mark.django_db
def test_every_429_and_503_documents_retry_after(schema) -> None:
    seen = set()
    for label, operation in _operations(schema):
        for status, response in operation["responses"].items():
            headers = _headers(schema, response)
            idempotent = any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", []))
            if status in ("429", "503") or (status == "409" and idempotent):
                seen.add(status)
                assert RETRY_AFTER.lower() in headers, f"{label} {status}"
                header = headers[RETRY_AFTER.lower()]
                _documented_header(header)
                assert header["schema"]["type"] == "integer"
                # Every 429 and 503 the service gives carries it; a 409 only when the same request is
                # still in progress (not when the key was used with another body).
                assert header["required"] is (status != "409"), label
            else:
                assert RETRY_AFTER.lower() not in headers, f"{label} {status}"
    assert seen == {"409", "429", "503"}


@pytest.mark.django_db
def test_every_operation_documents_the_outage_answer(schema) -> None:
    # runs.unavailable answers any request 503 while PostgreSQL or Redis is down.
    for label, operation in _operations(schema):
        outage = operation["responses"].get("503")
        assert outage is not None, label
        assert "database_unavailable" in outage["description"], label
        assert "broker_unavailable" in outage["description"], label
        body = _resolve(schema, outage["content"]["application/json"]["schema"])
        assert "error" in body["properties"], label


# ---- the schema against real answers ----------------------------------------------------------------


@pytest.mark.django_db
def test_real_answers_carry_the_documented_headers(schema) -> None:
    carol = make_tenant("carol", rps=0.001, burst=2)  # one token every 1000 s: no refill during the test
    cx_redis.client().delete(f"codeexec:bucket:key:{carol.key.pk}")  # a bucket of an earlier session

    listed = carol.client.get("/v1/runs")
    assert listed.status_code == 200, listed.content
    assert re.fullmatch(r"req_[0-9a-f]{32}", listed[REQUEST_ID])
    assert int(listed["x-ratelimit-limit-requests"]) == 2
    assert int(listed["x-ratelimit-remaining-requests"]) == 1
    _assert_conforms(schema, "/v1/runs", "get", listed)

    echoed = carol.client.get("/v1/runs", HTTP_X_REQUEST_ID="trace-42.a_b")
    assert echoed.status_code == 200, echoed.content
    assert echoed[REQUEST_ID] == "trace-42.a_b"
    assert int(echoed["x-ratelimit-remaining-requests"]) == 0
    _assert_conforms(schema, "/v1/runs", "get", echoed)

    refused = carol.post_run(code="print(1)", wait=False)  # the burst is used up
    assert_error(refused, 429, "rate_limit_error", code="rate_limit_exceeded")
    assert refused[REQUEST_ID].startswith("req_")
    assert int(refused[RETRY_AFTER]) >= 1
    assert int(refused["x-ratelimit-limit-requests"]) == 2
    assert int(refused["x-ratelimit-remaining-requests"]) == 0
    _assert_conforms(schema, "/v1/runs", "post", refused)


@pytest.mark.django_db
def test_it_tells_a_request_still_in_progress_when_to_retry(schema, alice) -> None:
    body = {"language": "python", "code": "print(1)", "wait": False}
    key = f"schema-in-progress-{uuid.uuid4().hex}"  # Redis outlives the test database: a key of its own
    Idempotency.of(alice.key, "runs", key, body).begin()  # the first request, still being handled
    in_progress = alice.client.post("/v1/runs", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert_error(in_progress, 409, "invalid_request_error", code="idempotency_request_in_progress")
    assert int(in_progress[RETRY_AFTER]) >= 1
    _assert_conforms(schema, "/v1/runs", "post", in_progress)

    reused = alice.client.post("/v1/runs", {**body, "code": "print(2)"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert_error(reused, 409, "invalid_request_error", code="idempotency_key_reused")
    assert not reused.has_header(RETRY_AFTER)  # retrying cannot help
    _assert_conforms(schema, "/v1/runs", "post", reused)


@pytest.mark.django_db
def test_answers_given_before_the_key_is_counted_carry_the_request_id_only(schema, anonymous, alice, settings) -> None:
    missing_key = anonymous.get("/v1/runs")
    assert_error(missing_key, 401, "authentication_error", code="invalid_api_key")
    # The size cap answers from Content-Length, before authentication: a valid key gets no bucket figures.
    settings.MAX_REQUEST_BYTES = 2048
    too_large = alice.client.post("/v1/runs", {"language": "python", "code": "#" * 4096}, format="json")
    assert_error(too_large, 413, "invalid_request_error", code="request_too_large")
    for response, method in ((missing_key, "get"), (too_large, "post")):
        assert response.has_header(REQUEST_ID), response.status_code
        assert not any(response.has_header(name) for name in RATELIMIT), response.status_code
        _assert_conforms(schema, "/v1/runs", method, response)
