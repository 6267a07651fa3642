"""sockd end to end, on loopback only: real clients (curl's four SOCKS flavours and
user:password@, PySocks, proxychains4) through sockd to nginx or a tagging echo backend;
the CSTC table of sockd.conf(5) decided through real connections from 127.x source
addresses; shell commands with % substitutions and hostile user ids; --passwd; identd
(the tests' scripted one on port 113); sockd.route; frozen files; inetd mode under our
tcpserver; the signals; the command line; bad input.

The tagger backend (proxyhelpers.tagger) answers `TAG PEERIP PEERPORT` and echoes: the
destination's view of where sockd connected from.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import hostile
from fakeident import FakeIdent, silent, userid
from pop3helpers import wait_gone
from proxyhelpers import (START_TIMEOUT, bastion_bin, free_port, hasher, lab, pattern_bytes, read_all,  # noqa: F401
                          read_line, run, sha256, start_nginx, system_bin, tagger, wait_file, wait_port)
from sockdhelpers import (GRANTED, IDENT_MISMATCH, NO_IDENTD, REJECTED, REP_ATYP, REP_CMD, REP_NOT_ALLOWED,
                          REP_OK, closed_by_peer, crypt_hash, curl, echo_through, import_pysocks, nginx_servers, proxychains_conf,
                          recv_exact, sanitised, sockd_bin, sockd_run, socks4, socks5, socks5_greet, socks5_reply,
                          start_sockd)

PERMIT_ALL = "permit 0.0.0.0 0.0.0.0\npermit ::/0\n"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def nginx(lab):
    """nginx on 127.0.0.1, 127.0.0.9 and (when there) ::1, one port: `hello REMOTE_ADDR`."""
    hosts = ["127.0.0.1", "127.0.0.9"] + (["::1"] if has_ipv6_loopback() else [])
    port = free_port("127.0.0.1", also=hosts[1:])
    start_nginx(lab, nginx_servers([(h, port) for h in hosts]), [(h, port) for h in hosts])
    return port


# MARK: - Real clients

@pytest.mark.parametrize("flag", ["--socks4", "--socks4a", "--socks5", "--socks5-hostname"])
def test_curl_through_every_socks_flavour(lab, nginx, flag):
    d = start_sockd(lab, PERMIT_ALL)
    target = "127.0.0.9" if flag in ("--socks4", "--socks5") else "localhost"
    r = curl(flag, f"127.0.0.1:{d.port}", f"http://{target}:{nginx}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"hello 127.0.0.") or r.stdout == b"hello ::1\n", r.stdout
    user = "" if flag.startswith("--socks5") else r"\S*"
    # SOCKS4a and socks5-hostname send the name: sockd resolves it and logs it as given.
    d.wait_for(rf"connected -- Connect from {user}\(unknown\)@127\.0\.0\.1 to {target} \({nginx}\)")
    d.wait_for(rf"terminated -- Connect from {user}\(unknown\)@127\.0\.0\.1 to {target} \({nginx}\)")
    d.wait_for(rf"^.*\d+ bytes from 127\.0\.0\.1, \d+ bytes from {target}$")


def test_curl_socks4_sends_its_user_id(lab, nginx):
    d = start_sockd(lab, "permit *=alice 127.0.0.0 255.0.0.0\n")
    r = curl("--socks4", f"127.0.0.1:{d.port}", "--proxy-user", "alice:", f"http://127.0.0.9:{nginx}/")
    assert r.returncode == 0 and r.stdout == b"hello 127.0.0.1\n", r
    d.wait_for(rf"connected -- Connect from alice\(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({nginx}\)")
    r = curl("--socks4", f"127.0.0.1:{d.port}", "--proxy-user", "mallory:", f"http://127.0.0.9:{nginx}/")
    assert r.returncode != 0
    d.wait_for(rf"refused -- Connect from mallory\(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({nginx}\)")


def passwd_file(lab, users: dict[str, str]):
    return lab.file("sockd.passwd", "".join(f"{u}:{crypt_hash(p)}\n" for u, p in users.items()))


def test_curl_socks5h_with_user_and_password(lab, nginx):
    pw = passwd_file(lab, {"bob": "secret"})
    d = start_sockd(lab, "permit *=bob 127.0.0.0 255.0.0.0\n", "--passwd", pw)
    r = curl("--proxy", f"socks5h://bob:secret@127.0.0.1:{d.port}", f"http://localhost:{nginx}/")
    assert r.returncode == 0 and r.stdout.startswith(b"hello "), r
    d.wait_for(rf"connected -- Connect from bob\(unknown\)@127\.0\.0\.1 to localhost \({nginx}\)")
    # A wrong password: refused at the username/password step, nothing connected.
    r = curl("--proxy", f"socks5h://bob:wrong@127.0.0.1:{d.port}", f"http://localhost:{nginx}/")
    assert r.returncode != 0
    d.wait_for(r"127\.0\.0\.1: password refused for bob")
    # "No authentication" is not offered any more.
    r = curl("--socks5", f"127.0.0.1:{d.port}", f"http://127.0.0.9:{nginx}/")
    assert r.returncode != 0
    d.wait_for(r"no acceptable authentication method \(offered: 0[ 0-9]*\)")


def test_passwd_raw_replies(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    pw = passwd_file(lab, {"bob": "secret"})
    d = start_sockd(lab, PERMIT_ALL, "--passwd", pw)
    proxy = (d.host, d.port)
    rep, s = socks5(proxy, "127.0.0.9", dest.port, auth=(b"bob", b"secret"))
    assert rep == REP_OK
    assert read_line(s).startswith(b"DEST 127.0.0.1 ")
    s.close()
    rep, s = socks5(proxy, "127.0.0.9", dest.port, auth=(b"bob", b"nope"))
    assert rep == 0x101 and closed_by_peer(s)  # RFC 1929 status 1, then closed
    rep, s = socks5(proxy, "127.0.0.9", dest.port)
    assert rep == 0x1FF and closed_by_peer(s)  # method X'FF'
    # SOCKS4 carries no password: 91.
    cd, s = socks4(proxy, "127.0.0.9", dest.port, b"bob")
    assert cd == REJECTED and closed_by_peer(s)
    d.wait_for(r"SOCKS4 carries no password")
    assert dest.accepted == 1


def test_pysocks_socks4_socks4a_socks5_and_password(lab):
    socks = import_pysocks()
    dest = lab.backend(tagger("DEST"), host="127.0.0.1")  # localhost is 127.0.0.1 in /etc/hosts
    pw = passwd_file(lab, {"carol": "s3cret"})
    plain = start_sockd(lab, PERMIT_ALL)
    authed = start_sockd(lab, PERMIT_ALL, "--passwd", pw, name="authed.conf")
    cases = [  # sockd, kind, options, target, how sockd logs the destination
        (plain, socks.SOCKS4, {"rdns": False}, "127.0.0.1", "127.0.0.1"),
        (plain, socks.SOCKS4, {"rdns": True}, "localhost", "localhost"),  # SOCKS4a
        (plain, socks.SOCKS5, {"rdns": False}, "127.0.0.1", "127.0.0.1"),
        (plain, socks.SOCKS5, {"rdns": True}, "localhost", "localhost"),
        (authed, socks.SOCKS5, {"rdns": True, "username": "carol", "password": "s3cret"}, "localhost", "localhost"),
    ]
    for d, kind, kw, target, logged in cases:
        s = socks.socksocket()
        s.settimeout(5)
        s.set_proxy(kind, d.host, d.port, **kw)
        s.connect((target, dest.port))
        assert read_line(s).startswith(b"DEST 127.0.0.1 ")
        assert echo_through(s) == b"ping\n"
        s.close()
        user = "carol" if "username" in kw else ""
        d.wait_for(rf"connected -- Connect from {user}\(unknown\)@127\.0\.0\.1 to {logged} \({dest.port}\)")
        d.wait_for(rf"terminated -- Connect from {user}\(unknown\)@127\.0\.0\.1 to {logged} \({dest.port}\)")
        d.wait_for(rf"^.*5 bytes from 127\.0\.0\.1, \d+ bytes from {logged}$")
    s = socks.socksocket()
    s.settimeout(5)
    s.set_proxy(socks.SOCKS5, authed.host, authed.port, username="carol", password="bad")
    with pytest.raises(socks.ProxyError):
        s.connect(("127.0.0.1", dest.port))
    s.close()
    # A name that is nowhere (not in /etc/hosts, and DNS is off-limits): SOCKS5 REP 4, logged.
    s = socks.socksocket()
    s.settimeout(20)
    s.set_proxy(socks.SOCKS5, plain.host, plain.port, rdns=True)
    with pytest.raises(socks.ProxyError):
        s.connect(("no-such-host.invalid", dest.port))
    s.close()
    plain.wait_for(r"failed -- Connect from \(unknown\)@127\.0\.0\.1 to no-such-host\.invalid", timeout=20)


def test_proxychains_around_curl(lab, nginx):
    d = start_sockd(lab, PERMIT_ALL)
    conf = proxychains_conf(lab, d)
    r = run([system_bin("proxychains4"), "-q", "-f", conf, system_bin("curl"), "-sS", "--max-time", "10",
             f"http://127.0.0.9:{nginx}/"], timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello 127.0.0.1\n"
    d.wait_for(rf"connected -- Connect from \(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({nginx}\)")
    # By name: proxy_dns hands the name (or the hosts file's address) to sockd.
    r = run([system_bin("proxychains4"), "-q", "-f", conf, system_bin("curl"), "-sS", "--max-time", "10",
             f"http://localhost:{nginx}/"], timeout=20)
    assert r.returncode == 0, r.stderr
    d.wait_for(rf"connected -- Connect from \(unknown\)@127\.0\.0\.1 to (localhost|127\.0\.0\.1|::1) \({nginx}\)")


# MARK: - sockd.conf: the CSTC table, through real connections

# 128.12.x.y -> 127.12.x.y, 137.12.0.0/16 -> 127.137.0.0/16, 112.3.24.1 -> 127.112.24.1,
# 10.53.23.1 -> 127.10.23.1, 23.2.6.127 -> 127.23.6.127. The mail commands write a file.
CSTC = """deny   *=bonnie,clyde 127.12.6.0 255.255.255.0 : echo 'Rejected SOCKS access by %u' >> {out}
permit *=ylee 127.12.6.4 255.255.255.255 127.137.0.0 255.255.0.0
deny   127.12.0.0 255.255.0.0 eq telnet
permit 127.12.0.0 255.255.0.0
#NO_IDENTD: echo 'please run identd on %A' >> {out}
#BAD_ID: echo '%U pretends to be %u on %A' >> {out}
"""


def test_cstc_table(lab):
    out = lab.dir / "mail.out"
    ftp = lab.backend(tagger("FTP"), host="127.112.24.1", port=21)
    telnet = lab.backend(tagger("TELNET"), host="127.137.4.15", port=23)
    gopher = lab.backend(tagger("GOPHER"), host="127.10.23.1", port=70)
    d = start_sockd(lab, CSTC.format(out=out))
    proxy = (d.host, d.port)
    cases = [  # user, client, destination, expected reply, log word, service
        ("clyde", "127.12.6.34", ftp, "127.112.24.1", REJECTED, "refused", "ftp"),
        ("ylee", "127.12.6.4", telnet, "127.137.4.15", GRANTED, "connected", "telnet"),
        ("jane", "127.12.2.13", telnet, "127.137.4.15", REJECTED, "refused", "telnet"),
        ("sam", "127.12.36.7", gopher, "127.10.23.1", GRANTED, "connected", "gopher"),
        ("don", "127.23.6.127", ftp, "127.112.24.1", REJECTED, "refused", "ftp"),
        ("clyde", "127.12.1.62", ftp, "127.112.24.1", GRANTED, "connected", "ftp"),
    ]
    for user, client, backend, dst, expected, word, service in cases:
        cd, s = socks4(proxy, dst, backend.port, user.encode(), source=client)
        assert cd == expected, (user, client, dst, cd)
        if cd == GRANTED:
            line = read_line(s).decode()
            assert line.split()[1] == "127.0.0.1" or line.split()[1].startswith("127."), line
            assert echo_through(s) == b"ping\n"
        else:
            assert closed_by_peer(s)
        s.close()
        d.wait_for(rf"{word} -- Connect from {user}\(unknown\)@{client.replace('.', r'[.]')} to "
                   rf"{dst.replace('.', r'[.]')} \({service}\)")
    # Line 1's command ran once, for clyde only (don matched no line: nothing runs).
    text = wait_file(out, r"^Rejected SOCKS access by clyde$")
    assert text == "Rejected SOCKS access by clyde\n"
    assert (ftp.accepted, telnet.accepted, gopher.accepted) == (1, 1, 1)


def test_socks4_without_user_id_and_socks5_user_lists(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, "permit *=alice 127.0.0.0 255.0.0.0\ndeny 127.0.0.0/8 : true\n"
                    "permit 127.0.0.0 255.0.0.0\n")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port)
    assert cd == REJECTED
    d.wait_for(rf"refused -- Connect from \(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({dest.port}\)")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"alice")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")


def test_ops_masks_prefixes_and_services(lab):
    """Each line's destination is its own 127.0.1.x, where nothing listens: a permitted
    SOCKS5 request gets REP 5 (connection refused), a denied one REP 2."""
    ops = [("eq", 1000), ("neq", 1000), ("lt", 1000), ("gt", 1000), ("le", 1000), ("ge", 1000),
           ("eq", "ftp"), ("neq", "telnet")]
    conf = "deny 127.0.0.2/32 0.0.0.0 0.0.0.0\n" + "".join(
        f"permit 127.0.0.0 255.255.255.0 127.0.1.{i + 1} 255.255.255.255 {op} {port}\n"
        for i, (op, port) in enumerate(ops))
    conf += "permit 127.0.0.0/24 127.0.2.0/24\n"
    d = start_sockd(lab, conf)
    proxy = (d.host, d.port)
    want = {"eq": {1000}, "neq": {999, 1001}, "lt": {999}, "gt": {1001}, "le": {999, 1000}, "ge": {1000, 1001}}
    for i, (op, port) in enumerate(ops):
        dst = f"127.0.1.{i + 1}"
        if isinstance(port, int):
            tried = {999: None, 1000: None, 1001: None}
        else:
            tried = {21: None, 23: None, 22: None}
            want_here = {"eq": {21}, "neq": {21, 22}}[op]
        for p in tried:
            rep, s = socks5(proxy, dst, p)
            s.close()
            permitted = p in (want[op] if isinstance(port, int) else want_here)
            assert rep == (5 if permitted else REP_NOT_ALLOWED), (op, port, p, rep)
    # Masks: 127.0.0.2 is denied everything; 127.0.1.1 is outside the /24 of the clients.
    assert socks5(proxy, "127.0.2.7", 1000, source="127.0.0.2")[0] == REP_NOT_ALLOWED
    assert socks5(proxy, "127.0.2.7", 1000, source="127.0.1.1")[0] == REP_NOT_ALLOWED
    assert socks5(proxy, "127.0.2.7", 1000, source="127.0.0.3")[0] == 5
    d.wait_for(r"failed -- Connect from \(unknown\)@127\.0\.0\.3 to 127\.0\.2\.7 \(1000\): .*")
    d.wait_for(r"refused -- Connect from \(unknown\)@127\.0\.1\.1 to 127\.0\.2\.7 \(1000\)")


def test_user_list_files(lab):
    users = lab.file("users", "# the staff\nann bea,cid\tdee\n\n")
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, f"permit *={users},zed 127.0.0.0 255.0.0.0\n")
    for user, want in [("ann", GRANTED), ("bea", GRANTED), ("cid", GRANTED), ("dee", GRANTED), ("zed", GRANTED),
                       ("eve", REJECTED), ("#", REJECTED), ("staff", REJECTED), ("", REJECTED)]:
        cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, user.encode())
        assert cd == want, (user, cd)
        s.close()


def test_destination_names(lab):
    """A destination given by name (SOCKS4a, SOCKS5 ATYP 3) matches a line naming it."""
    dest = lab.backend(tagger("DEST"), host="127.0.0.1")
    d = start_sockd(lab, "permit 127.0.0.0/8 localhost 255.255.255.255\npermit 127.0.0.0/8 .example 0.0.0.0\n")
    cd, s = socks4((d.host, d.port), "", dest.port, b"u", host=b"localhost")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    rep, s = socks5((d.host, d.port), "localhost", dest.port)
    assert rep == REP_OK and read_line(s).startswith(b"DEST")
    d.wait_for(rf"connected -- Connect from \(unknown\)@127\.0\.0\.1 to localhost \({dest.port}\)", count=1)
    rep, s = socks5((d.host, d.port), "127.0.0.9", dest.port)
    assert rep == REP_NOT_ALLOWED


def test_client_host_names(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, "permit *=ann localhost 255.255.255.255\n")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"ann")
    assert cd == GRANTED
    d.wait_for(rf"connected -- Connect from ann\(unknown\)@localhost to 127\.0\.0\.9 \({dest.port}\)")


# MARK: - Shell commands, % substitutions, hostile user ids

HOSTILE = ["`touch /tmp/pwned-{tag}`", "$(touch /tmp/pwned-{tag})", "a;touch /tmp/pwned-{tag}",
           "-rf |touch /tmp/pwned-{tag}", "x'\"&>/tmp/pwned-{tag}"]


def test_deny_command_substitutions_and_hostile_user_ids(lab):
    tag = uuid.uuid4().hex[:8]
    out = lab.dir / "cmd.out"
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, f"deny 127.0.0.0 255.0.0.0 : echo 'u=%u a=%a A=%A c=%c s=%s S=%S z=%z Z=%Z U=%U "
                         f"p=%p pct=%% q=%q' >> {out}\n")
    proxy = (d.host, d.port)
    cd, s = socks4(proxy, "127.0.0.9", 21, b"eve", source="127.0.0.5")
    assert cd == REJECTED
    pid = d.proc.pid
    wait_file(out, r"^u=eve")
    assert out.read_text() == (f"u=eve a=127.0.0.5 A=127.0.0.5 c=connect s=21 S=ftp z=127.0.0.9 Z=127.0.0.9 "
                               f"U=unknown p={pid} pct=% q=%q\n")
    out.unlink()
    users = [h.format(tag=tag) for h in HOSTILE]
    for u in users:
        cd, s = socks4(proxy, "127.0.0.9", dest.port, u.encode())
        assert cd == REJECTED
        s.close()
    # SOCKS5 names go to %Z: a hostile destination name (it never resolves: denied first).
    text = wait_file(out, r"^u=", count=len(users))
    got = sorted(line.split()[0][2:] for line in text.splitlines())
    assert got == sorted(sanitised(u) for u in users)
    assert not list(Path("/tmp").glob(f"pwned-{tag}*")), "a hostile user id ran a command"
    assert dest.accepted == 0


def test_socks5_hostile_destination_name_in_command(lab):
    tag = uuid.uuid4().hex[:8]
    out = lab.dir / "cmd.out"
    d = start_sockd(lab, f"deny 127.0.0.0/8 ALL 0.0.0.0 : echo Z=%Z >> {out}\n")
    name = f"$(touch /tmp/pwned-{tag}).example"
    rep, s = socks5((d.host, d.port), name, 80)
    # Denied or unresolvable: either way no tunnel, and nothing runs.
    assert rep in (REP_NOT_ALLOWED, 4, 1)
    s.close()
    if rep == REP_NOT_ALLOWED:
        assert wait_file(out, r"^Z=") == f"Z={sanitised(name)}\n"
    assert not list(Path("/tmp").glob(f"pwned-{tag}*"))


# MARK: - identd

@pytest.fixture
def identd():
    """The scripted identd on 127.0.0.7 port 113 (clients bound to 127.0.0.7 are asked there)."""
    if os.geteuid() != 0:
        pytest.skip("not root: the scripted identd must listen on port 113")
    server = FakeIdent("127.0.0.7", 113)
    try:
        server.start()
    except OSError as e:
        pytest.fail(f"cannot listen on 127.0.0.7:113: {e}", pytrace=False)
    yield server
    server.stop()


IDENT_CONF = """permit ?=n *=nocheck 127.0.0.0 255.0.0.0
permit 127.0.0.0 255.0.0.0
#NO_IDENTD: echo 'no identd on %A for %u' >> {out}
#BAD_ID: echo '%U pretends to be %u on %A' >> {out}
"""


def test_identd_right_answer_is_granted(lab, identd):
    identd.reply = userid(b"joe")
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, IDENT_CONF.format(out=lab.dir / "x"), "-I")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"joe", source="127.0.0.7")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    d.wait_for(rf"connected -- Connect from joe\(joe\)@127\.0\.0\.7 to 127\.0\.0\.9 \({dest.port}\)")
    assert len(identd.requests) == 1
    client_port = s.getsockname()[1]
    assert identd.requests[0].replace(b" ", b"") == f"{client_port},{d.port}".encode()


@pytest.mark.parametrize("mode", ["-I", "-i"])
def test_identd_wrong_answer_is_denied(lab, identd, mode):
    identd.reply = userid(b"mallory")
    out = lab.dir / "cmd.out"
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, IDENT_CONF.format(out=out), mode)
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"joe", source="127.0.0.7")
    assert cd == IDENT_MISMATCH and closed_by_peer(s)
    d.wait_for(r"\*Alert\*: real user is mallory, not joe")
    d.wait_for(r"refused -- Connect from joe\(mallory\)@127\.0\.0\.7 to 127\.0\.0\.9")
    assert wait_file(out, "pretends") == "mallory pretends to be joe on 127.0.0.7\n"
    # SOCKS5: REP 2 (not allowed by the ruleset).
    rep, s = socks5((d.host, d.port), "127.0.0.9", dest.port, source="127.0.0.7")
    assert rep == REP_NOT_ALLOWED
    assert dest.accepted == 0


def test_identd_absent_strict_and_lenient(lab):
    """Nothing listens on 127.0.0.8 port 113: -I answers 92, logs and runs #NO_IDENTD; -i grants."""
    out = lab.dir / "cmd.out"
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    strict = start_sockd(lab, IDENT_CONF.format(out=out), "-I")
    cd, s = socks4((strict.host, strict.port), "127.0.0.9", dest.port, b"joe", source="127.0.0.8")
    assert cd == NO_IDENTD and closed_by_peer(s)
    strict.wait_for(r"cannot connect to identd on 127\.0\.0\.8")
    strict.wait_for(r"refused -- Connect from joe\(unknown\)@127\.0\.0\.8 to 127\.0\.0\.9")
    assert wait_file(out, "no identd") == "no identd on 127.0.0.8 for joe\n"
    # ?=n: that line asks nobody.
    cd, s = socks4((strict.host, strict.port), "127.0.0.9", dest.port, b"nocheck", source="127.0.0.8")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    lenient = start_sockd(lab, IDENT_CONF.format(out=out), "-i", name="lenient.conf")
    cd, s = socks4((lenient.host, lenient.port), "127.0.0.9", dest.port, b"joe", source="127.0.0.8")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    lenient.wait_for(r"connected -- Connect from joe\(unknown\)@127\.0\.0\.8")
    # -i does not count a missing identd as a failure: #NO_IDENTD did not run again.
    cd, s = socks4((lenient.host, lenient.port), "127.0.0.9", 1, b"joe", source="127.0.0.8")
    lenient.wait_for(r"failed -- Connect from joe\(unknown\)@127\.0\.0\.8 to 127\.0\.0\.9 \(tcpmux\)")
    assert out.read_text() == "no identd on 127.0.0.8 for joe\n"


def test_identd_line_overrides(lab, identd):
    """?=I on a line without -I; ?=n on a line under -I with a lying identd."""
    identd.reply = userid(b"mallory")
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, "permit ?=n *=trusted 127.0.0.0/8\npermit ?=I 127.0.0.0/8\n")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"trusted", source="127.0.0.7")
    assert cd == GRANTED
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"joe", source="127.0.0.7")
    assert cd == IDENT_MISMATCH
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"joe", source="127.0.0.8")
    assert cd == NO_IDENTD


def test_silent_identd_does_not_delay_others(lab, identd):
    """127.0.0.7's identd accepts and never answers: that client waits the ident timeout
    (then 92), while the same sockd serves a ?=n client and refuses 127.0.0.8 (nothing on
    its port 113) at once."""
    identd.reply = silent
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, "permit ?=n *=fast 127.0.0.0/8\npermit 127.0.0.0/8\n", "-I", "--ident-timeout", "3")
    waiting = socket.create_connection((d.host, d.port), source_address=("127.0.0.7", 0), timeout=10)
    started = time.monotonic()
    waiting.sendall(struct.pack(">BBH", 4, 1, dest.port) + socket.inet_aton("127.0.0.9") + b"joe\0")
    wait_until(lambda: identd.requests, "the identd asked")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"fast")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    rep, s5 = socks5((d.host, d.port), "127.0.0.9", dest.port, source="127.0.0.8")
    assert rep == REP_NOT_ALLOWED
    served = time.monotonic() - started
    reply = recv_exact(waiting, 8)
    waited = time.monotonic() - started
    assert len(reply) == 8 and reply[1] == NO_IDENTD, reply
    assert served < 2.5 <= waited, (served, waited)
    d.wait_for(r"cannot connect to identd on 127\.0\.0\.7")


def wait_until(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.01)


# MARK: - sockd.route

def test_route_chooses_the_source_address(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    other = lab.backend(tagger("OTHER"), host="127.0.0.10")
    route = lab.file("sockd.route", "# outgoing for .9 from .44\n127.0.0.44 127.0.0.9 255.255.255.255\n"
                                    "127.0.0.45 127.0.0.0 255.255.255.0\n")
    d = start_sockd(lab, PERMIT_ALL, "--route", route)
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"u")
    assert cd == GRANTED
    assert read_line(s).split()[:2] == [b"DEST", b"127.0.0.44"]
    rep, s = socks5((d.host, d.port), "127.0.0.10", other.port)
    assert rep == REP_OK
    assert read_line(s).split()[:2] == [b"OTHER", b"127.0.0.45"]
    # No route covers 127.0.1.x: a failure reply, the manual's message.
    far = lab.backend(tagger("FAR"), host="127.0.1.9")
    cd, s = socks4((d.host, d.port), "127.0.1.9", far.port, b"u")
    assert cd == REJECTED
    d.wait_for(r"failed -- Connect from u\(unknown\)@127\.0\.0\.1 to 127\.0\.1\.9 .*no route")
    assert far.accepted == 0


# MARK: - Frozen files

def test_frozen_config_and_routes_round_trip(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    conf = lab.file("sockd.conf", "deny *=bad 127.0.0.0 255.0.0.0\npermit 127.0.0.0/8 127.0.0.9 "
                                  f"255.255.255.255 eq {dest.port}\n#BAD_ID: true %u\n")
    route = lab.file("sockd.route", "127.0.0.44 127.0.0.9 255.255.255.255\n")
    fc, fr = lab.dir / "sockd.fc", lab.dir / "sockd.fr"
    r = run([bastion_bin("make_sockdfc"), conf, fc])
    assert r.returncode == 0, r.stderr
    r = run([bastion_bin("make_sockdfr"), route, fr])
    assert r.returncode == 0, r.stderr
    assert fc.read_bytes() != conf.read_bytes()
    # Round trip: dump, freeze again, identical bytes.
    for make, dump, frozen in (("make_sockdfc", "dump_sockdfc", fc), ("make_sockdfr", "dump_sockdfr", fr)):
        r = run([bastion_bin(dump), frozen])
        assert r.returncode == 0, r.stderr
        text = lab.file(f"{frozen.name}.txt", r.stdout)
        again = lab.dir / f"{frozen.name}.again"
        r = run([bastion_bin(make), text, again])
        assert r.returncode == 0, r.stderr
        assert again.read_bytes() == frozen.read_bytes()
    d = start_sockd(lab, fc, "--route", fr)
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"good")
    assert cd == GRANTED
    assert read_line(s).split()[:2] == [b"DEST", b"127.0.0.44"]
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"bad")
    assert cd == REJECTED
    # A damaged frozen file is a clear error.
    broken = lab.file("broken.fc", fc.read_bytes()[:-3] + b"xyz")
    r = sockd_run("--config", broken, "--foreground", "--listen", f"127.0.0.1:{free_port()}",
                  "--log", "stderr:5", "--pid-file", lab.dir / "b.pid")
    assert r.returncode == 1 and b"sockd: " in r.stderr, r
    r = run([bastion_bin("dump_sockdfc"), broken])
    assert r.returncode != 0 and r.stderr, r


# MARK: - inetd mode

def test_inetd_mode_under_our_tcpserver(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    conf = lab.file("sockd.conf", "permit *=ok 127.0.0.0/8\n")
    port = free_port()
    p = lab.start([bastion_bin("tcpserver"), "-v", "127.0.0.1", str(port), sockd_bin(), "--config", conf,
                   "--log", "stderr:5"], name="tcpserver")
    p.wait_for(r"tcpserver: status: 0/\d+", timeout=START_TIMEOUT)
    cd, s = socks4(("127.0.0.1", port), "127.0.0.9", dest.port, b"ok", source="127.0.0.3")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    assert echo_through(s) == b"ping\n"
    s.close()
    p.wait_for(rf"connected -- Connect from ok\(unknown\)@127\.0\.0\.3 to 127\.0\.0\.9 \({dest.port}\)")
    p.wait_for(r"terminated -- Connect from ok")
    p.wait_for(r"5 bytes from 127\.0\.0\.3, \d+ bytes from 127\.0\.0\.9")
    p.wait_for(r"tcpserver: end \d+ status 0")
    rep, s = socks5(("127.0.0.1", port), "127.0.0.9", dest.port)
    assert rep == REP_NOT_ALLOWED
    p.wait_for(r"tcpserver: end \d+ status 0", count=2)


# MARK: - Signals

def test_sighup_good_and_bad_file_with_a_live_tunnel(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, "permit *=old 127.0.0.0/8\n")
    cd, tunnel = socks4((d.host, d.port), "127.0.0.9", dest.port, b"old")
    assert cd == GRANTED and read_line(tunnel).startswith(b"DEST")
    # A good new file: new rules for new clients, the tunnel stays.
    d.config.write_text("permit *=new 127.0.0.0/8\n")
    mark = d.mark()
    d.proc.signal(signal.SIGHUP)
    d.wait_for(r"SIGHUP: configuration reloaded", start=mark)
    assert echo_through(tunnel, b"after-good\n") == b"after-good\n"
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"old")[0] == REJECTED
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"new")[0] == GRANTED
    # A bad file: the old rules stay, the log names the line.
    d.config.write_text("permit *=bad 127.0.0.0/8\npermit\nfrobnicate 1.2.3.4 255.0.0.0\n")
    mark = d.mark()
    d.proc.signal(signal.SIGHUP)
    # One log line per bad line, then the verdict.
    d.wait_for(r"SIGHUP: .*sockd\.conf:2: ", start=mark)
    d.wait_for(r"SIGHUP: .*sockd\.conf:3: unknown action", start=mark)
    d.wait_for(r"SIGHUP: the old configuration stays in force", start=mark)
    assert echo_through(tunnel, b"after-bad\n") == b"after-bad\n"
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"bad")[0] == REJECTED
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"new")[0] == GRANTED
    tunnel.close()
    d.wait_for(r"terminated -- Connect from old\(unknown\)@127\.0\.0\.1")


def test_sigusr1_lists_configuration_and_routes(lab):
    route = lab.file("sockd.route", "127.0.0.44 127.0.0.9 255.255.255.255\n")
    d = start_sockd(lab, "permit *=a,b 127.0.0.0 255.0.0.0\ndeny 0.0.0.0 0.0.0.0\n", "--route", route)
    mark = d.mark()
    d.proc.signal(signal.SIGUSR1)
    d.wait_for(rf"configuration {d.config}:", start=mark)
    d.wait_for(r"permit \*=a,b 127\.0\.0\.0 255\.0\.0\.0", start=mark)
    d.wait_for(r"deny 0\.0\.0\.0 0\.0\.0\.0", start=mark)
    d.wait_for(rf"routes {route}:", start=mark)
    d.wait_for(r"127\.0\.0\.44 127\.0\.0\.9 255\.255\.255\.255", start=mark)


def test_sigterm_removes_the_pid_file(lab):
    d = start_sockd(lab, PERMIT_ALL)
    assert int(d.pid_file.read_text().strip()) == d.proc.pid
    d.proc.signal(signal.SIGTERM)
    assert d.proc.wait() == 0
    assert not d.pid_file.exists()


def test_daemon_detaches_and_writes_its_pid_file(lab):
    conf = lab.file("sockd.conf", PERMIT_ALL)
    port = free_port()
    pid_file = lab.dir / "bg.pid"
    r = sockd_run("--config", conf, "--listen", f"127.0.0.1:{port}", "--pid-file", pid_file,
                  "--log", f"file:5,{lab.dir / 'bg.log'}")
    assert r.returncode == 0, r
    pid = int(wait_file(pid_file, r"^\d+\n?$").strip())
    try:
        wait_port("127.0.0.1", port)
        wait_file(lab.dir / "bg.log", r"sockd started")
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    assert not pid_file.exists()


# MARK: - Command line

def test_ver_and_help():
    r = sockd_run("-ver")
    assert r.returncode == 0
    text = r.stdout.decode()
    assert text.startswith("sockd (Bastion) ")
    for part in ("SOCKS protocol versions 4, 4a and 5", "not SOCKSified", "stand-alone or from inetd",
                 "supports RBIND (BIND) and UDP ASSOCIATE"):
        assert part in text
    r = sockd_run("-ver", "--route", "/nonexistent/sockd.route")
    assert "route file /nonexistent/sockd.route in use" in r.stdout.decode()
    r = sockd_run("--help")
    assert r.returncode == 0 and r.stdout.startswith(b"usage: sockd")


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option"),
    (["extra"], "unexpected argument"),
    (["-ver", "-I"], "one at a time"),
    (["-I", "-i"], "one at a time"),
    (["--listen", "127.0.0.1:0"], "port"),
    (["--listen", "nonsense"], "--listen"),
    (["--ident-timeout", "0"], "--ident-timeout"),
    (["--config"], "config"),
    (["--log", "nowhere:9"], ""),
])
def test_bad_command_lines_exit_1(args, message):
    r = sockd_run(*args)
    assert r.returncode == 1, r
    assert r.stderr.startswith(b"sockd: ") and message.encode() in r.stderr, r.stderr


def test_unreadable_configuration_exits_1(lab):
    r = sockd_run("--config", lab.dir / "missing.conf", "--foreground", "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1 and b"missing.conf" in r.stderr, r


def test_bad_lines_at_start_are_logged_and_skipped(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, "permit\nbogus 1 2\npermit 127.0.0.0 255.0.0.0\n")
    d.wait_for(r":1\b.*line skipped")
    d.wait_for(r":2\b.*line skipped")
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"u")[0] == GRANTED


# MARK: - Bad input

@pytest.mark.parametrize("data, pattern", [
    (b"\x05\x01", r"truncated SOCKS5 greeting \(2 bytes\)"),
    (b"\x05\x01\x00\x05\x01\x00\x01\x7f", r"truncated SOCKS5 request"),
    (b"\x04\x01\x00\x50\x7f\x00", r"truncated SOCKS4 request"),
    (b"\x04\x01\x00\x50\x7f\x00\x00\x09user-without-nul", r"truncated SOCKS4 request"),
])
def test_truncated_requests(lab, data, pattern):
    d = start_sockd(lab, PERMIT_ALL)
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer, end = read_all(s)
        # SOCKS5: the method selection came before the request was cut; then end of file.
        assert end in ("eof", "reset") and answer in (b"", b"\x05\x00"), (answer, end)
    d.wait_for(rf"malformed request from 127\.0\.0\.1: {pattern}")


@pytest.mark.parametrize("first", [b"\x06", b"G", b"\x00"])
def test_wrong_version_byte(lab, first):
    d = start_sockd(lab, PERMIT_ALL)
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        s.sendall(first + b"ET / HTTP/1.0\r\n\r\n")
        assert closed_by_peer(s)
    d.wait_for(rf"malformed request from 127\.0\.0\.1: bad version byte {first[0]}")


def test_socks5_wrong_version_in_request_unknown_command_and_address_type(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, PERMIT_ALL)
    for request, rep, pattern in [
        (b"\x05\x09\x00\x01\x7f\x00\x00\x09" + struct.pack(">H", dest.port), REP_CMD, r"unknown SOCKS5 command 9"),
        (b"\x05\x01\x00\x05\x7f\x00\x00\x09" + struct.pack(">H", dest.port), REP_ATYP,
         r"address type 5 not supported"),
        (b"\x04\x01\x00\x01\x7f\x00\x00\x09" + struct.pack(">H", dest.port), 1, r"bad version byte 4 in the"),
    ]:
        with socket.create_connection((d.host, d.port), timeout=5) as s:
            assert socks5_greet(s) == 0
            s.sendall(request)
            answer = recv_exact(s, 10)
            assert answer[:2] == bytes([5, rep]), (request, answer)
            assert closed_by_peer(s)
        d.wait_for(rf"malformed request from 127\.0\.0\.1: {pattern}")
    assert dest.accepted == 0


def _bind_peer_connects(bound: tuple[str, int], source: str) -> socket.socket:
    peer = socket.socket()
    peer.bind((source, 0))
    peer.settimeout(5)
    peer.connect(bound)
    return peer


def test_socks4_bind_two_replies_and_the_named_peer_only(lab):
    """BIND as an FTP client uses it: the first reply names where sockd listens, the peer
    the request named (127.0.0.9) connects there from its own address, the second reply
    names it, and the bytes flow both ways; a peer from another address gets 91."""
    d = start_sockd(lab, PERMIT_ALL)
    cd, s = socks4((d.host, d.port), "127.0.0.9", 4000, b"ftp", command=2)
    assert cd == GRANTED
    s.close()
    s2 = socket.create_connection((d.host, d.port), timeout=5)
    s2.sendall(struct.pack(">BBH", 4, 2, 4000) + socket.inet_aton("127.0.0.9") + b"ftp\0")
    first = recv_exact(s2, 8)
    assert first[:2] == bytes([0, 90])
    bound = (socket.inet_ntoa(first[4:8]), struct.unpack(">H", first[2:4])[0])
    assert bound[0] == "127.0.0.1" and bound[1] != 0
    peer = _bind_peer_connects(bound, "127.0.0.9")
    second = recv_exact(s2, 8)
    assert second[:2] == bytes([0, 90]) and socket.inet_ntoa(second[4:8]) == "127.0.0.9"
    assert struct.unpack(">H", second[2:4])[0] == peer.getsockname()[1]
    peer.sendall(b"150 data\n")
    assert recv_exact(s2, 9) == b"150 data\n"
    s2.sendall(b"STOR\n")
    assert recv_exact(peer, 5) == b"STOR\n"
    peer.close()
    s2.close()
    d.wait_for(r"connected -- Bind from ftp\(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \(4000\)")
    d.wait_for(r"terminated -- Bind from ftp\(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \(4000\)")
    # A peer from another address than the one named is turned away.
    s3 = socket.create_connection((d.host, d.port), timeout=5)
    s3.sendall(struct.pack(">BBH", 4, 2, 4000) + socket.inet_aton("127.0.0.9") + b"ftp\0")
    first = recv_exact(s3, 8)
    bound1 = (socket.inet_ntoa(first[4:8]), struct.unpack(">H", first[2:4])[0])
    intruder = _bind_peer_connects(bound1, "127.0.0.8")
    second = recv_exact(s3, 8)
    assert second[:2] == bytes([0, 91]) and closed_by_peer(s3)
    intruder.close()
    d.wait_for(r"refused -- Bind from ftp\(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \(4000\): "
               r"the connection came from 127\.0\.0\.8")


def test_socks5_bind_any_peer_for_an_unspecified_address(lab):
    d = start_sockd(lab, PERMIT_ALL)
    rep, s = socks5((d.host, d.port), "0.0.0.0", 0, command=2)
    assert rep == 0
    # socks5() read the first reply's head; read it again properly on a second request.
    s.close()
    s = socket.create_connection((d.host, d.port), timeout=5)
    assert socks5_greet(s) == 0
    s.sendall(b"\x05\x02\x00\x01" + socket.inet_aton("0.0.0.0") + struct.pack(">H", 0))
    rep, bound = socks5_reply(s)
    assert rep == 0 and bound[0] == "127.0.0.1"
    peer = _bind_peer_connects(bound, "127.0.0.5")
    rep, who = socks5_reply(s)
    assert rep == 0 and who == ("127.0.0.5", peer.getsockname()[1])
    peer.sendall(b"x")
    assert recv_exact(s, 1) == b"x"
    peer.close()
    s.close()


def test_ten_thousand_idle_connections_while_another_is_served(lab, nginx):
    # Both ends of every connection are in this process, and sockd inherits the limit.
    hostile.roomy_descriptors(12000)
    d = start_sockd(lab, PERMIT_ALL)
    before = hostile.process_rss_kib(d.proc.pid)
    idle = hostile.connect_all(d.port, 10000, timeout=60)
    try:
        deadline = time.monotonic() + 30
        while len(hostile.open_descriptors(d.proc.pid)) < 10000:
            assert time.monotonic() < deadline, "sockd did not accept the 10,000 connections"
            time.sleep(0.05)
        # A session waiting for its request holds a few KiB at most.
        hostile.assert_memory(hostile.process_rss_kib(d.proc.pid) - before, 10000 * 16, "10,000 idle clients")
        r = curl("--socks5", f"127.0.0.1:{d.port}", f"http://127.0.0.9:{nginx}/")
        assert r.returncode == 0 and r.stdout == b"hello 127.0.0.1\n", r
        assert d.proc.poll() is None
        # The idle ones are still open, none answered.
        assert all(not closed_by_peer(s, 0) for s in idle[:50])
    finally:
        for s in idle:
            s.close()


# MARK: - IPv6

def test_ipv6_destination(lab, nginx):
    if not has_ipv6_loopback():
        pytest.skip("no ::1 on this machine")
    d = start_sockd(lab, PERMIT_ALL)
    r = curl("--socks5", f"127.0.0.1:{d.port}", f"http://[::1]:{nginx}/")
    assert r.returncode == 0 and r.stdout == b"hello ::1\n", r
    d.wait_for(rf"connected -- Connect from \(unknown\)@127\.0\.0\.1 to ::1 \({nginx}\)")


def test_ipv6_listener_and_rules(lab, nginx):
    if not has_ipv6_loopback():
        pytest.skip("no ::1 on this machine")
    d = start_sockd(lab, "deny ::1/128 127.0.0.9/32\npermit ::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n",
                    host="::1")
    r = curl("--socks5-hostname", f"[::1]:{d.port}", f"http://[::1]:{nginx}/")
    assert r.returncode == 0 and r.stdout == b"hello ::1\n", r
    d.wait_for(rf"connected -- Connect from \(unknown\)@::1 to ::1 \({nginx}\)")
    r = curl("--socks5", f"[::1]:{d.port}", f"http://127.0.0.1:{nginx}/")
    assert r.returncode == 0 and r.stdout == b"hello 127.0.0.1\n", r
    r = curl("--socks5", f"[::1]:{d.port}", f"http://127.0.0.9:{nginx}/")
    assert r.returncode != 0
    d.wait_for(rf"refused -- Connect from \(unknown\)@::1 to 127\.0\.0\.9 \({nginx}\)")


def test_refusals_in_the_negotiation_are_not_called_malformed(lab):
    pw = passwd_file(lab, {"bob": "secret"})
    d = start_sockd(lab, PERMIT_ALL, "--passwd", pw)
    rep, s = socks5((d.host, d.port), "127.0.0.9", 80, auth=(b"bob", b"wrong"))
    assert rep == 0x101
    d.wait_for(r"refused -- 127\.0\.0\.1: password refused for bob")
    # An offer of GSSAPI and CHAP only: well formed, refused with X'FF'.
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        s.sendall(b"\x05\x02\x01\x03")
        assert s.recv(2) == b"\x05\xff"
    d.wait_for(r"refused -- 127\.0\.0\.1: no acceptable authentication method \(offered: 1 3\)")
    assert "malformed request" not in d.text()


# MARK: - More: a real identd, --user, oversized requests, the bound address

def test_real_identd_oidentd(lab):
    """oidentd on 127.0.0.6 port 113 reports the owner of the client's socket: this test's user."""
    if os.geteuid() != 0:
        pytest.skip("not root: oidentd must listen on port 113")
    me = pwd.getpwuid(os.geteuid()).pw_name
    o = lab.start([system_bin("oidentd"), "-i", "-S", "-a", "127.0.0.6", "-p", "113"], name="oidentd")
    wait_port("127.0.0.6", 113, proc=o)
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, PERMIT_ALL, "-I")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, me.encode(), source="127.0.0.6")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    d.wait_for(rf"connected -- Connect from {me}\({me}\)@127\.0\.0\.6 to 127\.0\.0\.9 \({dest.port}\)")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"someone-else", source="127.0.0.6")
    assert cd == IDENT_MISMATCH
    d.wait_for(rf"\*Alert\*: real user is {me}, not someone-else")
    o.wait_for(rf"Successful lookup: \d+ , {d.port} : {me}")


def test_user_drops_privileges_after_binding(lab):
    if os.geteuid() != 0:
        pytest.skip("not root: --user needs root")
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, PERMIT_ALL, "--user", "nobody")
    nobody = pwd.getpwnam("nobody")
    status = Path(f"/proc/{d.proc.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4, uid_line
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"u")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    r = sockd_run("--user", "no-such-user-here", "--config", d.config, "--foreground",
                  "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1 and b"unknown user no-such-user-here" in r.stderr, r


@pytest.mark.parametrize("request_bytes, pattern", [
    (b"\x04\x01\x00\x50\x7f\x00\x00\x09" + b"u" * 300 + b"\0", r"user id longer than 255 bytes"),
    (b"\x04\x01\x00\x50\x00\x00\x00\x01u\0" + b"h" * 300 + b"\0", r"host name longer than 255 bytes"),
    (b"\x04\x01\x00\x50\x00\x00\x00\x01u\0\0", r"empty host name"),
], ids=["user-id-300", "host-name-300", "host-name-empty"])
def test_oversized_socks4_requests(lab, request_bytes, pattern):
    d = start_sockd(lab, PERMIT_ALL)
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        s.sendall(request_bytes)
        reply = recv_exact(s, 8)
        assert reply[:2] == bytes([0, REJECTED]), reply
        assert closed_by_peer(s)
    d.wait_for(rf"malformed request from 127\.0\.0\.1: {pattern}")


def test_socks5_reply_carries_the_bound_address(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    route = lab.file("sockd.route", "127.0.0.44 0.0.0.0 0.0.0.0\n")
    d = start_sockd(lab, PERMIT_ALL, "--route", route)
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        assert socks5_greet(s) == 0
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.9") + struct.pack(">H", dest.port))
        rep, bound = socks5_reply(s)
        assert rep == REP_OK
        line = read_line(s).split()
        # BND.ADDR:BND.PORT is sockd's end of the connection the destination sees.
        assert (line[1].decode(), int(line[2])) == bound
        assert bound[0] == "127.0.0.44"
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"u")
    assert cd == GRANTED
    s.close()


# MARK: - Relay behaviour, pipelining, the log lines exactly

LOG_PREFIX = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[NOTICE\] "


def test_log_lines_exactly(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, PERMIT_ALL)
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"alice", source="127.0.0.3")
    assert cd == GRANTED
    tag = read_line(s)
    assert echo_through(s, b"hello\n") == b"hello\n"
    s.close()
    d.wait_for(r"bytes from 127\.0\.0\.3")
    lines = [line.split("] ", 1)[1] for line in d.text().splitlines() if "Connect" in line or "bytes" in line]
    assert lines == [f"connected -- Connect from alice(unknown)@127.0.0.3 to 127.0.0.9 ({dest.port})",
                     f"terminated -- Connect from alice(unknown)@127.0.0.3 to 127.0.0.9 ({dest.port})",
                     f"6 bytes from 127.0.0.3, {len(tag) + 6} bytes from 127.0.0.9"]
    assert all(re.match(LOG_PREFIX, line) for line in d.text().splitlines())


def test_hostile_user_id_cannot_forge_log_lines(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, PERMIT_ALL)
    forged = b"evil\n2026-12-03 13:06:02 [NOTICE] connected -- Connect from root(root)@10.0.0.1\x1b[31m\r"
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, forged)
    assert cd == GRANTED
    s.close()
    d.wait_for(r"terminated -- Connect from evil")
    text = d.text()
    assert "\x1b" not in text and "\r" not in text
    assert not any(line.startswith("2026-12-03 13:06:02") for line in text.splitlines())
    assert sum(line.split("] ", 1)[1].startswith("connected -- ") for line in text.splitlines()) == 1


def test_pipelined_requests_and_early_data(lab):
    """Everything in one write: greeting, (username/password,) request and the first data;
    the data must reach the destination after the tunnel is up."""
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    pw = passwd_file(lab, {"bob": "secret"})
    plain = start_sockd(lab, PERMIT_ALL)
    authed = start_sockd(lab, PERMIT_ALL, "--passwd", pw, name="authed.conf")
    port = struct.pack(">H", dest.port)
    ip = socket.inet_aton("127.0.0.9")
    cases = [
        (plain, b"\x04\x01" + port + ip + b"u\0" + b"early\n", 8),
        (plain, b"\x04\x01" + struct.pack(">H", dest.port) + b"\0\0\0\x01u\0" + b"127.0.0.9\0" + b"early\n", 8),
        (plain, b"\x05\x01\x00" + b"\x05\x01\x00\x01" + ip + port + b"early\n", 2 + 10),
        (authed, b"\x05\x01\x02" + b"\x01\x03bob\x06secret" + b"\x05\x01\x00\x01" + ip + port + b"early\n",
         2 + 2 + 10),
    ]
    for d, data, reply_length in cases:
        with socket.create_connection((d.host, d.port), timeout=5) as s:
            s.sendall(data)
            reply = recv_exact(s, reply_length)
            assert len(reply) == reply_length and reply[-10 if reply_length > 8 else -8:][1] in (0, GRANTED), \
                (data, reply)
            assert read_line(s).startswith(b"DEST 127.0.0.1 ")
            assert read_line(s) == b"early\n"


def test_large_transfer_both_ways_with_half_close(lab):
    answer = pattern_bytes(3 << 20, 2)
    dest = lab.backend(hasher(answer), host="127.0.0.9")
    d = start_sockd(lab, PERMIT_ALL)
    upload = pattern_bytes(5 << 20, 1)
    rep, s = socks5((d.host, d.port), "127.0.0.9", dest.port)
    assert rep == REP_OK
    sender = threading.Thread(target=lambda: (s.sendall(upload), s.shutdown(socket.SHUT_WR)), daemon=True)
    sender.start()
    got, end = read_all(s, timeout=20)
    sender.join(5)
    s.close()
    assert end == "eof" and sha256(got) == sha256(answer)
    assert dest.results == [(sha256(upload), len(upload))]
    d.wait_for(rf"{len(upload)} bytes from 127\.0\.0\.1, {len(answer)} bytes from 127\.0\.0\.9")


def test_many_concurrent_tunnels(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    d = start_sockd(lab, PERMIT_ALL)

    def one(i: int) -> bytes:
        if i % 2:
            rep, s = socks5((d.host, d.port), "127.0.0.9", dest.port)
            assert rep == REP_OK
        else:
            cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"u%d" % i)
            assert cd == GRANTED
        with s:
            read_line(s)
            return echo_through(s, b"n%d\n" % i)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [b"n%d\n" % i for i in range(200)]
    d.wait_for(r"terminated -- ", count=200, timeout=10)


def test_failure_replies_and_lines(lab):
    """Nothing on the port: SOCKS5 REP 5 and SOCKS4 91 with `failed -- ...: connection refused`;
    a name nobody knows: REP 4 with `cannot resolve`."""
    d = start_sockd(lab, PERMIT_ALL)
    closed = free_port("127.0.0.9")
    rep, s = socks5((d.host, d.port), "127.0.0.9", closed)
    assert rep == 5 and closed_by_peer(s)
    cd, s = socks4((d.host, d.port), "127.0.0.9", closed, b"u")
    assert cd == REJECTED and closed_by_peer(s)
    d.wait_for(rf"failed -- Connect from u\(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({closed}\): connection refused")
    rep, s = socks5((d.host, d.port), "no-such-host.invalid", 80)
    assert rep == 4
    d.wait_for(r"failed -- Connect from \(unknown\)@127\.0\.0\.1 to no-such-host\.invalid \(http\): cannot resolve")


def test_sighup_rereads_the_route_file(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    route = lab.file("sockd.route", "127.0.0.44 127.0.0.9 255.255.255.255\n")
    d = start_sockd(lab, PERMIT_ALL, "--route", route)
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"u")
    assert read_line(s).split()[1] == b"127.0.0.44"
    route.write_text("127.0.0.45 127.0.0.9 255.255.255.255\n")
    mark = d.mark()
    d.proc.signal(signal.SIGHUP)
    d.wait_for(r"SIGHUP: configuration reloaded", start=mark)
    cd, s2 = socks4((d.host, d.port), "127.0.0.9", dest.port, b"u")
    assert read_line(s2).split()[1] == b"127.0.0.45"
    # The first tunnel is still there.
    assert echo_through(s) == b"ping\n"
    # A bad route file: kept.
    route.write_text("127.0.0.46\n")
    mark = d.mark()
    d.proc.signal(signal.SIGHUP)
    d.wait_for(r"SIGHUP: .*sockd\.route:1", start=mark)
    d.wait_for(r"SIGHUP: the old configuration stays in force", start=mark)
    cd, s3 = socks4((d.host, d.port), "127.0.0.9", dest.port, b"u")
    assert read_line(s3).split()[1] == b"127.0.0.45"


def test_client_that_never_reads_and_server_that_never_reads(lab):
    """Tunnels stalled both ways by flow control: sockd's memory stays bounded, other
    clients are served, and the stalled downloads arrive whole once read."""
    download = os.urandom(1 << 20) * 16
    backend = hostile.EchoServer(download=download)
    try:
        d = start_sockd(lab, PERMIT_ALL)
        before = hostile.process_rss_kib(d.proc.pid)
        uploads, downloads = [], []
        for kind, group in ((b"u", uploads), (b"d", downloads)):
            for _ in range(4):
                rep, s = socks5((d.host, d.port), "127.0.0.1", backend.port)
                assert rep == REP_OK
                s.sendall(kind)
                group.append(s)
        for s in uploads:
            s.setblocking(False)
        sent = hostile.upload_until_stalled(uploads, os.urandom(1 << 20))
        waiting = hostile.until_still(lambda: tuple(hostile.unread_bytes(s) for s in downloads))
        assert all(waiting) and all(n < 64 << 20 for n in sent), (waiting, sent)
        grown = hostile.process_rss_kib(d.proc.pid) - before
        hostile.assert_memory(grown, 32 << 10, "sockd's growth with 8 stalled tunnels")
        dest = lab.backend(tagger("DEST"), host="127.0.0.9")
        cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"other")
        assert cd == GRANTED and read_line(s).startswith(b"DEST")
        s.close()
        hostile.expect_downloads(downloads, download, timeout=30)
        for s in uploads:
            s.close()
    finally:
        backend.close()


def test_commands_on_permit_lines_and_after_ipv6_addresses(lab):
    """A permit line's command runs too (and the client is served); the command starts at the
    first `:` that begins a word, so IPv6 addresses keep theirs."""
    if not has_ipv6_loopback():
        pytest.skip("no ::1 on this machine")
    out = lab.dir / "cmd.out"
    dest = lab.backend(tagger("DEST"), host="::1")
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    d = start_sockd(lab, f"permit ::1 {full} ::1 {full} eq {dest.port} : echo permit %a %z %s >> {out}\n"
                         f"deny ::1/128 ::/0 : echo deny %a %z %s >> {out}\n", host="::1")
    rep, s = socks5((d.host, d.port), "::1", dest.port)
    assert rep == REP_OK and read_line(s).startswith(b"DEST ::1 ")
    wait_file(out, "^permit")
    rep, s = socks5((d.host, d.port), "::1", dest.port + 1 if dest.port < 65535 else 1)
    assert rep == REP_NOT_ALLOWED
    text = wait_file(out, "^deny")
    assert text.splitlines() == [f"permit ::1 ::1 {dest.port}", f"deny ::1 ::1 {dest.port + 1}"]


def test_passwd_user_is_the_rules_user(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    pw = passwd_file(lab, {"bob": "secret", "carol": "other"})
    d = start_sockd(lab, "permit *=bob 127.0.0.0/8\n", "--passwd", pw)
    rep, s = socks5((d.host, d.port), "127.0.0.9", dest.port, auth=(b"bob", b"secret"))
    assert rep == REP_OK
    rep, s = socks5((d.host, d.port), "127.0.0.9", dest.port, auth=(b"carol", b"other"))
    assert rep == REP_NOT_ALLOWED
    d.wait_for(rf"refused -- Connect from carol\(unknown\)@127\.0\.0\.1 to 127\.0\.0\.9 \({dest.port}\)")
    # A user the file does not know, and a known user with another's password.
    assert socks5((d.host, d.port), "127.0.0.9", dest.port, auth=(b"dave", b"secret"))[0] == 0x101
    assert socks5((d.host, d.port), "127.0.0.9", dest.port, auth=(b"carol", b"secret"))[0] == 0x101


@pytest.mark.parametrize("data, answer, pattern", [
    (b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50", b"\x05\x00\x05\x01", r"empty host name"),
    (b"\x05\x01\x00\x05\x01\x00\x03\x03a\0b\x00\x50", b"\x05\x00\x05\x01", r"host name holds a NUL byte"),
    (b"\x05\x00", b"\x05\xff", r"no authentication method offered"),
], ids=["empty-name", "nul-in-name", "no-methods"])
def test_malformed_socks5_messages(lab, data, answer, pattern):
    d = start_sockd(lab, PERMIT_ALL)
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        s.sendall(data)
        got, end = read_all(s)
        assert got[:len(answer)] == answer and end in ("eof", "reset"), (got, end)
    d.wait_for(rf"malformed request from 127\.0\.0\.1: {pattern}")


@pytest.mark.parametrize("data, answer, pattern", [
    (b"\x05\x01\x02\x02\x03bob\x06secret", b"\x05\x02\x01\x01", r"bad version byte 2 in the username/password"),
    (b"\x05\x01\x02\x01\x00\x00", b"\x05\x02\x01\x01", r"empty user name"),
], ids=["auth-version-2", "empty-user"])
def test_malformed_username_password_requests(lab, data, answer, pattern):
    pw = passwd_file(lab, {"bob": "secret"})
    d = start_sockd(lab, PERMIT_ALL, "--passwd", pw)
    with socket.create_connection((d.host, d.port), timeout=5) as s:
        s.sendall(data)
        got, end = read_all(s)
        assert got == answer and end in ("eof", "reset"), (got, end)
    d.wait_for(rf"malformed request from 127\.0\.0\.1: {pattern}")


def test_connect_and_close_is_not_malformed(lab):
    d = start_sockd(lab, PERMIT_ALL)
    socket.create_connection((d.host, d.port), timeout=5).close()
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    cd, s = socks4((d.host, d.port), "127.0.0.9", dest.port, b"after")
    s.close()
    d.wait_for(r"terminated -- Connect from after")
    assert "malformed" not in d.text()


def test_inetd_mode_runs_a_deny_command_before_exiting(lab):
    out = lab.dir / "cmd.out"
    conf = lab.file("sockd.conf", f"deny 127.0.0.0/8 : echo denied %u %a >> {out}\n")
    port = free_port()
    p = lab.start([bastion_bin("tcpserver"), "-v", "127.0.0.1", str(port), sockd_bin(), "--config", conf,
                   "--log", "stderr:5"], name="tcpserver")
    p.wait_for(r"tcpserver: status: 0/\d+", timeout=START_TIMEOUT)
    cd, s = socks4(("127.0.0.1", port), "127.0.0.9", 80, b"zoe", source="127.0.0.4")
    assert cd == REJECTED
    assert wait_file(out, "^denied") == "denied zoe 127.0.0.4\n"
    p.wait_for(r"refused -- Connect from zoe\(unknown\)@127\.0\.0\.4 to 127\.0\.0\.9 \(http\)")
    p.wait_for(r"tcpserver: end \d+ status 0")


def test_sighup_with_a_frozen_configuration(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    fc = lab.dir / "sockd.fc"
    for text in ("permit *=one 127.0.0.0/8\n",):
        src = lab.file("one.conf", text)
        assert run([bastion_bin("make_sockdfc"), src, fc]).returncode == 0
    d = start_sockd(lab, fc)
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"one")[0] == GRANTED
    src = lab.file("two.conf", "permit *=two 127.0.0.0/8\n")
    assert run([bastion_bin("make_sockdfc"), src, fc]).returncode == 0
    mark = d.mark()
    d.proc.signal(signal.SIGHUP)
    d.wait_for(r"SIGHUP: configuration reloaded", start=mark)
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"one")[0] == REJECTED
    assert socks4((d.host, d.port), "127.0.0.9", dest.port, b"two")[0] == GRANTED
    # make_sockdfc refuses a bad text file and leaves the frozen one as it was.
    before = fc.read_bytes()
    bad = lab.file("bad.conf", "permit\n")
    r = run([bastion_bin("make_sockdfc"), bad, fc])
    assert r.returncode != 0 and b"bad.conf:1" in r.stderr, r
    assert fc.read_bytes() == before


def test_sigterm_with_a_live_tunnel_and_usr1_without_routes(lab):
    dest = lab.backend(tagger("DEST"), host="127.0.0.9")
    port = free_port()
    conf = lab.file("sockd.conf", PERMIT_ALL)
    pid_file = lab.dir / "t.pid"
    # --listen by name: localhost is 127.0.0.1 in /etc/hosts.
    p = lab.start([sockd_bin(), "--foreground", "--log", "stderr:5", "--config", conf, "--listen",
                   f"localhost:{port}", "--pid-file", pid_file], name="sockd")
    p.wait_for(rf"listening on 127\.0\.0\.1:{port}")
    p.wait_for(r"sockd started")
    mark = p.mark()
    p.signal(signal.SIGUSR1)
    p.wait_for(r"no route file \(single-homed\)", start=mark)
    cd, s = socks4(("127.0.0.1", port), "127.0.0.9", dest.port, b"u")
    assert cd == GRANTED and read_line(s).startswith(b"DEST")
    p.signal(signal.SIGTERM)
    assert p.wait() == 0
    assert not pid_file.exists()
    s.close()


def test_foreign_frozen_files_are_clear_errors(lab):
    conf = lab.file("sockd.conf", PERMIT_ALL)
    route = lab.file("sockd.route", "127.0.0.44 127.0.0.9 255.255.255.255\n")
    fc, fr = lab.dir / "sockd.fc", lab.dir / "sockd.fr"
    assert run([bastion_bin("make_sockdfc"), conf, fc]).returncode == 0
    assert run([bastion_bin("make_sockdfr"), route, fr]).returncode == 0
    junk = lab.file("junk", os.urandom(200))
    empty = lab.file("empty", b"")
    for tool, path, words in [("dump_sockdfc", fr, b"a frozen route file"), ("dump_sockdfr", fc, b"a frozen configuration"),
                              ("dump_sockdfc", junk, b"not a frozen configuration"),
                              ("dump_sockdfc", empty, b"not a frozen configuration")]:
        r = run([bastion_bin(tool), path])
        assert r.returncode == 1 and words in r.stderr and not r.stdout, (tool, path, r)
    listen = ["--foreground", "--listen", f"127.0.0.1:{free_port()}", "--pid-file", lab.dir / "x.pid",
              "--log", "stderr:5"]
    r = sockd_run("--config", fr, *listen)
    assert r.returncode == 1 and r.stderr.startswith(b"sockd: ") and b"frozen route file" in r.stderr, r
    r = sockd_run("--config", fc, "--route", fc, *listen)
    assert r.returncode == 1 and b"frozen configuration" in r.stderr, r
