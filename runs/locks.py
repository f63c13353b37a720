"""Cluster-wide mutual exclusion for periodic jobs: PostgreSQL session advisory locks.

The database is the one thing every worker of every host shares, and a session lock is released by
PostgreSQL itself when the holder's connection ends, so a worker killed while holding it blocks nobody.
(It needs a real session: behind a transaction-pooling PgBouncer, point the workers at PostgreSQL.)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.sha256(f"codeexec:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def cluster_lock(name: str) -> Iterator[bool]:
    """Try to take the lock `name` without waiting; yields whether this process holds it. Use it on the
    thread that does the work (the lock belongs to the thread's database connection)."""
    key = lock_key(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        row = cursor.fetchone()
    held = bool(row and row[0])
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except (InterfaceError, OperationalError):
                log.warning("could not release the %s lock; closing the connection releases it", name)
                connection.close()
