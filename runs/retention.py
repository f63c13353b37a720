"""Retention: a daily usage roll-up, then deleting expired runs (with their artifacts) and old uploads.

The janitor's periodic job calls `run_retention()`; operators run `manage.py retention`.

How usage stays right while runs go (runs.usage reads a rolled-up day from UsageDaily, any other day
from its runs, in one statement):

- A UTC day D is rolled up once it is over and nothing created on it can still change:
  `now >= D+1 00:00 UTC + ROLLUP_GRACE` (the grace covers a run whose INSERT committed a moment after
  midnight, or a host whose clock is a little behind), and every run created on D is terminal (a
  terminal run's counters never change again). A day with a queued or running run waits, counted from
  its runs as before, and is tried again at the next call; whatever ends stuck runs (the janitor's lease
  reaper) lets it through.
- The day's UsageDaily rows and its UsageRollupDay marker are written in one transaction from one
  aggregate statement (one snapshot), under a transaction-scoped advisory lock: concurrent callers go
  one after the other and the later one finds the day done. Unique constraints (one marker per day, one
  row per key, day and language) back the lock up. Days without runs get a marker too, so the next call
  starts after the last marked day instead of scanning the runs table.
- Runs are deleted only from rolled-up days, and only whole days: day D goes once D+1 00:00 UTC is
  RUN_RETENTION_DAYS old, so a run is kept at least RUN_RETENTION_DAYS days. Deleting them changes no
  usage figure. They go in batches of BATCH_SIZE runs, each batch its own short transaction, and their
  artifact blobs are removed from storage after the batch commits.
- Uploaded files (not run artifacts) are deleted once older than FILE_RETENTION_DAYS, except those
  staged as inputs of a queued or running run. 0 keeps runs or files forever.

Consequence: once its day is rolled up, a run's usage stays in the reports even if the run is later
deleted through the API (it was consumed); before that, DELETE /v1/runs/{id} removes it from them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from files.models import File

from .models import TERMINAL, Run, UsageDaily, UsageRollupDay
from .usage import COLUMNS, counters

log = logging.getLogger(__name__)

ROLLUP_GRACE = dt.timedelta(hours=1)
ROLLUP_CHUNK_DAYS = 31  # days aggregated per transaction when catching up on a backlog
BATCH_SIZE = 500  # rows deleted per transaction
# pg_advisory_xact_lock key of the roll-up ("cx" + "roll"), taken by every caller of rollup_usage.
ROLLUP_LOCK_ID = 0x6378_726F_6C6C


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def _days(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def _created_on(days: list[dt.date]) -> Q:
    """Runs created on any of `days` (sorted), as created_at ranges over consecutive days."""
    q = Q()
    first = previous = days[0]
    for day in [*days[1:], None]:
        if day is not None and day == previous + dt.timedelta(days=1):
            previous = day
            continue
        q |= Q(created_at__gte=_midnight(first), created_at__lt=_midnight(previous + dt.timedelta(days=1)))
        if day is not None:
            first = previous = day
    return q


def last_complete_day(now: dt.datetime) -> dt.date:
    """The latest UTC day that may be rolled up at `now` (if its runs have all finished)."""
    return (now - ROLLUP_GRACE).astimezone(dt.UTC).date() - dt.timedelta(days=1)


def _pending_days(last: dt.date, after: dt.date | None) -> list[dt.date]:
    """Days up to `last` (and after `after`) with no marker, from the first marked day or the first run."""
    first = UsageRollupDay.objects.aggregate(first=Min("date"))["first"]
    if first is None:
        first_run = Run.objects.aggregate(first=Min("created_at"))["first"]
        if first_run is None:
            return []
        first = first_run.astimezone(dt.UTC).date()
    if after is not None:
        first = max(first, after + dt.timedelta(days=1))
    if first > last:
        return []
    marked = set(UsageRollupDay.objects.filter(date__gte=first, date__lte=last).values_list("date", flat=True))
    return [day for day in _days(first, last) if day not in marked]


def _roll_up(days: list[dt.date]) -> tuple[list[dt.date], dict[dt.date, int]]:
    """Roll up those of `days` whose runs have all finished; returns them and the others' unfinished counts."""
    rows = (
        Run.objects.filter(_created_on(days))
        .annotate(date=TruncDate("created_at", tzinfo=dt.UTC))
        .values("owner_id", "date", "language")
        .annotate(**counters(), unfinished=Count("id", filter=~Q(status__in=TERMINAL)))
        .order_by()
    )
    by_day: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:  # one statement: the check and the figures come from the same snapshot
        by_day[row["date"]].append(row)
    waiting = {day: unfinished for day, group in by_day.items() if (unfinished := sum(r["unfinished"] for r in group))}
    ready = [day for day in days if day not in waiting]
    UsageDaily.objects.bulk_create(
        UsageDaily(owner_id=row["owner_id"], date=day, language=row["language"], **{c: int(row[c]) for c in COLUMNS})
        for day in ready
        for row in by_day.get(day, [])
    )
    rolled_up_at = timezone.now()
    UsageRollupDay.objects.bulk_create(
        UsageRollupDay(date=day, runs=sum(int(r["runs"]) for r in by_day.get(day, [])), rolled_up_at=rolled_up_at)
        for day in ready
    )
    return ready, waiting


def rollup_usage(now: dt.datetime | None = None) -> int:
    """Roll up every complete UTC day not rolled up yet whose runs have all finished; returns how many days.

    Idempotent, and safe to call from several processes at once (they take turns on an advisory lock).
    """
    last = last_complete_day(now or timezone.now())
    rolled = 0
    after: dt.date | None = None  # days before this one were handled (or left waiting) by this call
    while True:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK_ID])
            days = _pending_days(last, after)[:ROLLUP_CHUNK_DAYS]
            if not days:
                return rolled
            ready, waiting = _roll_up(days)
        rolled += len(ready)
        after = days[-1]
        for day, unfinished in sorted(waiting.items()):
            log.info("usage roll-up: %s waits for %d unfinished run(s)", day, unfinished)


def _delete_blobs(names: list[str]) -> int:
    """Remove stored blobs whose rows are gone; a failure is logged and leaves an orphan, never a dangling row."""
    deleted = 0
    for name in names:
        try:
            default_storage.delete(name)
            deleted += 1
        except OSError:
            log.warning("retention: could not delete stored blob %s", name, exc_info=True)
    return deleted


def _purge_runs(day: dt.date, dry_run: bool) -> dict[str, int]:
    """Delete the runs created on `day` and their artifacts, BATCH_SIZE runs per transaction."""
    counts = {"runs": 0, "artifacts": 0, "blobs": 0}
    window = Run.objects.filter(created_at__gte=_midnight(day), created_at__lt=_midnight(day + dt.timedelta(days=1)))
    if dry_run:
        counts["runs"] = window.count()
        counts["artifacts"] = counts["blobs"] = File.objects.filter(run__in=window).count()
        return counts
    while True:
        with transaction.atomic():
            ids = list(window.order_by("id").values_list("id", flat=True)[:BATCH_SIZE])
            if not ids:
                return counts
            artifacts = File.objects.filter(run_id__in=ids)
            names = [name for name in artifacts.values_list("blob", flat=True) if name]
            counts["artifacts"] += artifacts.delete()[0]
            # Only the ids are loaded: a run's code and output may be large and are not needed to delete it.
            counts["runs"] += Run.objects.filter(id__in=ids).only("id").delete()[0]
        counts["blobs"] += _delete_blobs(names)


def _purge_uploads(now: dt.datetime, dry_run: bool) -> dict[str, int]:
    """Delete uploaded files older than FILE_RETENTION_DAYS, except inputs of unfinished runs."""
    cutoff = now - dt.timedelta(days=settings.FILE_RETENTION_DAYS)
    in_use = {
        ref["file_id"]
        for refs in Run.objects.exclude(status__in=TERMINAL).values_list("input_files", flat=True)
        for ref in refs or []
        if isinstance(ref, dict) and "file_id" in ref
    }
    expired = (
        File.objects.filter(run__isnull=True, created_at__lt=cutoff)
        .exclude(purpose=File.Purpose.RUN_ARTIFACT)
        .exclude(public_id__in=in_use)
    )
    if dry_run:
        count = expired.count()
        return {"files": count, "blobs": count}
    counts = {"files": 0, "blobs": 0}
    while True:
        with transaction.atomic():
            batch = list(expired.order_by("id").values_list("id", "blob")[:BATCH_SIZE])
            if not batch:
                return counts
            counts["files"] += File.objects.filter(id__in=[pk for pk, _ in batch]).delete()[0]
        counts["blobs"] += _delete_blobs([name for _, name in batch if name])


def purge_expired(now: dt.datetime | None = None, dry_run: bool = False) -> dict[str, int]:
    """Delete runs older than RUN_RETENTION_DAYS (rolled-up days only) with their artifacts, and uploads
    older than FILE_RETENTION_DAYS, blobs included; returns counts (what would go, with `dry_run`)."""
    now = now or timezone.now()
    counts = {"days": 0, "runs": 0, "artifacts": 0, "files": 0, "blobs": 0}
    if settings.RUN_RETENTION_DAYS > 0:
        last = (now - dt.timedelta(days=settings.RUN_RETENTION_DAYS)).astimezone(dt.UTC).date() - dt.timedelta(days=1)
        days = UsageRollupDay.objects.filter(date__lte=last, purged_at__isnull=True).order_by("date")
        for day in list(days.values_list("date", flat=True)):
            purged = _purge_runs(day, dry_run)
            for name, count in purged.items():
                counts[name] += count
            counts["days"] += 1 if purged["runs"] else 0  # days that had runs to delete
            if not dry_run:  # no run can join a rolled-up day, so the day need not be looked at again
                UsageRollupDay.objects.filter(date=day).update(purged_at=timezone.now())
    if settings.FILE_RETENTION_DAYS > 0:
        for name, count in _purge_uploads(now, dry_run).items():
            counts[name] += count
    return counts


def run_retention(now: dt.datetime | None = None, dry_run: bool = False) -> dict[str, int]:
    """Roll usage up, then purge: the janitor's periodic job. With `dry_run` nothing is kept or deleted."""
    now = now or timezone.now()
    if not dry_run:
        counts = {"rolled_up_days": rollup_usage(now), **purge_expired(now)}
        if any(counts.values()):
            log.info("retention: %s", " ".join(f"{name}={count}" for name, count in counts.items()))
        return counts
    with transaction.atomic():  # roll up for real so the purge counts are exact, then undo it all
        rolled = rollup_usage(now)
        counts = purge_expired(now, dry_run=True)
        transaction.set_rollback(True)
    return {"rolled_up_days": rolled, **counts}
