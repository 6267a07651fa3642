"""Every option of pop3.proxy, end to end against scripted servers on loopback: the access
control program (-a: its environment, grant, deny with its message, killed when it hangs),
-v, proxy authentication, server selection (-e, -c, -s), the client log (-l), the source
address (-q), -m, -u, --rules (compiled with our tcprules), --log, --help, and the command
lines that must be refused.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import pytest

from pop3helpers import (POP3, ScriptedServer, acp_environment, daemon, message_dots, proc_status, proxy_bin,
                         recording_acp, under_tcpserver, wait_gone)
from proxyhelpers import bastion_bin, free_port, is_root, lab, wait_file  # noqa: F401  (lab: fixture)

MESSAGES = [message_dots()]


@pytest.fixture
def servers():
    made: list[ScriptedServer] = []

    def make(*args, **kw) -> ScriptedServer:
        server = ScriptedServer(MESSAGES, *args, **kw)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def login(proxy, user: str, password: str = "pw", source: str | None = None) -> tuple[POP3, bytes]:
    """USER and PASS through `proxy` (a Daemon, or a port): the client and PASS's answer."""
    c = POP3(proxy, source=source) if isinstance(proxy, int) else proxy.client(source=source)
    assert c.command(f"USER {user}") == b"+OK password required\r\n"
    return c, c.command(f"PASS {password}")


GRANTED = b"+OK mailbox locked and ready\r\n"


# MARK: - The access control program

def test_the_access_control_program_gets_the_manuals_variables_and_grants(lab, servers):
    server = servers()
    acp = recording_acp(lab, body='echo "checked $PROXY_USERNAME from $PROXY_CLIENT" >&2')
    proxy = daemon(lab, server.address, "-a", acp, host="127.0.0.4",
                   env=lab.env({"FROM_THE_PROXYS_ENVIRONMENT": "kept"}))
    c, answer = login(proxy, "bob", source="127.0.0.3")
    with c:
        assert answer == GRANTED
        assert c.ask("STAT") == b"+OK 1 %d\r\n" % len(MESSAGES[0])
    env = acp_environment(lab)
    assert {k: v for k, v in env.items() if k.startswith("PROXY_")} == {
        "PROXY_INTERFACE": "127.0.0.4", "PROXY_PORT": str(proxy.port), "PROXY_CLIENT": "127.0.0.3",
        "PROXY_SERVER": "127.0.0.1", "PROXY_SERVERPORT": str(server.port), "PROXY_SERVERLOGIN": "bob",
        "PROXY_USERNAME": "bob", "PROXY_PASSWD": "pw"}
    assert env["FROM_THE_PROXYS_ENVIRONMENT"] == "kept"
    # Its standard error goes to the log.
    proxy.wait_for(r"access control program: checked bob from 127\.0\.0\.3")
    assert server.lines(0)[:2] == [b"USER bob\r\n", b"PASS pw\r\n"]


def test_proxy_authentication_splits_at_the_first_colon(lab, servers):
    server = servers(password=b"p:w")
    acp = recording_acp(lab)
    proxy = daemon(lab, server.address, "-a", acp)
    c, answer = login(proxy, "alice:bob", "apw:p:w")
    with c:
        assert answer == GRANTED
    env = acp_environment(lab)
    assert (env["PROXY_USERNAME"], env["PROXY_PASSWD"], env["PROXY_SERVERLOGIN"]) == ("alice", "apw", "bob")
    assert server.lines(0)[:2] == [b"USER bob\r\n", b"PASS p:w\r\n"]


def test_proxy_authentication_with_server_selection(lab, servers):
    default, chosen = servers(), servers()
    acp = recording_acp(lab)
    proxy = daemon(lab, default.address, "-e", "-a", acp)
    c, answer = login(proxy, f"alice:bob@{chosen.address}", "apw:pw")
    with c:
        assert answer == GRANTED
    env = acp_environment(lab)
    assert (env["PROXY_USERNAME"], env["PROXY_PASSWD"], env["PROXY_SERVERLOGIN"]) == ("alice", "apw", "bob")
    assert (env["PROXY_SERVER"], env["PROXY_SERVERPORT"]) == ("127.0.0.1", str(chosen.port))
    assert chosen.lines(0)[:2] == [b"USER bob\r\n", b"PASS pw\r\n"] and default.accepted == 0


@pytest.mark.parametrize("status,said,answer", [
    (1, r"printf '%s\r\n' '-ERR you shall not pass'", b"-ERR you shall not pass\r\n"),
    (3, "", b"-ERR access denied\r\n"),
], ids=["with its message", "silent"])
def test_the_access_control_program_denies(lab, servers, status, said, answer):
    server = servers()
    acp = recording_acp(lab, status=status, body=said)
    proxy = daemon(lab, server.address, "-a", acp)
    c, first = login(proxy, "bob")
    with c:
        assert first + c.rest()[0] == answer
    assert server.accepted == 0
    proxy.wait_for(r"login denied: user bob, server 127\.0\.0\.1:%d: access control program" % server.port)
    proxy.wait_for(r"end \(access denied\)")


def test_a_hanging_access_control_program_is_killed_after_the_timeout(lab, servers):
    server = servers()
    pid_file = lab.dir / "acp.pid"
    acp = lab.script("acp", f'#!/bin/sh\necho $$ > "{pid_file}.tmp"; mv "{pid_file}.tmp" "{pid_file}"\nexec sleep 60\n')
    proxy = daemon(lab, server.address, "-a", acp, "-t", "1")
    c = proxy.client()
    with c:
        assert c.command("USER bob").startswith(b"+OK")
        c.send(b"PASS pw\r\n")
        started = time.monotonic()
        rest, end = c.rest(timeout=10)
        assert end == "eof" and not rest.startswith(b"+OK"), rest
        assert time.monotonic() - started < 5
    pid = int(wait_file(pid_file, r"^\d+$"))
    wait_gone(pid)
    proxy.wait_for(r"access control program timed out: killed")
    assert server.accepted == 0


def test_an_access_control_program_that_cannot_run_denies(lab, servers):
    server = servers()
    missing = lab.dir / "no-such-acp"
    proxy = daemon(lab, server.address, "-a", missing)
    c, answer = login(proxy, "bob")
    with c:
        assert answer + c.rest()[0] == b"-ERR access denied\r\n"
    assert server.accepted == 0
    proxy.wait_for(r"login denied: access control program %s" % re.escape(str(missing)))


def test_v_changes_the_variables_prefix(lab, servers):
    server = servers()
    acp = recording_acp(lab)
    proxy = daemon(lab, server.address, "-a", acp, "-v", "POP_")
    c, answer = login(proxy, "bob")
    c.close()
    assert answer == GRANTED
    env = acp_environment(lab)
    assert (env["POP_CLIENT"], env["POP_SERVERLOGIN"], env["POP_SERVERPORT"]) == ("127.0.0.1", "bob", str(server.port))
    assert set(k for k in env if k.startswith("POP_")) == {
        "POP_INTERFACE", "POP_PORT", "POP_CLIENT", "POP_SERVER", "POP_SERVERPORT", "POP_SERVERLOGIN",
        "POP_USERNAME", "POP_PASSWD"}
    assert not [k for k in env if k.startswith("PROXY_")]


# MARK: - Server selection

def test_e_lets_the_client_name_the_server(lab, servers):
    default, other = servers(), servers()
    proxy = daemon(lab, default.address, "-e")
    for user, server, index, login_name in [("bob", default, 0, b"bob"),
                                            (f"bob@{other.address}", other, 0, b"bob"),
                                            (f"joe@example.org@{other.address}", other, 1, b"joe@example.org")]:
        c, answer = login(proxy, user)
        c.close()
        assert answer == GRANTED, user
        assert server.lines(index)[0] == b"USER " + login_name + b"\r\n"
    assert (default.accepted, other.accepted) == (1, 2)


def test_without_e_the_user_name_is_not_split(lab, servers):
    server = servers()
    proxy = daemon(lab, server.address)
    c, answer = login(proxy, "bob@127.0.0.1")
    c.close()
    assert answer == GRANTED
    assert server.lines(0)[0] == b"USER bob@127.0.0.1\r\n"


@pytest.mark.parametrize("operand", [["-"], []], ids=["-", "no operand"])
def test_e_without_a_default_server_needs_one_named(lab, servers, operand):
    server = servers()
    proxy = daemon(lab, operand[0] if operand else None, "-e")
    c, answer = login(proxy, "bob")
    with c:
        assert answer.startswith(b"-ERR no server given")
        # A failed login: the client may try again, naming one.
        assert c.login(f"bob@{server.address}", "pw") == GRANTED
    proxy.wait_for(r"login failed: no server given")


def test_c_sets_the_delimiters_and_the_last_one_splits(lab, servers):
    default, other = servers(), servers()
    proxy = daemon(lab, default.address, "-e", "-c", "%#")
    for user, login_name in [(f"bob%{other.address}", b"bob"), (f"joe@example.org#{other.address}", b"joe@example.org"),
                             (f"a%b#{other.address}", b"a%b")]:
        c, answer = login(proxy, user)
        c.close()
        assert answer == GRANTED, user
        assert other.lines(-1)[0] == b"USER " + login_name + b"\r\n"
    # @ is no delimiter any more: the whole name goes to the default server.
    c, answer = login(proxy, "bob@127.0.0.1")
    c.close()
    assert answer == GRANTED and default.lines(0)[0] == b"USER bob@127.0.0.1\r\n"


def test_s_restricts_the_servers_with_wildcards(lab, servers):
    a, b, c_ = servers(), servers(), servers()
    proxy = daemon(lab, a.address, "-e", "-s", f"127.0.0.?:{a.port},LocalHost:{b.port},127.*.1:{c_.port}*")
    allowed = [(f"bob@127.0.0.1:{a.port}", a), (f"bob@localhost:{b.port}", b), (f"bob@127.0.0.1:{c_.port}", c_)]
    for user, server in allowed:
        before = server.accepted
        c, answer = login(proxy, user)
        c.close()
        assert answer == GRANTED, user
        assert server.accepted == before + 1
    refused = [f"bob@127.0.0.1:{b.port}",       # only by name on the list
               f"bob@127.0.0.12:{a.port}",      # ? is one character
               f"bob@localhost:{a.port}",       # no lookup: a name is not the address
               f"bob@127.0.0.1"]                # an entry with a port needs the port
    for user in refused:
        c, answer = login(proxy, user)
        c.close()
        assert answer.startswith(b"-ERR server ") and b"is not allowed" in answer, (user, answer)
    assert (a.accepted, b.accepted, c_.accepted) == (1, 1, 1)
    proxy.wait_for(r"login failed: server 127\.0\.0\.1 is not allowed")


# MARK: - The client log (-l)

def test_l_writes_the_last_login_of_each_client(lab, servers):
    server = servers()
    clients = lab.dir / "clients"
    clients.mkdir(mode=0o777)
    clients.chmod(0o777)
    proxy = daemon(lab, server.address, "-l", clients)
    before = int(time.time())
    for user in ["bob", "carol"]:
        c, answer = login(proxy, user, source="127.0.0.3")
        c.close()
        assert answer == GRANTED
        text = wait_file(clients / "127.0.0.3", rf"^\d+ 127\.0\.0\.3 {user} 127\.0\.0\.1\n\Z")
        epoch = int(text.split()[0])
        assert before <= epoch <= time.time() + 1
    # Replaced, not appended: one line, the last login's.
    assert (clients / "127.0.0.3").read_text().count("\n") == 1
    # A failed login writes nothing.
    c, answer = login(proxy, "bob", "wrong", source="127.0.0.5")
    c.close()
    assert answer.startswith(b"-ERR")
    proxy.wait_for(r"session \d+ from 127\.0\.0\.5: end \(")
    assert sorted(p.name for p in clients.iterdir()) == ["127.0.0.3"]


def test_l_with_an_unwritable_directory_is_logged_and_the_session_goes_on(lab, servers):
    server = servers()
    not_a_dir = lab.file("plain-file", "")
    proxy = daemon(lab, server.address, "-l", not_a_dir / "clients")
    c, answer = login(proxy, "bob")
    with c:
        assert answer == GRANTED
        assert c.ask("RETR 1").startswith(b"+OK")
    proxy.wait_for(r"unable to write %s/clients/127\.0\.0\.1" % re.escape(str(not_a_dir)))


# MARK: - -q, -m

@pytest.mark.parametrize("source", ["127.0.0.2", None], ids=["-q 127.0.0.2", "without -q"])
def test_q_sets_the_source_address_towards_the_server(lab, servers, source):
    server = servers()
    proxy = daemon(lab, server.address, *(["-q", source] if source else []))
    c, answer = login(proxy, "bob")
    c.close()
    assert answer == GRANTED
    assert server.connections[0].peer[0] == (source or "127.0.0.1")


def test_m_drops_the_per_command_lines(lab, servers):
    logs = {}
    for quiet in (False, True):
        server = servers()
        proxy = daemon(lab, server.address, *(["-m"] if quiet else []))
        c, answer = login(proxy, "bob")
        with c:
            c.dialogue(["STAT", "LIST", "RETR 1", "XTND"])
            c.ask("QUIT")
        proxy.ended()
        logs[quiet] = proxy.proc.text()
    assert re.search(r"command STAT\n.*command LIST\n.*command RETR 1\n", logs[False], re.S)
    assert "command STAT" not in logs[True] and "command RETR" not in logs[True]
    for text in logs.values():
        # Still there: the start, the login, the refused command, the end.
        for pattern in [r"session 1 from 127\.0\.0\.1: connect from", r"login: user bob, server \S+: granted",
                        r"command XTND refused", r"end \(quit\): user bob"]:
            assert re.search(pattern, text), pattern
    assert len(logs[True].splitlines()) < len(logs[False].splitlines())


# MARK: - -u

needs_root = pytest.mark.skipif(not is_root(), reason="-u applies only when started as root")


def privileged_port() -> int:
    for port in range(990, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.fail("no free port below 1024 on 127.0.0.1")


def ids_of(pid: int) -> tuple[list[str], list[str], list[str]]:
    status = proc_status(pid)
    return status["Uid"].split(), status["Gid"].split(), status["Groups"].split()


@needs_root
def test_u_the_daemon_binds_as_root_then_serves_as_the_user(lab, servers):
    server = servers()
    acp = recording_acp(lab)
    port = privileged_port()
    proxy = daemon(lab, server.address, "-u", "mail", "-a", acp, port=port)
    uids, gids, groups = ids_of(proxy.pid)
    assert (uids, gids) == (["8"] * 4, ["8"] * 4) and groups in ([], ["8"])
    c, answer = login(proxy, "bob")
    c.close()
    assert answer == GRANTED
    env = acp_environment(lab)
    assert (env["ACP_UID"], env["ACP_GID"], env["ACP_GROUPS"]) == ("8", "8", "8")


@needs_root
def test_u_defaults_to_nobody(lab, servers):
    server = servers()
    proxy = daemon(lab, server.address)
    assert ids_of(proxy.pid)[:2] == (["65534"] * 4, ["65534"] * 4)
    assert ids_of(proxy.pid)[2] in ([], ["65534"])


@needs_root
def test_u_under_tcpserver_serves_as_the_user(lab, servers):
    server = servers()
    acp = recording_acp(lab)
    proxy = under_tcpserver(lab, server.address, "-u", "mail", "-a", acp)
    c, answer = login(proxy, "bob")
    with c:
        assert answer == GRANTED
    env = acp_environment(lab)
    assert (env["ACP_UID"], env["ACP_GID"], env["ACP_GROUPS"]) == ("8", "8", "8")


# MARK: - --rules

def compile_rules(lab, text: str):
    rules = lab.dir / "rules.cdb"
    run = subprocess.run([bastion_bin("tcprules"), rules, lab.dir / "rules.tmp"], input=text.encode(),
                         capture_output=True, timeout=10)
    assert run.returncode == 0, run.stderr
    rules.chmod(0o644)
    return rules


def test_rules_deny_before_the_greeting_and_set_variables_for_the_acp(lab, servers):
    server = servers()
    rules = compile_rules(lab, '127.0.0.3:deny\n127.0.0.1:allow,COLOUR="blue",PROXY_USERNAME="forged"\n')
    acp = recording_acp(lab)
    proxy = daemon(lab, server.address, "--rules", rules, "-a", acp)
    with POP3(proxy.port, source="127.0.0.3", greeting=False) as c:
        assert c.rest() == (b"", "eof")
    proxy.wait_for(r"session \d+ from 127\.0\.0\.3: denied by rule")
    c, answer = login(proxy, "bob")
    c.close()
    assert answer == GRANTED
    env = acp_environment(lab)
    assert env["COLOUR"] == "blue"
    # A rule cannot forge what the proxy itself tells the program.
    assert env["PROXY_USERNAME"] == "bob"
    assert server.accepted == 1


# MARK: - --log

def test_log_targets_replace_standard_error_and_keep_their_levels(lab, servers):
    server = servers()
    notice, errors = lab.dir / "notice.log", lab.dir / "errors.log"
    # Levels as tcpproxy's -L: 0 off to 5 debug, sessions at 3 (notice), warnings at 2.
    proxy = daemon(lab, server.address, "--log", f"file:5,{notice}", "--log", f"file:2,{errors}",
                   "--log", "stdout:5")
    c, answer = login(proxy, "bob")
    c.close()
    assert answer == GRANTED
    wait_file(notice, r"session 1 from 127\.0\.0\.1: end \(client closed the connection\)")
    proxy.wait_for(r"session 1 from 127\.0\.0\.1: end \(client closed the connection\)")
    # Once the notice lines are out, the level-2 file has none of them.
    assert "session 1" not in errors.read_text()
    assert proxy.proc.count(r"session 1 from") == len(re.findall(r"session 1 from", notice.read_text()))


# MARK: - The command line

def test_help_lists_the_options(lab):
    run = subprocess.run([proxy_bin(), "--help"], capture_output=True, timeout=10)
    assert run.returncode == 0 and run.stderr == b""
    text = run.stdout.decode()
    assert text.startswith("usage: pop3.proxy [options] server")
    for option in ["-a acp", "-c chars", "-e ", "-l dir", "-m ", "-q srcip", "-s list", "-t seconds", "-u user",
                   "-v prefix", "-z ", "-D, -DD", "-d ", "--clamd", "--rules", "--pid-file", "--log", "--scan-limit",
                   "--no-scan-header", "--help"]:
        assert option in text, option


BAD = [
    (["-x", "127.0.0.1"], "unknown option -x"),
    (["--frobnicate", "127.0.0.1"], "unknown option --frobnicate"),
    (["-a"], "-a needs an argument"),
    (["-t", "soon", "127.0.0.1"], '-t needs a number of seconds'),
    (["-t", "-5", "127.0.0.1"], '-t needs a number of seconds'),
    (["-q", "not-an-address", "127.0.0.1"], "-q needs an IP address"),
    (["-v", "BAD-PREFIX", "127.0.0.1"], "-v needs a variable prefix"),
    ([], "no server given"),
    (["-"], "server - (none) needs -e"),
    (["-s", "127.0.0.1", "127.0.0.1"], "-s lists the servers a client may select: it needs -e"),
    (["127.0.0.1", "127.0.0.2"], 'unexpected argument "127.0.0.2"'),
    (["127.0.0.1:0"], "the port must be a number from 1 to 65535"),
    (["127.0.0.1:pop3x"], "the port must be a number from 1 to 65535"),
    (["-D", "-D"], "-D -D needs the address to listen on"),
    (["-D", "-D", "127.0.0.1:70000", "127.0.0.1"], "the port must be a number from 1 to 65535"),
    (["--log", "nowhere", "127.0.0.1"], 'log target "nowhere"'),
    (["--scan-limit-pass", "127.0.0.1"], "--scan-limit-pass needs --scan-limit"),
    (["--scan-limit", "lots", "127.0.0.1"], "--scan-limit needs a size in bytes"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_a_bad_command_line_exits_1_naming_the_problem(argv, message):
    run = subprocess.run([proxy_bin(), *argv], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    assert run.returncode == 1
    assert run.stdout == b""
    first = run.stderr.decode().splitlines()[0]
    assert first.startswith("pop3.proxy: ") and message in first, run.stderr


@needs_root
@pytest.mark.parametrize("user,message", [("no-such-user-here", "-u: unknown user no-such-user-here"),
                                          ("root", "-u root: pop3.proxy never serves as root")])
def test_u_refuses_an_unknown_user_and_root(user, message):
    run = subprocess.run([proxy_bin(), "-u", user, "-d", "-D", "-D", f"127.0.0.1:{free_port()}", "127.0.0.1"],
                         capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    assert run.returncode == 1 and message in run.stderr.decode()


def test_a_daemon_whose_port_is_taken_exits_1(lab):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = subprocess.run([proxy_bin(), "-d", "-D", "-D", f"127.0.0.1:{port}", "127.0.0.1"],
                             capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    assert run.returncode == 1
    assert run.stderr.decode().startswith("pop3.proxy: ") and f"127.0.0.1:{port}" in run.stderr.decode()


def test_without_d_or_a_socket_the_inetd_mode_says_how_to_start_it(lab):
    run = subprocess.run([proxy_bin(), "127.0.0.1"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    assert run.returncode == 1
    assert b"standard input is not a connected socket" in run.stderr


def test_t_0_means_no_timeout_as_its_usage_message_says(lab, servers):
    """-t 0: no inactivity timeout (this test found sessions ended after 1 s: fixed in e74cd23,
    which also put it in the manual)."""
    bad = subprocess.run([proxy_bin(), "-t", "x", "127.0.0.1"], capture_output=True, timeout=10)
    assert b"(0 for none)" in bad.stderr
    server = servers()
    proxy = daemon(lab, server.address, "-t", "0")
    c, answer = login(proxy, "bob")
    with c:
        assert answer == GRANTED
        # Idle for twice what the proxy makes of 0: still there.
        assert c.rest(timeout=2.2) == (b"", "timeout")
        assert c.command("NOOP") == b"+OK\r\n"


LOG_MAIL, LOG_NOTICE = 2 << 3, 5


@pytest.mark.parametrize("mode", ["inetd", "daemon"])
def test_the_default_log_is_syslog_facility_mail_level_notice(lab, servers, mode):
    """What would reach syslogd is read from a datagram socket of the test's own
    ($BASTION_SYSLOG_SOCKET instead of /dev/log)."""
    server = servers()
    path = lab.dir / "log.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    path.chmod(0o777)  # the proxy serves as nobody
    sink.settimeout(5)
    env = lab.env({"BASTION_SYSLOG_SOCKET": str(path)})
    port = free_port()
    pid = None
    try:
        if mode == "inetd":
            proc = lab.start([bastion_bin("tcpserver"), "-v", "127.0.0.1", str(port), proxy_bin(), server.address],
                             env=env, name="tcpserver")
            proc.wait_for(r"tcpserver: status: 0/")
        else:
            starter = lab.start([proxy_bin(), "--pid-file", lab.dir / "pid", "-D", "-D", f"127.0.0.1:{port}",
                                 server.address], env=env, name="pop3.proxy")
            assert starter.wait() == 0
            pid = int(wait_file(lab.dir / "pid", r"^\d+$"))
        c, answer = login(port, "bob")
        c.close()
        assert answer == GRANTED
        lines = []
        deadline = time.monotonic() + 5
        while not any(b": end (" in line for line in lines):
            assert time.monotonic() < deadline, lines
            lines.append(sink.recv(4096))
    finally:
        sink.close()
        if pid is not None:
            os.kill(pid, 15)
            wait_gone(pid)
    pattern = rb"<%d>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d pop3\.proxy\[\d+\]: " % (LOG_MAIL | LOG_NOTICE)
    for line in lines:
        assert re.match(pattern, line), line
    assert any(re.search(rb"session \d+ from 127\.0\.0\.1: login: user bob, server 127\.0\.0\.1:%d: granted$"
                         % server.port, line) for line in lines), lines



@needs_root
def test_a_server_without_a_port_is_on_port_110(lab):
    try:
        server = ScriptedServer(MESSAGES, port=110)
    except OSError as e:
        pytest.skip(f"port 110 of 127.0.0.1 is taken: {e}")
    try:
        acp = recording_acp(lab)
        proxy = daemon(lab, "127.0.0.1", "-a", acp)
        c, answer = login(proxy, "bob")
        c.close()
        assert answer == GRANTED and server.accepted == 1
        assert acp_environment(lab)["PROXY_SERVERPORT"] == "110"
        proxy.wait_for(r"login: user bob, server 127\.0\.0\.1:110: granted")
    finally:
        server.close()
