"""Files in the admin: read-only, with a signed download link."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from .models import File
from .signing import signed_url


@admin.register(File)
class FileAdmin(admin.ModelAdmin[File]):
    list_display = ("public_id", "filename", "purpose", "bytes", "owner", "run", "created_at")
    list_filter = ("purpose", "owner", "created_at")
    search_fields = ("public_id", "filename", "path")
    list_select_related = ("owner", "run")
    ordering = ("-created_at", "-id")
    fields = (
        "public_id",
        "filename",
        "purpose",
        "bytes",
        "content_type",
        "sha256",
        "owner",
        "run",
        "path",
        "created_at",
        "download",
    )
    readonly_fields = fields

    # Uploads and deletions go through the API, which keeps the stored blob and the row together.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: File | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: File | None = None) -> bool:
        return False

    @admin.display(description="download")
    def download(self, file: File) -> str:
        url, _expires = signed_url(file.public_id)
        return format_html('<a href="{}" data-testid="file-download">signed link (1 h)</a>', url)
