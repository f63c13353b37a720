"""Fixtures for the fuzz suite: the API suite's environment (private sandbox, storage and Redis db), its
in-process Dramatiq worker, and a tenant whose requests reach the WSGI application in this thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings

from runs.models import Run
from tests.api.conftest import (  # noqa: F401  (fixtures)
    Tenant,
    _in_api_environment,
    alice,
    make_run,
    make_tenant,
    ready_worker,
    worker,
)
from tests.fuzz.openapi import forget_idempotency_keys


@pytest.fixture
def same_thread_db() -> Iterator[None]:
    """Requests handled in this thread keep the test's database connection.

    Schemathesis calls the WSGI application directly; Django's handler would close the connection
    at the start and end of every request (close_old_connections), which Django's own test client
    avoids the same way.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def fuzzer(transactional_db: None, same_thread_db: None) -> Tenant:
    """The key the fuzzer sends (generous rate and concurrency: the fuzz is not about admission).

    Its id may be a key's of an earlier session (the test database starts its sequences anew each
    time), so Idempotency-Key records left in Redis under that id are dropped first.
    """
    tenant = make_tenant("fuzzer")
    forget_idempotency_keys(tenant.key)
    return tenant


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Bounded waits: `wait: true` and streams give up after 15 s (then 202, or a stream ending with the
    run still running), and a cancel of a run no worker holds answers after 0.2 s instead of 5."""
    monkeypatch.setattr("runs.views.CANCEL_WAIT_S", 0.2)
    with override_settings(RUN_WAIT_MAX_S=15):
        yield


@pytest.fixture
def make_stored_run(make_run: Callable[..., Run]) -> Callable[..., Run]:  # noqa: F811
    """A run row as the service stores one: with every effective limit (tests/api's rows keep a few)."""

    def make(owner: Any, **fields: Any) -> Run:
        return make_run(owner, limits=settings.LIMITS_DEFAULT.as_dict(), **fields)

    return make
