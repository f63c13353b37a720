"""scripts/run-host.sh, `make run`'s servers: a Ctrl-C stops each server with exactly one SIGTERM (Dramatiq's
worker takes a second signal as "kill now" and skips its shutdown), and one server ending stops the other.

The servers are stand-ins that log the signals they get: the script's signalling is what is under test,
not Dramatiq's or gunicorn's handling of it (the real stack's graceful stop is checked by hand in the
README's `make run` check)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "run-host.sh"

# A server stand-in: logs "<role> start <pgid> <stdin>", then each signal it gets; ends STAY_S (0.3) s after
# the first SIGTERM (a graceful stop takes a while: a second signal would land in it), or with
# EXIT_CODE_<ROLE> when set.
SERVER = textwrap.dedent(
    """\
    import os, signal, sys, time
    role = "worker" if "rundramatiq" in sys.argv else "web"
    log = open(os.environ["LOG"], "a", buffering=1)
    stopping = []
    def on(signum, frame):
        log.write(f"{role} {signal.Signals(signum).name}\\n")
        if signum == signal.SIGTERM:
            stopping.append(time.monotonic())
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on)
    log.write(f"{role} start {os.getpgid(0)} {os.readlink('/proc/self/fd/0')}\\n")
    code = os.environ.get("EXIT_CODE_" + role.upper())
    if code is not None:
        time.sleep(0.3)
        sys.exit(int(code))
    stay = float(os.environ.get("STAY_S", "0.3"))
    while not stopping or time.monotonic() - stopping[0] < stay:
        time.sleep(0.02)
    log.write(f"{role} end\\n")
    """
)


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever a failing test leaves (the script, stand-ins in their own groups) is killed."""
    yield
    log = tmp_path / "signals.log"
    groups = [int(line.split()[2]) for line in _lines(log) if " start " in line] if log.exists() else []
    for pgid in groups + [p.pid for p in STARTED]:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in STARTED:
        proc.wait(timeout=10)
    STARTED.clear()


STARTED: list[subprocess.Popen[bytes]] = []


def _start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    server = tmp_path / "server.py"
    server.write_text(SERVER)
    fake = tmp_path / "fake-server"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {server} "$@"\n')
    fake.chmod(0o755)
    log = tmp_path / "signals.log"
    proc = subprocess.Popen(
        [str(SCRIPT), str(fake), str(fake), "18999", "4", "2", "16"],
        cwd=ROOT,
        env={**os.environ, "LOG": str(log), **env},
        stdin=subprocess.PIPE,  # as the terminal would be: the servers must not get it
        # As a terminal runs `make run`: a process group of its own (the foreground one), with SIGINT
        # and SIGQUIT at their defaults whatever this test process inherited.
        process_group=0,
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGQUIT)],
    )
    STARTED.append(proc)
    deadline = time.monotonic() + 20
    while log.read_text().count(" start ") < 2 if log.exists() else True:
        assert time.monotonic() < deadline, "the stand-in servers did not start"
        assert proc.poll() is None, f"run-host.sh ended early: {proc.returncode}"
        time.sleep(0.02)
    return proc, log


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_reaches_each_server_once(tmp_path: Path, sig: signal.Signals) -> None:
    proc, log = _start(tmp_path)
    starts = [line.split() for line in _lines(log) if " start " in line]
    assert all(int(pgid) != proc.pid for _role, _start, pgid, _stdin in starts), "the servers share its group"
    assert all(stdin == "/dev/null" for *_, stdin in starts), starts  # never the terminal
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals its foreground process group
    else:
        proc.send_signal(sig)  # `kill` of the script alone
    assert proc.wait(timeout=20) == 128 + sig
    lines = _lines(log)
    for role in ("worker", "web"):
        got = [line for line in lines if line.startswith(f"{role} ") and " start " not in line]
        assert got == [f"{role} SIGTERM", f"{role} end"], lines


def test_one_server_ending_stops_the_other(tmp_path: Path) -> None:
    proc, log = _start(tmp_path, EXIT_CODE_WEB="3")  # say gunicorn could not bind its port
    assert proc.wait(timeout=20) == 3
    lines = _lines(log)
    assert [line for line in lines if line.startswith("worker ") and " start " not in line] == [
        "worker SIGTERM",
        "worker end",
    ], lines
    assert not any(line.startswith("web SIG") for line in lines), lines


def test_wrong_usage_is_refused() -> None:
    done = subprocess.run([str(SCRIPT), "python"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_a_stopped_server_is_continued_so_it_can_stop(tmp_path: Path) -> None:
    proc, log = _start(tmp_path)
    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    web_pid = next(int(p) for p in found if "codeexec_site.wsgi" in Path(f"/proc/{p}/cmdline").read_text())
    os.kill(web_pid, signal.SIGSTOP)  # as a terminal's SIGTTIN would
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=20) == 128 + signal.SIGINT
    lines = _lines(log)
    assert [line for line in lines if line.startswith("web ") and " start " not in line] == [
        "web SIGTERM",
        "web end",
    ], lines


def test_a_third_stop_signal_kills_both(tmp_path: Path) -> None:
    proc, log = _start(tmp_path, STAY_S="60")  # a graceful stop that would take a minute
    for _ in range(3):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
    assert proc.wait(timeout=20) == 128 + signal.SIGINT
    lines = _lines(log)
    assert lines.count("worker SIGTERM") == 1 and lines.count("web SIGTERM") == 1, lines
    assert not any(line.endswith(" end") for line in lines), lines  # killed, not ended
