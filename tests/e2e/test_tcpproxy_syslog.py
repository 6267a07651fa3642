"""tcpproxy end to end: the syslog log target. What would reach syslogd is read from a
datagram socket of the test's own ($BASTION_SYSLOG_SOCKET instead of /dev/log): RFC 3164
lines with the configured name and facility, connections logged at level 3 (notice).

And logging never stops the service: with a target that stalls (a syslog socket nobody
reads, a log file on a full filesystem, standard error to a pipe nobody reads) thousands of
connections are all served; the lines that did not fit the target's queue are dropped and
counted, and once the target takes lines again it gets `N log lines dropped`. The lines it
does get are in order, and together with the counts they account for every line logged.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from proxyhelpers import exchange, free_port, is_root, lab, tagger, wait_file, wait_port  # noqa: F401

LOG_LOCAL3 = 19 << 3
LOG_NOTICE = 5


def test_syslog_target_name_facility_and_connection_lines(lab):
    a = lab.backend(tagger("A"))
    path = str(lab.dir / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(5)
    try:
        port = free_port()
        proxy = lab.tcpproxy("-L", "syslog:3,myproxy,local3", "-L", "stderr:5",
                             "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port),
                             env=lab.env({"BASTION_SYSLOG_SOCKET": path}))
        assert exchange("127.0.0.1", port, b"")[0].startswith(b"A ")
        lines = []
        deadline = time.monotonic() + 5
        while not any(b" closed: " in line for line in lines):
            assert time.monotonic() < deadline, (lines, proxy.text())
            lines.append(sink.recv(4096))
    finally:
        sink.close()
    priority = LOG_LOCAL3 | LOG_NOTICE
    pattern = rb"<%d>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d myproxy\[\d+\]: " % priority
    for line in lines:
        assert re.match(pattern, line), line
    assert any(re.search(rb"myproxy\[\d+\]: listening on 127\.0\.0\.1:%d$" % port, l) for l in lines), lines
    assert any(re.search(rb": connection \d+ from 127\.0\.0\.1:\d+ on 127\.0\.0\.1:%d to 127\.0\.0\.1:%d$"
                         % (port, a.port), l) for l in lines), lines


# MARK: - A stalled target costs log lines, never service

CLIENT_THREADS = 4
CONNECTION_LINE = re.compile(r"connection (\d+) from (127\.0\.0\.\d+):\d+ on 127\.0\.0\.1:\d+ "
                             r"to 127\.0\.0\.1:\d+( closed: .*)?")
DROPPED_LINE = re.compile(r"(\d+) log lines dropped")
STAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[([A-Z]+)\] (.*)")


def serve_many(port: int, count: int) -> list[str]:
    """`count` connections through the proxy at `port` to a tagger, from CLIENT_THREADS
    threads, each one after another from its own address (127.0.0.10 + i), so that each
    thread's connection numbers rise. Returns what went wrong (nothing, when all were served:
    the tag, then our bytes echoed, then end of file)."""
    failures: list[str] = []

    def client(i: int) -> None:
        source = f"127.0.0.{10 + i}"
        for k in range(count // CLIENT_THREADS):
            payload = f"{source} {k}\n".encode()
            try:
                data, end, _ = exchange("127.0.0.1", port, payload, source=source, timeout=10)
            except OSError as e:
                failures.append(f"{source} #{k}: {e}")
                continue
            if end != "eof" or not data.startswith(b"A 127.0.0.1 ") or not data.endswith(b"\n" + payload):
                failures.append(f"{source} #{k}: {end} {data!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENT_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=25)
    assert not any(t.is_alive() for t in threads), "clients still running after 25 s"
    return failures


def account(messages: list[str]) -> tuple[int, int]:
    """Checks the order of the messages a target got (each client thread's connections in
    rising order, no connection's first line after its last) and returns (lines, dropped):
    the lines it got, not counting the reports, and the sum of the reports' counts."""
    lines = dropped = 0
    last_opened: dict[str, int] = {}
    closed: set[int] = set()
    for message in messages:
        report = DROPPED_LINE.fullmatch(message)
        if report:
            dropped += int(report.group(1))
            continue
        lines += 1
        c = CONNECTION_LINE.fullmatch(message)
        if not c:
            continue
        number, source = int(c.group(1)), c.group(2)
        if c.group(3):
            closed.add(number)
        else:
            assert number > last_opened.get(source, 0), f"out of order: {message!r}"
            assert number not in closed, f"first line after the last: {message!r}"
            last_opened[source] = number
    return lines, dropped


def expected_lines(connections: int) -> int:
    """Lines tcpproxy logs at notice: "listening on", "tcpproxy started" (as root also "worker N
    serves": the connections go through a worker process the master forked), and two a
    connection (its start and its end)."""
    return (3 if is_root() else 2) + 2 * connections


def stamped_messages(text: str, levels: dict[str, str]) -> list[str]:
    """The messages of `STAMP [LEVEL] message` lines; records each report's level."""
    messages = []
    for line in text.splitlines():
        m = STAMPED.fullmatch(line)
        assert m, f"not a log line: {line!r}"
        messages.append(m.group(2))
        if DROPPED_LINE.fullmatch(m.group(2)):
            levels[m.group(2)] = m.group(1)
    return messages


def test_syslog_nobody_reads_all_connections_served_then_the_count(lab):
    """The default target (syslog at notice), a syslog socket that takes no datagram while
    3000 connections go through; then the reader starts."""
    lab.limit(30)
    a = lab.backend(tagger("A"))
    path = str(lab.dir / "stalled.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    try:
        port = free_port()
        proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port),
                             listeners=0, log=(), env=lab.env({"BASTION_SYSLOG_SOCKET": path}))
        wait_port("127.0.0.1", port, proc=proxy)
        failures = serve_many(port, 3000)
        assert not failures, failures[:5]
        expected = expected_lines(3000 + 1)  # and wait_port's connection
        datagrams: list[bytes] = []
        accounted = 0  # lines read, and lines reported dropped
        sink.settimeout(10)
        while accounted < expected:
            datagrams.append(sink.recv(4096))
            report = DROPPED_LINE.search(datagrams[-1].decode(errors="replace"))
            accounted += int(report.group(1)) if report else 1
    finally:
        sink.close()
    parsed = [parse_syslog(d) for d in datagrams]
    lines, dropped = account([m for _, m in parsed])
    assert dropped > 0 and lines + dropped == expected, (lines, dropped, expected)
    reports = [(priority, m) for priority, m in parsed if DROPPED_LINE.fullmatch(m)]
    assert reports and all(priority == (3 << 3) | 4 for priority, _ in reports), reports  # daemon.warning


def parse_syslog(datagram: bytes) -> tuple[int, str]:
    """(priority, message) of an RFC 3164 datagram from tcpproxy."""
    m = re.fullmatch(rb"<(\d+)>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d tcpproxy\[\d+\]: (.*)", datagram, re.S)
    assert m, datagram
    return int(m.group(1)), m.group(2).decode()


def test_file_target_on_a_full_filesystem(lab):
    """`-L file:3,PATH` on a tmpfs the test fills: every connection served meanwhile (and the
    stderr target, which is read, gets every line); once space is freed the file gets the
    queued lines and the count."""
    lab.limit(30)
    if not is_root():
        pytest.skip("not root: the test mounts a small tmpfs to fill")
    mount = lab.dir / "full"
    mount.mkdir()
    # Room for the queued lines (1024 of some 150 bytes) once the filler is gone.
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0777", "bastion-full", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    proxy = None
    try:
        path = mount / "proxy.log"
        path.touch()
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        a = lab.backend(tagger("A"))
        port = free_port()
        proxy = lab.tcpproxy("-L", f"file:3,{path}", "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1",
                             "-o", str(a.port))
        failures = serve_many(port, 2000)
        assert not failures, failures[:5]
        assert path.stat().st_size == 0
        proxy.wait_for(r"to 127\.0\.0\.1:\d+ closed: ", count=2000)  # stderr, not stalled, got them all
        filler.unlink()
        # The queued lines and the count arrive; a connection after that is logged after them.
        wait_file(path, r"^\S+ \S+ \[WARNING\] \d+ log lines dropped$")
        assert exchange("127.0.0.1", port, b"after\n")[0].endswith(b"\nafter\n")
        levels: dict[str, str] = {}
        text = wait_file(path, r"^\S+ \S+ \[NOTICE\] connection \d+ from 127\.0\.0\.1:\d+ .* closed: ")
        assert re.search(r"log lines dropped\n.*from 127\.0\.0\.1:", text, re.S), text[-1000:]
        # The master's writer (its start-up lines, queued while the disk was full) retries on
        # its own schedule: wait until every line is accounted for, not for a fixed time.
        deadline = time.monotonic() + 20
        while True:
            levels.clear()
            lines, dropped = account(stamped_messages(path.read_text(errors="replace"), levels))
            if lines + dropped == expected_lines(2000 + 1) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert dropped > 0 and lines + dropped == expected_lines(2000 + 1), (lines, dropped)
        assert levels and set(levels.values()) == {"WARNING"}, levels
    finally:
        if proxy is not None:
            proxy.stop()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_stderr_to_a_pipe_nobody_reads(lab):
    """`-L stderr:3` in the foreground, standard error a pipe the test reads only up to
    "tcpproxy started", then not while 2000 connections go through; then it reads on."""
    lab.limit(30)
    a = lab.backend(tagger("A"))
    port = free_port()
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([lab.tcpproxy_bin, "-D", "-L", "stderr:3", "-l", "127.0.0.1", "-p", str(port),
                             "-r", "127.0.0.1", "-o", str(a.port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=write_end,
                            env=lab.env(), start_new_session=True)
    os.close(write_end)
    text = b""

    def read_until(done, timeout: float = 10) -> None:
        nonlocal text
        deadline = time.monotonic() + timeout
        while not done(text):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([read_end], [], [], left)[0], text[-500:]
            chunk = os.read(read_end, 65536)
            assert chunk, f"tcpproxy closed its standard error: {text[-500:]!r}"
            text += chunk

    try:
        read_until(lambda t: b"tcpproxy started" in t)
        failures = serve_many(port, 2000)
        assert not failures, failures[:5]
        expected = expected_lines(2000)
        levels: dict[str, str] = {}

        def accounted(t: bytes) -> bool:
            whole = t.decode(errors="replace").rpartition("\n")[0]
            return sum(account(stamped_messages(whole, levels))) >= expected

        read_until(accounted)
        lines, dropped = account(stamped_messages(text.decode().rpartition("\n")[0], levels))
        assert dropped > 0 and lines + dropped == expected, (lines, dropped)
        assert levels and set(levels.values()) == {"WARNING"}, levels
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # and the worker process, as root
        except ProcessLookupError:
            pass
        proc.wait(5)
        os.close(read_end)


@pytest.mark.skipif(not is_root(), reason="needs root: a master that forks its workers on SIGHUP")
def test_log_rotation_reaches_the_workers_a_reload_starts(lab):
    """The log file is renamed away and SIGHUP sent (what logrotate does): the master, as
    root, opens the file anew and the workers the reload starts inherit it, so their lines go
    to the new file, never to the renamed one, and none of them has to open it (as 65534)."""
    a = lab.backend(tagger("A"))
    port = free_port()
    conf = lab.file("tcpproxy.conf", f"port {port}\nserver 127.0.0.1:{a.port}\n")
    path = lab.dir / "proxy.log"
    proxy = lab.tcpproxy("-f", conf, log=("-L", "stderr:2", "-L", f"file:3,{path}"), listeners=0)
    wait_file(path, r"tcpproxy started", timeout=20)  # a loaded machine starts slowly
    for rotation in range(1, 6):
        data, _, me = exchange("127.0.0.1", port, b"before\n")
        assert data.endswith(b"before\n")
        wait_file(path, rf"from 127\.0\.0\.1:{me[1]} .* closed: ")
        old = path.with_name(f"proxy.log.{rotation}")
        path.rename(old)
        proxy.signal(signal.SIGHUP)
        wait_file(path, r"worker \d+ serves 1 listeners")
        data, _, me = exchange("127.0.0.1", port, b"after\n")
        assert data.endswith(b"after\n")
        wait_file(path, rf"from 127\.0\.0\.1:{me[1]} .* closed: ")
        assert f"from 127.0.0.1:{me[1]} " not in old.read_text(), old.read_text()
    assert "unable to open" not in proxy.text(), proxy.text()
