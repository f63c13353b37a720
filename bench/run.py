"""codeexec's benchmark (`make bench`): everything in one run, on this machine, against the bare interpreter.

1. the sandbox alone: each backend called in-process, hello world per language, alternating with the
   same program bare on the host (the physical limit); Go building every time and served by the cache;
2. the docker backend next to a plain `docker run --rm` of the python runner image (when Docker works);
3. end to end: `POST /v1/runs` with `wait: true` through a private stack the bench starts and removes
   (gunicorn + rundramatiq, its own database, Redis database, directories and cgroup parent);
4. throughput at several concurrencies: bare, the bwrap backend in-process (with its warm pool), end to end;
5. load: a mix of languages at 80 % of the stack's capacity, open loop, for a minute: no 5xx, no lost
   run, and the servers' RSS over time (bench/load.py).

Prints a table, then exactly one JSON line. Run as root (the sandbox needs it). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # import bench.* as a package; nothing in bench/ shadows a top-level module

from bench import docker_overhead, e2e, load, report, sandbox_only, throughput  # noqa: E402
from bench.bare import TMPFS, Bare  # noqa: E402
from bench.common import HELLO, BenchError, private_dir, progress  # noqa: E402
from bench.stack import DESCRIPTION, log_tails, private_stack  # noqa: E402
from sandbox import SandboxConfig  # noqa: E402

SIZES = {  # option: (default, --quick)
    "runs": (30, 3),
    "build_runs": (10, 2),
    "docker_runs": (10, 2),
    "requests": (300, 30),
    "seconds": (3.0, 0.5),
    "rounds": (2, 1),
    "load_seconds": (60.0, 5.0),
}
DEV_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/codeexec"
DEV_REDIS_URL = "redis://127.0.0.1:6379/0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run with the small sizes below")
    parser.add_argument("--skip-docker", action="store_true", help="do not measure the docker backend")
    helps = {
        "runs": "bwrap runs per interpreted language, and of go-cache",
        "build_runs": "bwrap Go runs with the build cache off",
        "docker_runs": "docker backend runs per language (Go with the cache off: half), and docker run vs backend",
        "requests": "sequential POST /v1/runs timed for the latency percentiles",
        "seconds": "seconds of each throughput measure in each round",
        "rounds": "throughput rounds (every measure at every concurrency once a round)",
        "load_seconds": "seconds the load is held",
    }
    for name, (default, quick) in SIZES.items():
        kind = float if isinstance(default, float) else int
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, help=f"{helps[name]} (default {default}, --quick {quick})")
    parser.add_argument("--skip-load", action="store_true", help="do not run the load measure")
    parser.add_argument(
        "--load-rate", type=float, help="requests/s of the load (default: 80 %% of the mix's closed-loop capacity)"
    )
    parser.add_argument("--concurrency", default="1,2,4,8", help="throughput concurrencies (default %(default)s)")
    parser.add_argument("--languages", default=",".join(HELLO), help="languages measured (default %(default)s)")
    parser.add_argument(
        "--database-url",
        default=_with_path(os.environ.get("DATABASE_URL", DEV_DATABASE_URL), "/codeexec_bench"),
        help="the private stack's database, created and DROPPED by the bench (its name must contain 'bench'); "
        "default: DATABASE_URL's server, database codeexec_bench",
    )
    parser.add_argument(
        "--redis-url",
        default=_with_path(os.environ.get("REDIS_URL", DEV_REDIS_URL), "/9"),
        help="the private stack's Redis database; default: REDIS_URL's server, database 9",
    )
    parser.add_argument(
        "--cgroup-parent", default="codeexec-bench", help="the stack's cgroup parent; in-process backends add -inproc"
    )
    opts = parser.parse_args(argv)
    for name, sizes in SIZES.items():
        if getattr(opts, name) is None:
            setattr(opts, name, sizes[1 if opts.quick else 0])
    opts.concurrency = [int(c) for c in opts.concurrency.split(",")]
    opts.languages = opts.languages.split(",")
    unknown = set(opts.languages) - set(HELLO)
    if unknown:
        parser.error(f"unknown languages: {', '.join(sorted(unknown))}")
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    started_at, load_start = time.monotonic(), os.getloadavg()[0]
    inproc = f"{opts.cgroup_parent}-inproc"  # the in-process backends' cgroup parents start with this
    sandbox: dict[str, dict[str, list[float]] | None] = {"bwrap": None, "docker": None}
    docker, skipped, loaded = None, {}, None
    with private_dir("bench") as root, private_dir("bench-bare", TMPFS) as bare_root:
        bare = Bare(bare_root)
        sizes = (opts.languages, opts.runs, opts.build_runs)
        sandbox["bwrap"] = sandbox_only.measure("bwrap", bare, *sizes, root / "bwrap", f"{inproc}-bwrap")
        reason = "skipped with --skip-docker" if opts.skip_docker else docker_overhead.unavailable(root / "check")
        if reason is None:
            sizes = (opts.languages, opts.docker_runs, max(2, opts.docker_runs // 2))
            sandbox["docker"] = sandbox_only.measure("docker", bare, *sizes, root / "docker", f"{inproc}-docker")
            docker = docker_overhead.measure(bare, opts.docker_runs, root / "docker-plain")
        else:
            progress(f"docker not measured: {reason}")
            skipped["docker"] = reason
        config = SandboxConfig(workdir=root / "throughput", cgroup_parent=inproc)
        with (
            private_stack(opts.database_url, opts.redis_url, opts.cgroup_parent) as stack,
            sandbox_only.started("bwrap", config) as backend,
        ):
            backend.start_pool()  # as a worker runs it: runs take warm sandboxes while the pool keeps up
            try:
                client = e2e.Client(stack)
                api_ms = e2e.measure(client, bare, opts.requests)
                actions = {
                    "bare": bare.action("python"),
                    "bwrap": sandbox_only.run_action(backend, "python"),
                    "e2e": client.run,
                }
                rates = throughput.measure(actions, opts.concurrency, opts.rounds, opts.seconds)
                mix = [lang for lang in opts.languages if lang in load.MIX]
                if opts.skip_load or not mix:
                    skipped["load"] = "skipped with --skip-load" if opts.skip_load else "no interpreted language chosen"
                else:
                    loaded = load.measure(stack, opts.database_url, mix, opts.load_seconds, opts.load_rate)
            except BenchError:
                progress(f"a measure failed; the servers' logs:\n{log_tails(stack)}")
                raise
    settings = {name: getattr(opts, name) for name in ("quick", "languages", *SIZES, "concurrency", "load_rate")}
    machine = {
        "cpus": os.cpu_count(),
        "loadavg_start": round(load_start, 2),
        "loadavg_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - started_at),
    }
    result = report.build(
        settings={**settings, "stack": DESCRIPTION},
        machine=machine,
        bare=bare.samples,
        sandbox=sandbox,
        api_ms=api_ms,
        rates=rates,
        docker=docker,
        load=loaded,
        skipped=skipped,
    )
    print(report.table(result))
    print(json.dumps(result, separators=(",", ":")), flush=True)
    if loaded is not None and loaded["failures"]:
        raise BenchError(f"the load failed: {'; '.join(loaded['failures'])}")


def _with_path(url: str, path: str) -> str:
    """The same server, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


if __name__ == "__main__":
    main()
