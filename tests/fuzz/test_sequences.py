"""Explicit sequences on real objects, every answer checked against the schema by Schemathesis.

What random generation and inferred links rarely reach: a running run that is cancelled (and its
DELETE refused until then), a queued one cancelled, a finished one that cannot be, artifacts read,
downloaded with and without a key and through a signed link, an empty upload, input files staged,
Idempotency-Key retries, a streamed run (each server-sent event against the documented event schema),
and another key's ids.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from runs.models import Run
from tests.api import wait_for
from tests.api.conftest import SMALL_LIMITS, Tenant, make_tenant
from tests.fuzz.openapi import CHECKS, call_and_validate, schema

pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

RUNS = schema["/v1/runs"]
RUN = schema["/v1/runs/{public_id}"]
FILES = schema["/v1/files"]
FILE = schema["/v1/files/{public_id}"]


def _send(tenant: Tenant, operation: Any, status: int, **case: Any) -> Any:
    """Call `operation` with the tenant's key, check the answer against the schema, expect `status`."""
    if "body" in case:
        case.setdefault("media_type", "multipart/form-data" if operation is FILES["POST"] else "application/json")
    response = call_and_validate(operation.Case(**case), tenant.token)
    assert response.status_code == status, (response.status_code, response.text[:500])
    return response


def _run_body(code: str, **fields: Any) -> dict[str, Any]:
    return {"language": "python", "code": code, "limits": dict(SMALL_LIMITS), **fields}


def _id(public_id: str) -> dict[str, Any]:
    return {"path_parameters": {"public_id": public_id}}


def test_a_run_is_cancelled_while_running_then_deleted(fuzzer: Tenant, ready_worker: Any) -> None:
    body = _run_body("import time\nprint('started', flush=True)\ntime.sleep(60)\n", wait=False)
    run = _send(fuzzer, RUNS["POST"], 202, body=body).json()
    fuzzer.wait_run(run["id"], statuses={"running"})
    assert _send(fuzzer, RUN["GET"], 200, **_id(run["id"])).json()["status"] == "running"
    error = _send(fuzzer, RUN["DELETE"], 409, **_id(run["id"])).json()["error"]
    assert error["code"] == "run_not_finished"

    cancelled = _send(fuzzer, schema["/v1/runs/{public_id}/cancel"]["POST"], 200, **_id(run["id"])).json()
    assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
    again = _send(fuzzer, schema["/v1/runs/{public_id}/cancel"]["POST"], 409, **_id(run["id"])).json()
    assert again["error"]["code"] == "run_not_cancellable"

    deleted = _send(fuzzer, RUN["DELETE"], 200, **_id(run["id"])).json()
    assert deleted == {"id": run["id"], "object": "run", "deleted": True}
    _send(fuzzer, RUN["GET"], 404, **_id(run["id"]))
    _send(fuzzer, RUN["DELETE"], 404, **_id(run["id"]))
    _send(fuzzer, schema["/v1/runs/{public_id}/cancel"]["POST"], 404, **_id(run["id"]))


def test_a_queued_run_is_cancelled_at_once(fuzzer: Tenant, make_stored_run: Any) -> None:
    run = make_stored_run(fuzzer.key, status="queued")
    cancelled = _send(fuzzer, schema["/v1/runs/{public_id}/cancel"]["POST"], 200, **_id(run.public_id)).json()
    assert cancelled["status"] == "cancelled"
    listed = _send(fuzzer, RUNS["GET"], 200, query={"status": "cancelled", "limit": 1}).json()
    assert [r["id"] for r in listed["data"]] == [run.public_id]


def test_artifacts_are_read_downloaded_and_linked(fuzzer: Tenant, ready_worker: Any) -> None:
    code = "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/report.txt', 'w').write('hello')\n"
    run = _send(fuzzer, RUNS["POST"], 200, body=_run_body(code)).json()
    assert run["status"] == "succeeded", run
    [artifact] = run["artifacts"]
    file = _send(fuzzer, FILE["GET"], 200, **_id(artifact["id"])).json()
    assert file["purpose"] == "run_artifact" and file["bytes"] == 5
    content = schema["/v1/files/{public_id}/content"]["GET"]
    assert _send(fuzzer, content, 200, **_id(artifact["id"])).content == b"hello"

    minted = _send(fuzzer, schema["/v1/files/{public_id}/url"]["POST"], 200, **_id(artifact["id"])).json()
    query = {k: v[0] for k, v in parse_qs(urlsplit(minted["url"]).query).items()}
    # A signed link needs no key.
    signed = content.Case(**_id(artifact["id"]), query=query).call_and_validate(**CHECKS)
    assert signed.status_code == 200 and signed.content == b"hello"
    tampered = content.Case(**_id(artifact["id"]), query={**query, "signature": "0" * 64})
    assert tampered.call_and_validate(**CHECKS).status_code == 403

    _send(fuzzer, RUN["DELETE"], 200, **_id(run["id"]))
    _send(fuzzer, content, 404, **_id(artifact["id"]))


def test_an_upload_is_staged_as_an_input_and_deleted(fuzzer: Tenant, ready_worker: Any) -> None:
    upload = _send(fuzzer, FILES["POST"], 200, body={"file": b"a,b\n1,2\n", "purpose": "user_data"}).json()
    empty = _send(fuzzer, FILES["POST"], 200, body={"file": b"", "purpose": "assistants"}).json()
    assert (upload["bytes"], empty["bytes"]) == (8, 0)
    content = schema["/v1/files/{public_id}/content"]["GET"]
    assert _send(fuzzer, content, 200, **_id(empty["id"])).content == b""

    code = "print(open('/work/inputs/data/in.csv').read(), end='')"
    files = [{"file_id": upload["id"], "path": "data/in.csv"}]
    run = _send(fuzzer, RUNS["POST"], 200, body=_run_body(code, files=files)).json()
    assert (run["status"], run["stdout"]) == ("succeeded", "a,b\n1,2\n"), run

    listed = _send(fuzzer, FILES["GET"], 200, query={"purpose": "assistants"}).json()
    assert [f["id"] for f in listed["data"]] == [empty["id"]]
    for file in (upload, empty):
        assert _send(fuzzer, FILE["DELETE"], 200, **_id(file["id"])).json()["deleted"] is True
        _send(fuzzer, FILE["GET"], 404, **_id(file["id"]))
        _send(fuzzer, content, 404, **_id(file["id"]))


def test_an_idempotency_key_returns_the_first_run_and_refuses_another_body(fuzzer: Tenant) -> None:
    headers = {"Idempotency-Key": "fuzz-retry-1"}
    body = _run_body("print(1)", wait=False)
    first = _send(fuzzer, RUNS["POST"], 202, body=body, headers=headers).json()
    retry = _send(fuzzer, RUNS["POST"], 202, body=body, headers=headers).json()
    assert retry["id"] == first["id"]
    error = _send(fuzzer, RUNS["POST"], 409, body={**body, "code": "print(2)"}, headers=headers).json()["error"]
    assert (error["code"], error["param"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert Run.objects.filter(owner=fuzzer.key).count() == 1

    upload = {"file": b"x", "purpose": "user_data"}
    file = _send(fuzzer, FILES["POST"], 200, body=upload, headers=headers).json()
    assert _send(fuzzer, FILES["POST"], 200, body=upload, headers=headers).json()["id"] == file["id"]
    _send(fuzzer, FILES["POST"], 409, body={**upload, "file": b"y"}, headers=headers)


def test_a_streamed_run_sends_the_documented_events(fuzzer: Tenant, ready_worker: Any) -> None:
    body = _run_body("import sys\nprint('out')\nprint('err', file=sys.stderr)\n", stream=True)
    response = _send(fuzzer, RUNS["POST"], 200, body=body)
    assert response.headers["content-type"][0].startswith("text/event-stream")
    events = [
        (block.split("\n", 1)[0].removeprefix("event: "), json.loads(block.split("\ndata: ", 1)[1]))
        for block in response.text.split("\n\n")
        if block.startswith("event: ")
    ]
    names = [name for name, _ in events]
    assert names[:2] == ["run.created", "run.started"] and names[-1] == "run.completed", names
    output: dict[str, str] = {}  # chunks may split lines (output leaves unbuffered): joined per stream
    for name, d in events:
        if name == "run.output":
            output[d["stream"]] = output.get(d["stream"], "") + d["data"]
    assert output == {"stdout": "out\n", "stderr": "err\n"}, events
    assert events[-1][1]["status"] == "succeeded"


def test_another_keys_objects_answer_404(fuzzer: Tenant, make_stored_run: Any) -> None:
    bob = make_tenant("bob")
    run = make_stored_run(bob.key, status="succeeded")
    file = bob.upload(b"secret")
    for operation, public_id in (
        (RUN["GET"], run.public_id),
        (RUN["DELETE"], run.public_id),
        (schema["/v1/runs/{public_id}/cancel"]["POST"], run.public_id),
        (FILE["GET"], file["id"]),
        (FILE["DELETE"], file["id"]),
        (schema["/v1/files/{public_id}/content"]["GET"], file["id"]),
        (schema["/v1/files/{public_id}/url"]["POST"], file["id"]),
    ):
        _send(fuzzer, operation, 404, **_id(public_id))
    wait_for(lambda: Run.objects.filter(public_id=run.public_id).exists(), what="bob's run to be untouched")
    body = _run_body("print(1)", wait=False, files=[{"file_id": file["id"], "path": "in.txt"}])
    assert _send(fuzzer, RUNS["POST"], 404, body=body).json()["error"]["param"] == "files[0].file_id"
