"""tcpproxy end to end: PROXY_CLIENTNAME, the client's name for handler and access control
programs: /etc/hosts first, then a PTR query to DNSCACHEIP on the event loop (1 s, then 3 s,
4 s at most), else the address. Plain forwards never ask.

The fake DNS server of these tests listens on FAKE_DNS port 53 (root only); the silent one,
which reads queries and never answers, on FAKE_DNS and a port of its own (BASTION_DNSPORT).
Only loopback traffic; every tcpproxy has -D -L stderr:5.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from proxyhelpers import connect, exchange, free_port, lab, read_line, serve_fake_dns, tagger  # noqa: F401

# Where these tests run their DNS servers (DNSCACHEIP of the tcpproxy under test).
FAKE_DNS = "127.53.0.2"
# How long tcpproxy waits for a name at most (ClientNameSource.limit).
NAME_LIMIT = 4.0

HANDLER = """#!/bin/sh
echo "CLIENT=$PROXY_CLIENT NAME=$PROXY_CLIENTNAME"
"""
ACP = """#!/bin/sh
echo "acp sees $PROXY_CLIENTNAME"
exit 0
"""


@pytest.fixture
def names_dns():
    yield from serve_fake_dns(FAKE_DNS)


class SilentDNS:
    """A UDP socket on FAKE_DNS that counts the queries it gets and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((FAKE_DNS, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.queries += 1
                self._cond.notify_all()

    def wait_queries(self, count: int, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.queries >= count, timeout):
                raise AssertionError(f"{self.queries} queries reached the silent DNS server, not {count}")

    def env(self) -> dict[str, str]:
        return {"DNSCACHEIP": FAKE_DNS, "BASTION_DNSPORT": str(self.port)}

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def silent_dns():
    server = SilentDNS()
    yield server
    server.close()


def hosts_name(address: str) -> str | None:
    """The name /etc/hosts gives `address` (the first line's canonical name), as tcpproxy reads it."""
    try:
        with open("/etc/hosts") as f:
            for line in f:
                words = line.split("#")[0].split()
                if len(words) >= 2 and words[0] == address:
                    return words[1]
    except OSError:
        pass
    return None


def handler_says(port: int, proxy, host: str = "127.0.0.1", source: str | None = None) -> str:
    data, end, _ = exchange(host, port, b"", source=source, timeout=NAME_LIMIT + 5)
    assert end == "eof" and data.startswith(b"CLIENT="), (data, end, proxy.text())
    return data.decode().strip()


# MARK: - Names found

def test_handler_gets_name_from_ptr_record_or_address(lab, names_dns):
    names_dns.set_ptr("127.0.0.77", "Client77.Names.TEST")
    script = lab.script("handler.sh", HANDLER)
    port = free_port()
    proxy = lab.tcpproxy("--bind", f"127.0.0.1:{port}", script, env=lab.env({"DNSCACHEIP": FAKE_DNS}))
    # dns_domain_todot's form: lowercase, no trailing dot.
    assert handler_says(port, proxy, source="127.0.0.77") == "CLIENT=127.0.0.77 NAME=client77.names.test"
    # No PTR record (NXDOMAIN): the address.
    assert handler_says(port, proxy, source="127.0.0.78") == "CLIENT=127.0.0.78 NAME=127.0.0.78"
    assert names_dns.asked(12) == [tuple(b"77.0.0.127.in-addr.arpa".split(b".")),
                                   tuple(b"78.0.0.127.in-addr.arpa".split(b"."))]


def test_acp_gets_name_from_ptr_record(lab, names_dns):
    names_dns.set_ptr("127.0.0.79", "acp-client.names.test")
    acp = lab.script("acp.sh", ACP)
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-a", acp, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port),
                         env=lab.env({"DNSCACHEIP": FAKE_DNS}))
    with connect("127.0.0.1", port, source="127.0.0.79") as s:
        assert read_line(s) == b"acp sees acp-client.names.test\n", proxy.text()
        assert read_line(s).startswith(b"B 127.0.0.1 "), proxy.text()
    with connect("127.0.0.1", port, source="127.0.0.80") as s:
        assert read_line(s) == b"acp sees 127.0.0.80\n", proxy.text()


def test_ipv6_client_and_hosts_file_first(lab, names_dns):
    """/etc/hosts decides before DNS (gethostbyaddr with `hosts: files dns`)."""
    names_dns.set_ptr("::1", "v6client.names.test")
    names_dns.set_ptr("127.0.0.1", "not-from-hosts.names.test")
    script = lab.script("handler.sh", HANDLER)
    p4, p6 = free_port(), free_port("::1")
    env = lab.env({"DNSCACHEIP": FAKE_DNS})
    proxy4 = lab.tcpproxy("--bind", f"127.0.0.1:{p4}", script, env=env)
    proxy6 = lab.tcpproxy("--bind", f"[::1]:{p6}", script, env=env)
    expected4 = hosts_name("127.0.0.1") or "not-from-hosts.names.test"
    assert handler_says(p4, proxy4) == f"CLIENT=127.0.0.1 NAME={expected4}"
    expected6 = hosts_name("::1") or "v6client.names.test"
    assert handler_says(p6, proxy6, host="::1") == f"CLIENT=::1 NAME={expected6}"


# MARK: - A server that never answers

def test_unanswered_query_gives_address_after_bounded_wait_without_stalling_others(lab, silent_dns):
    script = lab.script("handler.sh", HANDLER)
    backend = lab.backend(tagger("B"))
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.file("tcpproxy.conf", f"port {p1}\nexec {script}\nport {p2}\nserver 127.0.0.1:{backend.port}\n")
    proxy = lab.tcpproxy("-f", conf, listeners=2, env=lab.env(silent_dns.env()))
    # More waiting clients than the daemon has event loops: were a lookup to block its loop,
    # they would be served one after the other, 4 s each, and the forwards below would wait.
    clients = max(4, 2 * len(os.sched_getaffinity(0)))
    start = time.monotonic()
    waiting = [connect("127.0.0.1", p1, source=f"127.0.1.{i + 1}", timeout=NAME_LIMIT + 10) for i in range(clients)]
    try:
        silent_dns.wait_queries(clients, timeout=2)
        for i in range(5):
            t = time.monotonic()
            data, end, _ = exchange("127.0.0.1", p2, b"meanwhile %d" % i)
            assert data.startswith(b"B 127.0.0.1 ") and data.endswith(b"\nmeanwhile %d" % i), (data, proxy.text())
            assert time.monotonic() - t < 1.0, "a forward waited for someone's name lookup"
        for i, s in enumerate(waiting):
            line = read_line(s, timeout=NAME_LIMIT + 10)
            assert line == f"CLIENT=127.0.1.{i + 1} NAME=127.0.1.{i + 1}\n".encode(), (line, proxy.text())
        elapsed = time.monotonic() - start
    finally:
        for s in waiting:
            s.close()
    assert NAME_LIMIT - 0.5 <= elapsed < NAME_LIMIT + 3, elapsed
    # The schedule's two rounds: each client's query was sent twice (1 s, then 3 s).
    silent_dns.wait_queries(2 * clients, timeout=1)


def test_plain_forward_asks_nobody(lab, silent_dns):
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port),
                         env=lab.env(silent_dns.env()))
    for i in range(3):
        start = time.monotonic()
        data, end, _ = exchange("127.0.0.1", port, b"x", source="127.0.0.81")
        assert data.startswith(b"B 127.0.0.1 "), (data, proxy.text())
        assert time.monotonic() - start < 1.0
    proxy.wait_for(r"closed: ", count=3)
    assert silent_dns.queries == 0


def test_no_client_names_option(lab, silent_dns):
    script = lab.script("handler.sh", HANDLER)
    port = free_port()
    proxy = lab.tcpproxy("--no-client-names", "--bind", f"127.0.0.1:{port}", script, env=lab.env(silent_dns.env()))
    start = time.monotonic()
    assert handler_says(port, proxy, source="127.0.0.82") == "CLIENT=127.0.0.82 NAME=127.0.0.82"
    assert time.monotonic() - start < 1.0
    assert silent_dns.queries == 0
