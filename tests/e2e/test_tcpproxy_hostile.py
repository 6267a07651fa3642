"""tcpproxy end to end: hostile peers. Slow clients (a byte a second), connections reset in
every phase, clients and servers that never read, a flood of connections faster than the
daemon serves them, and descriptors exhausted by held connections. Each ends with the daemon
alive, its memory bounded, every well-behaved client served meanwhile, and every completed
transfer whole. (test_tcpproxy_faults.py has the finer checks of the same faults: no
spinning while out of descriptors, a 2 MiB bound for a client that never reads.)

Only loopback traffic; every tcpproxy has -D and DNSCACHEIP=127.53.0.1.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

from hostile import (SLOWER, EchoServer, assert_memory, connect_all, expect_downloads, expect_echoes, flood,
                     leave_in_turn, read_some, reset, roomy_descriptors, send_byte, stall_both_ways, until_still)
from proxyhelpers import exchange, free_port, lab, pattern_bytes, wait_port  # noqa: F401
from test_tcpproxy_faults import group_rss_kib


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


def start_proxy(lab, backend_port: int, *extra: str, nofile: int = 16384):
    """tcpproxy from 127.0.0.1:PORT to the backend; by default with room for thousands of
    connections, two descriptors each, whatever the caller's limit."""
    port = free_port()
    proxy = lab.start(["prlimit", f"--nofile={nofile}:{nofile}", lab.tcpproxy_bin, "-D", "-L", "stderr:2",
                       "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend_port), *extra],
                      name="tcpproxy")
    # Warnings and errors only (stderr:2): thousands of connections would log thousands of lines.
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
    acp_proxy, acp_port = start_proxy(lab, backend.port, "-a", str(acp))
    well_behaved(port, 3)
    well_behaved(acp_port, 3)
    baseline = group_rss_kib(proxy.pid) + group_rss_kib(acp_proxy.pid)

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
    assert_memory(group_rss_kib(proxy.pid) + group_rss_kib(acp_proxy.pid) - baseline, 16 * 1024,
                  "after the resets the proxies hold more")


def syn_sent_to(port: int) -> int:
    """How many IPv4 sockets of this host are connecting (SYN-SENT) to `port`."""
    suffix = f":{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[2].endswith(suffix) and row.split()[3] == "02")


def test_resets_while_the_proxy_connects(lab):
    """A server whose listen queue is full drops SYNs, so the proxy's connects to it wait;
    clients reset meanwhile: each session ends at once and its connect goes with it (no
    half-open connection left to finish later, into a client that has gone)."""
    lab.limit(60 * SLOWER)
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    full_port = full.getsockname()[1]
    fillers = []
    for _ in range(3):  # the queue is full; later SYNs are dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", full_port))
        fillers.append(f)
    try:
        # Started by its log lines: a probe connection would leave a connect of its own.
        proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(free_port()), "-r", "127.0.0.1", "-o", str(full_port))
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", proxy.text()).group(1))
        before = syn_sent_to(full_port)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        deadline = time.monotonic() + 10 * SLOWER
        while syn_sent_to(full_port) < before + len(clients):
            assert time.monotonic() < deadline, (syn_sent_to(full_port), before, proxy.text())
            time.sleep(0.02)
        for s in clients:
            reset(s)
        proxy.wait_for(r"closed: 0 bytes from client, 0 bytes to client, .*\(client: connection reset\)$",
                       count=len(clients), timeout=10 * SLOWER)
        deadline = time.monotonic() + 10 * SLOWER
        while syn_sent_to(full_port) > before:
            assert time.monotonic() < deadline, (syn_sent_to(full_port), before, proxy.text())
            time.sleep(0.02)
        assert proxy.poll() is None, proxy.text()
    finally:
        for f in fillers:
            f.close()
        full.close()


def test_peers_that_never_read_hold_back_only_themselves(lab):
    """Eight uploads to a server that never reads and eight downloads to clients that never
    read, all through one proxy: each stalls once the buffers are full (TCP flow control,
    not the proxy's memory), well-behaved clients of the same proxy are served meanwhile, and
    every download arrives whole once its client reads."""
    lab.limit(120 * SLOWER)
    download = pattern_bytes(16 << 20, 8)
    backend = EchoServer(download=download)
    try:
        proxy, port = start_proxy(lab, backend.port)
        well_behaved(port, 3)
        baseline = group_rss_kib(proxy.pid)
        uploads, downloads, sent = stall_both_ways(port)
        assert_memory(group_rss_kib(proxy.pid) - baseline, 16 * 1024,
                      f"8 stalled uploads ({sent}) and 8 stalled downloads cost")
        times = well_behaved(port, 5)
        assert max(times) < 10.0 * SLOWER, times
        expect_downloads(downloads, download, 30 * SLOWER)
        for s in uploads:
            s.close()
        well_behaved(port, 1)
        assert proxy.poll() is None, proxy.text()
    finally:
        backend.close()


def test_descriptors_exhausted_by_held_connections(lab):
    """120 idle connections held against a proxy with 64 descriptors: it takes what its
    descriptors allow and pauses accepting (says so; test_tcpproxy_faults checks that it does
    not spin), the connections it holds are served throughout, memory stays bounded, and as
    holders go, every waiting connection is served in turn, none refused, nothing lost."""
    lab.limit(120 * SLOWER)
    roomy_descriptors(1000)
    echo = EchoServer()
    try:
        proxy, port = start_proxy(lab, echo.port, nofile=64)
        well_behaved(port, 3)
        baseline = group_rss_kib(proxy.pid)
        held = connect_all(port, 120)
        received = {s: bytearray() for s in held}
        for s in held:
            send_byte(s, 65)
        proxy.wait_for(r"accepting paused for a moment: process cannot open more files", timeout=10 * SLOWER)

        answered = lambda: read_some(received)  # noqa: E731

        inside = until_still(lambda: tuple(sorted(s.fileno() for s in answered())), quiet=1.0)
        assert 0 < len(inside) < len(held), f"{len(inside)} of {len(held)} served with 64 descriptors"
        # The connections inside are served while the daemon has no descriptor left.
        served = {s for s in held if s.fileno() in inside}
        for s in served:
            send_byte(s, 66)
        expect_echoes({s: received[s] for s in served}, b"AB", 10 * SLOWER)
        assert_memory(group_rss_kib(proxy.pid) - baseline, 16 * 1024, "120 held connections cost")
        assert proxy.poll() is None, proxy.text()
        # Holders leave a few at a time: each waiting connection gets its byte back, in turn.
        count = len(held)
        assert leave_in_turn(received, (b"A", b"AB"), answered, 60 * SLOWER, proxy.text) == count
        well_behaved(port, 3)
        big = pattern_bytes(4 << 20, 10)
        data, end, _ = exchange("127.0.0.1", port, big, timeout=10 * SLOWER)
        assert data == big and end == "eof", (len(data), end)
        text = proxy.text()
        assert not re.search(r"unable to|closed$", text, re.M), text  # no connection turned away
        assert proxy.poll() is None, text
    finally:
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
        flood(port, lambda n: well_behaved(port, 1, deadline_each=5.0 * SLOWER))
        well_behaved(port, 3)
        # Every flood connection ends: the proxy's memory settles near where it started.
        assert_memory(group_rss_kib(proxy.pid) - baseline, 32 * 1024, "after the flood the proxy holds more")
        assert proxy.poll() is None, proxy.text()
    finally:
        echo.close()
