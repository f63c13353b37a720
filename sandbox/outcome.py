"""What one sandboxed step came to: status, error, exit code and signal, the same for every backend."""

from __future__ import annotations

import dataclasses
import signal

from .result import ErrorCode, RunError, RunResult, Status, Usage
from .supervise import StepOutcome

FATAL_SIGNALS = {s.value: s.name for s in signal.Signals if s.value < 32}


@dataclasses.dataclass
class StepUsage:
    """What the step's cgroup counted."""

    cpu_ms: int | None
    memory_peak_bytes: int | None
    oom_kills: int


def classify(outcome: StepOutcome, usage: StepUsage, phase: str) -> RunResult:
    """Status and error from what the supervisor saw; the first matching rule wins."""
    stdout = text(outcome.stdout, outcome.stdout_truncated)
    stderr = text(outcome.stderr, outcome.stderr_truncated)
    result = RunResult(
        status=Status.FAILED,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=outcome.stdout_truncated,
        stderr_truncated=outcome.stderr_truncated,
        usage=Usage(
            wall_ms=outcome.wall_ms,
            cpu_ms=usage.cpu_ms,
            memory_peak_bytes=usage.memory_peak_bytes,
            output_bytes=len(outcome.stdout) + len(outcome.stderr),
        ),
    )
    code = outcome.returncode
    oom_kills = usage.oom_kills
    what = "compilation" if phase == "compile" else "the program"
    limit_name = "compile_timeout_ms" if phase == "compile" else "timeout_ms"
    if outcome.killed_for == "cancel":
        result.status = Status.CANCELLED
        result.error = RunError(ErrorCode.CANCELLED, "The run was cancelled.")
    elif outcome.killed_for == "wall":
        result.status = Status.TIMEOUT
        result.error = RunError(
            ErrorCode.WALL_TIMEOUT, f"{what.capitalize()} exceeded the wall-clock limit ({limit_name})."
        )
    elif outcome.killed_for == "cpu":
        result.status = Status.TIMEOUT
        limit = "compile_timeout_ms" if phase == "compile" else "cpu_ms"
        result.error = RunError(ErrorCode.CPU_TIMEOUT, f"{what.capitalize()} exceeded the CPU time limit ({limit}).")
    elif oom_kills > 0 and code != 0:
        result.status = Status.OOM
        limit = "compile_memory_mb" if phase == "compile" else "memory_mb"
        result.error = RunError(
            ErrorCode.MEMORY_LIMIT, f"{what.capitalize()} was killed by the memory limit ({limit})."
        )
    elif code == 1 and outcome.stderr.startswith(b"bwrap: "):
        result.status = Status.ERROR
        result.error = RunError(
            ErrorCode.SANDBOX_ERROR,
            f"the sandbox could not start: {text(outcome.stderr).strip()[:500]}",
        )
    elif code == 0:
        result.status = Status.SUCCEEDED
    else:
        result.status = Status.FAILED
    if code is not None and code < 0:
        # bwrap itself died of a signal (we killed the group): no exit status of the program.
        result.signal = FATAL_SIGNALS.get(-code, f"SIG{-code}")
        result.exit_code = None
    elif code is not None and code > 128 and (code - 128) in FATAL_SIGNALS:
        # bwrap reports a program killed by signal N as 128+N, like a shell.
        result.exit_code = code
        result.signal = FATAL_SIGNALS[code - 128]
    else:
        result.exit_code = code
    return result


def text(data: bytes, truncated: bool = False) -> str:
    """UTF-8 text with invalid bytes replaced; a multi-byte character cut by the cap is dropped."""
    if truncated:
        for back in range(1, 4):
            if len(data) >= back and (data[-back] & 0xC0) == 0xC0:  # a lead byte near the end
                need = 2 if data[-back] < 0xE0 else 3 if data[-back] < 0xF0 else 4
                if back < need:
                    data = data[:-back]
                break
            if len(data) >= back and (data[-back] & 0xC0) != 0x80:
                break
    return without_nul(data.decode("utf-8", "replace"))


def without_nul(value: str) -> str:
    """U+0000 as U+FFFD, as invalid bytes are: a run's text is stored where NUL cannot be (PostgreSQL
    text), and a program that prints one must not lose its output for it."""
    return value.replace("\x00", "\ufffd")
