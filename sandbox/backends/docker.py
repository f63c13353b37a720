"""The docker backend: one ephemeral container per step from the language's runner image.

Containment of one step, top to bottom:
  1. the run's /work is the same host tmpfs as with bwrap (size-capped, outlives the container so
     artifacts can be collected), bind-mounted; inputs read-only; /build for compiled languages;
  2. the container: no network, read-only root, all capabilities dropped, no-new-privileges, the
     seccomp profile from seccomp/ (and AppArmor when configured), non-root user, pids limit,
     memory = memory+swap limit, CPU quota, size-capped /tmp, rlimits, docker-init as pid 1,
     labelled so a janitor can find leftovers;
  3. attach before start, so no output is missed; the container starts blocked at a gate (a FIFO
     its shell reads) until its cgroup has been found, so even a program that ends at once has its
     CPU time and memory measured; stdin written, stdout/stderr read with caps;
  4. wall clock and the container's cgroup CPU time enforced by killing the container;
  5. OOM from Docker's flag cross-checked with exit status 137 and the cgroup's oom_kill counter;
  6. in `finally`: the container is removed (on the cleanup thread: it has ended, the result need not
     wait for the engine).

With start_pool() (see pool.py), steps 1-3 happen ahead for the commonest runs: a warm container is
made by the same code as a cold one, with the pool's default limits, and waits at its gate; the run
that takes it writes its sources into its /work, sets its own memory and pids limits in the container's
cgroup, resets its counters and opens the gate. With `warm_prestart` the gate opens when the container
is made, and its interpreter starts and waits for its program on a pipe at its entry file in /work,
which the run fills (pool.py: started interpreters). Each warm container serves one run and is removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..cgroups import CgroupDriver, RunCgroup
from ..errors import SandboxUnavailable
from ..languages import BUILD_DIR, Language
from ..outcome import StepUsage
from ..spec import RunSpec
from ..supervise import READ_CHUNK, CappedOutput, StepOutcome
from ..workspace import Workspace, stale_run_dirs
from .base import SandboxConfig
from .pool import PooledBackend, WarmEntry, warm_fields
from .steps import BASE_ENV, SANDBOX_USER_GID, SANDBOX_USER_UID, SYNTHETIC_ETC, Step

log = logging.getLogger(__name__)

# The runner images' unprivileged user (see runners/*/Dockerfile), the same as bwrap's inner user.
CONTAINER_UID = SANDBOX_USER_UID
CONTAINER_GID = SANDBOX_USER_GID
LABEL_RUN = "codeexec.run"
# The run directory the container belongs to: the run's own, or the warm sandbox's the run took.
LABEL_DIR = "codeexec.dir"
LABEL_MANAGED = "codeexec.managed"
LABEL_WORKDIR = "codeexec.workdir"
NANO_CPUS = 1_000_000_000
MAX_OPEN_FILES = 4096
POLL_S = 0.01
KILL_WAIT_S = 10.0
# Docker's multiplexed attach stream numbers its streams.
DOCKER_STREAMS = {1: "stdout", 2: "stderr"}
HIDDEN_DIRS = ("/root", "/home", "/srv", "/var", "/opt", "/mnt", "/media", "/run", "/sys")
# docker-init (tini) is pid 1: it reaps orphans and passes the program's exit status through.
DOCKER_INIT = True
# The program starts once the backend writes a line into this FIFO (then the shell execs it).
GATE_PATH = "/etc/codeexec-gate"
GATE_SCRIPT = f'read -r _ < {GATE_PATH} && exec "$@"'
CGROUP_WAIT_S = 2.0


class DockerBackend(PooledBackend):
    name = "docker"

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self._client: Any = None
        self._seccomp_json: str | None = None
        self._cgroup_drivers: list[tuple[CgroupDriver, str]] | None = None

    @property
    def workspace_uid(self) -> tuple[int, int]:
        return CONTAINER_UID, CONTAINER_GID

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import docker
            except ImportError as exc:
                raise SandboxUnavailable("the docker backend needs the docker SDK: pip install docker") from exc
            try:
                # A connection per running step (its exit status is awaited on a thread) and a few more
                # (the pool, clean-ups): docker-py's default of 10 would make busy workers reconnect.
                self._client = docker.from_env(timeout=60, max_pool_size=64)
                self._client.ping()
            except Exception as exc:
                self._client = None
                raise SandboxUnavailable(f"cannot reach the Docker engine: {exc}") from exc
        return self._client

    def image(self, language: str) -> str:
        return self.config.runner_images.get(language) or f"codeexec-runner-{language}:latest"

    def prepare(self) -> None:
        with self._prepare_lock:
            if self._prepared:
                return
            if os.geteuid() != 0:
                raise SandboxUnavailable("the docker backend must run as root: it mounts each run's tmpfs")
            self._make_dirs()
            # The same synthetic /etc as bwrap: no image system users, no resolver, no supplementary groups.
            self._write_static_etc({**SYNTHETIC_ETC, "resolv.conf": ""})
            empty = self.static_dir / "empty"
            empty.mkdir(exist_ok=True)
            empty.chmod(0o555)
            if self.config.disable_security:
                log.warning(
                    "DISABLE_SANDBOX_SECURITY=1: containers run WITHOUT seccomp, AppArmor and "
                    "no-new-privileges. Only for Docker Desktop development, never in production."
                )
            else:
                try:
                    profile = json.loads(Path(self.config.seccomp_profile).read_text())
                except (OSError, ValueError) as exc:
                    raise SandboxUnavailable(
                        f"cannot read seccomp profile {self.config.seccomp_profile}: {exc}"
                    ) from exc
                self._seccomp_json = json.dumps(profile, separators=(",", ":"))
            client = self.client
            import docker.errors

            from ..languages import all_languages

            missing = []
            for lang in all_languages():
                try:
                    client.images.get(self.image(lang.name))
                except docker.errors.ImageNotFound:
                    missing.append(self.image(lang.name))
            if missing:
                raise SandboxUnavailable(
                    f"runner images missing: {', '.join(missing)} (build them with scripts/build-images.sh)"
                )
            self._prepared = True

    def toolchain_id(self, lang: Language) -> str:
        # The image's id too: a rebuilt image may carry another toolchain under the same version string.
        return f"{super().toolchain_id(lang)}:{self.client.images.get(self.image(lang.name)).id}"

    def host_path(self, path: Path) -> str:
        """The path as the Docker engine sees it (the worker may itself run in a container)."""
        if self.config.host_workdir is None:
            return str(path)
        return str(Path(self.config.host_workdir) / path.relative_to(self.workdir))

    def _security_opt(self) -> list[str]:
        if self.config.disable_security:
            return []
        opts = ["no-new-privileges:true", f"seccomp={self._seccomp_json}"]
        if self.config.apparmor_profile:
            opts.append(f"apparmor={self.config.apparmor_profile}")
        return opts

    def _step(self, spec: RunSpec, ws: Workspace, step: Step) -> tuple[StepOutcome, StepUsage]:
        fsize = self._file_size_cap_bytes(spec, step)
        warm = self._warm_for_step(spec, step, fsize)
        gated = warm.gated if isinstance(warm, _WarmContainer) else self._start_gated(spec, ws, step, fsize)
        try:
            if warm is not None:
                # Made ahead with the same command, environment and mounts; only the limits are the run's.
                warm.cgroup.set_limits(step.memory_bytes, step.pids)
                warm.cgroup.reset_usage()
            started = time.monotonic()
            is_cancelled = self._cancel_check(ws, step)
            if warm is not None:
                warm.start_program(spec.code.encode(), started + step.timeout_ms / 1000, is_cancelled)
            else:
                gated.release()
            return self._supervise(gated.container, gated.raw, step, started, is_cancelled, gated.cgroup)
        finally:
            gated.close()
            self._later(gated.remove)  # it has ended (or been killed): removing it need not delay the result

    def _start_gated(self, spec: RunSpec, ws: Workspace, step: Step, fsize: int) -> _Gated:
        """Create, attach and start the step's container; it waits at its gate, its cgroup found."""
        from docker.types import Mount

        mounts = [
            Mount("/work", self.host_path(ws.work), type="bind", read_only=False),
            Mount("/work/inputs", self.host_path(ws.inputs), type="bind", read_only=True),
        ]
        if spec.lang.compiled:
            mounts.append(Mount(BUILD_DIR, self.host_path(ws.build), type="bind", read_only=not step.build_writable))
        # Docker leaves /etc/hosts, /etc/hostname and /etc/resolv.conf alone when we mount our own.
        for name in (*SYNTHETIC_ETC, "resolv.conf"):
            mounts.append(
                Mount(f"/etc/{name}", self.host_path(self.static_dir / "etc" / name), type="bind", read_only=True)
            )
        # Empty, read-only directories where the image has its own (/var, /root, ...): the program
        # sees what it sees under bwrap, not the image's package database or root's home.
        empty = self.host_path(self.static_dir / "empty")
        for path in HIDDEN_DIRS:
            mounts.append(Mount(path, empty, type="bind", read_only=True))
        gate = ws.run_dir / f"gate-{step.name}"
        os.mkfifo(gate, 0o644)
        try:
            # Read-write, so that neither our open nor the container's blocks; the line we write releases it.
            gate_fd = os.open(gate, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            gate.unlink(missing_ok=True)
            raise
        container: Any = None
        sock: Any = None
        try:
            mounts.append(Mount(GATE_PATH, self.host_path(gate), type="bind", read_only=True))
            container = self._create(spec, ws, step, mounts, fsize)
            sock = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            container.start()
            cgroup = self._wait_for_cgroup(container.id)
            if cgroup is not None:
                cgroup.memory_limit = step.memory_bytes  # peaks are reported no higher than the limit
            return _Gated(container, sock, gate, gate_fd, cgroup)
        except BaseException:
            if sock is not None:
                _close_socket(sock._sock)
            if container is not None:
                _remove(container)
            os.close(gate_fd)
            gate.unlink(missing_ok=True)
            raise

    def _create(self, spec: RunSpec, ws: Workspace, step: Step, mounts: list[Any], fsize: int) -> Any:
        """The container of one step, every setting chosen on purpose (a warm one is made here too)."""
        from docker.types import LogConfig, Ulimit

        environment = {**BASE_ENV, "PWD": "/work", **step.env}
        return self.client.containers.create(
            self.image(spec.lang.name),
            # Docker adds HOSTNAME and the image's ENV to the container's environment; `env -i` gives the
            # program exactly ours, as bwrap's --clearenv does. The shell in front waits at the gate.
            command=[
                "/bin/sh",
                "-c",
                GATE_SCRIPT,
                "codeexec-gate",
                "/usr/bin/env",
                "-i",
                "--",
                *(f"{k}={v}" for k, v in environment.items()),
                *step.argv,
            ],
            user=f"{CONTAINER_UID}:{CONTAINER_GID}",
            working_dir="/work",
            environment=environment,
            hostname="sandbox",
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=self._security_opt(),
            pids_limit=step.pids,
            mem_limit=step.memory_bytes,
            memswap_limit=step.memory_bytes,
            nano_cpus=NANO_CPUS,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={self.config.tmp_mb}m,mode=1777"},
            mounts=mounts,
            ulimits=[
                Ulimit(name="core", soft=0, hard=0),
                Ulimit(name="fsize", soft=fsize, hard=fsize),
                Ulimit(name="nofile", soft=1024, hard=MAX_OPEN_FILES),
            ],
            labels={
                LABEL_MANAGED: "1",
                LABEL_RUN: spec.run_id,
                LABEL_DIR: ws.run_dir.name,
                LABEL_WORKDIR: str(self.workdir),
                "codeexec.step": step.name,
            },
            init=DOCKER_INIT,
            # Output reaches us through the attach stream, capped; Docker must not also log it to disk.
            log_config=LogConfig(type="none"),
            stdin_open=True,
            tty=False,
            # detach=False makes the SDK set StdinOnce and AttachStdin: closing our end of the attach
            # closes the program's stdin (EOF), instead of leaving it blocked on a read forever.
            detach=False,
            name=f"codeexec-{spec.run_id}-{step.name}",
        )

    def _supervise(
        self,
        container: Any,
        raw: socket.socket,
        step: Step,
        started: float,
        is_cancelled: Callable[[], bool],
        cgroup: RunCgroup | None,
    ) -> tuple[StepOutcome, StepUsage]:
        deadline = started + step.timeout_ms / 1000
        # Asked now, answered as the container stops, about when its output ends: asked after the end of the
        # output, the engine took another ~8 ms to answer here.
        exit_status = _wait_on_thread(container, step.timeout_ms / 1000 + 2 * KILL_WAIT_S)
        output = CappedOutput(step.max_output_bytes, step.on_output)
        pending = b""
        stdin_view = memoryview(step.stdin)
        raw.setblocking(False)
        if not stdin_view:
            _shutdown_write(raw)
        killed_for: str | None = None
        eof = False
        cpu_seen: int | None = None
        peak_seen: int | None = None
        oom_seen = 0
        killed_at: float | None = None
        while not eof:
            now = time.monotonic()
            if killed_for is None:
                if is_cancelled():
                    killed_for = "cancel"
                elif now >= deadline:
                    killed_for = "wall"
                elif cgroup is not None and cpu_seen is not None and cpu_seen >= step.cpu_ms:
                    killed_for = "cpu"
                if killed_for is not None:
                    killed_at = now
                    # Through the kernel when we can see the container's cgroup: an engine busy with a
                    # flood may take minutes to answer an API kill.
                    if cgroup is not None:
                        cgroup.kill_all()
                    else:
                        _kill(container)
            elif killed_at is not None and now - killed_at > KILL_WAIT_S:
                break
            if cgroup is None:
                cgroup = self._container_cgroup(container.id)
            if cgroup is not None:
                cpu_seen, peak_seen = _usage(cgroup, cpu_seen, peak_seen)
                oom_seen = max(oom_seen, cgroup.oom_kills())
            want_write = [raw] if stdin_view else []
            readable, writable, _ = select.select([raw], want_write, [], POLL_S)
            if writable and stdin_view:
                try:
                    n = raw.send(stdin_view[:READ_CHUNK])
                    stdin_view = stdin_view[n:]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    stdin_view = memoryview(b"")
                if not stdin_view:
                    _shutdown_write(raw)
            if readable:
                try:
                    chunk = raw.recv(READ_CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    eof = True
                    break
                pending += chunk
                # Docker's multiplexed stream: 8-byte header (stream, 0, 0, 0, size32) then the payload.
                while len(pending) >= 8:
                    stream_id, size = pending[0], struct.unpack(">I", pending[4:8])[0]
                    if len(pending) < 8 + size:
                        break
                    payload, pending = pending[8 : 8 + size], pending[8 + size :]
                    if stream_id in DOCKER_STREAMS:
                        output.add(DOCKER_STREAMS[stream_id], payload)
        ended = time.monotonic()
        if cgroup is not None:  # the last reading, if the group is still there
            cpu_seen, peak_seen = _usage(cgroup, cpu_seen, peak_seen)
        # Hang up before waiting: an engine still copying a flood into our socket would otherwise block
        # the container's teardown (and every call about it) until we read again.
        try:
            raw.close()
        except OSError:
            pass
        try:
            status = exit_status.result(timeout=max(1.0, deadline - time.monotonic() + KILL_WAIT_S))
            code = int(status.get("StatusCode", -1))
        except Exception:
            _kill(container)
            killed_for = killed_for or "wall"
            code = -9
        if cgroup is not None:
            oom_seen = max(oom_seen, cgroup.oom_kills())
        # The kernel's oom_kill counter for the container's cgroup counts every process of the tree (a
        # killed child whose parent then exits 1 included). Docker's OOMKilled flag alone is not
        # reliable: without the counter it is believed only together with the SIGKILL exit status (and
        # only then is it worth asking the engine for).
        oom = oom_seen > 0 or (code == 137 and self._oom_flag(container))
        outcome = output.outcome(code, killed_for, int((ended - started) * 1000))
        return outcome, StepUsage(cpu_ms=cpu_seen, memory_peak_bytes=peak_seen, oom_kills=1 if oom else 0)

    @staticmethod
    def _oom_flag(container: Any) -> bool:
        try:
            container.reload()
        except Exception:  # an engine too busy to answer (e.g. reaping a fork bomb): no flag to read
            log.warning("could not inspect container %s after it ended", container.id[:12], exc_info=True)
            return False
        return bool(container.attrs.get("State", {}).get("OOMKilled"))

    def _wait_for_cgroup(self, container_id: str) -> RunCgroup | None:
        """The started (and still gated) container's cgroup; None where this host cannot see it."""
        deadline = time.monotonic() + CGROUP_WAIT_S
        while True:
            cgroup = self._container_cgroup(container_id)
            if cgroup is not None or not self._cgroup_drivers or time.monotonic() >= deadline:
                return cgroup
            time.sleep(0.001)

    def _container_cgroup(self, container_id: str) -> RunCgroup | None:
        """The container's cgroup on this host (cgroupfs or systemd driver), if we can see it."""
        if self._cgroup_drivers is None:
            try:
                self._cgroup_drivers = [
                    (CgroupDriver("docker"), "{id}"),
                    (CgroupDriver("system.slice"), "docker-{id}.scope"),
                ]
            except SandboxUnavailable:
                self._cgroup_drivers = []
        for driver, pattern in self._cgroup_drivers:
            group = RunCgroup(driver, pattern.format(id=container_id))
            if all(p.exists() for p in group.paths.values()):
                return group
        return None

    # ---- warm containers (see pool.py) ----------------------------------------------------------------
    # What they save here: the container's create, attach and start, the run's tmpfs and the wait for
    # the container's cgroup; and for the run, Docker's own time to start a container (tens to hundreds
    # of milliseconds of engine, containerd and runc work).

    def _start_warm_entry(
        self, spec: RunSpec, ws: Workspace, step: Step, fsize: int, start_interpreter: bool = False
    ) -> _WarmContainer:
        gated = self._start_gated(spec, ws, step, fsize)
        if gated.cgroup is None:
            gated.close()
            gated.remove()
            raise SandboxUnavailable(
                "the container's cgroup is not visible here, so a run's limits could not be set on a warm "
                "container (share the host's cgroups with the worker, or set SANDBOX_WARM_POOL=0)"
            )
        warm = _WarmContainer(*warm_fields(spec, step, fsize, ws), cgroup=gated.cgroup, gated=gated)
        if start_interpreter:
            warm.start_interpreter(spec.lang)  # its pipe is in the run's /work, which the container shares
        return warm

    def cancel(self, run_id: str) -> bool:
        found = self._mark_cancelled(run_id)
        warm = self._warm_taken.get(run_id)  # its container is named and labelled after the warm sandbox
        if isinstance(warm, _WarmContainer) and warm.used:
            warm.gated.kill()
            found = True
        for container in self.client.containers.list(filters={"label": f"{LABEL_RUN}={run_id}"}, ignore_removed=True):
            _kill(container)
            found = True
        return found

    def _backend_leftovers(self) -> list[str]:
        containers = self._own_containers()
        idle = self._pool_names()  # read after listing: a container started meanwhile is the pool's
        return [f"container:{c.name}" for c in containers if _dir_label(c) not in idle]

    def _own_containers(self) -> list[Any]:
        """Containers this backend's work dir made (another work dir's are another worker's business)."""
        labels = [f"{LABEL_MANAGED}=1", f"{LABEL_WORKDIR}={self.workdir}"]
        # ignore_removed: a container removed between the listing and its inspection (a run ending) is gone.
        return list(self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True))

    def cleanup_orphans(self) -> list[str]:
        """Remove labelled containers and run dirs whose owning worker is gone."""
        self.prepare()
        self.drain_cleanups()
        removed: list[str] = []
        for run_dir in stale_run_dirs(self.runs_dir):
            Workspace(root=self.runs_dir, run_dir=run_dir, uid=CONTAINER_UID, gid=CONTAINER_GID).destroy()
            removed.append(f"dir:{run_dir.name}")
        containers = self._own_containers()
        # Listed after the containers: a run (or warm sandbox) makes its directory before its container.
        live = {p.name for p in self.runs_dir.iterdir()} if self.runs_dir.is_dir() else set()
        for container in containers:
            if _dir_label(container) not in live:
                try:
                    container.remove(force=True)
                    removed.append(f"container:{container.name}")
                except Exception:
                    log.warning("could not remove leftover container %s", container.name, exc_info=True)
        return removed


@dataclasses.dataclass
class _Gated:
    """A started container waiting at its gate, attached (stdin, stdout, stderr), its cgroup found."""

    container: Any
    sock: Any  # the SDK's attach socket; `raw` is the socket inside it
    gate: Path
    gate_fd: int
    cgroup: RunCgroup | None

    @property
    def raw(self) -> socket.socket:
        raw: socket.socket = self.sock._sock
        return raw

    def release(self) -> None:
        os.write(self.gate_fd, b"go\n")  # the shell reads the line and execs the program

    def kill(self) -> None:
        # Through the kernel when we can see the container's cgroup: a busy engine may take long to answer.
        if self.cgroup is not None:
            self.cgroup.kill_all()
        else:
            _kill(self.container)

    def close(self) -> None:
        """Hang up and close the gate (the container keeps running if it is; remove() ends it)."""
        _close_socket(self.raw)
        try:
            os.close(self.gate_fd)
        except OSError:
            pass
        self.gate.unlink(missing_ok=True)

    def remove(self) -> None:
        _remove(self.container)


@dataclasses.dataclass
class _WarmContainer(WarmEntry):
    """A container started ahead with the pool's default limits, waiting at its gate (or, a started
    interpreter, released at once: its interpreter waits for its program)."""

    gated: _Gated = dataclasses.field(kw_only=True)

    def release(self) -> None:
        self.gated.release()

    def alive(self) -> bool:
        if self.exited():  # killed or removed (its group goes with it)
            return False
        try:
            # Readable and nothing to read is the end of the stream. (A started interpreter may have said
            # something as it started: that stays for the run, which reads it as a cold run would.)
            readable, _, _ = select.select([self.gated.raw], [], [], 0)
            return not readable or self.gated.raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except (OSError, ValueError):
            return False

    def discard(self, keep_workspace: bool = False) -> None:
        self.gated.close()
        self.gated.remove()
        if not keep_workspace:
            self.ws.destroy()


def _usage(cgroup: RunCgroup, cpu_ms: int | None, peak_bytes: int | None) -> tuple[int | None, int | None]:
    """The group's CPU time and memory peak now, or the last ones seen where it is gone (a stopped
    container's group is removed by the engine). 0 ms is a reading: a program that has not used a whole
    millisecond yet, as a started interpreter running `pass` may be at the first one."""
    cpu, peak = cgroup.cpu_usage_ms(), cgroup.memory_peak_bytes()
    return (cpu if cpu is not None else cpu_ms), (peak if peak is not None else peak_bytes)


def _wait_on_thread(container: Any, timeout_s: float) -> Future[dict[str, Any]]:
    """`container.wait()` on a thread of its own: the container's exit status once it has stopped."""
    future: Future[dict[str, Any]] = Future()

    def wait() -> None:
        try:
            future.set_result(container.wait(timeout=timeout_s))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=wait, name="cx-docker-wait", daemon=True).start()
    return future


def _dir_label(container: Any) -> str | None:
    labels: dict[str, str] = container.labels
    return labels.get(LABEL_DIR) or labels.get(LABEL_RUN)  # containers made before LABEL_DIR existed


def _remove(container: Any) -> None:
    import docker.errors

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass  # already gone (a janitor, an operator): that is what we wanted
    except Exception:
        log.warning("could not remove container %s", container.id[:12], exc_info=True)


def _close_socket(raw: socket.socket) -> None:
    try:
        raw.close()
    except OSError:
        pass


def _kill(container: Any) -> None:
    try:
        container.kill()
    except Exception:  # already gone: that is what we wanted
        log.debug("kill of %s: container already gone", getattr(container, "name", "?"))


def _shutdown_write(raw: socket.socket) -> None:
    try:
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass
