"""pop3.proxy in front of a real Dovecot (dovecot-pop3d) started by the tests on loopback, with
a mailbox they write: dot-stuffed lines, lines of 10,000 bytes, 8-bit bodies, bare CR and LF
inside lines, and a 50 MiB message.

What comes through the proxy is compared byte for byte with what Dovecot itself says to the
same dialogue (Dovecot normalises some of the stored bytes, a bare LF for one: the point is
that the proxy changes nothing of what the server sends). Then real clients: Python's
poplib, fetchmail and curl's pop3://, each run both ways and compared.
"""

from __future__ import annotations

import hashlib
import poplib
import re
import subprocess

import pytest

import hostile
from pop3helpers import (SMALL_MESSAGES, POP3, Dovecot, daemon, fetchmail, message_bare, message_big, message_dots,
                         message_8bit)
from proxyhelpers import lab  # noqa: F401  (fixture)

BIG = 50 * 1024 * 1024
USER, PASSWORD = "bob", Dovecot.PASSWORD


@pytest.fixture(scope="module")
def dovecot():
    server = Dovecot({"bob": SMALL_MESSAGES, "big": [message_dots(), message_big(BIG)],
                      # fetchmail garbles lines longer than its 8 KiB buffer, also direct.
                      "short": [message_dots(), message_8bit(), message_bare()]})
    yield server
    server.stop()


def through(port: int, user: str, commands: list[str], pipelined: bool = False) -> tuple[bytes, list[bytes]]:
    """Logs in as `user` on `port` and returns (PASS's answer, every answer of `commands`)."""
    with POP3(port) as c:
        passed = c.login(user, PASSWORD)
        return passed, c.dialogue(commands, pipelined)


DIALOGUE = (["STAT", "LIST", "UIDL", "LIST 2", "UIDL 3", "LIST 9"]
            + [f"RETR {n}" for n in range(1, len(SMALL_MESSAGES) + 1)]
            + ["TOP 1 0", "TOP 2 1", "TOP 3 100", "TOP 4 2", "RETR 9", "NOOP", "DELE 1", "LIST 1", "RETR 1",
               "RSET", "LIST 1", "LAST", "QUIT"])


@pytest.mark.parametrize("pipelined", [False, True], ids=["lockstep", "pipelined"])
def test_every_answer_through_the_proxy_is_dovecots_byte_for_byte(lab, dovecot, pipelined):
    proxy = daemon(lab, dovecot.address)
    direct_pass, direct = through(dovecot.port, USER, DIALOGUE)
    proxied_pass, proxied = through(proxy.port, USER, DIALOGUE, pipelined)
    # The client's PASS is answered with Dovecot's own +OK.
    assert proxied_pass == direct_pass == b"+OK Logged in.\r\n"
    for command, want, got in zip(DIALOGUE, direct, proxied):
        assert got == want, f"{command}: {len(got)} bytes through the proxy, {len(want)} from Dovecot"
    # The dialogue showed what it is meant to: stuffed dots, long lines, 8-bit bytes, CR.
    retr = b"".join(direct[6:6 + len(SMALL_MESSAGES)])
    assert b"\r\n..\r\n" in retr and b"\r\n...\r\n" in retr and b"\r\n....three" in retr
    assert re.search(rb"\r\n[a-z]{10000}\r\n", retr) and bytes(range(128, 256)) in retr
    assert b"one\rcarriage return" in retr
    assert proxied[-1].startswith(b"+OK")
    proxy.wait_for(r"end \(quit\): user bob, \d+ bytes from client, \d+ bytes to client")


def test_a_50_mib_message_byte_for_byte_without_holding_it(lab, dovecot):
    proxy = daemon(lab, dovecot.address, "-m")
    commands = ["STAT", "LIST", "UIDL", "TOP 2 3"]
    assert through(proxy.port, "big", commands)[1] == through(dovecot.port, "big", commands)[1]

    def retrieve(port: int, watch: int = 0) -> tuple[bytes, str, int, int]:
        with POP3(port, timeout=60) as c:
            c.login("big", PASSWORD)
            c.send(b"RETR 2\r\n")
            status = c.line()
            body = bytearray(c.buf)  # what came with the status line
            c.buf.clear()
            h = hashlib.sha256()
            peak = 0
            while True:
                if watch:
                    peak = max(peak, hostile.process_rss_kib(watch))
                chunk = c.sock.recv(1 << 20)
                assert chunk, "end of file inside the 50 MiB message"
                body += chunk
                if body.endswith(b"\r\n.\r\n"):
                    h.update(body)
                    break
                if len(body) > (1 << 20):  # hashed as it comes; the last bytes kept for the end
                    h.update(body[:-4])
                    del body[:-4]
            size = int(status.split()[1]) if status.startswith(b"+OK") else -1
            return status, h.hexdigest(), size, peak

    before = hostile.process_rss_kib(proxy.pid)
    d_status, d_hash, d_size, _ = retrieve(dovecot.port)
    p_status, p_hash, p_size, peak = retrieve(proxy.port, proxy.pid)
    assert d_size >= BIG, d_status
    assert (p_status, p_hash) == (d_status, d_hash)
    # Relayed as it streams: the proxy's memory does not grow with the message.
    hostile.assert_memory(peak - before, 16 * 1024, "pop3.proxy's RSS growth during a 50 MiB RETR")
    sent = proxy.wait_for(r"end \(client closed the connection\): user big, \d+ bytes from client, (\d+) bytes to "
                          r"client, 1 messages retrieved")
    assert int(sent.group(1)) > BIG
    print(f"RSS {before} KiB before, {peak} KiB at most during the RETR")


def test_python_poplib_through_the_proxy(lab, dovecot, monkeypatch):
    # poplib refuses lines over 2048 bytes by default; the mailbox has lines of 10,000.
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 16)
    proxy = daemon(lab, dovecot.address)

    def everything(port: int) -> tuple:
        box = poplib.POP3("127.0.0.1", port, timeout=10)
        try:
            box.user(USER)
            box.pass_(PASSWORD)
            count, size = box.stat()
            messages = [box.retr(n)[1:] for n in range(1, count + 1)]
            return (count, size, box.list()[1], box.uidl()[1], box.top(3, 1)[1], messages), box.capa()
        finally:
            box.quit()

    direct, _ = everything(dovecot.port)
    proxied, capabilities = everything(proxy.port)
    assert proxied == direct
    assert direct[0] == len(SMALL_MESSAGES)
    # poplib undoes the dot-stuffing: the first message's lines are those written.
    assert direct[5][0][0] == message_dots().split(b"\r\n")[:-1]
    assert capabilities == {"USER": [], "TOP": [], "UIDL": [], "PIPELINING": []}


def without_received(mbox: bytes) -> bytes:
    """fetchmail's own Received: header (with the time) taken out of what it delivered."""
    return re.sub(rb"(?m)^Received: .*\n(?:[ \t].*\n)*", b"", mbox)


def test_fetchmail_through_the_proxy(lab, dovecot):
    proxy = daemon(lab, dovecot.address)
    direct = fetchmail(lab, dovecot.port, "direct")
    proxied = fetchmail(lab, proxy.port, "proxied")
    assert without_received(proxied) == without_received(direct)
    # fetchmail delivered the three messages, dots unstuffed, 8-bit bytes as they are.
    assert without_received(direct).count(b"\nSubject: ") == 3
    assert b"\n.\n..\n. space\n...three\n" in direct and bytes(range(128, 256)) in direct
    proxy.wait_for(r"end \(quit\): user short, .* 3 messages retrieved")


def curl(url: str) -> bytes:
    run = subprocess.run(["curl", "-sS", "--max-time", "20", url], capture_output=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return run.stdout


def test_curl_pop3_through_the_proxy(lab, dovecot):
    proxy = daemon(lab, dovecot.address)
    for path in ["", "1", "2", "3", "4"]:
        direct = curl(f"pop3://{USER}:{PASSWORD}@127.0.0.1:{dovecot.port}/{path}")
        proxied = curl(f"pop3://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}/{path}")
        assert proxied == direct, path
    # The first message as written, its dots unstuffed by curl again.
    assert curl(f"pop3://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}/1") == message_dots()
    assert curl(f"pop3://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}/").startswith(b"1 ")
    proxy.ended(count=7)
