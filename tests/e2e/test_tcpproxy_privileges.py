"""tcpproxy end to end: spreadspace's -u/-g/-C (the whole daemon drops to the user and is
chrooted), the default as root (workers as 65534), seen in /proc, and the connection numbers
that a worker process per user share.

Only loopback traffic; every tcpproxy has -D -L stderr:5 and DNSCACHEIP=127.53.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

from proxyhelpers import exchange, free_port, is_root, lab, tagger, wait_port  # noqa: F401


def status_ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a process."""
    uid = gid = -1
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            if line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def wait_children(proxy) -> list[int]:
    """The master's worker processes, once it has forked at least one (a bounded wait: the
    listeners answer before the workers exist)."""
    deadline = time.monotonic() + 5
    while not children(proxy.pid):
        assert time.monotonic() < deadline, proxy.text()
        time.sleep(0.02)
    return children(proxy.pid)


@pytest.mark.skipif(not is_root(), reason="needs root: dropping privileges and chroot")
def test_username_groupname_and_chroot_apply_to_the_whole_daemon(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    jail = lab.dir / "jail"
    jail.mkdir()
    os.chmod(lab.dir, 0o755)
    proxy = lab.tcpproxy("-u", "nobody", "-g", "nogroup", "-C", jail,
                         "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    assert exchange("127.0.0.1", port, b"")[0].startswith(b"A "), proxy.text()
    assert status_ids(proxy.pid) == (65534, 65534)
    assert os.readlink(f"/proc/{proxy.pid}/root") == str(jail)
    assert children(proxy.pid) == [], "with -u the daemon is one process"


@pytest.mark.skipif(not is_root(), reason="needs root: the default privilege drop")
def test_root_default_serves_as_nobody_in_a_worker(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    assert exchange("127.0.0.1", port, b"")[0].startswith(b"A "), proxy.text()
    assert status_ids(proxy.pid) == (0, 0), "the master keeps root to bind and remove the pid file"
    assert [status_ids(c) for c in wait_children(proxy)] == [(65534, 65534)]


def test_worker_ends_with_its_master(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    assert exchange("127.0.0.1", port, b"")[0].startswith(b"A "), proxy.text()
    workers = children(proxy.pid)
    assert len(workers) == 1, proxy.text()
    # A master killed outright (no chance to stop its workers) takes them along: a worker
    # serving on would be a daemon no pid file, signal or reload reaches.
    os.kill(proxy.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{workers[0]}") and status_state(workers[0]) != "Z":
        assert time.monotonic() < deadline, f"worker {workers[0]} outlived its master:\n{proxy.text()}"
        time.sleep(0.02)


def status_state(pid: int) -> str:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("State:"):
                return line.split()[1]
    except FileNotFoundError:
        pass
    return "gone"


def test_unknown_user_fails_at_start(lab):
    port = free_port()
    result = lab.tcpproxy_run("-D", "-u", "no-such-user-here", "-l", "127.0.0.1", "-p", str(port),
                              "-r", "127.0.0.1", "-o", "9")
    if not is_root():
        pytest.skip("the user is only looked up when started as root")
    assert result.returncode == 1 and b"unknown user no-such-user-here" in result.stderr, result


def connection_numbers(text: str) -> list[int]:
    """The numbers of the connections the log has seen start, in log order."""
    return [int(n) for n in re.findall(r"^\S+ \S+ \[NOTICE\] connection (\d+) from .* to \S+$", text, re.M)]


@pytest.mark.skipif(not is_root(), reason="needs root: a worker process per user")
def test_connection_numbers_unique_across_workers_and_reloads(lab):
    """Two users, two worker processes: one sequence of connection numbers for both, and
    the workers started by SIGHUP go on with it."""
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.file("tcpproxy.conf", f"port {p1}\nuser nobody\nserver 127.0.0.1:{a.port}\n"
                                     f"port {p2}\nuser daemon\nserver 127.0.0.1:{b.port}\n")
    proxy = lab.tcpproxy("-f", conf, listeners=2)
    proxy.wait_for(r"worker \d+ serves", count=2)

    def connections(rounds: int, seen: int) -> list[int]:
        for i in range(rounds):
            for port, tag in ((p1, b"A "), (p2, b"B ")):
                data, _, _ = exchange("127.0.0.1", port, b"n")
                assert data.startswith(tag), (data, proxy.text())
        proxy.wait_for(r"\[NOTICE\] connection \d+ from .* closed: ", count=seen + 2 * rounds)
        return connection_numbers(proxy.text())

    before = connections(3, 0)
    assert len(before) == 6 and len(set(before)) == 6, proxy.text()
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    proxy.wait_for(r"SIGHUP: configuration reloaded", start=mark)
    proxy.wait_for(r"worker \d+ serves", count=2, start=mark)
    after = connections(3, 6)[6:]
    assert len(after) == 6 and len(set(after)) == 6, proxy.text()
    assert min(after) > max(before), (before, after)


@pytest.mark.skipif(not is_root(), reason="needs root: a worker process")
def test_worker_forked_before_any_log_line_logs_from_every_loop(lab):
    """A master that has logged nothing yet (errors only) forks its worker with no log writer
    thread; the worker's loops then all log through the locks the fork handlers held. Every
    line arrives, and under ThreadSanitizer (scripts/test --sanitize thread), which watches a
    worker forked from a single-threaded master in full, the locks must still order the
    loops: a child that re-initialised a mutex the prepare handler held, rather than
    unlocking it, left it held in the sanitizer's eyes and every log line a race."""
    lab.limit(60)
    refused = free_port()  # nothing listens there: every connection logs an error
    port = free_port()
    proxy = lab.start([lab.tcpproxy_bin, "-D", "-L", "stderr:2", "-l", "127.0.0.1", "-p", str(port),
                       "-r", "127.0.0.1", "-o", str(refused)], name="tcpproxy")
    wait_port("127.0.0.1", port, proc=proxy)
    assert len(wait_children(proxy)) == 1, proxy.text()
    clients, per_client = 4, 50

    def client() -> None:
        for _ in range(per_client):
            data, end, _ = exchange("127.0.0.1", port, b"")
            assert data == b"", (data, end)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proxy.wait_for(r"unable to connect to 127\.0\.0\.1:\d+: connection refused, closed",
                   count=clients * per_client, timeout=20)
    assert proxy.poll() is None, proxy.text()
