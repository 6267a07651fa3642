"""pop3.proxy's protocol gateway against a scripted POP3 server of the tests' own, for what a
real server cannot show: answers that are neither +OK nor -ERR, which commands reach the
server (and in which form), the two limits of five, pipelined commands, a server that
stalls.

The server records every line it receives; "did not reach the server" is checked by sending
a command that does reach it afterwards and waiting for that one: the proxy keeps the order.
"""

from __future__ import annotations

import select
import socket
import time

import pytest

from pop3helpers import POP3, ScriptedServer, crlf, daemon, message_8bit, message_bare, message_dots
from proxyhelpers import free_port, lab  # noqa: F401  (lab: fixture)

LOOKALIKES = crlf("From: x@example.org\nSubject: status lines in a body\n\n+OK not a status\n-ERR nor this\n"
                  "HELLO\n.\n")
# The scripted server sends bare CR and LF as they are (Dovecot normalises the LF): a `.`
# after a bare LF is no end of the answer.
MESSAGES = [message_dots(), LOOKALIKES, message_8bit(), message_bare()]


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


def logged_in(proxy, user: str = "bob", password: str = "pw") -> POP3:
    c = proxy.client()
    assert c.login(user, password).startswith(b"+OK"), "login through the proxy"
    return c


# MARK: - What reaches the server

FORWARDED = ["stat", "list", "LIST 2", "uidl", "Uidl 3", "retr 1", "RETR 2", "top 1 0", "TOP 3 2", "RETR 4", "dele 2",
             "LIST 2", "rset", "last", "noop", "RETR 9", "user carol", "quit"]


def test_the_manuals_commands_reach_the_server_in_canonical_form_one_at_a_time(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with POP3(server.port) as c:
        c.login("bob", "pw")
        direct = c.dialogue(FORWARDED)
    with logged_in(proxy) as c:
        proxied = c.dialogue(FORWARDED)
        assert c.rest()[0] == b""
    assert proxied == direct
    got = server.lines(-1)
    # The keyword in capitals, the arguments as they were.
    canonical = [(c.split(" ", 1)[0].upper() + c[len(c.split(" ", 1)[0]):] + "\r\n").encode() for c in FORWARDED]
    assert got == [b"USER bob\r\n", b"PASS pw\r\n"] + canonical
    assert not server.connections[-1].ahead, "the proxy sent a command before the previous answer"
    # The body lines that look like status lines were relayed as the body they are.
    assert b"\r\n+OK not a status\r\n-ERR nor this\r\nHELLO\r\n..\r\n.\r\n" in proxied[6]
    assert proxied[9].endswith(b"two\nline feed\r\ncr before\r\r\ndot after lf\n.\r\ntrailing cr\r\r\nend\r\n.\r\n")


# Groups of four (the fifth would end the session): each answered -ERR by the proxy itself.
REFUSED = [
    ["APOP bob c4c9334bac560ecc979e58001b3e22fb", "AUTH PLAIN", "XTND XMIT", "STLS"],
    ["garbage", "UTF8", "HELO example.org", "\x01\x02\x7f"],
    ["RETR", "RETR x", "RETR 0", "RETR 1 2"],
    ["RETR -1", "RETR 99999999999", "RETR  1", "RETR 1 "],
    ["DELE", "DELE 0", "TOP 1", "TOP 1 x"],
    ["TOP 0 1", "TOP 1 2 3", "LIST 1 2", "LIST x"],
    ["UIDL 0", "UIDL 1 1", "STAT 1", "NOOP x"],
    ["RSET now", "QUIT now", "LAST 1", "LIST " + "1" * 41],
    ["", " ", "RETR\t1", "PASS"],
]


@pytest.mark.parametrize("commands", REFUSED, ids=lambda c: "|".join(c).encode("unicode_escape").decode())
def test_unsupported_and_malformed_commands_never_reach_the_server(lab, servers, commands):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        for command in commands:
            assert c.command(command).startswith(b"-ERR "), command
        assert c.command("NOOP") == b"+OK\r\n"
        assert server.wait_line(b"NOOP\r\n")[2:] == [b"NOOP\r\n"]
    proxy.wait_for(r"command \S* ?refused", count=len(commands))
    assert proxy.proc.count(r"command \S* ?refused") == len(commands)


def test_capa_is_answered_by_the_proxy_and_is_not_counted(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    capabilities = b"+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.\r\n"
    with proxy.client() as c:
        assert c.ask("CAPA") == capabilities
        assert c.login("bob", "pw").startswith(b"+OK")
        for _ in range(6):
            assert c.ask("capa") == capabilities
        assert c.command("NOOP") == b"+OK\r\n"
    assert server.wait_line(b"NOOP\r\n")[2:] == [b"NOOP\r\n"]


def test_the_server_is_reached_only_after_pass(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with proxy.client() as c:
        assert c.command("USER bob") == b"+OK password required\r\n"
        assert c.ask("CAPA").startswith(b"+OK")
        assert c.command("STAT").startswith(b"-ERR")  # not logged in
        assert server.accepted == 0
        assert c.command("PASS pw") == b"+OK mailbox locked and ready\r\n"
        assert server.lines(0) == [b"USER bob\r\n", b"PASS pw\r\n"]


# MARK: - Answers that are not POP3

NOT_POP3 = [b"HELLO there\r\n", b"+ok 1 2\r\n", b"OK 1 2\r\n", b"\r\n", b"* OK IMAP4rev1\r\n", b" +OK\r\n",
            b"ERR\r\n"]


@pytest.mark.parametrize("answer", NOT_POP3, ids=lambda a: a.decode().strip() or "empty")
def test_an_answer_neither_ok_nor_err_ends_the_session(lab, servers, answer):
    server = servers(MESSAGES, answers={b"STAT": answer})
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        assert c.ask("LIST 1") == b"+OK 1 %d\r\n" % len(MESSAGES[0])
        c.send(b"STAT\r\nNOOP\r\n")
        rest, end = c.rest()
    # Not relayed: the client gets at most one -ERR line, then the end.
    assert end == "eof"
    assert rest == b"" or (rest.startswith(b"-ERR ") and rest.count(b"\n") == 1), rest
    proxy.wait_for(r"server answered with something that is not POP3")
    proxy.wait_for(r"end \(server protocol error\): user bob")
    server.wait_closed()
    assert server.lines()[-1] == b"STAT\r\n"


@pytest.mark.parametrize("phase", ["greeting", "USER", "PASS"])
def test_a_login_answer_neither_ok_nor_err_ends_the_session(lab, servers, phase):
    if phase == "greeting":
        server = servers(MESSAGES, greeting=b"* OK IMAP4rev1 ready\r\n")
    else:
        server = servers(MESSAGES, answers={phase.encode(): b"220 smtp.example.org ESMTP\r\n"})
    proxy = daemon(lab, server.address)
    with proxy.client() as c:
        assert c.command("USER bob").startswith(b"+OK")
        c.send(b"PASS pw\r\n")
        rest, end = c.rest()
    assert end == "eof" and not rest.startswith(b"+OK") and b"220" not in rest and b"IMAP" not in rest
    proxy.wait_for(r"server answered with something that is not POP3: (\* OK IMAP4rev1 ready|220 smtp)")
    server.wait_closed()


def test_a_server_that_closes_mid_session_gets_an_err_to_the_client(lab, servers):
    server = servers(MESSAGES, answers={b"STAT": lambda s, conn, words: None})
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        assert c.command("STAT") == b"-ERR server closed the connection\r\n"
        assert c.rest() == (b"", "eof")
    proxy.wait_for(r"end \(server closed the connection\)")


# MARK: - The limits of five, counted apart

def test_the_fifth_unsupported_command_ends_the_session(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        for n in range(4):
            assert c.command(f"XTND {n}") == b"-ERR unsupported command\r\n"
        assert c.command("NOOP") == b"+OK\r\n"
        assert c.command("XTND 5") == b"-ERR too many unsupported commands\r\n"
        assert c.rest() == (b"", "eof")
    proxy.wait_for(r"end \(too many unsupported commands\)")
    assert b"XTND" not in b"".join(server.lines())


def test_the_fifth_unsupported_command_before_the_login_ends_it_without_a_server(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with proxy.client() as c:
        for n in range(4):
            assert c.command("APOP bob 0123456789abcdef").startswith(b"-ERR")
        assert c.command("AUTH") == b"-ERR too many unsupported commands\r\n"
        assert c.rest() == (b"", "eof")
    assert server.accepted == 0


def test_the_fifth_failed_login_ends_the_session(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with proxy.client() as c:
        for n in range(4):
            assert c.login("bob", f"wrong{n}").startswith(b"-ERR "), n
        answer = c.login("bob", "wrong5")
        assert answer.startswith(b"-ERR ") and b"too many failed logins" in answer
        assert c.rest() == (b"", "eof")
    assert server.accepted == 5
    proxy.wait_for(r"end \(too many failed logins\)")
    refused = r"login failed: user bob, server \S+: refused by the server: -ERR invalid password"
    proxy.wait_for(refused, count=5)
    assert proxy.proc.count(refused) == 5


def test_failed_logins_and_unsupported_commands_are_counted_apart(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with proxy.client() as c:
        for n in range(4):
            assert c.login("bob", f"wrong{n}").startswith(b"-ERR ")
            assert c.command(f"XTND {n}") == b"-ERR unsupported command\r\n"
        # Four of each: neither limit is reached, and the login goes through.
        assert c.login("bob", "pw") == b"+OK mailbox locked and ready\r\n"
        assert c.ask("STAT") == b"+OK %d %d\r\n" % (len(MESSAGES), sum(map(len, MESSAGES)))
        # The unsupported commands of the session go on counting: this is the fifth.
        assert c.command("XTND 5") == b"-ERR too many unsupported commands\r\n"
        assert c.rest() == (b"", "eof")


# MARK: - Pipelining

def test_pipelined_commands_in_one_segment_are_handled_in_order(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    commands = ["STAT", "LIST", "RETR 1", "XTND x", "TOP 2 1", "UIDL", "NOOP", "RETR 3", "CAPA", "DELE 1", "QUIT"]
    with POP3(server.port) as c:
        c.login("bob", "pw")
        direct = c.dialogue(commands)
    with proxy.client() as c:
        # The login and every command in one segment.
        c.send("".join(f"{x}\r\n" for x in ["USER bob", "PASS pw"] + commands))
        assert c.line() == b"+OK password required\r\n"
        assert c.line() == b"+OK mailbox locked and ready\r\n"
        proxied = [c.answer(x) for x in commands]
        assert c.rest() == (b"", "eof")
    assert proxied[3] == b"-ERR unsupported command\r\n"
    assert proxied[8] == b"+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.\r\n"
    for i, (want, got) in enumerate(zip(direct, proxied)):
        if i not in (3, 8):
            assert got == want, commands[i]
    assert server.lines()[2:] == [f"{x}\r\n".encode() for x in commands if x not in ("XTND x", "CAPA")]
    assert not server.connections[-1].ahead


def test_pipelined_commands_before_a_half_close_are_all_answered(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    commands = ["STAT", "RETR 1", "QUIT"]
    with POP3(server.port) as c:
        c.login("bob", "pw")
        direct = c.dialogue(commands)
    with proxy.client() as c:
        c.send("".join(f"{x}\r\n" for x in ["USER bob", "PASS pw"] + commands))
        c.sock.shutdown(socket.SHUT_WR)
        rest, end = c.rest()
    assert end == "eof"
    assert rest == b"+OK password required\r\n+OK mailbox locked and ready\r\n" + b"".join(direct)
    assert server.wait_line(b"QUIT\r\n")[-1] == b"QUIT\r\n"


# MARK: - The timeout (-t)

def test_a_server_that_stalls_gets_the_timeout(lab, servers):
    server = servers(MESSAGES)
    server.answers[b"RETR"] = server.stall()
    proxy = daemon(lab, server.address, "-t", "1")
    with logged_in(proxy) as c:
        c.send(b"RETR 1\r\n")
        started = time.monotonic()
        rest, end = c.rest(timeout=10)
        waited = time.monotonic() - started
    assert end == "eof" and b"+OK" not in rest, rest
    assert 0.9 <= waited < 5, waited
    proxy.wait_for(r"end \(timeout after 1 s of inactivity\): user bob")
    server.wait_closed()


def test_a_server_that_never_greets_gets_the_timeout(lab, servers):
    server = servers(MESSAGES, greeting=b"")
    proxy = daemon(lab, server.address, "-t", "1")
    with proxy.client() as c:
        assert c.command("USER bob").startswith(b"+OK")
        c.send(b"PASS pw\r\n")
        rest, end = c.rest(timeout=10)
    assert end == "eof" and not rest.startswith(b"+OK")
    proxy.wait_for(r"end \(timeout after 1 s of inactivity\)")
    server.wait_closed()


def test_an_idle_client_gets_the_timeout_but_an_active_one_does_not(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address, "-t", "1")
    with logged_in(proxy) as idle, logged_in(proxy) as active:
        # Inactivity, not the session's age: a NOOP every 0.3 s keeps the active one for
        # 2.5 s, while the idle one ends after 1 s.
        started = time.monotonic()
        idle_ended = None
        while time.monotonic() - started < 2.5:
            assert active.command("NOOP") == b"+OK\r\n"
            if select.select([idle.sock], [], [], 0.3)[0] and idle_ended is None:
                assert idle.sock.recv(100) == b""
                idle_ended = time.monotonic() - started
        assert idle_ended is not None and 0.9 <= idle_ended < 2.5, idle_ended
        assert active.command("NOOP") == b"+OK\r\n"
    proxy.wait_for(r"end \(timeout after 1 s of inactivity\): user bob")
    assert proxy.proc.count(r"end \(timeout") == 1


# MARK: - The end-of-session line

def test_the_end_line_counts_only_messages_retrieved(lab, servers):
    """A RETR the server refuses is no retrieval (this test found it counted: fixed in e74cd23)."""
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with logged_in(proxy) as c:
        assert c.ask("RETR 1").startswith(b"+OK")
        assert c.ask("RETR 9") == b"-ERR no such message\r\n"
        assert c.ask("QUIT").startswith(b"+OK")
    end = proxy.wait_for(r"end \(quit\): user bob, \d+ bytes from client, \d+ bytes to client, (\d+) messages retrieved")
    assert end.group(1) == "1"


def test_the_end_line_counts_the_bytes_each_way(lab, servers):
    server = servers(MESSAGES)
    proxy = daemon(lab, server.address)
    with proxy.client() as c:
        sent = b"USER bob\r\nPASS pw\r\nSTAT\r\nRETR 2\r\nXTND\r\nCAPA\r\nQUIT\r\n"
        c.send(sent)
        received, end = c.rest()
        assert end == "eof"
    received = c.greeting + received
    line = proxy.wait_for(r"end \(quit\): user bob, (\d+) bytes from client, (\d+) bytes to client, "
                          r"\d+ messages retrieved, \d+\.\d+ s")
    assert (int(line.group(1)), int(line.group(2))) == (len(sent), len(received))


def test_an_unreachable_server_is_a_failed_login_and_the_client_may_retry(lab, servers):
    up = servers(MESSAGES)
    down = free_port()
    proxy = daemon(lab, f"127.0.0.1:{down}", "-e")
    with proxy.client() as c:
        answer = c.login("bob", "pw")
        assert answer.startswith(b"-ERR ") and b"cannot connect to 127.0.0.1:%d" % down in answer, answer
        assert c.login(f"bob@{up.address}", "pw") == b"+OK mailbox locked and ready\r\n"
    proxy.wait_for(r"login failed: user bob, server 127\.0\.0\.1:%d: cannot connect" % down)
