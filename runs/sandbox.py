"""The one small interface between Django and the sandbox package: a backend built from settings."""

from __future__ import annotations

import threading

from django.conf import settings

from sandbox import Backend, SandboxConfig, get_backend


def sandbox_config() -> SandboxConfig:
    return SandboxConfig(
        workdir=settings.SANDBOX_WORKDIR,
        host_workdir=settings.HOST_SANDBOX_DIR,
        seccomp_profile=settings.SECCOMP_PROFILE,
        apparmor_profile=settings.APPARMOR_PROFILE,
        disable_security=settings.DISABLE_SANDBOX_SECURITY,
        sandbox_uid=settings.SANDBOX_UID,
        sandbox_gid=settings.SANDBOX_GID,
        cgroup_parent=settings.SANDBOX_CGROUP_PARENT,
        tmp_mb=settings.SANDBOX_TMP_MB,
        build_cache_mb=settings.SANDBOX_BUILD_CACHE_MB,
        warm_pool=settings.SANDBOX_WARM_POOL,
        warm_prestart=settings.SANDBOX_WARM_PRESTART,
        default_limits=settings.LIMITS_DEFAULT,
        max_limits=settings.LIMITS_MAX,
        runner_images=dict(settings.RUNNER_IMAGES),
    )


class _ProcessSandbox:
    """The process-wide backend chosen by SANDBOX_BACKEND: built once, on first use, by one thread
    (the heartbeat and the worker boot ask for it at the same moment; two backends would mean two pools)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backend: Backend | None = None

    def __call__(self) -> Backend:
        with self._lock:
            if self._backend is None:
                self._backend = get_backend(settings.SANDBOX_BACKEND, sandbox_config())
            return self._backend

    def cache_clear(self) -> None:
        """Forget the backend (tests that change the settings); the next call builds a new one."""
        with self._lock:
            self._backend = None


get_sandbox = _ProcessSandbox()
