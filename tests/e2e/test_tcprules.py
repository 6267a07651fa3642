"""Differential tests: our tcprules against Debian's ucspi-tcp and ucspi-tcp-ipv6.

For every input: the same exit status, the same standard error bytes, nothing on standard
output, and a byte-identical cdb (or none / the old one untouched on failure).

Which original is the reference: ours follows the IPv6 variant's choice of separating
colon (the first `:` followed by `allow` or `deny`), so inputs with a line holding more than
one colon are compared against ucspi-tcp-ipv6's tcprules, everything else against
ucspi-tcp's. The IPv6 variant loops forever on a line that has no colon followed by
allow/deny (and on colon-less lines, which both ucspi-tcp and ours skip): such lines are
never given to it (see ucspi.v6_safe_input); ours must reject them as ucspi-tcp does.

Ours removes its unfinished temporary file on failure (the originals leave it): the tmp
file's existence is not compared, but ours is checked to remove it.
"""

from __future__ import annotations

import os
import random
import stat
import tempfile
from pathlib import Path

import pytest

from ucspi import (HANG_TIMEOUT, Hung, RulesRun, Toolset, cdb_make, cdb_records, fresh_dir,
                   needs_v6, parallel, parse_error, v6_hangs, v6_safe_input)

USAGE = b"tcprules: usage: tcprules rules.cdb rules.tmp\n"
FATAL = b"tcprules: fatal: "


# MARK: - Comparing


def show(run: RulesRun) -> str:
    cdb = "no cdb" if run.cdb is None else f"cdb of {len(run.cdb)} bytes"
    return f"{run.describe()}, {cdb}"


def explain_cdb_difference(mine: bytes, theirs: bytes) -> str:
    try:
        a, b = cdb_records(mine), cdb_records(theirs)
    except Exception:  # noqa: BLE001 - only for the message
        return "cdbs differ (records not readable)"
    if a == b:
        return f"same records ({len(a)}), different bytes (hash tables?)"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"record {i}: ours {x!r}, reference {y!r}"
    return f"ours has {len(a)} records, reference {len(b)}; first extra: {(a + b)[min(len(a), len(b))]!r}"


def reference(rules: bytes, work: Path, real_v4: Toolset, real_v6: Toolset) -> tuple[tuple, str]:
    """The outcome ours must have on `rules`, and which original gave it."""
    if not needs_v6(rules):
        ref = real_v4.tcprules(rules, fresh_dir(work / "v4"))
        return ref.outcome(), "ucspi-tcp"
    safe, hang_line = v6_safe_input(rules)
    ref = real_v6.tcprules(safe, fresh_dir(work / "v6"))
    if hang_line is not None and ref.returncode == 0:
        # The IPv6 variant would hang on this line; ucspi-tcp rejects it, and so must ours.
        return (100, b"", parse_error(hang_line), None), "ucspi-tcp-ipv6 up to a line ucspi-tcp rejects"
    return ref.outcome(), "ucspi-tcp-ipv6"


def check(rules: bytes, work: Path, ours: Toolset, real_v4: Toolset, real_v6: Toolset) -> RulesRun:
    """Runs ours and the right original on `rules`; asserts identical outcomes."""
    expected, source = reference(rules, work, real_v4, real_v6)
    mine = ours.tcprules(rules, fresh_dir(work / "ours"))
    if mine.outcome() != expected:
        exp = RulesRun(expected[0], expected[1], expected[2], cdb=expected[3])
        detail = ""
        if mine.cdb is not None and exp.cdb is not None:
            detail = "\n  " + explain_cdb_difference(mine.cdb, exp.cdb)
        excerpt = rules if len(rules) <= 400 else rules[:400] + b"..."
        pytest.fail(f"tcprules differs from {source} on input {excerpt!r}\n"
                    f"  ours:      {show(mine)}\n  reference: {show(exp)}{detail}", pytrace=False)
    assert mine.stdout == b""
    if mine.returncode != 0:
        assert not mine.tmp_left, "ours must remove its unfinished rules.tmp on failure"
    return mine


# MARK: - Hand-written cases

CASES: dict[str, bytes] = {
    # From tcprules(1).
    "man-deny-ip": b"18.23.0.32:deny\n",
    "man-examples-placeholders": b"joe@127.0.0.1:first\n18.23.0.32:second\n:third\n127.:fourth\n",
    "man-examples-real": b"joe@127.0.0.1:allow,A=\"1\"\n18.23.0.32:deny\n:allow,A=\"3\"\n127.:allow,A=\"4\"\n",
    "man-range": b"1.2.3.37-53:allow\n",
    "man-range-middle": b"10.2-3.:allow\n",
    "man-default-deny": b":deny\n",
    "man-relayclient": b"10.0.:allow,RELAYCLIENT=\"@fix.me\"\n",
    "man-slash-quotes": b"10.0.:allow,RELAYCLIENT=/@fix.me/\n",
    "man-two-vars": b"127.0.0.1:allow,RELAYCLIENT=\"\",TCPLOCALHOST=\"movie.edu\"\n",
    # Comments, blank lines, whitespace, odd bytes.
    "comment": b"# a comment\n#1.2.3.4:deny\n1.2.3.4:allow\n",
    "comment-indented-is-not": b" #1.2.3.4:allow\n",
    "comment-bad-syntax-ignored": b"#x:y:z\n#:nonsense\n",
    "blank-lines": b"\n\n1.2.3.4:allow\n\n\n:deny\n\n",
    "whitespace-only-lines": b"   \n\t\t\n \t \n1.2.3.4:allow\n",
    "no-colon-lines": b"hello world\n1.2.3.4 allow\nallow\n1.2.3.4:allow\n",
    "trailing-spaces": b"1.2.3.4:allow   \n5.6.7.8:deny\t\t\n:allow,X=\"y\" \t \n",
    "trailing-space-inside-quotes": b"1.2.3.4:allow,X=\"a \"\n",
    "trailing-space-before-close-quote-stripped": b"1.2.3.4:allow,X=\"a   \n",
    "leading-space": b" 1.2.3.4:allow\n",
    "space-before-colon": b"1.2.3.4 :allow\n",
    "space-after-colon": b"1.2.3.4: allow\n",
    "space-in-address": b"1.2.3 .4:allow\n",
    "cr-at-end": b"1.2.3.4:allow\r\n",
    "cr-in-value": b"1.2.3.4:allow,X=\"a\rb\"\n",
    "cr-only-line": b"\r\n1.2.3.4:allow\n",
    "crlf-comment": b"# comment\r\n1.2.3.4:deny\n",
    "nul-in-address": b"1.2\x003.4:allow\n",
    "nul-in-value": b"1.2.3.4:allow,X=\"a\x00b\"\n",
    "nul-in-name": b"1.2.3.4:allow,X\x00Y=\"ab\"\n",
    "nul-in-bad-line": b"1.2.3.4:allow,X=\"a\x00b\n",
    "nul-first-in-bad-line": b"\x001.2.3.4:allowx\n",
    "nul-only-line": b"\x00\n",
    "high-bytes": b"=h\xc3\xa9llo\xff:allow,X=\"\xfe\xff\"\n",
    "high-bytes-error": b"=h\xff:allow,\xfe\n",
    "last-line-no-newline": b"1.2.3.4:allow\n5.6.7.8:deny",
    "last-line-no-newline-bad": b"1.2.3.4:allow\n5.6.7.8:dent",
    "last-line-no-newline-comment": b"1.2.3.4:allow\n# end",
    "last-line-trailing-space-no-newline": b"1.2.3.4:deny \t",
    "empty-input": b"",
    "only-newline": b"\n",
    "only-comment": b"#\n",
    "duplicate-keys": b"1.2.3.4:allow\n1.2.3.4:deny\n1.2.3.4:allow,X=\"1\"\n",
    "long-line": b"1.2.3.4:allow,X=\"" + b"v" * 200_000 + b"\"\n",
    "long-address": b"=" + b"h." * 50_000 + b":deny\n",
    "many-vars": b"1.2.3.4:allow" + b"".join(b",V%d=\"%d\"" % (i, i) for i in range(500)) + b"\n",
    # Ranges.
    "range-last": b"1.2.3.40-50:allow\n",
    "range-third": b"10.2-3.:deny\n",
    "range-first": b"1-3.:allow\n",
    "range-first-no-dot": b"1-3:allow\n",
    "range-with-suffix": b"1.2-4.5.6:allow\n",
    "range-single": b"1.2.3.7-7:allow\n",
    "range-full": b"1.2.3.0-255:allow,X=\"y\"\n",
    "range-top-clamped": b"1.2.3.250-300:allow\n",
    "range-top-huge": b"1.2.3.254-99999999999999999999999:allow\n",
    "range-bottom-huge-wraps": b"1.2.3.18446744073709551616-2:allow\n",
    "range-bottom-above-top": b"1.2.3.50-40:allow\n",
    "range-bottom-above-255": b"1.2.3.256-300:allow\n",
    "range-empty-bottom": b"1.2.3.-5:allow\n",
    "range-empty-top": b"1.2.3.5-:allow\n",
    "range-empty-both": b"1.2.3.-:allow\n",
    "range-only-dash": b"-:allow\n",
    "range-leading-zeros": b"1.2.3.007-011:allow\n",
    "range-non-digit-bottom": b"1.2.3.4a-5:allow\n",
    "range-non-digit-top": b"1.2.3.4-5a:allow\n",
    "range-hex": b"1.2.3.0x1-0x5:allow\n",
    "range-space": b"1.2.3.4 -5:allow\n",
    "range-plus": b"1.2.3.+4-5:allow\n",
    "range-two-dashes": b"1.2.3.4-5-6:allow\n",
    "range-two-dashes-two-fields": b"1.2-3.4-5:allow\n",
    "range-dash-in-two-fields-bad": b"1.2-3x.4-5:allow\n",
    "range-then-error-later": b"1.2.3.4-5:allow\n1.2.3.9-x:allow\n",
    "range-deny-vars": b"10.0-1.:deny,X=\"1\"\n",
    "range-nul-after-bottom": b"1.2.3.4\x00-5:allow\n",
    "range-nul-before-bottom": b"1.2.3.\x004-5:allow\n",
    "range-nul-after-top": b"1.2.3.4-5\x00:allow\n",
    "range-nul-inside-top": b"1.2.3.4-5\x00x:allow\n",
    "host-with-dash-not-range": b"=host-with-dash:allow\n",
    "domain-with-dash-not-range": b"=.my-domain.example:deny\n",
    "equals-later-not-range": b"1-2=x:allow\n",
    "user-at-ip-range-not-expanded": b"joe@1.2.3.4-5:allow\n",
    "user-with-dash-at-ip": b"joe-x@1.2.3.4:allow\n",
    "user-with-dash-at-host": b"joe-x@=host:allow\n",
    "user-bad-range": b"joe@1.2.3.x-y:allow\n",
    # Addresses.
    "user-at-ip": b"joe@127.0.0.1:allow\n",
    "user-at-host": b"joe@=host.example.com:deny\n",
    "empty-user-at-ip": b"@1.2.3.4:allow\n",
    "host": b"=host.example.com:allow\n",
    "domain": b"=.example.com:deny\n",
    "equals-alone": b"=:allow\n",
    "empty-default-deny": b":deny\n",
    "empty-default-allow-vars": b":allow,X=\"1\"\n",
    "prefixes": b"1.:allow\n1.2.:deny\n1.2.3.:allow\n",
    # Instructions and variables.
    "allow": b"1.2.3.4:allow\n",
    "deny": b"1.2.3.4:deny\n",
    "deny-vars": b"1.2.3.4:deny,X=\"1\",Y=\"2\"\n",
    "allowx": b"1.2.3.4:allowx\n",
    "denyx": b"1.2.3.4:denyx\n",
    "Allow-capital": b"1.2.3.4:Allow\n",
    "allo": b"1.2.3.4:allo\n",
    "den": b"1.2.3.4:den\n",
    "empty-instructions": b"1.2.3.4:\n",
    "quote-double": b"1.2.3.4:allow,X=\"a b c\"\n",
    "quote-single": b"1.2.3.4:allow,X='a'\n",
    "quote-slash": b"1.2.3.4:allow,X=/a/\n",
    "quote-letter": b"1.2.3.4:allow,X=xabcx\n",
    "quote-letter-in-value": b"1.2.3.4:allow,X=aba\n",
    "quote-comma": b"1.2.3.4:allow,X=,a,\n",
    "quote-equals": b"1.2.3.4:allow,X==a=\n",
    "quote-space": b"1.2.3.4:allow,X= a \n",
    "quote-tab": b"1.2.3.4:allow,X=\ta\t\n",
    "quote-colon": b"1.2.3.4:allow,X=:a:\n",
    "quote-nul": b"1.2.3.4:allow,X=\x00a\x00\n",
    "quote-high-byte": b"1.2.3.4:allow,X=\xffa\xff\n",
    "empty-value": b"1.2.3.4:allow,X=\"\"\n",
    "empty-value-letter": b"1.2.3.4:allow,X=qq\n",
    "empty-name": b"1.2.3.4:allow,=\"v\"\n",
    "empty-name-and-value": b"1.2.3.4:allow,=\"\"\n",
    "equals-in-value": b"1.2.3.4:allow,X=\"a=b\"\n",
    "comma-in-value": b"1.2.3.4:allow,X=\"a,b\",Y=\"c\"\n",
    "comma-in-name": b"1.2.3.4:allow,X,Y=\"c\"\n",
    "space-in-name": b"1.2.3.4:allow,X Y=\"c\"\n",
    "same-var-twice": b"1.2.3.4:allow,X=\"1\",X=\"2\"\n",
    "missing-closing-quote": b"1.2.3.4:allow,X=\"abc\n",
    "missing-quote-and-value": b"1.2.3.4:allow,X=\n",
    "missing-equals": b"1.2.3.4:allow,X\n",
    "missing-equals-with-quotes": b"1.2.3.4:allow,X\"a\"\n",
    "trailing-comma": b"1.2.3.4:allow,\n",
    "trailing-comma-after-var": b"1.2.3.4:allow,X=\"1\",\n",
    "double-comma": b"1.2.3.4:allow,,X=\"1\"\n",
    "junk-after-var": b"1.2.3.4:allow,X=\"1\"junk\n",
    "space-after-allow": b"1.2.3.4:allow ,X=\"1\"\n",
    "semicolon": b"1.2.3.4:allow;X=\"1\"\n",
    "error-after-good-lines": b"1.2.3.4:allow\n5.6.7.8:deny\nbad:line\n9.9.9.9:allow\n",
    "first-line-error": b"x:y\n1.2.3.4:allow\n",
    # Colons: one colon agrees everywhere; several follow the IPv6 variant.
    "colon-in-value": b"1.2.3.4:allow,X=\"a:b\"\n",
    "colon-in-value-deny-word": b"1.2.3.4:allow,X=\":deny\"\n",
    "ipv6-loopback": b"::1:allow\n",
    "ipv6-prefix-deny": b"2001:db8:::deny\n",
    "ipv6-full": b"2001:db8:0:0:0:0:0:1:allow,X=\"v6\"\n",
    "ipv6-any": b":::allow\n",
    "ipv6-colon-key": b"::deny\n",
    "ipv6-mapped": b"::ffff:1.2.3.4:deny\n",
    "ipv6-user": b"joe@::1:allow\n",
    "ipv6-host-colon": b"=a:b:allow\n",
    "ipv6-range-is-error": b"2001:db8::1-5:allow\n",
    "ipv6-range-after-dot": b"::ffff:1.2.3.4-6:allow\n",
    "ipv6-allow-in-name": b"1:b:allow,X:deny=\"1\"\n",
    "ipv6-deny-then-allow": b"a:deny:allow\n",
    "ipv6-mixed-file": b"1.2.3.4:allow\n::1:deny\n10.:allow,X=\"1\"\nfe80::1:2:allow\n:deny\n",
    "ipv6-mixed-with-skipped": b"hello\n  \n::1:allow\nno colon here\n1.2.3.4:deny\n",
    "ipv6-later-error": b"::1:allow\n1.2.3.4:denyx\n",
    "ipv6-bad-var": b"::1:allow,X\n",
    # Lines the IPv6 variant hangs on: ours rejects them, as ucspi-tcp does.
    "colons-no-instructions": b"a:b:c\n",
    "colons-den": b"::1:den\n",
    "colons-then-good": b"1.2.3.4:allow\na:b:c\n5.6.7.8:deny\n",
    "colons-after-error": b"1.2.3.4:nope\na:b:c\n",
    "one-colon-den-with-v6-line": b"::1:allow\n1.2.3.4:den\n",
}


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, tmp_path, ours, real_v4, real_v6):
    check(CASES[name], tmp_path, ours, real_v4, real_v6)


# MARK: - What the IPv6 syntax means


def only_records(run: RulesRun) -> list[tuple[bytes, bytes]]:
    assert run.returncode == 0, run.describe()
    assert run.cdb is not None
    return cdb_records(run.cdb)


@pytest.mark.parametrize("line,records", [
    (b"::1:allow\n", [(b"::1", b"")]),
    (b"2001:db8:::deny\n", [(b"2001:db8::", b"D\0")]),
    (b":::allow,X=\"1\"\n", [(b"::", b"+X=1\0")]),
    (b"::ffff:10.0.0.1:deny\n", [(b"::ffff:10.0.0.1", b"D\0")]),
    (b"1.2.3.40-42:deny\n", [(b"1.2.3.40", b"D\0"), (b"1.2.3.41", b"D\0"), (b"1.2.3.42", b"D\0")]),
    (b"10.2-3.:allow\n", [(b"10.2.", b""), (b"10.3.", b"")]),
])
def test_ipv6_colon_choice(line, records, tmp_path, ours):
    assert only_records(ours.tcprules(line, tmp_path)) == records


HANGING = [b"a:b:c\n", b"1.2.3.4:den\n", b"::1:den\n", b"2001:db8::\n", b"x:allo\n",
           b"::1:Allow\n", b"a:b:c"]


def test_ipv6_variant_hangs_where_expected(tmp_path, real_v6):
    """Confirms the model the other tests rely on (ucspi.v6_hangs): the IPv6 variant loops
    forever exactly on these lines, and finishes on lines the model says it finishes on."""
    finishing = [b"::1:allow\n", b"a:b:deny\n", b"x:y:allow,X=\"1\"\n", b"#a:b:c\n", b"\n",
                 b"1.2.3.4:allowx\n", b"a:b:allow,X\n"]
    for line in HANGING:
        assert v6_hangs(line), line
    for line in finishing:
        assert not v6_hangs(line), line

    def attempt(item):
        i, line = item
        try:
            real_v6.tcprules(line, fresh_dir(tmp_path / f"r{i}"), timeout=HANG_TIMEOUT if v6_hangs(line) else 20)
        except Hung:
            return True
        return False

    items = list(enumerate(HANGING + finishing))
    hung = parallel(attempt, items, workers=len(items))
    assert hung == [v6_hangs(line) for _, line in items]


@pytest.mark.parametrize("line", HANGING)
def test_lines_the_ipv6_variant_hangs_on(line, tmp_path, ours, real_v4):
    """Ours exits 100 with the parse error (as ucspi-tcp does), and removes rules.tmp."""
    mine = ours.tcprules(line, fresh_dir(tmp_path / "ours"))
    assert (mine.returncode, mine.stdout, mine.stderr, mine.cdb) == (100, b"", parse_error(line), None)
    assert not mine.tmp_left
    v4 = real_v4.tcprules(line, fresh_dir(tmp_path / "v4"))
    assert v4.outcome() == mine.outcome()


# MARK: - Errors of every kind


@pytest.mark.parametrize("args", [[], ["only.cdb"]])
def test_usage(args, tmp_path, ours, real_v4):
    mine = ours.tcprules(b"", fresh_dir(tmp_path / "ours"), args=args)
    real = real_v4.tcprules(b"", fresh_dir(tmp_path / "v4"), args=args)
    assert mine.outcome() == real.outcome()
    assert (mine.returncode, mine.stderr) == (100, USAGE)


@pytest.mark.parametrize("args", [["rules.cdb", "rules.tmp", "extra", "args"], ["same", "same"]],
                         ids=["extra-args-ignored", "cdb-and-tmp-same-path"])
def test_odd_arguments(args, tmp_path, ours, real_v4):
    rules = b"1.2.3.4:allow\n:deny\n"
    mine = ours.tcprules(rules, fresh_dir(tmp_path / "ours"), args=args, cdb=args[0], tmp=args[1])
    real = real_v4.tcprules(rules, fresh_dir(tmp_path / "v4"), args=args, cdb=args[0], tmp=args[1])
    assert mine.outcome() == real.outcome(), f"\n  ours: {show(mine)}\n  real: {show(real)}"
    assert mine.returncode == 0 and mine.cdb is not None


def test_stdin_from_regular_file(tmp_path, ours, real_v4, real_v6):
    """Standard input a file rather than a pipe: reads come in other sizes."""
    rules = rand_file(77, 4000, v6=True, error=False)
    src = tmp_path / "rules.txt"
    src.write_bytes(rules)
    safe, hang = v6_safe_input(rules)
    assert hang is None
    (tmp_path / "safe.txt").write_bytes(safe)
    runs = []
    for tools, path in ((ours, src), (real_v6, tmp_path / "safe.txt")):
        with open(path, "rb") as f:
            runs.append(tools.tcprules(b"", fresh_dir(tmp_path / tools.label), stdin=f.fileno()))
    mine, theirs = runs
    assert mine.outcome() == theirs.outcome(), f"\n  ours: {show(mine)}\n  real: {show(theirs)}"
    assert mine.returncode == 0


def compare_in_setup(tmp_path: Path, ours: Toolset, real: Toolset, setup, rules: bytes = b"1.2.3.4:allow\n",
                     **kw) -> tuple[RulesRun, RulesRun]:
    """Runs both in identical fresh directories prepared by setup(dir); same outcome."""
    runs = []
    for tools in (ours, real):
        work = fresh_dir(tmp_path / tools.label)
        setup(work)
        runs.append(tools.tcprules(rules, work, **kw))
    mine, theirs = runs
    assert mine.outcome() == theirs.outcome(), f"\n  ours: {show(mine)}\n  real: {show(theirs)}"
    assert mine.stdout == b""
    return mine, theirs


def test_create_tmp_in_missing_directory(tmp_path, ours, real_v4):
    mine, _ = compare_in_setup(tmp_path, ours, real_v4, lambda d: None, tmp="nodir/rules.tmp")
    assert (mine.returncode, mine.stderr) == (111, FATAL + b"unable to create nodir/rules.tmp: file does not exist\n")


def test_create_tmp_is_directory(tmp_path, ours, real_v4):
    mine, _ = compare_in_setup(tmp_path, ours, real_v4, lambda d: (d / "rules.tmp").mkdir())
    assert (mine.returncode, mine.stderr) == (111, FATAL + b"unable to create rules.tmp: is a directory\n")


def test_create_tmp_under_a_file(tmp_path, ours, real_v4):
    mine, _ = compare_in_setup(tmp_path, ours, real_v4, lambda d: (d / "file").write_bytes(b"x"),
                               tmp="file/rules.tmp")
    assert (mine.returncode, mine.stderr) == (111, FATAL + b"unable to create file/rules.tmp: not a directory\n")


def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_create_tmp_unwritable_directory(ours, real_v4):
    """A directory the user may not write to (as root the test drops to nobody)."""
    preexec = as_nobody if os.geteuid() == 0 else None
    # pytest's tmp_path is private to its user: use a world-searchable directory, with each
    # binary copied in so that nobody can run it wherever the build lives.
    with tempfile.TemporaryDirectory(prefix="bastion-e2e-") as top:
        top_path = Path(top)
        top_path.chmod(0o755)
        outcomes = []
        for tools in (ours, real_v4):
            bindir = top_path / f"bin-{tools.label}"
            bindir.mkdir()
            binary = bindir / "tcprules"
            binary.write_bytes(tools.path("tcprules").read_bytes())
            binary.chmod(0o755)
            work = top_path / f"work-{tools.label}"
            (work / "ro").mkdir(parents=True)
            (work / "ro").chmod(0o555)
            run = Toolset(bindir, tools.label).tcprules(b"1.2.3.4:allow\n", work, tmp="ro/rules.tmp",
                                                        cdb="ro/rules.cdb", preexec=preexec)
            outcomes.append(run)
        mine, theirs = outcomes
        assert mine.outcome() == theirs.outcome(), f"\n  ours: {show(mine)}\n  real: {show(theirs)}"
        assert (mine.returncode, mine.stderr) == (111, FATAL + b"unable to create ro/rules.tmp: access denied\n")


def test_read_input_is_directory(tmp_path, ours, real_v4):
    runs = []
    for tools in (ours, real_v4):
        work = fresh_dir(tmp_path / tools.label)
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        try:
            runs.append(tools.tcprules(b"", work, stdin=fd))
        finally:
            os.close(fd)
    mine, theirs = runs
    assert mine.outcome() == theirs.outcome(), f"\n  ours: {show(mine)}\n  real: {show(theirs)}"
    assert (mine.returncode, mine.stderr) == (111, FATAL + b"unable to read input: is a directory\n")
    assert not mine.tmp_left


@pytest.mark.parametrize("rules", [b"", b"1.2.3.4:allow\n", b"1.2.3.0-255:allow,X=\"" + b"y" * 5000 + b"\"\n"])
def test_write_error(rules, tmp_path, ours, real_v4):
    """rules.tmp is a symlink to /dev/full: every write fails with ENOSPC. (Ours removes
    rules.tmp on failure: here that removes only the symlink.)"""
    if not os.path.exists("/dev/full"):
        pytest.fail("/dev/full is missing: cannot provoke a write error")
    mine, _ = compare_in_setup(tmp_path, ours, real_v4, lambda d: (d / "rules.tmp").symlink_to("/dev/full"),
                               rules=rules)
    assert (mine.returncode, mine.stderr) == (111, FATAL + b"unable to write to rules.tmp: out of disk space\n")
    assert not mine.tmp_left
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_move_into_missing_directory(tmp_path, ours, real_v4):
    mine, theirs = compare_in_setup(tmp_path, ours, real_v4, lambda d: None, cdb="nodir/rules.cdb")
    assert (mine.returncode, mine.stderr) == (
        111, FATAL + b"unable to move rules.tmp to nodir/rules.cdb: file does not exist\n")
    # The finished rules.tmp is not "unfinished": whether it stays is not compared.


def test_move_over_directory(tmp_path, ours, real_v4):
    def setup(d):
        (d / "rules.cdb").mkdir()
        (d / "rules.cdb" / "x").write_bytes(b"")
    mine, _ = compare_in_setup(tmp_path, ours, real_v4, setup)
    assert (mine.returncode, mine.stderr) == (111, FATAL + b"unable to move rules.tmp to rules.cdb: is a directory\n")


OLD_RULES = b"9.9.9.9:deny\n:allow,OLD=\"1\"\n"


@pytest.mark.parametrize("bad", [b"1.2.3.4:allow\nbad:line\n", b"1.2.3.x-5:allow\n", b"a:b:c\n",
                                 b"1.2.3.4:allow,X=\"" + b"z" * 100_000])
def test_parse_error_leaves_old_cdb(bad, tmp_path, ours, real_v4):
    old = real_v4.tcprules(OLD_RULES, fresh_dir(tmp_path / "old")).cdb
    assert old is not None

    def setup(d):
        (d / "rules.cdb").write_bytes(old)
        (d / "rules.tmp").write_bytes(b"stale temporary file")

    mine, theirs = compare_in_setup(tmp_path, ours, real_v4, setup, rules=bad)
    assert mine.returncode == 100
    assert mine.cdb == old == theirs.cdb
    assert not mine.tmp_left


def test_write_error_leaves_old_cdb(tmp_path, ours, real_v4):
    old = real_v4.tcprules(OLD_RULES, fresh_dir(tmp_path / "old")).cdb

    def setup(d):
        (d / "rules.cdb").write_bytes(old)
        (d / "rules.tmp").symlink_to("/dev/full")

    mine, _ = compare_in_setup(tmp_path, ours, real_v4, setup)
    assert mine.returncode == 111 and mine.cdb == old


def test_success_replaces_old_cdb_and_stale_tmp(tmp_path, ours, real_v4):
    old = real_v4.tcprules(OLD_RULES, fresh_dir(tmp_path / "old")).cdb

    def setup(d):
        (d / "rules.cdb").write_bytes(old)
        (d / "rules.tmp").write_bytes(b"x" * 100_000)

    mine, _ = compare_in_setup(tmp_path, ours, real_v4, setup, rules=b"1.2.3.4:deny\n")
    assert mine.returncode == 0 and mine.cdb != old and not mine.tmp_left
    assert cdb_records(mine.cdb) == [(b"1.2.3.4", b"D\0")]


def test_python_cdb_model_matches_tcprules(tmp_path, real_v4):
    """The crafted databases of test_tcprulescheck rely on this writer."""
    rules = b"".join(b"10.%d.%d.:allow,N=\"%d\"\n" % (i % 7, i, i) for i in range(300)) + b":deny\n1-3.:allow\n"
    real = real_v4.tcprules(rules, tmp_path)
    assert real.returncode == 0
    assert cdb_make(cdb_records(real.cdb)) == real.cdb


# MARK: - Random rules files


NAMES = [b"RELAYCLIENT", b"TCPLOCALHOST", b"X", b"a_b", b"LONG" * 8, b"", b"N-1", b"n.v", b"x y", b"\xc3\xa9"]
QUOTES = b"\"'/|xZ#!%0 \t~\xff\x01"
VALUE_BYTES = b"abcXYZ019 .@-_/!$%&*()+;<>?[]{}~\t\r\x7f\x80\xc3\xa9\xff,:="


def rand_octet(rng: random.Random) -> bytes:
    return str(rng.choice([0, 1, 2, 10, 127, 192, 255, rng.randrange(256)])).encode()


def rand_range(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.6:
        lo = rng.randrange(256)
        hi = min(255, lo + rng.randrange(12))
    elif r < 0.7:
        lo, hi = rng.randrange(240, 256), rng.randrange(256, 100_000)  # top clamped
    elif r < 0.8:
        lo = rng.randrange(1, 256)
        hi = rng.randrange(lo)  # bottom > top: nothing
    elif r < 0.9:
        lo, hi = rng.choice([(b"", 3), (2, b""), (b"", b""), (b"007", b"009"), (b"0", b"0")])
    else:
        lo, hi = rng.randrange(250), b"99999999999999999999"
    lo = lo if isinstance(lo, bytes) else str(lo).encode()
    hi = hi if isinstance(hi, bytes) else str(hi).encode()
    return lo + b"-" + hi


def rand_ipv4(rng: random.Random) -> bytes:
    octets = [rand_octet(rng) for _ in range(4)]
    form = rng.random()
    if form < 0.4:
        return b".".join(octets)
    if form < 0.6:
        n = rng.randrange(1, 4)
        return b".".join(octets[:n]) + b"."
    # A range in one field, full or prefix.
    n = rng.randrange(1, 5)
    field = rng.randrange(n)
    octets[field] = rand_range(rng)
    return b".".join(octets[:n]) + (b"" if n == 4 else b".")


def rand_ipv6(rng: random.Random) -> bytes:
    groups = [rng.choice([b"2001", b"db8", b"fe80", b"0", b"1", b"ffff", b"%x" % rng.randrange(65536)])
              for _ in range(8)]
    form = rng.random()
    if form < 0.2:
        return b"::1"
    if form < 0.4:
        return b"::ffff:" + rand_ipv4(rng).split(b"-")[0].rstrip(b".")
    if form < 0.6:
        n = rng.randrange(1, 4)
        return b":".join(groups[:n]) + b"::"
    if form < 0.8:
        n = rng.randrange(1, 8)
        return b":".join(groups[:n]) + b":"  # a prefix as tcpserver's IPv6 variant cuts them
    return b":".join(groups)


def rand_host(rng: random.Random) -> bytes:
    labels = [rng.choice([b"www", b"mail", b"example", b"com", b"my-host", b"a", b"x1", b"org"])
              for _ in range(rng.randrange(1, 4))]
    return b".".join(labels)


def rand_user(rng: random.Random) -> bytes:
    return rng.choice([b"joe", b"root", b"", b"bill", b"a.b", b"joe-x", b"x=y"])


def rand_address(rng: random.Random, v6: bool) -> bytes:
    r = rng.random()
    if v6 and r < 0.3:
        addr = rand_ipv6(rng)
        return rand_user(rng) + b"@" + addr if rng.random() < 0.1 else addr
    r = rng.random()
    if r < 0.45:
        return rand_ipv4(rng)
    if r < 0.55:
        return rand_user(rng) + b"@" + rand_ipv4(rng)
    if r < 0.62:
        return rand_user(rng) + b"@=" + rand_host(rng)
    if r < 0.75:
        return b"=" + rand_host(rng)
    if r < 0.85:
        return b"=." + rand_host(rng)
    if r < 0.9:
        return b"="
    if r < 0.95:
        return b""
    # Odd bytes in an address.
    return rng.choice([b"1.2\x003.4", b"\xff\xfe", b"a b", b"1.2.3.4\r", b"=h\x00st", b"-", b"=-"])


def rand_value(rng: random.Random, quote: int, v6: bool) -> bytes:
    pool = bytes(b for b in VALUE_BYTES if b != quote and (v6 or b != ord(":")))
    if rng.random() < 0.05:
        pool += b"\x00"
    return bytes(rng.choice(pool) for _ in range(rng.choice([0, 0, 1, 3, 8, 20])))


def rand_instructions(rng: random.Random, v6: bool) -> bytes:
    out = rng.choice([b"allow", b"allow", b"deny"])
    count = rng.choice([0, 0, 1, 1, 2, 3, 6])
    for i in range(count):
        name = rng.choice(NAMES)
        if not v6:
            name = name.replace(b":", b"")
        quote = rng.choice(QUOTES)
        if i == count - 1 and quote in b" \t":
            quote = ord("!")  # a blank closing quote at the end of a line would be trimmed
        out += b"," + name + b"=" + bytes([quote]) + rand_value(rng, quote, v6) + bytes([quote])
    return out


def rand_good_line(rng: random.Random, v6: bool) -> bytes:
    r = rng.random()
    if r < 0.04:
        return b"#" + rng.choice([b"", b" comment", b"1.2.3.4:deny", b"a:b:c", b" \t"])
    if r < 0.07:
        return rng.choice([b"", b" ", b"\t \t"])
    if r < 0.09:
        return rng.choice([b"no colon here", b"1.2.3.4 allow", b"\x00", b"\r"])
    line = rand_address(rng, v6) + b":" + rand_instructions(rng, v6)
    if rng.random() < 0.1:
        line += rng.choice([b" ", b"\t", b"  \t "])
    return line


BAD_LINES = [b"1.2.3.4:allowx", b"1.2.3.4:den", b"1.2.3.4:deny,", b"1.2.3.4:allow,X", b"1.2.3.4:allow,X=\"a",
             b"1.2.3.4:allow,X=", b"1.2.3.x-5:allow", b"1.2.3.4-5-6:deny", b"1.2.3.4:allow\r",
             b"joe@1.2.3.4:Allow", b":", b"x:y", b"1.2.3.4:allow,X=\"a\"b", b"=h:allow junk"]
BAD_LINES_V6 = [b"a:b:c", b"::1:den", b"2001:db8::", b"::1:allow,X", b"fe80::1:allowx", b"1:2:3:allow,X=\"a"]


def rand_file(seed: int, lines: int, v6: bool, error: bool) -> bytes:
    rng = random.Random(seed)
    body = [rand_good_line(rng, v6) for _ in range(lines)]
    if error:
        bad = rng.choice(BAD_LINES + (BAD_LINES_V6 if v6 else []))
        body.insert(rng.randrange(len(body) + 1), bad)
    data = b"\n".join(body)
    if rng.random() < 0.7:
        data += b"\n"
    return data


@pytest.mark.parametrize("seed", range(12))
def test_random_ipv4_file(seed, tmp_path, ours, real_v4, real_v6):
    rules = rand_file(1000 + seed, 3000, v6=False, error=False)
    assert not needs_v6(rules)
    mine = check(rules, tmp_path, ours, real_v4, real_v6)
    assert mine.returncode == 0, "the generator made a bad line: " + mine.describe()


@pytest.mark.parametrize("seed", range(12))
def test_random_ipv6_file(seed, tmp_path, ours, real_v4, real_v6):
    rules = rand_file(2000 + seed, 3000, v6=True, error=False)
    assert needs_v6(rules)
    mine = check(rules, tmp_path, ours, real_v4, real_v6)
    assert mine.returncode == 0, "the generator made a bad line: " + mine.describe()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_random_small_files_with_errors(v6, tmp_path, ours, real_v4, real_v6):
    """Many small files, each with one bad line somewhere (or none)."""
    def one(seed):
        rules = rand_file(seed, random.Random(seed).randrange(0, 25), v6=v6, error=seed % 4 != 0)
        check(rules, tmp_path / str(seed), ours, real_v4, real_v6)

    parallel(one, range(3000 + 1000 * v6, 3000 + 1000 * v6 + 200))
