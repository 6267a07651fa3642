"""tcpproxy end to end: faults. Running out of descriptors pauses accepting (no spinning, no
crash, no client turned away) and serving resumes once descriptors are free; a client that never reads holds the
server back by TCP flow control instead of growing the proxy's memory, and gets every byte
once it reads.

Only loopback traffic; every tcpproxy has -D -L stderr:5 and DNSCACHEIP=127.53.0.1.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from pathlib import Path

from proxyhelpers import (START_TIMEOUT, exchange, free_port, lab, pattern_bytes, tagger)  # noqa: F401


def group_pids(pgid: int) -> list[int]:
    """The processes of process group `pgid` (tcpproxy's master and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every thread of the group's processes."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def group_rss_kib(pgid: int) -> int:
    total = 0
    for pid in group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def test_descriptor_exhaustion_pauses_accepting_and_loses_no_client(lab):
    lab.limit(60)
    backend = lab.backend(tagger("E"))
    port = free_port()
    # 48 descriptors: room for about a dozen proxied connections next to the daemon's own.
    proxy = lab.start(["prlimit", "--nofile=48:48", lab.tcpproxy_bin, "-D", "-L", "stderr:5",
                       "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port)],
                      name="tcpproxy")
    proxy.wait_for(r"tcpproxy started", timeout=START_TIMEOUT)
    # The kernel completes these handshakes on its own (listen backlog); the proxy takes what
    # its descriptors allow, and the rest wait.
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
    try:
        for s in clients:
            s.setblocking(False)
        proxy.wait_for(r"accepting paused for a moment: process cannot open more files")
        # Paused, not spinning: over a second with connections waiting, the daemon uses a
        # small part of one core (a loop retrying accept at once would use all of it).
        before = group_cpu_seconds(proxy.pid)
        time.sleep(1.0)
        used = group_cpu_seconds(proxy.pid) - before
        assert used < 0.3, f"{used:.2f} s of CPU in 1 s while out of descriptors:\n{proxy.text()}"
        # Every client is served in turn: each one that got its answer hangs up, which frees
        # descriptors for the next ones.
        served: set[int] = set()
        deadline = time.monotonic() + 20
        while len(served) < len(clients):
            assert time.monotonic() < deadline, f"{len(served)} of {len(clients)} served:\n{proxy.text()}"
            for i, s in enumerate(clients):
                if i in served:
                    continue
                try:
                    data = s.recv(100)
                except BlockingIOError:
                    continue
                assert data.startswith(b"E 127.0.0.1 "), (i, data, proxy.text())
                served.add(i)
                s.close()
            time.sleep(0.02)
    finally:
        for s in clients:
            s.close()
    assert proxy.poll() is None, proxy.text()
    text = proxy.text()
    assert not re.search(r", closed$|unable to", text, re.M), text  # no client turned away
    # Reported, not repeated at every pause.
    assert proxy.count(r"accepting paused") <= 2, text
    # And afterwards all is as before.
    data, end, _ = exchange("127.0.0.1", port, b"ping", timeout=5)
    assert data.startswith(b"E 127.0.0.1 ") and data.endswith(b"ping"), (data, end, proxy.text())


def test_client_that_never_reads_does_not_grow_proxy_memory(lab):
    lab.limit(90)
    total = 96 << 20
    chunk = pattern_bytes(1 << 20, 11)
    sent = [0]

    def flood(conn: socket.socket, peer, backend) -> None:
        conn.settimeout(60)
        if conn.recv(1) != b"f":  # a warm-up connection
            conn.sendall(b"ready\n")
            return
        for _ in range(total // len(chunk)):
            conn.sendall(chunk)
            sent[0] += len(chunk)
        conn.shutdown(socket.SHUT_WR)

    backend = lab.backend(flood)
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    # Warm up first (as root the connections are served by a worker process, which must
    # exist for the baseline), on every loop with luck: a few short connections.
    for _ in range(6):
        assert exchange("127.0.0.1", port, b"w")[0] == b"ready\n", proxy.text()
    baseline = group_rss_kib(proxy.pid)
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(b"f")
    try:
        # Wait until the flood stalls: the backend's count stops moving (bounded).
        deadline = time.monotonic() + 30
        last, still = -1, 0
        while still < 10:
            assert time.monotonic() < deadline, f"the flood never stalled ({sent[0]} bytes sent)"
            time.sleep(0.05)
            still = still + 1 if sent[0] == last else 0
            last = sent[0]
        assert sent[0] < total, "nothing held the server back"
        grown = group_rss_kib(proxy.pid) - baseline
        assert grown < 2048, f"the proxy grew by {grown} KiB while {sent[0] >> 20} MiB waited for a reader"
        # Now read: every byte arrives, in order.
        expected = hashlib.sha256(chunk * (total // len(chunk))).hexdigest()
        h = hashlib.sha256()
        n = 0
        client.settimeout(30)
        while True:
            data = client.recv(1 << 20)
            if not data:
                break
            h.update(data)
            n += len(data)
        assert n == total and h.hexdigest() == expected, (n, total)
    finally:
        client.close()
    assert proxy.poll() is None, proxy.text()
