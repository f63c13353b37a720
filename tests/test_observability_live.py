"""Observability of a real stack (tests/live.py: gunicorn with two workers and access log on, plus
`manage.py rundramatiq`), at LOG_LEVEL=DEBUG so that every logger has its say:

- every line either process writes to stdout or stderr is one JSON object with time, level, logger
  and message: gunicorn's own lines, Dramatiq's parent and worker processes, the service's;
- a request's lines carry the id answered in x-request-id, the run's id and the key's label; the
  worker's lines carry the run id;
- neither the key's token, nor the run's code, stdin or output, nor an uploaded file's content, nor a
  signed link's signature appears anywhere;
- an exception inside a request is one line with `exc_info`, and the client gets the 500 envelope;
- /metrics of the web counts what the worker process did.

Uploads fail on purpose: STORAGE_DIR lies under a regular file, so storing one raises an OSError
inside the view (the run below has no artifacts, so it needs no storage).
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tests.live
from tests.live import LiveStack, live_stack

LABEL = "obs-logger"
CODE_MARKER = "codemarker" + uuid.uuid4().hex[:12]
STDIN_MARKER = "stdinmarker" + uuid.uuid4().hex[:12]
OUTPUT_PARTS = ("outputmarker", uuid.uuid4().hex[:12])  # joined only by the program: not in its code
OUTPUT_MARKER = "".join(OUTPUT_PARTS)
FILE_MARKER = "filemarker" + uuid.uuid4().hex[:12]
SIGNATURE_MARKER = "sigmarker" + uuid.uuid4().hex[:12]
WRONG_TOKEN = "cx_wrongtoken" + uuid.uuid4().hex[:12]
CLIENT_REQUEST_ID = "client-req-" + uuid.uuid4().hex[:8]


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = call(f"{url}/metrics")
    assert answer.status == 200, answer.body[:300]
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.body.decode())
        for s in family.samples
    }


@dataclasses.dataclass
class Observed:
    token: str
    run: dict[str, Any]
    run_request_id: str
    client_request_id_echoed: str
    error: Answer
    bad_token: Answer
    signed: Answer
    metrics_before: dict[tuple[str, frozenset[tuple[str, str]]], float]
    metrics_after: dict[tuple[str, frozenset[tuple[str, str]]], float]
    web_text: str
    worker_text: str

    def lines(self, which: str) -> list[dict[str, Any]]:
        text = self.web_text if which == "web" else self.worker_text
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _exercise(stack: LiveStack, token: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    before = scrape(stack.url)
    code = f"# {CODE_MARKER}\nimport sys\ndata = sys.stdin.read()\nprint({OUTPUT_PARTS[0]!r} + {OUTPUT_PARTS[1]!r})\n"
    body = json.dumps({"language": "python", "code": code, "stdin": STDIN_MARKER}).encode()
    created = call(f"{stack.url}/v1/runs", "POST", body, {**auth, "Content-Type": "application/json"})
    assert created.status == 200, created.body[:500]
    run = created.json()
    assert run["status"] == "succeeded" and run["stdout"] == OUTPUT_MARKER + "\n", run

    read = call(f"{stack.url}/v1/runs/{run['id']}", headers={**auth, "X-Request-Id": CLIENT_REQUEST_ID})
    assert read.status == 200

    boundary = "obsboundary"
    upload = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="data.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n{FILE_MARKER}\r\n--{boundary}--\r\n"
    ).encode()
    error = call(
        f"{stack.url}/v1/files", "POST", upload, {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    bad_token = call(f"{stack.url}/v1/runs", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    signed = call(f"{stack.url}/v1/files/file-nosuchfile/content?expires=9999999999&signature={SIGNATURE_MARKER}")

    succeeded = ("codeexec_runs_total", frozenset({("status", "succeeded"), ("language", "python")}))
    answered = (
        "codeexec_http_request_duration_seconds_count",
        frozenset({("method", "POST"), ("route", "run-list"), ("status", "200")}),
    )
    after = scrape(stack.url)
    # The worker records before it announces the end, and a waiter may reread the row first; the web
    # process records a request once its answer has gone out: both may come a moment after the answer.
    for _ in range(50):
        if all(after.get(key, 0) > before.get(key, 0) for key in (succeeded, answered)):
            break
        time.sleep(0.1)
        after = scrape(stack.url)
    return {
        "run": run,
        "run_request_id": created.headers["x-request-id"],
        "client_request_id_echoed": read.headers["x-request-id"],
        "error": error,
        "bad_token": bad_token,
        "signed": signed,
        "metrics_before": before,
        "metrics_after": after,
    }


@pytest.fixture(scope="module")
def observed(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    from runs.models import ApiKey, Run

    not_a_dir = tmp_path_factory.mktemp("observability") / "a-regular-file"
    not_a_dir.write_text("")
    extra_env = {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "STORAGE_DIR": str(not_a_dir / "storage"),
        "GUNICORN_CMD_ARGS": "--access-logfile -",
    }
    with django_db_blocker.unblock():
        key, token = ApiKey.create_with_token(LABEL)
    try:
        with pytest.MonkeyPatch.context() as mp:
            options = list(tests.live.GUNICORN_OPTIONS)
            options[options.index("--workers") + 1] = "2"  # two web processes, one view in /metrics
            mp.setattr(tests.live, "GUNICORN_OPTIONS", options)
            with live_stack(django_db_blocker, "observability", extra_env) as stack:
                stack.redis().delete(f"codeexec:bucket:key:{key.pk}")
                results = _exercise(stack, token)
                stack.check_alive()
                web_log, worker_log = stack.web_log, stack.worker_log
        # The stack is stopped: the logs are complete, shutdown lines included.
        yield Observed(
            token=token,
            web_text=Path(web_log).read_text(errors="replace"),
            worker_text=Path(worker_log).read_text(errors="replace"),
            **results,
        )
    finally:
        with django_db_blocker.unblock():
            Run.objects.filter(owner=key).delete()
            key.delete()


# ---- the format -------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["web", "worker"])
def test_it_writes_one_json_object_per_line(observed: Observed, which: str) -> None:
    text = observed.web_text if which == "web" else observed.worker_text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, f"the {which} wrote nothing"
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"a {which} line is not JSON: {line[:300]!r}")
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= set(record), line


def test_its_servers_own_lines_are_json_too(observed: Observed) -> None:
    web = {r["logger"] for r in observed.lines("web")}
    worker = {r["logger"] for r in observed.lines("worker")}
    assert {"gunicorn.error", "gunicorn.access", "codeexec.request"} <= web, web
    assert {"codeexec.rundramatiq", "dramatiq.MainProcess", "codeexec.runs"} <= worker, worker
    assert any(r["logger"].startswith("dramatiq.WorkerProcess") for r in observed.lines("worker")), worker


# ---- context ------------------------------------------------------------------------------------------


def test_a_request_line_carries_the_request_id_the_response_named(observed: Observed) -> None:
    assert observed.run_request_id.startswith("req_")
    lines = [r for r in observed.lines("web") if r.get("request_id") == observed.run_request_id]
    request_lines = [r for r in lines if r["logger"] == "codeexec.request"]
    assert len(request_lines) == 1, lines
    line = request_lines[0]
    assert (line["method"], line["path"], line["route"], line["status"]) == ("POST", "/v1/runs", "run-list", 200)
    assert line["run_id"] == observed.run["id"]
    assert line["key"] == LABEL
    # gunicorn's access line names the request by the same id.
    access = [r for r in observed.lines("web") if r["logger"] == "gunicorn.access"]
    assert any(r.get("request_id") == observed.run_request_id and r.get("status") == 200 for r in access), access


def test_a_clients_request_id_is_kept(observed: Observed) -> None:
    assert observed.client_request_id_echoed == CLIENT_REQUEST_ID
    lines = [r for r in observed.lines("web") if r.get("request_id") == CLIENT_REQUEST_ID]
    assert any(r["logger"] == "codeexec.request" and r["run_id"] == observed.run["id"] for r in lines), lines


def test_a_worker_line_carries_the_run_id(observed: Observed) -> None:
    lines = [r for r in observed.lines("worker") if r.get("run_id") == observed.run["id"]]
    assert any(r["message"].endswith("ended: succeeded") and r["key"] == LABEL for r in lines), lines
    assert any("started" in r["message"] for r in lines), lines


# ---- what never appears -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    ["token", "wrong token", "code", "stdin", "output", "uploaded file", "signature"],
)
def test_it_never_logs_secrets_or_user_data(observed: Observed, secret: str) -> None:
    value = {
        "token": observed.token,
        "wrong token": WRONG_TOKEN,
        "code": CODE_MARKER,
        "stdin": STDIN_MARKER,
        "output": OUTPUT_MARKER,
        "uploaded file": FILE_MARKER,
        "signature": SIGNATURE_MARKER,
    }[secret]
    assert value not in observed.web_text
    assert value not in observed.worker_text


def test_it_logs_the_key_label_and_the_requests_that_carried_secrets(observed: Observed) -> None:
    assert LABEL in observed.web_text and LABEL in observed.worker_text
    assert observed.bad_token.status == 401
    assert observed.signed.status in (403, 404)
    paths = {r.get("path") for r in observed.lines("web") if r["logger"] == "codeexec.request"}
    assert "/v1/files/file-nosuchfile/content" in paths  # logged, without its query string


# ---- an exception inside a request ----------------------------------------------------------------------


def test_an_exception_is_one_line_with_its_traceback_and_the_client_gets_the_envelope(observed: Observed) -> None:
    error = observed.error
    assert error.status == 500, error.body[:500]
    assert error.json() == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    request_id = error.headers["x-request-id"]
    lines = [r for r in observed.lines("web") if r.get("request_id") == request_id and r.get("exc_info")]
    assert lines, [r for r in observed.lines("web") if r.get("request_id") == request_id]
    exc_info = lines[0]["exc_info"]
    assert isinstance(exc_info, str) and exc_info.startswith("Traceback")
    assert "NotADirectoryError" in exc_info
    assert lines[0]["level"] == "ERROR" and lines[0]["key"] == LABEL
    # Django's own line about the 500, written after the middleware returned, names the request too.
    django_lines = [
        r for r in observed.lines("web") if r["logger"] == "django.request" and r.get("request_id") == request_id
    ]
    assert [r["level"] for r in django_lines] == ["ERROR"], django_lines


# ---- /metrics across processes ------------------------------------------------------------------------


def test_the_webs_metrics_count_what_the_worker_process_did(observed: Observed) -> None:
    before, after = observed.metrics_before, observed.metrics_after

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("codeexec_runs_total", status="succeeded", language="python") == 1
    assert delta("codeexec_run_duration_seconds_count", language="python") == 1
    assert delta("codeexec_run_queue_wait_seconds_count") == 1
    assert delta("codeexec_http_request_duration_seconds_count", method="POST", route="run-list", status="200") == 1
    assert delta("codeexec_http_request_duration_seconds_count", method="POST", route="file-list", status="500") == 1
    assert after[("codeexec_workers", frozenset({("backend_ok", "true")}))] >= 1
