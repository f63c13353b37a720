"""Per-key token buckets in Redis, and the client address behind trusted proxies.

Why not django-ratelimit for keys: its fixed windows ("N per period") reset all at once, so they
cannot express a sustained `rps` with bursts of up to `burst` (and allow twice the limit across a
window edge). A token bucket can; its state lives in Redis so it holds across every gunicorn process.
django-ratelimit still guards the unauthenticated path (bad or missing keys, by client address),
where a fixed window is exactly what is wanted.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from . import redis as cx_redis
from .models import ApiKey

# KEYS[1] bucket; ARGV rate (tokens/s), burst, now_ms (0 = Redis' own clock), cost.
# Returns {allowed, tokens_left_floor, retry_after_ms}.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end
local allowed = 0
local retry_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, math.floor(tokens), retry_ms}
"""
_scripts: dict[int, Any] = {}


@dataclasses.dataclass(frozen=True)
class BucketResult:
    allowed: bool
    remaining: int
    retry_after_s: float


def take(bucket: str, rate: float, burst: int, now_ms: int = 0) -> BucketResult:
    """Take one token from `bucket`; `now_ms` injects a clock (tests), 0 uses Redis' clock."""
    client = cx_redis.client()
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_BUCKET_LUA)
    allowed, remaining, retry_ms = script(keys=[f"codeexec:bucket:{bucket}"], args=[rate, burst, now_ms, 1])
    return BucketResult(bool(allowed), int(remaining), int(retry_ms) / 1000)


class KeyTokenBucketThrottle(BaseThrottle):
    """Each authenticated request takes a token from its key's bucket (rps, burst)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        key = request.user
        if not isinstance(key, ApiKey):
            return True  # unauthenticated requests are limited by address in the authenticator
        result = take(f"key:{key.pk}", max(key.rps, 1e-6), max(key.burst, 1))
        # Read by RateLimitHeadersMiddleware for every answer, 429s included.
        request._request.ratelimit = (key.burst, result.remaining)
        self._wait = result.retry_after_s
        return result.allowed

    def wait(self) -> float | None:
        return math.ceil(getattr(self, "_wait", 1.0))


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR, or behind a trusted proxy the right-most X-Forwarded-For hop it did not add."""
    remote = str(request.META.get("REMOTE_ADDR", "") or "unknown")
    trusted = settings.TRUSTED_PROXIES
    if not trusted or not _in_networks(remote, trusted):
        return remote
    hops = [h.strip() for h in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted):
            return hop
    return hops[0] if hops else remote


def _in_networks(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def ratelimit_client_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit `key` callable."""
    return client_address(request)
