"""Helpers for the hostile-peer tests of every daemon (test_*_hostile.py): thousands of
connections from one test process, slow clients, resets, peers that never read, and the
measurements every such test ends with (memory, descriptors, CPU of the daemon).

Only loopback traffic. Every wait is bounded and waits for a condition (a connect done, an
echo back, a buffer that stopped moving), never a fixed time.
"""

from __future__ import annotations

import fcntl
import os
import resource
import selectors
import socket
import struct
import termios
import threading
import time
from pathlib import Path
from typing import Callable, Optional

# Under a sanitizer (scripts/test --sanitize) every tool is several times slower and
# AddressSanitizer keeps freed memory in quarantine: time limits stretch, memory bounds are
# not checked there (the ordinary run checks them).
SANITIZED = bool(os.environ.get("BASTION_SANITIZE"))
SLOWER = 4 if SANITIZED else 1


def assert_memory(grown_kib: int, bound_kib: int, what: str) -> None:
    if not SANITIZED:
        assert grown_kib < bound_kib, f"{what}: {grown_kib} KiB"


# MARK: - One process, seen from /proc

def process_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_descriptors(pid: int) -> set[int]:
    return {int(name) for name in os.listdir(f"/proc/{pid}/fd")}


# MARK: - Clients

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


def reset(s: socket.socket) -> None:
    """Closes with a RST (SO_LINGER 0) instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def unread_bytes(s: socket.socket) -> int:
    """What waits in the socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def until_still(step: Callable[[], tuple], quiet: float = 1.5, timeout: float = 60) -> tuple:
    """Calls `step` (which may move bytes, and returns what it sees) until its answer has not
    changed for `quiet` seconds: flow control has stopped everything. Returns that answer."""
    deadline = time.monotonic() + timeout
    last = step()
    since = time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still moving after {timeout} s: {last}"
        time.sleep(0.05)
        now = step()
        if now != last:
            last, since = now, time.monotonic()
    return last


def upload_until_stalled(sockets: list[socket.socket], chunk: bytes) -> tuple:
    """Sends `chunk` again and again on every (non-blocking) socket until no socket takes any
    more: bytes sent per socket."""
    sent = [0] * len(sockets)

    def step() -> tuple:
        for i, s in enumerate(sockets):
            try:
                sent[i] += s.send(chunk)
            except BlockingIOError:
                pass
        return tuple(sent)

    return until_still(step)


def receive_to_end(s: socket.socket, timeout: float) -> bytes:
    """Everything up to end of file (blocking, within `timeout` overall)."""
    s.setblocking(True)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no end of file within {timeout} s ({len(data)} bytes)"
        s.settimeout(left)
        chunk = s.recv(1 << 20)
        if not chunk:
            return bytes(data)
        data += chunk


def stall_both_ways(port: int, count: int = 8) -> tuple[list[socket.socket], list[socket.socket], tuple]:
    """`count` uploads (first byte `u`) to a server that never reads them and `count`
    downloads (first byte `d`) to clients that never read, through the daemon on `port`,
    each until flow control has stopped it: (uploads, downloads, bytes sent per upload)."""
    uploads = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    downloads = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    for s in uploads:
        s.sendall(b"u")
        s.setblocking(False)
    for s in downloads:
        s.sendall(b"d")
    sent = upload_until_stalled(uploads, os.urandom(1 << 20))
    waiting = until_still(lambda: tuple(unread_bytes(s) for s in downloads))
    # Stalled: each holds what the kernel buffers and the daemon's bounded buffers take,
    # not what was offered.
    assert all(waiting) and all(n < 64 << 20 for n in sent), (waiting, sent)
    return uploads, downloads, sent


def expect_downloads(downloads: list[socket.socket], expected: bytes, timeout: float) -> None:
    """Each client that never read reads now: `expected`, whole, then end of file."""
    for s in downloads:
        data = receive_to_end(s, timeout)
        assert data == expected, (len(data), len(expected))
        s.close()


# MARK: - An echo server for thousands of connections

class EchoServer:
    """An echo server on one selector thread, for thousands of connections at once (a thread
    per connection would be the test's own bottleneck).

    With `download`, the first byte of a connection is a command: `u` and the server never
    reads from it again (a server that never reads), `d` and it sends `download` and ends
    its side (for a client that never reads); anything else is echoed (stall_both_ways)."""

    def __init__(self, download: Optional[bytes] = None):
        self.commands = download is not None
        self.download = memoryview(download or b"")
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
        self.fresh: set[socket.socket] = set()  # no byte read yet
        self.streams: dict[socket.socket, int] = {}  # `d` connections: bytes of download sent
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped:
            for key, events in self.selector.select(0.05):
                s = key.fileobj
                if s is self.sock:
                    self.accept()
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
                    if data and s in self.fresh:
                        self.fresh.discard(s)
                        if self.commands and data[:1] == b"u":
                            self.selector.unregister(s)  # held open, never read again
                            continue
                        if self.commands and data[:1] == b"d":
                            self.streams[s] = 0
                            data = b""
                    if data:
                        self.pending[s] += data
                self.flush(s)

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, OSError):
                return
            self.accepted += 1
            conn.setblocking(False)
            self.pending[conn] = bytearray()
            self.fresh.add(conn)
            self.selector.register(conn, selectors.EVENT_READ)

    def flush(self, s: socket.socket) -> None:
        """Sends what waits for `s` (echo, or the next part of its download)."""
        try:
            if self.pending[s]:
                del self.pending[s][:s.send(self.pending[s])]
            elif s in self.streams:
                at = self.streams[s]
                at += s.send(self.download[at:at + (1 << 18)])
                self.streams[s] = at
                if at == len(self.download):
                    del self.streams[s]
                    s.shutdown(socket.SHUT_WR)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.drop(s)
            return
        want = selectors.EVENT_READ
        if self.pending[s] or s in self.streams:
            want |= selectors.EVENT_WRITE
        self.selector.modify(s, want)

    def drop(self, s: socket.socket) -> None:
        try:
            self.selector.unregister(s)
        except (KeyError, ValueError):
            pass
        self.pending.pop(s, None)
        self.fresh.discard(s)
        self.streams.pop(s, None)
        s.close()

    def close(self) -> None:
        self.stopped = True
        self.thread.join(timeout=5)
        for s in list(self.pending):
            s.close()
        self.sock.close()


def flood(port: int, serve: Callable[[int], None], total: int = 5000, threads: int = 4) -> int:
    """`total` connections to `port` opened and dropped (every other one reset) as fast as
    `threads` threads can, while `serve(n)` (one well-behaved exchange; it asserts) is called
    again and again in this thread. Returns how many times `serve` ran (at least once)."""
    opened = [0]
    lock = threading.Lock()

    def one_thread() -> None:
        while True:
            with lock:
                if opened[0] >= total:
                    return
                opened[0] += 1
                n = opened[0]
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                continue
            if n % 2:
                reset(s)
            else:
                s.close()

    workers = [threading.Thread(target=one_thread, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    served = 0
    while served == 0 or any(t.is_alive() for t in workers):
        serve(served)
        served += 1
    assert opened[0] >= total, opened[0]
    return served


def leave_in_turn(received: dict, allowed: tuple[bytes, ...], poll: Callable[[], object], timeout: float,
                  context: Callable[[], str] = lambda: "") -> int:
    """Held connections (socket -> bytes so far) leave ten at a time as each has had its
    answer (one of `allowed`), so that those still waiting get in; `poll` reads on. Returns how
    many left: all of them, within `timeout`."""
    left = 0
    deadline = time.monotonic() + timeout
    while received:
        assert time.monotonic() < deadline, f"{len(received)} connections never served:\n{context()}"
        done = [s for s, got in received.items() if got]
        for s in done[:10]:
            got = bytes(received.pop(s))
            assert got in allowed, got
            s.close()
            left += 1
        time.sleep(0.05)
        poll()
    return left


def read_some(received: dict) -> set:
    """Reads what has arrived on each socket of `received` (socket -> bytes so far, non-blocking
    sockets) without waiting; the sockets that have had something."""
    for s, got in received.items():
        try:
            got += s.recv(100)
        except (BlockingIOError, OSError):
            pass
    return {s for s, got in received.items() if got}

