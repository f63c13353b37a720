"""Schemathesis over every operation of /v1: coverage-phase cases (boundaries, missing and wrong-typed
values, unexpected methods) and fuzzed ones, positive and negative; see tests/fuzz/openapi.py for the
checks. Path parameters are sometimes the ids of the fuzzer's real runs and files (queued, running,
finished, an artifact, an upload), so GET, DELETE, cancel, content and url also meet real objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.base import ContentFile
from hypothesis import settings as hypothesis_settings

from files.models import File
from tests.api.conftest import Tenant
from tests.fuzz.openapi import FUZZ_SETTINGS, KNOWN_IDS, call_and_validate, forget_idempotency_keys, schema

# Schemathesis' own negative strategies use the `random` module (seeded by Hypothesis for each example).
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

MAX_EXAMPLES = 40


@pytest.fixture
def existing(fuzzer: Tenant, make_stored_run: Any) -> Iterator[dict[str, list[str]]]:
    """Runs in every state and files (an upload and a run's artifact) of the fuzzer's key."""
    runs = [make_stored_run(fuzzer.key, status=s) for s in ("queued", "running", "succeeded", "failed", "cancelled")]
    artifact = File(
        owner=fuzzer.key,
        run=runs[2],
        purpose=File.Purpose.RUN_ARTIFACT,
        path="outputs/plot.png",
        filename="plot.png",
        bytes=4,
        content_type="image/png",
        sha256=hashlib.sha256(b"\x89PNG").hexdigest(),
    )
    artifact.blob.save(artifact.public_id, ContentFile(b"\x89PNG"), save=True)
    upload = fuzzer.upload(b"a,b\n1,2\n", filename="data.csv")
    KNOWN_IDS["run"] = [r.public_id for r in runs]
    KNOWN_IDS["file"] = [artifact.public_id, upload["id"]]
    try:
        yield KNOWN_IDS
    finally:
        KNOWN_IDS["run"], KNOWN_IDS["file"] = [], []


@schema.parametrize()
@hypothesis_settings(FUZZ_SETTINGS, max_examples=MAX_EXAMPLES)
def test_api_conforms_to_its_schema(
    case: Any, request: pytest.FixtureRequest, fuzzer: Tenant, existing: Any, short_waits: None
) -> None:
    if case.operation.label in ("POST /v1/runs", "GET /v1/runtimes"):
        request.getfixturevalue("ready_worker")  # runs really run; runtimes come from its heartbeat
    forget_idempotency_keys(fuzzer.key)
    call_and_validate(case, fuzzer.token)
