"""Opaque public ids: a prefix and 24 random base32 characters (never sequential)."""

from __future__ import annotations

import base64
import secrets


def _random_part() -> str:
    return base64.b32encode(secrets.token_bytes(15)).decode().lower()


def new_run_id() -> str:
    return "run_" + _random_part()


def new_file_id() -> str:
    return "file-" + _random_part()
