"""Work spanning several objects: create a run and enqueue it on commit; wait for a run to finish."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import transaction

from files.models import File

from . import redis as cx_redis
from .errors import APIError, not_found
from .models import ApiKey, Run


def create_run(key: ApiKey, data: dict[str, Any]) -> Run:
    """Store the run and send its id to a worker once the row is committed."""
    from .tasks import execute_run

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
        transaction.on_commit(lambda: execute_run.send(run.public_id))
    return run


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
