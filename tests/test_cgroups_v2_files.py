"""The cgroup v2 code path against a directory laid out like a v2 hierarchy.

This machine's controllers are all on v1 (hybrid host), so the real-kernel conformance suite
exercises v1; this fast test pins down which v2 files are written and read. It proves no
enforcement (the suite does that) — only that the v2 driver speaks the v2 interface.
"""

from __future__ import annotations

from pathlib import Path

from sandbox.cgroups import CgroupDriver


def fake_v2(root: Path) -> CgroupDriver:
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")
    driver = CgroupDriver("codeexec/test", mounts=[("cgroup2", str(root), {"rw"})])
    return driver


def test_it_picks_v2_when_it_has_the_controllers(tmp_path: Path) -> None:
    driver = fake_v2(tmp_path)
    assert driver.version == 2


def test_it_prefers_v1_controllers_on_a_hybrid_host(tmp_path: Path) -> None:
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("\n")
    mounts = [("cgroup2", str(tmp_path / "unified"), {"rw"})] + [
        ("cgroup", str(tmp_path / c), {"rw", c}) for c in ("memory", "pids", "cpuacct", "freezer")
    ]
    driver = CgroupDriver("codeexec", mounts=mounts)
    assert driver.version == 1
    assert set(driver.v1) == {"memory", "pids", "cpuacct", "freezer"}


def test_it_delegates_controllers_and_writes_v2_limits(tmp_path: Path, monkeypatch) -> None:
    driver = fake_v2(tmp_path)
    # A real cgroupfs creates the interface files itself; mkdir here must do the same.
    real_mkdir = Path.mkdir

    def mkdir(self: Path, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        real_mkdir(self, mode, parents, exist_ok)
        for name in (
            "cgroup.controllers",
            "cgroup.subtree_control",
            "memory.max",
            "memory.swap.max",
            "memory.oom.group",
            "pids.max",
            "cgroup.procs",
        ):
            if not (self / name).exists():
                (self / name).write_text("")
        (self / "cgroup.controllers").write_text("cpu memory pids\n")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    group = driver.group("run_1.run")
    assert set((tmp_path / "cgroup.subtree_control").read_text().split()) == {"+cpu", "+memory", "+pids"}
    assert set((tmp_path / "codeexec" / "test" / "cgroup.subtree_control").read_text().split()) == {
        "+cpu",
        "+memory",
        "+pids",
    }
    group.create(memory_bytes=64 << 20, pids_max=66)
    run = tmp_path / "codeexec" / "test" / "run_1.run"
    assert (run / "memory.max").read_text() == str(64 << 20)
    assert (run / "memory.swap.max").read_text() == "0"
    assert (run / "memory.oom.group").read_text() == "1"
    assert (run / "pids.max").read_text() == "66"
    group.add(1234)
    assert (run / "cgroup.procs").read_text() == "1234"

    (run / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (run / "memory.peak").write_text("12345678\n")
    (run / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.cpu_usage_ms() == 2500
    assert group.memory_peak_bytes() == 12345678
    assert group.oom_kills() == 1
    (run / "memory.peak").unlink()
    assert group.memory_peak_bytes() is None  # unknown, never a guess


def test_a_group_being_removed_has_no_processes_and_kill_all_returns(tmp_path: Path, monkeypatch) -> None:
    """A cancel that meets its run's group while the run's own teardown removes it: the kernel answers
    ENODEV for the group's files; that is an empty group, not an error of the cancel."""
    import errno

    import sandbox.cgroups as cgroups

    group = cgroups.RunCgroup(fake_v2(tmp_path), "run_x.run")

    def being_removed(path: Path) -> str:
        raise OSError(errno.ENODEV, "No such device", str(path))

    monkeypatch.setattr(cgroups, "_read", being_removed)
    assert group.procs() == []
    group.kill_all()  # returns, raises nothing

    def other_failure(path: Path) -> str:
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(cgroups, "_read", other_failure)
    try:
        group.procs()
    except OSError as exc:
        assert exc.errno == errno.EIO
    else:
        raise AssertionError("an I/O error reading cgroup.procs was swallowed")
