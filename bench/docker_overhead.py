"""Docker backend per-run wall time for python hello world next to a plain `docker run --rm` of the
same runner image, measured interleaved in the same run. Needs a Docker engine and the runner images
(scripts/build-images.sh). Run as root: `python bench/docker_overhead.py --runs 10`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import RunSpec, SandboxConfig, Status, get_backend

IMAGE = "codeexec-runner-python:latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="codeexec-bench-docker-", dir="/tmp"))
    os.chmod(root, 0o711)
    backend = get_backend("docker", SandboxConfig(workdir=root / "sandbox"))
    plain, boxed = [], []
    try:
        backend.run(RunSpec(language="python", code="print('warm')"))
        subprocess.run(
            ["docker", "run", "--rm", IMAGE, "python3", "-c", "print('warm')"], check=True, capture_output=True
        )
        for _ in range(opts.runs):
            start = time.perf_counter()
            subprocess.run(
                ["docker", "run", "--rm", "--network=none", IMAGE, "python3", "-c", "print('hello')"],
                check=True,
                capture_output=True,
            )
            plain.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            result = backend.run(RunSpec(language="python", code="print('hello')"))
            boxed.append((time.perf_counter() - start) * 1000)
            if result.status != Status.SUCCEEDED:
                raise SystemExit(f"docker backend run failed: {result.as_dict()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    row = {
        "benchmark": "docker_overhead",
        "runs": opts.runs,
        "plain_docker_run_ms": round(statistics.median(plain), 1),
        "docker_backend_ms": round(statistics.median(boxed), 1),
    }
    row["ratio"] = round(row["docker_backend_ms"] / row["plain_docker_run_ms"], 2)
    print(
        f"plain docker run --rm: {row['plain_docker_run_ms']} ms   docker backend: {row['docker_backend_ms']} ms"
        f"   ratio {row['ratio']}"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
