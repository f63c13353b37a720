"""Retention (runs.retention, `manage.py retention`): the daily usage roll-up, then deleting expired runs,
their artifacts (rows and stored blobs) and old uploads, with every usage figure unchanged afterwards:
GET /v1/usage per day and per language, the admin usage page and its CSV, and usage_report."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from files.models import File
from runs import retention as retention_module
from runs.models import ApiKey, Run, UsageDaily, UsageRollupDay
from runs.retention import ROLLUP_LOCK_ID, last_complete_day, purge_expired, rollup_usage, run_retention
from runs.usage import COLUMNS
from tests.api.conftest import Tenant

UTC = dt.UTC


def _today() -> dt.date:
    return timezone.now().astimezone(UTC).date()


def _at(day: dt.date, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, microsecond, tzinfo=UTC)


def _artifact(run: Run, name: str = "a.txt", content: bytes = b"artifact bytes") -> File:
    record = File(
        owner=run.owner,
        filename=name,
        bytes=len(content),
        purpose=File.Purpose.RUN_ARTIFACT,
        content_type="text/plain",
        sha256="0" * 64,
        run=run,
        path=f"outputs/{name}",
        created_at=run.created_at,
    )
    record.blob.save(record.public_id, ContentFile(content), save=False)
    record.save()
    return record


def _upload(owner: ApiKey, created_at: dt.datetime, purpose: str = File.Purpose.USER_DATA) -> File:
    record = File(
        owner=owner,
        filename="data.csv",
        bytes=4,
        purpose=purpose,
        content_type="text/csv",
        sha256="0" * 64,
        created_at=created_at,
    )
    record.blob.save(record.public_id, ContentFile(b"a,b\n"), save=False)
    record.save()
    return record


@pytest.fixture
def staff(db: None) -> Client:
    User.objects.create_superuser("operator", "op@example.com", "correct horse battery staple")
    client = Client()
    assert client.login(username="operator", password="correct horse battery staple")
    return client


@pytest.fixture
def retention(settings: Any) -> Any:
    settings.RUN_RETENTION_DAYS = 30
    settings.FILE_RETENTION_DAYS = 0
    return settings


@pytest.fixture
def history(alice: Tenant, bob: Tenant, make_run: Callable[..., Run], retention: Any) -> dict[str, Any]:
    """Runs of Alice and Bob on five old UTC days (past RUN_RETENTION_DAYS, two of them on either side of
    one midnight, some with artifacts), a recent day (rolled up, kept) and today (not over: counted live)."""
    today = _today()
    old = [today - dt.timedelta(days=45 - n) for n in range(5)]  # 45 .. 41 days ago
    recent = today - dt.timedelta(days=3)
    made: list[Run] = []

    def run(tenant: Tenant, created_at: dt.datetime, language: str, status: str, **usage: Any) -> Run:
        made.append(make_run(tenant.key, created_at=created_at, language=language, status=status, **usage))
        return made[-1]

    usage = {"cpu_ms": 10, "wall_ms": 15, "output_bytes": 3, "artifact_bytes": 0}
    first = run(alice, _at(old[0]), "python", "succeeded", **{**usage, "artifact_bytes": 14})
    last = run(alice, _at(old[0], 23, 59, 59, 999_999), "python", "failed", **{**usage, "artifact_bytes": 28})
    run(alice, _at(old[1], 0, 0, 0, 1), "node", "timeout", cpu_ms=3000, wall_ms=3100, output_bytes=7)
    run(alice, _at(old[1], 12), "go", "oom", cpu_ms=None, wall_ms=40)  # an unknown figure adds nothing
    run(alice, _at(old[2], 8), "python", "cancelled", cpu_ms=None, wall_ms=None)
    run(alice, _at(old[3], 9), "ruby", "error", cpu_ms=None, wall_ms=None)
    run(alice, _at(old[4], 10), "php", "succeeded", **usage)
    run(bob, _at(old[0], 12), "python", "succeeded", cpu_ms=1_000_000, wall_ms=1_000_000, output_bytes=10**12)
    bobs = run(bob, _at(old[1], 0, 0, 1), "perl-like", "error", **{**usage, "artifact_bytes": 14})
    run(bob, _at(old[4], 23), "go", "failed", **usage)
    run(alice, _at(recent, 7), "python", "succeeded", **usage)
    run(bob, _at(recent, 8), "node", "failed", **usage)
    run(alice, timezone.now() - dt.timedelta(seconds=1), "python", "succeeded", **usage)
    run(alice, timezone.now() - dt.timedelta(seconds=1), "python", "running", cpu_ms=None, wall_ms=None)
    run(bob, timezone.now() - dt.timedelta(seconds=1), "go", "queued", cpu_ms=None, wall_ms=None)
    artifacts = [_artifact(first), _artifact(last, "b.txt"), _artifact(last, "c.txt"), _artifact(bobs)]
    return {"today": today, "old": old, "recent": recent, "runs": made, "artifacts": artifacts}


def _report(*args: str) -> str:
    out = io.StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


def _outputs(tenants: list[Tenant], staff: Client, history: dict[str, Any]) -> dict[str, Any]:
    """Every usage output over ranges covering purged, rolled-up and live days."""
    today, old = history["today"], history["old"]
    ranges = [
        (today - dt.timedelta(days=60), today),
        (old[0], old[0]),
        (old[1], old[3]),
        (old[4], history["recent"]),
        (history["recent"], today),
    ]
    outputs: dict[str, Any] = {}
    for start, end in ranges:
        since, until = start.isoformat(), end.isoformat()
        for tenant in tenants:
            for group_by in ("day", "language"):
                response = tenant.client.get("/v1/usage", {"start": since, "end": until, "group_by": group_by})
                assert response.status_code == 200, response.content
                outputs[f"api {tenant.key.label} {since} {until} {group_by}"] = response.json()
        for fmt in ("csv", "json", "table"):
            outputs[f"report {since} {until} {fmt}"] = _report("--since", since, "--until", until, "--format", fmt)
        for key in ["", *(str(t.key.pk) for t in tenants)]:
            query = f"start={since}&end={until}&key={key}"
            csv_response = staff.get(f"/admin/usage/?{query}&format=csv")
            assert csv_response.status_code == 200
            outputs[f"admin csv {query}"] = csv_response.content.decode()
            page = staff.get(f"/admin/usage/?{query}")
            assert page.status_code == 200
            outputs[f"admin page {query}"] = re.sub(
                r'name="csrfmiddlewaretoken" value="[^"]*"', "", page.content.decode()
            )
    return outputs


def _blob_names(records: list[File]) -> list[str]:
    return [record.blob.name for record in records]


def _rolled_up_totals() -> dict[str, int]:
    sums = UsageDaily.objects.aggregate(**{c: Sum(c) for c in COLUMNS})
    return {c: int(sums[c] or 0) for c in COLUMNS}


# ---- the roll-up keeps every figure -------------------------------------------------------------------


def test_it_deletes_expired_runs_and_keeps_every_usage_figure(
    alice: Tenant, bob: Tenant, staff: Client, history: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches and chunks, so the loops over a backlog run several times.
    monkeypatch.setattr(retention_module, "BATCH_SIZE", 2)
    monkeypatch.setattr(retention_module, "ROLLUP_CHUNK_DAYS", 7)
    before = _outputs([alice, bob], staff, history)
    # Sanity: the figures are not trivial (the main range holds every run of both keys).
    main = before[f"api alice {(history['today'] - dt.timedelta(days=60)).isoformat()} {history['today']} day"]
    assert main["total"]["runs"] == 10 and main["total"]["cpu_ms"] == 3000 + 10 * 5
    blobs = _blob_names(history["artifacts"])
    assert all(default_storage.exists(name) for name in blobs)
    old_ids = [r.pk for r in history["runs"] if r.created_at.date() in history["old"]]
    kept_ids = [r.pk for r in history["runs"] if r.pk not in old_ids]

    counts = run_retention()

    # Every complete day from the first run's to yesterday is rolled up; the five old ones are purged.
    assert counts["rolled_up_days"] == (last_complete_day(timezone.now()) - history["old"][0]).days + 1
    assert counts == {
        **counts,
        "days": 5,
        "runs": len(old_ids),
        "artifacts": 4,
        "files": 0,
        "blobs": 4,
    }
    assert not Run.objects.filter(pk__in=old_ids).exists()
    assert set(Run.objects.values_list("pk", flat=True)) == set(kept_ids)
    assert not File.objects.filter(pk__in=[a.pk for a in history["artifacts"]]).exists()
    assert not any(default_storage.exists(name) for name in blobs)
    assert UsageRollupDay.objects.filter(date__in=history["old"], purged_at__isnull=False).count() == 5
    # The recent day is rolled up but its runs are kept; today is not over and stays live.
    assert UsageRollupDay.objects.get(date=history["recent"]).purged_at is None
    assert not UsageRollupDay.objects.filter(date__gte=history["today"]).exists()

    after = _outputs([alice, bob], staff, history)
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert after[name] == value, name


def test_it_is_idempotent(alice: Tenant, bob: Tenant, staff: Client, history: dict[str, Any]) -> None:
    first = run_retention()
    assert first["runs"] > 0
    rows = list(UsageDaily.objects.order_by("id").values())
    days = list(UsageRollupDay.objects.order_by("id").values("date", "runs", "purged_at"))
    outputs = _outputs([alice, bob], staff, history)

    assert run_retention() == dict.fromkeys(first, 0)
    assert rollup_usage() == 0
    assert purge_expired() == {"days": 0, "runs": 0, "artifacts": 0, "files": 0, "blobs": 0}
    assert list(UsageDaily.objects.order_by("id").values()) == rows
    assert list(UsageRollupDay.objects.order_by("id").values("date", "runs", "purged_at")) == days
    assert _outputs([alice, bob], staff, history) == outputs


def test_it_never_purges_a_day_that_is_not_rolled_up(history: dict[str, Any]) -> None:
    # Purging alone, before any roll-up, deletes nothing: the runs are still usage's only record.
    assert purge_expired() == {"days": 0, "runs": 0, "artifacts": 0, "files": 0, "blobs": 0}
    assert Run.objects.count() == len(history["runs"])
    assert all(default_storage.exists(name) for name in _blob_names(history["artifacts"]))


def test_it_waits_for_a_day_with_an_unfinished_run(
    alice: Tenant, bob: Tenant, staff: Client, history: dict[str, Any], make_run: Callable[..., Run]
) -> None:
    stuck_day = history["old"][2]
    stuck = make_run(bob.key, created_at=_at(stuck_day, 23), language="go", status="running", cpu_ms=None)
    same_day = [r.pk for r in history["runs"] if r.created_at.date() == stuck_day]
    assert same_day
    before = _outputs([alice, bob], staff, history)

    counts = run_retention()

    assert counts["days"] == 4  # the other old days
    assert not UsageRollupDay.objects.filter(date=stuck_day).exists()
    assert not UsageDaily.objects.filter(date=stuck_day).exists()
    assert Run.objects.filter(pk__in=[*same_day, stuck.pk]).count() == len(same_day) + 1
    assert _outputs([alice, bob], staff, history) == before

    # Once the run has finished, the next pass rolls the day up with its final figures and purges it.
    Run.objects.filter(pk=stuck.pk).update(status="succeeded", cpu_ms=77, wall_ms=88, completed_at=timezone.now())
    day = stuck_day.isoformat()
    finished = bob.client.get("/v1/usage", {"start": day, "end": day}).json()
    assert finished["total"]["succeeded"] == 1 and finished["total"]["cpu_ms"] == 77
    counts = run_retention()
    assert counts["rolled_up_days"] == 1 and counts["days"] == 1 and counts["runs"] == len(same_day) + 1
    assert not Run.objects.filter(pk=stuck.pk).exists()
    assert bob.client.get("/v1/usage", {"start": day, "end": day}).json() == finished


def test_it_keeps_runs_forever_with_zero_retention(
    alice: Tenant, bob: Tenant, staff: Client, history: dict[str, Any], retention: Any
) -> None:
    retention.RUN_RETENTION_DAYS = 0
    before = _outputs([alice, bob], staff, history)
    far_ahead = timezone.now() + dt.timedelta(days=3650)

    counts = run_retention(now=far_ahead)

    assert counts["rolled_up_days"] > 0  # usage is still rolled up
    assert counts["runs"] == counts["artifacts"] == counts["blobs"] == counts["days"] == 0
    assert Run.objects.count() == len(history["runs"])
    assert File.objects.count() == len(history["artifacts"])
    assert all(default_storage.exists(name) for name in _blob_names(history["artifacts"]))
    assert _outputs([alice, bob], staff, history) == before


def test_it_purges_every_day_when_now_is_far_ahead(alice: Tenant, bob: Tenant, history: dict[str, Any]) -> None:
    # Every run finished, then a clock far ahead: all days are over and expired, and nothing is double counted.
    Run.objects.filter(status__in=["queued", "running"]).update(status="error", completed_at=timezone.now())
    start, end = (history["today"] - dt.timedelta(days=60)).isoformat(), history["today"].isoformat()
    before = {
        (t.key.label, g): t.client.get("/v1/usage", {"start": start, "end": end, "group_by": g}).json()
        for t in (alice, bob)
        for g in ("day", "language")
    }
    counts = run_retention(now=timezone.now() + dt.timedelta(days=100))
    assert counts["runs"] == len(history["runs"])
    assert not Run.objects.exists() and not File.objects.exists()
    assert _rolled_up_totals()["runs"] == len(history["runs"])
    after = {
        (t.key.label, g): t.client.get("/v1/usage", {"start": start, "end": end, "group_by": g}).json()
        for t in (alice, bob)
        for g in ("day", "language")
    }
    assert after == before


def test_it_validates_ownership(alice: Tenant, bob: Tenant, history: dict[str, Any]) -> None:
    run_retention()
    day = history["old"][1].isoformat()
    alices = alice.client.get("/v1/usage", {"start": day, "end": day, "group_by": "language"}).json()
    bobs = bob.client.get("/v1/usage", {"start": day, "end": day, "group_by": "language"}).json()
    assert [row["language"] for row in alices["data"]] == ["go", "node"]
    assert [row["language"] for row in bobs["data"]] == ["perl-like"]
    assert alices["total"]["runs"] == 2 and bobs["total"]["runs"] == 1


# ---- uploads ------------------------------------------------------------------------------------------


def test_uploaded_files_follow_their_own_setting(
    alice: Tenant, bob: Tenant, history: dict[str, Any], retention: Any, make_run: Callable[..., Run]
) -> None:
    now = timezone.now()
    old_upload = _upload(alice.key, now - dt.timedelta(days=400))
    old_assistants = _upload(bob.key, now - dt.timedelta(days=400), purpose=File.Purpose.ASSISTANTS)
    new_upload = _upload(alice.key, now - dt.timedelta(days=2))
    in_use = _upload(bob.key, now - dt.timedelta(days=400))
    make_run(bob.key, status="queued", input_files=[{"file_id": in_use.public_id, "path": "in.csv"}])
    recent_artifact = _artifact(Run.objects.get(created_at__date=history["recent"], owner=alice.key))

    # FILE_RETENTION_DAYS=0 (the default): uploads are kept whatever their age.
    assert run_retention()["files"] == 0
    assert File.objects.filter(pk__in=[old_upload.pk, old_assistants.pk, new_upload.pk, in_use.pk]).count() == 4

    retention.FILE_RETENTION_DAYS = 7
    counts = run_retention()
    assert counts["files"] == 2 and counts["blobs"] == 2
    assert not File.objects.filter(pk__in=[old_upload.pk, old_assistants.pk]).exists()
    assert not default_storage.exists(old_upload.blob.name)
    assert not default_storage.exists(old_assistants.blob.name)
    # A recent upload, an input of a queued run and a kept run's artifact stay.
    for record in (new_upload, in_use, recent_artifact):
        assert File.objects.filter(pk=record.pk).exists()
        assert default_storage.exists(record.blob.name)


# ---- concurrency ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_rollups_do_not_double_count(make_run: Callable[..., Run], retention: Any) -> None:
    alice, _ = ApiKey.create_with_token("alice")
    bob, _ = ApiKey.create_with_token("bob")
    today = _today()
    for n in range(1, 41):
        for key, language in ((alice, "python"), (bob, "go"), (alice, "node")):
            make_run(key, created_at=_at(today - dt.timedelta(days=n), n % 24), language=language, cpu_ms=n)
    expected_days = 40
    now = _at(today, 12)  # yesterday is over, whatever the time of the test
    barrier = threading.Barrier(4)
    results: list[int] = []
    errors: list[BaseException] = []

    def roll() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(rollup_usage(now))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=roll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(results) == expected_days  # each day rolled up once, by whichever caller got to it
    assert UsageRollupDay.objects.count() == expected_days
    totals = _rolled_up_totals()
    assert totals["runs"] == totals["succeeded"] == 120
    assert totals["cpu_ms"] == 3 * sum(range(1, 41))


@pytest.mark.django_db(transaction=True)
def test_a_rollup_waits_for_the_one_in_progress(make_run: Callable[..., Run], retention: Any) -> None:
    key, _ = ApiKey.create_with_token("alice")
    yesterday = _today() - dt.timedelta(days=1)
    make_run(key, created_at=_at(yesterday, 6))
    now = _at(_today(), 12)
    started = threading.Event()
    results: list[int] = []

    def second() -> None:
        try:
            started.wait(timeout=30)
            results.append(rollup_usage(now))
        finally:
            connection.close()

    thread = threading.Thread(target=second)
    with transaction.atomic():  # hold the roll-up's lock, as a caller in the middle of its work does
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK_ID])
        thread.start()
        started.set()
        thread.join(timeout=1)
        assert thread.is_alive()  # blocked on the lock, not rolling up alongside
        assert rollup_usage(now) == 1  # the holder rolls the day up (the lock is re-entrant for it)
    thread.join(timeout=30)
    assert results == [0]  # after the holder committed, the day is done
    assert UsageDaily.objects.get(date=yesterday).runs == 1


def test_the_unique_constraints_back_the_lock_up(history: dict[str, Any]) -> None:
    run_retention()
    row = UsageDaily.objects.first()
    assert row is not None
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageDaily.objects.create(owner=row.owner, date=row.date, language=row.language)
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageRollupDay.objects.create(date=row.date)


# ---- the command ----------------------------------------------------------------------------------------


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command("retention", *args, stdout=out)
    return out.getvalue()


def test_the_command_reports_a_dry_run_and_then_does_it(history: dict[str, Any]) -> None:
    runs, files = Run.objects.count(), File.objects.count()
    dry = json.loads(_command("--dry-run", "--format", "json"))
    assert dry["dry_run"] is True
    assert dry["runs"] == 10 and dry["artifacts"] == 4 and dry["days"] == 5 and dry["rolled_up_days"] > 0
    # Nothing changed.
    assert Run.objects.count() == runs and File.objects.count() == files
    assert not UsageRollupDay.objects.exists() and not UsageDaily.objects.exists()
    assert all(default_storage.exists(name) for name in _blob_names(history["artifacts"]))

    text = _command()
    assert f"{dry['rolled_up_days']} day(s) of usage were rolled up." in text
    assert "10 run(s) from 5 day(s) and 4 artifact(s) were deleted (runs kept 30 days)" in text
    assert "0 uploaded file(s) were deleted (kept forever)" in text
    assert Run.objects.count() == runs - 10


def test_the_command_can_only_roll_up(history: dict[str, Any]) -> None:
    out = json.loads(_command("--rollup-only", "--format", "json"))
    assert set(out) == {"dry_run", "rolled_up_days"} and out["rolled_up_days"] > 0
    assert Run.objects.count() == len(history["runs"])
    assert UsageRollupDay.objects.count() == out["rolled_up_days"]


def test_the_admin_shows_the_roll_up_read_only(staff: Client, history: dict[str, Any]) -> None:
    run_retention()
    row = UsageDaily.objects.filter(date=history["old"][0]).order_by("owner", "language").first()
    assert row is not None
    for path in ("/admin/runs/usagedaily/", "/admin/runs/usagerollupday/"):
        page = staff.get(path)
        assert page.status_code == 200, path
        assert history["old"][0].strftime("%Y") in page.content.decode()
    assert staff.get("/admin/runs/usagedaily/add/").status_code == 403
    assert staff.get(f"/admin/runs/usagedaily/{row.pk}/delete/").status_code == 403
    detail = staff.get(f"/admin/runs/usagedaily/{row.pk}/change/")
    assert detail.status_code == 200 and b'name="runs"' not in detail.content  # no editable field
