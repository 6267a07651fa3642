"""Our tcpserver end to end: hostile peers. Slow clients (a byte a second), connections reset
in every phase (waiting in the listen queue, during the banner, before and during the
program's run), and a flood of connections faster than it serves them. Each ends with
tcpserver alive, its own memory bounded, every well-behaved client served meanwhile, every
completed transfer whole, and every child slot free again.

tcpserver forks a child per connection (`cat` here, so each connection echoes), as djb's
does; `-c` is set above the number of slow clients, since a slot per connection is the
design (a full table makes new clients wait in the listen queue, as with the original).
What a hostile peer can reach is the parent, which only accepts, forks and reaps: it never
touches a connection's bytes and keeps no descriptor of one after the fork.
Only loopback traffic; -H -R -l 0: no DNS, no ident.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import pytest

from hostile import (SLOWER, assert_memory, connect_all, expect_echoes, process_rss_kib, receive_to_end, reset,
                     roomy_descriptors, send_byte)


class TCPServer:
    """Our tcpserver (or `binary`) with `-v -1 -H -R -l 0 -c LIMIT [OPTIONS] 127.0.0.1 0
    PROGRAM`: its port from -1, its log (stderr) collected by a thread, `nofile` descriptors
    at most."""

    def __init__(self, limit: int, options: Sequence[str] = (), program: Sequence[str] = ("cat",),
                 nofile: int = 16384, binary: Optional[Path] = None):
        if binary is None:
            binary = Path(os.environ.get("BASTION_BIN", ".build/release")) / "tcpserver"
        self.proc = subprocess.Popen(
            ["prlimit", f"--nofile={nofile}:{nofile}", str(binary), "-v", "-1", "-H", "-R", "-l", "0",
             "-c", str(limit), "-b", "1024", *options, "127.0.0.1", "0", *program],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), line
        self.port = int(line)
        self.log = bytearray()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            chunk = self.proc.stderr.read1(65536)
            if not chunk:
                return
            with self.lock:
                self.log += chunk

    def text(self) -> str:
        with self.lock:
            return self.log.decode("utf-8", "replace")

    def rss_kib(self) -> int:
        return process_rss_kib(self.proc.pid)

    def wait_log(self, pattern: str, timeout: float = 10 * SLOWER) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text(), re.M):
            assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{self.text()[-2000:]}"
            assert self.proc.poll() is None, self.text()[-2000:]
            time.sleep(0.05)

    def wait_idle(self, limit: int, timeout: float = 30) -> None:
        """Until the last status line says no child runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(r"tcpserver: status: (\d+)/", self.text())
            if found and found[-1] == "0":
                return
            time.sleep(0.05)
        raise AssertionError(f"children still running: {re.findall(r'status: [0-9/]+', self.text())[-3:]}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server_factory():
    made = []

    def make(limit: int, **kwargs) -> TCPServer:
        s = TCPServer(limit, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def echo_once(port: int, message: bytes, timeout: float = 5.0 * SLOWER) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(message)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_slow_clients_keep_no_one_waiting(server_factory):
    roomy_descriptors(6000)
    server = server_factory(3000)
    assert echo_once(server.port, b"warm") == b"warm"
    baseline = server.rss_kib()
    slow = connect_all(server.port, 2000)
    received = {s: bytearray() for s in slow}
    rounds = 3
    for r in range(rounds):
        start = time.monotonic()
        for s in slow:
            send_byte(s, 97 + r)
        for i in range(5):
            t = time.monotonic()
            message = f"round {r} client {i}".encode()
            assert echo_once(server.port, message) == message
            assert time.monotonic() - t < 10.0 * SLOWER  # served while 2000 wait (not after them)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
    expected = bytes(97 + r for r in range(rounds))
    expect_echoes(received, expected, 30 * SLOWER)
    for s in slow:
        s.close()
    server.wait_idle(3000)
    assert server.proc.poll() is None, server.text()[-2000:]
    assert_memory(server.rss_kib() - baseline, 16 * 1024, "tcpserver itself grew by")


def test_resets_before_and_during_the_program(server_factory):
    roomy_descriptors(2000)
    server = server_factory(200)
    baseline = server.rss_kib()
    big = bytes(range(256)) * 4096
    for round_ in range(50):
        s = socket.create_connection(("127.0.0.1", server.port))
        reset(s)
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(big)
        s.recv(1000)
        reset(s)
        message = f"whole {round_} ".encode() * 1000
        assert echo_once(server.port, message) == message
    server.wait_idle(200)
    assert server.proc.poll() is None, server.text()[-2000:]
    assert_memory(server.rss_kib() - baseline, 8 * 1024, "tcpserver itself grew by")


def resets_in_the_listen_queue(server: TCPServer, rounds: int) -> None:
    """With both slots taken (-c 2), ten connections wait in the listen queue and are reset
    there; a holder leaves; the client after the ten is served whole; the holder comes back."""
    holders = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    for h in holders:
        assert h.recv(3) == b"hi\n"  # both slots taken
    for round_ in range(rounds):
        for s in connect_all(server.port, 10):
            reset(s)
        holders.pop(0).close()
        message = f"after {round_} ".encode() * 100
        with socket.create_connection(("127.0.0.1", server.port), timeout=10 * SLOWER) as s:
            s.sendall(message)
            s.shutdown(socket.SHUT_WR)
            assert receive_to_end(s, 10 * SLOWER) == b"hi\n" + message, round_
        holders.append(socket.create_connection(("127.0.0.1", server.port)))
        assert holders[-1].recv(3) == b"hi\n"
    for h in holders:
        h.close()
    server.wait_idle(2)
    assert server.proc.poll() is None, server.text()[-2000:]


def test_resets_in_the_listen_queue_and_during_the_banner(server_factory, real_v4):
    """Connections reset while they wait in the listen queue are accepted dead once a slot
    frees, and the banner (-B) to them fails: each child reports it and exits 111, the parent
    (which ignores SIGPIPE) serves on. The same warnings and exit statuses as djb's tcpserver
    (ours once died of SIGPIPE in the child, silently, on its second try at the banner)."""
    roomy_descriptors(2000)
    logs = []
    for binary in (None, real_v4.path("tcpserver")):
        server = server_factory(2, options=["-B", "hi\n"], binary=binary)
        baseline = server.rss_kib()
        resets_in_the_listen_queue(server, 20)
        if binary is None:
            assert_memory(server.rss_kib() - baseline, 8 * 1024, "tcpserver itself grew by")
        warnings = re.findall(r"^tcpserver: warning: .*$", server.text(), re.M)
        statuses = re.findall(r"^tcpserver: end \d+ (status \d+)$", server.text(), re.M)
        logs.append((sorted(warnings), sorted(statuses)))
    ours, djb = logs
    assert ours == djb, (ours, djb)
    assert ours[0].count("tcpserver: warning: dropping connection, unable to print banner: connection reset") == 200


def test_a_flood_of_connections_faster_than_served(server_factory):
    roomy_descriptors(6000)
    server = server_factory(100)
    baseline = server.rss_kib()
    opened = [0]
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set() and opened[0] < 5000:
            try:
                s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            except OSError:
                continue
            opened[0] += 1
            if opened[0] % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    served = 0
    while any(t.is_alive() for t in threads):
        message = f"between {served}".encode()
        assert echo_once(server.port, message, timeout=10 * SLOWER) == message
        served += 1
    stop.set()
    assert opened[0] >= 5000 and served > 0, (opened[0], served)
    server.wait_idle(100, timeout=60)
    assert server.proc.poll() is None, server.text()[-2000:]
    assert echo_once(server.port, b"after") == b"after"
    assert_memory(server.rss_kib() - baseline, 8 * 1024, "tcpserver itself grew by")
