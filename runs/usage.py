"""Usage aggregated in SQL: per day or per language, for one key or all of them.

A UTC day rolled up by runs.retention (a UsageRollupDay row) is read from UsageDaily, whose figures
outlive the runs that retention deletes; every other day is aggregated over its runs.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate

from .models import ApiKey, Run, UsageDaily, UsageRollupDay

STATUSES = ("succeeded", "failed", "timeout", "oom", "cancelled", "error")
SUMS = ("cpu_ms", "wall_ms", "output_bytes", "artifact_bytes")
COLUMNS = ("runs", *STATUSES, *SUMS)
MAX_RANGE_DAYS = 366
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_RANGE_DAYS = 30
GROUPS = {"owner_id", "date", "language"}


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


def grouped(
    start: dt.date, end: dt.date, group: tuple[str, ...], key: ApiKey | None = None, with_key: bool = False
) -> list[dict[str, Any]]:
    """Counters per `group` (names among owner_id, date, language) over [start, end], in the group's order.

    A UTC day rolled up by runs.retention is counted from UsageDaily, any other day from its runs. Both
    halves are one SQL statement, so they see one snapshot: a roll-up or a purge committing meanwhile
    can neither count a day twice nor lose it. `with_key` adds the owner's label and prefix (and orders
    by label first, then owner_id), as the per-key report lists them.
    """
    if not set(group) <= GROUPS or (with_key and "owner_id" not in group):
        raise ValueError(f"cannot group usage by {group!r}")
    live = (
        runs_in_range(start, end, key)
        .annotate(date=TruncDate("created_at", tzinfo=dt.UTC))
        .filter(~Exists(UsageRollupDay.objects.filter(date=OuterRef("date"))))
    )
    live_sql, live_params = live.values(*group).annotate(**counters()).order_by().query.sql_with_params()
    qn = connection.ops.quote_name
    columns = ", ".join(qn(c) for c in group)
    counts = ", ".join(qn(c) for c in COLUMNS)
    daily_where = f"{qn('date')} >= %s AND {qn('date')} <= %s"
    daily_params: list[Any] = [start, end]
    if key is not None:
        daily_where += f" AND {qn('owner_id')} = %s"
        daily_params.append(key.pk)
    keys = [f"u.{qn(c)}" for c in group]
    select, order = list(keys), list(keys)
    join = ""
    if with_key:
        join = f" JOIN {qn(ApiKey._meta.db_table)} k ON k.{qn('id')} = u.{qn('owner_id')}"
        select += [f"k.{qn('label')} AS {qn('key')}", f"k.{qn('prefix')} AS {qn('key_prefix')}"]
        keys += [f"k.{qn('label')}", f"k.{qn('prefix')}"]
        order = [f"k.{qn('label')}", *order]  # the key's label first, as the report has always listed it
    sums = ", ".join(f"SUM(u.{qn(c)})::bigint AS {qn(c)}" for c in COLUMNS)
    # Only quoted constant identifiers and Django's own SQL are formatted in; every value is a parameter.
    sql = (
        f"SELECT {', '.join(select)}, {sums} FROM ("  # noqa: S608
        f"SELECT {columns}, {counts} FROM ({live_sql}) AS live"
        f" UNION ALL SELECT {columns}, {counts} FROM {qn(UsageDaily._meta.db_table)} WHERE {daily_where}"
        f") AS u{join} GROUP BY {', '.join(keys)} ORDER BY {', '.join(order)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*live_params, *daily_params])
        names = [d.name for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _total(rows: list[dict[str, Any]]) -> dict[str, int]:
    total = zero()
    for row in rows:
        for name in COLUMNS:
            total[name] += int(row[name])
    return total


def usage(start: dt.date, end: dt.date, group_by: str, key: ApiKey | None = None) -> dict[str, Any]:
    data: list[dict[str, Any]]
    if group_by == "day":
        rows = {row["date"]: row for row in grouped(start, end, ("date",), key)}
        data = []
        day = start
        while day <= end:  # every day of the range, zeros included, so charts need no gaps filled
            row = rows.get(day)
            values = {k: int(row[k]) for k in COLUMNS} if row else zero()
            data.append({"date": day.isoformat(), **values})
            day += dt.timedelta(days=1)
    else:
        data = [
            {"language": row["language"], **{k: int(row[k]) for k in COLUMNS}}
            for row in grouped(start, end, ("language",), key)
        ]
    return {
        "object": "usage",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "group_by": group_by,
        "data": data,
        "total": _total(data),
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

    The operator's report (usage_report, the admin usage page): the same SQL as GET /v1/usage (runs and
    the daily roll-up), so the figures agree for the same range.
    """
    rows = [
        {
            "key": row["key"],
            "key_prefix": row["key_prefix"],
            "key_id": row["owner_id"],
            "date": row["date"].isoformat(),
            **{c: int(row[c]) for c in COLUMNS},
        }
        for row in grouped(start, end, ("owner_id", "date"), key, with_key=True)
    ]
    return rows, _total(rows)


def csv_text(rows: list[dict[str, Any]], total: dict[str, int]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["key", "key_prefix", "date", *COLUMNS])
    for row in rows:
        writer.writerow([row["key"], row["key_prefix"], row["date"], *(row[c] for c in COLUMNS)])
    writer.writerow(["TOTAL", "", "", *(total[c] for c in COLUMNS)])
    return buffer.getvalue()
