"""Request-level concerns: a request id on every response, and 413 before reading an oversized body."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from .errors import envelope

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else "req_" + uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["x-request-id"] = request_id
        return response


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
