"""The README's quick starts and the example configurations work as shown.

The quick-start scripts build into the package's default .build (a no-op after the test
command's own build); with another scratch path they would build everything again, so they
are skipped then. Loopback only, as the scripts themselves.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from proxyhelpers import bastion_bin

ROOT = Path(__file__).resolve().parents[2]


def default_build(probe: str = "tcpproxy") -> bool:
    return bastion_bin(probe).resolve().parent == (ROOT / ".build" / "release").resolve()


def run_script(name: str, probe: str = "tcpproxy") -> str:
    if not default_build(probe):
        pytest.skip("BASTION_BIN is not the package's .build/release: the script would build again")
    done = subprocess.run([str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_ucspi_quickstart():
    out = run_script("quickstart.sh")
    assert "rule 127.:\nset environment variable GREETING=hello from Bastion\nallow connection\n" in out, out
    assert "rule 18.23.0.32:\ndeny connection\n" in out, out
    assert re.search(r"^hello from Bastion, 127\.0\.0\.1 port \d+ \(PROTO=TCP\)$", out, re.M), out
    assert re.search(r"^hello over IPv6, ::1 port \d+ \(PROTO=TCP6\)$", out, re.M), out
    assert re.search(r"^tcpserver: ok \d+ 0:127\.0\.0\.1:\d+ :127\.0\.0\.1::\d+$", out, re.M), out
    assert re.search(r"^tcpserver: ok \d+ 0:::1:\d+ :::1::\d+$", out, re.M), out
    assert len(re.findall(r"^tcpserver: end \d+ status 0$", out, re.M)) == 2, out


def test_tcpproxy_quickstart():
    out = run_script("tcpproxy-quickstart.sh")
    m = re.search(r"^hello 127\.0\.0\.1, you reached port (\d+) on 127\.0\.0\.1$", out, re.M)
    assert m, out
    assert re.search(r"connection 1 from \[::1\]:\d+ on \[::1\]:\d+ to 127\.0\.0\.1:%s closed: 0 bytes from client, "
                     r"53 bytes to client" % m.group(1), out), out
    assert re.search(r"to \S+/examples/proxy-greet ended: exit 0", out), out


@pytest.mark.parametrize("tls", [False, True], ids=["as-shipped", "tls-uncommented"])
@pytest.mark.parametrize("name", ["tcpproxy-zekoll.conf", "tcpproxy-spreadspace.conf"])
def test_example_configurations_are_valid(name, tls, tmp_path):
    source = ROOT / "examples" / name
    if tls:
        # The commented TLS examples (a "#" straight before the line, or before its indent) as
        # an admin uncomments them: they must read as well.
        text = re.sub(r"(?m)^#(?=\S|  )", "", source.read_text())
        assert "tls-cert" in text and "remote-tls" in text
        source = tmp_path / ("tls-" + name)
        source.write_text(text)
    done = subprocess.run([str(bastion_bin("tcpproxy")), "-zz", "-f", str(source)],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), "the listing is empty"
    assert "warning" not in done.stderr, done.stderr
    # Written back (-zzz), it lists the same.
    written = subprocess.run([str(bastion_bin("tcpproxy")), "-zzz", "-f", str(source)],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert written.returncode == 0, written.stderr
    copy = tmp_path / ("written-" + name)
    copy.write_text(written.stdout)
    again = subprocess.run([str(bastion_bin("tcpproxy")), "-zz", "-f", str(copy)],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert again.stdout == done.stdout, written.stdout


def test_pop3proxy_quickstart():
    out = run_script("pop3proxy-quickstart.sh")
    # Three retrievals of the dot-stuffed message, each through a pop3.proxy.
    assert out.count("  .a line that starts with a dot\n") == 3, out
    assert out.count("+OK pop3.proxy ready\n") == 3, out
    # -e: the server came from the user name.
    assert re.search(r"login: user alice, server 127\.0\.0\.1:\d+: granted", out.split("== selecting.log")[1]), out
    assert re.search(r"login: user bob, server 127\.0\.0\.1:\d+: granted", out.split("== fixed.log")[1]), out
    assert "unable to" not in out, out


def test_sockd_quickstart():
    out = run_script("sockd-quickstart.sh", probe="sockd")
    # Three pages through sockd: SOCKS5 with the name resolved by sockd, SOCKS4a, and the frozen
    # configuration.
    assert out.count("hello through sockd\n") == 3, out
    assert len(re.findall(r"connected -- Connect from \(unknown\)@127\.0\.0\.1 to localhost \(\d+\)$", out,
                          re.M)) == 3, out
    assert re.search(r"refused -- Connect from \(unknown\)@127\.0\.0\.1 to 127\.0\.0\.1 \(smtp\)$", out, re.M), out
    # dump_sockdfc prints the example's rules.
    assert "\npermit 127.0.0.0 255.0.0.0 127.0.0.0 255.0.0.0\n" in out, out
    assert "line skipped" not in out, out


def test_sockd_example_configuration_freezes():
    """make_sockdfc is strict: the example has no bad line, and dump_sockdfc's text freezes to the same bytes."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        frozen = Path(tmp) / "sockd.fc"
        done = subprocess.run([str(bastion_bin("make_sockdfc")), str(ROOT / "examples" / "sockd.conf"), str(frozen)],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        text = subprocess.run([str(bastion_bin("dump_sockdfc")), str(frozen)], capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        assert text.returncode == 0, text.stderr
        (Path(tmp) / "again.conf").write_bytes(text.stdout)
        again = Path(tmp) / "again.fc"
        subprocess.run([str(bastion_bin("make_sockdfc")), str(Path(tmp) / "again.conf"), str(again)], check=True,
                       timeout=30, stdin=subprocess.DEVNULL)
        assert again.read_bytes() == frozen.read_bytes()
