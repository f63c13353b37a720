"""Work spanning several objects: create a run and enqueue it on commit; wait for a run to finish."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import transaction

from files.models import File

from . import redis as cx_redis
from .errors import APIError, not_found
from .models import ApiKey, Run

log = logging.getLogger(__name__)


def create_run(key: ApiKey, data: dict[str, Any], stream: bool = False) -> Run:
    """Store the run and send its id to a worker once the row is committed (`stream`: the worker also
    publishes the run's events to Redis as they happen, for `stream_events`)."""
    refs = data.get("files") or []
    if refs:
        owned = set(
            File.objects.filter(owner=key, public_id__in=[r["file_id"] for r in refs]).values_list(
                "public_id", flat=True
            )
        )
        sizes = dict(File.objects.filter(owner=key, public_id__in=owned).values_list("public_id", "bytes"))
        for i, ref in enumerate(refs):
            if ref["file_id"] not in owned:
                raise not_found("file", param=f"files[{i}].file_id")
        total = sum(sizes[r["file_id"]] for r in refs)
        if total > settings.MAX_INPUT_FILES_BYTES:
            raise APIError(
                f"Input files total {total} bytes, over the limit of {settings.MAX_INPUT_FILES_BYTES}.",
                413,
                code="request_too_large",
                param="files",
            )
        seen: set[str] = set()
        for i, ref in enumerate(refs):
            if ref["path"].casefold() in seen:
                raise APIError(f"Duplicate input path '{ref['path']}'.", param=f"files[{i}].path")
            seen.add(ref["path"].casefold())
    with transaction.atomic():
        admit(key)
        run = Run.objects.create(
            owner=key,
            language=data["language"],
            code=data["code"],
            stdin=data.get("stdin", ""),
            args=data.get("args", []),
            env=data.get("env", {}),
            sources=[{"path": s["path"], "content": s["content"]} for s in data.get("sources") or []],
            input_files=[{"file_id": r["file_id"], "path": r["path"]} for r in refs],
            limits=data["limits"].as_dict(),
            metadata=data.get("metadata", {}),
        )
        transaction.on_commit(lambda: enqueue_run(run.public_id, stream=stream))
    return run


def enqueue_run(run_id: str, stream: bool = False) -> bool:
    """Send a queued run to the workers. The database is the source of truth: when the broker cannot
    take the message, the run stays queued and the janitor sends it again (runs/janitor.py), so the
    caller's answer does not depend on it. Sending twice is harmless (the claim is conditional)."""
    from .tasks import execute_run

    try:
        execute_run.send(run_id, stream=stream)
    except Exception:
        log.warning("run %s: could not send it to the broker; the janitor will", run_id, exc_info=True)
        return False
    return True


def admit(key: ApiKey) -> None:
    """Per-key concurrency cap and global queue cap; call inside the transaction that creates the run.

    Locking the key's row serialises run creation per key, so two requests cannot both pass the cap.
    """
    ApiKey.objects.select_for_update().filter(pk=key.pk).first()
    active = Run.objects.filter(owner=key, status__in=[Run.StatusChoices.QUEUED, Run.StatusChoices.RUNNING]).count()
    if active >= key.max_concurrent_runs:
        raise APIError(
            f"This key already has {active} runs queued or running (its limit is {key.max_concurrent_runs}).",
            429,
            code="concurrency_limit_exceeded",
            headers={"Retry-After": "1"},
        )
    if Run.objects.filter(status=Run.StatusChoices.QUEUED).count() >= settings.MAX_QUEUED_RUNS:
        raise APIError(
            "The server has too many queued runs; retry later.",
            503,
            code="server_overloaded",
            headers={"Retry-After": "5"},
        )


def wait_for_terminal(run: Run, max_wait_s: float) -> Run:
    """Block until the run is terminal or `max_wait_s` passed; woken by the worker's Redis message."""
    if run.is_terminal or max_wait_s <= 0:
        return run
    deadline = time.monotonic() + max_wait_s
    pubsub = cx_redis.client().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(cx_redis.DONE_CHANNEL.format(run_id=run.public_id))
        while True:
            # Subscribed first, then read: a completion between the two cannot be missed.
            run.refresh_from_db()
            remaining = deadline - time.monotonic()
            if run.is_terminal or remaining <= 0:
                return run
            # Wake at least every 5 s to reread the row, in case a message was lost.
            pubsub.get_message(timeout=min(remaining, 5.0))
    finally:
        pubsub.close()


STREAM_BLOCK_MS = 2000
STREAM_KEEPALIVE_S = 15.0


def stream_events(run: Run, max_wait_s: float) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of a streamed run: run.created, run.started, run.output..., run.completed.

    Output chunks come from the worker through a Redis stream, read from its start, so nothing is lost
    to timing; the run objects come from the database. A lost worker message or an expired stream
    cannot hang the reader: the row is reread between reads, and a terminal row ends the stream. After
    `max_wait_s` without the run finishing, the stream ends with `run.completed` of the run as it is
    then (still running; the client polls GET /v1/runs/{id}). ("", {}) items are keep-alives.
    """
    from .render import render_run

    yield "run.created", render_run(run)
    deadline = time.monotonic() + max_wait_s
    last_id, started, completed = "0", False, False
    last_sent = time.monotonic()
    block: int | None = STREAM_BLOCK_MS  # None: the row is terminal, read what is left without waiting
    while not completed and time.monotonic() < deadline:
        events = cx_redis.read_events(run.public_id, last_id, block)
        for event_id, fields in events:
            last_id = event_id
            kind = fields.get("kind")
            if kind == "started" and not started:
                started = True
                run.refresh_from_db()
                yield "run.started", render_run(run)
            elif kind == "output":
                yield "run.output", {"stream": fields.get("stream", "stdout"), "data": fields.get("data", "")}
            elif kind == "completed":
                completed = True
                break
        if events:
            last_sent = time.monotonic()
            continue
        if block is None:
            break
        run.refresh_from_db()
        if run.is_terminal:  # the worker finished without (or before we could read) its last events
            block = None
            continue
        if time.monotonic() - last_sent >= STREAM_KEEPALIVE_S:
            last_sent = time.monotonic()
            yield "", {}
    run.refresh_from_db()
    if not started and run.started_at is not None:
        yield "run.started", render_run(run)
    yield "run.completed", render_run(run)
