"""The sandbox alone: a backend called in-process (no web server, no queue), per language, each run
timed alternately with the same program bare on the host.

Go is measured twice: building every time (`build_cache_mb=0`, against a bare `go build` + run) and
as a repeated program served by the build cache (`go-cache`, against a bare run of a built binary).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox import Backend, RunSpec, SandboxConfig, Status, get_backend

from .bare import GO_BINARY, Bare
from .common import EXPECTED_STDOUT, HELLO, Action, BenchError, alternate, progress

GO_CACHED = "go-cache"
# Suffixes of the rows measured through bwrap's warm pool: as a worker runs them (the interpreter started
# with the sandbox, waiting for its program), and with SANDBOX_WARM_PRESTART=0 (blocked before it).
WARM, BLOCKED = "-warm", "-blocked"
WARM_POOL = 2


def bare_of(label: str) -> str:
    """The bare figure a row compares with: its own language, Go's prebuilt binary for go-cache."""
    return GO_BINARY if label == GO_CACHED else label.removesuffix(WARM).removesuffix(BLOCKED)


BUILD_CACHE_MB = 64


def run_action(backend: Backend, lang: str) -> Action:
    """One sandboxed hello world, checked, as a callable for timing."""

    def run() -> None:
        result = backend.run(RunSpec(language=lang, code=HELLO[lang]))
        if result.status != Status.SUCCEEDED or result.stdout != EXPECTED_STDOUT:
            raise BenchError(f"{backend.name} {lang}: {result.as_dict()}")

    return run


@contextmanager
def started(name: str, config: SandboxConfig) -> Iterator[Backend]:
    """A backend that passed its self-test; what its runs left behind is removed afterwards."""
    backend = get_backend(name, config)
    try:
        backend.check()  # also warms its static files, seccomp program and cgroup parent
        yield backend
    finally:
        backend.close()  # the warm pool, if one was started
        backend.cleanup_orphans()
        cgroups = getattr(backend, "cgroups", None)  # bwrap's parent group; docker has none of its own
        if cgroups is not None:
            cgroups.remove_parent()


def measure(
    name: str, bare: Bare, languages: list[str], runs: int, build_runs: int, workdir: Path, cgroup_parent: str
) -> dict[str, list[float]]:
    """Sandboxed samples in ms per language (and go-cache); the bare ones taken alternately go to `bare`."""
    boxed: dict[str, list[float]] = {}
    # Each backend its own work dir and cgroup parent: one removes its parent when it is done.
    config = SandboxConfig(workdir=workdir / "cold", cgroup_parent=f"{cgroup_parent}-cold", build_cache_mb=0)
    cached_config = dataclasses.replace(
        config, workdir=workdir / "cached", cgroup_parent=f"{cgroup_parent}-cache", build_cache_mb=BUILD_CACHE_MB
    )
    warm_config = dataclasses.replace(
        config, workdir=workdir / "warm", cgroup_parent=f"{cgroup_parent}-warm", warm_pool=WARM_POOL
    )
    blocked_config = dataclasses.replace(
        warm_config, workdir=workdir / "blocked", cgroup_parent=f"{cgroup_parent}-blocked", warm_prestart=False
    )
    with (
        started(name, config) as cold,
        started(name, cached_config) as cached,
        started(name, warm_config) as warm,
        started(name, blocked_config) as blocked,
    ):
        pooled = name == "bwrap"  # docker's warm pool is measured next to `docker run` (docker_overhead.py)
        if pooled:
            warm.start_pool()
            blocked.start_pool()
        for lang in languages:
            compiled = lang == "go"
            cases = [(lang, lang, cold, build_runs if compiled else runs)]
            if compiled:
                cases.append((GO_CACHED, bare_of(GO_CACHED), cached, runs))
            elif pooled:
                cases += [(lang + WARM, lang, warm, runs), (lang + BLOCKED, lang, blocked, runs)]
            for label, bare_lang, backend, n in cases:
                progress(f"{name} {label}: {n} runs, alternating with bare {bare_lang}")
                sandboxed, plain = run_action(backend, lang), bare.action(bare_lang)
                sandboxed()  # warm: page cache, and the build cache for go-cache
                plain()
                times = alternate({"sandbox": sandboxed, "bare": plain}, n)
                boxed[label] = times["sandbox"]
                bare.keep(bare_lang, times["bare"])
    return boxed
