"""The Open WebUI tool against Open WebUI's own code (0.12.4, in a virtualenv of its own made by
scripts/openwebui-venv.sh; OPENWEBUI_VENV overrides where) and a live codeexec (tests/live.py).

The live stack answers a waiting POST /v1/runs with 202 after 4 s (RUN_WAIT_MAX_S) and ends a stream
then with the run as it is, so a slower run takes the tool's polling path; and it accepts only
127.0.0.1 as host name (ALLOWED_HOSTS), so `localhost` shows what Open WebUI users meet when
base_url's host is not allowed. Its keys are made here and removed afterwards with their runs.
A missing Open WebUI virtualenv fails the tests; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveStack
from tests.live import live_stack as start_live_stack

OPENWEBUI_VERSION = "0.12.4"
OPENWEBUI_VENV = Path(os.environ.get("OPENWEBUI_VENV", f"/var/cache/codeexec/openwebui-{OPENWEBUI_VERSION}"))
RUN_WAIT_MAX_S = 4


@pytest.fixture(scope="module")
def openwebui_python() -> Path:
    """The Open WebUI virtualenv's python, checked to hold open-webui==0.12.4."""
    python = OPENWEBUI_VENV / "bin" / "python"
    hint = f"run scripts/openwebui-venv.sh (it installs open-webui=={OPENWEBUI_VERSION} into {OPENWEBUI_VENV})"
    if not python.exists():
        pytest.fail(f"no Open WebUI virtualenv at {OPENWEBUI_VENV}: {hint}")
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('open-webui'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    version = probe.stdout.strip()
    if probe.returncode != 0 or version != OPENWEBUI_VERSION:
        pytest.fail(f"{python} has open-webui {version or '(none)'} {probe.stderr[-500:]}: {hint}")
    return python


@pytest.fixture(scope="module")
def live_stack(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveStack]:
    settings = {"RUN_WAIT_MAX_S": str(RUN_WAIT_MAX_S), "ALLOWED_HOSTS": "127.0.0.1"}
    with start_live_stack(django_db_blocker, "openwebui", settings) as stack:
        yield stack


@pytest.fixture(scope="module")
def api_keys(live_stack: LiveStack, django_db_blocker: Any) -> Iterator[dict[str, str]]:
    """Tokens: `alice` (an ordinary key) and `throttled` (a bucket of one request, refilled once an hour).
    Committed, since the servers read them; deleted afterwards with their runs and files."""
    from files.models import File
    from runs.models import ApiKey, Run

    with django_db_blocker.unblock():
        alice, alice_token = ApiKey.create_with_token("alice")
        throttled, throttled_token = ApiKey.create_with_token("throttled", rps=1 / 3600, burst=1)
    client = live_stack.redis()
    for key in (alice, throttled):  # key ids restart with every test database; old buckets must not count
        client.delete(f"codeexec:bucket:key:{key.pk}")
    try:
        yield {"alice": alice_token, "throttled": throttled_token}
    finally:
        with django_db_blocker.unblock():
            keys = [alice.pk, throttled.pk]
            File.objects.filter(owner__in=keys).delete()
            Run.objects.filter(owner__in=keys).delete()
            ApiKey.objects.filter(pk__in=keys).delete()
