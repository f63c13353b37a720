"""Shared fixtures. Tests that need bwrap, a language runtime or root fail when it is missing;
the only opt-out is an explicit variable (CODEEXEC_SKIP_DOCKER=1 for the docker backend, later).
DEBUG=1 for tests is set by the tests.devenv plugin (see pyproject.toml)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def api_environment() -> Iterator[Any]:
    """The API suites' private sandbox, storage and Redis database (tests/api/conftest.py), set up once
    per session however many suites use it."""
    from tests.api.conftest import api_environment_session

    yield from api_environment_session()
