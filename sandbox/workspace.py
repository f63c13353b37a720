"""The run's directory on the host: a size-capped tmpfs, files staged without following links,
artifacts collected without following links, and removal on every path.

Layout of one run (host side, all root-owned unless noted):

    <root>/<run_id>/            0711  the run directory, holds the lock file
    <root>/<run_id>/fs/         tmpfs (size = disk cap + inputs), mounted nosuid,nodev
    <root>/<run_id>/fs/work     0700  owned by the sandbox uid  -> /work (read-write)
    <root>/<run_id>/fs/inputs   0755  root                      -> /work/inputs (read-only)
    <root>/<run_id>/fs/build    0700  owned by the sandbox uid  -> /build (compiled programs)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import hashlib
import mimetypes
import os
import secrets
import shutil
import stat
import time
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import InvalidSpec, SandboxUnavailable
from .result import Artifact, SkippedArtifact

MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 16
MAX_SCAN_ENTRIES = 10_000
COPY_CHUNK = 1 << 20
STALE_UNLOCKED_S = 60

MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def normalize_relpath(path: object, param: str) -> str:
    """Return a clean relative path or raise InvalidSpec: no absolute, no '..', no empty or odd names."""
    if not isinstance(path, str) or not path:
        raise InvalidSpec("Path must be a non-empty string.", param=param)
    if not path.isascii() and any(0xD800 <= ord(ch) <= 0xDFFF for ch in path):  # "\ud800" in JSON
        raise InvalidSpec("Path must be valid Unicode text (no lone surrogates).", param=param)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidSpec(f"Path is longer than {MAX_PATH_BYTES} bytes.", param=param)
    if path.startswith("/") or "\\" in path:
        raise InvalidSpec("Path must be relative and use '/' separators.", param=param)
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in path):
        raise InvalidSpec("Path contains control characters.", param=param)
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise InvalidSpec(f"Path is deeper than {MAX_DEPTH} levels.", param=param)
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidSpec("Path may not contain empty, '.' or '..' components.", param=param)
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise InvalidSpec(f"A path component is longer than {MAX_COMPONENT_BYTES} bytes.", param=param)
    if unicodedata.normalize("NFC", path) != path:
        raise InvalidSpec("Path must be in Unicode NFC form.", param=param)
    return path


def mount_tmpfs(target: Path, size_bytes: int, nr_inodes: int, mode: int = 0o755) -> None:
    opts = f"size={size_bytes},nr_inodes={nr_inodes},mode={mode:o},uid=0,gid=0".encode()
    if _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(
            f"cannot mount the run's tmpfs at {target}: {os.strerror(err)} (the bwrap backend must run as root)"
        )


def umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not mounted / already gone
            raise OSError(err, os.strerror(err), str(target))


def is_mountpoint(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


@dataclasses.dataclass
class Workspace:
    """One run's host directory. Create with `Workspace.create`, always `destroy()` in a finally."""

    root: Path
    run_dir: Path
    uid: int
    gid: int
    lock_fd: int | None = None

    @property
    def fs(self) -> Path:
        return self.run_dir / "fs"

    @property
    def work(self) -> Path:
        return self.fs / "work"

    @property
    def inputs(self) -> Path:
        return self.fs / "inputs"

    @property
    def build(self) -> Path:
        return self.run_dir / "build"

    @classmethod
    def create(
        cls, root: Path, run_id: str, uid: int, gid: int, size_bytes: int, nr_inodes: int, build_size_bytes: int = 0
    ) -> Workspace:
        """Make the run directory and its tmpfs; compiled languages get a separate tmpfs for /build,
        so build products never eat into (or add to) the program's `disk_mb` of /work."""
        root.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(root, 0o711)
        run_dir = root / run_id
        os.mkdir(run_dir, 0o711)  # fails if it exists: one directory per run
        ws = cls(root=root, run_dir=run_dir, uid=uid, gid=gid)
        ws.lock_fd = lock_dir(run_dir)  # tells the janitor this directory is in use
        os.mkdir(ws.fs, 0o755)
        mount_tmpfs(ws.fs, size_bytes, nr_inodes)
        for path, mode, owner in ((ws.work, 0o700, uid), (ws.inputs, 0o755, 0)):
            os.mkdir(path, mode)
            os.chown(path, owner, owner if owner == 0 else gid)
        if build_size_bytes > 0:
            os.mkdir(ws.build, 0o755)
            mount_tmpfs(ws.build, build_size_bytes, 4096, mode=0o700)
            os.chown(ws.build, uid, gid)
        return ws

    def write_source(self, relpath: str, content: bytes) -> None:
        """Write a file under /work owned by the sandbox user (parents created, links never followed)."""
        self._write(self.work, relpath, content, owner=(self.uid, self.gid), file_mode=0o644, dir_mode=0o755)

    def make_source_pipe(self, name: str) -> Path:
        """A FIFO at /work/<name> (top level) owned by the sandbox user: an interpreter started before its
        program exists opens it and waits for the program (backends/pool.py)."""
        dir_fd = os.open(self.work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.mkfifo(name, 0o600, dir_fd=dir_fd)
            os.chown(name, self.uid, self.gid, dir_fd=dir_fd, follow_symlinks=False)
            os.chmod(name, 0o644, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        return self.work / name

    def replace_source(self, name: str, content: bytes) -> None:
        """write_source of a top-level file over what is there (a source pipe whose reader keeps it open):
        written under a hidden name beside it, then renamed over it."""
        hidden = f".{name}.{secrets.token_hex(8)}"
        self.write_source(hidden, content)
        dir_fd = os.open(self.work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.rename(hidden, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def write_input(self, relpath: str, chunks: Iterator[bytes]) -> int:
        """Stage an input file under /work/inputs, root-owned and read-only."""
        return self._write_stream(self.inputs, relpath, chunks, owner=(0, 0), file_mode=0o444, dir_mode=0o755)

    def _write(
        self, base: Path, relpath: str, content: bytes, owner: tuple[int, int], file_mode: int, dir_mode: int
    ) -> None:
        self._write_stream(base, relpath, iter([content]), owner, file_mode, dir_mode)

    def _write_stream(
        self, base: Path, relpath: str, chunks: Iterator[bytes], owner: tuple[int, int], file_mode: int, dir_mode: int
    ) -> int:
        parts = relpath.split("/")
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, dir_mode, dir_fd=dir_fd)
                    os.chown(part, *owner, dir_fd=dir_fd, follow_symlinks=False)
                except FileExistsError:
                    pass
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = next_fd
            fd = os.open(
                parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
            written = 0
            try:
                for chunk in chunks:
                    _write_all(fd, chunk)
                    written += len(chunk)
                os.fchown(fd, *owner)
                os.fchmod(fd, file_mode)
            finally:
                os.close(fd)
            return written
        finally:
            os.close(dir_fd)

    def collect_artifacts(
        self,
        dest_dir: Path | None,
        max_artifacts: int,
        max_artifact_bytes: int,
        max_total_bytes: int,
    ) -> tuple[list[Artifact], list[SkippedArtifact]]:
        """Copy regular files under /work/outputs to `dest_dir` (if given), never following links.

        Only call this when no sandboxed process is left: the tree is then stable.
        """
        collected: list[Artifact] = []
        skipped: list[SkippedArtifact] = []
        total = 0
        try:
            top = os.open(self.work / "outputs", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return collected, skipped
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # outputs itself is a symlink
                return collected, [SkippedArtifact("outputs", "not a directory (symlink)")]
            raise
        try:
            for relpath, dir_fd, name in _walk_regular_candidates(top, "outputs", skipped):
                if len(collected) >= max_artifacts:
                    skipped.append(SkippedArtifact(relpath, f"more than max_artifacts={max_artifacts}"))
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
                except OSError as exc:
                    skipped.append(SkippedArtifact(relpath, f"cannot open: {exc.strerror}"))
                    continue
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        skipped.append(SkippedArtifact(relpath, "not a regular file"))
                        continue
                    if st.st_nlink != 1:
                        skipped.append(SkippedArtifact(relpath, "hard-linked file"))
                        continue
                    if st.st_size > max_artifact_bytes:
                        skipped.append(SkippedArtifact(relpath, f"larger than max_artifact_bytes={max_artifact_bytes}"))
                        continue
                    if total + st.st_size > max_total_bytes:
                        skipped.append(SkippedArtifact(relpath, f"over max_artifacts_total_bytes={max_total_bytes}"))
                        continue
                    artifact = _copy_artifact(fd, relpath, dest_dir, st.st_size)
                    total += artifact.bytes
                    collected.append(artifact)
                finally:
                    os.close(fd)
        finally:
            os.close(top)
        return collected, skipped

    def destroy(self) -> None:
        """Unmount and remove everything of this run. Safe to call twice and after partial creation."""
        for mount in (self.build, self.fs):
            if is_mountpoint(mount):
                umount(mount)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _walk_regular_candidates(
    top_fd: int,
    top_rel: str,
    skipped: list[SkippedArtifact],
) -> Iterator[tuple[str, int, str]]:
    """Yield (relpath, dir_fd, name) for every non-directory entry, sorted, descending without links."""
    budget = [MAX_SCAN_ENTRIES]

    def walk(dir_fd: int, rel: str, depth: int) -> Iterator[tuple[str, int, str]]:
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            budget[0] -= 1
            if budget[0] < 0:
                skipped.append(SkippedArtifact(rel, f"more than {MAX_SCAN_ENTRIES} entries scanned"))
                return
            relpath = f"{rel}/{entry.name}"
            try:
                relpath.encode("utf-8")
            except UnicodeEncodeError:
                # Names are reported as text (JSON, database): bytes that are not UTF-8 cannot be.
                printable = relpath.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                skipped.append(SkippedArtifact(printable, "name is not valid UTF-8"))
                continue
            st = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if depth >= MAX_DEPTH:
                    skipped.append(SkippedArtifact(relpath, "directory nested too deep"))
                    continue
                try:
                    sub = os.open(
                        entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                    )
                except OSError as exc:
                    skipped.append(SkippedArtifact(relpath, f"cannot open directory: {exc.strerror}"))
                    continue
                try:
                    yield from walk(sub, relpath, depth + 1)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                yield relpath, dir_fd, entry.name
            elif stat.S_ISLNK(st.st_mode):
                skipped.append(SkippedArtifact(relpath, "symbolic link"))
            else:
                skipped.append(SkippedArtifact(relpath, "not a regular file"))

    yield from walk(top_fd, top_rel, 1)


def _copy_artifact(fd: int, relpath: str, dest_dir: Path | None, size: int) -> Artifact:
    digest = hashlib.sha256()
    out_fd: int | None = None
    local_path: Path | None = None
    if dest_dir is not None:
        local_path = dest_dir / relpath
        local_path.parent.mkdir(parents=True, exist_ok=True)
        out_fd = os.open(local_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    copied = 0
    try:
        while copied < size:
            chunk = os.read(fd, min(COPY_CHUNK, size - copied))
            if not chunk:
                break
            digest.update(chunk)
            if out_fd is not None:
                _write_all(out_fd, chunk)
            copied += len(chunk)
    finally:
        if out_fd is not None:
            os.close(out_fd)
    content_type = mimetypes.guess_type(relpath)[0] or "application/octet-stream"
    return Artifact(
        path=relpath,
        bytes=copied,
        sha256=digest.hexdigest(),
        content_type=content_type,
        local_path=str(local_path) if local_path else None,
    )


def lock_dir(directory: Path) -> int:
    """Take `directory`'s lock for this process's life (its fd, kept open; it dies with the process).
    It is taken under another name and renamed, so stale_run_dirs() never sees `lock` unlocked while we
    are alive."""
    pending = directory / ".lock"
    fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(pending, directory / "lock")
    except BaseException:
        os.close(fd)
        raise
    return fd


def stale_run_dirs(root: Path) -> Sequence[Path]:
    """Run directories whose owner process is gone (their lock can be taken)."""
    stale: list[Path] = []
    if not root.is_dir():
        return stale
    for run_dir in root.iterdir():
        if run_dir.name.startswith(".") or not run_dir.is_dir() or run_dir.is_symlink():
            continue
        try:
            fd = os.open(run_dir / "lock", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            # Never got its lock: creation died half-way, or is happening right now.
            if time.time() - run_dir.stat().st_mtime > STALE_UNLOCKED_S:
                stale.append(run_dir)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stale.append(run_dir)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return stale
