"""The execution actor: take an id, claim, run the sandbox, save. Never builds command lines.

A claim holds a lease of RUN_LEASE_SECONDS that the worker renews every third of it while the sandbox
runs; a worker that dies stops renewing, and the janitor (runs/janitor.py) recovers the run once the
lease expired. An attempt that finds its lease taken over kills its sandbox and saves nothing.
"""

from __future__ import annotations

import codecs
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
from django.conf import settings
from django.core.files import File as DjangoFile
from django.db import InterfaceError, OperationalError

from codeexec_site import logs
from files.models import File
from sandbox import ErrorCode, InputFile, InvalidSpec, Limits, RunError, RunResult, RunSpec, SourceFile, Status, Usage
from sandbox.outcome import without_nul
from sandbox.workspace import lock_dir, stale_run_dirs

from . import metrics
from . import redis as cx_redis
from .models import Run
from .sandbox import get_sandbox
from .worker import PRESENCE

log = logging.getLogger(__name__)

CANCEL_POLL_S = 1.0
# Dramatiq's own time limit is a last resort far above any run (it cannot interrupt a syscall).
ACTOR_TIME_LIMIT_MS = 10 * 60 * 1000
# A database that cannot be reached (not a bad query).
DB_DOWN = (InterfaceError, OperationalError)
# A message that met a database outage is retried this many times (backoff 1 s doubling to 30 s: about
# five minutes); past that the janitor re-sends the still-queued run's message.
DB_RETRIES = 12


def lease() -> timedelta:
    """How long a claim holds without renewal (RUN_LEASE_SECONDS)."""
    return timedelta(seconds=settings.RUN_LEASE_SECONDS)


# The lease of the current settings, for callers that claim by hand (tests, tools).
LEASE = lease()


def _retry_when(retries: int, exc: BaseException) -> bool:
    """Retry a message only when the database failed it (the run is then still queued, or its claim is
    kept by the lease); any other failure already ended the run."""
    return isinstance(exc, DB_DOWN) and retries < DB_RETRIES


class _Watch(threading.Thread):
    """Renews the run's lease while it executes and notices cancel requests stored in the database.
    A database outage only delays both; a renewal refused because the janitor gave the run to another
    attempt (or ended it) stops the sandbox: this attempt's result would not be saved anyway."""

    def __init__(self, run: Run, worker: str) -> None:
        super().__init__(name=f"cx-watch-{run.public_id}", daemon=True)
        self.run_obj, self.worker = run, worker
        self.done = threading.Event()

    def run(self) -> None:
        from django.db import connection

        held = lease()
        renew_every_s = held.total_seconds() / 3
        next_renew = time.monotonic() + renew_every_s
        try:
            while not self.done.wait(min(CANCEL_POLL_S, renew_every_s)):
                try:
                    if time.monotonic() >= next_renew:
                        next_renew = time.monotonic() + renew_every_s
                        if not self.run_obj.renew_lease(self.worker, held):
                            log.warning(
                                "run %s: its lease was taken over; stopping its sandbox", self.run_obj.public_id
                            )
                            get_sandbox().cancel(self.run_obj.public_id)
                            return
                    # The pub/sub message usually arrives first; this read covers a lost message.
                    if Run.objects.filter(pk=self.run_obj.pk, cancel_requested_at__isnull=False).exists():
                        get_sandbox().cancel(self.run_obj.public_id)
                        return
                except DB_DOWN:
                    log.warning("run %s: database unavailable to the lease watcher; retrying", self.run_obj.public_id)
                    connection.close()  # a fresh connection on the next try
        except Exception:
            log.warning("lease watcher failed for %s", self.run_obj.public_id, exc_info=True)
        finally:
            connection.close()


def _build_spec(run: Run) -> RunSpec:
    files = []
    wanted = {r["file_id"] for r in run.input_files}
    stored = (
        {f.public_id: f for f in File.objects.filter(owner_id=run.owner_id, public_id__in=wanted)} if wanted else {}
    )
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
    """What saves the run's artifacts with its result (None when it has none)."""
    if not result.artifacts:
        return None
    saved: list[File] = []

    def save() -> None:
        record: File | None = None
        try:
            for artifact in result.artifacts:
                assert artifact.local_path is not None
                record = File(
                    owner_id=run.owner_id,
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
            for done in saved:  # the transaction rolls back the rows; remove the blobs too
                done.blob.delete(save=False)
            if record is not None and record not in saved:
                _remove_partial_blob(record)
            raise

    return save


def _remove_partial_blob(record: File) -> None:
    """A failed save (ENOSPC) can leave a partly written file under the record's name (Django's
    FileSystemStorage does not remove it); the name is the record's own, so nothing else is there."""
    name = record.blob.field.generate_filename(record, record.public_id)
    try:
        if record.blob.storage.exists(name):
            record.blob.storage.delete(name)
    except Exception:
        log.warning("could not remove the partly saved artifact %s", record.public_id, exc_info=True)


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
        text = without_nul(self.decoders[stream].decode(data))
        if text:
            self.emit("output", {"stream": stream, "data": text})

    def flush(self) -> None:
        for stream, decoder in self.decoders.items():
            text = without_nul(decoder.decode(b"", final=True))
            if text:
                self.emit("output", {"stream": stream, "data": text})


@dramatiq.actor(
    max_retries=0,
    retry_when=_retry_when,
    min_backoff=1000,
    max_backoff=30_000,
    time_limit=ACTOR_TIME_LIMIT_MS,
    queue_name="runs",
)
def execute_run(run_id: str, stream: bool = False) -> None:
    """Execute one attempt of a run: a duplicate delivery loses the claim and does nothing.
    With `stream`, its events (started, output chunks, completed) also go to Redis as they happen."""
    with logs.bound(run_id=run_id, key=None):  # every line logged for this run names it and its key
        _execute_run(run_id, stream)


def _execute_run(run_id: str, stream: bool) -> None:
    worker = f"{PRESENCE.id}:{threading.get_ident()}"
    run = Run.claim_queued(run_id, worker, lease())
    if run is None:
        status = Run.objects.filter(public_id=run_id).values_list("status", flat=True).first()
        log.info("run %s not claimed (status %s): duplicate delivery, cancelled or deleted", run_id, status)
        return
    logs.bind(key=getattr(run, "owner_label", None))  # selected by claim_queued with the row
    metrics.run_started(run)
    PRESENCE.track(run_id)
    events = _EventWriter(run_id) if stream else None
    if events is not None:
        events.emit("started")
    watch = _Watch(run, worker)
    watch.start()
    if run.attempts > 1:
        _clear_previous_attempt(run_id)
    # Made only if the run has artifacts (the sandbox creates it for its first one): most runs have none,
    # and a directory made and removed per run cost an inode allocation on the host's filesystem.
    artifacts_dir = _artifacts_root() / f"{run_id}-{uuid.uuid4().hex[:12]}"
    saved = False  # the result is saved and `run` holds it
    done: str | None = None  # the completion message's copy of the saved result
    try:
        try:
            spec = _build_spec(run)
        except (FileNotFoundError, OSError) as exc:
            run.fail(ErrorCode.STORAGE_ERROR.value, f"could not stage input files: {exc}", worker_id=worker)
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
            if saved:
                done = cx_redis.done_payload(run, artifacts=len(result.artifacts))
            else:
                log.warning("run %s: lost its claim before finishing", run_id)
        except DB_DOWN:
            raise  # the lease recovers the run (runs/janitor.py); nothing can be saved now
        except Exception as exc:
            log.exception("run %s: saving the result failed", run_id)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            run.fail(ErrorCode.STORAGE_ERROR.value, f"saving the result failed: {reason}", worker_id=worker)
    except DB_DOWN:
        log.warning("run %s: database unavailable; the run's lease will recover it", run_id, exc_info=True)
        raise
    except Exception as exc:
        log.exception("run %s: execution failed", run_id)
        run.fail(ErrorCode.SANDBOX_ERROR.value, f"the worker failed: {type(exc).__name__}", worker_id=worker)
    finally:
        watch.done.set()
        PRESENCE.untrack(run_id)
        # Counted before the completion is announced, in the same round trip unless events come between.
        # A saved result travels with the message: the waiting request need not reread the row.
        announce = cx_redis.done_message(run_id, done)
        published = metrics.run_finished(run, fresh=saved, publish=announce if events is None else None)
        if events is not None:
            events.flush()
            events.emit("completed")
        try:
            if not published:
                cx_redis.publish_done(run_id, done)
        except Exception:
            log.warning("could not publish completion of %s", run_id, exc_info=True)
        shutil.rmtree(artifacts_dir, ignore_errors=True)  # the result is saved: after the announcement


_artifacts_lock = threading.Lock()
_artifacts_roots: dict[Path, Path] = {}  # the sandbox work dir -> this process's directory in it


def _artifacts_root() -> Path:
    """This worker process's directory (0700) for the artifacts of its runs, each in a directory of its
    own removed once the run's result is saved. It lies in the sandbox work dir (root's, not world
    writable like /tmp, and no temp cleaner ages it) and holds a lock for the process's life: the first
    run of a later process removes the directories of processes that are gone."""
    base = Path(get_sandbox().config.workdir) / "artifacts"
    with _artifacts_lock:
        root = _artifacts_roots.get(base)
        if root is not None and root.is_dir():
            return root
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        for stale in stale_run_dirs(base):  # the same lock protocol as a run's directory
            shutil.rmtree(stale, ignore_errors=True)
        root = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        lock_dir(root)  # held until the process is gone
        _artifacts_roots[base] = root
        return root


def _clear_previous_attempt(run_id: str) -> None:
    """A re-queued run gets the same sandbox names again. Remove what its lost attempt left on this host
    if its process is gone, or wait (at most a lease) while a worker of this host that lost the run but
    is still alive notices its refused renewal and tears its sandbox down."""
    backend = get_sandbox()
    deadline = time.monotonic() + lease().total_seconds()
    waited = False
    while True:
        try:
            backend.cleanup_orphans()
            left = [item for item in backend.leftovers() if run_id in item]
        except Exception:
            log.warning("run %s: could not clean up before its new attempt", run_id, exc_info=True)
            return
        if not left:
            return
        if not waited:
            waited = True
            log.info("run %s: waiting for its previous attempt's sandbox to go: %s", run_id, ", ".join(left))
        if time.monotonic() > deadline:
            log.warning("run %s: its previous attempt's sandbox is still here: %s", run_id, ", ".join(left))
            return
        time.sleep(0.2)
