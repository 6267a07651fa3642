"""Helpers for sockd's end-to-end tests: the daemon in the foreground on loopback, raw SOCKS
clients (bytes on the wire, replies decoded), and the configuration of the real clients
(curl, PySocks, proxychains4).

Everything talks only to loopback addresses (127.0.0.0/8 and ::1); every wait is bounded
(a port answering, a log line), none is a fixed sleep. The processes, backends and files
belong to proxyhelpers' Lab (the `lab` fixture), which stops and removes them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytest

from proxyhelpers import (IO_TIMEOUT, START_TIMEOUT, Lab, Proc, bastion_bin, family_of, free_port, run,
                          system_bin)

# SOCKS4 reply codes (CD) and SOCKS5 REP codes.
GRANTED, REJECTED, NO_IDENTD, IDENT_MISMATCH = 90, 91, 92, 93
REP_OK, REP_FAILURE, REP_NOT_ALLOWED, REP_REFUSED, REP_CMD, REP_ATYP = 0, 1, 2, 5, 7, 8


@dataclass
class Sockd:
    proc: Proc
    host: str
    port: int
    config: Path
    pid_file: Path

    def wait_for(self, pattern: str, **kw) -> re.Match:
        return self.proc.wait_for(pattern, **kw)

    def mark(self) -> int:
        return self.proc.mark()

    def text(self) -> str:
        return self.proc.text()


def sockd_bin() -> Path:
    return bastion_bin("sockd")


def start_sockd(lab: Lab, config: str | Path, *args: str | os.PathLike, host: str = "127.0.0.1",
                name: str = "sockd.conf") -> Sockd:
    """`sockd --foreground --log stderr:5 --config CONF --listen HOST:PORT --pid-file ... ARGS`,
    ready once it says `sockd started`. `config` is the text of a sockd.conf or a path."""
    conf = config if isinstance(config, Path) else lab.file(name, config)
    port = free_port(host)
    pid_file = lab.dir / f"sockd-{port}.pid"
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    p = lab.start([sockd_bin(), "--foreground", "--log", "stderr:5", "--config", conf, "--listen", listen,
                   "--pid-file", pid_file, *args], name="sockd")
    p.wait_for(r"sockd started", timeout=START_TIMEOUT)
    return Sockd(p, host, port, conf, pid_file)


def sockd_run(*args: str | os.PathLike, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return run([sockd_bin(), *args], timeout=timeout)


# MARK: - Raw clients

def _connect(proxy: tuple[str, int], source: Optional[str]) -> socket.socket:
    s = socket.socket(family_of(proxy[0]), socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    if source is not None:
        s.bind((source, 0))
    s.connect(proxy)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    """Exactly n bytes, or fewer when the peer closes first."""
    out = b""
    while len(out) < n:
        try:
            chunk = s.recv(n - len(out))
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def socks4(proxy: tuple[str, int], dst: str, port: int, user: bytes = b"", *, source: Optional[str] = None,
           host: Optional[bytes] = None, command: int = 1) -> tuple[int, socket.socket]:
    """A SOCKS4 (SOCKS4a with `host`: DSTIP 0.0.0.1 and the name after the user id) request:
    (CD of the reply, or -1 when the connection closed without one; the socket)."""
    s = _connect(proxy, source)
    ip = socket.inet_aton("0.0.0.1" if host is not None else dst)
    s.sendall(struct.pack(">BBH", 4, command, port) + ip + user + b"\0" + (host + b"\0" if host is not None else b""))
    reply = recv_exact(s, 8)
    return (reply[1] if len(reply) == 8 else -1), s


def socks5_greet(s: socket.socket, methods: bytes = b"\0") -> int:
    s.sendall(bytes([5, len(methods)]) + methods)
    answer = recv_exact(s, 2)
    return answer[1] if len(answer) == 2 else -1


def socks5_address(dst: str) -> bytes:
    try:
        a = ipaddress.ip_address(dst)
    except ValueError:
        name = dst.encode()
        return bytes([3, len(name)]) + name
    return (b"\x01" if a.version == 4 else b"\x04") + a.packed


def socks5_reply(s: socket.socket) -> tuple[int, Optional[tuple[str, int]]]:
    """(REP, bound address) of a SOCKS5 reply; (-1, None) when it closed without one."""
    head = recv_exact(s, 4)
    if len(head) < 4:
        return -1, None
    atyp = head[3]
    if atyp == 1:
        raw = recv_exact(s, 4 + 2)
        return head[1], (socket.inet_ntop(socket.AF_INET, raw[:4]), struct.unpack(">H", raw[4:])[0])
    if atyp == 4:
        raw = recv_exact(s, 16 + 2)
        return head[1], (socket.inet_ntop(socket.AF_INET6, raw[:16]), struct.unpack(">H", raw[16:])[0])
    if atyp == 3:
        n = recv_exact(s, 1)[0]
        raw = recv_exact(s, n + 2)
        return head[1], (raw[:n].decode(), struct.unpack(">H", raw[n:])[0])
    return head[1], None


def socks5(proxy: tuple[str, int], dst: str, port: int, *, source: Optional[str] = None,
           auth: Optional[tuple[bytes, bytes]] = None, command: int = 1) -> tuple[int, socket.socket]:
    """A SOCKS5 CONNECT (or `command`), with username/password when `auth` is given:
    (REP, or -1 for no reply, 0x100 + status for a refused password, 0x1FF for method X'FF';
    the socket)."""
    s = _connect(proxy, source)
    method = socks5_greet(s, b"\x02" if auth else b"\x00")
    if method == 0xFF or method < 0:
        return 0x100 + (method & 0xFF), s
    if auth:
        user, password = auth
        s.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        status = recv_exact(s, 2)
        if len(status) < 2 or status[1] != 0:
            return 0x100 + (status[1] if len(status) == 2 else 0xFE), s
    s.sendall(bytes([5, command, 0]) + socks5_address(dst) + struct.pack(">H", port))
    rep, _ = socks5_reply(s)
    return rep, s


def closed_by_peer(s: socket.socket, timeout: float = IO_TIMEOUT) -> bool:
    """Whether the peer closes (end of file or reset) within `timeout`, with nothing more sent."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except (socket.timeout, BlockingIOError):
        return False


def echo_through(s: socket.socket, payload: bytes = b"ping\n") -> bytes:
    """Sends a line through a tunnel to a tagger backend, reads its echo."""
    s.sendall(payload)
    return recv_exact(s, len(payload))


# MARK: - Real clients

def curl(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
    """curl, quiet, bounded, never through a proxy from the environment."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run([system_bin("curl"), "-sS", "--max-time", "10", *args], capture_output=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def nginx_servers(listens: Sequence[tuple[str, int]]) -> str:
    """An nginx server answering `hello REMOTE_ADDR` on each (host, port)."""
    lines = "\n".join(f"        listen {f'[{h}]' if ':' in h else h}:{p};" for h, p in listens)
    return f"""    server {{
{lines}
        location / {{ return 200 "hello $remote_addr\\n"; }}
    }}"""


def proxychains_conf(lab: Lab, sockd: Sockd, kind: str = "socks5") -> Path:
    return lab.file("proxychains.conf", f"""strict_chain
proxy_dns
remote_dns_subnet 224
tcp_read_time_out 15000
tcp_connect_time_out 8000
[ProxyList]
{kind} {sockd.host} {sockd.port}
""")


def sanitised(value: str) -> str:
    """What sockd's % substitutions make of a value (CommandSubstitution.sanitised)."""
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@:+-")
    out = "".join(c if c in safe else "_" for c in value)
    return "_" + out[1:] if out.startswith("-") else out


def import_pysocks():
    """PySocks, as Debian's python3-socks installs it: for the system's python3, in
    dist-packages, which another python3 (a pyenv one) does not search."""
    try:
        import socks
    except ImportError:
        import sys
        for where in ("/usr/lib/python3/dist-packages",):
            if os.path.exists(os.path.join(where, "socks.py")):
                sys.path.append(where)
                break
        try:
            import socks
        except ImportError:
            pytest.fail("PySocks is missing: apt-get install python3-socks (scripts/test installs it)",
                        pytrace=False)
    return socks


def crypt_hash(password: str, salt: str = "xx") -> str:
    return subprocess.run([system_bin("openssl"), "passwd", "-6", "-salt", salt, password], capture_output=True,
                          text=True, check=True, timeout=10).stdout.strip()


# MARK: - UDP ASSOCIATE

class UDPEcho:
    """A UDP echo on a loopback address (a thread): answers `echo ` + each datagram to its
    sender and keeps who sent what."""

    def __init__(self, host: str = "127.0.0.9") -> None:
        self.sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[tuple, bytes]] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received.append((peer, data))
            try:
                self.sock.sendto(b"echo " + data[:65000], peer)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def udp_header(dst: str, port: int) -> bytes:
    """RSV, FRAG 0, and DST of a SOCKS5 UDP datagram (RFC 1928 section 7)."""
    return b"\0\0\0" + socks5_address(dst) + struct.pack(">H", port)


def udp_associate(proxy: tuple[str, int], *, source: Optional[str] = None, expect: tuple[str, int] = ("0.0.0.0", 0),
                  auth: Optional[tuple[bytes, bytes]] = None) -> tuple[int, Optional[tuple[str, int]], socket.socket]:
    """A SOCKS5 UDP ASSOCIATE naming `expect` as where the client sends from: (REP, the relay's
    address from BND, the control connection)."""
    s = _connect(proxy, source)
    method = socks5_greet(s, b"\x02" if auth else b"\x00")
    assert method == (2 if auth else 0), method
    if auth:
        user, password = auth
        s.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        assert recv_exact(s, 2) == b"\x01\x00"
    s.sendall(b"\x05\x03\x00" + socks5_address(expect[0]) + struct.pack(">H", expect[1]))
    rep, bound = socks5_reply(s)
    return rep, bound, s


def parse_udp(datagram: bytes) -> tuple[tuple[str, int], bytes]:
    """(where it came from, payload) of a datagram the relay sent the client."""
    assert datagram[:3] == b"\0\0\0", datagram[:3]
    atyp = datagram[3]
    if atyp == 1:
        return (socket.inet_ntop(socket.AF_INET, datagram[4:8]), struct.unpack(">H", datagram[8:10])[0]), datagram[10:]
    assert atyp == 4, atyp
    return (socket.inet_ntop(socket.AF_INET6, datagram[4:20]), struct.unpack(">H", datagram[20:22])[0]), datagram[22:]
