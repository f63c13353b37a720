"""Work spanning several objects: create a run and enqueue it on commit; wait for a run to finish."""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction

from codeexec_site import logs
from files.models import File

from . import redis as cx_redis
from .errors import APIError, not_found
from .models import ApiKey, Run

log = logging.getLogger(__name__)


def create_run(key: ApiKey, data: dict[str, Any], stream: bool = False, public_id: str | None = None) -> Run:
    """Store the run and send its id to a worker once the row is committed (`stream`: the worker also
    publishes the run's events to Redis as they happen, for `stream_events`). `public_id`: an id made
    beforehand with new_run_id (to subscribe to its completion first)."""
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
    run = Run(
        **({"public_id": public_id} if public_id else {}),
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
    insert_if_admitted(key, run)
    transaction.on_commit(lambda: enqueue_run(run.public_id, stream=stream))  # now, unless in an atomic block
    logs.bind(run_id=run.public_id)  # the rest of the request's log lines name the run
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


@functools.cache
def _admit_and_insert() -> tuple[str, tuple[Any, ...]]:
    """The SQL of insert_if_admitted, built once from the models' metadata, and the run fields it inserts."""
    quote = connection.ops.quote_name
    runs, keys = quote(Run._meta.db_table), quote(ApiKey._meta.db_table)
    fields = tuple(field for field in Run._meta.concrete_fields if not field.primary_key)
    columns = ", ".join(quote(field.column) for field in fields)
    # Each value cast to its column's type (without a length, so an over-long value fails, not truncates):
    # in INSERT ... SELECT a NULL or a plain literal would otherwise be text.
    values = ", ".join(f"%s::{re.sub(r'[(].*[)]', '', str(field.db_type(connection)))}" for field in fields)
    sql = (
        f"SELECT 1 FROM {keys} WHERE id = %s FOR UPDATE; "  # noqa: S608
        "WITH counts AS (SELECT count(*) FILTER (WHERE owner_id = %s) AS active, "
        f"count(*) FILTER (WHERE status = %s) AS queued FROM {runs} WHERE status IN (%s, %s)), "
        f"created AS (INSERT INTO {runs} ({columns}) SELECT {values} FROM counts "
        "WHERE counts.active < %s AND counts.queued < %s RETURNING id) "
        "SELECT counts.active, counts.queued, (SELECT id FROM created) FROM counts"
    )
    return sql, fields


def insert_if_admitted(key: ApiKey, run: Run) -> None:
    """Insert `run` if the key's concurrency cap and the global queue cap allow it, else raise 429 / 503.

    One round trip: two statements in one query string, which PostgreSQL runs as one transaction. The
    first locks the key's row, so run creation is serialised per key and two requests cannot both pass
    the cap; the second is a statement of its own, so its snapshot, taken after the lock, sees the runs
    committed meanwhile; it counts and inserts only below both caps. (Through the ORM this was BEGIN, the
    lock, the count, the INSERT and COMMIT: five round trips and about 1.5 ms of CPU on every run.)
    """
    sql, fields = _admit_and_insert()
    values = [field.get_db_prep_save(field.pre_save(run, True), connection) for field in fields]
    queued, running = Run.StatusChoices.QUEUED.value, Run.StatusChoices.RUNNING.value
    params = [key.pk, key.pk, queued, queued, running, *values, key.max_concurrent_runs, settings.MAX_QUEUED_RUNS]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.nextset()
        active, _queued, pk = cursor.fetchone()
    if pk is not None:
        run.pk = pk
        run._state.adding = False
        run._state.db = connection.alias
        return
    if active >= key.max_concurrent_runs:
        raise APIError(
            f"This key already has {active} runs queued or running (its limit is {key.max_concurrent_runs}).",
            429,
            code="concurrency_limit_exceeded",
            headers={"Retry-After": "1"},
        )
    raise APIError(
        "The server has too many queued runs; retry later.",
        503,
        code="server_overloaded",
        headers={"Retry-After": "5"},
    )


# Each server thread keeps one Redis pub/sub connection for the runs it waits on, one after another: a
# connection per wait cost a TCP connect and its handshake (~1 ms) on every `wait: true` request.
_thread_pubsub = threading.local()


def _pubsub() -> Any:
    pubsub = getattr(_thread_pubsub, "pubsub", None)
    if pubsub is None:
        pubsub = _thread_pubsub.pubsub = cx_redis.client().pubsub()  # type: ignore[no-untyped-call]
    return pubsub


def _drop_pubsub() -> None:
    """Close this thread's connection (after an error: the next wait starts on a new one)."""
    pubsub = getattr(_thread_pubsub, "pubsub", None)
    _thread_pubsub.pubsub = None
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:
            log.debug("closing a pub/sub connection failed", exc_info=True)


class RunWaiter:
    """Subscribed to a run's completion message from its creation on, so no later completion is missed
    (a context manager: the subscription ends with the block; its connection stays with the thread)."""

    def __init__(self, run_id: str) -> None:
        self.channel = cx_redis.DONE_CHANNEL.format(run_id=run_id)
        reused = getattr(_thread_pubsub, "pubsub", None) is not None
        try:
            self._subscribe()
        except redis.RedisError:
            if not reused:
                raise
            self._subscribe()  # the thread's connection died with an earlier Redis: once on a new one

    def _subscribe(self) -> None:
        self.pubsub = _pubsub()
        try:
            self.pubsub.subscribe(self.channel)
        except BaseException:
            _drop_pubsub()
            raise

    def __enter__(self) -> RunWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        if getattr(_thread_pubsub, "pubsub", None) is not self.pubsub:
            return  # dropped after an error: unsubscribing would only open a connection again
        try:
            self.pubsub.unsubscribe(self.channel)
        except Exception:
            _drop_pubsub()

    def wait(self, run: Run, max_wait_s: float, fresh: bool = False) -> Run:
        """Block until the run is terminal or `max_wait_s` passed; the row is reread when the worker's
        message arrives, at least every 5 s (in case a message was lost), and first unless `fresh`
        (the caller made the row after subscribing)."""
        deadline = time.monotonic() + max_wait_s
        stale = not fresh
        while True:
            if stale:
                run.refresh_from_db()
            remaining = deadline - time.monotonic()
            if run.is_terminal or remaining <= 0:
                return run
            try:
                message = self.pubsub.get_message(timeout=min(remaining, 5.0))
            except redis.RedisError:
                # A connection that was already dead when reused, or Redis restarted meanwhile: subscribe
                # on a new one (or fail, if Redis is down), then reread the row for what was missed.
                _drop_pubsub()
                self._subscribe()
                stale = True
                continue
            except BaseException:
                _drop_pubsub()
                raise
            if message is None:
                stale = True
            elif message.get("type") != "message" or _text(message.get("channel")) != self.channel:
                # Confirmations, and what an earlier wait of this thread left (its unsubscribe, a message
                # that crossed it), say nothing about this run.
                stale = False
            else:  # the worker's message: the saved result itself, or only a wake-up to reread the row
                stale = not cx_redis.apply_done_payload(run, message.get("data"))


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def wait_for_terminal(run: Run, max_wait_s: float) -> Run:
    """Block until the run is terminal or `max_wait_s` passed; woken by the worker's Redis message."""
    if run.is_terminal or max_wait_s <= 0:
        return run
    with RunWaiter(run.public_id) as waiter:  # subscribed, then the row is read: nothing can be missed
        return waiter.wait(run, max_wait_s)


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
