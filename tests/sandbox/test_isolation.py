"""What a program can see: a fresh environment, a read-only root, its own /work and /tmp only,
its own processes only, a synthetic identity. Nothing of the host, the service or other runs."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from sandbox import RunResult, Status, get_language

LANGUAGES = ["python", "node", "ruby", "php", "go"]
SANDBOX_UID = 1000
SANDBOX_GID = 1000
# bubblewrap sets PWD when it changes into /work; everything else is the service's choice.
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "LANG": "C.UTF-8",
    "PWD": "/work",
}
PROJECT_DIR = Path(__file__).resolve().parents[2]

# Each program prints "ENV <name>=<value>" per variable it sees, then "PROC <pid> <NUL-separated
# entries as \n-joined text>" for every /proc/<pid>/environ it can read, "PROCERR <pid>" otherwise.
ENV_DUMPS = {
    "python": """
import os
for k, v in os.environ.items():
    print(f"ENV {k}={v}")
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit() or p == "self"):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            print("PROC", pid, f.read().decode(errors="replace").replace("\\0", " "))
    except OSError:
        print("PROCERR", pid)
""",
    "node": """
const fs = require('fs');
for (const [k, v] of Object.entries(process.env)) console.log(`ENV ${k}=${v}`);
for (const pid of fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p) || p === 'self')) {
  try { console.log(`PROC ${pid} ` + fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\\0').join(' ')); }
  catch (e) { console.log(`PROCERR ${pid}`); }
}
""",
    "ruby": """
ENV.each { |k, v| puts "ENV #{k}=#{v}" }
Dir.children('/proc').select { |p| p =~ /\\A\\d+\\z/ || p == 'self' }.each do |pid|
  begin
    puts "PROC #{pid} " + File.binread("/proc/#{pid}/environ").tr("\\0", ' ')
  rescue SystemCallError
    puts "PROCERR #{pid}"
  end
end
""",
    "php": """<?php
foreach (getenv() as $k => $v) echo "ENV $k=$v\\n";
foreach (scandir("/proc") as $pid) {
    if (!ctype_digit($pid) && $pid !== "self") continue;
    $data = @file_get_contents("/proc/$pid/environ");
    echo $data === false ? "PROCERR $pid\\n" : "PROC $pid " . str_replace("\\0", " ", $data) . "\\n";
}
""",
    "go": """package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

func main() {
	for _, kv := range os.Environ() {
		fmt.Println("ENV " + kv)
	}
	entries, _ := os.ReadDir("/proc")
	digits := regexp.MustCompile(`^[0-9]+$`)
	for _, e := range append(entries, nil) {
		pid := "self"
		if e != nil {
			pid = e.Name()
			if !digits.MatchString(pid) {
				continue
			}
		}
		data, err := os.ReadFile("/proc/" + pid + "/environ")
		if err != nil {
			fmt.Println("PROCERR " + pid)
			continue
		}
		fmt.Println("PROC " + pid + " " + strings.ReplaceAll(string(data), "\\x00", " "))
	}
}
""",
}

# Each program prints its identity, one "key value" pair per line.
IDENTITY = {
    "python": """
import os, socket
print("uid", os.getuid()); print("euid", os.geteuid()); print("gid", os.getgid()); print("egid", os.getegid())
print("groups", ",".join(map(str, os.getgroups()))); print("hostname", socket.gethostname())
""",
    "node": """
const os = require('os');
console.log('uid ' + process.getuid()); console.log('euid ' + process.geteuid());
console.log('gid ' + process.getgid()); console.log('egid ' + process.getegid());
console.log('groups ' + process.getgroups().join(',')); console.log('hostname ' + os.hostname());
""",
    "ruby": """
require 'socket'
puts "uid #{Process.uid}", "euid #{Process.euid}", "gid #{Process.gid}", "egid #{Process.egid}"
puts "groups #{Process.groups.join(',')}", "hostname #{Socket.gethostname}"
""",
    "php": """<?php
echo "uid ", posix_getuid(), "\\neuid ", posix_geteuid(), "\\ngid ", posix_getgid(), "\\negid ", posix_getegid(), "\\n";
echo "groups ", implode(",", posix_getgroups()), "\\nhostname ", gethostname(), "\\n";
""",
    "go": """package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Println("uid", os.Getuid())
	fmt.Println("euid", os.Geteuid())
	fmt.Println("gid", os.Getgid())
	fmt.Println("egid", os.Getegid())
	groups, _ := os.Getgroups()
	parts := []string{}
	for _, g := range groups {
		parts = append(parts, fmt.Sprint(g))
	}
	fmt.Println("groups", strings.Join(parts, ","))
	host, _ := os.Hostname()
	fmt.Println("hostname", host)
}
""",
}


def _ok(r: RunResult) -> RunResult:
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stdout[-2000:], r.stderr[-2000:])
    return r


def _seen_env(stdout: str) -> dict[str, str]:
    pairs = [line[4:].split("=", 1) for line in stdout.splitlines() if line.startswith("ENV ")]
    return dict(pairs)


def _wait_for_marked_process(token: str, timeout_s: float) -> bool:
    """True once a host process carries CONFORMANCE_MARK=<token> in its environment."""
    needle = f"CONFORMANCE_MARK={token}".encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in f.read():
                        return True
            except OSError:
                continue
        time.sleep(0.05)
    return False


@pytest.fixture
def service_secrets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Variables like the service's own (database URL, keys) in the environment of the process that runs sandboxes."""
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("CODEEXEC_TEST_SECRET", secret)
    monkeypatch.setenv("DATABASE_URL", f"postgres://codeexec:{secret}@127.0.0.1:5432/codeexec")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SIGNING_KEY", f"signing-{secret}")
    monkeypatch.setenv("DJANGO_SECRET_KEY", f"django-{secret}")
    return [
        secret,
        "CODEEXEC_TEST_SECRET",
        "DATABASE_URL",
        "REDIS_URL",
        "SIGNING_KEY",
        "DJANGO_SECRET_KEY",
        "redis://127.0.0.1:6379",
    ]


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_keeps_the_services_environment_out(run, service_secrets: list[str], language: str) -> None:
    r = _ok(run(language, ENV_DUMPS[language]))
    for needle in service_secrets:
        assert needle not in r.stdout, f"{needle} leaked into the sandbox:\n{r.stdout}"
    # Non-vacuous: the program did read its own environment through /proc, and bubblewrap's pid 1 had nothing.
    proc_lines = {line.split(" ", 2)[1]: line for line in r.stdout.splitlines() if line.startswith("PROC ")}
    assert "PATH=" in proc_lines["self"], r.stdout
    assert "1" in proc_lines or "PROCERR 1" in r.stdout.splitlines(), r.stdout


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_builds_the_environment_from_scratch(run, language: str) -> None:
    r = _ok(run(language, ENV_DUMPS[language], env={"FOO": "bar", "GREETING": "hello world"}))
    expected = {**BASE_ENV, **get_language(language).env, "FOO": "bar", "GREETING": "hello world"}
    assert _seen_env(r.stdout) == expected


def test_it_passes_user_variables_verbatim(run) -> None:
    value = "a=b c;$(id) `id` 'quoted' \"double\" ünïcødé"
    r = _ok(run("python", "import os; print(repr(os.environ['ODD_VALUE']))", env={"ODD_VALUE": value}))
    assert r.stdout == repr(value) + "\n"


def test_it_gives_bubblewraps_own_processes_no_service_variables(run, service_secrets: list[str]) -> None:
    """pid 1 of the sandbox is bubblewrap itself: its environment must be as clean as the program's."""
    code = """
import os
with open("/proc/1/cmdline", "rb") as f:
    print("CMD", f.read().split(b"\\0")[0].decode())
with open("/proc/1/environ", "rb") as f:
    print("ENVIRON", f.read().decode(errors="replace").replace("\\0", " "))
"""
    r = _ok(run("python", code))
    for needle in service_secrets:
        assert needle not in r.stdout, r.stdout
    assert "CMD " in r.stdout


def test_it_mounts_the_root_read_only(run) -> None:
    code = """
import json, os
result = {}
for d in ("/", "/usr", "/usr/bin", "/usr/lib", "/etc", "/home", "/root", "/var", "/var/tmp", "/opt", "/srv",
          "/bin", "/lib", "/build", "/work/inputs", "/proc", "/run", "/mnt"):
    path = os.path.join(d, "conformance-write-probe")
    try:
        with open(path, "w") as f:
            f.write("x")
        result[d] = "WROTE"
    except OSError as e:
        try:
            os.makedirs(d, exist_ok=True)
            with open(path, "w") as f:
                f.write("x")
            result[d] = "WROTE"
        except OSError as e2:
            result[d] = f"{e.errno}/{e2.errno}"
for d in ("/work", "/tmp", "/work/outputs"):
    path = os.path.join(d, "conformance-write-probe")
    with open(path, "w") as f:
        f.write("hello")
    with open(path) as f:
        result[d] = "RW" if f.read() == "hello" else "BROKEN"
print(json.dumps(result))
"""
    r = _ok(run("python", code))
    result = json.loads(r.stdout)
    wrote = sorted(d for d, v in result.items() if v == "WROTE")
    assert wrote == [], f"writable outside /work and /tmp: {wrote}"
    assert result["/work"] == result["/tmp"] == result["/work/outputs"] == "RW", result


@pytest.mark.parametrize("language", ["node", "ruby", "php"])
def test_it_mounts_the_root_read_only_for_every_language(run, language: str) -> None:
    code = {
        "node": """
const fs = require('fs');
for (const p of ['/etc/probe', '/usr/probe', '/probe', '/work/probe', '/tmp/probe']) {
  try { fs.writeFileSync(p, 'x'); console.log('WROTE ' + p); } catch (e) { console.log('DENIED ' + p); }
}
""",
        "ruby": """
['/etc/probe', '/usr/probe', '/probe', '/work/probe', '/tmp/probe'].each do |p|
  begin
    File.write(p, 'x'); puts "WROTE #{p}"
  rescue SystemCallError
    puts "DENIED #{p}"
  end
end
""",
        "php": """<?php
foreach (['/etc/probe', '/usr/probe', '/probe', '/work/probe', '/tmp/probe'] as $p) {
    echo @file_put_contents($p, 'x') === false ? "DENIED $p\\n" : "WROTE $p\\n";
}
""",
    }[language]
    r = _ok(run(language, code))
    assert r.stdout.splitlines() == [
        "DENIED /etc/probe",
        "DENIED /usr/probe",
        "DENIED /probe",
        "WROTE /work/probe",
        "WROTE /tmp/probe",
    ]


def test_it_hides_the_hosts_files(run, backend) -> None:
    paths = [
        str(PROJECT_DIR),
        str(PROJECT_DIR / "sandbox"),
        str(PROJECT_DIR / "seccomp" / "profile.json"),
        "/work/main",
        "/root",
        "/home",
        "/srv",
        "/var",
        "/opt",
        "/mnt",
        "/media",
        "/run",
        "/var/lib/codeexec",
        "/run/postgresql",
        "/var/lib/postgresql",
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/ssh",
        "/etc/sudoers",
        "/etc/postgresql",
        "/etc/redis",
        "/etc/environment",
        "/etc/machine-id",
        "/sys/class/net",
        str(backend.config.workdir),
        str(Path(backend.config.workdir).parent),
    ]
    code = """
import json, os, sys
seen = {}
for p in sys.argv[1:]:
    if not os.path.lexists(p):
        seen[p] = "absent"
    elif os.path.isdir(p):
        seen[p] = sorted(os.listdir(p))
    else:
        seen[p] = "present"
print(json.dumps(seen))
"""
    r = _ok(run("python", code, args=tuple(paths)))
    seen = json.loads(r.stdout)
    visible = {p: v for p, v in seen.items() if v not in ("absent", [])}
    assert visible == {}, visible
    # Control: these do exist on the host, so "absent" above means hidden, not missing.
    for p in (PROJECT_DIR, PROJECT_DIR / "seccomp" / "profile.json", Path(backend.config.workdir)):
        assert p.exists(), p


def test_it_sees_only_its_own_files_in_work(run) -> None:
    code = """
import json, os
print(json.dumps({d: sorted(os.listdir(d)) for d in ("/work", "/work/inputs", "/work/outputs", "/tmp")}))
"""
    seen = json.loads(_ok(run("python", code)).stdout)
    assert seen["/work"] == ["inputs", "main.py", "outputs"], seen
    assert seen["/work/inputs"] == seen["/work/outputs"] == [], seen
    assert seen["/tmp"] in ([], [".matplotlib"]), seen  # matplotlib's config dir is all that is prepared


def test_it_hides_another_runs_files(run) -> None:
    """Alice's run writes a marker and waits; Bob's run, meanwhile, searches the whole tree for it."""
    alice_marker = f"alice-{uuid.uuid4().hex}"
    bob_marker = f"bob-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    alice_code = """
import os, sys, time
name = sys.argv[1]
for d in ("/work", "/work/outputs", "/tmp"):
    with open(os.path.join(d, name), "w") as f:
        f.write("alice was here")
time.sleep(3)
print("STILL THERE", all(os.path.exists(os.path.join(d, name)) for d in ("/work", "/work/outputs", "/tmp")))
"""
    bob_code = """
import os, sys
alice, bob = sys.argv[1], sys.argv[2]
for d in ("/work", "/tmp"):
    with open(os.path.join(d, bob), "w") as f:
        f.write("bob was here")
found = []
for top, dirs, files in os.walk("/"):
    if top == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "usr", "dev")]
    for name in dirs + files:
        if alice in name or bob in name:
            found.append(os.path.join(top, name))
print("FOUND", sorted(found))
"""
    results: dict[str, RunResult] = {}
    alice = threading.Thread(
        target=lambda: results.setdefault(
            "alice", run("python", alice_code, args=(alice_marker,), env={"CONFORMANCE_MARK": token}, timeout_ms=8000)
        )
    )
    alice.start()
    try:
        assert _wait_for_marked_process(token, timeout_s=10), "alice's run never started"
        time.sleep(0.5)  # she writes her files first thing
        bob = run("python", bob_code, args=(alice_marker, bob_marker))
    finally:
        alice.join()
    assert _ok(results["alice"]).stdout == "STILL THERE True\n"
    _ok(bob)
    assert bob.stdout == f"FOUND {sorted(['/work/' + bob_marker, '/tmp/' + bob_marker])}\n"


def test_it_shows_only_the_sandboxs_processes(run) -> None:
    code = """
import json, os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
comms = []
for p in pids:
    try:
        with open(f"/proc/{p}/comm") as f:
            comms.append(f.read().strip())
    except OSError:
        pass
print(json.dumps({"pids": pids, "self": os.getpid(), "comms": comms}))
"""
    r = _ok(run("python", code))
    seen = json.loads(r.stdout)
    host_pids = [p for p in os.listdir("/proc") if p.isdigit()]
    # pid 1 (bubblewrap, or docker-init), the program, nothing else; a fresh pid namespace, so the
    # program's pid is small (docker's entrypoint may have used a few before it).
    assert len(seen["pids"]) <= 3, seen
    assert seen["self"] <= 10, seen
    assert len(host_pids) > 10  # control: the host does have many
    assert not {"postgres", "redis-server", "python3 -m pytest", "pytest", "systemd"} & set(seen["comms"]), seen


def test_it_cannot_signal_host_processes_of_the_same_uid(run, backend) -> None:
    """A process of the sandbox uid outside the sandbox: kill(-1) and kill(pid) from inside do not reach it."""
    victim = subprocess.Popen(
        ["/bin/sleep", "60"], user=backend.config.sandbox_uid, group=backend.config.sandbox_gid, extra_groups=[]
    )
    code = """
import errno, os, signal, sys
try:
    os.kill(int(sys.argv[1]), 0)
    print("VISIBLE")
except OSError as e:
    print("BYPID", errno.errorcode[e.errno])
try:
    os.kill(-1, signal.SIGKILL)  # everything this uid may signal, except ourselves and pid 1
    print("KILLALL done")
except OSError as e:
    print("KILLALL", errno.errorcode[e.errno])
"""
    try:
        r = _ok(run("python", code, args=(str(victim.pid),)))
        time.sleep(0.2)
        assert victim.poll() is None, "a host process of the sandbox uid was killed from inside the sandbox"
    finally:
        victim.kill()
        victim.wait()
    assert "VISIBLE" not in r.stdout, r.stdout
    assert "BYPID ESRCH" in r.stdout, r.stdout


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_runs_as_an_unprivileged_user_in_a_host_called_sandbox(run, language: str) -> None:
    r = _ok(run(language, IDENTITY[language]))
    seen = dict(line.split(" ", 1) if " " in line else (line, "") for line in r.stdout.splitlines())
    assert seen["uid"] == seen["euid"] == str(SANDBOX_UID), seen
    assert seen["gid"] == seen["egid"] == str(SANDBOX_GID), seen
    assert "0" not in seen["groups"].split(","), seen
    assert seen["hostname"] == "sandbox", seen


def test_it_reports_the_sandbox_identity_everywhere(run) -> None:
    code = """
import json, os, pwd, grp, subprocess
print(json.dumps({
    "resuid": list(os.getresuid()), "resgid": list(os.getresgid()), "groups": os.getgroups(),
    "name": pwd.getpwuid(os.getuid()).pw_name, "group": grp.getgrgid(os.getgid()).gr_name,
    "id": subprocess.run(["id"], capture_output=True, text=True).stdout.strip(),
    "uname": os.uname().nodename, "etc_hostname": open("/etc/hostname").read().strip(),
    "proc_hostname": open("/proc/sys/kernel/hostname").read().strip(),
}))
"""
    seen = json.loads(_ok(run("python", code)).stdout)
    assert seen["resuid"] == [SANDBOX_UID] * 3 and seen["resgid"] == [SANDBOX_GID] * 3, seen
    assert 0 not in seen["groups"], seen
    assert seen["name"] == "sandbox" and seen["group"] == "sandbox", seen
    assert seen["id"].startswith("uid=1000(sandbox) gid=1000(sandbox)"), seen
    assert "root" not in seen["id"], seen
    assert seen["uname"] == seen["etc_hostname"] == seen["proc_hostname"] == "sandbox", seen


def test_it_has_a_synthetic_passwd_and_group(run) -> None:
    code = """
print(open("/etc/passwd").read())
print("--")
print(open("/etc/group").read())
"""
    r = _ok(run("python", code))
    passwd, group = r.stdout.split("--\n")
    users = {line.split(":")[0] for line in passwd.splitlines() if line}
    groups = {line.split(":")[0] for line in group.splitlines() if line}
    assert users <= {"root", "sandbox", "nobody"}, users
    assert "sandbox" in users
    assert groups <= {"root", "sandbox", "nogroup"}, groups
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line}
    assert len(host_users - users) > 0  # control: the host's own accounts (postgres, …) stay outside
    for line in filter(None, passwd.splitlines()):
        fields = line.split(":")
        assert fields[6] == "/usr/sbin/nologin", line  # no account has a login shell
        assert fields[1] == "x", line  # no password hashes


def test_it_hides_the_hosts_sysv_ipc(run) -> None:
    """A shared-memory segment created on the host is neither listed nor attachable inside."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.restype = ctypes.c_int
    ipc_private, ipc_creat, ipc_rmid = 0, 0o1000, 0
    shmid = libc.shmget(ipc_private, 4096, ipc_creat | 0o666)
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    code = """
import ctypes, sys
lines = open("/proc/sysvipc/shm").read().splitlines()[1:]
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
addr = libc.shmat(int(sys.argv[1]), None, 0)
print(len(lines), "ATTACHED" if addr not in (None, ctypes.c_void_p(-1).value) else "NOT-ATTACHED")
"""
    try:
        host_listed = any(
            line.split()[1] == str(shmid) for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
        )
        r = _ok(run("python", code, args=(str(shmid),)))
    finally:
        libc.shmctl(shmid, ipc_rmid, None)
    assert host_listed  # control
    assert r.stdout == "0 NOT-ATTACHED\n"


def test_it_gives_each_run_a_fresh_tmp(run) -> None:
    first = _ok(run("python", "open('/tmp/left-behind', 'w').write('x'); open('/work/left-behind', 'w').write('x')"))
    second = _ok(
        run("python", "import os; print(os.path.exists('/tmp/left-behind'), os.path.exists('/work/left-behind'))")
    )
    assert first.stdout == ""
    assert second.stdout == "False False\n"


def test_it_kills_nothing_of_the_host_when_the_program_signals_everything(run) -> None:
    """kill(-1) inside only reaches the sandbox's own processes: the run still completes normally."""
    code = """
import os, signal, time
if os.fork() == 0:
    time.sleep(30)
    os._exit(0)
os.kill(-1, signal.SIGTERM)  # reaches our child, nothing outside
_, status = os.wait()
print("child", os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
"""
    r = _ok(run("python", code))
    assert r.stdout == "child True\n"
