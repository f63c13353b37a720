"""Per-run control groups, v1 (per-controller hierarchies) and v2 (unified), behind one class.

The run's whole process tree lives in one group, so memory, pids and CPU time are counted and
enforced for the tree, not per process, and a kill reaches orphans that left the session.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from .errors import SandboxUnavailable

V1_CONTROLLERS = ("memory", "pids", "cpuacct", "freezer")
KILL_DEADLINE_S = 5.0


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(fstype, mountpoint, options) of every cgroup mount."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, mnt, fstype, opts, *_ = line.split()
            if fstype in ("cgroup", "cgroup2"):
                found.append((fstype, mnt.replace("\\040", " "), set(opts.split(","))))
    return found


class CgroupDriver:
    """Finds the hierarchies once; makes `RunCgroup`s under `<hierarchy>/<parent>/`."""

    def __init__(self, parent: str = "codeexec", mounts: list[tuple[str, str, set[str]]] | None = None) -> None:
        self.parent = parent.strip("/")
        mounts = _mounts() if mounts is None else mounts
        self.version: int
        self.v1: dict[str, Path] = {}
        self.v2: Path | None = None
        for fstype, mnt, opts in mounts:
            if fstype == "cgroup2":
                controllers_file = Path(mnt) / "cgroup.controllers"
                if controllers_file.exists() and {"memory", "pids"} <= set(_read(controllers_file).split()):
                    self.v2 = Path(mnt)
            else:
                for ctrl in V1_CONTROLLERS:
                    if ctrl in opts:
                        self.v1[ctrl] = Path(mnt)
        if self.v2 is not None and not {"memory", "pids"} <= set(self.v1):
            self.version = 2
        elif {"memory", "pids", "cpuacct"} <= set(self.v1):
            self.version = 1
        elif self.v2 is not None:
            self.version = 2
        else:
            raise SandboxUnavailable(
                "no usable cgroup hierarchy: need cgroup v2 with memory and pids, "
                "or cgroup v1 memory, pids and cpuacct controllers"
            )
        self._prepared = False

    def prepare(self) -> None:
        """Create the parent group(s) and, on v2, delegate the controllers to it."""
        if self._prepared:
            return
        try:
            if self.version == 2:
                assert self.v2 is not None
                node = self.v2
                wanted = {"memory", "pids", "cpu"} & set(_read(node / "cgroup.controllers").split())
                for part in self.parent.split("/"):
                    _enable_controllers(node, wanted)
                    node = node / part
                    node.mkdir(exist_ok=True)
                _enable_controllers(node, wanted)
            else:
                for mnt in self.v1.values():
                    (mnt / self.parent).mkdir(parents=True, exist_ok=True)
                mem_parent = self.v1["memory"] / self.parent
                if (mem_parent / "memory.use_hierarchy").exists() and _read(
                    mem_parent / "memory.use_hierarchy"
                ).strip() != "1":
                    _write(mem_parent / "memory.use_hierarchy", "1")
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot prepare cgroup parent '{self.parent}': {exc} "
                "(the bwrap backend must run as root with cgroups writable)"
            ) from exc
        self._prepared = True

    def group(self, name: str) -> RunCgroup:
        self.prepare()
        return RunCgroup(self, name)

    def paths(self, name: str) -> dict[str, Path]:
        if self.version == 2:
            assert self.v2 is not None
            return {"unified": self.v2 / self.parent / name}
        return {ctrl: mnt / self.parent / name for ctrl, mnt in self.v1.items()}

    def remove_parent(self) -> None:
        """Remove the (empty) parent groups, e.g. after a test session with its own parent."""
        bases = [self.v2] if self.version == 2 else list(self.v1.values())
        for base in bases:
            assert base is not None
            node = base / self.parent
            while node != base:
                try:
                    node.rmdir()
                except OSError:
                    break
                node = node.parent

    def existing_groups(self) -> list[str]:
        """Names of run groups under the parent (for the janitor), in any hierarchy: under v1 a group
        whose removal stopped half-way (a controller busy with exiting tasks) is still listed."""
        bases = [self.v2] if self.version == 2 else list(self.v1.values())
        names: set[str] = set()
        for base in bases:
            assert base is not None
            parent = base / self.parent
            if parent.is_dir():
                names.update(p.name for p in parent.iterdir() if p.is_dir())
        return sorted(names)


def _enable_controllers(node: Path, wanted: set[str]) -> None:
    have = set(_read(node / "cgroup.subtree_control").split())
    missing = wanted - have
    if missing:
        _write(node / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(missing)))


class RunCgroup:
    """One run's group: create with limits, add processes, read usage, kill everything, remove."""

    def __init__(self, driver: CgroupDriver, name: str) -> None:
        self.driver = driver
        self.name = name
        self.paths = driver.paths(name)
        self.v2 = driver.version == 2
        self.cpu_baseline_ms = 0
        self.memory_limit: int | None = None
        self.pids_max: int | None = None

    def _p(self, ctrl: str, file: str) -> Path:
        return self.paths["unified" if self.v2 else ctrl] / file

    def create(self, memory_bytes: int, pids_max: int) -> None:
        self.memory_limit, self.pids_max = memory_bytes, pids_max
        try:
            self._make()
        except FileExistsError:
            # Left by an earlier attempt of this run (group names are per run and step) whose worker
            # died before removing it, or removed it only half-way: this attempt holds the run's claim,
            # so whatever is still in it is the lost attempt's. Remove it and start afresh.
            self.destroy()
            self._make()
        self._write_limits(memory_bytes, pids_max)

    def _make(self) -> None:
        for path in self.paths.values():
            try:
                path.mkdir(exist_ok=False)
            except FileNotFoundError:
                # The parent vanished (an operator or a janitor removed it): make it again, once.
                self.driver._prepared = False
                self.driver.prepare()
                path.mkdir(exist_ok=False)

    def _write_limits(self, memory_bytes: int, pids_max: int) -> None:
        if self.v2:
            _write(self._p("memory", "memory.max"), str(memory_bytes))
            if self._p("memory", "memory.swap.max").exists():
                _write(self._p("memory", "memory.swap.max"), "0")
            if self._p("memory", "memory.oom.group").exists():
                _write(self._p("memory", "memory.oom.group"), "1")
            _write(self._p("pids", "pids.max"), str(pids_max))
        else:
            _write(self._p("memory", "memory.limit_in_bytes"), str(memory_bytes))
            memsw = self._p("memory", "memory.memsw.limit_in_bytes")
            if memsw.exists():
                _write(memsw, str(memory_bytes))
            if self._p("memory", "memory.swappiness").exists():
                try:
                    _write(self._p("memory", "memory.swappiness"), "0")
                except OSError:
                    pass
            _write(self._p("pids", "pids.max"), str(pids_max))

    def set_limits(self, memory_bytes: int, pids_max: int) -> None:
        """New limits for a group that already has processes (a warm sandbox taken by a run)."""
        if (memory_bytes, pids_max) == (self.memory_limit, self.pids_max):
            return  # this object wrote these very values when it made the group: the commonest run's
        self.memory_limit, self.pids_max = memory_bytes, pids_max
        if self.v2:
            _write(self._p("memory", "memory.max"), str(memory_bytes))
        else:
            memory, memsw = self._p("memory", "memory.limit_in_bytes"), self._p("memory", "memory.memsw.limit_in_bytes")
            # memory <= memory+swap at every moment: raise memsw first, lower memory first.
            order = [memsw, memory] if memsw.exists() and memory_bytes > int(_read(memsw)) else [memory, memsw]
            for path in order:
                if path.exists():
                    _write(path, str(memory_bytes))
        _write(self._p("pids", "pids.max"), str(pids_max))

    def reset_usage(self) -> None:
        """Count CPU time and memory peak from now on (v1 resets its counters; v2 keeps a baseline)."""
        if self.v2:
            self.cpu_baseline_ms = self.cpu_usage_ms() or 0
            return
        for ctrl, file in (("cpuacct", "cpuacct.usage"), ("memory", "memory.max_usage_in_bytes")):
            try:
                _write(self._p(ctrl, file), "0")
            except OSError:
                pass

    def add(self, pid: int) -> None:
        """Move a process (its whole thread group) into the group in every hierarchy."""
        for path in self.paths.values():
            _write(path / "cgroup.procs", str(pid))

    def procs(self) -> list[int]:
        path = self._p("memory", "cgroup.procs")
        try:
            return [int(x) for x in _read(path).split()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            if exc.errno == errno.ENODEV:  # being removed (a run ending as it is cancelled): nothing left in it
                return []
            raise

    def cpu_usage_ms(self) -> int | None:
        try:
            if self.v2:
                for line in _read(self._p("cpu", "cpu.stat")).splitlines():
                    key, value = line.split()
                    if key == "usage_usec":
                        return int(value) // 1000 - self.cpu_baseline_ms
                return None
            return int(_read(self._p("cpuacct", "cpuacct.usage"))) // 1_000_000
        except (OSError, ValueError):
            return None

    def memory_peak_bytes(self) -> int | None:
        try:
            if self.v2:
                peak = int(_read(self._p("memory", "memory.peak")))
            else:
                peak = int(_read(self._p("memory", "memory.max_usage_in_bytes")))
        except (OSError, ValueError):
            return None  # e.g. v2 kernels before 5.19 have no memory.peak
        # A charge the kernel cannot refuse (a dying process's, say) may pass the limit by a page or
        # two; the program itself never had more than the limit.
        return min(peak, self.memory_limit) if self.memory_limit is not None else peak

    def oom_kills(self) -> int:
        try:
            text = _read(self._p("memory", "memory.events" if self.v2 else "memory.oom_control"))
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids_current(self) -> int:
        try:
            return int(_read(self._p("pids", "pids.current")))
        except (OSError, ValueError):
            return 0

    def kill_all(self) -> None:
        """SIGKILL every process in the group, freezing it first so a fork race cannot outrun us."""
        if not self.procs():
            # Nothing in it can fork any more, and only root can move a process in. Freezing takes the
            # kernel's global cgroup lock, which waits behind other groups' mkdir and rmdir (~10 ms under
            # load): an empty group, as every step leaves it when its program ended by itself, skips it.
            return
        kill_file = self._p("memory", "cgroup.kill") if self.v2 else None
        if kill_file is not None and kill_file.exists():
            try:
                _write(kill_file, "1")
            except OSError:
                pass
        frozen = self._freeze(True)
        deadline = time.monotonic() + KILL_DEADLINE_S
        try:
            while True:
                pids = self.procs()
                if not pids:
                    return
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if frozen:
                    self._freeze(False)  # frozen tasks only die once thawed
                    frozen = False
                if time.monotonic() > deadline:
                    return
                time.sleep(0.002)
        finally:
            if frozen:
                self._freeze(False)

    def _freeze(self, on: bool) -> bool:
        try:
            if self.v2:
                path = self._p("memory", "cgroup.freeze")
                if not path.exists():
                    return False
                _write(path, "1" if on else "0")
            else:
                if "freezer" not in self.paths:
                    return False
                _write(self.paths["freezer"] / "freezer.state", "FROZEN" if on else "THAWED")
            return True
        except OSError:
            return False

    def destroy(self) -> None:
        """Remove the group everywhere; kills leftovers first. Never raises for a missing group."""
        if any(p.exists() for p in self.paths.values()):
            self.kill_all()
        for path in self.paths.values():
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)  # the last tasks are still exiting
