"""tcpproxy end to end: hostile peers. Slow clients (a byte a second), connections reset in
every phase, servers that never read, and a flood of connections faster than the daemon
serves them. Each ends with the daemon alive, its memory bounded, every well-behaved client
served meanwhile, and every completed transfer whole.

Only loopback traffic; every tcpproxy has -D and DNSCACHEIP=127.53.0.1.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import struct
import threading
import time

from proxyhelpers import exchange, free_port, lab, pattern_bytes, wait_port  # noqa: F401
from test_tcpproxy_faults import group_rss_kib

# Under a sanitizer (scripts/test --sanitize) every tool is several times slower and
# AddressSanitizer keeps freed memory in quarantine: time limits stretch, memory bounds are
# not checked there (the ordinary run checks them).
SANITIZED = bool(os.environ.get("BASTION_SANITIZE"))
SLOWER = 4 if SANITIZED else 1


def assert_memory(grown_kib: int, bound_kib: int, what: str) -> None:
    if not SANITIZED:
        assert grown_kib < bound_kib, f"{what}: {grown_kib} KiB"


class EchoServer:
    """An echo server on one selector thread, for thousands of connections at once (a thread
    per connection would be the test's own bottleneck). `never_read` makes it accept and
    then ignore what arrives."""

    def __init__(self, never_read: bool = False):
        self.never_read = never_read
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.pending: dict[socket.socket, bytearray] = {}
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped:
            for key, events in self.selector.select(0.05):
                s = key.fileobj
                if s is self.sock:
                    while True:
                        try:
                            conn, _ = self.sock.accept()
                        except (BlockingIOError, OSError):
                            break
                        self.accepted += 1
                        conn.setblocking(False)
                        self.pending[conn] = bytearray()
                        if not self.never_read:
                            self.selector.register(conn, selectors.EVENT_READ)
                    continue
                if events & selectors.EVENT_READ:
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        self.drop(s)
                        continue
                    if data:
                        self.pending[s] += data
                if self.pending.get(s):
                    try:
                        n = s.send(self.pending[s])
                        del self.pending[s][:n]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        self.drop(s)
                        continue
                    want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.pending[s] else 0)
                    self.selector.modify(s, want)

    def drop(self, s: socket.socket) -> None:
        try:
            self.selector.unregister(s)
        except (KeyError, ValueError):
            pass
        self.pending.pop(s, None)
        s.close()

    def close(self) -> None:
        self.stopped = True
        self.thread.join(timeout=5)
        for s in list(self.pending):
            s.close()
        self.sock.close()


def roomy_descriptors(needed: int) -> None:
    """The test itself holds both ends of thousands of connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def connect_all(port: int, count: int, timeout: float = 30) -> list[socket.socket]:
    """`count` non-blocking connections to `port`, returned once every connect is done."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sockets.append(s)
    waiting = set(sockets)
    selector = selectors.DefaultSelector()
    for s in sockets:
        selector.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    while waiting:
        assert time.monotonic() < deadline, f"{len(waiting)} of {count} connects not done"
        for key, _ in selector.select(0.5):
            s = key.fileobj
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            selector.unregister(s)
            waiting.discard(s)
    selector.close()
    return sockets


def expect_echoes(received: dict, expected: bytes, timeout: float) -> None:
    """Reads on until every socket of `received` (socket -> bytes so far) has `expected`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(len(v) < len(expected) for v in received.values()):
        for s, got in received.items():
            if len(got) < len(expected):
                try:
                    got += s.recv(100)
                except (BlockingIOError, OSError):
                    pass
        time.sleep(0.05)
    short = [bytes(v) for v in received.values() if bytes(v) != expected]
    assert not short, f"{len(short)} slow clients short, e.g. {short[:3]}"


def send_byte(s: socket.socket, byte: int) -> None:
    """One byte on a connected socket whose buffer has room (a slow client's whole write)."""
    assert s.send(bytes([byte])) == 1


def well_behaved(port: int, count: int, deadline_each: float = 10.0 * SLOWER) -> list[float]:
    """`count` request-response exchanges in turn; each must finish within `deadline_each`."""
    times = []
    for i in range(count):
        start = time.monotonic()
        message = f"hello {i}\n".encode()
        data, end, _ = exchange("127.0.0.1", port, message, timeout=deadline_each)
        assert data == message and end == "eof", (i, data, end)
        times.append(time.monotonic() - start)
    return times


def start_proxy(lab, backend_port: int, *extra: str):
    port = free_port()
    # Room for thousands of connections, two descriptors each, whatever the caller's limit.
    proxy = lab.start(["prlimit", "--nofile=16384:16384", lab.tcpproxy_bin, "-D", "-L", "stderr:2",
                       "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend_port), *extra],
                      name="tcpproxy")
    # Errors only (stderr:2): thousands of connections would log thousands of lines.
    wait_port("127.0.0.1", port)
    return proxy, port


def test_slow_clients_keep_no_one_waiting(lab):
    """2,000 connections that send a byte a second (slowloris) while well-behaved clients are
    served at once; every slow client gets its bytes back; memory stays bounded."""
    lab.limit(120 * SLOWER)
    roomy_descriptors(10000)
    echo = EchoServer()
    try:
        proxy, port = start_proxy(lab, echo.port)
        well_behaved(port, 3)
        baseline = group_rss_kib(proxy.pid)
        slow = connect_all(port, 2000)
        received = {s: bytearray() for s in slow}
        rounds = 4
        for r in range(rounds):
            start = time.monotonic()
            for s in slow:
                send_byte(s, 65 + r)
            times = well_behaved(port, 5)
            assert max(times) < 10.0 * SLOWER, times  # served while 2000 wait (not after them)
            for s in slow:
                try:
                    received[s] += s.recv(100)
                except (BlockingIOError, OSError):
                    pass
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))  # the pace of a slow client
        # Every slow client gets all it sent, in order.
        expected = bytes(65 + r for r in range(rounds))
        expect_echoes(received, expected, 20 * SLOWER)
        assert_memory(group_rss_kib(proxy.pid) - baseline, 64 * 1024, "2000 slow connections cost")
        assert proxy.poll() is None, proxy.text()
        for s in slow:
            s.close()
    finally:
        echo.close()


def reset(s: socket.socket) -> None:
    """Closes with a RST (SO_LINGER 0) instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


ACP = r"""#!/bin/sh
# Holds the connection for a moment, so a client can reset it while the acp runs.
sleep 0.2
exit 0
"""


def test_resets_in_every_phase_lose_nothing_else(lab):
    """Clients reset before sending, in the middle of the access control program, in the
    middle of a transfer both ways; a server resets mid-answer. The daemon serves the
    well-behaved clients throughout and every completed transfer is whole."""
    lab.limit(120 * SLOWER)
    roomy_descriptors(4000)
    big = pattern_bytes(4 << 20, 5)

    def answer(conn, peer, backend) -> None:
        first = conn.recv(1)
        if first == b"r":  # the server resets in the middle of its answer
            conn.sendall(big[:100000])
            reset(conn)
            return
        if first == b"b":  # a big answer, for a client that resets while reading
            conn.sendall(big)
            return
        conn.sendall(first)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    backend = lab.backend(answer)
    acp = lab.script("acp.sh", ACP)
    proxy, port = start_proxy(lab, backend.port)
    acp_port = free_port()
    acp_proxy = lab.start(["prlimit", "--nofile=16384:16384", lab.tcpproxy_bin, "-D", "-L", "stderr:2",
                           "-a", str(acp), "-l", "127.0.0.1", "-p", str(acp_port), "-r", "127.0.0.1",
                           "-o", str(backend.port)], name="tcpproxy-acp")
    wait_port("127.0.0.1", acp_port)

    for round_ in range(30):
        # Before sending anything.
        s = socket.create_connection(("127.0.0.1", port))
        reset(s)
        # While the access control program runs.
        s = socket.create_connection(("127.0.0.1", acp_port))
        reset(s)
        # In the middle of a big upload and download.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"b" + big[:200000])
        s.recv(1000)
        reset(s)
        # The server resets in the middle of its answer: the client sees the end.
        data, end, _ = exchange("127.0.0.1", port, b"r", timeout=5 * SLOWER)
        assert len(data) <= 100000 and end in ("eof", "reset"), (len(data), end)
        # And a well-behaved client, whole.
        message = f"whole {round_} ".encode() * 1000
        data, end, _ = exchange("127.0.0.1", port, message, timeout=5 * SLOWER)
        assert data == message and end == "eof", (round_, len(data), end)
        data, end, _ = exchange("127.0.0.1", acp_port, b"acp " + message, timeout=5 * SLOWER)
        assert data == b"acp " + message and end == "eof", (round_, len(data), end)
    assert proxy.poll() is None and acp_proxy.poll() is None, proxy.text() + acp_proxy.text()


def test_a_server_that_never_reads_holds_its_client_back_and_nobody_else(lab):
    """An upload to a server that never reads fills the buffers and stops there (TCP flow
    control, not the proxy's memory); other clients are served meanwhile."""
    lab.limit(120 * SLOWER)
    sink = EchoServer(never_read=True)
    echo = EchoServer()
    try:
        proxy, port = start_proxy(lab, sink.port)
        other, other_port = start_proxy(lab, echo.port)
        baseline = group_rss_kib(proxy.pid)
        uploads = []
        chunk = pattern_bytes(1 << 20, 9)
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            uploads.append(s)
        sent = [0] * len(uploads)
        last_change = time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() - last_change < 1.5:
            assert time.monotonic() < deadline, sent
            moved = False
            for i, s in enumerate(uploads):
                try:
                    n = s.send(chunk)
                    sent[i] += n
                    moved = moved or n > 0
                except BlockingIOError:
                    pass
            if moved:
                last_change = time.monotonic()
            else:
                time.sleep(0.05)
        # Stalled: each upload holds what the kernel buffers and the proxy's bounded buffer
        # take, not what was offered.
        assert_memory(group_rss_kib(proxy.pid) - baseline, 16 * 1024, f"8 stalled uploads ({sent}) cost")
        assert all(n < 64 << 20 for n in sent), sent
        well_behaved(other_port, 5)
        assert proxy.poll() is None and other.poll() is None
        for s in uploads:
            s.close()
    finally:
        sink.close()
        echo.close()


def test_a_flood_of_connections_faster_than_served(lab):
    """5,000 connections opened and dropped as fast as the test can, from four threads,
    while well-behaved clients keep being served; the daemon ends with nothing held."""
    lab.limit(120 * SLOWER)
    roomy_descriptors(10000)
    echo = EchoServer()
    try:
        proxy, port = start_proxy(lab, echo.port)
        well_behaved(port, 3)
        baseline = group_rss_kib(proxy.pid)
        stop = threading.Event()
        opened = [0]

        def flood() -> None:
            while not stop.is_set() and opened[0] < 5000:
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                except OSError:
                    continue
                opened[0] += 1
                if opened[0] % 2:
                    reset(s)
                else:
                    s.close()

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        served = 0
        while any(t.is_alive() for t in threads):
            well_behaved(port, 1, deadline_each=5.0 * SLOWER)
            served += 1
        stop.set()
        assert opened[0] >= 5000 and served > 0, (opened[0], served)
        well_behaved(port, 3)
        # Every flood connection ends: the proxy's memory settles near where it started.
        assert_memory(group_rss_kib(proxy.pid) - baseline, 32 * 1024, "after the flood the proxy holds more")
        assert proxy.poll() is None, proxy.text()
    finally:
        echo.close()
