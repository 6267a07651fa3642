"""pop3.proxy in every mode, each retrieving a Dovecot mailbox and compared with Dovecot
directly: inetd-style under our tcpserver, behind tcpproxy's exec handler with a
configuration per interface (the manual's own example), and as a -D -D daemon (in the
foreground with -d, spelled -D -D and -DD, on IPv6, and forking into the background with a
pid file, its log reopened on SIGHUP, stopped with SIGTERM).
"""

from __future__ import annotations

import os
import poplib
import signal
import socket
from pathlib import Path

import pytest

from pop3helpers import (SMALL_MESSAGES, POP3, Dovecot, ScriptedServer, acp_environment, daemon,
                         message_dots, proxy_bin, recording_acp, stuffed, under_tcpserver, wait_gone)
from proxyhelpers import free_port, lab, wait_file, wait_port  # noqa: F401  (lab: fixture)

PASSWORD = Dovecot.PASSWORD
RETRIEVE = ["STAT", "LIST", "UIDL"] + [f"RETR {n}" for n in range(1, len(SMALL_MESSAGES) + 1)] + ["TOP 2 1", "QUIT"]


@pytest.fixture(scope="module")
def dovecot():
    server = Dovecot({"bob": SMALL_MESSAGES})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def direct(dovecot):
    """Dovecot's own answers to RETRIEVE."""
    with POP3(dovecot.port) as c:
        c.login("bob", PASSWORD)
        return c.dialogue(RETRIEVE)


def retrieve(port: int, user: str = "bob", host: str = "127.0.0.1", source: str | None = None) -> list[bytes]:
    with POP3(port, host, source=source) as c:
        assert c.login(user, PASSWORD) == b"+OK Logged in.\r\n"
        return c.dialogue(RETRIEVE)


def with_poplib(port: int, user: str, host: str = "127.0.0.1") -> list:
    box = poplib.POP3(host, port, timeout=10)
    box.user(user)
    box.pass_(PASSWORD)
    try:
        return [box.retr(n)[1] for n in (1, 3, 4)]  # not 2: poplib's 2048-byte line limit
    finally:
        box.quit()


def test_under_tcpserver_one_proxy_per_client(lab, dovecot, direct):
    acp = recording_acp(lab)
    server = under_tcpserver(lab, dovecot.address, "-a", acp)
    assert retrieve(server.port, source="127.0.0.3") == direct
    # The client and the interface come from the socket on standard input.
    env = acp_environment(lab)
    assert (env["PROXY_CLIENT"], env["PROXY_INTERFACE"], env["PROXY_PORT"]) == ("127.0.0.3", "127.0.0.1",
                                                                                str(server.port))
    server.wait_for(rf"session \d+ from 127\.0\.0\.3: connect from 127\.0\.0\.3:\d+ on 127\.0\.0\.1:{server.port}")
    server.wait_for(r"session \d+ from 127\.0\.0\.3: end \(quit\): user bob")
    # The inetd mode exits 0 once its session has ended.
    server.wait_for(r"tcpserver: end \d+ status 0")
    # Sessions one after the other, each its own process.
    assert retrieve(server.port) == direct
    server.wait_for(r"tcpserver: end \d+ status 0", count=2)


def test_behind_tcpproxys_exec_with_a_configuration_per_interface(lab, dovecot):
    """The manual's example: on one interface the client selects the server (-e, no server
    operand), on the other it always goes to the one server."""
    port = free_port("127.0.0.1", also=["127.0.0.2"])
    selecting, fixed = lab.dir / "selecting.log", lab.dir / "fixed.log"
    conf = lab.file("tcpproxy.conf", f"""port {port}
    interface 127.0.0.1
    exec {proxy_bin()} --log file:5,{selecting} -e
    interface 127.0.0.2
    exec {proxy_bin()} --log file:5,{fixed} {dovecot.address}
""")
    lab.tcpproxy("-f", conf, "--standalone")
    wait_port("127.0.0.1", port)
    wait_port("127.0.0.2", port)
    want = with_poplib(dovecot.port, "bob")
    assert with_poplib(port, f"bob@{dovecot.address}", "127.0.0.1") == want
    assert with_poplib(port, "bob", "127.0.0.2") == want
    assert want[0] == message_dots().split(b"\r\n")[:-1]
    wait_file(selecting, rf"login: user bob, server {dovecot.address}: granted")
    wait_file(fixed, rf"login: user bob, server {dovecot.address}: granted")
    # The fixed interface does not let the client choose: bob@server is the user name there,
    # which Dovecot refuses.
    with POP3(port, "127.0.0.2") as c:
        assert c.login("bob@127.0.0.1", PASSWORD).startswith(b"-ERR ")
    # The selecting one has no server of its own.
    with POP3(port, "127.0.0.1") as c:
        assert c.login("bob", PASSWORD).startswith(b"-ERR no server given")
    wait_file(fixed, rf"login failed: user bob@127\.0\.0\.1, server {dovecot.address}: refused by the server")


@pytest.mark.parametrize("spelling", [["-D", "-D"], ["-DD"]], ids=["-D -D", "-DD"])
def test_a_daemon_in_the_foreground_serves_sessions_side_by_side(lab, dovecot, direct, spelling):
    port = free_port()
    proc = lab.start([proxy_bin(), "-d", *spelling, f"127.0.0.1:{port}", dovecot.address], name="pop3.proxy")
    proc.wait_for(rf"listening on 127\.0\.0\.1:{port}")
    proc.wait_for(r"pop3\.proxy started \(pid \d+, \d+ event loops\)")
    # Two sessions at once, interleaved, each its own.
    a, b = POP3(port), POP3(port)
    try:
        a.login("bob", PASSWORD)
        b.login("bob", PASSWORD)
        assert a.ask("STAT") == b.ask("STAT") == direct[0]
        assert b.dialogue(RETRIEVE) == direct
        assert a.dialogue(RETRIEVE) == direct
    finally:
        a.close()
        b.close()
    proc.wait_for(r"session \d+ from 127\.0\.0\.1: end \(quit\)", count=2)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert "exiting on signal 15" in proc.text()


def test_a_daemon_on_ipv6_to_an_ipv6_server(lab):
    server = ScriptedServer([message_dots()], host="::1")
    try:
        proxy = daemon(lab, server.address, host="::1")
        with POP3(proxy.port, "::1") as c:
            assert c.login("bob", "pw") == b"+OK mailbox locked and ready\r\n"
            assert c.ask("RETR 1") == b"+OK %d octets\r\n" % len(message_dots()) + stuffed(message_dots())
        assert server.connections[0].peer[0] == "::1"
        proxy.wait_for(rf"session \d+ from ::1: login: user bob, server \[::1\]:{server.port}: granted")
        proxy.proc.signal(signal.SIGINT)
        assert proxy.proc.wait() == 0
    finally:
        server.close()


def test_a_daemon_in_the_background_with_a_pid_file_stops_on_sigterm(lab, dovecot, direct):
    port = free_port()
    pid_file, log = lab.dir / "pop3.proxy.pid", lab.dir / "pop3.proxy.log"
    starter = lab.start([proxy_bin(), "--pid-file", pid_file, "--log", f"file:5,{log}",
                         "-D", "-D", f"127.0.0.1:{port}", dovecot.address], name="pop3.proxy")
    # The command returns once the daemon is on its own.
    assert starter.wait(timeout=10) == 0, starter.text()
    text = wait_file(pid_file, r"^\d+\n?$")
    pid = int(text)
    try:
        assert pid != starter.pid
        assert Path(f"/proc/{pid}").exists()
        wait_file(log, r"pop3\.proxy started \(pid %d" % pid)
        # Not attached to the starter's terminal session: a session of its own.
        assert os.getsid(pid) != os.getsid(0)
        assert retrieve(port) == direct
        wait_file(log, r"session 1 from 127\.0\.0\.1: end \(quit\): user bob")
        # SIGHUP reopens the log: moved away, a new file takes the next lines.
        log.rename(lab.dir / "pop3.proxy.log.1")
        os.kill(pid, signal.SIGHUP)
        wait_file(log, r"SIGHUP: logs reopened")
        assert retrieve(port) == direct
        wait_file(log, r"session 2 from 127\.0\.0\.1: end \(quit\)")
        assert "session 2" not in (lab.dir / "pop3.proxy.log.1").read_text()
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)
        wait_file(log, r"exiting on signal 15")
        with pytest.raises(OSError):
            POP3(port, timeout=2)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def port_110_is_free() -> bool:
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT of an earlier run is no owner
            try:
                s.bind((address, 110))
            except OSError:
                return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="-D alone listens on port 110: root only")
def test_a_single_d_listens_on_port_110_of_every_address(lab, dovecot, direct):
    if not port_110_is_free():
        pytest.skip("port 110 is taken on this machine")
    proc = lab.start([proxy_bin(), "-d", "-D", dovecot.address], name="pop3.proxy")
    proc.wait_for(r"listening on \S+:110")
    proc.wait_for(r"pop3\.proxy started")
    assert retrieve(110) == direct
    with POP3(110, "::1") as c:
        assert c.login("bob", PASSWORD) == b"+OK Logged in.\r\n"
    proc.wait_for(r"session \d+ from ::1: login: user bob")


def test_sighup_leaves_sessions_alone_and_sigterm_ends_the_daemon_with_sessions_open(lab, dovecot, direct):
    proxy = daemon(lab, dovecot.address)
    with POP3(proxy.port) as open_session:
        open_session.login("bob", PASSWORD)
        proxy.proc.signal(signal.SIGHUP)
        proxy.wait_for(r"SIGHUP: logs reopened")
        # The session from before goes on; a new one is served.
        assert open_session.ask("STAT") == direct[0]
        assert retrieve(proxy.port) == direct
        proxy.proc.signal(signal.SIGTERM)
        assert proxy.proc.wait() == 0
        # The open session's client is not left hanging.
        assert open_session.rest(timeout=5)[1] in ("eof", "reset")
