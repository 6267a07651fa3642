"""Test certificates for the TLS tests and bench/tls-run, made with the openssl command line.

    make_certs(directory) -> {"ca": Path, "ca_key": Path, "server": Path, "server_key": Path, ...}

In `directory` (created if missing):

  ca.pem / ca.key                  a CA (ECDSA P-256), CN=Bastion Test CA, ten years
  server.pem / server.key          localhost, ECDSA P-256, signed by the CA
  server-rsa.pem / server-rsa.key  localhost, RSA 2048, signed by the CA
  other.pem / other.key            other.test (a second SNI name), ECDSA P-256, by the CA
  client.pem / client.key          CN=client1, extendedKeyUsage clientAuth, by the CA
  expired.pem / expired.key        localhost, by the CA, valid only in January 2020
  wrongname.pem / wrongname.key    wrong.test (CN and SAN), by the CA
  selfsigned.pem / selfsigned.key  localhost, self-signed: not from the CA

The localhost certificates (server, server-rsa, expired, selfsigned) carry
subjectAltName DNS:localhost, IP:127.0.0.1, IP:::1 and extendedKeyUsage serverAuth.

Idempotent and cheap on the second call: a certificate whose .pem and .key both exist is
left alone (all are made again when the CA is missing, since they would no longer chain to
it). Each file is written under a temporary name and renamed, and a lock file serialises
concurrent callers (pytest-xdist workers, two benches), so a reader never sees half a file.

OpenSSL 3.0 (Debian 12) has no -not_before/-not_after for req or x509; the expired
certificate is signed with `openssl ca -startdate/-enddate` and a throw-away CA database.

`tls_certs` is a session-scoped pytest fixture with the same dict; import it into a test
module or conftest.py (`from tlscerts import tls_certs`). Only the standard library and the
`openssl` executable are needed; pytest only for the fixture.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import tempfile
from pathlib import Path

LOCALHOST_SAN = "DNS:localhost,IP:127.0.0.1,IP:::1"

# name -> (key type, subject CN, subjectAltName or None, extendedKeyUsage, how it is signed)
LEAVES = {
    "server": ("ec", "localhost", LOCALHOST_SAN, "serverAuth", "ca"),
    "server-rsa": ("rsa", "localhost", LOCALHOST_SAN, "serverAuth", "ca"),
    "other": ("ec", "other.test", "DNS:other.test", "serverAuth", "ca"),
    "client": ("ec", "client1", None, "clientAuth", "ca"),
    "expired": ("ec", "localhost", LOCALHOST_SAN, "serverAuth", "expired"),
    "wrongname": ("ec", "wrong.test", "DNS:wrong.test", "serverAuth", "ca"),
    "selfsigned": ("ec", "localhost", LOCALHOST_SAN, "serverAuth", "self"),
}

# When the expired certificate was valid (openssl ca's -startdate/-enddate format).
EXPIRED_START = "20200101000000Z"
EXPIRED_END = "20200131000000Z"

# A configuration of our own, so that the system's openssl.cnf (its default extensions,
# its [req] prompts) never changes what we make.
_REQ_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
"""


def _key_name(name: str) -> str:
    return "ca_key" if name == "ca" else name.replace("-", "_") + "_key"


def paths(directory) -> dict:
    """The paths make_certs writes (whether they exist yet or not)."""
    d = Path(directory)
    out = {"ca": d / "ca.pem", "ca_key": d / "ca.key"}
    for name in LEAVES:
        out[name.replace("-", "_")] = d / f"{name}.pem"
        out[_key_name(name)] = d / f"{name}.key"
    return out


def _openssl(*args, cwd=None, stdin=None) -> str:
    p = subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _new_key(kind: str, out: Path) -> None:
    if kind == "ec":
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", out)
    else:
        # req is the tool that makes RSA keys without genrsa: a throw-away request.
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", out, "-subj", "/CN=key",
                 "-config", _conf(out.parent), "-out", os.devnull)
    os.chmod(out, 0o600)


def _conf(work: Path) -> Path:
    c = work / "req.cnf"
    if not c.exists():
        c.write_text(_REQ_CONF)
    return c


def _ext_file(work: Path, san, eku: str, ca: bool = False, kind: str = "ec") -> Path:
    lines = ["[ext]"]
    if ca:
        lines += ["basicConstraints = critical, CA:TRUE", "keyUsage = critical, keyCertSign, cRLSign"]
    else:
        usage = "digitalSignature, keyEncipherment" if kind == "rsa" else "digitalSignature"
        lines += ["basicConstraints = critical, CA:FALSE", f"keyUsage = critical, {usage}",
                  f"extendedKeyUsage = {eku}"]
        if san:
            lines.append(f"subjectAltName = {san}")
    lines += ["subjectKeyIdentifier = hash"]
    if not ca:
        lines += ["authorityKeyIdentifier = keyid"]
    # One file for both uses: req -x509 reads the section from its -config, x509 -req from -extfile.
    f = work / "ext.cnf"
    f.write_text(_REQ_CONF + "\n".join(lines) + "\n")
    return f


def _serial() -> str:
    """A random positive 120-bit serial (no serial file to keep; CA-unique in practice)."""
    return f"0x{secrets.randbits(119) | 1 << 119:x}"


def _make_ca(d: Path, work: Path) -> None:
    key = work / "ca.key"
    _new_key("ec", key)
    ext = _ext_file(work, None, "", ca=True)
    _openssl("req", "-new", "-x509", "-key", key, "-subj", "/CN=Bastion Test CA", "-days", "3650", "-sha256",
             "-set_serial", _serial(), "-config", ext, "-extensions", "ext", "-out", work / "ca.pem")
    os.replace(key, d / "ca.key")
    os.replace(work / "ca.pem", d / "ca.pem")


def _make_leaf(d: Path, work: Path, name: str) -> None:
    kind, cn, san, eku, how = LEAVES[name]
    key, csr, pem = work / f"{name}.key", work / f"{name}.csr", work / f"{name}.pem"
    _new_key(kind, key)
    ext = _ext_file(work, san, eku, kind=kind)
    if how == "self":
        # Self-signed: no authorityKeyIdentifier pointing at a CA.
        ext.write_text(ext.read_text().replace("authorityKeyIdentifier = keyid\n", ""))
        _openssl("req", "-new", "-x509", "-key", key, "-subj", f"/CN={cn}", "-days", "825", "-sha256",
                 "-set_serial", _serial(), "-config", ext, "-extensions", "ext", "-out", pem)
    else:
        _openssl("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-config", _conf(work), "-out", csr)
        if how == "ca":
            _openssl("x509", "-req", "-in", csr, "-CA", d / "ca.pem", "-CAkey", d / "ca.key", "-set_serial", _serial(),
                     "-days", "825", "-sha256", "-extfile", ext, "-extensions", "ext", "-out", pem)
        else:  # expired: openssl ca is the 3.0 tool that takes explicit dates
            db = work / "cadb"
            db.mkdir(exist_ok=True)
            (db / "index.txt").write_text("")
            (db / "serial").write_text(secrets.token_hex(16).upper() + "\n")
            cnf = work / "ca.cnf"
            cnf.write_text(f"""\
[ca]
default_ca = test_ca
[test_ca]
database = {db}/index.txt
serial = {db}/serial
new_certs_dir = {db}
default_md = sha256
policy = anything
unique_subject = no
email_in_dn = no
[anything]
commonName = supplied
""")
            _openssl("ca", "-batch", "-notext", "-config", cnf, "-cert", d / "ca.pem", "-keyfile", d / "ca.key",
                     "-startdate", EXPIRED_START, "-enddate", EXPIRED_END, "-extfile", ext, "-extensions", "ext",
                     "-in", csr, "-out", pem)
    os.replace(key, d / f"{name}.key")  # the key first: a .pem present means both are
    os.replace(pem, d / f"{name}.pem")


def make_certs(directory) -> dict:
    """Make whatever of the set is missing in `directory`; return the paths (see paths())."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = paths(d)
    if all(p.exists() for p in out.values()):
        return out
    with open(d / ".tlscerts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with tempfile.TemporaryDirectory(prefix=".tlscerts.", dir=d) as tmp:
            work = Path(tmp)
            fresh_ca = not (out["ca"].exists() and out["ca_key"].exists())
            if fresh_ca:
                _make_ca(d, work)
            for name in LEAVES:
                pem, key = d / f"{name}.pem", d / f"{name}.key"
                if fresh_ca or not (pem.exists() and key.exists()):
                    _make_leaf(d, work, name)
    return out


try:
    import pytest
except ImportError:  # the bench imports make_certs without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def tls_certs(tmp_path_factory) -> dict:
        """The certificate set of make_certs, made once per test session."""
        return make_certs(tmp_path_factory.mktemp("tls"))


def ocsp_response(certs: dict, name: str, out) -> Path:
    """An OCSP response (DER) from the test CA saying certificate `name` is good, valid two
    days: what `--tls-ocsp` staples. `openssl ocsp` as a one-shot responder, with an index of
    just that certificate."""
    out = Path(out)
    work = out.parent
    pem = certs[name.replace("-", "_")]
    facts = _openssl("x509", "-in", pem, "-noout", "-serial", "-subject", "-nameopt", "compat")
    serial = facts.split("serial=")[1].split()[0]
    subject = facts.split("subject=")[1].strip()
    index = work / f"{out.stem}.index.txt"
    index.write_text(f"V\t491231000000Z\t\t{serial}\tunknown\t{subject}\n")
    request = work / f"{out.stem}.req.der"
    _openssl("ocsp", "-issuer", certs["ca"], "-cert", pem, "-no_nonce", "-reqout", request)
    _openssl("ocsp", "-index", index, "-rsigner", certs["ca"], "-rkey", certs["ca_key"], "-CA", certs["ca"],
             "-reqin", request, "-respout", out, "-ndays", "2")
    return out
