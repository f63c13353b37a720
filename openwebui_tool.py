"""
title: codeexec
author: codeexec
version: 1.1.0
required_open_webui_version: 0.12.0
description: Run Python, Node.js, Ruby, PHP and Go code in codeexec's sandboxes: output, files, images
"""

# An Open WebUI Tool (Workspace -> Tools -> +, paste this file). It talks to codeexec's REST API
# (POST /v1/runs, streamed); see docs/openwebui.md. Only packages Open WebUI ships are used: pydantic, aiohttp.

import asyncio
import base64
import contextlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, Field

LANGUAGES = ("python", "node", "ruby", "php", "go")
# What models write instead of the five names; the API accepts some of these itself, not all.
ALIASES = {
    "py": "python",
    "python3": "python",
    "js": "node",
    "javascript": "node",
    "nodejs": "node",
    "node.js": "node",
    "rb": "ruby",
    "golang": "go",
}
TERMINAL_STATUSES = ("succeeded", "failed", "timeout", "oom", "cancelled", "error")
INLINE_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")  # never SVG: it can carry script
MAX_INLINE_IMAGE_BYTES = 1024 * 1024  # per image; larger ones are only linked
MAX_INLINE_IMAGES = 4  # per run
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a run object holds at most 2 x 1 MiB of output, JSON-escaped
# Beyond the run's own timeout: queueing, Go's compile step (up to the server's compile_timeout_ms) and
# the HTTP round trips. The tool gives up (and cancels the run) after timeout_ms + this.
DEADLINE_SLACK_S = 60.0
CONNECT_TIMEOUT_S = 10.0
# codeexec sends a keep-alive comment after 15 s without events; this long without a byte, the stream is dead.
STREAM_IDLE_S = 60.0
# Live output in the status line: the first line at once, then at most one line per interval (each status
# is a socket message to the browser and a write to Open WebUI's database).
STATUS_INTERVAL_S = 0.5
STATUS_LINE_CHARS = 80
OUTPUT_TAIL_CHARS = 4096  # per stream: enough to find the last line of output
USER_AGENT = "codeexec-openwebui-tool/1.1.0"

EventEmitter = Callable[[dict[str, Any]], Awaitable[Any]]


class _Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _TransportError(Exception):
    """The request never got an HTTP answer (refused, DNS, TLS, timeout)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "connect" | "timeout" | "other"
        self.detail = detail


class _StreamBroken(Exception):
    """The event stream cannot be read on: cut, unreadable, or not what codeexec sends."""


class _EventStream:
    """An open text/event-stream answer, read as its bytes arrive."""

    def __init__(self, response: Any) -> None:
        self._response = response

    async def read(self) -> bytes:
        """The next bytes as they come, b"" at the end."""
        try:
            return bytes(await self._response.content.readany())
        except TimeoutError as exc:
            raise _StreamBroken(f"no byte for {STREAM_IDLE_S:.0f} s") from exc
        except Exception as exc:  # cut, reset, a bad chunk: whatever it is, the caller polls instead
            raise _StreamBroken(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._response.close()  # drops the connection: the run goes on without a reader


class _EventParser:
    """Server-sent events from bytes in any split: (event name, data) for each complete event."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._name = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        self._buffer += chunk
        if len(self._buffer) > MAX_RESPONSE_BYTES:
            raise _StreamBroken("an event larger than the largest run object")
        events: list[tuple[str, str]] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _StreamBroken("an event that is not UTF-8") from exc
            if not line:
                if self._data:
                    events.append((self._name or "message", "\n".join(self._data)))
                self._name, self._data = "", []
            elif not line.startswith(":"):  # ":" starts a keep-alive comment
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    self._name = value
                elif field == "data":
                    self._data.append(value)
        return events


class _Http:
    """The few HTTP calls a run needs, over one aiohttp session (the unit tests swap in a fake)."""

    def __init__(self) -> None:
        self._session: Any = None

    async def __aenter__(self) -> Self:
        import aiohttp  # shipped with Open WebUI; imported here so the file loads without it

        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json_body: Any = None,
        timeout_s: float,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> _Reply:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=max(timeout_s, 0.1), connect=min(CONNECT_TIMEOUT_S, max(timeout_s, 0.1)))
        try:
            async with self._session.request(
                method, url, headers=headers, json=json_body, timeout=timeout, allow_redirects=False
            ) as response:
                body = await response.content.read(max_bytes + 1)
                return _Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, body)
        except TimeoutError as exc:
            raise _TransportError("timeout", f"no answer within {timeout_s:.0f} s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise _TransportError("connect", str(exc)) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise _TransportError("other", f"{type(exc).__name__}: {exc}") from exc

    async def open_stream(
        self, url: str, *, headers: dict[str, str], json_body: Any, timeout_s: float
    ) -> _EventStream | _Reply:
        """POST for a text/event-stream answer: the open stream (the caller closes it), or any other
        answer (an error, a server that does not stream) read whole."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(
            total=max(timeout_s, 0.1), connect=min(CONNECT_TIMEOUT_S, max(timeout_s, 0.1)), sock_read=STREAM_IDLE_S
        )
        try:
            response = await self._session.request(
                "POST", url, headers=headers, json=json_body, timeout=timeout, allow_redirects=False
            )
        except TimeoutError as exc:
            raise _TransportError("timeout", f"no answer within {timeout_s:.0f} s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise _TransportError("connect", str(exc)) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise _TransportError("other", f"{type(exc).__name__}: {exc}") from exc
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if response.status == 200 and content_type == "text/event-stream":
            return _EventStream(response)
        try:
            body = await response.content.read(MAX_RESPONSE_BYTES + 1)
        except TimeoutError as exc:
            raise _TransportError("timeout", f"no answer within {timeout_s:.0f} s") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise _TransportError("other", f"{type(exc).__name__}: {exc}") from exc
        finally:
            response.release()
        return _Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, body)


class _Events:
    """Open WebUI's __event_emitter__, or nothing (API calls have none). Display must never fail a run."""

    def __init__(self, emitter: EventEmitter | None) -> None:
        self._emitter = emitter

    @property
    def enabled(self) -> bool:
        return self._emitter is not None

    async def emit(self, event: dict[str, Any]) -> None:
        if self._emitter is None:
            return
        with contextlib.suppress(Exception):  # a closed socket must not cost the model its result
            await self._emitter(event)

    async def status(self, description: str, done: bool) -> None:
        await self.emit({"type": "status", "data": {"description": description, "done": done, "hidden": False}})


class _Progress:
    """The chat's status line while a run goes: a new state at once; live output as its last line, the
    first at once and later ones at most every STATUS_INTERVAL_S (a line superseded before its turn, or by
    the run's end, is never sent). A line equal to the one shown is not sent again."""

    def __init__(self, events: _Events, lang: str) -> None:
        self._events = events
        self._lang = lang
        self._shown = ""
        self._shown_at = -math.inf
        self._pending: str | None = None
        self._tails: dict[str, str] = {}
        self._line = ""
        self._output_shown = False

    async def show(self, description: str) -> None:
        self._pending = None
        if description == self._shown:
            return
        self._shown, self._shown_at = description, time.monotonic()
        await self._events.status(description, done=False)

    async def state(self, status: Any) -> None:
        await self.show(self._describe(str(status or "queued")))

    async def output(self, stream: Any, data: Any) -> None:
        if not isinstance(data, str):
            return
        tail = (self._tails.get(str(stream), "") + data)[-OUTPUT_TAIL_CHARS:]
        self._tails[str(stream)] = tail
        line = _last_line(tail)
        if not line or line == self._line:
            return
        self._line = line
        if not self._output_shown or time.monotonic() - self._shown_at >= STATUS_INTERVAL_S:
            self._output_shown = True
            await self.show(self._describe("running"))
        else:
            self._pending = self._describe("running")

    def due_in_s(self) -> float | None:
        """Seconds until the waiting line may be shown, None if none waits."""
        if self._pending is None:
            return None
        return max(self._shown_at + STATUS_INTERVAL_S - time.monotonic(), 0.0)

    async def tick(self) -> None:
        if self._pending is not None and self.due_in_s() == 0.0:
            await self.show(self._pending)

    def _describe(self, status: str) -> str:
        if status == "running" and self._line:
            return f"{self._lang}: running… last output: {self._line}"
        return f"{self._lang}: {status}…"


class Tools:
    class Valves(BaseModel):
        base_url: str = Field(
            default="http://localhost:8080",
            description=(
                "codeexec's URL as Open WebUI's server reaches it. Open WebUI in Docker: "
                "http://host.docker.internal:8080 (see docs/openwebui.md)."
            ),
        )
        api_key: str = Field(
            default="",
            description="codeexec API key, used for users who have not set their own.",
            json_schema_extra={"input": {"type": "password"}},
        )
        timeout_ms: int = Field(
            default=10000, ge=1, description="Wall-clock limit per run in ms (at most the server's maximum)."
        )
        memory_mb: int = Field(default=256, ge=1, description="Memory limit per run in MiB.")
        max_output_chars: int = Field(
            default=4000, ge=100, description="stdout and stderr are each cut to this many characters for the model."
        )
        stream: bool = Field(
            default=True,
            description=(
                "Stream each run and show its latest output line in the chat's status while it runs. "
                "Off: wait for the result (and poll), showing only the run's state."
            ),
        )

    class UserValves(BaseModel):
        api_key: str = Field(
            default="",
            description="Your own codeexec API key (used instead of the shared one).",
            json_schema_extra={"input": {"type": "password"}},
        )

    def __init__(self) -> None:
        self.valves = self.Valves()

    async def run_code(
        self,
        language: Literal["python", "node", "ruby", "php", "go"],
        code: str,
        stdin: str | None = None,
        __user__: dict[str, Any] | None = None,
        __event_emitter__: EventEmitter | None = None,
    ) -> str:
        """
        Run a complete program in a sandbox and return its status, exit code, stdout and stderr.
        Languages: python (Python 3 with numpy, pandas, matplotlib), node, ruby, php, go (package main).
        The sandbox has no network access and starts empty every time: nothing persists between calls.
        Print results to stdout. Files the program writes to the outputs/ directory (e.g. outputs/plot.png)
        are returned as download links, and images among them are shown to the user in the chat.
        :param language: one of python, node, ruby, php, go
        :param code: the whole source of the program (one file; Go needs package main and func main)
        :param stdin: optional text given to the program on standard input
        """
        events = _Events(__event_emitter__)
        try:
            return await self._run(language, code, stdin, __user__, events)
        except Exception as exc:  # the model gets text, never a traceback
            await events.status("codeexec: the tool failed", done=True)
            return f"Error: the codeexec tool failed unexpectedly ({type(exc).__name__}: {exc})."

    # ---- one call, top to bottom -------------------------------------------------------------------

    async def _run(self, language: Any, code: Any, stdin: Any, user: dict[str, Any] | None, events: _Events) -> str:
        lang = _language(language)
        if lang is None:
            return f"Error: unsupported language {str(language)[:40]!r}. Use one of: {', '.join(LANGUAGES)}."
        if not isinstance(code, str) or not code.strip():
            return "Error: no code given. Pass the program's complete source in `code`."
        if stdin is not None and not isinstance(stdin, str):
            stdin = str(stdin)
        base_url = str(self.valves.base_url).strip().rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
            return f"Error: the tool's base_url Valve ({base_url!r}) is not an http(s) URL; an admin must fix it."
        api_key = _user_api_key(user) or str(self.valves.api_key).strip()
        if not api_key:
            return (
                "Error: no codeexec API key is configured. An admin sets api_key in the tool's Valves, "
                "or each user sets their own in the tool's User Valves."
            )

        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        payload: dict[str, Any] = {
            "language": lang,
            "code": _strip_fence(code),
            "limits": {"timeout_ms": self.valves.timeout_ms, "memory_mb": self.valves.memory_mb},
            "wait": True,  # what a server that does not stream does instead
            "metadata": _metadata(user),
        }
        if self.valves.stream:
            payload["stream"] = True
        if stdin is not None:
            payload["stdin"] = stdin
        deadline = time.monotonic() + self.valves.timeout_ms / 1000 + DEADLINE_SLACK_S
        host = urlsplit(base_url).hostname

        progress = _Progress(events, lang)
        await progress.show(f"Running {lang} code in codeexec…")
        async with self._open_http() as http:
            if self.valves.stream:
                started = await self._post_streaming(http, base_url, headers, payload, deadline, events, progress)
            else:
                started = await self._post(http, base_url, headers, payload, deadline, events)
            if isinstance(started, str):
                return started
            run = started

            # Not finished: 202 after the server's own wait limit, or a stream that ended early (cut, or
            # RUN_WAIT_MAX_S). Poll until it ends or our deadline.
            delay_s = 0.25
            while run.get("status") not in TERMINAL_STATUSES:
                if _left(deadline) <= 0:
                    return await self._give_up(http, base_url, headers, run, events)
                await progress.state(run.get("status"))
                await asyncio.sleep(min(delay_s, _left(deadline)))
                delay_s = min(delay_s * 2, 2.0)
                try:
                    reply = await http.request(
                        "GET",
                        f"{base_url}/v1/runs/{quote(str(run.get('id', '')), safe='')}",
                        headers=headers,
                        timeout_s=min(30.0, max(_left(deadline), 1.0)),
                    )
                except _TransportError as exc:
                    return await _failed(events, "codeexec: unreachable", _transport_message(exc, base_url))
                if reply.status != 200:
                    return await _failed(events, f"codeexec: HTTP {reply.status}", _http_error_message(reply, host))
                polled = _json(reply.body)
                if not isinstance(polled, dict):
                    return await _failed(
                        events,
                        "codeexec: unreadable answer",
                        "Error: codeexec answered with a body that is not a run object.",
                    )
                run = polled

            images = await self._inline_images(http, base_url, run) if events.enabled else []
        if images:
            await events.emit({"type": "files", "data": {"files": images}})
        await events.status(_status_line(run, lang), done=True)
        return _format_run(run, lang, self.valves.max_output_chars, {image["name"] for image in images})

    async def _post(
        self,
        http: _Http,
        base_url: str,
        headers: dict[str, str],
        payload: dict[str, Any],
        deadline: float,
        events: _Events,
    ) -> dict[str, Any] | str:
        """POST /v1/runs, waiting: the run (finished, or still going after a 202) or an error text."""
        try:
            reply = await http.request(
                "POST", f"{base_url}/v1/runs", headers=headers, json_body=payload, timeout_s=_left(deadline)
            )
        except _TransportError as exc:
            return await _failed(events, "codeexec: unreachable", _transport_message(exc, base_url))
        return await _run_from_reply(reply, base_url, events)

    async def _post_streaming(
        self,
        http: _Http,
        base_url: str,
        headers: dict[str, str],
        payload: dict[str, Any],
        deadline: float,
        events: _Events,
        progress: _Progress,
    ) -> dict[str, Any] | str:
        """POST /v1/runs with stream: true, showing the output as it comes: the run of run.completed, the
        run as far as the stream told (it ended or broke early; the caller polls), or an error text."""
        try:
            answer = await http.open_stream(
                f"{base_url}/v1/runs", headers=headers, json_body=payload, timeout_s=_left(deadline) + 5
            )
        except _TransportError as exc:
            return await _failed(events, "codeexec: unreachable", _transport_message(exc, base_url))
        if isinstance(answer, _Reply):  # refused before streaming, or a server that does not stream
            return await _run_from_reply(answer, base_url, events)

        run: dict[str, Any] | None = None
        parser = _EventParser()
        reading: asyncio.Future[bytes] | None = None
        try:
            while True:
                if _left(deadline) <= 0:
                    if run is None:
                        return await _failed(
                            events,
                            "codeexec: gave up waiting",
                            f"Error: codeexec did not start the run within {_budget_s(self.valves.timeout_ms):.0f} s.",
                        )
                    return await self._give_up(http, base_url, headers, run, events)
                # One read stays pending across wake-ups for the status line: cancelling a read could lose bytes.
                if reading is None:
                    reading = asyncio.ensure_future(answer.read())
                due_s = progress.due_in_s()
                await asyncio.wait({reading}, timeout=min(_left(deadline), due_s if due_s is not None else math.inf))
                if not reading.done():
                    await progress.tick()
                    continue
                chunk, reading = reading.result(), None
                if not chunk:
                    break
                for name, data in parser.feed(chunk):
                    if name not in ("run.created", "run.started", "run.output", "run.completed"):
                        continue  # a newer server's event
                    event = _json(data.encode("utf-8"))
                    if not isinstance(event, dict):
                        raise _StreamBroken(f"{name} without a JSON object")
                    if name == "run.output":
                        await progress.output(event.get("stream"), event.get("data"))
                        continue
                    run = event
                    if name == "run.completed":
                        return run
                    if name == "run.started":
                        await progress.state("running")
                await progress.tick()
        except _StreamBroken:
            pass  # poll for what the stream did not tell
        finally:
            if reading is not None:  # not awaited: that could swallow a cancellation of this call
                reading.cancel()
                reading.add_done_callback(_retrieve)
            answer.close()
        if run is None or not run.get("id"):
            return await _failed(
                events,
                "codeexec: unreadable answer",
                "Error: codeexec's event stream ended before it named the run; the code may have run. Try again.",
            )
        return run

    async def _give_up(
        self, http: _Http, base_url: str, headers: dict[str, str], run: dict[str, Any], events: _Events
    ) -> str:
        await self._cancel(http, base_url, headers, run)
        await events.status("codeexec: gave up waiting", done=True)
        return (
            f"Error: run {run.get('id')} did not finish within {_budget_s(self.valves.timeout_ms):.0f} s "
            "and was cancelled."
        )

    def _open_http(self) -> _Http:
        return _Http()

    async def _cancel(self, http: _Http, base_url: str, headers: dict[str, str], run: dict[str, Any]) -> None:
        with contextlib.suppress(_TransportError):  # if this fails, the server's own timeout still ends the run
            await http.request(
                "POST",
                f"{base_url}/v1/runs/{quote(str(run.get('id', '')), safe='')}/cancel",
                headers=headers,
                timeout_s=10.0,
            )

    async def _inline_images(self, http: _Http, base_url: str, run: dict[str, Any]) -> list[dict[str, str]]:
        """Small image artifacts as data: URLs: Open WebUI shows `files` images only from data: URLs or its
        own origin. Fetched through the artifact's signed link, sent to base_url (the signature covers the
        file and the expiry, not the host), so it works when PUBLIC_BASE_URL is not reachable from here."""
        images: list[dict[str, str]] = []
        for artifact in run.get("artifacts") or []:
            if len(images) >= MAX_INLINE_IMAGES:
                break
            if not isinstance(artifact, dict):
                continue
            content_type = str(artifact.get("content_type") or "").split(";")[0].strip().lower()
            size = artifact.get("bytes")
            if content_type not in INLINE_IMAGE_TYPES or not isinstance(size, int) or size > MAX_INLINE_IMAGE_BYTES:
                continue
            url = _fetch_url(base_url, artifact)
            if url is None:
                continue
            try:
                reply = await http.request("GET", url, headers={}, timeout_s=15.0, max_bytes=MAX_INLINE_IMAGE_BYTES)
            except _TransportError:
                continue  # the link in the text still works for the user
            if reply.status != 200 or len(reply.body) > MAX_INLINE_IMAGE_BYTES or not reply.body:
                continue
            encoded = base64.b64encode(reply.body).decode("ascii")
            images.append(
                {"type": "image", "url": f"data:{content_type};base64,{encoded}", "name": str(artifact.get("filename"))}
            )
        return images


# ---- helpers (module level: Open WebUI turns every public method of Tools into a tool) ------------


def _language(value: Any) -> str | None:
    name = str(value or "").strip().lower()
    name = ALIASES.get(name, name)
    return name if name in LANGUAGES else None


def _strip_fence(code: str) -> str:
    """Models sometimes wrap the program in a Markdown fence; the interpreter must not see it."""
    stripped = code.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        inner = stripped[3:-3]
        return inner.split("\n", 1)[1] if "\n" in inner else inner
    return code


def _user_api_key(user: dict[str, Any] | None) -> str:
    valves = (user or {}).get("valves") if isinstance(user, dict) else None
    key = valves.get("api_key") if isinstance(valves, dict) else getattr(valves, "api_key", None)
    return str(key).strip() if key else ""


def _metadata(user: dict[str, Any] | None) -> dict[str, str]:
    """Echoed by codeexec and kept with the run, so an operator can tell whose chat ran it."""
    metadata = {"client": "open-webui"}
    if isinstance(user, dict) and user.get("id"):
        metadata["openwebui_user_id"] = str(user["id"])[:512]
    return metadata


async def _failed(events: _Events, status: str, text: str) -> str:
    await events.status(status, done=True)
    return text


async def _run_from_reply(reply: _Reply, base_url: str, events: _Events) -> dict[str, Any] | str:
    """The run in a JSON answer to POST /v1/runs, or the error text for it."""
    if reply.status not in (200, 202):
        return await _failed(
            events, f"codeexec: HTTP {reply.status}", _http_error_message(reply, urlsplit(base_url).hostname)
        )
    run = _json(reply.body)
    if not isinstance(run, dict):
        return await _failed(
            events,
            "codeexec: unreadable answer",
            f"Error: codeexec answered HTTP {reply.status} with a body that is not a run object.",
        )
    return run


def _retrieve(future: asyncio.Future[bytes]) -> None:
    """Marks an abandoned read's outcome as seen, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()


def _last_line(text: str) -> str:
    """The last line with something on it (a carriage return starts a line, as on a terminal), control
    characters blanked, cut to STATUS_LINE_CHARS."""
    for line in reversed(re.split(r"[\r\n]", text)):
        line = re.sub(r"[\x00-\x1f\x7f]", " ", line).strip()
        if line:
            return line if len(line) <= STATUS_LINE_CHARS else line[: STATUS_LINE_CHARS - 1] + "…"
    return ""


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _budget_s(timeout_ms: int) -> float:
    return timeout_ms / 1000 + DEADLINE_SLACK_S


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _fetch_url(base_url: str, artifact: dict[str, Any]) -> str | None:
    signed = urlsplit(str(artifact.get("url") or ""))
    file_id = artifact.get("id")
    if not signed.query or not file_id:
        return None
    return f"{base_url}/v1/files/{quote(str(file_id), safe='')}/content?{signed.query}"


def _transport_message(exc: _TransportError, base_url: str) -> str:
    if exc.kind == "timeout":
        return f"Error: codeexec at {base_url} did not answer in time ({exc.detail}). Try again or with less work."
    hint = ""
    if exc.kind == "connect" and urlsplit(base_url).hostname in ("localhost", "127.0.0.1", "::1"):
        hint = (
            " If Open WebUI runs in Docker, localhost is its own container: an admin should set base_url "
            "to http://host.docker.internal:8080."
        )
    return f"Error: cannot reach codeexec at {base_url} ({exc.detail}); the code was not run.{hint}"


def _http_error_message(reply: _Reply, host: str | None = None) -> str:
    envelope = _json(reply.body)
    error = envelope.get("error") if isinstance(envelope, dict) else None
    # Django refuses a Host header missing from ALLOWED_HOSTS with a bare 400 (codeexec's handler makes it
    # `bad_request` when DEBUG=0); the usual cause when Open WebUI reaches codeexec by a new name.
    hint = ""
    if reply.status == 400 and host and (not isinstance(error, dict) or error.get("code") == "bad_request"):
        hint = f" An admin should check that {host!r} is in codeexec's ALLOWED_HOSTS."
    if not isinstance(error, dict):
        return f"Error: codeexec answered HTTP {reply.status} without an error message.{hint} The code was not run."
    message = str(error.get("message") or "").strip()
    code = error.get("code") or error.get("type") or "error"
    param = f", param {error['param']}" if error.get("param") else ""
    retry = reply.headers.get("retry-after")
    if reply.status == 401:
        return (
            f"Error: codeexec rejected the API key (401 {code}): {message} An admin must set a valid api_key in "
            "the tool's Valves, or the user their own in User Valves. The code was not run."
        )
    if reply.status == 429 or reply.status == 503:
        when = f" Retry after {retry} s." if retry else " Retry later."
        return f"Error: codeexec is busy or rate-limited ({reply.status} {code}): {message}{when} The code was not run."
    return f"Error: codeexec refused the run ({reply.status} {code}{param}): {message}{hint} The code was not run."


def _status_line(run: dict[str, Any], lang: str) -> str:
    status = run.get("status")
    wall_ms = (run.get("usage") or {}).get("wall_ms")
    took = f" in {wall_ms} ms" if isinstance(wall_ms, int) else ""
    if status == "succeeded":
        return f"{lang}: succeeded{took}"
    if status == "failed":
        return f"{lang}: failed (exit code {run.get('exit_code')}){took}"
    return f"{lang}: {status}{took}"


def _outcome(run: dict[str, Any]) -> str:
    status = run.get("status")
    error = run.get("error") or {}
    code = error.get("code") if isinstance(error, dict) else None
    message = str(error.get("message") or "") if isinstance(error, dict) else ""
    limits = run.get("limits") or {}
    if status == "succeeded":
        return "succeeded, exit code 0"
    if status == "failed" and code == "compile_error":
        return "failed: the Go build failed (compiler output in stderr)"
    if status == "failed":
        signal = f", signal {run['signal']}" if run.get("signal") else ""
        return f"failed, exit code {run.get('exit_code')}{signal}"
    if status == "timeout":
        which = "CPU time" if code == "cpu_timeout" else "wall-clock"
        limit = limits.get("cpu_ms") if code == "cpu_timeout" else limits.get("timeout_ms")
        return f"timeout: the {which} limit{f' of {limit} ms' if limit else ''} was reached and the program was killed"
    if status == "oom":
        limit = limits.get("memory_mb")
        return f"out of memory: the memory limit{f' of {limit} MiB' if limit else ''} was reached"
    if status == "cancelled":
        return "cancelled"
    return f"error in the service ({code or 'unknown'}): {message or 'no detail'}; not the program's fault"


def _cut(text: str, max_chars: int) -> tuple[str, int]:
    """Head and tail of text within max_chars, and how many characters were left out."""
    if len(text) <= max_chars:
        return text, 0
    head = max_chars * 2 // 3
    tail = max_chars - head
    omitted = len(text) - head - tail
    first = text[:head] if text[:head].endswith("\n") else text[:head] + "\n"
    return f"{first}[… {omitted} characters omitted …]\n{text[len(text) - tail :]}", omitted


def _fenced(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text if text.endswith(chr(10)) else text + chr(10)}{fence}"


def _format_run(run: dict[str, Any], lang: str, max_chars: int, shown: set[str]) -> str:
    version = run.get("runtime_version")
    wall_ms = (run.get("usage") or {}).get("wall_ms")
    took = f" in {wall_ms} ms" if isinstance(wall_ms, int) else ""
    lines = [f"Ran {lang}{f' {version}' if version else ''}{took}: {_outcome(run)}."]
    for stream in ("stdout", "stderr"):
        text = run.get(stream) or ""
        if not isinstance(text, str):
            text = str(text)
        if not text:
            lines.append(f"\n{stream}: (empty)")
            continue
        shown_text, omitted = _cut(text, max_chars)
        notes = []
        if omitted:
            notes.append(f"{omitted} of {len(text)} characters omitted here")
        if run.get(f"{stream}_truncated"):
            notes.append("the service stopped capturing at its output limit")
        note = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"\n{stream}{note}:\n{_fenced(shown_text)}")
    artifacts = [a for a in run.get("artifacts") or [] if isinstance(a, dict)]
    if artifacts:
        expires = [a["expires_at"] for a in artifacts if isinstance(a.get("expires_at"), int)]
        until = f", links valid until {datetime.fromtimestamp(min(expires), UTC):%Y-%m-%d %H:%M} UTC" if expires else ""
        lines.append(f"\nFiles written to outputs/{until}:")
        for artifact in artifacts:
            name = str(artifact.get("filename") or artifact.get("path") or "file")
            size = artifact.get("bytes")
            details = [str(artifact.get("content_type") or "application/octet-stream")]
            if isinstance(size, int):
                details.append(_size(size))
            if name in shown:
                details.append("already shown to the user in the chat")
            lines.append(f"- [{name}]({artifact.get('url')}) ({', '.join(details)})")
    return "\n".join(lines)


def _size(num_bytes: int) -> str:
    if num_bytes < 1024:
        return f"{num_bytes} B"
    if num_bytes < 1024 * 1024:
        return f"{num_bytes / 1024:.1f} KiB"
    return f"{num_bytes / 1024 / 1024:.1f} MiB"
