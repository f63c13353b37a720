"""API tests: the REST surface against real PostgreSQL, Redis, a Dramatiq worker and the bwrap sandbox.

Small assertion helpers live here so every test file checks errors and waits the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

ERROR_KEYS = {"message", "type", "param", "code"}


def assert_error(
    response: Any,
    status: int,
    type_: str,
    *,
    code: str | None = None,
    param: Any = ...,
) -> dict[str, Any]:
    """The response is OpenAI's error envelope with this status (and type, code and param when given)."""
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == type_, error
    if code is not None:
        assert error["code"] == code, error
    if param is not ...:
        assert error["param"] == param, error
    return error


def wait_for(predicate: Callable[[], T], timeout_s: float = 60.0, interval_s: float = 0.1, what: str = "") -> T:
    """Poll until `predicate()` is truthy (bounded), return its value; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


def url_path(url: str) -> str:
    """Path and query of an absolute link, to fetch it through the test client."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


TERMINAL = {"succeeded", "failed", "timeout", "oom", "cancelled", "error"}
