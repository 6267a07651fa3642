#!/usr/bin/env python3
"""Splits a `perf script -F comm,pid,ip,sym,dso` dump of a tcpserver under load by process
role, for bench/run --profile.

usage: perf_split.py SIDE PARENT_PID CPU_DUMP FAULT_DUMP US_PER_SAMPLE

PARENT_PID is the accepting parent; every other pid is a per-connection child,
first under the name `tcpserver` (from fork to exec) and then under the program's name (`ok`).
Prints markdown: CPU per connection for each role, kernel and user; page faults per
connection of the child before exec; the top symbols of the child before exec.
"""
import collections
import re
import sys

LINE = re.compile(r"\s*(\S+)\s+(\d+)\s+([0-9a-f]+)\s+(.*) \((.*)\)\s*$")


def load(path):
    rows = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                rows.append(m.groups())
    return rows


def split(rows, parent):
    children = {r[1] for r in rows if int(r[1]) != parent}
    return parent, len(children)


def role(parent, comm, pid):
    if int(pid) == parent:
        return "parent (accept, fork, reap)"
    return "child before exec (tcpserver's own work)" if comm == "tcpserver" else f"child after exec (`{comm}`)"


def main():
    side, parent, cpu_path, fault_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    per = float(sys.argv[5])
    cpu = load(cpu_path)
    parent, n = split(cpu, parent)
    out = [f"#### {side}", ""]
    if not n:
        out.append("no samples")
        print("\n".join(out))
        return
    total = collections.Counter()
    syms = collections.Counter()
    for comm, pid, _ip, sym, dso in cpu:
        kind = "kernel" if "kernel" in dso else "user"
        r = role(parent, comm, pid)
        total[(r, kind)] += 1
        if comm == "tcpserver" and int(pid) != parent:
            syms[(kind, sym[:110])] += 1
    out.append(f"{n} connections sampled. CPU per connection (perf cpu-clock sampling; perf itself adds overhead, "
               f"compare sides, not absolutes):")
    out.append("")
    out.append("| role | kernel | user | total |")
    out.append("|---|---:|---:|---:|")
    for r in sorted({k[0] for k in total}):
        k, u = total[(r, "kernel")] * per / n, total[(r, "user")] * per / n
        out.append(f"| {r} | {k:.0f} µs | {u:.0f} µs | {k + u:.0f} µs |")
    out.append("")

    faults = load(fault_path)
    fparent, fn = split(faults, parent)
    if fn:
        fsyms = collections.Counter()
        count = 0
        for comm, pid, _ip, sym, dso in faults:
            if comm == "tcpserver" and int(pid) != fparent:
                count += 1
                fsyms[sym[:110] if sym != "[unknown]" else f"[unknown] in {dso}"] += 1
        out.append(f"Page faults per connection in the child before exec: **{count / fn:.1f}**; where (per connection):")
        out.append("")
        out.append("| faults | at |")
        out.append("|---:|---|")
        for s, c in fsyms.most_common(12):
            out.append(f"| {c / fn:.1f} | `{s}` |")
        out.append("")

    out.append("Top symbols of the child before exec (µs per connection):")
    out.append("")
    out.append("| µs | k/u | symbol |")
    out.append("|---:|---|---|")
    for (kind, s), c in syms.most_common(20):
        out.append(f"| {c * per / n:.1f} | {kind[0]} | `{s}` |")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
