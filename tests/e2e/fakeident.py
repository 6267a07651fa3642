"""A tiny RFC 1413 ident server for the tcpserver tests, on a dedicated loopback address.

tcpserver -r connects to the client's address, port 113, from its own local address: a test
client that binds to this server's address before connecting gets the reply the test chose.
Port 113 needs root (or CAP_NET_BIND_SERVICE): `start` raises PermissionError otherwise.

The reply is chosen per request by `reply`: a callable taking the request line (without CR
LF) and returning the bytes to send, or None to say nothing and hold the connection open
until tcpserver gives up (or the server stops).
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Callable, Optional

Reply = Callable[[bytes], Optional[bytes]]


def userid(name: bytes, system: bytes = b"UNIX") -> Reply:
    """`PORTS : USERID : SYSTEM : NAME`."""
    return lambda request: request + b" : USERID : " + system + b" : " + name + b"\r\n"


def raw(data: bytes) -> Reply:
    """Exactly `data`, whatever the request."""
    return lambda request: data


def silent(request: bytes) -> Optional[bytes]:
    return None


class FakeIdent:
    def __init__(self, address: str = "127.0.0.7", port: int = 113):
        self.address = address
        self.port = port
        self.reply: Reply = userid(b"joe")
        self.requests: list[bytes] = []
        self._sock: Optional[socket.socket] = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> "FakeIdent":
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.address, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        sock.settimeout(0.2)
        self._sock = sock
        t = threading.Thread(target=self._accept, name=f"fakeident-{self.address}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=2)
        if self._sock:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            t.start()
            with self._lock:
                self._threads.append(t)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\n" not in data and len(data) < 1000:
                    chunk = conn.recv(1000)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                return
            request = data.split(b"\n", 1)[0].rstrip(b"\r")
            with self._lock:
                self.requests.append(request)
            answer = self.reply(request)
            if answer is None:
                # Hold the connection until the peer closes it or the server stops.
                while not self._stop.is_set():
                    r, _, _ = select.select([conn], [], [], 0.2)
                    if r:
                        try:
                            if not conn.recv(1000):
                                return
                        except OSError:
                            return
                return
            try:
                conn.sendall(answer)
            except OSError:
                pass
