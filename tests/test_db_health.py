"""The database backend's health check (codeexec_site/db): a kept connection whose socket is quiet is
reused without a `SELECT 1` round trip; one the server ended is noticed and replaced before a query
fails on it, as Django's own check does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection, connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def real_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Health checks on (as in the service), and a record of every real `SELECT 1` check."""
    calls: list[bool] = []
    real = type(connections["default"]).is_usable

    def counting(self: Any) -> bool:
        usable = real(self)
        calls.append(usable)
        return usable

    monkeypatch.setattr(type(connections["default"]), "is_usable", counting)
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", True)
    connection.close()  # the next connection reads the setting
    yield calls
    connection.close()


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _next_request() -> None:
    """What Django does between two requests (and django_dramatiq between two messages)."""
    connection.close_if_unusable_or_obsolete()
    assert connection.health_check_done is False


def test_the_backend_is_ours() -> None:
    assert type(connections["default"]).__module__ == "codeexec_site.db.base"
    assert connection.vendor == "postgresql"


def test_a_quiet_connection_is_reused_without_a_round_trip(real_checks: list[bool]) -> None:
    pid = _backend_pid()
    for _ in range(3):
        _next_request()
        assert _backend_pid() == pid
        assert connection.health_check_done is True
    assert real_checks == []


def test_a_connection_not_checked_for_a_while_gets_the_real_check(
    real_checks: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that answers only what is sent to it (a failover, a dropped NAT entry) shows nothing on an
    idle socket: past RECENT_S since its last check, a connection gets SELECT 1 whatever its socket says."""
    from codeexec_site.db import base

    pid = _backend_pid()
    monkeypatch.setattr(base, "RECENT_S", 0.0)
    _next_request()
    assert _backend_pid() == pid
    assert real_checks == [True]


def test_a_connection_the_server_ended_is_replaced_before_a_query_fails(real_checks: list[bool]) -> None:
    pid = _backend_pid()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.02)
    _next_request()
    new_pid = _backend_pid()  # raises OperationalError if the dead connection were taken as quiet
    assert new_pid != pid
    assert real_checks == [False]  # the socket had the server's notice: the real check ran, and failed
