"""sockd's SOCKS5 UDP ASSOCIATE end to end, on loopback only: a raw client and PySocks through
sockd to UDP echoes on 127.x (and ::1): datagrams both ways with the headers RFC 1928 gives
them, each destination decided by sockd.conf, nothing from anyone but the client, the
association over when its control connection ends, a flood that leaves other clients served.

Every wait is bounded: a reply datagram, a log line, or the ICMP refusal a closed port
gives a connected UDP socket (never a fixed sleep).
"""

from __future__ import annotations

import signal
import socket

import pytest

import hostile
from proxyhelpers import lab, wait_file  # noqa: F401
from sockdhelpers import (REP_OK, REP_REFUSED, UDPEcho, crypt_hash, import_pysocks, parse_udp, socks5,
                          start_sockd, udp_associate, udp_header)
from test_sockd import PERMIT_ALL, has_ipv6_loopback

TIMEOUT = 10.0


@pytest.fixture
def echo():
    e = UDPEcho("127.0.0.9")
    yield e
    e.close()


def client_socket(host: str = "127.0.0.1") -> socket.socket:
    u = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((host, 0))
    u.settimeout(TIMEOUT)
    return u


def through(u: socket.socket, relay: tuple[str, int], dst: str, port: int, payload: bytes) -> tuple[tuple, bytes]:
    """One datagram to `dst:port` through the relay, and the answer: (where from, payload)."""
    u.sendto(udp_header(dst, port) + payload, relay)
    data, sender = u.recvfrom(70000)
    assert sender[:2] == relay, sender
    return parse_udp(data)


def assert_closed(u: socket.socket, relay: tuple[str, int], attempts: int = 20) -> None:
    """The relay's port is closed: a connected socket hears the ICMP refusal. (sockd logs
    the end just before it closes the socket, so a try may still get through.)"""
    u.connect(relay)
    u.settimeout(1.0)
    for _ in range(attempts):
        u.send(b"\0\0\0\x01\x7f\0\0\x01\0\x01late")
        try:
            u.recv(100)
        except ConnectionRefusedError:
            return
        except socket.timeout:
            continue
    pytest.fail(f"the relay at {relay} still takes datagrams")


def test_datagrams_go_to_a_udp_echo_and_come_back_named(lab, echo):
    d = start_sockd(lab, PERMIT_ALL)
    rep, relay, control = udp_associate((d.host, d.port))
    assert rep == REP_OK and relay[0] == "127.0.0.1" and relay[1] != 0
    d.wait_for(r"connected -- UDP associate from \(unknown\)@127\.0\.0\.1 to 0\.0\.0\.0 \(0\), relaying at "
               rf"127\.0\.0\.1:{relay[1]}")
    u = client_socket()
    sent = [b"ping", b"", bytes(range(256)) * 234]  # 59,904 bytes: a datagram near UDP's limit
    for payload in sent:
        source, body = through(u, relay, echo.host, echo.port, payload)
        assert source == (echo.host, echo.port)
        assert body == b"echo " + payload
    d.wait_for(rf"connected -- UDP from \(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({echo.port}\)")
    assert [data for _, data in echo.received] == sent
    # The echo saw sockd, never the client.
    assert all(peer != u.getsockname() for peer, _ in echo.received)

    control.close()
    d.wait_for(r"terminated -- UDP associate from \(unknown\)@127\.0\.0\.1 to 0\.0\.0\.0 \(0\)")
    up = sum(map(len, sent))
    d.wait_for(rf"{up} bytes in 3 datagrams from \(unknown\)@127\.0\.0\.1, {up + 15} bytes in 3 datagrams to it, "
               r"0 dropped")
    assert_closed(u, relay)


def test_pysocks_sends_and_receives_through_the_association_with_a_password(lab, echo):
    socks = import_pysocks()
    passwd = lab.file("passwd", f"alice:{crypt_hash('wonder')}\n")
    d = start_sockd(lab, PERMIT_ALL, "--passwd", passwd)
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, d.host, d.port, username="alice", password="wonder")
    s.settimeout(TIMEOUT)
    try:
        s.sendto(b"hello", (echo.host, echo.port))
        data, source = s.recvfrom(65535)
        assert data == b"echo hello" and source == (echo.host, echo.port)
        s.sendto(b"again", (echo.host, echo.port))
        assert s.recvfrom(65535)[0] == b"echo again"
    finally:
        s.close()
    d.wait_for(r"connected -- UDP associate from alice\(unknown\)@127\.0\.0\.1")
    d.wait_for(r"terminated -- UDP associate from alice\(unknown\)@127\.0\.0\.1")
    d.wait_for(r"10 bytes in 2 datagrams from alice\(unknown\)@127\.0\.0\.1, 20 bytes in 2 datagrams to it")


def test_a_name_in_the_datagram_is_resolved_by_sockd(lab):
    local = UDPEcho("127.0.0.1")
    try:
        d = start_sockd(lab, PERMIT_ALL)
        rep, relay, control = udp_associate((d.host, d.port))
        assert rep == REP_OK
        u = client_socket()
        for payload in (b"first", b"second"):
            source, body = through(u, relay, "localhost", local.port, payload)
            # The answer names the address that answered.
            assert source == ("127.0.0.1", local.port) and body == b"echo " + payload
        d.wait_for(rf"connected -- UDP from \(unknown\)@127\.0\.0\.1 to localhost \({local.port}\)")
        control.close()
    finally:
        local.close()


def test_each_destination_is_decided_by_sockd_conf(lab, echo):
    other = UDPEcho("127.0.0.10")
    try:
        conf = (f"deny 127.0.0.1 255.255.255.255 127.0.0.10 255.255.255.255 : echo %c %u %Z %s >> {lab.dir}/cmd\n"
                f"permit 127.0.0.0 255.0.0.0 127.0.0.9 255.255.255.255 eq {echo.port}\n")
        d = start_sockd(lab, conf)
        rep, relay, control = udp_associate((d.host, d.port))
        assert rep == REP_OK
        u = client_socket()
        u.sendto(udp_header(other.host, other.port) + b"denied", relay)
        d.wait_for(rf"refused -- UDP from \(unknown\)@127\.0\.0\.1 to 127\.0\.0\.10 \({other.port}\)")
        # Datagrams are handled in order: once this one's answer is back, the denied one is gone.
        assert through(u, relay, echo.host, echo.port, b"allowed")[1] == b"echo allowed"
        assert other.received == []
        # A port no line permits.
        u.sendto(udp_header(echo.host, echo.port + 1) + b"x", relay)
        d.wait_for(rf"refused -- UDP from \(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({echo.port + 1}\)")
        control.close()
        d.wait_for(r"7 bytes in 1 datagrams from \(unknown\)@127\.0\.0\.1, 12 bytes in 1 datagrams to it, 2 dropped")
        # %u is empty (no user name in a SOCKS5 request without a password), so echo sees three words.
        assert wait_file(lab.dir / "cmd", rf"^udp 127\.0\.0\.10 {other.port}$") == f"udp 127.0.0.10 {other.port}\n"
    finally:
        other.close()


def test_only_the_client_may_send_and_only_answers_come_back(lab, echo):
    d = start_sockd(lab, PERMIT_ALL)
    u = client_socket()
    rep, relay, control = udp_associate((d.host, d.port), expect=("127.0.0.1", u.getsockname()[1]))
    assert rep == REP_OK
    # Another host, and another port of the client's host: dropped.
    for stranger in (client_socket("127.0.0.7"), client_socket()):
        stranger.sendto(udp_header(echo.host, echo.port) + b"stranger", relay)
        stranger.close()
    assert through(u, relay, echo.host, echo.port, b"client")[1] == b"echo client"
    assert [data for _, data in echo.received] == [b"client"]
    # A host the client never sent to cannot reach it through sockd's outgoing socket.
    outgoing = echo.received[0][0]
    intruder = client_socket("127.0.0.8")
    intruder.sendto(b"intrusion", outgoing)
    intruder.close()
    # Had the intruder's datagram come through, it would arrive before this answer.
    assert through(u, relay, echo.host, echo.port, b"two") == ((echo.host, echo.port), b"echo two")
    control.close()
    d.wait_for(r"9 bytes in 2 datagrams from \(unknown\)@127\.0\.0\.1, 19 bytes in 2 datagrams to it, 3 dropped")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1")
def test_ipv6_client_and_destination(lab):
    six = UDPEcho("::1")
    try:
        d = start_sockd(lab, PERMIT_ALL, host="::1")
        rep, relay, control = udp_associate((d.host, d.port), expect=("::", 0))
        assert rep == REP_OK and relay[0] == "::1"
        u = client_socket("::1")
        source, body = through(u, relay, "::1", six.port, b"six")
        assert source == ("::1", six.port) and body == b"echo six"
        # And an IPv4 destination from the IPv6 client: sockd sends from its IPv4 socket.
        four = UDPEcho("127.0.0.9")
        try:
            source, body = through(u, relay, "127.0.0.9", four.port, b"four")
            assert source == ("127.0.0.9", four.port) and body == b"echo four"
        finally:
            four.close()
        control.close()
        d.wait_for(r"terminated -- UDP associate from \(unknown\)@::1")
    finally:
        six.close()


def test_a_flood_of_datagrams_leaves_other_clients_served(lab, echo):
    d = start_sockd(lab, PERMIT_ALL)
    before = hostile.process_rss_kib(d.proc.pid)
    rep, relay, control = udp_associate((d.host, d.port))
    assert rep == REP_OK
    flood = client_socket()
    flood.setblocking(False)
    # Names nobody answers (DNSCACHEIP is the tests' silent loopback address), malformed
    # headers, fragments, and real datagrams, as fast as the client can send them.
    kinds = [udp_header(f"n{i}.invalid", 7) + b"x" for i in range(200)]
    kinds += [b"\0\0", b"\0\0\x01" + udp_header(echo.host, echo.port)[3:] + b"frag", b"\0\0\0\x09" + b"?" * 20]
    kinds += [udp_header(echo.host, echo.port) + b"f" * 1000]
    for i in range(20000):
        try:
            flood.sendto(kinds[i % len(kinds)], relay)
        except BlockingIOError:
            pass
    # Meanwhile another client's CONNECT and a second association both work.
    rep2, relay2, control2 = udp_associate((d.host, d.port))
    assert rep2 == REP_OK
    u = client_socket()
    assert through(u, relay2, echo.host, echo.port, b"calm")[1] == b"echo calm"
    rep3, s = socks5((d.host, d.port), "127.0.0.9", 1)
    assert rep3 == REP_REFUSED, "nothing listens there: sockd tried and said so"
    s.close()
    # Held datagrams and remembered decisions are bounded.
    hostile.assert_memory(hostile.process_rss_kib(d.proc.pid) - before, 16 * 1024, "a flood of datagrams")
    control.close()
    control2.close()
    d.wait_for(r"terminated -- UDP associate from \(unknown\)@127\.0\.0\.1 to 0\.0\.0\.0 \(0\)", count=2)
    assert d.proc.poll() is None, "sockd is still serving"


def test_an_association_keeps_its_rules_across_sighup(lab, echo):
    d = start_sockd(lab, PERMIT_ALL)
    rep, relay, control = udp_associate((d.host, d.port))
    assert rep == REP_OK
    u = client_socket()
    assert through(u, relay, echo.host, echo.port, b"before")[1] == b"echo before"
    mark = d.mark()
    d.config.write_text("deny 0.0.0.0 0.0.0.0\n")
    d.proc.signal(signal.SIGHUP)
    d.wait_for(r"SIGHUP: configuration reloaded", start=mark)
    # The live association decided under the old rules and keeps them, for a new destination too.
    assert through(u, relay, echo.host, echo.port, b"after")[1] == b"echo after"
    other = UDPEcho("127.0.0.11")
    try:
        assert through(u, relay, other.host, other.port, b"new")[1] == b"echo new"
        # A new association lives under the new rules.
        rep2, relay2, control2 = udp_associate((d.host, d.port))
        assert rep2 == REP_OK
        u2 = client_socket()
        u2.sendto(udp_header(other.host, other.port) + b"denied", relay2)
        d.wait_for(rf"refused -- UDP from \(unknown\)@127\.0\.0\.1 to 127\.0\.0\.11 \({other.port}\)", start=mark)
        control2.close()
    finally:
        other.close()
    control.close()
