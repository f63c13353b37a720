"""codeexec's admin site: Django's, plus the usage report page (staff only, like every admin page)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.urls import URLPattern, URLResolver, path


class CodeexecAdminSite(AdminSite):
    site_header = "codeexec"
    site_title = "codeexec admin"
    index_title = "Operations"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        from runs.admin_usage import usage_report

        return [path("usage/", self.admin_view(usage_report), name="usage_report"), *super().get_urls()]

    def each_context(self, request: Any) -> dict[str, Any]:
        return {**super().each_context(request), "show_usage_link": True}


class CodeexecAdminConfig(AdminConfig):
    default_site = "codeexec_site.admin.CodeexecAdminSite"
