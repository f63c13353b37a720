"""bwrap's step enters its cgroup before bubblewrap starts (SPEC §4: the privileged side creates the
run's cgroup and writes the process into it, then drops to the sandbox uid and execs bubblewrap).

The proof is what the sandbox sees: bubblewrap unshares the cgroup namespace first thing, so its root
is whatever group bubblewrap was in when it started. It is the step's own group, on the warm and the
cold path, so bubblewrap was in it from its first instruction (and the sandbox learns nothing of the
host's cgroup layout: every hierarchy reads "/"). These tests run real sandboxes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox import RunSpec, Status
from sandbox.backends import bwrap as bwrap_module
from sandbox.result import ErrorCode

from .conftest import fresh_pool

PROBE = "print(open('/proc/self/cgroup').read(), end='')"


@pytest.fixture(scope="module")
def bwrap() -> Iterator[Any]:
    with fresh_pool("bwrap", "codeexec-cgentry", 1) as (backend, _root):
        yield backend


@pytest.mark.parametrize("path", ["warm", "cold"])
def test_bubblewrap_starts_inside_the_steps_own_group(bwrap: Any, path: str) -> None:
    if path == "warm":
        assert bwrap.wait_for_pool(90)
    before = bwrap.warm_used
    env = {"COLD": "1"} if path == "cold" else {}  # a run with an environment never takes a warm sandbox
    result = bwrap.run(RunSpec(language="python", code=PROBE, env=env))
    assert result.status == Status.SUCCEEDED, result.as_dict()
    assert bwrap.warm_used - before == (1 if path == "warm" else 0)
    ours = set(bwrap.cgroups.v1) if bwrap.cgroups.version == 1 else {""}  # v2: the one "0::" line
    checked = []
    for line in result.stdout.splitlines():
        _, controllers, where = line.split(":", 2)
        if ours & set(controllers.split(",")):  # a hierarchy the step's group is in
            checked.append(controllers)
            assert where == "/", f"bubblewrap was not in the step's group when it started: {line!r}"
    hierarchies = len(set(bwrap.cgroups.v1.values())) if bwrap.cgroups.version == 1 else 1
    assert len(checked) == hierarchies, (checked, result.stdout)
    assert bwrap.cgroups.parent not in result.stdout  # nothing of the host's layout shows


def test_a_step_that_cannot_enter_its_group_never_starts_bubblewrap(bwrap: Any, monkeypatch: Any) -> None:
    real = bwrap_module._enter_args

    def into_a_missing_group(fsize: int, cgroup: Any) -> list[str]:
        args = real(fsize, cgroup)
        count = int(args[3])
        return [*args[:4], *(f"/nonexistent-cgroup-{i}/cgroup.procs" for i in range(count))]

    monkeypatch.setattr(bwrap_module, "_enter_args", into_a_missing_group)
    result = bwrap.run(RunSpec(language="python", code="print('RAN')", env={"COLD": "1"}))
    assert result.status == Status.ERROR, result.as_dict()
    assert result.error is not None and result.error.code == ErrorCode.SANDBOX_ERROR
    assert "bubblewrap did not start (exit status 125)" in result.error.message, result.error.message
    assert "nonexistent-cgroup" in result.error.message  # the shell's own words say which file
    assert "RAN" not in result.stdout


def test_a_cancel_that_kills_bubblewrap_as_it_starts_is_reported_cancelled(monkeypatch: Any) -> None:
    """The cancel kills the step's group while bubblewrap is still setting up: bubblewrap then dies
    without reporting a child, and the run is `cancelled`, not a sandbox failure."""
    spec = RunSpec(language="python", code="print('RAN')")
    with fresh_pool("bwrap", "codeexec-cancelstart", 0) as (backend, _root):
        real = backend._spawn

        def cancelled_while_starting(lang: Any, ws: Any, step: Any, fsize: int, cgroup: Any) -> Any:
            proc, _block_w, fds = real(lang, ws, step, fsize, cgroup)
            backend.cancel(spec.run_id)  # kills the group: what bubblewrap meets when the cancel comes first
            proc.wait()
            bwrap_module._close_all(fds)
            raise bwrap_module.SandboxUnavailable(f"bubblewrap did not start (exit status {proc.returncode}): ")

        monkeypatch.setattr(backend, "_spawn", cancelled_while_starting)
        result = backend.run(spec)
    assert result.status == Status.CANCELLED, result.as_dict()
    assert result.error is not None and result.error.code == ErrorCode.CANCELLED
    assert "RAN" not in result.stdout


def test_enter_args_refuse_a_file_size_cap_the_shell_cannot_express() -> None:
    group = SimpleNamespace(paths={"memory": Path("/sys/fs/cgroup/memory/x"), "pids": Path("/sys/fs/cgroup/pids/x")})
    args = bwrap_module._enter_args(64 * 1024 * 1024, group)  # type: ignore[arg-type]
    assert args == [
        str(64 * 2048),
        "1024",
        "4096",
        "2",
        "/sys/fs/cgroup/memory/x/cgroup.procs",
        "/sys/fs/cgroup/pids/x/cgroup.procs",
    ]
    with pytest.raises(ValueError):
        bwrap_module._enter_args(1000, group)  # type: ignore[arg-type]


def test_a_cold_run_counts_its_usage_from_its_program_on(bwrap: Any, monkeypatch: Any) -> None:
    """bwrap sets itself up inside the step's group now; what the group spent before the program was
    released (here: a second of CPU charged on purpose) is not the run's."""
    real = bwrap._spawn
    burn = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end:\n    pass\n"

    def spawn_then_charge(lang: Any, ws: Any, step: Any, fsize: int, cgroup: Any) -> Any:
        spawned = real(lang, ws, step, fsize, cgroup)
        proc = subprocess.Popen([sys.executable, "-c", burn])
        cgroup.add(proc.pid)
        assert proc.wait(timeout=60) == 0
        assert (cgroup.cpu_usage_ms() or 0) >= 900  # the charge is there: the assertion below can fail
        return spawned

    monkeypatch.setattr(bwrap, "_spawn", spawn_then_charge)
    result = bwrap.run(RunSpec(language="python", code="print('light')", env={"COLD": "1"}))
    assert result.status == Status.SUCCEEDED, result.as_dict()
    assert result.usage.cpu_ms is not None and result.usage.cpu_ms < 500, result.usage


def test_bubblewraps_pid_1_starts_with_an_empty_environment(bwrap: Any) -> None:
    """The shell that enters the group exports nothing to bwrap (dash exports PWD unless told not to)."""
    code = "print(open('/proc/1/environ', 'rb').read().hex())"
    result = bwrap.run(RunSpec(language="python", code=code, env={"COLD": "1"}))
    assert result.status == Status.SUCCEEDED, result.as_dict()
    entries = [e for e in bytes.fromhex(result.stdout.strip()).split(b"\0") if e]
    assert set(entries) <= {b"SHLVL=0"}, entries  # bash as /bin/sh keeps its level; dash: nothing at all


def test_a_bubblewrap_that_says_nothing_but_lives_on_is_stopped(bwrap: Any, monkeypatch: Any) -> None:
    """Its info fd closed without a report while bwrap still runs: the step fails in bounded time with a
    clear error and kills it, rather than waiting forever or reading a pipe that never ends."""
    monkeypatch.setattr(bwrap_module, "_read_child_pid", lambda fd: None)
    monkeypatch.setattr(bwrap_module, "INFO_TIMEOUT_S", 0.5)
    result = bwrap.run(RunSpec(language="python", code="print('RAN')", env={"COLD": "1"}))
    assert result.status == Status.ERROR, result.as_dict()
    assert result.error is not None and "closed its info fd without reporting" in result.error.message
    assert "RAN" not in result.stdout
    bwrap.drain_cleanups()
    assert bwrap.leftovers() == []
