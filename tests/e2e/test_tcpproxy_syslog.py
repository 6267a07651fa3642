"""tcpproxy end to end: the syslog log target. What would reach syslogd is read from a
datagram socket of the test's own ($BASTION_SYSLOG_SOCKET instead of /dev/log): RFC 3164
lines with the configured name and facility, connections logged at level 3 (notice).
"""

from __future__ import annotations

import re
import socket
import time

from proxyhelpers import exchange, free_port, lab, tagger  # noqa: F401

LOG_LOCAL3 = 19 << 3
LOG_NOTICE = 5


def test_syslog_target_name_facility_and_connection_lines(lab):
    a = lab.backend(tagger("A"))
    path = str(lab.dir / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(5)
    try:
        port = free_port()
        proxy = lab.tcpproxy("-L", "syslog:3,myproxy,local3", "-L", "stderr:5",
                             "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(a.port),
                             env=lab.env({"BASTION_SYSLOG_SOCKET": path}))
        assert exchange("127.0.0.1", port, b"")[0].startswith(b"A ")
        lines = []
        deadline = time.monotonic() + 5
        while not any(b" closed: " in line for line in lines):
            assert time.monotonic() < deadline, (lines, proxy.text())
            lines.append(sink.recv(4096))
    finally:
        sink.close()
    priority = LOG_LOCAL3 | LOG_NOTICE
    pattern = rb"<%d>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d myproxy\[\d+\]: " % priority
    for line in lines:
        assert re.match(pattern, line), line
    assert any(re.search(rb"myproxy\[\d+\]: listening on 127\.0\.0\.1:%d$" % port, l) for l in lines), lines
    assert any(re.search(rb": connection \d+ from 127\.0\.0\.1:\d+ on 127\.0\.0\.1:%d to 127\.0\.0\.1:%d$"
                         % (port, a.port), l) for l in lines), lines
