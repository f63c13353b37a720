"""Started interpreters: a warm sandbox starts its interpreter too, which waits on its entry file as a pipe
until a run gives it the program. The program must not be able to tell: every program here runs on such
a sandbox and on the cold path, and the two results must be the same. Programs an interpreter reads
differently from a pipe, runs whose files it reads at start, lower limits than its start needed and
programs longer than the pipe all take another sandbox, and still give the cold path's result.

Every backend of CODEEXEC_TEST_BACKENDS (bwrap; CI adds docker), but where a test says otherwise."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Limits, RunResult, RunSpec, SandboxConfig, Status
from sandbox.backends.bwrap import _exited
from sandbox.backends.pool import open_when_read
from sandbox.languages import get_language
from sandbox.spec import SourceFile
from sandbox.supervise import supervise

from .conftest import BACKENDS, fresh_pool, run_in_thread

POOL = 2


@pytest.fixture(scope="module", params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def started(backend_name: str) -> Iterator[Any]:
    with fresh_pool(backend_name, "codeexec-started", POOL) as (backend, _root):
        yield backend


@pytest.fixture(scope="module")
def cold(backend_name: str) -> Iterator[Any]:
    with fresh_pool(backend_name, "codeexec-cold", 0) as (backend, _root):
        yield backend


def _full(backend: Any, language: str) -> None:
    deadline = time.monotonic() + 90
    while len(backend._pool.get(language, [])) < POOL:
        assert time.monotonic() < deadline, f"no full {language} pool"
        time.sleep(0.01)


def _waiting(entry: Any) -> bool:
    """Whether the entry's interpreter has got as far as its program: blocked opening the pipe, which has
    no writer yet (python, node, php; Ruby opens it without blocking and is not asked here)."""
    for pid in entry.cgroup.procs():
        try:
            if Path(f"/proc/{pid}/wchan").read_text().strip() == "wait_for_partner":
                return True
        except OSError:
            continue
    return False


def _ready(backend: Any, language: str) -> Any:
    """The first of the language's warm sandboxes, once its interpreter waits for its program."""
    _full(backend, language)
    entry = backend._pool[language][0]
    deadline = time.monotonic() + 60
    while not _waiting(entry):
        assert time.monotonic() < deadline, f"the {language} interpreter did not get to its program"
        time.sleep(0.01)
    return entry


def _started_run(backend: Any, spec: RunSpec) -> tuple[RunResult, bool]:
    """The result, and whether the run took a started interpreter."""
    _full(backend, spec.lang.name)
    assert all(e.source_pipe_bytes for e in backend._pool[spec.lang.name]), "the pool's interpreters are not started"
    before = backend.warm_used
    result = backend.run(spec)
    return result, backend.warm_used > before


def _same(a: RunResult, b: RunResult, backend: str) -> None:
    fields = ("status", "exit_code", "signal", "stdout", "stderr", "stdout_truncated", "stderr_truncated")

    def seen(result: RunResult) -> dict[str, Any]:
        found = {f: getattr(result, f) for f in fields}
        if backend == "docker":
            # A container's processes get pids 6 to 8 from one run to the next, cold ones too (Node's
            # warnings show its pid); under bwrap the program is always pid 2.
            found["stderr"] = re.sub(r"\(node:\d+\)", "(node:pid)", found["stderr"])
        return found

    assert seen(a) == seen(b)
    assert (a.error and a.error.code) == (b.error and b.error.code)


# Programs whose behaviour depends on how the interpreter found and read its entry file.
SAME_AS_FROM_A_FILE = {
    "python": [
        "import sys\nprint(sys.argv, __file__, __name__, sys.path[0])\nprint(type(__loader__).__name__, __spec__)\n",
        "print(open(__file__).read())\n",
        "import inspect, sys\ndef f():\n    return 1\nprint(inspect.getsource(f))\nprint(sys.stdin.read())\n",
        "def f():\n    raise ValueError('deep')\nf()\n",
        "import sys\nsys.exit(3)\n",
        "\ufeffprint('a BOM')\n",
        "print('crlf')\r\nprint('lines')\r\n",
        "#!/usr/bin/env python3\nprint('shebang')\n",
        "print('é ü ✓')\n",
        "x = (\n",
        "",
        "import os\nprint(sorted(os.listdir('.')), os.stat(__file__).st_size)\n",
        "print(1)\x00\n",
        "print(1)\rprint(2)\r",
        "x = '" + "a" * 100_000 + "'\nprint(len(x))\n",
        "# coding\nprint('no declaration: the word alone')\n",
        # Syntax errors the parser finds (not the tokenizer): CPython reopens the file to show the line.
        "x = [1,\n 2\n 3]\n",
        "print('a'\n'b' 1)\n",
        "x = = 1\ns = '" + "a" * 20_000 + "'\n",
    ],
    "node": [
        "console.log(process.argv.slice(1), __filename, require.main === module, module.id)\n",
        "const fs = require('fs')\nconsole.log(fs.readFileSync(__filename, 'utf8'))\n",
        "function f() { throw new Error('deep') }\nf()\n",
        "#!/usr/bin/env node\nconsole.log('shebang')\n",
        "process.stdin.on('data', d => process.stdout.write(d))\n",
        "process.exitCode = 4\n",
        "let x = (\n",
        "",
        "import fs from 'fs'\nconsole.log(typeof fs.readFileSync)\n",
        "console.log(1)\x00\n",
    ],
    "ruby": [
        "puts [$0, __FILE__, $PROGRAM_NAME, __dir__].inspect\n",
        "puts File.read(__FILE__)\n",
        "# encoding: iso-8859-1\nputs __ENCODING__\n",
        "def f = raise('deep')\nf\n",
        "puts STDIN.read\n",
        "exit 5\n",
        "x = (\n",
        "",
        "puts 1\r\nputs 2\r\n",
        "puts 1\x00\n",
        "puts DATA.inspect rescue puts $!.class\n",
    ],
    "php": [
        '<?php\necho __FILE__, " ", __DIR__, " ", $argv[0], " ", $_SERVER["SCRIPT_FILENAME"], "\\n";\n',
        "<?php\necho file_get_contents(__FILE__);\n",
        "#!/usr/bin/env php\n<?php echo 'shebang';\n",
        "plain text, no tag\n",
        "<?php\nthrow new Exception('deep');\n",
        "<?php\necho stream_get_contents(STDIN);\n",
        "<?php\nexit(6);\n",
        "<?php\n$x = (\n",
        "<?php\necho 'data: ', file_get_contents(__FILE__, false, null, __COMPILER_HALT_OFFSET__);\n"
        "__halt_compiler();raw bytes",
    ],
}
CASES = [(lang, code) for lang, codes in SAME_AS_FROM_A_FILE.items() for code in codes]


@pytest.mark.parametrize(("language", "code"), CASES, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(CASES)])
def test_a_program_runs_on_a_started_interpreter_as_it_runs_from_a_file(
    started: Any, cold: Any, language: str, code: str
) -> None:
    spec = RunSpec(language=language, code=code, stdin="from stdin\n")
    result, took = _started_run(started, spec)
    assert took, "the run did not take a started interpreter"
    _same(result, cold.run(RunSpec(language=language, code=code, stdin="from stdin\n")), started.name)


# Each of these takes another sandbox, and the result is the cold path's.
NOT_FOR_A_STARTED_INTERPRETER = {
    # An encoding declaration: CPython seeks back in the file to decode the rest.
    "latin-1 declaration": ("python", "# -*- coding: latin-1 -*-\nprint('caf\u00e9')\n", {}),
    "declaration on line 2": ("python", "#!/usr/bin/env python3\n# vim: set fileencoding=cp1252 :\nprint(1)\n", {}),
    # DATA is the script file itself: it can rewind.
    "ruby DATA": ("ruby", "DATA.rewind\nputs DATA.read.size\n__END__\nx\n", {}),
    # package.json's "type" is read before main.js.
    "node package.json": (
        "node",
        "console.log(typeof require)\n",
        {"sources": [SourceFile(path="package.json", content='{"type": "module"}')]},
    ),
    # Longer than the pipe holds.
    "program over the pipe": ("python", "print('long')\n" + "#" * (1 << 20) + "\n", {}),
}


@pytest.mark.parametrize("case", list(NOT_FOR_A_STARTED_INTERPRETER))
def test_what_a_started_interpreter_cannot_run_faithfully_takes_another_sandbox(
    started: Any, cold: Any, case: str
) -> None:
    language, code, fields = NOT_FOR_A_STARTED_INTERPRETER[case]
    result, took = _started_run(started, RunSpec(language=language, code=code, **fields))
    assert not took
    _same(result, cold.run(RunSpec(language=language, code=code, **fields)), started.name)


def test_a_run_with_lower_limits_than_the_pools_takes_one_its_start_fitted(started: Any) -> None:
    spec = RunSpec(language="python", code="print('small')\n", limits=Limits(memory_mb=64, pids=8))
    result, took = _started_run(started, spec)
    assert took and (result.status, result.stdout) == (Status.SUCCEEDED, "small\n")


def test_a_started_interpreter_knows_whether_its_start_kept_within_limits(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _ready(started, "node")
    peak, tasks = entry.cgroup.memory_peak_bytes(), entry.cgroup.pids_current()
    assert tasks > 3  # node's threads, and bwrap's two processes or the container's init
    room = 64 * 1024 * 1024  # the peak may still move a little (charges are batched)
    if peak is None:  # a cgroup v2 kernel before 5.19 has no memory.peak: then no start counts as within
        assert not entry.started_within(1 << 40, 1 << 20)
    else:
        assert entry.started_within(peak + room, tasks + 8)
        assert not entry.started_within(peak // 2, tasks + 8)
        assert not entry.started_within(peak + room, tasks - 3)
    # A run with limits below the pool's, which the starts did not keep within, takes another sandbox
    # (as with an interpreter whose start needs more than a run may ask for).
    monkeypatch.setattr(type(entry), "started_within", lambda self, memory_bytes, pids: False)
    result, took = _started_run(started, RunSpec(language="node", code="console.log(1)\n", limits=Limits(pids=8)))
    assert not took and result.stdout == "1\n"
    # Limits no lower than the pool's need no such check.
    result, took = _started_run(started, RunSpec(language="node", code="console.log(2)\n"))
    assert took and result.stdout == "2\n"


def test_the_interpreter_runs_before_the_run_and_its_start_is_not_the_runs(started: Any, cold: Any) -> None:
    entry = _ready(started, "python")
    comms = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in entry.cgroup.procs()}
    assert "python3" in comms, comms
    assert (entry.ws.work / "main.py").is_fifo()
    # Like bwrap's own set-up, the start is not in the run's CPU time (nor its wall time): most of what a
    # cold run of `pass` counts. (The run takes the pool's first sandbox: the one that waits.)
    result, took = _started_run(started, RunSpec(language="python", code="pass\n"))
    baseline = cold.run(RunSpec(language="python", code="pass\n"))
    assert took and result.status == baseline.status == Status.SUCCEEDED
    assert result.usage.cpu_ms is not None and baseline.usage.cpu_ms is not None
    assert result.usage.cpu_ms < baseline.usage.cpu_ms / 2, (result.usage, baseline.usage)
    # A CPU-bound program is stopped by whichever limit it reaches first, as on the cold path: with the
    # same CPU and wall limits, the wall clock (the CPU time never runs ahead of it in one thread).
    spin = RunSpec(language="python", code="while True:\n    pass\n", limits=Limits(timeout_ms=1000, cpu_ms=1000))
    result, took = _started_run(started, spin)
    assert took and result.error is not None and result.error.code.value == "wall_timeout", result.error


def test_the_entry_file_is_a_regular_file_of_the_sandbox_user_when_the_program_runs(started: Any) -> None:
    code = "import os, stat\ns = os.stat('main.py')\nprint(stat.S_ISREG(s.st_mode), s.st_uid, oct(s.st_mode & 0o777))\n"
    result, took = _started_run(started, RunSpec(language="python", code=code))
    assert took and result.stdout == "True 1000 0o644\n", result.stderr


def test_the_prestart_can_be_turned_off(backend_name: str) -> None:
    assert SandboxConfig.from_env({"SANDBOX_WARM_PRESTART": "0"}).warm_prestart is False
    assert SandboxConfig.from_env({"SANDBOX_WARM_PRESTART": "off"}).warm_prestart is False
    assert SandboxConfig.from_env({}).warm_prestart is True
    assert SandboxConfig.from_env({"SANDBOX_WARM_PRESTART": ""}).warm_prestart is False  # as settings read it
    with pytest.raises(ValueError, match="SANDBOX_WARM_PRESTART must be a boolean"):
        SandboxConfig.from_env({"SANDBOX_WARM_PRESTART": "flase"})
    with fresh_pool(backend_name, "codeexec-unstarted", 1, warm_prestart=False) as (backend, _root):
        assert backend.wait_for_pool(60)
        entries = [e for pool in backend._pool.values() for e in pool]
        assert entries and not any(e.source_pipe_bytes for e in entries)
        assert not any((e.ws.work / get_language(e.language).entry_file).exists() for e in entries)
        result = backend.run(RunSpec(language="python", code="print('blocked before python')"))
        assert result.stdout == "blocked before python\n" and backend.warm_used == 1


@pytest.fixture
def unpooled(backend_name: str) -> Iterator[Any]:
    """A backend whose pool thread does not run: the tests start its warm sandboxes themselves."""
    with fresh_pool(backend_name, "codeexec-starting", 0) as (backend, _root):
        yield backend


def _frozen_start(backend: Any, language: str) -> Any:
    """A started sandbox caught before its interpreter gets to its program (its group frozen)."""
    entry = backend._start_warm(get_language(language))
    assert entry is not None and entry.source_pipe_bytes
    assert entry.cgroup._freeze(True)
    assert not _waiting(entry)
    return entry


def test_a_run_whose_interpreter_is_still_starting_waits_for_it(unpooled: Any) -> None:
    """It takes the sandbox all the same (a cold start would be slower still) and waits, on its clock."""
    entry = _frozen_start(unpooled, "node")
    spec = RunSpec(language="node", code="console.log(require('fs').readFileSync(__filename, 'utf8').length)\n")
    thread, results = run_in_thread(unpooled, spec)
    time.sleep(0.5)
    assert thread.is_alive() and unpooled.warm_used == 1  # taken, waiting for the interpreter
    assert entry.cgroup._freeze(False)
    thread.join(60)
    (result,) = results
    assert (result.status, result.stdout) == (Status.SUCCEEDED, f"{len(spec.code)}\n"), result.stderr
    assert result.usage.wall_ms is not None and result.usage.wall_ms >= 500


def test_a_run_waiting_for_its_interpreter_can_be_cancelled(unpooled: Any) -> None:
    _frozen_start(unpooled, "python")
    spec = RunSpec(language="python", code="print('never')\n", limits=Limits(timeout_ms=30_000))
    thread, results = run_in_thread(unpooled, spec)
    time.sleep(0.3)
    began = time.monotonic()
    assert unpooled.cancel(spec.run_id)
    thread.join(60)
    (result,) = results
    assert result.status == Status.CANCELLED and result.stdout == "", result
    assert time.monotonic() - began < 10


def test_an_interpreter_that_dies_before_its_program_is_reported_as_on_the_cold_path(unpooled: Any) -> None:
    """Killed while the run waits for it: the run reports the kill, as it would a cold run's. What is killed
    is the sandbox's first process: bubblewrap's own, or the container's init."""
    entry = _frozen_start(unpooled, "python")
    thread, results = run_in_thread(unpooled, RunSpec(language="python", code="print('never')\n"))
    time.sleep(0.3)
    if unpooled.name == "bwrap":
        os.kill(entry.proc.pid, signal.SIGKILL)
    else:  # through the kernel, as bwrap's: the engine may not kill a frozen container (cgroup v1)
        entry.gated.container.reload()
        os.kill(entry.gated.container.attrs["State"]["Pid"], signal.SIGKILL)
    assert entry.cgroup._freeze(False) or not entry.cgroup.procs()  # thawed, or already gone with its container
    thread.join(60)
    (result,) = results
    assert result.status == Status.FAILED and result.signal == "SIGKILL", result
    assert result.error is None or result.error.code.value != "sandbox_error"


def test_a_taken_started_sandbox_that_cannot_serve_leaves_a_file_for_the_cold_path(
    unpooled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = unpooled._start_warm(get_language("python"))
    answers = iter([True, False])  # alive when the run takes it, dead when its step comes
    monkeypatch.setattr(type(entry), "alive", lambda self: next(answers, False))
    result = unpooled.run(RunSpec(language="python", code="print(open(__file__).read().count('x'))  # x\n"))
    assert (result.status, result.stdout) == (Status.SUCCEEDED, "2\n"), result.stderr
    assert unpooled.warm_used == 0  # it went the cold way, in the taken sandbox's directory


def test_the_write_end_opens_once_a_reader_has_the_pipe(tmp_path: Path) -> None:
    pipe = tmp_path / "main.py"
    os.mkfifo(pipe)
    proc = subprocess.Popen(["/bin/sh", "-c", f"sleep 0.2; exec cat {pipe}"], stdout=subprocess.PIPE)
    try:
        fd = open_when_read(pipe, lambda: _exited(proc), time.monotonic() + 30, lambda: False)
        assert fd is not None
        os.write(fd, b"the program")
        os.close(fd)
        assert proc.communicate(timeout=10)[0] == b"the program"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_write_end_when_the_interpreter_exits_time_is_up_or_the_run_is_cancelled(tmp_path: Path) -> None:
    """The run's supervisor then reports what happened (the interpreter's exit, its wall timeout, the
    cancel): so the process is left unreaped for it."""
    pipe = tmp_path / "main.py"
    os.mkfifo(pipe)
    exits = subprocess.Popen(
        ["/bin/sh", "-c", "echo gone >&2; exit 3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert open_when_read(pipe, lambda: _exited(exits), time.monotonic() + 30, lambda: False) is None
    assert exits.returncode is None  # not reaped
    outcome = supervise(exits, b"", 10_000, None, lambda: None, lambda: None, 4096)
    assert (outcome.returncode, outcome.stderr) == (3, b"gone\n")
    sleeps = subprocess.Popen(["/bin/sh", "-c", "sleep 30"])
    try:
        began = time.monotonic()
        assert open_when_read(pipe, lambda: _exited(sleeps), began + 0.2, lambda: False) is None
        assert 0.2 <= time.monotonic() - began < 10
        began = time.monotonic()
        assert open_when_read(pipe, lambda: _exited(sleeps), began + 30, lambda: True) is None
        assert time.monotonic() - began < 10
    finally:
        sleeps.kill()
        sleeps.wait()
