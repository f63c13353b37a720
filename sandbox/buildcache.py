"""A content-addressed cache of built programs (Go), so a repeated program skips its compile step.

Keyed by SHA-256 over everything that decides what the build produces: the backend and toolchain
identity, the compile command and environment, and every source file's path and bytes. A build with
input files is never cached (`//go:embed` could read them). Only successful builds are stored, copied
out of the run's /build with O_NOFOLLOW and checked to be a regular file. Entries live in a root-owned
0700 directory the sandbox never sees; a hit is copied into the next run's /build, root-owned and
read-only. Total size is bounded: the least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20


class BuildCache:
    def __init__(self, root: Path, max_bytes: int, max_entry_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def prepare(self) -> None:
        if self.enabled:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)

    @staticmethod
    def key(toolchain: str, argv: Sequence[str], env: Mapping[str, str], sources: Sequence[tuple[str, bytes]]) -> str:
        digest = hashlib.sha256()
        header = {"toolchain": toolchain, "argv": list(argv), "env": sorted(env.items())}
        digest.update(json.dumps(header, sort_keys=True).encode())
        for path, content in sorted(sources):
            digest.update(b"\0file\0" + path.encode() + b"\0" + str(len(content)).encode() + b"\0")
            digest.update(content)
        return digest.hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / key

    def fetch(self, key: str, dest: Path) -> bool:
        """Copy the cached program to `dest` (root-owned, 0755); False on a miss."""
        if not self.enabled:
            return False
        entry = self._entry(key)
        try:
            src_fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            self.misses += 1
            return False
        try:
            _copy(src_fd, dest, self.max_entry_bytes)
            os.utime(entry)  # recently used: evicted last
        except OSError:
            log.warning("build cache: could not use entry %s", key[:12], exc_info=True)
            self.misses += 1
            return False
        finally:
            os.close(src_fd)
        self.hits += 1
        return True

    def store(self, key: str, built: Path) -> None:
        """Keep a successful build; any doubt about the file (not regular, too big) keeps nothing."""
        if not self.enabled:
            return
        try:
            src_fd = os.open(built, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{threading.get_ident()}"
        try:
            _copy(src_fd, tmp, self.max_entry_bytes)
            os.replace(tmp, self._entry(key))
            self.stores += 1
        except OSError as exc:
            log.info("build cache: not storing %s: %s", key[:12], exc)
            tmp.unlink(missing_ok=True)
            return
        finally:
            os.close(src_fd)
        self._evict()

    def _evict(self) -> None:
        with self._lock:
            entries = []
            for child in self.root.iterdir():
                try:
                    st = child.lstat()
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and not child.name.startswith(".tmp-"):
                    entries.append((st.st_mtime, st.st_size, child))
            total = sum(size for _mtime, size, _path in entries)
            for _mtime, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file()) if self.root.is_dir() else 0


def _copy(src_fd: int, dest: Path, max_bytes: int) -> None:
    st = os.fstat(src_fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"not a regular file: {dest.name}")
    if st.st_size > max_bytes:
        raise OSError(f"{st.st_size} bytes, over the cache's entry limit")
    dst_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    try:
        copied = 0
        while chunk := os.read(src_fd, COPY_CHUNK):
            copied += len(chunk)
            if copied > max_bytes:
                raise OSError("the file grew past the cache's entry limit")
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst_fd, view) :]
        os.fchmod(dst_fd, 0o755)
    except BaseException:
        os.close(dst_fd)
        dest.unlink(missing_ok=True)
        raise
    os.close(dst_fd)
