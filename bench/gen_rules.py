#!/usr/bin/env python3
"""Writes a large, deterministic tcprules input for bench/run.

usage: gen_rules.py OUT [LINES] [SEED]

A realistic mix of what tcprules files hold (fixed seed, so every run compiles the same
bytes): exact IPv4 addresses, dotted prefixes (`10.2.`), ranges (`1.2.3.40-50`, and now and
then a range in the second or third component, `10.2-5.`), `=host` and `=.domain` names,
`user@ip` and `user@=host` ident rules; instructions `allow`/`deny` with none, one or several
variables (`,RELAYCLIENT=""`, `,X=/y/`, ...). No rule uses the 192.0.2.0/24 documentation
block, so bench/run can look up a client that matches nothing.

Prints one line of JSON to stdout: {"lines": N, "keys": K, "bytes": B}, where K counts the
cdb records tcprules will write (each range expanded into one key per number).
"""
import json
import random
import sys

WORDS = [
    "mail", "mx", "smtp", "relay", "gw", "www", "shell", "pop", "imap", "ns", "db", "app",
    "vpn", "office", "lab", "build", "ci", "backup", "edge", "core", "dmz", "lan", "wifi",
]
TLDS = ["com", "net", "org", "de", "fr", "nl", "io", "example", "test", "co.uk", "se", "ch"]
USERS = ["root", "alice", "bob", "carol", "dave", "mallory", "postmaster", "nobody", "www-data",
         "qmaild", "uucp", "backup"]
VARIABLES = [
    ',RELAYCLIENT=""',
    ",X=/y/",
    ',RBLSMTPD="-550 blocked, see http://example.test/"',
    ',RBLSMTPD=""',
    ',CONCURRENCY="10"',
    ',QMAILQUEUE="/var/qmail/bin/qmail-scanner-queue"',
    ",DATABYTES=:1048576:",
    ',SMTPAUTH="!"',
]


def octet(rng, low=0):
    return rng.randint(low, 255)


def ipv4(rng):
    # Avoid 192.0.2.0/24 entirely (first octet 192 with second 0 -> bump it).
    a = rng.randint(1, 223)
    b = octet(rng)
    if a == 192 and b == 0:
        b = 1
    return a, b


def host(rng):
    labels = [rng.choice(WORDS) + str(rng.randint(0, 999)) for _ in range(rng.randint(1, 3))]
    return ".".join(labels + [f"d{rng.randint(0, 99999)}", rng.choice(TLDS)])


def domain(rng):
    return f"d{rng.randint(0, 99999)}.{rng.choice(TLDS)}"


def instructions(rng):
    r = rng.random()
    if r < 0.15:
        head = "deny"
    else:
        head = "allow"
    r = rng.random()
    if r < 0.5:
        n = 0
    elif r < 0.85:
        n = 1
    elif r < 0.97:
        n = 2
    else:
        n = 3
    return head + "".join(rng.sample(VARIABLES, n))


def rule(rng):
    """One rule line and the number of cdb keys it expands to."""
    r = rng.random()
    a, b = ipv4(rng)
    if r < 0.55:  # exact IPv4
        return f"{a}.{b}.{octet(rng)}.{octet(rng)}", 1
    if r < 0.65:  # prefixes: mostly /24-style, some /16 and /8
        s = rng.random()
        if s < 0.7:
            return f"{a}.{b}.{octet(rng)}.", 1
        if s < 0.95:
            return f"{a}.{b}.", 1
        return f"{a}.", 1
    if r < 0.69:  # ranges
        if rng.random() < 0.9:
            lo = rng.randint(0, 250)
            hi = min(255, lo + rng.randint(1, 19))
            return f"{a}.{b}.{octet(rng)}.{lo}-{hi}", hi - lo + 1
        lo = rng.randint(0, 250)
        hi = min(255, lo + rng.randint(1, 5))
        if rng.random() < 0.5:
            return f"{a}.{lo}-{hi}.", hi - lo + 1
        return f"{a}.{b}.{lo}-{hi}.", hi - lo + 1
    if r < 0.81:  # =host
        return "=" + host(rng), 1
    if r < 0.88:  # =.domain
        return "=." + domain(rng), 1
    if r < 0.97:  # user@ip
        return f"{rng.choice(USERS)}@{a}.{b}.{octet(rng)}.{octet(rng)}", 1
    return f"{rng.choice(USERS)}@={host(rng)}", 1  # user@=host


def main():
    out = sys.argv[1]
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 20_260_101
    rng = random.Random(seed)
    keys = 0
    size = 0
    with open(out, "w", encoding="ascii", newline="\n") as f:
        buf = []
        head = f"# bench/gen_rules.py: {lines} rules, seed {seed}\n"
        buf.append(head)
        for _ in range(lines):
            address, n = rule(rng)
            keys += n
            buf.append(f"{address}:{instructions(rng)}\n")
            if len(buf) >= 10_000:
                chunk = "".join(buf)
                size += len(chunk)
                f.write(chunk)
                buf = []
        buf.append(":allow\n")  # the usual catch-all last line
        keys += 1
        chunk = "".join(buf)
        size += len(chunk)
        f.write(chunk)
    print(json.dumps({"lines": lines + 1, "keys": keys, "bytes": size}))


if __name__ == "__main__":
    main()
