"""One test per bug the fuzzing found: 500s, answers the schema did not describe, and schema entries that
did not match what the API does (SPEC §3 decides which side was wrong)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from runs.models import Run
from tests.api import assert_error
from tests.api.conftest import SMALL_LIMITS, Tenant


def _openapi() -> dict[str, Any]:
    response = APIClient().get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def _response_schema(path: str, method: str, status: str = "200", media_type: str = "application/json") -> Any:
    return _openapi()["paths"][path][method]["responses"][status]["content"][media_type]["schema"]


def _post_run(tenant: Tenant, **body: Any) -> Any:
    body = {"language": "python", "code": "print(1)", "wait": False, "limits": dict(SMALL_LIMITS), **body}
    # json.dumps escapes what UTF-8 cannot carry ("\\ud800"), as a client's JSON may.
    return tenant.client.post("/v1/runs", json.dumps(body), content_type="application/json")


# ---- 500s ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/runs/run_\x00"),
        ("delete", "/v1/runs/run_\x00"),
        ("post", "/v1/runs/run_\x00/cancel"),
        ("get", "/v1/files/file-\x00"),
        ("delete", "/v1/files/file-\x00"),
        ("get", "/v1/files/file-\x00/content"),
        ("post", "/v1/files/file-\x00/url"),
    ],
)
def test_it_answers_404_for_an_id_with_a_nul(alice: Tenant, method: str, path: str) -> None:
    # PostgreSQL refuses to compare a string holding U+0000: these were 500s.
    assert_error(getattr(alice.client, method)(path), 404, "invalid_request_error")


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/files"])
def test_it_answers_400_for_a_cursor_with_a_nul(alice: Tenant, path: str) -> None:
    response = alice.client.get(path, {"after": "run_\x00"})
    assert_error(response, 400, "invalid_request_error", code="invalid_cursor", param="after")


def test_it_answers_400_for_a_purpose_filter_it_does_not_know(alice: Tenant) -> None:
    # Any text, U+0000 included (a 500), went to the database; the schema lists the purposes.
    for purpose in ("homework", "user_data\x00", ""):
        assert_error(alice.client.get("/v1/files", {"purpose": purpose}), 400, "invalid_request_error", param="purpose")
    assert alice.client.get("/v1/files", {"purpose": "run_artifact"}).status_code == 200


def test_it_answers_403_for_a_signature_that_is_not_ascii(alice: Tenant) -> None:
    # hmac.compare_digest raises TypeError for non-ASCII text: this was a 500.
    file = alice.upload(b"x")
    response = APIClient().get(f"/v1/files/{file['id']}/content", {"expires": "9999999999", "signature": "é" * 64})
    assert_error(response, 403, "permission_error", code="invalid_signature", param="signature")


@pytest.mark.parametrize(
    ("body", "param"), [({"code": "print('\ud800')"}, "code"), ({"metadata": {"\ud800": "x"}}, "metadata")]
)
def test_it_answers_400_for_a_lone_surrogate(alice: Tenant, body: dict[str, Any], param: str) -> None:
    # JSON may spell "\ud800"; UTF-8 cannot: the size of `code` was counted before CharField refused it,
    # and a metadata key reached jsonb. Both were 500s.
    assert_error(_post_run(alice, **body), 400, "invalid_request_error", param=param)
    assert not Run.objects.exists()


def test_it_answers_400_for_a_nul_in_a_metadata_key(alice: Tenant) -> None:
    # jsonb cannot hold U+0000 (a 500 when the run was stored).
    assert_error(_post_run(alice, metadata={"a\x00b": "x"}), 400, "invalid_request_error", param="metadata")


@pytest.mark.parametrize(
    ("query", "param"),
    [({"end": "0001-01-05"}, "end"), ({"start": "9999-12-01", "end": "9999-12-31"}, "end")],
)
def test_it_answers_400_for_usage_ranges_at_the_ends_of_the_calendar(
    alice: Tenant, query: dict[str, str], param: str
) -> None:
    # The default start (end - 29 days) or the end of the last day does not exist: OverflowError, a 500.
    assert_error(alice.client.get("/v1/usage", query), 400, "invalid_request_error", param=param)
    assert alice.client.get("/v1/usage", {"start": "0001-01-01", "end": "0001-01-05"}).status_code == 200
    assert alice.client.get("/v1/usage", {"start": "9999-12-01", "end": "9999-12-30"}).status_code == 200


# ---- the API accepted what its schema calls invalid ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"code": 12}, "code"),  # DRF's CharField made "12" of it
        ({"language": 1}, "language"),
        ({"stdin": 1.5}, "stdin"),
        ({"args": [1]}, "args[0]"),
        ({"env": {"A": 1}}, "env.A"),
        ({"metadata": {"a": 1}}, "metadata.a"),
        ({"wait": "yes"}, "wait"),  # DRF's BooleanField took "yes", "0", 1, ...
        ({"stream": 0}, "stream"),
        ({"wait": "false"}, "wait"),
        ({"sources": [{"path": "a.py", "content": "", "mode": "755"}]}, "sources[0].mode"),  # was ignored
        ({"files": [{"file_id": "file-x", "path": "a", "extra": 1}]}, "files[0].extra"),
    ],
)
def test_it_rejects_values_of_the_wrong_json_type_or_unknown_keys(
    alice: Tenant, body: dict[str, Any], param: str
) -> None:
    assert_error(_post_run(alice, **body), 400, "invalid_request_error", param=param)
    assert not Run.objects.exists()


@pytest.mark.parametrize("limit", [" 5", "+5", "5_0", "٥", "05.0", ""])
def test_it_accepts_only_ascii_digits_for_limit(alice: Tenant, limit: str) -> None:
    # int() took all of these but the empty one.
    assert_error(alice.client.get("/v1/runs", {"limit": limit}), 400, "invalid_request_error", param="limit")
    assert alice.client.get("/v1/runs", {"limit": "05"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "param"),
    [("/v1/runs", "status"), ("/v1/runs", "language"), ("/v1/usage", "start"), ("/v1/usage", "end")],
)
def test_it_rejects_an_empty_filter(alice: Tenant, path: str, param: str) -> None:
    # `status=` listed every run although the schema allows only the statuses.
    assert_error(alice.client.get(path, {param: ""}), 400, "invalid_request_error", param=param)


# ---- the schema did not describe the API -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "component"),
    [("/v1/runs", "RunList"), ("/v1/files", "FileList"), ("/v1/runtimes", "RuntimeList"), ("/v1/usage", "UsageReport")],
)
def test_it_documents_list_answers_as_one_object(path: str, component: str) -> None:
    # drf-spectacular had wrapped them in an array (`list` actions), which no answer ever was.
    assert _response_schema(path, "get") == {"$ref": f"#/components/schemas/{component}"}


def test_it_documents_what_a_run_request_may_hold() -> None:
    schemas = _openapi()["components"]["schemas"]
    create = schemas["RunCreateRequest"]
    assert create["additionalProperties"] is False
    for name in ("SourceFileRequest", "InputFileRefRequest", "LimitsRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    assert create["properties"]["limits"]["nullable"] is True  # `"limits": null` means the defaults
    memory = schemas["LimitsRequest"]["properties"]["memory_mb"]
    assert (memory["minimum"], memory["maximum"], memory["nullable"]) == (16, 2048, True)
    languages = schemas["LanguageEnum"]["enum"]
    assert languages[:5] == ["python", "node", "ruby", "php", "go"]  # SPEC's order, then the aliases
    assert {"py", "js", "golang"} <= set(languages[5:])
    assert (create["properties"]["sources"]["maxItems"], create["properties"]["args"]["maxItems"]) == (32, 64)
    metadata = create["properties"]["metadata"]
    assert (metadata["maxProperties"], metadata["additionalProperties"]["maxLength"]) == (16, 512)


def test_it_documents_every_status_an_operation_can_answer() -> None:
    paths = _openapi()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert "429" in operation["responses"], (method, path)  # every key request takes a token
    assert "409" in paths["/v1/files"]["post"]["responses"]  # Idempotency-Key reuse
    for path in ("/v1/runs", "/v1/files"):
        [header] = [p for p in paths[path]["post"]["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["schema"]["maxLength"] == 255


def test_it_documents_a_streamed_run_event_by_event() -> None:
    # Was `type: string`; tools validate each server-sent event against it.
    event = _response_schema("/v1/runs", "post", media_type="text/event-stream")
    assert event["required"] == ["event", "data"]
    assert event["properties"]["event"]["enum"] == ["run.created", "run.started", "run.output", "run.completed"]


def test_it_documents_file_content_as_bytes_of_any_type(alice: Tenant) -> None:
    assert _response_schema("/v1/files/{public_id}/content", "get", media_type="*/*") == {
        "type": "string",
        "format": "binary",
    }
    file = alice.upload(b"<svg/>", filename="a.svg")
    assert alice.client.get(f"/v1/files/{file['id']}/content")["Content-Type"] == "image/svg+xml"


def test_it_documents_the_fields_every_object_has() -> None:
    schemas = _openapi()["components"]["schemas"]
    for name, constant in (("Run", "run"), ("FileObject", "file"), ("RunList", "list"), ("Artifact", "file")):
        assert "object" in schemas[name]["required"], name
        assert schemas[name]["properties"]["object"]["pattern"] == f"^{constant}$", name
    assert set(schemas["Limits"]["required"]) == set(schemas["Limits"]["properties"])  # effective limits: all
    assert "status" in schemas["FileObject"]["required"]
    assert "nullable" not in schemas["Artifact"]["properties"]["expires_at"]  # an artifact link always expires


def test_an_upload_answers_the_documented_file_object(alice: Tenant) -> None:
    response = alice.client.post(
        "/v1/files", {"file": SimpleUploadedFile("a.txt", b"x"), "purpose": "vision"}, format="multipart"
    )
    assert response.status_code == 200
    assert set(response.json()) == set(_openapi()["components"]["schemas"]["FileObject"]["required"])
