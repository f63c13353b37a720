"""PostgreSQL, with a health check that costs no round trip while the connection is busy and quiet.

Django checks a kept connection (CONN_HEALTH_CHECKS) before the first query of every request and of
every worker message with a `SELECT 1`: one more round trip on each run's path, on the web side and on
the worker side. A server that ends a connection (shut down or restarted, its backend terminated, an
idle timeout) sends its reason or closes the socket, so a connection checked moments ago whose socket
has nothing to read is taken as usable. The real check still runs when the socket has something to
read, and when the connection was last checked over RECENT_S ago: a peer that only answers what is sent
to it (a failover to another host on the same address, a NAT entry dropped while idle) shows nothing on
an idle socket, and `SELECT 1` is what finds it before a request's own query would.
"""

from __future__ import annotations

import select
import time

from django.db.backends.postgresql import base

RECENT_S = 5.0


class DatabaseWrapper(base.DatabaseWrapper):
    _checked_at = 0.0  # time.monotonic() of the last check that found the connection usable

    def close_if_health_check_failed(self) -> None:
        enabled: bool = self.health_check_enabled  # type: ignore[attr-defined]  # Django's, not in its stubs
        done: bool = self.health_check_done  # type: ignore[has-type]
        if self.connection is None or not enabled or done:
            return
        now = time.monotonic()
        if now - self._checked_at < RECENT_S and self._quiet():
            self.health_check_done = True
        else:
            super().close_if_health_check_failed()  # SELECT 1; closes the connection if it fails
        if self.connection is not None:
            self._checked_at = now

    def connect(self) -> None:
        super().connect()
        self._checked_at = time.monotonic()  # a new connection is as checked as can be

    def _quiet(self) -> bool:
        """Nothing has arrived on the idle connection's socket (no notice of its end, no end of stream)."""
        connection = self.connection
        try:
            if connection.closed or connection.broken:
                return False
            poller = select.poll()
            poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        except Exception:  # a connection that cannot say gets the real check
            return False
