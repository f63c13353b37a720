"""POST /v1/runs: validation (every error names its param), then real runs through a worker and the sandbox."""

from __future__ import annotations

import re

import pytest
from django.conf import settings

from runs.models import Run
from tests.api import assert_error, url_path
from tests.api.conftest import SMALL_LIMITS

RUN_KEYS = {
    "id",
    "object",
    "created_at",
    "started_at",
    "completed_at",
    "language",
    "runtime_version",
    "status",
    "exit_code",
    "signal",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
    "limits",
    "usage",
    "artifacts",
    "error",
    "metadata",
}
RUN_ID = re.compile(r"^run_[a-z2-7]{24}$")


# ---- validation (no run is executed) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"code": "print(1)", "network": True}, "network", "unknown_parameter"),
        ({"code": "print(1)", "limits": {"memory_mb": 4096}}, "limits.memory_mb", "invalid_value"),
        ({"code": "print(1)", "limits": {"memory_mb": 1}}, "limits.memory_mb", "invalid_value"),
        ({"code": "print(1)", "limits": {"timeout_ms": "fast"}}, "limits.timeout_ms", "invalid_value"),
        ({"code": "print(1)", "limits": {"timeout_ms": True}}, "limits.timeout_ms", "invalid_value"),
        ({"code": "print(1)", "limits": {"pids": 10_000}}, "limits.pids", "invalid_value"),
        ({"code": "print(1)", "limits": {"network": 1}}, "limits.network", "invalid_value"),
        ({"code": "print(1)", "limits": [1, 2]}, "limits", None),
        ({"code": "print(1)", "env": {"LD_PRELOAD": "/tmp/x.so"}}, "env.LD_PRELOAD", "invalid_value"),
        ({"code": "print(1)", "env": {"PYTHONPATH": "/tmp"}}, "env.PYTHONPATH", "invalid_value"),
        ({"code": "print(1)", "env": {"PATH": "/tmp"}}, "env.PATH", "invalid_value"),
        ({"code": "print(1)", "env": {"lower": "x"}}, "env.lower", "invalid_value"),
        ({"code": "print(1)", "sources": [{"path": "../escape.py", "content": ""}]}, "sources[0].path", None),
        ({"code": "print(1)", "sources": [{"path": "/etc/x.py", "content": ""}]}, "sources[0].path", None),
        (
            {
                "code": "print(1)",
                "sources": [{"path": "ok.py", "content": ""}, {"path": "a/../../b.py", "content": ""}],
            },
            "sources[1].path",
            None,
        ),
        ({"code": "print(1)", "files": [{"file_id": "file-x", "path": "../x"}]}, "files[0].path", None),
        ({"code": "print(1)", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", None),
        ({"code": "print(1)", "metadata": {"k" * 65: "v"}}, "metadata", None),
        ({"code": "print(1)", "metadata": {"note": "x" * 513}}, "metadata.note", None),
        ({"code": "print(1)", "metadata": "text"}, "metadata", None),
    ],
)
def test_it_rejects_invalid_fields_naming_the_param(alice, body, param, code) -> None:
    response = alice.client.post("/v1/runs", {"language": "python", "wait": False, **body}, format="json")
    assert_error(response, 400, "invalid_request_error", param=param, code=code)
    assert not Run.objects.exists()


def test_it_names_the_index_of_a_bad_argument(alice) -> None:
    response = alice.post_run(code="print(1)", wait=False, args=["ok", "a\x00b"])
    # Lists are indexed like files[0].file_id and sources[0].path elsewhere.
    assert_error(response, 400, "invalid_request_error", param="args[1]")


def test_it_rejects_too_many_arguments(alice) -> None:
    response = alice.post_run(code="print(1)", wait=False, args=["x"] * 10_000)
    assert_error(response, 400, "invalid_request_error", param="args")


def test_it_requires_a_language(alice) -> None:
    response = alice.client.post("/v1/runs", {"code": "print(1)"}, format="json")
    assert_error(response, 400, "invalid_request_error", param="language")


def test_it_requires_code(alice) -> None:
    response = alice.client.post("/v1/runs", {"language": "python"}, format="json")
    assert_error(response, 400, "invalid_request_error", param="code")


def test_it_rejects_an_unknown_language(alice) -> None:
    response = alice.post_run(language="cobol", code="DISPLAY 'HI'.")
    error = assert_error(response, 400, "invalid_request_error", param="language", code="invalid_value")
    assert "python" in error["message"]


def test_it_rejects_a_source_that_clashes_with_the_entry_file(alice) -> None:
    response = alice.post_run(code="print(1)", wait=False, sources=[{"path": "main.py", "content": "print(2)"}])
    assert_error(response, 400, "invalid_request_error", param="sources[0].path")


def test_it_rejects_a_source_under_outputs(alice) -> None:
    response = alice.post_run(code="print(1)", wait=False, sources=[{"path": "outputs/x.py", "content": ""}])
    assert_error(response, 400, "invalid_request_error", param="sources[0].path")


def test_it_rejects_duplicate_input_paths(alice) -> None:
    file = alice.upload(b"a,b\n")
    response = alice.post_run(
        code="print(1)",
        wait=False,
        files=[{"file_id": file["id"], "path": "in.csv"}, {"file_id": file["id"], "path": "IN.csv"}],
    )
    assert_error(response, 400, "invalid_request_error", param="files[1].path")


def test_it_rejects_an_input_path_below_another_input_file(alice) -> None:
    first, second = alice.upload(b"a,b\n"), alice.upload(b"c,d\n")
    response = alice.post_run(
        code="print(1)",
        wait=False,
        files=[{"file_id": first["id"], "path": "data"}, {"file_id": second["id"], "path": "data/in.csv"}],
    )
    error = assert_error(response, 400, "invalid_request_error")
    assert error["param"] is not None and error["param"].startswith("files")


def test_it_rejects_an_unknown_file_id(alice) -> None:
    response = alice.post_run(code="print(1)", wait=False, files=[{"file_id": "file-nope", "path": "x"}])
    assert_error(response, 404, "invalid_request_error", param="files[0].file_id", code="not_found")


def test_it_validates_ownership_of_input_files(alice, bob) -> None:
    mine = alice.upload(b"mine")
    theirs = bob.upload(b"secret")
    response = alice.post_run(
        code="print(1)",
        wait=False,
        files=[{"file_id": mine["id"], "path": "a"}, {"file_id": theirs["id"], "path": "b"}],
    )
    error = assert_error(response, 404, "invalid_request_error", param="files[1].file_id", code="not_found")
    assert "secret" not in error["message"]
    assert not Run.objects.exists()


def test_it_rejects_code_above_the_size_cap(alice) -> None:
    code = "#" * (settings.MAX_CODE_BYTES + 1)
    response = alice.post_run(code=code, wait=False)
    assert_error(response, 413, "invalid_request_error", param="code", code="request_too_large")
    assert not Run.objects.exists()


def test_it_accepts_code_exactly_at_the_size_cap(alice) -> None:
    code = "#" * settings.MAX_CODE_BYTES
    response = alice.post_run(code=code, wait=False)
    assert response.status_code == 202, response.content


def test_it_counts_the_code_cap_in_bytes(alice, settings) -> None:
    settings.MAX_CODE_BYTES = 10
    response = alice.post_run(code="#" + "é" * 5, wait=False)  # 6 characters, 11 bytes
    assert_error(response, 413, "invalid_request_error", param="code")


def test_it_rejects_a_body_above_the_request_cap_from_content_length(alice, settings) -> None:
    settings.MAX_REQUEST_BYTES = 2048
    response = alice.client.post("/v1/runs", {"language": "python", "code": "#" * 4096, "wait": False}, format="json")
    assert_error(response, 413, "invalid_request_error", code="request_too_large")
    assert response["x-request-id"]
    assert not Run.objects.exists()


def test_it_rejects_a_body_that_is_not_json(alice) -> None:
    response = alice.client.post("/v1/runs", "language=python&code=print(1)", content_type="text/plain")
    assert_error(response, 415, "invalid_request_error", code="unsupported_media_type")


def test_it_rejects_form_encoded_bodies(alice) -> None:
    response = alice.client.post("/v1/runs", {"language": "python", "code": "print(1)"}, format="multipart")
    assert_error(response, 415, "invalid_request_error")
    assert not Run.objects.exists()


def test_it_rejects_malformed_json(alice) -> None:
    response = alice.client.post("/v1/runs", '{"language": "python",', content_type="application/json")
    assert_error(response, 400, "invalid_request_error", code="invalid_json")


def test_it_rejects_a_json_body_that_is_not_an_object(alice) -> None:
    response = alice.client.post("/v1/runs", [1, 2], format="json")
    assert_error(response, 400, "invalid_request_error")


def test_it_queues_a_run_without_waiting(alice) -> None:
    response = alice.post_run(code="print(1)", wait=False)
    assert response.status_code == 202, response.content
    run = response.json()
    assert set(run) == RUN_KEYS
    assert run["object"] == "run"
    assert run["status"] == "queued"
    assert RUN_ID.match(run["id"]), run["id"]
    assert isinstance(run["created_at"], int)
    assert run["started_at"] is None and run["completed_at"] is None
    assert run["exit_code"] is None and run["error"] is None and run["artifacts"] == []
    assert Run.objects.get(public_id=run["id"]).owner_id == alice.key.pk


def test_it_answers_202_when_the_server_wait_is_zero(alice, settings) -> None:
    settings.RUN_WAIT_MAX_S = 0
    response = alice.post_run(code="print(1)", wait=True)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"


def test_it_gives_opaque_unique_ids(alice) -> None:
    ids = [alice.post_run(code="print(1)", wait=False).json()["id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(RUN_ID.match(i) for i in ids)
    pks = {str(pk) for pk in Run.objects.values_list("pk", flat=True)}
    assert not any(i.removeprefix("run_") in pks for i in ids)


def test_it_resolves_language_aliases(alice) -> None:
    for alias, name in (("py", "python"), ("python3", "python"), ("js", "node"), ("golang", "go"), ("rb", "ruby")):
        response = alice.post_run(language=alias, code="x", wait=False)
        assert response.status_code == 202, (alias, response.content)
        assert response.json()["language"] == name


def test_it_returns_the_effective_limits(alice) -> None:
    run = alice.post_run(code="print(1)", wait=False, limits={"timeout_ms": 3000, "memory_mb": 128}).json()
    limits = run["limits"]
    assert limits["timeout_ms"] == 3000
    assert limits["cpu_ms"] == 3000  # follows timeout_ms when not given
    assert limits["memory_mb"] == 128
    assert limits["pids"] == settings.LIMITS_DEFAULT.pids
    assert limits["max_output_bytes"] == settings.LIMITS_DEFAULT.max_output_bytes
    assert set(limits) == set(settings.LIMITS_DEFAULT.as_dict())


def test_it_takes_server_defaults_for_omitted_limits(alice) -> None:
    run = alice.client.post("/v1/runs", {"language": "python", "code": "1", "wait": False}, format="json").json()
    assert run["limits"] == settings.LIMITS_DEFAULT.as_dict()


def test_it_echoes_metadata(alice) -> None:
    metadata = {"user": "u-42", "purpose": "lesson 3", "empty": ""}
    run = alice.post_run(code="print(1)", wait=False, metadata=metadata).json()
    assert run["metadata"] == metadata
    assert alice.get_run(run["id"])["metadata"] == metadata


# ---- real runs ------------------------------------------------------------------------------------

HELLO = {
    "python": ("print('hello')", "hello\n"),
    "node": ("console.log('hello')", "hello\n"),
    "ruby": ("puts 'hello'", "hello\n"),
    "php": ('<?php echo "hello\\n";', "hello\n"),
    "go": ('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n', "hello\n"),
}


@pytest.mark.django_db(transaction=True)
def test_it_runs_python_and_waits_for_the_result(alice, worker) -> None:
    response = alice.post_run(code="print(1+1)")
    assert response.status_code == 200, response.content
    run = response.json()
    assert set(run) == RUN_KEYS
    assert run["status"] == "succeeded", run
    assert run["stdout"] == "2\n"
    assert run["stderr"] == ""
    assert run["exit_code"] == 0 and run["signal"] is None and run["error"] is None
    assert run["runtime_version"] and re.match(r"^\d+\.\d+", run["runtime_version"])
    for field in ("created_at", "started_at", "completed_at"):
        assert isinstance(run[field], int), (field, run[field])
    assert run["created_at"] <= run["started_at"] <= run["completed_at"]
    usage = run["usage"]
    assert set(usage) == {"wall_ms", "cpu_ms", "memory_peak_bytes", "output_bytes", "artifact_bytes"}
    assert usage["output_bytes"] == 2
    assert isinstance(usage["wall_ms"], int) and usage["wall_ms"] >= 0
    assert alice.get_run(run["id"]) == run


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("language", sorted(HELLO))
def test_it_runs_every_language(alice, worker, language) -> None:
    code, expected = HELLO[language]
    response = alice.post_run(language=language, code=code)
    assert response.status_code == 200, response.content
    run = response.json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    assert run["stdout"] == expected
    assert run["language"] == language
    assert run["runtime_version"]


@pytest.mark.django_db(transaction=True)
def test_it_passes_stdin_args_env_and_sources(alice, worker) -> None:
    code = (
        "import os, sys, util\n"
        "print(sys.stdin.read().upper())\n"
        "print(sys.argv[1:])\n"
        "print(os.environ['GREETING'])\n"
        "print(util.double(21))\n"
        "print(os.getcwd())\n"
    )
    run = alice.post_run(
        code=code,
        stdin="quiet",
        args=["a", "b c"],
        env={"GREETING": "hi"},
        sources=[{"path": "util.py", "content": "def double(x):\n    return 2 * x\n"}],
    ).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    assert run["stdout"] == "QUIET\n['a', 'b c']\nhi\n42\n/work\n"


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_failed_program(alice, worker) -> None:
    run = alice.post_run(code="import sys\nprint('bye', file=sys.stderr)\nsys.exit(3)").json()
    assert run["status"] == "failed"
    assert run["exit_code"] == 3
    assert run["stderr"] == "bye\n"
    assert run["error"] is None


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_go_compile_error(alice, worker) -> None:
    run = alice.post_run(language="go", code="package main\n\nfunc main() { undefined() }\n").json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == "compile_error"
    assert "undefined" in run["stderr"]


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_timeout(alice, worker) -> None:
    run = alice.post_run(code="while True:\n    pass\n", limits={**SMALL_LIMITS, "timeout_ms": 1000}).json()
    assert run["status"] == "timeout", run
    assert run["error"]["code"] in ("wall_timeout", "cpu_timeout")
    assert run["exit_code"] is None or run["exit_code"] != 0


@pytest.mark.django_db(transaction=True)
def test_it_finishes_a_queued_run_later(alice, worker) -> None:
    response = alice.post_run(code="print('later')", wait=False)
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    run = alice.wait_run(response.json()["id"])
    assert run["status"] == "succeeded"
    assert run["stdout"] == "later\n"


@pytest.mark.django_db(transaction=True)
def test_it_returns_artifacts_with_a_content_url(alice, bob, worker) -> None:
    code = (
        "import os\n"
        "os.makedirs('outputs/sub', exist_ok=True)\n"
        "open('outputs/report.txt', 'w').write('hello artifact')\n"
        "open('outputs/sub/data.bin', 'wb').write(bytes(range(256)))\n"
    )
    run = alice.post_run(code=code).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    by_path = {a["path"]: a for a in run["artifacts"]}
    assert set(by_path) == {"outputs/report.txt", "outputs/sub/data.bin"}
    report = by_path["outputs/report.txt"]
    assert report["object"] == "file"
    assert report["id"].startswith("file-")
    assert report["filename"] == "report.txt"
    assert report["bytes"] == len(b"hello artifact")
    assert report["content_type"].startswith("text/plain")
    assert run["usage"]["artifact_bytes"] == len(b"hello artifact") + 256

    content = alice.client.get(url_path(report["url"]))
    assert content.status_code == 200
    assert b"".join(content.streaming_content) == b"hello artifact"
    binary = alice.client.get(url_path(by_path["outputs/sub/data.bin"]["url"]))
    assert b"".join(binary.streaming_content) == bytes(range(256))

    # The signed link is a bearer link; the plain content path still answers only to the owner.
    assert_error(bob.client.get(f"/v1/files/{report['id']}/content"), 404, "invalid_request_error")
    listed = alice.client.get("/v1/files", {"purpose": "run_artifact"}).json()
    assert {f["id"] for f in listed["data"]} == {a["id"] for a in run["artifacts"]}

    def stable(artifacts: list[dict]) -> list[dict]:  # links are minted afresh on every read
        return [{k: v for k, v in a.items() if k not in ("url", "expires_at")} for a in artifacts]

    assert stable(alice.get_run(run["id"])["artifacts"]) == stable(run["artifacts"])


@pytest.mark.django_db(transaction=True)
def test_it_stages_uploaded_files_as_inputs(alice, worker) -> None:
    data = b"name,score\nada,3\n"
    file = alice.upload(data, filename="scores.csv")
    code = (
        "import os\n"
        "print(open('/work/inputs/data/in.csv').read(), end='')\n"
        "print(os.access('/work/inputs/data/in.csv', os.W_OK))\n"
    )
    run = alice.post_run(code=code, files=[{"file_id": file["id"], "path": "data/in.csv"}]).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    assert run["stdout"] == data.decode() + "False\n"


@pytest.mark.django_db(transaction=True)
def test_it_stages_one_file_at_two_paths(alice, worker) -> None:
    file = alice.upload(b"same bytes", filename="a.txt")
    code = "print(open('/work/inputs/a.txt').read(), open('/work/inputs/copy/b.txt').read())"
    run = alice.post_run(
        code=code,
        files=[{"file_id": file["id"], "path": "a.txt"}, {"file_id": file["id"], "path": "copy/b.txt"}],
    ).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    assert run["stdout"] == "same bytes same bytes\n"


@pytest.mark.django_db(transaction=True)
def test_it_caps_output_per_stream_and_says_so(alice, worker) -> None:
    code = "import sys\nprint('x' * 1000)\nprint('y' * 5, file=sys.stderr)\n"
    run = alice.post_run(code=code, limits={**SMALL_LIMITS, "max_output_bytes": 100}).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    assert run["stdout_truncated"] is True
    assert 0 < len(run["stdout"].encode()) <= 100
    assert set(run["stdout"]) == {"x"}
    assert run["stderr"] == "yyyyy\n"
    assert run["stderr_truncated"] is False


@pytest.mark.django_db(transaction=True)
def test_it_replaces_invalid_utf8_in_output(alice, worker) -> None:
    run = alice.post_run(code="import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')\n").json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    assert run["stdout"].startswith("ok ")
    assert run["stdout"].endswith(" end\n")
    assert "\ufffd" in run["stdout"]
