"""The bubblewrap backend: namespaces + seccomp + cgroups, no daemon, milliseconds of overhead.

Containment pipeline of one step (compile or run), top to bottom:
  1. as root: create the step's cgroup with memory/pids limits (the workspace tmpfs already exists);
  2. spawn bwrap with an empty environment, dropping to the sandbox uid in the child before exec
     (setgroups, setgid, setuid are done by subprocess in C, in that order) — bwrap never runs as root;
  3. bwrap builds the namespaces and mounts, reports its inner pid on --info-fd and waits on --block-fd;
  4. as root: move both bwrap processes into the cgroup and set their rlimits, then release the block:
     the user's program is forked only now, inside the group, under seccomp;
  5. supervise I/O, wall clock and cgroup CPU time; kill the whole group on any limit;
  6. in `finally`: kill what is left, remove the group.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..cgroups import CgroupDriver
from ..errors import InvalidSpec, SandboxUnavailable
from ..languages import BUILD_DIR, MPLCONFIGDIR, Language, all_languages, get_language
from ..limits import MIB, Limits
from ..result import ErrorCode, RunError, RunResult, Status, Usage
from ..seccomp import SeccompProgram
from ..spec import RunSpec
from ..supervise import StepOutcome, supervise
from ..workspace import Workspace, stale_run_dirs
from .base import Backend, OutputCallback, SandboxConfig

log = logging.getLogger(__name__)

SANDBOX_INNER_UID = 1000
SANDBOX_INNER_GID = 1000
# bwrap's monitor and its pid 1 live in the run's cgroup too; they are not the program's to spend.
BWRAP_OWN_PIDS = 2
COMPILE_PIDS = 256
# Room for build products (a compiled program), in a tmpfs of its own beside /work.
BUILD_MB = 256
MAX_OPEN_FILES = 4096
PRLIMIT = "/usr/bin/prlimit"
MAX_INPUT_FILES = 100
INFO_TIMEOUT_S = 10.0
# Inodes of the /work tmpfs: enough for real programs, bounded so a file-creation loop hits a wall.
WORK_NR_INODES = 16384

# /etc entries every program may read, bound read-only when the host has them.
COMMON_ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "ssl/openssl.cnf")
SYNTHETIC_ETC = {
    "passwd": (
        f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
        f"sandbox:x:{SANDBOX_INNER_UID}:{SANDBOX_INNER_GID}:sandbox:/tmp:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "group": f"root:x:0:\nsandbox:x:{SANDBOX_INNER_GID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\nservices: files\nprotocols: files\n",
    "hostname": "sandbox\n",
}
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "LANG": "C.UTF-8",
}
FATAL_SIGNALS = {s.value: s.name for s in signal.Signals if s.value < 32}


class BwrapBackend(Backend):
    name = "bwrap"

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.workdir = Path(config.workdir)
        self.runs_dir = self.workdir / "runs"
        self.static_dir = self.workdir / ".static"
        self.seccomp = SeccompProgram(Path(config.seccomp_profile), self.static_dir)
        self._cgroups: CgroupDriver | None = None
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._versions: dict[str, str] = {}
        self._cancel_events: dict[str, threading.Event] = {}
        self._mpl_fontlist: Path | None = None

    # ---- set-up shared by all runs --------------------------------------------------------------

    @property
    def cgroups(self) -> CgroupDriver:
        if self._cgroups is None:
            self._cgroups = CgroupDriver(self.config.cgroup_parent)
        return self._cgroups

    def prepare(self) -> None:
        """One-time checks and static files: refuse early and clearly rather than half-run."""
        with self._prepare_lock:
            if self._prepared:
                return
            if os.geteuid() != 0:
                raise SandboxUnavailable(
                    "the bwrap backend must run as root: it mounts each run's tmpfs and "
                    "creates its cgroup, then drops to SANDBOX_UID before starting bwrap"
                )
            if self.config.disable_security:
                raise SandboxUnavailable("DISABLE_SANDBOX_SECURITY is refused by the bwrap backend")
            if self.config.sandbox_uid == 0 or self.config.sandbox_gid == 0:
                raise SandboxUnavailable("SANDBOX_UID/SANDBOX_GID must not be 0")
            if not os.access(PRLIMIT, os.X_OK):
                raise SandboxUnavailable(f"{PRLIMIT} not found (apt-get install util-linux)")
            if not os.access(self.config.bwrap_path, os.X_OK):
                raise SandboxUnavailable(
                    f"bubblewrap not found at {self.config.bwrap_path} (apt-get install bubblewrap)"
                )
            for d in (self.workdir, self.runs_dir):
                d.mkdir(mode=0o711, parents=True, exist_ok=True)
                os.chmod(d, 0o711)
            _check_traversable(self.runs_dir)
            self.static_dir.mkdir(mode=0o755, exist_ok=True)
            os.chmod(self.static_dir, 0o755)
            etc = self.static_dir / "etc"
            etc.mkdir(mode=0o755, exist_ok=True)
            for name, content in SYNTHETIC_ETC.items():
                _write_file_atomic(etc / name, content.encode(), 0o644)
            self.seccomp.open_fd().__index__()  # compile now so a bad profile fails at start
            self.cgroups.prepare()
            self._mpl_fontlist = _prebuild_matplotlib_cache(self.static_dir / "matplotlib")
            self._prepared = True

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
            outcome, _ = self._step(
                spec,
                ws,
                "probe",
                lang.version_probe,
                {**lang.env, **lang.compile_env},
                limits.timeout_ms,
                limits.cpu_ms,
                limits.memory_mb * MIB,
                64,
                b"",
                4096,
                None,
                build_writable=False,
            )
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
            ws = self._workspace(spec, input_bytes)
            ws.write_source(lang.entry_file, spec.code.encode())
            for src in spec.sources:
                ws.write_source(src.path, src.content.encode())
            for f in spec.files:
                with f.open() as fh:
                    ws.write_input(f.path, iter(lambda fh=fh: fh.read(1 << 20), b""))  # type: ignore[misc]
            os.mkdir(ws.work / "outputs", 0o755)
            os.chown(ws.work / "outputs", self.config.sandbox_uid, self.config.sandbox_gid)

            if lang.compile is not None:
                outcome, cg_usage = self._step(
                    spec,
                    ws,
                    "compile",
                    lang.compile,
                    {**lang.env, **lang.compile_env, **spec.env},
                    limits.compile_timeout_ms,
                    limits.compile_timeout_ms,
                    limits.compile_memory_mb * MIB,
                    COMPILE_PIDS,
                    b"",
                    limits.max_output_bytes,
                    None,
                    build_writable=True,
                    cancel_event=cancel_event,
                )
                wall_total += outcome.wall_ms
                cpu_total = _add(cpu_total, cg_usage.cpu_ms)
                compile_result = classify(outcome, cg_usage, phase="compile")
                if compile_result.status != Status.SUCCEEDED:
                    if compile_result.status == Status.FAILED:
                        compile_result.error = RunError(ErrorCode.COMPILE_ERROR, "The program did not compile.")
                        compile_result.signal = None
                    # The compiler's diagnostics are the user's stderr; stdout has nothing of theirs.
                    compile_result.stderr = _text(outcome.stdout + outcome.stderr)
                    compile_result.stdout = ""
                    compile_result.stderr_truncated = outcome.stdout_truncated or outcome.stderr_truncated
                    compile_result.usage = Usage(
                        wall_ms=wall_total,
                        cpu_ms=cpu_total,
                        memory_peak_bytes=cg_usage.memory_peak_bytes,
                        output_bytes=len(compile_result.stderr.encode()),
                    )
                    return compile_result

            outcome, cg_usage = self._step(
                spec,
                ws,
                "run",
                (*lang.run, *spec.args),
                {**lang.env, **spec.env},
                limits.timeout_ms,
                limits.cpu_ms,
                limits.memory_mb * MIB,
                limits.pids,
                spec.stdin_bytes,
                limits.max_output_bytes,
                on_output,
                build_writable=False,
                cancel_event=cancel_event,
            )
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
            log.exception("sandbox failure in run %s", spec.run_id)
            return RunResult(
                status=Status.ERROR,
                error=RunError(ErrorCode.SANDBOX_ERROR, f"sandbox failure: {exc}"),
                usage=Usage(wall_ms=None, cpu_ms=None),
            )
        finally:
            self._cancel_events.pop(spec.run_id, None)
            if ws is not None:
                ws.destroy()

    def cancel(self, run_id: str) -> bool:
        found = False
        event = self._cancel_events.get(run_id)
        if event is not None:
            event.set()
            found = True
        run_dir = self.runs_dir / run_id
        if run_dir.is_dir():
            # Seen by a supervisor in another process; the kill below makes it act at once.
            try:
                (run_dir / "cancelled").touch()
            except OSError:
                pass
            found = True
        for step in ("compile", "run"):
            group = self.cgroups.group(f"{run_id}.{step}")
            if any(p.exists() for p in group.paths.values()):
                group.kill_all()
                found = True
        return found

    def cleanup_orphans(self) -> list[str]:
        """Remove run dirs whose owner died and groups that belong to no live run."""
        self.prepare()
        removed: list[str] = []
        live = set()
        for run_dir in stale_run_dirs(self.runs_dir):
            ws = Workspace(
                root=self.runs_dir, run_dir=run_dir, uid=self.config.sandbox_uid, gid=self.config.sandbox_gid
            )
            ws.destroy()
            removed.append(f"dir:{run_dir.name}")
        if self.runs_dir.is_dir():
            live = {p.name for p in self.runs_dir.iterdir()}
        for name in self.cgroups.existing_groups():
            if name.rsplit(".", 1)[0] not in live:
                self.cgroups.group(name).destroy()
                removed.append(f"cgroup:{name}")
        return removed

    # ---- internals ----------------------------------------------------------------------------------

    def _workspace(self, spec: RunSpec, input_bytes: int) -> Workspace:
        limits = spec.limits
        # /work holds the user's disk quota plus the staged inputs (read-only to the program).
        size = limits.disk_mb * MIB + input_bytes
        return Workspace.create(
            self.runs_dir,
            spec.run_id,
            self.config.sandbox_uid,
            self.config.sandbox_gid,
            size_bytes=size,
            nr_inodes=WORK_NR_INODES + 4 * len(spec.files),
            build_size_bytes=BUILD_MB * MIB if spec.lang.compiled else 0,
        )

    def _step(
        self,
        spec: RunSpec,
        ws: Workspace,
        step: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout_ms: int,
        cpu_ms: int,
        memory_bytes: int,
        pids: int,
        stdin: bytes,
        max_output_bytes: int,
        on_output: OutputCallback | None,
        build_writable: bool,
        cancel_event: threading.Event | None = None,
    ) -> tuple[StepOutcome, StepUsage]:
        cgroup = self.cgroups.group(f"{spec.run_id}.{step}")
        fds: list[int] = []
        proc: subprocess.Popen[bytes] | None = None
        try:
            cgroup.create(memory_bytes, pids + BWRAP_OWN_PIDS)
            info_r, info_w = os.pipe2(os.O_CLOEXEC)
            block_r, block_w = os.pipe2(os.O_CLOEXEC)
            seccomp_fd = self.seccomp.open_fd()
            fds += [info_r, info_w, block_r, block_w, seccomp_fd]
            # No single file may exceed the largest filesystem this step may write to.
            largest_mb = max(spec.limits.disk_mb, self.config.tmp_mb, BUILD_MB if build_writable else 0)
            limit_fsize = largest_mb * MIB
            # rlimits are set inside the sandbox by prlimit(1) just before the program's exec: the
            # service needs no CAP_SYS_RESOURCE, and the lowered hard limits cannot be raised again.
            limited_argv = [
                PRLIMIT,
                "--core=0:0",
                f"--fsize={limit_fsize}:{limit_fsize}",
                f"--nofile=1024:{MAX_OPEN_FILES}",
                "--",
                *argv,
            ]
            bwrap_argv = build_bwrap_argv(
                bwrap=self.config.bwrap_path,
                ws=ws,
                static_dir=self.static_dir,
                lang=spec.lang,
                argv=limited_argv,
                env=env,
                tmp_bytes=self.config.tmp_mb * MIB,
                build_writable=build_writable,
                seccomp_fd=seccomp_fd,
                info_fd=info_w,
                block_fd=block_r,
                mpl_fontlist=self._mpl_fontlist,
            )
            proc = subprocess.Popen(
                bwrap_argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd="/",
                close_fds=True,
                pass_fds=(info_w, block_r, seccomp_fd),
                user=self.config.sandbox_uid,
                group=self.config.sandbox_gid,
                extra_groups=[],
                start_new_session=True,
                umask=0o022,
            )
            for fd in (info_w, block_r, seccomp_fd):
                os.close(fd)
                fds.remove(fd)
            inner_pid = _read_child_pid(info_r)
            for pid in (proc.pid, inner_pid):
                if pid is not None:
                    cgroup.add(pid)
            started = time.monotonic()
            os.write(block_w, b"1")  # the program starts now, inside its cgroup
            cancel_marker = ws.run_dir / "cancelled"

            def is_cancelled() -> bool:
                return (cancel_event is not None and cancel_event.is_set()) or cancel_marker.exists()

            outcome = supervise(
                proc,
                stdin,
                timeout_ms,
                cpu_ms,
                cgroup.cpu_usage_ms,
                cgroup.kill_all,
                max_output_bytes,
                on_output,
                is_cancelled,
                started,
            )
            if outcome.killed_for is None and is_cancelled():
                outcome.killed_for = "cancel"
            cgroup.kill_all()  # nothing outlives its step
            return outcome, StepUsage(cgroup.cpu_usage_ms(), cgroup.memory_peak_bytes(), cgroup.oom_kills())
        finally:
            if proc is not None and proc.returncode is None:
                cgroup.kill_all()
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                proc.wait()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            cgroup.destroy()


@dataclasses.dataclass
class StepUsage:
    """What the step's cgroup counted."""

    cpu_ms: int | None
    memory_peak_bytes: int | None
    oom_kills: int


def classify(outcome: StepOutcome, usage: StepUsage, phase: str) -> RunResult:
    """Status and error from what the supervisor saw; the first matching rule wins."""
    stdout = _text(outcome.stdout, outcome.stdout_truncated)
    stderr = _text(outcome.stderr, outcome.stderr_truncated)
    result = RunResult(
        status=Status.FAILED,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=outcome.stdout_truncated,
        stderr_truncated=outcome.stderr_truncated,
        usage=Usage(
            wall_ms=outcome.wall_ms,
            cpu_ms=usage.cpu_ms,
            memory_peak_bytes=usage.memory_peak_bytes,
            output_bytes=len(outcome.stdout) + len(outcome.stderr),
        ),
    )
    code = outcome.returncode
    oom_kills = usage.oom_kills
    what = "compilation" if phase == "compile" else "the program"
    limit_name = "compile_timeout_ms" if phase == "compile" else "timeout_ms"
    if outcome.killed_for == "cancel":
        result.status = Status.CANCELLED
        result.error = RunError(ErrorCode.CANCELLED, "The run was cancelled.")
    elif outcome.killed_for == "wall":
        result.status = Status.TIMEOUT
        result.error = RunError(
            ErrorCode.WALL_TIMEOUT, f"{what.capitalize()} exceeded the wall-clock limit ({limit_name})."
        )
    elif outcome.killed_for == "cpu":
        result.status = Status.TIMEOUT
        limit = "compile_timeout_ms" if phase == "compile" else "cpu_ms"
        result.error = RunError(ErrorCode.CPU_TIMEOUT, f"{what.capitalize()} exceeded the CPU time limit ({limit}).")
    elif oom_kills > 0 and code != 0:
        result.status = Status.OOM
        limit = "compile_memory_mb" if phase == "compile" else "memory_mb"
        result.error = RunError(
            ErrorCode.MEMORY_LIMIT, f"{what.capitalize()} was killed by the memory limit ({limit})."
        )
    elif code == 1 and outcome.stderr.startswith(b"bwrap: "):
        result.status = Status.ERROR
        result.error = RunError(
            ErrorCode.SANDBOX_ERROR,
            f"the sandbox could not start: {outcome.stderr.decode(errors='replace').strip()[:500]}",
        )
    elif code == 0:
        result.status = Status.SUCCEEDED
    else:
        result.status = Status.FAILED
    if code is not None and code < 0:
        # bwrap itself died of a signal (we killed the group): no exit status of the program.
        result.signal = FATAL_SIGNALS.get(-code, f"SIG{-code}")
        result.exit_code = None
    elif code is not None and code > 128 and (code - 128) in FATAL_SIGNALS:
        # bwrap reports a program killed by signal N as 128+N, like a shell.
        result.exit_code = code
        result.signal = FATAL_SIGNALS[code - 128]
    else:
        result.exit_code = code
    return result


def _text(data: bytes, truncated: bool = False) -> str:
    """UTF-8 text with invalid bytes replaced; a multi-byte character cut by the cap is dropped."""
    if truncated:
        for back in range(1, 4):
            if len(data) >= back and (data[-back] & 0xC0) == 0xC0:  # a lead byte near the end
                need = 2 if data[-back] < 0xE0 else 3 if data[-back] < 0xF0 else 4
                if back < need:
                    data = data[:-back]
                break
            if len(data) >= back and (data[-back] & 0xC0) != 0x80:
                break
    return data.decode("utf-8", "replace")


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def build_bwrap_argv(
    *,
    bwrap: str,
    ws: Workspace,
    static_dir: Path,
    lang: Language,
    argv: Sequence[str],
    env: Mapping[str, str],
    tmp_bytes: int,
    build_writable: bool,
    seccomp_fd: int,
    info_fd: int,
    block_fd: int,
    mpl_fontlist: Path | None,
) -> list[str]:
    """The whole sandbox as bubblewrap arguments; every flag is chosen on purpose."""
    args = [
        bwrap,
        "--unshare-all",  # user, ipc, pid, net (loopback only), uts, cgroup
        "--unshare-user",
        "--disable-userns",  # a user namespace of its own, and no nested ones
        "--uid",
        str(SANDBOX_INNER_UID),
        "--gid",
        str(SANDBOX_INNER_GID),
        "--hostname",
        "sandbox",
        "--die-with-parent",  # the worker dying takes the sandbox with it
        "--new-session",  # no TIOCSTI into a terminal
        "--cap-drop",
        "ALL",
        "--clearenv",
    ]
    for key, value in {**BASE_ENV, **env}.items():
        args += ["--setenv", key, value]
    args += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for name in SYNTHETIC_ETC:
        args += ["--ro-bind", str(static_dir / "etc" / name), f"/etc/{name}"]
    for name in (*COMMON_ETC, *lang.etc):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--bind", str(ws.work), "/work"]
    args += ["--ro-bind", str(ws.inputs), "/work/inputs"]
    if lang.compiled:
        args += ["--bind" if build_writable else "--ro-bind", str(ws.build), BUILD_DIR]
    if mpl_fontlist is not None and "MPLCONFIGDIR" in env:
        args += ["--ro-bind", str(mpl_fontlist), f"{MPLCONFIGDIR}/{mpl_fontlist.name}"]
    args += [
        "--remount-ro",
        "/",
        "--chdir",
        "/work",
        "--seccomp",
        str(seccomp_fd),
        "--info-fd",
        str(info_fd),
        "--block-fd",
        str(block_fd),
        "--",
        *argv,
    ]
    return args


def _read_child_pid(info_fd: int) -> int | None:
    """bwrap writes {"child-pid": N, ...} once its namespaces exist, then closes the fd."""
    data = b""
    deadline = time.monotonic() + INFO_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxUnavailable("bubblewrap did not report its child pid in time")
        ready, _, _ = select.select([info_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(info_fd, 4096)
        if not chunk:
            break
        data += chunk
    if not data:
        return None  # bwrap failed before cloning; its stderr says why
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError) as exc:
        raise SandboxUnavailable(f"unexpected bubblewrap info: {data[:200]!r}") from exc


def _write_file_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _check_traversable(path: Path) -> None:
    """Every parent must be searchable by others, or bwrap (as the sandbox uid) cannot bind the run."""
    for parent in [path, *path.parents]:
        if not os.stat(parent).st_mode & 0o001:
            raise SandboxUnavailable(
                f"{parent} is not searchable by other users (needs o+x) — "
                "SANDBOX_WORKDIR must sit below world-traversable directories"
            )


def _prebuild_matplotlib_cache(cache_dir: Path) -> Path | None:
    """Build matplotlib's font list once, with the system Python, so plots don't rebuild it per run."""
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        return None
    existing = sorted(cache_dir.glob("fontlist-*.json")) if cache_dir.is_dir() else []
    if existing:
        return existing[-1]
    tmp = cache_dir.with_name(cache_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    proc = subprocess.run(
        [python, "-c", "import matplotlib.font_manager"],
        env={"MPLCONFIGDIR": str(tmp), "PATH": "/usr/bin:/bin", "HOME": str(tmp)},
        capture_output=True,
        timeout=120,
        cwd="/",
    )
    built = sorted(tmp.glob("fontlist-*.json"))
    if proc.returncode != 0 or not built:
        log.warning(
            "matplotlib font cache not built (%s); plots will build it per run",
            proc.stderr.decode(errors="replace")[-300:],
        )
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    for p in tmp.iterdir():
        if p not in built:
            p.unlink() if p.is_file() else shutil.rmtree(p)
    os.chmod(built[0], 0o644)
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, cache_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    found = sorted(cache_dir.glob("fontlist-*.json"))
    return found[-1] if found else None
