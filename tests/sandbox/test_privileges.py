"""No way up: no capabilities, no_new_privs, the seccomp policy, no root through setuid binaries,
no namespaces of one's own, no kernel interfaces that the policy denies.

The syscall probes pass arguments with which each call would succeed (or fail for lack of a
capability) if the policy let it through, and print the errno they got, so an assertion on
"denied" cannot be satisfied by a malformed call.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from sandbox import RunResult, Status

LANGUAGES = ["python", "node", "ruby", "php", "go"]
# What a denied call returns: the policy's EPERM (ENOSYS for clone3, so libcs fall back to clone),
# or, behind it, the kernel's own refusal (no capability, nested user namespaces disabled).
DENIED_ERRNOS = {"EPERM", "EACCES", "ENOSYS", "ENOSPC"}

# Python helpers shared by the syscall probes: libc.syscall with the native numbers.
SYSCALL_PRELUDE = """
import ctypes, errno, os, platform, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {
    "x86_64": dict(unshare=272, setns=308, mount=165, umount2=166, pivot_root=155, chroot=161, ptrace=101, bpf=321,
                   keyctl=250, add_key=248, request_key=249, perf_event_open=298, userfaultfd=323,
                   io_uring_setup=425, process_vm_readv=310, process_vm_writev=311, open_by_handle_at=304,
                   name_to_handle_at=303, kexec_load=246, init_module=175, finit_module=313, delete_module=176,
                   clone=56, clone3=435, fsopen=430, open_tree=428, move_mount=429, acct=163, swapon=167,
                   reboot=169, syslog=103, sethostname=170, settimeofday=164, personality=135,
                   iopl=172, ioperm=173, quotactl=179, lookup_dcookie=212, vhangup=153),
    "aarch64": dict(unshare=97, setns=268, mount=40, umount2=39, pivot_root=41, chroot=51, ptrace=117, bpf=280,
                    keyctl=219, add_key=217, request_key=218, perf_event_open=241, userfaultfd=282,
                    io_uring_setup=425, process_vm_readv=270, process_vm_writev=271, open_by_handle_at=265,
                    name_to_handle_at=264, kexec_load=104, init_module=105, finit_module=273, delete_module=106,
                    clone=220, clone3=435, fsopen=430, open_tree=428, move_mount=429, acct=89, swapon=224,
                    reboot=142, syslog=116, sethostname=161, settimeofday=170, personality=92,
                    quotactl=60, lookup_dcookie=18, vhangup=58),
}[platform.machine()]

def arg(a):
    return ctypes.c_long(a) if isinstance(a, int) else a

def call(name, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(NR[name]), *[arg(a) for a in args])
    err = ctypes.get_errno()
    return ret, errno.errorcode.get(err, str(err)) if ret == -1 else "OK"

def report(ret_err):
    ret, err = ret_err
    print("RESULT", ret, err)
"""

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000

# name -> probe body (after SYSCALL_PRELUDE); each calls report(call(...)) exactly once.
SYSCALL_PROBES = {
    "unshare-user": f"report(call('unshare', {CLONE_NEWUSER}))",
    "unshare-mount": f"report(call('unshare', {CLONE_NEWNS}))",
    "unshare-net": f"report(call('unshare', {CLONE_NEWNET}))",
    "unshare-pid": f"report(call('unshare', {CLONE_NEWPID}))",
    "unshare-uts-ipc-cgroup": f"report(call('unshare', {CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP}))",
    "clone-newuser": f"""
r = call('clone', {CLONE_NEWUSER} | 17, 0, 0, 0, 0)  # 17 = SIGCHLD: a fork into a new user namespace
if r[0] == 0:
    os._exit(0)
report(r)
""",
    "clone-newnet": f"""
r = call('clone', {CLONE_NEWNET} | 17, 0, 0, 0, 0)
if r[0] == 0:
    os._exit(0)
report(r)
""",
    "clone3": """
args = (ctypes.c_uint64 * 11)()
args[4] = 17  # exit_signal = SIGCHLD
r = call('clone3', ctypes.byref(args), ctypes.sizeof(args))
if r[0] == 0:
    os._exit(0)
report(r)
""",
    "setns": """
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
report(call('setns', fd, 0))
""",
    "mount-tmpfs": "report(call('mount', b'none', b'/tmp', b'tmpfs', 0, None))",
    "mount-bind": "report(call('mount', b'/work', b'/tmp', None, 4096, None))",  # MS_BIND
    "umount-proc": "report(call('umount2', b'/proc', 2))",  # MNT_DETACH
    "pivot-root": "report(call('pivot_root', b'/tmp', b'/tmp'))",
    "chroot": "report(call('chroot', b'/tmp'))",
    "fsopen": "report(call('fsopen', b'tmpfs', 0))",
    "open-tree": "report(call('open_tree', -100, b'/work', 1))",  # AT_FDCWD, OPEN_TREE_CLONE
    "ptrace-traceme": "report(call('ptrace', 0, 0, 0, 0))",
    "ptrace-attach-child": """
import signal, time
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
r = call('ptrace', 16, child, 0, 0)  # PTRACE_ATTACH to our own child: allowed by the kernel alone
os.kill(child, signal.SIGKILL)
report(r)
""",
    "ptrace-attach-pid1": "report(call('ptrace', 16, 1, 0, 0))",
    "process-vm-readv": """
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
src, dst = ctypes.create_string_buffer(b"secret", 8), ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.addressof(dst), 8), iovec(ctypes.addressof(src), 8)
report(call('process_vm_readv', os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
""",
    "process-vm-writev": """
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
src, dst = ctypes.create_string_buffer(b"secret", 8), ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.addressof(src), 8), iovec(ctypes.addressof(dst), 8)
report(call('process_vm_writev', os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
""",
    "bpf-map-create": """
attr = (ctypes.c_uint32 * 32)()
attr[0], attr[1], attr[2], attr[3] = 2, 4, 8, 1  # BPF_MAP_TYPE_ARRAY, key 4, value 8, 1 entry
report(call('bpf', 0, ctypes.byref(attr), ctypes.sizeof(attr)))
""",
    "keyctl": "report(call('keyctl', 0, -3, 1))",  # KEYCTL_GET_KEYRING_ID of the session keyring, create
    "add-key": "report(call('add_key', b'user', b'conformance', b'payload', 7, -2))",  # into the process keyring
    "request-key": "report(call('request_key', b'user', b'conformance', None, 0))",
    "perf-event-open": """
attr = (ctypes.c_uint8 * 128)()
attr[0] = 1  # PERF_TYPE_SOFTWARE (config 0 = cpu clock), size 128
attr[4] = 128
attr[40] = 1 | 32 | 64  # disabled, exclude_kernel, exclude_hv: what perf_event_paranoid=2 allows
report(call('perf_event_open', ctypes.byref(attr), 0, -1, -1, 0))
""",
    "userfaultfd": "report(call('userfaultfd', 1 | 0o2000000))",  # UFFD_USER_MODE_ONLY | O_CLOEXEC
    "io-uring-setup": """
params = (ctypes.c_uint8 * 120)()
report(call('io_uring_setup', 4, ctypes.byref(params)))
""",
    "open-by-handle-at": """
handle = (ctypes.c_uint8 * 136)()
handle[0] = 128  # handle_bytes
report(call('open_by_handle_at', os.open("/work", os.O_RDONLY), ctypes.byref(handle), 0))
""",
    "kexec-load": "report(call('kexec_load', 0, 0, None, 0))",
    "init-module": "report(call('init_module', b'x' * 64, 64, b''))",
    "finit-module": "report(call('finit_module', os.open('/work/main.py', os.O_RDONLY), b'', 0))",
    "delete-module": "report(call('delete_module', b'conformance_no_such_module', 0o4000))",  # O_NONBLOCK
    "acct": "report(call('acct', b'/tmp/acct'))",
    "swapon": "report(call('swapon', b'/tmp/swap', 0))",
    "reboot": "report(call('reboot', 0xfee1dead, 672274793, 0))",  # CMD 0 = LINUX_REBOOT_CMD_CAD_OFF: harmless
    "syslog": "report(call('syslog', 3, ctypes.create_string_buffer(4096), 4096))",  # SYSLOG_ACTION_READ_ALL
    "sethostname": "report(call('sethostname', b'escaped', 7))",
    "settimeofday": "report(call('settimeofday', None, None))",
    "personality-read-implies-exec": "report(call('personality', 0x0400000))",  # READ_IMPLIES_EXEC
}


def _ok(r: RunResult) -> RunResult:
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stdout[-2000:], r.stderr[-2000:])
    return r


@pytest.mark.parametrize("probe", sorted(SYSCALL_PROBES))
def test_it_denies_dangerous_syscalls(run, probe: str) -> None:
    r = _ok(run("python", SYSCALL_PRELUDE + SYSCALL_PROBES[probe]))
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, r.stdout
    _, ret, err = lines[0].split()
    assert ret == "-1" and err in DENIED_ERRNOS, f"{probe} was not denied: returned {ret} ({err})"


def test_it_leaves_the_sandbox_unchanged_after_the_denied_syscalls(run) -> None:
    """After trying every probe in one process, it is still uid 1000 in the same namespaces, hostname intact."""
    code = (
        SYSCALL_PRELUDE
        + """
before = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "mnt", "net", "pid", "uts", "ipc", "cgroup")}
for name, a in (("unshare", (0x7E020000,)), ("sethostname", (b"escaped", 7)), ("chroot", (b"/tmp",)),
                ("mount", (b"none", b"/work", b"tmpfs", 0, None))):
    call(name, *a)
after = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in before}
import json, socket
print(json.dumps({"same_ns": before == after, "uid": os.getuid(), "host": socket.gethostname(),
                  "work": sorted(os.listdir("/work")), "root": os.path.exists("/main.py")}))
"""
    )
    seen = json.loads(_ok(run("python", code)).stdout)
    assert seen == {
        "same_ns": True,
        "uid": 1000,
        "host": "sandbox",
        "work": ["inputs", "main.py", "outputs"],
        "root": False,
    }


STATUS_DUMPS = {
    "python": "print(open('/proc/self/status').read())",
    "node": "process.stdout.write(require('fs').readFileSync('/proc/self/status', 'utf8'))",
    "ruby": "print File.read('/proc/self/status')",
    "php": "<?php echo file_get_contents('/proc/self/status');",
    "go": """package main

import (
	"fmt"
	"os"
)

func main() {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		panic(err)
	}
	fmt.Print(string(data))
}
""",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_runs_without_capabilities_under_seccomp_and_no_new_privs(run, language: str) -> None:
    r = _ok(run(language, STATUS_DUMPS[language]))
    fields = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    fields = {k: v.strip() for k, v in fields.items()}
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"  # filter mode
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["1000"] * 4


def test_it_cannot_become_root(run) -> None:
    code = """
import errno, os
def attempt(label, fn, *a):
    try:
        fn(*a)
        print(label, "OK")
    except OSError as e:
        print(label, errno.errorcode[e.errno])
attempt("setuid", os.setuid, 0)
attempt("seteuid", os.seteuid, 0)
attempt("setresuid", os.setresuid, 0, 0, 0)
attempt("setreuid", os.setreuid, 0, 0)
attempt("setgid", os.setgid, 0)
attempt("setresgid", os.setresgid, 0, 0, 0)
attempt("setgroups", os.setgroups, [0])
attempt("setuid-other", os.setuid, 1001)
print("FINAL", os.getresuid(), os.getresgid(), os.getgroups())
"""
    r = _ok(run("python", code))
    results = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    final = results.pop("FINAL")
    assert all(v != "OK" for v in results.values()), results
    # Supplementary groups: none (bwrap), or only the primary group itself (Docker adds it, as login(1)
    # does since containerd's fix for GHSA-hmfx-3pcx-653p); never root's or anyone else's.
    assert final in ("(1000, 1000, 1000) (1000, 1000, 1000) []", "(1000, 1000, 1000) (1000, 1000, 1000) [1000]")


# Each program tries to create a user namespace (what `unshare -r` does first) and prints
# "DENIED <errno>" or "CREATED".
UNSHARE_PROBES = {
    "python": """
import ctypes, errno, platform
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:
    print("CREATED")
else:
    print("DENIED", errno.errorcode[ctypes.get_errno()])
""",
    "node": """
const { spawnSync } = require('child_process');
const r = spawnSync('/usr/bin/unshare', ['--user', '--map-root-user', '/usr/bin/id', '-u']);
console.log(r.status === 0 ? 'CREATED ' + String(r.stdout).trim() : 'DENIED ' + String(r.stderr).trim());
""",
    "ruby": """
require 'fiddle'
unshare = Fiddle::Function.new(Fiddle.dlopen(nil)['unshare'], [Fiddle::TYPE_INT], Fiddle::TYPE_INT)
puts unshare.call(0x10000000) == 0 ? 'CREATED' : "DENIED #{Fiddle.last_error}"
""",
    "php": """<?php
$libc = FFI::cdef("int unshare(int flags); int *__errno_location(void);", "libc.so.6");
echo $libc->unshare(0x10000000) === 0 ? "CREATED\\n" : "DENIED " . $libc->__errno_location()[0] . "\\n";
""",
    "go": """package main

import (
	"fmt"
	"syscall"
)

func main() {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_UNSHARE, syscall.CLONE_NEWUSER, 0, 0); errno != 0 {
		fmt.Println("DENIED", errno)
		return
	}
	fmt.Println("CREATED")
}
""",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_cannot_create_a_user_namespace(run, language: str) -> None:
    r = _ok(run(language, UNSHARE_PROBES[language]))
    assert r.stdout.startswith("DENIED"), r.stdout
    assert "CREATED" not in r.stdout


def test_it_cannot_use_the_unshare_and_mount_tools(run) -> None:
    code = """
import subprocess
for argv in (["/usr/bin/unshare", "-r", "id", "-u"], ["/usr/bin/unshare", "-rm", "id", "-u"],
             ["/usr/bin/unshare", "--net", "true"], ["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"],
             ["/usr/bin/nsenter", "-t", "1", "-U", "-m", "id", "-u"]):
    p = subprocess.run(argv, capture_output=True, text=True)
    print("EXIT", p.returncode, repr(p.stdout.strip()))
"""
    r = _ok(run("python", code))
    lines = r.stdout.splitlines()
    assert len(lines) == 5, r.stdout
    for line in lines:
        _, code_, out = line.split(" ", 2)
        assert code_ != "0" and out == "''", line


def test_it_gives_no_root_through_setuid_binaries(run) -> None:
    """Every setuid/setgid file in the sandbox's /usr runs with the caller's ids, never root's."""
    code = """
import json, os, stat, subprocess
found = []
for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/libexec", "/usr/lib/openssh", "/usr/lib/dbus-1.0",
          "/usr/lib/polkit-1", "/usr/lib/eject"):
    if not os.path.isdir(d):
        continue
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        st = os.stat(path, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            found.append(path)
seen = {}
for path in found:
    try:
        p = subprocess.Popen([path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as e:
        seen[path] = f"exec failed: {e}"
        continue
    # Not reaped yet, so its /proc entry (zombie or not) still carries the credentials it ran with.
    with open(f"/proc/{p.pid}/status") as f:
        ids = {line.split(":")[0]: line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))}
    p.kill()
    p.wait()
    seen[path] = ids
su = subprocess.run(["/usr/bin/su", "-c", "id -u", "root"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
print(json.dumps({"seen": seen, "su": [su.returncode, su.stdout]}))
"""
    result = json.loads(_ok(run("python", code)).stdout)
    seen = result["seen"]
    assert seen, "no setuid binary found inside the sandbox to try"
    for path, ids in seen.items():
        if isinstance(ids, str):
            continue  # refused to execute at all: no root either
        assert ids["Uid"] == ["1000"] * 4 and ids["Gid"] == ["1000"] * 4, (path, ids)
    su_code, su_out = result["su"]
    assert su_code != 0 and "0" not in su_out.split(), result["su"]


def test_it_cannot_chroot(run) -> None:
    code = """
import errno, os
try:
    os.chroot("/tmp")
    print("CHROOTED")
except OSError as e:
    print("DENIED", errno.errorcode[e.errno])
"""
    r = _ok(run("python", code))
    assert r.stdout.startswith("DENIED"), r.stdout


def test_it_cannot_write_kernel_settings(run) -> None:
    code = """
import json
import subprocess
result = {}
for path, value in (("/proc/sys/kernel/hostname", "escaped"), ("/proc/sys/vm/drop_caches", "3"),
                    ("/proc/sys/kernel/core_pattern", "|/tmp/x"), ("/proc/sys/net/ipv4/ip_forward", "1"),
                    ("/proc/sys/kernel/panic", "1"), ("/proc/sysrq-trigger", "h"), ("/proc/self/oom_score_adj", "-1000"),
                    ("/proc/self/uid_map", "0 0 1"), ("/proc/self/setgroups", "allow")):
    try:
        with open(path, "w") as f:
            f.write(value)
        result[path] = "WROTE"
    except OSError as e:
        result[path] = e.strerror
print(json.dumps(result))
"""
    result = json.loads(_ok(run("python", code)).stdout)
    wrote = [p for p, v in result.items() if v == "WROTE"]
    assert wrote == [], result


def test_it_cannot_create_device_nodes(run) -> None:
    code = """
import errno, os, stat
for path, dev in (("/tmp/mem", os.makedev(1, 1)), ("/work/sda", os.makedev(8, 0)), ("/dev/kmsg2", os.makedev(1, 11))):
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, dev)
        fd = os.open(path, os.O_RDONLY)
        print("OPENED", path)
    except OSError as e:
        print("DENIED", path, errno.errorcode[e.errno])
"""
    r = _ok(run("python", code))
    assert "OPENED" not in r.stdout, r.stdout
    assert r.stdout.count("DENIED") == 3, r.stdout


def test_it_has_no_access_to_host_devices(run) -> None:
    code = """
import os
print(sorted(os.listdir("/dev")))
for path in ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/fuse",
             "/dev/kvm", "/dev/net/tun", "/dev/loop-control", "/dev/tty1"):
    print(path, os.path.exists(path))
"""
    r = _ok(run("python", code))
    lines = r.stdout.splitlines()
    assert all(line.endswith(" False") for line in lines[1:]), r.stdout


# Probes the kernel alone grants an unprivileged process on this host: only the seccomp policy (and,
# for the user-namespace ones, bwrap's --disable-userns) stands between them and the program.
POLICY_ONLY_PROBES = [
    "add-key",
    "clone-newuser",
    "io-uring-setup",
    "keyctl",
    "perf-event-open",
    "personality-read-implies-exec",
    "process-vm-readv",
    "process-vm-writev",
    "ptrace-attach-child",
    "ptrace-traceme",
    "unshare-user",
    "userfaultfd",
]


def _probe_result(stdout: str) -> tuple[str, str]:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, stdout
    _, ret, err = lines[0].split()
    return ret, err


@pytest.mark.parametrize("probe", POLICY_ONLY_PROBES)
def test_it_denies_through_its_policy_what_the_kernel_allows(run, backend, probe: str) -> None:
    """The same probe succeeds on the host as the sandbox uid with no filter, and is denied in the sandbox,
    so the denial is the backend's policy at work, not the kernel's or the machine's."""
    code = SYSCALL_PRELUDE + SYSCALL_PROBES[probe]
    host = subprocess.run(
        ["/usr/bin/python3", "-c", code],
        user=backend.config.sandbox_uid,
        group=backend.config.sandbox_gid,
        extra_groups=[],
        cwd="/tmp",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    ret, err = _probe_result(host.stdout)
    assert ret != "-1", f"control: {probe} fails on this host without the sandbox too ({err}): {host.stderr}"
    ret, err = _probe_result(_ok(run("python", code)).stdout)
    assert ret == "-1" and err in DENIED_ERRNOS, f"{probe} was not denied: returned {ret} ({err})"
