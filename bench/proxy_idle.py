#!/usr/bin/env python3
"""Idle proxied connections for bench/proxy-run's memory measurement (loopback only).

  proxy_idle.py hold PROXY_PORT BACKEND_PORT N SECONDS [IN_FLIGHT]

Listens on 127.0.0.1:BACKEND_PORT as the backend (accepts every connection and holds it) and
opens N client connections to the proxy on 127.0.0.1:PROXY_PORT. A connection counts once the
backend has accepted the proxy's connection for it; at most IN_FLIGHT [64] client connections
are ahead of the backend at any time, so the run goes at the proxy's own accept-and-connect
pace instead of overflowing a short listen queue (socat listens with a backlog of 5), which
would only measure SYN retransmission timers.

Prints "held H established E failed F seconds S" once the backend holds N connections (or
nothing moved for 20 s, or SECONDS passed), holds everything until a line or EOF arrives on
standard input (or SECONDS pass since the start), closes the client side, waits up to 30 s for
the proxy to close its backend side, prints "closed; backend still holds K" and exits.

One process holds both ends: 2 descriptors per connection, raised to the hard limit.
Nothing but 127.0.0.1 is ever used.
"""
import errno
import resource
import select
import socket
import sys
import time

HOST = "127.0.0.1"


def hold(proxy_port, backend_port, n, seconds, in_flight):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    start = time.monotonic()
    deadline = start + seconds
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, backend_port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    LISTENER = ls.fileno()
    ep.register(LISTENER, select.EPOLLIN)
    held = {}  # backend side, by fd
    clients = {}  # client side, by fd
    connecting = set()
    established = failed = started = 0
    last_progress = time.monotonic()

    def backend_events(fd, ev):
        nonlocal last_progress
        if fd == LISTENER:
            while True:
                try:
                    c, _ = ls.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE):
                        return
                    raise
                c.setblocking(False)
                held[c.fileno()] = c
                ep.register(c.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
                last_progress = time.monotonic()
        c = held.get(fd)
        if c is None:
            return False
        try:
            data = c.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            ep.unregister(fd)
            del held[fd]
            c.close()
        return True

    # Phase 1: open N connections through the proxy, paced by the backend.
    while time.monotonic() < deadline and len(held) < n:
        if time.monotonic() - last_progress > 20:
            break
        while started < n and started - len(held) - failed < in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            r = s.connect_ex((HOST, proxy_port))
            started += 1
            if r in (0, errno.EINPROGRESS):
                clients[s.fileno()] = s
                connecting.add(s.fileno())
                ep.register(s.fileno(), select.EPOLLOUT)
            else:
                failed += 1
                s.close()
        for fd, ev in ep.poll(0.05, 1024):
            if fd == LISTENER or fd in held:
                backend_events(fd, ev)
                continue
            if fd in connecting:
                connecting.discard(fd)
                s = clients[fd]
                ep.unregister(fd)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    established += 1
                else:
                    failed += 1
                    del clients[fd]
                    s.close()
                last_progress = time.monotonic()
    print(f"held {len(held)} established {established} failed {failed + len(connecting)} "
          f"seconds {time.monotonic() - start:.2f}", flush=True)

    # Phase 2: hold until told (a line or EOF on stdin) or the deadline, serving the backend
    # side meanwhile (a proxy that gives up on a connection is seen here).
    while time.monotonic() < deadline:
        r, _, _ = select.select([sys.stdin], [], [], 0)
        if r:
            break
        for fd, ev in ep.poll(0.1, 1024):
            if fd == LISTENER or fd in held:
                backend_events(fd, ev)

    # Phase 3: close the client side, wait for the proxy to close the backend side.
    for fd, s in list(clients.items()):
        if fd in connecting:
            ep.unregister(fd)
        s.close()
    clients.clear()
    until = time.monotonic() + 30
    while held and time.monotonic() < until:
        for fd, ev in ep.poll(0.1, 1024):
            if fd == LISTENER or fd in held:
                backend_events(fd, ev)
    print(f"closed; backend still holds {len(held)}", flush=True)
    for c in held.values():
        c.close()


def main():
    if len(sys.argv) in (6, 7) and sys.argv[1] == "hold":
        hold(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]),
             int(sys.argv[6]) if len(sys.argv) == 7 else 64)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
