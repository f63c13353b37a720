"""Compile the seccomp policy (Docker's JSON profile format) into a BPF program for bubblewrap.

The same JSON file is handed to Docker by the docker backend, so both backends enforce one policy.
Compilation happens once per process and profile version; each run gets a fresh read-only fd.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import threading
from pathlib import Path
from typing import Any

from .errors import SandboxUnavailable

log = logging.getLogger(__name__)

_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
# libseccomp answers -1 for a name it does not know (other negative numbers are its pseudo-syscalls).
_NR_SCMP_ERROR = -1
_NATIVE_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def _action(seccomp: Any, name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ALLOW":
        return int(seccomp.ALLOW)
    if name == "SCMP_ACT_ERRNO":
        return int(seccomp.ERRNO(errno.EPERM if errno_ret is None else errno_ret))
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return int(seccomp.KILL)
    if name == "SCMP_ACT_KILL_PROCESS":
        return int(seccomp.KILL_PROCESS)
    if name == "SCMP_ACT_LOG":
        return int(seccomp.LOG)
    raise SandboxUnavailable(f"seccomp profile uses unsupported action {name}")


def compile_profile(profile: dict[str, Any], out_path: Path) -> list[str]:
    """Write the BPF for `profile` to `out_path`; return the syscall names skipped as unknown."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so missing
        raise SandboxUnavailable(
            f"pyseccomp/libseccomp unavailable ({exc}); pip install pyseccomp and apt-get install libseccomp2"
        ) from exc
    arch_name = _NATIVE_ARCH.get(platform.machine())
    listed = {a.get("architecture") for a in profile.get("archMap", [])}
    if arch_name is None or (listed and arch_name not in listed):
        raise SandboxUnavailable(f"seccomp profile does not cover this architecture ({platform.machine()})")
    default = _action(seccomp, profile["defaultAction"], profile.get("defaultErrnoRet"))
    filt = seccomp.SyscallFilter(default)
    # Only the native ABI is allowed: other arches (e.g. 32-bit int 0x80 on x86_64) hit the bad-arch kill.
    skipped: list[str] = []
    for rule in profile.get("syscalls", []):
        if rule.get("includes") or rule.get("excludes"):
            raise SandboxUnavailable("seccomp profile rules with includes/excludes are not supported")
        action = _action(seccomp, rule["action"], rule.get("errnoRet"))
        args = [seccomp.Arg(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0)) for a in rule.get("args", [])]
        for name in rule["names"]:
            try:
                number = seccomp.resolve_syscall(seccomp.system_arch(), name)
            except Exception:
                number = _NR_SCMP_ERROR
            if number == _NR_SCMP_ERROR:  # unknown to this libseccomp: skipped, not fatal
                skipped.append(name)
                continue
            filt.add_rule(action, name, *args)
    tmp = out_path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        filt.export_bpf(f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_path)
    return skipped


class SeccompProgram:
    """A compiled profile cached on disk under `cache_dir`, keyed by the profile's content."""

    def __init__(self, profile_path: Path, cache_dir: Path) -> None:
        self.profile_path = profile_path
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._bpf_path: Path | None = None
        self._key: str | None = None
        self.skipped: list[str] = []

    def _ensure(self) -> Path:
        try:
            raw = self.profile_path.read_bytes()
        except OSError as exc:
            raise SandboxUnavailable(f"cannot read seccomp profile {self.profile_path}: {exc}") from exc
        key = hashlib.sha256(raw).hexdigest()[:16]
        with self._lock:
            if self._key == key and self._bpf_path is not None and self._bpf_path.exists():
                return self._bpf_path
            try:
                profile = json.loads(raw)
            except ValueError as exc:
                raise SandboxUnavailable(f"seccomp profile {self.profile_path} is not valid JSON: {exc}") from exc
            self.cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            bpf_path = self.cache_dir / f"seccomp-{key}.bpf"
            self.skipped = compile_profile(profile, bpf_path)
            if self.skipped:
                log.info("seccomp: syscalls unknown to this libseccomp skipped: %s", ", ".join(self.skipped))
            self._bpf_path, self._key = bpf_path, key
            return bpf_path

    def open_fd(self) -> int:
        """A new fd positioned at the start of the BPF program (bubblewrap reads it to EOF)."""
        return os.open(self._ensure(), os.O_RDONLY | os.O_CLOEXEC)
