"""Sandbox overhead per language: hello world run bare on the host vs through the bwrap backend.

Both are measured in the same process, on the same machine, in the same run, interleaved so
background noise hits both alike. The backend is called in-process (no CLI or Django start-up).
Prints a table and one JSON line. Run as root: `make bench` (or `python bench/sandbox_overhead.py`).
Go is measured building every time (cache off, like the bare `go build` + run), and again as
`go-cache`: a repeated program served by the build cache, next to the same bare build + run.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from sandbox.languages import LANGUAGES

HELLO = {
    "python": 'print("hello")\n',
    "node": 'console.log("hello")\n',
    "ruby": 'puts "hello"\n',
    "php": '<?php echo "hello\\n";\n',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n',
}
BARE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


def bare_once(lang: str, workdir: Path) -> float:
    """One bare run: the interpreter (or go build + the binary) straight on the host."""
    language = LANGUAGES[lang]
    env = {**BARE_ENV, **language.env, **language.compile_env}
    env["MPLCONFIGDIR"] = str(workdir / ".mpl")
    for key in ("GOCACHE", "GOPATH"):
        if key in env:
            env[key] = str(workdir / key.lower())
    start = time.perf_counter()
    if language.compile is not None:
        out = workdir / "main"
        subprocess.run(
            ["/usr/bin/go", "build", "-o", str(out), "."], cwd=workdir, env=env, check=True, capture_output=True
        )
        subprocess.run([str(out)], cwd=workdir, env=env, check=True, capture_output=True)
        shutil.rmtree(workdir / "gocache", ignore_errors=True)  # cold build each time, as in the sandbox
    else:
        subprocess.run(list(language.run), cwd=workdir, env=env, check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="runs per language and mode (Go: a fifth)")
    parser.add_argument("--languages", default=",".join(HELLO))
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="codeexec-bench-", dir="/tmp"))
    os.chmod(root, 0o711)
    # Compiled languages build every time here, as the bare `go build` does; the cached row comes after.
    config = SandboxConfig(workdir=root / "sandbox", cgroup_parent="codeexec-bench", build_cache_mb=0)
    backend = get_backend("bwrap", config)
    backend.check()  # warm: static files, seccomp program, cgroup parent
    rows = []
    try:
        for lang in opts.languages.split(","):
            n = max(3, opts.runs // 5) if LANGUAGES[lang].compiled else opts.runs
            bare_dir = root / f"bare-{lang}"
            bare_dir.mkdir()
            (bare_dir / LANGUAGES[lang].entry_file).write_text(HELLO[lang])
            bare_ms, sandbox_ms = [], []
            bare_once(lang, bare_dir)  # warm the page cache for both
            for _ in range(n):
                bare_ms.append(bare_once(lang, bare_dir))
                start = time.perf_counter()
                result = backend.run(RunSpec(language=lang, code=HELLO[lang]))
                sandbox_ms.append((time.perf_counter() - start) * 1000)
                if result.status != Status.SUCCEEDED or result.stdout != "hello\n":
                    raise SystemExit(f"{lang}: sandbox run failed: {result.as_dict()}")
            bare, boxed = statistics.median(bare_ms), statistics.median(sandbox_ms)
            rows.append(
                {
                    "language": lang,
                    "runs": n,
                    "bare_ms": round(bare, 1),
                    "bwrap_ms": round(boxed, 1),
                    "added_ms": round(boxed - bare, 1),
                    "ratio": round(boxed / bare, 2),
                }
            )
        if "go" in opts.languages.split(","):
            # A repeated Go program: the build cache serves the binary, so only the run step is left.
            cached = get_backend("bwrap", dataclasses.replace(config, workdir=root / "cached", build_cache_mb=64))
            cached.run(RunSpec(language="go", code=HELLO["go"]))
            bare_dir = root / "bare-go"
            bare_ms, sandbox_ms = [], []
            for _ in range(opts.runs):
                bare_ms.append(bare_once("go", bare_dir))
                start = time.perf_counter()
                result = cached.run(RunSpec(language="go", code=HELLO["go"]))
                sandbox_ms.append((time.perf_counter() - start) * 1000)
                if result.status != Status.SUCCEEDED or result.stdout != "hello\n":
                    raise SystemExit(f"go (cached): sandbox run failed: {result.as_dict()}")
            bare, boxed = statistics.median(bare_ms), statistics.median(sandbox_ms)
            row = {"language": "go-cache", "runs": opts.runs, "bare_ms": round(bare, 1), "bwrap_ms": round(boxed, 1)}
            rows.append({**row, "added_ms": round(boxed - bare, 1), "ratio": round(boxed / bare, 2)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'language':<8} {'runs':>4} {'bare ms':>9} {'bwrap ms':>9} {'added ms':>9} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['language']:<8} {r['runs']:>4} {r['bare_ms']:>9} {r['bwrap_ms']:>9} {r['added_ms']:>9} {r['ratio']:>6}"
        )
    print(json.dumps({"benchmark": "sandbox_overhead", "backend": "bwrap", "median_ms": rows}))


if __name__ == "__main__":
    main()
