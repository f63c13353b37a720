"""API_KEYS=token:label:rps:burst,... is declarative for the keys it lists (and only those)."""

from __future__ import annotations

import dataclasses
import logging

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .models import ApiKey, hash_token

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 6


@dataclasses.dataclass(frozen=True)
class KeySpec:
    token: str
    label: str
    rps: float
    burst: int


def parse_api_keys(value: str) -> list[KeySpec]:
    """Parse the variable; every mistake names the entry (never its token)."""
    specs: list[KeySpec] = []
    for index, entry in enumerate(item.strip() for item in value.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 4:
            raise ImproperlyConfigured(f"API_KEYS entry #{index + 1} must be token:label:rps:burst")
        token, label, rps_text, burst_text = parts
        if len(token) < MIN_TOKEN_CHARS:
            raise ImproperlyConfigured(f"API_KEYS entry #{index + 1}: the token is shorter than {MIN_TOKEN_CHARS}")
        if not label:
            raise ImproperlyConfigured(f"API_KEYS entry #{index + 1}: the label is empty")
        try:
            rps, burst = float(rps_text), int(burst_text)
        except ValueError:
            raise ImproperlyConfigured(
                f"API_KEYS entry #{index + 1} ({label}): rps and burst must be numbers"
            ) from None
        if rps <= 0 or burst < 1:
            raise ImproperlyConfigured(f"API_KEYS entry #{index + 1} ({label}): rps must be > 0 and burst >= 1")
        specs.append(KeySpec(token, label, rps, burst))
    if len({s.token for s in specs}) != len(specs):
        raise ImproperlyConfigured("API_KEYS lists the same token twice")
    return specs


def sync_api_keys(value: str) -> dict[str, int]:
    """Create or update the listed keys; deactivate env keys no longer listed; never touch other keys."""
    specs = parse_api_keys(value)
    counts = {"created": 0, "updated": 0, "deactivated": 0}
    hashes = set()
    with transaction.atomic():
        for spec in specs:
            token_hash = hash_token(spec.token)
            hashes.add(token_hash)
            key = ApiKey.objects.select_for_update().filter(token_hash=token_hash).first()
            if key is None:
                ApiKey.create_with_token(
                    spec.label, source=ApiKey.Source.ENV, token=spec.token, rps=spec.rps, burst=spec.burst
                )
                counts["created"] += 1
            elif key.source != ApiKey.Source.ENV:
                log.warning(
                    "API_KEYS lists a token that belongs to a %s key (%s); leaving it alone", key.source, key.label
                )
            elif (key.label, key.rps, key.burst, key.is_active, key.revoked_at) != (
                spec.label,
                spec.rps,
                spec.burst,
                True,
                None,
            ):
                key.label, key.rps, key.burst, key.is_active, key.revoked_at = (
                    spec.label,
                    spec.rps,
                    spec.burst,
                    True,
                    None,
                )
                key.save(update_fields=["label", "rps", "burst", "is_active", "revoked_at", "updated_at"])
                counts["updated"] += 1
        counts["deactivated"] = (
            ApiKey.objects.filter(source=ApiKey.Source.ENV, is_active=True)
            .exclude(token_hash__in=hashes)
            .update(is_active=False)
        )
    return counts
