#!/usr/bin/env bash
# Builds sockd and runs it on loopback, in the foreground, with examples/sockd.conf:
#  1. curl fetches a page from a tiny web server on localhost through it, over SOCKS5 with
#     the name resolved by sockd (--socks5-hostname) and over SOCKS4a;
#  2. the same configuration frozen with make_sockdfc (and shown by dump_sockdfc) serves
#     the same way;
#  3. a request for the SMTP port is refused by the example's first line.
# Shows sockd's log, and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
for product in sockd make_sockdfc dump_sockdfc; do swift build -c release --product "$product" >/dev/null; done
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return; sleep 0.05; done; }
web=$(free_port)
socks=$(free_port)

# A web server on localhost: 127.0.0.1 and, where there is IPv6, ::1 (the port of both).
python3 - "$web" <<'PY' &
import http.server, socket, sys, threading
port = int(sys.argv[1])
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello through sockd\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class V6(http.server.HTTPServer):
    address_family = socket.AF_INET6
servers = [http.server.HTTPServer(("127.0.0.1", port), Page)]
try:
    servers.append(V6(("::1", port), Page))
except OSError:
    pass
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
PY
pids+=($!)
wait_port 127.0.0.1 "$web"

serve() {  # configuration log
    "$bin/sockd" --foreground --listen "127.0.0.1:$socks" --config "$1" --pid-file "$work/sockd.pid" \
        --log "file:3,$2" &
    pids+=($!)
    wait_port 127.0.0.1 "$socks"
}
stop() { kill "$(cat "$work/sockd.pid")"; while [ -e "$work/sockd.pid" ]; do sleep 0.05; done; }

echo "== curl --socks5-hostname 127.0.0.1:$socks http://localhost:$web/"
serve examples/sockd.conf "$work/text.log"
curl -sS --max-time 10 --socks5-hostname "127.0.0.1:$socks" "http://localhost:$web/"
echo "== curl --socks4a 127.0.0.1:$socks http://localhost:$web/"
curl -sS --max-time 10 --socks4a "127.0.0.1:$socks" "http://localhost:$web/"
echo "== curl --socks5 127.0.0.1:$socks http://127.0.0.1:25/ (the SMTP port: refused)"
if curl -sS --max-time 10 --socks5 "127.0.0.1:$socks" "http://127.0.0.1:25/" 2>&1; then exit 1; fi
stop

echo "== make_sockdfc examples/sockd.conf, then dump_sockdfc"
"$bin/make_sockdfc" examples/sockd.conf "$work/sockd.fc"
"$bin/dump_sockdfc" "$work/sockd.fc" | grep -v '^$'
echo "== curl --socks5-hostname through sockd with the frozen configuration"
serve "$work/sockd.fc" "$work/frozen.log"
curl -sS --max-time 10 --socks5-hostname "127.0.0.1:$socks" "http://localhost:$web/"
stop

sleep 0.2
for log in text frozen; do echo "== $log.log"; cat "$work/$log.log"; done
