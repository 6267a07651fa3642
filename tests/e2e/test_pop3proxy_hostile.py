"""Hostile input on both sides of pop3.proxy: lines of 10 MiB without CRLF from the client
and from the server, NUL bytes, a client that never reads a big RETR, and 1,000 sessions at
once against the -D -D daemon, each with the daemon's memory bounded and another session
working normally at the same time.
"""

from __future__ import annotations

import hashlib
import selectors
import socket
import threading
import time

import pytest

import hostile
from pop3helpers import POP3, ScriptedServer, crlf, daemon, message_dots, stuffed
from proxyhelpers import lab  # noqa: F401  (fixture)

TEN_MIB = 10 * 1024 * 1024
MESSAGES = [message_dots()]


@pytest.fixture
def servers():
    made: list[ScriptedServer] = []

    def make(*args, **kw) -> ScriptedServer:
        server = ScriptedServer(*args, **kw)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def logged_in(proxy) -> POP3:
    c = proxy.client()
    assert c.login("bob", "pw").startswith(b"+OK")
    return c


def works(c: POP3) -> None:
    """The bystander session still does its job."""
    assert c.ask("RETR 1") == b"+OK %d octets\r\n" % len(MESSAGES[0]) + stuffed(MESSAGES[0])
    assert c.command("NOOP") == b"+OK\r\n"


def send_regardless(sock: socket.socket, data: bytes) -> int:
    """Sends what the other side takes before it closes: the count."""
    sent = 0
    view = memoryview(data)
    try:
        while sent < len(data):
            sent += sock.send(view[sent:sent + (1 << 20)])
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


# MARK: - Long lines

@pytest.mark.parametrize("logged", [False, True], ids=["before the login", "after the login"])
def test_a_10_mib_line_from_the_client_ends_its_session_only(lab, servers, logged):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    bystander = logged_in(proxy)
    rss = hostile.process_rss_kib(proxy.pid)
    c = logged_in(proxy) if logged else proxy.client()
    with c, bystander:
        sent = send_regardless(c.sock, b"NOOP " + b"A" * TEN_MIB)
        rest, end = c.rest(timeout=10)
        assert rest == b"-ERR line too long\r\n" and end in ("eof", "reset"), (rest[:100], end)
        works(bystander)
    proxy.wait_for(r"command line longer than 1024 bytes")
    proxy.wait_for(r"end \(client sent an over-long line\)")
    hostile.assert_memory(hostile.process_rss_kib(proxy.pid) - rss, 4 * 1024,
                          f"RSS growth after a 10 MiB line ({sent} bytes taken)")
    # Nothing of it reached the server.
    assert b"AAAA" not in b"".join(line for conn in server.connections for line in conn.lines)


@pytest.mark.parametrize("verb", [b"STAT", b"GREETING"])
def test_a_10_mib_status_line_from_the_server_ends_the_session(lab, servers, verb):
    junk = b"+OK " + b"x" * TEN_MIB
    if verb == b"GREETING":
        bad = servers(MESSAGES, greeting=junk)
    else:
        bad = servers(MESSAGES, answers={b"STAT": junk})
    good = servers(MESSAGES)
    # One daemon for both: the hostile session selects the bad server.
    proxy = daemon(lab, good.address, "-e")
    with logged_in(proxy) as bystander:
        rss = hostile.process_rss_kib(proxy.pid)
        with proxy.client() as c:
            assert c.command(f"USER bob@{bad.address}").startswith(b"+OK")
            if verb == b"STAT":
                assert c.command("PASS pw").startswith(b"+OK")
                c.send(b"STAT\r\n")
            else:
                c.send(b"PASS pw\r\n")
            rest, end = c.rest(timeout=10)
            assert len(rest) < 100 and b"xxxx" not in rest and end == "eof", rest[:100]
        works(bystander)
    proxy.wait_for(r"server answered with something that is not POP3: \+OK x+")
    hostile.assert_memory(hostile.process_rss_kib(proxy.pid) - rss, 4 * 1024, "RSS growth after a 10 MiB status line")


def test_a_10_mib_line_inside_a_message_is_relayed_whole(lab, servers):
    long_line = bytes(ord("a") + i % 26 for i in range(TEN_MIB))
    message = crlf("From: long@example.org\nSubject: one line of 10 MiB\n\n") + long_line + b"\r\n.dot\r\n"
    server = servers([message])
    proxy = daemon(lab, server.address, "-m")
    rss = hostile.process_rss_kib(proxy.pid)
    with logged_in(proxy) as c:
        assert c.ask("RETR 1") == b"+OK %d octets\r\n" % len(message) + stuffed(message)
        assert c.ask("TOP 1 1").endswith(long_line + b"\r\n.\r\n")
    hostile.assert_memory(hostile.process_rss_kib(proxy.pid) - rss, 8 * 1024, "RSS growth relaying a 10 MiB line")


def test_a_body_without_an_end_is_relayed_until_the_server_closes(lab, servers):
    body = b"y" * TEN_MIB

    def endless(server, conn, words):
        conn.sendall(b"+OK here it comes\r\n" + body)
        return None  # and close

    server = servers(MESSAGES, answers={b"RETR": endless})
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        c.send(b"RETR 1\r\n")
        assert c.line() == b"+OK here it comes\r\n"
        rest, end = c.rest(timeout=20)
        assert rest == body and end == "eof"
    proxy.wait_for(r"end \(server closed the connection\)")


# MARK: - NUL bytes

def test_nul_bytes_from_the_client_are_refused_and_never_forwarded(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with proxy.client() as c:
        assert c.command(b"USER b\0b").startswith(b"-ERR")
        assert c.command(b"USER bob").startswith(b"+OK")
        assert c.command(b"PASS p\0w").startswith(b"-ERR")
        assert server.accepted == 0
        assert c.command(b"PASS pw").startswith(b"+OK")
        # Two refused before the login, two more here (the fifth would end the session).
        for line in [b"RETR 1\0", b"\0\0\0\0"]:
            assert c.command(line).startswith(b"-ERR"), line
        assert c.command("QUIT").startswith(b"+OK")
    assert server.wait_line(b"QUIT\r\n") == [b"USER bob\r\n", b"PASS pw\r\n", b"QUIT\r\n"]


def test_nul_bytes_from_the_server_are_relayed_as_they_are(lab, servers):
    message = crlf("From: nul@example.org\nSubject: NUL\n\n") + b"\0\0\0\r\nin\0side\r\n.\0dot\r\n\0"
    server = servers([message], answers={b"NOOP": b"+OK \0\0 zero\r\n"})
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        assert c.ask("RETR 1") == b"+OK %d octets\r\n" % len(message) + stuffed(message)
        assert c.command("NOOP") == b"+OK \0\0 zero\r\n"


# MARK: - A client that never reads

def test_a_client_that_never_reads_a_big_retr_holds_bounded_memory(lab, servers):
    size = 48 * 1024 * 1024
    line = b"0123456789" * 7 + b"\r\n"
    body = line * (size // len(line))
    progress = {"sent": 0}

    def slowly_read(server, conn, words):
        if words[1] != b"2":
            return b"+OK %d octets\r\n" % len(MESSAGES[0]) + stuffed(MESSAGES[0])
        conn.sendall(b"+OK %d octets\r\n" % len(body))
        view = memoryview(body)
        for at in range(0, len(body), 1 << 16):
            conn.sendall(view[at:at + (1 << 16)])
            progress["sent"] = at + len(view[at:at + (1 << 16)])
        conn.sendall(b".\r\n")
        return b""

    server = servers(MESSAGES, answers={b"RETR": slowly_read})
    proxy = daemon(lab, server.address, "-m")
    rss = hostile.process_rss_kib(proxy.pid)
    with logged_in(proxy) as hog, logged_in(proxy) as bystander:
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        hog.send(b"RETR 2\r\n")
        # Flow control stops the server once the buffers on the way are full.
        held = hostile.until_still(lambda: (progress["sent"],), quiet=1.0, timeout=30)[0]
        assert held < size // 2, f"{held} bytes left the server for a client that reads nothing"
        grown = hostile.process_rss_kib(proxy.pid) - rss
        hostile.assert_memory(grown, 16 * 1024, "RSS growth while a client does not read")
        works(bystander)
        # It reads at last: the whole message, byte for byte.
        hog.sock.settimeout(30)
        assert hog.line() == b"+OK %d octets\r\n" % len(body)
        h = hashlib.sha256(bytes(hog.buf))
        got = len(hog.buf)
        tail = bytes(hog.buf[-5:])
        while not tail.endswith(b"\r\n.\r\n"):
            chunk = hog.sock.recv(1 << 20)
            assert chunk, f"end of file after {got} bytes"
            h.update(chunk)
            got += len(chunk)
            tail = (tail + chunk)[-5:]
        assert (got, h.hexdigest()) == (len(body) + 3, hashlib.sha256(body + b".\r\n").hexdigest())


# MARK: - 1,000 sessions at once

class ManyServer:
    """A POP3 server on one selector thread for thousands of connections: it greets, answers
    every line +OK, and RETR with MESSAGES[0]."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.pending: dict[socket.socket, bytearray] = {}
        self.accepted = 0
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        retr = b"+OK %d octets\r\n" % len(MESSAGES[0]) + stuffed(MESSAGES[0])
        while not self.stopped:
            for key, _ in self.selector.select(0.05):
                s = key.fileobj
                if s is self.sock:
                    while True:
                        try:
                            conn, _ = self.sock.accept()
                        except (BlockingIOError, OSError):
                            break
                        self.accepted += 1
                        conn.setblocking(True)
                        conn.sendall(b"+OK many\r\n")
                        conn.setblocking(False)
                        self.pending[conn] = bytearray()
                        self.selector.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.selector.unregister(s)
                    self.pending.pop(s, None)
                    s.close()
                    continue
                buf = self.pending[s]
                buf += data
                while b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf[:] = rest
                    s.setblocking(True)
                    s.sendall(retr if line.upper().startswith(b"RETR") else b"+OK\r\n")
                    s.setblocking(False)

    def close(self) -> None:
        self.stopped = True
        self.thread.join(timeout=5)
        for s in list(self.pending):
            s.close()
        self.sock.close()


def read_lines(sockets: list[socket.socket], want: bytes, timeout: float = 30) -> None:
    """Reads on every (non-blocking) socket until each has sent exactly `want`."""
    got = {s: b"" for s in sockets}
    selector = selectors.DefaultSelector()
    for s in sockets:
        selector.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    waiting = len(sockets)
    while waiting:
        assert time.monotonic() < deadline, f"{waiting} of {len(sockets)} sessions still without {want!r}"
        for key, _ in selector.select(0.5):
            s = key.fileobj
            data = s.recv(4096)
            assert data, f"a session ended, having sent {got[s]!r}"
            got[s] += data
            assert want.startswith(got[s]), got[s]
            if got[s] == want:
                selector.unregister(s)
                waiting -= 1
    selector.close()


def test_1000_sessions_at_once_with_bounded_memory_and_one_more_working(lab):
    hostile.roomy_descriptors(8192)  # the daemon inherits it
    server = ManyServer()
    sessions: list[socket.socket] = []
    try:
        proxy = daemon(lab, f"127.0.0.1:{server.port}", "-m")
        rss = [hostile.process_rss_kib(proxy.pid)]
        for round_ in (1, 2):
            sessions = hostile.connect_all(proxy.port, 1000)
            read_lines(sessions, b"+OK pop3.proxy ready\r\n")
            for s in sessions:
                s.sendall(b"USER bob\r\nPASS pw\r\n")
            # Each logged in: the proxy holds 1,000 clients and 1,000 server connections.
            read_lines(sessions, b"+OK password required\r\n+OK\r\n")
            assert server.accepted == 1001 * round_ - 1  # and one bystander a round
            with POP3(proxy.port) as c:
                assert c.login("carol", "pw") == b"+OK\r\n"
                assert c.ask("RETR 1") == b"+OK %d octets\r\n" % len(MESSAGES[0]) + stuffed(MESSAGES[0])
            rss.append(hostile.process_rss_kib(proxy.pid))
            # All of them still answer, and end cleanly.
            for s in sessions:
                s.sendall(b"NOOP\r\nQUIT\r\n")
            read_lines(sessions, b"+OK\r\n+OK\r\n")
            for s in sessions:
                s.setblocking(True)
                s.settimeout(10)
                assert s.recv(100) == b""
                s.close()
            proxy.wait_for(r"end \(quit\)", count=1000 * round_, timeout=20)
        print(f"RSS {rss[0]} KiB idle, {rss[1]} KiB with 1,000 sessions, {rss[2]} KiB with 1,000 more")
        # Bounded by the sessions, not by what they do: about 70 KiB each once logged in
        # (buffers of both streams), here at most 128 KiB.
        hostile.assert_memory(rss[1] - rss[0], 1000 * 128, "RSS growth for 1,000 logged-in sessions")
        # And given back for the next ones: the second thousand mostly reuses it (the event
        # loops' malloc arenas vary by some tens of MiB from run to run; a session's memory
        # kept after its end would add another 70 MiB).
        hostile.assert_memory(rss[2] - rss[1], 48 * 1024, "RSS growth for the second 1,000 sessions")
        assert "ERROR" not in proxy.proc.text() and "WARNING" not in proxy.proc.text()
    finally:
        for s in sessions:
            s.close()
        server.close()


def test_nul_bytes_in_commands_count_as_unsupported_and_never_reach_the_server(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        for line in [b"NOOP\0", b"LIST \0", b"DELE 1\0 2", b"TOP 1\0 1"]:
            assert c.command(line).startswith(b"-ERR"), line
        assert c.command("NOOP") == b"+OK\r\n"
        assert c.command(b"\0") == b"-ERR too many unsupported commands\r\n"
        assert c.rest() == (b"", "eof")
    assert server.lines() == [b"USER bob\r\n", b"PASS pw\r\n", b"NOOP\r\n"]
