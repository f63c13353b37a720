"""The operator's admin: API keys (token shown once), runs (read-only, with signed artifact links)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .models import VISIBLE_PREFIX_CHARS, ApiKey, Run, UsageDaily, UsageRollupDay, generate_token, hash_token
from .render import render_artifact


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = (
        "label",
        "prefix",
        "source",
        "state",
        "rps",
        "burst",
        "max_concurrent_runs",
        "last_used_at",
        "created_at",
    )
    list_filter = ("is_active", "source")
    search_fields = ("label", "prefix")
    fields = (
        "label",
        "rps",
        "burst",
        "max_concurrent_runs",
        "is_active",
        "prefix",
        "source",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = ("prefix", "source", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    @admin.display(description="state")
    def state(self, key: ApiKey) -> str:
        if key.revoked_at is not None:
            return "revoked"
        return "active" if key.is_active else "inactive"

    @admin.action(description="Revoke the selected keys (their tokens stop working at once)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(
            is_active=False, revoked_at=timezone.now(), updated_at=timezone.now()
        )
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is not None and obj.revoked_at is not None:
            return (*self.readonly_fields, "is_active")  # a revoked key stays revoked
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            token = generate_token()
            obj.token_hash = hash_token(token)
            obj.prefix = token[:VISIBLE_PREFIX_CHARS]
            obj.source = ApiKey.Source.ADMIN
            # Kept on the instance for this request only: response_add shows it once; it is never stored.
            obj._new_token = token  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        token = getattr(obj, "_new_token", None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": obj,
            "token": token,
            "title": "API key created",
        }
        response = TemplateResponse(request, "admin/runs/apikey/token_created.html", context)
        response["Cache-Control"] = "no-store"
        return response


def _pre(text: str) -> str:
    return format_html('<pre style="white-space: pre-wrap; max-height: 32em; overflow: auto; margin: 0">{}</pre>', text)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin[Run]):
    list_display = ("public_id", "status", "language", "owner", "duration", "created_at")
    list_filter = ("status", "language", "owner", "created_at")
    date_hierarchy = "created_at"
    search_fields = ("public_id", "metadata")
    list_select_related = ("owner",)
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("public_id", "owner", "language", "runtime_version", "status", "error")}),
        ("Times", {"fields": ("created_at", "started_at", "completed_at", "worker_id")}),
        ("Program", {"fields": ("code_block", "sources_block", "stdin_block", "args", "env", "input_files")}),
        ("Result", {"fields": ("exit_code", "signal", "stdout_block", "stderr_block", "artifacts")}),
        ("Limits and usage", {"fields": ("limits_block", "usage_block", "metadata_block")}),
    )
    readonly_fields = (
        "public_id",
        "owner",
        "language",
        "runtime_version",
        "status",
        "error",
        "created_at",
        "started_at",
        "completed_at",
        "worker_id",
        "code_block",
        "sources_block",
        "stdin_block",
        "args",
        "env",
        "input_files",
        "exit_code",
        "signal",
        "stdout_block",
        "stderr_block",
        "artifacts",
        "limits_block",
        "usage_block",
        "metadata_block",
    )

    # Runs are made through the API and deleted through it (which also deletes the artifacts' blobs).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False

    @admin.display(description="duration", ordering="wall_ms")
    def duration(self, run: Run) -> str:
        return f"{run.wall_ms} ms" if run.wall_ms is not None else "—"

    @admin.display(description="error")
    def error(self, run: Run) -> str:
        return f"{run.error_code}: {run.error_message}" if run.error_code else "—"

    @admin.display(description="code")
    def code_block(self, run: Run) -> str:
        return _pre(run.code)

    @admin.display(description="sources")
    def sources_block(self, run: Run) -> str:
        if not run.sources:
            return "—"
        return format_html_join("", "<p><b>{}</b></p>{}", ((s["path"], _pre(s["content"])) for s in run.sources))

    @admin.display(description="stdin")
    def stdin_block(self, run: Run) -> str:
        return _pre(run.stdin) if run.stdin else "—"

    @admin.display(description="stdout")
    def stdout_block(self, run: Run) -> str:
        note = " (truncated)" if run.stdout_truncated else ""
        return format_html("{}{}", _pre(run.stdout), note)

    @admin.display(description="stderr")
    def stderr_block(self, run: Run) -> str:
        note = " (truncated)" if run.stderr_truncated else ""
        return format_html("{}{}", _pre(run.stderr), note)

    @admin.display(description="limits")
    def limits_block(self, run: Run) -> str:
        return _pre(json.dumps(run.limits, indent=2, sort_keys=True))

    @admin.display(description="usage")
    def usage_block(self, run: Run) -> str:
        usage = {
            "wall_ms": run.wall_ms,
            "cpu_ms": run.cpu_ms,
            "memory_peak_bytes": run.memory_peak_bytes,
            "output_bytes": run.output_bytes,
            "artifact_bytes": run.artifact_bytes,
        }
        return _pre(json.dumps(usage, indent=2))

    @admin.display(description="metadata")
    def metadata_block(self, run: Run) -> str:
        return _pre(json.dumps(run.metadata, indent=2, sort_keys=True)) if run.metadata else "—"

    @admin.display(description="artifacts")
    def artifacts(self, run: Run) -> str:
        files = sorted(run.artifact_files.all(), key=lambda f: f.path)
        if not files:
            return "—"
        # Signed links, as the API gives them: they work without a key until they expire.
        rendered = [render_artifact(f) for f in files]
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}" data-testid="artifact-link">{}</a> ({} bytes, {})</li>',
                ((a["url"], a["path"], a["bytes"], a["content_type"]) for a in rendered),
            ),
        )


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Written by runs.retention only: the admin shows it and changes nothing."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRollupDay)
class UsageRollupDayAdmin(ReadOnlyAdmin):
    list_display = ("date", "runs", "rolled_up_at", "purged_at")
    date_hierarchy = "date"


@admin.register(UsageDaily)
class UsageDailyAdmin(ReadOnlyAdmin):
    list_display = ("date", "owner", "language", "runs", "succeeded", "failed", "cpu_ms", "wall_ms")
    list_filter = ("language", "owner")
    list_select_related = ("owner",)
    date_hierarchy = "date"
