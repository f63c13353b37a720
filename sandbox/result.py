"""What came out of a run: one result shape on every path (success, limit, crash, service failure)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    OOM = "oom"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def is_terminal(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


class ErrorCode(enum.StrEnum):
    COMPILE_ERROR = "compile_error"
    WALL_TIMEOUT = "wall_timeout"
    CPU_TIMEOUT = "cpu_timeout"
    MEMORY_LIMIT = "memory_limit"
    CANCELLED = "cancelled"
    SANDBOX_ERROR = "sandbox_error"
    WORKER_LOST = "worker_lost"
    STORAGE_ERROR = "storage_error"


@dataclasses.dataclass
class RunError:
    code: ErrorCode
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


@dataclasses.dataclass
class Usage:
    """Resource figures; None where the backend cannot know one (never a guess)."""

    wall_ms: int | None = None
    cpu_ms: int | None = None
    memory_peak_bytes: int | None = None
    output_bytes: int = 0
    artifact_bytes: int = 0


@dataclasses.dataclass
class Artifact:
    """A regular file collected from /work/outputs; `local_path` is the copy the caller now owns."""

    path: str  # relative to /work, e.g. "outputs/plot.png"
    bytes: int
    sha256: str
    content_type: str
    local_path: str | None = None


@dataclasses.dataclass
class SkippedArtifact:
    path: str
    reason: str


@dataclasses.dataclass
class RunResult:
    status: Status
    exit_code: int | None = None
    signal: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    usage: Usage = dataclasses.field(default_factory=Usage)
    artifacts: list[Artifact] = dataclasses.field(default_factory=list)
    skipped_artifacts: list[SkippedArtifact] = dataclasses.field(default_factory=list)
    error: RunError | None = None
    runtime_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "usage": dataclasses.asdict(self.usage),
            "artifacts": [
                {"path": a.path, "bytes": a.bytes, "sha256": a.sha256, "content_type": a.content_type}
                for a in self.artifacts
            ],
            "skipped_artifacts": [dataclasses.asdict(s) for s in self.skipped_artifacts],
            "error": self.error.as_dict() if self.error else None,
            "runtime_version": self.runtime_version,
        }
