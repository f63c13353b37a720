"""Schemathesis' stateful phase: sequences that follow the links it infers from the schema (a created
run or file, or one from a list, is then read and deleted; a cancelled run read and deleted), with
every check of tests/fuzz/openapi.py plus the stateful ones: a created object is there at once
(ensure_resource_availability) and a deleted one answers 404 afterwards (use_after_free)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.errors import FlakyFailure, FlakyStrategyDefinition

from tests.api.conftest import Tenant, make_tenant
from tests.fuzz.openapi import CHECKS, FUZZ_SETTINGS, call_kwargs, forget_idempotency_keys, schema

pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

FLAKY_GENERATION_ATTEMPTS = 3


def test_link_sequences_conform_to_the_schema(fuzzer: Tenant, ready_worker: Any, short_waits: None) -> None:
    base = schema.as_state_machine()
    links = [name for name in dir(base) if "___" in name and not name.startswith("RANDOM")]
    # The links this test exists for: a failure here means the schema lost what they are inferred from.
    assert {
        "POST_v1_runs___202_GetRun__GET_v1_runs_public_id_",
        "POST_v1_runs___202_DeleteRun__DELETE_v1_runs_public_id_",
        "POST_v1_files___200_GetFileObject__GET_v1_files_public_id_",
        "POST_v1_files___200_DeleteFileObject__DELETE_v1_files_public_id_",
        "POST_v1_runs_public_id_cancel___200_GetRun__GET_v1_runs_public_id_",
    } <= set(links), links

    class Workflow(base):  # type: ignore[misc, valid-type]
        tenant = fuzzer

        def setup(self) -> None:
            # Each sequence with a key of its own: what it lists and links to is what it made, not what
            # earlier sequences left, so a sequence Hypothesis replays meets the same answers.
            self.tenant = make_tenant(f"fuzzer-{uuid.uuid4().hex[:8]}")

        def before_call(self, case: Any) -> None:
            forget_idempotency_keys(self.tenant.key)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return call_kwargs(case, self.tenant.token)

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            # As call_and_validate does: `headers` tells the auth checks which credentials were sent.
            case.validate_response(
                response, **CHECKS, headers=kwargs.get("headers"), transport_kwargs=kwargs, recorder=self.recorder
            )

    # Which links exist depends on the server's timing (a cancel answers 200, or 409 when the run already
    # ended; a short wait answers 200 or 202), so a sequence Hypothesis replays may draw differently: it
    # then reports FlakyStrategyDefinition, which says nothing about the server. That alone is retried;
    # any failed check is raised at once.
    for attempt in range(1, FLAKY_GENERATION_ATTEMPTS + 1):
        try:
            Workflow.run(settings=settings(FUZZ_SETTINGS, max_examples=25, stateful_step_count=6))
            return
        except (FlakyFailure, FlakyStrategyDefinition) as exc:
            causes = exc.exceptions if isinstance(exc, FlakyFailure) else [exc]
            if attempt == FLAKY_GENERATION_ATTEMPTS or not all(isinstance(c, FlakyStrategyDefinition) for c in causes):
                raise
