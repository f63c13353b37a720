"""`make bench` in small: bench/run.py --quick --skip-docker, as root with the real sandbox and its own
private stack (database <the session's database>_bench, Redis database 8, its own cgroup parent), so
that it collides neither with a default bench run, nor with the other suites, nor (its database, which
the bench drops) with another checkout's session on the same server. Checks the shape of the JSON
line, not the figures: timings belong to the benchmark, not to tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings

from tests.support import with_redis_db

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ["python", "node", "ruby", "php", "go"]
CONCURRENCY = [1, 2, 4, 8]
BENCH_REDIS_DB = 8
TIMEOUT_S = 180
CGROUP_PARENT = f"codeexec-benchtest-{os.getpid()}"

pytestmark = pytest.mark.slow


def bench_database() -> str:
    return f"{settings.DATABASES['default']['NAME']}_bench"


def bench_database_url() -> str:
    """The test session's PostgreSQL server, a database of the bench test's own (dropped by the bench)."""
    db = settings.DATABASES["default"]
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}{port}/{quote(bench_database(), safe='')}"


@pytest.fixture(scope="module")
def bench() -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "bench/run.py", "--quick", "--skip-docker", "--seconds", "0.25"]
    argv += ["--database-url", bench_database_url(), "--redis-url", with_redis_db(settings.REDIS_URL, BENCH_REDIS_DB)]
    argv += ["--cgroup-parent", CGROUP_PARENT]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, f"bench/run.py failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def report(bench: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(bench.stdout.strip().splitlines()[-1]))


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def assert_latency(row: dict[str, Any], bare: str | None = None) -> None:
    assert row["n"] >= 2
    assert all(positive(row[key]) for key in ("p50_ms", "p90_ms", "p99_ms"))
    assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    if bare is not None:
        assert row["bare"] == bare
        assert positive(row["ratio"])
        assert isinstance(row["added_ms"], float)


def test_it_prints_a_table_then_exactly_one_json_line_last(bench: subprocess.CompletedProcess[str]) -> None:
    lines = bench.stdout.strip().splitlines()
    assert [line for line in lines if line.startswith("{")] == [lines[-1]]
    assert "Latency of hello world" in bench.stdout
    assert "Throughput of python hello world" in bench.stdout
    assert "Load: python/node/ruby/php hello, open loop" in bench.stdout


def test_it_measures_every_language_bare(report: dict[str, Any]) -> None:
    assert set(report["bare"]) == {*LANGUAGES, "go-binary"}
    for row in report["bare"].values():
        assert_latency(row)


def test_it_measures_the_bwrap_backend_alone_against_bare(report: dict[str, Any]) -> None:
    rows = report["sandbox"]["bwrap"]
    interpreted = [lang for lang in LANGUAGES if lang != "go"]
    warm = [f"{lang}-{how}" for lang in interpreted for how in ("warm", "blocked")]
    assert sorted(rows) == sorted([*LANGUAGES, "go-cache", *warm])
    for lang in LANGUAGES:
        assert_latency(rows[lang], bare=lang)
    for lang in interpreted:  # through the warm pool (interpreters started, or not), against the same bare figure
        assert_latency(rows[f"{lang}-warm"], bare=lang)
        assert_latency(rows[f"{lang}-blocked"], bare=lang)
    assert_latency(rows["go-cache"], bare="go-binary")


def test_it_measures_end_to_end_percentiles_against_bare(report: dict[str, Any]) -> None:
    e2e = report["e2e"]
    assert e2e["n"] == 30
    assert_latency(e2e, bare="python")
    assert positive(e2e["p90_ratio"])
    assert positive(e2e["p99_ratio"])


def test_it_measures_throughput_at_each_concurrency(report: dict[str, Any]) -> None:
    assert [point["concurrency"] for point in report["throughput"]] == CONCURRENCY
    for point in report["throughput"]:
        for name in ("bare", "bwrap", "e2e"):
            assert positive(point[f"{name}_runs_per_s"])
        for name in ("bwrap", "e2e"):
            expected = round(point[f"{name}_runs_per_s"] / point["bare_runs_per_s"], 2)
            assert point[f"{name}_ratio"] == pytest.approx(expected, abs=0.011)


def test_it_holds_a_load_with_no_5xx_and_no_lost_run(report: dict[str, Any]) -> None:
    load = report["load"]
    assert load["seconds"] == 5.0
    assert load["mix"] == ["python", "node", "ruby", "php"]
    assert positive(load["capacity_runs_per_s"])
    assert load["rate_share"] == 0.8
    assert load["rate_per_s"] == pytest.approx(0.8 * load["capacity_runs_per_s"], abs=0.05)
    # round(rate * seconds) requests, where the report's rate is itself rounded to 0.01 (13.1 stands for a
    # rate from 13.095 to 13.105: 65.475 to 65.525 requests, so 65 or 66).
    assert abs(load["sent"] - load["rate_per_s"] * 5) <= 0.5 + 0.005 * 5 and load["sent"] >= 4
    assert positive(load["achieved_per_s"])
    assert load["http_2xx"] + load["http_429"] + load["http_4xx_other"] + load["http_5xx"] == load["sent"]
    assert load["http_5xx"] == 0
    assert load["transport_errors"] == 0
    assert load["lost"] == 0
    assert load["wrong"] == 0
    assert load["db_runs"] == load["http_2xx"] > 0  # every accepted run, and nothing else, is in the database
    assert load["get_requests"] > 0  # the wait: false share was polled
    assert load["failures"] == []
    assert_latency(load["latency"])
    assert load["latency_by_path"]["wait"]["n"] + load["latency_by_path"]["poll"]["n"] == load["http_2xx"]
    assert set(load["rss"]) == {"gunicorn", "rundramatiq"}
    for rss in load["rss"].values():
        assert all(positive(rss[key]) for key in ("start_mib", "end_mib", "max_mib"))
        assert rss["max_mib"] >= max(rss["start_mib"], rss["end_mib"])
        assert rss["growth_mib"] == pytest.approx(rss["end_mib"] - rss["start_mib"], abs=0.11)
        assert isinstance(rss["slope_mib_per_min"], float)
    assert load["rss"]["gunicorn"]["procs"][0] == 3  # the master and its 2 workers
    assert load["rss"]["rundramatiq"]["procs"][0] >= 2  # dramatiq's parent and its worker process
    assert len(load["series"]["t_s"]) == load["samples"] >= 4


def test_it_fails_the_load_on_a_5xx_a_lost_run_or_rss_growth() -> None:
    from bench import load

    flat = {"growth_mib": 1.0}
    passed = dict.fromkeys(load.FAILING_COUNTS, 0) | {"rss": {"gunicorn": flat, "rundramatiq": flat}}
    assert load.failures(passed) == []
    assert load.failures(passed | {"http_5xx": 1, "lost": 2}) == [
        "1 answers 5xx",
        "2 accepted runs not terminal within the drain bound",
    ]
    leaking = passed | {"rss": {"gunicorn": flat, "rundramatiq": {"growth_mib": 50.5}}}
    assert load.failures(leaking) == ["rundramatiq RSS grew 50.5 MiB (limit 50)"]


def test_it_measures_rss_slope_over_the_second_half() -> None:
    from bench import load

    # 1 MiB/s for 30 s of warm-up, then flat: flat over the second half, growth still shown.
    samples = [{"t": float(t), "rss": {"web": (1024 * (100 + min(t, 30)), 3, 20)}} for t in range(61)]
    rss = load.rss_summary(samples, "web")
    assert (rss["start_mib"], rss["end_mib"], rss["max_mib"], rss["growth_mib"]) == (100, 130, 130, 30)
    assert rss["slope_mib_per_min"] == 0.0
    assert not rss["flagged"]
    growing = [{"t": float(t), "rss": {"web": (1024 * 100 + 200 * t, 3, 20)}} for t in range(61)]
    assert load.rss_summary(growing, "web")["slope_mib_per_min"] == pytest.approx(200 * 60 / 1024, abs=0.01)
    assert load.rss_summary(growing, "web")["flagged"]


def test_it_says_why_docker_was_not_measured(report: dict[str, Any]) -> None:
    assert report["sandbox"]["docker"] is None
    assert report["docker"] is None
    assert report["skipped"]["docker"]


def test_it_leaves_nothing_behind(bench: subprocess.CompletedProcess[str]) -> None:
    import psycopg

    cgroups = Path("/sys/fs/cgroup")
    # The stack's parent and the in-process backends' ones (CGROUP_PARENT-inproc...), v2 or any v1 hierarchy.
    assert [*cgroups.glob(f"{CGROUP_PARENT}*"), *cgroups.glob(f"*/{CGROUP_PARENT}*")] == []
    url = bench_database_url().rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (bench_database(),)).fetchone()
    assert found is None
