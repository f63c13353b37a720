"""/v1/files: multipart upload, list, retrieve, content, delete (OpenAI's Files API shapes)."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from files.models import File
from tests.api import assert_error

FILE_KEYS = {"id", "object", "bytes", "created_at", "filename", "purpose", "status", "expires_at", "status_details"}
FILE_ID = re.compile(r"^file-[a-z2-7]{24}$")


def _post(tenant, **data):
    return tenant.client.post("/v1/files", data, format="multipart")


def _content(response) -> bytes:
    return b"".join(response.streaming_content)


# ---- upload ---------------------------------------------------------------------------------------


def test_it_uploads_a_file(alice) -> None:
    data = b"name,score\nada,3\n"
    response = _post(alice, file=SimpleUploadedFile("scores.csv", data), purpose="user_data")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == FILE_KEYS
    assert FILE_ID.match(body["id"]), body["id"]
    assert body["object"] == "file"
    assert body["bytes"] == len(data)
    assert body["filename"] == "scores.csv"
    assert body["purpose"] == "user_data"
    assert body["status"] == "processed"
    assert body["expires_at"] is None and body["status_details"] is None
    assert isinstance(body["created_at"], int)
    assert abs(body["created_at"] - timezone.now().timestamp()) < 3600
    record = File.objects.get(public_id=body["id"])
    assert record.owner_id == alice.key.pk
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    with record.blob.open("rb") as fh:
        assert fh.read() == data


def test_it_accepts_openai_purposes(alice) -> None:
    for purpose in ("assistants", "user_data", "batch", "fine-tune", "vision", "evals"):
        response = _post(alice, file=SimpleUploadedFile("x.txt", b"x"), purpose=purpose)
        assert response.status_code == 200, (purpose, response.content)
        assert response.json()["purpose"] == purpose


def test_it_requires_a_file(alice) -> None:
    response = _post(alice, purpose="user_data")
    assert_error(response, 400, "invalid_request_error", param="file", code="missing_required_parameter")
    assert not File.objects.exists()


def test_it_requires_a_purpose(alice) -> None:
    response = _post(alice, file=SimpleUploadedFile("x.txt", b"x"))
    assert_error(response, 400, "invalid_request_error", param="purpose", code="missing_required_parameter")
    assert not File.objects.exists()


def test_it_rejects_an_unknown_purpose(alice) -> None:
    response = _post(alice, file=SimpleUploadedFile("x.txt", b"x"), purpose="homework")
    assert_error(response, 400, "invalid_request_error", param="purpose")
    assert not File.objects.exists()


def test_it_rejects_uploads_posing_as_run_artifacts(alice) -> None:
    response = _post(alice, file=SimpleUploadedFile("x.txt", b"x"), purpose="run_artifact")
    assert_error(response, 400, "invalid_request_error", param="purpose")


def test_it_rejects_a_json_upload(alice) -> None:
    response = alice.client.post("/v1/files", {"purpose": "user_data", "file": "aGVsbG8="}, format="json")
    assert_error(response, 415, "invalid_request_error")
    assert not File.objects.exists()


def test_it_rejects_a_file_above_the_upload_cap(alice, settings) -> None:
    settings.MAX_UPLOAD_BYTES = 10
    response = _post(alice, file=SimpleUploadedFile("big.bin", b"x" * 11), purpose="user_data")
    assert_error(response, 413, "invalid_request_error", param="file")
    assert not File.objects.exists()
    assert _post(alice, file=SimpleUploadedFile("ok.bin", b"x" * 10), purpose="user_data").status_code == 200


def test_it_rejects_an_upload_body_above_the_cap_from_content_length(alice, settings) -> None:
    settings.MAX_UPLOAD_BYTES = 10
    response = _post(alice, file=SimpleUploadedFile("big.bin", b"x" * 100_000), purpose="user_data")
    assert_error(response, 413, "invalid_request_error")
    assert not File.objects.exists()


def test_it_keeps_only_a_safe_filename(alice) -> None:
    for given, kept in (("../../etc/passwd", "passwd"), ("dir\\evil.txt", "evil.txt"), ("a\x07b.txt", "ab.txt")):
        body = _post(alice, file=SimpleUploadedFile(given, b"x"), purpose="user_data").json()
        assert body["filename"] == kept, (given, body)
        blob = File.objects.get(public_id=body["id"]).blob.name
        assert kept not in blob and ".." not in blob


def test_it_stores_an_empty_file(alice) -> None:
    body = alice.upload(b"", filename="empty.txt")
    assert body["bytes"] == 0
    assert _content(alice.client.get(f"/v1/files/{body['id']}/content")) == b""


# ---- list -----------------------------------------------------------------------------------------


def _list(tenant, **params) -> dict:
    response = tenant.client.get("/v1/files", params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"object", "data", "first_id", "last_id", "has_more"}
    assert body["object"] == "list"
    return body


def test_it_lists_files_newest_first(alice) -> None:
    ids = [alice.upload(f"{i}".encode(), filename=f"{i}.txt")["id"] for i in range(3)]
    base = timezone.now() - timedelta(minutes=1)
    for i, file_id in enumerate(ids):
        File.objects.filter(public_id=file_id).update(created_at=base + timedelta(seconds=i))
    body = _list(alice)
    assert [f["id"] for f in body["data"]] == list(reversed(ids))
    assert all(set(f) == FILE_KEYS for f in body["data"])
    assert body["first_id"] == ids[2] and body["last_id"] == ids[0] and body["has_more"] is False
    page = _list(alice, limit=2, order="asc")
    assert [f["id"] for f in page["data"]] == ids[:2] and page["has_more"] is True
    rest = _list(alice, limit=2, order="asc", after=page["last_id"])
    assert [f["id"] for f in rest["data"]] == ids[2:] and rest["has_more"] is False


def test_it_filters_files_by_purpose(alice) -> None:
    data = alice.upload(b"a", purpose="user_data")
    assistants = alice.upload(b"b", purpose="assistants")
    assert [f["id"] for f in _list(alice, purpose="user_data")["data"]] == [data["id"]]
    assert [f["id"] for f in _list(alice, purpose="assistants")["data"]] == [assistants["id"]]
    assert _list(alice, purpose="batch")["data"] == []
    assert len(_list(alice)["data"]) == 2


def test_it_rejects_bad_list_parameters(alice) -> None:
    assert_error(alice.client.get("/v1/files", {"limit": "0"}), 400, "invalid_request_error", param="limit")
    assert_error(alice.client.get("/v1/files", {"order": "up"}), 400, "invalid_request_error", param="order")
    assert_error(alice.client.get("/v1/files", {"after": "file-nope"}), 400, "invalid_request_error", param="after")


def test_it_validates_ownership_in_lists(alice, bob) -> None:
    mine = alice.upload(b"mine")
    theirs = bob.upload(b"theirs")
    assert [f["id"] for f in _list(alice)["data"]] == [mine["id"]]
    assert [f["id"] for f in _list(bob)["data"]] == [theirs["id"]]
    assert_error(alice.client.get("/v1/files", {"after": theirs["id"]}), 400, "invalid_request_error", param="after")


# ---- retrieve and content -------------------------------------------------------------------------


def test_it_retrieves_a_file(alice) -> None:
    uploaded = alice.upload(b"hello", filename="hello.txt")
    response = alice.client.get(f"/v1/files/{uploaded['id']}")
    assert response.status_code == 200
    assert response.json() == uploaded


def test_it_serves_the_content_as_an_attachment(alice) -> None:
    data = bytes(range(256)) * 3
    uploaded = alice.upload(data, filename="table.csv")
    response = alice.client.get(f"/v1/files/{uploaded['id']}/content")
    assert response.status_code == 200
    assert _content(response) == data
    assert response["Content-Type"].startswith("text/csv")
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment")
    assert 'filename="table.csv"' in disposition
    assert response["X-Content-Type-Options"] == "nosniff"
    assert int(response["Content-Length"]) == len(data)


def test_it_never_serves_html_inline(alice) -> None:
    uploaded = alice.upload(b"<script>alert(1)</script>", filename="page.html")
    response = alice.client.get(f"/v1/files/{uploaded['id']}/content")
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.get("Content-Security-Policy", "")


def test_it_serves_unknown_types_as_octet_stream(alice) -> None:
    uploaded = alice.upload(b"\x00\x01", filename="blob.weird-ext")
    response = alice.client.get(f"/v1/files/{uploaded['id']}/content")
    assert response["Content-Type"] == "application/octet-stream"


def test_it_validates_ownership_on_retrieve_and_content(alice, bob) -> None:
    theirs = bob.upload(b"bob's secret", filename="secret.txt")
    for path in (f"/v1/files/{theirs['id']}", f"/v1/files/{theirs['id']}/content"):
        response = alice.client.get(path)
        assert_error(response, 404, "invalid_request_error", code="not_found")
        assert b"secret" not in response.content
    assert _content(bob.client.get(f"/v1/files/{theirs['id']}/content")) == b"bob's secret"


def test_it_answers_404_for_an_unknown_file(alice) -> None:
    assert_error(alice.client.get("/v1/files/file-nope"), 404, "invalid_request_error", code="not_found")
    assert_error(alice.client.get("/v1/files/file-nope/content"), 404, "invalid_request_error")


# ---- delete ---------------------------------------------------------------------------------------


def test_it_deletes_a_file(alice) -> None:
    uploaded = alice.upload(b"bye")
    blob = File.objects.get(public_id=uploaded["id"]).blob.name
    assert default_storage.exists(blob)
    response = alice.client.delete(f"/v1/files/{uploaded['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": uploaded["id"], "object": "file", "deleted": True}
    assert not default_storage.exists(blob)
    assert_error(alice.client.get(f"/v1/files/{uploaded['id']}"), 404, "invalid_request_error")
    assert_error(alice.client.get(f"/v1/files/{uploaded['id']}/content"), 404, "invalid_request_error")
    assert_error(alice.client.delete(f"/v1/files/{uploaded['id']}"), 404, "invalid_request_error")
    assert _list(alice)["data"] == []


def test_it_validates_ownership_on_delete(alice, bob) -> None:
    theirs = bob.upload(b"keep me")
    assert_error(alice.client.delete(f"/v1/files/{theirs['id']}"), 404, "invalid_request_error", code="not_found")
    assert _content(bob.client.get(f"/v1/files/{theirs['id']}/content")) == b"keep me"
