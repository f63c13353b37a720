"""`Idempotency-Key` on POST /v1/runs and POST /v1/files: a retry returns what the first request made."""

from __future__ import annotations

import threading
import uuid

import dramatiq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from files.models import File
from runs.models import Run
from tests.api import assert_error
from tests.api.conftest import SMALL_LIMITS, make_tenant

BODY = {"language": "python", "code": "print('once')", "wait": False, "limits": SMALL_LIMITS}


def _idem_key() -> str:
    # Unique per test: records live in Redis for a day, and key ids restart with every test database.
    return f"retry-{uuid.uuid4()}"


def _post_run(tenant, body: dict, key: str):
    return tenant.client.post("/v1/runs", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def _upload(tenant, content: bytes, key: str, filename: str = "data.csv", purpose: str = "user_data"):
    return tenant.client.post(
        "/v1/files",
        {"file": SimpleUploadedFile(filename, content), "purpose": purpose},
        format="multipart",
        HTTP_IDEMPOTENCY_KEY=key,
    )


# ---- runs -----------------------------------------------------------------------------------------


def test_it_returns_the_same_run_for_a_retry(alice) -> None:
    key = _idem_key()
    first = _post_run(alice, BODY, key)
    assert first.status_code == 202, first.content
    second = _post_run(alice, BODY, key)
    assert second.status_code == 202, second.content
    assert second.json()["id"] == first.json()["id"]
    assert second.json() == first.json()
    assert Run.objects.filter(owner=alice.key).count() == 1


def test_it_returns_the_run_as_it_is_now_on_a_retry(alice) -> None:
    key = _idem_key()
    run_id = _post_run(alice, BODY, key).json()["id"]
    Run.objects.filter(public_id=run_id).update(status="succeeded", stdout="once\n", exit_code=0)
    retry = _post_run(alice, BODY, key)
    assert retry.status_code == 200, retry.content
    assert retry.json()["id"] == run_id
    assert retry.json()["status"] == "succeeded"
    assert retry.json()["stdout"] == "once\n"
    assert Run.objects.filter(owner=alice.key).count() == 1


def test_it_refuses_the_same_key_with_a_different_body(alice) -> None:
    key = _idem_key()
    assert _post_run(alice, BODY, key).status_code == 202
    response = _post_run(alice, {**BODY, "code": "print('twice')"}, key)
    assert_error(response, 409, "invalid_request_error", code="idempotency_key_reused", param="Idempotency-Key")
    assert Run.objects.filter(owner=alice.key).count() == 1
    assert Run.objects.get(owner=alice.key).code == "print('once')"


def test_it_refuses_the_same_key_with_other_options(alice) -> None:
    key = _idem_key()
    assert _post_run(alice, BODY, key).status_code == 202
    response = _post_run(alice, {**BODY, "stdin": "x"}, key)
    assert_error(response, 409, "invalid_request_error", code="idempotency_key_reused")
    assert Run.objects.filter(owner=alice.key).count() == 1


def test_it_creates_a_new_run_for_a_different_key(alice) -> None:
    first = _post_run(alice, BODY, _idem_key())
    second = _post_run(alice, BODY, _idem_key())
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    assert Run.objects.filter(owner=alice.key).count() == 2


def test_it_creates_a_new_run_without_a_key(alice) -> None:
    key = _idem_key()
    first = _post_run(alice, BODY, key)
    plain = alice.client.post("/v1/runs", BODY, format="json")
    assert plain.status_code == 202
    assert plain.json()["id"] != first.json()["id"]
    assert Run.objects.filter(owner=alice.key).count() == 2


def test_it_scopes_keys_per_api_key(alice, bob) -> None:
    key = _idem_key()
    mine = _post_run(alice, BODY, key)
    theirs = _post_run(bob, BODY, key)
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert Run.objects.get(public_id=mine.json()["id"]).owner_id == alice.key.pk
    assert Run.objects.get(public_id=theirs.json()["id"]).owner_id == bob.key.pk
    # Each retry finds its own key's run; Bob never gets Alice's run.
    assert _post_run(alice, BODY, key).json()["id"] == mine.json()["id"]
    assert _post_run(bob, BODY, key).json()["id"] == theirs.json()["id"]
    # A different body under Bob's use of the key is Bob's conflict only.
    assert_error(_post_run(bob, {**BODY, "code": "1"}, key), 409, "invalid_request_error")
    assert _post_run(alice, BODY, key).json()["id"] == mine.json()["id"]


def test_it_does_not_burn_the_key_on_a_validation_error(alice) -> None:
    key = _idem_key()
    bad = _post_run(alice, {**BODY, "limits": {"memory_mb": 999_999}}, key)
    assert_error(bad, 400, "invalid_request_error", param="limits.memory_mb")
    good = _post_run(alice, BODY, key)
    assert good.status_code == 202, good.content
    assert Run.objects.filter(owner=alice.key).count() == 1
    assert _post_run(alice, BODY, key).json()["id"] == good.json()["id"]


def test_it_does_not_burn_the_key_on_an_unknown_file(alice) -> None:
    key = _idem_key()
    bad = _post_run(alice, {**BODY, "files": [{"file_id": "file-nope", "path": "in.csv"}]}, key)
    assert_error(bad, 404, "invalid_request_error", param="files[0].file_id")
    file = alice.upload(b"a,b\n")
    good = _post_run(alice, {**BODY, "files": [{"file_id": file["id"], "path": "in.csv"}]}, key)
    assert good.status_code == 202, good.content
    assert Run.objects.filter(owner=alice.key).count() == 1


def test_it_does_not_burn_the_key_when_admission_refuses(db, make_run) -> None:
    carol = make_tenant("carol", max_concurrent_runs=1)
    busy = make_run(carol.key, status="running")
    key = _idem_key()
    refused = _post_run(carol, BODY, key)
    assert_error(refused, 429, "rate_limit_error", code="concurrency_limit_exceeded")
    Run.objects.filter(pk=busy.pk).update(status="succeeded")
    retry = _post_run(carol, BODY, key)
    assert retry.status_code == 202, retry.content
    assert Run.objects.filter(owner=carol.key, status="queued").count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_creates_one_run_for_concurrent_retries(alice) -> None:
    key = _idem_key()
    answers: list[tuple[int, dict]] = []
    start = threading.Barrier(4)

    def post() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice.token}")
            start.wait(timeout=30)
            response = client.post("/v1/runs", BODY, format="json", HTTP_IDEMPOTENCY_KEY=key)
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 4, answers
    assert Run.objects.filter(owner=alice.key).count() == 1
    run_id = Run.objects.get(owner=alice.key).public_id
    for status, body in answers:
        if status == 202:
            assert body["id"] == run_id
        else:  # a retry while the first is still being handled is told to retry, never given a second run
            assert status == 409, body
            assert body["error"]["code"] == "idempotency_request_in_progress"
    assert any(status == 202 for status, _ in answers)
    dramatiq.get_broker().flush_all()  # no worker here: drop the queued message


def test_it_answers_404_when_the_first_run_was_deleted(alice) -> None:
    key = _idem_key()
    run_id = _post_run(alice, BODY, key).json()["id"]
    Run.objects.filter(public_id=run_id).update(status="succeeded")
    assert alice.client.delete(f"/v1/runs/{run_id}").status_code == 200
    response = _post_run(alice, BODY, key)
    assert_error(response, 404, "invalid_request_error", param="Idempotency-Key")
    assert not Run.objects.filter(owner=alice.key).exists()


def test_it_rejects_an_over_long_key(alice) -> None:
    response = _post_run(alice, BODY, "k" * 256)
    assert_error(response, 400, "invalid_request_error", param="Idempotency-Key")
    assert not Run.objects.exists()


def test_it_accepts_a_key_of_the_maximum_length(alice) -> None:
    key = (_idem_key() + "k" * 255)[:255]
    first = _post_run(alice, BODY, key)
    assert first.status_code == 202, first.content
    assert _post_run(alice, BODY, key).json()["id"] == first.json()["id"]


def test_it_rejects_an_empty_or_unprintable_key(alice) -> None:
    for key in ("", "tab\there", "nul\x00"):
        response = _post_run(alice, BODY, key)
        assert_error(response, 400, "invalid_request_error", param="Idempotency-Key")
    assert not Run.objects.exists()


def test_it_keeps_runs_and_files_apart(alice) -> None:
    key = _idem_key()
    run = _post_run(alice, BODY, key)
    file = _upload(alice, b"x", key)
    assert run.status_code == 202 and file.status_code == 200
    assert run.json()["id"].startswith("run_")
    assert file.json()["id"].startswith("file-")


# ---- files ----------------------------------------------------------------------------------------


def test_it_returns_the_same_file_for_a_retried_upload(alice) -> None:
    key = _idem_key()
    first = _upload(alice, b"name,score\nada,3\n", key)
    assert first.status_code == 200, first.content
    second = _upload(alice, b"name,score\nada,3\n", key)
    assert second.status_code == 200, second.content
    assert second.json() == first.json()
    assert File.objects.filter(owner=alice.key).count() == 1
    listed = alice.client.get("/v1/files").json()["data"]
    assert [f["id"] for f in listed] == [first.json()["id"]]


def test_it_refuses_the_same_upload_key_with_other_content(alice) -> None:
    key = _idem_key()
    assert _upload(alice, b"first", key).status_code == 200
    response = _upload(alice, b"second", key)
    assert_error(response, 409, "invalid_request_error", code="idempotency_key_reused", param="Idempotency-Key")
    assert File.objects.filter(owner=alice.key).count() == 1
    with File.objects.get(owner=alice.key).blob.open("rb") as fh:
        assert fh.read() == b"first"


def test_it_refuses_the_same_upload_key_with_another_name_or_purpose(alice) -> None:
    key = _idem_key()
    assert _upload(alice, b"same", key, filename="a.txt").status_code == 200
    assert_error(_upload(alice, b"same", key, filename="b.txt"), 409, "invalid_request_error")
    assert_error(_upload(alice, b"same", key, filename="a.txt", purpose="assistants"), 409, "invalid_request_error")
    assert File.objects.filter(owner=alice.key).count() == 1


def test_it_scopes_upload_keys_per_api_key(alice, bob) -> None:
    key = _idem_key()
    mine = _upload(alice, b"same bytes", key)
    theirs = _upload(bob, b"same bytes", key)
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["id"] != theirs.json()["id"]
    assert File.objects.get(public_id=theirs.json()["id"]).owner_id == bob.key.pk


def test_it_does_not_burn_an_upload_key_on_a_validation_error(alice) -> None:
    key = _idem_key()
    bad = _upload(alice, b"x", key, purpose="homework")
    assert_error(bad, 400, "invalid_request_error", param="purpose")
    good = _upload(alice, b"x", key)
    assert good.status_code == 200, good.content
    assert File.objects.filter(owner=alice.key).count() == 1


def test_it_rejects_an_over_long_upload_key(alice) -> None:
    response = _upload(alice, b"x", "k" * 256)
    assert_error(response, 400, "invalid_request_error", param="Idempotency-Key")
    assert not File.objects.exists()
