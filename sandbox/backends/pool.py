"""Warm sandboxes: started ahead of their run, each used by one run, then gone.

Starting a sandbox costs time a run should not wait for: bwrap's namespaces and mounts, a container's
create and start, the run's tmpfs, the move into a cgroup. With start_pool(), one thread keeps
`config.warm_pool` sandboxes per interpreted language started and blocked before the program, for the
commonest run: the default disk size, no args, no env, no input files. The backend starts them with
its cold path's own code and the pool's default limits. A run that fits takes one and keeps its
directory and names (the sandbox may still be setting itself up, so nothing is renamed): its limits are
written into the sandbox's cgroup and its counters reset, its sources go into /work, and only then is
the program released. Anything else takes the cold path. A warm sandbox is never reused; the thread
starts another once runs have been quiet for REFILL_QUIET_S, or at once when its language has none left.

With `config.warm_prestart`, a warm sandbox goes one step further: it is released at once, and
its interpreter starts with the run's own argv and environment and stops where it opens its entry file,
which is a pipe until a run comes. Once the interpreter holds the pipe open, the entry file becomes a
regular file with the program, the program goes into the pipe, and the end of file lets the interpreter
run it: the interpreter's start is off the run's path too, and, like bwrap's own set-up, not in the
run's wall or CPU time. A run whose program an interpreter would read differently from a pipe, that
brings a file the interpreter reads as it starts, or whose lower limits the start did not keep within,
takes another sandbox (`_fits`). A run that comes while the interpreter is still starting waits for the
rest of it.

The same entries serve a compiled language's run step: `_prestart_run_step` starts it, with the run's
own limits, on a long-lived thread while the compiler runs, and the run step takes it as a warm one
(or the cold way if the compile failed to leave it alive); a compile that fails discards it.

A backend supplies `_start_warm_entry` (start one, blocked) and a WarmEntry with `alive()` and
`discard()`; its `_step` asks `_warm_for_step` whether the run brought a warm sandbox for this step.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from ..cgroups import RunCgroup
from ..errors import SandboxUnavailable
from ..languages import Language, all_languages
from ..limits import MIB
from ..spec import RunSpec
from ..workspace import Workspace
from .base import SandboxConfig
from .steps import Step, StepBackend

log = logging.getLogger(__name__)

# A taken warm sandbox is replaced once runs have been quiet this long (about when the worker has saved and
# announced the result), or at once when its language has none left. Starting one costs ~10 ms of CPU:
# taken while the waiting client is answered it delays little; taken later (30 ms was tried) it met the
# next request of a client that sends one run after another, and end-to-end p50 grew by ~5 ms.
REFILL_QUIET_S = 0.005
# After a failed start the thread waits this long, doubling up to the maximum (an engine that is down).
RETRY_S, RETRY_MAX_S = 1.0, 30.0
WARM_PREFIX = "warm-"
# A started interpreter's program pipe: how often a run whose interpreter is still starting checks whether
# it has opened its end yet, and what the pipe is grown to for a program longer than the kernel's default
# of 64 KiB (MAX_CODE_BYTES is 256 KiB by default); a longer program takes another sandbox.
SOURCE_POLL_S = 0.001
SOURCE_PIPE_BYTES = 1 << 20
# In a taken sandbox's directory: the run's id, so a cancel from another process finds the directory.
TAKEN_BY = "taken-by"


@dataclasses.dataclass
class WarmEntry:
    """A sandbox started ahead of its run, blocked before the program; the backend's subclass holds it."""

    language: str
    disk_mb: int
    fsize: int
    argv: tuple[str, ...]
    env: dict[str, str]
    ws: Workspace
    cgroup: RunCgroup = dataclasses.field(kw_only=True)  # its processes' group, with the pool's limits until taken
    used: bool = dataclasses.field(default=False, kw_only=True)
    # None: blocked before its interpreter. Otherwise its interpreter is started and waits for the program
    # on this pipe, its entry file in /work (a started interpreter).
    source_pipe: Path | None = dataclasses.field(default=None, kw_only=True)

    # Processes of the sandbox's own in its group, beside the program's (bwrap's two).
    own_pids: ClassVar[int] = 0

    @property
    def name(self) -> str:
        return self.ws.run_dir.name

    @property
    def source_pipe_bytes(self) -> int:
        """How long a program the started interpreter's pipe takes (0: not a started interpreter)."""
        return SOURCE_PIPE_BYTES if self.source_pipe is not None else 0

    def fits(self, step: Step, fsize: int) -> bool:
        """Started with exactly what this step would start with (its limits are set on taking it)."""
        return (
            tuple(step.argv) == self.argv
            and dict(step.env) == self.env
            and fsize == self.fsize
            and not step.build_writable
        )

    def alive(self) -> bool:
        """Still blocked before its program (not killed while idle by an operator or a janitor)."""
        raise NotImplementedError

    def discard(self, keep_workspace: bool = False) -> None:
        """Stop and remove the sandbox (and its workspace, unless a run keeps using it)."""
        raise NotImplementedError

    def release(self) -> None:
        """Let the sandbox go on from where it waits, before its interpreter."""
        raise NotImplementedError

    def start_interpreter(self, lang: Language) -> None:
        """Make its entry file a pipe (a FIFO in /work) and release the sandbox now: its interpreter starts,
        under the pool's limits, and waits there for its program (a started interpreter)."""
        try:
            pipe = self.ws.make_source_pipe(lang.entry_file)
            self.release()
        except BaseException:
            self.discard(keep_workspace=True)
            raise
        self.source_pipe = pipe

    def exited(self) -> bool:
        """Whether the sandbox has ended (how, the step's supervision reports): here, when no process is
        left in its group."""
        return not self.cgroup.procs()

    def started_within(self, memory_bytes: int, pids: int) -> bool:
        """A started interpreter: whether its start has used no more memory and processes so far than these
        limits allow (what remains of it runs under them: as it would have started under them)."""
        if self.source_pipe is None:
            return True
        peak = self.cgroup.memory_peak_bytes()
        return peak is not None and peak <= memory_bytes and self.cgroup.pids_current() <= pids + self.own_pids

    def start_program(self, program: bytes, deadline: float, cancelled: Callable[[], bool]) -> None:
        """Let the run's program start, its limits set: fed to a started interpreter (on the run's clock,
        once the interpreter's start got that far), or the sandbox released before its interpreter."""
        if self.source_pipe is not None:
            self.feed(program, deadline, cancelled)
        else:
            self.release()

    def feed(self, program: bytes, deadline: float, cancelled: Callable[[], bool]) -> None:
        """Give the started interpreter its program. Once the interpreter has opened its end of the pipe
        (it may still be starting), the entry file becomes a regular file with the program (renamed over
        the pipe, for everything that opens it by name: a syntax error's report, tracebacks, the program
        itself), then the program goes into the pipe (which holds it all: PooledBackend._fits), then the
        end of file. An interpreter that exits first, a deadline that passes or a cancel is left to the
        step's supervision, which reports it as on the cold path. Anything else that fails kills the
        sandbox before the end of file could let a part of the program run."""
        assert self.source_pipe is not None
        fd = open_when_read(self.source_pipe, self.exited, deadline, cancelled)
        if fd is None:
            return
        try:
            self.ws.replace_source(self.source_pipe.name, program)
            if len(program) > fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, SOURCE_PIPE_BYTES)
            try:
                written = os.write(fd, program) if program else 0
            except BrokenPipeError:
                return  # the interpreter died meanwhile: the supervision reports how
            if written != len(program):
                raise SandboxUnavailable(f"the program's pipe took {written} of its {len(program)} bytes")
        except BaseException:
            self.cgroup.kill_all()
            raise
        finally:
            os.close(fd)


def warm_fields(
    spec: RunSpec, step: Step, fsize: int, ws: Workspace
) -> tuple[str, int, int, tuple[str, ...], dict[str, str], Workspace]:
    """A WarmEntry's first fields, those `fits` and the pool match runs by, as `step` of `spec` starts."""
    return spec.lang.name, spec.limits.disk_mb, fsize, tuple(step.argv), dict(step.env), ws


def open_when_read(
    pipe: Path, exited: Callable[[], bool], deadline: float, cancelled: Callable[[], bool]
) -> int | None:
    """The write end of a started interpreter's program pipe, once the interpreter has opened its end (the
    open fails with ENXIO before: a FIFO without a reader); None if the sandbox ended (`exited`), `deadline`
    passed or the run was cancelled first."""
    while True:
        try:
            return os.open(pipe, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        if exited() or time.monotonic() >= deadline or cancelled():
            return None
        time.sleep(SOURCE_POLL_S)


class PooledBackend(StepBackend):
    """A StepBackend that can keep warm sandboxes (see the module's docstring)."""

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self._pool: dict[str, list[WarmEntry]] = {}
        self._pool_cond = threading.Condition()
        self._pool_stop = threading.Event()
        self._pool_thread: threading.Thread | None = None
        self._pool_starting: set[str] = set()
        self._warm_taken: dict[str, WarmEntry] = {}
        self._prestarting: dict[str, Future[WarmEntry]] = {}
        self._prestarter: ThreadPoolExecutor | None = None
        self._prestarter_lock = threading.Lock()
        self._refill_at = 0.0
        self.warm_used = 0  # runs whose program ran in a warm sandbox
        self.prestarted_used = 0  # compiled runs whose program ran in the sandbox started during the compile

    def _start_warm_entry(
        self, spec: RunSpec, ws: Workspace, step: Step, fsize: int, start_interpreter: bool = False
    ) -> WarmEntry:
        """Start the sandbox of `step` in `ws` blocked before the program, as the cold path would; with
        `start_interpreter` (if the backend can), its interpreter too, waiting for the program."""
        raise NotImplementedError

    # ---- the pool's thread --------------------------------------------------------------------------

    def start_pool(self) -> None:
        if self.config.warm_pool <= 0 or self._pool_thread is not None:
            return
        self.prepare()
        self._pool_stop.clear()
        # The thread that starts the sandboxes lives as long as the pool: bwrap's --die-with-parent
        # follows the thread that forked it.
        self._pool_thread = threading.Thread(target=self._fill_pool, name="cx-warm-pool", daemon=True)
        self._pool_thread.start()

    def close(self) -> None:
        self.drain_cleanups()
        with self._prestarter_lock:
            prestarter, self._prestarter = self._prestarter, None
        if prestarter is not None:
            prestarter.shutdown(wait=True)
        thread, self._pool_thread = self._pool_thread, None
        if thread is not None:
            with self._pool_cond:
                self._pool_stop.set()
                self._pool_cond.notify_all()
            thread.join(timeout=60)
        with self._pool_cond:
            entries = [e for pool in self._pool.values() for e in pool]
            self._pool.clear()
        for entry in entries:
            entry.discard()

    def wait_for_pool(self, timeout_s: float) -> bool:
        """Wait until every language has all its warm sandboxes (bench, tests); False on timeout or no pool."""
        deadline = time.monotonic() + timeout_s
        with self._pool_cond:
            while self._pool_starting or any(
                len(self._pool.get(lang.name, [])) < self.config.warm_pool for lang in self._warm_languages()
            ):
                remaining = deadline - time.monotonic()
                if self._pool_thread is None or remaining <= 0:
                    return False
                self._pool_cond.wait(remaining)
        return True

    def _warm_languages(self) -> list[Language]:
        return [lang for lang in all_languages() if not lang.compiled]

    def _fill_pool(self) -> None:
        retry_s = dead_s = RETRY_S
        last_death = -RETRY_MAX_S
        while not self._pool_stop.is_set():
            with self._pool_cond:
                dead = [e for pool in self._pool.values() for e in pool if not e.alive()]
                for entry in dead:  # killed while idle (an operator, a janitor): replaced below
                    self._pool[entry.language].remove(entry)
            for entry in dead:
                entry.discard()
            if dead:
                # Also an interpreter that cannot start (a started one dies in its sandbox): its start
                # succeeded as far as the pool saw, so the replacements back off as failed starts do.
                now = time.monotonic()
                dead_s = RETRY_S if now - last_death > RETRY_MAX_S else dead_s
                last_death = now
                names = ", ".join(sorted({e.language for e in dead}))
                log.warning("warm sandboxes died while idle (%s); replaced in %.0f s", names, dead_s)
                self._pool_stop.wait(dead_s)
                dead_s = min(dead_s * 2, RETRY_MAX_S)
                continue
            with self._pool_cond:
                wanted = [
                    lang
                    for lang in self._warm_languages()
                    if len(self._pool.get(lang.name, [])) < self.config.warm_pool
                ]
                if not wanted:
                    self._pool_cond.wait(timeout=1.0)
                    continue
                # Starting a sandbox takes CPU from the run that just ended, whose result is still being
                # saved and sent: wait for a quiet moment unless a language has no sandbox left.
                quiet_in = self._refill_at - time.monotonic()
                if quiet_in > 0 and all(self._pool.get(lang.name) for lang in wanted):
                    self._pool_cond.wait(timeout=quiet_in)
                    continue
            for lang in wanted:
                if self._pool_stop.is_set():
                    return
                try:
                    started = self._start_warm(lang)
                except Exception:
                    log.warning(
                        "could not start a warm %s sandbox (next try in %.0f s)", lang.name, retry_s, exc_info=True
                    )
                    self._pool_stop.wait(retry_s)
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
                    continue
                if started is None:  # the pool was closed meanwhile
                    return
                retry_s = RETRY_S

    def _start_warm(self, lang: Language) -> WarmEntry | None:
        name = f"{WARM_PREFIX}{uuid.uuid4().hex[:16]}"
        with self._pool_cond:
            self._pool_starting.add(name)  # the pool's own from its first directory on, not a leftover
        try:
            entry = self._start_warm_named(lang, name)
        except BaseException:
            with self._pool_cond:
                self._pool_starting.discard(name)
            raise
        with self._pool_cond:
            self._pool_starting.discard(name)
            if not self._pool_stop.is_set():
                self._pool.setdefault(lang.name, []).append(entry)
                self._pool_cond.notify_all()  # wait_for_pool()
                return entry
        entry.discard()
        return None

    def _start_warm_named(self, lang: Language, name: str) -> WarmEntry:
        spec = RunSpec(language=lang.name, code="", limits=self.config.default_limits, run_id=name)
        step = self._run_step(spec)  # the step a fitting run will have, but for its limits
        fsize = self._file_size_cap_bytes(spec, step)
        ws = self._workspace(spec, 0)
        try:
            return self._start_warm_entry(spec, ws, step, fsize, start_interpreter=self.config.warm_prestart)
        except BaseException:
            ws.destroy()
            raise

    # ---- a run taking one ---------------------------------------------------------------------------

    def _workspace_for_run(self, spec: RunSpec, input_bytes: int) -> Workspace:
        warm = self._take_warm(spec, input_bytes)
        return warm.ws if warm is not None else self._workspace(spec, input_bytes)

    def _take_warm(self, spec: RunSpec, input_bytes: int) -> WarmEntry | None:
        if spec.lang.compiled or input_bytes or spec.files or spec.args or spec.env:
            return None
        program = spec.code.encode()
        with self._pool_cond:
            pool = self._pool.get(spec.lang.name, [])
            entry = next((e for e in pool if e.disk_mb == spec.limits.disk_mb and self._fits(e, spec, program)), None)
            if entry is None:
                return None
            pool.remove(entry)  # the filler starts another one when this run ends (_finish_run)
        if not entry.alive():  # died while idle (a janitor, an operator): not usable
            entry.discard()
            return None
        # The run keeps the warm directory and names; cancel() finds them through this map (in this
        # process) or the run's id written into the directory (from another one).
        self._warm_taken[spec.run_id] = entry
        try:
            (entry.ws.run_dir / TAKEN_BY).write_text(spec.run_id)
        except OSError:
            log.warning("could not record run %s in its warm sandbox", spec.run_id, exc_info=True)
        return entry

    def _fits(self, entry: WarmEntry, spec: RunSpec, program: bytes) -> bool:
        """A started interpreter started under the pool's limits, before its program and files existed: it
        serves a run whose program fits its pipe and reads from it as from a file, that brings none of
        the files the interpreter reads at start (Language), and whose limits its start kept within."""
        if not entry.source_pipe_bytes:
            return True
        limits, started = spec.limits, self.config.default_limits
        return (
            len(program) <= entry.source_pipe_bytes
            and spec.lang.reads_like_a_file(spec.code, [s.path for s in spec.sources])
            and (
                (limits.memory_mb >= started.memory_mb and limits.pids >= started.pids)
                or entry.started_within(limits.memory_mb * MIB, limits.pids)
            )
        )

    def _write_entry_file(self, spec: RunSpec, ws: Workspace) -> None:
        warm = self._warm_taken.get(spec.run_id)
        if warm is None or not warm.source_pipe_bytes:
            super()._write_entry_file(spec, ws)
        # else the entry file is the started interpreter's pipe until the run starts: once the interpreter
        # holds it open, the file replaces it and the program goes into it (the backend's _step).

    # ---- a compiled run's own step, started while it compiles ---------------------------------------

    # Threads that start run steps ahead: a sandbox dies with the thread that started it (bwrap's
    # --die-with-parent), so they live as long as the backend.
    PRESTART_THREADS = 4

    def _prestart_run_step(self, spec: RunSpec, ws: Workspace) -> None:
        if self.config.warm_pool <= 0 or spec.run_id in self._warm_taken:
            return
        step = self._run_step(spec)
        fsize = self._file_size_cap_bytes(spec, step)
        with self._prestarter_lock:
            if self._prestarter is None:
                self._prestarter = ThreadPoolExecutor(self.PRESTART_THREADS, thread_name_prefix="cx-prestart")
            self._prestarting[spec.run_id] = self._prestarter.submit(self._start_warm_entry, spec, ws, step, fsize)

    def _prestarted(self, run_id: str) -> WarmEntry | None:
        """The run step's sandbox started during the compile, once it is up (None if it failed)."""
        future = self._prestarting.pop(run_id, None)
        if future is None:
            return None
        try:
            return future.result()
        except Exception:
            log.warning("could not start run %s's sandbox ahead; it starts now", run_id, exc_info=True)
            return None

    def _warm_for_step(self, spec: RunSpec, step: Step, fsize: int) -> WarmEntry | None:
        """The warm sandbox the run took, if it was started for `step` and is still alive. A taken one
        that does not fit is discarded (its directory stays the run's) and the step goes the cold way."""
        prestarted = self._prestarted(spec.run_id) if step.name == "run" else None
        if prestarted is not None:
            self._warm_taken[spec.run_id] = prestarted
        warm = self._warm_taken.get(spec.run_id) if step.name == "run" else None
        if warm is None or warm.used:
            return None
        warm.used = True
        if warm.fits(step, fsize) and warm.alive():
            if prestarted is not None:
                self.prestarted_used += 1
            else:
                self.warm_used += 1
            return warm
        warm.discard(keep_workspace=True)
        if warm.source_pipe_bytes:  # the cold path reads the entry file, not a pipe
            warm.ws.replace_source(spec.lang.entry_file, spec.code.encode())
        return None

    def _finish_run(self, run_id: str) -> None:
        prestarted = self._prestarted(run_id)  # the compile failed: its run step never came
        if prestarted is not None:
            prestarted.discard(keep_workspace=True)
        warm = self._warm_taken.pop(run_id, None)
        if warm is not None and not warm.used:  # taken, but the run ended before its step
            warm.discard(keep_workspace=True)
        with self._pool_cond:
            self._refill_at = time.monotonic() + REFILL_QUIET_S
            self._pool_cond.notify_all()  # refill soon, not while the run was using the CPU

    def _run_dir_of(self, run_id: str) -> Path:
        warm = self._warm_taken.get(run_id)
        if warm is not None:
            return warm.ws.run_dir
        own = self.runs_dir / run_id
        if own.is_dir() or not self.runs_dir.is_dir():
            return own
        for run_dir in self.runs_dir.iterdir():  # another process's run in a warm sandbox
            if run_dir.name.startswith(WARM_PREFIX):
                try:
                    if (run_dir / TAKEN_BY).read_text() == run_id:
                        return run_dir
                except OSError:
                    continue
        return own

    # ---- what is the pool's own ---------------------------------------------------------------------

    def _pool_names(self) -> set[str]:
        """Directory names of the sandboxes the pool holds or is starting (not runs, not leftovers)."""
        with self._pool_cond:
            return {e.name for pool in self._pool.values() for e in pool} | self._pool_starting

    def leftovers(self) -> list[str]:
        found = super().leftovers()
        idle = self._pool_names()  # read after listing: a sandbox started meanwhile is the pool's
        prefixes = tuple(f"{self.runs_dir / name}/" for name in idle)
        return [
            item
            for item in found
            if not (item.startswith("dir:") and item[4:] in idle)
            and not (item.startswith("mount:") and item[6:].startswith(prefixes))
        ]
