"""The operator's admin through Django's test client: keys (token once, revoke), runs (filters, search,
read-only detail with working signed artifact links), files, the usage page (same figures as the API
and usage_report, CSV), static files served by WhiteNoise."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Callable
from html import unescape as html_unescape
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from runs.models import ApiKey, Run, hash_token
from tests.api.conftest import Tenant, make_tenant


@pytest.fixture
def staff(db: None) -> Client:
    User.objects.create_superuser("operator", "op@example.com", "correct horse battery staple")
    client = Client()
    assert client.login(username="operator", password="correct horse battery staple")
    return client


def _local(url: str) -> str:
    """A signed link from the page (HTML-escaped, on PUBLIC_BASE_URL) as a path for the test client."""
    parts = urlsplit(html_unescape(url))
    return f"{parts.path}?{parts.query}"


def _token_from(html: str) -> str:
    match = re.search(r'<code id="new-token"[^>]*>([^<]+)</code>', html)
    assert match, html
    return match.group(1)


def test_admin_pages_need_a_staff_login(db: None) -> None:
    client = Client()
    for path in ("/admin/", "/admin/runs/run/", "/admin/runs/apikey/add/", "/admin/usage/"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], path
    User.objects.create_user("visitor", password="pw-visitor-123")
    assert client.login(username="visitor", password="pw-visitor-123")
    response = client.get("/admin/usage/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_creating_a_key_shows_its_token_once(staff: Client) -> None:
    response = staff.post(
        "/admin/runs/apikey/add/",
        {"label": "teaching-site", "rps": "5", "burst": "10", "max_concurrent_runs": "2", "is_active": "on"},
    )
    assert response.status_code == 200, response.content[:2000]
    assert "no-store" in response["Cache-Control"]
    token = _token_from(response.content.decode())
    key = ApiKey.objects.get(label="teaching-site")
    assert key.token_hash == hash_token(token) and token.startswith(key.prefix)
    assert (key.rps, key.burst, key.max_concurrent_runs, key.source) == (5.0, 10, 2, ApiKey.Source.ADMIN)
    # Never again: not on the change page, not in the list, not in the database.
    for path in (f"/admin/runs/apikey/{key.pk}/change/", "/admin/runs/apikey/"):
        assert token not in staff.get(path).content.decode()
    assert not ApiKey.objects.filter(token_hash=token).exists()
    # And it works against the API.
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get("/v1/runs").status_code == 200


def test_revoking_keys_stops_their_tokens(staff: Client) -> None:
    tenant = make_tenant("to-revoke")
    assert tenant.client.get("/v1/runs").status_code == 200
    response = staff.post(
        "/admin/runs/apikey/", {"action": "revoke", "_selected_action": [str(tenant.key.pk)]}, follow=True
    )
    assert response.status_code == 200
    assert "Revoked 1 key(s)." in response.content.decode()
    tenant.key.refresh_from_db()
    assert tenant.key.revoked_at is not None and not tenant.key.is_active
    assert tenant.client.get("/v1/runs").status_code == 401
    # Revoked stays revoked: the change form no longer offers is_active.
    page = staff.get(f"/admin/runs/apikey/{tenant.key.pk}/change/").content.decode()
    assert 'name="is_active"' not in page


def test_the_run_list_filters_by_status_language_key_and_date(
    staff: Client, alice: Tenant, bob: Tenant, make_run: Callable[..., Run]
) -> None:
    ok = make_run(alice.key, status="succeeded", metadata={"course": "algebra-101"})
    bad = make_run(alice.key, status="failed", language="ruby")
    bobs = make_run(bob.key, status="timeout")
    old = make_run(bob.key, status="succeeded", created_at=timezone.now() - dt.timedelta(days=40))

    def listed(query: str) -> set[str]:
        response = staff.get("/admin/runs/run/" + query)
        assert response.status_code == 200
        return set(re.findall(r"run_[A-Za-z0-9]+", response.content.decode())) & {
            r.public_id for r in (ok, bad, bobs, old)
        }

    assert listed("") == {ok.public_id, bad.public_id, bobs.public_id, old.public_id}
    assert listed("?status__exact=failed") == {bad.public_id}
    assert listed("?language=ruby") == {bad.public_id}
    assert listed(f"?owner__id__exact={bob.key.pk}") == {bobs.public_id, old.public_id}
    week_ago = dt.datetime.combine(timezone.now().date() - dt.timedelta(days=7), dt.time.min, tzinfo=dt.UTC)
    assert listed("?" + urlencode({"created_at__gte": str(week_ago)})) == {
        ok.public_id,
        bad.public_id,
        bobs.public_id,
    }
    assert listed(f"?q={bad.public_id}") == {bad.public_id}
    assert listed("?q=algebra-101") == {ok.public_id}


def test_the_run_detail_is_read_only_and_its_artifact_links_work(staff: Client, alice: Tenant, worker: Any) -> None:
    code = "import sys\nopen('outputs/answer.txt', 'w').write('42\\n')\nprint('to stdout'); print('to stderr', file=sys.stderr)\n"
    response = alice.post_run(code=code, stdin="some input", metadata={"lesson": "7"})
    assert response.status_code == 200, response.content
    run = Run.objects.get(public_id=response.json()["id"])
    page = staff.get(f"/admin/runs/run/{run.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for needle in (
        "open(&#x27;outputs/answer.txt&#x27;",
        "some input",
        "to stdout",
        "to stderr",
        "timeout_ms",
        "wall_ms",
        "lesson",
    ):
        assert needle in html, needle
    assert 'name="_save"' not in html and 'type="submit"' not in html.split('id="content-main"')[1].split("</form>")[0]
    links = re.findall(r'<a href="([^"]+)" data-testid="artifact-link">outputs/answer.txt</a>', html)
    assert len(links) == 1, html
    download = Client().get(_local(links[0]))
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"42\n"  # type: ignore[attr-defined]
    # Nobody edits or deletes runs here (the API deletes a run with its stored artifacts).
    assert staff.post(f"/admin/runs/run/{run.pk}/change/", {}).status_code == 403
    assert staff.get(f"/admin/runs/run/{run.pk}/delete/").status_code == 403
    assert staff.get("/admin/runs/run/add/").status_code == 403


def test_files_are_listed_with_a_signed_download(staff: Client, alice: Tenant) -> None:
    uploaded = alice.upload(b"a,b\n1,2\n", filename="table.csv")
    html = staff.get("/admin/files/file/").content.decode()
    assert uploaded["id"] in html and "table.csv" in html
    from files.models import File

    pk = File.objects.get(public_id=uploaded["id"]).pk
    detail = staff.get(f"/admin/files/file/{pk}/change/").content.decode()
    [link] = re.findall(r'<a href="([^"]+)" data-testid="file-download">', detail)
    response = Client().get(_local(link))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"a,b\n1,2\n"  # type: ignore[attr-defined]


def _usage_command(start: str, end: str, fmt: str) -> str:
    out = io.StringIO()
    call_command("usage_report", "--since", start, "--until", end, "--format", fmt, stdout=out)
    return out.getvalue()


def test_the_usage_page_agrees_with_the_api_and_the_command(
    staff: Client, alice: Tenant, bob: Tenant, make_run: Callable[..., Run]
) -> None:
    today = timezone.now().astimezone(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    at_noon = dt.datetime.combine(yesterday, dt.time(12), tzinfo=dt.UTC)
    make_run(alice.key, status="succeeded", cpu_ms=30, wall_ms=50, output_bytes=7, created_at=at_noon)
    make_run(alice.key, status="oom", cpu_ms=100, wall_ms=120, created_at=at_noon)
    make_run(alice.key, status="failed", cpu_ms=5, wall_ms=9, artifact_bytes=1000)
    make_run(bob.key, status="timeout", cpu_ms=1000, wall_ms=1000)
    make_run(bob.key, status="succeeded", created_at=at_noon - dt.timedelta(days=10))  # outside the range
    start, end = yesterday.isoformat(), today.isoformat()

    page = staff.get(f"/admin/usage/?start={start}&end={end}")
    assert page.status_code == 200
    html = page.content.decode()
    total_cells = dict(re.findall(r'<td class="num" data-column="(\w+)">(\d+)</td>', html))
    command_total = json.loads(_usage_command(start, end, "json"))["total"]
    assert {k: int(v) for k, v in total_cells.items()} == command_total
    assert command_total["runs"] == 4 and command_total["oom"] == 1 and command_total["cpu_ms"] == 1135

    # Per key, the page's figures are the key's own GET /v1/usage totals.
    for tenant in (alice, bob):
        api_total = tenant.client.get(f"/v1/usage?start={start}&end={end}").json()["total"]
        row = re.search(rf"<tr><td>{tenant.key.label} \(.*?</tr>", html.split('id="usage-per-key"')[1])
        assert row is not None
        cells = [int(v) for v in re.findall(r'<td class="num">(\d+)</td>', row.group(0))]
        assert cells == [
            api_total[c]
            for c in (
                "runs",
                "succeeded",
                "failed",
                "timeout",
                "oom",
                "cancelled",
                "error",
                "cpu_ms",
                "wall_ms",
                "output_bytes",
                "artifact_bytes",
            )
        ]

    # The chart is server-rendered SVG with one bar segment per (day, status) that has runs.
    segments = re.findall(r'<rect [^>]*data-date="([\d-]+)" data-status="(\w+)" data-count="(\d+)"', html)
    assert sorted(segments) == sorted(
        [(start, "succeeded", "1"), (start, "oom", "1"), (end, "failed", "1"), (end, "timeout", "1")]
    )

    # CSV export: byte for byte what usage_report --format csv prints.
    csv_response = staff.get(f"/admin/usage/?start={start}&end={end}&format=csv")
    assert csv_response["Content-Type"].startswith("text/csv")
    assert "attachment" in csv_response["Content-Disposition"]
    assert csv_response.content.decode() == _usage_command(start, end, "csv")

    # One key only.
    only_bob = staff.get(f"/admin/usage/?start={start}&end={end}&key={bob.key.pk}").content.decode()
    assert re.findall(r'data-column="runs">(\d+)<', only_bob) == ["1"]


def test_the_usage_page_explains_a_bad_range(staff: Client) -> None:
    response = staff.get("/admin/usage/?start=2026-02-30&end=2026-03-01")
    assert response.status_code == 200
    assert "must be a date as YYYY-MM-DD" in response.content.decode()
    response = staff.get("/admin/usage/?start=2026-03-02&end=2026-03-01")
    assert "must not be after" in response.content.decode()
    response = staff.get("/admin/usage/?key=999999")
    assert "No API key with id" in response.content.decode()


def test_static_files_are_served_without_debug_tooling(db: None) -> None:
    # WhiteNoise answers, not Django's DEBUG-only static view (which the test client never reaches).
    response = Client().get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:200]  # type: ignore[attr-defined]
