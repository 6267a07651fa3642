"""pop3.proxy's TLS end to end, on loopback: STLS (RFC 2595) and POP3S toward the clients,
STLS and POP3S toward the server, with the test CA's certificates (tlscerts.py).

Real clients: openssl s_client -starttls pop3, curl (pop3s:// and pop3:// with --ssl-reqd,
which is STLS), fetchmail (ssl, and STLS), Python's poplib (stls(), POP3_SSL). Real servers:
Dovecot with TLS (STLS on its port, POP3S on another) and openssl s_server with a certificate
for the wrong name.
"""

from __future__ import annotations

import poplib
import shutil
import signal
import socket
import ssl
import subprocess

import pytest

from pop3helpers import (POP3, SMALL_MESSAGES, Dovecot, daemon, fetchmail, message_dots, message_8bit, proxy_bin,
                         under_tcpserver)
from proxyhelpers import free_port, lab, system_bin, wait_port  # noqa: F401  (lab: fixture)
from tlscerts import tls_certs  # noqa: F401  (fixture)

USER, PASSWORD = "bob", Dovecot.PASSWORD


@pytest.fixture(scope="module")
def plain_dovecot():
    server = Dovecot({"bob": SMALL_MESSAGES, "short": [message_dots(), message_8bit()]})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_dovecot(tls_certs):
    # Dovecot reads its certificate as root at start: a copy it may read whatever the mode.
    server = Dovecot({"bob": SMALL_MESSAGES}, tls=(tls_certs["server"], tls_certs["server_key"]))
    yield server
    server.stop()


def certificate(certs, name: str = "server") -> list[str]:
    return ["--tls-cert", str(certs[name]), "--tls-key", str(certs[name + "_key"])]


def client_context(certs) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    return context


def retrieve_all(c: POP3) -> list[bytes]:
    assert c.login(USER, PASSWORD).startswith(b"+OK")
    return [c.ask(f"RETR {n}") for n in range(1, len(SMALL_MESSAGES) + 1)] + [c.ask("QUIT")]


def direct_answers(dovecot) -> list[bytes]:
    with POP3(dovecot.port) as c:
        return retrieve_all(c)


def test_stls_with_python_and_openssl_s_client(lab, tls_certs, plain_dovecot):
    proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs))
    with proxy.client() as c:
        capabilities = c.ask("CAPA")
        assert b"\r\nSTLS\r\n" in capabilities, capabilities
        assert c.stls(client_context(tls_certs)).startswith(b"+OK")
        assert b"STLS" not in c.ask("CAPA")
        assert c.ask("STLS") == b"-ERR TLS is already active\r\n"
        assert retrieve_all(c) == direct_answers(plain_dovecot)
    proxy.wait_for(r"TLS with the client: TLSv1\.3 \S+ sni=localhost")

    out = subprocess.run(
        [system_bin("openssl"), "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-starttls", "pop3",
         "-CAfile", str(tls_certs["ca"]), "-verify_hostname", "localhost", "-verify_return_error", "-crlf",
         "-quiet", "-tls1_2"],
        input=f"USER {USER}\nPASS {PASSWORD}\nSTAT\nQUIT\n".encode(), capture_output=True, timeout=30)
    text = out.stdout.decode(errors="replace")
    assert "+OK Logged in." in text and f"+OK {len(SMALL_MESSAGES)} " in text, text + out.stderr.decode()
    proxy.wait_for(r"TLS with the client: TLSv1\.2 ECDHE-ECDSA-")


def test_require_tls_refuses_the_login_in_the_clear(lab, tls_certs, plain_dovecot):
    proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs), "--require-tls")
    with proxy.client() as c:
        assert b"USER" not in c.ask("CAPA")
        refused = c.command(f"USER {USER}")
        assert refused.startswith(b"-ERR [AUTH]") and b"STLS" in refused, refused
        assert c.stls(client_context(tls_certs)).startswith(b"+OK")
        assert b"USER" in c.ask("CAPA")
        assert c.login(USER, PASSWORD).startswith(b"+OK")
        assert c.ask("QUIT").startswith(b"+OK")
    proxy.wait_for(r"command USER refused: TLS required \(--require-tls\)")
    # poplib's stls() is how a Python client gets there.
    p = poplib.POP3("127.0.0.1", proxy.port, timeout=10)
    p.stls(client_context(tls_certs))
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == len(SMALL_MESSAGES)
    p.quit()


def test_bytes_after_stls_are_refused(lab, tls_certs, plain_dovecot):
    proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs))
    with proxy.client() as c:
        c.send(b"STLS\r\nUSER evil\r\n")
        rest, how = c.rest()
        assert how in ("eof", "reset") and b"USER" not in rest, (rest, how)
    proxy.wait_for(r"client sent more after STLS, before the TLS handshake: refused")
    # A client that speaks plain text where the ClientHello belongs: the handshake fails, logged.
    with proxy.client() as c:
        assert c.command("STLS").startswith(b"+OK")
        c.send(b"USER bob\r\n")
        rest, how = c.rest()
        assert how in ("eof", "reset")
    proxy.wait_for(r"TLS handshake with the client failed: ")
    with proxy.client() as c:  # and it serves on
        assert retrieve_all(c) == direct_answers(plain_dovecot)


def curl(*args: str) -> bytes:
    run = subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    return run.stdout


def test_pop3s_daemon_with_curl_and_poplib(lab, tls_certs, plain_dovecot):
    proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs), "--pop3s")
    ca = str(tls_certs["ca"])
    for path in ["", "1", "3"]:
        direct = curl(f"pop3://{USER}:{PASSWORD}@127.0.0.1:{plain_dovecot.port}/{path}")
        assert curl("--cacert", ca, f"pop3s://{USER}:{PASSWORD}@localhost:{proxy.port}/{path}") == direct, path
    assert curl("--cacert", ca, f"pop3s://{USER}:{PASSWORD}@localhost:{proxy.port}/1") == message_dots()
    p = poplib.POP3_SSL("127.0.0.1", proxy.port, context=client_context(tls_certs), timeout=10)
    assert b"STLS" not in b"".join(p.capa().get("STLS", [])) and "STLS" not in p.capa()
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == len(SMALL_MESSAGES)
    p.quit()
    proxy.wait_for(r"TLS with the client: TLSv1\.3 ")
    # A plain client gets no greeting: the handshake fails and the session ends, logged.
    with POP3(proxy.port, greeting=False) as c:
        c.send(b"USER bob\r\n")
        rest, how = c.rest()
        assert how in ("eof", "reset") and not rest.startswith(b"+OK")
    proxy.wait_for(r"TLS handshake with the client failed: ")


def test_curl_stls_with_ssl_reqd(lab, tls_certs, plain_dovecot):
    proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs), "--require-tls")
    got = curl("--ssl-reqd", "--cacert", str(tls_certs["ca"]), f"pop3://{USER}:{PASSWORD}@localhost:{proxy.port}/2")
    assert got == curl(f"pop3://{USER}:{PASSWORD}@127.0.0.1:{plain_dovecot.port}/2")
    proxy.wait_for(r"TLS with the client: ")


def test_fetchmail_over_pop3s_and_stls(lab, tls_certs, plain_dovecot):
    for tls, extra in [("ssl", ["--pop3s"]), ("stls", ["--require-tls"])]:
        proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs), *extra)
        delivered = fetchmail(lab, proxy.port, tls, tls=tls, ca=tls_certs["ca"])
        assert delivered.count(b"\nSubject: ") == 2, delivered[:400]
        assert b"\n.\n..\n. space\n...three\n" in delivered
        proxy.wait_for(r"TLS with the client: TLSv1\.[23] ")
        proxy.wait_for(r"end \(quit\): user short, .* 2 messages retrieved")


def test_pop3s_in_inetd_mode_under_tcpserver(lab, tls_certs, plain_dovecot):
    server = under_tcpserver(lab, plain_dovecot.address, *certificate(tls_certs), "--pop3s")
    for i in range(3):
        with POP3(server.port, tls=client_context(tls_certs)) as c:
            assert c.greeting == b"+OK pop3.proxy ready\r\n"
            assert retrieve_all(c) == direct_answers(plain_dovecot)
    server.wait_for(r"TLS with the client: TLSv1\.3 ", count=3)


@pytest.mark.parametrize("mode", ["stls", "pop3s"])
def test_tls_toward_dovecot(lab, tls_certs, tls_dovecot, mode):
    port = tls_dovecot.port if mode == "stls" else tls_dovecot.pop3s_port
    proxy = daemon(lab, f"localhost:{port}", "--server-tls", mode, "--server-tls-ca", str(tls_certs["ca"]))
    with POP3(tls_dovecot.port) as plain_direct:
        assert plain_direct.stls(client_context(tls_certs)).startswith(b"+OK")
        direct = retrieve_all(plain_direct)
    with proxy.client() as c:
        assert retrieve_all(c) == direct
    proxy.wait_for(rf"TLS with the server localhost:{port}: TLSv1\.3 ")
    proxy.wait_for(r"login: user bob, server localhost:\d+: granted")
    # Dovecot saw the login come over TLS.
    log = tls_dovecot.log.read_text(errors="replace")
    assert "TLS" in log, log[-2000:]


def test_a_server_without_stls_or_with_the_wrong_name_is_a_failed_login(lab, tls_certs, plain_dovecot):
    proxy = daemon(lab, plain_dovecot.address, "--server-tls", "stls", "--server-tls-ca", str(tls_certs["ca"]))
    with proxy.client() as c:
        assert c.command(f"USER {USER}").startswith(b"+OK")
        refused = c.command(f"PASS {PASSWORD}")
        assert refused.startswith(b"-ERR") and b"refused STLS" in refused, refused
    proxy.wait_for(r"login failed: user bob, server 127\.0\.0\.1:\d+: the server refused STLS: -ERR")

    # POP3S to a server whose certificate names another host.
    sport = free_port()
    s_server = lab.start([system_bin("openssl"), "s_server", "-accept", f"127.0.0.1:{sport}", "-cert",
                          str(tls_certs["wrongname"]), "-key", str(tls_certs["wrongname_key"]), "-quiet"],
                         name="s_server")
    wait_port("127.0.0.1", sport, proc=s_server)
    wrong = daemon(lab, f"localhost:{sport}", "--server-tls", "pop3s", "--server-tls-ca", str(tls_certs["ca"]))
    with wrong.client() as c:
        assert c.command(f"USER {USER}").startswith(b"+OK")
        refused = c.command(f"PASS {PASSWORD}")
        assert refused.startswith(b"-ERR") and b"TLS with the server failed" in refused, refused
    wrong.wait_for(r"TLS with the server failed: certificate verify failed")


def test_sighup_rereads_the_tls_files(lab, tls_certs, plain_dovecot):
    live = lab.dir / "live"
    live.mkdir()
    live.chmod(0o755)
    cert, key = live / "cert.pem", live / "key.pem"

    def install(name):
        shutil.copy(tls_certs[name], cert)
        shutil.copy(tls_certs[name + "_key"], key)
        key.chmod(0o644)  # the daemon reads them again as -u's user (nobody)

    install("server")
    proxy = daemon(lab, plain_dovecot.address, "--tls-cert", str(cert), "--tls-key", str(key), "--pop3s")

    def names() -> list[str]:
        context = ssl.create_default_context(cafile=str(tls_certs["ca"]))
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as s:
                seen = s.getpeercert()
                return [v for k, v in seen["subjectAltName"] if k == "DNS"]

    assert names() == ["localhost"]
    install("other")
    proxy.proc.signal(signal.SIGHUP)
    proxy.wait_for(r"SIGHUP: logs reopened; re-reading the TLS files")
    proxy.wait_for(r"SIGHUP: configuration reloaded from the command line")
    assert names() == ["other.test"]

    # A broken file keeps the certificate that works.
    key.write_text("not a key\n")
    proxy.proc.signal(signal.SIGHUP)
    proxy.wait_for(r"SIGHUP: TLS files not reloaded, keeping the old ones: .*key\.pem")
    assert names() == ["other.test"]


def test_start_up_errors_name_the_file(lab, tls_certs):
    run = subprocess.run([str(proxy_bin()), "-d", "--tls-cert", str(lab.dir / "none.pem"),
                          "--tls-key", str(tls_certs["server_key"]), "-D", "-D", f"127.0.0.1:{free_port()}",
                          "127.0.0.1:1"], capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert run.returncode == 1 and b"none.pem" in run.stderr, run.stderr


def test_stalled_stls_handshakes_hold_little_and_block_nobody(lab, tls_certs, plain_dovecot):
    import struct
    from hostile import assert_memory, process_rss_kib
    lab.limit(120)
    proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs), "-t", "3")
    with proxy.client() as c:  # one handshake first brings OpenSSL's pages in
        assert c.stls(client_context(tls_certs)).startswith(b"+OK")
    before = process_rss_kib(proxy.pid)
    # 300 clients that ask for STLS, read its +OK, send half a ClientHello and stop.
    hello = bytes.fromhex("160301") + struct.pack("!H", 512) + bytes(100)
    stalled = []
    for _ in range(300):
        c = POP3(proxy.port)
        assert c.command("STLS").startswith(b"+OK")
        c.send(hello)
        stalled.append(c)
    for _ in range(5):
        with proxy.client() as c:
            assert c.stls(client_context(tls_certs)).startswith(b"+OK")
            assert retrieve_all(c) == direct_answers(plain_dovecot)
    # OpenSSL's state and buffers for each (about 47 KiB measured for tcpproxy's), no more.
    assert_memory(process_rss_kib(proxy.pid) - before, 300 * 64, "300 stalled STLS handshakes")
    # -t (3 s) ends them, by the session's timer or the handshake's, whichever comes first.
    proxy.wait_for(r"end \((timeout after 3 s of inactivity|TLS handshake failed)\): 6 bytes from client", count=300,
                   timeout=30)
    for c in stalled:
        c.close()


def test_sigterm_under_tls_load_exits_cleanly(lab, tls_certs, plain_dovecot):
    """SIGTERM while the loops are inside OpenSSL: its cleanup at exit ran under them (SSL_new
    then failed, "cannot make a TLS connection", or a loop crashed); now the library is never
    torn down and the daemon exits 0."""
    import threading
    for _ in range(5):
        proxy = daemon(lab, plain_dovecot.address, *certificate(tls_certs), "--pop3s")
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    with POP3(proxy.port, tls=client_context(tls_certs), timeout=2):
                        pass
                except (OSError, AssertionError):
                    pass

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        proxy.wait_for(r"TLS with the client: ", count=10)
        proxy.proc.signal(signal.SIGTERM)
        assert proxy.proc.wait() == 0, proxy.proc.text()[-2000:]
        stop.set()
        for t in threads:
            t.join()
        after = proxy.proc.text().split("exiting on signal 15", 1)[1]
        assert "cannot make a TLS connection" not in after, after[-2000:]
