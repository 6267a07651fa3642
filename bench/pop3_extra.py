#!/usr/bin/env python3
"""What ../shared/bench/pop3-peers.py does not measure, side by side in one run (loopback
only, stdlib only):

  idle   memory per idle logged-in session: N sessions through the gateway to a scripted
         POP3 server of this script's own (one thread, selectors, so the server's memory
         does not count), PSS of the gateway's process tree before and with them;
         pop3.proxy -D against perdition.
  scan   the cost of pop3.proxy -z: RETR of a mailbox through pop3.proxy with and without
         -z, and clamd scanning the same messages alone (INSTREAM, one after the other);
         the overhead is (T_z - T_plain) / T_clamd, the median of the rounds' ratios.

  bench/pop3_extra.py [--sessions 300] [--rounds 3] [--only idle|scan]

The peers' setups (perdition's argv, clamd with its one-line EICAR database, PSS of a
process tree, processes stopped by PID) come from ../shared/bench.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "bench")
sys.path.insert(0, SHARED)
import peerlib  # noqa: E402
from peerlib import HOST, Proc, free_port, log, tree_memory, wait_listen  # noqa: E402

_spec = importlib.util.spec_from_file_location("pop3peers", os.path.join(SHARED, "pop3-peers.py"))
pop3peers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pop3peers)

BIN = os.path.join(ROOT, ".build", "release")


def message(index: int, size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit %05d\r\n" % index
    head = b"From: a%d@example.org\r\nTo: b@example.test\r\nSubject: message %d\r\n\r\n" % (index, index)
    return head + line * (size // len(line)) + b".dot-stuffed line\r\n"


def stuffed(m: bytes) -> bytes:
    return m.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class ScriptedServer:
    """A POP3 server on one thread for many connections: any login, the mailbox given."""

    def __init__(self, mailbox: list[bytes]) -> None:
        self.answers = [b"+OK %d octets\r\n" % len(m) + stuffed(m) for m in mailbox]
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = free_port()
        self.sock.bind((HOST, self.port))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.state: dict = {}
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            for key, _ in self.sel.select(0.2):
                if key.fileobj is self.sock:
                    try:
                        conn, _ = self.sock.accept()
                    except OSError:
                        continue
                    conn.setblocking(True)
                    conn.sendall(b"+OK scripted ready\r\n")
                    conn.setblocking(False)
                    self.state[conn] = b""
                    self.sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(conn)
                    self.state.pop(conn, None)
                    conn.close()
                    continue
                buf = self.state[conn] + data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    words = line.strip().split(b" ")
                    verb = words[0].upper()
                    if verb == b"RETR":
                        answer = self.answers[int(words[1]) - 1]
                    elif verb == b"QUIT":
                        answer = b"+OK bye\r\n"
                    else:
                        answer = b"+OK\r\n"
                    conn.setblocking(True)
                    conn.sendall(answer)
                    conn.setblocking(False)
                self.state[conn] = buf

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def login(port: int) -> tuple[socket.socket, object]:
    s = socket.create_connection((HOST, port), timeout=20)
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK")
    for command in (b"USER bob\r\n", b"PASS secret\r\n"):
        s.sendall(command)
        answer = f.readline()
        assert answer.startswith(b"+OK"), answer
    return s, f


def retrieve(port: int, count: int) -> float:
    s, f = login(port)
    start = time.monotonic()
    for n in range(1, count + 1):
        s.sendall(b"RETR %d\r\n" % n)
        status = f.readline()
        assert status.startswith(b"+OK"), status
        while True:
            chunk = f.readline()
            if chunk == b".\r\n":
                break
            assert chunk
    elapsed = time.monotonic() - start
    s.sendall(b"QUIT\r\n")
    s.close()
    return elapsed


def gateways(work: str, upstream: int, extra: list[str] = ()) -> dict:
    return {
        "pop3.proxy": lambda port: [os.path.join(BIN, "pop3.proxy"), "-d", "-m", "--log", "stderr:3", *extra,
                                    "-D", "-D", f"{HOST}:{port}", f"{HOST}:{upstream}"],
        "perdition": lambda port: pop3peers.perdition_argv(work, port, upstream, "idle"),
    }


def idle(args, work: str) -> list[tuple]:
    server = ScriptedServer([message(1, 1000)])
    rows = []
    try:
        for name, argv in gateways(work, server.port).items():
            port = free_port()
            proc = Proc(name, argv(port), os.path.join(work, f"{name}-idle.log"))
            if not wait_listen(port, proc):
                raise RuntimeError(f"{name} did not start: {proc.tail()}")
            time.sleep(0.3)
            _, before, procs0 = tree_memory(proc.pid)
            sessions = [login(port) for _ in range(args.sessions)]
            time.sleep(0.5)
            _, during, procs1 = tree_memory(proc.pid)
            per = (during - before) / args.sessions
            log(f"idle {name}: PSS {before} KiB -> {during} KiB with {args.sessions} sessions "
                f"({procs0} -> {procs1} processes): {per:.1f} KiB per session")
            rows.append((name, before, during, procs1, per))
            for s, f in sessions:
                f.close()
                s.close()
            proc.stop()
    finally:
        server.close()
    return rows


def scan(args, work: str) -> dict:
    mailbox = [message(i, 50_000) for i in range(40)] + [message(100 + i, 2_000_000) for i in range(4)]
    server = ScriptedServer(mailbox)
    clamd, clamd_port, version = pop3peers.start_clamd(work)
    log(f"clamd {version} on {clamd_port}")
    times = {"clamd alone": [], "pop3.proxy": [], "pop3.proxy -z": []}
    procs = {}
    try:
        for name, extra in (("pop3.proxy", []), ("pop3.proxy -z", ["-z", "--clamd", f"{HOST}:{clamd_port}"])):
            port = free_port()
            proc = Proc(name, gateways(work, server.port, extra)["pop3.proxy"](port),
                        os.path.join(work, f"scan-{len(extra)}.log"))
            if not wait_listen(port, proc):
                raise RuntimeError(f"{name} did not start: {proc.tail()}")
            procs[name] = (proc, port)
        for r in range(args.rounds):
            order = ["clamd alone", "pop3.proxy", "pop3.proxy -z"]
            if r % 2:
                order.reverse()
            for name in order:
                if name == "clamd alone":
                    start = time.monotonic()
                    for m in mailbox:
                        answer = pop3peers.clamd_instream(clamd_port, m)
                        assert answer.endswith("OK"), answer
                    times[name].append(time.monotonic() - start)
                else:
                    times[name].append(retrieve(procs[name][1], len(mailbox)))
            log(f"scan round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    finally:
        for proc, _ in procs.values():
            proc.stop()
        clamd.stop()
        server.close()
    medians = {k: statistics.median(v) for k, v in times.items()}
    medians["megabytes"] = sum(map(len, mailbox)) / 1e6
    # Each round's three paths ran back to back: the ratio of one round is less exposed to
    # the machine's other load than a ratio of medians.
    medians["overhead"] = statistics.median(
        (z - plain) / alone for alone, plain, z in zip(times["clamd alone"], times["pop3.proxy"], times["pop3.proxy -z"]))
    return medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=("idle", "scan"))
    args = ap.parse_args()
    peerlib.install_limits(900, nofile=65536)
    work = tempfile.mkdtemp(prefix="bastion-pop3-extra-")
    os.chmod(work, 0o755)
    try:
        if args.only in (None, "idle"):
            rows = idle(args, work)
            print(f"\nMemory per idle logged-in session ({args.sessions} sessions, PSS of the gateway's tree):\n")
            print("| gateway | PSS idle | PSS with sessions | processes | per session |")
            print("|---|---:|---:|---:|---:|")
            for name, before, during, procs, per in rows:
                print(f"| {name} | {before} KiB | {during} KiB | {procs} | {per:.1f} KiB |")
        if args.only in (None, "scan"):
            m = scan(args, work)
            overhead = m["overhead"]
            print(f"\nThe cost of -z ({m['megabytes']:.1f} MB in 44 messages, medians of {args.rounds} rounds):\n")
            print("| path | seconds |")
            print("|---|---:|")
            for k in ("clamd alone", "pop3.proxy", "pop3.proxy -z"):
                print(f"| {k} | {m[k]:.3f} |")
            print(f"\n(-z minus plain) / clamd alone = {overhead:.2f} (median of the rounds' ratios)")
    finally:
        Proc.stop_all()


if __name__ == "__main__":
    main()
