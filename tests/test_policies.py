"""The policy files themselves: the AppArmor profile parses; the seccomp profile is the one both backends use."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from sandbox.backends.base import DEFAULT_SECCOMP_PROFILE

ROOT = Path(__file__).resolve().parent.parent


def test_it_ships_an_apparmor_profile_that_parses() -> None:
    parser = shutil.which("apparmor_parser")
    assert parser is not None, "apparmor_parser is missing: apt-get install apparmor (.ci/run installs it)"
    proc = subprocess.run(
        [parser, "-Q", "--skip-cache", str(ROOT / "apparmor" / "codeexec-runner")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_it_names_the_profile_apparmor_profile_expects() -> None:
    text = (ROOT / "apparmor" / "codeexec-runner").read_text()
    assert "profile codeexec-runner " in text
    assert "deny mount" in text and "deny ptrace" in text and "deny network raw" in text


def test_it_defaults_both_backends_to_the_repository_seccomp_profile() -> None:
    assert DEFAULT_SECCOMP_PROFILE == ROOT / "seccomp" / "profile.json"
    profile = json.loads(DEFAULT_SECCOMP_PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
