"""tcpproxy end to end: spreadspace's -u/-g/-C (the whole daemon drops to the user and is
chrooted) and the default as root (workers as 65534), seen in /proc.

Only loopback traffic; every tcpproxy has -D -L stderr:5 and DNSCACHEIP=127.53.0.1.
"""

from __future__ import annotations

import os
import time

import pytest

from proxyhelpers import exchange, free_port, is_root, lab, tagger  # noqa: F401


def status_ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a process."""
    uid = gid = -1
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            if line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


@pytest.mark.skipif(not is_root(), reason="needs root: dropping privileges and chroot")
def test_username_groupname_and_chroot_apply_to_the_whole_daemon(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    jail = lab.dir / "jail"
    jail.mkdir()
    os.chmod(lab.dir, 0o755)
    proxy = lab.tcpproxy("-u", "nobody", "-g", "nogroup", "-C", jail,
                         "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    assert exchange("127.0.0.1", port, b"")[0].startswith(b"A "), proxy.text()
    assert status_ids(proxy.pid) == (65534, 65534)
    assert os.readlink(f"/proc/{proxy.pid}/root") == str(jail)
    assert children(proxy.pid) == [], "with -u the daemon is one process"


@pytest.mark.skipif(not is_root(), reason="needs root: the default privilege drop")
def test_root_default_serves_as_nobody_in_a_worker(lab):
    a = lab.backend(tagger("A"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port))
    assert exchange("127.0.0.1", port, b"")[0].startswith(b"A "), proxy.text()
    assert status_ids(proxy.pid) == (0, 0), "the master keeps root to bind and remove the pid file"
    deadline = time.monotonic() + 5
    while not children(proxy.pid):
        assert time.monotonic() < deadline, proxy.text()
        time.sleep(0.02)
    assert [status_ids(c) for c in children(proxy.pid)] == [(65534, 65534)]


def test_unknown_user_fails_at_start(lab):
    port = free_port()
    result = lab.tcpproxy_run("-D", "-u", "no-such-user-here", "-l", "127.0.0.1", "-p", str(port),
                              "-r", "127.0.0.1", "-o", "9")
    if not is_root():
        pytest.skip("the user is only looked up when started as root")
    assert result.returncode == 1 and b"unknown user no-such-user-here" in result.stderr, result
