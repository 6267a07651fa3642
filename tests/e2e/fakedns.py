"""A tiny authoritative DNS server for the tcpserver tests: UDP only, on a loopback address,
answering from a table that the tests set, NXDOMAIN for every other name.

djb's programs (and ours) send their queries to $DNSCACHEIP port 53, so the server must
listen on port 53: it needs root (or CAP_NET_BIND_SERVICE). `FakeDNS.start` raises
PermissionError otherwise and the caller skips what needs it.

Names are kept as lists of raw labels so that a PTR answer can carry any byte (upper case,
spaces, dots inside a label, ...). Queries match case-insensitively, as DNS does.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from typing import Iterable, Optional, Sequence, Union

T_A = 1
T_CNAME = 5
T_PTR = 12
T_AAAA = 28
C_IN = 1

Name = Union[str, Sequence[bytes]]


def labels(name: Name) -> tuple[bytes, ...]:
    """A name as raw labels: a dotted string (no escapes) or a sequence of labels."""
    if isinstance(name, str):
        return tuple(part.encode() for part in name.strip(".").split(".") if part)
    return tuple(bytes(part) for part in name)


def reverse_name(ip: str) -> tuple[bytes, ...]:
    """The in-addr.arpa or ip6.arpa name of an address."""
    return labels(ipaddress.ip_address(ip).reverse_pointer)


def wire(name: Iterable[bytes]) -> bytes:
    out = bytearray()
    for label in name:
        out.append(len(label))
        out += label
    out.append(0)
    return bytes(out)


def _key(name: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in name)


class FakeDNS:
    """The server: `set_ptr`, `set_a`, `set_aaaa` fill the table, `clear` empties it, and
    `queries` lists what was asked ((labels, qtype), lowercased)."""

    def __init__(self, address: str = "127.53.0.1", port: int = 53):
        self.address = address
        self.port = port
        self._records: dict[tuple[tuple[bytes, ...], int], list[bytes]] = {}
        self._raw: dict[tuple[tuple[bytes, ...], int], list[tuple[bytes, int, bytes]]] = {}
        self._lock = threading.Lock()
        self.queries: list[tuple[tuple[bytes, ...], int]] = []
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    # MARK: - The table

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._raw.clear()
            self.queries.clear()

    def add(self, name: Name, qtype: int, rdata: bytes) -> None:
        with self._lock:
            self._records.setdefault((_key(labels(name)), qtype), []).append(rdata)

    def set_ptr(self, ip: str, target: Name) -> None:
        """PTR for the address `ip`: `target` as a dotted string or raw labels."""
        self.add(reverse_name(ip), T_PTR, wire(labels(target)))

    def set_a(self, name: Name, *ips: str) -> None:
        for ip in ips:
            self.add(name, T_A, socket.inet_pton(socket.AF_INET, ip))

    def set_aaaa(self, name: Name, *ips: str) -> None:
        for ip in ips:
            self.add(name, T_AAAA, socket.inet_pton(socket.AF_INET6, ip))

    def set_answers(self, name: Name, qtype: int,
                    records: Sequence[tuple[Name, int, bytes]]) -> None:
        """Answers a query for (name, qtype) with exactly these records (owner, type, rdata),
        in this order: for CNAME chains, records of other owners or other types."""
        with self._lock:
            self._raw[(_key(labels(name)), qtype)] = [(wire(labels(o)), t, r) for o, t, r in records]

    def asked(self, qtype: int) -> list[tuple[bytes, ...]]:
        with self._lock:
            return [name for name, t in self.queries if t == qtype]

    # MARK: - Serving

    def start(self) -> "FakeDNS":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.address, self.port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="fakedns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self._sock:
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                packet, peer = self._sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.answer(packet)
            if reply is not None:
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    pass

    def answer(self, packet: bytes) -> Optional[bytes]:
        """The response to one query packet (None for garbage)."""
        if len(packet) < 12:
            return None
        qid, flags, qdcount = struct.unpack_from(">HHH", packet, 0)
        if qdcount != 1 or flags & 0x8000:
            return None
        pos = 12
        name: list[bytes] = []
        while True:
            if pos >= len(packet):
                return None
            n = packet[pos]
            pos += 1
            if n == 0:
                break
            if n & 0xC0:
                return None
            name.append(packet[pos:pos + n])
            pos += n
        if pos + 4 > len(packet):
            return None
        qtype, qclass = struct.unpack_from(">HH", packet, pos)
        question = packet[12:pos + 4]
        key = _key(name)
        with self._lock:
            self.queries.append((key, qtype))
            answers = [(b"\xc0\x0c", qtype, rdata)
                       for rdata in self._records.get((key, qtype), [])] if qclass == C_IN else []
            answers += self._raw.get((key, qtype), []) if qclass == C_IN else []
            exists = any(k == key for k, _ in self._records) or any(k == key for k, _ in self._raw)
        rcode = 0 if (answers or exists) else 3
        out = bytearray(struct.pack(">HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1,
                                    len(answers), 0, 0))
        out += question
        for owner, rtype, rdata in answers:
            out += owner + struct.pack(">HHIH", rtype, C_IN, 60, len(rdata)) + rdata
        return bytes(out)
