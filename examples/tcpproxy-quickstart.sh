#!/usr/bin/env bash
# Builds Bastion and runs tcpproxy twice on loopback: a handler service (examples/proxy-greet
# behind --bind) and a forwarder to it (-p/-r/-o, listening on IPv6 ::1, forwarding to IPv4).
# Connects through the forwarder, shows both logs, and stops. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product tcpproxy >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do grep -q "listening on" "$1" 2>/dev/null && return; sleep 0.05; done; }
service=$(free_port)
front=$(free_port)

"$bin/tcpproxy" -D -L "file:5,$work/service.log" --bind "127.0.0.1:$service" "$PWD/examples/proxy-greet" &
pids+=($!)
"$bin/tcpproxy" -D -L "file:5,$work/front.log" -l ::1 -p "$front" -r 127.0.0.1 -o "$service" &
pids+=($!)
wait_for "$work/service.log"
wait_for "$work/front.log"

echo "== connecting to [::1]:$front"
exec 3<>"/dev/tcp/::1/$front"; cat <&3; exec 3<&-
sleep 0.3
echo "== the forwarder's log"; cat "$work/front.log"
echo "== the handler service's log"; cat "$work/service.log"
