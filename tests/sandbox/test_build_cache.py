"""The build cache on a real backend: a repeated Go program skips its compile step, anything that could
change the binary misses, failed builds and builds with input files are never kept, and the program
cannot touch the cached binary it runs."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

from sandbox import Status
from sandbox.buildcache import BuildCache
from sandbox.spec import InputFile, SourceFile

PROGRAM = """package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("marker %s", os.Getenv("GREETING"))
}
"""


def _program(marker: str) -> str:
    return PROGRAM.replace("%s", marker)


def _counts(backend: Any) -> tuple[int, int, int]:
    cache: BuildCache = backend.build_cache
    return cache.hits, cache.misses, cache.stores


def _delta(before: tuple[int, int, int], backend: Any) -> tuple[int, int, int]:
    after = _counts(backend)
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


def test_it_reuses_the_build_of_a_repeated_program(run, backend) -> None:
    code = _program(uuid.uuid4().hex)
    before = _counts(backend)
    first = run("go", code)
    assert first.status == Status.SUCCEEDED, first.stderr
    assert _delta(before, backend) == (0, 1, 1)  # a miss, then stored

    before = _counts(backend)
    second = run("go", code)
    assert second.status == Status.SUCCEEDED, second.stderr
    assert _delta(before, backend) == (1, 0, 0)  # a hit: no compile step, nothing stored
    assert second.stdout == first.stdout


def test_anything_that_changes_the_build_misses(run, backend) -> None:
    marker = uuid.uuid4().hex
    assert run("go", _program(marker)).status == Status.SUCCEEDED
    for variant in (
        {"code": _program(marker + "x")},  # one byte of the source
        {"code": _program(marker), "env": {"GREETING": "hi"}},  # the build's environment
        {"code": _program(marker), "sources": (SourceFile("util.go", "package main\n"),)},  # another file
    ):
        before = _counts(backend)
        result = run("go", **variant)
        assert result.status == Status.SUCCEEDED, (variant, result.stderr)
        assert _delta(before, backend) == (0, 1, 1), variant


def test_it_never_keeps_a_failed_build_or_one_with_input_files(run, backend, tmp_path: Path) -> None:
    before = _counts(backend)
    broken = run("go", _program(uuid.uuid4().hex).replace("fmt.Println", "fmt.Printn"))
    assert broken.status == Status.FAILED and broken.error is not None
    assert _delta(before, backend) == (0, 1, 0)

    code = _program(uuid.uuid4().hex)
    data = b"some input"
    files = (InputFile(path="data.txt", size=len(data), open=lambda: io.BytesIO(data)),)
    for _ in range(2):
        before = _counts(backend)
        assert run("go", code, files=files).status == Status.SUCCEEDED
        assert _delta(before, backend) == (0, 0, 0)  # not even looked up: go:embed could read inputs


def test_the_program_cannot_change_the_cached_binary(run, backend) -> None:
    code = """package main

import (
	"fmt"
	"os"
)

func main() {
	f, err := os.OpenFile("/build/main", os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		fmt.Println("DENIED")
		return
	}
	f.Write([]byte("#!/bin/sh\\necho pwned\\n"))
	f.Close()
	fmt.Println("WROTE")
}
// %s
""".replace("%s", uuid.uuid4().hex)
    first = run("go", code)
    assert first.stdout == "DENIED\n", first.stderr
    cache: BuildCache = backend.build_cache
    entries = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.root.iterdir() if p.is_file()}
    second = run("go", code)  # from the cache this time, read-only again
    assert second.stdout == "DENIED\n", second.stderr
    assert entries == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.root.iterdir() if p.is_file()}
    # The cache is root's alone: the sandbox uid cannot even list it.
    assert cache.root.stat().st_mode & 0o777 == 0o700 and cache.root.stat().st_uid == 0
