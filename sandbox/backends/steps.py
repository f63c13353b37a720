"""The part every backend shares: workspace, compile step, run step, artifacts, classification.

A backend supplies `prepare()` and `_step()` (one sandboxed process under limits); `run()` here
reads top to bottom like the run itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..buildcache import BuildCache
from ..errors import InvalidSpec, SandboxUnavailable
from ..languages import BUILD_DIR, RUBY_PRELUDE, Language, all_languages, get_language
from ..limits import MIB, Limits
from ..outcome import StepUsage, classify, text
from ..result import ErrorCode, RunError, RunResult, Status, Usage
from ..spec import RunSpec
from ..supervise import StepOutcome
from ..workspace import Workspace
from .base import Backend, OutputCallback, SandboxConfig

log = logging.getLogger(__name__)

# The program's user inside every sandbox (bwrap maps SANDBOX_UID to it; the runner images create it).
SANDBOX_USER_UID = 1000
SANDBOX_USER_GID = 1000
SYNTHETIC_ETC = {
    "passwd": (
        f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
        f"sandbox:x:{SANDBOX_USER_UID}:{SANDBOX_USER_GID}:sandbox:/tmp:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "group": f"root:x:0:\nsandbox:x:{SANDBOX_USER_GID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\nservices: files\nprotocols: files\n",
    "hostname": "sandbox\n",
    RUBY_PRELUDE.removeprefix("/etc/"): (Path(__file__).resolve().parent.parent / "ruby_prelude.rb").read_text(),
}
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "LANG": "C.UTF-8",
}

COMPILE_PIDS = 256
# Room for build products (a compiled program), in a tmpfs of its own beside /work.
BUILD_MB = 256
MAX_INPUT_FILES = 100
# Inodes of the /work tmpfs: enough for real programs, bounded so a file-creation loop hits a wall.
WORK_NR_INODES = 16384


@dataclasses.dataclass(frozen=True)
class Step:
    """One sandboxed process of a run (compile, run or a version probe) and its limits."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    timeout_ms: int
    cpu_ms: int
    memory_bytes: int
    pids: int
    max_output_bytes: int
    stdin: bytes = b""
    on_output: OutputCallback | None = None
    build_writable: bool = False
    cancel_event: threading.Event | None = None


class StepBackend(Backend):
    """A backend that runs each step (compile, run) as one sandboxed process tree."""

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.workdir = Path(config.workdir)
        self.runs_dir = self.workdir / "runs"
        self.static_dir = self.workdir / ".static"
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._versions: dict[str, str] = {}
        self._cancel_events: dict[str, threading.Event] = {}
        self.build_cache = BuildCache(self.workdir / "buildcache", config.build_cache_mb * MIB, BUILD_MB * MIB)
        # Teardown that need not delay a result (every process of the run is dead by then): removing its
        # cgroup and unmounting its tmpfs happen on this thread; leftovers() and the janitor wait for it.
        self._cleanups: queue.Queue[Callable[[], object]] = queue.Queue()
        self._cleanup_thread: threading.Thread | None = None
        self._cleanup_lock = threading.Lock()

    @property
    def workspace_uid(self) -> tuple[int, int]:
        """Host uid/gid that owns /work: whoever the program runs as, seen from the host."""
        raise NotImplementedError

    def prepare(self) -> None:
        raise NotImplementedError

    def _make_dirs(self) -> None:
        for d in (self.workdir, self.runs_dir):
            d.mkdir(mode=0o711, parents=True, exist_ok=True)
            os.chmod(d, 0o711)
        self.build_cache.prepare()

    def toolchain_id(self, lang: Language) -> str:
        """What identifies the compiler a build ran with (part of the build cache's key)."""
        return f"{self.name}:{lang.name}:{self.version(lang.name)}"

    def _build_cache_key(self, spec: RunSpec, env: Mapping[str, str]) -> str | None:
        lang = spec.lang
        if lang.compile is None or not self.build_cache.enabled or spec.files:
            return None  # input files could be embedded (go:embed): such builds are never shared
        sources = [(lang.entry_file, spec.code.encode()), *((s.path, s.content.encode()) for s in spec.sources)]
        return BuildCache.key(self.toolchain_id(lang), lang.compile, env, sources)

    def _write_static_etc(self, files: Mapping[str, str]) -> None:
        """The synthetic /etc files bound read-only into every sandbox (written atomically, 0644)."""
        etc = self.static_dir / "etc"
        etc.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.static_dir, 0o755)
        for name, content in files.items():
            tmp = etc / f".{name}.tmp{os.getpid()}.{threading.get_native_id()}"  # backends of one process may race
            tmp.write_bytes(content.encode())
            os.chmod(tmp, 0o644)
            os.replace(tmp, etc / name)

    def _mark_cancelled(self, run_id: str) -> bool:
        """Flag a run as cancelled for its supervisor, in this process (event) or another (marker file)."""
        found = False
        event = self._cancel_events.get(run_id)
        if event is not None:
            event.set()
            found = True
        run_dir = self._run_dir_of(run_id)
        if run_dir.is_dir():
            try:
                (run_dir / "cancelled").touch()
                found = True
            except OSError:
                log.warning("could not mark run %s cancelled", run_id, exc_info=True)
        return found

    def _run_dir_of(self, run_id: str) -> Path:
        """The directory holding the run's workspace (a warm sandbox's keeps its own name)."""
        return self.runs_dir / run_id

    def leftovers(self) -> list[str]:
        self.drain_cleanups()
        found: list[str] = []
        if self.runs_dir.exists():
            found += [f"dir:{p.name}" for p in self.runs_dir.iterdir()]
        workdir = str(self.workdir)
        with open("/proc/self/mounts") as f:
            for line in f:
                mountpoint = line.split()[1].replace("\\040", " ")
                if mountpoint == workdir or mountpoint.startswith(workdir + "/"):
                    found.append(f"mount:{mountpoint}")
        return found + self._backend_leftovers()

    def _backend_leftovers(self) -> list[str]:
        return []

    def _later(self, cleanup: Callable[[], object]) -> None:
        """Run `cleanup` on the backend's cleanup thread (after the result is returned)."""
        with self._cleanup_lock:
            if self._cleanup_thread is None or not self._cleanup_thread.is_alive():
                self._cleanup_thread = threading.Thread(target=self._run_cleanups, name="cx-cleanup", daemon=True)
                self._cleanup_thread.start()
        self._cleanups.put(cleanup)

    def _run_cleanups(self) -> None:
        while True:
            cleanup = self._cleanups.get()
            try:
                cleanup()
            except Exception:
                log.exception("sandbox cleanup failed (the janitor retries it)")
            finally:
                self._cleanups.task_done()

    def drain_cleanups(self) -> None:
        """Wait until every run's deferred teardown is done."""
        self._cleanups.join()

    def _prestart_run_step(self, spec: RunSpec, ws: Workspace) -> None:
        """Start the run step's sandbox ahead, blocked before the program (a backend may; see pool.py)."""

    def _finish_run(self, run_id: str) -> None:
        """Release what the backend holds for this run beyond its workspace (called in run's finally)."""

    def _write_entry_file(self, spec: RunSpec, ws: Workspace) -> None:
        """The program's entry file in /work (a backend may have an interpreter waiting on it already)."""
        ws.write_source(spec.lang.entry_file, spec.code.encode())

    def _step(self, spec: RunSpec, ws: Workspace, step: Step) -> tuple[StepOutcome, StepUsage]:
        """Run one sandboxed process tree under the step's limits; the backend's one real job."""
        raise NotImplementedError

    def _file_size_cap_bytes(self, spec: RunSpec, step: Step) -> int:
        """No single file may exceed the largest filesystem this step may write to (RLIMIT_FSIZE)."""
        return max(spec.limits.disk_mb, self.config.tmp_mb, BUILD_MB if step.build_writable else 0) * MIB

    @staticmethod
    def _cancel_check(ws: Workspace, step: Step) -> Callable[[], bool]:
        """Cancelled in this process (the event) or by another one (the run's marker file)."""
        marker = ws.run_dir / "cancelled"
        return lambda: (step.cancel_event is not None and step.cancel_event.is_set()) or marker.exists()

    def check(self) -> None:
        self.prepare()
        result = self.run(RunSpec(language="python", code="print('ok')"))
        if result.status != Status.SUCCEEDED or result.stdout != "ok\n":
            raise SandboxUnavailable(
                f"sandbox self-test failed: {result.status.value} "
                f"{result.error.message if result.error else result.stderr[-500:]}"
            )

    def versions(self) -> dict[str, str]:
        return {lang.name: self.version(lang.name) for lang in all_languages()}

    def version(self, language: str) -> str:
        if language not in self._versions:
            self._versions[language] = self._probe_version(get_language(language))
        return self._versions[language]

    def _probe_version(self, lang: Language) -> str:
        self.prepare()
        limits = Limits(timeout_ms=10_000, cpu_ms=10_000, memory_mb=512, pids=64)
        spec = RunSpec(language=lang.name, code="", limits=limits)
        ws = self._workspace(spec, 0)
        try:
            probe = Step(
                name="probe",
                argv=lang.version_probe,
                env={**lang.env, **lang.compile_env},
                timeout_ms=limits.timeout_ms,
                cpu_ms=limits.cpu_ms,
                memory_bytes=limits.memory_mb * MIB,
                pids=64,
                max_output_bytes=4096,
            )
            outcome, _ = self._step(spec, ws, probe)
        finally:
            ws.destroy()
        if outcome.returncode != 0:
            return "unavailable"
        return lang.parse_version(outcome.stdout.decode("utf-8", "replace"))

    # ---- running ----------------------------------------------------------------------------------

    def run(
        self, spec: RunSpec, artifacts_dir: Path | None = None, on_output: OutputCallback | None = None
    ) -> RunResult:
        spec.validate()
        lang = spec.lang
        limits = spec.limits
        self.prepare()
        input_bytes = sum(f.size for f in spec.files)
        if len(spec.files) > MAX_INPUT_FILES:
            raise InvalidSpec(f"At most {MAX_INPUT_FILES} input files.", param="files")
        cancel_event = self._cancel_events.setdefault(spec.run_id, threading.Event())
        ws: Workspace | None = None
        wall_total = 0
        cpu_total: int | None = 0
        try:
            ws = self._workspace_for_run(spec, input_bytes)
            self._write_entry_file(spec, ws)
            for src in spec.sources:
                ws.write_source(src.path, src.content.encode())
            for f in spec.files:
                with f.open() as fh:
                    ws.write_input(f.path, iter(lambda fh=fh: fh.read(1 << 20), b""))  # type: ignore[misc]
            os.mkdir(ws.work / "outputs", 0o755)
            os.chown(ws.work / "outputs", *self.workspace_uid)

            compile_env = {**lang.env, **lang.compile_env, **spec.env}
            cache_key = self._build_cache_key(spec, compile_env)
            program = ws.build / Path(lang.run[0]).relative_to(BUILD_DIR) if lang.compile is not None else None
            if program is not None and cache_key is not None and self.build_cache.fetch(cache_key, program):
                pass  # the same sources built with the same toolchain before: no compile step
            elif lang.compile is not None:
                compile_step = Step(
                    name="compile",
                    argv=lang.compile,
                    env=compile_env,
                    timeout_ms=limits.compile_timeout_ms,
                    cpu_ms=limits.compile_timeout_ms,
                    memory_bytes=limits.compile_memory_mb * MIB,
                    pids=COMPILE_PIDS,
                    max_output_bytes=limits.max_output_bytes,
                    build_writable=True,
                    cancel_event=cancel_event,
                )
                self._prestart_run_step(spec, ws)  # its sandbox starts while the compiler runs
                outcome, cg_usage = self._step(spec, ws, compile_step)
                wall_total += outcome.wall_ms
                cpu_total = _add(cpu_total, cg_usage.cpu_ms)
                compile_result = classify(outcome, cg_usage, phase="compile")
                if compile_result.status != Status.SUCCEEDED:
                    if compile_result.status == Status.FAILED:
                        compile_result.error = RunError(ErrorCode.COMPILE_ERROR, "The program did not compile.")
                        compile_result.signal = None
                    # The compiler's diagnostics are the user's stderr; stdout has nothing of theirs.
                    compile_result.stderr = text(outcome.stdout + outcome.stderr)
                    compile_result.stdout = ""
                    compile_result.stderr_truncated = outcome.stdout_truncated or outcome.stderr_truncated
                    compile_result.usage = Usage(
                        wall_ms=wall_total,
                        cpu_ms=cpu_total,
                        memory_peak_bytes=cg_usage.memory_peak_bytes,
                        output_bytes=len(compile_result.stderr.encode()),
                    )
                    return compile_result
                if cache_key is not None and program is not None:
                    self.build_cache.store(cache_key, program)

            run_step = self._run_step(spec, on_output, cancel_event)
            outcome, cg_usage = self._step(spec, ws, run_step)
            result = classify(outcome, cg_usage, phase="run")
            result.usage.wall_ms = wall_total + outcome.wall_ms
            result.usage.cpu_ms = _add(cpu_total, cg_usage.cpu_ms)
            if result.status != Status.ERROR:
                result.artifacts, result.skipped_artifacts = ws.collect_artifacts(
                    artifacts_dir, limits.max_artifacts, limits.max_artifact_bytes, limits.max_artifacts_total_bytes
                )
                result.usage.artifact_bytes = sum(a.bytes for a in result.artifacts)
            return result
        except InvalidSpec:
            raise
        except (SandboxUnavailable, OSError) as exc:
            if cancel_event.is_set() or (ws is not None and (ws.run_dir / "cancelled").exists()):
                # The cancel killed a sandbox as it was starting (bubblewrap then reports no child).
                return RunResult(
                    status=Status.CANCELLED,
                    error=RunError(ErrorCode.CANCELLED, "The run was cancelled."),
                    usage=Usage(wall_ms=None, cpu_ms=None),
                )
            log.exception("sandbox failure in run %s", spec.run_id)
            return RunResult(
                status=Status.ERROR,
                error=RunError(ErrorCode.SANDBOX_ERROR, f"sandbox failure: {exc}"),
                usage=Usage(wall_ms=None, cpu_ms=None),
            )
        finally:
            self._cancel_events.pop(spec.run_id, None)
            self._finish_run(spec.run_id)
            if ws is not None:
                self._later(ws.destroy)

    @staticmethod
    def _run_step(
        spec: RunSpec, on_output: OutputCallback | None = None, cancel_event: threading.Event | None = None
    ) -> Step:
        """The program's own step (a warm sandbox is started with the one its pool's spec gives)."""
        limits = spec.limits
        return Step(
            name="run",
            argv=(*spec.lang.run, *spec.args),
            env={**spec.lang.env, **spec.env},
            timeout_ms=limits.timeout_ms,
            cpu_ms=limits.cpu_ms,
            memory_bytes=limits.memory_mb * MIB,
            pids=limits.pids,
            max_output_bytes=limits.max_output_bytes,
            stdin=spec.stdin_bytes,
            on_output=on_output,
            cancel_event=cancel_event,
        )

    def _workspace_for_run(self, spec: RunSpec, input_bytes: int) -> Workspace:
        """The run's workspace (a backend may hand over one it prepared ahead)."""
        return self._workspace(spec, input_bytes)

    def _workspace(self, spec: RunSpec, input_bytes: int) -> Workspace:
        limits = spec.limits
        # /work holds the user's disk quota plus the staged inputs (read-only to the program).
        size = limits.disk_mb * MIB + input_bytes
        return Workspace.create(
            self.runs_dir,
            spec.run_id,
            *self.workspace_uid,
            size_bytes=size,
            nr_inodes=WORK_NR_INODES + 4 * len(spec.files),
            build_size_bytes=BUILD_MB * MIB if spec.lang.compiled else 0,
        )


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b
