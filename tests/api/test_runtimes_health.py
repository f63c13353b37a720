"""GET /v1/runtimes, /healthz, /readyz and the OpenAPI schema at /v1/openapi.json."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema

from runs import redis as cx_redis
from sandbox import all_languages
from tests.api import assert_error

# ---- /healthz and /readyz ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_says_the_process_is_alive(anonymous) -> None:
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["x-request-id"]


@pytest.mark.django_db(transaction=True)
def test_it_is_ready_with_a_healthy_worker(anonymous, ready_worker) -> None:
    response = anonymous.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "broker": "ok", "sandbox": "ok"}


@pytest.mark.django_db
def test_it_is_not_ready_without_a_worker(anonymous, no_worker) -> None:
    response = anonymous.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert body["checks"]["sandbox"].startswith("error")


@pytest.mark.django_db
def test_it_is_not_ready_when_the_worker_reports_a_broken_sandbox(anonymous, no_worker, settings) -> None:
    payload = {
        "worker_id": "elsewhere:1",
        "backend": settings.SANDBOX_BACKEND,
        "ok": False,
        "error": "bwrap: setting up uid map: Permission denied",
        "versions": {},
        "at": 0,
        "running": 0,
    }
    cx_redis.write_heartbeat("elsewhere:1", payload, 30)
    response = anonymous.get("/readyz")
    assert response.status_code == 503
    assert "Permission denied" in response.json()["checks"]["sandbox"]


@pytest.mark.django_db
def test_it_is_not_ready_when_redis_is_unreachable(anonymous, no_worker, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    cx_redis.client.cache_clear()
    try:
        response = anonymous.get("/readyz")
    finally:
        cx_redis.client.cache_clear()
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")


# ---- /v1/runtimes -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_lists_the_runtimes_the_worker_reported(alice, ready_worker) -> None:
    response = alice.client.get("/v1/runtimes")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "list"
    by_name = {r["language"]: r for r in body["data"]}
    assert set(by_name) == {"python", "node", "ruby", "php", "go"}
    for runtime in body["data"]:
        assert set(runtime) == {"object", "language", "version", "aliases", "entry_file", "compiled", "packages"}
        assert runtime["object"] == "runtime"
        assert re.match(r"^\d+\.\d+", runtime["version"]), runtime
    python = by_name["python"]
    assert python["entry_file"] == "main.py"
    assert "py" in python["aliases"]
    assert python["compiled"] is False
    assert {"numpy", "pandas", "matplotlib"} <= set(python["packages"])
    assert by_name["go"]["compiled"] is True
    assert by_name["go"]["entry_file"] == "main.go"
    assert by_name["node"]["entry_file"] == "main.js"
    expected = {lang.name: lang.entry_file for lang in all_languages()}
    assert {name: r["entry_file"] for name, r in by_name.items()} == expected


@pytest.mark.django_db(transaction=True)
def test_it_reports_the_versions_that_really_run(alice, ready_worker) -> None:
    runtimes = {r["language"]: r["version"] for r in alice.client.get("/v1/runtimes").json()["data"]}
    probes = {
        "python": "import platform; print(platform.python_version())",
        "node": "console.log(process.versions.node)",
        "ruby": "puts RUBY_VERSION",
        "php": '<?php echo PHP_VERSION, "\\n";',
    }
    for language, code in probes.items():
        run = alice.post_run(language=language, code=code).json()
        assert run["status"] == "succeeded", (language, run["stderr"], run["error"])
        assert runtimes[language] in run["stdout"].strip(), (language, runtimes[language], run["stdout"])
        assert run["runtime_version"] == runtimes[language]


@pytest.mark.django_db
def test_it_answers_503_for_runtimes_without_a_worker(alice, no_worker) -> None:
    response = alice.client.get("/v1/runtimes")
    assert_error(response, 503, "server_error", code="no_worker_available")
    assert int(response["Retry-After"]) >= 1


@pytest.mark.django_db
def test_it_ignores_workers_of_another_backend(alice, anonymous, no_worker, settings) -> None:
    other = "docker" if settings.SANDBOX_BACKEND == "bwrap" else "bwrap"
    payload = {
        "worker_id": "other:1",
        "backend": other,
        "ok": True,
        "error": "",
        "versions": {"python": "9.9.9"},
        "at": 0,
        "running": 0,
    }
    cx_redis.write_heartbeat("other:1", payload, 30)
    assert_error(alice.client.get("/v1/runtimes"), 503, "server_error")
    assert anonymous.get("/readyz").status_code == 503


# ---- OpenAPI ----------------------------------------------------------------------------------------


def _v1_routes() -> set[tuple[str, str]]:
    """(method, templated path) of every /v1 route the URLconf really serves, from the router's viewsets."""
    routes: set[tuple[str, str]] = set()

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                path = prefix + str(p.pattern)
                actions = getattr(p.callback, "actions", None)
                if not path.startswith("v1/") or not actions:
                    continue
                path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path).replace("^", "").replace("$", "")
                routes.update((method.lower(), "/" + path) for method in actions if method.lower() != "head")

    walk(get_resolver().url_patterns, "")
    return routes


@pytest.fixture
def schema(anonymous) -> dict:
    response = anonymous.get("/v1/openapi.json", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.mark.django_db
def test_it_serves_a_valid_openapi_schema_without_a_key(schema) -> None:
    validate_schema(schema)  # raises on an invalid OpenAPI 3 document
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


@pytest.mark.django_db
def test_it_serves_json_at_the_json_url(anonymous) -> None:
    for accept in (None, "*/*"):
        response = anonymous.get("/v1/openapi.json", **({"HTTP_ACCEPT": accept} if accept else {}))
        assert response.status_code == 200
        assert "json" in response["Content-Type"], (accept, response["Content-Type"])
        assert json.loads(response.content)["openapi"].startswith("3.")


@pytest.mark.django_db
def test_it_documents_every_endpoint(schema) -> None:
    documented = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    served = _v1_routes()
    assert len(served) >= 11
    assert served <= documented, served - documented
    for expected in [
        ("post", "/v1/runs"),
        ("get", "/v1/runs"),
        ("get", "/v1/runs/{public_id}"),
        ("delete", "/v1/runs/{public_id}"),
        ("post", "/v1/runs/{public_id}/cancel"),
        ("post", "/v1/files"),
        ("get", "/v1/files"),
        ("get", "/v1/files/{public_id}"),
        ("delete", "/v1/files/{public_id}"),
        ("get", "/v1/files/{public_id}/content"),
        ("get", "/v1/runtimes"),
    ]:
        assert expected in documented, expected


@pytest.mark.django_db
def test_it_documents_the_statuses_the_api_answers(schema) -> None:
    paths = schema["paths"]
    assert {"200", "202", "400", "401", "413"} <= set(paths["/v1/runs"]["post"]["responses"])
    assert "409" in paths["/v1/runs/{public_id}/cancel"]["post"]["responses"]
    assert "409" in paths["/v1/runs/{public_id}"]["delete"]["responses"]
    assert "200" in paths["/v1/files/{public_id}"]["delete"]["responses"]  # 200 with a body, never 204
    assert "204" not in paths["/v1/files/{public_id}"]["delete"]["responses"]
    assert "200" in paths["/v1/files"]["post"]["responses"]
    assert "multipart/form-data" in paths["/v1/files"]["post"]["requestBody"]["content"]
    error_ref = paths["/v1/runs"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    error = schema["components"]["schemas"][error_ref.rsplit("/", 1)[1]]
    assert "error" in error["properties"]


@pytest.mark.django_db
def test_it_documents_415_for_non_json_run_requests(schema) -> None:
    assert "415" in schema["paths"]["/v1/runs"]["post"]["responses"]


@pytest.mark.django_db
def test_it_documents_401_on_every_authenticated_operation(schema) -> None:
    missing = [
        f"{method.upper()} {path}"
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if "401" not in op["responses"]
    ]
    assert missing == []


@pytest.mark.django_db
def test_it_documents_the_run_object(schema) -> None:
    components = schema["components"]["schemas"]
    run = components["Run"]["properties"]
    for field in (
        "id",
        "object",
        "created_at",
        "status",
        "stdout",
        "stderr",
        "limits",
        "usage",
        "artifacts",
        "error",
        "metadata",
        "exit_code",
        "runtime_version",
    ):
        assert field in run, field
    status = run["status"]
    if "$ref" in status:
        status = components[status["$ref"].rsplit("/", 1)[1]]
    statuses = status["enum"]
    assert set(statuses) == {"queued", "running", "succeeded", "failed", "timeout", "oom", "cancelled", "error"}
    create = components["RunCreateRequest"]["properties"]
    assert {"language", "code", "sources", "stdin", "args", "env", "files", "limits", "wait", "metadata"} <= set(create)
