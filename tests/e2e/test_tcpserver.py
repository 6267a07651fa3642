"""End-to-end tests of our tcpserver, most of them differential against Debian's ucspi-tcp.

Every scenario runs the real tcpserver and ours with the same options, environment, DNS
answers and ident replies, connects the same clients, and compares what the program saw (its
environment, printed to the socket) and the log on standard error. Only pids and port
numbers are normalised. IPv4 clients are compared with ucspi-tcp's tcpserver, IPv6 clients
(on ::1) with ucspi-tcp-ipv6's: ours is meant to behave exactly like the first for IPv4
clients (no TCP6* variables, even on a dual-stack socket) and like the second for IPv6 ones.

All traffic stays on loopback. djb's DNS client (and ours) asks $DNSCACHEIP port 53, so every
server runs with DNSCACHEIP=127.53.0.1 where fakedns answers from a table; ident (-r, the
default) goes to the client's address port 113, where fakeident listens on 127.0.0.7 (and, for
one test, 127.0.0.9 and ::1); clients that want an ident reply bind to that address. Both
daemons need root (ports 53 and 113): without it the tests that need them are skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest

import fakeident
from fakedns import T_A, T_CNAME, T_PTR, FakeDNS, labels, reverse_name, wire
from fakeident import FakeIdent
from servers import Server, connect, normalise, read_all, talk
from ucspi import Toolset, run

DNS_IP = "127.53.0.1"
IDENT_IP = "127.0.0.7"  # fakeident answers here
SILENT_IDENT_IP = "127.0.0.9"  # a second fakeident that never answers (one test)
PLAIN_IP = "127.0.0.5"  # a client address with no identd: ident is refused at once

V4 = "127.0.0.1"
V6 = "::1"


# MARK: - Fixtures

@dataclass(frozen=True)
class Binaries:
    ours: Path
    v4: Path  # ucspi-tcp
    v6: Path  # ucspi-tcp-ipv6
    rules_v4: Toolset  # the real tcprules, to build databases
    rules_v6: Toolset


@pytest.fixture(scope="session")
def bins(ours: Toolset, real_v4: Toolset, real_v6: Toolset) -> Binaries:
    for tools in (ours, real_v4, real_v6):
        path = tools.path("tcpserver")
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"{path} is missing or not executable ({tools.label})", pytrace=False)
    # Absolute, not resolved: ours may be a link to the multi-call binary, named by its link.
    return Binaries(ours.path("tcpserver").absolute(), real_v4.path("tcpserver").resolve(),
                    real_v6.path("tcpserver").resolve(),
                    real_v4, real_v6)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"not root: {what}")


@pytest.fixture(scope="session")
def dns_server():
    _need_root(f"the fake DNS server must listen on {DNS_IP} port 53 (djb's DNS client has "
               f"no port setting), and tcpserver always asks DNS")
    server = FakeDNS(DNS_IP, 53)
    try:
        server.start()
    except PermissionError as e:
        pytest.skip(f"cannot listen on {DNS_IP}:53: {e}")
    except OSError as e:
        pytest.fail(f"cannot listen on {DNS_IP}:53 for the fake DNS server: {e}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def dns(dns_server: FakeDNS):
    """The fake DNS server with an empty table (NXDOMAIN for everything)."""
    dns_server.clear()
    yield dns_server
    dns_server.clear()


@pytest.fixture(scope="session")
def identd_server():
    _need_root(f"the fake identd must listen on {IDENT_IP} port 113")
    server = FakeIdent(IDENT_IP, 113)
    try:
        server.start()
    except PermissionError as e:
        pytest.skip(f"cannot listen on {IDENT_IP}:113: {e}")
    except OSError as e:
        pytest.fail(f"cannot listen on {IDENT_IP}:113 for the fake identd (another identd on "
                    f"0.0.0.0:113?): {e}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def identd(identd_server: FakeIdent, dns: FakeDNS):
    identd_server.reply = fakeident.userid(b"joe")
    identd_server.requests.clear()
    yield identd_server
    identd_server.reply = fakeident.userid(b"joe")


@dataclass(frozen=True)
class Programs:
    dir: Path
    env: str  # prints PROTO, TCP*, INHERIT*, RULE* sorted
    hold: str  # prints "started", waits for a line, prints "done LINE"
    count: str  # appends to $1, prints "ok"


@pytest.fixture(scope="session")
def progs(tmp_path_factory) -> Programs:
    d = tmp_path_factory.mktemp("tcpserver-programs")
    scripts = {
        "env.sh": "#!/bin/sh\nenv | grep -aE '^(PROTO=|TCP|INHERIT|RULE)' | LC_ALL=C sort\n",
        "hold.sh": "#!/bin/sh\necho started\nread x\necho \"done $x\"\n",
        "count.sh": "#!/bin/sh\necho x >> \"$1\"\necho ok\n",
    }
    for name, text in scripts.items():
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    return Programs(d, str(d / "env.sh"), str(d / "hold.sh"), str(d / "count.sh"))


def base_env(**extra: str | bytes) -> dict:
    """Every server's environment: DNS on loopback, always (without -l tcpserver looks up the
    local name, and without $DNSCACHEIP it would ask resolv.conf's server)."""
    env = {"PATH": "/usr/bin:/bin", "DNSCACHEIP": DNS_IP, "INHERITED": "from-parent"}
    env.update(extra)
    return env


# MARK: - Running a scenario

@dataclass
class Client:
    dest: str
    source: Optional[str] = None
    send: bytes = b""
    before: Optional[Callable[[], None]] = None  # run just before connecting


@dataclass
class Outcome:
    outputs: list[bytes]  # what each client read, normalised
    log: bytes  # standard error, normalised
    idents: list[bytes] = field(default_factory=list)  # ident requests received, normalised

    def summary(self) -> str:
        out = "\n".join(f"client {i}: {o!r}" for i, o in enumerate(self.outputs))
        return f"{out}\nlog:\n{self.log.decode('latin-1')}idents: {self.idents!r}"


def verbose(opts: Sequence[str]) -> bool:
    level = 1
    for word in map(os.fsdecode, opts):
        if word.startswith("-") and not word.startswith("--"):
            for c in word[1:]:
                if c in "qQv":
                    level = {"q": 0, "Q": 1, "v": 2}[c]
    return level >= 2


END = rb"^tcpserver: end \d+ status \d+\ntcpserver: status: \d+/\d+\n"


def scenario(binary: Path, opts: Sequence[str], host: str, clients: Sequence[Client], *,
             program: Sequence[str], env: dict, cwd: Optional[Path] = None,
             identd: Optional[FakeIdent] = None) -> Outcome:
    """Runs one tcpserver, connects the clients one after another (each read to end of file,
    then, with -v, the `end` and `status` lines awaited), stops it and normalises."""
    srv = Server(binary, opts, host, program, env, cwd=cwd).start()
    talks = []
    try:
        for i, c in enumerate(clients):
            if c.before:
                c.before()
            talks.append(talk(c.dest, srv.port, source=c.source, send=c.send))
            if verbose(opts):
                srv.wait_stderr(END, count=i + 1)
    finally:
        log = srv.stop()
    cports = [t.port for t in talks]
    n = lambda b: normalise(b, [srv.port], cports)  # noqa: E731
    idents = []
    if identd is not None:
        for r in identd.requests:
            words = r.replace(b",", b" , ").split()
            if words[-1:] == [b"%d" % srv.port]:
                names = {srv.port: b"SPORT", **{p: b"CPORT" for p in cports}}
                idents.append(b" ".join(names.get(int(w), w) if w.isdigit() else w
                                        for w in words))
    return Outcome([n(t.data) for t in talks], n(log), idents)


def differential(real: Path, ours: Path, opts: Sequence[str], host: str,
                 clients: Sequence[Client], *, program: Sequence[str], env: dict,
                 ours_host: Optional[str] = None, ours_opts: Optional[Sequence[str]] = None,
                 cwd: Optional[Path] = None, identd: Optional[FakeIdent] = None,
                 concurrent: bool = False) -> tuple[Outcome, Outcome]:
    """The same scenario with the real tcpserver and ours (in parallel when slow)."""
    args_real = (real, opts, host, clients)
    args_ours = (ours, ours_opts if ours_opts is not None else opts,
                 ours_host if ours_host is not None else host, clients)
    kw = dict(program=program, env=env, cwd=cwd, identd=identd)
    if concurrent:
        with ThreadPoolExecutor(2) as pool:
            fr = pool.submit(scenario, *args_real, **kw)
            fo = pool.submit(scenario, *args_ours, **kw)
            return fr.result(), fo.result()
    return scenario(*args_real, **kw), scenario(*args_ours, **kw)


def assert_same(real: Outcome, ours: Outcome) -> None:
    if os.environ.get("TCPSERVER_E2E_SHOW"):  # to read what was compared: pytest -s
        print(f"\n--- real:\n{real.summary()}\n--- ours:\n{ours.summary()}")
    assert ours.outputs == real.outputs, f"\n--- real:\n{real.summary()}\n--- ours:\n{ours.summary()}"
    assert ours.log == real.log, f"\n--- real:\n{real.summary()}\n--- ours:\n{ours.summary()}"
    assert ours.idents == real.idents


def env_of(output: bytes) -> dict[bytes, bytes]:
    return dict(line.split(b"=", 1) for line in output.splitlines() if b"=" in line)


# MARK: - Environment and names, IPv4 clients

@pytest.mark.parametrize("ours_host", ["127.0.0.1", "0"], ids=["same-host", "ours-dual-stack"])
def test_default_environment(bins, dns, progs, ours_host):
    real, ours = differential(bins.v4, bins.ours, ["-v"], V4, [Client(V4)], program=[progs.env],
                              env=base_env(), ours_host=ours_host)
    assert_same(real, ours)
    seen = env_of(ours.outputs[0])
    assert seen[b"PROTO"] == b"TCP" and b"TCP6REMOTEIP" not in seen
    assert seen[b"INHERITED"] == b"from-parent" and b"TCPLOCALHOST" not in seen


@pytest.mark.parametrize("name", ["given.name", "", "Odd Name:%"], ids=["name", "empty", "odd"])
def test_local_name_option(bins, dns, progs, name):
    dns.set_ptr(V4, "from.dns")  # must not be used
    real, ours = differential(bins.v4, bins.ours, ["-v", "-l", name], V4, [Client(V4)],
                              program=[progs.env], env=base_env())
    assert_same(real, ours)
    assert env_of(ours.outputs[0])[b"TCPLOCALHOST"] == name.encode()


@pytest.mark.parametrize("ours_host", ["127.0.0.1", "0"], ids=["same-host", "ours-dual-stack"])
def test_local_name_from_dns(bins, dns, progs, ours_host):
    dns.set_ptr(V4, "Local.Example")
    real, ours = differential(bins.v4, bins.ours, ["-v"], V4, [Client(V4)], program=[progs.env],
                              env=base_env(), ours_host=ours_host)
    assert_same(real, ours)
    assert env_of(ours.outputs[0])[b"TCPLOCALHOST"] == b"local.example"


@pytest.mark.parametrize("opts", [["-h"], ["-H"], []], ids=["h", "H", "default"])
def test_remote_name(bins, dns, progs, opts):
    dns.set_ptr(PLAIN_IP, "client.example")
    real, ours = differential(bins.v4, bins.ours, ["-v", *opts], V4, [Client(V4, PLAIN_IP)],
                              program=[progs.env], env=base_env())
    assert_same(real, ours)
    assert (b"TCPREMOTEHOST=client.example" in ours.outputs[0]) == (opts != ["-H"])


PARANOID = {
    "match": (["client", "example"], lambda d: d.set_a("client.example", "10.0.0.1", PLAIN_IP)),
    "mismatch": (["client", "example"], lambda d: d.set_a("client.example", "10.0.0.1")),
    "no-address": (["client", "example"], lambda d: None),
    "upper-case": (["Client", "EXAMPLE"], lambda d: d.set_a("client.example", PLAIN_IP)),
    "odd-bytes": ([b"a b", b"c:d", b"x.y", b"example"],
                  lambda d: d.set_a([b"a b", b"c:d", b"x.y", b"example"], PLAIN_IP)),
    # dns_ip4 reads a name made of digits and dots as an address, without asking DNS.
    "dotted-quad": (["127", "0", "0", "5"], lambda d: None),
    "other-dotted-quad": (["127", "0", "0", "6"], lambda d: d.set_a("127.0.0.6", PLAIN_IP)),
    # ... and keeps the first four numbers of a longer one, none of a shorter one.
    "five-numbers": (["127", "0", "0", "5", "9"], lambda d: None),
    "digits-only": (["1234"], lambda d: d.set_a("1234", PLAIN_IP)),
}


@pytest.mark.parametrize("case", list(PARANOID))
def test_paranoid(bins, dns, progs, case):
    _paranoid(bins, dns, progs, case, V4)


@pytest.mark.parametrize("case", ["match", "mismatch", "dotted-quad"])
def test_paranoid_ours_dual_stack(bins, dns, progs, case):
    """Ours on a dual-stack socket sees the client as ::ffff:127.0.0.5: still asks for A."""
    _paranoid(bins, dns, progs, case, "0")


def _paranoid(bins, dns, progs, case, ours_host):
    target, setup = PARANOID[case]
    dns.set_ptr(PLAIN_IP, [t.encode() if isinstance(t, str) else t for t in target])
    setup(dns)
    real, ours = differential(bins.v4, bins.ours, ["-v", "-p"], V4, [Client(V4, PLAIN_IP)],
                              program=[progs.env], env=base_env(), ours_host=ours_host)
    assert_same(real, ours)


ODD_NAMES = {
    "upper": [b"MiXeD", b"Example", b"ORG"],
    "bytes": [b"sp ace", b"co:lon", b"per%cent", b"\xff\x7f\x01", b"dot.ted", b"back\\slash",
              b"_under-score", b"example"],
    "long": [b"a" * 60, b"b" * 60, b"example"],
    "root": [],
    "two-records": None,  # two PTR records: the first one counts
}


@pytest.mark.parametrize("case", list(ODD_NAMES))
def test_odd_names(bins, dns, progs, case):
    """PTR answers with any bytes: djb lowercases, escapes as \\ooo, and the log replaces
    what is not printable (cutting at 100 bytes)."""
    if ODD_NAMES[case] is None:
        dns.set_ptr(V4, "first.example")
        dns.set_ptr(V4, "second.example")
    else:
        dns.set_ptr(V4, ODD_NAMES[case])  # both the local and the remote address
    real, ours = differential(bins.v4, bins.ours, ["-v"], V4, [Client(V4)], program=[progs.env],
                              env=base_env())
    assert_same(real, ours)


@pytest.mark.parametrize("case", ["bytes", "upper"])
def test_odd_names_ipv6(bins, dns, progs, case):
    dns.set_ptr(V6, ODD_NAMES[case])
    real, ours = differential(bins.v6, bins.ours, ["-v"], V6, [Client(V6)], program=[progs.env],
                              env=base_env())
    assert_same(real, ours)


def _v4(ip: str) -> bytes:
    return socket.inet_aton(ip)


DNS_SHAPES = {
    # RFC 2317 classless delegation, as a cache answers it: a CNAME, then the PTR.
    "ptr-via-cname": lambda d: d.set_answers(reverse_name(PLAIN_IP), T_PTR, [
        (reverse_name(PLAIN_IP), T_CNAME, wire(labels("5.0-27.0.0.127.in-addr.arpa"))),
        ("5.0-27.0.0.127.in-addr.arpa", T_PTR, wire(labels("classless.example")))]),
    # A PTR record whose owner is not the name asked for: djb takes it all the same.
    "ptr-foreign-owner": lambda d: d.set_answers(reverse_name(PLAIN_IP), T_PTR, [
        ("unrelated.example", T_PTR, wire(labels("foreign.example")))]),
    # Other records before the PTR are skipped.
    "ptr-after-a": lambda d: d.set_answers(reverse_name(PLAIN_IP), T_PTR, [
        (reverse_name(PLAIN_IP), T_A, _v4("10.1.2.3")),
        (reverse_name(PLAIN_IP), T_PTR, wire(labels("after-a.example")))]),
}


@pytest.mark.parametrize("case", list(DNS_SHAPES))
def test_dns_answer_shapes(bins, dns, progs, case):
    DNS_SHAPES[case](dns)
    real, ours = differential(bins.v4, bins.ours, ["-v"], V4, [Client(V4, PLAIN_IP)],
                              program=[progs.env], env=base_env())
    assert_same(real, ours)


@pytest.mark.parametrize("case", ["cname-then-a", "a-of-other-owner"])
def test_paranoid_answer_shapes(bins, dns, progs, case):
    """-p: the A lookup's answer holds a CNAME chain (or an A record of another name)."""
    dns.set_ptr(PLAIN_IP, "alias.example")
    if case == "cname-then-a":
        dns.set_answers("alias.example", T_A, [
            ("alias.example", T_CNAME, wire(labels("real.example"))),
            ("real.example", T_A, _v4(PLAIN_IP))])
    else:
        dns.set_answers("alias.example", T_A, [("elsewhere.example", T_A, _v4(PLAIN_IP))])
    real, ours = differential(bins.v4, bins.ours, ["-v", "-p"], V4, [Client(V4, PLAIN_IP)],
                              program=[progs.env], env=base_env())
    assert_same(real, ours)


@pytest.mark.parametrize("known", [False, True], ids=["unknown", "known"])
def test_inherited_variables(bins, dns, progs, known):
    """TCPREMOTEHOST, TCPREMOTEINFO and TCPLOCALHOST from the parent go away when unknown."""
    if known:
        dns.set_ptr(V4, "known.example")
    env = base_env(TCPREMOTEHOST="stale.host", TCPREMOTEINFO="stale-info",
                   TCPLOCALHOST="stale.local", TCPLOCALIP="9.9.9.9", TCP6REMOTEIP="::9",
                   TCPREMOTEIP="9.9.9.8", INHERIT_BYTES=b"\xff\xfe\x80 \xc3\xa9=x",
                   INHERIT_EMPTY="")
    real, ours = differential(bins.v4, bins.ours, ["-v"], V4, [Client(V4)], program=[progs.env],
                              env=env)
    assert_same(real, ours)
    assert b"stale" not in ours.outputs[0]


# MARK: - Ident (-r)

IDENT_REPLIES = {
    "userid": fakeident.userid(b"joe"),
    "error": lambda r: r + b" : ERROR : NO-USER\r\n",
    "colons": fakeident.userid(b"a:b::c"),
    "percent-spaces": lambda r: r + b" : USERID : UNIX : j o%e \t x\r\n",
    "non-ascii": fakeident.userid(b"j\xc3\xa9\x01\x7f\xff~!"),
    "long": fakeident.userid(b"L" * 99 + b"%" + b"M" * 50),
    "very-long": fakeident.userid(b"V" * 300),
    "no-newline": lambda r: r + b" : USERID : UNIX : cut",  # closed before the newline
    "bare-lf": lambda r: r + b":USERID:UNIX:lf\n",
    "garbage": fakeident.raw(b"no colons at all\r\n"),
    # A NUL byte: the C string (environment, log line, rules key) ends there.
    "nul": fakeident.userid(b"ab\x00cd"),
}


@pytest.mark.parametrize("case", list(IDENT_REPLIES))
def test_ident(bins, identd, progs, case):
    identd.reply = IDENT_REPLIES[case]
    real, ours = differential(bins.v4, bins.ours, ["-v", "-r"], V4, [Client(V4, IDENT_IP)],
                              program=[progs.env], env=base_env(), identd=identd)
    assert_same(real, ours)
    assert len(real.idents) == 1


@pytest.mark.parametrize("case", ["userid", "error"])
def test_ident_ours_dual_stack(bins, identd, progs, case):
    """Ours on a dual-stack socket asks 127.0.0.7 from 127.0.0.1, as the IPv4 tcpserver."""
    identd.reply = IDENT_REPLIES[case]
    real, ours = differential(bins.v4, bins.ours, ["-v"], V4, [Client(V4, IDENT_IP)],
                              program=[progs.env], env=base_env(), identd=identd, ours_host="0")
    assert_same(real, ours)


def test_ident_nul_in_rules_key(bins, identd, progs, tmp_path):
    identd.reply = IDENT_REPLIES["nul"]
    build_rules(bins.rules_v4, b'ab@127.0.0.7:allow,RULEVAR="cut at NUL"\n:deny\n',
                tmp_path / "rules.cdb")
    real, ours = differential(bins.v4, bins.ours, ["-v", "-x", "rules.cdb"], V4,
                              [Client(V4, IDENT_IP)], program=[progs.env], env=base_env(),
                              cwd=tmp_path, identd=identd)
    assert_same(real, ours)


def test_ident_timeout_zero(bins, identd, progs):
    """-t 0: no time for an answer. (Whether the query still reaches the identd is timing,
    so only what the program and the log show is compared.) ucspi-tcp's own tcpserver now and
    then still reads an answer that was already there when it looked (the fake identd on
    loopback answers within microseconds): such a round says nothing and is run again."""
    for _ in range(5):
        real, ours = differential(bins.v4, bins.ours, ["-v", "-t", "0"], V4, [Client(V4, IDENT_IP)],
                                  program=[progs.env], env=base_env())
        assert b"TCPREMOTEINFO" not in ours.outputs[0]
        if b"TCPREMOTEINFO" not in real.outputs[0]:
            break
    assert_same(real, ours)


def test_ident_silent_times_out(bins, identd, progs):
    """An identd that never answers: after -t 1 the connection is served, without info."""
    identd.reply = fakeident.silent
    t0 = time.monotonic()
    real, ours = differential(bins.v4, bins.ours, ["-v", "-t", "1"], V4,
                              [Client(V4, IDENT_IP)], program=[progs.env], env=base_env(),
                              identd=identd, concurrent=True)
    assert_same(real, ours)
    assert b"TCPREMOTEIP=127.0.0.7" in ours.outputs[0]
    assert b"TCPREMOTEINFO" not in ours.outputs[0]
    assert time.monotonic() - t0 < 4


def test_ident_disabled(bins, identd, progs):
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R"], V4, [Client(V4, IDENT_IP)],
                              program=[progs.env], env=base_env(TCPREMOTEINFO="stale"),
                              identd=identd)
    assert_same(real, ours)
    assert identd.requests == [] and b"TCPREMOTEINFO" not in ours.outputs[0]


@pytest.fixture
def identd_v6(identd_server, dns):
    ident = FakeIdent(V6, 113)
    try:
        ident.start()
    except OSError as e:
        pytest.skip(f"cannot listen on [::1]:113: {e}")
    yield ident
    ident.stop()


@pytest.mark.parametrize("case", ["userid", "colons", "error"])
def test_ident_ipv6(bins, identd_v6, progs, case):
    identd_v6.reply = IDENT_REPLIES[case]
    real, ours = differential(bins.v6, bins.ours, ["-v"], V6, [Client(V6)], program=[progs.env],
                              env=base_env(), identd=identd_v6)
    assert_same(real, ours)


# MARK: - Rules (-x)

def build_rules(tools: Toolset, text: bytes, cdb: Path) -> None:
    r = tools.tcprules(text, cdb.parent, cdb=cdb.name, tmp=cdb.name + ".tmp")
    assert r.returncode == 0, r.describe()


RULES = {
    # name: (rules, options, ident reply, PTR for the client)
    "allow-vars": (b'127.0.0.7:allow,RULEVAR="x",TCPREMOTEHOST="fake.host",TCPLOCALIP="9.9.9.9",'
                   b'TCPREMOTEINFO="fake-info",PROTO="NOTTCP"\n', [], None, None),
    "deny": (b"127.0.0.7:deny\n", [], None, None),
    "deny-with-banner": (b"127.0.0.7:deny\n", ["-B", "hello\n"], None, None),
    "info-at-ip": (b'joe@127.0.0.7:allow,RULEVAR="info"\n:deny\n', [], b"joe", None),
    "info-mismatch": (b'bob@127.0.0.7:allow,RULEVAR="info"\n:deny\n', [], b"joe", None),
    "empty-info-at-ip": (b'@127.0.0.7:allow,RULEVAR="empty info"\n:deny\n', [], b"", None),
    "info-at-host": (b'joe@=client.example:allow,RULEVAR="info host"\n:deny\n', [], b"joe",
                     "client.example"),
    "host": (b'=client.example:allow,RULEVAR="host"\n:deny\n', [], None, "client.example"),
    "host-without-h": (b'=client.example:allow,RULEVAR="host"\n:deny\n', ["-H"], None,
                       "client.example"),
    "host-paranoid-fails": (b'=client.example:allow,RULEVAR="host"\n:deny\n', ["-p"], None,
                            "client.example"),
    "domain": (b'=.example:allow,RULEVAR="domain"\n:deny\n', [], None, "client.example"),
    "any-host": (b'=:allow,RULEVAR="any host"\n:deny\n', [], None, "client.example"),
    "any-host-none": (b'=:allow,RULEVAR="any host"\n:deny\n', [], None, None),
    "prefix": (b'127.0.0.:allow,RULEVAR="prefix"\n127.:deny\n', [], None, None),
    "range": (b'127.0.0.6-9:allow,RULEVAR="range"\n:deny\n', [], None, None),
    "default": (b'10.0.0.1:deny\n:allow,RULEVAR="default"\n', [], None, None),
    "no-match": (b"10.0.0.1:deny\n", [], None, None),
}


@pytest.mark.parametrize("case", list(RULES))
def test_rules(bins, dns, identd, progs, tmp_path, case):
    text, opts, info, ptr = RULES[case]
    if info is None:
        identd.reply = fakeident.userid(b"somebody")
    elif info == b"":
        identd.reply = IDENT_REPLIES["error"]
    else:
        identd.reply = fakeident.userid(info)
    if ptr:
        dns.set_ptr(IDENT_IP, ptr)
    build_rules(bins.rules_v4, text, tmp_path / "rules.cdb")
    real, ours = differential(bins.v4, bins.ours, ["-v", "-x", "rules.cdb", *opts], V4,
                              [Client(V4, IDENT_IP)], program=[progs.env], env=base_env(),
                              cwd=tmp_path)
    assert_same(real, ours)
    if case.startswith("deny"):
        assert b"tcpserver: deny PID" in ours.log and b"status 25600" in ours.log


@pytest.mark.parametrize("case", ["info-at-ip", "host", "prefix", "deny"])
def test_rules_ours_dual_stack(bins, dns, identd, progs, tmp_path, case):
    """Ours on a dual-stack socket looks rules up under the IPv4 address, as ucspi-tcp."""
    text, opts, info, ptr = RULES[case]
    identd.reply = fakeident.userid(info or b"somebody")
    if ptr:
        dns.set_ptr(IDENT_IP, ptr)
    build_rules(bins.rules_v4, text, tmp_path / "rules.cdb")
    real, ours = differential(bins.v4, bins.ours, ["-v", "-x", "rules.cdb", *opts], V4,
                              [Client(V4, IDENT_IP)], program=[progs.env], env=base_env(),
                              cwd=tmp_path, ours_host="0")
    assert_same(real, ours)


def test_rules_ipv6(bins, dns, progs, tmp_path):
    build_rules(bins.rules_v6, b'::1:allow,RULEVAR="v6 exact",TCP6REMOTEHOST="fake"\n:deny\n',
                tmp_path / "rules.cdb")
    real, ours = differential(bins.v6, bins.ours, ["-v", "-x", "rules.cdb"], V6, [Client(V6)],
                              program=[progs.env], env=base_env(), cwd=tmp_path)
    assert_same(real, ours)


@pytest.mark.parametrize("flag", [[], ["-X"]], ids=["no-X", "X"])
def test_rules_missing(bins, dns, progs, tmp_path, flag):
    real, ours = differential(bins.v4, bins.ours, ["-v", "-x", "missing.cdb", *flag], V4,
                              [Client(V4)], program=[progs.env], env=base_env(), cwd=tmp_path)
    assert_same(real, ours)
    if not flag:
        assert ours.outputs == [b""]
        assert b"unable to read missing.cdb: file does not exist" in ours.log
        assert b"status 28416" in ours.log


def test_rules_replaced_between_connections(bins, dns, progs, tmp_path):
    cdb = tmp_path / "rules.cdb"

    def rules(text: bytes) -> Callable[[], None]:
        return lambda: build_rules(bins.rules_v4, text, cdb)

    clients = [Client(V4, before=rules(b'127.0.0.1:allow,RULEVAR="one"\n')),
               Client(V4, before=rules(b'127.0.0.1:allow,RULEVAR="two"\n')),
               Client(V4, before=rules(b"127.0.0.1:deny\n")),
               Client(V4, before=rules(b'127.0.0.1:allow,RULEVAR="three"\n'))]
    real, ours = differential(bins.v4, bins.ours, ["-v", "-x", "rules.cdb"], V4, clients,
                              program=[progs.env], env=base_env(), cwd=tmp_path)
    assert_same(real, ours)
    assert [env_of(o).get(b"RULEVAR") for o in ours.outputs] == [b"one", b"two", None, b"three"]


def _corrupt(kind: str, path: Path) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "short":
        path.write_bytes(b"not a cdb at all\n")
    elif kind == "table-past-end":
        # Every hash table claims 4 slots at an offset beyond the end of the file.
        path.write_bytes(struct.pack("<II", 100000, 4) * 256)
    elif kind == "record-past-end":
        # The right table for "127.0.0.1" points at a record beyond the end of the file.
        from ucspi import cdb_hash
        h = cdb_hash(b"127.0.0.1")
        header = bytearray(struct.pack("<II", 2048, 0) * 256)
        struct.pack_into("<II", header, (h & 255) * 8, 2048, 1)
        path.write_bytes(bytes(header) + struct.pack("<II", h, 90000))
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind", ["empty", "short", "table-past-end", "record-past-end"])
def test_rules_corrupt(bins, dns, progs, tmp_path, kind):
    _corrupt(kind, tmp_path / "rules.cdb")
    real, ours = differential(bins.v4, bins.ours, ["-v", "-x", "rules.cdb"], V4, [Client(V4)],
                              program=[progs.env], env=base_env(), cwd=tmp_path)
    assert_same(real, ours)


def test_rules_directory(bins, dns, progs, tmp_path):
    """-x naming a directory: ucspi-tcp's child crashes (SIGSEGV, `end PID status 11`); ours
    must drop the connection with a message instead. Not compared."""
    _corrupt("directory", tmp_path / "rules.cdb")
    ours = scenario(bins.ours, ["-v", "-x", "rules.cdb"], V4, [Client(V4)], program=[progs.env],
                    env=base_env(), cwd=tmp_path)
    assert ours.outputs == [b""]
    assert b"tcpserver: warning: dropping connection, unable to read rules.cdb: " in ours.log
    assert b"tcpserver: end PID status 28416\n" in ours.log


# MARK: - Banner, -1, logging, limits

def test_banner_before_program_output(bins, dns, progs):
    real, ours = differential(bins.v4, bins.ours, ["-v", "-B", "banner line\r\n"], V4,
                              [Client(V4)], program=[progs.env], env=base_env())
    assert_same(real, ours)
    assert ours.outputs[0].startswith(b"banner line\r\nINHERITED=")


BYTE_ARGS = {
    # case: (options, program, what the client must read)
    "banner": (["-B", b"\xff\xfe\xc3(\r\n"], ["/bin/echo", "x"], b"\xff\xfe\xc3(\r\nx\n"),
    "local-name": (["-l", b"h\xe9te"], ["/bin/sh", "-c", 'printf "%s" "$TCPLOCALHOST"'],
                   b"h\xe9te"),
    "program-argument": ([], ["/bin/sh", "-c", 'printf "%s" "$0"', b"arg\xff\x80"],
                         b"arg\xff\x80"),
    "program-path": ([], [b"./prog\xe9"], b"prog\n"),
    "rules-path": (["-x", b"rules\xe9.cdb"], ["/bin/echo", "allowed"], b"allowed\n"),
}


@pytest.mark.parametrize("case", list(BYTE_ARGS))
def test_bytes_in_arguments(bins, dns, tmp_path, case):
    """Arguments are bytes, not text: a banner, -l, a program and its arguments, a rules
    path that are not UTF-8 reach the client, the program and the file system unchanged."""
    opts, program, expected = BYTE_ARGS[case]
    prog = tmp_path / os.fsdecode(b"prog\xe9")
    prog.write_text("#!/bin/sh\necho prog\n")
    prog.chmod(0o755)
    build_rules(bins.rules_v4, b"127.0.0.1:allow\n:deny\n",
                tmp_path / os.fsdecode(b"rules\xe9.cdb"))
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R", *opts], V4, [Client(V4)],
                              program=program, env=base_env(), cwd=tmp_path)
    assert real.outputs[0] == expected
    assert_same(real, ours)


def test_socket_is_stdin_and_stdout_stderr_is_log(bins, dns):
    program = ["/bin/sh", "-c", "echo to-stderr >&2; exec cat"]
    data = b"".join(b"line %d\n" % i for i in range(5000))
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R"], V4, [Client(V4, send=data)],
                              program=program, env=base_env())
    assert_same(real, ours)
    assert ours.outputs[0] == data and b"\nto-stderr\n" in ours.log


@pytest.mark.parametrize("which", ["v4", "ours"])
def test_print_port_then_close_stdout(bins, dns, progs, which):
    binary = bins.v4 if which == "v4" else bins.ours
    with Server(binary, ["-R"], V4, [progs.env], base_env()).start() as srv:
        assert b"TCPLOCALPORT=%d" % srv.port in talk(V4, srv.port).data
        assert srv.rest_of_stdout() == b"%d\n" % srv.port


@pytest.mark.parametrize("opts", [["-q"], ["-Q"], [], ["-v"], ["-v", "-q"], ["-q", "-Q"],
                                  ["-qv"]], ids=lambda o: "".join(o) or "default")
@pytest.mark.parametrize("rules", ["missing", "ok"])
def test_verbosity(bins, dns, progs, tmp_path, opts, rules):
    ropts = ["-x", "missing.cdb"] if rules == "missing" else []
    real, ours = differential(bins.v4, bins.ours, [*opts, *ropts], V4, [Client(V4), Client(V4)],
                              program=[progs.env], env=base_env(), cwd=tmp_path)
    assert_same(real, ours)


def _limit_run(binary: Path, progs: Programs) -> str:
    with Server(binary, ["-v", "-R", "-c", "2"], V4, [progs.hold], base_env()).start() as srv:
        a = connect(V4, srv.port)
        assert a.recv(100) == b"started\n"
        b = connect(V4, srv.port)
        assert b.recv(100) == b"started\n"
        c = connect(V4, srv.port)
        c.settimeout(0.7)
        with pytest.raises(socket.timeout):
            c.recv(100)  # not served: its program is not started
        assert srv.stderr().count(b"tcpserver: pid ") == 2
        assert b"tcpserver: status: 2/2\n" in srv.stderr()
        a.sendall(b"a\n")
        assert read_all(a)[0] == b"done a\n"
        c.settimeout(5)
        assert c.recv(100) == b"started\n"
        srv.wait_stderr(rb"^tcpserver: pid \d+ from", count=3)
        for s, word in ((b, b"b"), (c, b"c")):
            s.sendall(word + b"\n")
            assert read_all(s)[0] == b"done " + word + b"\n"
            srv.wait_stderr(END, count=2 if word == b"b" else 3)
        ports = [s.getsockname()[1] for s in (a, b, c)]
        for s in (a, b, c):
            s.close()
        log = srv.stop()
    return normalise(log, [srv.port], ports).decode()


def test_connection_limit(bins, dns, progs):
    """-c 2: with two connections open, a third waits (its program not started) until one
    ends; `status: 2/2` is logged. The logs of both are compared afterwards."""
    with ThreadPoolExecutor(2) as pool:
        real_f = pool.submit(_limit_run, bins.v4, progs)
        ours_f = pool.submit(_limit_run, bins.ours, progs)
        real, ours = real_f.result(), ours_f.result()
    assert real.count("status: 2/2") >= 2, real
    assert ours == real


# MARK: - Startup errors

USAGE_CASES = [[], ["-Z"], ["-c"], ["-x"], ["-B"], ["-t"], ["-v", "-u"], ["0"], ["0", "0"],
               ["-q"], ["-q", "0", "0"], ["-q", "-Z"], ["--", "-v", "0"]]


@pytest.mark.parametrize("args", USAGE_CASES, ids=lambda a: " ".join(a) or "none")
def test_usage_errors(bins, args):
    env = base_env()
    real = run([bins.v6, *args], env=env)
    ours = run([bins.ours, *args], env=env)
    assert (ours.returncode, ours.stdout, ours.stderr) == (real.returncode, real.stdout,
                                                          real.stderr)
    assert real.returncode == 100


@pytest.mark.parametrize("which", ["v4", "v6"])
@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["", "q"])
def test_unknown_service(bins, which, quiet):
    env = base_env()
    real = run([getattr(bins, which), *quiet, V4, "no-such-service", "true"], env=env)
    ours = run([bins.ours, *quiet, V4, "no-such-service", "true"], env=env)
    assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr)
    assert real.returncode == 111


def test_bind_failure(bins):
    with socket.socket() as s:
        s.bind((V4, 0))
        s.listen(1)
        port = str(s.getsockname()[1])
        real = run([bins.v4, V4, port, "true"], env=base_env())
        ours = run([bins.ours, V4, port, "true"], env=base_env())
    assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr)
    assert real.stderr == b"tcpserver: fatal: unable to bind: address already used\n"
    assert real.returncode == 111


@pytest.mark.parametrize("case", ["found", "not-found"])
def test_listen_on_name(bins, dns, progs, case):
    """The host argument is a name looked up in DNS (A records for the IPv4 tcpserver)."""
    if case == "found":
        dns.set_a("srv.example", V4)
        real, ours = differential(bins.v4, bins.ours, ["-v", "-R"], "srv.example", [Client(V4)],
                                  program=[progs.env], env=base_env())
        assert_same(real, ours)
    else:
        real = run([bins.v4, "nowhere.example", "0", "true"], env=base_env())
        ours = run([bins.ours, "nowhere.example", "0", "true"], env=base_env())
        assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr)


def test_program_missing(bins, dns, progs, tmp_path):
    real, ours = differential(bins.v4, bins.ours, ["-v"], V4, [Client(V4)], program=["./x"],
                              env=base_env(), cwd=tmp_path)
    assert_same(real, ours)
    assert b"unable to run ./x: file does not exist" in ours.log
    assert b"status 28416" in ours.log


@pytest.mark.parametrize("case", ["not-executable", "in-path", "not-in-path"])
def test_program_lookup(bins, dns, progs, tmp_path, case):
    env = base_env()
    if case == "not-executable":
        (tmp_path / "x").write_text("#!/bin/sh\necho hi\n")
        program = ["./x"]
    else:
        env["PATH"] = f"{progs.dir}:/usr/bin:/bin" if case == "in-path" else "/usr/bin:/bin"
        program = ["env.sh", "arg"]
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R"], V4, [Client(V4)],
                              program=program, env=env, cwd=tmp_path)
    assert_same(real, ours)


@pytest.mark.parametrize("script", ["exit 3", "kill -TERM $$", "kill -KILL $$"],
                         ids=["exit-3", "sigterm", "sigkill"])
def test_program_exit_status(bins, dns, script):
    """`end PID status N` shows the raw wait status."""
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R"], V4, [Client(V4)],
                              program=["/bin/sh", "-c", script], env=base_env())
    assert_same(real, ours)


def test_no_descriptor_leaks(bins, dns, identd, tmp_path):
    """The program gets the socket on 0 and 1 and the log on 2, nothing else: no listener,
    DNS or ident socket, rules file or signal descriptor left open."""
    dns.set_ptr(IDENT_IP, "client.example")
    dns.set_a("client.example", IDENT_IP)
    build_rules(bins.rules_v4, b'127.0.0.7:allow,RULEVAR="x"\n', tmp_path / "rules.cdb")
    program = ["/bin/sh", "-c",
               'cd /proc/$$/fd && for f in *; do echo "$f $(readlink "$f" | cut -c1-6)"; done']
    real, ours = differential(bins.v4, bins.ours, ["-v", "-p", "-x", "rules.cdb"], V4,
                              [Client(V4, IDENT_IP)], program=program, env=base_env(),
                              cwd=tmp_path)
    assert_same(real, ours)
    assert ours.outputs[0].startswith(b"0 socket\n1 socket\n2 pipe:[\n")


def test_program_signal_state(bins, dns, progs):
    """The program starts with no signal blocked and only what the parent ignored ignored
    (tcpserver's own SIGPIPE and SIGCHLD settings are undone)."""
    program = ["/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R"], V4, [Client(V4)],
                              program=program, env=base_env())
    assert_same(real, ours)


@pytest.mark.parametrize("opts", [[], ["-D"], ["-d"], ["-D", "-d"]],
                         ids=lambda o: "".join(o) or "default")
def test_nodelay(bins, dns, opts):
    program = ["/usr/bin/python3", "-c",
               "import socket; s = socket.socket(fileno=0); "
               "print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)); s.detach()"]
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R", *opts], V4, [Client(V4)],
                              program=program, env=base_env())
    assert_same(real, ours)


@pytest.mark.parametrize("opts,extra", [(["-u", "65534", "-g", "65534"], {}),
                                        (["-u", "65534"], {}),
                                        (["-U"], {"UID": "65534", "GID": "65534"})],
                         ids=["u-g", "u", "U"])
def test_user_and_group(bins, dns, opts, extra):
    program = ["/bin/sh", "-c", "id -u; id -g; id -G"]
    real, ours = differential(bins.v4, bins.ours, ["-v", "-R", *opts], V4, [Client(V4)],
                              program=program, env=base_env(**extra), cwd=Path("/"))
    assert_same(real, ours)
    assert ours.outputs[0].startswith(b"65534\n")


# MARK: - IPv6

@pytest.mark.parametrize("ours_host", ["::1", "0", "::"], ids=["same", "dual-stack", "any6"])
@pytest.mark.parametrize("opts", [[], ["-6"], ["-I", "lo"]], ids=["", "6", "I-lo"])
def test_ipv6_client(bins, dns, progs, ours_host, opts):
    real, ours = differential(bins.v6, bins.ours, ["-v", *opts], V6, [Client(V6)],
                              program=[progs.env], env=base_env(), ours_host=ours_host)
    assert_same(real, ours)
    seen = env_of(ours.outputs[0])
    assert seen[b"PROTO"] == b"TCP6" and seen[b"TCP6REMOTEIP"] == b"::1"


@pytest.mark.parametrize("known", [False, True], ids=["unknown", "known"])
def test_ipv6_names_and_inherited(bins, dns, progs, known):
    if known:
        dns.set_ptr(V6, "six.example")
    env = base_env(TCPREMOTEINFO="stale", TCP6REMOTEINFO="stale", TCP6REMOTEHOST="stale",
                   TCPREMOTEHOST="stale", TCPLOCALHOST="stale", TCP6LOCALHOST="stale",
                   TCP6INTERFACE="stale")
    real, ours = differential(bins.v6, bins.ours, ["-v", "-R"], V6, [Client(V6)],
                              program=[progs.env], env=env)
    assert_same(real, ours)


@pytest.mark.parametrize("case", ["match", "mismatch", "only-a"])
def test_ipv6_paranoid(bins, dns, progs, case):
    dns.set_ptr(V6, "six.example")
    if case == "match":
        dns.set_aaaa("six.example", "2001:db8::1", V6)
    elif case == "mismatch":
        dns.set_aaaa("six.example", "2001:db8::1")
    else:
        dns.set_a("six.example", V4)
    real, ours = differential(bins.v6, bins.ours, ["-v", "-p"], V6, [Client(V6)],
                              program=[progs.env], env=base_env())
    assert_same(real, ours)


def test_force_ipv6_for_ipv4_client(bins, dns, progs):
    """-6 on a dual-stack socket: IPv4 clients are shown as IPv4-mapped IPv6 ones."""
    real, ours = differential(bins.v6, bins.ours, ["-v", "-6"], "0", [Client(V4)],
                              program=[progs.env], env=base_env())
    assert_same(real, ours)


def test_ipv4_only(bins, dns, progs):
    """-4: an IPv4 socket; IPv4 clients see exactly what the IPv4 tcpserver gives. (By design
    not what ucspi-tcp-ipv6 -4 gives: it adds TCP6* variables with ::ffff: addresses.)"""
    real, ours = differential(bins.v4, bins.ours, ["-v"], "0", [Client(V4)],
                              program=[progs.env], env=base_env(), ours_opts=["-v", "-4"])
    assert_same(real, ours)
    with Server(bins.ours, ["-4"], "0", [progs.env], base_env()).start() as srv:
        with pytest.raises(ConnectionRefusedError):
            connect(V6, srv.port)


# MARK: - Signals

@pytest.mark.parametrize("which", ["v4", "ours"])
def test_sigterm(bins, dns, progs, which):
    binary = bins.v4 if which == "v4" else bins.ours
    with Server(binary, ["-R"], V4, [progs.hold], base_env()).start() as srv:
        s = connect(V4, srv.port)
        assert s.recv(100) == b"started\n"
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.proc.wait(3) == 0
        assert time.monotonic() - t0 < 1
        with pytest.raises(ConnectionRefusedError):
            connect(V4, srv.port)
        s.sendall(b"still here\n")
        assert read_all(s)[0] == b"done still here\n"
        s.close()


# MARK: - Robustness (ours only)

def test_immediate_resets(bins, dns, progs):
    with Server(bins.ours, ["-v", "-B", "hi\n"], V4, [progs.env], base_env()).start() as srv:
        for _ in range(20):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.settimeout(5)
            s.connect((V4, srv.port))
            s.close()
        out = talk(V4, srv.port)
        assert out.data.startswith(b"hi\nINHERITED=")
        assert srv.proc.poll() is None
        srv.wait_stderr(rb"^tcpserver: end \d+ status \d+$", count=21)
        assert srv.stderr().count(b"unable to print banner") <= 20


def test_many_quick_connections(bins, dns, progs, tmp_path):
    counter = tmp_path / "count"
    with Server(bins.ours, ["-v", "-R", "-H", "-l", "x"], V4, [progs.count, str(counter)],
                base_env()).start() as srv:
        for i in range(200):
            assert talk(V4, srv.port).data == b"ok\n", f"connection {i}"
        srv.wait_stderr(rb"^tcpserver: end \d+ status 0\n", count=200)
        assert srv.proc.poll() is None
    assert counter.read_bytes().count(b"x\n") == 200


@pytest.fixture
def silent_identd(identd_server, dns):
    ident = FakeIdent(SILENT_IDENT_IP, 113)
    ident.reply = fakeident.silent
    try:
        ident.start()
    except OSError as e:
        pytest.skip(f"cannot listen on {SILENT_IDENT_IP}:113: {e}")
    yield ident
    ident.stop()


def test_slow_ident_does_not_delay_others(bins, identd, silent_identd, progs):
    with Server(bins.ours, ["-v", "-t", "3"], V4, [progs.env], base_env()).start() as srv:
        slow = connect(V4, srv.port, source=SILENT_IDENT_IP)
        t0 = time.monotonic()
        fast = talk(V4, srv.port, source=IDENT_IP)
        elapsed = time.monotonic() - t0
        assert b"TCPREMOTEINFO=joe" in fast.data
        assert elapsed < 1.5, f"second client waited {elapsed:.2f}s for the first one's ident"
        data, _, timed_out = read_all(slow, 6)
        assert not timed_out and b"TCPREMOTEIP=127.0.0.9" in data
        assert b"TCPREMOTEINFO" not in data
        assert time.monotonic() - t0 > 2.5
        slow.close()
