"""Input files through the API: path validation, count and size caps, and what a run can do with its inputs."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from django.conf import settings

from files.models import File
from runs.models import Run
from tests.api import assert_error

# ---- validation (nothing runs) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../escape.csv",
        "data/../../escape.csv",
        "data/..",
        "./data.csv",
        "/etc/passwd",
        "/work/inputs/x.csv",
        "data//x.csv",
        "data/",
        "",
        "data\\x.csv",
        "..\\..\\x.csv",
        "cafe\u0301.csv",  # 'café' decomposed (NFD): two names that look the same must be one name
        "line\nbreak.csv",
        "nul\x00.csv",
        "rtl\u202egnp.csv",
    ],
)
def test_it_rejects_a_bad_input_path(alice, path) -> None:
    file = alice.upload(b"a,b\n")
    response = alice.post_run(code="print(1)", wait=False, files=[{"file_id": file["id"], "path": path}])
    error = assert_error(response, 400, "invalid_request_error")
    assert error["param"] == "files[0].path", error
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "paths",
    [
        ["in.csv", "in.csv"],
        ["in.csv", "IN.CSV"],
        ["Data/In.csv", "data/in.csv"],
        ["straße.csv", "STRASSE.csv"],  # case-insensitively, as casefold() sees it
        ["data", "data/x.csv"],
        ["data/x.csv", "data"],
        ["DATA", "data/x.csv"],
        ["a/b", "a/b/c/d.csv"],
    ],
)
def test_it_rejects_clashing_input_paths(alice, paths) -> None:
    file = alice.upload(b"a,b\n")
    refs = [{"file_id": file["id"], "path": p} for p in paths]
    response = alice.post_run(code="print(1)", wait=False, files=refs)
    error = assert_error(response, 400, "invalid_request_error")
    assert error["param"] is not None and error["param"].startswith("files"), error
    assert not Run.objects.exists()


def test_it_names_the_index_of_the_bad_path(alice) -> None:
    file = alice.upload(b"a,b\n")
    refs = [{"file_id": file["id"], "path": p} for p in ("ok.csv", "also/ok.csv", "../bad.csv")]
    response = alice.post_run(code="print(1)", wait=False, files=refs)
    assert_error(response, 400, "invalid_request_error", param="files[2].path")


def test_it_accepts_nested_and_unicode_paths(alice) -> None:
    file = alice.upload(b"a,b\n")
    refs = [
        {"file_id": file["id"], "path": p} for p in ("données/été.csv", "a/b/c/d/e.csv", "data.csv", "data.csv.bak")
    ]
    response = alice.post_run(code="print(1)", wait=False, files=refs)
    assert response.status_code == 202, response.content
    run = Run.objects.get(public_id=response.json()["id"])
    assert [r["path"] for r in run.input_files] == [r["path"] for r in refs]


def test_it_accepts_100_input_files(alice) -> None:
    file = alice.upload(b"1")
    refs = [{"file_id": file["id"], "path": f"f{i:03}.txt"} for i in range(100)]
    response = alice.post_run(code="print(1)", wait=False, files=refs)
    assert response.status_code == 202, response.content


def test_it_rejects_more_than_100_input_files(alice) -> None:
    file = alice.upload(b"1")
    refs = [{"file_id": file["id"], "path": f"f{i:03}.txt"} for i in range(101)]
    response = alice.post_run(code="print(1)", wait=False, files=refs)
    assert_error(response, 400, "invalid_request_error", param="files")
    assert not Run.objects.exists()


def test_it_rejects_inputs_over_the_total_size_cap(alice, settings) -> None:
    settings.MAX_INPUT_FILES_BYTES = 10
    six = alice.upload(b"123456")
    five = alice.upload(b"12345")
    response = alice.post_run(
        code="print(1)",
        wait=False,
        files=[{"file_id": six["id"], "path": "a.txt"}, {"file_id": five["id"], "path": "b.txt"}],
    )
    assert_error(response, 413, "invalid_request_error", param="files")
    assert not Run.objects.exists()


def test_it_counts_a_file_staged_twice_twice(alice, settings) -> None:
    settings.MAX_INPUT_FILES_BYTES = 10
    six = alice.upload(b"123456")
    response = alice.post_run(
        code="print(1)",
        wait=False,
        files=[{"file_id": six["id"], "path": "a.txt"}, {"file_id": six["id"], "path": "b.txt"}],
    )
    assert_error(response, 413, "invalid_request_error", param="files")


def test_it_accepts_inputs_exactly_at_the_size_cap(alice, settings) -> None:
    settings.MAX_INPUT_FILES_BYTES = 10
    six = alice.upload(b"123456")
    four = alice.upload(b"1234")
    response = alice.post_run(
        code="print(1)",
        wait=False,
        files=[{"file_id": six["id"], "path": "a.txt"}, {"file_id": four["id"], "path": "b.txt"}],
    )
    assert response.status_code == 202, response.content


def test_it_validates_ownership_of_inputs(alice, bob) -> None:
    theirs = bob.upload(b"secret")
    response = alice.post_run(code="print(1)", wait=False, files=[{"file_id": theirs["id"], "path": "x.csv"}])
    assert_error(response, 404, "invalid_request_error", param="files[0].file_id")
    assert not Run.objects.exists()


# ---- a real run with its inputs ------------------------------------------------------------------

PROBE = r"""
import errno, json, os, shutil

INPUT = "/work/inputs/deep/er/données.csv"
CANARY = os.environ["CANARY"]
results = {}


def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except OSError as exc:
        results[name] = errno.errorcode.get(exc.errno, str(exc.errno))


results["content"] = open(INPUT).read()
results["listing"] = sorted(os.listdir("/work/inputs"))
attempt("append", lambda: open(INPUT, "a").write("pwned"))
attempt("truncate", lambda: open(INPUT, "w").close())
attempt("chmod", lambda: os.chmod(INPUT, 0o666))
attempt("unlink", lambda: os.unlink(INPUT))
attempt("rename_file", lambda: os.rename(INPUT, "/work/stolen.csv"))
attempt("create", lambda: open("/work/inputs/new.csv", "w").close())
attempt("mkdir", lambda: os.mkdir("/work/inputs/newdir"))
attempt("symlink_inside", lambda: os.symlink(CANARY, "/work/inputs/deep/link"))
attempt("rmtree", lambda: shutil.rmtree("/work/inputs/deep"))
# Replace /work/inputs itself: move it away, or remove it, then put a link to the host path there.
attempt("rename_inputs", lambda: os.rename("/work/inputs", "/work/old_inputs"))
attempt("rmdir_inputs", lambda: os.rmdir("/work/inputs"))
attempt("symlink_inputs", lambda: os.symlink(CANARY, "/work/inputs"))
attempt("symlink_in_work", lambda: os.symlink(CANARY, "/work/canary_link"))
attempt("write_through_link", lambda: open("/work/canary_link/keep.txt", "w").write("pwned"))
os.makedirs("/work/outputs", exist_ok=True)
attempt("symlink_output", lambda: os.symlink(CANARY + "/keep.txt", "/work/outputs/keep.txt"))
attempt("symlink_output_dir", lambda: os.symlink(CANARY, "/work/outputs/canary_dir"))
results["content_after"] = open(INPUT).read()
results["inputs_is_link"] = os.path.islink("/work/inputs")
print(json.dumps(results))
"""


@pytest.mark.django_db(transaction=True)
def test_it_gives_a_run_read_only_inputs_it_cannot_escape(alice, worker, api_environment) -> None:
    data = "name,score\nadà,3\n".encode()
    file = alice.upload(data, filename="scores.csv")
    canary = api_environment.root / f"canary-{uuid.uuid4().hex}"
    canary.mkdir()
    (canary / "keep.txt").write_text("untouched")
    stored = File.objects.get(public_id=file["id"])

    run = alice.post_run(
        code=PROBE,
        env={"CANARY": str(canary)},
        files=[{"file_id": file["id"], "path": "deep/er/données.csv"}],
    ).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    results = json.loads(run["stdout"])

    assert results["content"] == data.decode()
    assert results["listing"] == ["deep"]
    for name in (
        "append",
        "truncate",
        "chmod",
        "unlink",
        "rename_file",
        "create",
        "mkdir",
        "symlink_inside",
        "rmtree",
        "rename_inputs",
        "rmdir_inputs",
        "symlink_inputs",
    ):
        assert results[name] != "ok", (name, results)
    assert results["content_after"] == data.decode()
    assert results["inputs_is_link"] is False
    # The host path does not exist in the sandbox, so writing through a link to it fails there.
    assert results["write_through_link"] != "ok", results

    # The host is untouched: the canary, the stored upload, and no link came back as an artifact.
    assert sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
    assert (canary / "keep.txt").read_text() == "untouched"
    assert not (canary / "keep.txt").is_symlink()
    with stored.blob.open("rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == stored.sha256 == hashlib.sha256(data).hexdigest()
    assert run["artifacts"] == []
    assert not File.objects.filter(purpose="run_artifact").exists()
    # Nothing of the run is left in the sandbox directory.
    leftovers = [p.name for p in settings.SANDBOX_WORKDIR.iterdir()] if settings.SANDBOX_WORKDIR.exists() else []
    assert not [name for name in leftovers if name.startswith(run["id"])], leftovers


@pytest.mark.django_db(transaction=True)
def test_it_stages_every_input_at_its_path(alice, worker) -> None:
    first = alice.upload(b"one", filename="1.txt")
    second = alice.upload(bytes(range(256)), filename="2.bin")
    code = (
        "import hashlib, os\n"
        "for root, dirs, files in sorted(os.walk('/work/inputs')):\n"
        "    for name in sorted(files):\n"
        "        path = os.path.join(root, name)\n"
        "        st = os.stat(path)\n"
        "        print(path, hashlib.sha256(open(path, 'rb').read()).hexdigest(), oct(st.st_mode & 0o777))\n"
    )
    run = alice.post_run(
        code=code,
        files=[
            {"file_id": first["id"], "path": "a/b/c/one.txt"},
            {"file_id": second["id"], "path": "bin/2.bin"},
            {"file_id": first["id"], "path": "top.txt"},
        ],
    ).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    lines = sorted(run["stdout"].splitlines())
    one, binary = hashlib.sha256(b"one").hexdigest(), hashlib.sha256(bytes(range(256))).hexdigest()
    paths = {line.split()[0]: line.split()[1:] for line in lines}
    assert set(paths) == {"/work/inputs/a/b/c/one.txt", "/work/inputs/bin/2.bin", "/work/inputs/top.txt"}
    assert paths["/work/inputs/a/b/c/one.txt"][0] == one
    assert paths["/work/inputs/top.txt"][0] == one
    assert paths["/work/inputs/bin/2.bin"][0] == binary
    for _digest, mode in paths.values():
        assert int(mode, 8) & 0o222 == 0, paths  # nobody may write an input
