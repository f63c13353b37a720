"""BuildCache on its own: keys, what it refuses to store, the size bound (least recently used first)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sandbox.buildcache import BuildCache


def _cache(tmp_path: Path, max_bytes: int = 100, max_entry: int = 60) -> BuildCache:
    cache = BuildCache(tmp_path / "cache", max_bytes, max_entry)
    cache.prepare()
    return cache


def test_the_key_covers_toolchain_command_environment_and_every_file() -> None:
    base = BuildCache.key("bwrap:go:1.19", ["go", "build"], {"A": "1"}, [("main.go", b"x"), ("u.go", b"y")])
    assert base == BuildCache.key("bwrap:go:1.19", ["go", "build"], {"A": "1"}, [("u.go", b"y"), ("main.go", b"x")])
    for other in (
        BuildCache.key("docker:go:1.19", ["go", "build"], {"A": "1"}, [("main.go", b"x"), ("u.go", b"y")]),
        BuildCache.key("bwrap:go:1.19", ["go", "build", "-race"], {"A": "1"}, [("main.go", b"x"), ("u.go", b"y")]),
        BuildCache.key("bwrap:go:1.19", ["go", "build"], {"A": "2"}, [("main.go", b"x"), ("u.go", b"y")]),
        BuildCache.key("bwrap:go:1.19", ["go", "build"], {"A": "1"}, [("main.go", b"x"), ("v.go", b"y")]),
        BuildCache.key("bwrap:go:1.19", ["go", "build"], {"A": "1"}, [("main.go", b"xu.go"), ("", b"y")]),
    ):
        assert other != base


def test_it_round_trips_a_build_read_only(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    built = tmp_path / "main"
    built.write_bytes(b"\x7fELF program")
    cache.store("k1", built)
    dest = tmp_path / "next-build"
    assert cache.fetch("k1", dest)
    assert dest.read_bytes() == b"\x7fELF program"
    assert dest.stat().st_mode & 0o777 == 0o755
    assert not cache.fetch("k2", tmp_path / "other")
    assert (cache.hits, cache.misses, cache.stores) == (1, 1, 1)


def test_it_refuses_links_fifos_and_oversized_files(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"host file")
    (tmp_path / "link").symlink_to(secret)
    cache.store("link", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    cache.store("fifo", tmp_path / "fifo")  # must not block on the FIFO either
    (tmp_path / "big").write_bytes(b"x" * 61)
    cache.store("big", tmp_path / "big")
    cache.store("missing", tmp_path / "nothing-here")
    assert sorted(p.name for p in cache.root.iterdir()) == []
    assert cache.stores == 0


def test_it_stays_within_its_size_evicting_the_least_recently_used(tmp_path: Path) -> None:
    cache = _cache(tmp_path, max_bytes=100)
    for name in ("a", "b", "c"):
        src = tmp_path / f"src-{name}"
        src.write_bytes(name.encode() * 40)
        cache.store(name, src)
        time.sleep(0.02)
        if name == "b":
            assert cache.fetch("a", tmp_path / "use-a")  # a is used again: b is now the oldest
            time.sleep(0.02)
    assert sorted(p.name for p in cache.root.iterdir()) == ["a", "c"]
    assert cache.size_bytes() <= 100


def test_a_zero_size_turns_it_off(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "off", 0, 60)
    cache.prepare()
    assert not cache.enabled and not (tmp_path / "off").exists()
    (tmp_path / "main").write_bytes(b"x")
    cache.store("k", tmp_path / "main")
    assert not cache.fetch("k", tmp_path / "dest")
