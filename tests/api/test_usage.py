"""GET /v1/usage (per day or per language, UTC days, dates inclusive) and `manage.py usage_report`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import defaultdict

import pytest
from django.core.management import CommandError, call_command

from tests.api import assert_error

UTC = dt.UTC
STATUSES = ("succeeded", "failed", "timeout", "oom", "cancelled", "error")
SUMS = ("cpu_ms", "wall_ms", "output_bytes", "artifact_bytes")
COUNTERS = ("runs", *STATUSES, *SUMS)


def _today() -> dt.date:
    return dt.datetime.now(UTC).date()


def _at(day: dt.date, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, microsecond, tzinfo=UTC)


def _zero() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


def _add(totals: dict[str, int], run: dict) -> None:
    totals["runs"] += 1
    if run["status"] in STATUSES:
        totals[run["status"]] += 1
    for name in SUMS:
        totals[name] += run.get(name) or 0  # unknown (null) figures add nothing


def _expected(runs: list[dict], start: dt.date, end: dt.date) -> tuple[dict, dict, dict]:
    """Per day, per language and total, summed by hand from the runs as made."""
    by_day: dict[str, dict[str, int]] = {}
    day = start
    while day <= end:
        by_day[day.isoformat()] = _zero()
        day += dt.timedelta(days=1)
    by_language: dict[str, dict[str, int]] = defaultdict(_zero)
    total = _zero()
    for run in runs:
        day = run["created_at"].astimezone(UTC).date()
        if start <= day <= end:
            _add(by_day[day.isoformat()], run)
            _add(by_language[run["language"]], run)
            _add(total, run)
    return by_day, dict(by_language), total


def _run(created_at, language, status, cpu_ms, wall_ms, output_bytes, artifact_bytes) -> dict:
    return {
        "created_at": created_at,
        "language": language,
        "status": status,
        "cpu_ms": cpu_ms,
        "wall_ms": wall_ms,
        "output_bytes": output_bytes,
        "artifact_bytes": artifact_bytes,
    }


@pytest.fixture
def history(alice, bob, make_run) -> dict:
    """Alice's runs on chosen UTC days (two on either side of one midnight), and Bob's on the same days."""
    today = _today()
    day = today - dt.timedelta(days=5)
    next_day = day + dt.timedelta(days=1)
    alice_runs = [
        # The first instant of `day` and the last: both belong to `day`.
        _run(_at(day), "python", "succeeded", 10, 15, 3, 0),
        _run(_at(day, 23, 59, 59, 999_999), "python", "failed", 20, 25, 5, 100),
        # Just after midnight UTC: the next day.
        _run(_at(next_day, 0, 0, 0, 1), "node", "timeout", 3000, 3100, 7, 0),
        _run(_at(next_day, 12), "go", "oom", None, 40, 0, 0),  # cpu_ms unknown: null, adds nothing
        _run(_at(next_day, 13), "python", "running", None, None, 0, 0),  # counted in runs, in no status
        _run(_at(today - dt.timedelta(days=2), 10), "python", "cancelled", 1, 2, 0, 0),
        _run(_at(today), "ruby", "error", None, None, 0, 0),
        # The first day of the default range (today - 29) is in it; the day before is not.
        _run(_at(today - dt.timedelta(days=29)), "php", "succeeded", 5, 6, 11, 2048),
        _run(_at(today - dt.timedelta(days=30), 23, 59, 59, 999_999), "php", "succeeded", 70_000, 70_000, 1, 1),
        _run(_at(today - dt.timedelta(days=400)), "python", "failed", 9, 9, 9, 9),
    ]
    bob_runs = [
        _run(_at(day, 12), "python", "succeeded", 1_000_000, 1_000_000, 1_000_000, 1_000_000),
        _run(_at(next_day, 0, 0, 1), "perl-like", "error", 5, 5, 5, 5),
        _run(_at(today), "go", "failed", 7, 7, 7, 7),
    ]
    for tenant, runs in ((alice, alice_runs), (bob, bob_runs)):
        for run in runs:
            make_run(tenant.key, **run)
    return {"today": today, "day": day, "next_day": next_day, "alice": alice_runs, "bob": bob_runs}


def _usage(tenant, **params):
    response = tenant.client.get("/v1/usage", params)
    assert response.status_code == 200, response.content
    return response.json()


def _data_by(body: dict, field: str) -> dict[str, dict[str, int]]:
    return {row[field]: {k: v for k, v in row.items() if k != field} for row in body["data"]}


# ---- the API --------------------------------------------------------------------------------------


def test_it_reports_usage_per_day_over_the_last_30_days_by_default(alice, history) -> None:
    body = _usage(alice)
    today = history["today"]
    start = today - dt.timedelta(days=29)
    assert body["object"] == "usage"
    assert body["group_by"] == "day"
    assert body["start"] == start.isoformat()
    assert body["end"] == today.isoformat()
    # Every day of the range, in order, zeros included.
    assert [row["date"] for row in body["data"]] == [(start + dt.timedelta(days=n)).isoformat() for n in range(30)]
    for row in body["data"]:
        assert set(row) == {"date", *COUNTERS}
    by_day, _, total = _expected(history["alice"], start, today)
    assert _data_by(body, "date") == by_day
    assert body["total"] == total


def test_it_puts_runs_on_their_utc_day(alice, history) -> None:
    day, next_day = history["day"], history["next_day"]
    body = _usage(alice, start=day.isoformat(), end=next_day.isoformat())
    rows = _data_by(body, "date")
    assert list(rows) == [day.isoformat(), next_day.isoformat()]
    # 00:00:00 and 23:59:59.999999 of `day`; 00:00:00.000001, 12:00 and 13:00 (running) of the next.
    assert rows[day.isoformat()] == {
        **_zero(),
        "runs": 2,
        "succeeded": 1,
        "failed": 1,
        "cpu_ms": 30,
        "wall_ms": 40,
        "output_bytes": 8,
        "artifact_bytes": 100,
    }
    assert rows[next_day.isoformat()] == {
        **_zero(),
        "runs": 3,
        "timeout": 1,
        "oom": 1,
        "cpu_ms": 3000,
        "wall_ms": 3140,
        "output_bytes": 7,
    }
    assert body["total"] == {k: rows[day.isoformat()][k] + rows[next_day.isoformat()][k] for k in COUNTERS}


def test_it_keeps_utc_days_whatever_the_server_time_zone(alice, history, settings) -> None:
    day, next_day = history["day"], history["next_day"]
    expected = _usage(alice, start=day.isoformat(), end=next_day.isoformat())
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: a local-time grouping would move every run
    assert _usage(alice, start=day.isoformat(), end=next_day.isoformat()) == expected
    settings.TIME_ZONE = "America/Adak"  # UTC-10 (UTC-9 in summer)
    assert _usage(alice, start=day.isoformat(), end=next_day.isoformat()) == expected


def test_it_reports_a_single_day(alice, history) -> None:
    day = history["day"]
    body = _usage(alice, start=day.isoformat(), end=day.isoformat())
    assert [row["date"] for row in body["data"]] == [day.isoformat()]
    assert body["total"]["runs"] == 2
    assert body["data"][0]["runs"] == 2


def test_it_reports_usage_per_language(alice, history) -> None:
    today = history["today"]
    start = today - dt.timedelta(days=29)
    body = _usage(alice, group_by="language")
    assert body["group_by"] == "language"
    _, by_language, total = _expected(history["alice"], start, today)
    assert sorted(by_language) == ["go", "node", "php", "python", "ruby"]
    assert _data_by(body, "language") == by_language
    assert by_language["python"]["runs"] == 4  # succeeded, failed, running, cancelled (not the one 400 days ago)
    assert by_language["php"] == {
        **_zero(),
        "runs": 1,
        "succeeded": 1,
        "cpu_ms": 5,
        "wall_ms": 6,
        "output_bytes": 11,
        "artifact_bytes": 2048,
    }
    assert body["total"] == total


def test_it_excludes_dates_outside_the_range(alice, history) -> None:
    today = history["today"]
    old_day = today - dt.timedelta(days=400)
    body = _usage(alice, start=old_day.isoformat(), end=old_day.isoformat())
    assert body["total"] == {
        **_zero(),
        "runs": 1,
        "failed": 1,
        "cpu_ms": 9,
        "wall_ms": 9,
        "output_bytes": 9,
        "artifact_bytes": 9,
    }
    # The day before the default range holds one big run; it is in no default report.
    before = today - dt.timedelta(days=30)
    assert _usage(alice, start=before.isoformat(), end=before.isoformat())["total"]["cpu_ms"] == 70_000
    assert _usage(alice)["total"]["cpu_ms"] < 70_000
    # A range with no runs at all.
    empty = _usage(alice, start="2001-01-01", end="2001-01-03", group_by="day")
    assert [row["date"] for row in empty["data"]] == ["2001-01-01", "2001-01-02", "2001-01-03"]
    assert all({k: v for k, v in row.items() if k != "date"} == _zero() for row in empty["data"])
    assert empty["total"] == _zero()
    assert _usage(alice, start="2001-01-01", end="2001-01-03", group_by="language")["data"] == []


def test_it_defaults_start_to_29_days_before_a_given_end(alice, history) -> None:
    end = history["next_day"]
    body = _usage(alice, end=end.isoformat())
    assert body["start"] == (end - dt.timedelta(days=29)).isoformat()
    assert len(body["data"]) == 30


def test_it_accepts_a_range_of_366_days(alice, history) -> None:
    today = history["today"]
    start = today - dt.timedelta(days=365)
    body = _usage(alice, start=start.isoformat(), end=today.isoformat())
    assert len(body["data"]) == 366
    assert body["total"] == _expected(history["alice"], start, today)[2]


def test_it_validates_ownership(alice, bob, history) -> None:
    today = history["today"]
    start = today - dt.timedelta(days=365)
    range_ = {"start": start.isoformat(), "end": today.isoformat()}
    mine = _usage(alice, **range_, group_by="language")
    assert "perl-like" not in {row["language"] for row in mine["data"]}
    assert mine["total"] == _expected(history["alice"], start, today)[2]
    theirs = _usage(bob, **range_, group_by="language")
    assert {row["language"] for row in theirs["data"]} == {"python", "perl-like", "go"}
    assert theirs["total"] == _expected(history["bob"], start, today)[2]
    day = history["day"].isoformat()
    assert _usage(bob, start=day, end=day)["total"]["runs"] == 1


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start": "2024-13-01"}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2024-02-30"}, "end"),
        ({"end": "2024-2-1"}, "end"),
        ({"end": "2024-02-01T00:00"}, "end"),
        ({"start": "2024-03-02", "end": "2024-03-01"}, "start"),
        ({"start": "2023-01-01", "end": "2024-01-02"}, "start"),  # 367 days
        ({"group_by": "week"}, "group_by"),
        ({"group_by": "key"}, "group_by"),
    ],
)
def test_it_rejects_bad_parameters(alice, params, param) -> None:
    response = alice.client.get("/v1/usage", params)
    assert_error(response, 400, "invalid_request_error", param=param)


def test_it_requires_a_key(anonymous, db) -> None:
    assert_error(anonymous.get("/v1/usage"), 401, "authentication_error")


# ---- usage_report ---------------------------------------------------------------------------------


def _report(*args: str) -> str:
    out = io.StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


def _api_total(tenants, start: dt.date, end: dt.date) -> dict[str, int]:
    total = _zero()
    for tenant in tenants:
        body = _usage(tenant, start=start.isoformat(), end=end.isoformat())
        for k in COUNTERS:
            total[k] += body["total"][k]
    return total


def test_it_reports_the_same_totals_as_the_api_in_json(alice, bob, history) -> None:
    start, end = history["today"] - dt.timedelta(days=40), history["today"]
    report = json.loads(_report("--since", start.isoformat(), "--until", end.isoformat(), "--format", "json"))
    assert report["start"] == start.isoformat() and report["end"] == end.isoformat()
    assert report["total"] == _api_total([alice, bob], start, end)
    by_hand = _expected(history["alice"] + history["bob"], start, end)[2]
    assert report["total"] == by_hand
    # The rows add up to the total, and each key's rows to that key's usage.
    for k in COUNTERS:
        assert sum(row[k] for row in report["data"]) == report["total"][k]
    alice_rows = [row for row in report["data"] if row["key"] == "alice"]
    api_days = {
        row["date"]: row for row in _usage(alice, start=start.isoformat(), end=end.isoformat())["data"] if row["runs"]
    }
    assert {row["date"]: {k: row[k] for k in COUNTERS} for row in alice_rows} == {
        d: {k: row[k] for k in COUNTERS} for d, row in api_days.items()
    }
    assert {row["key_prefix"] for row in alice_rows} == {alice.key.prefix}


def test_it_reports_one_key(alice, bob, history) -> None:
    start, end = history["day"], history["today"]
    for selector in ("alice", alice.key.prefix):
        report = json.loads(
            _report("--since", start.isoformat(), "--until", end.isoformat(), "--format", "json", "--key", selector)
        )
        assert report["total"] == _api_total([alice], start, end)
        assert {row["key"] for row in report["data"]} == {"alice"}


def test_it_reports_the_same_totals_as_the_api_in_csv(alice, bob, history) -> None:
    start, end = history["day"], history["next_day"]
    text = _report("--since", start.isoformat(), "--until", end.isoformat(), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    total_rows = [row for row in rows if row["key"] == "TOTAL"]
    assert len(total_rows) == 1
    assert {k: int(total_rows[0][k]) for k in COUNTERS} == _api_total([alice, bob], start, end)
    per_key = [row for row in rows if row["key"] != "TOTAL"]
    assert {(row["key"], row["date"]) for row in per_key} == {
        ("alice", start.isoformat()),
        ("alice", end.isoformat()),
        ("bob", start.isoformat()),
        ("bob", end.isoformat()),
    }
    key_only = list(
        csv.DictReader(
            io.StringIO(
                _report("--since", start.isoformat(), "--until", end.isoformat(), "--format", "csv", "--key", "bob")
            )
        )
    )
    total = next(row for row in key_only if row["key"] == "TOTAL")
    assert {k: int(total[k]) for k in COUNTERS} == _api_total([bob], start, end)


def test_it_prints_a_table_by_default(alice, history) -> None:
    start, end = history["day"], history["next_day"]
    text = _report("--since", start.isoformat(), "--until", end.isoformat(), "--key", "alice")
    lines = text.strip().splitlines()
    assert lines[0].split()[:3] == ["key", "date", "runs"]
    assert lines[-1].split()[0] == "TOTAL"
    assert lines[-1].split()[2] == str(_api_total([alice], start, end)["runs"])


def test_it_rejects_an_unknown_key_in_the_report(alice, history) -> None:
    with pytest.raises(CommandError, match="nobody"):
        _report("--key", "nobody", "--format", "json")


def test_it_rejects_a_bad_range_in_the_report(alice) -> None:
    with pytest.raises(CommandError):
        _report("--since", "2024-03-02", "--until", "2024-03-01")
    with pytest.raises(CommandError):
        _report("--since", "not-a-date")
    with pytest.raises(CommandError):
        _report("--since", "2020-01-01", "--until", "2024-01-01")
