"""The admin in a real browser: the run list filtered by status, the usage page showing the run just
made from the playground, and a new API key's token shown once."""

from __future__ import annotations

import re
from typing import Any

from runs.models import ApiKey, Run, hash_token
from tests.browser.test_playground import run_program


def test_the_run_list_filters_by_status(playground: Any) -> None:
    assert run_program(playground, "python", "print('fine')\n") == "succeeded"
    assert run_program(playground, "python", "raise SystemExit(3)\n") == "failed"
    ok = Run.objects.get(status="succeeded")
    failed = Run.objects.get(status="failed")

    playground.goto("/admin/runs/run/")
    playground.wait_for_selector("#result_list")
    assert {ok.public_id, failed.public_id} <= set(re.findall(r"run_\w+", playground.inner_text("#result_list")))
    # The status filter in the sidebar, clicked like an operator would.
    playground.locator("#changelist-filter").get_by_role("link", name="Failed", exact=True).click()
    playground.wait_for_url(re.compile(r"status__exact=failed"))
    listed = set(re.findall(r"run_\w+", playground.inner_text("#result_list")))
    assert listed == {failed.public_id}

    # The read-only detail page shows the program and its output.
    playground.get_by_role("link", name=failed.public_id).click()
    playground.wait_for_url(re.compile(rf"/admin/runs/run/{failed.pk}/change/"))
    assert "raise SystemExit(3)" in playground.inner_text("#content-main")


def test_the_usage_page_shows_the_run_just_made(playground: Any) -> None:
    assert run_program(playground, "ruby", "puts 6 * 7\n") == "succeeded"
    run = Run.objects.get()
    playground.goto("/admin/")
    playground.click("#usage-report-link")
    playground.wait_for_selector("[data-testid=usage-chart]")
    total_runs = playground.inner_text("#usage-total td[data-column=runs]")
    assert total_runs == "1"
    assert playground.inner_text("#usage-total td[data-column=succeeded]") == "1"
    per_key = playground.inner_text("#usage-per-key")
    assert run.owner.label in per_key  # playground:alice, like any other key
    # One green bar segment for today's succeeded run, drawn by the server.
    segment = playground.locator("[data-testid=usage-chart] rect[data-status=succeeded]")
    assert segment.count() == 1
    assert segment.get_attribute("data-count") == "1"
    assert float(segment.get_attribute("height") or 0) > 0

    # CSV export is a download.
    with playground.expect_download() as download_info:
        playground.click("#usage-csv")
    download = download_info.value
    assert download.suggested_filename.startswith("usage-") and download.suggested_filename.endswith(".csv")
    lines = open(download.path()).read().splitlines()  # noqa: SIM115
    assert lines[0].startswith("key,key_prefix,date,runs,succeeded")
    assert lines[1].startswith(f"{run.owner.label},{run.owner.prefix},") and ",1,1," in lines[1]


def test_creating_an_api_key_shows_the_token_once(playground: Any) -> None:
    playground.goto("/admin/runs/apikey/add/")
    playground.fill("#id_label", "chat-bot")
    playground.fill("#id_rps", "3")
    playground.fill("#id_burst", "6")
    playground.fill("#id_max_concurrent_runs", "2")
    playground.click("input[name=_save]")
    token = playground.inner_text("#new-token").strip()
    key = ApiKey.objects.get(label="chat-bot")
    assert key.token_hash == hash_token(token)
    assert "shown this once" in playground.inner_text("#content")

    # Going back to the key, or reloading the list, never shows it again.
    playground.click("text=Go to the key")
    playground.wait_for_url(re.compile(rf"/admin/runs/apikey/{key.pk}/change/"))
    assert token not in playground.content()
    assert key.prefix in playground.content()
    playground.goto("/admin/runs/apikey/")
    assert token not in playground.content()
    assert "chat-bot" in playground.inner_text("#result_list")
