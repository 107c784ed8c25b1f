#!/usr/bin/env bash
# The cutover demo: real traffic through a cutover.
#
# Builds the release binary and a one-armed topology in network namespaces
# (client, lb, 3 backends on one bridge), starts `cutover run` on AF_PACKET
# in the lb namespace with its DNS server, and HTTP backends that answer with
# their name. The client resolves web.svc.example through cutover's DNS with
# dig for every new connection. Mid-run it keeps 20 long-lived connections
# open, rolls the service out from 2 to 3 backends, then closes them and
# waits for the old version to drain and be released. A live table every
# second; a summary at the end. Namespaces are removed on exit, Ctrl-C
# included. Needs root; Debian 12. Runs in well under 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
P=demo
MAX=${MAX:-60}      # seconds: the demo stops by then whatever happens

./scripts/install-deps.sh >/dev/null
cargo build --release --locked --quiet --bin cutover
CUTOVER=$ROOT/target/release/cutover
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

# Backends: HTTP/1.1 (keep-alive) answering with the backend's name, on every
# address (the VIPs are local on their loopback: direct server return).
for i in 1 2 3; do
  ip netns exec "$P-b$i" python3 -c '
import http.server, socketserver, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = (name + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
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
ttl = 2

[metrics]
listen = "127.0.0.1:9100"

[state]
path = "$work/state.json"

[[vip_pool]]
name = "demo"
prefixes = ["198.18.0.0/24"]

[[service]]
name = "web"
pool = "demo"
ports = ["tcp/80"]
backends = ["10.99.0.11", "10.99.0.12"]
drain_grace = "1s"
drain_quiet = "3s"
drain_timeout = "60s"
CONF
"$CUTOVER" check --config "$work/cutover.toml"
ip netns exec "$P-lb" "$CUTOVER" run --config "$work/cutover.toml" 2>"$work/cutover.log" &
pids+=($!)
lbcli() { ip netns exec "$P-lb" "$CUTOVER" "$@"; }

resolve() { ip netns exec "$P-client" dig +short +time=1 +tries=1 @10.99.0.2 web.svc.example A | head -1; }
for _ in $(seq 1 50); do
  vip=$(resolve || true)
  if [[ -n "$vip" ]] && ip netns exec "$P-client" curl -s -m 1 "http://$vip/" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
echo "web.svc.example -> ${vip:-?} (from cutover's DNS)"
echo

# Short-lived connections: resolve, then fetch, in a loop; one line per try.
(
  trap 'exit 0' TERM
  end=$((SECONDS + MAX))
  while (( SECONDS < end )); do
    v=$(resolve || true)
    if n=$(ip netns exec "$P-client" curl -s -m 2 "http://$v/"); then echo "ok $v $n"; else echo "fail $v"; fi
  done
) >"$work/short.log" 2>/dev/null &
short_pid=$!
pids+=($short_pid)

# The live table: every version of web, from the admin API and the metrics.
table() { # SECOND
  local status metrics
  status=$(lbcli status --json 2>/dev/null || echo '[]')
  metrics=$(ip netns exec "$P-lb" curl -s -m 1 http://127.0.0.1:9100/metrics 2>/dev/null || true)
  python3 - "$1" "$work/prev" <<PY "$status" "$metrics"
import json, re, sys, os
sec, prev_path, status, metrics = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
prev = json.load(open(prev_path)) if os.path.exists(prev_path) else {}
pk = {m.group(1): float(m.group(2)) for m in re.finditer(r'cutover_packets_total\{service="web",version="(\d+)"\} (\S+)', metrics)}
rows = []
for s in json.loads(status):
    for v in s["versions"]:
        vid = str(v["id"]); now = pk.get(vid, 0.0)
        rate = now - prev.get(vid, now)
        healthy = sum(1 for b in v["backends"] if b["healthy"])
        rows.append(f'{sec:>4} v{vid:<3} {",".join(v["vips"]):<14} {v["state"]:<9} {v["active_flows"]:>6} {rate:>9.0f} {healthy}/{len(v["backends"])}')
json.dump(pk, open(prev_path, "w"))
print("\n".join(rows))
PY
}
printf '%4s %-4s %-14s %-9s %6s %9s %s\n' sec ver vip state flows packets/s backends

long_pid=""
rolled=0 released=0
start=$SECONDS
while (( SECONDS - start < MAX )); do
  t=$((SECONDS - start))
  table "$t"
  if (( t >= 3 )) && [[ -z "$long_pid" ]]; then
    # 20 long-lived keep-alive connections to the VIP DNS gives now, each
    # sending a request every 0.5 s for 12 s: they must all stay on their
    # backend, across the rollout, without a single failure.
    v1=$(resolve)
    ip netns exec "$P-client" python3 - "$v1" >"$work/long.log" 2>&1 <<'PY' &
import http.client, sys, time
vip = sys.argv[1]
conns = [http.client.HTTPConnection(vip, 80, timeout=3) for _ in range(20)]
first, ok, failed, moved = {}, 0, 0, 0
end = time.time() + 12
while time.time() < end:
    for i, c in enumerate(conns):
        try:
            c.request("GET", "/"); name = c.getresponse().read().decode().strip(); ok += 1
            if first.setdefault(i, name) != name: moved += 1
        except Exception as e:
            failed += 1
    time.sleep(0.5)
for c in conns: c.close()
print(f"long-lived: 20 connections to {vip}, {ok} requests ok, {failed} failed, {moved} moved backend")
PY
    long_pid=$!
    echo "     -- 20 long-lived connections opened to $v1"
  fi
  if (( t >= 6 && rolled == 0 )); then
    rolled=1
    echo "     -- $(lbcli rollout web --backends 10.99.0.11,10.99.0.12,10.99.0.13)"
  fi
  if (( rolled )) && lbcli status --json 2>/dev/null | grep -q '"released"'; then
    released=1
    break
  fi
  sleep 1
done
[[ -n "$long_pid" ]] && wait "$long_pid" || true
kill "$short_pid" 2>/dev/null || true
wait "$short_pid" 2>/dev/null || true

opened=$(wc -l <"$work/short.log")
ok=$(grep -c '^ok' "$work/short.log" || true)
failed=$(grep -c '^fail' "$work/short.log" || true)
echo
echo "summary"
echo "  short-lived connections: opened $opened, completed $ok, failed $failed"
echo "    per backend: $(awk '$1=="ok"{n[$3]++} END{for (b in n) printf "%s=%d ", b, n[b]}' "$work/short.log")"
echo "    per VIP:     $(awk '$1=="ok"{n[$2]++} END{for (v in n) printf "%s=%d ", v, n[v]}' "$work/short.log")"
echo "  $(cat "$work/long.log")"
echo "  versions released: $(grep 'version released' "$work/cutover.log" | sed -E 's/.*version=([0-9]+).*reason="?([a-z]+).*/v\1 (\2)/' | tr '\n' ' ')"
long_failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' "$work/long.log")
(( failed == 0 && ${long_failed:-1} == 0 && released == 1 ))
