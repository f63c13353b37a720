"""The wire shapes of runs and files (SPEC §3): built by hand, fast, one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from files.models import File
from files.signing import signed_url

from .models import Run


def ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def render_artifact(file: File) -> dict[str, Any]:
    url, expires_at = signed_url(file.public_id)
    return {
        "id": file.public_id,
        "object": "file",
        "filename": file.filename,
        "path": file.path,
        "bytes": file.bytes,
        "content_type": file.content_type,
        "url": url,
        "expires_at": expires_at,
    }


def render_run(run: Run, artifacts: list[File] | None = None) -> dict[str, Any]:
    if artifacts is None:
        # A result taken from its completion message has none (runs/redis.py done_payload).
        from_message = getattr(run, "done_from_message", False)
        artifacts = (
            sorted(run.artifact_files.all(), key=lambda f: f.path) if run.is_terminal and not from_message else []
        )
    return {
        "id": run.public_id,
        "object": "run",
        "created_at": ts(run.created_at),
        "started_at": ts(run.started_at),
        "completed_at": ts(run.completed_at),
        "language": run.language,
        "runtime_version": run.runtime_version or None,
        "status": run.status,
        "exit_code": run.exit_code,
        "signal": run.signal,
        "stdout": run.stdout,
        "stderr": run.stderr,
        "stdout_truncated": run.stdout_truncated,
        "stderr_truncated": run.stderr_truncated,
        "limits": run.limits,
        "usage": {
            "wall_ms": run.wall_ms,
            "cpu_ms": run.cpu_ms,
            "memory_peak_bytes": run.memory_peak_bytes,
            "output_bytes": run.output_bytes,
            "artifact_bytes": run.artifact_bytes,
        },
        "artifacts": [render_artifact(f) for f in artifacts],
        "error": {"code": run.error_code, "message": run.error_message or ""} if run.error_code else None,
        "metadata": run.metadata,
    }


def render_file(file: File) -> dict[str, Any]:
    return {
        "id": file.public_id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": ts(file.created_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
