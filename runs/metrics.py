"""Prometheus metrics of the whole service, served by the web at /metrics.

Why Redis and not prometheus_client's own metric objects: the web runs as several gunicorn processes
and the worker as other processes, in Docker Compose even other containers, and a scrape of the web
must see all of them. Process-local registries would show one gunicorn worker's share per scrape, and
prometheus_client's multiprocess mode only joins processes that share a directory on one host. So:

- counters and histograms are recorded into one Redis hash (`codeexec:metrics`) with HINCRBYFLOAT,
  a single round trip per event (a small Lua script, which also makes counting a run idempotent);
  histograms keep one field per bucket, made cumulative when scraped;
- gauges are computed when scraped: queued and running runs from the database, messages waiting in
  Dramatiq's Redis queue, live workers from their heartbeat keys (runs.redis);
- a custom collector turns all of that into prometheus_client metric families at scrape time, in a
  registry of its own (no process_* or python_* metrics of whichever gunicorn process answers).

Dramatiq's Prometheus middleware does not fit: it serves per-host message metrics from a forked HTTP
server of each worker (one more scrape target per worker container) and knows messages, not runs and
their outcomes. Operators who also want those can add it to DRAMATIQ_BROKER's middleware.

Recording never fails a request or a run: every Redis error is caught, logged (once per outage), and
recording pauses for a few seconds so an unreachable Redis costs no request more than a short timeout.
Labels never carry key labels, run ids or user data: statuses, languages, error codes, HTTP methods,
status codes and URL pattern names only, each from a closed set.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import platform
import threading
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import django
import dramatiq
import redis
from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from sandbox import ErrorCode, Status, all_languages

from . import redis as cx_redis
from .errors import envelope
from .models import Run

log = logging.getLogger(__name__)
run_log = logging.getLogger("codeexec.runs")  # one line when a run starts, one when it ends

PREFIX = "codeexec_"
STORE_KEY = "codeexec:metrics"
COUNTED_KEY = "codeexec:metrics:counted:{run_id}"  # a run's outcome is counted once, whoever reports it
COUNTED_TTL_S = 24 * 3600  # far longer than any second report takes (a lease expiring)
RUNS_QUEUE = "runs"
REDIS_TIMEOUT_S = 0.5
PAUSE_AFTER_FAILURE_S = 10.0

TERMINAL_STATUSES = tuple(s.value for s in Status if s.is_terminal)
FAILURE_CODES = (ErrorCode.SANDBOX_ERROR.value, ErrorCode.STORAGE_ERROR.value, ErrorCode.WORKER_LOST.value)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# name -> (help, label names, bucket upper bounds in seconds)
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "run_duration_seconds": (
        "Wall-clock time of runs in the sandbox, by language (observed when a run ends).",
        ("language",),
        (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
    ),
    "run_queue_wait_seconds": (
        "Time from a run's creation to a worker starting it.",
        (),
        (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    ),
    "http_request_duration_seconds": (
        "Time to answer HTTP requests (for streamed answers, until the response starts), by method, "
        "URL pattern name and status code.",
        ("method", "route", "status"),
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 150),
    ),
}
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "runs_total": ("Runs that reached a terminal status, by status and language.", ("status", "language")),
    "sandbox_failures_total": (
        "Runs that ended in status error (the service's fault), by error code.",
        ("code",),
    ),
}

# KEYS[1]: the hash; KEYS[2]: a once-only marker ("" for none). ARGV: marker TTL, then field/amount pairs.
_RECORD_LUA = """
if KEYS[2] ~= "" then
    if not redis.call("SET", KEYS[2], "1", "NX", "EX", ARGV[1]) then
        return 0
    end
end
for i = 2, #ARGV, 2 do
    redis.call("HINCRBYFLOAT", KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""


# ---- recording -----------------------------------------------------------------------------------


def _field(name: str, labels: dict[str, str]) -> str:
    return _field_of(name, tuple(sorted(labels.items())))


@functools.lru_cache(maxsize=4096)  # label values are few (statuses, languages, routes, codes)
def _field_of(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([name, dict(labels)], sort_keys=True, separators=(",", ":"))


def _observe(increments: list[tuple[str, float]], name: str, labels: dict[str, str], value: float) -> None:
    """Add one histogram observation: its bucket, the count and the sum."""
    bounds = HISTOGRAMS[name][2]
    le = next((_le(b) for b in bounds if value <= b), "+Inf")
    increments += [
        (_field(f"{name}_bucket", {**labels, "le": le}), 1),
        (_field(f"{name}_count", labels), 1),
        (_field(f"{name}_sum", labels), max(value, 0.0)),
    ]


def _le(bound: float) -> str:
    return repr(float(bound))


@functools.cache
def _client_for(url: str) -> tuple[redis.Redis, Any]:
    # Short timeouts of its own: a metric is never worth a request waiting for Redis.
    client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    return client, client.register_script(_RECORD_LUA)


def _client() -> redis.Redis:
    return _client_for(settings.REDIS_URL)[0]


class _Recorder:
    """Sends increments to Redis; after a failure, drops them for PAUSE_AFTER_FAILURE_S."""

    def __init__(self) -> None:
        self.paused_until = 0.0
        self.lock = threading.Lock()

    def record(
        self, increments: list[tuple[str, float]], once_key: str = "", publish: tuple[str, str] | None = None
    ) -> bool:
        """Add `increments`; with `publish` (channel, message), publish it in the same round trip, after
        them. True when it was published (otherwise the caller publishes it)."""
        if not increments or time.monotonic() < self.paused_until:
            return False
        try:
            args: list[Any] = [COUNTED_TTL_S]
            for field, amount in increments:
                args += [field, amount]
            client, script = _client_for(settings.REDIS_URL)
            if publish is None:
                script(keys=[STORE_KEY, once_key], args=args)
                return False
            pipe = client.pipeline(transaction=False)
            pipe.eval(_RECORD_LUA, 2, STORE_KEY, once_key, *args)
            pipe.publish(*publish)
            pipe.execute()
            return True
        except Exception as exc:
            with self.lock:
                first = self.paused_until == 0.0 or time.monotonic() >= self.paused_until
                self.paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_S
            if first:
                log.warning(
                    "metrics: could not record to Redis (%s); pausing %ss", type(exc).__name__, PAUSE_AFTER_FAILURE_S
                )
            return False


_recorder = _Recorder()


@functools.cache
def _languages() -> frozenset[str]:
    return frozenset(lang.name for lang in all_languages())


def _language(name: str) -> str:
    return name if name in _languages() else "other"


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request: its duration by method, URL pattern name and status code."""
    increments: list[tuple[str, float]] = []
    labels = {"method": method if method in HTTP_METHODS else "other", "route": route, "status": str(status)}
    _observe(increments, "http_request_duration_seconds", labels, seconds)
    _recorder.record(increments)


def run_started(run: Run) -> None:
    """A worker claimed the run: a log line with how long it waited in the queue. The wait is observed
    with the run's end (run_finished), so a run's start costs no Redis round trip."""
    if run.started_at is not None:
        waited_s = (run.started_at - run.created_at).total_seconds()
        run_log.info("run %s started", run.public_id, extra={"language": run.language, "queue_wait_s": waited_s})


def run_finished(run: Run, fresh: bool = False, publish: tuple[str, str] | None = None) -> bool:
    """The run reached a terminal status: a log line, and the run counted (once, even when several
    parties report it) with its sandbox time and queue wait. Reads the row unless the caller holds it as
    just saved (`fresh`), so a stale instance is fine; a run that is not terminal is ignored. `publish`
    (channel, message) goes in the same Redis round trip, after the count: True when it was sent."""
    try:
        fields = ("public_id", "status", "language", "error_code", "wall_ms", "exit_code", "created_at", "started_at")
        row: dict[str, Any] | None
        if fresh:
            row = {name: getattr(run, name) for name in fields}
        else:
            row = Run.objects.filter(pk=run.pk).values(*fields).first()
        if row is None or row["status"] not in TERMINAL_STATUSES:
            return False
        run_log.info(
            "run %s ended: %s",
            row["public_id"],
            row["status"],
            extra={k: row[k] for k in ("status", "language", "error_code", "exit_code", "wall_ms")},
        )
        language = _language(row["language"])
        increments: list[tuple[str, float]] = [
            (_field("runs_total", {"status": row["status"], "language": language}), 1)
        ]
        if row["status"] == Status.ERROR.value:
            code = row["error_code"] if row["error_code"] in FAILURE_CODES else "other"
            increments.append((_field("sandbox_failures_total", {"code": code}), 1))
        if row["wall_ms"] is not None:
            _observe(increments, "run_duration_seconds", {"language": language}, row["wall_ms"] / 1000)
        if row["started_at"] is not None:
            waited_s = (row["started_at"] - row["created_at"]).total_seconds()
            _observe(increments, "run_queue_wait_seconds", {}, waited_s)
        return _recorder.record(increments, once_key=COUNTED_KEY.format(run_id=row["public_id"]), publish=publish)
    except Exception:
        log.warning("metrics: could not record the end of %s", run.public_id, exc_info=True)
        return False


# ---- exposition --------------------------------------------------------------------------------------


@functools.cache
def _project_version() -> str:
    try:
        with (settings.BASE_DIR / "pyproject.toml").open("rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


class ServiceCollector:
    """Builds every codeexec_* metric at scrape time from Redis and the database."""

    def collect(self) -> Iterator[Metric]:
        yield self._build_info()
        stored = self._stored()
        up = GaugeMetricFamily(PREFIX + "metrics_store_up", "1 when the counters could be read from Redis.")
        up.add_metric([], 1 if stored is not None else 0)
        yield up
        yield from self._counters(stored or {})
        yield from self._histograms(stored or {})
        yield from self._gauges()

    def _build_info(self) -> Metric:
        info = GaugeMetricFamily(
            PREFIX + "build_info",
            "Versions of this service (always 1).",
            labels=["version", "python", "django", "dramatiq", "sandbox_backend"],
        )
        info.add_metric(
            [
                _project_version(),
                platform.python_version(),
                django.get_version(),
                dramatiq.__version__,
                settings.SANDBOX_BACKEND,
            ],
            1,
        )
        return info

    def _stored(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        try:
            raw: dict[bytes, bytes] = _client().hgetall(STORE_KEY)  # type: ignore[assignment]
        except Exception as exc:
            log.warning("metrics: could not read the counters from Redis (%s)", type(exc).__name__)
            return None
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for field, amount in raw.items():
            try:
                name, labels = json.loads(field)
                values[(name, tuple(sorted(labels.items())))] = float(amount)
            except (ValueError, TypeError):
                continue
        return values

    def _counters(self, stored: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> Iterable[Metric]:
        for name, (doc, label_names) in COUNTERS.items():
            family = CounterMetricFamily(PREFIX + name, doc, labels=list(label_names))
            series: dict[tuple[str, ...], float] = {}
            if name == "runs_total":  # every status and language from the start, so rate() has a zero
                series = {(s, lang): 0.0 for s in TERMINAL_STATUSES for lang in sorted(_languages())}
            elif name == "sandbox_failures_total":
                series = {(code,): 0.0 for code in FAILURE_CODES}
            for (stored_name, labels), value in stored.items():
                if stored_name == name:
                    as_dict = dict(labels)
                    series[tuple(as_dict.get(n, "") for n in label_names)] = value
            for labels_tuple, value in sorted(series.items()):
                family.add_metric(list(labels_tuple), value)
            yield family

    def _histograms(self, stored: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> Iterable[Metric]:
        for name, (doc, label_names, bounds) in HISTOGRAMS.items():
            family = HistogramMetricFamily(PREFIX + name, doc, labels=list(label_names))
            buckets: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
            sums: dict[tuple[str, ...], float] = {}
            for (stored_name, labels), value in stored.items():
                as_dict = dict(labels)
                key = tuple(as_dict.get(n, "") for n in label_names)
                if stored_name == f"{name}_bucket":
                    buckets[key][as_dict.get("le", "+Inf")] = value
                elif stored_name == f"{name}_sum":
                    sums[key] = value
            for key in sorted(buckets):
                cumulative, samples = 0.0, []
                for le in [*(_le(b) for b in bounds), "+Inf"]:
                    cumulative += buckets[key].get(le, 0.0)
                    samples.append(("+Inf" if le == "+Inf" else le, cumulative))
                family.add_metric(list(key), samples, sum_value=sums.get(key, 0.0))
            yield family

    def _gauges(self) -> Iterable[Metric]:
        try:
            rows = (
                Run.objects.filter(status__in=[Status.QUEUED.value, Status.RUNNING.value])
                .order_by()
                .values("status")
                .annotate(n=Count("id"))
            )
            by_status = {row["status"]: row["n"] for row in rows}
            queued = GaugeMetricFamily(PREFIX + "queue_depth", "Runs waiting for a worker (status queued).")
            queued.add_metric([], by_status.get(Status.QUEUED.value, 0))
            yield queued
            running = GaugeMetricFamily(PREFIX + "runs_running", "Runs executing now (status running).")
            running.add_metric([], by_status.get(Status.RUNNING.value, 0))
            yield running
        except Exception as exc:
            log.warning("metrics: could not count queued runs (%s)", type(exc).__name__)
        try:
            broker: Any = dramatiq.get_broker()  # a RedisBroker: its client and key namespace
            waiting = broker.client.llen(f"{broker.namespace}:{RUNS_QUEUE}")
            family = GaugeMetricFamily(
                PREFIX + "broker_queue_messages",
                "Messages in Dramatiq's Redis queue that no worker has fetched yet.",
                labels=["queue"],
            )
            family.add_metric([RUNS_QUEUE], int(waiting))
            yield family
        except Exception as exc:
            log.warning("metrics: could not read the broker's queue length (%s)", type(exc).__name__)
        try:
            workers = cx_redis.live_workers()
            family = GaugeMetricFamily(
                PREFIX + "workers",
                "Worker processes with a live heartbeat, by whether their sandbox backend passed its self-test.",
                labels=["backend_ok"],
            )
            for ok in (True, False):
                family.add_metric([str(ok).lower()], sum(1 for w in workers if bool(w.get("ok")) is ok))
            yield family
        except Exception as exc:
            log.warning("metrics: could not read the worker heartbeats (%s)", type(exc).__name__)


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(ServiceCollector())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus text; with METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    if request.method not in ("GET", "HEAD"):
        return JsonResponse(envelope("Use GET.", 405, "method_not_allowed"), status=405)
    if settings.METRICS_TOKEN and not _token_ok(request):
        return _unauthorized(request)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(REGISTRY), content_type=content_type)


def _token_ok(request: HttpRequest) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), settings.METRICS_TOKEN.encode())


def _unauthorized(request: HttpRequest) -> JsonResponse:
    from django_ratelimit.core import is_ratelimited

    from .ratelimit import ratelimit_client_key

    # Guessing the token costs time, like guessing an API key (the same per-address budget).
    limited = is_ratelimited(
        request,
        group="codeexec-unauthenticated",
        key=ratelimit_client_key,
        rate=settings.UNAUTHENTICATED_RATE,
        increment=True,
    )
    if limited:
        response = JsonResponse(
            envelope("Too many requests with a wrong metrics token.", 429, "rate_limit_exceeded"), status=429
        )
        response["Retry-After"] = "60"
        return response
    response = JsonResponse(envelope("Missing or wrong metrics token.", 401, "invalid_metrics_token"), status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
