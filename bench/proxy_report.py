#!/usr/bin/env python3
"""Turns bench/proxy-run's raw measurements (RESULTS_DIR/meta.env, rates.tsv, idle.tsv) into
the markdown report: machine, contenders, medians, ratios ours/peer, CPU per unit of work and
every run's value.

  proxy_report.py RESULTS_DIR > report.md
  proxy_report.py --insert report.md BENCHMARKS.md
      puts the report between the "tcpproxy: begin/end" markers of BENCHMARKS.md (appended
      with the markers when they are not there yet); the rest of the file is left alone
"""
import statistics
import sys
from collections import defaultdict

NAMES = {
    "ours": "ours (tcpproxy)",
    "before": "ours before the change",
    "haproxy": "HAProxy",
    "haproxy-splice": "HAProxy splice-auto",
    "nginx": "nginx stream",
    "rinetd": "rinetd",
    "socat": "socat fork",
    "direct": "direct (no proxy)",
}
PEERS = ["before", "haproxy", "haproxy-splice", "nginx", "rinetd", "socat"]
HAPROXIES = ["haproxy", "haproxy-splice"]


def load_meta(d):
    meta = {}
    with open(f"{d}/meta.env") as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def fnum(x, digits=2):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def main():
    d = sys.argv[1]
    meta = load_meta(d)
    contenders = meta["CONTENDERS"].split()
    peers = [p for p in PEERS if p in contenders]
    idle_n = int(meta["IDLE"])

    # metric -> contender -> [values]; cpu -> contender -> [per-unit values]
    runs = defaultdict(lambda: defaultdict(list))
    cpu = defaultdict(lambda: defaultdict(list))
    errors = defaultdict(lambda: defaultdict(int))
    failed = defaultdict(lambda: defaultdict(int))
    try:
        with open(f"{d}/rates.tsv") as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        rows = []
    for r in rows:
        kind, c = r[0], r[1]
        if kind == "iperf":
            key = f"iperf{r[2]}"
            if r[4] == "fail":
                failed[key][c] += 1
                continue
            runs[key][c].append(int(r[4]) / 1e9)
            if r[5] != "-" and int(r[6]) > 0:
                cpu[key][c].append(float(r[5]) / (int(r[6]) / 2**30))
        else:
            key = kind
            runs[key][c].append(float(r[4]))
            errors[key][c] += int(r[7])
            if r[5] != "-" and int(r[6]) > 0:
                cpu[key][c].append(float(r[5]) / int(r[6]) * 1e6)

    idle = {}
    try:
        with open(f"{d}/idle.tsv") as f:
            for line in f:
                r = line.rstrip("\n").split("\t")
                c = r[0]
                est, held, n0, n1 = int(r[1]), int(r[2]), int(r[3]), int(r[4])
                pss0, pss1, rss0, rss1, pss2 = (int(x) for x in r[5:10])
                idle[c] = dict(est=est, held=held, procs=n1, pss0=pss0, pss1=pss1, rss0=rss0, rss1=rss1,
                               pss2=pss2, setup=float(r[10]), note=r[11] if len(r) > 11 else "")
    except FileNotFoundError:
        pass

    def med(metric, c):
        v = runs[metric].get(c)
        return statistics.median(v) if v else None

    def cmed(metric, c):
        v = cpu[metric].get(c)
        return statistics.median(v) if v else None

    # (key, label, higher-is-better, value(c))
    metrics = [
        ("iperf1", "bulk throughput, iperf3 1 stream (Gbit/s)", True, lambda c: med("iperf1", c)),
        ("iperf8", "bulk throughput, iperf3 8 streams (Gbit/s)", True, lambda c: med("iperf8", c)),
        ("wrk-close", "new connections/s (wrk, `Connection: close`)", True, lambda c: med("wrk-close", c)),
        ("wrk-keepalive", "keep-alive requests/s (wrk)", True, lambda c: med("wrk-keepalive", c)),
        ("pss", f"memory with {idle_n:,} idle connections: PSS of all processes (MiB)", False,
         lambda c: idle[c]["pss1"] / 1024 if c in idle else None),
        ("pssconn", "memory per idle connection: PSS growth / connections held (KiB)", False,
         lambda c: (idle[c]["pss1"] - idle[c]["pss0"]) / idle[c]["held"] if c in idle and idle[c]["held"] else None),
        ("rss", f"memory with {idle_n:,} idle connections: RSS summed over processes (MiB)", False,
         lambda c: idle[c]["rss1"] / 1024 if c in idle else None),
    ]
    out = []
    p = out.append
    p("## tcpproxy: against HAProxy, nginx, rinetd and socat")
    p("")
    p("Measured by `bench/proxy-run --write` (bench/README.md explains each number). All contenders "
      "run on the same machine in the same run, forwarding 127.0.0.1 to the same backend; the rate "
      "measurements alternate between them, each round in a different order, and the tables give "
      "**medians**. Ratios are **ours/peer**: for rates **> 1 means ours is faster**, for memory and "
      "CPU **< 1 means ours uses less**. The machine is a shared 2-core VM, where the load generator, "
      "the backend and the proxy compete for the same two cores: compare ratios, not absolute numbers.")
    p("")
    p("### Machine and contenders")
    p("")
    p("| | |")
    p("|---|---|")
    p(f"| date (UTC) | {meta['DATE']} |")
    p(f"| CPU | {meta['CPU']} |")
    p(f"| nproc / memory | {meta['NPROC']} / {meta['MEMORY']} |")
    p(f"| kernel | {meta['KERNEL']} |")
    p(f"| Swift | {meta['SWIFT']} |")
    p(f"| ours | {meta['V_OURS']}: `tcpproxy -D -L stderr:2 -l 127.0.0.1 -p L -r 127.0.0.1 -o B"
      + ("" if meta.get("BUFFER", "default") == "default" else f" -b {meta['BUFFER']}")
      + f"` (errors-only log): {meta.get('SHAPE_ours', '?')} at start |")
    if "V_BEFORE" in meta:
        p(f"| ours before the change | {meta['V_BEFORE']}, run the same way; "
          + f"{meta.get('SHAPE_before', '?')} at start |")
    p(f"| HAProxy | {meta['V_HAPROXY']}, `mode tcp`, `nbthread 2`, `maxconn 4096` (memory section: "
      f"{meta.get('HAPROXY_MEMORY', '?')}), timeouts 5 s connect / 10 min idle; the splice-auto instance adds "
      f"`option splice-auto`: {meta['HAPROXY_SPLICE']}; {meta.get('SHAPE_haproxy', '?')} |")
    p(f"| nginx | {meta['V_NGINX']}: `stream {{ server {{ listen …; proxy_pass …; }} }}`, "
      "`worker_processes 2`, `worker_connections` = descriptor limit; "
      f"{meta.get('SHAPE_nginx', '?')} (master and workers) |")
    p(f"| rinetd | {meta['V_RINETD']}: one forwarding rule; {meta.get('SHAPE_rinetd', '?')} |")
    p(f"| socat | {meta['V_SOCAT']}: `socat TCP-LISTEN:L,bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:B` "
      "(a process per connection) |")
    p(f"| load | {meta['V_IPERF']} (`-t {meta['IPERF_SECONDS']}`, `-P 1` and `-P 8`) against `iperf3 -s`; "
      f"{meta['V_WRK']} (`-t2 -c{meta['WRK_CONNS']} -d{meta['WRK_SECONDS']}s`) against nginx "
      "(1 worker, `return 200 \"ok\\n\"`, unlimited keep-alive requests); idle connections: "
      "bench/proxy_idle.py (a client and a backend that accepts and holds) |")
    p(f"| rounds | {meta['ROUNDS']} per rate measurement (one warm-up run each, not counted); one for memory |")
    p(f"| descriptor limit | {meta['NOFILE']} (hard); idle connections: {idle_n:,} ({meta['IDLE_WHY']}) |")
    p(f"| load average (1/5/15 min) | {meta['LOAD']} |")
    p("")

    # Medians.
    p("### Results (medians)")
    p("")
    p("| metric | " + " | ".join(NAMES[c] for c in contenders) + " |")
    p("|---|" + "---:|" * len(contenders))
    for key, label, _, value in metrics:
        cells = []
        for c in contenders:
            v = value(c)
            if key.startswith("wrk") and v is not None:
                cells.append(f"{v:,.0f}")
            else:
                cells.append(fnum(v))
        p(f"| {label} | " + " | ".join(cells) + " |")
    p("")

    # Ratios.
    p("### Ratios ours/peer")
    p("")
    p("| metric | better | " + " | ".join(f"ours/{NAMES[c]}" for c in peers) + " | issue target |")
    p("|---|---|" + "---:|" * len(peers) + "---|")
    for key, label, higher, value in metrics:
        o = value("ours") if "ours" in contenders else None
        cells, against = [], {}
        for c in peers:
            v = value(c)
            if o is None or not v:
                cells.append("–")
                continue
            ratio = o / v
            against[c] = ratio
            cells.append(f"**{ratio:.2f}**")
        hap = [against[c] for c in HAPROXIES if c in against]
        if key in ("iperf1", "iperf8", "wrk-close", "wrk-keepalive"):
            target = "≥ 1.0 × HAProxy"
            if hap:
                target += f": {'met' if min(hap) >= 1.0 else 'not met'} (worst {min(hap):.3f})"
        elif key in ("pss", "pssconn"):
            target = "less than HAProxy"
            if hap:
                target += f": {'met' if max(hap) < 1.0 else 'not met'} (worst {max(hap):.3f})"
        else:
            target = ""
        p(f"| {label} | {'higher' if higher else 'lower'} | " + " | ".join(cells) + f" | {target} |")
    p("")

    # CPU per unit of work.
    p("### Proxy CPU per unit of work (medians)")
    p("")
    p("All the proxy's processes and threads (user + system, from /proc; socat's reaped children "
      "included). On a saturated 2-core machine, CPU the proxy does not use goes to the load "
      "generator and the backend, so this is the rate measurements' cause, without the noise.")
    p("")
    prox = [c for c in contenders if c != "direct"]
    p("| metric | " + " | ".join(NAMES[c] for c in prox) + " | " + " | ".join(f"ours/{NAMES[c]}" for c in peers) + " |")
    p("|---|" + "---:|" * (len(prox) + len(peers)))
    for key, label in [("iperf1", "iperf3 1 stream: CPU s per GiB"), ("iperf8", "iperf3 8 streams: CPU s per GiB"),
                       ("wrk-close", "`Connection: close`: CPU µs per connection"),
                       ("wrk-keepalive", "keep-alive: CPU µs per request")]:
        vals = {c: cmed(key, c) for c in prox}
        ratios = []
        for c in peers:
            if vals.get("ours") and vals.get(c):
                ratios.append(f"**{vals['ours'] / vals[c]:.2f}**")
            else:
                ratios.append("–")
        p(f"| {label} | " + " | ".join(fnum(vals[c]) for c in prox) + " | " + " | ".join(ratios) + " |")
    p("")

    # Memory detail.
    if idle:
        p("### Idle connections: detail")
        p("")
        p("| | " + " | ".join(NAMES[c] for c in prox if c in idle) + " |")
        p("|---|" + "---:|" * len([c for c in prox if c in idle]))
        cols = [c for c in prox if c in idle]
        p("| connections established / held by the backend | " + " | ".join(f"{idle[c]['est']:,} / {idle[c]['held']:,}" for c in cols) + " |")
        p("| processes (with the connections) | " + " | ".join(str(idle[c]["procs"]) for c in cols) + " |")
        p("| PSS before → with connections (MiB) | " + " | ".join(f"{idle[c]['pss0'] / 1024:.1f} → {idle[c]['pss1'] / 1024:.1f}" for c in cols) + " |")
        p("| RSS before → with connections (MiB) | " + " | ".join(f"{idle[c]['rss0'] / 1024:.1f} → {idle[c]['rss1'] / 1024:.1f}" for c in cols) + " |")
        p("| PSS after the connections closed (MiB) | " + " | ".join(f"{idle[c]['pss2'] / 1024:.1f}" for c in cols) + " |")
        p("| time to open them all (s) | " + " | ".join(f"{idle[c]['setup']:.1f}" for c in cols) + " |")
        p("")

    # Every run.
    p("### Every run")
    p("")
    p("| metric | " + " | ".join(NAMES[c] for c in contenders) + " |")
    p("|---|" + "---|" * len(contenders))
    for key, label in [("iperf1", "iperf3 1 stream (Gbit/s)"), ("iperf8", "iperf3 8 streams (Gbit/s)"),
                       ("wrk-close", "`Connection: close` (req/s)"), ("wrk-keepalive", "keep-alive (req/s)")]:
        cells = []
        for c in contenders:
            v = runs[key].get(c, [])
            s = " ".join(f"{x:.2f}" if key.startswith("iperf") else f"{x:.0f}" for x in v)
            if failed[key].get(c):
                s += f" ({failed[key][c]} failed)"
            if errors[key].get(c):
                s += f" ({errors[key][c]:,} errors)"
            cells.append(s or "–")
        p(f"| {label} | " + " | ".join(cells) + " |")
    p("")
    p(f"Total bench time: {meta.get('ELAPSED', '?')} s. Settings: {meta['SETTINGS']}. "
      f"Bastion revision: {meta['REVISION']}.")
    print("\n".join(out))


BEGIN = "<!-- tcpproxy: begin (bench/proxy-run --write) -->"
END = "<!-- tcpproxy: end -->"


def insert(report_path, path):
    report = open(report_path).read().rstrip("\n") + "\n"
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    block = f"{BEGIN}\n{report}{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + (("\n" + tail) if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--insert":
        insert(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2:
        main()
    else:
        sys.exit(__doc__)
