"""What a worker process keeps beside its actors: an identity, a heartbeat, and an ear for cancels.

A Dramatiq middleware starts both threads when the worker boots (also for an in-process
`dramatiq.Worker` in tests). The heartbeat publishes the backend's health and runtime versions to
Redis, which is how /readyz and /v1/runtimes know that runs can execute and what runs them.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from . import redis as cx_redis

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_TTL_S = 30


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerPresence:
    """One per worker process."""

    def __init__(self) -> None:
        self.id = worker_id()
        # run id -> attempts executing here (two while a lost attempt still tears down beside its successor)
        self.local_runs: collections.Counter[str] = collections.Counter()
        self.cancel_requested: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.backend_ok = False
        self.backend_error = ""
        self.versions: dict[str, str] = {}

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for target, name in ((self._heartbeat_loop, "cx-heartbeat"), (self._cancel_loop, "cx-cancel")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # runs executing here, so a cancel message can reach their sandbox
    def track(self, run_id: str) -> None:
        with self._lock:
            self.local_runs[run_id] += 1

    def untrack(self, run_id: str) -> None:
        with self._lock:
            self.local_runs[run_id] -= 1
            if self.local_runs[run_id] <= 0:
                del self.local_runs[run_id]
                self.cancel_requested.discard(run_id)

    def cancel_local(self, run_id: str) -> None:
        from .sandbox import get_sandbox

        with self._lock:
            if run_id not in self.local_runs:
                return
            self.cancel_requested.add(run_id)
        get_sandbox().cancel(run_id)

    def check_backend(self) -> None:
        from .sandbox import get_sandbox

        try:
            backend = get_sandbox()
            backend.check()
            self.versions = backend.versions()
            self.backend_ok, self.backend_error = True, ""
        except Exception as exc:
            log.exception("sandbox backend check failed")
            self.backend_ok, self.backend_error = False, str(exc)[:500]

    def heartbeat_payload(self) -> dict[str, Any]:
        from django.conf import settings

        return {
            "worker_id": self.id,
            "backend": settings.SANDBOX_BACKEND,
            "ok": self.backend_ok,
            "error": self.backend_error,
            "versions": self.versions,
            "at": int(time.time()),
            "running": len(self.local_runs),
        }

    def _heartbeat_loop(self) -> None:
        self.check_backend()
        while not self._stop.is_set():
            try:
                cx_redis.write_heartbeat(self.id, self.heartbeat_payload(), HEARTBEAT_TTL_S)
            except Exception:
                log.warning("heartbeat to Redis failed", exc_info=True)
            self._stop.wait(HEARTBEAT_INTERVAL_S)
        try:
            cx_redis.client().delete(cx_redis.WORKER_KEY.format(worker_id=self.id))
        except Exception:
            log.debug("could not remove the heartbeat key", exc_info=True)

    def _cancel_loop(self) -> None:
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = cx_redis.client().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(cx_redis.CANCEL_CHANNEL)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self.cancel_local(data.decode() if isinstance(data, bytes) else str(data))
            except Exception:
                log.warning("cancel listener lost Redis; retrying", exc_info=True)
                self._stop.wait(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        log.debug("closing the cancel subscription failed", exc_info=True)


PRESENCE = WorkerPresence()


class WorkerPresenceMiddleware(Middleware):
    """Starts and stops the process's WorkerPresence and periodic jobs (runs/scheduler.py: the janitor
    runs once now and then periodically) with the Dramatiq worker."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from .sandbox import get_sandbox
        from .scheduler import SCHEDULER

        PRESENCE.start()
        try:
            SCHEDULER.start()
        except Exception:
            log.exception("could not start the periodic jobs (janitor); crashed runs are not recovered here")
        try:
            get_sandbox().start_pool()  # warm sandboxes for the commonest runs (SANDBOX_WARM_POOL)
        except Exception:
            log.exception("could not start the warm sandbox pool; runs take the cold path")

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from .sandbox import get_sandbox
        from .scheduler import SCHEDULER

        SCHEDULER.stop()
        PRESENCE.stop()
        get_sandbox().close()

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        from django.db import reset_queries

        # With DEBUG=1 Django logs every query of a connection until a web request clears it; a worker
        # has no requests, so without this its memory grows with every run (about 4 KiB each).
        reset_queries()
