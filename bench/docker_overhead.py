"""The docker backend next to a plain `docker run --rm` of the same runner image, python hello world:
the backend cold (a container made per run) and through its warm pool (containers made ahead: "warm"
with their interpreter started, waiting for its program, as a worker runs them; "warm-blocked" with
SANDBOX_WARM_PRESTART=0, waiting at their gate before it), every round timed in rotating order with the
bare interpreter. Skipped, with the reason, when Docker is not usable here."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

from sandbox import SandboxConfig, SandboxUnavailable, get_backend
from sandbox.backends.pool import PooledBackend

from .bare import Bare
from .common import EXPECTED_STDOUT, HELLO, Action, BenchError, elapsed_ms, progress, rotated
from .sandbox_only import run_action, started

IMAGE = "codeexec-runner-python:latest"
PLAIN_RUN = ["docker", "run", "--rm", "--network=none", IMAGE, "/usr/bin/python3", "-c", HELLO["python"]]
WARM_POOL = 2
POOL_WAIT_S = 120.0
# After the pool is full: time for the newest container's interpreter to get to its program (python's
# start, ~15-30 ms here), so a run meets a warm container as runs arriving no faster than the refill do.
INTERPRETER_START_S = 0.2


def unavailable(workdir: Path) -> str | None:
    """Why Docker cannot be measured here, or None when it can (the CLI, the engine, every runner image)."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        last = info.stderr.strip().splitlines()[-1:] or [f"exit status {info.returncode}"]
        return f"`docker info` failed: {last[0]}"
    try:
        get_backend("docker", SandboxConfig(workdir=workdir)).check()  # SDK, engine, runner images, a run
    except SandboxUnavailable as exc:
        return str(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return None


def plain_run() -> None:
    done = subprocess.run(PLAIN_RUN, capture_output=True, text=True, check=False)
    if done.returncode != 0 or done.stdout != EXPECTED_STDOUT:
        raise BenchError(f"plain docker run failed ({done.returncode}): {done.stderr[-500:]}")


def measure(bare: Bare, runs: int, workdir: Path) -> dict[str, list[float]]:
    """Samples in ms of `docker run --rm` ("plain"), the docker backend cold ("backend"), warm ("warm") and
    warm with the interpreter not started ahead ("warm-blocked").

    Before every timed run, untimed, the warm pools are refilled and the backends' deferred teardown (the
    removal of the last container) is done: no run pays for another's clean-up or for the pool's refill,
    as with runs that arrive no faster than the pool refills (each refill is a container start)."""
    cold_config = SandboxConfig(workdir=workdir / "cold", warm_pool=0)
    warm_config = SandboxConfig(workdir=workdir / "warm", warm_pool=WARM_POOL)
    blocked_config = dataclasses.replace(warm_config, workdir=workdir / "blocked", warm_prestart=False)
    with (
        started("docker", cold_config) as cold,
        started("docker", warm_config) as warm,
        started("docker", blocked_config) as blocked,
    ):
        pools = (warm, blocked)
        assert isinstance(cold, PooledBackend) and all(isinstance(b, PooledBackend) for b in pools)
        for pool in pools:
            pool.start_pool()

        def settle() -> None:
            for backend in (cold, *pools):
                backend.drain_cleanups()
            for pool in pools:
                if not pool.wait_for_pool(POOL_WAIT_S):
                    raise BenchError(f"the docker warm pool was not full within {POOL_WAIT_S:.0f} s")
            time.sleep(INTERPRETER_START_S)

        progress(f"docker backend cold and warm vs plain docker run: {runs} runs each, alternating with bare python")
        actions: dict[str, Action] = {
            "plain": plain_run,
            "backend": run_action(cold, "python"),
            "warm": run_action(warm, "python"),
            "warm-blocked": run_action(blocked, "python"),
            "bare": bare.action("python"),
        }
        times: dict[str, list[float]] = {name: [] for name in actions}
        for action in actions.values():  # warm: page cache, images, the engine's own caches
            settle()
            action()
        used = [pool.warm_used for pool in pools]
        for i in range(runs):
            for name in rotated(list(actions), i):
                settle()
                times[name].append(elapsed_ms(actions[name]))
        for pool, before in zip(pools, used, strict=True):
            if pool.warm_used - before != runs:
                raise BenchError(f"only {pool.warm_used - before} of {runs} warm runs took a warm container")
    bare.keep("python", times.pop("bare"))
    return times
