#!/usr/bin/env bash
# Queries per second of the embedded authoritative DNS server on one core,
# and of BIND 9 serving the same zone on the same core, in the same run
# (issue 5, "Speed"). Loopback only; every step is bounded by a timeout;
# everything started here is stopped on exit.
#
#   scripts/bench-dns.sh            # defaults below
#   DURATION=30 SERVICES=10000 scripts/bench-dns.sh
#
# Steps:
#   1. installs dnsperf, bind9 and bind9-dnsutils with apt-get if missing;
#   2. builds cutover-dns-bench-server (release);
#   3. writes a dnsperf query file: QUERIES names, A and AAAA of
#      svcK.ZONE mixed, NX_PERCENT % of names that do not exist;
#   4. starts cutover-dns-bench-server pinned to SERVER_CPU on
#      127.0.0.1:PORT_CUTOVER (one thread, a current-thread tokio runtime,
#      the same `cutover::dns::spawn` `cutover run` uses), checks a few
#      answers with dig, and runs dnsperf pinned to CLIENT_CPU;
#   5. writes a zone file with the same records (same TTL, SOA, NS and
#      ns.ZONE A 127.0.0.1) and starts BIND 9 pinned to SERVER_CPU with
#      one worker (`named -g -n 1 -U 1`) on 127.0.0.1:PORT_BIND, checks
#      that it answers as cutover does, and runs the same dnsperf;
#   6. prints a table: server, queries/s, average latency, lost, and the
#      ratio cutover / BIND.
#
# BIND is set to `minimal-responses yes` because cutover puts no NS in the
# authority section of positive answers: both then send the same records.
set -euo pipefail

SERVICES=${SERVICES:-1000}
QUERIES=${QUERIES:-1000}          # lines in the dnsperf query file
NX_PERCENT=${NX_PERCENT:-10}      # share of NXDOMAIN names
DURATION=${DURATION:-10}          # seconds per dnsperf run
CLIENTS=${CLIENTS:-4}             # dnsperf -c
MAX_QPS=${MAX_QPS:-1000000}       # dnsperf -Q: far above what one core does
OUTSTANDING=${OUTSTANDING:-100}   # dnsperf -q
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT_CUTOVER=${PORT_CUTOVER:-5301}
PORT_BIND=${PORT_BIND:-5302}
ZONE=svc.example.
TTL=5

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release/cutover-dns-bench-server"
T=30 # seconds for small bounded steps

die() { echo "bench-dns.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

for v in SERVICES QUERIES NX_PERCENT DURATION CLIENTS MAX_QPS OUTSTANDING SERVER_CPU CLIENT_CPU PORT_CUTOVER PORT_BIND; do
	[[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
((SERVICES >= 1 && SERVICES <= 65536)) || die "SERVICES: 1..65536"
((NX_PERCENT <= 100)) || die "NX_PERCENT: 0..100"
((DURATION >= 1)) || die "DURATION: at least 1"

WORK=$(mktemp -d /tmp/bench-dns.XXXXXX)
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process started here and forgets it.
stop_pid() { # PID
	kill -TERM "$1" 2>/dev/null || true
	timeout 10 tail --pid="$1" -f /dev/null 2>/dev/null || kill -KILL "$1" 2>/dev/null || true
	local keep=() p
	for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# --- 1. tools ---------------------------------------------------------
need=()
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v named >/dev/null 2>&1 || [[ -x /usr/sbin/named ]] || need+=(bind9)
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
	[[ $(id -u) -eq 0 ]] || die "missing ${need[*]}; run as root or install them"
	log "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -o DPkg::Lock::Timeout=120 install -y \
		--no-install-recommends "${need[@]}" >"$WORK/apt.log" 2>&1 ||
		{ tail -20 "$WORK/apt.log" >&2; die "apt-get install failed"; }
fi
NAMED=$(command -v named || echo /usr/sbin/named)
NCPU=$(nproc)
((SERVER_CPU < NCPU && CLIENT_CPU < NCPU)) || die "need CPUs $SERVER_CPU and $CLIENT_CPU; nproc is $NCPU"

# --- 2. build ---------------------------------------------------------
log "building cutover-dns-bench-server (release)"
(cd "$ROOT" && timeout 1800 cargo build --release --quiet --bin cutover-dns-bench-server) ||
	die "cargo build failed"

# --- 3. query file ----------------------------------------------------
# Deterministic: the same names every run.
awk -v n="$QUERIES" -v s="$SERVICES" -v nx="$NX_PERCENT" -v zone="$ZONE" 'BEGIN {
	srand(5);
	for (i = 0; i < n; i++) {
		t = (rand() < 0.5) ? "A" : "AAAA";
		if (rand() * 100 < nx) printf "nx%d.%s %s\n", i, zone, t;
		else printf "svc%d.%s %s\n", int(rand() * s), zone, t;
	}
}' >"$WORK/queries"

# --- 4/5. servers -----------------------------------------------------
# Waits until SERVER:PORT answers the SOA of the zone.
wait_ready() { # PORT NAME
	local i
	for ((i = 0; i < 100; i++)); do
		if timeout 3 dig +time=1 +tries=1 +short -p "$1" @127.0.0.1 "$ZONE" SOA 2>/dev/null | grep -q .; then
			return 0
		fi
		sleep 0.1
	done
	die "$2 does not answer on 127.0.0.1:$1"
}

# The answers (sorted records without TTL variance) for a few names.
probe() { # PORT
	local q
	for q in "svc0.$ZONE A" "svc0.$ZONE AAAA" "svc$((SERVICES - 1)).$ZONE AAAA" \
		"nx0.$ZONE A" "$ZONE NS" "ns.$ZONE A"; do
		# shellcheck disable=SC2086 # name and type are two words
		timeout 5 dig +time=2 +tries=1 +norec +noall +comments +answer -p "$1" @127.0.0.1 $q |
			awk '/status:/ { sub(/,.*/, "", $6); print "status", $6 } /^[^;]/ && NF >= 5 { print $1, $2, $4, $5 }'
	done
}

run_dnsperf() { # PORT OUT
	timeout $((DURATION + 30)) taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$1" \
		-d "$WORK/queries" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -Q "$MAX_QPS" >"$2" 2>&1 ||
		{ cat "$2" >&2; die "dnsperf failed on port $1"; }
}

log "cutover: $SERVICES services on 127.0.0.1:$PORT_CUTOVER, CPU $SERVER_CPU"
taskset -c "$SERVER_CPU" "$BIN" --listen "127.0.0.1:$PORT_CUTOVER" --services "$SERVICES" \
	--zone "$ZONE" --ttl "$TTL" --duration $((DURATION + 600)) >"$WORK/cutover.log" 2>&1 &
CUTOVER_PID=$!
PIDS+=("$CUTOVER_PID")
wait_ready "$PORT_CUTOVER" cutover
probe "$PORT_CUTOVER" >"$WORK/probe.cutover"
log "dnsperf against cutover: ${DURATION}s, -c $CLIENTS, CPU $CLIENT_CPU"
run_dnsperf "$PORT_CUTOVER" "$WORK/dnsperf.cutover"
stop_pid "$CUTOVER_PID"
grep '^responses' "$WORK/cutover.log" >&2 || true

# The zone file: what cutover serves, record for record.
{
	echo "\$TTL $TTL"
	echo "@ IN SOA ns.$ZONE hostmaster.$ZONE 1 3600 600 86400 $TTL"
	echo "@ IN NS ns.$ZONE"
	echo "ns IN A 127.0.0.1"
	awk -v s="$SERVICES" 'BEGIN {
		for (i = 0; i < s; i++) {
			# testkit::vip_v4: 198.18.0.0 + i (i < 65536 here)
			printf "svc%d IN A 198.18.%d.%d\n", i, int(i / 256), i % 256;
			hi = int(i / 65536); lo = i % 65536;
			if (hi) printf "svc%d IN AAAA 2001:db8:100::%x:%x\n", i, hi, lo;
			else printf "svc%d IN AAAA 2001:db8:100::%x\n", i, lo;
		}
	}'
} >"$WORK/zone.db"
cat >"$WORK/named.conf" <<EOF
options {
	directory "$WORK";
	pid-file "$WORK/named.pid";
	session-keyfile "$WORK/session.key";
	managed-keys-directory "$WORK";
	listen-on port $PORT_BIND { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	minimal-responses yes;
	notify no;
	querylog no;
	zone-statistics no;
};
controls { };
logging { category default { default_stderr; }; };
zone "$ZONE" { type primary; file "$WORK/zone.db"; };
EOF
timeout "$T" named-checkconf "$WORK/named.conf" >&2 || die "named-checkconf failed"

log "BIND $("$NAMED" -v | awk '{ print $2 }'): same zone on 127.0.0.1:$PORT_BIND, CPU $SERVER_CPU, -n 1 -U 1"
taskset -c "$SERVER_CPU" "$NAMED" -g -4 -n 1 -U 1 -c "$WORK/named.conf" >"$WORK/named.log" 2>&1 &
NAMED_PID=$!
PIDS+=("$NAMED_PID")
wait_ready "$PORT_BIND" BIND
probe "$PORT_BIND" >"$WORK/probe.bind"
if ! diff -u "$WORK/probe.bind" "$WORK/probe.cutover" >"$WORK/probe.diff"; then
	cat "$WORK/probe.diff" >&2
	die "BIND and cutover answer differently"
fi
log "dnsperf against BIND"
run_dnsperf "$PORT_BIND" "$WORK/dnsperf.bind"
stop_pid "$NAMED_PID"

# --- 6. table ---------------------------------------------------------
field() { # FILE PATTERN -> the number after it
	awk -v p="$2" 'index($0, p) { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { print $i; exit } }' "$1"
}
qps_c=$(field "$WORK/dnsperf.cutover" "Queries per second:")
qps_b=$(field "$WORK/dnsperf.bind" "Queries per second:")
[[ -n "$qps_c" && -n "$qps_b" ]] || die "could not read dnsperf output"

echo
echo "$(date -u +%Y-%m-%dT%H:%MZ)  nproc $NCPU  $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "services $SERVICES, queries file $QUERIES names (${NX_PERCENT}% NXDOMAIN), dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING -Q $MAX_QPS"
echo "server CPU $SERVER_CPU, dnsperf CPU $CLIENT_CPU"
printf '%-10s %12s %14s %10s %12s\n' server "queries/s" "avg lat (ms)" lost "completed"
for s in cutover bind; do
	f="$WORK/dnsperf.$s"
	lat=$(field "$f" "Average Latency (s):")
	printf '%-10s %12.0f %14.3f %10s %12s\n' "$s" "$(field "$f" "Queries per second:")" \
		"$(awk -v l="$lat" 'BEGIN { print l * 1000 }')" "$(field "$f" "Queries lost:")" \
		"$(field "$f" "Queries completed:")"
done
awk -v c="$qps_c" -v b="$qps_b" 'BEGIN { printf "ratio cutover/BIND: %.2f\n", c / b }'
