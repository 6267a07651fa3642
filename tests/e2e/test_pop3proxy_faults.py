"""pop3.proxy end to end: hostile peers, as tcpproxy's test_tcpproxy_hostile.py does them for
tcpproxy. Slow clients (a byte a second), connections reset in every phase of a session, a
server that stops answering and clients that never read, a flood of connections faster than
the daemon serves them, and descriptors exhausted by held connections. Each ends with the
daemon alive, its memory bounded, well-behaved sessions served meanwhile, and every message
that was retrieved whole. (test_pop3proxy_hostile.py has the hostile bytes: long lines, NUL,
1,000 logged-in sessions.)

The daemon is `pop3.proxy -d -m -D -D 127.0.0.1:PORT` under prlimit; the server is the
tests' own scripted POP3 server. Only loopback traffic.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from hostile import (SLOWER, assert_memory, connect_all, expect_echoes, flood, leave_in_turn, process_rss_kib,
                     read_some, reset, roomy_descriptors, send_byte, until_still)
from pop3helpers import POP3, ScriptedServer, crlf, proxy_bin, stuffed
from proxyhelpers import free_port, lab, wait_port  # noqa: F401

GREETING = b"+OK pop3.proxy ready\r\n"
CAPA = b"+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.\r\n"
SMALL = crlf("From: a@example.org\nSubject: small\n\n.dot-stuffed\nhello\n")
BIG = crlf("From: b@example.org\nSubject: big\n\n") + b"".join(
    b"%07d 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl\r\n" % i for i in range(70000))


@pytest.fixture
def server():
    s = ScriptedServer([SMALL, BIG])
    yield s
    s.close()


def start(lab, server: ScriptedServer, *extra: str, nofile: int = 16384):
    """The daemon in the foreground, with room for thousands of sessions (or `nofile`)."""
    port = free_port()
    proc = lab.start(["prlimit", f"--nofile={nofile}:{nofile}", proxy_bin(), "-d", "-m", "--log", "stderr:4",
                      *extra, "-D", "-D", f"127.0.0.1:{port}", server.address], name="pop3.proxy")
    # Warnings and errors only: thousands of sessions would log thousands of lines.
    wait_port("127.0.0.1", port, proc=proc)
    return proc, port


def well_behaved(port: int, count: int = 1, deadline: float = 10.0 * SLOWER) -> list[float]:
    """`count` whole sessions in turn (login, RETR 1, QUIT), each within `deadline`."""
    times = []
    for _ in range(count):
        begin = time.monotonic()
        with POP3(port, timeout=deadline) as c:
            assert c.login("bob", "pw").startswith(b"+OK")
            assert c.ask("RETR 1") == b"+OK %d octets\r\n" % len(SMALL) + stuffed(SMALL)
            assert c.command("QUIT").startswith(b"+OK")
        times.append(time.monotonic() - begin)
    return times


def retrieve_big(port: int, timeout: float = 20.0 * SLOWER) -> None:
    with POP3(port, timeout=timeout) as c:
        assert c.login("bob", "pw").startswith(b"+OK")
        assert c.ask("RETR 2") == b"+OK %d octets\r\n" % len(BIG) + stuffed(BIG)


def test_slow_clients_keep_no_one_waiting(lab, server):
    """2,000 connections that send CAPA a byte a second (slowloris), while well-behaved
    sessions are served at once; every slow client gets the greeting and its answer; memory
    stays bounded."""
    lab.limit(150 * SLOWER)
    roomy_descriptors(10000)
    proc, port = start(lab, server)
    well_behaved(port, 2)
    baseline = process_rss_kib(proc.pid)
    slow = connect_all(port, 2000)
    received = {s: bytearray() for s in slow}
    for byte in b"CAPA\r\n":
        begin = time.monotonic()
        for s in slow:
            send_byte(s, byte)
        times = well_behaved(port, 3)
        assert max(times) < 10.0 * SLOWER, times  # served while 2000 wait, not after them
        for s in slow:
            try:
                received[s] += s.recv(200)
            except (BlockingIOError, OSError):
                pass
        time.sleep(max(0.0, 1.0 - (time.monotonic() - begin)))  # the pace of a slow client
    expect_echoes(received, GREETING + CAPA, 30 * SLOWER)
    assert_memory(process_rss_kib(proc.pid) - baseline, 64 * 1024, "2000 slow sessions cost")
    assert proc.poll() is None, proc.text()
    for s in slow:
        s.close()
    well_behaved(port, 1)


ACP = """#!/bin/sh
# Holds the session a moment, so that a client can reset it while the acp runs.
sleep 0.2
exit 0
"""


def test_resets_in_every_phase_lose_nothing_else(lab, server):
    """Clients reset before the greeting is read, after USER, while the access control
    program runs, and in the middle of a big RETR; the server resets in the middle of a
    message. The daemon serves well-behaved sessions throughout, each retrieval is whole, and
    its memory comes back."""
    lab.limit(150 * SLOWER)
    roomy_descriptors(4000)

    def half_then_reset(srv, conn, words) -> None:
        conn.sendall(b"+OK %d octets\r\n" % len(BIG) + stuffed(BIG)[:100000])
        reset(conn)
        return None

    breaking = ScriptedServer([SMALL, BIG], answers={b"TOP": half_then_reset})
    try:
        acp = lab.script("acp.sh", ACP)
        proc, port = start(lab, server)
        acp_proc, acp_port = start(lab, server, "-a", str(acp))
        broken_proc, broken_port = start(lab, breaking)
        well_behaved(port, 2)
        well_behaved(acp_port, 2)
        baseline = sum(process_rss_kib(p.pid) for p in (proc, acp_proc, broken_proc))
        for round_ in range(20):
            # Before reading the greeting.
            reset(socket.create_connection(("127.0.0.1", port)))
            # After USER.
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"USER bob\r\n")
            s.recv(100)
            reset(s)
            # While the access control program runs.
            s = socket.create_connection(("127.0.0.1", acp_port))
            s.sendall(b"USER bob\r\nPASS pw\r\n")
            s.recv(100)
            reset(s)
            # In the middle of a big RETR.
            c = POP3(port)
            assert c.login("bob", "pw").startswith(b"+OK")
            c.send(b"RETR 2\r\n")
            c.sock.recv(20000)
            reset(c.sock)
            # The server resets in the middle of a message: the client's session ends, the
            # answer cut short (never a made-up end of it).
            c = POP3(broken_port)
            assert c.login("bob", "pw").startswith(b"+OK")
            c.send(b"TOP 2 100000\r\n")
            data, end = c.rest(timeout=10 * SLOWER)
            assert end in ("eof", "reset") and len(data) <= 100000 + 64, (end, len(data))
            assert not data.endswith(b"\r\n.\r\n"), "a cut answer must not look whole"
            c.close()
            # Well-behaved sessions, whole.
            well_behaved(port, 1)
            well_behaved(acp_port, 1)
            if round_ % 5 == 0:
                retrieve_big(port)
        for p in (proc, acp_proc, broken_proc):
            assert p.poll() is None, p.text()
        grown = sum(process_rss_kib(p.pid) for p in (proc, acp_proc, broken_proc)) - baseline
        assert_memory(grown, 24 * 1024, "after the resets the daemons hold more")
        assert not re.search(r"(?i)fatal|assert", proc.text() + acp_proc.text() + broken_proc.text())
    finally:
        breaking.close()


def test_a_silent_server_and_clients_that_never_read_hold_back_only_themselves(lab):
    """Eight clients retrieve a big message and never read it, and a server that stops
    answering holds eight more sessions; the daemon's memory stays bounded (flow control,
    not buffers), other sessions are served meanwhile, every big message arrives whole once
    its client reads, and the stalled server's sessions end at -t."""
    lab.limit(150 * SLOWER)

    server = ScriptedServer([SMALL, BIG])
    server.answers[b"STAT"] = server.stall()
    try:
        proc, port = start(lab, server, "-t", "4")
        well_behaved(port, 2)
        baseline = process_rss_kib(proc.pid)

        def sending(command: bytes) -> POP3:
            c = POP3(port, timeout=30 * SLOWER)
            assert c.login("bob", "pw").startswith(b"+OK")
            c.send(command)
            return c

        readers = [sending(b"RETR 2\r\n") for _ in range(8)]
        stalled = [sending(b"STAT\r\n") for _ in range(8)]
        # Flow control stops everything: the daemon's memory settles.
        until_still(lambda: (process_rss_kib(proc.pid) // 1024,), quiet=1.0)
        assert_memory(process_rss_kib(proc.pid) - baseline, 16 * 1024,
                      "8 unread 4.6 MB retrievals and 8 stalled sessions cost")
        times = well_behaved(port, 3)
        assert max(times) < 10.0 * SLOWER, times
        for c in readers:
            assert c.answer(b"RETR 2") == b"+OK %d octets\r\n" % len(BIG) + stuffed(BIG)
            c.close()
        # The stalled sessions end at -t: no answer made up, the client told nothing false.
        for c in stalled:
            data, end = c.rest(timeout=20 * SLOWER)
            assert end in ("eof", "reset") and not data.startswith(b"+OK"), (data, end)
            c.close()
        assert proc.poll() is None, proc.text()
        well_behaved(port, 1)
    finally:
        server.close()


def test_descriptors_exhausted_by_held_connections(lab, server):
    """120 idle connections against a daemon with 64 descriptors: it takes what its
    descriptors allow and pauses accepting (and says so), the sessions it holds are served,
    and as holders go every waiting connection is served in turn, none refused."""
    lab.limit(150 * SLOWER)
    roomy_descriptors(1000)
    proc, port = start(lab, server, nofile=64)
    well_behaved(port, 2)
    baseline = process_rss_kib(proc.pid)
    held = connect_all(port, 120)
    received = {s: bytearray() for s in held}
    proc.wait_for(r"accepting paused for a moment: process cannot open more files", timeout=10 * SLOWER)

    greeted = lambda: read_some(received)  # noqa: E731

    inside = until_still(lambda: tuple(sorted(s.fileno() for s in greeted())), quiet=1.0)
    assert 0 < len(inside) < len(held), f"{len(inside)} of {len(held)} greeted with 64 descriptors"
    # The sessions inside are served while the daemon has no descriptor left.
    served = [s for s in held if s.fileno() in inside]
    for s in served:
        s.sendall(b"CAPA\r\n")
    expect_echoes({s: received[s] for s in served}, GREETING + CAPA, 10 * SLOWER)
    assert_memory(process_rss_kib(proc.pid) - baseline, 16 * 1024, "120 held connections cost")
    # Holders leave a few at a time: each waiting connection is greeted in turn.
    count = len(held)
    assert leave_in_turn(received, (GREETING, GREETING + CAPA), greeted, 60 * SLOWER, proc.text) == count
    well_behaved(port, 2)
    retrieve_big(port)
    assert proc.poll() is None, proc.text()


def test_a_flood_of_connections_faster_than_served(lab, server):
    """5,000 connections opened and dropped (half of them reset) as fast as four threads can,
    while well-behaved sessions keep being served; the daemon ends with nothing held."""
    lab.limit(150 * SLOWER)
    roomy_descriptors(10000)
    proc, port = start(lab, server)
    well_behaved(port, 2)
    baseline = process_rss_kib(proc.pid)
    flood(port, lambda n: well_behaved(port, 1, deadline=5.0 * SLOWER))
    well_behaved(port, 3)
    assert_memory(process_rss_kib(proc.pid) - baseline, 32 * 1024, "after the flood the daemon holds more")
    assert proc.poll() is None, proc.text()
