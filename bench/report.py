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
THROUGHPUT_LABELS = {"bare": "bare python", "bwrap": "bwrap (in-process)", "e2e": "POST /v1/runs (wait: true)"}


def build(
    *,
    settings: dict[str, Any],
    machine: dict[str, Any],
    bare: Samples,
    sandbox: dict[str, Samples | None],
    api_ms: list[float],
    rates: dict[str, dict[int, float]],
    docker: Samples | None,
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
    return "\n".join(lines)
