"""tcpproxy with TLS end to end: termination (TLS from the client, plain to the server),
origination (plain from the client, TLS to the server) and both at once, against real
clients and servers: Python's ssl module (OpenSSL), openssl s_client and s_server, curl,
and nginx serving TLS itself. Wrong certificates are refused with a clear log line; 256 MiB
go through re-encryption checked by SHA-256 with half-close both ways.

Certificates come from tlscerts (made with `openssl req` in a session directory). Only
loopback traffic.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import subprocess
import threading

import pytest

from proxyhelpers import (Backend, free_port, hasher, lab, pattern_bytes, read_all, start_nginx,  # noqa: F401
                          system_bin, tagger, wait_port)
from tlscerts import tls_certs  # noqa: F401

H = "127.0.0.1"


def client_context(certs, *, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    if cert:
        context.load_cert_chain(str(certs[cert]), str(certs[cert + "_key"]))
    return context


class Seen:
    """What a finished TLS client saw of its connection."""

    def __init__(self, s: ssl.SSLSocket) -> None:
        self.version = s.version()
        self.cipher = s.cipher()[0]
        self.peercert = s.getpeercert()


def tls_exchange(port: int, payload: bytes, context: ssl.SSLContext, name: str = "localhost") -> tuple[bytes, Seen]:
    """Sends `payload` over TLS, reads to the end, closes."""
    raw = socket.create_connection((H, port), timeout=10)
    with context.wrap_socket(raw, server_hostname=name) as s:
        s.sendall(payload)
        chunks = []
        while True:
            got = s.recv(65536)
            if not got:
                break
            chunks.append(got)
        return b"".join(chunks), Seen(s)


def echo_once(conn: socket.socket, peer, backend: Backend) -> None:
    data = conn.recv(65536)
    conn.sendall(b"ECHO " + data)
    conn.shutdown(socket.SHUT_WR)


def terminating(lab, certs, backend_port: int, *extra: str, key: str = "server"):
    port = free_port(H)
    proxy = lab.tcpproxy("-l", H, "-p", str(port), "-r", H, "-o", str(backend_port),
                         "--tls-cert", str(certs[key]), "--tls-key", str(certs[key + "_key"]), *extra)
    return proxy, port


def test_termination_python_and_openssl_clients(lab, tls_certs):
    backend = lab.backend(echo_once)
    proxy, port = terminating(lab, tls_certs, backend.port)
    data, s = tls_exchange(port, b"hello\n", client_context(tls_certs))
    assert data == b"ECHO hello\n"
    assert s.version == "TLSv1.3"
    line = proxy.wait_for(r"connection 1 from .* to 127\.0\.0\.1:\d+, TLS TLSv1\.3 (\S+) sni=localhost")
    assert line.group(1) == s.cipher
    proxy.wait_for(r"connection 1 .* closed: 6 bytes from client, 11 bytes to client")

    # openssl s_client, TLS 1.2 forced: the defaults still allow it, with an ECDHE cipher.
    out = subprocess.run(
        [system_bin("openssl"), "s_client", "-connect", f"{H}:{port}", "-tls1_2", "-CAfile", str(tls_certs["ca"]),
         "-verify_hostname", "localhost", "-verify_return_error", "-ign_eof"],
        input=b"from s_client\n", capture_output=True, timeout=20)
    assert b"ECHO from s_client" in out.stdout, out.stdout.decode(errors="replace")
    assert b"Verification: OK" in out.stdout
    proxy.wait_for(r"connection 2 .* TLS TLSv1\.2 ECDHE-ECDSA-")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_protocols_refused_and_options_change_them(lab, tls_certs):
    backend = lab.backend(echo_once)
    proxy, port = terminating(lab, tls_certs, backend.port)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(tls_certs["ca"]))
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        tls_exchange(port, b"x", old)
    proxy.wait_for(r"connection 1 .*: TLS handshake failed: .*, closed")

    only13 = lab.backend(echo_once)
    proxy13, port13 = terminating(lab, tls_certs, only13.port, "--tls-protocols", "TLSv1.3")
    tls12 = client_context(tls_certs)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        tls_exchange(port13, b"x", tls12)
    proxy13.wait_for(r"TLS handshake failed: .*protocol.*, closed")


def test_sni_chooses_the_certificate(lab, tls_certs):
    backend = lab.backend(echo_once)
    proxy, port = terminating(lab, tls_certs, backend.port, "--tls-cert", str(tls_certs["other"]),
                              "--tls-key", str(tls_certs["other_key"]))
    data, s = tls_exchange(port, b"sni\n", client_context(tls_certs), name="other.test")
    assert data == b"ECHO sni\n"
    assert ("commonName", "other.test") in [item for rdn in s.peercert["subject"] for item in rdn]
    data, s = tls_exchange(port, b"default\n", client_context(tls_certs), name="localhost")
    assert data == b"ECHO default\n"
    proxy.wait_for(r"sni=other\.test")


def test_mutual_tls_and_the_access_control_program(lab, tls_certs):
    backend = lab.backend(echo_once)
    seen = lab.dir / "acp.env"
    acp = lab.script("acp.sh", f"#!/bin/sh\nenv | grep '^PROXY_TLS_' | sort > {seen}\nexit 0\n")
    proxy, port = terminating(lab, tls_certs, backend.port, "--tls-client-ca", str(tls_certs["ca"]), "-a", str(acp))
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError)):
        data, _ = tls_exchange(port, b"anonymous\n", client_context(tls_certs))
        assert not data
    proxy.wait_for(r"connection 1 .*: TLS handshake failed: .*certificate.*, closed")
    assert backend.accepted == 0

    data, _ = tls_exchange(port, b"known\n", client_context(tls_certs, cert="client"))
    assert data == b"ECHO known\n"
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert env["PROXY_TLS_VERSION"] == "TLSv1.3"
    assert env["PROXY_TLS_CIPHER"].startswith("TLS_")
    assert env["PROXY_TLS_SNI"] == "localhost"
    assert "CN=client1" in env["PROXY_TLS_CLIENT_SUBJECT"]


def resuming_exchange(port: int, context: ssl.SSLContext, name: str,
                      session: ssl.SSLSession | None = None) -> tuple[bytes, ssl.SSLSession, bool]:
    """Sends a line over TLS offering `session`, reads to the end (and so the tickets): the answer,
    the session to offer next time, whether this one was resumed."""
    raw = socket.create_connection((H, port), timeout=10)
    with context.wrap_socket(raw, server_hostname=name, session=session) as s:
        s.sendall(b"again\n")
        data, _ = read_all(s)
        return data, s.session, s.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"])
def test_sessions_resume_under_mutual_tls(lab, tls_certs, version):
    # Found by the tls-server fuzz harness's recorded resumptions: with a client CA, every
    # resumption failed with an internal error alert, OpenSSL's "session id context
    # uninitialized", so a client that caches sessions (browsers, curl) failed its second
    # connection.
    backend = lab.backend(echo_once)
    proxy, port = terminating(lab, tls_certs, backend.port, "--tls-client-ca", str(tls_certs["ca"]))
    context = client_context(tls_certs, cert="client")
    context.maximum_version = version
    data, session, resumed = resuming_exchange(port, context, "localhost")
    assert data == b"ECHO again\n" and not resumed
    data, _, resumed = resuming_exchange(port, context, "localhost", session)
    assert data == b"ECHO again\n" and resumed
    # With one certificate the SNI was lost from resumed TLS 1.2 sessions (no SNI callback, so
    # OpenSSL kept no name in the session): the log, PROXY_TLS_SNI and the PROXY header lacked it.
    proxy.wait_for(r"connection 2 .* TLS TLSv1\.[23] \S+ resumed sni=localhost subject=.*CN=client1")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"])
def test_sessions_resume_for_every_certificate_sni_chooses(lab, tls_certs, version):
    # Found by tls-server's recorded resumptions too: a ticket issued after SNI chose another
    # certificate was encrypted with that certificate's keys but looked up among the default's,
    # so it never decrypted and every such client made a full handshake each time.
    backend = lab.backend(echo_once)
    proxy, port = terminating(lab, tls_certs, backend.port, "--tls-cert", str(tls_certs["other"]),
                              "--tls-key", str(tls_certs["other_key"]))
    context = client_context(tls_certs)
    context.maximum_version = version
    for name in ("other.test", "localhost"):
        data, session, resumed = resuming_exchange(port, context, name)
        assert data == b"ECHO again\n" and not resumed
        data, _, resumed = resuming_exchange(port, context, name, session)
        assert data == b"ECHO again\n" and resumed, name
    proxy.wait_for(r"connection 2 .* TLS TLSv1\.[23] \S+ resumed sni=other\.test")
    proxy.wait_for(r"connection 4 .* TLS TLSv1\.[23] \S+ resumed sni=localhost")


def test_proxy_protocol_v2_carries_the_tls_facts(lab, tls_certs):
    got = {}

    def header(conn, peer, backend):
        head = conn.recv(16)
        length = struct.unpack("!H", head[14:16])[0]
        body = b""
        while len(body) < length:
            body += conn.recv(length - len(body))
        got["tlvs"] = body[12:]
        conn.sendall(b"ok")
        conn.shutdown(socket.SHUT_WR)

    backend = lab.backend(header)
    proxy, port = terminating(lab, tls_certs, backend.port, "--proxy-protocol", "v2")
    data, s = tls_exchange(port, b"", client_context(tls_certs))
    assert data == b"ok"
    tlvs, found = got["tlvs"], {}
    while tlvs:
        kind, size = tlvs[0], struct.unpack("!H", tlvs[1:3])[0]
        found[kind], tlvs = tlvs[3:3 + size], tlvs[3 + size:]
    assert found[0x02] == b"localhost"
    ssl_tlv = found[0x20]
    assert ssl_tlv[0] & 1 and struct.unpack("!I", ssl_tlv[1:5])[0] == 0
    subs, rest = {}, ssl_tlv[5:]
    while rest:
        kind, size = rest[0], struct.unpack("!H", rest[1:3])[0]
        subs[kind], rest = rest[3:3 + size], rest[3 + size:]
    assert subs[0x21] == b"TLSv1.3" and subs[0x23].decode() == s.cipher


def nginx_tls(lab, certs, key: str = "server") -> int:
    port = free_port(H)
    www = lab.dir / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("served by nginx over TLS\n")
    start_nginx(lab, f"""server {{
        listen {H}:{port} ssl;
        ssl_certificate {certs[key]};
        ssl_certificate_key {certs[key + "_key"]};
        root {www};
    }}""", [(H, port)])
    return port


def test_origination_to_nginx_with_curl(lab, tls_certs):
    nport = nginx_tls(lab, tls_certs)
    port = free_port(H)
    proxy = lab.tcpproxy("-l", H, "-p", str(port), "-r", "localhost", "-o", str(nport), "--remote-tls",
                         "--remote-tls-ca", str(tls_certs["ca"]))
    out = subprocess.run([system_bin("curl"), "-sS", "--max-time", "10", f"http://{H}:{port}/index.html"],
                         capture_output=True, timeout=20)
    assert out.stdout == b"served by nginx over TLS\n", out.stderr
    proxy.wait_for(r"TLS with the server: TLSv1\.[23] \S+ sni=localhost subject=CN=localhost$")


def test_termination_with_curl_to_nginx_reencrypted(lab, tls_certs):
    nport = nginx_tls(lab, tls_certs)
    port = free_port(H)
    lab.tcpproxy("-l", H, "-p", str(port), "-r", "localhost", "-o", str(nport),
                 "--tls-cert", str(tls_certs["server"]), "--tls-key", str(tls_certs["server_key"]),
                 "--remote-tls", "--remote-tls-ca", str(tls_certs["ca"]))
    out = subprocess.run([system_bin("curl"), "-sS", "--max-time", "10", "--cacert", str(tls_certs["ca"]),
                          "--resolve", f"localhost:{port}:{H}", f"https://localhost:{port}/index.html"],
                         capture_output=True, timeout=20)
    assert out.stdout == b"served by nginx over TLS\n", out.stderr


@pytest.mark.parametrize("key,reason", [
    ("wrongname", "hostname mismatch"),
    ("expired", "certificate has expired"),
    ("selfsigned", "self-signed certificate"),
])
def test_wrong_server_certificates_refused(lab, tls_certs, key, reason):
    nport = nginx_tls(lab, tls_certs, key)
    port = free_port(H)
    proxy = lab.tcpproxy("-l", H, "-p", str(port), "-r", "localhost", "-o", str(nport), "--remote-tls",
                         "--remote-tls-ca", str(tls_certs["ca"]))
    s = socket.create_connection((H, port), timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data, _ = read_all(s)
    assert data == b""
    proxy.wait_for(rf"TLS with the server failed: certificate verify failed: {reason}")

    # --remote-tls-insecure: explicit, and said in the log.
    insecure = free_port(H)
    proxy2 = lab.tcpproxy("-l", H, "-p", str(insecure), "-r", "localhost", "-o", str(nport),
                          "--remote-tls-insecure")
    s = socket.create_connection((H, insecure), timeout=10)
    s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data, _ = read_all(s)
    assert data.endswith(b"served by nginx over TLS\n")
    proxy2.wait_for(r"TLS with the server: .* \(not verified\)")


def reversing_s_server(lab, tls_certs, *extra):
    """openssl s_server -rev (each line sent back reversed) with the localhost certificate."""
    sport = free_port(H)
    server = lab.start([system_bin("openssl"), "s_server", "-accept", f"{H}:{sport}", "-cert", str(tls_certs["server"]),
                        "-key", str(tls_certs["server_key"]), *extra, "-rev"], name="s_server")
    wait_port(H, sport, proc=server)
    return server, sport


def assert_reversed(port, text):
    """A line through the proxy on `port` comes back reversed."""
    s = socket.create_connection((H, port), timeout=10)
    s.sendall(text + b"\n")
    got = b""
    while text[::-1] not in got:
        chunk = s.recv(1024)
        assert chunk, got
        got += chunk
    s.close()


def test_openssl_s_server_as_the_origin_half_closes(lab, tls_certs):
    _, sport = reversing_s_server(lab, tls_certs)
    port = free_port(H)
    lab.tcpproxy("-l", H, "-p", str(port), "-r", H, "-o", str(sport), "--remote-tls", "--remote-tls-ca",
                 str(tls_certs["ca"]))
    assert_reversed(port, b"abcdef")


def test_256_mib_through_termination_and_reencryption(lab, tls_certs):
    lab.limit(240)
    size = 256 << 20
    up = pattern_bytes(size, 1)
    down = pattern_bytes(size // 4, 2)

    # The origin: a TLS server (Python) that hashes what comes, then answers and closes.
    origin_port = free_port(H)
    origin_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    origin_context.load_cert_chain(str(tls_certs["server"]), str(tls_certs["server_key"]))
    listener = socket.create_server((H, origin_port))
    result = {}

    def origin():
        raw, _ = listener.accept()
        conn = origin_context.wrap_socket(raw, server_side=True)
        h, n = hashlib.sha256(), 0
        while True:
            got = conn.recv(1 << 20)
            if not got:
                break
            h.update(got)
            n += len(got)
        result["up"] = (h.hexdigest(), n)
        conn.sendall(down)
        conn.unwrap().close()  # close_notify, then FIN

    thread = threading.Thread(target=origin, daemon=True)
    thread.start()
    port = free_port(H)
    proxy = lab.tcpproxy("-l", H, "-p", str(port), "-r", "localhost", "-o", str(origin_port),
                         "--tls-cert", str(tls_certs["server"]), "--tls-key", str(tls_certs["server_key"]),
                         "--remote-tls", "--remote-tls-ca", str(tls_certs["ca"]))
    raw = socket.create_connection((H, port), timeout=60)
    s = client_context(tls_certs).wrap_socket(raw, server_hostname="localhost")
    view = memoryview(up)
    for at in range(0, size, 1 << 20):
        s.sendall(view[at:at + (1 << 20)])
    # Half-close: a FIN under the TLS connection (Python's ssl cannot send close_notify and go
    # on reading); the proxy ends the stream toward the origin with close_notify, and the
    # origin answers after it.
    with socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_STREAM) as under:
        under.shutdown(socket.SHUT_WR)
    h, n = hashlib.sha256(), 0
    while True:
        got = s.recv(1 << 20)
        if not got:
            break
        h.update(got)
        n += len(got)
    thread.join(120)
    listener.close()
    assert result["up"] == (hashlib.sha256(up).hexdigest(), size)
    assert (h.hexdigest(), n) == (hashlib.sha256(down).hexdigest(), len(down))
    proxy.wait_for(rf"closed: {size} bytes from client, {len(down)} bytes to client, .* \(completed\)")


# MARK: - Configuration files, reloads, start-up errors, stalled handshakes

def peer_names(port: int, certs, name: str = "localhost") -> list[str]:
    """The DNS names of the certificate the TLS listener on `port` shows for SNI `name`."""
    context = client_context(certs)
    context.check_hostname = False
    with context.wrap_socket(socket.create_connection((H, port), timeout=10), server_hostname=name) as s:
        return [value for kind, value in s.getpeercert().get("subjectAltName", ()) if kind == "DNS"]


def test_configuration_files_and_sighup_reload(lab, tls_certs):
    import signal
    backend = lab.backend(echo_once)
    port = free_port(H)
    stanza = "listen {h} {p} {{\n  remote: {h} {b};\n  tls-cert: {c};\n  tls-key: {k};\n}};\n"
    conf = lab.file("tcpproxy.conf", stanza.format(h=H, p=port, b=backend.port, c=tls_certs["server"],
                                                    k=tls_certs["server_key"]))
    proxy = lab.tcpproxy("-c", str(conf))
    assert peer_names(port, tls_certs) == ["localhost"]

    # A certificate swapped in: connections after the reload get it.
    conf.write_text(stanza.format(h=H, p=port, b=backend.port, c=tls_certs["other"], k=tls_certs["other_key"]))
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    proxy.wait_for(r"reload", start=mark)
    for _ in range(50):
        if peer_names(port, tls_certs, "other.test") == ["other.test"]:
            break
    assert peer_names(port, tls_certs, "other.test") == ["other.test"]

    # A key that does not fit: the old certificate stays, and the log says why.
    conf.write_text(stanza.format(h=H, p=port, b=backend.port, c=tls_certs["server"], k=tls_certs["other_key"]))
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    proxy.wait_for(r"SIGHUP: configuration not reloaded, keeping the old one: .*other\.key", start=mark)
    assert peer_names(port, tls_certs, "other.test") == ["other.test"]
    data, _ = tls_exchange(port, b"still\n", client_context(tls_certs), name="other.test")
    assert data == b"ECHO still\n"


def test_zekoll_dialect_and_the_listing(lab, tls_certs):
    backend = lab.backend(echo_once)
    port = free_port("::")
    conf = lab.file("zekoll.conf", f"port {port}\nserver {H}:{backend.port}\ntls-cert {tls_certs['server']}\n"
                                    f"tls-key {tls_certs['server_key']}\n")
    listing = lab.tcpproxy_run("-f", str(conf), "-zzz")
    assert listing.returncode == 0
    assert f"tls-cert {tls_certs['server']}\n" in listing.stdout.decode()
    lab.tcpproxy("-f", str(conf), listeners=0)
    wait_port(H, port)
    data, _ = tls_exchange(port, b"zekoll\n", client_context(tls_certs))
    assert data == b"ECHO zekoll\n"


def test_command_line_sighup_rereads_the_tls_files(lab, tls_certs):
    import shutil
    import signal
    backend = lab.backend(echo_once)
    cert, key = lab.dir / "live.pem", lab.dir / "live.key"
    shutil.copy(tls_certs["server"], cert)
    shutil.copy(tls_certs["server_key"], key)
    port = free_port(H)
    proxy = lab.tcpproxy("-l", H, "-p", str(port), "-r", H, "-o", str(backend.port), "--tls-cert", str(cert),
                         "--tls-key", str(key))
    shutil.copy(tls_certs["other"], cert)
    shutil.copy(tls_certs["other_key"], key)
    mark = proxy.mark()
    proxy.signal(signal.SIGHUP)
    proxy.wait_for(r"SIGHUP: no configuration file \(configured on the command line\): re-reading the TLS files",
                   start=mark)
    for _ in range(50):
        if peer_names(port, tls_certs, "other.test") == ["other.test"]:
            break
    assert peer_names(port, tls_certs, "other.test") == ["other.test"]

    # Without TLS files it stays ignored, as spreadspace's page says.
    plain = free_port(H)
    quiet = lab.tcpproxy("-l", H, "-p", str(plain), "-r", H, "-o", str(backend.port))
    quiet.signal(signal.SIGHUP)
    quiet.wait_for(r"SIGHUP: no configuration file to reload \(configured on the command line\), ignored")


def test_start_up_errors_name_the_file(lab, tls_certs):
    port = free_port(H)
    missing = lab.tcpproxy_run("-D", "-L", "stderr:5", "-l", H, "-p", str(port), "-r", H, "-o", "1",
                               "--tls-cert", str(lab.dir / "none.pem"), "--tls-key", str(tls_certs["server_key"]))
    assert missing.returncode != 0
    assert b"none.pem" in missing.stderr, missing.stderr
    unpaired = lab.tcpproxy_run("-D", "-l", H, "-p", str(port), "-r", H, "-o", "1", "--tls-cert", "a.pem")
    assert unpaired.returncode != 0
    assert b"tls-cert and tls-key go in pairs" in unpaired.stderr
    insecure = free_port(H)
    proxy = lab.tcpproxy("-l", H, "-p", str(insecure), "-r", H, "-o", "1", "--remote-tls-insecure")
    proxy.wait_for(r"TLS toward the server is not verified \(insecure\)")


def test_stalled_handshakes_hold_little_and_block_nobody(lab, tls_certs):
    from hostile import assert_memory
    lab.limit(120)
    backend = lab.backend(echo_once)
    proxy, port = terminating(lab, tls_certs, backend.port, "--timeout", "3")
    pid = int(proxy.wait_for(r"worker (\d+) serves").group(1))

    def rss_kib() -> int:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    # One handshake first: the first one brings OpenSSL's pages in.
    assert tls_exchange(port, b"warm\n", client_context(tls_certs))[0] == b"ECHO warm\n"
    before = rss_kib()
    # 500 clients that open a connection and send half a ClientHello, then nothing.
    hello = bytes.fromhex("160301") + struct.pack("!H", 512) + bytes(100)
    stalled = []
    for _ in range(500):
        s = socket.create_connection((H, port), timeout=10)
        s.sendall(hello)
        stalled.append(s)
    for i in range(20):
        data, _ = tls_exchange(port, f"served {i}\n".encode(), client_context(tls_certs))
        assert data == f"ECHO served {i}\n".encode()
    grown = rss_kib() - before
    # A stalled handshake holds OpenSSL's state and buffers: a record's read buffer and the
    # handshake message buffer (16 KiB each) and the connection (about 8 KiB); 47 KiB were
    # measured in all, the session's own part included.
    assert_memory(grown, 500 * 64, "500 stalled handshakes")
    # The handshake timeout (--timeout) closes them.
    proxy.wait_for(r"TLS handshake failed: the handshake took longer than", count=500, timeout=30)
    for s in stalled:
        s.close()


def test_inetd_mode_terminates_tls(lab, tls_certs):
    from proxyhelpers import bastion_bin
    backend = lab.backend(echo_once)
    server = lab.start([bastion_bin("tcpserver"), "-1", "-H", "-R", "-l", "0", H, "0", bastion_bin("tcpproxy"), "-D", "-L",
                        "stderr:5", "--tls-cert", str(tls_certs["server"]), "--tls-key", str(tls_certs["server_key"]),
                        f"{H}:{backend.port}"], name="tcpserver")
    port = int(server.wait_for(r"^(\d+)$").group(1))
    for i in range(3):
        data, seen = tls_exchange(port, f"inetd {i}\n".encode(), client_context(tls_certs))
        assert data == f"ECHO inetd {i}\n".encode()
        assert seen.version == "TLSv1.3"
    server.wait_for(r"TLS TLSv1\.3 ", count=3)


def test_client_certificate_shown_to_a_server_that_asks(lab, tls_certs):
    server, sport = reversing_s_server(lab, tls_certs, "-Verify", "1", "-CAfile", str(tls_certs["ca"]),
                                       "-verify_return_error")
    port = free_port(H)
    lab.tcpproxy("-l", H, "-p", str(port), "-r", "localhost", "-o", str(sport), "--remote-tls-ca", str(tls_certs["ca"]),
                 "--remote-tls-cert", str(tls_certs["client"]), "--remote-tls-key", str(tls_certs["client_key"]))
    assert_reversed(port, b"abc")
    server.wait_for(r"CN\s*=\s*client1")


def test_ocsp_response_stapled(lab, tls_certs):
    from tlscerts import ocsp_response
    response = ocsp_response(tls_certs, "server", lab.dir / "server-ocsp.der")
    backend = lab.backend(echo_once)
    proxy, port = terminating(lab, tls_certs, backend.port, "--tls-ocsp", str(response))

    def status(*extra):
        out = subprocess.run(
            [system_bin("openssl"), "s_client", "-connect", f"{H}:{port}", "-CAfile", str(tls_certs["ca"]),
             "-verify_return_error", *extra], input=b"", capture_output=True, timeout=20)
        return out.stdout.decode(errors="replace")

    for protocol in ("-tls1_3", "-tls1_2"):
        text = status("-status", protocol)
        assert "OCSP Response Status: successful" in text, text
        assert "Cert Status: good" in text, text
    # A client that does not ask gets none.
    assert "OCSP Response Status" not in status()
    proxy.wait_for(r"connection 3 .* closed")

    # The response belongs to the certificate before it: a second certificate without one
    # staples nothing.
    port2 = free_port(H)
    lab.tcpproxy("-l", H, "-p", str(port2), "-r", H, "-o", str(backend.port),
                 "--tls-cert", str(tls_certs["server"]), "--tls-key", str(tls_certs["server_key"]),
                 "--tls-ocsp", str(response), "--tls-cert", str(tls_certs["other"]), "--tls-key",
                 str(tls_certs["other_key"]))
    out = subprocess.run(
        [system_bin("openssl"), "s_client", "-connect", f"{H}:{port2}", "-servername", "other.test", "-status"],
        input=b"", capture_output=True, timeout=20)
    assert b"OCSP response: no response sent" in out.stdout, out.stdout

    empty = lab.dir / "empty.der"
    empty.write_bytes(b"")
    failed = lab.tcpproxy_run("-D", "-l", H, "-p", str(free_port(H)), "-r", H, "-o", "1", "--tls-cert",
                              str(tls_certs["server"]), "--tls-key", str(tls_certs["server_key"]), "--tls-ocsp",
                              str(empty))
    assert failed.returncode != 0 and b"empty.der" in failed.stderr, failed.stderr
