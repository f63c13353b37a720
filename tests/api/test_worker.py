"""The execution actor: at-most-once execution under duplicate delivery, and a real separate worker process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest

from files.models import File
from runs import redis as cx_redis
from runs.models import Run
from runs.tasks import LEASE, execute_run
from runs.worker import PRESENCE
from sandbox import RunResult, Status, Usage, get_backend
from sandbox.backends.base import SandboxConfig
from tests.api import assert_error, url_path
from tests.api.conftest import SMALL_LIMITS
from tests.support import database_url

ROOT = Path(__file__).resolve().parents[2]

# Prints a fresh random value and writes it as an artifact: a second execution could not repeat it.
UNIQUE = "import uuid\nvalue = uuid.uuid4().hex\nopen('outputs/value.txt', 'w').write(value)\nprint(value)\n"


def _snapshot(run_id: str) -> dict:
    run = Run.objects.get(public_id=run_id)
    files = list(File.objects.filter(run=run).values_list("public_id", "sha256"))
    return {
        "status": run.status,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "worker_id": run.worker_id,
        "stdout": run.stdout,
        "artifacts": files,
    }


def _artifact_text(tenant, run_id: str) -> str:
    (artifact,) = tenant.get_run(run_id)["artifacts"]
    return b"".join(tenant.client.get(url_path(artifact["url"])).streaming_content).decode()


@pytest.mark.django_db(transaction=True)
def test_it_executes_a_run_once_when_the_actor_is_called_twice(alice) -> None:
    run_id = alice.post_run(code=UNIQUE, wait=False).json()["id"]
    execute_run.fn(run_id)
    first = _snapshot(run_id)
    assert first["status"] == "succeeded", Run.objects.get(public_id=run_id).stderr
    assert first["started_at"] is not None and first["worker_id"]
    assert len(first["artifacts"]) == 1

    execute_run.fn(run_id)  # a duplicate delivery of the same message
    assert _snapshot(run_id) == first
    assert _artifact_text(alice, run_id) == first["stdout"].strip()

    run = Run.objects.get(public_id=run_id)
    assert run.claim("another-worker:1", LEASE) is False
    assert _snapshot(run_id) == first


@pytest.mark.django_db(transaction=True)
def test_it_executes_a_message_sent_twice_only_once(alice, worker) -> None:
    # Slow enough that the two deliveries overlap on the worker's two threads.
    code = "import time\ntime.sleep(1)\n" + UNIQUE
    run_id = alice.post_run(code=code, wait=False).json()["id"]
    execute_run.send(run_id)
    execute_run.send(run_id)
    run = alice.wait_run(run_id)
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    broker = dramatiq.get_broker()
    broker.join(execute_run.queue_name, timeout=60_000)
    worker.join()
    final = _snapshot(run_id)
    assert len(final["artifacts"]) == 1, final
    assert final["stdout"] == run["stdout"]
    assert _artifact_text(alice, run_id) == run["stdout"].strip()
    assert final["started_at"] is not None


@pytest.mark.django_db
def test_it_lets_only_the_claiming_worker_finish(alice, make_run) -> None:
    run = make_run(alice.key, status="queued")
    assert run.claim("w1:1", LEASE) is True
    assert run.claim("w2:1", LEASE) is False
    result = RunResult(status=Status.SUCCEEDED, exit_code=0, stdout="late\n", usage=Usage())
    assert run.finish(result, "w2:1") is False
    run.refresh_from_db()
    assert (run.status, run.worker_id, run.stdout) == ("running", "w1:1", "")
    assert run.finish(RunResult(status=Status.SUCCEEDED, exit_code=0, stdout="ok\n", usage=Usage()), "w1:1")
    run.refresh_from_db()
    assert (run.status, run.stdout) == ("succeeded", "ok\n")
    assert run.fail("worker_lost", "too late") is False
    run.refresh_from_db()
    assert run.status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_it_ignores_a_message_for_a_run_that_is_gone(alice, make_run) -> None:
    run = make_run(alice.key, status="succeeded")
    public_id = run.public_id
    run.delete()
    execute_run.fn(public_id)  # no exception, nothing created
    assert not Run.objects.filter(public_id=public_id).exists()


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_storage_error_when_an_input_file_vanished(alice) -> None:
    file = alice.upload(b"data")
    run_id = alice.post_run(
        code="print(open('/work/inputs/in.txt').read())", wait=False, files=[{"file_id": file["id"], "path": "in.txt"}]
    ).json()["id"]
    assert alice.client.delete(f"/v1/files/{file['id']}").status_code == 200
    execute_run.fn(run_id)
    run = alice.get_run(run_id)
    assert run["status"] == "error"
    assert run["error"]["code"] == "storage_error"


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_output_of_a_program_that_prints_nul_characters(alice) -> None:
    """PostgreSQL text cannot hold U+0000: a program that prints it still succeeds, its output kept
    (each NUL as U+FFFD, as invalid bytes are), on both streams and in the stream's events."""
    code = "import sys\nsys.stdout.write('a\\0b\\n')\nsys.stderr.write('\\0\\0err\\n')\n"
    run_id = alice.post_run(code=code, wait=False).json()["id"]
    execute_run.fn(run_id, stream=True)
    run = alice.get_run(run_id)
    assert run["status"] == "succeeded", run
    assert run["stdout"] == "a\ufffdb\n"
    assert run["stderr"] == "\ufffd\ufffderr\n"
    streamed = {"stdout": "", "stderr": ""}
    for _, fields in cx_redis.read_events(run_id, "0", None):
        if fields.get("kind") == "output":
            streamed[fields["stream"]] += fields["data"]
    assert streamed == {"stdout": run["stdout"], "stderr": run["stderr"]}


# ---- a separate `manage.py rundramatiq` process ---------------------------------------------------


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _other_heartbeat() -> dict | None:
    for beat in cx_redis.live_workers():
        if beat.get("worker_id") != PRESENCE.id and beat.get("ok") and beat.get("versions"):
            return beat
    return None


@pytest.fixture
def worker_process(transactional_db, api_environment, no_worker, tmp_path) -> Iterator[subprocess.Popen]:
    """`python manage.py rundramatiq` on the test database, the test Redis database and the shared storage."""
    dramatiq.get_broker().flush_all()
    sandbox_dir = api_environment.root / "sandbox-process"
    cgroup_parent = f"{api_environment.cgroup_parent}-process"
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": database_url(),
        "REDIS_URL": api_environment.redis_url,
        "SANDBOX_WORKDIR": str(sandbox_dir),
        "SANDBOX_CGROUP_PARENT": cgroup_parent,
        "STORAGE_DIR": str(api_environment.storage_dir),
        "PYTHONUNBUFFERED": "1",
    }
    log = (tmp_path / "rundramatiq.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            "2",
            "--worker-shutdown-timeout",
            "30000",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _other_heartbeat() is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"rundramatiq did not report in (exit {proc.poll()}):\n"
                    + (tmp_path / "rundramatiq.log").read_text()[-4000:]
                )
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group this fixture started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()
        backend = get_backend("bwrap", SandboxConfig(workdir=sandbox_dir, cgroup_parent=cgroup_parent))
        backend.cleanup_orphans()
        backend.cgroups.remove_parent()  # type: ignore[attr-defined]
        shutil.rmtree(sandbox_dir, ignore_errors=True)
        dramatiq.get_broker().flush_all()


@pytest.mark.django_db(transaction=True)
def test_it_runs_code_in_a_separate_worker_process(alice, anonymous, worker_process) -> None:
    assert anonymous.get("/readyz").status_code == 200
    code = "import os\nopen('outputs/from-process.txt', 'w').write('written elsewhere')\nprint(6 * 7)\n"
    response = alice.post_run(code=code)
    assert response.status_code == 200, response.content
    run = response.json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    assert run["stdout"] == "42\n"
    # The worker that ran it is a process of the rundramatiq process group, not this test process.
    worker_id = Run.objects.get(public_id=run["id"]).worker_id
    worker_pid = int(worker_id.split(":")[1])
    assert worker_pid != os.getpid()
    assert worker_pid == worker_process.pid or worker_process.pid in _ancestors(worker_pid), worker_id
    # Its artifact went through the shared storage and is served by this (web) process.
    (artifact,) = run["artifacts"]
    content = alice.client.get(url_path(artifact["url"]))
    assert b"".join(content.streaming_content) == b"written elsewhere"


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_run_in_a_separate_worker_process(alice, worker_process) -> None:
    code = "import time\ntime.sleep(30)\n"
    run_id = alice.post_run(code=code, wait=False, limits={**SMALL_LIMITS, "timeout_ms": 45_000}).json()["id"]
    alice.wait_run(run_id, timeout_s=60, statuses={"running"})
    body = alice.client.post(f"/v1/runs/{run_id}/cancel").json()
    if body["status"] == "running":
        body = alice.wait_run(run_id, timeout_s=30)
    assert body["status"] == "cancelled", body
    assert body["error"]["code"] == "cancelled"
    assert_error(alice.client.post(f"/v1/runs/{run_id}/cancel"), 409, "invalid_request_error")
