"""Browser tests: Playwright driving Debian's chromium against a real stack of this project.

The stack (one per test module) is tests/live.py's: gunicorn + rundramatiq with the bwrap backend on
pytest-django's test database (logs in test-artifacts/browser/).
Each test gets a fresh database (`transactional_db`: the servers must see committed rows), a staff
user logged in through the admin login form, and a new browser context.

Nothing is skipped: without chromium (`apt-get install chromium`) or the playwright package
(requirements-dev.txt) the tests fail with what to install. `playwright install` is never used: the
browser is the distribution's /usr/bin/chromium (CODEEXEC_CHROMIUM overrides the path). Screenshots
of failed tests go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.live import ARTIFACTS, LiveStack
from tests.live import live_stack as start_live_stack

__all__ = ["LiveStack", "live_stack"]

SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = Path(os.environ.get("CODEEXEC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def live_stack(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveStack]:
    """gunicorn + rundramatiq on the test database, started once per module."""
    with start_live_stack(django_db_blocker, "browser") as stack:
        yield stack


# ---- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium through Playwright (never a browser Playwright downloaded)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}): `make venv` installs requirements-dev.txt")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (or set CODEEXEC_CHROMIUM)")
    # Playwright's sync API keeps an asyncio loop in this thread; Django's ORM (the fixtures' and tests'
    # set-up between browser steps) refuses to run beside one unless told so. Only while the browser
    # lives (this module), so the rest of the session keeps Django's check.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                yield instance
            finally:
                instance.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def staff_user(transactional_db: None) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_superuser("alice", "alice@example.com", PASSWORD)


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Any, live_stack: LiveStack) -> Iterator[Any]:
    """A fresh browser context on the live server; a screenshot is kept when the test fails, and an
    uncaught script error fails the test."""
    context = browser.new_context(base_url=live_stack.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    new_page = context.new_page()
    errors: list[str] = []
    new_page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield new_page
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        call = getattr(request.node, "report_call", None)
        if call is None or call.failed:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
            try:
                new_page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
            except Exception as exc:  # the page may be gone; the failure itself matters more
                print(f"screenshot failed: {exc}")
        context.close()
        live_stack.check_alive()


@pytest.fixture
def playground(page: Any, staff_user: Any, live_stack: LiveStack) -> Any:
    """The playground page, after logging in as a staff user through the admin login form."""
    page.goto("/")
    assert urlsplit(page.url).path == "/admin/login/", page.url
    page.fill("#id_username", staff_user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_stack.url}/")
    page.wait_for_selector("body[data-ready=true]")
    return page


@pytest.fixture
def fresh_bucket(live_stack: LiveStack) -> Callable[[int], None]:
    """Forget a key's rate-limit bucket (key ids restart with every test database)."""

    def forget(key_pk: int) -> None:
        live_stack.redis().delete(f"codeexec:bucket:key:{key_pk}")

    return forget
