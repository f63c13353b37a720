"""Signed, expiring download links: HMAC-SHA256 with SIGNING_KEY over the file id and the expiry."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from django.conf import settings


def signature(file_id: str, expires_at: int) -> str:
    message = f"{file_id}:{expires_at}".encode()
    return hmac.new(settings.SIGNING_KEY.encode(), message, hashlib.sha256).hexdigest()


def signed_url(file_id: str, now: float | None = None) -> tuple[str, int]:
    """A link to the file's content that works without Authorization until `expires_at`."""
    expires_at = int(now if now is not None else time.time()) + settings.SIGNED_URL_TTL_S
    query = urlencode({"expires": expires_at, "signature": signature(file_id, expires_at)})
    return f"{settings.PUBLIC_BASE_URL}/v1/files/{file_id}/content?{query}", expires_at


def verify(file_id: str, expires: str, given: str, now: float | None = None) -> str | None:
    """None when the link is good; otherwise why it is not (tampered, foreign or expired)."""
    try:
        expires_at = int(expires)
    except (TypeError, ValueError):
        return "The link is malformed."
    if not hmac.compare_digest(signature(file_id, expires_at), given or ""):
        return "The link's signature is not valid."
    if expires_at < int(now if now is not None else time.time()):
        return "The link has expired."
    return None
