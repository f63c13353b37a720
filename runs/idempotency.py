"""`Idempotency-Key` for POST /v1/runs and POST /v1/files: a retry returns what the first request made.

A record per (API key, endpoint, Idempotency-Key) lives in Redis for IDEMPOTENCY_TTL_S:
  pending  — the first request is still being handled: a concurrent retry gets 409;
  done     — the id of what it created: a retry with the same body gets that object again;
a different body under the same key is a client error (409). A request that fails before creating
anything drops its record, so the client can correct it and retry with the same key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from django.conf import settings
from rest_framework.request import Request

from . import redis as cx_redis
from .errors import APIError
from .models import ApiKey

HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_CHARS = 255


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclasses.dataclass
class Idempotency:
    redis_key: str
    fingerprint: str

    @classmethod
    def from_request(cls, request: Request, key: ApiKey, scope: str, payload: Any) -> Idempotency | None:
        value = request.META.get(HEADER)
        if value is None:
            return None
        if not value or len(value) > MAX_KEY_CHARS or not value.isprintable():
            raise APIError(
                f"Idempotency-Key must be 1-{MAX_KEY_CHARS} printable characters.",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
        return cls.of(key, scope, value, payload)

    @classmethod
    def of(cls, key: ApiKey, scope: str, value: str, payload: Any) -> Idempotency:
        """The record of one (API key, endpoint, Idempotency-Key value) for this request body."""
        digest = hashlib.sha256(value.encode()).hexdigest()
        return cls(f"codeexec:idem:{key.pk}:{scope}:{digest}", fingerprint(payload))

    def begin(self) -> str | None:
        """Reserve the key: None to go ahead, or the id a previous identical request created."""
        r = cx_redis.client()
        record = json.dumps({"state": "pending", "fp": self.fingerprint})
        if r.set(self.redis_key, record, nx=True, ex=settings.IDEMPOTENCY_TTL_S):
            return None
        raw = r.get(self.redis_key)
        if raw is None:  # expired in between: take it now
            return self.begin()
        stored = json.loads(raw)
        if stored.get("fp") != self.fingerprint:
            raise APIError(
                "This Idempotency-Key was used with a different request body.",
                409,
                code="idempotency_key_reused",
                param="Idempotency-Key",
            )
        if stored.get("state") != "done":
            raise APIError(
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                409,
                code="idempotency_request_in_progress",
                param="Idempotency-Key",
                headers={"Retry-After": "1"},
            )
        return str(stored["id"])

    def complete(self, object_id: str) -> None:
        record = json.dumps({"state": "done", "fp": self.fingerprint, "id": object_id})
        cx_redis.client().set(self.redis_key, record, ex=settings.IDEMPOTENCY_TTL_S)

    def abandon(self) -> None:
        cx_redis.client().delete(self.redis_key)
