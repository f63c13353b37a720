"""Browser tests: Playwright driving Debian's chromium against a real stack of this project.

The stack (one per test module):
- gunicorn (gthread) serving `codeexec_site.wsgi` on a free port of 127.0.0.1, static files through
  WhiteNoise as in production;
- `manage.py rundramatiq` executing runs with the bwrap backend;
both on pytest-django's test database, a Redis database of the tests' own (CODEEXEC_TEST_REDIS_DB,
default 15, like tests/api), and a private sandbox directory, cgroup parent and storage directory.
Each test gets a fresh database (`transactional_db`: the servers must see committed rows), a staff
user logged in through the admin login form, and a new browser context.

Nothing is skipped: without chromium (`apt-get install chromium`) or the playwright package
(requirements-dev.txt) the tests fail with what to install. `playwright install` is never used: the
browser is the distribution's /usr/bin/chromium (CODEEXEC_CHROMIUM overrides the path). Screenshots
of failed tests go to test-artifacts/screenshots/, the servers' logs to test-artifacts/browser/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from tests.support import database_url, free_port, with_redis_db

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
LOGS = ARTIFACTS / "browser"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
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
WORKER_ARGV = [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4"]
GUNICORN_OPTIONS = ["-k", "gthread", "--workers", "1", "--threads", "8", "--timeout", "200", "--graceful-timeout", "10"]
TEST_REDIS_DB = int(os.environ.get("CODEEXEC_TEST_REDIS_DB", "15"))
STARTUP_TIMEOUT_S = 120
PASSWORD = "correct horse battery staple"


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclasses.dataclass
class LiveStack:
    url: str
    redis_url: str
    sandbox_dir: Path
    cgroup_parent: str
    web: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    web_log: Path
    worker_log: Path

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def check_alive(self) -> None:
        for name, proc, log in (("gunicorn", self.web, self.web_log), ("rundramatiq", self.worker, self.worker_log)):
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{_tail(log)}")


def _our_worker_heartbeat(client: redis.Redis, worker: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    """A healthy heartbeat of a process in the rundramatiq process group this fixture started."""
    for key in client.scan_iter(match="codeexec:worker:*"):
        raw = client.get(key)
        if not raw:
            continue
        beat = json.loads(raw)
        try:
            pid = int(str(beat.get("worker_id", "")).rsplit(":", 1)[1])
            ours = os.getpgid(pid) == worker.pid
        except (IndexError, ValueError, ProcessLookupError):
            continue
        if ours and beat.get("ok") and beat.get("versions"):
            return dict(beat)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this fixture started (never anything else), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def live_stack(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveStack]:
    """gunicorn + rundramatiq on the test database, started once per module (gone before later suites
    run, so no stray worker consumes their queue)."""
    if not GUNICORN.exists():
        pytest.fail(f"{GUNICORN} is missing: run `make venv`")
    with django_db_blocker.unblock():
        db_url = database_url()
    root = Path(tempfile.mkdtemp(prefix="codeexec-browser-", dir="/tmp"))
    os.chmod(root, 0o711)  # bubblewrap's uid must traverse it
    sandbox_dir, storage_dir = root / "sandbox", root / "storage"
    storage_dir.mkdir()
    LOGS.mkdir(parents=True, exist_ok=True)
    web_log, worker_log = LOGS / "gunicorn.log", LOGS / "rundramatiq.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    redis_url = with_redis_db(settings.REDIS_URL, TEST_REDIS_DB)
    cgroup_parent = f"codeexec-browsertest-{os.getpid()}"
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "SANDBOX_WORKDIR": str(sandbox_dir),
        "SANDBOX_CGROUP_PARENT": cgroup_parent,
        "STORAGE_DIR": str(storage_dir),
        "PUBLIC_BASE_URL": url,  # signed artifact links must point at this server
        "API_KEYS": "",
        "PYTHONUNBUFFERED": "1",
        "dramatiq_worker_timeout": "20",  # as `make run`: the consumer polls Redis every 20 ms
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the servers keep Django's check (see `browser`)
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [*WORKER_ARGV, "--worker-shutdown-timeout", "30000"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with web_log.open("wb") as log:
        web = subprocess.Popen(
            [str(GUNICORN), "codeexec_site.wsgi", "-b", f"127.0.0.1:{port}", *GUNICORN_OPTIONS],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = LiveStack(url, redis_url, sandbox_dir, cgroup_parent, web, worker, web_log, worker_log)
    try:
        client = stack.redis()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (_our_worker_heartbeat(client, worker) and _get_status(f"{url}/readyz") == 200):
            stack.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the stack did not become ready in {STARTUP_TIMEOUT_S}s (/readyz: {_get_status(url + '/readyz')})\n"
                    f"gunicorn:\n{_tail(web_log)}\nrundramatiq:\n{_tail(worker_log)}"
                )
            time.sleep(0.2)
        yield stack
    finally:
        _stop(web)
        _stop(worker)
        from sandbox import get_backend
        from sandbox.backends.base import SandboxConfig

        backend = get_backend("bwrap", SandboxConfig(workdir=sandbox_dir, cgroup_parent=cgroup_parent))
        backend.cleanup_orphans()
        backend.cgroups.remove_parent()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)


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
