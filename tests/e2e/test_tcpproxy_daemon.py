"""tcpproxy end to end: the daemon. Handler selection by interface, rotate and source
addresses, SIGHUP reload under load (good, changed and broken configurations; listeners
added and removed), SIGUSR1/SIGUSR2 reports, SIGTERM/SIGINT and the pid file, faults
(refused backend, bad configurations, unknown options), -z/-zz, the idle timeout and
repeated settings in Zekoll's dialect (the last wins, with a warning).

Only loopback traffic; every tcpproxy has -D -L stderr:5 and DNSCACHEIP=127.53.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import pytest

from proxyhelpers import (connect, exchange, free_port, is_root, lab, read_all, read_line, tagger,  # noqa: F401
                          wait_file, wait_port)


def tag_of(host: str, port: int, source: str | None = None) -> tuple[str, str]:
    """(backend tag, source address the backend saw) for one connection."""
    data, end, _ = exchange(host, port, b"", source=source)
    words = data.split()
    assert len(words) >= 2, (data, end)
    return words[0].decode(), words[1].decode()


# MARK: - Interfaces, rotate, source

def test_interface_selects_server(lab):
    a, b, c = lab.backend(tagger("A")), lab.backend(tagger("B")), lab.backend(tagger("DEFAULT"))
    port = free_port("::")
    conf = lab.file("tcpproxy.conf", f"""port {port}
server 127.0.0.1:{c.port}
interface 127.0.0.2
server 127.0.0.1:{a.port}
interface 127.0.0.3
server 127.0.0.1:{b.port}
""")
    proxy = lab.tcpproxy("-f", conf)
    assert tag_of("127.0.0.2", port)[0] == "A", proxy.text()
    assert tag_of("127.0.0.3", port)[0] == "B", proxy.text()
    assert tag_of("127.0.0.1", port)[0] == "DEFAULT", proxy.text()
    assert tag_of("127.0.0.4", port)[0] == "DEFAULT", proxy.text()
    assert tag_of("::1", port)[0] == "DEFAULT", proxy.text()


def test_interface_without_default_refuses_other_addresses(lab):
    a = lab.backend(tagger("A"))
    port = free_port("::")
    conf = lab.file("tcpproxy.conf", f"port {port}\ninterface 127.0.0.2\nserver 127.0.0.1:{a.port}\n")
    proxy = lab.tcpproxy("-f", conf)
    assert tag_of("127.0.0.2", port)[0] == "A"
    try:
        data, end, _ = exchange("127.0.0.3", port, b"")
    except ConnectionRefusedError:
        data = b""
    assert data == b"", (data, proxy.text())
    assert a.accepted == 1


def test_zekoll_port_with_only_interfaces_binds_those_interfaces(lab):
    """Zekoll's page: `tcpproxy -s` makes tcpproxy "bind itself to all the listed
    interfaces". A port whose handlers all name an interface listens on those addresses
    only, so the same port on another address stays free for another program."""
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    port = free_port("::", also=["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    other = lab.backend(tagger("OTHER-PROGRAM"), host="127.0.0.4", port=port)
    conf = lab.file("tcpproxy.conf", f"port {port}\ninterface 127.0.0.2\nserver 127.0.0.1:{a.port}\n"
                                     f"interface 127.0.0.3\nserver 127.0.0.1:{b.port}\n")
    proxy = lab.tcpproxy("-f", conf, listeners=2)
    assert tag_of("127.0.0.2", port)[0] == "A", proxy.text()
    assert tag_of("127.0.0.3", port)[0] == "B", proxy.text()
    assert tag_of("127.0.0.4", port)[0] == "OTHER-PROGRAM"
    with pytest.raises(ConnectionRefusedError):
        exchange("127.0.0.1", port, b"", timeout=2)


def test_rotate_cycles_source_addresses(lab):
    backend = lab.backend(tagger("R"))
    port = free_port("::")
    conf = lab.file("tcpproxy.conf", f"port {port}\nrotate 127.0.0.10 127.0.0.12\nserver 127.0.0.1:{backend.port}\n")
    proxy = lab.tcpproxy("-f", conf)
    seen = [tag_of("127.0.0.1", port)[1] for _ in range(7)]
    cycle = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
    assert set(seen) == set(cycle), (seen, proxy.text())
    first = cycle.index(seen[0])
    assert seen == [cycle[(first + i) % 3] for i in range(7)], seen


def test_source_directive_spreadspace(lab):
    backend = lab.backend(tagger("S"))
    port = free_port()
    conf = lab.file("ss.conf", f"""listen 127.0.0.1 {port}
{{
  remote: 127.0.0.1 {backend.port};
  source: 127.0.0.5;
}};
""")
    proxy = lab.tcpproxy("-c", conf)
    assert tag_of("127.0.0.1", port) == ("S", "127.0.0.5"), proxy.text()


def test_source_option(lab):
    backend = lab.backend(tagger("S"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port),
                         "-s", "127.0.0.6")
    assert tag_of("127.0.0.1", port) == ("S", "127.0.0.6"), proxy.text()
    assert tag_of("127.0.0.1", port) == ("S", "127.0.0.6")


# MARK: - SIGHUP

def spreadspace(entries: list[tuple[int, int]]) -> str:
    return "".join(f"listen 127.0.0.1 {p} {{ remote: 127.0.0.1 {b}; }};\n" for p, b in entries)


def replace_file(path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def reload_configs(lab, kind: str, port: int, a_port: int, b_port: int) -> tuple[str, str, str, int]:
    """(config to A, config to B, broken config, line of the error) for the reload test.
    `one-user`: spreadspace's dialect; `per-user`: Zekoll's with two services of different
    uids (a master process and one worker per user; root only)."""
    if kind == "one-user":
        return (spreadspace([(port, a_port)]), spreadspace([(port, b_port)]),
                f"listen 127.0.0.1 {port} {{\n  remote: 127.0.0.1 {a_port}\n  bogus-setting: 1;\n}};\n", 3)
    other = free_port("::")
    handler = lab.script("id.sh", "#!/bin/sh\nid -u\n")

    def zekoll(target: int) -> str:
        return (f"port {other}\nuid 1\ngid 1\nexec {handler}\n"
                f"port {port}\nuid 65534\ngid 65534\nserver 127.0.0.1:{target}\n")
    return zekoll(a_port), zekoll(b_port), zekoll(a_port).replace("exec", "frobnicate\nexec"), 4


@pytest.mark.parametrize("kind", ["one-user", pytest.param("per-user", marks=pytest.mark.skipif(
    not is_root(), reason="needs root: services of different users"))])
def test_sighup_reload_under_load(lab, kind):
    """300 connections over ~2 s while SIGHUP comes fourteen times: unchanged, new backend,
    unchanged ten times, broken file twice. No connection fails; after the good reload new connections reach
    the new backend; a connection made before every reload still works; the broken file is
    logged with file and line and the previous configuration keeps serving."""
    lab.limit(90)
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    port = free_port("::") if kind == "per-user" else free_port()
    to_a, to_b, broken_text, broken_line = reload_configs(lab, kind, port, a.port, b.port)
    conf = lab.dir / "tcpproxy.conf"
    replace_file(conf, to_a)
    proxy = lab.tcpproxy("-c", conf, listeners=1 if kind == "one-user" else 2)

    deadline = time.monotonic() + 5
    while True:  # workers (per-user) start after the "started" line
        try:
            held = connect("127.0.0.1", port)  # made before any reload, must survive them all
            first = read_line(held)
            if first:
                break
            held.close()
        except OSError:
            pass
        assert time.monotonic() < deadline, proxy.text()
        time.sleep(0.05)
    assert first.startswith(b"A "), first

    results: list[tuple[float, str]] = []  # (start time, tag or error)
    lock = threading.Lock()

    def clients():
        for _ in range(300):
            started = time.monotonic()
            try:
                data, end, me = exchange("127.0.0.1", port, b"", timeout=5)
                tag = data.split()[0].decode() if data.split() else f"nothing ({end}) for client port {me[1]}"
            except OSError as e:
                tag = f"error {e!r}"
            with lock:
                results.append((started, tag))
            time.sleep(0.005)

    thread = threading.Thread(target=clients, daemon=True)
    thread.start()

    def wait_count(n: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and thread.is_alive():
            with lock:
                if len(results) >= n:
                    return
            time.sleep(0.005)

    try:
        wait_count(40)
        mark = proxy.mark()
        proxy.signal(signal.SIGHUP)  # unchanged configuration
        proxy.wait_for(r"configuration reloaded", start=mark)

        wait_count(80)
        replace_file(conf, to_b)
        mark = proxy.mark()
        proxy.signal(signal.SIGHUP)  # new backend
        proxy.wait_for(r"configuration reloaded", start=mark)
        switched = time.monotonic()

        for n in range(90, 160, 7):  # ten more reloads, unchanged
            wait_count(n)
            mark = proxy.mark()
            proxy.signal(signal.SIGHUP)
            proxy.wait_for(r"configuration reloaded", start=mark)

        wait_count(160)
        replace_file(conf, broken_text)
        mark = proxy.mark()
        proxy.signal(signal.SIGHUP)  # syntax error: keep serving B
        proxy.wait_for(r"not reloaded", start=mark)
        broken = proxy.text()[mark:]
        proxy.signal(signal.SIGHUP)  # again, still broken
        proxy.wait_for(r"not reloaded", count=2, start=mark)

        wait_count(200)
        assert proxy.poll() is None, proxy.text()
    finally:
        thread.join(timeout=30)

    failures = [t for _, t in results if t not in ("A", "B")]
    assert len(results) == 300 and failures == [], (len(results), failures[:5], proxy.text()[-3000:])
    after = [t for start, t in results if start > switched + (0.2 if kind == "per-user" else 0)]
    assert after and set(after) == {"B"}, after
    assert any(t == "A" for _, t in results[:40])
    # The broken configuration is reported with its file and line.
    assert re.search(rf"{re.escape(str(conf))}:{broken_line}\b", broken), broken
    # The connection made before the reloads still works, through the old backend.
    held.sendall(b"still here\n")
    held.shutdown(socket.SHUT_WR)
    data, end = read_all(held)
    held.close()
    assert (data, end) == (b"still here\n", "eof"), proxy.text()
    assert tag_of("127.0.0.1", port)[0] == "B"


def test_sighup_adds_and_removes_listeners(lab):
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    p1, p2, p3 = free_port(), free_port(), free_port()
    conf = lab.dir / "tcpproxy.conf"
    replace_file(conf, spreadspace([(p1, a.port), (p2, a.port)]))
    proxy = lab.tcpproxy("-c", conf, listeners=2)
    assert tag_of("127.0.0.1", p2)[0] == "A"
    replace_file(conf, spreadspace([(p1, a.port), (p3, b.port)]))
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    proxy.wait_for(r"configuration reloaded", start=mark)
    assert tag_of("127.0.0.1", p3)[0] == "B", proxy.text()
    assert tag_of("127.0.0.1", p1)[0] == "A"
    with pytest.raises(ConnectionRefusedError):
        exchange("127.0.0.1", p2, b"", timeout=2)
    assert re.search(rf"stopped listening on 127\.0\.0\.1:{p2}\b", proxy.text()[mark:]), proxy.text()


def test_sighup_zekoll_changes_server(lab):
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    port = free_port("::")
    conf = lab.dir / "tcpproxy.conf"
    replace_file(conf, f"port {port}\nserver 127.0.0.1:{a.port}\n")
    proxy = lab.tcpproxy("-f", conf)
    assert tag_of("127.0.0.1", port)[0] == "A"
    replace_file(conf, f"port {port}\nserver 127.0.0.1:{b.port}\n")
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    proxy.wait_for(r"configuration reloaded", start=mark)
    assert tag_of("127.0.0.1", port)[0] == "B"
    replace_file(conf, f"port {port}\nfrobnicate\nserver 127.0.0.1:{a.port}\n")
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    line = proxy.wait_for(r"not reloaded.*", start=mark).group(0)
    assert f"{conf}:2" in line, line
    assert tag_of("127.0.0.1", port)[0] == "B"


# MARK: - SIGUSR1, SIGUSR2

def test_sigusr1_logs_listeners_at_level_3(lab):
    a = lab.backend(tagger("A"))
    p1, p2 = free_port(), free_port("::1")
    conf = lab.file("ss.conf", f"listen 127.0.0.1 {p1} {{ remote: 127.0.0.1 {a.port}; }};\n"
                               f"listen ::1 {p2} {{ remote: 127.0.0.1 {a.port}; }};\n")
    level3 = lab.dir / "level3.log"
    proxy = lab.tcpproxy("-c", conf, "-L", f"file:3,{level3}", listeners=2)
    mark = proxy.mark()
    proxy.signal(signal.SIGUSR1)
    l1 = proxy.wait_for(rf".*127\.0\.0\.1:{p1}\b.*", start=mark).group(0)
    l2 = proxy.wait_for(rf".*\[::1\]:{p2}\b.*", start=mark).group(0)
    assert str(a.port) in l1 and str(a.port) in l2, (l1, l2)
    # The same lines reach a target at level 3 (the page: "sent to all configured log
    # targets at a level of 3").
    wanted = [rf"listener .*127\.0\.0\.1:{p1}\b", rf"listener .*\[::1\]:{p2}\b"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(re.search(w, level3.read_text()) for w in wanted):
        time.sleep(0.05)
    assert all(re.search(w, level3.read_text()) for w in wanted), level3.read_text()


def test_sigusr2_logs_open_connections_with_byte_counts(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    level3 = lab.dir / "level3.log"
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port),
                         "-L", f"file:3,{level3}")
    with connect("127.0.0.1", port) as s:
        tag = read_line(s)
        s.sendall(b"1234567")
        echoed = b""
        while len(echoed) < 7:
            echoed += s.recv(64)
        mark = proxy.mark()
        proxy.signal(signal.SIGUSR2)
        line = proxy.wait_for(rf".*\b7 bytes from client, {len(tag) + 7} bytes to client.*", start=mark).group(0)
        assert f"127.0.0.1:{s.getsockname()[1]}" in line, line
        proxy.wait_for(r"\b1 open connections?\b", start=mark)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "7 bytes from client" not in level3.read_text():
            time.sleep(0.05)
        assert "7 bytes from client" in level3.read_text()


# MARK: - SIGTERM, SIGINT, pid file

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_terminating_signal_exits_zero_and_removes_pid_file(lab, sig):
    a = lab.backend(tagger("A"))
    port = free_port()
    pidfile = lab.dir / "tcpproxy.pid"
    proxy = lab.tcpproxy("-P", pidfile, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    assert pidfile.read_text().strip() == str(proxy.pid)
    assert tag_of("127.0.0.1", port)[0] == "A"
    proxy.signal(sig)
    assert proxy.wait(5) == 0, proxy.text()
    assert not pidfile.exists(), proxy.text()


@pytest.mark.skipif(not is_root(), reason="needs root: a pid file in a root-owned directory such as /run")
def test_pid_file_in_root_owned_directory_removed_on_sigterm(lab):
    """As root, with the pid file where pid files live (a root-owned 0755 directory such as
    /run), SIGTERM must still remove it."""
    a = lab.backend(tagger("A"))
    run_dir = lab.dir / "run"
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)
    port = free_port()
    pidfile = run_dir / "tcpproxy.pid"
    proxy = lab.tcpproxy("-P", pidfile, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    assert pidfile.read_text().strip() == str(proxy.pid)
    proxy.signal(signal.SIGTERM)
    assert proxy.wait(5) == 0, proxy.text()
    assert not pidfile.exists(), f"pid file {pidfile} left behind; log:\n{proxy.text()}"


# MARK: - Faults

@pytest.mark.parametrize("level", [5, 2])
def test_refused_backend_closes_client_and_logs(lab, level):
    dead = free_port()  # nothing listens there
    port = free_port()
    # Level 2 (warnings and errors) logs nothing at start: wait for the port instead.
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(dead),
                         log=("-L", f"stderr:{level}"), listeners=1 if level >= 3 else 0)
    wait_port("127.0.0.1", port, proc=proxy)
    start = time.monotonic()
    data, end, _ = exchange("127.0.0.1", port, b"anyone?", timeout=5)
    assert data == b"" and end in ("eof", "reset"), (data, end)
    assert time.monotonic() - start < 1.5
    line = proxy.wait_for(rf".*127\.0\.0\.1:{dead}.*").group(0)
    assert "refused" in line.lower(), line
    # The client and, when it is known, the local address; never a made-up one.
    assert re.search(rf"connection \d+ from 127\.0\.0\.1:\d+ (on 127\.0\.0\.1:{port} )?to 127|"
                     rf"connection \d+ from 127\.0\.0\.1:\d+( on 127\.0\.0\.1:{port})?: unable to connect", line), line
    assert "0.0.0.0:0" not in line, line
    assert proxy.poll() is None


BAD_CONFIGS = {
    "zekoll-unknown-directive": ("port 40001\nserver 127.0.0.1:40002\nfrobnicate yes\n", 3),
    "zekoll-server-before-port": ("# comment\nserver 127.0.0.1:40002\nport 40001\n", 2),
    "zekoll-bad-port": ("port 40001\nserver 127.0.0.1:40002\nport 99999\nserver 127.0.0.1:1\n", 3),
    "spreadspace-remote-without-port": ("listen 127.0.0.1 40001\n{\n  remote: 127.0.0.1;\n};\n", 3),
    "spreadspace-unclosed": ("listen 127.0.0.1 40001 {\n  remote: 127.0.0.1 40002;\n", None),
    "spreadspace-unknown-setting": ("listen * 40001 {\n  remote: 127.0.0.1 40002;\n  colour: red;\n};\n", 3),
    "garbage": (b"\x00\xff\xfe\x01garbage {{{ ;;; }}}\n\x7f\n", 1),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_configuration_at_start_fails_naming_file_and_line(lab, name):
    text, line = BAD_CONFIGS[name]
    conf = lab.file(f"{name}.conf", text)
    r = lab.tcpproxy_run("-D", "-L", "stderr:5", "-c", conf, timeout=10)
    err = r.stderr.decode(errors="replace") + r.stdout.decode(errors="replace")
    assert r.returncode != 0, err
    if line is None:
        assert str(conf) in err, err
    else:
        assert re.search(rf"{re.escape(str(conf))}:{line}\b", err), err


def test_missing_configuration_file(lab):
    missing = lab.dir / "no-such.conf"
    r = lab.tcpproxy_run("-D", "-L", "stderr:5", "-c", missing)
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0 and str(missing) in err, (r.returncode, err)


@pytest.mark.parametrize("args", [["--frobnicate"], ["-X"], ["-p"], ["--proxy-protocol", "v3", "-p", "1", "-r", "x", "-o", "2"]])
def test_bad_command_line(lab, args):
    r = lab.tcpproxy_run("-D", "-L", "stderr:5", *args)
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0, err
    assert err.strip() and "tcpproxy" in err, err
    if args[0] in ("--frobnicate", "-X"):
        assert "unknown option" in err and args[0].lstrip("-") in err, err


def test_port_in_use_fails_at_start(lab):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = lab.tcpproxy_run("-D", "-L", "stderr:5", "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", "9")
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0 and str(port) in err, (r.returncode, err)


# The sample configuration of Zekoll's manual page, word for word.
ZEKOLL_SAMPLE = """#
# /etc/tcpproxy.conf - sample configuration
#
#
# Define SMTP proxys ...
#
port 25
# ... for outgoing ...
#
interface 192.168.1.1
server mailrelay.provider.com
# ... and incoming email.
#
interface 192.44.100.7
server mail.domain.com
#
# There are also NNTP-Servers on the outside
#
port 119
interface 192.168.1.1
server nntp.provider.com
interface 192.168.2.1
server nntp.other-provider.com
#
# Users from the outside can access our internal
# POP3 server ...
#
port 110
interface 192.44.100.7
# ... but only trough a real application gateway.
#
exec /usr/local/sbin/pop3.proxy mail.domain.com
"""


def test_list_ports_of_manual_sample(lab):
    conf = lab.file("sample.conf", ZEKOLL_SAMPLE)
    r = lab.tcpproxy_run("-z", "-f", conf)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["25", "119", "110"], r.stdout


def test_list_basic_configuration_of_manual_sample(lab):
    conf = lab.file("sample.conf", ZEKOLL_SAMPLE)
    r = lab.tcpproxy_run("-zz", "-f", conf)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    expected = [
        ("25", "192.168.1.1", "mailrelay.provider.com"),
        ("25", "192.44.100.7", "mail.domain.com"),
        ("119", "192.168.1.1", "nntp.provider.com"),
        ("119", "192.168.2.1", "nntp.other-provider.com"),
        ("110", "192.44.100.7", "/usr/local/sbin/pop3.proxy mail.domain.com"),
    ]
    assert len(lines) == len(expected), lines
    for line, (port, interface, target) in zip(lines, expected):
        assert line.split()[0] == port and interface in line.split() and target in line, (line, port, target)
    assert lab.tcpproxy_run("-z", "-z", "-f", conf).stdout == r.stdout


def test_configuration_written_back_reads_the_same(lab):
    """-zzz writes the configuration as a file of its dialect: comments gone, names resolved,
    and -zz of the written file lists exactly what -zz of the original lists."""
    conf = lab.file("sample.conf", ZEKOLL_SAMPLE)
    r = lab.tcpproxy_run("-zzz", "-f", conf)
    assert r.returncode == 0, r.stderr
    written = r.stdout.decode()
    assert "#" not in written and written.count("\nport ") == 3, written
    again = lab.file("written.conf", written)
    assert lab.tcpproxy_run("-zz", "-f", again).stdout == lab.tcpproxy_run("-zz", "-f", conf).stdout
    assert lab.tcpproxy_run("-zzz", "-f", again).stdout == r.stdout


# MARK: - Idle timeout

def test_idle_timeout_closes_idle_connection(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    proxy = lab.tcpproxy("--timeout", "1", "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    with connect("127.0.0.1", port) as s:
        assert read_line(s).startswith(b"A ")
        start = time.monotonic()
        data, end = read_all(s, timeout=5)
        elapsed = time.monotonic() - start
    assert data == b"" and end in ("eof", "reset"), (data, end, proxy.text())
    assert 0.7 <= elapsed <= 3.0, elapsed
    proxy.wait_for(r"idle timeout")


def test_idle_timeout_spares_active_connection(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    proxy = lab.tcpproxy("--timeout", "1", "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    with connect("127.0.0.1", port) as s:
        assert read_line(s).startswith(b"A ")
        for i in range(5):  # 2 s in all, never 1 s idle
            s.sendall(b"%d\n" % i)
            assert read_line(s) == b"%d\n" % i, proxy.text()
            time.sleep(0.4)
    assert "idle timeout" not in proxy.text()


def test_zekoll_timeout_directive(lab):
    a = lab.backend(tagger("A"))
    port = free_port("::")
    conf = lab.file("z.conf", f"timeout 1\nport {port}\nserver 127.0.0.1:{a.port}\n")
    proxy = lab.tcpproxy("-f", conf)
    with connect("127.0.0.1", port) as s:
        assert read_line(s).startswith(b"A ")
        start = time.monotonic()
        data, end = read_all(s, timeout=5)
    assert end in ("eof", "reset") and time.monotonic() - start <= 3.0, (end, proxy.text())


# MARK: - Repeated settings (Zekoll's dialect: the last line wins, with a warning)

def test_repeated_settings_warn_and_the_last_wins(lab):
    """Two `timeout` and two `server` lines in one section: tcpproxy starts, says so on standard
    error (before it would detach) and in its log, and serves the later values; a reload and -z
    say it again."""
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    port = free_port("::")
    conf = lab.dir / "tcpproxy.conf"
    replace_file(conf, f"timeout 30\ntimeout 1\nport {port}\nserver 127.0.0.1:{a.port}\n"
                       f"server 127.0.0.1:{b.port}\n")
    logfile = lab.dir / "tcpproxy.log"
    proxy = lab.tcpproxy("-f", conf, listeners=0, log=("-L", f"file:3,{logfile}"))
    logged = wait_file(logfile, r"tcpproxy started")
    warnings = [f"{conf}:2: timeout repeated in this section; it replaces line 1",
                f"{conf}:5: server repeated in this section; it replaces line 4"]
    for w in warnings:
        assert f"[WARNING] {w}\n" in logged, logged
    proxy.wait_for(re.escape(f"tcpproxy: warning: {warnings[1]}"))
    assert proxy.text().splitlines() == [f"tcpproxy: warning: {w}" for w in warnings], proxy.text()

    assert tag_of("127.0.0.1", port)[0] == "B"
    assert a.accepted == 0
    with connect("127.0.0.1", port) as s:  # the later timeout, 1 s, is the one in effect
        assert read_line(s).startswith(b"B ")
        start = time.monotonic()
        data, end = read_all(s, timeout=10)
    assert data == b"" and end in ("eof", "reset") and time.monotonic() - start < 5, (data, end)
    wait_file(logfile, r"idle timeout")

    replace_file(conf, f"port {port}\nserver 127.0.0.1:{b.port}\nserver 127.0.0.1:{a.port}\n")
    proxy.signal(signal.SIGHUP)
    logged = wait_file(logfile, r"SIGHUP: configuration reloaded")
    assert f"[WARNING] SIGHUP: {conf}:3: server repeated in this section; it replaces line 2\n" in logged, logged
    assert tag_of("127.0.0.1", port)[0] == "A"

    r = lab.tcpproxy_run("-z", "-f", conf)
    assert (r.returncode, r.stdout) == (0, f"{port}\n".encode()), r
    assert r.stderr.decode() == f"tcpproxy: warning: {conf}:3: server repeated in this section; it replaces line 2\n"


def test_server_and_exec_in_one_section_the_later_wins(lab):
    backend = lab.backend(tagger("B"))
    port = free_port("::")
    conf = lab.file("z.conf", f"port {port}\nexec /bin/false\nserver 127.0.0.1:{backend.port}\n")
    proxy = lab.tcpproxy("-f", conf)
    proxy.wait_for(re.escape(f"[WARNING] {conf}:3: server replaces exec at line 2 in this section "
                             "(a handler uses either server or exec)"))
    assert tag_of("127.0.0.1", port)[0] == "B", proxy.text()
    # -L stderr shows the warning already: it is not printed a second time.
    assert "tcpproxy: warning:" not in proxy.text()


# MARK: - Services of different users (Zekoll's uid/gid/user), started as root

def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


@pytest.mark.skipif(not is_root(), reason="needs root: services run as different users")
def test_services_of_different_users(lab):
    """Each service runs as its own uid; reload, SIGUSR2 and SIGTERM work across the workers;
    the pid file (root-owned directory) is removed and no worker is left."""
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    script = lab.script("whoami.sh", "#!/bin/sh\necho \"uid=$(id -u) gid=$(id -g) port=$PROXY_PORT\"\n")
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.dir / "tcpproxy.conf"

    def config(backend_port: int) -> str:
        return (f"port {p1}\nuid 1\ngid 1\nexec {script}\n"
                f"port {p2}\nuid 65534\ngid 65534\nserver 127.0.0.1:{backend_port}\n")

    replace_file(conf, config(a.port))
    run_dir = lab.dir / "run"
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)
    pidfile = run_dir / "tcpproxy.pid"
    proxy = lab.tcpproxy("-f", conf, "-P", pidfile, listeners=2)

    deadline = time.monotonic() + 5
    while True:  # the workers start after the "started" line: wait for the first answer
        try:
            data, _, _ = exchange("127.0.0.1", p1, b"")
            if data:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, proxy.text()
        time.sleep(0.05)
    assert data == f"uid=1 gid=1 port={p1}\n".encode(), (data, proxy.text())
    assert tag_of("::1", p2)[0] == "A", proxy.text()

    held = connect("127.0.0.1", p2)
    assert read_line(held).startswith(b"A ")
    held.sendall(b"1234")
    assert held.recv(16) == b"1234"
    mark = proxy.mark()
    proxy.signal(signal.SIGUSR2)
    proxy.wait_for(r"\b4 bytes from client\b", start=mark)
    replace_file(conf, config(b.port))
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    proxy.wait_for(r"configuration reloaded", start=mark)
    deadline = time.monotonic() + 5
    while True:  # (a connection lost during the switch is test_sighup_reload_under_load's business)
        data, _, _ = exchange("127.0.0.1", p2, b"")
        if data.startswith(b"B "):
            break
        assert time.monotonic() < deadline, proxy.text()
        time.sleep(0.05)
    held.sendall(b"old worker still serves\n")
    assert read_line(held) == b"old worker still serves\n"
    mark = proxy.mark()
    proxy.signal(signal.SIGUSR2)  # the connection is still open, in the draining worker
    proxy.wait_for(r"\b28 bytes from client\b", start=mark)
    held.close()

    proxy.signal(signal.SIGTERM)
    assert proxy.wait(5) == 0, proxy.text()
    assert not pidfile.exists(), proxy.text()
    deadline = time.monotonic() + 5
    while group_members(proxy.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(proxy.pid) == [], f"workers left after SIGTERM: {group_members(proxy.pid)}"


@pytest.mark.skipif(not is_root(), reason="needs root: services of different users")
def test_per_user_connections_right_after_start(lab):
    """Services of different users (a master and one worker per user): connections made as
    soon as tcpproxy says it has started are served, none is reset or closed unanswered."""
    a = lab.backend(tagger("A"))
    handler = lab.script("id.sh", "#!/bin/sh\necho uid=$(id -u)\n")
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.file("tcpproxy.conf", f"port {p1}\nuid 1\ngid 1\nexec {handler}\n"
                                     f"port {p2}\nuid 65534\ngid 65534\nserver 127.0.0.1:{a.port}\n")
    proxy = lab.tcpproxy("-f", conf, listeners=2)
    outcomes = []
    for i in range(10):
        for port in (p2, p1):
            data, end, me = exchange("127.0.0.1", port, b"x" if port == p2 else b"", timeout=5)
            outcomes.append((port, data[:20], end, me[1]))
    bad = [o for o in outcomes if o[2] != "eof" or not (o[1].startswith(b"A ") or o[1] == b"uid=1\n")]
    assert bad == [], (bad, proxy.text())


@pytest.mark.skipif(not is_root(), reason="needs root: services of different users")
def test_per_user_reload_keeps_connection_waiting_for_its_acp(lab):
    """A connection whose access control program is still running when SIGHUP replaces the
    workers is still served: the old worker drains it."""
    a = lab.backend(tagger("A"))
    calls, slow_flag = lab.dir / "acp-calls", lab.dir / "acp-slow"
    acp = lab.script("acp.sh", f"#!/bin/sh\necho call >> {calls}\n[ -e {slow_flag} ] && sleep 1\necho granted\n")
    handler = lab.script("id.sh", "#!/bin/sh\nid -u\n")
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.file("tcpproxy.conf", f"port {p1}\nuid 1\ngid 1\nexec {handler}\n"
                                     f"port {p2}\nuid 65534\ngid 65534\nacp {acp}\nserver 127.0.0.1:{a.port}\n")
    proxy = lab.tcpproxy("-f", conf, listeners=2)
    deadline = time.monotonic() + 5
    while not exchange("127.0.0.1", p2, b"")[0].startswith(b"granted\nA "):  # the worker is up
        assert time.monotonic() < deadline, proxy.text()
        time.sleep(0.05)
    before = len(calls.read_text().splitlines())
    slow_flag.write_text("")
    with connect("127.0.0.1", p2) as s:
        deadline = time.monotonic() + 5
        while len(calls.read_text().splitlines()) == before:  # the acp runs (for 1 s)
            assert time.monotonic() < deadline, proxy.text()
            time.sleep(0.01)
        mark = proxy.mark()
        proxy.signal(signal.SIGHUP)
        proxy.wait_for(r"configuration reloaded", start=mark)
        s.sendall(b"through\n")
        s.shutdown(socket.SHUT_WR)
        data, end = read_all(s, timeout=5)
    assert data.startswith(b"granted\nA 127.0.0.1 ") and data.endswith(b"\nthrough\n"), (data, end, proxy.text())
