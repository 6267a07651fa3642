"""Differential tests: our tcprulescheck against Debian's ucspi-tcp and ucspi-tcp-ipv6.

Databases are built with the original tcprules (or crafted byte by byte); every run compares
exit status, standard output and standard error exactly. The reference is ucspi-tcp's
tcprulescheck, or ucspi-tcp-ipv6's when TCPREMOTEIP holds a colon (that variant also cuts
the address after each `:` when looking for prefix rules).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import struct
import tempfile
from pathlib import Path

import pytest

from ucspi import Run, Toolset, cdb_hash, cdb_make, cdb_records, parallel, run

USAGE = b"tcprulescheck: usage: tcprulescheck rules.cdb\n"

UNSET = None

# MARK: - Databases

IPV4_RULES = b"""\
# tcprules(1)'s examples
joe@127.0.0.1:allow,WHO="joe at 127.0.0.1"
18.23.0.32:deny
127.:allow,WHO="127 prefix"
:allow,WHO="default"
# more of every form
1.2.3.4:allow,A="1",B="2",C=""
1.2.3.:deny,A="prefix 1.2.3."
1.2.:allow,A="prefix 1.2."
10.0.0.1:deny,LATE="ignored after deny"
10.0.0.2:allow
10.1-3.:allow,RANGE="10.1-3."
192.168.1.10-20:deny
bill@=host.example.com:allow,WHO="bill at host"
bill@1.2.3.4:allow,WHO="bill at 1.2.3.4"
@1.2.3.4:allow,WHO="empty info at 1.2.3.4"
@=host.example.com:allow,WHO="empty info at host"
=host.example.com:allow,WHO="host"
=.example.com:allow,WHO="example.com suffix"
=.com:deny,WHO="com suffix"
=.org.:allow,WHO="trailing-dot domain"
=:allow,WHO="any host"
=x.\xff.example:allow,WHO="\xff byte host",RAW="\xfe\xff"
\xff@=x.\xff.example:allow,WHO="\xff info"
1.2.\xff.4:allow,WHO="\xff ip"
5.5.5.5:allow,NUL="a\x00b",AFTER="x"
6.6.6.6:allow,EMPTY=""
7.7.7.7:allow,EQ="a=b=c",SP=" spaced "
..:allow,WHO="two dots"
.:allow,WHO="one dot"
"""

IPV6_RULES = b"""\
::1:allow,WHO="::1"
2001:db8::5:deny
2001:db8:::allow,WHO="2001:db8::"
2001:db8::allow,WHO="2001:db8:"
2001::allow,WHO="2001:"
fe80:::deny,WHO="fe80::"
::ffff:127.0.0.1:allow,WHO="mapped"
::ffff:127.:allow,WHO="mapped prefix"
::ffff::allow,WHO="::ffff:"
:::allow,WHO="::"
joe@::1:allow,WHO="joe at ::1"
joe@=v6.example.com:allow,WHO="joe at v6 host"
=v6.example.com:allow,WHO="v6 host"
=.example.com:allow,WHO="v6 domain"
1.2.3.4:allow,WHO="v4 in v6 cdb"
1.2.3.:allow,WHO="v4 prefix in v6 cdb"
:deny
"""

# No default rule: lookups may find nothing ("default: allow connection").
SPARSE_RULES = b"""\
1.2.3.4:deny
=host.example.com:allow,A="1"
joe@1.2.3.5:allow,B="2"
"""


@pytest.fixture(scope="module")
def dbs(tmp_path_factory, real_v4, real_v6) -> dict[str, Path]:
    """Databases built by the original tcprules, plus crafted ones."""
    d = tmp_path_factory.mktemp("cdbs")
    out = {}
    for name, tools, rules in [("ipv4", real_v4, IPV4_RULES), ("ipv6", real_v6, IPV6_RULES),
                               ("sparse", real_v4, SPARSE_RULES), ("empty-rules", real_v4, b"")]:
        run = tools.tcprules(rules, d / name)
        assert run.returncode == 0 and run.cdb is not None, f"{tools.label} tcprules: {run.describe()}"
        out[name] = d / name / "rules.cdb"
    crafted = {
        # Instruction lists tcprules never writes, but tcprulescheck must read as the original.
        "crafted": cdb_make([
            (b"1.1.1.1", b"+A=1\0junk\0D\0+B=2\0"),   # unknown item ignored, stops at D
            (b"1.1.1.2", b"+NOEQUALS\0+A=1"),          # variable without '=', unterminated tail
            (b"1.1.1.3", b"Dx\0+A=1\0"),              # 'D' item with more bytes is a deny
            (b"1.1.1.4", b"\0\0\0"),                  # empty items
            (b"1.1.1.5", b"+\0"),                     # empty variable text
            (b"1.1.1.6", b"D"),                        # unterminated deny: allowed
            (b"1.1.1.7", b""),
            (b"1.1.1.8", b"+A=\xff\xfe\0+\xc3\xa9=\xe2\x82\xac\0"),
            (b"1.1.1.9", b"+A=1\0+A=2\0"),
            (b"1.1.1.9", b"D\0"),                     # duplicate key: the first record wins
            (b"1.1.1.", b"+PREFIX=1\0"),
            (b"", b"+DEFAULT=1\0"),
        ]),
    }
    for name, data in crafted.items():
        (d / name).mkdir()
        (d / name / "rules.cdb").write_bytes(data)
        out[name] = d / name / "rules.cdb"
    return out


# MARK: - Comparing


def make_env(ip, host, info) -> dict[bytes, bytes]:
    env = {}
    for name, value in ((b"TCPREMOTEIP", ip), (b"TCPREMOTEHOST", host), (b"TCPREMOTEINFO", info)):
        if value is not None:
            env[name] = value
    return env


def reference_for(env: dict[bytes, bytes], real_v4: Toolset, real_v6: Toolset) -> Toolset:
    return real_v6 if b":" in env.get(b"TCPREMOTEIP", b"") else real_v4


def show(run: Run) -> str:
    return run.describe()


def compare(cdb, env, ours: Toolset, real_v4: Toolset, real_v6: Toolset, cwd=None) -> Run:
    ref_tools = reference_for(env, real_v4, real_v6)
    mine = ours.tcprulescheck(cdb, env, cwd=cwd)
    theirs = ref_tools.tcprulescheck(cdb, env, cwd=cwd)
    if (mine.returncode, mine.stdout, mine.stderr) != (theirs.returncode, theirs.stdout, theirs.stderr):
        pytest.fail(f"tcprulescheck differs from {ref_tools.label} on {cdb} with env {env!r}\n"
                    f"  ours:      {show(mine)}\n  reference: {show(theirs)}", pytrace=False)
    return mine


# MARK: - Lookups

IPS = [UNSET, b"", b"0.0.0.0", b"127.0.0.1", b"18.23.0.32", b"10.119.75.38", b"1.2.3.4", b"1.2.3.5",
       b"1.2.9.9", b"10.0.0.1", b"10.2.0.7", b"192.168.1.15", b"1.2.\xff.4", b"5.5.5.5", b"7.7.7.7",
       b"1.2.3.", b"1.2.3", b"..", b"...", b".", b"not-an-ip", b"1.1.1.9", b"1.1.1.4",
       b"::1", b"2001:db8::5", b"2001:db8::6", b"2001:db8:1::1", b"2001:0:1::1", b"fe80::1",
       b"::ffff:127.0.0.1", b"::ffff:127.9.9.9", b"::ffff:10.0.0.1", b"::", b":", b"1.2.3.4:5"]
HOSTS = [UNSET, b"", b"host.example.com", b"www.example.com", b"example.com", b"v6.example.com",
         b"x.\xff.example", b"a..b.org.", b"host-with-dash", b"."]
INFOS = [UNSET, b"", b"joe", b"bill", b"\xff"]


@pytest.mark.parametrize("db", ["ipv4", "ipv6", "sparse", "crafted"])
def test_lookups(db, dbs, ours, real_v4, real_v6):
    envs = [make_env(ip, host, info) for ip, host, info in itertools.product(IPS, HOSTS, INFOS)]
    if db != "ipv4":
        envs = random.Random(db).sample(envs, 400)
    parallel(lambda env: compare(dbs[db], env, ours, real_v4, real_v6), envs)


@pytest.mark.parametrize("ip,host,info,expected", [
    # tcprules(1)'s walk-through.
    (b"10.119.75.38", None, None, b'rule :\nset environment variable WHO=default\nallow connection\n'),
    (b"18.23.0.32", None, None, b"rule 18.23.0.32:\ndeny connection\n"),
    (b"127.0.0.1", None, b"bill", b"rule 127.:\nset environment variable WHO=127 prefix\nallow connection\n"),
    (b"127.0.0.1", None, b"joe", b"rule joe@127.0.0.1:\nset environment variable WHO=joe at 127.0.0.1\n"
                                 b"allow connection\n"),
    (b"10.0.0.1", None, None, b"rule 10.0.0.1:\ndeny connection\n"),
    (b"1.2.3.4", None, None, b"rule 1.2.3.4:\nset environment variable A=1\nset environment variable B=2\n"
                             b"set environment variable C=\nallow connection\n"),
], ids=["default", "deny", "prefix", "info-at-ip", "deny-ignores-vars", "three-vars"])
def test_man_page_walkthrough(ip, host, info, expected, dbs, ours, real_v4, real_v6):
    mine = compare(dbs["ipv4"], make_env(ip, host, info), ours, real_v4, real_v6)
    assert (mine.returncode, mine.stdout, mine.stderr) == (0, expected, b"")


def test_no_rule_found(dbs, ours, real_v4, real_v6):
    for cdb in (dbs["sparse"], dbs["empty-rules"]):
        mine = compare(cdb, make_env(b"9.9.9.9", b"h.example", b"joe"), ours, real_v4, real_v6)
        assert mine.stdout == b"default:\nallow connection\n"


def test_ipv6_prefixes_follow_the_ipv6_variant(dbs, ours, real_v6):
    for ip, key in [(b"2001:db8::6", b"2001:db8::"), (b"2001:db8:1::1", b"2001:db8:"), (b"2001:1::", b"2001:"),
                    (b"fe80::1", b"fe80::"), (b"::ffff:127.1.2.3", b"::ffff:127."), (b"::2", b"::")]:
        mine = ours.tcprulescheck(dbs["ipv6"], {b"TCPREMOTEIP": ip})
        theirs = real_v6.tcprulescheck(dbs["ipv6"], {b"TCPREMOTEIP": ip})
        assert mine == theirs
        assert mine.stdout.startswith(b"rule " + key + b":\n"), mine.describe()


# MARK: - Errors


def test_usage(ours, real_v4):
    mine, theirs = ours.tcprulescheck(None), real_v4.tcprulescheck(None)
    assert mine == theirs
    assert (mine.returncode, mine.stdout, mine.stderr) == (100, b"", USAGE)


def test_extra_arguments_ignored(dbs, ours, real_v4):
    argv_tail = [dbs["ipv4"], "extra", "args"]
    env = {b"TCPREMOTEIP": b"18.23.0.32"}
    mine = run([ours.path("tcprulescheck"), *argv_tail], stdin=None, env=env)
    theirs = run([real_v4.path("tcprulescheck"), *argv_tail], stdin=None, env=env)
    assert mine == theirs
    assert mine.stdout == b"rule 18.23.0.32:\ndeny connection\n"


def test_empty_path(ours, real_v4, real_v6):
    mine = compare("", {}, ours, real_v4, real_v6)
    assert (mine.returncode, mine.stderr) == (111, unable("", b"file does not exist"))


def unable(path, why: bytes) -> bytes:
    return b"tcprulescheck: fatal: unable to read " + os.fsencode(path) + b": " + why + b"\n"


def test_missing_file(tmp_path, ours, real_v4, real_v6):
    mine = compare("missing.cdb", {}, ours, real_v4, real_v6, cwd=tmp_path)
    assert (mine.returncode, mine.stderr) == (111, unable("missing.cdb", b"file does not exist"))
    mine = compare("nodir/x.cdb", {b"TCPREMOTEIP": b"::1"}, ours, real_v4, real_v6, cwd=tmp_path)
    assert mine.returncode == 111


def test_empty_file(tmp_path, ours, real_v4, real_v6):
    (tmp_path / "empty.cdb").write_bytes(b"")
    mine = compare("empty.cdb", {}, ours, real_v4, real_v6, cwd=tmp_path)
    assert (mine.returncode, mine.stderr) == (111, unable("empty.cdb", b"invalid argument"))


def test_short_file(tmp_path, ours, real_v4, real_v6):
    (tmp_path / "short.cdb").write_bytes(b"x")
    mine = compare("short.cdb", {}, ours, real_v4, real_v6, cwd=tmp_path)
    assert (mine.returncode, mine.stderr) == (111, unable("short.cdb", b"protocol error"))


def test_directory_as_file(tmp_path, ours, real_v4, real_v6):
    """Debian's tcprulescheck dies of SIGSEGV here (after mmap fails with ENODEV it reads
    through MAP_FAILED). Ours must fail cleanly with exit 111; if the original ever stops
    crashing, the two must agree exactly."""
    (tmp_path / "dir.cdb").mkdir()
    for real in (real_v4, real_v6):
        mine = ours.tcprulescheck("dir.cdb", {}, cwd=tmp_path)
        theirs = real.tcprulescheck("dir.cdb", {}, cwd=tmp_path)
        if theirs.returncode == -signal.SIGSEGV:
            # No reference: any one-line "unable to read" with exit 111 will do.
            prefix = unable("dir.cdb", b"")[:-1]
            assert mine.returncode == 111 and mine.stdout == b"", mine.describe()
            assert mine.stderr.startswith(prefix) and mine.stderr.count(b"\n") == 1, mine.describe()
            assert mine.stderr.endswith(b"\n") and len(mine.stderr) > len(prefix) + 1, mine.describe()
        else:
            assert mine == theirs


def test_unreadable_file(dbs, ours, real_v4):
    """A file the user may not read (as root the test drops to nobody)."""
    def nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    preexec = nobody if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-") as top:
        top_path = Path(top)
        top_path.chmod(0o755)
        (top_path / "secret.cdb").write_bytes(dbs["ipv4"].read_bytes())
        (top_path / "secret.cdb").chmod(0o000)
        runs = []
        for tools in (ours, real_v4):
            bindir = top_path / f"bin-{tools.label}"
            bindir.mkdir()
            (bindir / "tcprulescheck").write_bytes(tools.path("tcprulescheck").read_bytes())
            (bindir / "tcprulescheck").chmod(0o755)
            runs.append(Toolset(bindir, tools.label).tcprulescheck("secret.cdb", {}, cwd=top_path,
                                                                    preexec=preexec))
        mine, theirs = runs
        assert mine == theirs, f"\n  ours: {mine.describe()}\n  real: {theirs.describe()}"
        assert (mine.returncode, mine.stderr) == (111, unable("secret.cdb", b"access denied"))


# MARK: - Damaged databases

DAMAGE_ENVS = [
    make_env(b"1.2.3.4", b"host.example.com", b"bill"),
    make_env(b"127.0.0.1", None, b"joe"),
    make_env(b"9.8.7.6", b"www.example.com", None),
    make_env(b"10.2.0.7", None, None),
    make_env(None, None, None),
    make_env(b"5.5.5.5", b"x.\xff.example", b"\xff"),
    make_env(b"2001:db8::6", b"v6.example.com", b"joe"),
    make_env(b"::1", None, None),
]


def write_variant(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def check_variants(variants: list[tuple[str, bytes]], directory: Path, ours, real_v4, real_v6):
    """Each variant once, with one environment (rotating through DAMAGE_ENVS), both ways."""
    def one(item):
        i, (name, data) = item
        path = write_variant(directory, name, data)
        compare(path, DAMAGE_ENVS[i % len(DAMAGE_ENVS)], ours, real_v4, real_v6)

    parallel(one, list(enumerate(variants)))


@pytest.mark.parametrize("db", ["ipv4", "ipv6"])
def test_truncated(db, dbs, tmp_path, ours, real_v4, real_v6):
    """Cut at every offset: all of the header (0..2048), the records and the hash tables."""
    data = dbs[db].read_bytes()
    variants = [(f"cut{n}.cdb", data[:n]) for n in range(len(data))]
    check_variants(variants, tmp_path, ours, real_v4, real_v6)


def test_truncated_inside_records_many_lookups(dbs, tmp_path, ours, real_v4, real_v6):
    """Cuts inside the records region with every damage environment."""
    data = dbs["ipv4"].read_bytes()
    end = struct.unpack_from("<I", data, 0)[0]
    cuts = sorted(random.Random(7).sample(range(2048, end), min(60, end - 2048)))
    variants = [(f"cut{n}-{e}.cdb", data[:n], e) for n in cuts for e in range(len(DAMAGE_ENVS))]

    def one(item):
        name, cut, e = item
        compare(write_variant(tmp_path, name, cut), DAMAGE_ENVS[e], ours, real_v4, real_v6)

    parallel(one, variants)


def corrupt(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    end = struct.unpack_from("<I", data, 0)[0]
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        where = rng.random()
        if where < 0.35:
            pos = rng.randrange(2048)                   # header: table positions and sizes
        elif where < 0.7:
            pos = rng.randrange(end, len(data))         # hash tables: hashes and record positions
        else:
            pos = rng.randrange(2048, end)              # records: lengths, keys, data
        how = rng.random()
        if how < 0.4:
            out[pos] = rng.randrange(256)
        elif how < 0.6:
            out[pos] ^= 1 << rng.randrange(8)
        elif how < 0.8:
            out[pos:pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x00\x08\0\0",
                                           struct.pack("<I", len(data)), struct.pack("<I", len(data) - 4)])
        else:
            out[pos] = 0
    return bytes(out[:len(data)])


@pytest.mark.parametrize("db", ["ipv4", "ipv6"])
def test_corrupted(db, dbs, tmp_path, ours, real_v4, real_v6):
    data = dbs[db].read_bytes()
    rng = random.Random(f"corrupt-{db}")
    variants = [(f"bad{i}.cdb", corrupt(data, rng)) for i in range(300)]
    check_variants(variants, tmp_path, ours, real_v4, real_v6)


def colliding_keys(lead: bytes, prefix_len: int = 5) -> tuple[bytes, bytes]:
    """Two different strings s, t with cdb_hash(lead + s) == cdb_hash(lead + t). Any common
    suffix keeps them colliding (each step of the hash is a bijection of its state)."""
    seen: dict[int, bytes] = {}
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789"
    for combo in itertools.product(alphabet, repeat=prefix_len):
        s = bytes(combo)
        h = cdb_hash(lead + s)
        if h in seen:
            return seen[h], s
        seen[h] = s
    raise AssertionError("no collision")


def test_long_key_colliding_hash_past_end(tmp_path, ours, real_v4, real_v6):
    """A crafted cdb whose tables come before the records, cut inside the last record's key.

    The looked-up key (=B...) has the same hash and length as the stored one (=A...), and
    they differ in their first 32 bytes. djb's cdb compares keys 32 bytes at a time and stops
    at the first difference, so the original never reads past the end of the file here and
    goes on to the next rule: it answers with the default rule."""
    a, b = colliding_keys(b"=")
    tail = b".example.com" + b"x" * 40
    key_a, key_b = b"=" + a + tail, b"=" + b + tail
    assert cdb_hash(key_a) == cdb_hash(key_b) and len(key_a) > 40

    def layout(records):
        # Header, then every table, then the records: a valid cdb, though not cdb_make's order.
        hashed = [(cdb_hash(k), k, v) for k, v in records]
        tables_start = 2048
        table_sizes = [2 * sum(1 for h, _, _ in hashed if h & 255 == i) for i in range(256)]
        records_start = tables_start + 8 * sum(table_sizes)
        pos, placed = records_start, []
        for h, k, v in hashed:
            placed.append((h, pos))
            pos += 8 + len(k) + len(v)
        header, tables, tpos = b"", b"", tables_start
        for i in range(256):
            slots = table_sizes[i]
            header += struct.pack("<II", tpos, slots)
            table = [(0, 0)] * slots
            for h, p in placed:
                if h & 255 == i:
                    j = (h >> 8) % slots
                    while table[j][1]:
                        j = (j + 1) % slots
                    table[j] = (h, p)
            tables += b"".join(struct.pack("<II", h, p) for h, p in table)
            tpos += 8 * slots
        body = b"".join(struct.pack("<II", len(k), len(v)) + k + v for _, k, v in hashed)
        return header + tables + body

    whole = layout([(b"", b"+DEFAULT=1\0"), (key_a, b"+A=1\0")])
    key_at = len(whole) - len(b"+A=1\0") - len(key_a)
    env = make_env(b"9.9.9.9", key_b[1:], None)
    intact = write_variant(tmp_path, "intact.cdb", whole)
    assert compare(intact, env, ours, real_v4, real_v6).stdout.startswith(b"rule :\n")
    for cut in (key_at + 32, key_at + 33, key_at + 40, key_at + len(key_a) - 1):
        compare(write_variant(tmp_path, f"cut{cut}.cdb", whole[:cut]), env, ours, real_v4, real_v6)


def test_every_record_of_the_database_is_reachable(dbs, ours, real_v4):
    """Each IPv4-database key, looked up as TCPREMOTEIP, gives the same answer both ways."""
    keys = {k for k, _ in cdb_records(dbs["ipv4"].read_bytes()) if k and b"@" not in k and not k.startswith(b"=")}
    parallel(lambda k: compare(dbs["ipv4"], {b"TCPREMOTEIP": k}, ours, real_v4, real_v4), sorted(keys))
