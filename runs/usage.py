"""Usage aggregated in SQL over runs: per day or per language, for one key or all of them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate

from .models import ApiKey, Run

STATUSES = ("succeeded", "failed", "timeout", "oom", "cancelled", "error")
SUMS = ("cpu_ms", "wall_ms", "output_bytes", "artifact_bytes")
COLUMNS = ("runs", *STATUSES, *SUMS)
MAX_RANGE_DAYS = 366
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_RANGE_DAYS = 30


def counters() -> dict[str, Any]:
    fields: dict[str, Any] = {"runs": Count("id")}
    for status in STATUSES:
        fields[status] = Count("id", filter=Q(status=status))
    for name in SUMS:
        fields[name] = Coalesce(Sum(name), 0)
    return fields


def zero() -> dict[str, int]:
    return dict.fromkeys(("runs", *STATUSES, *SUMS), 0)


def runs_in_range(start: dt.date, end: dt.date, key: ApiKey | None = None) -> QuerySet[Run]:
    """Runs created from `start` 00:00 UTC to the end of `end` (inclusive), as an index-friendly range."""
    since = dt.datetime.combine(start, dt.time.min, tzinfo=dt.UTC)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    queryset = Run.objects.filter(created_at__gte=since, created_at__lt=until)
    return queryset.filter(owner=key) if key is not None else queryset


def usage(start: dt.date, end: dt.date, group_by: str, key: ApiKey | None = None) -> dict[str, Any]:
    queryset = runs_in_range(start, end, key)
    data: list[dict[str, Any]]
    if group_by == "day":
        rows = {
            row["date"]: row
            for row in queryset.annotate(date=TruncDate("created_at", tzinfo=dt.UTC))
            .values("date")
            .annotate(**counters())
            .order_by("date")
        }
        data = []
        day = start
        while day <= end:  # every day of the range, zeros included, so charts need no gaps filled
            row = rows.get(day)
            values = {k: int(row[k]) for k in zero()} if row else zero()
            data.append({"date": day.isoformat(), **values})
            day += dt.timedelta(days=1)
    else:
        data = [
            {"language": row["language"], **{k: int(row[k]) for k in zero()}}
            for row in queryset.values("language").annotate(**counters()).order_by("language")
        ]
    total = queryset.aggregate(**counters())
    return {
        "object": "usage",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "group_by": group_by,
        "data": data,
        "total": {k: int(total[k]) for k in zero()},
    }


def parse_range(start_text: str | None, end_text: str | None, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """Validate a YYYY-MM-DD range; raises ValueError(param, message)."""
    today = today or dt.datetime.now(dt.UTC).date()

    def parse(text: str, param: str) -> dt.date:
        if not DATE_RE.match(text):
            raise ValueError(param, f"'{param}' must be a date as YYYY-MM-DD.")
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError(param, f"'{param}' must be a date as YYYY-MM-DD.") from None

    end = parse(end_text, "end") if end_text else today
    start = parse(start_text, "start") if start_text else end - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise ValueError("start", "'start' must not be after 'end'.")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ValueError("start", f"The range may span at most {MAX_RANGE_DAYS} days.")
    return start, end


def per_key_per_day(
    start: dt.date, end: dt.date, key: ApiKey | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows {key, key_prefix, key_id, date, counters...} for every key and day with runs, and the total.

    The operator's report (usage_report, the admin usage page): the same SQL as GET /v1/usage, so the
    figures agree for the same range.
    """
    queryset = runs_in_range(start, end, key)
    rows = [
        {
            "key": row["owner__label"],
            "key_prefix": row["owner__prefix"],
            "key_id": row["owner_id"],
            "date": row["date"].isoformat(),
            **{c: int(row[c]) for c in COLUMNS},
        }
        for row in queryset.annotate(date=TruncDate("created_at", tzinfo=dt.UTC))
        .values("owner__label", "owner__prefix", "owner_id", "date")
        .annotate(**counters())
        .order_by("owner__label", "owner_id", "date")
    ]
    total = usage(start, end, "language", key)["total"] if rows else zero()
    return rows, total


def csv_text(rows: list[dict[str, Any]], total: dict[str, int]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "key_prefix", "date", *COLUMNS])
    for row in rows:
        writer.writerow([row["key"], row["key_prefix"], row["date"], *(row[c] for c in COLUMNS)])
    writer.writerow(["TOTAL", "", "", *(total[c] for c in COLUMNS)])
    return buffer.getvalue()
