"""Load: an open-loop arrival rate of mixed hello-world runs, held for a minute against the private stack.

1. the sustainable rate: the mix run closed-loop at the worker's concurrency for a few seconds (this is
   also the warm-up), then 80 % of what it completed per second (or `--load-rate`);
2. the hold: request i starts at t0 + i / rate whatever happened to the ones before (open loop, so a
   slow server meets the same arrivals and its latency is not hidden), python, node, ruby, php in
   turn; every 7th is `wait: false` and polled with GET /v1/runs/{id} until terminal, the others wait;
   latency is from the scheduled start to the terminal result;
3. every second meanwhile: VmRSS and threads summed over each server's process group (gunicorn
   master + workers, rundramatiq + its worker process; the sandboxes start sessions of their own and
   are not counted) and the runs queued and running in the database;
4. then every accepted run must be terminal within DRAIN_S, seen by GET and in the database: the
   others are lost.

The bench fails on a 5xx, a transport error, a 4xx other than 429, a lost or wrong run, or RSS growth
beyond RSS_FAIL_MIB; a 429 is a rejection the client was told about, counted but not lost.
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from .common import EXPECTED_STDOUT, HELLO, BenchError, progress, summarize, throughput
from .stack import WORKER_THREADS, Stack, log_tails

MIX = ["python", "node", "ruby", "php"]
POLL_EVERY = 7  # prime to the mix's length, so every language is polled in turn
POLL_INTERVAL_S = 0.05
SUSTAINABLE_SHARE = 0.8
CLIENT_THREADS = 64  # enough that a slow answer never delays the next scheduled start
HTTP_TIMEOUT_S = 60
DRAIN_S = 60  # an accepted run not terminal this long after the last request was answered is lost
SAMPLE_EVERY_S = 1.0
MIN_AGE_S = 1.0  # see group_rss_kib()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# "Flat": the slope over the second half of the hold, when warm-up (imports, malloc arenas of the
# threads, connection pools) is over. Flagged when it is above RSS_FLAG_MIB_PER_MIN and the second half
# rose by RSS_FLAG_MIN_RISE_MIB or more (below that a short hold extrapolates allocator noise); a failure
# only above RSS_FAIL_MIB of growth in one role: at the 10-20 runs/s of this machine that is 40+ KiB kept
# per request for a minute, a leak beyond doubt, while a noisy shared host must not fail on a few MiB.
RSS_FLAG_MIB_PER_MIN = 5.0
RSS_FLAG_MIN_RISE_MIB = 1.0
RSS_FAIL_MIB = 50.0
FAILING_COUNTS = {  # any of these above 0 fails the bench
    "http_5xx": "answers 5xx",
    "transport_errors": "requests got no HTTP answer",
    "http_4xx_other": "answers 4xx other than 429",
    "get_not_200": "GET /v1/runs/{id} answered other than 200",
    "lost": "accepted runs not terminal within the drain bound",
    "wrong": "runs ended other than succeeded with hello",
    "db_unacknowledged": "runs in the database whose request got no 2xx",
}
TERMINAL = {"succeeded", "failed", "timeout", "oom", "cancelled", "error"}


@dataclasses.dataclass
class Outcome:
    """One scheduled request, as the client saw it."""

    seq: int
    language: str
    wait: bool
    status: int | None = None  # of the POST; None: no HTTP answer (transport error)
    run_id: str | None = None
    final: str | None = None  # the last run status the client saw
    stdout_ok: bool = False
    latency_ms: float | None = None  # scheduled start -> terminal result
    lag_ms: float = 0.0  # scheduled start -> request sent
    sent_s: float = 0.0  # since the hold started
    done_s: float | None = None  # since the hold started: terminal result seen
    error: str = ""


class LoadClient:
    """POST and GET on the stack, one connection per request; counts every answer by method and status."""

    def __init__(self, stack: Stack, tag: str) -> None:
        self.stack, self.tag = stack, tag
        self.headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
        self.answers: Counter[tuple[str, int]] = Counter()  # (method, HTTP status)
        self.transport_errors: Counter[str] = Counter()  # method: requests that got no HTTP answer
        self.lock = threading.Lock()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(self.stack.host, self.stack.port, timeout=HTTP_TIMEOUT_S)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=self.headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            with self.lock:
                self.transport_errors[method] += 1
            raise
        finally:
            conn.close()
        with self.lock:
            self.answers[method, response.status] += 1
        try:
            parsed = json.loads(raw) if raw.startswith(b"{") else {}
        except ValueError:
            parsed = {}
        return response.status, parsed

    def post(self, seq: int, language: str, wait: bool) -> tuple[int, dict[str, Any]]:
        body = {"language": language, "code": HELLO[language], "wait": wait}
        return self.request("POST", "/v1/runs", {**body, "metadata": {"bench": self.tag, "seq": str(seq)}})

    def get(self, run_id: str) -> tuple[int, dict[str, Any]]:
        return self.request("GET", f"/v1/runs/{run_id}")

    def count(self, method: str, accept: Callable[[int], bool]) -> int:
        return sum(n for (m, status), n in self.answers.items() if m == method and accept(status))


def calibrate(client: LoadClient, mix: list[str], seconds: float) -> float:
    """Runs/s of the mix, closed loop at the worker's concurrency (every answer checked)."""
    seqs = itertools.count()

    def action() -> None:
        seq = next(seqs)
        language = mix[seq % len(mix)]
        status, run = client.post(seq, language, True)
        if status != 200 or run.get("status") != "succeeded" or run.get("stdout") != EXPECTED_STDOUT:
            raise BenchError(f"load calibration: POST /v1/runs ({language}) answered {status}: {str(run)[:1000]}")

    done, elapsed_s = throughput(action, WORKER_THREADS, seconds)
    return done / elapsed_s


def one(client: LoadClient, outcome: Outcome, start: float, scheduled: float, poll_until: float) -> None:
    """Send one scheduled request and follow it to a terminal status (filled into `outcome`)."""
    now = time.perf_counter()
    outcome.lag_ms, outcome.sent_s = (now - scheduled) * 1000, now - start
    try:
        outcome.status, run = client.post(outcome.seq, outcome.language, outcome.wait)
        outcome.run_id, outcome.final = run.get("id"), run.get("status")
        if not (200 <= outcome.status < 300 and outcome.run_id):
            outcome.error = f"POST {outcome.status} {run.get('error', {}).get('code', '')}".rstrip()
            return
        while outcome.final not in TERMINAL and time.perf_counter() < poll_until:
            time.sleep(POLL_INTERVAL_S)
            code, run = client.get(outcome.run_id)
            if code != 200:  # counted by the client; verify() asks again
                outcome.error = f"GET {code}"
                return
            outcome.final = run.get("status")
        if outcome.final in TERMINAL:
            now = time.perf_counter()
            outcome.latency_ms, outcome.done_s = (now - scheduled) * 1000, now - start
            outcome.stdout_ok = run.get("stdout") == EXPECTED_STDOUT
    except (OSError, http.client.HTTPException) as exc:  # counted by the client
        outcome.error = type(exc).__name__


class Sampler(threading.Thread):
    """Every second: RSS and process count per server role, and the runs queued and running."""

    def __init__(self, groups: dict[str, int], database_url: str) -> None:
        super().__init__(name="load-sampler", daemon=True)
        self.groups, self.database_url = groups, database_url
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
                start = time.perf_counter()
                while not self.stopped.is_set():
                    rows = conn.execute(
                        "SELECT status, count(*) FROM runs_run WHERE status IN ('queued', 'running') GROUP BY status"
                    ).fetchall()
                    counts: dict[str, int] = dict(rows)
                    self.samples.append(
                        {
                            "t": time.perf_counter() - start,
                            "rss": group_rss_kib(self.groups),
                            "queued": counts.get("queued", 0),
                            "running": counts.get("running", 0),
                        }
                    )
                    self.stopped.wait(SAMPLE_EVERY_S)
        except BaseException as exc:  # reported by measure(): a sampler that died must not pass for flat
            self.error = exc


def group_rss_kib(groups: dict[str, int]) -> dict[str, tuple[int, int, int]]:
    """(VmRSS KiB, processes, threads) summed over each process group, from /proc.

    Processes younger than MIN_AGE_S are left out: the worker forks to start a sandbox (the child leaves
    the group with setsid before it execs bubblewrap), and such a child shows its parent's whole RSS."""
    found = {name: [0, 0, 0] for name in groups}
    by_pgid = {pgid: name for name, pgid in groups.items()}
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            pgid, started_s = int(fields[2]), int(fields[19]) / CLOCK_TICKS  # after the name: state ppid pgrp...
            if pgid not in by_pgid or uptime_s - started_s < MIN_AGE_S:
                continue
            status = Path(entry.path, "status").read_text()
        except (OSError, IndexError, ValueError):  # gone in between
            continue
        values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        totals = found[by_pgid[pgid]]
        totals[0] += int(values.get("VmRSS", "0 kB").split()[0])
        totals[1] += 1
        totals[2] += int(values.get("Threads", "0"))
    return {name: (kib, procs, threads) for name, (kib, procs, threads) in found.items()}


def per_second(count: int, times_s: list[float]) -> float:
    """`count` events over the span of `times_s`."""
    span = max(times_s, default=0.0) - min(times_s, default=0.0)
    return round(count / span, 2) if span > 0 else 0.0


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 60


def rss_summary(samples: list[dict[str, Any]], role: str) -> dict[str, Any]:
    mib = [(s["t"], s["rss"][role][0] / 1024) for s in samples]
    second_half = [(t, v) for t, v in mib if t >= mib[-1][0] / 2]
    procs = [s["rss"][role][1] for s in samples]
    threads = [s["rss"][role][2] for s in samples]
    start, end = mib[0][1], mib[-1][1]
    slope = slope_per_min(second_half)
    rise = slope * (second_half[-1][0] - second_half[0][0]) / 60
    return {
        "start_mib": round(start, 1),
        "end_mib": round(end, 1),
        "max_mib": round(max(v for _, v in mib), 1),
        "growth_mib": round(end - start, 1),
        "slope_mib_per_min": round(slope, 2),
        "procs": [min(procs), max(procs)],
        "threads": [min(threads), max(threads)],
        "flagged": (slope > RSS_FLAG_MIB_PER_MIN and rise >= RSS_FLAG_MIN_RISE_MIB) or end - start > RSS_FAIL_MIB,
    }


def verify(client: LoadClient, outcomes: list[Outcome], database_url: str) -> dict[str, Any]:
    """Every accepted run terminal, by GET and in the database, within DRAIN_S; the load's runs counted there."""
    deadline = time.monotonic() + DRAIN_S
    accepted = {o.run_id: o for o in outcomes if o.status is not None and 200 <= o.status < 300 and o.run_id}
    pending = {run_id for run_id, o in accepted.items() if o.final not in TERMINAL}
    while pending and time.monotonic() < deadline:
        for run_id in list(pending):
            code, run = client.get(run_id)
            if code == 200 and run.get("status") in TERMINAL:
                pending.discard(run_id)
        time.sleep(0.5)
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        rows = conn.execute("SELECT public_id, status FROM runs_run WHERE metadata->>'bench' = %s", (client.tag,))
        in_db: dict[str, str] = dict(rows.fetchall())
    not_terminal_db = {run_id for run_id, status in in_db.items() if status not in TERMINAL}
    missing_db = set(accepted) - set(in_db)
    lost = pending | not_terminal_db | missing_db
    return {
        "lost": len(lost),
        "lost_ids": sorted(lost)[:20],
        "db_runs": len(in_db),
        "db_not_terminal": len(not_terminal_db),
        "db_missing": len(missing_db),
        # Runs the database holds for requests the client got no 2xx for (a 5xx or a dropped answer).
        "db_unacknowledged": len(set(in_db) - set(accepted)),
    }


def hold(client: LoadClient, mix: list[str], rate: float, seconds: float) -> list[Outcome]:
    """Start round(rate * seconds) requests on the schedule; wait for all to be answered (and polled)."""
    outcomes = [Outcome(i, mix[i % len(mix)], i % POLL_EVERY != POLL_EVERY - 1) for i in range(round(rate * seconds))]
    start = time.perf_counter()
    poll_until = start + seconds + HTTP_TIMEOUT_S
    with ThreadPoolExecutor(CLIENT_THREADS, thread_name_prefix="load") as pool:
        futures = []
        for outcome in outcomes:
            scheduled = start + outcome.seq / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, client, outcome, start, scheduled, poll_until))
        for future in futures:
            future.result()
    return outcomes


def measure(stack: Stack, database_url: str, mix: list[str], seconds: float, rate: float | None) -> dict[str, Any]:
    """The load section of the report (see the module docstring)."""
    tag = f"load-{uuid.uuid4().hex[:12]}"
    client = LoadClient(stack, tag)
    calibrate_s = max(2.0, min(10.0, seconds / 6))
    progress(f"load: the mix closed loop at concurrency {WORKER_THREADS} for {calibrate_s:g} s (the sustainable rate)")
    capacity = calibrate(LoadClient(stack, f"{tag}-calibration"), mix, calibrate_s)
    share = SUSTAINABLE_SHARE if rate is None else None  # None: the rate was given (--load-rate)
    rate = SUSTAINABLE_SHARE * capacity if rate is None else rate
    progress(f"load: {capacity:.1f} runs/s closed loop; holding {rate:.1f} requests/s open loop for {seconds:g} s")
    sampler = Sampler(stack.groups, database_url)
    sampler.start()
    try:
        outcomes = hold(client, mix, rate, seconds)
    finally:
        sampler.stopped.set()
        sampler.join()
    if sampler.error is not None or len(sampler.samples) < 2:
        raise BenchError(f"load: the RSS sampler failed: {sampler.error!r}")
    progress("load: checking that every accepted run finished (GET and the database)")
    checked = verify(client, outcomes, database_url)
    accepted = [o for o in outcomes if o.status is not None and 200 <= o.status < 300]
    done = [o for o in accepted if o.latency_ms is not None]
    latencies = [o.latency_ms for o in done if o.latency_ms is not None]
    by_path = {
        "wait": [o.latency_ms for o in done if o.wait and o.latency_ms is not None],
        "poll": [o.latency_ms for o in done if not o.wait and o.latency_ms is not None],
    }
    result = {
        "seconds": seconds,
        "mix": mix,
        "poll_share": round(1 / POLL_EVERY, 3),
        "capacity_runs_per_s": round(capacity, 1),
        "rate_share": share,
        "rate_per_s": round(rate, 2),
        "sent": len(outcomes),
        "achieved_per_s": per_second(len(outcomes) - 1, [o.sent_s for o in outcomes]),
        "completed_per_s": per_second(len(done), [0.0, *(o.done_s for o in done if o.done_s is not None)]),
        "schedule_lag_max_ms": round(max(o.lag_ms for o in outcomes), 1) if outcomes else 0.0,
        "http_2xx": client.count("POST", lambda s: 200 <= s < 300),
        "http_429": client.count("POST", lambda s: s == 429),
        "http_4xx_other": client.count("POST", lambda s: 400 <= s < 500 and s != 429),
        "http_5xx": client.count("POST", lambda s: s >= 500) + client.count("GET", lambda s: s >= 500),
        "get_requests": client.count("GET", lambda s: True),
        "get_not_200": client.count("GET", lambda s: s != 200),
        "transport_errors": sum(client.transport_errors.values()),
        "wrong": sum(o.final in TERMINAL and not (o.final == "succeeded" and o.stdout_ok) for o in accepted),
        **checked,
        "latency": summarize(latencies) if latencies else None,
        "latency_by_path": {path: summarize(values) if values else None for path, values in by_path.items()},
        "queued_max": max(s["queued"] for s in sampler.samples),
        "running_max": max(s["running"] for s in sampler.samples),
        "queued_slope_per_min": round(
            slope_per_min([(s["t"], s["queued"]) for s in sampler.samples if s["t"] >= sampler.samples[-1]["t"] / 2]), 1
        ),
        "samples": len(sampler.samples),
        "series": {  # one sample a second: to plot
            "t_s": [round(s["t"], 1) for s in sampler.samples],
            **{f"{role}_mib": [round(s["rss"][role][0] / 1024, 1) for s in sampler.samples] for role in stack.groups},
            **{f"{role}_threads": [s["rss"][role][2] for s in sampler.samples] for role in stack.groups},
            "queued": [s["queued"] for s in sampler.samples],
            "running": [s["running"] for s in sampler.samples],
        },
        "rss": {role: rss_summary(sampler.samples, role) for role in stack.groups},
        "rss_flag_mib_per_min": RSS_FLAG_MIB_PER_MIN,
        "rss_fail_mib": RSS_FAIL_MIB,
    }
    result["errors"] = dict(Counter(o.error for o in outcomes if o.error).most_common(10))
    result["failures"] = failures(result)
    if result["failures"]:  # the stack and its logs go once the bench ends
        progress(f"load failed ({'; '.join(result['failures'])}); the servers' logs:\n{log_tails(stack)}")
    return result


def failures(result: dict[str, Any]) -> list[str]:
    """Why the load measure fails the bench (empty: it passed)."""
    found = []
    for key, what in FAILING_COUNTS.items():
        if result[key]:
            found.append(f"{result[key]} {what}")
    for role, rss in result["rss"].items():
        if rss["growth_mib"] > RSS_FAIL_MIB:
            found.append(f"{role} RSS grew {rss['growth_mib']} MiB (limit {RSS_FAIL_MIB:g})")
    return found
