"""codeexec settings: everything comes from the environment (see the README's table)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured
from psycopg import IsolationLevel

from sandbox.limits import DEFAULT_LIMITS, MAX_LIMITS, Limits

from .env import env_bool, env_int, env_list, env_str
from .logs import logging_config

django_stubs_ext.monkeypatch()  # ModelAdmin[Model] and friends at run time, as the type checker sees them

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# Development defaults exist only with DEBUG=1; in production every secret must be given.
_DEV = DEBUG

# A secret shorter than this (an empty one above all: every signed link could be forged) is refused.
MIN_SECRET_CHARS = 32


def _secret(name: str, dev_default: str) -> str:
    value = env_str(name, dev_default if _DEV else None)
    if not DEBUG and len(value.strip()) < MIN_SECRET_CHARS:
        raise ImproperlyConfigured(
            f"{name} must be at least {MIN_SECRET_CHARS} characters when DEBUG=0 (got {len(value.strip())}); "
            "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(36))'"
        )
    return value


SECRET_KEY = _secret("DJANGO_SECRET_KEY", "dev-insecure-secret-key-do-not-use-in-production")
SIGNING_KEY = _secret("SIGNING_KEY", "dev-insecure-signing-key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if _DEV else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG=0")

PORT = env_int("PORT", 8080, minimum=1)
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", f"http://localhost:{PORT}").rstrip("/")
DATA_DIR = Path(env_str("DATA_DIR", "/var/lib/codeexec"))

INSTALLED_APPS = [
    "codeexec_site.admin.CodeexecAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "django_ratelimit",
    "codeexec_site",  # before django_dramatiq: its `rundramatiq` (logs in LOG_FORMAT) replaces that app's
    "django_dramatiq",
    "runs",
    "files",
    "playground",
]

MIDDLEWARE = [
    "runs.middleware.RequestIdMiddleware",
    # Outside everything that may answer on its own (an outage, a body too large, a limit), so a browser
    # client can read those answers too; a preflight is answered here, before the database is touched.
    "corsheaders.middleware.CorsMiddleware",
    "runs.unavailable.DatabaseUnavailableMiddleware",
    "runs.middleware.BodySizeLimitMiddleware",
    "runs.middleware.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "codeexec_site.urls"
WSGI_APPLICATION = "codeexec_site.wsgi.application"
ASGI_APPLICATION = "codeexec_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/codeexec" if _DEV else None),
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL (postgres://...)")
# Django's PostgreSQL backend, with a health check that needs no round trip on a quiet connection.
DATABASES["default"]["ENGINE"] = "codeexec_site.db"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# WhiteNoise serves static files with DEBUG=0 too (admin, playground), straight from the apps' static
# dirs: no collectstatic step for `make run` or the images.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
DRAMATIQ_BROKER = {
    "BROKER": "runs.broker.WakingRedisBroker",  # Dramatiq's, woken by an enqueue instead of polling
    "OPTIONS": {"url": REDIS_URL},
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "runs.worker.WorkerPresenceMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

API_KEYS = env_str("API_KEYS", "dev_123:dev:10:20" if _DEV else "")

# ---- sandbox --------------------------------------------------------------------------------------
SANDBOX_BACKEND = env_str("SANDBOX_BACKEND", "bwrap")
if SANDBOX_BACKEND not in ("bwrap", "docker"):
    raise ImproperlyConfigured(f"SANDBOX_BACKEND must be 'bwrap' or 'docker', got {SANDBOX_BACKEND!r}")
SANDBOX_WORKDIR = Path(env_str("SANDBOX_WORKDIR", str(DATA_DIR / "sandbox")))
HOST_SANDBOX_DIR = Path(env_str("HOST_SANDBOX_DIR", str(SANDBOX_WORKDIR)))
STORAGE_DIR = Path(env_str("STORAGE_DIR", str(DATA_DIR / "storage")))
SECCOMP_PROFILE = Path(env_str("SECCOMP_PROFILE", str(BASE_DIR / "seccomp" / "profile.json")))
APPARMOR_PROFILE = env_str("APPARMOR_PROFILE", "") or None
DISABLE_SANDBOX_SECURITY = env_bool("DISABLE_SANDBOX_SECURITY", False)
SANDBOX_UID = env_int("SANDBOX_UID", 61000, minimum=1)
SANDBOX_GID = env_int("SANDBOX_GID", SANDBOX_UID, minimum=1)
SANDBOX_CGROUP_PARENT = env_str("SANDBOX_CGROUP_PARENT", "codeexec")
SANDBOX_TMP_MB = env_int("SANDBOX_TMP_MB", 64, minimum=1)
SANDBOX_BUILD_CACHE_MB = env_int("SANDBOX_BUILD_CACHE_MB", 256)
SANDBOX_WARM_POOL = env_int("SANDBOX_WARM_POOL", 2)
SANDBOX_WARM_PRESTART = env_bool("SANDBOX_WARM_PRESTART", True)
RUNNER_IMAGES = {
    lang: env_str(f"RUNNER_IMAGE_{lang.upper()}", f"codeexec-runner-{lang}:latest")
    for lang in ("python", "node", "ruby", "php", "go")
}


def _limits_from_env(prefix: str, base: Limits) -> Limits:
    values = {name: env_int(f"{prefix}{name.upper()}", getattr(base, name), minimum=0) for name in Limits.field_names()}
    if not os.environ.get(f"{prefix}CPU_MS"):
        values["cpu_ms"] = values["timeout_ms"]  # SPEC: cpu_ms = timeout_ms unless set on its own
    return Limits(**values)


LIMITS_MAX = _limits_from_env("LIMITS_MAX_", MAX_LIMITS)
LIMITS_DEFAULT = _limits_from_env("LIMITS_DEFAULT_", DEFAULT_LIMITS)
for _name in Limits.field_names():
    if getattr(LIMITS_DEFAULT, _name) > getattr(LIMITS_MAX, _name):
        raise ImproperlyConfigured(f"LIMITS_DEFAULT_{_name.upper()} exceeds LIMITS_MAX_{_name.upper()}")

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(STORAGE_DIR), "directory_permissions_mode": 0o700, "file_permissions_mode": 0o600},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# ---- API ------------------------------------------------------------------------------------------
MAX_CODE_BYTES = env_int("MAX_CODE_BYTES", 256 * 1024, minimum=1)
MAX_STDIN_BYTES = env_int("MAX_STDIN_BYTES", 1024 * 1024, minimum=0)
MAX_SOURCES_BYTES = env_int("MAX_SOURCES_BYTES", 1024 * 1024, minimum=0)
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 4 * 1024 * 1024, minimum=1024)
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 100 * 1024 * 1024, minimum=1)
RUN_WAIT_MAX_S = env_int("RUN_WAIT_MAX_S", 150, minimum=0)
SIGNED_URL_TTL_S = env_int("SIGNED_URL_TTL_S", 3600, minimum=1)
IDEMPOTENCY_TTL_S = env_int("IDEMPOTENCY_TTL_S", 24 * 3600, minimum=60)
MAX_QUEUED_RUNS = env_int("MAX_QUEUED_RUNS", 1000, minimum=1)
# Bad or missing keys, per client address (django-ratelimit syntax, e.g. "60/m").
UNAUTHENTICATED_RATE = env_str("UNAUTHENTICATED_RATE", "60/m")


def _networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(item.strip(), strict=False) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from None


# Addresses of reverse proxies whose X-Forwarded-For is believed (IPs or CIDRs); none by default.
TRUSTED_PROXIES = _networks(env_str("TRUSTED_PROXIES", ""))
USE_X_FORWARDED_HOST = False


# ---- CORS (django-cors-headers), off unless CORS_ALLOWED_ORIGINS names origins -----------------------
def _origins(value: str) -> list[str]:
    """Origins as browsers send them (lower case, no default port), so that each can match one."""
    origins = [item.strip().rstrip("/").lower() for item in value.split(",") if item.strip()]
    for origin in origins:
        match = re.fullmatch(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", origin)
        if origin != "*" and (match is None or match[3] == {"http": "80", "https": "443"}[match[1]]):
            raise ImproperlyConfigured(
                f"CORS_ALLOWED_ORIGINS: {origin!r} is not an origin as a browser sends it "
                "(scheme://host or scheme://host:port without the scheme's default port, or * for any)"
            )
    return origins


_CORS_ORIGINS = _origins(env_str("CORS_ALLOWED_ORIGINS", ""))
CORS_ALLOW_ALL_ORIGINS = "*" in _CORS_ORIGINS
CORS_ALLOWED_ORIGINS = [] if CORS_ALLOW_ALL_ORIGINS else _CORS_ORIGINS
# The API only: never the admin or the playground, which use cookies. Off means off: without origins
# no path is CORS's, and a preflight is answered as any OPTIONS request is.
CORS_URLS_REGEX = r"^/v1/" if _CORS_ORIGINS else r"(?!)"
CORS_ALLOW_CREDENTIALS = False  # the API authenticates with a header, not cookies
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "idempotency-key", "x-request-id")
CORS_EXPOSE_HEADERS = (
    "x-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "retry-after",
    "content-disposition",
)
CORS_PREFLIGHT_MAX_AGE = 3600

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "codeexec",
    },
}
RATELIMIT_USE_CACHE = "default"
# Django's RedisCache has the atomic add/incr django-ratelimit needs; it only is not on its list.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
RATELIMIT_IP_META_KEY = "runs.ratelimit.client_address"
RATELIMIT_EXCEPTION_CLASS = "django_ratelimit.exceptions.Ratelimited"
MAX_INPUT_FILES_BYTES = env_int("MAX_INPUT_FILES_BYTES", 256 * 1024 * 1024, minimum=0)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["runs.auth.BearerKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "runs.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["runs.ratelimit.KeyTokenBucketThrottle"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "runs.negotiation.FirstRendererNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "codeexec API",
    "DESCRIPTION": "Run untrusted code in hardened sandboxes. OpenAI-style errors and lists.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    # The default hook first, then the response headers the middleware and the error handler add.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "runs.schema.document_response_headers",
    ],
}

# ---- observability -------------------------------------------------------------------------------
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'text', got {LOG_FORMAT!r}")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = logging_config(LOG_FORMAT, LOG_LEVEL)
# When set, GET /metrics wants `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

# ---- Retention (runs.retention: the janitor and `manage.py retention`) -----------------------------
# Runs (with their artifacts) and uploaded files older than this many days are deleted; 0 keeps them
# forever. Usage figures survive: each finished UTC day is rolled up before its runs go.
RUN_RETENTION_DAYS = env_int("RUN_RETENTION_DAYS", 30, minimum=0)
FILE_RETENTION_DAYS = env_int("FILE_RETENTION_DAYS", 0, minimum=0)
# How often a worker runs retention (roll-up and purge), at most one process of the cluster at a time; 0: never
# (then only `manage.py retention`).
RETENTION_INTERVAL_SECONDS = env_int("RETENTION_INTERVAL_SECONDS", 3600, minimum=0)

# ---- crash recovery (runs/janitor.py, runs/scheduler.py) ------------------------------------------
# A claimed run's lease: its worker renews it every third of this; once it expired, the janitor
# re-queues the run (fewer than RUN_MAX_ATTEMPTS claims so far) or ends it error/worker_lost.
RUN_LEASE_SECONDS = env_int("RUN_LEASE_SECONDS", 30, minimum=3)
RUN_MAX_ATTEMPTS = env_int("RUN_MAX_ATTEMPTS", 2, minimum=1)
# A run queued this long with no message in the broker (e.g. Redis lost it) is sent again.
RUN_REQUEUE_GRACE_SECONDS = env_int("RUN_REQUEUE_GRACE_SECONDS", 60, minimum=1)
# Period of the janitor in each worker process (it also runs once when the worker starts); 0: never.
JANITOR_INTERVAL_SECONDS = env_int("JANITOR_INTERVAL_SECONDS", 30, minimum=0)
# A database that does not answer fails requests fast (503 database_unavailable) instead of hanging.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
# Creating a run sends two statements in one query (runs.services.insert_if_admitted): that needs Django's
# default client-side binding, and READ COMMITTED so the second statement's snapshot follows the first's lock.
_db_options = DATABASES["default"]["OPTIONS"]
_read_committed = (None, IsolationLevel.READ_COMMITTED)
if _db_options.get("server_side_binding") or _db_options.get("isolation_level") not in _read_committed:
    raise ImproperlyConfigured(
        "DATABASES OPTIONS: server_side_binding must be off and isolation_level READ COMMITTED (the default)"
    )
