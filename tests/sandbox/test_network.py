"""No network at all: only loopback, no DNS, and the host's own loopback services out of reach.

Every probe here targets loopback addresses only (127.0.0.1, ::1, abstract/filesystem unix
sockets of this host). The probes print CONNECTED/RESOLVED/OPENED when an attack works, so each
assertion fails the moment the sandbox lets one through; `test_it_uses_probes_that_do_reach_the_host`
runs the same TCP probes outside the sandbox to show they would notice a connection.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Status

LANGUAGES = ["python", "node", "ruby", "php", "go"]
POSTGRES_PORT = 5432
REDIS_PORT = 6379

# Each program connects to 127.0.0.1 on every port given as an argument and prints one line per
# port: "CONNECTED <port>" or "BLOCKED <port> <reason>".
TCP_PROBES = {
    "python": """
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", int(port)))
        print("CONNECTED", port)
    except OSError as e:
        print("BLOCKED", port, e)
    finally:
        s.close()
""",
    "node": """
const net = require('net');
(async () => {
  for (const port of process.argv.slice(2)) {
    await new Promise((done) => {
      const s = net.connect({ host: '127.0.0.1', port: Number(port) });
      s.setTimeout(2000);
      s.on('connect', () => { console.log('CONNECTED ' + port); s.destroy(); done(); });
      s.on('timeout', () => { console.log('BLOCKED ' + port + ' timeout'); s.destroy(); done(); });
      s.on('error', (e) => { console.log('BLOCKED ' + port + ' ' + e.code); done(); });
    });
  }
})();
""",
    "ruby": """
require 'socket'
ARGV.each do |port|
  begin
    Socket.tcp('127.0.0.1', port.to_i, connect_timeout: 2) { }
    puts "CONNECTED #{port}"
  rescue SystemCallError, IOError, SocketError => e
    puts "BLOCKED #{port} #{e.class}"
  end
end
""",
    "php": """<?php
foreach (array_slice($argv, 1) as $port) {
    $s = @fsockopen("127.0.0.1", (int)$port, $errno, $errstr, 2);
    if ($s) {
        echo "CONNECTED $port\\n";
        fclose($s);
    } else {
        echo "BLOCKED $port $errno $errstr\\n";
    }
}
""",
    "go": """package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	for _, port := range os.Args[1:] {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 2*time.Second)
		if err != nil {
			fmt.Println("BLOCKED", port, err)
			continue
		}
		c.Close()
		fmt.Println("CONNECTED", port)
	}
}
""",
}

# Each program resolves every name given as an argument: "RESOLVED <name> ..." or "FAILED <name> ...".
DNS_PROBES = {
    "python": """
import socket, sys
for name in sys.argv[1:]:
    try:
        print("RESOLVED", name, socket.getaddrinfo(name, 80))
    except OSError as e:
        print("FAILED", name, e)
""",
    "node": """
const dns = require('dns');
(async () => {
  for (const name of process.argv.slice(2)) {
    try {
      const r = await dns.promises.lookup(name);
      console.log('RESOLVED ' + name + ' lookup ' + JSON.stringify(r));
    } catch (e) { console.log('FAILED ' + name + ' lookup ' + e.code); }
    try {
      // c-ares talks DNS on the wire itself instead of going through getaddrinfo.
      const r = await dns.promises.resolve4(name);
      console.log('RESOLVED ' + name + ' resolve4 ' + JSON.stringify(r));
    } catch (e) { console.log('FAILED ' + name + ' resolve4 ' + e.code); }
  }
})();
""",
    "ruby": """
require 'socket'
require 'resolv'
ARGV.each do |name|
  begin
    puts "RESOLVED #{name} #{Addrinfo.getaddrinfo(name, 80).map(&:ip_address)}"
  rescue SocketError, SystemCallError => e
    puts "FAILED #{name} getaddrinfo #{e.class}"
  end
  begin
    # Resolv is Ruby's own DNS client: it sends queries without the C library.
    puts "RESOLVED #{name} resolv #{Resolv::DNS.new.tap { |d| d.timeouts = 2 }.getaddress(name)}"
  rescue Resolv::ResolvError, SystemCallError => e
    puts "FAILED #{name} resolv #{e.class}"
  end
end
""",
    "php": """<?php
foreach (array_slice($argv, 1) as $name) {
    $ip = gethostbyname($name);
    echo ($ip !== $name ? "RESOLVED $name $ip" : "FAILED $name gethostbyname"), "\\n";
    $records = @dns_get_record($name, DNS_A);
    echo ($records ? "RESOLVED $name " . json_encode($records) : "FAILED $name dns_get_record"), "\\n";
}
""",
    "go": """package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	for _, name := range os.Args[1:] {
		addrs, err := net.LookupHost(name)
		if err != nil || len(addrs) == 0 { // Go reports "files only, not found" as no addresses
			fmt.Println("FAILED", name, err)
			continue
		}
		fmt.Println("RESOLVED", name, addrs)
	}
}
""",
}

# Each program sends datagrams to 127.0.0.1:<port> and prints "SENT <n>" when its sends returned.
UDP_PROBES = {
    "python": """
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
for _ in range(20):
    try:
        s.sendto(b"escaped", ("127.0.0.1", port))
        sent += 1
    except OSError as e:
        print("ERROR", e)
print("SENT", sent)
""",
    "node": """
const dgram = require('dgram');
const port = Number(process.argv[2]);
const s = dgram.createSocket('udp4');
let sent = 0;
(async () => {
  for (let i = 0; i < 20; i++) {
    await new Promise((done) => s.send('escaped', port, '127.0.0.1', (err) => {
      if (err) console.log('ERROR ' + err.code); else sent++;
      done();
    }));
  }
  console.log('SENT ' + sent);
  s.close();
})();
""",
    "ruby": """
require 'socket'
port = ARGV[0].to_i
s = UDPSocket.new
sent = 0
20.times do
  begin
    s.send('escaped', 0, '127.0.0.1', port)
    sent += 1
  rescue SystemCallError => e
    puts "ERROR #{e.class}"
  end
end
puts "SENT #{sent}"
""",
    "php": """<?php
$port = (int)$argv[1];
$s = socket_create(AF_INET, SOCK_DGRAM, SOL_UDP);
$sent = 0;
for ($i = 0; $i < 20; $i++) {
    if (@socket_sendto($s, "escaped", 7, 0, "127.0.0.1", $port) === 7) { $sent++; }
}
echo "SENT $sent\\n";
""",
}

# Sockets that reach past loopback or into the kernel's network configuration; prints
# "OPENED <kind>" or "DENIED <kind> <reason>" for each.
RAW_SOCKET_PROBES = {
    "python": """
import socket
kinds = {
    "inet-raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "inet-raw-tcp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
    "inet6-raw": (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
    "netlink-route": (16, socket.SOCK_RAW, 0),
    "netlink-route-dgram": (16, socket.SOCK_DGRAM, 0),
    "packet-raw": (17, socket.SOCK_RAW, 0x0300),
    "packet-dgram": (17, socket.SOCK_DGRAM, 0x0300),
}
for kind, args in kinds.items():
    try:
        socket.socket(*args).close()
        print("OPENED", kind)
    except OSError as e:
        print("DENIED", kind, e)
""",
    "ruby": """
require 'socket'
{ 'inet-raw' => [Socket::AF_INET, Socket::SOCK_RAW, Socket::IPPROTO_ICMP],
  'inet6-raw' => [Socket::AF_INET6, Socket::SOCK_RAW, Socket::IPPROTO_ICMPV6],
  'netlink-route' => [16, Socket::SOCK_RAW, 0],
  'packet-raw' => [17, Socket::SOCK_RAW, 0x0300] }.each do |kind, args|
  begin
    Socket.new(*args).close
    puts "OPENED #{kind}"
  rescue SystemCallError => e
    puts "DENIED #{kind} #{e.class}"
  end
end
""",
    "php": """<?php
// PHP's socket_create() only knows inet, inet6 and unix: raw sockets are what it can try.
$kinds = ["inet-raw" => [AF_INET, SOCK_RAW, 1], "inet-raw-tcp" => [AF_INET, SOCK_RAW, 6],
          "inet6-raw" => [AF_INET6, SOCK_RAW, 58]];
foreach ($kinds as $kind => [$family, $type, $proto]) {
    $s = @socket_create($family, $type, $proto);
    if ($s !== false) {
        echo "OPENED $kind\\n";
        socket_close($s);
    } else {
        echo "DENIED $kind ", socket_strerror(socket_last_error()), "\\n";
    }
}
""",
    "go": """package main

import (
	"fmt"
	"syscall"
)

func main() {
	kinds := []struct {
		name                 string
		family, typ, proto int
	}{
		{"inet-raw", syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP},
		{"inet6-raw", syscall.AF_INET6, syscall.SOCK_RAW, syscall.IPPROTO_ICMPV6},
		{"netlink-route", syscall.AF_NETLINK, syscall.SOCK_RAW, syscall.NETLINK_ROUTE},
		{"packet-raw", syscall.AF_PACKET, syscall.SOCK_RAW, 0x0300},
	}
	for _, k := range kinds {
		fd, err := syscall.Socket(k.family, k.typ, k.proto)
		if err != nil {
			fmt.Println("DENIED", k.name, err)
			continue
		}
		syscall.Close(fd)
		fmt.Println("OPENED", k.name)
	}
}
""",
}
RAW_SOCKET_KINDS = {"python": 7, "ruby": 4, "php": 3, "go": 4}


def _lines_starting(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if line.split(" ", 1)[0] == word]


@pytest.fixture
def host_udp_receiver() -> Iterator[socket.socket]:
    """A UDP socket on the host's 127.0.0.1 that nothing from a sandbox may reach."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def host_listener_v6() -> Iterator[int]:
    """A TCP server on the host's ::1."""
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.bind(("::1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_cannot_reach_the_hosts_loopback_services(run, host_listener: int, language: str) -> None:
    ports = [str(POSTGRES_PORT), str(REDIS_PORT), str(host_listener)]
    r = run(language, TCP_PROBES[language], args=tuple(ports), timeout_ms=10_000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr)
    assert _lines_starting(r.stdout, "CONNECTED") == [], r.stdout
    blocked = {line.split()[1] for line in _lines_starting(r.stdout, "BLOCKED")}
    assert blocked == set(ports), r.stdout


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_uses_probes_that_do_reach_the_host(host_listener: int, language: str, tmp_path: Path) -> None:
    """Control: the TCP probes, run on the host outside any sandbox, do connect to the listener."""
    ext = {"python": "py", "node": "js", "ruby": "rb", "php": "php", "go": "go"}[language]
    src = tmp_path / f"probe.{ext}"
    src.write_text(TCP_PROBES[language])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if language == "go":
        argv = ["/usr/bin/go", "run", str(src)]
        env |= {
            "GOCACHE": str(tmp_path / "gocache"),
            "GOPATH": str(tmp_path / "gopath"),
            "GO111MODULE": "off",
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "",
            "GOPROXY": "off",
            "GOTELEMETRY": "off",
        }
    else:
        argv = [
            {"python": "/usr/bin/python3", "node": "/usr/bin/node", "ruby": "/usr/bin/ruby", "php": "/usr/bin/php"}[
                language
            ],
            str(src),
        ]
    proc = subprocess.run(
        [*argv, str(host_listener)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.split() == ["CONNECTED", str(host_listener)], (proc.stdout, proc.stderr)


def test_it_cannot_reach_a_host_listener_on_ipv6_loopback(run, host_listener_v6: int) -> None:
    code = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect(("::1", int(sys.argv[1])))
    print("CONNECTED")
except OSError as e:
    print("BLOCKED", e)
"""
    r = run("python", code, args=(str(host_listener_v6),))
    assert r.status == Status.SUCCEEDED, (r.status, r.stderr)
    assert r.stdout.startswith("BLOCKED"), r.stdout


def test_it_cannot_reach_the_hosts_unix_sockets(run) -> None:
    """Abstract unix sockets belong to the network namespace; filesystem ones to the host's /run."""
    name = f"codeexec-conformance-{uuid.uuid4().hex}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)
    srv.listen(8)
    code = """
import socket, sys
for label, address in (("abstract", "\\0" + sys.argv[1]), ("postgres", "/run/postgresql/.s.PGSQL.5432"),
                       ("postgres-var", "/var/run/postgresql/.s.PGSQL.5432"), ("redis", "/run/redis/redis-server.sock")):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(address)
        print("CONNECTED", label)
    except OSError as e:
        print("BLOCKED", label, e)
"""
    try:
        r = run("python", code, args=(name,))
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()
    assert r.status == Status.SUCCEEDED, (r.status, r.stderr)
    assert _lines_starting(r.stdout, "CONNECTED") == [], r.stdout
    assert len(_lines_starting(r.stdout, "BLOCKED")) == 4, r.stdout


@pytest.mark.parametrize("language", LANGUAGES)
def test_it_resolves_no_names(run, language: str) -> None:
    # Names a host or a compose network would resolve (the host's own name is in its /etc/hosts).
    names = ("example.com", "postgres", "redis", "db", socket.gethostname())
    r = run(language, DNS_PROBES[language], args=names, timeout_ms=15_000)
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr)
    assert _lines_starting(r.stdout, "RESOLVED") == [], r.stdout
    failed = {line.split()[1] for line in _lines_starting(r.stdout, "FAILED")}
    assert failed == set(names), r.stdout


def test_it_has_no_resolver_configuration(run) -> None:
    code = """
import json, os
conf = open("/etc/resolv.conf").read() if os.path.exists("/etc/resolv.conf") else None
print(json.dumps({"resolv_conf": conf, "hosts": open("/etc/hosts").read().split()}))
"""
    r = run("python", code)
    assert r.status == Status.SUCCEEDED, r.stderr
    seen = json.loads(r.stdout)
    # Absent (bwrap) or empty (Docker always mounts one; ours has no nameserver, search or options).
    assert seen["resolv_conf"] in (None, ""), seen
    assert socket.gethostname() not in seen["hosts"], seen


@pytest.mark.parametrize("language", ["python", "node", "ruby", "php"])
def test_it_sends_no_udp_to_the_host(run, host_udp_receiver: socket.socket, language: str) -> None:
    port = host_udp_receiver.getsockname()[1]
    r = run(language, UDP_PROBES[language], args=(str(port),))
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr)
    # The sends themselves succeed: they land on the sandbox's own loopback, not the host's.
    assert "SENT" in r.stdout, r.stdout
    host_udp_receiver.settimeout(1.0)
    with pytest.raises(TimeoutError):
        data, sender = host_udp_receiver.recvfrom(1024)
        pytest.fail(f"the host received {data!r} from {sender}")


def test_it_has_only_the_loopback_interface(run) -> None:
    code = """
with open("/proc/net/dev") as f:
    names = [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]
print("IFACES", " ".join(sorted(names)))
with open("/proc/net/route") as f:
    print("ROUTES", len(f.readlines()[1:]))
with open("/proc/net/if_inet6") as f:
    print("INET6", " ".join(sorted({line.split()[-1] for line in f})))
"""
    r = run("python", code)
    assert r.status == Status.SUCCEEDED, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["IFACES"] == "lo", r.stdout
    assert lines["ROUTES"] == "0", r.stdout  # no route at all, default or otherwise
    assert lines["INET6"] in ("lo", ""), r.stdout


@pytest.mark.parametrize("language", ["python", "ruby", "php", "go"])
def test_it_refuses_raw_netlink_and_packet_sockets(run, language: str) -> None:
    r = run(language, RAW_SOCKET_PROBES[language])
    assert r.status == Status.SUCCEEDED, (r.status, r.error, r.stderr)
    assert _lines_starting(r.stdout, "OPENED") == [], r.stdout
    denied = _lines_starting(r.stdout, "DENIED")
    assert len(denied) == RAW_SOCKET_KINDS[language], r.stdout


def test_it_keeps_loopback_inside_the_sandbox_working(run) -> None:
    """Loopback is private to the run, but it works: a program may talk to itself."""
    code = """
import socket, threading
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
def serve():
    conn, _ = srv.accept()
    conn.sendall(conn.recv(16).upper())
    conn.close()
threading.Thread(target=serve).start()
c = socket.create_connection(srv.getsockname(), timeout=5)
c.sendall(b"ping")
print(c.recv(16).decode())
"""
    r = run("python", code)
    assert r.status == Status.SUCCEEDED, r.stderr
    assert r.stdout == "PING\n"


def test_it_does_not_let_a_sandbox_listener_appear_on_the_host(run) -> None:
    """A port bound inside is not bound on the host: the sandbox cannot offer services to it."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port free on the host right now
    code = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
print("LISTENING", flush=True)
time.sleep(1.5)
"""
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run("python", code, args=(str(port),))))
    t.start()
    try:
        connected = []
        for _ in range(10):
            c = socket.socket()
            c.settimeout(0.2)
            try:
                c.connect(("127.0.0.1", port))
                connected.append(True)
            except OSError:
                pass
            finally:
                c.close()
            t.join(0.1)
    finally:
        t.join()
    r = result["r"]
    assert r.status == Status.SUCCEEDED, (r.status, r.stderr)  # type: ignore[attr-defined]
    assert r.stdout == "LISTENING\n"  # type: ignore[attr-defined]
    assert connected == []
