"""Backends by name; each is imported only when chosen (docker's SDK is optional)."""

from __future__ import annotations

from ..errors import SandboxUnavailable
from .base import Backend, OutputCallback, SandboxConfig

BACKEND_NAMES = ("bwrap", "docker")


def get_backend(name: str, config: SandboxConfig) -> Backend:
    if name == "bwrap":
        from .bwrap import BwrapBackend

        return BwrapBackend(config)
    if name == "docker":
        try:
            from .docker import DockerBackend  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise SandboxUnavailable(f"the docker backend is not available: {exc}") from exc
        return DockerBackend(config)  # type: ignore[no-any-return,unused-ignore]
    raise SandboxUnavailable(f"unknown SANDBOX_BACKEND '{name}' (choose one of {', '.join(BACKEND_NAMES)})")


__all__ = ["BACKEND_NAMES", "Backend", "OutputCallback", "SandboxConfig", "get_backend"]
