"""tcpproxy end to end: forwarding (both families, every way of configuring it), real peers
(curl to nginx, iperf3), large transfers with half-close checked by SHA-256, and the PROXY
protocol towards nginx and HAProxy.

Only loopback traffic: 127.0.0.0/8 and ::1. Every tcpproxy runs with -D -L stderr:5 and
DNSCACHEIP=127.53.0.1 (see proxyhelpers.Lab).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time

import pytest

from proxyhelpers import (DNSCACHEIP, Backend, bracket, connect, exchange, free_port, hasher,  # noqa: F401
                          lab, pattern_bytes, read_all, read_line, run, serve_fake_dns, sha256, start_haproxy,
                          start_nginx, system_bin, tagger)

HOSTS = {"v4": "127.0.0.1", "v6": "::1"}


def configure(lab, how: str, front: str, back: str, backend_port: int, extra: str = "") -> tuple[list[str], int]:
    """tcpproxy arguments that forward `front`:PORT to `back`:backend_port, configured `how`:
    with spreadspace's options, Zekoll's configuration file or spreadspace's."""
    if how == "options":
        port = free_port(front)
        return ["-l", front, "-p", str(port), "-r", back, "-o", str(backend_port)], port
    if how == "zekoll":
        # Zekoll's tcpproxy listens on every address; `interface` picks the handler.
        port = free_port("::")
        conf = lab.file("zekoll.conf", f"port {port}\ninterface {front}\n{extra}server {bracket(back)}:{backend_port}\n")
        return ["-f", str(conf)], port
    if how == "spreadspace":
        port = free_port(front)
        conf = lab.file("spreadspace.conf", f"listen {front} {port}\n{{\n  remote: {back} {backend_port};\n{extra}}};\n")
        return ["-c", str(conf)], port
    raise ValueError(how)


# MARK: - Families and configuration forms

@pytest.mark.parametrize("how", ["options", "zekoll", "spreadspace"])
@pytest.mark.parametrize("front,back", [("v4", "v4"), ("v4", "v6"), ("v6", "v4"), ("v6", "v6")])
def test_forwarding_between_families(lab, how, front, back):
    fhost, bhost = HOSTS[front], HOSTS[back]
    backend = lab.backend(tagger("BACKEND"), host=bhost)
    args, port = configure(lab, how, fhost, bhost, backend.port)
    proxy = lab.tcpproxy(*args)

    data, end, me = exchange(fhost, port, b"ping over the proxy\n")
    assert end == "eof", proxy.text()
    first, _, rest = data.partition(b"\n")
    assert first.split()[:2] == [b"BACKEND", bhost.encode()], (data, proxy.text())
    assert rest == b"ping over the proxy\n"
    assert backend.accepted == 1
    proxy.wait_for(r"closed: 20 bytes from client, \d+ bytes to client")
    client = f"[{fhost}]:{me[1]}" if ":" in fhost else f"{fhost}:{me[1]}"
    assert f"from {client}" in proxy.text()


def test_dual_stack_listener_takes_both_families(lab):
    """spreadspace: without -l tcpproxy listens on every IPv6 and IPv4 address."""
    backend = lab.backend(tagger("B"))
    port = free_port("::")
    proxy = lab.tcpproxy("-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    for host in ("127.0.0.1", "::1"):
        data, end, _ = exchange(host, port, b"x")
        assert data.startswith(b"B 127.0.0.1 ") and data.endswith(b"\nx"), (host, data, proxy.text())


def test_remote_resolv_picks_family_of_localhost_name(lab):
    """-R ipv4 with a host name from /etc/hosts (localhost) reaches the IPv4 backend."""
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "localhost", "-R", "ipv4",
                         "-o", str(backend.port))
    data, end, _ = exchange("127.0.0.1", port, b"")
    assert data.startswith(b"B 127.0.0.1 "), (data, proxy.text())


# MARK: - Real peers

def test_curl_through_proxy_to_nginx(lab):
    body = pattern_bytes(300_000, 7)
    www = lab.dir / "www"
    www.mkdir()
    (www / "file.bin").write_bytes(body)
    (www / "index.html").write_text("hello from nginx\n")
    nport = free_port()
    start_nginx(lab, f"server {{ listen 127.0.0.1:{nport}; root {www}; }}", [("127.0.0.1", nport)])
    p4, p6 = free_port(), free_port("::1")
    conf = lab.file("ss.conf", f"listen 127.0.0.1 {p4} {{ remote: 127.0.0.1 {nport}; }};\n"
                               f"listen ::1 {p6} {{ remote: 127.0.0.1 {nport}; }};\n")
    proxy = lab.tcpproxy("-c", conf, listeners=2)
    curl = system_bin("curl")
    for url in (f"http://127.0.0.1:{p4}/file.bin", f"http://[::1]:{p6}/file.bin"):
        out = lab.dir / "out.bin"
        r = run([curl, "-sS", "-g", "--noproxy", "*", "--max-time", "10", "-o", out, url], timeout=15)
        assert r.returncode == 0, (url, r.stderr, proxy.text())
        assert sha256(out.read_bytes()) == sha256(body), url
    r = run([curl, "-sS", "--noproxy", "*", "--max-time", "10", f"http://127.0.0.1:{p4}/"], timeout=15)
    assert r.returncode == 0 and r.stdout == b"hello from nginx\n", r


@pytest.mark.parametrize("streams", [1, 4])
def test_iperf3_through_proxy(lab, streams):
    iperf3 = system_bin("iperf3")
    iport = free_port()
    server = lab.start([iperf3, "-s", "-B", "127.0.0.1", "-p", str(iport), "--forceflush"], name="iperf3-s")
    server.wait_for(r"Server listening on")
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(iport))
    r = run([iperf3, "-c", "127.0.0.1", "-p", str(port), "-t", "1", "-P", str(streams), "-J"], timeout=30)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr, proxy.text())
    result = json.loads(r.stdout)
    assert "error" not in result, result.get("error")
    received = result["end"]["sum_received"]
    assert received["bytes"] > 0 and received["bits_per_second"] > 0, received
    assert len(result["end"]["streams"]) == streams
    print(f"iperf3 -P {streams} through tcpproxy: {received['bits_per_second'] / 1e9:.2f} Gbit/s")
    # The control connection plus one per stream went through the proxy.
    proxy.wait_for(r" to 127\.0\.0\.1:\d+ closed: ", count=streams + 1, timeout=10)


# MARK: - Large transfers, half-close

def transfer(lab, host: str, port: int, up: int, down: int, backend: Backend, proxy) -> None:
    payload = pattern_bytes(up, 1)
    answer_hash = sha256(pattern_bytes(down, 2))
    s = connect(host, port, timeout=60)
    with s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        h = hashlib.sha256()
        n = 0
        buf = bytearray(1 << 20)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = s.recv_into(buf)
            if not got:
                break
            h.update(memoryview(buf)[:got])
            n += got
    assert backend.errors == []
    assert backend.results == [(sha256(payload), up)], proxy.text()[-2000:]
    assert (n, h.hexdigest()) == (down, answer_hash), proxy.text()[-2000:]
    proxy.wait_for(rf"closed: {up} bytes from client, {down} bytes to client", timeout=10)


@pytest.mark.parametrize("buffer", [None, "65536"])
def test_large_transfer_both_directions_with_half_close(lab, buffer):
    """~256 MiB up, the server reads to end of file, then ~256 MiB down (with -b 65536:
    16 MiB each way)."""
    lab.limit(120)
    mib = 256 if buffer is None else 16
    up, down = mib * 2**20 + 4321, mib * 2**20 + 1234
    backend = lab.backend(hasher(pattern_bytes(down, 2)))
    port = free_port()
    extra = ["-b", buffer] if buffer else []
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port), *extra)
    transfer(lab, "127.0.0.1", port, up, down, backend, proxy)


def test_transfer_ipv6_to_ipv4_with_half_close(lab):
    up, down = 16 * 2**20 + 17, 8 * 2**20 + 3
    backend = lab.backend(hasher(pattern_bytes(down, 2)))
    port = free_port("::1")
    conf = lab.file("ss.conf", f"listen ::1 {port} {{ remote: 127.0.0.1 {backend.port}; }};\n")
    proxy = lab.tcpproxy("-c", conf)
    transfer(lab, "::1", port, up, down, backend, proxy)


def test_client_half_close_then_server_talks_long(lab):
    """The client shuts its write side at once; the server's answer arrives in full later."""

    def slow(conn, peer, backend):
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        for i in range(5):
            conn.sendall(f"part {i} after {len(data)} bytes\n".encode())
            time.sleep(0.05)  # the answer trickles in after the client's end of file
        conn.shutdown(socket.SHUT_WR)

    backend = lab.backend(slow)
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    data, end, _ = exchange("127.0.0.1", port, b"abc")
    assert end == "eof"
    assert data == b"".join(f"part {i} after 3 bytes\n".encode() for i in range(5)), proxy.text()


# MARK: - PROXY protocol

def nginx_proxy_protocol(lab) -> int:
    port = free_port()
    start_nginx(lab, f"""server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{ return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; }}
    }}""", [("127.0.0.1", port)])
    return port


def check_reported(lab, host: str, port: int, proxy, source: str | None = None) -> None:
    with connect(host, port, source=source) as s:
        me = s.getsockname()
        s.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data, end = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), (data, proxy.text())
    assert body.decode().split() == [me[0], str(me[1])], (body, me, proxy.text())


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_option_to_nginx(lab, version):
    nport = nginx_proxy_protocol(lab)
    port = free_port("::")
    proxy = lab.tcpproxy("-p", str(port), "-r", "127.0.0.1", "-o", str(nport), "--proxy-protocol", version)
    check_reported(lab, "127.0.0.1", port, proxy)
    check_reported(lab, "127.0.0.1", port, proxy, source="127.0.0.9")  # the client's address, not ours
    check_reported(lab, "::1", port, proxy)


@pytest.mark.parametrize("how,version", [("zekoll", "v1"), ("zekoll", "v2"),
                                         ("spreadspace", "v1"), ("spreadspace", "v2")])
def test_proxy_protocol_directive_to_nginx(lab, how, version):
    nport = nginx_proxy_protocol(lab)
    extra = f"proxy-protocol {version}\n" if how == "zekoll" else f"  proxy-protocol: {version};\n"
    args, port = configure(lab, how, "127.0.0.1", "127.0.0.1", nport, extra)
    proxy = lab.tcpproxy(*args)
    check_reported(lab, "127.0.0.1", port, proxy, source="127.0.0.8")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_to_haproxy_accept_proxy(lab, version):
    hport = free_port()
    start_haproxy(lab, f"""global
    maxconn 100
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{hport} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src] %[src_port]\\n"
""", [("127.0.0.1", hport)])
    port = free_port("::")
    proxy = lab.tcpproxy("-p", str(port), "-r", "127.0.0.1", "-o", str(hport), "--proxy-protocol", version)
    check_reported(lab, "127.0.0.1", port, proxy, source="127.0.0.10")
    check_reported(lab, "::1", port, proxy)


def test_proxy_protocol_v1_header_bytes(lab):
    """The exact v1 line a server receives: PROXY TCP4 client proxy cport pport."""
    got = []

    def record(conn, peer, backend):
        got.append(read_line(conn))
        conn.sendall(b"ok\n")

    backend = lab.backend(record)
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port),
                         "--proxy-protocol", "v1")
    data, end, me = exchange("127.0.0.1", port, b"", source="127.0.0.4")
    assert data == b"ok\n", proxy.text()
    assert got == [f"PROXY TCP4 127.0.0.4 127.0.0.1 {me[1]} {port}\r\n".encode()]


# MARK: - More forms of listening and forwarding

def test_spreadspace_listen_any_takes_both_families(lab):
    backend = lab.backend(tagger("B"))
    port = free_port("::")
    conf = lab.file("ss.conf", f"listen * {port}\n{{\n  remote: 127.0.0.1 {backend.port};\n}};\n")
    proxy = lab.tcpproxy("-c", conf)
    for host in ("127.0.0.1", "::1"):
        data, _, _ = exchange(host, port, b"x")
        assert data.startswith(b"B 127.0.0.1 "), (host, data, proxy.text())


def test_spreadspace_resolv_ipv4_listens_on_ipv4_only(lab):
    backend = lab.backend(tagger("B"))
    port = free_port("::")
    conf = lab.file("ss.conf", f"listen * {port}\n{{\n  resolv: ipv4;\n  remote: 127.0.0.1 {backend.port};\n}};\n")
    proxy = lab.tcpproxy("-c", conf)
    data, _, _ = exchange("127.0.0.1", port, b"x")
    assert data.startswith(b"B "), proxy.text()
    with pytest.raises(ConnectionRefusedError):
        exchange("::1", port, b"x", timeout=2)


def test_server_without_port_uses_listening_port(lab):
    """Zekoll: `server host` without a port forwards to the port tcpproxy listens on."""
    port = free_port("127.0.0.1", also=["127.0.0.2"])
    backend = lab.backend(tagger("SAME"), host="127.0.0.2", port=port)
    proxy = lab.tcpproxy("--bind", f"127.0.0.1:{port}", "127.0.0.2")
    data, _, _ = exchange("127.0.0.1", port, b"x")
    assert data.startswith(b"SAME ") and data.endswith(b"\nx"), (data, proxy.text())


def test_bind_port_only_with_server_argument_takes_both_families(lab):
    backend = lab.backend(tagger("B"), host="::1")
    port = free_port("::")
    proxy = lab.tcpproxy("--bind", str(port), f"[::1]:{backend.port}")
    for host in ("127.0.0.1", "::1"):
        data, _, _ = exchange(host, port, b"x")
        assert data.startswith(b"B ::1 ") and data.endswith(b"\nx"), (host, data, proxy.text())


def test_many_simultaneous_connections(lab):
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    socks = []
    try:
        for i in range(150):
            socks.append(connect("127.0.0.1", port))
        for s in socks:
            assert read_line(s).startswith(b"B ")
        for i, s in enumerate(socks):
            s.sendall(b"conn %d\n" % i)
        for i, s in enumerate(socks):
            assert read_line(s) == b"conn %d\n" % i, proxy.text()[-2000:]
    finally:
        for s in socks:
            s.close()
    assert backend.accepted == 150


# MARK: - Names through DNS (a fake DNS server on DNSCACHEIP)

@pytest.fixture
def fake_dns():
    yield from serve_fake_dns(DNSCACHEIP)


def test_remote_names_resolved_through_dns(lab, fake_dns):
    fake_dns.set_a("backend4.bastion.test", "127.0.0.1")
    fake_dns.set_aaaa("backend6.bastion.test", "::1")
    b4, b6 = lab.backend(tagger("V4")), lab.backend(tagger("V6"), host="::1")
    p1, p2 = free_port(), free_port()
    conf = lab.file("ss.conf", f"listen 127.0.0.1 {p1} {{ remote: backend4.bastion.test {b4.port}; }};\n"
                               f"listen 127.0.0.1 {p2} {{ remote: backend6.bastion.test {b6.port}; remote-resolv: ipv6; }};\n")
    proxy = lab.tcpproxy("-c", conf, listeners=2)
    assert exchange("127.0.0.1", p1, b"")[0].startswith(b"V4 127.0.0.1 "), proxy.text()
    assert exchange("127.0.0.1", p2, b"")[0].startswith(b"V6 ::1 "), proxy.text()


def test_unknown_remote_name_fails_at_start(lab, fake_dns):
    port = free_port()
    start = time.monotonic()
    r = lab.tcpproxy_run("-D", "-L", "stderr:5", "-l", "127.0.0.1", "-p", str(port),
                         "-r", "no-such-host.bastion.test", "-o", "80", timeout=20)
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0 and "no-such-host.bastion.test" in err, (r.returncode, err)
    assert time.monotonic() - start < 10


# MARK: - inetd mode: the relay and the PROXY header there too

def inetd_tcpserver(lab, *program):
    from proxyhelpers import bastion_bin
    proc = lab.start([bastion_bin("tcpserver"), "-1", "-H", "-R", "-l", "0", "127.0.0.1", "0", *program],
                     name="tcpserver")
    return proc, int(proc.wait_for(r"^(\d+)$").group(1))


def test_inetd_mode_large_transfer_with_half_close(lab):
    from proxyhelpers import bastion_bin
    up, down = 16 * 2**20 + 5, 16 * 2**20 + 7
    backend = lab.backend(hasher(pattern_bytes(down, 2)))
    t, port = inetd_tcpserver(lab, bastion_bin("tcpproxy"), "-D", "-L", "stderr:5", f"127.0.0.1:{backend.port}")
    transfer(lab, "127.0.0.1", port, up, down, backend, t)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_inetd_mode_proxy_protocol_to_nginx(lab, version):
    from proxyhelpers import bastion_bin
    nport = nginx_proxy_protocol(lab)
    t, port = inetd_tcpserver(lab, bastion_bin("tcpproxy"), "-D", "-L", "stderr:5", "--proxy-protocol", version,
                              f"127.0.0.1:{nport}")
    check_reported(lab, "127.0.0.1", port, t, source="127.0.0.12")
