"""API keys and runs. A Run owns its state machine: every transition is one guarded UPDATE."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from sandbox import RunResult, Status

from .ids import new_run_id

TOKEN_PREFIX = "cx_"  # noqa: S105 — a public prefix, not a secret
VISIBLE_PREFIX_CHARS = 10


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so one SHA-256 is enough; the DB never holds a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class ApiKey(models.Model):
    class Source(models.TextChoices):
        ENV = "env", "API_KEYS environment variable"
        ADMIN = "admin", "Django admin"
        CLI = "cli", "createapikey command"
        PLAYGROUND = "playground", "Playground"

    label = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=VISIBLE_PREFIX_CHARS, editable=False, help_text="First characters of the token, to recognise it."
    )
    rps = models.FloatField(default=10.0, help_text="Sustained requests per second (token bucket rate).")
    burst = models.PositiveIntegerField(default=20, help_text="Token bucket size.")
    max_concurrent_runs = models.PositiveIntegerField(default=4)
    is_active = models.BooleanField(default=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ADMIN, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["label", "id"]

    def __str__(self) -> str:
        return f"{self.label} ({self.prefix}…)"

    @classmethod
    def create_with_token(
        cls, label: str, source: str = Source.CLI, token: str | None = None, **fields: Any
    ) -> tuple[ApiKey, str]:
        """Create a key; the token is returned once and never stored."""
        token = token or generate_token()
        key = cls.objects.create(
            label=label, token_hash=hash_token(token), prefix=token[:VISIBLE_PREFIX_CHARS], source=source, **fields
        )
        return key, token

    # DRF treats the authenticated key as request.user.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_usable(self) -> bool:
        return self.is_active and self.revoked_at is None

    def revoke(self) -> None:
        self.is_active = False
        self.revoked_at = timezone.now()
        self.save(update_fields=["is_active", "revoked_at", "updated_at"])


TERMINAL = [s.value for s in Status if s.is_terminal]


class Run(models.Model):
    class StatusChoices(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMEOUT = "timeout"
        OOM = "oom"
        CANCELLED = "cancelled"
        ERROR = "error"

    # `id` (bigint) is the internal key: it breaks ties in list order. Clients only see `public_id`.
    public_id = models.CharField(max_length=40, unique=True, default=new_run_id, editable=False)
    owner = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="runs")
    language = models.CharField(max_length=16)
    code = models.TextField()
    stdin = models.TextField(blank=True, default="")
    args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    sources = models.JSONField(default=list, blank=True)
    input_files = models.JSONField(default=list, blank=True, help_text="[{file_id, path}] staged at /work/inputs")
    limits = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=16, choices=StatusChoices.choices, default=StatusChoices.QUEUED)
    worker_id = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Claims so far: the janitor re-queues a run whose worker was lost while this is below RUN_MAX_ATTEMPTS.
    attempts = models.PositiveIntegerField(default=0)
    # When the run last became queued (created, or re-queued by the janitor): the janitor's age for
    # "queued, but its message was lost".
    queued_at = models.DateTimeField(default=timezone.now)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.CharField(max_length=16, null=True, blank=True)
    stdout = models.TextField(blank=True, default="")
    stderr = models.TextField(blank=True, default="")
    stdout_truncated = models.BooleanField(default=False)
    stderr_truncated = models.BooleanField(default=False)
    wall_ms = models.IntegerField(null=True, blank=True)
    cpu_ms = models.IntegerField(null=True, blank=True)
    memory_peak_bytes = models.BigIntegerField(null=True, blank=True)
    output_bytes = models.BigIntegerField(default=0)
    artifact_bytes = models.BigIntegerField(default=0)
    error_code = models.CharField(max_length=32, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    runtime_version = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="run_owner_created"),
            models.Index(fields=["owner", "status", "-created_at", "-id"], name="run_owner_status"),
            models.Index(fields=["owner", "language", "-created_at", "-id"], name="run_owner_language"),
            models.Index(fields=["status", "lease_expires_at"], name="run_status_lease"),
            # Retention and usage scan runs by creation day across keys (runs/retention.py, runs/usage.py).
            models.Index(fields=["created_at"], name="run_created"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    # ---- state machine: each transition is one conditional UPDATE; the row count says who won ----

    def claim(self, worker_id: str, lease: timedelta) -> bool:
        """queued -> running for exactly one worker (one more attempt); a duplicate delivery gets False.

        Every later transition of this attempt is conditional on (worker_id, attempts), so once the
        janitor has handed the run to a new attempt, nothing the old worker does can change it."""
        claimed = Run.claim_queued(self.public_id, worker_id, lease)
        if claimed is None:
            return False
        for field in Run._meta.concrete_fields:
            setattr(self, field.attname, getattr(claimed, field.attname))
        return True

    @classmethod
    def claim_queued(cls, public_id: str, worker_id: str, lease: timedelta) -> Run | None:
        """claim() by id, in one round trip: the claimed row (with `owner_label`), or None when the run
        is not queued (a duplicate delivery, a cancelled or unknown run)."""
        now = timezone.now()
        columns = ", ".join(f'run."{field.column}"' for field in cls._meta.concrete_fields)
        # Identifiers from the models' own metadata; every value is a parameter.
        sql = (
            f'UPDATE "{cls._meta.db_table}" AS run SET status = %s, worker_id = %s, started_at = %s, '  # noqa: S608
            "lease_expires_at = %s, attempts = run.attempts + 1 "
            f'FROM "{ApiKey._meta.db_table}" AS owner '
            "WHERE run.public_id = %s AND run.status = %s AND owner.id = run.owner_id "
            f"RETURNING {columns}, owner.label AS owner_label"
        )
        running, queued = cls.StatusChoices.RUNNING.value, cls.StatusChoices.QUEUED.value
        params: list[Any] = [running, worker_id, now, now + lease, public_id, queued]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        # The fields' own converters (JSON) on what RETURNING gives, as a queryset would apply them (a raw
        # queryset did, at ~0.4 ms of CPU per run).
        fields = cls._meta.concrete_fields
        values = []
        for field, value in zip(fields, row, strict=False):
            for convert in field.get_db_converters(connection):  # type: ignore[attr-defined]
                value = convert(value, field, connection)
            values.append(value)
        run = cls.from_db(connection.alias, [field.attname for field in fields], values)
        run.owner_label = row[-1]  # type: ignore[attr-defined]
        return run

    def _this_attempt(self, worker_id: str) -> Q:
        return Q(pk=self.pk, status=Run.StatusChoices.RUNNING, worker_id=worker_id, attempts=self.attempts)

    def renew_lease(self, worker_id: str, lease: timedelta) -> bool:
        """Extend this attempt's lease; False once the run is no longer this attempt's."""
        return Run.objects.filter(self._this_attempt(worker_id)).update(lease_expires_at=timezone.now() + lease) == 1

    def recover_lost(self, max_attempts: int, now: datetime | None = None) -> str | None:
        """A running run whose lease expired (its worker is gone): re-queue it for another attempt while it
        has had fewer than `max_attempts`, else end it `error`/`worker_lost`; a run whose cancel was
        requested ends `cancelled`. Returns "requeued", "worker_lost", "cancelled", or None when the
        lease was renewed (or the run finished) meanwhile."""
        now = now or timezone.now()
        guard = Q(
            pk=self.pk,
            status=Run.StatusChoices.RUNNING,
            lease_expires_at__lt=now,
            worker_id=self.worker_id,
            attempts=self.attempts,
        )
        outcome: str
        if self.cancel_requested_at is not None:
            outcome = "cancelled"
            fields: dict[str, Any] = {
                "status": Run.StatusChoices.CANCELLED,
                "completed_at": now,
                "lease_expires_at": None,
                "error_code": "cancelled",
                "error_message": "The run was cancelled; its worker was lost before it could stop it.",
            }
        elif self.attempts < max_attempts:
            outcome = "requeued"
            fields = {
                "status": Run.StatusChoices.QUEUED,
                "worker_id": "",
                "started_at": None,
                "lease_expires_at": None,
                "queued_at": now,
            }
        else:
            outcome = "worker_lost"
            fields = {
                "status": Run.StatusChoices.ERROR,
                "completed_at": now,
                "lease_expires_at": None,
                "error_code": "worker_lost",
                "error_message": (
                    f"The worker executing this run was lost (attempt {self.attempts} of at most {max_attempts}); "
                    "the run is not retried again."
                ),
            }
        if Run.objects.filter(guard).update(**fields) != 1:
            return None
        for key, value in fields.items():
            setattr(self, key, value)
        return outcome

    def cancel_if_queued(self) -> bool:
        now = timezone.now()
        won = Run.objects.filter(pk=self.pk, status=Run.StatusChoices.QUEUED).update(
            status=Run.StatusChoices.CANCELLED,
            completed_at=now,
            cancel_requested_at=now,
            error_code="cancelled",
            error_message="The run was cancelled before it started.",
        )
        return won == 1

    def request_cancel(self) -> bool:
        """Mark a running run for cancellation; its worker kills the sandbox."""
        return (
            Run.objects.filter(pk=self.pk, status=Run.StatusChoices.RUNNING).update(cancel_requested_at=timezone.now())
            == 1
        )

    # What finish() writes from a result, besides the times; a completion message carries exactly these
    # (runs/redis.py done_payload), so a waiting request can answer without reading the row again.
    RESULT_FIELDS = (
        "status",
        "exit_code",
        "signal",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "wall_ms",
        "cpu_ms",
        "memory_peak_bytes",
        "output_bytes",
        "artifact_bytes",
        "error_code",
        "error_message",
        "runtime_version",
    )

    @staticmethod
    def result_fields(result: RunResult) -> dict[str, Any]:
        values = (
            result.status.value,
            result.exit_code,
            result.signal,
            result.stdout,
            result.stderr,
            result.stdout_truncated,
            result.stderr_truncated,
            result.usage.wall_ms,
            result.usage.cpu_ms,
            result.usage.memory_peak_bytes,
            result.usage.output_bytes,
            result.usage.artifact_bytes,
            result.error.code.value if result.error else None,
            result.error.message if result.error else None,
            result.runtime_version or "",
        )
        return dict(zip(Run.RESULT_FIELDS, values, strict=True))

    def finish(self, result: RunResult, worker_id: str, save_artifacts: Any = None) -> bool:
        """running -> terminal with the result, in one guarded update (and the artifacts, atomically)."""
        fields: dict[str, Any] = {
            "completed_at": timezone.now(),
            "lease_expires_at": None,
            **Run.result_fields(result),
        }
        if save_artifacts is None:  # one statement: atomic without a transaction block's two round trips
            if self._finish_update(fields, worker_id) != 1:
                return False
        else:
            with transaction.atomic():
                if self._finish_update(fields, worker_id) != 1:
                    return False
                save_artifacts()
        for key, value in fields.items():
            setattr(self, key, value)
        return True

    def _finish_update(self, fields: dict[str, Any], worker_id: str) -> int:
        """The guarded UPDATE of finish(), in plain SQL (the ORM's building of it cost ~0.3 ms of CPU per run)."""
        quote = connection.ops.quote_name
        column = {field.name: field.column for field in Run._meta.concrete_fields}
        columns = ", ".join(f"{quote(column[name])} = %s" for name in fields)
        table = quote(Run._meta.db_table)
        sql = f"UPDATE {table} SET {columns} WHERE id = %s AND status = %s AND worker_id = %s AND attempts = %s"  # noqa: S608
        params = [*fields.values(), self.pk, Run.StatusChoices.RUNNING.value, worker_id, self.attempts]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    def fail(
        self,
        code: str,
        message: str,
        from_statuses: tuple[str, ...] = ("queued", "running"),
        worker_id: str | None = None,
    ) -> bool:
        """Any non-terminal -> error (the service's fault, never the code's). With `worker_id`, only while
        the run is still this attempt's (a worker that lost its claim cannot fail the next attempt)."""
        guard = self._this_attempt(worker_id) if worker_id is not None else Q(pk=self.pk, status__in=from_statuses)
        won = Run.objects.filter(guard).update(
            status=Run.StatusChoices.ERROR,
            completed_at=timezone.now(),
            lease_expires_at=None,
            error_code=code,
            error_message=message,
        )
        return won == 1


class UsageRollupDay(models.Model):
    """One UTC day whose runs are summed in UsageDaily: from then on the roll-up, not the runs, counts it.

    Written in the same transaction as the day's UsageDaily rows (days without runs get one too), so a
    day is either wholly in the roll-up or wholly in the runs table, never both (runs.retention).
    """

    date = models.DateField(unique=True)
    runs = models.BigIntegerField(default=0, help_text="Runs of the day when it was rolled up.")
    rolled_up_at = models.DateTimeField(default=timezone.now)
    purged_at = models.DateTimeField(null=True, blank=True, help_text="When its runs were deleted (retention).")

    class Meta:
        verbose_name = "usage roll-up day"
        ordering = ["-date"]

    def __str__(self) -> str:
        return self.date.isoformat()


class UsageDaily(models.Model):
    """Every usage counter of one key, UTC day and language, summed from runs that may since be deleted."""

    owner = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="usage_daily")
    date = models.DateField()
    language = models.CharField(max_length=16)
    runs = models.BigIntegerField(default=0)
    succeeded = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    timeout = models.BigIntegerField(default=0)
    oom = models.BigIntegerField(default=0)
    cancelled = models.BigIntegerField(default=0)
    error = models.BigIntegerField(default=0)
    cpu_ms = models.BigIntegerField(default=0)
    wall_ms = models.BigIntegerField(default=0)
    output_bytes = models.BigIntegerField(default=0)
    artifact_bytes = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "daily usage"
        verbose_name_plural = "daily usage"
        ordering = ["-date", "owner", "language"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "date", "language"], name="usagedaily_owner_date_language"),
        ]
        indexes = [models.Index(fields=["date"], name="usagedaily_date")]

    def __str__(self) -> str:
        return f"{self.owner_id} {self.date} {self.language}"
