"""The Debian package (issue 11): scripts/package builds dist/bastion_VERSION_amd64.deb,
lintian finds no error in it, and dpkg installs it into a scratch root (its own instdir and
admindir, maintainer scripts run chrootless) with the expected files, conffiles and links,
removes it leaving only the conffiles, and purges them. Also the systemd units: they verify
with systemd-analyze against a real installed tree, and their exposure scores stay low.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from proxyhelpers import bastion_bin

ROOT = Path(__file__).resolve().parents[2]


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: apt-get install {package} (scripts/test installs it)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def deb() -> Path:
    need("lintian", "lintian")
    r = subprocess.run([str(ROOT / "scripts/package"), "--lintian"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "BUILD": str(bastion_bin("bastion").parent)})
    assert r.returncode == 0, r.stdout + r.stderr
    path = ROOT / r.stdout.splitlines()[0]
    assert re.fullmatch(r"bastion_\d+\.\d+\.\d+_amd64\.deb", path.name) and path.parent.name == "dist"
    # lintian's verdict: no error, and no warning either.
    assert not re.search(r"^[EW]: ", r.stdout, re.M), r.stdout
    return path


def dpkg(root: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(["dpkg", f"--instdir={root}", f"--admindir={root}/var/lib/dpkg", "--force-script-chrootless",
                        "--force-not-root", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    return root


def installed_files(root: Path) -> set[str]:
    return {"/" + str(p.relative_to(root)) for p in root.rglob("*")
            if (p.is_file() or p.is_symlink()) and not str(p.relative_to(root)).startswith("var/")}


def test_the_package_describes_itself(deb):
    info = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", info, re.M))
    assert fields["Package"] == "bastion" and fields["Architecture"] == "amd64"
    assert fields["Conflicts"] == "ucspi-tcp, ucspi-tcp-ipv6" and "Provides" not in fields
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert conffiles == ["/etc/default/pop3.proxy", "/etc/sockd.conf", "/etc/tcpproxy.conf"]


def test_dpkg_installs_removes_and_purges_cleanly(deb, tmp_path):
    root = scratch_root(tmp_path)
    dpkg(root, "-i", str(deb))
    files = installed_files(root)
    for path in ["/usr/bin/bastion", "/usr/bin/tcpserver", "/usr/sbin/sockd", "/usr/sbin/pop3.proxy",
                 "/usr/share/man/man8/sockd.8.gz", "/usr/share/man/man1/bastion.1.gz", "/etc/sockd.conf",
                 "/lib/systemd/system/sockd.service", "/lib/systemd/system/pop3.proxy@.service",
                 "/usr/share/doc/bastion/copyright", "/usr/share/doc/bastion/changelog.gz",
                 "/usr/share/lintian/overrides/bastion"]:
        assert path in files, path
    assert os.readlink(root / "usr/sbin/sockd") == "../bin/bastion"
    r = subprocess.run([str(root / "usr/sbin/sockd"), "-ver"], capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith(b"sockd (Bastion) ")
    units = (root / "lib/systemd/system/sockd.service").read_text()
    assert "ExecStart=/usr/sbin/sockd " in units
    dpkg(root, "-r", "bastion")
    assert installed_files(root) == {"/etc/sockd.conf", "/etc/tcpproxy.conf", "/etc/default/pop3.proxy"}
    dpkg(root, "-P", "bastion")
    assert installed_files(root) == set()


def test_a_changed_conffile_survives_an_upgrade(deb, tmp_path):
    root = scratch_root(tmp_path)
    dpkg(root, "-i", str(deb))
    (root / "etc/sockd.conf").write_text("permit 10.0.0.0 255.0.0.0\n")
    dpkg(root, "--force-confold", "-i", str(deb))
    assert (root / "etc/sockd.conf").read_text() == "permit 10.0.0.0 255.0.0.0\n"


def test_the_units_verify_and_are_hardened(tmp_path):
    analyze = need("systemd-analyze", "systemd")
    prefix = tmp_path / "usr"
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"PREFIX={prefix}", f"SYSCONFDIR={tmp_path}/etc",
                        f"SYSTEMDUNITDIR={tmp_path}/units", f"BUILD={bastion_bin('bastion').parent}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    units = sorted((tmp_path / "units").iterdir())
    assert [u.name for u in units] == ["pop3.proxy.socket", "pop3.proxy@.service", "sockd.service",
                                       "tcpproxy.service", "tcpserver@.service"]
    # verify runs `man` for Documentation= lines: the pages just installed.
    r = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MANPATH": str(prefix / "share/man")})
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    scores = {}
    for unit in units:
        if unit.suffix != ".service":
            continue
        r = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                           timeout=120)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        assert m, r.stdout + r.stderr
        scores[unit.name] = float(m.group(1))
    # The daemons' units: 2.3 to 2.4 when measured; tcpserver's template runs any program and is
    # left looser (4.1).
    for name in ("sockd.service", "tcpproxy.service", "pop3.proxy@.service"):
        assert scores[name] <= 3.0, scores
    assert scores["tcpserver@.service"] <= 5.0, scores
