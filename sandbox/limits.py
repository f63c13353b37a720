"""Run limits: names with units, server defaults and maximums (SPEC §3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .errors import InvalidSpec

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """Effective limits of one run. Every field has its unit in its name."""

    timeout_ms: int = 10_000
    cpu_ms: int = 10_000
    memory_mb: int = 256
    pids: int = 64
    disk_mb: int = 64
    max_output_bytes: int = 65_536
    max_artifacts: int = 16
    max_artifact_bytes: int = 10 * MIB
    max_artifacts_total_bytes: int = 20 * MIB
    compile_timeout_ms: int = 15_000
    compile_memory_mb: int = 512

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


DEFAULT_LIMITS = Limits()

MAX_LIMITS = Limits(
    timeout_ms=60_000,
    cpu_ms=60_000,
    memory_mb=2048,
    pids=256,
    disk_mb=1024,
    max_output_bytes=1_048_576,
    max_artifacts=100,
    max_artifact_bytes=100 * MIB,
    max_artifacts_total_bytes=200 * MIB,
    compile_timeout_ms=60_000,
    compile_memory_mb=2048,
)

# Below these a run cannot even start its interpreter; asking for less is a client error.
MIN_LIMITS = Limits(
    timeout_ms=1,
    cpu_ms=1,
    memory_mb=16,
    pids=8,
    disk_mb=1,
    max_output_bytes=0,
    max_artifacts=0,
    max_artifact_bytes=0,
    max_artifacts_total_bytes=0,
    compile_timeout_ms=1,
    compile_memory_mb=64,
)


def resolve_limits(
    requested: Mapping[str, Any] | None,
    defaults: Limits = DEFAULT_LIMITS,
    maximums: Limits = MAX_LIMITS,
    param_prefix: str = "limits",
) -> Limits:
    """Merge a client's limits over the defaults, rejecting unknown names and out-of-range values.

    `cpu_ms` follows `timeout_ms` when only the latter is given (SPEC: cpu_ms = timeout_ms),
    and defaults never exceed the maximums even when an operator sets them so.
    """
    requested = dict(requested or {})
    unknown = sorted(set(requested) - set(Limits.field_names()))
    if unknown:
        raise InvalidSpec(f"Unknown limit '{unknown[0]}'.", param=f"{param_prefix}.{unknown[0]}")
    values: dict[str, int] = {}
    for name in Limits.field_names():
        if name not in requested or requested[name] is None:
            continue
        value = requested[name]
        param = f"{param_prefix}.{name}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSpec(f"'{name}' must be an integer.", param=param)
        low, high = getattr(MIN_LIMITS, name), getattr(maximums, name)
        if value < low:
            raise InvalidSpec(f"'{name}' must be at least {low}.", param=param)
        if value > high:
            raise InvalidSpec(f"'{name}' must be at most {high} (the server maximum).", param=param)
        values[name] = value
    merged = {name: min(getattr(defaults, name), getattr(maximums, name)) for name in Limits.field_names()}
    if "timeout_ms" in values and "cpu_ms" not in values:
        merged["cpu_ms"] = min(values["timeout_ms"], maximums.cpu_ms)
    merged.update(values)
    return Limits(**merged)
