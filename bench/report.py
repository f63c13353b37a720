"""The bench's result: one dict (printed as the last line, JSON) and a table for people.

Every figure comes with its ratio to the bare interpreter measured in the same run: latencies against
the bare median of the same program (go-cache against a bare run of an already built binary),
end-to-end percentiles against the same percentile of bare python, throughput against bare python at
the same concurrency.
"""

from __future__ import annotations

import statistics
from typing import Any

from .common import percentile, ratio, summarize
from .sandbox_only import bare_of

Samples = dict[str, list[float]]
THROUGHPUT_LABELS = {"bare": "bare python", "bwrap": "bwrap (in-process, pool)", "e2e": "POST /v1/runs (wait: true)"}


def build(
    *,
    settings: dict[str, Any],
    machine: dict[str, Any],
    bare: Samples,
    sandbox: dict[str, Samples | None],
    api_ms: list[float],
    rates: dict[str, dict[int, float]],
    docker: Samples | None,
    load: dict[str, Any] | None,
    skipped: dict[str, str],
) -> dict[str, Any]:
    bare_p50 = {lang: statistics.median(values) for lang, values in bare.items()}

    def against_bare(values: list[float], lang: str) -> dict[str, Any]:
        p50 = statistics.median(values)
        return {
            **summarize(values),
            "bare": lang,
            "added_ms": round(p50 - bare_p50[lang], 1),
            "ratio": ratio(p50, bare_p50[lang]),
        }

    e2e = against_bare(api_ms, "python")
    for q in (0.90, 0.99):  # the tail too: against the same percentile of bare python
        e2e[f"p{q * 100:.0f}_ratio"] = ratio(percentile(api_ms, q), percentile(bare["python"], q))
    levels = sorted(next(iter(rates.values())))
    docker_row = None
    if docker is not None:
        plain, backend = statistics.median(docker["plain"]), statistics.median(docker["backend"])
        docker_row = {
            "plain_docker_run": against_bare(docker["plain"], "python"),
            "docker_backend": against_bare(docker["backend"], "python"),
            "backend_vs_plain": ratio(backend, plain),
        }
        if "warm" in docker:  # the docker backend through its warm pool
            docker_row["docker_backend_warm"] = against_bare(docker["warm"], "python")
            docker_row["warm_vs_plain"] = ratio(statistics.median(docker["warm"]), plain)
        if "warm-blocked" in docker:  # ... with the interpreter not started ahead (SANDBOX_WARM_PRESTART=0)
            docker_row["docker_backend_warm_blocked"] = against_bare(docker["warm-blocked"], "python")
            docker_row["warm_blocked_vs_plain"] = ratio(statistics.median(docker["warm-blocked"]), plain)
    return {
        "benchmark": "codeexec",
        "settings": settings,
        "machine": machine,
        "bare": {lang: summarize(values) for lang, values in bare.items()},
        "sandbox": {
            name: None
            if rows is None
            else {label: against_bare(values, bare_of(label)) for label, values in rows.items()}
            for name, rows in sandbox.items()
        },
        "e2e": e2e,
        "throughput": [
            {
                "concurrency": c,
                **{f"{name}_runs_per_s": round(rates[name][c], 1) for name in rates},
                **{f"{name}_ratio": ratio(rates[name][c], rates["bare"][c]) for name in rates if name != "bare"},
            }
            for c in levels
        ],
        "docker": docker_row,
        "load": load,
        "skipped": skipped,
    }


def table(report: dict[str, Any]) -> str:
    """The report as aligned text (everything but the settings)."""
    machine, lines = report["machine"], []
    lines.append(
        f"codeexec bench: {machine['cpus']} CPUs, load {machine['loadavg_start']} -> {machine['loadavg_end']}, "
        f"{machine['seconds']} s"
    )
    lines.append("")
    lines.append("Latency of hello world, ms (ratio: p50 / bare p50 of `bare`, measured alternately in this run)")
    header = f"{'what':<28} {'n':>4} {'p50':>8} {'p90':>8} {'p99':>8} {'added':>8} {'ratio':>7}  bare"
    lines.append(header)

    def row(name: str, r: dict[str, Any]) -> str:
        added = f"{r['added_ms']:>8}" if "added_ms" in r else f"{'':>8}"
        rat = f"{r['ratio']:>7.2f}" if isinstance(r.get("ratio"), float) else f"{'':>7}"
        return (
            f"{name:<28} {r['n']:>4} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['p99_ms']:>8} {added} {rat}  {r.get('bare', '')}"
        ).rstrip()

    for lang, r in report["bare"].items():
        lines.append(row(f"bare {lang}", r))
    for backend, rows in report["sandbox"].items():
        if rows is None:
            lines.append(f"{backend:<28} skipped: {report['skipped'].get(backend, '')}")
            continue
        for label, r in rows.items():
            lines.append(row(f"{backend} {label}", r))
    docker = report["docker"]
    if docker is None:
        lines.append(f"{'docker run --rm (plain)':<28} skipped: {report['skipped'].get('docker', '')}")
    else:
        lines.append(row("docker run --rm (plain)", docker["plain_docker_run"]))
        lines.append(row("docker backend (python)", docker["docker_backend"]))
        lines.append(f"{'':<28} docker backend / plain docker run: {docker['backend_vs_plain']:.2f}")
        if "docker_backend_warm" in docker:
            lines.append(row("docker backend warm (python)", docker["docker_backend_warm"]))
            lines.append(f"{'':<28} docker backend warm / plain docker run: {docker['warm_vs_plain']:.2f}")
        if "docker_backend_warm_blocked" in docker:
            lines.append(row("docker warm-blocked (python)", docker["docker_backend_warm_blocked"]))
            lines.append(f"{'':<28} blocked / plain docker run: {docker['warm_blocked_vs_plain']:.2f}")
    e2e = report["e2e"]
    lines.append(row("POST /v1/runs (wait: true)", e2e))
    lines.append(f"{'':<28} p90 / bare p90: {e2e['p90_ratio']:.2f}, p99 / bare p99: {e2e['p99_ratio']:.2f}")
    lines.append("")
    settings = report["settings"]
    lines.append(
        "Throughput of python hello world, runs/s (ratio to bare at the same concurrency), "
        f"{settings['rounds']} x {settings['seconds']} s a point"
    )
    points = report["throughput"]
    lines.append(f"{'what':<28}" + "".join(f"{'c=' + str(p['concurrency']):>16}" for p in points))
    names = [key.removesuffix("_runs_per_s") for key in points[0] if key.endswith("_runs_per_s")]
    for name in names:
        cells = [str(p[f"{name}_runs_per_s"]) + (f" ({p[f'{name}_ratio']})" if name != "bare" else "") for p in points]
        lines.append(f"{THROUGHPUT_LABELS.get(name, name):<28}" + "".join(f"{cell:>16}" for cell in cells))
    lines.append("")
    lines.extend(load_table(report["load"], report["skipped"].get("load", "")))
    return "\n".join(lines)


def load_table(load: dict[str, Any] | None, skipped: str) -> list[str]:
    if load is None:
        return [f"Load: skipped: {skipped}"]
    share = load["rate_share"]
    rate_from = "--load-rate; capacity" if share is None else f"{share * 100:g} % of"
    lines = [
        f"Load: {'/'.join(load['mix'])} hello, open loop at {load['rate_per_s']} requests/s for {load['seconds']:g} s "
        f"({rate_from} {load['capacity_runs_per_s']} runs/s closed loop), 1 in {round(1 / load['poll_share'])} "
        "wait: false and polled",
        f"{'requests':<28} {load['sent']} sent at {load['achieved_per_s']}/s (schedule lag max "
        f"{load['schedule_lag_max_ms']} ms), {load['completed_per_s']} runs/s completed",
        f"{'answers':<28} {load['http_2xx']} 2xx, {load['http_429']} 429 (rejected, not lost), "
        f"{load['http_4xx_other']} other 4xx, {load['http_5xx']} 5xx, {load['transport_errors']} without answer; "
        f"{load['get_requests']} GET, {load['get_not_200']} not 200",
        f"{'runs':<28} {load['lost']} lost (GET and database, {load['db_runs']} in it), {load['wrong']} wrong; "
        f"queued max {load['queued_max']}, running max {load['running_max']}",
    ]
    latency = load["latency"]
    if latency is not None:
        paths = ", ".join(f"{path} p50 {r['p50_ms']} (n {r['n']})" for path, r in load["latency_by_path"].items() if r)
        lines.append(
            f"{'latency from scheduled, ms':<28} p50 {latency['p50_ms']}, p90 {latency['p90_ms']}, "
            f"p99 {latency['p99_ms']}; {paths}"
        )
    lines.append(
        f"{'RSS, MiB (process group)':<28} {'start':>8} {'end':>8} {'max':>8} {'growth':>8} {'MiB/min':>8}  procs, threads"
    )
    for role, rss in load["rss"].items():
        flag = "  FLAGGED" if rss["flagged"] else ""
        lines.append(
            f"{role:<28} {rss['start_mib']:>8} {rss['end_mib']:>8} {rss['max_mib']:>8} {rss['growth_mib']:>8} "
            f"{rss['slope_mib_per_min']:>8}  {rss['procs'][0]}-{rss['procs'][1]}, {rss['threads'][0]}-{rss['threads'][1]}{flag}"
        )
    lines.append(
        f"{'':<28} slope: least squares over the second half; flagged above {load['rss_flag_mib_per_min']:g} MiB/min, "
        f"fails above {load['rss_fail_mib']:g} MiB growth"
    )
    lines.append(f"{'verdict':<28} " + ("; ".join(load["failures"]) if load["failures"] else "passed"))
    return lines
