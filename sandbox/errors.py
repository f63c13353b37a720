"""The sandbox's exception tree.

SandboxError
 ├── InvalidSpec          the request cannot be run as given (the client's fault)
 └── SandboxUnavailable   the backend cannot run anything here (the operator's problem)
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error raised by the sandbox package."""


class InvalidSpec(SandboxError):
    """A run spec that can never run: bad language, path, env name or limit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class SandboxUnavailable(SandboxError):
    """The backend is missing a tool, a privilege or a kernel feature it needs."""
