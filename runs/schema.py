"""drf-spectacular extensions: how our authentication and strict request objects appear in /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension


class BearerKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "runs.auth.BearerKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer <key>`."}


class StrictSerializerScheme(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """A StrictSerializer answers 400 to a key it does not declare: `additionalProperties: false`."""

    target_class = "runs.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


# ---- response headers ---------------------------------------------------------------------------------
# drf-spectacular documents bodies, not the headers the middleware and the error handler add to answers;
# `document_response_headers` adds them to every operation (they are defined once, in components/headers).

REQUEST_ID = "x-request-id"
LIMIT = "x-ratelimit-limit-requests"
REMAINING = "x-ratelimit-remaining-requests"
RETRY_AFTER = "Retry-After"

RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    # runs.middleware.RequestIdMiddleware is the outermost middleware: every answer passes through it.
    "RequestId": {
        "description": "The request's id (the client's `X-Request-Id` when it is 1-128 characters of "
        "`A-Za-z0-9._-`, else `req_` and 32 hex digits), also in every log line of the request.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"},
    },
    # runs.middleware.RateLimitHeadersMiddleware, once runs.ratelimit.KeyTokenBucketThrottle took a token:
    # not on answers given before that (no or a bad key, a body over the size limit, an outage).
    "RateLimitLimitRequests": {
        "description": "The key's token bucket size (`burst`): how many requests it may send at once.",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimitRemainingRequests": {
        "description": "Tokens left in the key's bucket after this request (refilled at the key's `rps`).",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    # Every 429 (the key's rate, the key's concurrent runs, the per-address limit of requests without a
    # valid key) carries Retry-After: runs.errors.api_exception_handler and runs.services.insert_if_admitted.
    "RetryAfterRateLimited": {
        "description": "Seconds to wait before retrying (`rate_limit_exceeded`, `concurrency_limit_exceeded`).",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    # Every 503 carries it too: `server_overloaded`, `database_unavailable`, `broker_unavailable` and
    # `no_worker_available` (runs.services, runs.unavailable, runs.views).
    "RetryAfterUnavailable": {
        "description": "Seconds to wait before retrying (`server_overloaded`, `database_unavailable`, "
        "`broker_unavailable`, `no_worker_available`).",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    # A 409 `idempotency_request_in_progress` carries it (runs.idempotency); the operation's other 409s
    # (`idempotency_key_reused`: retrying cannot help) do not.
    "RetryAfterInProgress": {
        "description": "On `idempotency_request_in_progress`: seconds to wait before retrying with the same "
        "Idempotency-Key.",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
}


def _ref(component: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{component}"}


def requires_key(operation: dict[str, Any], default_security: list[dict[str, Any]]) -> bool:
    """Every alternative of the operation's security names a scheme: it cannot be called without a key
    (a signed download link, `[{"bearerAuth": []}, {}]`, can)."""
    security = operation.get("security", default_security)
    return bool(security) and all(security)


def takes_idempotency_key(operation: dict[str, Any]) -> bool:
    return any(
        p.get("in") == "header" and str(p.get("name", "")).lower() == "idempotency-key"
        for p in operation.get("parameters", [])
    )


# runs.unavailable answers any request with this while PostgreSQL or Redis cannot be reached.
OUTAGE = "`database_unavailable` or `broker_unavailable`: the database or Redis cannot be reached right now."


def document_outage(responses: dict[str, Any]) -> None:
    """Every operation may answer 503 during an outage, besides the 503s of its own."""
    if "503" in responses:
        if OUTAGE not in responses["503"].get("description", ""):
            responses["503"]["description"] = f"{responses['503'].get('description', '')} Or {OUTAGE}".strip()
        return
    error = next((r["content"] for status, r in responses.items() if status.startswith("4") and "content" in r), None)
    if error is not None:  # the error envelope, as the operation's other errors have it
        responses["503"] = {"description": OUTAGE, "content": error}


def document_response_headers(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS: the outage answer and the response headers every operation really answers with."""
    result.setdefault("components", {}).setdefault("headers", {}).update(RESPONSE_HEADERS)
    default_security = result.get("security", [])
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue  # a path item's `parameters`, `summary`, ...
            document_outage(operation["responses"])
            keyed = requires_key(operation, default_security)
            for status, response in operation["responses"].items():
                headers = response.setdefault("headers", {})
                headers[REQUEST_ID] = _ref("RequestId")
                if keyed and status != "401":  # a 401 is answered before the key's bucket is touched
                    headers[LIMIT] = _ref("RateLimitLimitRequests")
                    headers[REMAINING] = _ref("RateLimitRemainingRequests")
                if status == "429":
                    headers[RETRY_AFTER] = _ref("RetryAfterRateLimited")
                elif status == "503":
                    headers[RETRY_AFTER] = _ref("RetryAfterUnavailable")
                elif status == "409" and takes_idempotency_key(operation):
                    headers[RETRY_AFTER] = _ref("RetryAfterInProgress")
    return result
