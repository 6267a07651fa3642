"""The test certificates of tlscerts.py are what the TLS tests take them for.

Checked with `openssl verify` against ca.pem (and its -verify_hostname / -verify_ip) and
with Python's ssl module loading each certificate with its key; no sockets, a few seconds.
"""

from __future__ import annotations

import ssl
import subprocess

import pytest

from tlscerts import LEAVES, make_certs, paths, tls_certs  # noqa: F401  (tls_certs is a fixture)


def verify(certs, name, *extra):
    p = subprocess.run(["openssl", "verify", "-CAfile", str(certs["ca"]), *extra, str(certs[name])],
                       capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def text(certs, name):
    return subprocess.run(["openssl", "x509", "-in", str(certs[name]), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", ["ca", "server", "server_rsa", "other", "client", "wrongname"])
def test_signed_by_the_ca(tls_certs, name):
    rc, out = verify(tls_certs, name)
    assert rc == 0, out
    assert out.strip().endswith(": OK")


@pytest.mark.parametrize("name", ["server", "server_rsa"])
@pytest.mark.parametrize("check", [("-verify_hostname", "localhost"), ("-verify_ip", "127.0.0.1"),
                                   ("-verify_ip", "::1")])
def test_server_certificates_name_localhost(tls_certs, name, check):
    rc, out = verify(tls_certs, name, *check)
    assert rc == 0, out


def test_server_certificate_kinds(tls_certs):
    assert "ASN1 OID: prime256v1" in text(tls_certs, "server")
    assert "Public-Key: (2048 bit)" in text(tls_certs, "server_rsa")
    assert "rsaEncryption" in text(tls_certs, "server_rsa")


def test_other_is_for_the_sni_name_only(tls_certs):
    assert verify(tls_certs, "other", "-verify_hostname", "other.test")[0] == 0
    rc, out = verify(tls_certs, "other", "-verify_hostname", "localhost")
    assert rc != 0 and "hostname mismatch" in out


def test_client_certificate(tls_certs):
    rc, out = verify(tls_certs, "client", "-purpose", "sslclient")
    assert rc == 0, out
    t = text(tls_certs, "client")
    assert "Subject: CN = client1" in t
    assert "TLS Web Client Authentication" in t
    # Not usable as a server certificate.
    assert verify(tls_certs, "client", "-purpose", "sslserver")[0] != 0


def test_expired_fails_as_expired(tls_certs):
    rc, out = verify(tls_certs, "expired")
    assert rc != 0
    assert "certificate has expired" in out
    # It is otherwise a good localhost certificate from the CA: only the date is wrong.
    rc, out = verify(tls_certs, "expired", "-no_check_time", "-verify_hostname", "localhost")
    assert rc == 0, out


def test_wrongname_verifies_but_is_not_localhost(tls_certs):
    assert verify(tls_certs, "wrongname")[0] == 0
    rc, out = verify(tls_certs, "wrongname", "-verify_hostname", "localhost")
    assert rc != 0 and "hostname mismatch" in out
    assert verify(tls_certs, "wrongname", "-verify_hostname", "wrong.test")[0] == 0


def test_selfsigned_is_not_from_the_ca(tls_certs):
    rc, out = verify(tls_certs, "selfsigned")
    assert rc != 0 and "self-signed certificate" in out
    # It verifies against itself.
    p = subprocess.run(["openssl", "verify", "-CAfile", str(tls_certs["selfsigned"]), "-verify_hostname",
                        "localhost", str(tls_certs["selfsigned"])], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("name", [n.replace("-", "_") for n in LEAVES])
def test_each_key_belongs_to_its_certificate(tls_certs, name):
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls_certs[name], tls_certs[name + "_key"])


def test_keys_are_private(tls_certs):
    for key, path in tls_certs.items():
        if key.endswith("_key"):
            assert path.stat().st_mode & 0o077 == 0, path


def test_second_call_changes_nothing_and_fills_gaps(tmp_path):
    first = make_certs(tmp_path)
    assert first == paths(tmp_path)
    stamps = {k: p.stat().st_mtime_ns for k, p in first.items()}
    assert make_certs(tmp_path) == first
    assert {k: p.stat().st_mtime_ns for k, p in first.items()} == stamps
    # A missing certificate is made again, signed by the same CA; the others stay.
    first["other"].unlink()
    make_certs(tmp_path)
    assert verify(first, "other")[0] == 0
    assert all(first[k].stat().st_mtime_ns == stamps[k] for k in first if k not in ("other", "other_key"))
