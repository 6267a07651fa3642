#!/usr/bin/env python3
"""Turns the raw measurements bench/run collected in a results directory into markdown.

usage: report.py RESULTS_DIR

Files read (all written by bench/run):
  meta.env          KEY=VALUE lines: machine, date, revision, settings
  binaries.tsv      tool side path linkage bytes
  gen.json          the rules generator's counts
  compile.tsv       side round wall_s user_s sys_s maxrss_kb minflt
  compile.cmp       "identical" or a cmp message
  hf-*.json         hyperfine exports; section and case in meta.env (HF_CASES), commands named
                    "ours" and "theirs"; one file per round
  check.cmp         case<TAB>identical|different
  probe.tsv         side what value   (single-run probes: page faults, syscalls, RSS)
  server.tsv        side k round served failed seconds parent_ticks child_ticks
"""
import glob
import json
import os
import statistics
import sys


def read_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.env")) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
    return meta


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def ms(seconds):
    return f"{seconds * 1000:.3f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def ratio(a, b):
    return f"**{a / b:.2f}**" if b else "n/a"


def hyperfine_times(d, prefix):
    """All run times (seconds) per command name over every round of one case."""
    times = {}
    user = {}
    system = {}
    for path in sorted(glob.glob(os.path.join(d, f"hf-{prefix}-r*.json"))):
        with open(path) as f:
            data = json.load(f)
        for r in data["results"]:
            name = r["command"]
            times.setdefault(name, []).extend(r["times"])
            user.setdefault(name, []).append(r["user"])
            system.setdefault(name, []).append(r["system"])
    return times, user, system


def section_hyperfine(d, meta, section, title, explain):
    cases = [c for c in meta.get("HF_CASES", "").split() if c.startswith(section + ":")]
    if not cases:
        return []
    out = [f"### {title}", "", explain, ""]
    out.append("| case | runs (each) | ours mean | theirs mean | **mean ratio ours/theirs** "
               "| ours median | theirs median | median ratio | ours user+sys | theirs user+sys |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        name = case.split(":", 1)[1]
        times, user, system = hyperfine_times(d, f"{section}-{name}")
        if "ours" not in times or "theirs" not in times:
            continue
        o, t = times["ours"], times["theirs"]
        om, tm = statistics.fmean(o), statistics.fmean(t)
        od, td = statistics.median(o), statistics.median(t)
        ocpu = statistics.fmean(user["ours"]) + statistics.fmean(system["ours"])
        tcpu = statistics.fmean(user["theirs"]) + statistics.fmean(system["theirs"])
        label = meta.get(f"HF_LABEL_{section}_{name}", name)
        out.append(f"| {label} | {len(o)} | {ms(om)} | {ms(tm)} | {ratio(om, tm)} | {ms(od)} | {ms(td)} "
                   f"| {ratio(od, td)} | {ms(ocpu)} | {ms(tcpu)} |")
    out.append("")
    return out


def main():
    d = sys.argv[1]
    meta = read_meta(d)
    out = []
    out.append("## Machine")
    out.append("")
    out.append("| | |")
    out.append("|---|---|")
    for key, label in [("DATE", "date (UTC)"), ("CPU", "CPU"), ("NPROC", "nproc"), ("KERNEL", "kernel"),
                       ("MEMORY", "memory"), ("SWIFT", "Swift"), ("REVISION", "Bastion revision"),
                       ("PEERS", "peers"), ("WORKDIR", "scratch files on"),
                       ("LOAD", "load average (1/5/15 min)")]:
        if key in meta:
            out.append(f"| {label} | {meta[key]} |")
    out.append("")

    bins = rows(os.path.join(d, "binaries.tsv"))
    if bins:
        out.append("## Binaries")
        out.append("")
        out.append("| tool | side | linkage | size | shared libraries |")
        out.append("|---|---|---|---:|---:|")
        for tool, side, _path, linkage, size, libs in bins:
            out.append(f"| {tool} | {side} | {linkage} | {int(size):,} B | {libs} |")
        out.append("")

    out.append("## Results")
    out.append("")
    out.append("Ratios are ours/theirs: for times and memory **> 1 means ours is slower or bigger**; "
               "for connections per second **< 1 means ours is slower**. Medians over interleaved "
               "runs; the machine is shared, so compare ratios, not absolute numbers.")
    out.append("")

    # 1. tcprules
    comp = rows(os.path.join(d, "compile.tsv"))
    if comp:
        gen = json.load(open(os.path.join(d, "gen.json")))
        cmpres = open(os.path.join(d, "compile.cmp")).read().strip()
        by = {"ours": [], "theirs": []}
        for side, _rnd, wall, user, sys_, rss, minflt in comp:
            by[side].append((float(wall), float(user), float(sys_), int(rss), int(minflt)))

        def med(side, i):
            return statistics.median(x[i] for x in by[side])

        out.append("### 1. tcprules: compiling a large rules file")
        out.append("")
        out.append(f"{gen['lines']:,} rule lines ({gen['bytes'] / 1e6:.1f} MB, fixed seed), "
                   f"{gen['keys']:,} cdb records after expanding ranges; cdb size "
                   f"{int(meta.get('CDB_BYTES', '0')):,} B. {len(by['ours'])} runs each, "
                   f"alternating. Output of ours vs djb's: **{cmpres}** (cmp).")
        out.append("")
        out.append("| metric (median) | ours | theirs | **ratio ours/theirs** |")
        out.append("|---|---:|---:|---:|")
        ow, tw = med("ours", 0), med("theirs", 0)
        out.append(f"| wall time | {ow:.3f} s | {tw:.3f} s | {ratio(ow, tw)} |")
        ou, tu = med("ours", 1), med("theirs", 1)
        out.append(f"| user CPU | {ou:.2f} s | {tu:.2f} s | {ratio(ou, tu)} |")
        osy, tsy = med("ours", 2), med("theirs", 2)
        out.append(f"| system CPU | {osy:.2f} s | {tsy:.2f} s | {ratio(osy, tsy)} |")
        orss, trss = med("ours", 3), med("theirs", 3)
        out.append(f"| peak RSS | {orss / 1024:.1f} MiB | {trss / 1024:.1f} MiB | {ratio(orss, trss)} |")
        of, tf = med("ours", 4), med("theirs", 4)
        out.append(f"| minor page faults | {of:,.0f} | {tf:,.0f} | {ratio(of, tf)} |")
        out.append("")
        out.append("all wall times (s): ours " + " ".join(f"{x[0]:.3f}" for x in by["ours"])
                   + "; theirs " + " ".join(f"{x[0]:.3f}" for x in by["theirs"]))
        out.append("")

    # 2. tcprulescheck and start-up
    checks = rows(os.path.join(d, "check.cmp"))
    verdict = ", ".join(f"{c}: {v}" for c, v in checks)
    out += section_hyperfine(
        d, meta, "check", "2. tcprulescheck: one process per lookup",
        "hyperfine -N (no shell), all runs of every round pooled; rounds alternate which side "
        f"goes first. Output of ours vs djb's per case: {verdict or 'not checked'}.")
    out += section_hyperfine(
        d, meta, "startup", "2b. Process start-up alone",
        "Each tool run with no arguments: it prints its usage line and exits 100, so this is "
        "exec + dynamic loading (if any) + runtime initialisation + argument check, nothing else. "
        "The last two rows are floors, with other meanings for the columns: static C `ok` vs dynamic "
        "`/bin/true` (what a C program costs to start here), and the smallest static Swift program "
        "(`exit(100)`, linked like our tools) vs static C `ok`: the Swift runtime's own start-up, "
        "which no change to our code can remove.")

    probes = rows(os.path.join(d, "probe.tsv"))
    if probes:
        out.append("Single-run probes: tcprulescheck on the big cdb with a client that matches nothing; "
                   "the tcpserver parents as they are after the load of section 3; syscalls counted "
                   "with strace (-ff for tcpserver, over 1 s of K=1 load).")
        out.append("")
        out.append("| probe | ours | theirs | ratio |")
        out.append("|---|---:|---:|---:|")
        vals = {}
        order = []
        for side, what, value in probes:
            if what not in vals:
                order.append(what)
                vals[what] = {}
            vals[what][side] = float(value)
        for what in order:
            o, t = vals[what].get("ours"), vals[what].get("theirs")
            if o is None or t is None:
                continue
            fmt = (lambda v: f"{v:,.0f}") if o.is_integer() and t.is_integer() else (lambda v: f"{v:,.1f}")
            out.append(f"| {what} | {fmt(o)} | {fmt(t)} | {ratio(o, t)} |")
        out.append("")

    # 3. tcpserver
    srv = rows(os.path.join(d, "server.tsv"))
    if srv:
        tck = float(meta.get("CLK_TCK", "100"))
        data = {}
        for side, k, rnd, served, failed, secs, pt, ct, pf, cf in srv:
            data.setdefault(int(k), {}).setdefault(side, []).append(
                (int(served) / float(secs), int(failed), int(served), float(pt) / tck, float(ct) / tck,
                 float(pf), float(cf)))
        out.append("### 3. tcpserver: connections per second")
        out.append("")
        out.append(f"`tcpserver -1 -H -R -l 0 -c 100 -x rules.cdb 127.0.0.1 0 ok` (ours vs djb's IPv4 "
                   f"tcpserver), where `ok` is a static C program writing `ok\\n`; the rules cdb allows "
                   f"127.0.0.1 with two variables and denies everything else. A C client with K "
                   f"concurrent loops of connect / read until EOF / close for {meta.get('SECONDS', '?')} s "
                   f"per run; a connection counts when it read exactly `ok\\n`. "
                   f"{meta.get('ROUNDS', '?')} rounds, ours and theirs alternating. Server CPU is the "
                   f"parent's own time and its reaped children's (fork, rules lookup, exec, `ok`), "
                   f"per served connection, from /proc/PID/stat (children's page faults include `ok`'s own, "
                   f"the same on both sides).")
        out.append("")
        out.append("| K | ours conn/s | theirs conn/s | **ratio ours/theirs** | failed ours / theirs "
                   "| parent CPU/conn ours / theirs | children CPU/conn ours / theirs | children page faults/conn ours / theirs "
                   "| runs ours (conn/s) | runs theirs (conn/s) |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for k in sorted(data):
            o, t = data[k].get("ours", []), data[k].get("theirs", [])
            if not o or not t:
                continue
            orate = statistics.median(x[0] for x in o)
            trate = statistics.median(x[0] for x in t)
            ofail, tfail = sum(x[1] for x in o), sum(x[1] for x in t)

            def per(xs, i, scale=1e6):
                n = sum(x[2] for x in xs)
                return sum(x[i] for x in xs) / n * scale if n else 0.0

            out.append(
                f"| {k} | {orate:,.0f} | {trate:,.0f} | {ratio(orate, trate)} | {ofail} / {tfail} "
                f"| {per(o, 3):.0f} µs / {per(t, 3):.0f} µs | {per(o, 4):.0f} µs / {per(t, 4):.0f} µs "
                f"| {per(o, 6, 1):.0f} / {per(t, 6, 1):.0f} "
                f"| {' '.join(f'{x[0]:.0f}' for x in o)} | {' '.join(f'{x[0]:.0f}' for x in t)} |")
        out.append("")

    out.append(f"Total bench time: {meta.get('ELAPSED', '?')} s. Settings: {meta.get('SETTINGS', '')}.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
