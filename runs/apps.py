from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_keys(sender: AppConfig, **kwargs: Any) -> None:
    from django.conf import settings

    from .keys import sync_api_keys

    counts = sync_api_keys(settings.API_KEYS)
    if any(counts.values()) and kwargs.get("verbosity", 1) >= 1:
        print(
            f"API_KEYS: {counts['created']} created, {counts['updated']} updated, {counts['deactivated']} deactivated"
        )


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs and API keys"

    def ready(self) -> None:
        from . import schema  # noqa: F401  (registers the OpenAPI auth extension)

        # Keys are synced at start: `migrate` runs before every start of the stack.
        post_migrate.connect(_sync_keys, sender=self, dispatch_uid="codeexec-sync-api-keys")
