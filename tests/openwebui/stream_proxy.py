"""A loopback HTTP proxy in front of the live stack that spoils event streams on purpose, so the tool's
fallback to polling meets a real broken stream. The first path segment picks what it does:

- `/cut/...`: a streamed `POST /v1/runs` is relayed up to its `run.started` event, then the proxy sends
  part of a chunk and closes the connection (a chunked body never finished, as when something in between
  gives up on a long response);
- `/garbage/...`: after `run.started` it slips in a `run.output` event whose data is not JSON;
- anything else (`/pass/...`) and every other request: relayed unchanged.

It records each request it saw as (mode, method, path) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

RELAYED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding"}


class StreamProxy:
    """Started with `with StreamProxy(upstream) as proxy:`; `proxy.url` is its base."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname == "127.0.0.1" and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="stream-proxy", daemon=True)

    def __enter__(self) -> StreamProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def record(self, mode: str, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((mode, method, path))

    def seen(self, mode: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(method, path) for seen_mode, method, path in self.requests if seen_mode == mode]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: the test asserts on `requests`

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        mode, _, rest = self.path.lstrip("/").partition("/")
        path = "/" + rest
        self.server.proxy.record(mode, method, path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {name: self.headers[name] for name in RELAYED_HEADERS if self.headers.get(name)}
        upstream = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=120)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            if (response.getheader("Content-Type") or "").startswith("text/event-stream"):
                self._relay_stream(mode, response)
            else:
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the tool hung up first (it stops reading a garbage stream)
        finally:
            upstream.close()  # a run goes on without its reader

    def _relay_stream(self, mode: str, response: http.client.HTTPResponse) -> None:
        self.send_response(200)
        self.send_header("Content-Type", response.getheader("Content-Type") or "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        event = ""
        while True:
            line = response.readline()
            if not line:
                self.wfile.write(b"0\r\n\r\n")
                return
            self._chunk(line)
            if line.startswith(b"event: "):
                event = line[len(b"event: ") :].strip().decode()
            elif line.strip() == b"":
                if event == "run.started" and mode == "cut":
                    self.wfile.write(b"10\r\nevent: run.o")  # 16 bytes announced, 12 sent, then gone
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if event == "run.started" and mode == "garbage":
                    self._chunk(b"event: run.output\ndata: {not json\n\n")
                event = ""

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
