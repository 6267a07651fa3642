"""systemd's side of the daemons (issue 11, section 4), with a small stand-in for systemd:
listening sockets passed as fds 3.. with LISTEN_FDS and LISTEN_PID (socket activation), and
a notify socket that reads READY=1, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on
SIGTERM and WATCHDOG=1. Also Debian's real systemd-socket-activate. Loopback only; every
wait is bounded (a datagram, a log line, a port).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time

import pytest

from proxyhelpers import IO_TIMEOUT, START_TIMEOUT, bastion_bin, free_port, lab  # noqa: F401
from sockdhelpers import REP_REFUSED, socks5

# Runs the daemon with the passed sockets as fds 3.. and LISTEN_PID set to its own pid (it
# execs, so the pid stays), as systemd does.
WRAPPER = """
import os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
for i, fd in enumerate(fds):
    os.dup2(fd, 100 + i)
for fd in fds:
    os.close(fd)
for i in range(len(fds)):
    os.dup2(100 + i, 3 + i)
    os.close(100 + i)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


class Notify:
    """The notify socket: every datagram, kept in order. A path, or (`abstract`) a name in
    the abstract namespace (`@name` in NOTIFY_SOCKET), which a daemon that has dropped root
    can reach without file permissions, as it reaches systemd's own world-writable socket."""

    def __init__(self, path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"bastion-notify-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.path = "@" + name
        else:
            self.path = str(path)
            self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def wait_for(self, prefix: str, count: int = 1, timeout: float = IO_TIMEOUT) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if m.startswith(prefix)]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        pytest.fail(f"no {count} x {prefix!r} from the daemon within {timeout} s: {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def notify(lab):
    n = Notify(lab.dir / "notify")
    yield n
    n.close()


@pytest.fixture
def abstract_notify(lab):
    n = Notify(None, abstract=True)
    yield n
    n.close()


def listening(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(64)
    return s


def activated(lab, sockets: list[socket.socket], argv: list, env: dict, name: str):
    fds = [s.fileno() for s in sockets]
    return lab.start([sys.executable, "-c", WRAPPER, ",".join(map(str, fds)), *map(str, argv)], env=env, name=name,
                     pass_fds=fds)


def test_sockd_serves_the_passed_socket_and_tells_systemd_each_step(lab, notify):
    passed = listening()
    port = passed.getsockname()[1]
    conf = lab.file("sockd.conf", f"permit 127.0.0.0 255.0.0.0 : env > {lab.dir}/env\n")
    env = lab.env({"NOTIFY_SOCKET": notify.path})
    p = activated(lab, [passed], [bastion_bin("sockd"), "--foreground", "--log", "stderr:5", "--config", conf,
                                  "--pid-file", lab.dir / "sockd.pid"], env, "sockd")
    passed.close()  # sockd has its own copy: ours must not take connections
    p.wait_for(rf"listening on \[::ffff:127\.0\.0\.1\]:{port}|listening on 127\.0\.0\.1:{port}", timeout=START_TIMEOUT)
    ready = notify.wait_for("READY=1")[0]
    assert f"MAINPID={p.pid}" in ready
    # Served: a CONNECT to a closed port is refused by sockd itself.
    rep, s = socks5(("127.0.0.1", port), "127.0.0.1", free_port("127.0.0.1"))
    assert rep == REP_REFUSED
    s.close()
    # The line's command ran with sockd's environment, without systemd's variables.
    deadline = time.monotonic() + IO_TIMEOUT
    while not (lab.dir / "env").exists() or "PATH=" not in (lab.dir / "env").read_text():
        assert time.monotonic() < deadline, "the command did not run"
        time.sleep(0.02)
    text = (lab.dir / "env").read_text()
    assert "LISTEN_FDS" not in text and "LISTEN_PID" not in text and "NOTIFY_SOCKET" not in text
    p.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING=1")[0]
    assert "MONOTONIC_USEC=" in reloading
    notify.wait_for("READY=1", count=2)
    p.signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    assert p.wait() == 0


def test_tcpproxy_takes_its_listener_from_systemd_and_closes_a_stray_one(lab, notify):
    backend = listening()
    backend_port = backend.getsockname()[1]

    def serve():
        c, _ = backend.accept()
        c.sendall(b"hello from the backend\n")
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    passed, stray = listening(), listening("127.0.0.3")
    port = passed.getsockname()[1]
    env = lab.env({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
    p = activated(lab, [passed, stray], [bastion_bin("tcpproxy"), "-D", "-L", "stderr:5", "-l", "127.0.0.1", "-p",
                                         port, "-r", "127.0.0.1", "-o", backend_port], env, "tcpproxy")
    passed.close()
    stray_port = stray.getsockname()[1]
    stray.close()
    p.wait_for(rf"socket 127\.0\.0\.3:{stray_port} passed by systemd matches no listener: closed",
               timeout=START_TIMEOUT)
    notify.wait_for("READY=1")
    # It did not bind a port of its own (that would have failed: the passed socket holds it).
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as c:
        assert c.makefile("rb").readline() == b"hello from the backend\n"
    # The stray socket is closed: nothing listens there any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.3", stray_port), timeout=IO_TIMEOUT)
    # The watchdog: a ping every 100 ms (half of WATCHDOG_USEC).
    notify.wait_for("WATCHDOG=1", count=3, timeout=5)
    p.signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")


def test_without_notify_socket_nothing_changes(lab):
    # No NOTIFY_SOCKET, no LISTEN_*: sockd binds its own port, as always.
    port = free_port("127.0.0.1")
    conf = lab.file("sockd.conf", "permit 127.0.0.0 255.0.0.0\n")
    p = lab.start([bastion_bin("sockd"), "--foreground", "--log", "stderr:5", "--config", conf, "--listen",
                   f"127.0.0.1:{port}", "--pid-file", lab.dir / "sockd.pid"], name="sockd")
    p.wait_for("sockd started", timeout=START_TIMEOUT)
    rep, s = socks5(("127.0.0.1", port), "127.0.0.1", free_port("127.0.0.1"))
    assert rep == REP_REFUSED
    s.close()


def test_debians_systemd_socket_activate(lab):
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.fail("systemd-socket-activate is missing: apt-get install systemd (scripts/test installs it)",
                    pytrace=False)
    port = free_port("127.0.0.1")
    conf = lab.file("sockd.conf", "permit 127.0.0.0 255.0.0.0\n")
    p = lab.start([tool, "-l", f"127.0.0.1:{port}", bastion_bin("sockd"), "--foreground", "--log", "stderr:5",
                   "--config", conf, "--pid-file", lab.dir / "sockd.pid"], name="socket-activate")
    p.wait_for(rf"Listening on 127\.0\.0\.1:{port}", timeout=START_TIMEOUT)
    # systemd-socket-activate starts sockd at the first connection and hands it the socket.
    rep, s = socks5(("127.0.0.1", port), "127.0.0.1", free_port("127.0.0.1"))
    assert rep == REP_REFUSED
    s.close()
    p.wait_for(rf"listening on 127\.0\.0\.1:{port}")


def test_pop3_proxy_daemon_serves_the_passed_socket(lab, abstract_notify):
    notify = abstract_notify
    passed = listening()
    port = passed.getsockname()[1]
    env = lab.env({"NOTIFY_SOCKET": notify.path})
    # Running as root it would serve as nobody; either way the greeting is the proxy's own.
    p = activated(lab, [passed], [bastion_bin("pop3.proxy"), "-d", "-e", "-D", "-D", f"127.0.0.1:{port}", "-"], env,
                  "pop3.proxy")
    passed.close()
    p.wait_for(r"pop3\.proxy started \(pid \d+", timeout=START_TIMEOUT)
    notify.wait_for("READY=1")
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as c:
        assert c.makefile("rb").readline().startswith(b"+OK")
    p.signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
