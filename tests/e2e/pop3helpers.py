"""Helpers for the end-to-end tests of pop3.proxy (test_pop3proxy_*.py): a Dovecot of the
tests' own, a scripted POP3 server, a POP3 client that keeps every byte it is sent, and the
ways of starting pop3.proxy (a -D -D daemon in the foreground, inetd-style under our
tcpserver).

Only loopback traffic. Every wait is bounded and waits for a condition (a port that answers,
a log line, a line the scripted server received), never a fixed time.

  Dovecot          dovecot -F with its own base_dir and configuration in a directory of the
                   test, listening on 127.0.0.1 on a free port, passwd-file users whose
                   maildirs the test fills (uid and gid of the `mail` user).
  ScriptedServer   a threaded POP3 server on loopback that records every line it receives
                   (per connection, with the peer address) and answers as a test tells it.
  POP3             a raw POP3 client: status lines and multi-line answers as the bytes came.
  daemon(), under_tcpserver()   pop3.proxy started for one test, in a proxyhelpers.Lab.
"""

from __future__ import annotations

import os
import pwd
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest

from proxyhelpers import Lab, Proc, bastion_bin, free_port, wait_port

IO_TIMEOUT = 10.0
START_TIMEOUT = 10.0


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def stuffed(message: bytes) -> bytes:
    """`message` (CRLF lines) as a multi-line answer's body: dot-stuffed, with the final `.`."""
    lines = message.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


# MARK: - The mailbox the tests write

def message_dots() -> bytes:
    """Lines that start with dots: a line that is only `.`, `..`, `. `, `.\\t`, and `...`."""
    return crlf("From: dots@example.org\nTo: bob@example.test\nSubject: dot-stuffing\n"
                "Message-ID: <dots@example.org>\n\nfirst line\n.\n..\n. space\n...three\n"
                ".\tTab\n.leading\nlast line\n")


def message_long_lines() -> bytes:
    """Lines of 10,000 bytes (one of them starting with a dot), and one of 9,999."""
    a = bytes(ord("a") + i % 26 for i in range(10_000))
    dot = b"." + b"d" * 9_999
    return (crlf("From: long@example.org\nSubject: long lines\n\n") + a + b"\r\n" + dot + b"\r\n"
            + b"z" * 9_999 + b"\r\n" + a + b"\r\n")


def message_8bit() -> bytes:
    """Every byte value from 128 to 255, UTF-8 and Latin-1 text, no transfer encoding."""
    high = bytes(range(128, 256))
    return (crlf("From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\nSubject: 8-bit\n"
                 "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
            + "Grüße aus Köln, ça va? 日本語\r\n".encode() + b"caf\xe9 latin-1\r\n" + high + b"\r\n"
            + b"." + high[::-1] + b"\r\n")


def message_bare() -> bytes:
    """A bare CR and a bare LF inside lines (Dovecot may normalise the LF: the tests compare
    the proxy with Dovecot itself), a CR right before CRLF, and a dot after a bare LF."""
    return (crlf("From: bare@example.org\nSubject: bare CR and LF\n\n")
            + b"one\rcarriage return\r\n" + b"two\nline feed\r\n" + b"cr before\r\r\n"
            + b"dot after lf\n.\r\n" + b"trailing cr\r\r\n" + b"end\r\n")


def message_big(size: int) -> bytes:
    """About `size` bytes: a header, then 78-byte lines, every 1000th starting with a dot."""
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789ab\r\n"
    block = (b"." + line[1:]) + line * 999
    body = block * (size // len(block) + 1)
    return crlf("From: big@example.org\nSubject: fifty mebibytes\n\n") + body[:size - size % len(line)]


SMALL_MESSAGES = [message_dots(), message_long_lines(), message_8bit(), message_bare()]


# MARK: - Dovecot

class Dovecot:
    """dovecot -F, its own instance on 127.0.0.1, the users of `mailboxes` (name ->
    messages) with `password`, their maildirs written by the test in the order given. With
    `tls` (certificate, key) it offers STLS on its port and serves POP3S on `pop3s_port`."""

    PASSWORD = "secret"

    def __init__(self, mailboxes: dict[str, list[bytes]], password: str = PASSWORD,
                 tls: Optional[tuple] = None) -> None:
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not os.access(binary, os.X_OK):
            pytest.fail("dovecot is not installed (scripts/test installs dovecot-pop3d)", pytrace=False)
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="bastion-dovecot-"))
        self.dir.chmod(0o755)
        mail = pwd.getpwnam("mail")
        self.port = free_port()
        self.pop3s_port = free_port() if tls else 0
        passwd = []
        for user, messages in mailboxes.items():
            maildir = self.dir / "mail" / user / "Maildir"
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True)
            for i, message in enumerate(messages):
                # The names' timestamps give Dovecot the order of the list.
                (maildir / "cur" / f"{1_700_000_000 + i}.M{i}P1.e2e:2,S").write_bytes(message)
            passwd.append(f"{user}:{{PLAIN}}{password}:{mail.pw_uid}:{mail.pw_gid}::{self.dir}/mail/{user}::\n")
        for root, dirs, files in os.walk(self.dir / "mail"):
            for name in dirs + files:
                os.chown(os.path.join(root, name), mail.pw_uid, mail.pw_gid)
        os.chown(self.dir / "mail", mail.pw_uid, mail.pw_gid)
        (self.dir / "passwd").write_text("".join(passwd))
        (self.dir / "passwd").chmod(0o644)
        self.log = self.dir / "dovecot.log"
        ssl = "ssl = no"
        if tls:
            ssl = f"ssl = yes\nssl_cert = <{tls[0]}\nssl_key = <{tls[1]}\nssl_min_protocol = TLSv1.2"
        conf = self.dir / "dovecot.conf"
        conf.write_text(f"""protocols = pop3
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = bastion-e2e-{self.port}
log_path = {self.log}
{ssl}
auth_failure_delay = 0
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = {mail.pw_uid}
last_valid_uid = {mail.pw_uid}
mail_location = maildir:{self.dir}/mail/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.dir}/passwd
}}
userdb {{
  driver = passwd-file
  args = {self.dir}/passwd
}}
protocol pop3 {{
  mail_max_userip_connections = 10000
}}
# No penalty for the failed logins the tests make on purpose (all from loopback).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.pop3s_port}
  }}
}}
""")
        self.proc = Proc([binary, "-F", "-c", str(conf)], name="dovecot")
        try:
            wait_port("127.0.0.1", self.port, timeout=20, proc=self.proc)
        except AssertionError:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            self.stop()
            pytest.fail(f"dovecot did not start: {self.proc.text()} {log}", pytrace=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# MARK: - A raw POP3 client

# Commands whose +OK answer is a multi-line one (RFC 1939; CAPA from RFC 2449).
def is_multiline(command: bytes) -> bool:
    words = command.strip().split(b" ")
    verb = words[0].upper()
    return verb in (b"RETR", b"TOP", b"CAPA") or (verb in (b"LIST", b"UIDL") and len(words) == 1)


class POP3:
    """A POP3 client on a raw socket that keeps the bytes as they came; with `tls` (an
    ssl.SSLContext) TLS from the first byte (POP3S), and ``stls`` upgrades a plain one."""

    def __init__(self, port: int, host: str = "127.0.0.1", source: Optional[str] = None,
                 timeout: float = IO_TIMEOUT, greeting: bool = True, tls=None,
                 name: str = "localhost") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=name)
        self.buf = bytearray()
        self.greeting = self.line() if greeting else b""
        if greeting:
            assert self.greeting.startswith(b"+OK"), self.greeting

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self) -> bytes:
        """The next line with its CRLF (b"" at end of file, what is left if it ends unfinished)."""
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0:
                out = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return out
            start = len(self.buf)
            if not self._fill():
                out = bytes(self.buf)
                self.buf.clear()
                return out

    def body(self) -> bytes:
        """A multi-line answer's body up to and including its final `.` line."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 3
            else:
                i = self.buf.find(b"\r\n.\r\n", start)
                end = i + 5 if i >= 0 else -1
            if end >= 0:
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            start = max(0, len(self.buf) - 4)
            if not self._fill():
                raise AssertionError(f"end of file inside a multi-line answer ({len(self.buf)} bytes)")

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def stls(self, tls, name: str = "localhost") -> bytes:
        """STLS, and on its +OK the handshake (`tls`: an ssl.SSLContext); the status line."""
        answer = self.command("STLS")
        if answer.startswith(b"+OK"):
            assert not self.buf, f"bytes in the clear after STLS's +OK: {bytes(self.buf)!r}"
            self.sock = tls.wrap_socket(self.sock, server_hostname=name)
        return answer

    def command(self, text: bytes | str) -> bytes:
        """Sends one command line and returns its status line."""
        line = text.encode() if isinstance(text, str) else text
        self.send(line + b"\r\n")
        return self.line()

    def answer(self, command: bytes | str) -> bytes:
        """Reads the answer to `command` (already sent): status line, and body if multi-line."""
        c = command.encode() if isinstance(command, str) else command
        status = self.line()
        if status.startswith(b"+OK") and is_multiline(c):
            return status + self.body()
        return status

    def ask(self, command: bytes | str) -> bytes:
        c = command.encode() if isinstance(command, str) else command
        self.send(c + b"\r\n")
        return self.answer(c)

    def dialogue(self, commands: Sequence[str], pipelined: bool = False) -> list[bytes]:
        """Every command's whole answer; pipelined: all commands in one segment first."""
        if pipelined:
            self.send("".join(c + "\r\n" for c in commands))
            return [self.answer(c) for c in commands]
        return [self.ask(c) for c in commands]

    def login(self, user: str, password: str) -> bytes:
        assert self.command(f"USER {user}").startswith(b"+OK")
        return self.command(f"PASS {password}")

    def rest(self, timeout: float = IO_TIMEOUT) -> tuple[bytes, str]:
        """Everything up to end of file: (bytes, 'eof' | 'reset' | 'timeout')."""
        out = bytes(self.buf)
        self.buf.clear()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out, "timeout"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return out, "reset"
            except socket.timeout:
                return out, "timeout"
            if not chunk:
                return out, "eof"
            out += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "POP3":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# MARK: - The scripted server

class Connection:
    """One connection to the scripted server: its peer and the lines it received."""

    def __init__(self, peer: tuple) -> None:
        self.peer = peer
        self.lines: list[bytes] = []
        # A command arrived before the answer to the previous one had been sent.
        self.ahead = False
        self.closed = False


Answer = Callable[["ScriptedServer", socket.socket, list[bytes]], Optional[bytes]]


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` can be read within `timeout` seconds (poll: select cannot watch a
    descriptor above 1023, and the hostile tests hold thousands)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class ScriptedServer:
    """A POP3 server of the tests' own, on loopback, one thread per connection.

    It greets with `greeting`, takes USER and PASS (PASS `password` succeeds), and answers
    STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, RSET, LAST and QUIT on `messages`, each answer
    sent only once the whole command line is in. `answers` overrides a verb: bytes to send,
    or a function(server, conn, words) that sends what it likes (None: the session ends).
    Every received line is kept, raw, in `connections[i].lines`."""

    def __init__(self, messages: Sequence[bytes] = (), *, host: str = "127.0.0.1", port: int = 0,
                 greeting: bytes = b"+OK scripted POP3 ready\r\n", password: bytes = b"pw",
                 answers: Optional[dict[bytes, bytes | Answer]] = None) -> None:
        self.messages = list(messages)
        self.greeting = greeting
        self.password = password
        self.answers = answers or {}
        self.connections: list[Connection] = []
        self.errors: list[str] = []
        self.cond = threading.Condition()
        self.release = threading.Event()  # set at close: ends every stalled answer
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.sock.settimeout(0.1)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def accepted(self) -> int:
        with self.cond:
            return len(self.connections)

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = Connection(peer)
            with self.cond:
                self.connections.append(record)
                self.socks.append(conn)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn: socket.socket, record: Connection) -> None:
        conn.settimeout(60)
        buf = bytearray()
        try:
            if self.greeting:
                conn.sendall(self.greeting)
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    continue
                line = bytes(buf[:i + 1])
                del buf[:i + 1]
                ahead = bool(buf)
                if not ahead and readable(conn, 0):
                    ahead = bool(conn.recv(1, socket.MSG_PEEK))
                with self.cond:
                    record.lines.append(line)
                    record.ahead |= ahead
                    self.cond.notify_all()
                if not self._answer(conn, line):
                    return
        except OSError as e:
            if not self.closed:
                with self.cond:
                    self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            with self.cond:
                record.closed = True
                self.cond.notify_all()
            try:
                conn.close()
            except OSError:
                pass

    def message(self, words: list[bytes]) -> Optional[bytes]:
        try:
            n = int(words[1])
        except (IndexError, ValueError):
            return None
        return self.messages[n - 1] if 1 <= n <= len(self.messages) else None

    def _answer(self, conn: socket.socket, line: bytes) -> bool:
        words = line.rstrip(b"\r\n").split(b" ")
        verb = words[0].upper()
        custom = self.answers.get(verb)
        if custom is not None:
            out = custom if isinstance(custom, bytes) else custom(self, conn, words)
            if out is None:
                return False
            conn.sendall(out)
            return verb != b"QUIT"
        if verb == b"USER":
            conn.sendall(b"+OK user accepted\r\n")
        elif verb == b"PASS":
            ok = line.rstrip(b"\r\n")[5:] == self.password
            conn.sendall(b"+OK mailbox locked and ready\r\n" if ok else b"-ERR invalid password\r\n")
        elif verb == b"STAT":
            conn.sendall(b"+OK %d %d\r\n" % (len(self.messages), sum(map(len, self.messages))))
        elif verb in (b"LIST", b"UIDL"):
            def item(i: int) -> bytes:
                return b"%d %s" % (i, b"%d" % len(self.messages[i - 1]) if verb == b"LIST" else b"uid-%d" % i)
            if len(words) > 1:
                m = self.message(words)
                conn.sendall(b"+OK " + item(int(words[1])) + b"\r\n" if m is not None else b"-ERR no such message\r\n")
            else:
                conn.sendall(b"+OK\r\n" + b"".join(item(i) + b"\r\n" for i in range(1, len(self.messages) + 1)) + b".\r\n")
        elif verb in (b"RETR", b"TOP"):
            m = self.message(words)
            if m is None:
                conn.sendall(b"-ERR no such message\r\n")
            else:
                if verb == b"TOP":
                    head, _, body = m.partition(b"\r\n\r\n")
                    keep = int(words[2])
                    m = head + b"\r\n\r\n" + b"".join(l + b"\r\n" for l in body.split(b"\r\n")[:keep])
                conn.sendall(b"+OK %d octets\r\n" % len(m) + stuffed(m))
        elif verb in (b"DELE", b"NOOP", b"RSET"):
            conn.sendall(b"+OK\r\n")
        elif verb == b"LAST":
            conn.sendall(b"+OK 0\r\n")
        elif verb == b"QUIT":
            conn.sendall(b"+OK scripted server signing off\r\n")
            return False
        else:
            conn.sendall(b"-ERR unknown command\r\n")
        return True

    def stall(self) -> Answer:
        """An answer that never comes: reads on (and drops) until the other side closes or the
        server is closed."""
        def answer(server: "ScriptedServer", conn: socket.socket, words: list[bytes]) -> Optional[bytes]:
            while not self.release.is_set():
                if readable(conn, 0.1) and not conn.recv(65536):
                    break
            return None
        return answer

    def lines(self, index: int = -1) -> list[bytes]:
        with self.cond:
            return list(self.connections[index].lines)

    def wait_line(self, line: bytes, index: int = -1, timeout: float = IO_TIMEOUT) -> list[bytes]:
        """Waits until connection `index` has received `line` (exactly, with its CRLF)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.connections and line in self.connections[index].lines:
                    return list(self.connections[index].lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    got = self.connections[index].lines if self.connections else "no connection"
                    raise AssertionError(f"scripted server: no {line!r} within {timeout}s; got {got}")
                self.cond.wait(min(left, 0.1))

    def wait_closed(self, index: int = -1, timeout: float = IO_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (self.connections and self.connections[index].closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"scripted server: connection {index} still open after {timeout}s")
                self.cond.wait(min(left, 0.1))

    def close(self) -> None:
        self.closed = True
        self.release.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.cond:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.thread.join(timeout=2)


# MARK: - pop3.proxy

def proxy_bin() -> Path:
    return bastion_bin("pop3.proxy")


class Daemon:
    """pop3.proxy -d -D -D HOST:PORT (in the foreground, its log on standard error)."""

    def __init__(self, proc: Proc, host: str, port: int) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.pid = proc.pid

    def client(self, **kw) -> POP3:
        return POP3(self.port, self.host, **kw)

    def wait_for(self, pattern: str, **kw) -> re.Match:
        return self.proc.wait_for(pattern, **kw)

    def ended(self, count: int = 1, timeout: float = IO_TIMEOUT) -> re.Match:
        """The `count`th session end line."""
        return self.proc.wait_for(r"session \d+ from \S+: end \(.*", count=count, timeout=timeout)


def daemon(lab: Lab, server: Optional[str], *options: str | os.PathLike, host: str = "127.0.0.1",
           port: Optional[int] = None, env: Optional[dict] = None) -> Daemon:
    """Starts `pop3.proxy -d OPTIONS -D -D HOST:PORT SERVER` and waits until it serves."""
    port = port or free_port(host)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    argv = [proxy_bin(), "-d", *options, "-D", "-D", listen] + ([server] if server is not None else [])
    proc = lab.start(argv, env=env, name="pop3.proxy")
    proc.wait_for(r"pop3\.proxy started \(pid \d+", timeout=START_TIMEOUT)
    return Daemon(proc, host, port)


def under_tcpserver(lab: Lab, server: str, *options: str | os.PathLike, host: str = "127.0.0.1",
                    env: Optional[dict] = None) -> Daemon:
    """Our tcpserver on HOST:PORT starting `pop3.proxy --log stderr:5 OPTIONS SERVER` per
    client (inetd mode); the proxies' logs come out of tcpserver's standard error."""
    port = free_port(host)
    argv = [bastion_bin("tcpserver"), "-v", host, str(port), proxy_bin(), "--log", "stderr:5", *options, server]
    proc = lab.start(argv, env=env, name="tcpserver")
    # tcpserver -v says `status: 0/40` once it listens.
    proc.wait_for(r"tcpserver: status: 0/\d+", timeout=START_TIMEOUT)
    return Daemon(proc, host, port)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def wait_gone(pid: int, timeout: float = IO_TIMEOUT) -> None:
    """Waits until process `pid` no longer exists (or is a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = proc_status(pid).get("State", "")
        except (FileNotFoundError, ProcessLookupError):
            return
        if state.startswith("Z"):
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still running after {timeout}s")


# MARK: - Access control programs

def recording_acp(lab: Lab, name: str = "acp", status: int = 0, body: str = "") -> Path:
    """An access control program that writes its environment (and its uid, gid and groups as
    ACP_UID, ACP_GID, ACP_GROUPS) to LAB/NAME.env, runs `body`, and exits with `status`."""
    out = lab.dir / f"{name}.env"
    return lab.script(name, f"""#!/bin/sh
{{ env; echo "ACP_UID=$(id -u)"; echo "ACP_GID=$(id -g)"; echo "ACP_GROUPS=$(id -G)"; }} > "{out}.$$"
mv "{out}.$$" "{out}"
{body}
exit {status}
""")


def acp_environment(lab: Lab, name: str = "acp", timeout: float = IO_TIMEOUT) -> dict[str, str]:
    """What the access control program NAME recorded (waits for the file)."""
    path = lab.dir / f"{name}.env"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the access control program wrote no {path}"
        time.sleep(0.02)
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def fetchmail(lab: Lab, port: int, tag: str, user: str = "short", tls: Optional[str] = None, ca=None) -> bytes:
    """One run of fetchmail (keep, USER/PASS) delivering to a file: what it wrote. Without
    `tls` in the clear; tls="ssl" is POP3S, tls="stls" STLS, the server's certificate checked
    against `ca` for the name localhost."""
    home = lab.dir / f"fetchmail-{tag}"
    home.mkdir()
    out = home / "delivered"
    rc = home / "fetchmailrc"
    security = {None: 'sslproto ""', "ssl": "ssl", "stls": 'sslproto "tls1.2+"'}[tls]
    if tls:
        security += f' sslcertck sslcertfile "{ca}"'
    host = "localhost" if tls else "127.0.0.1"
    rc.write_text(f'poll {host} protocol pop3 service {port} auth password timeout 20\n'
                  f'  user "{user}" password "{Dovecot.PASSWORD}" is root here\n'
                  f'  keep fetchall {security} mda "cat >> {out}"\n')
    rc.chmod(0o600)
    env = lab.env({"HOME": str(home), "FETCHMAILHOME": str(home)})
    run = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-v"], env=env,
                         capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    return out.read_bytes()
