"""POST /v1/runs/{id}/cancel and DELETE /v1/runs/{id}."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from files.models import File
from runs.models import Run
from runs.sandbox import get_sandbox
from tests.api import assert_error, url_path, wait_for
from tests.api.conftest import SMALL_LIMITS

# ---- cancel ---------------------------------------------------------------------------------------


def test_it_cancels_a_queued_run(alice, make_run) -> None:
    run = make_run(alice.key, status="queued")
    response = alice.client.post(f"/v1/runs/{run.public_id}/cancel")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == run.public_id
    assert body["status"] == "cancelled"
    assert body["error"]["code"] == "cancelled"
    assert isinstance(body["completed_at"], int)
    assert body["started_at"] is None
    assert alice.get_run(run.public_id)["status"] == "cancelled"


@pytest.mark.parametrize("status", ["succeeded", "failed", "timeout", "oom", "cancelled", "error"])
def test_it_refuses_to_cancel_a_finished_run(alice, make_run, status) -> None:
    run = make_run(alice.key, status=status)
    response = alice.client.post(f"/v1/runs/{run.public_id}/cancel")
    assert_error(response, 409, "invalid_request_error", code="run_not_cancellable")
    run.refresh_from_db()
    assert run.status == status
    assert run.cancel_requested_at is None


def test_it_validates_ownership_on_cancel(alice, bob, make_run) -> None:
    theirs = make_run(bob.key, status="queued")
    assert_error(
        alice.client.post(f"/v1/runs/{theirs.public_id}/cancel"), 404, "invalid_request_error", code="not_found"
    )
    theirs.refresh_from_db()
    assert theirs.status == "queued"
    assert theirs.cancel_requested_at is None


def test_it_answers_404_when_cancelling_an_unknown_run(alice) -> None:
    assert_error(alice.client.post("/v1/runs/run_nope/cancel"), 404, "invalid_request_error")


def test_it_only_cancels_with_post(alice, make_run) -> None:
    run = make_run(alice.key, status="queued")
    assert_error(alice.client.get(f"/v1/runs/{run.public_id}/cancel"), 405, "invalid_request_error")
    run.refresh_from_db()
    assert run.status == "queued"


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_running_run_and_kills_its_sandbox(alice, worker) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(30)\nprint('not reached')\n"
    created = alice.post_run(code=code, wait=False, limits={**SMALL_LIMITS, "timeout_ms": 45_000})
    assert created.status_code == 202
    run_id = created.json()["id"]
    running = alice.wait_run(run_id, timeout_s=60, statuses={"running"})
    assert isinstance(running["started_at"], int)
    assert running["completed_at"] is None and running["exit_code"] is None and running["artifacts"] == []
    backend = get_sandbox()
    # The sandbox exists: the run's directory (and process group) are there while it sleeps.
    wait_for(lambda: (backend.runs_dir / run_id).exists(), timeout_s=30, what="the run's sandbox directory")

    response = alice.client.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.content
    body = response.json()
    if body["status"] == "running":  # the server waits a few seconds; the worker may take longer
        body = alice.wait_run(run_id, timeout_s=30)
    assert body["status"] == "cancelled", body
    assert body["error"]["code"] == "cancelled"
    assert "not reached" not in body["stdout"]
    assert body["usage"]["wall_ms"] is None or body["usage"]["wall_ms"] < 30_000

    # The sandbox is gone: no run directory, no cgroup, no process of the run.
    wait_for(lambda: not (backend.runs_dir / run_id).exists(), timeout_s=30, what="the run directory to go")
    for step in ("compile", "run"):
        paths = backend.cgroups.paths(f"{run_id}.{step}")  # type: ignore[attr-defined]
        assert not any(p.exists() for p in paths.values()), paths
    assert_error(
        alice.client.post(f"/v1/runs/{run_id}/cancel"), 409, "invalid_request_error", code="run_not_cancellable"
    )


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_run_before_a_worker_takes_it(alice) -> None:
    created = alice.post_run(code="print('never')", wait=False).json()
    body = alice.client.post(f"/v1/runs/{created['id']}/cancel").json()
    assert body["status"] == "cancelled"
    # A worker that receives the message afterwards does not run it.
    from runs.tasks import execute_run

    execute_run.fn(created["id"])
    run = Run.objects.get(public_id=created["id"])
    assert run.status == "cancelled"
    assert run.started_at is None
    assert run.stdout == ""


# ---- delete ---------------------------------------------------------------------------------------


def _artifact(run: Run, content: bytes = b"artifact bytes") -> File:
    record = File(
        owner=run.owner,
        filename="a.txt",
        bytes=len(content),
        purpose=File.Purpose.RUN_ARTIFACT,
        content_type="text/plain",
        sha256="0" * 64,
        run=run,
        path="outputs/a.txt",
    )
    record.blob.save(record.public_id, ContentFile(content), save=False)
    record.save()
    return record


def test_it_deletes_a_finished_run_and_its_artifacts(alice, make_run) -> None:
    run = make_run(alice.key)
    artifact = _artifact(run)
    blob_name = artifact.blob.name
    assert default_storage.exists(blob_name)
    response = alice.client.delete(f"/v1/runs/{run.public_id}")
    assert response.status_code == 200, response.content
    assert response.json() == {"id": run.public_id, "object": "run", "deleted": True}
    assert_error(alice.client.get(f"/v1/runs/{run.public_id}"), 404, "invalid_request_error")
    assert_error(alice.client.get(f"/v1/files/{artifact.public_id}"), 404, "invalid_request_error")
    assert not File.objects.filter(pk=artifact.pk).exists()
    assert not default_storage.exists(blob_name)
    assert_error(alice.client.delete(f"/v1/runs/{run.public_id}"), 404, "invalid_request_error")


@pytest.mark.parametrize("status", ["queued", "running"])
def test_it_refuses_to_delete_an_unfinished_run(alice, make_run, status) -> None:
    run = make_run(alice.key, status=status)
    response = alice.client.delete(f"/v1/runs/{run.public_id}")
    error = assert_error(response, 409, "invalid_request_error")
    assert error["code"] == "run_not_finished"
    assert Run.objects.filter(pk=run.pk).exists()


def test_it_validates_ownership_on_delete(alice, bob, make_run) -> None:
    theirs = make_run(bob.key)
    artifact = _artifact(theirs)
    assert_error(alice.client.delete(f"/v1/runs/{theirs.public_id}"), 404, "invalid_request_error", code="not_found")
    assert Run.objects.filter(pk=theirs.pk).exists()
    assert default_storage.exists(artifact.blob.name)
    assert bob.get_run(theirs.public_id)["id"] == theirs.public_id


def test_it_keeps_uploaded_input_files_when_a_run_is_deleted(alice, make_run) -> None:
    upload = alice.upload(b"input")
    run = make_run(alice.key, input_files=[{"file_id": upload["id"], "path": "in.txt"}])
    assert alice.client.delete(f"/v1/runs/{run.public_id}").status_code == 200
    assert alice.client.get(f"/v1/files/{upload['id']}").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_it_deletes_a_real_run_with_its_artifact(alice, worker) -> None:
    run = alice.post_run(code="open('outputs/out.txt', 'w').write('bye')").json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    (artifact,) = run["artifacts"]
    assert alice.client.get(url_path(artifact["url"])).status_code == 200
    blob_name = File.objects.get(public_id=artifact["id"]).blob.name
    assert alice.client.delete(f"/v1/runs/{run['id']}").json()["deleted"] is True
    assert_error(alice.client.get(url_path(artifact["url"])), 404, "invalid_request_error")
    assert not default_storage.exists(blob_name)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_delete_a_run_while_it_runs(alice, worker) -> None:
    code = "import time\ntime.sleep(30)\n"
    run_id = alice.post_run(code=code, wait=False, limits={**SMALL_LIMITS, "timeout_ms": 45_000}).json()["id"]
    alice.wait_run(run_id, timeout_s=60, statuses={"running"})
    error = assert_error(alice.client.delete(f"/v1/runs/{run_id}"), 409, "invalid_request_error")
    assert error["code"] == "run_not_finished"
    assert alice.client.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    alice.wait_run(run_id, timeout_s=30)
    assert alice.client.delete(f"/v1/runs/{run_id}").status_code == 200
