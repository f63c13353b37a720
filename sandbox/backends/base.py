"""The backend interface. Backends are chosen by name (`SANDBOX_BACKEND`) and built from a config."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ..limits import DEFAULT_LIMITS, MAX_LIMITS, Limits
from ..result import RunResult
from ..spec import RunSpec

# Called with ("stdout" | "stderr", bytes) for every chunk kept within the output caps, in order.
OutputCallback = Callable[[str, bytes], None]

DEFAULT_SECCOMP_PROFILE = Path(__file__).resolve().parent.parent.parent / "seccomp" / "profile.json"


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Everything a backend needs from the operator; plain values, no Django."""

    workdir: Path = Path("/var/lib/codeexec/sandbox")
    seccomp_profile: Path = DEFAULT_SECCOMP_PROFILE
    sandbox_uid: int = 61000
    sandbox_gid: int = 61000
    cgroup_parent: str = "codeexec"
    tmp_mb: int = 64
    default_limits: Limits = DEFAULT_LIMITS
    max_limits: Limits = MAX_LIMITS
    bwrap_path: str = "/usr/bin/bwrap"
    # compiled programs kept by content (Go): total size in MiB, 0 turns the cache off
    build_cache_mb: int = 256
    # sandboxes (bwrap) or containers (docker) kept started per interpreted language for runs with
    # default settings, in processes that call start_pool (see backends/pool.py)
    warm_pool: int = 2
    # a warm sandbox (or container) of an interpreted language starts its interpreter too, which then
    # waits for its program (backends/pool.py); off, it waits before the interpreter starts
    warm_prestart: bool = True
    # docker backend
    host_workdir: Path | None = None
    apparmor_profile: str | None = None
    disable_security: bool = False
    runner_images: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxConfig:
        """Defaults for tools that run without Django (bench, tests of the package alone)."""
        env = os.environ if environ is None else environ
        base = cls()
        return dataclasses.replace(
            base,
            workdir=Path(env.get("SANDBOX_WORKDIR", str(base.workdir))),
            seccomp_profile=Path(env.get("SECCOMP_PROFILE", str(base.seccomp_profile))),
            sandbox_uid=int(env.get("SANDBOX_UID", base.sandbox_uid)),
            sandbox_gid=int(env.get("SANDBOX_GID", env.get("SANDBOX_UID", base.sandbox_gid))),
            cgroup_parent=env.get("SANDBOX_CGROUP_PARENT", base.cgroup_parent),
            build_cache_mb=int(env.get("SANDBOX_BUILD_CACHE_MB", base.build_cache_mb)),
            warm_pool=int(env.get("SANDBOX_WARM_POOL", base.warm_pool)),
            warm_prestart=_flag(env, "SANDBOX_WARM_PRESTART", base.warm_prestart),
        )


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable read as the service's settings read it (codeexec_site/env.py): a typo fails."""
    value = env.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {value!r}")


class Backend:
    """Runs a RunSpec to completion and returns a RunResult. Subclasses implement every hook."""

    name = "base"

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config

    def run(
        self, spec: RunSpec, artifacts_dir: Path | None = None, on_output: OutputCallback | None = None
    ) -> RunResult:
        """Run `spec`; copy artifacts into `artifacts_dir` (the caller owns and removes them)."""
        raise NotImplementedError

    def cancel(self, run_id: str) -> bool:
        """Kill the run's sandbox from any thread or process on this host; True if one was found."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """Language name -> version string of what really runs in this backend's sandbox."""
        raise NotImplementedError

    def version(self, language: str) -> str:
        """Version of one language (backends may probe just that one)."""
        return self.versions()[language]

    def check(self) -> None:
        """Raise SandboxUnavailable if this backend cannot run code here (used by /readyz)."""
        raise NotImplementedError

    def leftovers(self) -> list[str]:
        """What of any run is still on the host (run dirs, mounts, groups, containers); [] when idle."""
        raise NotImplementedError

    def start_pool(self) -> None:
        """Keep sandboxes ready ahead of runs, where the backend can (long-lived workers only)."""

    def close(self) -> None:
        """Stop what start_pool started and remove it."""

    def cleanup_orphans(self) -> list[str]:
        """Remove what crashed runs left behind (processes, groups, mounts, dirs); return what went."""
        raise NotImplementedError
