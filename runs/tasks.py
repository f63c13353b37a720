"""The execution actor: take an id, claim, run the sandbox, save. Never builds command lines."""

from __future__ import annotations

import codecs
import logging
import shutil
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
from django.core.files import File as DjangoFile

from codeexec_site import logs
from files.models import File
from sandbox import ErrorCode, InputFile, InvalidSpec, Limits, RunError, RunResult, RunSpec, SourceFile, Status, Usage

from . import metrics
from . import redis as cx_redis
from .models import Run
from .sandbox import get_sandbox
from .worker import PRESENCE

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)
LEASE_RENEW_S = 10.0
CANCEL_POLL_S = 1.0
# Dramatiq's own time limit is a last resort far above any run (it cannot interrupt a syscall).
ACTOR_TIME_LIMIT_MS = 10 * 60 * 1000


class _Watch(threading.Thread):
    """Renews the run's lease while it executes and notices cancel requests stored in the database."""

    def __init__(self, run: Run, worker: str) -> None:
        super().__init__(name=f"cx-watch-{run.public_id}", daemon=True)
        self.run_obj, self.worker = run, worker
        self.done = threading.Event()

    def run(self) -> None:
        from django.db import connection

        last_renew = 0.0
        elapsed = 0.0
        try:
            while not self.done.wait(CANCEL_POLL_S):
                elapsed += CANCEL_POLL_S
                if elapsed - last_renew >= LEASE_RENEW_S:
                    last_renew = elapsed
                    self.run_obj.renew_lease(self.worker, LEASE)
                # The pub/sub message usually arrives first; this read covers a lost message.
                if Run.objects.filter(pk=self.run_obj.pk, cancel_requested_at__isnull=False).exists():
                    get_sandbox().cancel(self.run_obj.public_id)
                    return
        except Exception:
            log.warning("lease watcher failed for %s", self.run_obj.public_id, exc_info=True)
        finally:
            connection.close()


def _build_spec(run: Run) -> RunSpec:
    files = []
    wanted = {r["file_id"] for r in run.input_files}
    stored = {f.public_id: f for f in File.objects.filter(owner=run.owner, public_id__in=wanted)}
    for ref in run.input_files:  # one file may be staged at several paths
        f = stored.get(ref["file_id"])
        if f is None:
            raise FileNotFoundError(f"input file {ref['file_id']} no longer exists")
        files.append(InputFile(path=ref["path"], size=f.bytes, open=f.blob.open))
    return RunSpec(
        language=run.language,
        code=run.code,
        sources=[SourceFile(**s) for s in run.sources],
        stdin=run.stdin,
        args=list(run.args),
        env=dict(run.env),
        files=files,
        limits=Limits(**run.limits),
        run_id=run.public_id,
    )


def _artifact_saver(run: Run, result: RunResult) -> Any:
    saved: list[File] = []

    def save() -> None:
        try:
            for artifact in result.artifacts:
                assert artifact.local_path is not None
                record = File(
                    owner=run.owner,
                    filename=Path(artifact.path).name,
                    bytes=artifact.bytes,
                    purpose=File.Purpose.RUN_ARTIFACT,
                    content_type=artifact.content_type,
                    sha256=artifact.sha256,
                    run=run,
                    path=artifact.path,
                )
                with open(artifact.local_path, "rb") as fh:
                    record.blob.save(record.public_id, DjangoFile(fh), save=False)
                saved.append(record)
                record.save()
        except Exception:
            for record in saved:  # the transaction rolls back the rows; remove the blobs too
                record.blob.delete(save=False)
            raise

    return save


class _EventWriter:
    """A streamed run's events into Redis as they happen. Output arrives as the supervisor keeps it
    (already within the caps) and is decoded incrementally, so a character split between two reads
    is not mangled. Redis trouble never fails the run: the stream just stops, and the final run object
    comes from the database anyway."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.ok = True
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}

    def emit(self, kind: str, fields: dict[str, str] | None = None) -> None:
        if not self.ok:
            return
        try:
            cx_redis.append_event(self.run_id, kind, fields)
        except Exception:
            self.ok = False
            log.warning("run %s: could not stream its %s event; streaming stops", self.run_id, kind, exc_info=True)

    def output(self, stream: str, data: bytes) -> None:
        text = self.decoders[stream].decode(data)
        if text:
            self.emit("output", {"stream": stream, "data": text})

    def flush(self) -> None:
        for stream, decoder in self.decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                self.emit("output", {"stream": stream, "data": text})


@dramatiq.actor(max_retries=0, time_limit=ACTOR_TIME_LIMIT_MS, queue_name="runs")
def execute_run(run_id: str, stream: bool = False) -> None:
    """Execute one run at most once: a duplicate delivery loses the claim and does nothing.
    With `stream`, its events (started, output chunks, completed) also go to Redis as they happen."""
    with logs.bound(run_id=run_id, key=None):  # every line logged for this run names it and its key
        _execute_run(run_id, stream)


def _execute_run(run_id: str, stream: bool) -> None:
    run = Run.objects.select_related("owner").filter(public_id=run_id).first()
    if run is None:
        return
    logs.bind(key=run.owner.label)
    worker = f"{PRESENCE.id}:{threading.get_ident()}"
    if not run.claim(worker, LEASE):
        log.info("run %s not claimed (status %s): duplicate delivery or cancelled", run_id, run.status)
        return
    metrics.run_started(run)
    PRESENCE.track(run_id)
    events = _EventWriter(run_id) if stream else None
    if events is not None:
        events.emit("started")
    watch = _Watch(run, worker)
    watch.start()
    artifacts_dir = Path(tempfile.mkdtemp(prefix=f"cx-artifacts-{run_id}-"))
    saved = False  # the result is saved and `run` holds it
    try:
        try:
            spec = _build_spec(run)
        except (FileNotFoundError, OSError) as exc:
            run.fail(ErrorCode.STORAGE_ERROR.value, f"could not stage input files: {exc}")
            return
        backend = get_sandbox()
        try:
            result = backend.run(spec, artifacts_dir=artifacts_dir, on_output=events.output if events else None)
            result.runtime_version = backend.version(run.language)
        except InvalidSpec as exc:
            result = RunResult(status=Status.ERROR, error=RunError(ErrorCode.SANDBOX_ERROR, exc.message), usage=Usage())
        if result.status == Status.ERROR and run_id in PRESENCE.cancel_requested:
            result.status, result.error = Status.CANCELLED, RunError(ErrorCode.CANCELLED, "The run was cancelled.")
        try:
            saved = run.finish(result, worker, save_artifacts=_artifact_saver(run, result))
            if not saved:
                log.warning("run %s: lost its claim before finishing", run_id)
        except Exception as exc:
            log.exception("run %s: saving the result failed", run_id)
            run.fail(ErrorCode.STORAGE_ERROR.value, f"saving the result failed: {type(exc).__name__}")
    except Exception as exc:
        log.exception("run %s: execution failed", run_id)
        run.fail(ErrorCode.SANDBOX_ERROR.value, f"the worker failed: {type(exc).__name__}")
    finally:
        watch.done.set()
        PRESENCE.untrack(run_id)
        shutil.rmtree(artifacts_dir, ignore_errors=True)
        # Counted before the completion is announced: a client that waited then sees it counted.
        metrics.run_finished(run, fresh=saved)
        if events is not None:
            events.flush()
            events.emit("completed")
        try:
            cx_redis.publish_done(run_id)
        except Exception:
            log.warning("could not publish completion of %s", run_id, exc_info=True)
