"""Limits are the kernel's, for the whole process tree: pids, memory, CPU, wall clock, output,
disk, and nothing outliving its run.

Processes of one run are found on the host by a token the test gives the run (in its environment
or its arguments), not by the sandbox uid: other suites may be running sandboxes on this host at
the same time.
"""

from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from sandbox import ErrorCode, RunResult, Status

LANGUAGES = ["python", "node", "ruby", "php", "go"]
MIB = 1024 * 1024
MARK = "CONFORMANCE_MARK"
# One generous bound for "the host keeps answering" (issue: a bomb must not starve the host).
HOST_ANSWER_S = 1.0
# Slack for "bounded time" assertions: noisy CI machines, Go builds, interpreter start-up.
SLACK_MS = 5000


# ---- host-side helpers -------------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _marked_pids(token: str, where: str = "environ") -> list[int]:
    """Host pids whose environment (or argv) carries the token, bubblewrap's own excluded (its env is empty)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if token.encode() not in _read(f"/proc/{entry}/{where}"):
            continue
        argv0 = _read(f"/proc/{entry}/cmdline").split(b"\0", 1)[0]
        if where == "cmdline" and argv0.endswith(b"bwrap"):
            continue  # bwrap's argv contains the program's arguments too
        found.append(int(entry))
    return found


def _task_count(pids: list[int]) -> int:
    """Threads included: the pids limit counts tasks, not processes."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            pass
    return total


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(64)
        self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on the host's loopback: the 'is the host still answering' probe."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _host_answer_s(echo_port: int) -> float:
    """Seconds for the host to start a process and answer a TCP round trip."""
    start = time.monotonic()
    subprocess.run(["/bin/true"], check=True, timeout=60)
    with socket.create_connection(("127.0.0.1", echo_port), timeout=60) as c:
        c.sendall(b"ping")
        assert c.recv(4) == b"ping"
    return time.monotonic() - start


def _in_background(fn: Callable[[], RunResult]) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    return t, box


def _result(box: dict[str, object]) -> RunResult:
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    result = box["result"]
    assert isinstance(result, RunResult)
    return result


def _watch_bomb(thread: threading.Thread, token: str, echo_port: int) -> tuple[int, list[float]]:
    """While the run lasts: the most tasks it had at once, and how long the host took to answer."""
    max_tasks, answers = 0, []
    while thread.is_alive():
        max_tasks = max(max_tasks, _task_count(_marked_pids(token, "cmdline")))
        answers.append(_host_answer_s(echo_port))
        time.sleep(0.05)
    return max_tasks, answers


# ---- pids ----------------------------------------------------------------------------------------

FORK_BOMBS = {
    "python": """
import os, sys
reported = False
while True:
    try:
        os.fork()
    except OSError as e:
        if not reported:
            print("fork failed", e.errno, file=sys.stderr, flush=True)
            reported = True
""",
    # No shell, no interpreter helpers: PHP's own fork in a loop.
    "php": """<?php
$reported = false;
while (true) {
    if (@pcntl_fork() < 0 && !$reported) {
        fwrite(STDERR, "fork failed\\n");
        $reported = true;
    }
}
""",
    # The raw syscall: every child runs the same loop without the Go runtime's help.
    "go": """package main

import "syscall"

func main() {
	for {
		syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	}
}
""",
}

THREAD_BOMBS = {
    "python": """
import sys, threading, time
reported = False
def sleeper():
    time.sleep(100)
while True:
    try:
        threading.Thread(target=sleeper, daemon=True).start()
    except RuntimeError as e:
        if not reported:
            print("thread start failed:", e, file=sys.stderr, flush=True)
            reported = True
""",
    "ruby": """
reported = false
loop do
  begin
    Thread.new { sleep }
  rescue ThreadError => e
    unless reported
      $stderr.puts "thread start failed: #{e}"
      reported = true
    end
  end
end
""",
}


@pytest.mark.parametrize(
    ("language", "bomb"), [*((lang, "fork") for lang in FORK_BOMBS), *((lang, "thread") for lang in THREAD_BOMBS)]
)
def test_it_stops_a_bomb_at_the_pids_limit_while_the_host_keeps_answering(
    run, echo_port: int, language: str, bomb: str
) -> None:
    pids, timeout_ms = 16, 3000
    token = uuid.uuid4().hex
    code = (FORK_BOMBS if bomb == "fork" else THREAD_BOMBS)[language]
    started = time.monotonic()
    thread, box = _in_background(lambda: run(language, code, args=(token,), pids=pids, timeout_ms=timeout_ms))
    max_tasks, answers = _watch_bomb(thread, token, echo_port)
    thread.join()
    elapsed_ms = (time.monotonic() - started) * 1000
    r = _result(box)

    # Ended by a limit: the clock, the program giving up, or (Ruby's failed threads leak) memory.
    assert r.status in (Status.TIMEOUT, Status.FAILED, Status.OOM), (r.status, r.error, r.stderr[-500:])
    assert max_tasks <= pids, f"{max_tasks} tasks with pids={pids}"
    assert max_tasks >= pids // 2, f"the bomb was not seen running ({max_tasks} tasks)"
    assert len(answers) >= 3, answers
    assert max(answers) < HOST_ANSWER_S, f"the host took {max(answers):.2f}s to answer during the bomb"
    assert elapsed_ms < timeout_ms + SLACK_MS + 10_000  # Go's build included
    assert _marked_pids(token, "cmdline") == [], "processes of the bomb outlived the run"


def test_it_reports_a_failed_fork_to_the_program(run) -> None:
    """At the limit fork() fails with EAGAIN: the program learns it and can carry on."""
    code = """
import errno, os, time
children, error = [], None
for _ in range(100):
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode[e.errno]
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print(len(children), error)
"""
    r = run("python", code, pids=10, timeout_ms=5000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr)
    count, error = r.stdout.split()
    assert error == "EAGAIN", r.stdout
    assert 1 <= int(count) < 10, r.stdout  # the program itself is one of the ten


# ---- memory --------------------------------------------------------------------------------------

BALLOONS = {
    "python": """
buf = bytearray()
while True:
    buf.extend(b"x" * (1 << 20))
""",
    "node": """
const keep = [];
while (true) keep.push(Buffer.alloc(1 << 20, 1));
""",
    "ruby": """
keep = []
loop { keep << ("x" * (1 << 20)) }
""",
    "php": """<?php
$keep = [];
while (true) { $keep[] = str_repeat("x", 1 << 20); }
""",
    "go": """package main

func main() {
	var keep [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		keep = append(keep, b)
	}
}
""",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_kills_a_memory_balloon_as_oom(run, language: str) -> None:
    memory_mb = 64
    r = run(language, BALLOONS[language], memory_mb=memory_mb, timeout_ms=5000)
    assert r.status == Status.OOM, (r.status, r.error, r.stderr[-500:])
    assert r.error is not None and r.error.code == ErrorCode.MEMORY_LIMIT
    if r.usage.memory_peak_bytes is not None:
        assert r.usage.memory_peak_bytes <= memory_mb * MIB


def test_it_counts_memory_for_the_whole_process_tree(run) -> None:
    """Two children of 40 MiB each stay under 64 MiB apiece, but not together."""
    code = """
import os, sys, time
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        data = b"x" * (40 << 20)
        time.sleep(3)
        os._exit(0)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
print("children", statuses)
sys.exit(0 if all(s == 0 for s in statuses) else 1)
"""
    r = run("python", code, memory_mb=64, timeout_ms=5000)
    assert r.status == Status.OOM, (r.status, r.error, r.stdout, r.stderr[-500:])
    assert r.error is not None and r.error.code == ErrorCode.MEMORY_LIMIT


def test_it_bounds_shared_memory_files_by_the_memory_limit(run) -> None:
    """/dev/shm is memory: what a program parks there counts against memory_mb and no further."""
    code = """
import os
total = 0
chunk = b"\\1" * (1 << 20)
try:
    for i in range(64):
        with open(f"/dev/shm/fill-{i}", "wb") as f:
            for _ in range(4):
                f.write(chunk)
                f.flush()
                total += len(chunk)
                print("WROTE", total, flush=True)
except OSError as e:
    print("ERR", e.errno, flush=True)
"""
    memory_mb = 64
    r = run("python", code, memory_mb=memory_mb, timeout_ms=10_000)
    assert r.status in (Status.OOM, Status.SUCCEEDED), (r.status, r.error, r.stderr[-500:])
    written = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("WROTE")]
    assert written and max(written) <= memory_mb * MIB, r.stdout[-300:]
    if r.status == Status.SUCCEEDED:
        assert "ERR" in r.stdout, r.stdout[-300:]


# ---- CPU and wall clock --------------------------------------------------------------------------

SPINS = {
    "python": "while True:\n    pass\n",
    "node": "while (true) {}\n",
    "ruby": "loop { }\n",
    "php": "<?php\nwhile (true) {}\n",
    "go": "package main\n\nfunc main() {\n\tfor {\n\t}\n}\n",
}

SLEEPS = {
    "python": "import time\ntime.sleep(100)\n",
    "node": "setTimeout(() => {}, 100000);\n",
    "ruby": "sleep 100\n",
    "php": "<?php\nsleep(100);\n",
    "go": 'package main\n\nimport "time"\n\nfunc main() {\n\ttime.Sleep(100 * time.Second)\n}\n',
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_stops_a_cpu_spin_at_the_cpu_limit(run, language: str) -> None:
    cpu_ms, timeout_ms = 500, 5000
    r = run(language, SPINS[language], cpu_ms=cpu_ms, timeout_ms=timeout_ms)
    assert r.status == Status.TIMEOUT, (r.status, r.error, r.stderr[-500:])
    assert r.error is not None and r.error.code == ErrorCode.CPU_TIMEOUT, r.error
    assert r.usage.cpu_ms is not None and r.usage.cpu_ms >= cpu_ms, r.usage
    assert r.usage.wall_ms is not None and r.usage.wall_ms < timeout_ms, r.usage


CPU_TREES = {
    "python": """
import os, time
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        while time.process_time() < 0.8:
            pass
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("all children finished")
""",
    "ruby": """
children = 2.times.map do
  fork do
    loop { break if Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) > 0.8 }
  end
end
children.each { |pid| Process.wait(pid) }
puts "all children finished"
""",
}


@pytest.mark.parametrize("language", sorted(CPU_TREES))
def test_it_counts_cpu_for_the_whole_process_tree(run, language: str) -> None:
    """Two children of 0.8 s CPU each: each is under cpu_ms=1000, together they are not."""
    r = run(language, CPU_TREES[language], cpu_ms=1000, timeout_ms=5000)
    assert r.status == Status.TIMEOUT, (r.status, r.error, r.stdout, r.stderr[-500:])
    assert r.error is not None and r.error.code == ErrorCode.CPU_TIMEOUT, r.error
    assert "all children finished" not in r.stdout


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_stops_a_sleeper_at_the_wall_clock(run, language: str) -> None:
    timeout_ms = 1000
    started = time.monotonic()
    r = run(language, SLEEPS[language], timeout_ms=timeout_ms)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert r.status == Status.TIMEOUT, (r.status, r.error, r.stderr[-500:])
    assert r.error is not None and r.error.code == ErrorCode.WALL_TIMEOUT, r.error
    assert r.usage.wall_ms is not None
    assert timeout_ms <= r.usage.wall_ms < timeout_ms + SLACK_MS, r.usage
    assert elapsed_ms < timeout_ms + SLACK_MS + 10_000  # Go's build included


def test_it_stops_a_program_that_closes_its_output_and_waits(run) -> None:
    """No open pipe left to watch: the wall clock still ends it."""
    timeout_ms = 1500
    r = run("python", "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(100)\n", timeout_ms=timeout_ms)
    assert r.status == Status.TIMEOUT, (r.status, r.error)
    assert r.error is not None and r.error.code == ErrorCode.WALL_TIMEOUT
    assert r.usage.wall_ms is not None and timeout_ms <= r.usage.wall_ms < timeout_ms + SLACK_MS, r.usage


# ---- output --------------------------------------------------------------------------------------

FLOODS = {
    ("python", "stdout"): "import sys\nline = 'flood ' * 10 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n",
    ("python", "stderr"): "import sys\nline = 'flood ' * 10 + '\\n'\nwhile True:\n    sys.stderr.write(line)\n",
    # writeSync: node's stream.write() would queue in the program's own memory instead.
    (
        "node",
        "stdout",
    ): "const fs = require('fs');\nconst line = 'flood '.repeat(10) + '\\n';\nwhile (true) fs.writeSync(1, line);\n",
    (
        "node",
        "stderr",
    ): "const fs = require('fs');\nconst line = 'flood '.repeat(10) + '\\n';\nwhile (true) fs.writeSync(2, line);\n",
    ("ruby", "stdout"): "line = 'flood ' * 10\nloop { $stdout.puts line }\n",
    ("ruby", "stderr"): "line = 'flood ' * 10\nloop { $stderr.puts line }\n",
    ("php", "stdout"): "<?php\n$line = str_repeat('flood ', 10) . \"\\n\";\nwhile (true) { echo $line; }\n",
    ("php", "stderr"): "<?php\n$line = str_repeat('flood ', 10) . \"\\n\";\nwhile (true) { fwrite(STDERR, $line); }\n",
    ("go", "stdout"): """package main

import "fmt"

func main() {
	for {
		fmt.Println("flood flood flood flood flood flood flood flood flood flood")
	}
}
""",
}


@pytest.mark.parametrize(("language", "stream"), sorted(FLOODS))
def test_it_caps_an_output_flood(run, language: str, stream: str) -> None:
    max_output_bytes, timeout_ms = 10_000, 2000
    started = time.monotonic()
    r = run(language, FLOODS[(language, stream)], max_output_bytes=max_output_bytes, timeout_ms=timeout_ms)
    elapsed_ms = (time.monotonic() - started) * 1000
    text = r.stdout if stream == "stdout" else r.stderr
    truncated = r.stdout_truncated if stream == "stdout" else r.stderr_truncated
    assert r.status == Status.TIMEOUT, (r.status, r.error, r.stderr[-300:])
    assert truncated is True
    assert max_output_bytes - 100 <= len(text.encode()) <= max_output_bytes
    assert text.startswith("flood flood"), text[:100]
    assert r.usage.output_bytes <= 2 * max_output_bytes, r.usage
    assert elapsed_ms < timeout_ms + SLACK_MS + 10_000  # Go's build included


def test_it_caps_one_huge_write_and_lets_the_program_finish(run) -> None:
    code = """
import sys
sys.stdout.buffer.write(b"x" * 20_000_000)
sys.stdout.flush()
sys.stderr.write("done\\n")
"""
    max_output_bytes = 65_536
    r = run("python", code, max_output_bytes=max_output_bytes, timeout_ms=10_000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr)
    assert r.stdout_truncated is True and r.stderr_truncated is False
    assert r.stdout == "x" * max_output_bytes
    assert r.stderr == "done\n"


def test_it_keeps_output_within_the_cap_when_it_ends_in_a_multibyte_character(run) -> None:
    r = run("python", "import sys\nwhile True:\n    sys.stdout.write('é€😀')\n", max_output_bytes=1001, timeout_ms=2000)
    assert r.stdout_truncated is True
    assert len(r.stdout.encode()) <= 1001
    assert "\ufffd" not in r.stdout  # a character cut by the cap is dropped, not mangled


# ---- disk ----------------------------------------------------------------------------------------

# Each program writes 4 MiB files to /work until a write fails; prints "ERR <why>" and "TOTAL <bytes>".
DISK_FILLS = {
    "python": """
import errno, os
chunk = b"\\1" * (1 << 20)
total = 0
try:
    for i in range(10_000):
        fd = os.open(f"/work/fill-{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(4):
                total += os.write(fd, chunk)
        finally:
            os.close(fd)
except OSError as e:
    print("ERR", errno.errorcode[e.errno])
print("TOTAL", total)
""",
    "node": """
const fs = require('fs');
const chunk = Buffer.alloc(1 << 20, 1);
let total = 0;
try {
  for (let i = 0; i < 10000; i++) {
    const fd = fs.openSync(`/work/fill-${i}`, 'w');
    try { for (let j = 0; j < 4; j++) total += fs.writeSync(fd, chunk); } finally { fs.closeSync(fd); }
  }
} catch (e) { console.log('ERR ' + e.code); }
console.log('TOTAL ' + total);
""",
    "ruby": """
chunk = "\\x01".b * (1 << 20)
total = 0
begin
  10_000.times do |i|
    File.open("/work/fill-#{i}", 'wb') { |f| 4.times { total += f.syswrite(chunk) } }
  end
rescue SystemCallError => e
  puts "ERR #{e.class}"
end
puts "TOTAL #{total}"
""",
    "php": """<?php
$chunk = str_repeat("\\x01", 1 << 20);
$total = 0;
$err = null;
for ($i = 0; $i < 10000 && $err === null; $i++) {
    $f = fopen("/work/fill-$i", "wb");
    if ($f === false) { $err = "open failed"; break; }
    for ($j = 0; $j < 4; $j++) {
        $n = @fwrite($f, $chunk);
        $total += (int)$n;
        if ($n === false || $n < strlen($chunk)) {
            $err = error_get_last()['message'] ?? 'short write';
            break;
        }
    }
    fclose($f);
}
echo "ERR $err\\nTOTAL $total\\n";
""",
    "go": """package main

import (
	"fmt"
	"os"
)

func main() {
	chunk := make([]byte, 1<<20)
	total := 0
	defer func() { fmt.Println("TOTAL", total) }()
	for i := 0; i < 10000; i++ {
		f, err := os.Create(fmt.Sprintf("/work/fill-%d", i))
		if err != nil {
			fmt.Println("ERR", err)
			return
		}
		for j := 0; j < 4; j++ {
			n, err := f.Write(chunk)
			total += n
			if err != nil {
				fmt.Println("ERR", err)
				f.Close()
				return
			}
		}
		f.Close()
	}
}
""",
}


def _fill_result(stdout: str) -> tuple[str, int]:
    lines = dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)
    return lines.get("ERR", ""), int(lines["TOTAL"])


def _is_space_error(err: str) -> bool:
    return any(s in err.lower() for s in ("enospc", "efbig", "no space left", "file too large"))


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_caps_the_total_size_of_work(run, language: str) -> None:
    disk_mb = 8
    r = run(language, DISK_FILLS[language], disk_mb=disk_mb, timeout_ms=10_000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stdout, r.stderr[-500:])
    err, total = _fill_result(r.stdout)
    assert _is_space_error(err), r.stdout
    # The cap is the user's disk_mb (plus at most a little for the run's own files), in every language.
    assert total <= (disk_mb + 2) * MIB, f"{total / MIB:.1f} MiB written to /work with disk_mb={disk_mb}"
    assert total >= disk_mb // 2 * MIB, r.stdout


def test_it_caps_a_single_huge_file_in_work(run) -> None:
    code = """
import errno, os
total = 0
chunk = b"\\0" * (1 << 20)
try:
    with open("/work/huge", "wb", buffering=0) as f:
        while True:
            total += f.write(chunk)
except OSError as e:
    print("ERR", errno.errorcode[e.errno])
print("TOTAL", total)
"""
    disk_mb = 8
    r = run("python", code, disk_mb=disk_mb, timeout_ms=10_000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr[-500:])
    err, total = _fill_result(r.stdout)
    assert err in ("ENOSPC", "EFBIG"), r.stdout
    assert disk_mb // 2 * MIB <= total <= (disk_mb + 2) * MIB, r.stdout


def test_it_caps_tmp(run, backend) -> None:
    code = DISK_FILLS["python"].replace("/work/fill-", "/tmp/fill-")
    tmp_mb = backend.config.tmp_mb
    r = run("python", code, timeout_ms=10_000, memory_mb=tmp_mb + 128)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr[-500:])
    err, total = _fill_result(r.stdout)
    assert err in ("ENOSPC", "EFBIG"), r.stdout
    assert total <= (tmp_mb + 2) * MIB, f"{total / MIB:.1f} MiB written to /tmp with tmp_mb={tmp_mb}"


def test_it_caps_the_number_of_files_in_work(run) -> None:
    """An inode flood ends in ENOSPC too, rather than growing the host's tmpfs without bound."""
    code = """
import errno, os
n = 0
try:
    while n < 1_000_000:
        os.close(os.open(f"/work/f{n}", os.O_WRONLY | os.O_CREAT, 0o644))
        n += 1
except OSError as e:
    print("ERR", errno.errorcode[e.errno])
print("TOTAL", n)
"""
    r = run("python", code, timeout_ms=20_000, disk_mb=8)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr[-500:])
    err, count = _fill_result(r.stdout)
    assert err == "ENOSPC", r.stdout
    assert count < 1_000_000


# ---- nothing outlives its run --------------------------------------------------------------------

ORPHANS = {
    # Double fork + setsid, the orphan keeps stdout open and keeps writing.
    "python-double-fork": (
        "python",
        """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            print("orphan", os.getpid(), flush=True)
            time.sleep(0.2)
    os._exit(0)
os.wait()
print("main exits", flush=True)
""",
    ),
    # A proper daemon: closes its stdio, so nothing ties it to the run's pipes.
    "python-daemon": (
        "python",
        """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.chdir("/")
        os.execv("/bin/sleep", ["sleep", "1000"])
    os._exit(0)
os.wait()
print("main exits", flush=True)
""",
    ),
    "node-detached": (
        "node",
        """
const { spawn } = require('child_process');
spawn('/bin/sleep', ['1000'], { detached: true, stdio: 'ignore' }).unref();
console.log('main exits');
""",
    ),
}


@pytest.mark.parametrize("case", sorted(ORPHANS))
def test_it_kills_orphans_when_the_program_exits(run, case: str) -> None:
    language, code = ORPHANS[case]
    token = uuid.uuid4().hex
    timeout_ms = 5000
    r = run(language, code, env={MARK: token}, timeout_ms=timeout_ms)
    # The run ends with its main program, not when the orphan would (or at the wall clock).
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr[-500:])
    assert r.exit_code == 0
    assert "main exits" in r.stdout
    assert r.usage.wall_ms is not None and r.usage.wall_ms < timeout_ms, r.usage
    assert _marked_pids(token) == [], "an orphan outlived its run"


def test_it_kills_orphans_when_the_program_times_out(run) -> None:
    code = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "1000"])
    os._exit(0)
time.sleep(100)
"""
    token = uuid.uuid4().hex
    r = run("python", code, env={MARK: token}, timeout_ms=2000)
    assert r.status == Status.TIMEOUT, (r.status, r.error)
    assert r.error is not None and r.error.code == ErrorCode.WALL_TIMEOUT
    assert _marked_pids(token) == [], "an orphan outlived its run"


def test_it_sees_the_orphan_while_the_run_lasts(run) -> None:
    """Control for the two tests above: the token does find a run's processes on the host."""
    token = uuid.uuid4().hex
    thread, box = _in_background(
        lambda: run("python", "import time\ntime.sleep(2)\n", env={MARK: token}, timeout_ms=5000)
    )
    seen: list[int] = []
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline and thread.is_alive():
        seen = _marked_pids(token)
        time.sleep(0.05)
    thread.join()
    assert _result(box).status == Status.SUCCEEDED
    assert seen, "the run's process was never found by its token"
    assert _marked_pids(token) == []


def test_it_kills_everything_when_the_program_is_oom_killed(run) -> None:
    code = """
import os, time
if os.fork() == 0:
    os.setsid()
    os.execv("/bin/sleep", ["sleep", "1000"])
buf = bytearray()
while True:
    buf.extend(b"x" * (1 << 20))
"""
    token = uuid.uuid4().hex
    r = run("python", code, env={MARK: token}, memory_mb=64, timeout_ms=5000)
    assert r.status == Status.OOM, (r.status, r.error)
    assert _marked_pids(token) == []


# ---- stdin ---------------------------------------------------------------------------------------

STDIN_DIGESTS = {
    "python": "import hashlib, sys\nd = sys.stdin.buffer.read()\nprint(len(d), hashlib.sha256(d).hexdigest())\n",
    "node": (
        "const d = require('fs').readFileSync(0);\n"
        "console.log(d.length + ' ' + require('crypto').createHash('sha256').update(d).digest('hex'));\n"
    ),
    "ruby": "require 'digest'\nd = $stdin.binmode.read\nputs \"#{d.bytesize} #{Digest::SHA256.hexdigest(d)}\"\n",
    "php": "<?php\n$d = stream_get_contents(STDIN);\necho strlen($d), ' ', hash('sha256', $d), \"\\n\";\n",
    "go": """package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

func main() {
	d, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d %x\\n", len(d), sha256.Sum256(d))
}
""",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_delivers_stdin_whole(run, language: str) -> None:
    data = b"".join(f"line {i} ünïcødé\n".encode() for i in range(50_000))  # about 1 MiB
    r = run(language, STDIN_DIGESTS[language], stdin=data, timeout_ms=10_000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr[-500:])
    assert r.stdout == f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"


def test_it_finishes_when_the_program_ignores_a_large_stdin(run) -> None:
    r = run("python", "print('ignored')", stdin=b"x" * (4 * MIB), timeout_ms=5000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr)
    assert r.stdout == "ignored\n"
    assert r.usage.wall_ms is not None and r.usage.wall_ms < 5000
