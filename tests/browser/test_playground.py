"""The playground in a real browser, against gunicorn and a rundramatiq worker running the bwrap sandbox."""

from __future__ import annotations

import re
from typing import Any

from runs.models import ApiKey, Run

TERMINAL = ["succeeded", "failed", "timeout", "oom", "cancelled", "error"]
RUN_TIMEOUT_MS = 60_000  # a Go build on a busy machine takes a few seconds; this is a ceiling, not a target


def wait_terminal(page: Any, timeout_ms: int = RUN_TIMEOUT_MS) -> str:
    """Wait until the run just started (a run id the page did not show before) reaches a final status."""
    page.wait_for_function(
        """([terminal]) => {
            const id = document.querySelector("#run-id").textContent;
            return id && id !== window.__lastFinishedRun
                && terminal.includes(document.querySelector("#status").dataset.status);
        }""",
        arg=[TERMINAL],
        timeout=timeout_ms,
    )
    page.evaluate('window.__lastFinishedRun = document.querySelector("#run-id").textContent')
    return str(page.get_attribute("#status", "data-status"))


def run_program(page: Any, language: str, code: str | None = None, *, example: str | None = None, **fields: str) -> str:
    """Choose the language (and example), replace what is given, press Run, wait for the final status."""
    page.select_option("#language", language)
    if example:
        page.select_option("#example", example)
    if code is not None:
        page.fill("#code", code)
    for field, value in fields.items():
        page.fill(f"#{field}", value)
    page.click("#run")
    return wait_terminal(page)


def message(page: Any) -> tuple[str, str]:
    return str(page.get_attribute("#message", "data-code")), page.inner_text("#message")


def test_it_runs_the_hello_example_of_every_language(playground) -> None:
    for language in ("python", "node", "ruby", "php", "go"):
        status = run_program(playground, language)
        assert status == "succeeded", (language, playground.inner_text("#stderr"), message(playground))
        assert playground.text_content("#stdout") == "Hello, Ada!\n", language
        assert re.fullmatch(r"\d+ ms", playground.inner_text("#usage-wall_ms")), language
        assert re.fullmatch(r"\d+ ms", playground.inner_text("#usage-cpu_ms")), language
        assert playground.inner_text("#usage-exit_code") == "0"
        assert playground.inner_text("#usage-runtime").startswith(language)
        assert message(playground)[1].startswith("Finished in")

    # The recent runs list them newest first, each linking to its page in the admin.
    rows = playground.locator("#recent-runs tbody tr[data-run-id]")
    rows.nth(4).wait_for()
    run_ids = [rows.nth(i).get_attribute("data-run-id") for i in range(5)]
    runs = {run.public_id: run for run in Run.objects.filter(public_id__in=run_ids)}
    assert [runs[run_id].language for run_id in run_ids] == ["go", "php", "ruby", "node", "python"]
    assert {run.owner.label for run in runs.values()} == {"playground:alice"}
    link = rows.nth(0).locator("[data-testid=recent-run-link]")
    assert link.get_attribute("href") == f"/admin/runs/run/{runs[run_ids[0]].pk}/change/"
    link.click()
    playground.wait_for_url(re.compile(r"/admin/runs/run/\d+/change/$"))
    assert run_ids[0] in playground.content()


def test_it_edits_code_from_the_keyboard_and_runs_with_ctrl_enter(playground) -> None:
    editor = playground.locator("#code")
    editor.fill("")
    editor.press_sequentially("for i in range(2):")
    editor.press("Enter")  # keeps the indentation and adds a level after a colon
    editor.press_sequentially("print(i)")
    assert editor.input_value() == "for i in range(2):\n    print(i)"
    editor.press("Shift+Tab")  # dedents the caret's line
    assert editor.input_value() == "for i in range(2):\nprint(i)"
    editor.press("Tab")  # inserts 4 spaces at the caret
    assert editor.input_value() == "for i in range(2):\nprint(i)    "
    editor.press("Control+z")  # edits stay in the browser's undo history
    assert editor.input_value() == "for i in range(2):\nprint(i)"
    editor.press("Control+a")
    editor.press("Tab")  # indents every selected line
    assert editor.input_value() == "    for i in range(2):\n    print(i)"
    editor.press("Shift+Tab")
    editor.press("Shift+Tab")  # no further than the margin
    assert editor.input_value() == "for i in range(2):\nprint(i)"
    editor.press("ArrowDown")
    editor.press("Home")
    editor.press("Tab")
    assert editor.input_value() == "for i in range(2):\n    print(i)"
    playground.fill("#stdin", "")
    editor.press("Control+Enter")
    assert wait_terminal(playground) == "succeeded", playground.inner_text("#stderr")
    assert playground.text_content("#stdout") == "0\n1\n"


def test_it_shows_the_live_status_until_the_run_ends(playground) -> None:
    playground.select_option("#language", "python")
    playground.fill("#code", "import time\ntime.sleep(2)\nprint('done')")
    playground.click("#run")
    playground.wait_for_selector("#status[data-status=running]", timeout=RUN_TIMEOUT_MS)
    assert playground.is_disabled("#run")
    assert message(playground)[1] == "Running…"
    assert wait_terminal(playground) == "succeeded"
    assert playground.text_content("#stdout") == "done\n"
    assert not playground.is_disabled("#run")


def test_it_shows_output_as_the_program_writes_it(playground) -> None:
    # Streamed: the first line is on the page while the program still sleeps, before its run ends.
    playground.select_option("#language", "python")
    code = "import sys, time\nprint('first', flush=True)\nprint('warn', file=sys.stderr, flush=True)\ntime.sleep(4)\nprint('second')"
    playground.fill("#code", code)
    playground.click("#run")
    playground.wait_for_function(
        "() => document.querySelector('#stdout').textContent === 'first\\n'", timeout=RUN_TIMEOUT_MS
    )
    assert playground.get_attribute("#status", "data-status") == "running"
    assert playground.text_content("#stderr") == "warn\n"
    assert wait_terminal(playground) == "succeeded"
    assert playground.text_content("#stdout") == "first\nsecond\n"  # the final run object, not a repeat


def test_it_previews_an_image_artifact(playground, live_stack) -> None:
    assert run_program(playground, "python", example="python-plot") == "succeeded", playground.inner_text("#stderr")
    artifact = playground.locator("[data-testid=artifact]")
    assert artifact.count() == 1
    assert artifact.get_attribute("data-path") == "outputs/plot.png"
    preview = artifact.locator("img[data-testid=artifact-preview]")
    preview.wait_for()
    # The image really loaded and decoded (the download answers as an attachment with a CSP sandbox).
    playground.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=preview.element_handle(), timeout=15_000
    )
    size = preview.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [500, 300]

    href = artifact.locator("a[data-testid=artifact-download]").get_attribute("href")
    assert href.startswith(f"{live_stack.url}/v1/files/") and "signature=" in href
    assert href == preview.get_attribute("src")
    download = playground.request.get(href)
    assert download.status == 200
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert download.body()[:8] == b"\x89PNG\r\n\x1a\n"


def test_it_explains_a_timeout(playground) -> None:
    status = run_program(playground, "python", "while True:\n    pass\n", timeout_ms="1000")
    assert status == "timeout"
    code, text = message(playground)
    assert code in ("wall_timeout", "cpu_timeout")
    assert "1000 ms" in text
    assert text.startswith("Timed out") or text.startswith("CPU time limit exceeded")
    assert playground.get_attribute("#message", "data-kind") == "error"


def test_it_offers_the_timeout_example_with_its_limit(playground) -> None:
    playground.select_option("#example", "python-loop")
    assert playground.input_value("#timeout_ms") == "1000"
    playground.click("#run")
    assert wait_terminal(playground) == "timeout"


def test_it_shows_a_go_compile_error(playground) -> None:
    status = run_program(playground, "go", example="go-compile-error")
    assert status == "failed"
    code, text = message(playground)
    assert code == "compile_error"
    assert text.startswith("Compile error")
    assert "unused" in playground.inner_text("#stderr")  # the compiler's own words


def test_it_explains_a_validation_error_and_marks_the_field(playground) -> None:
    playground.select_option("#language", "python")
    playground.fill("#memory_mb", "999999")
    playground.click("#run")
    playground.wait_for_selector("#status[data-status=rejected]")
    code, text = message(playground)
    assert code == "invalid_value"
    assert text.startswith("Invalid request (field limits.memory_mb): ") and "at most 2048" in text
    assert playground.get_attribute("#memory_mb", "aria-invalid") == "true"
    assert not Run.objects.exists()
    # Corrected, it runs, and the mark goes away.
    playground.fill("#memory_mb", "128")
    playground.click("#run")
    assert wait_terminal(playground) == "succeeded"
    assert playground.get_attribute("#memory_mb", "aria-invalid") is None


def _playground_key() -> ApiKey:
    return ApiKey.objects.get(label="playground:alice", source=ApiKey.Source.PLAYGROUND)


def test_it_explains_the_rate_limit(playground, fresh_bucket) -> None:
    assert run_program(playground, "python") == "succeeded"
    key = _playground_key()
    ApiKey.objects.filter(pk=key.pk).update(rps=0.001, burst=1)  # one token every 1000 s
    fresh_bucket(key.pk)
    assert run_program(playground, "python") == "succeeded"  # the bucket's one token
    playground.click("#run")
    playground.wait_for_selector("#status[data-status=rejected]")
    code, text = message(playground)
    assert code == "rate_limit_exceeded"
    assert text.startswith("Rate limit reached") and re.search(r"Try again in \d+ s", text)
    fresh_bucket(key.pk)


def test_it_explains_the_concurrency_limit(playground, staff_user, fresh_bucket) -> None:
    assert run_program(playground, "python") == "succeeded"
    key = _playground_key()
    ApiKey.objects.filter(pk=key.pk).update(max_concurrent_runs=1)
    fresh_bucket(key.pk)
    # A run of this key that holds its one slot (no worker will take it: it was never enqueued).
    Run.objects.create(owner=key, language="python", code="pass", limits={}, status="running")
    playground.click("#run")
    playground.wait_for_selector("#status[data-status=rejected]")
    code, text = message(playground)
    assert code == "concurrency_limit_exceeded"
    assert text.startswith("Concurrency limit reached") and "limit is 1" in text


def test_it_keeps_each_languages_draft(playground) -> None:
    playground.select_option("#language", "python")
    playground.fill("#code", "print('my draft')")
    playground.select_option("#language", "ruby")
    assert "Hello" in playground.input_value("#code")
    playground.select_option("#language", "python")
    assert playground.input_value("#code") == "print('my draft')"


def test_it_needs_a_login(page, live_stack, transactional_db) -> None:
    page.goto("/")
    assert page.url == f"{live_stack.url}/admin/login/?next=/"
    api = page.request.get("/playground/api/runs")
    assert api.status == 403
    assert api.json()["error"]["code"] == "not_authenticated"


def test_it_shows_an_earlier_run_from_the_history(playground) -> None:
    assert run_program(playground, "python", "print('first')") == "succeeded"
    first_id = playground.text_content("#run-id")
    assert run_program(playground, "ruby") == "succeeded"
    row = playground.locator(f"#recent-runs tr[data-run-id={first_id}]")
    row.locator("[data-testid=recent-run-status]").get_by_text("succeeded").wait_for()
    row.locator("[data-testid=recent-run-show]").click()
    playground.wait_for_function("id => document.querySelector('#run-id').textContent === id", arg=first_id)
    assert playground.text_content("#stdout") == "first\n"
    assert playground.inner_text("#usage-runtime").startswith("python")


def test_it_asks_to_log_in_again_when_the_session_is_gone(playground) -> None:
    playground.context.clear_cookies()
    playground.click("#run")
    playground.wait_for_selector("#status[data-status=rejected]")
    code, _text = message(playground)
    assert code in ("csrf_failed", "not_authenticated")
    link = playground.locator("#message a")
    assert link.inner_text() == "Log in again"
    assert link.get_attribute("href") == "/admin/login/?next=/"
