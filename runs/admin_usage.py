"""The admin's usage report page: per key and per day, totals by status, a server-rendered SVG chart and
CSV export. Its figures come from runs.usage, the SQL behind GET /v1/usage and `usage_report`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .models import ApiKey
from .usage import COLUMNS, STATUSES, csv_text, parse_range, per_key_per_day, usage

# One colour per status, stacked bottom to top in this order.
STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "timeout": "#ef6c00",
    "oom": "#6a1b9a",
    "cancelled": "#757575",
    "error": "#000000",
}
CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 760, 240, 44, 28, 12


def usage_report(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {
        "title": "Usage report",
        "keys": ApiKey.objects.order_by("label", "id"),
        "columns": COLUMNS,
        "statuses": STATUSES,
        "colours": STATUS_COLOURS,
    }
    key: ApiKey | None = None
    key_text = request.GET.get("key", "")
    error = None
    try:
        start, end = parse_range(request.GET.get("start") or None, request.GET.get("end") or None)
    except ValueError as exc:
        error = exc.args[1]
        start, end = parse_range(None, None)
    if key_text:
        key = ApiKey.objects.filter(pk=int(key_text)).first() if key_text.isdigit() else None
        if key is None:
            error = f"No API key with id {key_text!r}."
    rows, total = per_key_per_day(start, end, key)
    if request.GET.get("format") == "csv" and error is None:
        response = HttpResponse(csv_text(rows, total), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{start}-{end}.csv"'
        return response
    daily = usage(start, end, "day", key)["data"]
    per_key: dict[int, dict[str, Any]] = {}
    for row in rows:
        entry = per_key.setdefault(
            row["key_id"], {"key": row["key"], "key_prefix": row["key_prefix"], **dict.fromkeys(COLUMNS, 0)}
        )
        for column in COLUMNS:
            entry[column] += row[column]
    context.update(
        {
            **_admin_context(request),
            "error": error,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "selected_key": key.pk if key else None,
            "rows": [{**row, "cells": [row[c] for c in COLUMNS]} for row in rows],
            "per_key": [{**row, "cells": [row[c] for c in COLUMNS]} for row in per_key.values()],
            "total_cells": [(c, total[c]) for c in COLUMNS],
            "chart": chart_svg(daily),
            "csv_query": _query(start, end, key, csv=True),
        }
    )
    return TemplateResponse(request, "admin/runs/usage_report.html", context)


def _admin_context(request: HttpRequest) -> dict[str, Any]:
    from django.contrib import admin

    return admin.site.each_context(request)


def _query(start: dt.date, end: dt.date, key: ApiKey | None, csv: bool = False) -> str:
    parts = [f"start={start}", f"end={end}"]
    if key is not None:
        parts.append(f"key={key.pk}")
    if csv:
        parts.append("format=csv")
    return "?" + "&".join(parts)


def chart_svg(daily: list[dict[str, Any]]) -> SafeString:
    """Runs per day, stacked by status; every number in it comes from `daily` (no client-side code)."""
    days = len(daily) or 1
    peak = max((d["runs"] for d in daily), default=0)
    top = _nice_ceiling(peak)
    plot_w, plot_h = CHART_W - PAD_L - 8, CHART_H - PAD_B - PAD_T
    slot = plot_w / days
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" width="100%" '
        f'role="img" aria-label="Runs per day by status" data-testid="usage-chart" class="codeexec-chart">'
    ]
    for i in range(5):  # horizontal grid with labels
        value = top * i / 4
        y = PAD_T + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{CHART_W - 8}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#555">{value:g}</text>'
        )
    for index, day in enumerate(daily):
        x = PAD_L + index * slot + (slot - bar) / 2
        y = PAD_T + plot_h
        for status in STATUSES:
            count = day[status]
            if not count:
                continue
            h = plot_h * count / top
            y -= h
            title = escape(f"{day['date']}: {count} {status}")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{STATUS_COLOURS[status]}" data-date="{day["date"]}" data-status="{status}" '
                f'data-count="{count}"><title>{title}</title></rect>'
            )
    step = max(1, days // 8)
    for index in range(0, len(daily), step):
        x = PAD_L + index * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{CHART_H - 8}" font-size="11" text-anchor="middle" fill="#555">'
            f"{escape(daily[index]['date'][5:])}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 — built above from numbers and escaped text only


def _nice_ceiling(value: int) -> int:
    """The smallest of 4, 8, 20, 40, 80, 200, ... (or 1, 2) at least `value`: grid lines at round numbers."""
    if value <= 4:
        return 4
    magnitude = 1
    while True:
        for factor in (4, 8, 20):
            if factor * magnitude >= value:
                return factor * magnitude
        magnitude *= 10
