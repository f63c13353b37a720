"""A private stack of the service for the end-to-end measures, started and removed by the bench.

gunicorn (gthread) + `manage.py rundramatiq` with the bwrap backend, as `make run` starts them, on a
database and a Redis database of the bench's own, with its own sandbox and storage directories and
cgroup parent. DEBUG=0 as in production, with secrets made for the run (DEBUG=1 would keep the last
9000 SQL queries of every worker connection, which no web request resets: memory growing with runs).
The database is dropped at the end; the processes are stopped by their process groups.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sandbox import SandboxConfig, get_backend

from .common import BenchError, private_dir, progress

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
WEB_WORKERS, WEB_THREADS, WORKER_THREADS = 2, 16, 4
DESCRIPTION = f"gunicorn gthread {WEB_WORKERS}x{WEB_THREADS} + rundramatiq 1x{WORKER_THREADS}, bwrap, DEBUG=0"
KEY_OPTIONS = ["--rps", "1000", "--burst", "1000", "--max-concurrent-runs", "16"]
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class Stack:
    host: str
    port: int
    token: str
    groups: dict[str, int] = dataclasses.field(default_factory=dict)  # "gunicorn"/"rundramatiq": process group
    logs: Path | None = None  # the servers' logs, removed with the stack


def get(host: str, port: int, path: str) -> tuple[int | None, str]:
    """Status and body of a GET (None when nothing answers yet)."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError as exc:
        return None, str(exc)
    finally:
        conn.close()


@contextmanager
def private_stack(database_url: str, redis_url: str, cgroup_parent: str) -> Iterator[Stack]:
    """Create and migrate the database, make a key, start both servers and wait for /readyz; tear all down."""
    db_name = urlsplit(database_url).path.lstrip("/")
    if "bench" not in db_name:  # it is dropped at the end: never the service's own database
        raise BenchError(f"the bench's database must have 'bench' in its name, got {db_name!r}")
    with private_dir("bench-stack") as root:
        sandbox_dir, storage_dir, logs = root / "sandbox", root / "storage", root / "logs"
        storage_dir.mkdir()
        logs.mkdir()
        port = _free_port()
        env = {
            **os.environ,
            # As in production: DEBUG=0 (Django then keeps no query log), secrets of the bench's own.
            "DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
            "SIGNING_KEY": secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SANDBOX_BACKEND": "bwrap",
            "SANDBOX_WORKDIR": str(sandbox_dir),
            "SANDBOX_CGROUP_PARENT": cgroup_parent,
            "STORAGE_DIR": str(storage_dir),
            "DATA_DIR": str(root),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "API_KEYS": "",  # no dev key: the bench makes its own with limits it will not hit
            "PYTHONUNBUFFERED": "1",
        }
        procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        try:
            progress(f"stack: database {db_name}, {redis_url}, port {port}")
            _manage(env, "ensuredb")
            _manage(env, "migrate", "--noinput")
            token = _manage(env, "createapikey", "bench", *KEY_OPTIONS).strip()
            worker_argv = [sys.executable, "manage.py", "rundramatiq", "--processes", "1"]
            worker_argv += ["--threads", str(WORKER_THREADS), "--worker-shutdown-timeout", "30000"]
            web_argv = [str(GUNICORN), "codeexec_site.wsgi", "-b", f"127.0.0.1:{port}", "-k", "gthread"]
            web_argv += ["--workers", str(WEB_WORKERS), "--threads", str(WEB_THREADS), "--timeout", "200"]
            for name, argv in (("rundramatiq", worker_argv), ("gunicorn", web_argv)):
                procs.append((name, _start(argv, env, logs / f"{name}.log"), logs / f"{name}.log"))
            _wait_ready("127.0.0.1", port, procs)
            yield Stack("127.0.0.1", port, token, {name: proc.pid for name, proc, _ in procs}, logs)
        finally:
            progress("stack: stopping and removing it")
            for _name, proc, _log in reversed(procs):
                _stop(proc)
            backend = get_backend("bwrap", SandboxConfig(workdir=sandbox_dir, cgroup_parent=cgroup_parent))
            backend.cleanup_orphans()
            backend.cgroups.remove_parent()  # type: ignore[attr-defined]
            _drop_database(database_url)


def log_tails(stack: Stack, chars: int = 6000) -> str:
    """The end of each server's log: what to show when a measure failed, before the stack is removed."""
    if stack.logs is None:
        return ""
    return "\n".join(
        f"--- {log.name}:\n{log.read_text(errors='replace')[-chars:]}" for log in sorted(stack.logs.glob("*.log"))
    )


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A server in a process group of its own, so that stopping it stops its children and nothing else."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(host: str, port: int, procs: list[tuple[str, subprocess.Popen[bytes], Path]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        status, body = get(host, port, "/readyz")
        if status == 200:
            return
        for name, proc, log in procs:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"{name}:\n{log.read_text(errors='replace')[-2000:]}" for name, _, log in procs)
            raise BenchError(f"the stack was not ready in {READY_TIMEOUT_S}s (/readyz: {status} {body})\n{tails}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this bench started (never anything else), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)


def _drop_database(database_url: str) -> None:
    parts = urlsplit(database_url)
    maintenance = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    name = parts.path.lstrip("/")
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except psycopg.Error as exc:  # reported, not raised: it must not hide why the bench stopped
        progress(f"could not drop the database {name!r}: {exc}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
