"""openwebui_tool.py on its own, in the project's virtualenv: the HTTP layer replaced by a scripted fake,
for what a live server will not readily do (502 pages, a run that never ends, huge images, an event
emitter that raises, event streams split anywhere, stalled or garbled). The tool's real path through
Open WebUI is in test_openwebui_tool.py."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import time
from types import ModuleType
from typing import Any

import pytest

from tests.live import ROOT

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openwebui_tool_under_test", ROOT / "openwebui_tool.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool_module = _load()
Reply = tool_module._Reply


def run_object(**fields: Any) -> dict[str, Any]:
    run = {
        "id": "run_abc",
        "object": "run",
        "language": "python",
        "runtime_version": "3.11.2",
        "status": "succeeded",
        "exit_code": 0,
        "signal": None,
        "stdout": "hi\n",
        "stderr": "",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "limits": {"timeout_ms": 10000, "cpu_ms": 10000, "memory_mb": 256},
        "usage": {"wall_ms": 12},
        "artifacts": [],
        "error": None,
    }
    run.update(fields)
    return run


def reply(status: int, body: Any, **headers: str) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, raw)


def sse(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def output(text: str, stream: str = "stdout") -> bytes:
    return sse("run.output", {"stream": stream, "data": text})


class FakeStream:
    """An open event stream: bytes to hand out, floats to wait that many seconds first, exceptions to
    raise; then the end (b""), or nothing ever again with `hang`."""

    def __init__(self, *items: bytes | float | BaseException, hang: bool = False) -> None:
        self.items = list(items)
        self.hang = hang
        self.closed = False

    async def read(self) -> bytes:
        while self.items:
            item = self.items.pop(0)
            if isinstance(item, float):
                await asyncio.sleep(item)
            elif isinstance(item, BaseException):
                raise item
            else:
                return item
        if self.hang:
            await asyncio.Event().wait()
        return b""

    def close(self) -> None:
        self.closed = True


def streamed(*runs_and_bytes: bytes | float | BaseException, hang: bool = False) -> FakeStream:
    return FakeStream(*runs_and_bytes, hang=hang)


def whole_stream(run: dict[str, Any], *chunks: bytes | float) -> FakeStream:
    """What codeexec sends for a run that ends while streamed."""
    started = {**run, "status": "running"}
    return FakeStream(
        sse("run.created", {**run, "status": "queued"}), sse("run.started", started), *chunks, sse("run.completed", run)
    )


class FakeHttp:
    """Answers requests from a script of (method, url prefix) -> reply, stream or exception, and records
    them. A POST with stream: true goes through open_stream and takes the next POST entry."""

    def __init__(self, script: list[tuple[str, str, Any]]) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    async def __aenter__(self) -> FakeHttp:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def _answer(self, method: str, url: str) -> Any:
        for index, (want_method, prefix, answer) in enumerate(self.script):
            if want_method == method and url.startswith(prefix):
                del self.script[index]
                if isinstance(answer, BaseException):
                    raise answer
                return answer
        raise AssertionError(f"unexpected {method} {url}")

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.calls.append({"method": method, "url": url, **kwargs})
        answer = self._answer(method, url)
        assert not isinstance(answer, FakeStream), f"{method} {url} read as a whole"
        return answer

    async def open_stream(self, url: str, **kwargs: Any) -> Any:
        self.calls.append({"method": "POST", "url": url, "streamed": True, **kwargs})
        return self._answer("POST", url)


def make_tools(http: FakeHttp, **valves: Any) -> Any:
    tools = tool_module.Tools()
    tools.valves = tools.Valves(**{"base_url": "http://codeexec:8080", "api_key": "ck-admin", **valves})
    tools._open_http = lambda: http
    return tools


def call(tools: Any, *, language: str = "python", code: str = "print('hi')", **kwargs: Any) -> tuple[str, list[Any]]:
    events: list[Any] = []

    async def emitter(event: dict[str, Any]) -> None:
        events.append(event)

    result = asyncio.run(tools.run_code(language, code, __event_emitter__=emitter, **kwargs))
    return result, events


# ---- what it sends ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_it_posts_the_run_with_the_valves_limits(stream: bool) -> None:
    answer = whole_stream(run_object()) if stream else reply(200, run_object())
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", answer)])
    tools = make_tools(http, timeout_ms=2500, memory_mb=128, stream=stream)
    result, _ = call(tools, stdin="x", __user__={"id": "u-1"})
    (sent,) = http.calls
    assert sent["headers"]["Authorization"] == "Bearer ck-admin"
    assert sent.get("streamed", False) is stream
    assert sent["json_body"] == {
        "language": "python",
        "code": "print('hi')",
        "stdin": "x",
        "limits": {"timeout_ms": 2500, "memory_mb": 128},
        "wait": True,
        **({"stream": True} if stream else {}),
        "metadata": {"client": "open-webui", "openwebui_user_id": "u-1"},
    }
    assert result.startswith("Ran python 3.11.2 in 12 ms: succeeded, exit code 0.")


def test_it_prefers_the_users_own_key() -> None:
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", reply(200, run_object()))])
    user_valves = tool_module.Tools.UserValves(api_key="ck-alice")
    call(make_tools(http), __user__={"id": "u-1", "valves": user_valves})
    assert http.calls[0]["headers"]["Authorization"] == "Bearer ck-alice"


@pytest.mark.parametrize(("given", "sent"), [("py", "python"), ("JavaScript", "node"), ("golang", "go")])
def test_it_accepts_the_names_models_use(given: str, sent: str) -> None:
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", reply(200, run_object(language=sent)))])
    call(make_tools(http), language=given)
    assert http.calls[0]["json_body"]["language"] == sent


def test_it_strips_a_markdown_fence_around_the_code() -> None:
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", reply(200, run_object()))])
    call(make_tools(http), code="```python\nprint(1)\n```")
    assert http.calls[0]["json_body"]["code"] == "print(1)\n"


# ---- refusals before any request ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("valves", "kwargs", "expected"),
    [
        ({}, {"language": "cobol"}, "Error: unsupported language 'cobol'"),
        ({}, {"code": "   "}, "Error: no code given."),
        ({"api_key": ""}, {}, "Error: no codeexec API key is configured."),
        ({"base_url": "codeexec:8080"}, {}, "Error: the tool's base_url Valve ('codeexec:8080') is not an http(s) URL"),
    ],
)
def test_it_refuses_what_cannot_run(valves: dict[str, Any], kwargs: dict[str, Any], expected: str) -> None:
    http = FakeHttp([])
    result, events = call(make_tools(http, **valves), **kwargs)
    assert result.startswith(expected)
    assert http.calls == [] and events == []


# ---- failures of the service, as text --------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            reply(
                400,
                {
                    "error": {
                        "message": "Too big.",
                        "type": "invalid_request_error",
                        "param": "limits.memory_mb",
                        "code": "limit_exceeded",
                    }
                },
            ),
            "Error: codeexec refused the run (400 limit_exceeded, param limits.memory_mb): Too big. The code was not run.",
        ),
        (
            reply(
                503,
                {
                    "error": {
                        "message": "Too many queued runs.",
                        "type": "server_error",
                        "param": None,
                        "code": "server_overloaded",
                    }
                },
                retry_after="5",
            ),
            "Error: codeexec is busy or rate-limited (503 server_overloaded): Too many queued runs. Retry after 5 s.",
        ),
        (
            reply(
                400,
                {
                    "error": {
                        "message": "Bad request.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "bad_request",
                    }
                },
            ),
            "Error: codeexec refused the run (400 bad_request): Bad request. An admin should check that 'codeexec' is in codeexec's ALLOWED_HOSTS.",
        ),
        (
            reply(502, b"<html><body>Bad Gateway</body></html>"),
            "Error: codeexec answered HTTP 502 without an error message. The code was not run.",
        ),
        (
            reply(200, b"not json"),
            "Error: codeexec answered HTTP 200 with a body that is not a run object.",
        ),
        (
            tool_module._TransportError("timeout", "no answer within 70 s"),
            "Error: codeexec at http://codeexec:8080 did not answer in time (no answer within 70 s).",
        ),
    ],
)
def test_it_turns_service_failures_into_text(answer: Any, expected: str) -> None:
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", answer)])
    result, events = call(make_tools(http))
    assert result.startswith(expected), result
    assert events[-1]["data"]["done"] is True


def test_it_suggests_host_docker_internal_only_for_localhost() -> None:
    refused = tool_module._TransportError("connect", "Connection refused")
    local, _ = call(
        make_tools(FakeHttp([("POST", "http://localhost:8080/", refused)]), base_url="http://localhost:8080")
    )
    remote, _ = call(make_tools(FakeHttp([("POST", "http://codeexec:8080/", refused)])))
    assert "host.docker.internal" in local
    assert "host.docker.internal" not in remote and remote.startswith("Error: cannot reach codeexec")


def test_it_never_raises() -> None:
    """Garbage from the server and an emitter that fails still give the model text."""

    async def broken_emitter(event: dict[str, Any]) -> None:
        raise RuntimeError("socket closed")

    weird = run_object(usage=None, artifacts=[None, {"filename": 3}], stdout=["not", "text"], limits=None)
    tools = make_tools(FakeHttp([("POST", "http://codeexec:8080/v1/runs", reply(200, weird))]))
    result = asyncio.run(tools.run_code("python", "1", __event_emitter__=broken_emitter))
    assert result.startswith("Ran python 3.11.2: succeeded")

    class Exploding(FakeHttp):
        async def request(self, method: str, url: str, **kwargs: Any) -> Any:
            raise KeyError("boom")

        async def open_stream(self, url: str, **kwargs: Any) -> Any:
            raise KeyError("boom")

    result, events = call(make_tools(Exploding([])))
    assert result == "Error: the codeexec tool failed unexpectedly (KeyError: 'boom')."
    assert events[-1] == {
        "type": "status",
        "data": {"description": "codeexec: the tool failed", "done": True, "hidden": False},
    }


# ---- waiting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])  # a 202 answers a server that does not stream, too
def test_it_polls_after_202_until_the_run_ends(stream: bool) -> None:
    http = FakeHttp(
        [
            ("POST", "http://codeexec:8080/v1/runs", reply(202, run_object(status="queued"))),
            ("GET", "http://codeexec:8080/v1/runs/run_abc", reply(200, run_object(status="running"))),
            ("GET", "http://codeexec:8080/v1/runs/run_abc", reply(200, run_object(status="running"))),
            ("GET", "http://codeexec:8080/v1/runs/run_abc", reply(200, run_object(stdout="late\n"))),
        ]
    )
    result, events = call(make_tools(http, stream=stream))
    assert "```\nlate\n```" in result
    assert [e["data"]["description"] for e in events] == [  # a line per state, not per poll
        "Running python code in codeexec…",
        "python: queued…",
        "python: running…",
        "python: succeeded in 12 ms",
    ]


@pytest.mark.parametrize("stream", [True, False])
def test_it_cancels_a_run_that_outlives_its_deadline(monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    monkeypatch.setattr(tool_module, "DEADLINE_SLACK_S", 0.3)
    running = reply(200, run_object(status="running"))
    http = FakeHttp(
        [
            ("POST", "http://codeexec:8080/v1/runs", reply(202, run_object(status="queued"))),
            *[("GET", "http://codeexec:8080/v1/runs/run_abc", running)] * 10,
            ("POST", "http://codeexec:8080/v1/runs/run_abc/cancel", reply(200, run_object(status="cancelled"))),
        ]
    )
    result, _ = call(make_tools(http, timeout_ms=100, stream=stream))
    assert result == "Error: run run_abc did not finish within 0 s and was cancelled."
    assert http.calls[-1]["url"] == "http://codeexec:8080/v1/runs/run_abc/cancel"


# ---- streaming -------------------------------------------------------------------------------------


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["description"] for e in events if e["type"] == "status"]


def test_a_streamed_run_gives_the_same_text_as_a_waited_one() -> None:
    run = run_object(stdout="a\nb\n", stderr="warn\n", artifacts=[artifact("t.txt", "text/plain", 5)])
    texts = []
    for answer, stream in (
        (whole_stream(run, output("a\nb\n"), output("warn\n", "stderr")), True),
        (reply(200, run), False),
    ):
        http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", answer)])
        texts.append(call(make_tools(http, stream=stream))[0])
    assert texts[0] == texts[1]
    assert texts[0].startswith("Ran python 3.11.2 in 12 ms: succeeded, exit code 0.\n\nstdout:\n```\na\nb\n```")


def test_it_shows_the_latest_output_line_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool_module, "STATUS_INTERVAL_S", 0.2)
    stream = whole_stream(
        run_object(stdout="step 1\nstep 2\nstep 3\n"),
        output("step 1\n"),  # the first line: at once
        output("step 2\n"),  # too soon: waits for its turn, which comes while nothing else does
        0.35,
        output("step 3\n"),  # too soon after step 2, and the run ends first: never shown
    )
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", stream)])
    _, events = call(make_tools(http))
    assert statuses(events) == [
        "Running python code in codeexec…",
        "python: running…",
        "python: running… last output: step 1",
        "python: running… last output: step 2",
        "python: succeeded in 12 ms",
    ]
    assert stream.closed


def test_a_chatty_program_gets_a_few_status_lines_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool_module, "STATUS_INTERVAL_S", 0.2)
    chunks: list[bytes | float] = []
    for i in range(100):
        chunks += [output(f"line {i}\n"), 0.01]
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", whole_stream(run_object(), *chunks))])
    times: list[float] = []
    events: list[dict[str, Any]] = []

    async def emitter(event: dict[str, Any]) -> None:
        times.append(time.monotonic())
        events.append(event)

    started = time.monotonic()
    asyncio.run(make_tools(http).run_code("python", "x", __event_emitter__=emitter))
    elapsed_s = time.monotonic() - started
    live = [t for t, e in zip(times, events, strict=True) if "last output" in e["data"]["description"]]
    assert 3 <= len(live) <= 2 + elapsed_s / 0.2, (len(live), elapsed_s)
    assert all(later - earlier >= 0.19 for earlier, later in itertools.pairwise(live))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("one\ntwo\n\n  \n", "two"),
        ("10%\r50%\r", "50%"),  # a progress bar redrawn with carriage returns
        ("half a li", "half a li"),
        ("tab\there\x1b[31mred\x00", "tab here [31mred"),
        ("x" * 200 + "\n", "x" * 79 + "…"),
        ("   \n\n", ""),
    ],
)
def test_the_status_line_shows_the_last_line_cleaned_and_cut(text: str, line: str) -> None:
    assert tool_module._last_line(text) == line


def test_output_lines_from_both_streams_and_across_chunks() -> None:
    stream = whole_stream(run_object(), output("par"), output("tial\n"), output("oops\n", "stderr"))
    _, events = call(make_tools(FakeHttp([("POST", "http://codeexec:8080/v1/runs", stream)])))
    # "par" shows at once (the first line); "partial" waits, then "oops" replaces it; the end drops it.
    assert statuses(events)[2] == "python: running… last output: par"
    assert "python: running… last output: partial" not in statuses(events)


def test_events_split_anywhere_are_read_whole() -> None:
    run = run_object(stdout="é€😀\n" * 3)
    body = (
        b": keep-alive\r\n\r\n"
        + sse("run.created", run).replace(b"\n", b"\r\n")
        + b"event: run.future\ndata: {}\n\n"  # an event this tool does not know is skipped
        + output("é€😀\n")
        + b'event: run.output\ndata: {"stream": "stdout",\ndata:  "data": "two"}\n\n'  # data on two lines
        + sse("run.completed", run)
    )
    for size in (1, 2, 3, 7, 64, len(body)):
        parser = tool_module._EventParser()
        found = []
        for start in range(0, len(body), size):
            found += parser.feed(body[start : start + size])
        assert [name for name, _ in found] == ["run.created", "run.future", "run.output", "run.output", "run.completed"]
        assert json.loads(found[2][1]) == {"stream": "stdout", "data": "é€😀\n"}
        assert json.loads(found[3][1]) == {"stream": "stdout", "data": "two"}
        assert json.loads(found[4][1]) == run


def test_a_run_object_larger_than_aiohttps_line_limit_is_read() -> None:
    """aiohttp's readline stops at 128 KiB; a run.completed line holds up to 2 x 1 MiB of output."""
    run = run_object(stdout="\u2603" * 700_000)  # JSON-escaped: 6 bytes a character
    body = sse("run.completed", run)
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", streamed(sse("run.created", run), *chunks))])
    result, _ = call(make_tools(http, max_output_chars=100))
    assert result.startswith("Ran python 3.11.2 in 12 ms: succeeded")
    assert "stdout (699900 of 700000 characters omitted here):" in result


BROKEN_STREAMS = {
    "cut": (tool_module._StreamBroken("ClientPayloadError: Response payload is not completed"),),
    "garbled": (b"event: run.output\ndata: {not json\n\n", 5.0),
    "not UTF-8": (b"event: run.output\ndata: \xff\xfe\n\n",),
    "ended early": (),
}


@pytest.mark.parametrize("how", list(BROKEN_STREAMS))
def test_a_broken_stream_falls_back_to_polling(how: str) -> None:
    started = run_object(status="running")
    stream = streamed(
        sse("run.created", run_object(status="queued")),
        sse("run.started", started),
        output("x\n"),
        *BROKEN_STREAMS[how],
    )
    http = FakeHttp(
        [
            ("POST", "http://codeexec:8080/v1/runs", stream),
            ("GET", "http://codeexec:8080/v1/runs/run_abc", reply(200, run_object(stdout="x\ny\n"))),
        ]
    )
    result, events = call(make_tools(http))
    assert "```\nx\ny\n```" in result and result.startswith("Ran python 3.11.2 in 12 ms: succeeded")
    assert stream.closed
    assert [c["method"] for c in http.calls] == ["POST", "GET"]
    assert statuses(events)[-1] == "python: succeeded in 12 ms"


def test_a_stream_the_server_ended_before_the_run_is_polled() -> None:
    """After RUN_WAIT_MAX_S the stream ends with run.completed of a run still going."""
    running = run_object(status="running")
    stream = streamed(sse("run.created", running), sse("run.started", running), sse("run.completed", running))
    http = FakeHttp(
        [
            ("POST", "http://codeexec:8080/v1/runs", stream),
            ("GET", "http://codeexec:8080/v1/runs/run_abc", reply(200, run_object())),
        ]
    )
    result, _ = call(make_tools(http))
    assert result.startswith("Ran python 3.11.2 in 12 ms: succeeded")


def test_a_stream_that_never_names_the_run_is_an_error() -> None:
    stream = streamed(b": keep-alive\n\n", b"event: run.created\ndata: [1, 2]\n\n")
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", stream)])
    result, events = call(make_tools(http))
    assert result == ("Error: codeexec's event stream ended before it named the run; the code may have run. Try again.")
    assert events[-1]["data"] == {"description": "codeexec: unreadable answer", "done": True, "hidden": False}
    assert len(http.calls) == 1


def test_it_cancels_a_streamed_run_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool_module, "DEADLINE_SLACK_S", 0.3)
    running = run_object(status="running")
    stream = streamed(sse("run.created", running), sse("run.started", running), output("working\n"), hang=True)
    http = FakeHttp(
        [
            ("POST", "http://codeexec:8080/v1/runs", stream),
            ("POST", "http://codeexec:8080/v1/runs/run_abc/cancel", reply(200, run_object(status="cancelled"))),
        ]
    )
    started = time.monotonic()
    result, events = call(make_tools(http, timeout_ms=200))
    assert 0.45 <= time.monotonic() - started < 2
    assert result == "Error: run run_abc did not finish within 0 s and was cancelled."
    assert http.calls[-1]["url"] == "http://codeexec:8080/v1/runs/run_abc/cancel"
    assert stream.closed
    assert statuses(events)[-2:] == ["python: running… last output: working", "codeexec: gave up waiting"]


def test_a_streamed_run_survives_an_emitter_that_raises() -> None:
    async def broken_emitter(event: dict[str, Any]) -> None:
        raise RuntimeError("socket closed")

    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", whole_stream(run_object(), output("hi\n")))])
    result = asyncio.run(make_tools(http).run_code("python", "1", __event_emitter__=broken_emitter))
    assert result.startswith("Ran python 3.11.2 in 12 ms: succeeded")


# ---- output and artifacts --------------------------------------------------------------------------


def test_it_describes_every_status() -> None:
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "failed": ({"exit_code": 3}, "failed, exit code 3"),
        "timeout": ({"error": {"code": "cpu_timeout", "message": ""}}, "timeout: the CPU time limit of 10000 ms"),
        "oom": ({"error": {"code": "memory_limit", "message": ""}}, "out of memory: the memory limit of 256 MiB"),
        "cancelled": ({}, "cancelled"),
        "error": (
            {"error": {"code": "sandbox_error", "message": "bwrap died"}},
            "error in the service (sandbox_error): bwrap died",
        ),
    }
    for status, (fields, expected) in cases.items():
        http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", reply(200, run_object(status=status, **fields)))])
        result, _ = call(make_tools(http))
        assert expected in result.splitlines()[0], result


def test_it_notes_both_kinds_of_truncation() -> None:
    long = "x" * 1000
    run = run_object(stdout=long, stderr="e" * 50, stderr_truncated=True)
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", reply(200, run))])
    result, _ = call(make_tools(http, max_output_chars=100))
    assert "stdout (900 of 1000 characters omitted here):" in result
    assert "[… 900 characters omitted …]" in result
    assert "stderr (the service stopped capturing at its output limit):" in result


def test_it_fences_output_that_contains_a_fence() -> None:
    http = FakeHttp([("POST", "http://codeexec:8080/v1/runs", reply(200, run_object(stdout="```\ncode\n```\n")))])
    result, _ = call(make_tools(http))
    assert "````\n```\ncode\n```\n````" in result


def artifact(name: str, content_type: str, size: int) -> dict[str, Any]:
    return {
        "id": f"file-{name}",
        "object": "file",
        "filename": name,
        "path": f"outputs/{name}",
        "bytes": size,
        "content_type": content_type,
        "url": f"https://public.example/v1/files/file-{name}/content?expires=99&signature=s{name}",
        "expires_at": 4102444800,
    }


def test_it_inlines_small_images_through_the_signed_link_at_base_url() -> None:
    artifacts = [
        artifact("a.png", "image/png", len(PNG)),
        artifact("big.png", "image/png", 2 * 1024 * 1024),  # too big: linked only
        artifact("v.svg", "image/svg+xml", 10),  # never inlined
        artifact("t.txt", "text/plain", 5),
        *[artifact(f"{i}.jpg", "image/jpeg", 10) for i in range(5)],  # only the first 3 more fit
    ]
    script: list[tuple[str, str, Any]] = [
        ("POST", "http://codeexec:8080/v1/runs", reply(200, run_object(artifacts=artifacts)))
    ]
    script.append(
        ("GET", "http://codeexec:8080/v1/files/file-a.png/content?expires=99&signature=sa.png", reply(200, PNG))
    )
    script += [("GET", f"http://codeexec:8080/v1/files/file-{i}.jpg/", reply(200, b"\xff\xd8jpeg")) for i in range(3)]
    http = FakeHttp(script)
    result, events = call(make_tools(http))
    (files_event,) = [e for e in events if e["type"] == "files"]
    images = files_event["data"]["files"]
    assert [i["name"] for i in images] == ["a.png", "0.jpg", "1.jpg", "2.jpg"]
    assert images[0]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert all(call["headers"] == {} for call in http.calls[1:])  # the signature is the authorization
    # Every artifact is linked at its public signed URL; only the shown ones say so.
    assert (
        "- [big.png](https://public.example/v1/files/file-big.png/content?expires=99&signature=sbig.png) (image/png, 2.0 MiB)"
        in result
    )
    assert (
        "- [a.png](https://public.example/v1/files/file-a.png/content?expires=99&signature=sa.png) (image/png, 108 B, already shown to the user in the chat)"
        in result
    )
    assert "links valid until 2100-01-01 00:00 UTC" in result


def test_a_failed_image_download_leaves_the_link() -> None:
    http = FakeHttp(
        [
            (
                "POST",
                "http://codeexec:8080/v1/runs",
                reply(200, run_object(artifacts=[artifact("a.png", "image/png", 10)])),
            ),
            ("GET", "http://codeexec:8080/v1/files/file-a.png/", reply(403, {"error": {"message": "expired"}})),
        ]
    )
    result, events = call(make_tools(http))
    assert not [e for e in events if e["type"] == "files"]
    assert "- [a.png](https://public.example/" in result and "already shown" not in result


def test_its_only_public_method_is_run_code() -> None:
    tools = tool_module.Tools()
    public = [name for name in dir(tools) if not name.startswith("_") and callable(getattr(tools, name))]
    assert sorted(public) == ["UserValves", "Valves", "run_code"]  # Open WebUI skips the classes


def test_without_a_chat_to_show_them_images_are_only_linked() -> None:
    """Open WebUI passes no event emitter when there is no chat message (API calls): nothing to show in."""
    http = FakeHttp(
        [
            (
                "POST",
                "http://codeexec:8080/v1/runs",
                reply(200, run_object(artifacts=[artifact("a.png", "image/png", 10)])),
            )
        ]
    )
    result = asyncio.run(make_tools(http).run_code("python", "print(1)"))
    assert len(http.calls) == 1
    assert "- [a.png](https://public.example/" in result and "already shown" not in result
