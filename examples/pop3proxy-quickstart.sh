#!/usr/bin/env bash
# Builds Bastion and runs pop3.proxy on loopback in front of examples/tiny-pop3d, two ways:
#  1. under tcpserver, one pop3.proxy per client;
#  2. behind tcpproxy's exec handler with a configuration per interface (the manual's own
#     example, on 127.0.0.1 and 127.0.0.2): one interface lets the client pick the server
#     (USER name@server, -e), the other always goes to the tiny server.
# Retrieves a message through each with Python's poplib, shows the logs, and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product pop3.proxy >/dev/null
swift build -c release --product tcpserver >/dev/null
swift build -c release --product tcpproxy >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
chmod 777 "$work"  # tcpproxy, started as root, runs its handlers as nobody
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return; sleep 0.05; done; }
pop=$(free_port)
direct=$(free_port)
front=$(free_port)

# The POP3 server, and pop3.proxy in front of it, both under tcpserver.
"$bin/tcpserver" -q 127.0.0.1 "$pop" "$PWD/examples/tiny-pop3d" &
pids+=($!)
"$bin/tcpserver" -q 127.0.0.1 "$direct" "$bin/pop3.proxy" --log "file:5,$work/direct.log" "127.0.0.1:$pop" &
pids+=($!)

# tcpproxy with a pop3.proxy per interface.
cat > "$work/tcpproxy.conf" <<CONF
port $front
    interface 127.0.0.1
    exec $bin/pop3.proxy --log file:5,$work/selecting.log -e
    interface 127.0.0.2
    exec $bin/pop3.proxy --log file:5,$work/fixed.log 127.0.0.1:$pop
CONF
"$bin/tcpproxy" -f "$work/tcpproxy.conf" -L "file:5,$work/tcpproxy.log" --standalone -D &
pids+=($!)
wait_port 127.0.0.1 "$pop"
wait_port 127.0.0.1 "$direct"
wait_port 127.0.0.1 "$front"
wait_port 127.0.0.2 "$front"

retrieve() {  # host port user
    python3 - "$@" <<'PY'
import poplib, sys
host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
box = poplib.POP3(host, port, timeout=10)
print(box.getwelcome().decode())
box.user(user)
print(box.pass_("secret").decode())
print("stat:", box.stat())
for line in box.retr(2)[1]:
    print("  " + line.decode())
print(box.quit().decode())
PY
}
echo "== pop3.proxy under tcpserver, 127.0.0.1:$direct"
retrieve 127.0.0.1 "$direct" alice
echo "== tcpproxy's exec, 127.0.0.1:$front (the client selects the server)"
retrieve 127.0.0.1 "$front" "alice@127.0.0.1:$pop"
echo "== tcpproxy's exec, 127.0.0.2:$front (always the tiny server)"
retrieve 127.0.0.2 "$front" bob
sleep 0.3
for log in direct selecting fixed; do echo "== $log.log"; cat "$work/$log.log"; done
