"""OpenAI's error envelope for every error the API returns, and the exceptions that produce it.

{"error": {"message": "...", "type": "invalid_request_error", "param": "limits.memory_mb", "code": "..."}}
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

log = logging.getLogger(__name__)

TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def envelope(
    message: str, status_code: int, code: str | None = None, param: str | None = None, type_: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type_ or TYPE_BY_STATUS.get(status_code, "server_error"),
            "param": param,
            "code": code,
        }
    }


class APIError(exceptions.APIException):
    """An error with its OpenAI code and param, raised from views and serializers."""

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        code: str = "invalid_request",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.error_code = code
        self.param = param
        self.headers = headers or {}


def not_found(what: str, param: str | None = None) -> APIError:
    return APIError(f"No such {what}.", status.HTTP_404_NOT_FOUND, code="not_found", param=param)


def _first_validation_error(detail: Any, prefix: str = "") -> tuple[str, str | None]:
    """Flatten DRF's nested ValidationError detail into (message, dotted param)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # ListField/DictField children: args[1]
                return _first_validation_error(value, f"{prefix}[{key}]")
            name = "" if key == "non_field_errors" else str(key)
            param = f"{prefix}.{name}" if prefix and name else (name or prefix)
            return _first_validation_error(value, param)
    if isinstance(detail, list) and detail:
        for index, item in enumerate(detail):
            if item:
                if isinstance(item, (dict, list)) and not isinstance(item, str):
                    return _first_validation_error(item, f"{prefix}[{index}]" if prefix else str(index))
                return _first_validation_error(item, prefix)
    return str(detail), prefix or None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    headers: dict[str, str] = {}
    if isinstance(exc, APIError):
        body = envelope(exc.message, exc.status_code, exc.error_code, exc.param)
        return Response(body, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, exceptions.ValidationError):
        message, param = _first_validation_error(exc.detail)
        return Response(envelope(message, 400, "invalid_value", param), status=400)
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        message = (
            str(exc.detail)
            if isinstance(exc, exceptions.AuthenticationFailed)
            else ("Missing API key. Send 'Authorization: Bearer <key>'.")
        )
        return Response(
            envelope(message, 401, "invalid_api_key"), status=401, headers={"WWW-Authenticate": 'Bearer realm="api"'}
        )
    if isinstance(exc, (Http404, exceptions.NotFound)):
        return Response(envelope("Not found.", 404, "not_found"), status=404)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Response(envelope(str(exc.detail), 415, "unsupported_media_type"), status=415)
    if isinstance(exc, exceptions.ParseError):
        return Response(envelope(f"Could not parse the request body: {exc.detail}", 400, "invalid_json"), status=400)
    if isinstance(exc, exceptions.Throttled):
        wait = getattr(exc, "wait", None)
        if wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
        return Response(envelope(str(exc.detail), 429, "rate_limit_exceeded"), status=429, headers=headers)
    if isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        return Response(envelope(str(exc.detail), exc.status_code, str(code)), status=exc.status_code)
    response = exception_handler(exc, context)
    if response is not None:
        return response
    from . import unavailable

    code = unavailable.unavailable_code(exc)
    if code:
        log.warning("%s in %s: %s", code, context.get("view"), type(exc).__name__)
        return Response(unavailable.body(code), status=503, headers=unavailable.headers())
    log.exception("unhandled error in %s", context.get("view"))
    return Response(
        envelope("The server had an error while processing your request.", 500, "internal_error"), status=500
    )


def json_error(request: HttpRequest, message: str, status_code: int, code: str) -> JsonResponse:
    return JsonResponse(envelope(message, status_code, code), status=status_code)


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(request, f"Unknown URL: {request.method} {request.path}", 404, "unknown_url")


def handler500(request: HttpRequest) -> JsonResponse:
    from . import unavailable

    code = unavailable.unavailable_code(sys.exc_info()[1])  # Django calls this inside its `except` block
    if code:
        return unavailable.response(code)
    return json_error(request, "The server had an error while processing your request.", 500, "internal_error")


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(request, "Bad request.", 400, "bad_request")


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(request, "Forbidden.", 403, "forbidden")
