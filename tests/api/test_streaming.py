"""`stream: true` read over a real HTTP connection from a live server, with a real worker: event order,
output as it is produced, the caps, text split between reads, a client that hangs up."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from runs import redis as cx_redis
from tests.api.conftest import SMALL_LIMITS, Tenant, make_tenant


@pytest.fixture
def tenant(transactional_db: None) -> Tenant:
    return make_tenant("streamer")


class EventStream:
    """A POST /v1/runs with stream: true, read event by event as the bytes arrive."""

    def __init__(self, server_url: str, token: str, body: dict[str, Any]) -> None:
        parts = urlsplit(server_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        payload = json.dumps({"language": "python", "limits": dict(SMALL_LIMITS), **body, "stream": True})
        self.conn.request(
            "POST",
            "/v1/runs",
            body=payload,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        self.response = self.conn.getresponse()

    def events(self) -> list[tuple[str, Any, float]]:
        """(event, data, monotonic time received) until the stream ends."""
        found: list[tuple[str, Any, float]] = []
        name, data_lines = "", []
        while True:
            raw = self.response.readline()
            if not raw:
                return found
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data_lines.append(line[len("data: ") :])
            elif line == "" and name:
                found.append((name, json.loads("\n".join(data_lines)), time.monotonic()))
                name, data_lines = "", []

    def close(self) -> None:
        self.conn.close()


def _stream(
    live_server: Any, tenant: Tenant, **body: Any
) -> tuple[http.client.HTTPResponse, list[tuple[str, Any, float]]]:
    stream = EventStream(live_server.url, tenant.token, body)
    try:
        return stream.response, stream.events()
    finally:
        stream.close()


def _joined(events: list[tuple[str, Any, float]], which: str) -> str:
    return "".join(data["data"] for name, data, _t in events if name == "run.output" and data["stream"] == which)


def test_it_streams_the_events_in_order(live_server: Any, worker: Any, tenant: Tenant) -> None:
    code = "import sys\nprint('one', flush=True)\nprint('err', file=sys.stderr, flush=True)\nprint('two')\n"
    response, events = _stream(live_server, tenant, code=code)
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.getheader("Cache-Control") == "no-cache"
    names = [name for name, _data, _t in events]
    assert names[0] == "run.created" and names[1] == "run.started" and names[-1] == "run.completed", names
    assert set(names[2:-1]) <= {"run.output"}, names
    created, started, completed = events[0][1], events[1][1], events[-1][1]
    assert created["status"] == "queued" and created["object"] == "run"
    assert started["status"] == "running" and started["id"] == created["id"]
    assert completed["status"] == "succeeded" and completed["id"] == created["id"]
    assert _joined(events, "stdout") == completed["stdout"] == "one\ntwo\n"
    assert _joined(events, "stderr") == completed["stderr"] == "err\n"
    # The run object is the same as GET /v1/runs/{id} gives.
    assert tenant.get_run(created["id"])["stdout"] == "one\ntwo\n"


def test_it_sends_output_as_it_is_produced(live_server: Any, worker: Any, tenant: Tenant) -> None:
    code = "import time\nprint('early', flush=True)\ntime.sleep(3)\nprint('late')\n"
    _response, events = _stream(live_server, tenant, code=code)
    outputs = [(data["data"], t) for name, data, t in events if name == "run.output"]
    early_at = next(t for text, t in outputs if "early" in text)
    completed_at = events[-1][2]
    assert events[-1][0] == "run.completed"
    # Not buffered until the end: the first line arrived while the program was still sleeping.
    assert completed_at - early_at > 1.5, (early_at, completed_at)


def test_it_keeps_the_output_caps_while_streaming(live_server: Any, worker: Any, tenant: Tenant) -> None:
    code = "import sys\nsys.stdout.write('x' * 50000)\nsys.stderr.write('y' * 300)\n"
    limits = {**SMALL_LIMITS, "max_output_bytes": 1000}
    _response, events = _stream(live_server, tenant, code=code, limits=limits)
    completed = events[-1][1]
    assert _joined(events, "stdout") == "x" * 1000 == completed["stdout"]
    assert completed["stdout_truncated"] is True
    assert _joined(events, "stderr") == "y" * 300 and completed["stderr_truncated"] is False


def test_it_keeps_characters_split_between_reads_whole(live_server: Any, worker: Any, tenant: Tenant) -> None:
    # 3-byte characters written in odd-sized pieces: every chunk boundary may fall inside one.
    code = "import os, time\ndata = ('€' * 3000).encode()\nfor i in range(0, len(data), 1001):\n    os.write(1, data[i:i + 1001]); time.sleep(0.002)\n"
    _response, events = _stream(live_server, tenant, code=code)
    streamed = _joined(events, "stdout")
    assert "\ufffd" not in streamed
    assert streamed == "€" * 3000 == events[-1][1]["stdout"]


def test_a_client_that_hangs_up_does_not_stop_the_run(live_server: Any, worker: Any, tenant: Tenant) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(1.5)\nopen('outputs/done.txt', 'w').write('ok')\n"
    stream = EventStream(live_server.url, tenant.token, {"code": code})
    first = stream.response.readline()
    while not first.startswith(b"data: "):
        first = stream.response.readline()
    run_id = json.loads(first[len(b"data: ") :])["id"]
    stream.close()  # hang up right after run.created
    run = tenant.wait_run(run_id, timeout_s=60)
    assert run["status"] == "succeeded"
    assert [a["path"] for a in run["artifacts"]] == ["outputs/done.txt"]
    # The stream's events are not kept forever.
    ttl = cx_redis.client().ttl(cx_redis.EVENTS_KEY.format(run_id=run_id))
    assert 0 < ttl <= cx_redis.EVENTS_TTL_S


def test_a_streamed_run_that_fails_validation_answers_json(live_server: Any, tenant: Tenant) -> None:
    response, events = _stream(live_server, tenant, language="cobol", code="DISPLAY 'HI'.")
    assert response.status == 400 and events == []


def test_a_run_cancelled_while_queued_ends_its_stream(live_server: Any, tenant: Tenant, no_worker: None) -> None:
    stream = EventStream(live_server.url, tenant.token, {"code": "print(1)"})
    try:
        line = stream.response.readline()
        while not line.startswith(b"data: "):
            line = stream.response.readline()
        run_id = json.loads(line[len(b"data: ") :])["id"]
        assert tenant.client.post(f"/v1/runs/{run_id}/cancel").status_code == 200
        rest = stream.events()
    finally:
        stream.close()
    assert [name for name, _d, _t in rest] == ["run.completed"]
    assert rest[-1][1]["status"] == "cancelled"
