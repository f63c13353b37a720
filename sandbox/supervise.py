"""Drive one sandboxed process: feed stdin, read stdout/stderr with caps, enforce wall and CPU time.

Output is read as it is produced and never held beyond the caps: bytes past a stream's cap are
read and dropped, so a flood cannot fill memory nor block the writer forever.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import subprocess
import time
from collections.abc import Callable

from .backends.base import OutputCallback

READ_CHUNK = 65536
MIN_CPU_POLL_S = 0.005
MAX_CPU_POLL_S = 0.25
DRAIN_AFTER_EXIT_S = 1.0


@dataclasses.dataclass
class StepOutcome:
    returncode: int | None
    killed_for: str | None  # "wall" | "cpu" | "cancel" | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    wall_ms: int


class CappedOutput:
    """stdout and stderr as they stream, each kept up to the cap; what is past it is dropped and flagged."""

    def __init__(self, max_bytes: int, on_output: OutputCallback | None) -> None:
        self.max_bytes = max_bytes
        self.on_output = on_output
        self.data = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = {"stdout": False, "stderr": False}

    def add(self, name: str, chunk: bytes) -> None:
        buf = self.data[name]
        room = self.max_bytes - len(buf)
        if room <= 0:
            self.truncated[name] = True
            return
        kept = chunk[:room]
        if len(kept) < len(chunk):
            self.truncated[name] = True
        buf += kept
        if self.on_output is not None:
            self.on_output(name, kept)

    def outcome(self, returncode: int | None, killed_for: str | None, wall_ms: int) -> StepOutcome:
        return StepOutcome(
            returncode=returncode,
            killed_for=killed_for,
            stdout=bytes(self.data["stdout"]),
            stderr=bytes(self.data["stderr"]),
            stdout_truncated=self.truncated["stdout"],
            stderr_truncated=self.truncated["stderr"],
            wall_ms=wall_ms,
        )


def supervise(
    proc: subprocess.Popen[bytes],
    stdin: bytes,
    timeout_ms: int,
    cpu_limit_ms: int | None,
    cpu_usage_ms: Callable[[], int | None],
    kill: Callable[[], None],
    max_output_bytes: int,
    on_output: OutputCallback | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    started: float | None = None,
) -> StepOutcome:
    """Run the I/O loop until the process exits or a limit kills it; return what happened."""
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    start = time.monotonic() if started is None else started
    deadline = start + timeout_ms / 1000
    ncpu = max(1, os.cpu_count() or 1)
    output = CappedOutput(max_output_bytes, on_output)
    sel = selectors.DefaultSelector()
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    for fd in names:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd = proc.stdin.fileno()
    stdin_view = memoryview(stdin)
    if stdin_view:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ)
    killed_for: str | None = None
    exited_at: float | None = None
    next_cpu_check = start + MIN_CPU_POLL_S if cpu_limit_ms is not None else float("inf")

    def do_kill(reason: str) -> None:
        nonlocal killed_for
        if killed_for is None:
            killed_for = reason
        kill()

    try:
        while True:
            now = time.monotonic()
            open_pipes = [fd for fd in names if _registered(sel, fd)]
            if exited_at is not None and (not open_pipes or now - exited_at > DRAIN_AFTER_EXIT_S):
                break
            if killed_for is None:
                if cancelled():
                    do_kill("cancel")
                elif now >= deadline:
                    do_kill("wall")
                elif now >= next_cpu_check:
                    used = cpu_usage_ms()
                    assert cpu_limit_ms is not None
                    if used is not None and used >= cpu_limit_ms:
                        do_kill("cpu")
                    else:
                        # The group cannot burn more than ncpu CPU-seconds per second: sleep until it could.
                        remaining_s = (cpu_limit_ms - (used or 0)) / 1000 / ncpu
                        next_cpu_check = now + min(MAX_CPU_POLL_S, max(MIN_CPU_POLL_S, remaining_s))
            wake = min(deadline, next_cpu_check) if killed_for is None else now + 0.05
            if exited_at is not None:
                wake = min(wake, exited_at + DRAIN_AFTER_EXIT_S)
            # Poll for cancellation at least every 100 ms.
            timeout = max(0.0, min(wake - now, 0.1))
            for key, _ in sel.select(timeout):
                fd = int(key.fd)
                if fd == pidfd:
                    sel.unregister(pidfd)
                    proc.wait()
                    exited_at = time.monotonic()
                elif fd == stdin_fd:
                    try:
                        n = os.write(stdin_fd, stdin_view[:READ_CHUNK])
                        stdin_view = stdin_view[n:]
                    except (BrokenPipeError, OSError):
                        stdin_view = memoryview(b"")
                    if not stdin_view:
                        sel.unregister(stdin_fd)
                        proc.stdin.close()
                else:
                    name = names[fd]
                    try:
                        chunk = os.read(fd, READ_CHUNK)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    output.add(name, chunk)
        if proc.returncode is None:
            # Pipes closed but the process lives on (it closed its stdout): wait out its time.
            remaining = max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                do_kill("wall")
                proc.wait()
    finally:
        sel.close()
        os.close(pidfd)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
    wall_ms = int(((exited_at or time.monotonic()) - start) * 1000)
    return output.outcome(proc.returncode, killed_for, wall_ms)


def _registered(sel: selectors.BaseSelector, fd: int) -> bool:
    try:
        sel.get_key(fd)
        return True
    except KeyError:
        return False
