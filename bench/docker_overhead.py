"""The docker backend next to a plain `docker run --rm` of the same runner image, python hello world:
the backend cold (a container made per run) and through its warm pool (containers made ahead, waiting
at their gate), every round timed in rotating order with the bare interpreter. Skipped, with the reason,
when Docker is not usable here."""

from __future__ import annotations

import shutil
import subprocess
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
    """Samples in ms of `docker run --rm` ("plain"), the docker backend cold ("backend") and warm ("warm").

    Before every timed run, untimed, the warm pool is refilled and both backends' deferred teardown (the
    removal of the last container) is done: no run pays for another's clean-up or for the pool's refill,
    as with runs that arrive no faster than the pool refills (each refill is a container start)."""
    cold_config = SandboxConfig(workdir=workdir / "cold", warm_pool=0)
    warm_config = SandboxConfig(workdir=workdir / "warm", warm_pool=WARM_POOL)
    with started("docker", cold_config) as cold, started("docker", warm_config) as warm:
        assert isinstance(cold, PooledBackend) and isinstance(warm, PooledBackend)
        warm.start_pool()

        def settle() -> None:
            cold.drain_cleanups()
            warm.drain_cleanups()
            if not warm.wait_for_pool(POOL_WAIT_S):
                raise BenchError(f"the docker warm pool was not full within {POOL_WAIT_S:.0f} s")

        progress(f"docker backend cold and warm vs plain docker run: {runs} runs each, alternating with bare python")
        actions: dict[str, Action] = {
            "plain": plain_run,
            "backend": run_action(cold, "python"),
            "warm": run_action(warm, "python"),
            "bare": bare.action("python"),
        }
        times: dict[str, list[float]] = {name: [] for name in actions}
        for action in actions.values():  # warm: page cache, images, the engine's own caches
            settle()
            action()
        used = warm.warm_used
        for i in range(runs):
            for name in rotated(list(actions), i):
                settle()
                times[name].append(elapsed_ms(actions[name]))
        if warm.warm_used - used != runs:
            raise BenchError(f"only {warm.warm_used - used} of {runs} warm runs took a warm container")
    bare.keep("python", times.pop("bare"))
    return times
