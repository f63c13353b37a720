"""`manage.py ensuredb`: create the PostgreSQL database named by DATABASE_URL if it does not exist.

Used by `make run` so a fresh host needs no manual `createdb`; it connects to the server's
`postgres` maintenance database with the same credentials.
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from psycopg import sql


class Command(BaseCommand):
    help = "Create the configured PostgreSQL database if it is missing."
    requires_system_checks: ClassVar[list[str]] = []  # type: ignore[misc]

    def handle(self, *args: Any, **options: Any) -> None:
        db = settings.DATABASES["default"]
        params = {
            "host": db.get("HOST"),
            "port": db.get("PORT"),
            "user": db.get("USER"),
            "password": db.get("PASSWORD"),
            "dbname": "postgres",
            "connect_timeout": 10,
        }
        conninfo = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v})
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db["NAME"],)).fetchone()
                if exists:
                    return
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
        except psycopg.Error as exc:
            raise CommandError(f"cannot reach or create database {db['NAME']!r}: {exc}") from exc
        self.stdout.write(f"Created database {db['NAME']!r}.")
