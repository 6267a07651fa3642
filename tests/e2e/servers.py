"""Running a tcpserver (ours or djb's) for the end-to-end tests, and talking to it.

`Server` starts one tcpserver with `-1` so that it prints its port (readiness without
sleeps), collects its standard error in the background, and kills its whole process group
(the server and every program it started) when stopped. `talk` is one client connection.
`normalise` hides what legitimately differs between two runs: pids and port numbers.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

START_TIMEOUT = 5.0
IO_TIMEOUT = 5.0


class Server:
    """One tcpserver process: `tcpserver [-1] OPTS HOST PORT PROGRAM...`."""

    def __init__(self, binary: Path | str, opts: Sequence[str], host: str, program: Sequence[str],
                 env: Mapping[str, str | bytes], *, port: str = "0", print_port: bool = True,
                 cwd: Optional[Path] = None):
        self.argv = [os.fsencode(str(binary))] + [os.fsencode(a) for a in
                                                  ((["-1"] if print_port else []) + list(opts)
                                                   + [host, port] + list(program))]
        self.env = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        self.cwd = cwd
        self.port: Optional[int] = None
        self.stdout = b""
        self._stderr = bytearray()
        self._cond = threading.Condition()
        self._reader: Optional[threading.Thread] = None
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None

    # MARK: - Life cycle

    def start(self, expect_port: bool = True) -> "Server":
        """Starts the server; with expect_port, waits for the port line (fails if it exits)."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if expect_port:
            line = self._read_stdout_line(START_TIMEOUT)
            if not line.endswith(b"\n") or not line[:-1].isdigit():
                self.stop()
                raise AssertionError(f"{self.argv[0]!r} printed no port: stdout={line!r}, "
                                     f"stderr={self.stderr()!r}, exit {self.returncode}")
            self.port = int(line)
        return self

    def _read_stdout_line(self, timeout: float) -> bytes:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not self.stdout.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            self.stdout += chunk
        return self.stdout

    def rest_of_stdout(self, timeout: float = IO_TIMEOUT) -> bytes:
        """Reads standard output to its end (the servers close it after the port line)."""
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stdout not closed within {timeout}s: {self.stdout!r}")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return self.stdout
            self.stdout += chunk

    def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._cond.notify_all()
                    return
                self._stderr += chunk
                self._cond.notify_all()

    def stderr(self) -> bytes:
        with self._cond:
            return bytes(self._stderr)

    def wait_stderr(self, pattern: bytes, count: int = 1, timeout: float = IO_TIMEOUT) -> bytes:
        """Waits until `pattern` (a regex) matches `count` times in standard error."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(rx.findall(self._stderr)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.argv[0]!r}: no {count} x {pattern!r} within "
                                         f"{timeout}s in stderr: {bytes(self._stderr)!r}")
                self._cond.wait(min(left, 0.1))
            return bytes(self._stderr)

    def signal(self, sig: int) -> None:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL to the process group this server leads (it and every child)."""
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> bytes:
        """SIGTERM, then SIGKILL to the group; returns all of standard error."""
        if self.proc is None:
            return b""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()
        try:
            self.returncode = self.proc.wait(3)
        except subprocess.TimeoutExpired:
            pass
        if self._reader:
            self._reader.join(timeout=2)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        return self.stderr()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# MARK: - Clients

@dataclass
class Talk:
    """What a client got: the bytes read before end of file (or reset), its own port."""

    data: bytes
    port: int
    reset: bool = False
    timed_out: bool = False


def connect(host: str, port: int, source: Optional[str] = None,
            timeout: float = IO_TIMEOUT) -> socket.socket:
    """Connects from `source` (any port but the server's: from another address the kernel may
    pick the server's own port number, and the tests' normalising could not tell them apart)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if source is None:
            break
        s.bind((source, 0))
        if s.getsockname()[1] != port:
            break
        s.close()
    s.connect((host, port))
    return s


def read_all(s: socket.socket, timeout: float = IO_TIMEOUT) -> tuple[bytes, bool, bool]:
    """Reads to end of file: (data, reset, timed out)."""
    s.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, False, True
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out, True, False
        except socket.timeout:
            return out, False, True
        if not chunk:
            return out, False, False
        out += chunk


def talk(host: str, port: int, *, source: Optional[str] = None, send: bytes = b"",
         timeout: float = IO_TIMEOUT) -> Talk:
    """Connects, sends `send` and half-closes, reads until end of file."""
    with connect(host, port, source, timeout) as s:
        cport = s.getsockname()[1]
        if send:
            s.sendall(send)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data, reset, timed_out = read_all(s, timeout)
    return Talk(data, cport, reset, timed_out)


# MARK: - Normalising

_PID = re.compile(rb"\b(pid|ok|deny|end) \d+\b")


def normalise(text: bytes, server_ports: Iterable[int] = (), client_ports: Iterable[int] = (),
              pids: Iterable[int] = ()) -> bytes:
    """Replaces pids in tcpserver's log lines by PID, the given ports (after ':' or '=') by
    SPORT / CPORT, and other given pids (such as the server's own) by PID."""
    text = _PID.sub(rb"\1 PID", text)
    for label, ports in ((b"SPORT", server_ports), (b"CPORT", client_ports)):
        for p in ports:
            text = re.sub(rb"(?<=[:=])" + str(p).encode() + rb"(?![0-9])", label, text)
    for p in pids:
        text = re.sub(rb"\b" + str(p).encode() + rb"\b", b"PID", text)
    return text
