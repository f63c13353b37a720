"""Standard streams of a sandboxed program: caps per stream, text decoding, stdin delivery,
signal deaths and the usage figures that come back."""

from __future__ import annotations

import hashlib
import os
import textwrap

import pytest

from sandbox import Status


def _src(code: str) -> str:
    return textwrap.dedent(code).lstrip("\n")


def test_it_truncates_stdout_at_max_output_bytes(run) -> None:
    code = "import sys\nsys.stdout.write('x' * 50_000)\nsys.stderr.write('err-ok\\n')\n"
    result = run("python", code, max_output_bytes=1000)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.stdout_truncated is True
    assert result.stdout == "x" * 1000
    assert result.stderr_truncated is False
    assert result.stderr == "err-ok\n"


def test_it_truncates_stderr_independently_of_stdout(run) -> None:
    code = "import sys\nsys.stderr.write('e' * 50_000)\nsys.stdout.write('out-ok\\n')\n"
    result = run("python", code, max_output_bytes=1000)
    assert result.status == Status.SUCCEEDED, result.stderr[-500:]
    assert result.stderr_truncated is True
    assert result.stderr == "e" * 1000
    assert result.stdout_truncated is False
    assert result.stdout == "out-ok\n"


def test_it_caps_each_stream_separately_when_both_flood(run) -> None:
    code = _src("""
        import sys
        for _ in range(200):
            sys.stdout.write("o" * 1000)
            sys.stderr.write("e" * 1000)
        """)
    result = run("python", code, max_output_bytes=3000)
    assert result.status == Status.SUCCEEDED, result.stderr[-500:]
    assert (result.stdout_truncated, result.stderr_truncated) == (True, True)
    assert result.stdout == "o" * 3000
    assert result.stderr == "e" * 3000


def test_it_keeps_output_exactly_at_the_cap_untruncated(run) -> None:
    result = run("python", "import sys\nsys.stdout.write('y' * 1000)\n", max_output_bytes=1000)
    assert result.status == Status.SUCCEEDED
    assert result.stdout == "y" * 1000
    assert result.stdout_truncated is False


def test_it_finishes_a_program_that_keeps_writing_after_the_cap(run) -> None:
    # 20 MB written through a 1 KB cap: the writer must never block on a full pipe.
    code = "import sys\nchunk = 'z' * 65536\nfor _ in range(320):\n    sys.stdout.write(chunk)\nprint('end', file=sys.stderr)\n"
    result = run("python", code, max_output_bytes=1024, timeout_ms=20_000, cpu_ms=20_000)
    assert result.status == Status.SUCCEEDED, (result.status, result.error)
    assert result.stdout_truncated is True
    assert result.stdout == "z" * 1024
    assert result.stderr == "end\n"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_it_replaces_invalid_utf8_with_replacement_chars(run, stream: str) -> None:
    code = f"import sys\nsys.{stream}.buffer.write(b'ok \\xff\\xfe end\\n')\nsys.{stream}.flush()\n"
    result = run("python", code)
    assert result.status == Status.SUCCEEDED
    assert getattr(result, stream) == "ok \ufffd\ufffd end\n"


def test_it_replaces_invalid_utf8_from_non_python_programs(run) -> None:
    code = "process.stdout.write(Buffer.from([0x61, 0xc3, 0x28, 0x62, 0x0a]));\n"
    result = run("node", code)
    assert result.status == Status.SUCCEEDED
    assert result.stdout == "a\ufffd(b\n"


@pytest.mark.parametrize(
    ("char", "keep"),
    [("é", 1), ("€", 1), ("€", 2), ("😀", 1), ("😀", 2), ("😀", 3)],
    ids=["2byte-cut1", "3byte-cut1", "3byte-cut2", "4byte-cut1", "4byte-cut2", "4byte-cut3"],
)
def test_it_handles_a_multibyte_character_cut_by_the_cap(run, char: str, keep: int) -> None:
    width = len(char.encode())
    whole = 100
    cap = whole * width + keep  # the cap falls `keep` bytes into character number whole+1
    code = f"import sys\nsys.stdout.write({char!r} * {whole + 50})\n"
    result = run("python", code, max_output_bytes=cap)
    assert result.status == Status.SUCCEEDED
    assert result.stdout_truncated is True
    assert result.stdout.startswith(char * whole)
    tail = result.stdout[whole:]
    # The cut character is dropped or shown as a single U+FFFD, never as other garbage.
    assert tail in ("", "\ufffd"), ascii(tail)


def test_it_delivers_a_large_stdin_completely(run) -> None:
    data = os.urandom(512 * 1024).hex().encode()  # 1 MiB of hex text
    assert len(data) == 1 << 20
    code = _src("""
        import hashlib, sys
        data = sys.stdin.buffer.read()
        print(len(data), hashlib.sha256(data).hexdigest())
        """)
    result = run("python", code, stdin=data, timeout_ms=20_000, cpu_ms=20_000)
    assert result.status == Status.SUCCEEDED, (result.status, result.stderr[-500:])
    assert result.stdout == f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"


def test_it_delivers_large_stdin_to_node(run) -> None:
    data = b"line\n" * 200_000
    code = "const d = require('fs').readFileSync(0);\nconsole.log(d.length, d.toString().split('\\n').length - 1);\n"
    result = run("node", code, stdin=data, timeout_ms=20_000, cpu_ms=20_000)
    assert result.status == Status.SUCCEEDED, (result.status, result.stderr[-500:])
    assert result.stdout == f"{len(data)} 200000\n"


def test_it_finishes_a_program_that_ignores_its_stdin(run) -> None:
    result = run("python", "print('did not read')\n", stdin=b"q" * (1 << 20), timeout_ms=20_000, cpu_ms=20_000)
    assert result.status == Status.SUCCEEDED, (result.status, result.error)
    assert result.stdout == "did not read\n"
    assert result.error is None


def test_it_gives_eof_on_empty_stdin(run) -> None:
    result = run("python", "import sys\nprint(repr(sys.stdin.read()))\n", timeout_ms=5000)
    assert result.status == Status.SUCCEEDED, (result.status, result.error)
    assert result.stdout == "''\n"


@pytest.mark.parametrize(
    ("code", "signal_name"),
    [
        ("import os, signal\nprint('dying', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\n", "SIGSEGV"),
        ("import os\nprint('dying', flush=True)\nos.abort()\n", "SIGABRT"),
        ("import os, signal\nprint('dying', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n", "SIGKILL"),
        ("import os, signal\nprint('dying', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n", "SIGTERM"),
    ],
    ids=["segv", "abort", "kill", "term"],
)
def test_it_reports_a_death_by_signal(run, code: str, signal_name: str) -> None:
    result = run("python", code)
    assert result.status == Status.FAILED, (result.status, result.error)
    assert result.error is None
    assert result.signal == signal_name
    assert result.stdout == "dying\n"


def test_it_reports_no_signal_for_an_ordinary_exit(run) -> None:
    result = run("python", "import sys\nsys.exit(7)\n")
    assert result.status == Status.FAILED
    assert result.exit_code == 7
    assert result.signal is None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def test_it_reports_usage_figures(run) -> None:
    code = "import sys\nx = sum(range(300_000))\nprint('out' * 10)\nprint('err', file=sys.stderr)\n"
    result = run("python", code)
    assert result.status == Status.SUCCEEDED
    usage = result.usage
    assert _is_int(usage.wall_ms) and usage.wall_ms >= 0
    assert _is_int(usage.cpu_ms) and usage.cpu_ms >= 0
    assert usage.memory_peak_bytes is None or (_is_int(usage.memory_peak_bytes) and usage.memory_peak_bytes > 0)
    assert usage.output_bytes == len(result.stdout.encode()) + len(result.stderr.encode()) == 31 + 4
    assert usage.artifact_bytes == 0


def test_it_counts_only_captured_bytes_in_output_bytes(run) -> None:
    code = "import sys\nsys.stdout.write('a' * 10_000)\nsys.stderr.write('b' * 10_000)\n"
    result = run("python", code, max_output_bytes=700)
    assert result.status == Status.SUCCEEDED
    assert len(result.stdout) == len(result.stderr) == 700
    assert result.usage.output_bytes == 1400


def test_it_counts_output_bytes_in_bytes_not_characters(run) -> None:
    result = run("python", "print('€' * 10)\n")
    assert result.status == Status.SUCCEEDED
    assert result.usage.output_bytes == 31


def test_it_reports_usage_for_a_failed_run(run) -> None:
    result = run("python", "raise SystemExit(5)\n")
    assert result.status == Status.FAILED
    assert _is_int(result.usage.wall_ms) and result.usage.wall_ms >= 0
    assert _is_int(result.usage.cpu_ms) and result.usage.cpu_ms >= 0
