"""`manage.py syncapikeys`: apply API_KEYS now (migrate does it too)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from runs.keys import sync_api_keys


class Command(BaseCommand):
    help = "Create or update the keys listed in API_KEYS; deactivate env keys no longer listed."

    def handle(self, *args: Any, **options: Any) -> None:
        counts = sync_api_keys(settings.API_KEYS)
        self.stdout.write(
            f"{counts['created']} created, {counts['updated']} updated, {counts['deactivated']} deactivated"
        )
