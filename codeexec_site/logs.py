"""The service's log format: one JSON object per line, with the request, run and key it concerns.

Every process logs through here: the web (Django's LOGGING, and gunicorn's own lines through
`GunicornLogger`, named in gunicorn.conf.py), the Dramatiq worker (its CLI through
`codeexec_site.dramatiq_cli`, its actors through Django's LOGGING) and management commands.

    {"time": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "runs.tasks", "message": "...",
     "pid": 12, "request_id": "req_...", "run_id": "run_...", "key": "alice"}

`request_id`, `run_id` and `key` (the API key's label, never its token) come from context variables:
the request middleware and the authentication bind them for one request, the worker for one run.
An exception is one more string field, `exc_info`, so a traceback never spans lines. Extra fields of a
record are kept only when they are plain values (str, int, float, bool, None): objects such as Django's
HttpRequest (whose repr carries the query string, where signed links keep their signature) never are.

LOG_FORMAT=text gives one human-readable line per record instead, for development.
Nothing here needs Django's settings: gunicorn's master and Dramatiq's parent process use it before
(or without) Django.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gunicorn.glogging import Logger as _GunicornBaseLogger  # type: ignore[import-untyped]
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

FORMATS = ("json", "text")
CONTEXT_FIELDS = ("request_id", "run_id", "key")

_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"codeexec_log_{name}", default=None) for name in CONTEXT_FIELDS
}
# Record attributes that are never copied as extra fields: LogRecord's own, and the ones we write.
_NOT_EXTRA = frozenset([*RESERVED_ATTRS, "taskName", "color_message", *CONTEXT_FIELDS])
_PLAIN = (str, int, float, bool, type(None))


# ---- context ---------------------------------------------------------------------------------------


def bind(**fields: str | None) -> None:
    """Set context fields (request_id, run_id, key) for what this thread logs from now on.

    Within a request (runs.middleware) or a run (runs.tasks) an enclosing `bound()` unbinds them
    again when it ends; elsewhere use `bound()` itself."""
    for name, value in fields.items():
        _context[name].set(value)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Context fields for the duration of a block (a request, a run). At its end every field is as it
    was before, including those `bind()` set inside it."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context fields: {sorted(unknown)}")
    tokens = [(var, var.set(fields[name] if name in fields else var.get())) for name, var in _context.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, str]:
    """The context fields that are set."""
    return {name: value for name, var in _context.items() if (value := var.get()) is not None}


# ---- formatters --------------------------------------------------------------------------------------


class JsonFormatter(_JsonFormatter):
    """time, level, logger, message, pid, the context fields, plain extra fields, exc_info / stack_info."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", sorted(_NOT_EXTRA))
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = _iso_time(record.created)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data["pid"] = record.process
        for name, value in _context_of(record).items():
            log_data[name] = value
        for key, value in record.__dict__.items():
            if key not in _NOT_EXTRA and not key.startswith("_") and isinstance(value, _PLAIN):
                log_data.setdefault(key, value)
        for key, value in message_dict.items():  # exc_info and stack_info (strings), or a dict logged as msg
            log_data.setdefault(key, value if isinstance(value, _PLAIN) else str(value))


class TextFormatter(logging.Formatter):
    """`2025-01-01T12:00:00.123Z INFO runs.tasks [run_id=run_...] message` and the traceback below it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(context)s%(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record.created)

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{name}={value}" for name, value in _context_of(record).items())
        record.context = f"[{pairs}] " if pairs else ""
        return super().format(record)


def _context_of(record: logging.LogRecord) -> dict[str, str]:
    """The record's own context fields (extra=...), else the context's. Django logs a request's answer
    (`django.request`: "Internal Server Error: ...") after the middleware has returned, so its request id
    comes from the request the record carries."""
    fields = {}
    for name in CONTEXT_FIELDS:
        value = record.__dict__.get(name) or _context[name].get()
        if value is None and name == "request_id":
            value = getattr(record.__dict__.get("request"), "request_id", None)
        if value is not None:
            fields[name] = str(value)
    return fields


def _iso_time(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def log_format() -> str:
    """LOG_FORMAT from the environment: json (default) or text."""
    value = os.environ.get("LOG_FORMAT", "json").strip().lower() or "json"
    if value not in FORMATS:
        # Django's ImproperlyConfigured would need Django; a ValueError stops gunicorn and Dramatiq as well.
        raise ValueError(f"LOG_FORMAT must be 'json' or 'text', got {value!r}")
    return value


def formatter(fmt: str | None = None) -> logging.Formatter:
    return TextFormatter() if (fmt or log_format()) == "text" else JsonFormatter()


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """A dictConfig for Django's LOGGING and for processes without Django: everything to stderr as `fmt`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": {"()": formatter, "fmt": fmt}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "service"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's defaults give these loggers handlers of their own (plain text with DEBUG=1);
            # here they only propagate to the root's.
            "django": {"handlers": [], "level": "INFO", "propagate": True},
            "django.server": {"handlers": [], "level": "INFO", "propagate": True},
            # SQL with its parameters (a run's code, stdin) must never reach a log, whatever LOG_LEVEL says.
            "django.db.backends": {"handlers": [], "level": "INFO", "propagate": True},
        },
    }


# ---- gunicorn ------------------------------------------------------------------------------------------


class GunicornLogger(_GunicornBaseLogger):  # type: ignore[misc]
    """gunicorn's error and access logs in the service's format (gunicorn.conf.py names this class).

    The access log is off unless gunicorn is told otherwise (`--access-logfile -`); the service logs
    each request itself (runs.middleware). When it is on, a line has the method, the path without its
    query string (a signed link's signature stays out of the logs), the status and the duration."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        fmt = formatter()
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            handler.setFormatter(fmt)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        try:
            status = str(getattr(resp, "status", "") or "").split(" ", 1)[0]
            headers = {str(k).lower(): str(v) for k, v in getattr(resp, "headers", None) or []}
            self.access_log.info(
                "%s %s %s",
                environ.get("REQUEST_METHOD", "-"),
                environ.get("PATH_INFO", "-"),
                status,
                extra={
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO"),
                    "status": int(status) if status.isdigit() else None,
                    "duration_ms": round(request_time.total_seconds() * 1000, 3),
                    "request_id": headers.get("x-request-id"),
                },
            )
        except Exception:
            self.error_log.exception("could not write an access log line")
