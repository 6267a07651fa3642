#!/usr/bin/env bash
# Builds Bastion, compiles examples/rules.txt, serves examples/greet with tcpserver on
# 127.0.0.1, connects once over IPv4 and once over IPv6, and stops. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

"$bin/tcprules" "$work/rules.cdb" "$work/rules.tmp" < examples/rules.txt
echo "== tcprulescheck for 127.0.0.1 and 18.23.0.32"
TCPREMOTEIP=127.0.0.1 "$bin/tcprulescheck" "$work/rules.cdb"
TCPREMOTEIP=18.23.0.32 "$bin/tcprulescheck" "$work/rules.cdb"

echo "== tcpserver -v on port 0 (-1 prints the port it got)"
# -H -R -l 0: no DNS or ident lookups; DNSCACHEIP keeps any lookup on loopback anyway.
DNSCACHEIP=127.0.0.1 "$bin/tcpserver" -1 -v -H -R -l 0 -x "$work/rules.cdb" 0 0 examples/greet \
    > "$work/port" 2> "$work/log" &
server=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(cat "$work/port")
exec 3<>"/dev/tcp/127.0.0.1/$port"; cat <&3; exec 3<&-
exec 3<>"/dev/tcp/::1/$port"; cat <&3; exec 3<&-
sleep 0.2
echo "== tcpserver's log"
cat "$work/log"
