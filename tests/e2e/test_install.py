"""`make install` and `make uninstall` (issue 11): the tree installed into a DESTDIR is
exactly the expected one, each link runs its tool byte for byte as the separate
executable does, the manual pages are found by man and lint clean, /etc files are never
overwritten, and uninstall leaves no file behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from proxyhelpers import bastion_bin

ROOT = Path(__file__).resolve().parents[2]
BIN_TOOLS = ["tcprules", "tcprulescheck", "tcpserver", "make_sockdfc", "dump_sockdfc", "make_sockdfr", "dump_sockdfr"]
SBIN_TOOLS = ["tcpproxy", "pop3.proxy", "sockd"]


def make(*args: str, destdir: Path, prefix: str | None = "/usr") -> subprocess.CompletedProcess:
    """make ARGS with DESTDIR, PREFIX (None: the Makefile's default) and the tests' build."""
    build = bastion_bin("bastion").parent
    words = [f"DESTDIR={destdir}", f"BUILD={build}"] + ([f"PREFIX={prefix}"] if prefix else [])
    r = subprocess.run(["make", "-s", "-C", str(ROOT), *args, *words], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def files_under(root: Path) -> set[str]:
    return {"/" + str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def installed(tmp_path):
    stage = tmp_path / "stage"
    make("install", destdir=stage)
    return stage


def test_install_puts_exactly_the_listed_files_where_the_originals_live(installed):
    listed = set(make("install-files", destdir=installed).stdout.split())
    assert files_under(installed) == listed
    assert "/usr/bin/bastion" in listed
    for tool in BIN_TOOLS:
        assert os.readlink(installed / "usr/bin" / tool) == "bastion"
    for tool in SBIN_TOOLS:
        assert os.readlink(installed / "usr/sbin" / tool) == "../bin/bastion"
    for page in ["man1/tcpserver.1.gz", "man1/pop3.proxy.1.gz", "man5/sockd.conf.5.gz", "man8/tcpproxy.8.gz",
                 "man8/sockd.8.gz"]:
        assert (installed / "usr/share/man" / page).is_file()
    assert (installed / "etc/sockd.conf").read_bytes() == (ROOT / "examples/sockd.conf").read_bytes()
    assert (installed / "usr/share/doc/bastion/examples/tcpproxy-zekoll.conf").is_file()
    # One stripped executable: no symbol table left.
    nm = subprocess.run(["nm", str(installed / "usr/bin/bastion")], capture_output=True, text=True)
    assert "no symbols" in nm.stderr


def run(argv: list, **kw) -> tuple[int, bytes, bytes]:
    r = subprocess.run([str(a) for a in argv], capture_output=True, timeout=30, **kw)
    return r.returncode, r.stdout, r.stderr


# Invocations that end at once (help, usage errors, version, a missing file), with what each
# tool prints: the same bytes and exit code through a link as from the separate executable.
INVOCATIONS = [
    ("tcprules", []), ("tcprules", ["--help"]),
    ("tcprulescheck", []), ("tcprulescheck", ["--help"]),
    ("tcpserver", ["--help"]), ("tcpserver", ["-Z"]), ("tcpserver", []),
    ("tcpproxy", ["--help"]), ("tcpproxy", ["--no-such-option"]),
    ("pop3.proxy", ["--help"]), ("pop3.proxy", []),
    ("sockd", ["-ver"]), ("sockd", ["--help"]), ("sockd", ["-x"]),
    ("make_sockdfc", ["--help"]), ("make_sockdfc", ["/nonexistent/sockd.conf", "/nonexistent/sockd.fc"]),
    ("dump_sockdfc", ["/nonexistent/sockd.fc"]), ("make_sockdfr", ["--help"]), ("dump_sockdfr", ["-z"]),
]


@pytest.mark.parametrize("tool,args", INVOCATIONS)
def test_each_link_runs_its_tool_exactly_as_the_separate_executable(installed, tool, args):
    where = "usr/sbin" if tool in SBIN_TOOLS else "usr/bin"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    ours = run([installed / where / tool, *args], env=env, stdin=subprocess.DEVNULL)
    separate = run([bastion_bin(tool), *args], env=env, stdin=subprocess.DEVNULL)
    assert ours == separate
    # And `bastion TOOL ARGS` is the same again.
    assert run([installed / "usr/bin/bastion", tool, *args], env=env, stdin=subprocess.DEVNULL) == separate


def test_bastion_lists_its_tools_and_refuses_unknown_ones(installed):
    rc, out, _ = run([installed / "usr/bin/bastion", "--list"])
    assert rc == 0 and out.decode().split() == [
        "tcprules", "tcprulescheck", "tcpserver", "tcpproxy", "pop3.proxy", "sockd", "make_sockdfc", "dump_sockdfc",
        "make_sockdfr", "dump_sockdfr"]
    rc, _, err = run([installed / "usr/bin/bastion", "nc"])
    assert rc == 100 and err == b"bastion: unknown tool: nc (bastion --list names them)\n"
    rc, out, _ = run([installed / "usr/bin/bastion", "--version"])
    assert rc == 0 and out.startswith(b"bastion ")


def test_man_finds_the_installed_pages_and_they_lint_clean(installed):
    man = shutil.which("man")
    if man is None:
        pytest.fail("man is missing: apt-get install man-db (scripts/test installs it)", pytrace=False)
    for page in ["tcpproxy", "sockd", "tcpserver", "sockd.conf"]:
        r = subprocess.run([man, "-M", str(installed / "usr/share/man"), page], capture_output=True,
                           env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"}, timeout=30)
        assert r.returncode == 0 and page.upper().split(".")[0].encode() in r.stdout, (page, r.stderr)
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        pytest.fail("mandoc is missing: apt-get install mandoc (scripts/test installs it)", pytrace=False)
    pages = sorted((ROOT / "man").iterdir())
    r = subprocess.run([mandoc, "-Tlint", "-Wwarning", *map(str, pages)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_etc_files_are_never_overwritten_and_uninstall_removes_everything_else(installed):
    mine = installed / "etc/sockd.conf"
    mine.write_text("permit 10.0.0.0 255.0.0.0\n")
    again = make("install", destdir=installed)
    assert "sockd.conf exists: left as it is" in again.stdout
    assert mine.read_text() == "permit 10.0.0.0 255.0.0.0\n"
    gone = make("uninstall", destdir=installed)
    assert "sockd.conf was changed: kept" in gone.stdout
    assert files_under(installed) == {"/etc/sockd.conf"}
    mine.unlink()
    make("uninstall", destdir=installed)
    assert files_under(installed) == set()


def test_the_default_prefix_is_usr_local_and_etc_stays_etc(tmp_path):
    """The tools read /etc/sockd.conf and /etc/tcpproxy.conf whatever the prefix (as the
    originals do), so that is where their files go."""
    stage = tmp_path / "local"
    make("install", destdir=stage, prefix=None)
    assert (stage / "usr/local/sbin/sockd").is_symlink()
    assert (stage / "etc/tcpproxy.conf").is_file()
    assert "ExecStart=/usr/local/sbin/sockd " in (stage / "usr/local/lib/systemd/system/sockd.service").read_text()
    r = subprocess.run([str(stage / "usr/local/sbin/sockd"), "-ver"], capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith(b"sockd (Bastion) ")
    make("uninstall", destdir=stage, prefix=None)
    assert files_under(stage) == set()
