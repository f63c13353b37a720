"""A waiting request answers from the worker's completion message when it carries the saved result, without
reading the run again, and answers exactly what the row holds; results with artifacts or large output
travel as a bare wake-up and are reread."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs import redis as cx_redis
from runs.models import Run
from tests.api import wait_for
from tests.api.conftest import SMALL_LIMITS

RUN_TABLE = Run._meta.db_table
FILES = "open('outputs/a.txt', 'w').write('a')\nprint('with a file')\n"


def _post_counting_run_reads(tenant: Any, **body: Any) -> tuple[dict[str, Any], int]:
    with CaptureQueriesContext(connection) as queries:
        response = tenant.post_run(**body)
    assert response.status_code == 200, response.content
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and RUN_TABLE in q["sql"]]
    return response.json(), len(reads)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "code",
    [
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\n",
        "import sys\nprint('é ✓ \\u2028')\nsys.exit(3)\n",
        "raise SystemExit('boom')\n",
    ],
)
def test_a_waiting_request_answers_from_the_completion_message(alice, ready_worker, code: str) -> None:
    answered, reads = _post_counting_run_reads(alice, code=code)
    assert answered["status"] in ("succeeded", "failed")
    # The answer is the row: the same object a later read gives.
    assert answered == alice.get_run(answered["id"])
    # Admission counts runs (one aggregate); nothing read the run itself back.
    assert reads == 1, reads


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", [FILES, "print('x' * 70000)\n"], ids=["artifacts", "large output"])
def test_results_the_message_does_not_carry_are_reread(alice, ready_worker, code: str) -> None:
    limits = {**SMALL_LIMITS, "max_output_bytes": 256 * 1024}
    answered, reads = _post_counting_run_reads(alice, code=code, limits=limits)
    assert answered["status"] == "succeeded", answered
    assert answered == alice.get_run(answered["id"])
    assert reads >= 2, reads  # the aggregate, then the run itself
    if code == FILES:
        assert [a["path"] for a in answered["artifacts"]] == ["outputs/a.txt"]


def test_a_message_applies_only_to_its_own_run_and_whole() -> None:
    run = Run(public_id="run_a", status="running", stdout="", stderr="")
    other = json.dumps({"id": "run_b", "attempts": 1, "run": dict.fromkeys(Run.RESULT_FIELDS)})
    assert not cx_redis.apply_done_payload(run, other.encode())
    assert not cx_redis.apply_done_payload(run, b"done")
    partial = json.dumps({"id": "run_a", "attempts": 1, "run": {"status": "succeeded"}})
    assert not cx_redis.apply_done_payload(run, partial)
    assert not cx_redis.apply_done_payload(run, b"{not json")
    assert run.status == "running"


@pytest.mark.django_db(transaction=True)
def test_a_thread_waits_on_one_redis_connection_run_after_run(alice, ready_worker) -> None:
    from runs import services

    first, _ = _post_counting_run_reads(alice, code="print(1)")
    connection_used = services._thread_pubsub.pubsub.connection
    second, _ = _post_counting_run_reads(alice, code="print(2)")
    assert (first["stdout"], second["stdout"]) == ("1\n", "2\n")
    assert services._thread_pubsub.pubsub.connection is connection_used
    # Only the runs being waited on are subscribed: none once the requests answered.
    services._thread_pubsub.pubsub.get_message(timeout=0.5)  # reads the last unsubscribe's confirmation
    assert not services._thread_pubsub.pubsub.channels


@pytest.mark.django_db(transaction=True)
def test_the_worker_keeps_no_artifacts_directory_of_a_finished_run(alice, ready_worker) -> None:
    from runs.sandbox import get_sandbox
    from runs.tasks import _artifacts_root

    root = _artifacts_root()
    # In the sandbox work dir (root's), not in a world-writable /tmp; private to this process.
    assert root.parent == Path(get_sandbox().config.workdir) / "artifacts"
    assert oct(root.stat().st_mode)[-3:] == "700" and oct(root.parent.stat().st_mode)[-3:] == "700"
    for code in ("print('no artifacts')\n", FILES):
        answered, _ = _post_counting_run_reads(alice, code=code)
        assert answered["status"] == "succeeded", answered
    # The run with a file had its copy there until its result was saved (its artifact is in storage).
    assert [a["path"] for a in answered["artifacts"]] == ["outputs/a.txt"]
    # Removed right after the completion is announced, so perhaps a moment after the answer.
    left = lambda: [p.name for p in root.iterdir() if p.name != "lock"]  # noqa: E731
    wait_for(lambda: left() == [], timeout_s=10, what="the artifacts directories to be removed")


def test_artifacts_directories_of_processes_that_are_gone_are_removed(tmp_path: Path, monkeypatch) -> None:
    import fcntl
    import os

    from runs import tasks

    base = tmp_path / "artifacts"
    dead, alive, unlocked = base / "111-dead", base / "222-alive", base / "333-being-made"
    for root in (dead, alive, unlocked):
        (root / "run_x").mkdir(parents=True)
    (dead / "lock").touch()  # its process exited: nobody holds the lock
    held = os.open(alive / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)  # another live process's
    monkeypatch.setattr(
        tasks, "get_sandbox", lambda: types.SimpleNamespace(config=types.SimpleNamespace(workdir=tmp_path))
    )
    monkeypatch.setattr(tasks, "_artifacts_roots", {})
    try:
        mine = tasks._artifacts_root()
    finally:
        os.close(held)
    assert sorted(p.name for p in base.iterdir()) == sorted(["222-alive", "333-being-made", mine.name])
    assert sorted(p.name for p in mine.iterdir()) == ["lock"]
