"""Fixtures for the playground's test-client tests: staff users alice and bob, non-staff charlie.

No worker runs here: the tests use the `db` fixture, whose transaction is rolled back, so a created
run's on-commit message is never sent. Rate-limit buckets live in Redis; they go to a database of
the tests' own (CODEEXEC_TEST_REDIS_DB, default 15, like tests/api), never the development one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.test import Client, override_settings
from django.utils import timezone

from runs import redis as cx_redis
from runs.models import ApiKey, Run
from tests.support import with_redis_db

TEST_REDIS_DB = int(os.environ.get("CODEEXEC_TEST_REDIS_DB", "15"))


@pytest.fixture(scope="session", autouse=True)
def playground_redis() -> Iterator[str]:
    url = with_redis_db(settings.REDIS_URL, TEST_REDIS_DB)
    with override_settings(REDIS_URL=url):
        cx_redis.client.cache_clear()
        try:
            yield url
        finally:
            cx_redis.client.cache_clear()


def fresh_bucket(key: ApiKey) -> None:
    # Key ids restart with every test database; a bucket of an earlier session must not leak in.
    cx_redis.client().delete(f"codeexec:bucket:key:{key.pk}")


def playground_keys() -> QuerySet[ApiKey]:
    """Keys made by the playground (the database also holds API_KEYS' development key)."""
    return ApiKey.objects.filter(source=ApiKey.Source.PLAYGROUND)


def make_user(username: str, *, staff: bool) -> User:
    return User.objects.create_user(username, f"{username}@example.com", "correct horse battery", is_staff=staff)


def logged_in(user: User, **client_options: Any) -> Client:
    client = Client(**client_options)
    client.force_login(user)
    return client


@pytest.fixture
def alice(db: None) -> User:
    return make_user("alice", staff=True)


@pytest.fixture
def bob(db: None) -> User:
    return make_user("bob", staff=True)


@pytest.fixture
def charlie(db: None) -> User:
    """Logged in, but not staff: Charlie should have no access to the playground."""
    return make_user("charlie", staff=False)


@pytest.fixture
def alice_client(alice: User) -> Client:
    return logged_in(alice)


@pytest.fixture
def make_run() -> Callable[..., Run]:
    """A finished run row of `owner`, made directly in the database."""

    def make(owner: ApiKey, **fields: Any) -> Run:
        status = fields.setdefault("status", "succeeded")
        fields.setdefault("language", "python")
        fields.setdefault("code", "print(1)")
        fields.setdefault("limits", {"timeout_ms": 1000})
        if status not in ("queued", "running"):
            fields.setdefault("started_at", timezone.now())
            fields.setdefault("completed_at", timezone.now())
            fields.setdefault("worker_id", "test:0")
        return Run.objects.create(owner=owner, **fields)

    return make
