#!/usr/bin/env python3
"""Small probes for bench/proxy-run.

  proxy_probe.py ports N     N distinct free TCP ports on 127.0.0.1 (one per line)
  proxy_probe.py mem PGID    processes, summed PSS and summed RSS (KiB) of process group PGID
                             (from /proc/PID/smaps_rollup)
  proxy_probe.py cpu PGID    CPU seconds of process group PGID: every member's utime+stime
                             plus the cutime+cstime of the children they reaped
  proxy_probe.py pids PGID   the process ids of group PGID, comma-separated (for perf -p)
  proxy_probe.py tids PGID   every thread id of group PGID, one per line (for strace -p)
"""
import os
import socket
import sys


def members(pgid):
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is state (field 3); pgrp is field 5.
        if int(fields[2]) == pgid:
            yield int(name), fields


def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
    for s in socks:
        s.close()


def mem(pgid):
    n = pss = rss = 0
    for pid, _ in members(pgid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            continue
        n += 1
    print(n, pss, rss)


def cpu(pgid):
    tck = os.sysconf("SC_CLK_TCK")
    ticks = 0
    for _, f in members(pgid):
        # utime stime cutime cstime are fields 14-17: indexes 11-14 here.
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    print(f"{ticks / tck:.2f}")


def pids(pgid):
    print(",".join(str(pid) for pid, _ in sorted(members(pgid))))


def tids(pgid):
    for pid, _ in sorted(members(pgid)):
        try:
            for t in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
                print(t)
        except OSError:
            continue


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "ports":
        ports(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "mem":
        mem(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "cpu":
        cpu(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "pids":
        pids(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "tids":
        tids(int(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
