"""PostgreSQL, with a health check that costs no round trip while the connection is quiet.

Django checks a kept connection (CONN_HEALTH_CHECKS) before the first query of every request and of
every worker message with a `SELECT 1`: one more round trip on each run's path, on the web side and on
the worker side. A server that ends a connection (shut down or restarted, its backend terminated, an
idle timeout) sends its reason or closes the socket, so an idle connection with something to read is the
only one that needs the real check; a quiet socket is taken as usable. What this cannot see (a host that
vanished without a word) the real check would only have waited on too; the query then fails as it would
without health checks, and the connection is replaced before the next request.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        enabled: bool = self.health_check_enabled  # type: ignore[attr-defined]  # Django's, not in its stubs
        done: bool = self.health_check_done  # type: ignore[has-type]
        if self.connection is not None and enabled and not done and self._quiet():
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

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
