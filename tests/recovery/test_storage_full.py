"""Artifact storage full (a real ENOSPC from a small tmpfs): the run ends error/storage_error and leaves no
artifact row and no blob file behind, not even of the artifacts saved before the one that did not fit."""

from __future__ import annotations

import os

from tests.recovery.conftest import STORAGE_TMPFS_MB
from tests.recovery.stack import RecoveryStack

TOO_BIG = "import os\nos.makedirs('outputs', exist_ok=True)\n" + (
    "open('outputs/a_small.txt', 'w').write('fits\\n')\n"
    f"open('outputs/b_big.bin', 'wb').write(os.urandom({STORAGE_TMPFS_MB + 2} << 20))\n"
    "print('written')\n"
)


def _stored_files(stack: RecoveryStack) -> list[str]:
    return [os.path.join(d, f) for d, _dirs, files in os.walk(stack.storage_dir) for f in files]


def _artifact_rows(stack: RecoveryStack, run_id: str) -> int:
    with stack.postgres.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM files_file f JOIN runs_run r ON f.run_id = r.id WHERE r.public_id = %s", [run_id]
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_full_store_ends_the_run_with_a_storage_error_and_keeps_nothing(healthy: RecoveryStack) -> None:
    stack = healthy
    assert _stored_files(stack) == []
    status, run = stack.post_run(TOO_BIG, wait=True)
    assert status == 200, run
    assert run["status"] == "error", run
    assert run["error"]["code"] == "storage_error", run
    assert "No space left on device" in run["error"]["message"]
    assert run["artifacts"] == []
    assert _artifact_rows(stack, run["id"]) == 0
    assert _stored_files(stack) == []  # neither a_small.txt's blob nor half of b_big.bin's

    # The store works again for what fits.
    status, ok = stack.post_run(
        "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/ok.txt', 'w').write('ok\\n')\n", wait=True
    )
    assert (status, ok.get("status")) == (200, "succeeded"), (status, ok)
    assert [a["filename"] for a in ok["artifacts"]] == ["ok.txt"]
    assert _artifact_rows(stack, ok["id"]) == 1
    assert len(_stored_files(stack)) == 1
