"""The bubblewrap backend: namespaces + seccomp + cgroups, no daemon, milliseconds of overhead.

Containment pipeline of one step (compile or run), top to bottom:
  1. as root: create the step's cgroup with memory/pids limits (the workspace tmpfs already exists);
  2. spawn, with an empty environment, a process that (still root) lowers its rlimits and writes itself
     into the step's cgroup, then drops to the sandbox uid (setpriv: no groups, then gid, then uid) and
     execs bwrap — so bwrap never runs as root, and is in the group, limited and counted, from its
     first instruction (its cgroup namespace, too, is rooted at the step's group);
  3. bwrap builds the namespaces and mounts, reports on --info-fd and waits on --block-fd;
  4. release the block: the user's program is forked only now, inside the group, under seccomp (a warm
     sandbox with a started interpreter is released when it starts, and its interpreter waits for the
     program on a pipe at its entry file instead: pool.py);
  5. supervise I/O, wall clock and cgroup CPU time; kill the whole group on any limit;
  6. in `finally`: kill what is left, remove the group.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

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
from .pool import PooledBackend, WarmEntry, warm_fields
from .steps import BASE_ENV, SANDBOX_USER_GID, SANDBOX_USER_UID, SYNTHETIC_ETC, Step

log = logging.getLogger(__name__)

# bwrap's monitor and its pid 1 live in the run's cgroup too; they are not the program's to spend.
BWRAP_OWN_PIDS = 2
MAX_OPEN_FILES = 4096
SOFT_OPEN_FILES = 1024
SH = "/bin/sh"
SETPRIV = "/usr/bin/setpriv"
INFO_TIMEOUT_S = 10.0
# What the spawned process runs as root before it becomes setpriv, then bwrap (step 2 above), with its
# arguments: the file size cap in 512-byte blocks (POSIX `ulimit -f` units; shells in POSIX mode, dash,
# bash as sh and busybox alike), the soft and hard open files caps, how many cgroup.procs files follow,
# those files, then the command it becomes. Lowering rlimits needs no capability, and lowered hard limits
# cannot be raised again; the sandbox's rlimit test reads them back. Any failure: exit 125, no bwrap.
# The shell exports PWD of its own accord: unset, so bwrap and its pid 1 start with an empty environment
# (bash, where /bin/sh is bash, still adds SHLVL=0).
ENTER_STEP = (
    "unset PWD; "
    'ulimit -c 0 && ulimit -f "$1" && ulimit -n "$3" && ulimit -Sn "$2" || exit 125; '
    'n=$4; shift 4; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; '
    'exec "$@"'
)

# /etc entries every program may read, bound read-only when the host has them.
COMMON_ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "ssl/openssl.cnf")


class BwrapBackend(PooledBackend):
    name = "bwrap"

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.seccomp = SeccompProgram(Path(config.seccomp_profile), self.static_dir)
        self._cgroups: CgroupDriver | None = None
        self._mpl_fontlist: Path | None = None
        self._etc_dirs: dict[str, Path] = {}
        self._etc_holds: list[int] = []  # shared locks on those trees, held for the process's life

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
            for tool, package in ((SH, "dash"), (SETPRIV, "util-linux")):
                if not os.access(tool, os.X_OK):
                    raise SandboxUnavailable(f"{tool} not found (apt-get install {package})")
            if not os.access(self.config.bwrap_path, os.X_OK):
                raise SandboxUnavailable(
                    f"bubblewrap not found at {self.config.bwrap_path} (apt-get install bubblewrap)"
                )
            self._make_dirs()
            _check_traversable(self.runs_dir)
            self._write_static_etc(SYNTHETIC_ETC)
            for lang in all_languages():
                tree, hold = hold_etc_tree(self.static_dir, lang)
                self._etc_dirs[lang.name] = tree
                self._etc_holds.append(hold)
            removed = remove_unused_etc_trees(self.static_dir)
            if removed:
                log.info("removed /etc trees no worker uses any more: %s", ", ".join(removed))
            self.seccomp.open_fd().__index__()  # compile now so a bad profile fails at start
            self.cgroups.prepare()
            self._mpl_fontlist = _prebuild_matplotlib_cache(self.static_dir / "matplotlib")
            self._prepared = True

    def cancel(self, run_id: str) -> bool:
        found = self._mark_cancelled(run_id)
        warm = self._warm_taken.get(run_id)
        if isinstance(warm, _Warm) and warm.used:
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
        for run_dir in stale_run_dirs(self.runs_dir):
            ws = Workspace(
                root=self.runs_dir, run_dir=run_dir, uid=self.config.sandbox_uid, gid=self.config.sandbox_gid
            )
            ws.destroy()
            removed.append(f"dir:{run_dir.name}")
        groups = self.cgroups.existing_groups()
        # Listed after the groups: a run (or warm sandbox) makes its directory before its group.
        live = {p.name for p in self.runs_dir.iterdir()} if self.runs_dir.is_dir() else set()
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
            bwrap_argv = build_bwrap_argv(
                bwrap=self.config.bwrap_path,
                ws=ws,
                etc_dir=self._etc_dirs[lang.name],
                lang=lang,
                argv=step.argv,
                env=step.env,
                tmp_bytes=self.config.tmp_mb * MIB,
                build_writable=step.build_writable,
                seccomp_fd=seccomp_fd,
                info_fd=info_w,
                block_fd=block_r,
                mpl_fontlist=self._mpl_fontlist,
            )
            # The rlimits and the cgroup are entered by the spawned process itself, as root, before it
            # execs setpriv (ENTER_STEP), rather than by a preexec_fn, or Popen's user=/group= for the
            # drop: both make Python fork() the whole worker instead of vfork(), 25 ms against 2 ms for
            # a 150 MB process on this machine. setpriv drops to the sandbox's host uid, no groups.
            enter = [SH, "-c", ENTER_STEP, "codeexec-enter", *_enter_args(fsize, cgroup)]
            drop = [SETPRIV, f"--reuid={self.config.sandbox_uid}", f"--regid={self.config.sandbox_gid}"]
            proc = subprocess.Popen(
                [*enter, *drop, "--clear-groups", "--", *bwrap_argv],
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
            if _read_child_pid(info_r) is None:  # it ended before bwrap had a sandbox: say why
                try:
                    proc.wait(timeout=INFO_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    raise SandboxUnavailable("bubblewrap closed its info fd without reporting") from None
                said = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise SandboxUnavailable(f"bubblewrap did not start (exit status {proc.returncode}): {said[-500:]}")
            return proc, block_w, fds
        except BaseException:
            if proc is not None and proc.returncode is None:
                proc.kill()
                proc.wait()
            _close_all(fds)
            raise

    def _step(self, spec: RunSpec, ws: Workspace, step: Step) -> tuple[StepOutcome, StepUsage]:
        fsize = self._file_size_cap_bytes(spec, step)
        warm = self._warm_for_step(spec, step, fsize)
        fds: list[int] = []
        proc: subprocess.Popen[bytes] | None = None
        cgroup = self.cgroups.group(f"{spec.run_id}.{step.name}")
        try:
            if isinstance(warm, _Warm):
                # Started ahead with the same command, environment and mounts; only the limits are the run's.
                cgroup, proc, block_w, fds = warm.cgroup, warm.proc, warm.block_w, warm.fds
                cgroup.set_limits(step.memory_bytes, step.pids + BWRAP_OWN_PIDS)
            else:
                cgroup.create(step.memory_bytes, step.pids + BWRAP_OWN_PIDS)
                proc, block_w, fds = self._spawn(spec.lang, ws, step, fsize, cgroup)
            # bwrap (and a started interpreter) set itself up inside the group: the run's usage counts from
            # its program on, cold or warm, as its wall time does.
            cgroup.reset_usage()
            started = time.monotonic()
            is_cancelled = self._cancel_check(ws, step)
            if warm is not None:
                warm.start_program(spec.code.encode(), started + step.timeout_ms / 1000, is_cancelled)
            else:
                os.write(block_w, b"1")  # the program starts now, inside its cgroup
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

    # ---- warm sandboxes (see pool.py) -------------------------------------------------------------
    # What they save here: bwrap's namespace and mount set-up, the move of its processes into a cgroup
    # and the run's tmpfs.

    def _start_warm_entry(
        self, spec: RunSpec, ws: Workspace, step: Step, fsize: int, start_interpreter: bool = False
    ) -> _Warm:
        cgroup = self.cgroups.group(f"{spec.run_id}.{step.name}")
        try:
            cgroup.create(step.memory_bytes, step.pids + BWRAP_OWN_PIDS)
            proc, block_w, fds = self._spawn(spec.lang, ws, step, fsize, cgroup)
        except BaseException:
            cgroup.destroy()
            raise
        warm = _Warm(*warm_fields(spec, step, fsize, ws), cgroup=cgroup, proc=proc, block_w=block_w, fds=fds)
        if start_interpreter:
            warm.start_interpreter(spec.lang)
        return warm

    def _backend_leftovers(self) -> list[str]:
        groups = self.cgroups.existing_groups()
        idle = self._pool_names()  # read after listing: a sandbox started meanwhile is the pool's
        return [f"cgroup:{n}" for n in groups if n.rsplit(".", 1)[0] not in idle]


@dataclasses.dataclass
class _Warm(WarmEntry):
    """bwrap started ahead, blocked on its --block-fd, its processes already in their cgroup."""

    proc: subprocess.Popen[bytes] = dataclasses.field(kw_only=True)
    block_w: int = dataclasses.field(kw_only=True)
    fds: list[int] = dataclasses.field(kw_only=True)
    own_pids: ClassVar[int] = BWRAP_OWN_PIDS

    def alive(self) -> bool:
        return self.proc.poll() is None

    def release(self) -> None:
        os.write(self.block_w, b"1")  # bwrap forks the program (the interpreter), inside its cgroup

    def exited(self) -> bool:
        # bubblewrap's own process: when it has ended, what is left of the sandbox dies with it
        # (--die-with-parent); not reaped, for supervise() to report how it ended.
        return _exited(self.proc)

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


def _enter_args(fsize: int, cgroup: RunCgroup) -> list[str]:
    """ENTER_STEP's arguments before the command: the step's rlimits and its cgroup.procs files."""
    if fsize % 512:
        raise ValueError(f"file size cap {fsize} is not a whole number of 512-byte blocks")
    procs = [str(path / "cgroup.procs") for path in dict.fromkeys(cgroup.paths.values())]
    return [str(fsize // 512), str(SOFT_OPEN_FILES), str(MAX_OPEN_FILES), str(len(procs)), *procs]


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the process has ended, leaving it unreaped (Popen.poll() would reap it)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def build_etc_tree(static_dir: Path, lang: Language) -> Path:
    """The /etc a sandbox of `lang` sees, as one directory: the synthetic files (static_dir/etc, written by
    _write_static_etc) and copies of the host's COMMON_ETC and `lang.etc` entries that exist, each as
    binding it would show it (a top-level symlink followed, symlinks inside a directory kept). Nothing
    else of the host's /etc is in it. Named by a digest of its contents: worker processes sharing the
    work dir make the same tree once, a changed host file (a package upgrade) gives a new tree at the next
    start, and a tree never changes under a sandbox that has it mounted."""
    sources = [(static_dir / "etc" / name, name) for name in sorted(SYNTHETIC_ETC)]
    sources += [(Path("/etc") / name, name) for name in (*COMMON_ETC, *lang.etc) if os.path.exists(f"/etc/{name}")]
    digest = hashlib.sha256()
    for src, name in sources:
        for path in [src, *_walk(src)]:
            relative = name + str(path)[len(str(src)) :]
            mode = os.stat(path) if path == src else os.lstat(path)
            digest.update(f"{relative}\0{mode.st_mode:o}\0".encode())
            if os.path.islink(path) and path != src:
                digest.update(os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
            digest.update(b"\0")
    tree = static_dir / f"etc-{lang.name}-{digest.hexdigest()[:16]}"
    if tree.is_dir():
        return tree
    # A fresh name of its own (worker containers sharing the work dir may have the same pids and tids).
    tmp = Path(tempfile.mkdtemp(prefix=f".{tree.name}.", dir=static_dir))
    try:
        for src, name in sources:
            dest = tmp / name
            for parent in reversed(dest.relative_to(tmp).parents[:-1]):  # e.g. ssl/: 0755 whatever the umask
                (tmp / parent).mkdir(exist_ok=True)
                os.chmod(tmp / parent, 0o755)
            if src.is_dir():
                shutil.copytree(src, dest, symlinks=True)
            else:
                shutil.copy2(src, dest)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, tree)
        except OSError:
            if not tree.is_dir():  # another process made it first: theirs is the same
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def hold_etc_tree(static_dir: Path, lang: Language) -> tuple[Path, int]:
    """build_etc_tree, and a shared lock on the tree, held through the returned fd for as long as this
    process may bind the tree into sandboxes: remove_unused_etc_trees never removes a held tree. A tree
    removed as unused between its making and the lock is made again."""
    for _ in range(3):
        tree = build_etc_tree(static_dir, lang)
        try:
            fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.path.samestat(os.fstat(fd), os.stat(tree)):
                return tree, fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise SandboxUnavailable(f"could not make and hold the /etc tree of {lang.name} under {static_dir}")


def remove_unused_etc_trees(static_dir: Path) -> list[str]:
    """Remove the /etc trees no live worker process holds (hold_etc_tree): those of host files since
    changed. Each is first renamed out of the way under its exclusive lock, so a process about to hold
    it finds it gone and makes it again; what a crash left half-removed goes too."""
    removed: list[str] = []
    for tree in sorted(static_dir.glob("etc-*")):
        try:
            fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a worker process (maybe this one) binds it into its sandboxes
            os.rename(tree, static_dir / f".stale-{tree.name}-{uuid.uuid4().hex[:8]}")
        except OSError:
            continue
        finally:
            os.close(fd)
        removed.append(tree.name)
    for stale in static_dir.glob(".stale-etc-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return removed


def _walk(top: Path) -> list[Path]:
    """Everything below a directory (not following symlinks), in a stable order; nothing for a file."""
    if not top.is_dir():
        return []
    found: list[Path] = []
    for root, dirs, files in os.walk(top):
        dirs.sort()
        found += [Path(root) / name for name in sorted(dirs + files)]
    return found


def build_bwrap_argv(
    *,
    bwrap: str,
    ws: Workspace,
    etc_dir: Path,
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
    # One bind of a tree made at start-up (build_etc_tree), not one per file: bwrap rereads the whole
    # mount table for every bind it makes, which cost ~3 ms per sandbox with 15 /etc files.
    args += ["--ro-bind", str(etc_dir), "/etc"]
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
