"""A run's cgroup left behind by a dead worker (whole, or removed only half-way) is found by the janitor
and does not stop the run's next attempt from making its group. Real cgroups (root)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sandbox.cgroups import CgroupDriver

MIB = 1024 * 1024


@pytest.fixture
def driver() -> Iterator[CgroupDriver]:
    d = CgroupDriver(f"codeexec-test-leftovers-{os.getpid()}")
    d.prepare()
    yield d
    for name in d.existing_groups():
        d.group(name).destroy()
    d.remove_parent()


def test_a_group_removed_half_way_is_still_listed(driver: CgroupDriver) -> None:
    group = driver.group("run_halfway.run")
    group.create(64 * MIB, 16)
    if driver.version == 1:  # the memory controller's directory gone, the others still there (v2: one hierarchy)
        group.paths["memory"].rmdir()
    assert "run_halfway.run" in driver.existing_groups()
    driver.group("run_halfway.run").destroy()
    assert "run_halfway.run" not in driver.existing_groups()


def test_the_next_attempt_makes_its_group_over_a_leftover(driver: CgroupDriver) -> None:
    stale = driver.group("run_again.run")
    stale.create(64 * MIB, 16)
    if driver.version == 1:
        stale.paths["memory"].rmdir()  # half-way, as a dying worker can leave it
    fresh = driver.group("run_again.run")
    fresh.create(128 * MIB, 32)
    assert all(p.is_dir() for p in fresh.paths.values())
    limit = "memory.max" if driver.version == 2 else "memory.limit_in_bytes"
    key = "unified" if driver.version == 2 else "memory"
    assert int((fresh.paths[key] / limit).read_text()) == 128 * MIB
