"""Output leaves the program as it is written: a line printed before a kill (the wall-clock limit
here) is in the result, and stdout and stderr keep the order the program wrote them in."""

from __future__ import annotations

import pytest

from sandbox import Status

PRINT_THEN_HANG = {
    "python": "import time\nprint('before the kill')\ntime.sleep(60)\n",
    "ruby": "puts 'before the kill'\nsleep 60\n",
    "node": "console.log('before the kill');\nsetTimeout(() => {}, 60000);\n",
    "php": '<?php\necho "before the kill\\n";\nsleep(60);\n',
}
# Pauses between the writes, so that the order the supervisor reads them in is the order of writing.
INTERLEAVED = {
    "python": "import sys, time\nprint('one')\ntime.sleep(0.3)\nprint('two', file=sys.stderr)\ntime.sleep(0.3)\nprint('three')\n",
    "ruby": "puts 'one'\nsleep 0.3\nwarn 'two'\nsleep 0.3\nputs 'three'\n",
}


@pytest.mark.parametrize("lang", sorted(PRINT_THEN_HANG))
def test_output_written_before_a_timeout_is_kept(run, lang: str) -> None:
    result = run(lang, PRINT_THEN_HANG[lang], timeout_ms=1500)
    assert result.status == Status.TIMEOUT
    assert result.stdout == "before the kill\n"


@pytest.mark.parametrize("lang", sorted(INTERLEAVED))
def test_stdout_leaves_before_later_stderr(run, lang: str) -> None:
    chunks: list[tuple[str, bytes]] = []
    result = run(lang, INTERLEAVED[lang], on_output=lambda stream, data: chunks.append((stream, data)))
    assert result.status == Status.SUCCEEDED, result.stderr
    runs: list[list] = []  # consecutive chunks of one stream, joined
    for stream, data in chunks:
        if runs and runs[-1][0] == stream:
            runs[-1][1] += data
        else:
            runs.append([stream, data])
    assert [(stream, data.decode()) for stream, data in runs] == [
        ("stdout", "one\n"),
        ("stderr", "two\n"),
        ("stdout", "three\n"),
    ], chunks
