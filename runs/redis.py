"""Redis for coordination between web and worker processes: run completion, cancel requests, worker heartbeats,
and the event stream of a streamed run.

The database stays the source of truth; these messages only wake waiters sooner, and a stream's events
only carry output as it happens (the final run object is always read from the database). A completion
message may carry the run's saved result (`done_payload`), so a request waiting on it answers without
reading the row again; it is sent only after the row is committed, and is always the row's own values.
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
# A streamed run's events, in a Redis stream: a reader that attaches late still reads from the start.
EVENTS_KEY = "codeexec:run-events:{run_id}"
EVENTS_TTL_S = 15 * 60
EVENTS_MAX = 20_000  # entries kept (approximately); output is capped long before this


@functools.cache
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
    )


# A completion message carries the result only while it is this small (output beyond it is reread).
DONE_PAYLOAD_MAX_CHARS = 64 * 1024
DONE_TIMES = ("started_at", "completed_at")


def done_payload(run: Any, artifacts: int) -> str | None:
    """The saved result of `run` for its completion message, or None when it is too big or has artifacts
    (their signed links need their rows): the waiting request then rereads the row."""
    if artifacts or len(run.stdout) + len(run.stderr) > DONE_PAYLOAD_MAX_CHARS:
        return None
    from .models import Run

    fields = {name: getattr(run, name) for name in Run.RESULT_FIELDS}
    fields.update({name: getattr(run, name).isoformat() for name in DONE_TIMES if getattr(run, name) is not None})
    return json.dumps({"id": run.public_id, "attempts": run.attempts, "run": fields})


def apply_done_payload(run: Any, message: Any) -> bool:
    """Set on `run` the result a completion message carries; False when it carries none (or another run's)."""
    from datetime import datetime

    from .models import Run

    data = message.decode() if isinstance(message, bytes) else message
    if not isinstance(data, str) or not data.startswith("{"):
        return False
    try:
        payload = json.loads(data)
        fields = payload["run"]
        if payload["id"] != run.public_id or not set(Run.RESULT_FIELDS) <= fields.keys():
            return False
        times = {name: datetime.fromisoformat(fields[name]) for name in DONE_TIMES if fields.get(name)}
    except (ValueError, KeyError, TypeError):
        return False
    for name in Run.RESULT_FIELDS:
        setattr(run, name, fields[name])
    for name, value in times.items():
        setattr(run, name, value)
    run.attempts = payload.get("attempts", run.attempts)
    run.done_from_message = True  # render without querying artifacts: a result with some is not sent
    return True


def done_message(run_id: str, payload: str | None = None) -> tuple[str, str]:
    """(channel, message) announcing that a run ended; the message carries `payload` when given."""
    return DONE_CHANNEL.format(run_id=run_id), payload or "done"


def publish_done(run_id: str, payload: str | None = None) -> None:
    client().publish(*done_message(run_id, payload))


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


def append_event(run_id: str, kind: str, fields: dict[str, str] | None = None) -> None:
    """Add one event (`started`, `output`, `completed`) to the run's stream; it expires on its own."""
    key = EVENTS_KEY.format(run_id=run_id)
    pipe = client().pipeline(transaction=False)
    entry: dict[str, str] = {"kind": kind, **(fields or {})}
    pipe.xadd(key, entry, maxlen=EVENTS_MAX, approximate=True)  # type: ignore[arg-type]
    pipe.expire(key, EVENTS_TTL_S)
    pipe.execute()


def read_events(run_id: str, after: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
    """Events after the id `after` ("0" for all), waiting up to `block_ms` for the first one (None: no wait;
    never 0, which would make Redis wait forever)."""
    answer: Any = client().xread({EVENTS_KEY.format(run_id=run_id): after}, count=200, block=block_ms or None)
    events = []
    for _key, entries in answer or []:
        for event_id, fields in entries:
            events.append((event_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}))
    return events
