"""`Authorization: Bearer <key>` against hashed API keys."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from codeexec_site import logs

from .models import ApiKey, hash_token

LAST_USED_GRANULARITY = timedelta(minutes=1)


def limit_unauthenticated(request: Request) -> None:
    """Bad or missing keys, and bad signed links, are limited by client address (guessing costs time)."""
    from django_ratelimit.core import is_ratelimited

    from .ratelimit import ratelimit_client_key

    if is_ratelimited(
        request._request,
        group="codeexec-unauthenticated",
        key=ratelimit_client_key,
        rate=settings.UNAUTHENTICATED_RATE,
        increment=True,
    ):
        raise exceptions.Throttled(wait=60, detail="Too many requests without a valid API key from this address.")


def is_signed_link(request: Request) -> bool:
    """The request presents a signed link (its `signature` or `expires`), which the content view checks."""
    return "signature" in request.query_params or "expires" in request.query_params


def _is_download(request: Request) -> bool:
    view = (getattr(request, "parser_context", None) or {}).get("view")
    return getattr(view, "action", None) == "content" and getattr(view, "basename", None) == "file"


def request_key(request: Request) -> ApiKey:
    """The authenticated API key of a request (views run behind IsAuthenticated)."""
    key = request.user
    if not isinstance(key, ApiKey):
        raise exceptions.NotAuthenticated()
    return key


class BearerKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKey, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            # A signed download link is its own authorization, not a key guess: the content view checks
            # it and counts only a bad one. A `signature` anywhere else is no reason to skip the limit.
            if not (is_signed_link(request) and _is_download(request)):
                limit_unauthenticated(request)
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            limit_unauthenticated(request)
            raise exceptions.AuthenticationFailed("Malformed Authorization header. Send 'Authorization: Bearer <key>'.")
        try:
            key = ApiKey.objects.get(token_hash=hash_token(token))
        except ApiKey.DoesNotExist:
            limit_unauthenticated(request)
            raise exceptions.AuthenticationFailed("Incorrect API key provided.") from None
        if not key.is_usable:
            limit_unauthenticated(request)
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        logs.bind(key=key.label)  # the label, never the token, in this request's log lines
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_GRANULARITY:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)  # at most once a minute per key
        return key, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
