"""503 in the error envelope, not 500, while PostgreSQL cannot be reached.

Django opens a new connection per request when the old one is unusable (CONN_HEALTH_CHECKS), so
nothing needs restarting once the database is back: until then every request that needs it answers

    503 {"error": {"type": "server_error", "code": "database_unavailable", ...}}   Retry-After: 5

DRF views get this from `runs.errors.api_exception_handler`, other views (admin, playground, /readyz)
from `DatabaseUnavailableMiddleware`, and anything raised outside a view from `handler500`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
CODE = "database_unavailable"
MESSAGE = "The service cannot reach its database right now; retry later."


def is_database_unavailable(exc: BaseException | None) -> bool:
    """Connection-level database failures (refused, dropped, closed), not bad queries."""
    return isinstance(exc, (OperationalError, InterfaceError))


def body() -> dict[str, dict[str, str | None]]:
    return {"error": {"message": MESSAGE, "type": "server_error", "param": None, "code": CODE}}


def headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)}


def response(exc: BaseException) -> JsonResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JsonResponse(body(), status=503, headers=headers())


class DatabaseUnavailableMiddleware:
    """Turns a database outage raised by a (non-DRF) view into the 503 envelope."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return response(exception) if is_database_unavailable(exception) else None
