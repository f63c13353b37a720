"""The log format itself (codeexec_site/logs.py), record by record; tests/test_observability_live.py
checks what real gunicorn and rundramatiq processes write."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import RequestFactory

from codeexec_site import logs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("codeexec.test-log-format")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream, handler
    finally:
        logger.removeHandler(handler)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_it_writes_the_fields_and_the_bound_context(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    with logs.bound(request_id="req_1", run_id="run_1"):
        logs.bind(key="alice")
        logger.info("hello %s", "world", extra={"status": 200, "duration_ms": 1.5})
    logger.info("after")
    first, second = json_lines(stream)
    assert first["message"] == "hello world" and first["level"] == "INFO"
    assert first["logger"] == "codeexec.test-log-format" and first["time"].endswith("Z")
    assert (first["request_id"], first["run_id"], first["key"]) == ("req_1", "run_1", "alice")
    assert (first["status"], first["duration_ms"]) == (200, 1.5)
    # bound() ends what it and everything inside it bound.
    assert not {"request_id", "run_id", "key"} & set(second)


def test_it_puts_an_exception_on_the_same_line(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("it failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "ERROR"
    assert record["exc_info"].startswith("Traceback") and "ValueError: boom\nsecond line" in record["exc_info"]


def test_it_keeps_objects_out_but_takes_a_requests_id(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    request = RequestFactory().get("/v1/files/file-1/content?signature=secret-signature")
    request.request_id = "req_from_request"
    logger.warning("Forbidden: %s", request.path, extra={"request": request, "status_code": 403})
    (record,) = json_lines(stream)
    assert "secret-signature" not in stream.getvalue()
    assert "request" not in record and record["status_code"] == 403
    assert record["request_id"] == "req_from_request"


def test_its_text_format_is_one_line_per_record_with_the_context(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logs.TextFormatter())
    with logs.bound(run_id="run_9"):
        logger.info("started")
    assert stream.getvalue().rstrip("\n").endswith(" INFO codeexec.test-log-format [run_id=run_9] started")


def test_it_refuses_an_unknown_log_format() -> None:
    env = {"LOG_FORMAT": "xml", "PATH": "/usr/bin:/bin", "DEBUG": "1"}
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='codeexec_site.settings'; django.setup()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "LOG_FORMAT must be 'json' or 'text'" in proc.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOG_FORMAT", "xml")
        with pytest.raises(ValueError, match="LOG_FORMAT"):
            logs.log_format()  # gunicorn's master and Dramatiq's parent, which have no Django
