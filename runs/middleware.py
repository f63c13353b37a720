"""Request-level concerns: a request id on every response and in every log line of the request, one log
line and one latency observation per request, and 413 before reading an oversized body."""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import Resolver404, ResolverMatch, resolve

from codeexec_site import logs

from . import metrics
from .errors import envelope

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Probes and scrapes come every few seconds: their lines are DEBUG, not INFO.
QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})

log = logging.getLogger("codeexec.request")


class RequestIdMiddleware:
    """Gives the request an id (the client's `X-Request-Id` when well-formed) and answers it in
    `x-request-id`. The id is bound to the logging context for the request, so everything logged for it
    carries it; the run id and key label bound later on (URL, authentication) are unbound with it when
    the request ends (gunicorn's threads serve one request after another). Then one line per request
    (method, path without its query string, URL pattern name, status, duration) and the duration
    histogram of /metrics.

    Not `contextvars.copy_context().run(...)`: Django keeps its cache connections in context-local
    storage, so a fresh context per request would open a fresh Redis connection per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else "req_" + uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        with logs.bound(request_id=request_id, run_id=None, key=None):
            return self._handle(request, request_id)

    def _handle(self, request: HttpRequest, request_id: str) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        response["x-request-id"] = request_id
        seconds = time.perf_counter() - started
        streamed = isinstance(response, StreamingHttpResponse)
        if (
            isinstance(response, StreamingHttpResponse)
            and not isinstance(response, FileResponse)
            and not response.is_async
        ):
            # What the stream's generator logs, while gunicorn iterates it, belongs to this request too.
            # (Downloads keep their file object, which gunicorn may hand to sendfile.)
            response.streaming_content = _in_context(logs.current(), response.streaming_content)
        account = functools.partial(self._account, request, response.status_code, seconds)
        if streamed:
            account()  # when the stream starts, as its duration says
        else:
            # Once the answer is sent: the WSGI server closes the response after writing it, so the Redis
            # round trip of the metrics and the log line are not part of the client's wait.
            fields = logs.current()
            response._resource_closers.append(lambda: _in_fields(fields, account))  # type: ignore[attr-defined]
        return response

    @staticmethod
    def _account(request: HttpRequest, status: int, seconds: float) -> None:
        """The request's metrics and its log line."""
        try:
            route = route_name(request)
            metrics.observe_request(request.method or "", route, status, seconds)
        except Exception:  # bookkeeping never fails a request
            route = "unknown"
            log.warning("could not record the request's metrics", exc_info=True)
        log.log(
            logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
            "%s %s %s",
            request.method,
            request.path,
            status,
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: dict[str, Any]
    ) -> None:
        """A run's URL names the run: its id goes into the request's log lines."""
        run_id = view_kwargs.get("public_id") or view_kwargs.get("run_id")
        if isinstance(run_id, str) and run_id.startswith("run_"):
            logs.bind(run_id=run_id)


def route_name(request: HttpRequest) -> str:
    """The URL pattern's name (`run-detail`, `file-content`, `playground:runs`), never the path with its
    ids; the pattern itself for unnamed ones (`healthz`); `unmatched` when no pattern matches."""
    match: ResolverMatch | None = getattr(request, "resolver_match", None)
    if match is None:  # answered before URL resolution (413) or by the 404 handler
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return "unmatched"
    if match.url_name:
        return match.view_name
    return match.route or "unmatched"


def _in_fields(fields: dict[str, str], action: Callable[[], None]) -> None:
    with logs.bound(**fields):
        action()


def _in_context(fields: dict[str, str], chunks: Iterable[bytes]) -> Iterator[bytes]:
    iterator = iter(chunks)
    while True:
        with logs.bound(**fields):
            try:
                chunk = next(iterator)
            except StopIteration:
                return
        yield chunk


class RateLimitHeadersMiddleware:
    """x-ratelimit-limit-requests / x-ratelimit-remaining-requests on every answer to a key."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        limits = getattr(request, "ratelimit", None)
        if limits is not None:
            response["x-ratelimit-limit-requests"] = str(limits[0])
            response["x-ratelimit-remaining-requests"] = str(max(0, limits[1]))
        return response


class BodySizeLimitMiddleware:
    """Answer 413 in the error envelope from Content-Length alone, before Django reads the body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/v1/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            cap = (
                settings.MAX_UPLOAD_BYTES + 65536
                if request.path.rstrip("/") == "/v1/files"
                else settings.MAX_REQUEST_BYTES
            )
            if length > cap:
                return JsonResponse(
                    envelope(f"Request body is larger than the limit of {cap} bytes.", 413, "request_too_large"),
                    status=413,
                )
        return self.get_response(request)
