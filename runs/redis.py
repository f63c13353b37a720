"""Redis for coordination between web and worker processes: run completion, cancel requests, worker heartbeats.

The database stays the source of truth; these messages only wake waiters sooner.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import redis
from django.conf import settings

DONE_CHANNEL = "codeexec:run-done:{run_id}"
CANCEL_CHANNEL = "codeexec:cancel"
WORKER_KEY = "codeexec:worker:{worker_id}"
WORKER_PATTERN = "codeexec:worker:*"


@functools.cache
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
    )


def publish_done(run_id: str) -> None:
    client().publish(DONE_CHANNEL.format(run_id=run_id), "done")


def publish_cancel(run_id: str) -> None:
    client().publish(CANCEL_CHANNEL, run_id)


def write_heartbeat(worker_id: str, payload: dict[str, Any], ttl_s: int) -> None:
    client().set(WORKER_KEY.format(worker_id=worker_id), json.dumps(payload), ex=ttl_s)


def live_workers() -> list[dict[str, Any]]:
    r = client()
    keys = list(r.scan_iter(match=WORKER_PATTERN, count=100))
    found = []
    for raw in r.mget(keys) if keys else []:
        if raw:
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
    return found
