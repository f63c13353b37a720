"""The docker backend next to a plain `docker run --rm` of the same runner image, python hello world,
timed alternately with the bare interpreter. Skipped, with the reason, when Docker is not usable here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sandbox import SandboxConfig, SandboxUnavailable, get_backend

from .bare import Bare
from .common import EXPECTED_STDOUT, HELLO, BenchError, alternate, progress
from .sandbox_only import run_action, started

IMAGE = "codeexec-runner-python:latest"
PLAIN_RUN = ["docker", "run", "--rm", "--network=none", IMAGE, "/usr/bin/python3", "-c", HELLO["python"]]


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
    """Samples in ms of `docker run --rm` ("plain") and of the docker backend ("backend")."""
    with started("docker", SandboxConfig(workdir=workdir)) as backend:
        progress(f"docker backend vs plain docker run: {runs} runs each, alternating with bare python")
        plain_run()  # warm
        times = alternate(
            {"plain": plain_run, "backend": run_action(backend, "python"), "bare": bare.action("python")}, runs
        )
    bare.keep("python", times.pop("bare"))
    return times
