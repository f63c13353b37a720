"""503 in the error envelope, not 500, while PostgreSQL (or Redis) cannot be reached.

Django opens a new connection per request when the old one is unusable (CONN_HEALTH_CHECKS), and
redis-py reconnects on the next command, so nothing needs restarting once the server is back: until
then every request that needs it answers

    503 {"error": {"type": "server_error", "code": "database_unavailable", ...}}   Retry-After: 5

(`broker_unavailable` for Redis: the broker, rate limits and wait/stream notifications live there).

DRF views get this from `runs.errors.api_exception_handler`, other views (admin, playground, /readyz)
from `DatabaseUnavailableMiddleware`, and anything raised outside a view from `handler500`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
MESSAGES = {
    "database_unavailable": "The service cannot reach its database right now; retry later.",
    "broker_unavailable": "The service cannot reach its queue right now; retry later.",
}


def unavailable_code(exc: BaseException | None) -> str | None:
    """The error code of a connection-level failure of PostgreSQL or Redis (refused, dropped, closed,
    timed out); None for anything else (a bad query is a bug, not an outage)."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return "database_unavailable"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return "broker_unavailable"
    return None


def body(code: str) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": MESSAGES[code], "type": "server_error", "param": None, "code": code}}


def headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)}


def response(code: str) -> JsonResponse:
    log.warning("answering 503: %s", code)
    return JsonResponse(body(code), status=503, headers=headers())


class DatabaseUnavailableMiddleware:
    """Turns a database (or Redis) outage raised by a non-DRF view into the 503 envelope."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        code = unavailable_code(exception)
        return response(code) if code else None
