"""What every measure shares: the programs, interleaved timing, summaries, throughput, private dirs."""

from __future__ import annotations

import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HELLO = {
    "python": 'print("hello")\n',
    "node": 'console.log("hello")\n',
    "ruby": 'puts "hello"\n',
    "php": '<?php echo "hello\\n";\n',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n',
}
EXPECTED_STDOUT = "hello\n"

Action = Callable[[], None]


class BenchError(RuntimeError):
    """A measured run did not do what it should (wrong output, failed status, a server that died)."""


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """Progress goes to stderr: stdout is the table and the one JSON line."""
    print(f"bench {time.monotonic() - _STARTED:5.1f}s: {message}", file=sys.stderr, flush=True)


def elapsed_ms(action: Action) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def alternate(actions: dict[str, Action], rounds: int) -> dict[str, list[float]]:
    """Time each action once per round, in an order that rotates every round, so background noise
    (other engineers' test runs on this machine) falls on all of them alike. Milliseconds per action."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for i in range(rounds):
        for name in rotated(list(actions), i):
            times[name].append(elapsed_ms(actions[name]))
    return times


def rotated(names: list[str], i: int) -> list[str]:
    """`names` starting at position i (modulo): who goes first changes from one round to the next."""
    shift = i % len(names)
    return names[shift:] + names[:shift]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1): a value that was really measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(values: list[float]) -> dict[str, Any]:
    """n, p50 (the median), p90 and p99 in ms, one decimal."""
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p90_ms": round(percentile(values, 0.90), 1),
        "p99_ms": round(percentile(values, 0.99), 1),
    }


def ratio(value: float, reference: float) -> float:
    return round(value / reference, 2)


def throughput(action: Action, concurrency: int, seconds: float) -> tuple[int, float]:
    """`concurrency` threads repeat `action` until `seconds` have passed; each finishes the run it started.
    Returns (runs completed, seconds until the last one finished)."""
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    done = [0]

    def loop() -> None:
        while time.perf_counter() < deadline:
            action()
            with lock:
                done[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop) for _ in range(concurrency)]:
            future.result()  # a failed run fails the measure
    return done[0], time.perf_counter() - start


@contextmanager
def private_dir(prefix: str, parent: str = "/tmp") -> Iterator[Path]:
    """A fresh directory, removed afterwards; 0711 because the sandbox's uid must traverse it."""
    root = Path(tempfile.mkdtemp(prefix=f"codeexec-{prefix}-", dir=parent))
    os.chmod(root, 0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
