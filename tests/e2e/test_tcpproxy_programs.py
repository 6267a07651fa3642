"""tcpproxy end to end: the programs it runs and the checks it makes on a connection.

Handler programs (--bind with a program, `exec`), their PROXY_ variables (-v, `setenv`,
-y), access control programs (-a, `acp`), tcprules databases (--rules, `rules`), recording
(-w, `writefile`), the debug trace (`debug`, -d) and inetd mode under our own tcpserver.

Only loopback traffic; every tcpproxy has -D -L stderr:5 and DNSCACHEIP=127.53.0.1.
"""

from __future__ import annotations

import re
import socket
import time

from proxyhelpers import (bastion_bin, connect, exchange, free_port, lab, read_all, read_line, run,  # noqa: F401
                          tagger, wait_file)

# A handler that shows what it was given: its arguments, the variables under both prefixes,
# an inherited variable and a rule's variable, then echoes one line from the client.
# Shell builtins only: with -y the environment (PATH too) is empty.
HANDLER = r"""#!/bin/sh
echo "args=$*"
echo "PROXY_PORT=${PROXY_PORT-unset}"
echo "PROXY_INTERFACE=${PROXY_INTERFACE-unset}"
echo "PROXY_CLIENT=${PROXY_CLIENT-unset}"
echo "PROXY_CLIENTNAME=${PROXY_CLIENTNAME-unset}"
echo "TP_PORT=${TP_PORT-unset}"
echo "TP_INTERFACE=${TP_INTERFACE-unset}"
echo "TP_CLIENT=${TP_CLIENT-unset}"
echo "TP_CLIENTNAME=${TP_CLIENTNAME-unset}"
echo "INHERITED=${BASTION_E2E_INHERITED-unset}"
echo "RULEVAR=${RULEVAR-unset}"
read line
echo "got=$line"
"""

INHERIT = {"BASTION_E2E_INHERITED": "passed-down"}


def handler_output(host: str, port: int, proxy, source: str | None = None) -> tuple[dict, tuple]:
    data, end, me = exchange(host, port, b"hello handler\n", source=source)
    assert end == "eof", (data, end, proxy.text())
    values = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
    assert values.get("got") == "hello handler", (data, proxy.text())
    return values, me


def client_names(address: str) -> set[str]:
    """What PROXY_CLIENTNAME may be: the address, or its name in /etc/hosts."""
    names = {address}
    try:
        for line in open("/etc/hosts"):
            words = line.split("#")[0].split()
            if words and words[0] == address:
                names.update(words[1:])
    except OSError:
        pass
    return names


# MARK: - Handler programs

def test_bind_with_handler_program_gets_proxy_variables(lab):
    script = lab.script("handler.sh", HANDLER)
    port = free_port()
    proxy = lab.tcpproxy("--bind", f"127.0.0.1:{port}", script, env=lab.env(INHERIT))
    v, me = handler_output("127.0.0.1", port, proxy)
    assert v["PROXY_PORT"] == str(port)
    assert v["PROXY_INTERFACE"] == "127.0.0.1"
    assert v["PROXY_CLIENT"] == "127.0.0.1"
    assert v["PROXY_CLIENTNAME"] in client_names("127.0.0.1"), v
    assert v["INHERITED"] == "passed-down"
    assert v["TP_PORT"] == "unset" and v["args"] == ""


def test_handler_program_over_ipv6_and_client_address(lab):
    script = lab.script("handler.sh", HANDLER)
    port = free_port("::1")
    proxy = lab.tcpproxy("--bind", f"[::1]:{port}", script)
    v, _ = handler_output("::1", port, proxy)
    assert (v["PROXY_PORT"], v["PROXY_INTERFACE"], v["PROXY_CLIENT"]) == (str(port), "::1", "::1"), v
    port4 = free_port()
    proxy4 = lab.tcpproxy("--bind", f"127.0.0.1:{port4}", script)
    v, _ = handler_output("127.0.0.1", port4, proxy4, source="127.0.0.23")
    assert v["PROXY_CLIENT"] == "127.0.0.23", v


# Says whether its standard input and output block, then echoes what the client sends.
BLOCKING = r"""#!/bin/sh
python3 -c 'import fcntl, os; print("blocking" if not (fcntl.fcntl(0, fcntl.F_GETFL) | fcntl.fcntl(1, fcntl.F_GETFL)) & os.O_NONBLOCK else "non-blocking", flush=True)'
exec cat
"""


def test_handler_and_acp_get_the_client_socket_blocking(lab):
    """Programs expect blocking standard descriptors: a handler such as cat that reads before
    the client has sent failed with EAGAIN ("Resource temporarily unavailable") when it got
    tcpproxy's own non-blocking socket. The access control program's output goes to the
    client through a blocking descriptor too, and the relay after it still works."""
    handler = lab.script("blocking.sh", BLOCKING)
    port = free_port()
    proxy = lab.tcpproxy("--bind", f"127.0.0.1:{port}", handler)
    with connect("127.0.0.1", port) as s:
        assert read_line(s) == b"blocking\n", proxy.text()
        # cat is reading by now, or soon: either way it must wait for these bytes.
        s.sendall(b"after the handler started\n")
        s.shutdown(socket.SHUT_WR)
        data, end = read_all(s)
    assert (data, end) == (b"after the handler started\n", "eof"), proxy.text()
    proxy.wait_for(r"blocking\.sh ended: exit 0")

    acp = lab.script("acp.sh", BLOCKING.replace("exec cat", "exit 0"))
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-a", acp, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    with connect("127.0.0.1", port) as s:
        assert read_line(s) == b"blocking\n", proxy.text()
        assert read_line(s).startswith(b"B 127.0.0.1 "), proxy.text()
        s.sendall(b"relayed\n")
        s.shutdown(socket.SHUT_WR)
        data, end = read_all(s)
    assert (data, end) == (b"relayed\n", "eof"), proxy.text()


def test_varprefix_option_changes_prefix(lab):
    script = lab.script("handler.sh", HANDLER)
    port = free_port()
    proxy = lab.tcpproxy("-v", "TP_", "--bind", f"127.0.0.1:{port}", script, env=lab.env(INHERIT))
    v, _ = handler_output("127.0.0.1", port, proxy)
    assert (v["TP_PORT"], v["TP_INTERFACE"], v["TP_CLIENT"]) == (str(port), "127.0.0.1", "127.0.0.1"), v
    assert v["TP_CLIENTNAME"] in client_names("127.0.0.1")
    assert v["PROXY_PORT"] == "unset" and v["PROXY_CLIENT"] == "unset", v
    assert v["INHERITED"] == "passed-down"


def test_clear_environment_option(lab):
    script = lab.script("handler.sh", HANDLER)
    port = free_port()
    proxy = lab.tcpproxy("-y", "--bind", f"127.0.0.1:{port}", script, env=lab.env(INHERIT))
    v, _ = handler_output("127.0.0.1", port, proxy)
    assert v["INHERITED"] == "unset", v
    assert (v["PROXY_PORT"], v["PROXY_CLIENT"]) == (str(port), "127.0.0.1"), v


def test_exec_in_zekoll_configuration_with_arguments_and_setenv(lab):
    script = lab.script("handler.sh", HANDLER)
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.file("tcpproxy.conf", f"""# two handler services
port {p1}
exec {script} first second

port {p2}
setenv TP_
exec {script}
""")
    proxy = lab.tcpproxy("-f", conf, listeners=2, env=lab.env(INHERIT))
    v, _ = handler_output("127.0.0.1", p1, proxy)
    assert v["args"] == "first second", v
    assert (v["PROXY_PORT"], v["PROXY_INTERFACE"], v["PROXY_CLIENT"]) == (str(p1), "127.0.0.1", "127.0.0.1")
    assert v["INHERITED"] == "passed-down"
    v, _ = handler_output("::1", p2, proxy)
    assert (v["TP_PORT"], v["TP_INTERFACE"], v["TP_CLIENT"]) == (str(p2), "::1", "::1"), v
    assert v["PROXY_PORT"] == "unset"


# MARK: - Access control programs

GRANT = """#!/bin/sh
echo "acp: welcome $PROXY_CLIENT to $PROXY_INTERFACE port $PROXY_PORT"
echo "acp-grant-stderr client=$PROXY_CLIENT" >&2
exit 0
"""
DENY = """#!/bin/sh
echo "acp: go away $PROXY_CLIENT"
echo "acp-deny-stderr client=$PROXY_CLIENT port=$PROXY_PORT" >&2
exit 1
"""


def test_acp_option_grants(lab):
    acp = lab.script("grant.sh", GRANT)
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-a", acp, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    with connect("127.0.0.1", port) as s:
        assert read_line(s) == f"acp: welcome 127.0.0.1 to 127.0.0.1 port {port}\n".encode(), proxy.text()
        assert read_line(s).startswith(b"B 127.0.0.1 "), proxy.text()
        s.sendall(b"after grant\n")
        s.shutdown(socket.SHUT_WR)
        data, end = read_all(s)
    assert (data, end) == (b"after grant\n", "eof")
    proxy.wait_for(r"acp-grant-stderr client=127\.0\.0\.1")


def test_acp_option_denies(lab):
    acp = lab.script("deny.sh", DENY)
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-a", acp, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    start = time.monotonic()
    data, end, _ = exchange("127.0.0.1", port, b"", timeout=5)
    assert data == b"acp: go away 127.0.0.1\n" and end in ("eof", "reset"), (data, end, proxy.text())
    assert time.monotonic() - start < 2
    proxy.wait_for(rf"acp-deny-stderr client=127\.0\.0\.1 port={port}")
    proxy.wait_for(r"denied")
    assert backend.accepted == 0


def test_acp_in_zekoll_configuration(lab):
    """`acp` before the first port is a default; inside a port it is that port's."""
    grant = lab.script("grant.sh", GRANT)
    deny = lab.script("deny.sh", DENY)
    backend = lab.backend(tagger("B"))
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.file("tcpproxy.conf", f"""acp {grant}
port {p1}
server 127.0.0.1:{backend.port}
port {p2}
acp {deny}
server 127.0.0.1:{backend.port}
""")
    proxy = lab.tcpproxy("-f", conf, listeners=2)
    data, end, _ = exchange("::1", p1, b"x")
    lines = data.split(b"\n")
    assert lines[0] == f"acp: welcome ::1 to ::1 port {p1}".encode(), (data, proxy.text())
    assert lines[1].startswith(b"B 127.0.0.1 ") and lines[2] == b"x"
    data, end, _ = exchange("127.0.0.1", p2, b"x")
    assert data == b"acp: go away 127.0.0.1\n", (data, proxy.text())
    proxy.wait_for(r"acp-grant-stderr client=::1")
    proxy.wait_for(rf"acp-deny-stderr client=127\.0\.0\.1 port={p2}")
    assert backend.accepted == 1


def test_acp_before_handler_program(lab):
    """With a handler program the access control program runs first: deny means the
    handler never starts; grant means the client reads the acp's words, then the handler's."""
    deny, grant = lab.script("deny.sh", DENY), lab.script("grant.sh", GRANT)
    marker = lab.dir / "handler-ran"
    script = lab.script("handler.sh", f"#!/bin/sh\n: > {marker}\necho handler-here\n")
    p1, p2 = free_port(), free_port()
    denied = lab.tcpproxy("-a", deny, "--bind", f"127.0.0.1:{p1}", script)
    granted = lab.tcpproxy("-a", grant, "--bind", f"127.0.0.1:{p2}", script)
    data, end, _ = exchange("127.0.0.1", p1, b"")
    assert data == b"acp: go away 127.0.0.1\n", (data, denied.text())
    denied.wait_for(r"denied")
    assert not marker.exists()
    data, end, _ = exchange("127.0.0.1", p2, b"")
    assert data == f"acp: welcome 127.0.0.1 to 127.0.0.1 port {p2}\nhandler-here\n".encode(), (data, granted.text())


# MARK: - tcprules databases

def rules_cdb(lab, text: str):
    cdb, tmp = lab.dir / "rules.cdb", lab.dir / "rules.tmp"
    r = run([bastion_bin("tcprules"), cdb, tmp], input=text.encode())
    assert r.returncode == 0, r.stderr
    cdb.chmod(0o644)
    return cdb


RULES = '127.0.0.2:deny\n127.0.0.1:allow,RULEVAR="from the rules"\n:allow\n'


def test_rules_deny_closes_at_once_and_allow_passes(lab):
    cdb = rules_cdb(lab, RULES)
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("--rules", cdb, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1",
                         "-o", str(backend.port))
    start = time.monotonic()
    data, end, _ = exchange("127.0.0.1", port, b"denied?", source="127.0.0.2", timeout=5)
    assert data == b"" and end in ("eof", "reset"), (data, end)
    assert time.monotonic() - start < 1.5, "a denied client must be closed at once"
    proxy.wait_for(r"from 127\.0\.0\.2:\d+ .*denied")
    assert backend.accepted == 0
    data, end, _ = exchange("127.0.0.1", port, b"allowed")
    assert data.startswith(b"B 127.0.0.1 ") and data.endswith(b"\nallowed"), (data, proxy.text())
    data, end, _ = exchange("127.0.0.1", port, b"other", source="127.0.0.3")
    assert data.startswith(b"B 127.0.0.1 "), (data, proxy.text())


def test_rules_variable_reaches_handler_program(lab):
    cdb = rules_cdb(lab, RULES)
    script = lab.script("handler.sh", HANDLER)
    port = free_port()
    proxy = lab.tcpproxy("--rules", cdb, "--bind", f"127.0.0.1:{port}", script)
    v, _ = handler_output("127.0.0.1", port, proxy)
    assert v["RULEVAR"] == "from the rules", v
    v, _ = handler_output("127.0.0.1", port, proxy, source="127.0.0.3")
    assert v["RULEVAR"] == "unset", v
    data, end, _ = exchange("127.0.0.1", port, b"x\n", source="127.0.0.2")
    assert data == b"", data


def test_rules_directive_in_configurations(lab):
    cdb = rules_cdb(lab, RULES)
    backend = lab.backend(tagger("B"))
    p1, p2 = free_port("::"), free_port()
    zconf = lab.file("z.conf", f"port {p1}\nrules {cdb}\nserver 127.0.0.1:{backend.port}\n")
    sconf = lab.file("s.conf", f"listen 127.0.0.1 {p2} {{ remote: 127.0.0.1 {backend.port}; rules: {cdb}; }};\n")
    z = lab.tcpproxy("-f", zconf)
    s = lab.tcpproxy("-c", sconf)
    for port, proxy in ((p1, z), (p2, s)):
        data, _, _ = exchange("127.0.0.1", port, b"", source="127.0.0.2")
        assert data == b"", proxy.text()
        data, _, _ = exchange("127.0.0.1", port, b"")
        assert data.startswith(b"B "), proxy.text()
    assert backend.accepted == 2


# MARK: - Recording

def wait_recording(lab, proxy, basename: str, timeout: float = 5.0) -> str:
    path = lab.dir / f"{basename}.{proxy.pid}.log"
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text(errors="replace")
            if re.search(r" end client>server", text):
                return text
        time.sleep(0.05)
    listing = sorted(p.name for p in lab.dir.iterdir())
    raise AssertionError(f"{path.name} has no end line within {timeout}s: {text!r}; files {listing}; "
                         f"log:\n{proxy.text()}")


def test_writefile_option_records_both_directions(lab):
    backend = lab.backend(tagger("SERVER-SAYS"))
    port = free_port()
    base = lab.dir / "rec"
    proxy = lab.tcpproxy("-w", base, "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    data, end, _ = exchange("127.0.0.1", port, b"client-says-hello\n")
    assert data.endswith(b"client-says-hello\n")
    text = wait_recording(lab, proxy, "rec")
    assert "client>server" in text and "client-says-hello" in text, text
    assert "server>client" in text and "SERVER-SAYS 127.0.0.1" in text, text


def test_writefile_directive_in_zekoll_configuration(lab):
    backend = lab.backend(tagger("SERVER-SAYS"))
    port = free_port("::")
    conf = lab.file("z.conf", f"port {port}\nwritefile {lab.dir / 'zrec'}\nserver 127.0.0.1:{backend.port}\n")
    proxy = lab.tcpproxy("-f", conf)
    exchange("127.0.0.1", port, b"\x00binary\xffbytes\n")
    text = wait_recording(lab, proxy, "zrec")
    assert "client>server" in text and "binary" in text and "server>client" in text, text
    assert "trace:" not in proxy.text(), "writefile records but does not trace"


# MARK: - The debug trace (`debug NAME`, -d)

# The trace's step for PROXY_CLIENTNAME (looked up when a program runs): from /etc/hosts here.
NAME_STEP = r"client name from the hosts file: \S+|client name from DNS: \S+|no name for the client.*"


def trace_steps(proxy, port: int, host: str = "127.0.0.1") -> dict[int, list[str]]:
    """The trace lines of connections arriving on host:port: connection number -> steps."""
    rx = re.compile(rf"connection (\d+) from \S+ on {re.escape(host)}:{port}: trace: (.*)$", re.M)
    steps: dict[int, list[str]] = {}
    for m in rx.finditer(proxy.text()):
        steps.setdefault(int(m.group(1)), []).append(m.group(2))
    return steps


def expect_steps(steps: list[str], patterns: list[str], text: str) -> None:
    assert len(steps) == len(patterns), (steps, text)
    for step, pattern in zip(steps, patterns):
        assert re.fullmatch(pattern, step), (step, pattern, text)


def test_debug_directive_traces_every_step_and_records(lab):
    """`debug NAME` records like writefile and logs each step of the connection at level 3
    (notice): handler, rules, access control program, connect, recording, half-closes, the
    idle timeout and the end. A `writefile` section under the same default is not traced."""
    cdb = rules_cdb(lab, RULES)
    grant = lab.script("grant.sh", GRANT)
    backend = lab.backend(tagger("B"))
    p1, p2 = free_port("::"), free_port("::")
    conf = lab.file("debug.conf", f"""debug {lab.dir / 'dbg'}
timeout 1
port {p1}
rules {cdb}
acp {grant}
server 127.0.0.1:{backend.port}
port {p2}
writefile {lab.dir / 'quiet'}
server 127.0.0.1:{backend.port}
""")
    proxy = lab.tcpproxy("-f", conf, listeners=2, log=("-L", "stderr:3"))
    data, end, _ = exchange("127.0.0.1", p1, b"traced\n")
    assert data.endswith(b"\ntraced\n") and end == "eof", (data, end, proxy.text())
    proxy.wait_for(rf"on 127\.0\.0\.1:{p1}: trace: end after")
    (first, steps), = trace_steps(proxy, p1).items()
    expect_steps(steps, [
        rf"handler port {p1} \({re.escape(str(conf))} line 3\): server 127\.0\.0\.1:{backend.port}",
        rf'rules {re.escape(str(cdb))}: allowed by rule "127\.0\.0\.1", setting RULEVAR',
        NAME_STEP,
        rf"access control program started \(pid \d+\): {re.escape(str(grant))}",
        r"access control program \d+ ended: exit 0",
        rf"connecting to 127\.0\.0\.1:{backend.port} from an address the system picks",
        rf"connected to the server: local 127\.0\.0\.1:\d+, remote 127\.0\.0\.1:{backend.port}",
        rf"recording to {re.escape(str(lab.dir / 'dbg'))}\.{proxy.pid}\.log",
        r"client finished sending \(7 bytes to the server\); passed on to the server",
        r"server finished sending \(\d+ bytes to the client\); passed on to the client",
        r"end after \d+\.\d{3} s",
    ], proxy.text())
    text = wait_recording(lab, proxy, "dbg")
    assert "client>server" in text and "traced" in text, text

    # An idle connection: the timeout is traced before the end.
    with connect("127.0.0.1", p1) as s:
        assert read_line(s).startswith(b"acp: welcome")
        assert read_line(s).startswith(b"B ")
        read_all(s, timeout=5)
    proxy.wait_for(rf"on 127\.0\.0\.1:{p1}: trace: end after", count=2)
    second = [n for n in trace_steps(proxy, p1) if n != first]
    assert len(second) == 1
    steps = trace_steps(proxy, p1)[second[0]]
    assert steps[-2:] == ["idle timeout: nothing moved for 1 s", steps[-1]], steps
    assert "client finished sending" not in " ".join(steps)

    # writefile in port p2 replaces the default debug there: recorded, not traced.
    data, _, _ = exchange("127.0.0.1", p2, b"quiet\n")
    assert data.endswith(b"\nquiet\n"), (data, proxy.text())
    wait_recording(lab, proxy, "quiet")
    proxy.wait_for(rf"on 127\.0\.0\.1:{p2} to .* closed:")
    assert trace_steps(proxy, p2) == {}, proxy.text()


def test_debug_trace_option_without_recording(lab):
    """-d traces every handler (here spreadspace's -p/-r/-o with a source address and a PROXY
    header); without writefile nothing is recorded."""
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-d", "--proxy-protocol", "v1", "-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1",
                         "-o", str(backend.port), "-s", "127.0.0.5", log=("-L", "stderr:3"))
    data, end, _ = exchange("127.0.0.1", port, b"")
    assert data.startswith(b"B 127.0.0.5 "), (data, proxy.text())
    proxy.wait_for(r"trace: end after")
    (steps,) = trace_steps(proxy, port).values()
    expect_steps(steps, [
        rf"handler port {port} listen 127\.0\.0\.1 \(command line\): server 127\.0\.0\.1:{backend.port}",
        rf"connecting to 127\.0\.0\.1:{backend.port} from 127\.0\.0\.5",
        rf"connected to the server: local 127\.0\.0\.5:\d+, remote 127\.0\.0\.1:{backend.port}",
        rf"PROXY header queued for the server: PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ {port}",
        r"client finished sending \(0 bytes to the server\); passed on to the server",
        r"server finished sending \(\d+ bytes to the client\); passed on to the client",
        r"end after \d+\.\d{3} s",
    ], proxy.text())
    assert not list(lab.dir.glob("*.log")), list(lab.dir.iterdir())


def test_debug_trace_of_a_handler_program(lab):
    script = lab.script("handler.sh", HANDLER)
    port = free_port()
    proxy = lab.tcpproxy("-d", "--bind", f"127.0.0.1:{port}", script, log=("-L", "stderr:3"))
    handler_output("127.0.0.1", port, proxy)
    proxy.wait_for(r"trace: end after")
    (steps,) = trace_steps(proxy, port).values()
    expect_steps(steps, [
        rf"handler port {port} listen 127\.0\.0\.1 \(command line\): exec {re.escape(str(script))}",
        NAME_STEP,
        r"handler program started \(pid \d+\); it serves the connection from now on",
        r"end after \d+\.\d{3} s",
    ], proxy.text())


def test_no_trace_without_debug(lab):
    backend = lab.backend(tagger("B"))
    port = free_port()
    proxy = lab.tcpproxy("-l", "127.0.0.1", "-p", str(port), "-r", "127.0.0.1", "-o", str(backend.port))
    exchange("127.0.0.1", port, b"x")
    proxy.wait_for(r"closed:")
    assert "trace:" not in proxy.text(), proxy.text()


# MARK: - inetd mode under tcpserver

def tcpserver(lab, port: int, *program, host: str = "127.0.0.1"):
    proc = lab.start([bastion_bin("tcpserver"), "-1", "-H", "-R", "-l", "0", host, str(port), *program],
                     name="tcpserver")
    m = proc.wait_for(r"^(\d+)$")
    return proc, int(m.group(1))


def test_inetd_mode_config_picks_service_by_local_port(lab):
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    p1, p2 = free_port(), free_port()
    conf = lab.file("inetd.conf", f"port {p1}\nserver 127.0.0.1:{a.port}\nport {p2}\nserver 127.0.0.1:{b.port}\n")
    proxy = bastion_bin("tcpproxy")
    t1, _ = tcpserver(lab, p1, proxy, "-D", "-L", "stderr:5", "-c", conf)
    t2, _ = tcpserver(lab, p2, proxy, "-D", "-L", "stderr:5", "-c", conf)
    data, end, _ = exchange("127.0.0.1", p1, b"one")
    assert data.startswith(b"A 127.0.0.1 ") and data.endswith(b"\none"), (data, t1.text())
    data, end, _ = exchange("127.0.0.1", p2, b"two")
    assert data.startswith(b"B 127.0.0.1 ") and data.endswith(b"\ntwo"), (data, t2.text())


def test_inetd_mode_with_server_argument(lab):
    backend = lab.backend(tagger("B"))
    t, port = tcpserver(lab, 0, bastion_bin("tcpproxy"), "-D", "-L", "stderr:5", f"127.0.0.1:{backend.port}")
    for i in range(3):
        data, end, _ = exchange("127.0.0.1", port, b"half-closed %d" % i)
        assert data.startswith(b"B 127.0.0.1 ") and data.endswith(b"\nhalf-closed %d" % i), (data, t.text())
    assert backend.accepted == 3


def test_inetd_mode_server_without_port_uses_own_port(lab):
    """`tcpproxy HOST` forwards to HOST on the port the client came to."""
    port = free_port("127.0.0.1", also=["127.0.0.2"])
    backend = lab.backend(tagger("SAME-PORT"), host="127.0.0.2", port=port)
    t, _ = tcpserver(lab, port, bastion_bin("tcpproxy"), "-D", "-L", "stderr:5", "127.0.0.2")
    data, end, _ = exchange("127.0.0.1", port, b"z")
    assert data.startswith(b"SAME-PORT 127.0.0.1 ") or data.startswith(b"SAME-PORT 127.0.0.2 "), (data, t.text())
    assert data.endswith(b"\nz")


def test_inetd_mode_repeated_setting_goes_to_the_log_only(lab):
    """In inetd mode standard error may be the client's socket: warnings go to the log targets."""
    a, b = lab.backend(tagger("A")), lab.backend(tagger("B"))
    port = free_port()
    conf = lab.file("inetd.conf", f"port {port}\nserver 127.0.0.1:{a.port}\nserver 127.0.0.1:{b.port}\n")
    logfile = lab.dir / "inetd.log"
    t, _ = tcpserver(lab, port, bastion_bin("tcpproxy"), "-D", "-L", f"file:3,{logfile}", "-c", conf)
    data, end, _ = exchange("127.0.0.1", port, b"x")
    assert data.startswith(b"B 127.0.0.1 ") and b"warning" not in data, (data, t.text())
    text = wait_file(logfile, r"closed:")
    assert f"[WARNING] {conf}:3: server repeated in this section; it replaces line 2\n" in text, text
    assert "warning" not in t.text(), t.text()


def test_inetd_mode_handler_program(lab):
    script = lab.script("handler.sh", HANDLER)
    t, port = tcpserver(lab, 0, bastion_bin("tcpproxy"), "-D", "-L", "stderr:5", script, "inetd-arg")
    v, _ = handler_output("127.0.0.1", port, t)
    assert v["args"] == "inetd-arg" and v["PROXY_PORT"] == str(port) and v["PROXY_CLIENT"] == "127.0.0.1", v
