"""End to end: `POST /v1/runs` with `wait: true` (python hello world) against the bench's private stack,
each request timed alternately with the bare interpreter."""

from __future__ import annotations

import http.client
import json

from .bare import Bare
from .common import EXPECTED_STDOUT, HELLO, BenchError, alternate, progress
from .stack import Stack

BODY = json.dumps({"language": "python", "code": HELLO["python"], "wait": True}).encode()
WARM_REQUESTS = 5


class Client:
    """Posts hello world runs to a stack; one connection per request, as most API clients do."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.stack.host, self.stack.port, timeout=60)
        try:
            conn.request("POST", "/v1/runs", body=BODY, headers=self.headers)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        run = json.loads(body) if body.startswith(b"{") else {}
        if response.status != 200 or run.get("status") != "succeeded" or run.get("stdout") != EXPECTED_STDOUT:
            raise BenchError(f"POST /v1/runs answered {response.status}: {body[:1000]!r}")


def measure(client: Client, bare: Bare, requests: int) -> list[float]:
    """Latencies in ms of `requests` sequential runs through the API."""
    for _ in range(WARM_REQUESTS):  # the first requests open database connections, import views
        client.run()
    progress(f"e2e: {requests} requests (wait: true), alternating with bare python")
    times = alternate({"api": client.run, "bare": bare.action("python")}, requests)
    bare.keep("python", times["bare"])
    return times["api"]
