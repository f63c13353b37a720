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
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..cgroups import CgroupDriver, RunCgroup
from ..errors import SandboxUnavailable
from ..languages import BUILD_DIR, MPLCONFIGDIR, Language, all_languages
from ..limits import MIB
from ..outcome import StepUsage
from ..seccomp import SeccompProgram
from ..spec import RunSpec
from ..supervise import StepOutcome, supervise
from ..workspace import Workspace, stale_run_dirs
from .base import SandboxConfig
from .steps import BASE_ENV, SANDBOX_USER_GID, SANDBOX_USER_UID, SYNTHETIC_ETC, Step, StepBackend

log = logging.getLogger(__name__)

# bwrap's monitor and its pid 1 live in the run's cgroup too; they are not the program's to spend.
BWRAP_OWN_PIDS = 2
# A taken warm sandbox is replaced once its run has been quiet this long (the worker saves the result
# and the waiting request answers meanwhile), or at once when its language has none left.
REFILL_QUIET_S = 0.03
MAX_OPEN_FILES = 4096
PRLIMIT = "/usr/bin/prlimit"
SETPRIV = "/usr/bin/setpriv"
INFO_TIMEOUT_S = 10.0

# /etc entries every program may read, bound read-only when the host has them.
COMMON_ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "ssl/openssl.cnf")


class BwrapBackend(StepBackend):
    name = "bwrap"

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.seccomp = SeccompProgram(Path(config.seccomp_profile), self.static_dir)
        self._cgroups: CgroupDriver | None = None
        self._mpl_fontlist: Path | None = None
        self._pool: dict[str, list[_Warm]] = {}
        self._pool_cond = threading.Condition()
        self._pool_stop = threading.Event()
        self._pool_thread: threading.Thread | None = None
        self._warm_taken: dict[str, _Warm] = {}
        self._pool_starting: set[str] = set()
        self._refill_at = 0.0
        self.warm_used = 0

    @property
    def workspace_uid(self) -> tuple[int, int]:
        return self.config.sandbox_uid, self.config.sandbox_gid

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
            for tool in (PRLIMIT, SETPRIV):
                if not os.access(tool, os.X_OK):
                    raise SandboxUnavailable(f"{tool} not found (apt-get install util-linux)")
            if not os.access(self.config.bwrap_path, os.X_OK):
                raise SandboxUnavailable(
                    f"bubblewrap not found at {self.config.bwrap_path} (apt-get install bubblewrap)"
                )
            self._make_dirs()
            _check_traversable(self.runs_dir)
            self._write_static_etc(SYNTHETIC_ETC)
            self.seccomp.open_fd().__index__()  # compile now so a bad profile fails at start
            self.cgroups.prepare()
            self._mpl_fontlist = _prebuild_matplotlib_cache(self.static_dir / "matplotlib")
            self._prepared = True

    def cancel(self, run_id: str) -> bool:
        found = self._mark_cancelled(run_id)
        warm = self._warm_taken.get(run_id)
        if warm is not None and warm.used:
            warm.cgroup.kill_all()
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
        self.drain_cleanups()
        removed: list[str] = []
        live = set()
        # Groups are listed before the directories: a run (or another worker on this host) makes its
        # directory before its group, so a listed group whose directory is missing below has none.
        groups = self.cgroups.existing_groups()
        for run_dir in stale_run_dirs(self.runs_dir):
            ws = Workspace(
                root=self.runs_dir, run_dir=run_dir, uid=self.config.sandbox_uid, gid=self.config.sandbox_gid
            )
            ws.destroy()
            removed.append(f"dir:{run_dir.name}")
        if self.runs_dir.is_dir():
            live = {p.name for p in self.runs_dir.iterdir()}
        for name in groups:
            if name.rsplit(".", 1)[0] not in live:
                self.cgroups.group(name).destroy()
                removed.append(f"cgroup:{name}")
        return removed

    # ---- internals ----------------------------------------------------------------------------------

    def _spawn(
        self, lang: Language, ws: Workspace, step: Step, fsize: int, cgroup: RunCgroup
    ) -> tuple[subprocess.Popen[bytes], int, list[int]]:
        """Start bwrap for one step, blocked before the program: its processes are in `cgroup` when this
        returns. Returns the process, the fd whose write releases the program, and fds to close later."""
        fds: list[int] = []
        proc: subprocess.Popen[bytes] | None = None
        try:
            info_r, info_w = os.pipe2(os.O_CLOEXEC)
            block_r, block_w = os.pipe2(os.O_CLOEXEC)
            seccomp_fd = self.seccomp.open_fd()
            fds += [info_r, info_w, block_r, block_w, seccomp_fd]
            # rlimits are set inside the sandbox by prlimit(1) just before the program's exec: the
            # service needs no CAP_SYS_RESOURCE, and the lowered hard limits cannot be raised again.
            limited_argv = [
                PRLIMIT,
                "--core=0:0",
                f"--fsize={fsize}:{fsize}",
                f"--nofile=1024:{MAX_OPEN_FILES}",
                "--",
                *step.argv,
            ]
            bwrap_argv = build_bwrap_argv(
                bwrap=self.config.bwrap_path,
                ws=ws,
                static_dir=self.static_dir,
                lang=lang,
                argv=limited_argv,
                env=step.env,
                tmp_bytes=self.config.tmp_mb * MIB,
                build_writable=step.build_writable,
                seccomp_fd=seccomp_fd,
                info_fd=info_w,
                block_fd=block_r,
                mpl_fontlist=self._mpl_fontlist,
            )
            # bwrap runs as the sandbox's host uid. setpriv drops to it (no supplementary groups) rather
            # than Popen's user=/group=, which make Python fork() the whole worker instead of vfork():
            # 25 ms against 2 ms for a 150 MB process on this machine.
            drop = [SETPRIV, f"--reuid={self.config.sandbox_uid}", f"--regid={self.config.sandbox_gid}"]
            proc = subprocess.Popen(
                [*drop, "--clear-groups", "--", *bwrap_argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd="/",
                close_fds=True,
                pass_fds=(info_w, block_r, seccomp_fd),
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
            return proc, block_w, fds
        except BaseException:
            if proc is not None and proc.returncode is None:
                proc.kill()
                proc.wait()
            _close_all(fds)
            raise

    def _step(self, spec: RunSpec, ws: Workspace, step: Step) -> tuple[StepOutcome, StepUsage]:
        fsize = self._file_size_cap_bytes(spec, step)
        warm = self._warm_taken.get(spec.run_id) if step.name == "run" else None
        fds: list[int] = []
        proc: subprocess.Popen[bytes] | None = None
        cgroup = self.cgroups.group(f"{spec.run_id}.{step.name}")
        try:
            if warm is not None and not warm.used and warm.fits(step, fsize) and warm.proc.poll() is None:
                # Started ahead with the same command, environment and mounts; only the limits are the run's.
                warm.used = True
                cgroup, proc, block_w, fds = warm.cgroup, warm.proc, warm.block_w, warm.fds
                cgroup.set_limits(step.memory_bytes, step.pids + BWRAP_OWN_PIDS)
                cgroup.reset_usage()
                self.warm_used += 1
            else:
                if warm is not None and not warm.used:  # taken, but this step differs: its directory is the run's
                    warm.used = True
                    warm.discard(keep_workspace=True)
                cgroup.create(step.memory_bytes, step.pids + BWRAP_OWN_PIDS)
                proc, block_w, fds = self._spawn(spec.lang, ws, step, fsize, cgroup)
            started = time.monotonic()
            os.write(block_w, b"1")  # the program starts now, inside its cgroup
            is_cancelled = self._cancel_check(ws, step)
            outcome = supervise(
                proc,
                step.stdin,
                step.timeout_ms,
                step.cpu_ms,
                cgroup.cpu_usage_ms,
                cgroup.kill_all,
                step.max_output_bytes,
                step.on_output,
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
            _close_all(fds)
            self._later(cgroup.destroy)  # its processes are dead; removing the group can wait

    # ---- warm sandboxes --------------------------------------------------------------------------
    # bwrap's namespace and mount set-up, the move of its processes into a cgroup and the run's tmpfs
    # cost milliseconds a run should not wait for. With start_pool(), a thread keeps `warm_pool`
    # sandboxes per interpreted language started and blocked before the program, for the commonest
    # run: default disk size, no args, no env, no input files. A run that fits takes one (keeping its
    # directory and group names): its limits are written, its sources go into /work, and the block is
    # released. Anything else takes the cold path above.

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
        thread, self._pool_thread = self._pool_thread, None
        if thread is not None:
            with self._pool_cond:
                self._pool_stop.set()
                self._pool_cond.notify_all()
            thread.join(timeout=30)
        with self._pool_cond:
            entries = [e for pool in self._pool.values() for e in pool]
            self._pool.clear()
        for entry in entries:
            entry.discard()

    def _warm_languages(self) -> list[Language]:
        return [lang for lang in all_languages() if not lang.compiled]

    def _fill_pool(self) -> None:
        while not self._pool_stop.is_set():
            with self._pool_cond:
                dead = [e for pool in self._pool.values() for e in pool if e.proc.poll() is not None]
                for entry in dead:  # killed while idle (an operator, a janitor): replaced below
                    self._pool[entry.language].remove(entry)
            for entry in dead:
                entry.discard()
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
                    log.warning("could not start a warm %s sandbox", lang.name, exc_info=True)
                    self._pool_stop.wait(1.0)
                    continue
                if started is None:  # the pool was closed meanwhile
                    return

    def _start_warm(self, lang: Language) -> _Warm | None:
        name = f"warm-{uuid.uuid4().hex[:16]}"
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
                return entry
        entry.discard()
        return None

    def _start_warm_named(self, lang: Language, name: str) -> _Warm:
        spec = RunSpec(language=lang.name, code="", limits=self.config.default_limits, run_id=name)
        step = Step(
            name="run",
            argv=lang.run,
            env=dict(lang.env),
            timeout_ms=spec.limits.timeout_ms,
            cpu_ms=spec.limits.cpu_ms,
            memory_bytes=spec.limits.memory_mb * MIB,
            pids=spec.limits.pids,
            max_output_bytes=spec.limits.max_output_bytes,
        )
        fsize = self._file_size_cap_bytes(spec, step)
        ws = self._workspace(spec, 0)
        cgroup = self.cgroups.group(f"{name}.run")
        try:
            cgroup.create(step.memory_bytes, step.pids + BWRAP_OWN_PIDS)
            proc, block_w, fds = self._spawn(lang, ws, step, fsize, cgroup)
        except BaseException:
            cgroup.destroy()
            ws.destroy()
            raise
        return _Warm(
            lang.name, spec.limits.disk_mb, fsize, tuple(step.argv), dict(step.env), ws, cgroup, proc, block_w, fds
        )

    def _workspace_for_run(self, spec: RunSpec, input_bytes: int) -> Workspace:
        warm = self._take_warm(spec, input_bytes)
        return warm.ws if warm is not None else self._workspace(spec, input_bytes)

    def _take_warm(self, spec: RunSpec, input_bytes: int) -> _Warm | None:
        if spec.lang.compiled or input_bytes or spec.files or spec.args or spec.env:
            return None
        with self._pool_cond:
            pool = self._pool.get(spec.lang.name, [])
            entry = next((e for e in pool if e.disk_mb == spec.limits.disk_mb), None)
            if entry is None:
                return None
            pool.remove(entry)  # the filler starts another one when this run ends (_finish_run)
        if entry.proc.poll() is not None:  # died while idle (a janitor, an operator): not usable
            entry.discard()
            return None
        # The run keeps the warm directory and group names (bwrap may still be making its mounts, so
        # nothing is renamed); cancel() finds the group through this map.
        self._warm_taken[spec.run_id] = entry
        return entry

    def _finish_run(self, run_id: str) -> None:
        warm = self._warm_taken.pop(run_id, None)
        if warm is not None and not warm.used:  # taken, but the run ended before its step
            warm.discard(keep_workspace=True)
        with self._pool_cond:
            self._refill_at = time.monotonic() + REFILL_QUIET_S
            self._pool_cond.notify_all()  # refill soon, not while the run was using the CPU

    def _pool_dirs(self) -> list[Path]:
        """The directories of sandboxes the pool holds or is starting (not runs, not leftovers)."""
        with self._pool_cond:
            held = [e.ws.run_dir for pool in self._pool.values() for e in pool]
            return held + [self.runs_dir / name for name in self._pool_starting]

    def _backend_leftovers(self) -> list[str]:
        groups = self.cgroups.existing_groups()
        idle = {p.name for p in self._pool_dirs()}  # read after listing: a sandbox started meanwhile is the pool's
        return [f"cgroup:{n}" for n in groups if n.rsplit(".", 1)[0] not in idle]

    def leftovers(self) -> list[str]:
        found = super().leftovers()
        idle = self._pool_dirs()  # after listing, as above
        names = {p.name for p in idle}
        prefixes = tuple(str(p) + "/" for p in idle)
        return [
            item
            for item in found
            if not (item.startswith("dir:") and item[4:] in names)
            and not (item.startswith("mount:") and item[6:].startswith(prefixes))
        ]


@dataclasses.dataclass
class _Warm:
    """A sandbox started ahead of its run, blocked before the program (see BwrapBackend.start_pool)."""

    language: str
    disk_mb: int
    fsize: int
    argv: tuple[str, ...]
    env: dict[str, str]
    ws: Workspace
    cgroup: RunCgroup
    proc: subprocess.Popen[bytes]
    block_w: int
    fds: list[int]
    used: bool = False

    def fits(self, step: Step, fsize: int) -> bool:
        """Started with exactly what this step would start with (the limits are set on taking it)."""
        return (
            tuple(step.argv) == self.argv
            and dict(step.env) == self.env
            and fsize == self.fsize
            and not step.build_writable
        )

    def discard(self, keep_workspace: bool = False) -> None:
        self.cgroup.destroy()
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        _close_all(self.fds)
        if not keep_workspace:
            self.ws.destroy()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


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
        str(SANDBOX_USER_UID),
        "--gid",
        str(SANDBOX_USER_GID),
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
    tmp = cache_dir.with_name(cache_dir.name + f".tmp{os.getpid()}.{threading.get_native_id()}")
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
