"""pop3.proxy -z end to end: a real clamd (clamav-daemon) with a signature database the test
writes itself (no download), a scripted POP3 server of the test's own holding the messages,
and the proxy as a -D -D daemon in the foreground, all on loopback.

The database: an .hdb line with the MD5 and size of the EICAR test file (it matches a stream
that is exactly that file, such as a base64 attachment clamd decodes) and an .ndb body
signature for the EICAR string (it catches the string raw inside a message).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import hostile
from proxyhelpers import Backend, Proc, bastion_bin, free_port, wait_port

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TIMEOUT = 10.0


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


CLEAN = crlf("From: alice@example.org\nTo: bob@example.test\nSubject: clean\n"
             "Message-ID: <clean@example.org>\n\nhello\n.leading dot\n") + b"\xe9t\xe9 8-bit\r\n"
RAW = crlf("From: mallory@example.net\nTo: bob@example.test\nSubject: raw eicar\n"
           "Date: Tue, 01 Dec 2026 10:00:00 +0000\nMessage-ID: <raw@example.net>\n\n") + EICAR + b"\r\n"
ATTACHED = crlf("From: mallory@example.net\nTo: bob@example.test\nSubject: attached eicar\n"
                "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\n"
                "Content-Type: text/plain\n\nsee attachment\n--XX\n"
                "Content-Type: application/octet-stream; name=eicar.com\n"
                "Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=eicar.com\n\n") \
    + base64.b64encode(EICAR) + crlf("\n--XX--\n")


def big_message(size: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    body = line * (size // len(line))
    return crlf("From: big@example.org\nSubject: big\n\n") + body


def stuffed(message: bytes) -> bytes:
    """The message as a multi-line answer's body: dot-stuffed, ending with the `.` line."""
    lines = message.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
    return out + b".\r\n"


def pop3_server(messages: list[bytes]):
    def handle(conn: socket.socket, peer, backend) -> None:
        conn.sendall(b"+OK scripted\r\n")
        f = conn.makefile("rb")
        for raw in f:
            words = raw.strip().split(b" ")
            verb = words[0].upper()
            if verb in (b"USER", b"PASS", b"NOOP"):
                conn.sendall(b"+OK\r\n")
            elif verb == b"STAT":
                conn.sendall(b"+OK %d %d\r\n" % (len(messages), sum(map(len, messages))))
            elif verb in (b"RETR", b"TOP"):
                n = int(words[1])
                if not 1 <= n <= len(messages):
                    conn.sendall(b"-ERR no such message\r\n")
                    continue
                message = messages[n - 1]
                if verb == b"TOP":
                    head, _, body = message.partition(b"\r\n\r\n")
                    keep = int(words[2])
                    message = head + b"\r\n\r\n" + b"".join(l + b"\r\n" for l in body.split(b"\r\n")[:keep])
                conn.sendall(b"+OK %d octets\r\n" % len(message) + stuffed(message))
            elif verb == b"QUIT":
                conn.sendall(b"+OK bye\r\n")
                return
            else:
                conn.sendall(b"-ERR what\r\n")
    return handle


class Clamd:
    def __init__(self, root: Path) -> None:
        binary = shutil.which("clamd") or "/usr/sbin/clamd"
        if not os.access(binary, os.X_OK):
            pytest.fail("clamd is not installed (scripts/test installs clamav-daemon)", pytrace=False)
        self.dir = root / "clamd"
        (self.dir / "db").mkdir(parents=True)
        (self.dir / "db" / "eicar.hdb").write_text(
            f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Bastion.EICAR-File\n")
        (self.dir / "db" / "eicar.ndb").write_text(f"Bastion.EICAR-Body:0:*:{EICAR.hex()}\n")
        self.port = free_port()
        conf = self.dir / "clamd.conf"
        conf.write_text(f"""Foreground yes
LogFile {self.dir}/clamd.log
PidFile {self.dir}/clamd.pid
TemporaryDirectory {self.dir}
DatabaseDirectory {self.dir}/db
TCPSocket {self.port}
TCPAddr 127.0.0.1
MaxThreads 4
StreamMaxLength 100M
MaxFileSize 100M
MaxScanSize 400M
ScanMail yes
Bytecode no
""")
        os.system(f"chmod -R a+rwX {self.dir}")
        self.proc = Proc([binary, "--config-file", str(conf)], name="clamd")
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"zPING\0")
                    if s.recv(16).startswith(b"PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                log = (self.dir / "clamd.log").read_text(errors="replace") if (self.dir / "clamd.log").exists() else ""
                self.proc.stop()
                pytest.fail(f"clamd did not start: {self.proc.text()} {log}", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pop3scan")
    root.chmod(0o777)
    clamd = Clamd(root)
    yield root, clamd
    clamd.stop()


class Gateway:
    """A scripted server with `messages` and pop3.proxy -z in front of it."""

    def __init__(self, clamd_port: int, messages: list[bytes], extra: list[str] = ()) -> None:
        self.backend = Backend(pop3_server(messages))
        self.port = free_port()
        self.proc = Proc([bastion_bin("pop3.proxy"), "-d", "-D", "-D", "-z", "--clamd", f"127.0.0.1:{clamd_port}",
                          *extra, f"127.0.0.1:{self.port}", f"127.0.0.1:{self.backend.port}"],
                         name="pop3.proxy")
        wait_port("127.0.0.1", self.port, proc=self.proc)

    def close(self) -> None:
        self.proc.stop()
        self.backend.close()


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.f = self.sock.makefile("rb")
        assert self.line().startswith(b"+OK")

    def line(self) -> bytes:
        return self.f.readline()

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def login(self) -> None:
        assert self.command("USER bob").startswith(b"+OK")
        assert self.command("PASS pw").startswith(b"+OK")

    def multiline(self, text: str) -> tuple[bytes, bytes]:
        """The status line and the body up to and including the final `.` line, as sent."""
        status = self.command(text)
        if not status.startswith(b"+OK"):
            return status, b""
        body = b""
        while not body.endswith(b"\r\n.\r\n") and body != b".\r\n":
            line = self.line()
            assert line, "connection closed inside a multi-line answer"
            body += line
        return status, body

    def close(self) -> None:
        self.sock.close()


def test_clean_messages_arrive_byte_for_byte_with_the_scan_header(world):
    _, clamd = world
    gw = Gateway(clamd.port, [CLEAN])
    try:
        c = Client(gw.port)
        c.login()
        status, body = c.multiline("RETR 1")
        assert status == b"+OK %d octets\r\n" % len(CLEAN)
        header, _, rest = body.partition(b"\r\n")
        assert header.startswith(b"X-Proxy-Scanned: pop3.proxy (Bastion) with ClamAV ")
        assert rest == stuffed(CLEAN)
        status, body = c.multiline("TOP 1 1")
        assert body.split(b"\r\n", 1)[1].startswith(b"From: alice@example.org")
        assert c.command("QUIT") == b"+OK bye\r\n"
        gw.proc.wait_for(r"message clean")
    finally:
        gw.close()


def test_no_scan_header_leaves_the_message_untouched(world):
    _, clamd = world
    gw = Gateway(clamd.port, [CLEAN], ["--no-scan-header"])
    try:
        c = Client(gw.port)
        c.login()
        assert c.multiline("RETR 1")[1] == stuffed(CLEAN)
    finally:
        gw.close()


@pytest.mark.parametrize("message,subject", [(RAW, "raw eicar"), (ATTACHED, "attached eicar")])
def test_an_infected_message_is_replaced_by_a_notification(world, message, subject):
    _, clamd = world
    gw = Gateway(clamd.port, [message, CLEAN])
    try:
        c = Client(gw.port)
        c.login()
        status, body = c.multiline("RETR 1")
        assert status == b"+OK virus found, a notification follows\r\n"
        assert EICAR not in body and base64.b64encode(EICAR) not in body
        text = body.decode()
        assert "Subject: Virus found: Bastion.EICAR-" in text
        assert f"  Subject:     {subject}\r\n" in text
        assert "  From:        mallory@example.net\r\n" in text
        # A well-formed RFC 5322 message: header, empty line, body; lines within 998 bytes.
        assert "\r\n\r\n" in text and all(len(l) <= 998 for l in text.split("\r\n"))
        # The session goes on: the clean one is delivered.
        assert stuffed(CLEAN) in c.multiline("RETR 2")[1]
        gw.proc.wait_for(r"virus Bastion\.EICAR-\S+ found")
    finally:
        gw.close()


def test_the_scan_limit_refuses_or_passes_large_messages(world):
    _, clamd = world
    large = big_message(200_000)
    gw = Gateway(clamd.port, [large, CLEAN], ["--scan-limit", "100000"])
    try:
        c = Client(gw.port)
        c.login()
        assert c.command("RETR 1").startswith(b"-ERR message too large to scan")
        assert stuffed(CLEAN) in c.multiline("RETR 2")[1]
    finally:
        gw.close()
    gw = Gateway(clamd.port, [large], ["--scan-limit", "100000", "--scan-limit-pass"])
    try:
        c = Client(gw.port)
        c.login()
        assert c.multiline("RETR 1")[1] == stuffed(large)
        gw.proc.wait_for(r"passed unscanned")
    finally:
        gw.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_50_mib_message_is_spooled_not_held(world):
    _, clamd = world
    large = big_message(50 * 1024 * 1024)
    gw = Gateway(clamd.port, [large])
    try:
        c = Client(gw.port)
        c.login()
        c.sock.sendall(b"RETR 1\r\n")
        # While the message is spooled and scanned, the proxy holds an unlinked file and
        # little memory.
        peak = 0
        spool_seen = False
        deadline = time.monotonic() + 60
        c.sock.settimeout(0.05)
        got = b""
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(gw.proc.pid))
            for fd in os.listdir(f"/proc/{gw.proc.pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{gw.proc.pid}/fd/{fd}")
                except OSError:
                    continue
                if "bastion-spool" in target:
                    assert target.endswith("(deleted)"), target
                    spool_seen = True
            try:
                chunk = c.sock.recv(1 << 20)
            except socket.timeout:
                continue
            assert chunk
            got += chunk
            if got.endswith(b"\r\n.\r\n"):
                break
        status, _, body = got.partition(b"\r\n")
        header, _, rest = body.partition(b"\r\n")
        assert header.startswith(b"X-Proxy-Scanned:")
        assert rest == stuffed(large)
        assert spool_seen, "the message went through a spool file"
        # Under a sanitizer the shadow memory and quarantine inflate RSS: no bound there.
        hostile.assert_memory(peak, 64 * 1024, "pop3.proxy's RSS for a 50 MiB message")
        assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("bastion-spool-*"))
    finally:
        gw.close()


def test_clamd_gone_in_the_middle_of_a_session_refuses_delivery_and_the_session_goes_on(world, tmp_path):
    root, _ = world
    own = Clamd(tmp_path)
    gw = Gateway(own.port, [CLEAN])
    try:
        c = Client(gw.port)
        c.login()
        assert stuffed(CLEAN) in c.multiline("RETR 1")[1]
        own.stop()
        status = c.command("RETR 1")
        assert status.startswith(b"-ERR message not delivered: virus scanner: cannot connect to clamd"), status
        assert c.command("NOOP") == b"+OK\r\n"
        assert c.command("QUIT") == b"+OK bye\r\n"
    finally:
        gw.close()
        own.stop()


def test_a_daemon_does_not_start_without_its_clamd(world):
    port = free_port()
    run = subprocess.run([bastion_bin("pop3.proxy"), "-d", "-D", "-D", "-z", "--clamd", f"127.0.0.1:{port}",
                          f"127.0.0.1:{free_port()}", "127.0.0.1:110"], capture_output=True, timeout=TIMEOUT)
    assert run.returncode == 1
    assert b"pop3.proxy: -z: clamd at 127.0.0.1:" in run.stderr and b"refused" in run.stderr
