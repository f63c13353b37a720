"""Each staff user's playground API key: found, or made on first use. Its token is never kept or shown.

The key is an ordinary `ApiKey` (source `playground`), so its rate limit, concurrency cap, history and
usage are those of any key, and an operator tunes or revokes it in the admin like any other.
"""

from __future__ import annotations

import hashlib

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from runs.models import ApiKey

LABEL_PREFIX = "playground:"
_LABEL_MAX_CHARS: int = ApiKey._meta.get_field("label").max_length or 100


def key_label(user: AbstractBaseUser) -> str:
    """`playground:<username>`; a username too long for the label keeps a digest, so it stays unique."""
    username = user.get_username()
    label = LABEL_PREFIX + username
    if len(label) <= _LABEL_MAX_CHARS:
        return label
    digest = hashlib.sha256(username.encode()).hexdigest()[:12]
    return f"{label[: _LABEL_MAX_CHARS - len(digest) - 1]}~{digest}"


def find_key(user: AbstractBaseUser) -> ApiKey | None:
    # Matching the source too: a key an admin happened to label `playground:alice` is not alice's.
    return ApiKey.objects.filter(label=key_label(user), source=ApiKey.Source.PLAYGROUND).order_by("id").first()


def get_or_create_key(user: AbstractBaseUser) -> ApiKey:
    """The user's playground key, created on first use (its token is discarded: only the server uses it)."""
    key = find_key(user)
    if key is not None:
        return key
    with transaction.atomic():
        # The user's row serialises two first requests of the same user, so they make one key, not two.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        key = find_key(user)
        if key is None:
            key, _token = ApiKey.create_with_token(key_label(user), source=ApiKey.Source.PLAYGROUND)
    return key
