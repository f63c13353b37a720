"""rlimits, the second layer under the cgroup: no core dumps, no single file larger than the largest
filesystem the program may write to, 1024 open files (4096 at most), on the warm and the cold path,
with hard limits the program cannot raise again."""

from __future__ import annotations

import json

import pytest

from sandbox import Limits, Status

MIB = 1024 * 1024

PROBE = """
import json, resource
out = {}
for name in ("CORE", "FSIZE", "NOFILE"):
    which = getattr(resource, "RLIMIT_" + name)
    soft, hard = resource.getrlimit(which)
    try:
        resource.setrlimit(which, (soft, hard + 1))
        raised = "raised"
    except (ValueError, OSError) as exc:
        raised = type(exc).__name__
    out[name] = [soft, hard, raised]
print(json.dumps(out))
"""


@pytest.mark.parametrize("path", ["warm", "cold"])
def test_the_program_runs_under_lowered_rlimits_it_cannot_raise(run, backend, path: str) -> None:
    if path == "warm":
        assert backend.wait_for_pool(90)
    before = backend.warm_used
    # A run with an environment of its own never takes a warm sandbox.
    result = run("python", PROBE, env={"COLD": "1"} if path == "cold" else None)
    assert backend.warm_used - before == (1 if path == "warm" else 0)
    assert result.status == Status.SUCCEEDED, (result.status, result.stderr[-500:])
    limits = json.loads(result.stdout)
    fsize = max(Limits().disk_mb, backend.config.tmp_mb) * MIB
    assert limits["CORE"][:2] == [0, 0]
    assert limits["FSIZE"][:2] == [fsize, fsize]
    assert limits["NOFILE"][:2] == [1024, 4096]
    assert {name: value[2] for name, value in limits.items()} == dict.fromkeys(limits, "ValueError")
