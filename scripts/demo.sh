#!/usr/bin/env bash
# The cutover demo: real traffic through the load balancer.
#
# Builds the release binary, a one-armed topology in network namespaces
# (client, lb, 3 backends on one bridge), starts `cutover run` on AF_PACKET
# in the lb namespace with its DNS server, and real HTTP backends that
# answer with their name. The client resolves web.svc.example through
# cutover's DNS with dig for every new connection, then fetches from the
# VIP it got. A live table every second; a summary at the end. Namespaces
# are removed on exit, Ctrl-C included. Needs root; Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
P=demo
DURATION=${DURATION:-15}

./scripts/install-deps.sh >/dev/null
cargo build --release --locked --quiet --bin cutover
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$ROOT/scripts/netns.sh" down "$P" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ROOT/scripts/netns.sh" down "$P" >/dev/null 2>&1 || true
"$ROOT/scripts/netns.sh" up "$P" 3 >/dev/null
echo "topology: $P-client, $P-lb, $P-b1..b3 on one bridge; VIPs 198.18.0.0/24 routed to the lb"

# Backends: a tiny HTTP server answering with the backend's name, listening
# on every address (the VIPs are local on their loopback: direct server return).
for i in 1 2 3; do
  ip netns exec "$P-b$i" python3 -c '
import http.server, socketserver, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (name + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 80), H).serve_forever()
' "b$i" &
  pids+=($!)
done

cat > "$work/cutover.toml" <<CONF
[dataplane]
driver = "af_packet"
interfaces = ["eth0"]
workers = 1
forwarding = "l2dsr"

[dns]
listen = ["10.99.0.2:53"]
zone = "svc.example."
ttl = 5

[metrics]
listen = "127.0.0.1:9100"

[[vip_pool]]
name = "demo"
prefixes = ["198.18.0.0/24"]

[[service]]
name = "web"
pool = "demo"
ports = ["tcp/80"]
backends = ["10.99.0.11", "10.99.0.12", "10.99.0.13"]
CONF
"$ROOT/target/release/cutover" check --config "$work/cutover.toml"
ip netns exec "$P-lb" "$ROOT/target/release/cutover" run --config "$work/cutover.toml" \
  2>"$work/cutover.log" &
pids+=($!)

resolve() { ip netns exec "$P-client" dig +short +time=1 +tries=1 @10.99.0.2 web.svc.example A | head -1; }
for _ in $(seq 1 50); do
  vip=$(resolve || true)
  if [[ -n "$vip" ]] && ip netns exec "$P-client" curl -s -m 1 "http://$vip/" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
echo "web.svc.example -> ${vip:-?} (from cutover's DNS)"

metric() { # NAME LABEL-SUBSTRING
  ip netns exec "$P-lb" curl -s -m 1 http://127.0.0.1:9100/metrics 2>/dev/null |
    awk -v n="$1" -v l="$2" 'index($0, n"{")==1 && index($0, l) {print $NF; exit}'
}

declare -A per
opened=0 ok=0 failed=0
printf '\n%-5s %-14s %-9s %-10s %8s %8s %8s %10s\n' sec vip state flows b1 b2 b3 packets/s
last_pk=$(metric cutover_packets_total 'service="web"'); last_pk=${last_pk:-0}
end=$((SECONDS + DURATION))
while (( SECONDS < end )); do
  tick=$((SECONDS + 1))
  while (( SECONDS < tick )); do
    vip=$(resolve || true)
    opened=$((opened + 1))
    if name=$(ip netns exec "$P-client" curl -s -m 2 "http://$vip/"); then
      ok=$((ok + 1)); per[$name]=$(( ${per[$name]:-0} + 1 ))
    else
      failed=$((failed + 1))
    fi
  done
  pk=$(metric cutover_packets_total 'service="web"'); pk=${pk:-0}
  flows=$(metric cutover_active_flows 'service="web"'); state=active
  printf '%-5s %-14s %-9s %-10s %8s %8s %8s %10.0f\n' "$((DURATION - end + SECONDS))" "$vip" "$state" "${flows:-0}" \
    "${per[b1]:-0}" "${per[b2]:-0}" "${per[b3]:-0}" "$(echo "$pk - $last_pk" | bc 2>/dev/null || echo 0)"
  last_pk=$pk
done

echo
echo "summary: connections opened $opened, completed $ok, failed $failed"
echo "per backend: b1=${per[b1]:-0} b2=${per[b2]:-0} b3=${per[b3]:-0}"
drops=$(ip netns exec "$P-lb" curl -s -m 1 http://127.0.0.1:9100/metrics | grep '^cutover_drops_total' | awk '$NF > 0' || true)
echo "drops by reason (non-zero):"; echo "${drops:-  none}"
(( failed == 0 ))
