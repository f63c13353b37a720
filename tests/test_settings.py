"""Settings read the environment through typed helpers and fail loudly when DEBUG=0 lacks secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='codeexec_site.settings'; django.setup(); print('ok')"


def load_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DEBUG", "DJANGO_SECRET_KEY", "SIGNING_KEY", "ALLOWED_HOSTS", "DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


PROD = {
    "DEBUG": "0",
    "DJANGO_SECRET_KEY": "s" * 50,
    "SIGNING_KEY": "k" * 32,
    "ALLOWED_HOSTS": "example.org",
    "DATABASE_URL": "postgres://u@127.0.0.1:5432/db",
}


def test_it_starts_with_every_required_setting() -> None:
    proc = load_settings(PROD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_it_requires_secrets_when_debug_is_off() -> None:
    for name in ("DJANGO_SECRET_KEY", "SIGNING_KEY", "DATABASE_URL", "ALLOWED_HOSTS"):
        env = {k: v for k, v in PROD.items() if k != name}
        proc = load_settings(env)
        assert proc.returncode != 0, name
        assert name in proc.stderr, proc.stderr


def test_it_refuses_empty_or_short_secrets_when_debug_is_off() -> None:
    for name in ("DJANGO_SECRET_KEY", "SIGNING_KEY"):
        for value in ("", "   ", "k" * 31):
            proc = load_settings({**PROD, name: value})
            assert proc.returncode != 0, (name, value)
            assert "ImproperlyConfigured" in proc.stderr and name in proc.stderr, proc.stderr
        assert load_settings({**PROD, name: "k" * 32}).returncode == 0
    # Development keeps its defaults and takes what it is given.
    assert load_settings({"DEBUG": "1", "SIGNING_KEY": "short"}).returncode == 0


SHOW_LIMITS = (
    "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='codeexec_site.settings'; django.setup(); "
    "from django.conf import settings as s; "
    "print(s.LIMITS_DEFAULT.timeout_ms, s.LIMITS_DEFAULT.cpu_ms, s.LIMITS_MAX.timeout_ms, s.LIMITS_MAX.cpu_ms)"
)


def _limits(env: dict[str, str]) -> list[int]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIMITS_")}
    proc = subprocess.run(
        [sys.executable, "-c", SHOW_LIMITS], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [int(x) for x in proc.stdout.split()]


def test_cpu_time_follows_the_timeout_unless_set_on_its_own() -> None:
    assert _limits({}) == [10_000, 10_000, 60_000, 60_000]
    assert _limits({"LIMITS_DEFAULT_TIMEOUT_MS": "30000", "LIMITS_MAX_TIMEOUT_MS": "120000"}) == [
        30_000,
        30_000,
        120_000,
        120_000,
    ]
    assert _limits({"LIMITS_DEFAULT_TIMEOUT_MS": "30000", "LIMITS_DEFAULT_CPU_MS": "5000"}) == [
        30_000,
        5_000,
        60_000,
        60_000,
    ]


def test_it_rejects_malformed_values() -> None:
    for name, value in [
        ("DEBUG", "maybe"),
        ("PORT", "eighty"),
        ("SANDBOX_BACKEND", "chroot"),
        ("LIMITS_MAX_MEMORY_MB", "lots"),
        ("DATABASE_URL", "mysql://x@h/db"),
        ("LIMITS_DEFAULT_TIMEOUT_MS", "90000"),
        ("CORS_ALLOWED_ORIGINS", "app.example.org"),
        ("CORS_ALLOWED_ORIGINS", "https://app.example.org/path"),
        ("CORS_ALLOWED_ORIGINS", "https://app.example.org:443"),
        ("CORS_ALLOWED_ORIGINS", "https://*.example.org"),
        ("CORS_ALLOWED_ORIGINS", "https://user@app.example.org"),
    ]:
        proc = load_settings({**PROD, name: value})
        assert proc.returncode != 0, name
        assert "ImproperlyConfigured" in proc.stderr, proc.stderr


def test_it_has_development_defaults_only_with_debug() -> None:
    proc = load_settings({"DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr


def test_it_refuses_database_options_that_run_creation_cannot_work_with() -> None:
    """Creating a run sends two statements in one query, under READ COMMITTED (runs.services)."""
    for query in ("server_side_binding=true", "isolation_level=3"):
        proc = load_settings({**PROD, "DATABASE_URL": f"postgres://u@127.0.0.1:5432/db?{query}"})
        assert proc.returncode != 0, query
        assert "ImproperlyConfigured" in proc.stderr and "server_side_binding" in proc.stderr, proc.stderr
    assert load_settings({**PROD, "DATABASE_URL": "postgres://u@127.0.0.1:5432/db?sslmode=prefer"}).returncode == 0
