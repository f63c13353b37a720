"""End to end: POST /v1/runs (wait: true, python hello world) against a running stack.

Measures, in the same run on the same machine: the bare interpreter's latency and throughput, and the
service's p50/p90/p99 latency over N sequential requests and runs/second at a given concurrency.
Start the stack first (`make run`), make a key whose limits the benchmark will not hit
(`manage.py createapikey bench --rps 1000 --burst 1000 --max-concurrent-runs 16`; dev_123 allows 10 rps),
then: `python bench/e2e.py --url http://127.0.0.1:8080 --key <token>`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

CODE = 'print("hello")\n'


def bare_once() -> float:
    start = time.perf_counter()
    subprocess.run(["/usr/bin/python3", "-c", CODE], check=True, capture_output=True, env={"PATH": "/usr/bin"})
    return (time.perf_counter() - start) * 1000


def api_once(url: str, key: str) -> float:
    body = json.dumps({"language": "python", "code": CODE}).encode()
    request = urllib.request.Request(
        f"{url}/v1/runs",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        run = json.load(response)
    elapsed = (time.perf_counter() - start) * 1000
    if run["status"] != "succeeded" or run["stdout"] != "hello\n":
        raise SystemExit(f"run failed: {run}")
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput(fn: object, concurrency: int, total: int) -> float:
    lock = threading.Lock()
    done = [0]

    def work(_: int) -> None:
        fn()  # type: ignore[operator]
        with lock:
            done[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, range(total)))
    return done[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key", default="dev_123")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    opts = parser.parse_args()
    for _ in range(5):  # warm both paths
        bare_once()
        api_once(opts.url, opts.key)
    bare = [bare_once() for _ in range(opts.requests)]
    api = [api_once(opts.url, opts.key) for _ in range(opts.requests)]
    total = max(40, opts.requests // 3)
    bare_rps = throughput(bare_once, opts.concurrency, total)
    api_rps = throughput(lambda: api_once(opts.url, opts.key), opts.concurrency, total)
    result = {
        "benchmark": "e2e",
        "requests": opts.requests,
        "concurrency": opts.concurrency,
        "bare_ms": {"p50": round(statistics.median(bare), 1), "p99": round(pct(bare, 0.99), 1)},
        "api_ms": {
            "p50": round(statistics.median(api), 1),
            "p90": round(pct(api, 0.90), 1),
            "p99": round(pct(api, 0.99), 1),
        },
        "p50_ratio": round(statistics.median(api) / statistics.median(bare), 2),
        "runs_per_s": {"bare": round(bare_rps, 1), "api": round(api_rps, 1), "ratio": round(api_rps / bare_rps, 2)},
    }
    print(
        f"bare python:  p50 {result['bare_ms']['p50']} ms  p99 {result['bare_ms']['p99']} ms  "
        f"{result['runs_per_s']['bare']} runs/s at c={opts.concurrency}"
    )
    print(
        f"POST /v1/runs: p50 {result['api_ms']['p50']} ms  p90 {result['api_ms']['p90']} ms  "
        f"p99 {result['api_ms']['p99']} ms  {result['runs_per_s']['api']} runs/s at c={opts.concurrency}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
