"""Helpers for tests that start servers of their own (gunicorn, rundramatiq) beside the test process."""

from __future__ import annotations

import socket
from urllib.parse import quote, urlsplit, urlunsplit

from django.db import connection


def database_url() -> str:
    """The URL of the database this test session uses (pytest-django's test_<name>), for a child process."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{quote(s['NAME'], safe='')}"


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server, database `db`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
