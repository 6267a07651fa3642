"""Helpers for the tcpproxy end-to-end tests: processes, backends and clients on loopback.

Everything here talks only to loopback addresses (127.0.0.0/8 and ::1). Every wait is
bounded; nothing sleeps a fixed time to wait for readiness.

  Proc         any background program: output collected in a thread, wait_for(regex),
               signals, stop() kills its whole process group.
  LogTail      a log file read as it grows: wait_for(regex) on the lines since the last match.
  Lab          one test's world: a world-readable temporary directory (tcpproxy started as
               root serves as uid 65534, so its handler programs, access control programs
               and recording files must be reachable by that user), the tcpproxy, tcpserver,
               nginx, haproxy and iperf3 processes and the Python backends the test
               started, all stopped at teardown.
  Backend      a threaded Python TCP server; `tagger` answers "TAG PEERIP PEERPORT\\n" and
               then echoes until end of file, `hasher` reads to end of file, hashes what it
               got and answers with its own payload (half-close in both directions).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import pytest

START_TIMEOUT = 5.0
IO_TIMEOUT = 5.0
DNSCACHEIP = "127.53.0.1"


# MARK: - Binaries and ports

def bastion_bin(name: str) -> Path:
    value = os.environ.get("BASTION_BIN")
    if not value:
        pytest.fail("$BASTION_BIN is not set: it must point at our release build dir "
                    "(swift build -c release --show-bin-path)", pytrace=False)
    path = Path(value) / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing or not executable (build with swift build -c release)",
                    pytrace=False)
    return path.absolute()  # not resolved: a link to the multi-call binary must keep its name


def system_bin(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if not path:
        pytest.fail(f"{name} is not installed (scripts/test installs it: PACKAGES)", pytrace=False)
    return path


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_ports = random.Random()
_named: Optional[set] = None


def _named_ports() -> set:
    """The tcp ports /etc/services gives a name, read once."""
    global _named
    if _named is None:
        _named = set()
        try:
            with open("/etc/services", errors="replace") as f:
                for line in f:
                    words = line.split("#", 1)[0].split()
                    if len(words) >= 2 and words[1].endswith("/tcp") and words[1][:-4].isdigit():
                        _named.add(int(words[1][:-4]))
        except OSError:
            pass
    return _named


def free_port(host: str = "127.0.0.1", also: Sequence[str] = ()) -> int:
    """A port that is free on `host` (and on every address in `also`) right now, chosen below
    the ephemeral range: a port the kernel hands out for port 0 is also one it may give the
    next outgoing connection (a test's own clients, thousands of them), and a daemon binding
    the wildcard address then finds it in use. Never a port /etc/services names: sockd logs
    ports by their service names, as Dante does, and a test looking for the number would miss
    "(dcap)" for 22125."""
    low, _ = _ephemeral_range()
    top = low - 1 if low > 12000 else 65535
    bottom = 10000 if low > 12000 else 61000
    for _ in range(200):
        port = _ports.randint(bottom, top)
        if port in _named_ports():
            continue
        try:
            for address in (host, *also):
                with socket.socket(family_of(address), socket.SOCK_STREAM) as t:
                    if ":" in address:
                        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    t.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port found")


def wait_port(host: str, port: int, timeout: float = START_TIMEOUT,
              proc: Optional["Proc"] = None) -> None:
    """Connects in a bounded loop until `host:port` accepts (then closes at once)."""
    deadline = time.monotonic() + timeout
    last: Optional[Exception] = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.returncode} before listening on "
                                 f"{host}:{port}: {proc.output()!r}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as e:
            last = e
            time.sleep(0.02)
    raise AssertionError(f"nothing accepts on {host}:{port} within {timeout}s ({last}); "
                         + (f"{proc.name} said {proc.output()!r}" if proc else ""))


def wait_file(path: Path, pattern: str, count: int = 1, timeout: float = IO_TIMEOUT) -> str:
    """Waits in a bounded loop until the file at `path` exists and `pattern` (a regex) matches
    its text `count` times; returns the text."""
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if len(rx.findall(text)) >= count:
            return text
        time.sleep(0.02)
    raise AssertionError(f"{path}: no {count} x {pattern!r} within {timeout}s; text so far:\n{text}")


class LogTail:
    """A log file read as it grows, for logs too long to read whole at every wait (a daemon
    logging each of thousands of connections): `wait_for` looks only at the lines written
    since the previous match, one line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._pending = b""

    def wait_for(self, pattern: str, timeout: float = IO_TIMEOUT) -> re.Match:
        rx = re.compile(pattern.encode(), re.M)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            self.offset += len(chunk)
            self._pending += chunk
            # Whole lines only: a line still being written may not match yet.
            whole = self._pending[:self._pending.rfind(b"\n") + 1]
            found = rx.search(whole)
            if found:
                self._pending = self._pending[found.end():]
                return found
            # Patterns match within a line: the lines read whole are done with.
            self._pending = self._pending[len(whole):]
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.path}: no {pattern!r} within {timeout}s; unread so far:\n"
                                     f"{self._pending[-2000:].decode(errors='replace')}")
            time.sleep(0.01)


# MARK: - Processes

class Proc:
    """A background program in its own session; standard output and error are collected
    (merged, in arrival order) by a thread."""

    def __init__(self, argv: Sequence[str | os.PathLike], *, env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[Path] = None, name: Optional[str] = None, stdin=subprocess.DEVNULL,
                 pass_fds: Sequence[int] = ()):
        self.argv = [os.fspath(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=dict(env) if env is not None else None,
                                     cwd=cwd, start_new_session=True, pass_fds=tuple(pass_fds))
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if chunk:
                    self._buf += chunk
                self._cond.notify_all()
                if not chunk:
                    return

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def output(self) -> bytes:
        with self._cond:
            return bytes(self._buf)

    def text(self) -> str:
        return self.output().decode("utf-8", "replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text(), re.M))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = IO_TIMEOUT,
                 start: int = 0) -> re.Match:
        """Waits until `pattern` (a regex over the text output from offset `start`) has matched
        `count` times; returns the last match. Fails if the program exits first."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = bytes(self._buf).decode("utf-8", "replace")[start:]
                found = list(rx.finditer(text))
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no {count} x {pattern!r} within {timeout}s; "
                                         f"output so far:\n{text}")
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode} before "
                                         f"{pattern!r}; output:\n{text}")
                self._cond.wait(min(left, 0.05))

    def mark(self) -> int:
        """The current length of the text output, for wait_for(start=...)."""
        return len(self.text())

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = IO_TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s; output:\n{self.text()}")
        self._reader.join(timeout=2)
        return rc

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL to the whole process group."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(2)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=2)
        if self.proc.stdout:
            self.proc.stdout.close()


def run(argv: Sequence[str | os.PathLike], *, env: Optional[Mapping[str, str]] = None,
        timeout: float = 10.0, input: Optional[bytes] = None,
        cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return subprocess.run([os.fspath(a) for a in argv], env=dict(env) if env is not None else None,
                          input=input, capture_output=True, timeout=timeout, cwd=cwd,
                          stdin=None if input is not None else subprocess.DEVNULL)


# MARK: - Backends

class Backend:
    """A threaded TCP server on loopback. `handler(conn, peer, backend)` serves each
    connection in its own thread; peers are recorded in `peers` in accept order."""

    def __init__(self, handler: Callable[[socket.socket, tuple, "Backend"], None],
                 host: str = "127.0.0.1", port: int = 0, name: str = "backend"):
        self.host = host
        self.name = name
        self.handler = handler
        self.peers: list[tuple] = []
        self.results: list = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._closed = False
        self.sock = socket.socket(family_of(host), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self.peers)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.peers.append(peer)
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        conn.settimeout(30)
        try:
            self.handler(conn, peer, self)
        except Exception as e:  # noqa: BLE001 - recorded for the test to see
            with self._lock:
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    c.close()
                except OSError:
                    pass
        self._thread.join(timeout=2)


def tagger(tag: str) -> Callable[[socket.socket, tuple, Backend], None]:
    """Answers `TAG PEERIP PEERPORT\\n` at once, then echoes until end of file, then closes."""

    def handle(conn: socket.socket, peer: tuple, backend: Backend) -> None:
        conn.sendall(f"{tag} {peer[0]} {peer[1]}\n".encode())
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    return handle


def pattern_bytes(size: int, seed: int) -> bytes:
    """`size` pseudo-random bytes (a random 1 MiB block, repeated, with the seed mixed in
    so the two directions differ)."""
    block = hashlib.shake_256(f"bastion-{seed}".encode()).digest(1 << 20)
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


def hasher(answer: bytes) -> Callable[[socket.socket, tuple, Backend], None]:
    """Reads everything until end of file, records (sha256 hex, byte count) in
    backend.results, then sends `answer` and closes."""

    def handle(conn: socket.socket, peer: tuple, backend: Backend) -> None:
        h = hashlib.sha256()
        n = 0
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            got = conn.recv_into(view)
            if not got:
                break
            h.update(view[:got])
            n += got
        with backend._lock:
            backend.results.append((h.hexdigest(), n))
        conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)

    return handle


# MARK: - Clients

def connect(host: str, port: int, source: Optional[str] = None,
            timeout: float = IO_TIMEOUT) -> socket.socket:
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source is not None:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def read_line(s: socket.socket, timeout: float = IO_TIMEOUT) -> bytes:
    """Reads up to and including the first newline (or to end of file)."""
    s.settimeout(timeout)
    out = b""
    while not out.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        out += chunk
    return out


def read_all(s: socket.socket, timeout: float = IO_TIMEOUT) -> tuple[bytes, str]:
    """Reads to end of file: (data, how it ended: 'eof', 'reset' or 'timeout')."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, "timeout"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out, "reset"
        except socket.timeout:
            return out, "timeout"
        if not chunk:
            return out, "eof"
        out += chunk


def exchange(host: str, port: int, send: bytes = b"", *, source: Optional[str] = None,
             timeout: float = IO_TIMEOUT) -> tuple[bytes, str, tuple]:
    """Connects, sends, half-closes, reads to end of file: (data, end, our address)."""
    with connect(host, port, source, timeout) as s:
        me = s.getsockname()
        if send:
            s.sendall(send)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data, end = read_all(s, timeout)
    return data, end, me


def http_get(host: str, port: int, path: str = "/", timeout: float = IO_TIMEOUT) -> tuple[int, bytes, tuple]:
    """A plain HTTP/1.0 GET: (status, body, our address)."""
    hosthdr = f"[{host}]" if ":" in host else host
    data, end, me = exchange(host, port,
                             f"GET {path} HTTP/1.0\r\nHost: {hosthdr}\r\nConnection: close\r\n\r\n".encode(),
                             timeout=timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        raise AssertionError(f"no HTTP answer from {host}:{port} ({end}): {data[:300]!r}")
    return int(m.group(1)), body, me


# MARK: - The lab

def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


class Lab:
    """One test's processes, backends and files; `close()` stops and removes all of it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bastion-tcpproxy-"))
        # tcpproxy drops to uid 65534 when started as root: let that user in.
        self.dir.chmod(0o777)
        self.procs: list[Proc] = []
        self.backends: list[Backend] = []
        self.tcpproxy_bin = bastion_bin("tcpproxy")

    # Environment for every tcpproxy (and the programs it starts).
    def env(self, extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
        env["DNSCACHEIP"] = DNSCACHEIP
        if extra:
            env.update(extra)
        return env

    def file(self, name: str, text: str | bytes, mode: int = 0o644) -> Path:
        path = self.dir / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        path.chmod(mode)
        return path

    def script(self, name: str, text: str) -> Path:
        return self.file(name, text, 0o755)

    def backend(self, handler, host: str = "127.0.0.1", port: int = 0, name: str = "backend") -> Backend:
        b = Backend(handler, host, port, name)
        self.backends.append(b)
        return b

    def start(self, argv: Sequence, *, env: Optional[Mapping[str, str]] = None, name: Optional[str] = None,
              **kw) -> Proc:
        p = Proc(argv, env=env if env is not None else self.env(), name=name, **kw)
        self.procs.append(p)
        return p

    def tcpproxy(self, *args: str | os.PathLike, listeners: int = 1, env: Optional[Mapping[str, str]] = None,
                 log: Sequence[str] = ("-L", "stderr:5")) -> Proc:
        """Starts `tcpproxy -D -L stderr:5 ARGS...` and waits for `listeners` "listening on"
        lines (0: do not wait)."""
        p = self.start([self.tcpproxy_bin, "-D", *log, *args], env=env if env is not None else self.env(),
                       name="tcpproxy")
        if listeners:
            p.wait_for(r"listening on ", count=listeners, timeout=START_TIMEOUT)
            p.wait_for(r"tcpproxy started", timeout=START_TIMEOUT)
        return p

    def tcpproxy_run(self, *args: str | os.PathLike, env: Optional[Mapping[str, str]] = None,
                     timeout: float = 10.0) -> subprocess.CompletedProcess:
        """Runs tcpproxy to completion (listings, errors)."""
        return run([self.tcpproxy_bin, *args], env=env if env is not None else self.env(), timeout=timeout)

    def limit(self, seconds: int) -> None:
        """Bounds the rest of the test to `seconds` (see the `lab` fixture)."""
        signal.alarm(seconds)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for b in self.backends:
            b.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# MARK: - nginx, haproxy, iperf3

def nginx_conf(lab: Lab, servers: str) -> Path:
    """An nginx configuration in the lab's directory, in the foreground, logging to stderr."""
    root = lab.dir / "nginx"
    for sub in ("", "tmp"):
        (root / sub).mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    text = f"""{user}worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    default_type application/octet-stream;
{servers}
}}
"""
    conf = root / "nginx.conf"
    conf.write_text(text)
    return conf


def start_nginx(lab: Lab, servers: str, ports: Iterable[tuple[str, int]]) -> Proc:
    conf = nginx_conf(lab, servers)
    p = lab.start([system_bin("nginx"), "-e", "stderr", "-p", str(conf.parent), "-c", str(conf)],
                  name="nginx")
    for host, port in ports:
        wait_port(host, port, proc=p)
    return p


def start_haproxy(lab: Lab, config: str, ports: Iterable[tuple[str, int]]) -> Proc:
    conf = lab.file("haproxy.cfg", config)
    p = lab.start([system_bin("haproxy"), "-db", "-f", str(conf)], name="haproxy")
    for host, port in ports:
        wait_port(host, port, proc=p)
    return p


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_root() -> bool:
    return os.geteuid() == 0


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# MARK: - Fixtures

class TimeLimitExceeded(Exception):
    pass


@pytest.fixture
def lab():
    """A Lab, with the test bounded in time (SIGALRM after 60 s; `lab.limit(n)` changes it)."""
    limit = 60

    def expired(signum, frame):
        raise TimeLimitExceeded("test exceeded its time limit (SIGALRM)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        the_lab.close()


def serve_fake_dns(address: str):
    """For a fixture (`yield from`): a fakedns.FakeDNS on `address` port 53 for one test,
    stopped after it. Skips the test when not root; fails it when the port is taken."""
    from fakedns import FakeDNS

    if not is_root():
        pytest.skip(f"not root: the fake DNS server must listen on {address} port 53")
    server = FakeDNS(address, 53)
    try:
        server.start()
    except OSError as e:
        pytest.fail(f"cannot listen on {address}:53 for the fake DNS server: {e}", pytrace=False)
    yield server
    server.stop()


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
