#!/usr/bin/env bash
# Forwarding benchmark in network namespaces: cutover (AF_PACKET, AF_XDP and
# DPDK drivers, one worker, l2dsr) against the kernel doing the same job
# (nftables DNAT), on the one-armed topology of scripts/netns.sh (prefix
# "bn", 3 backends).
#
#   sudo scripts/bench-netns.sh [-d SECONDS] [-f FLOWS] [-s SIZE] [-p PATHS] [-N] [-B BINDIR]
#
#   -d  seconds of traffic per path (default 10, 4..120)
#   -f  flows, distinct UDP source ports (default 256)
#   -s  frame size on the wire, FCS included (default 64)
#   -p  comma-separated paths, run in this order (default
#       af_packet,af_xdp,dpdk,kernel,kernel_rps)
#   -N  run the measured processes (LB, generator, counters) at nice -15,
#       so that other work on a shared machine takes less of their cores
#   -B  use the release binaries (cutover, cutover-pktgen) in BINDIR as they
#       are, without building (e.g. to measure another tree's build)
#
# The generator (cutover-pktgen) in bn<pid>-client sends UDP to 198.18.0.10:9999
# via the lb's MAC, pinned to the last core; the LB is pinned to core 0.
# A counter (cutover-pktgen --count-rx --dst-port 9999) in every backend
# counts what arrives per second; the table shows the mean over the
# steady-state seconds (first and last seconds dropped) of the sum over
# backends. Paths: one function per path (bench_<path>). The release
# binaries are built with --features dpdk when pkg-config finds libdpdk
# (the one binary serves all drivers); without it the dpdk path prints
# "not measured". DPDK runs its AF_PACKET PMD (net_af_packet) on the lb's
# eth0, with no hugepages. Needs root. Every command and wait is bounded;
# namespaces and processes are removed on exit.
set -euo pipefail

# A prefix of its own per run: netns.sh "up" first deletes every namespace
# of its prefix, so two runs sharing "bn" would destroy each other's.
P=bn$$
NB=3
DUR=10
FLOWS=256
SIZE=64
VIP=198.18.0.10
PORT=9999
LB_MAC=02:99:00:00:00:02
T=20 # seconds per setup command

SEL=af_packet,af_xdp,dpdk,kernel,kernel_rps
PREBUILT=
NICE=0

while getopts "d:f:s:p:B:Nh" o; do
	case $o in
	d) DUR=$OPTARG ;;
	f) FLOWS=$OPTARG ;;
	s) SIZE=$OPTARG ;;
	p) SEL=$OPTARG ;;
	B) PREBUILT=$OPTARG ;;
	N) NICE=-15 ;;
	*) sed -n '2,29p' "$0"; exit 2 ;;
	esac
done
IFS=, read -ra SELECTED <<<"$SEL"
for k in "${SELECTED[@]}"; do
	case $k in
	af_packet | af_xdp | dpdk | kernel | kernel_rps) ;;
	*) echo "-p: unknown path '$k' (af_packet, af_xdp, dpdk, kernel, kernel_rps)" >&2; exit 2 ;;
	esac
done
((${#SELECTED[@]} > 0)) || { echo "-p: no path" >&2; exit 2; }
[[ "$DUR" =~ ^[0-9]+$ ]] && ((DUR >= 4 && DUR <= 120)) || { echo "-d: 4..120" >&2; exit 2; }
[[ "$FLOWS" =~ ^[0-9]+$ ]] && ((FLOWS >= 1 && FLOWS <= 65535)) || { echo "-f: 1..65535" >&2; exit 2; }
[[ "$SIZE" =~ ^[0-9]+$ ]] || { echo "-s: a number" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "bench-netns.sh: needs root" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
if [[ -n $PREBUILT ]]; then
	BIN=$(cd "$PREBUILT" && pwd)
	[[ -x $BIN/cutover && -x $BIN/cutover-pktgen ]] || { echo "-B: no cutover, cutover-pktgen in $PREBUILT" >&2; exit 2; }
fi
NCPU=$(nproc)
LB_CPU=0
GEN_CPU=$((NCPU - 1))
WORK=$(mktemp -d /tmp/bench-netns.XXXXXX)
PIDS=()

log() { echo "bench-netns: $*" >&2; }
nsx() { local ns=$1; shift; timeout "$T" ip netns exec "$P-$ns" "$@"; }

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	"$ROOT/scripts/netns.sh" down "$P" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build and topology -----------------------------------------------------

# One build for all drivers: with the dpdk feature when libdpdk is there
# (so selecting other paths later does not rebuild without it).
FEATURES=()
HAVE_DPDK=0
if pkg-config --exists libdpdk 2>/dev/null; then FEATURES=(--features dpdk); HAVE_DPDK=1; fi
if [[ -z $PREBUILT ]]; then
	log "building release binaries ${FEATURES[*]}"
	(cd "$ROOT" && timeout 1800 cargo build --release --locked "${FEATURES[@]}" --bins)
else
	log "using the binaries in $BIN as they are"
fi
command -v nft >/dev/null || { echo "bench-netns.sh: nft missing (scripts/install-deps.sh installs nftables)" >&2; exit 1; }

log "building topology $P with $NB backends"
"$ROOT/scripts/netns.sh" up "$P" "$NB" >/dev/null
for i in $(seq 1 "$NB"); do
	# No listener on port 9999: do not spend backend CPU on ICMP port
	# unreachables (and keep them off the wire). The rate limit applies to
	# the ICMP types in icmp_ratemask; 6168 (the kernel's default) includes
	# destination unreachable (type 3). A mask of 0 would exempt every type
	# and make each backend answer every packet with an ICMP error.
	nsx "b$i" sysctl -qw net.ipv4.icmp_ratelimit=100000 >/dev/null
	nsx "b$i" sysctl -qw net.ipv4.icmp_ratemask=6168 >/dev/null
done
# A backend stands for a host of its own: what it does with a counted
# packet should not be charged to the LB core (a veth delivers in softirq on
# the sending core). Drop the benchmark's UDP at the backends' netdev
# ingress hook, after the counters' AF_PACKET taps saw it, before IP input
# and the ICMP port unreachable (whose route lookups run even when the ICMP
# itself is rate-limited).
for i in $(seq 1 "$NB"); do
	nsx "b$i" nft -f - <<EOF || log "b$i: no ingress drop; backends answer with ICMP (rate-limited)"
table netdev bench {
	chain in {
		type filter hook ingress device eth0 priority 0;
		udp dport $PORT drop
	}
}
EOF
done
# The switch is a plain L2 switch: when br_netfilter is loaded (by anyone
# on the host), bridged frames would also run through the switch
# namespace's iptables hooks, a per-packet cost charged to whichever core
# feeds the bridge (the LB core for cutover's transmit).
for k in iptables ip6tables arptables; do
	nsx sw sysctl -qw "net.bridge.bridge-nf-call-$k=0" >/dev/null 2>&1 || true
done

# The counters are AF_PACKET sockets: they see whatever reaches a backend's
# eth0, so the bridge must not flood (it would if it had not learned the
# backends' MACs yet). A ping from each backend teaches it; checked below.
learn_macs() {
	local i
	for i in $(seq 1 "$NB"); do nsx "b$i" ping -c1 -W1 10.99.0.2 >/dev/null 2>&1 || true; done
	for i in $(seq 1 "$NB"); do
		timeout "$T" bridge -n "$P-sw" fdb show br br0 2>/dev/null |
			grep -qi "$(printf '02:99:00:00:00:%02x' $((10 + i)))" ||
			{ log "bridge has not learned backend b$i's MAC: counts may include floods"; }
	done
}

# --- one measurement ----------------------------------------------------------

# measure NAME: counters in every backend, generator in the client; leaves
# OFFERED and DELIVERED (packets/s, steady state) and the raw logs in $WORK.
measure() {
	local name=$1 i cdur=$((DUR + 3)) pids=() pid
	learn_macs
	for i in $(seq 1 "$NB"); do
		timeout $((cdur + 10)) ip netns exec "$P-b$i" nice -n "$NICE" "$BIN/cutover-pktgen" -i eth0 --count-rx \
			--dst-port "$PORT" --duration "$cdur" >"$WORK/$name.b$i" 2>&1 &
		pids+=($!)
	done
	sleep 1
	timeout $((DUR + 10)) ip netns exec "$P-client" nice -n "$NICE" taskset -c "$GEN_CPU" "$BIN/cutover-pktgen" \
		-i eth0 --dst-mac "$LB_MAC" --dst-ip "$VIP" --dst-port "$PORT" --flows "$FLOWS" \
		--size "$SIZE" --duration "$DUR" >"$WORK/$name.gen" 2>&1 || log "$name: generator failed: $(tail -2 "$WORK/$name.gen")"
	for pid in "${pids[@]}"; do wait "$pid" || log "$name: a counter failed"; done
	# Offered: generator's per-second lines minus the first and the last.
	OFFERED=$(awk '/^tx /{v[n++]=$2} END{s=0;c=0;for(i=1;i<n-1;i++){s+=v[i];c++} printf "%.0f", c?s/c:0}' "$WORK/$name.gen")
	# Delivered: per-second sums over backends. The counters start one second
	# before the generator; use counter seconds 3..DUR (1-based), i.e. skip
	# the idle second, the generator's first second and its last.
	DELIVERED=$(for i in $(seq 1 "$NB"); do awk '/^rx /{print ++n, $2}' "$WORK/$name.b$i"; done |
		awk -v lo=3 -v hi="$DUR" '$1>=lo && $1<=hi {s[$1]+=$2} END{t=0;c=0;for(k in s){t+=s[k];c++} printf "%.0f", c?t/c:0}')
	log "$name: offered $OFFERED pps, delivered $DELIVERED pps (per backend: $(for i in $(seq 1 "$NB"); do awk '/^received/{printf "%s ", $2}' "$WORK/$name.b$i"; done)packets)"
}

# --- paths ------------------------------------------------------------------

declare -A OFF DEL NOTE
PATHS=()

# cutover_config DRIVER: the config for one driver (one worker, l2dsr,
# static neighbors: no ARP on the measured path).
cutover_config() {
	local driver=$1 iface=eth0 i
	[[ $driver == dpdk ]] && iface=net_af_packet0
	cat <<EOF
[dataplane]
driver = "$driver"
interfaces = ["$iface"]
workers = 1
forwarding = "l2dsr"

[dataplane.neighbors]
$(for i in $(seq 1 "$NB"); do printf '"10.99.0.%d" = "02:99:00:00:00:%02x"\n' $((10 + i)) $((10 + i)); done)
EOF
	# No NIC, no hugepages: DPDK's AF_PACKET PMD on the lb's veth, its one
	# lcore on core LB_CPU (taskset below pins the rest of the process).
	[[ $driver == dpdk ]] && cat <<EOF

[dataplane.dpdk]
eal_args = ["--no-huge", "-m", "512", "--no-pci", "--no-shconf", "-l", "$LB_CPU", "-d", "$DPDK_PMDS", "--vdev=net_af_packet0,iface=eth0"]
EOF
	cat <<EOF

[dns]
listen = []

[metrics]
listen = "off"

[[vip_pool]]
name = "vips"
prefixes = ["198.18.0.0/24"]

[[service]]
name = "bench"
pool = "vips"
ports = ["udp/$PORT", "tcp/80"]
families = ["ipv4"]
vips = ["$VIP"]
backends = [$(for i in $(seq 1 "$NB"); do printf '"10.99.0.%d"%s' $((10 + i)) "$([[ $i -lt $NB ]] && echo ', ')"; done)]
EOF
}

# bench_cutover DRIVER: cutover run with DRIVER in the lb namespace, pinned to
# core LB_CPU; fills OFF/DEL/NOTE[DRIVER].
bench_cutover() {
	local driver=$1 cfg=$WORK/cutover-$1.toml out=$WORK/cutover-$1.out pid
	cutover_config "$driver" >"$cfg"
	timeout $((DUR + 120)) ip netns exec "$P-lb" nice -n "$NICE" taskset -c "$LB_CPU" "$BIN/cutover" run --config "$cfg" \
		>"$out" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	sleep 3
	kill -0 "$pid" 2>/dev/null || { log "cutover ($driver) exited: $(tail -5 "$out")"; NOTE[$driver]="cutover $driver"; return 1; }
	measure "$driver"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	OFF[$driver]=$OFFERED DEL[$driver]=$DELIVERED
	NOTE[$driver]="cutover $driver (1 worker, core $LB_CPU)"
	[[ $driver == dpdk ]] && NOTE[$driver]+=", net_af_packet" || true
}

bench_af_packet() { bench_cutover af_packet; }

# AF_XDP on veth: no zero-copy (veth has none), the XDP program native if
# the kernel's veth takes it, else generic; the log line says which.
bench_af_xdp() {
	bench_cutover af_xdp || return 1
	local mode
	mode=$(grep -o 'zero_copy[=":  ]*[a-z]*\|native_xdp[=":  ]*[a-z]*' "$WORK/cutover-af_xdp.out" | sort -u | tr -d '" ' | tr '\n' ' ' || true)
	[[ -n $mode ]] && log "af_xdp: $mode"
	[[ $mode == *native_xdp=true* ]] && NOTE[af_xdp]+=", native XDP" || true
	[[ $mode == *native_xdp=false* ]] && NOTE[af_xdp]+=", generic XDP" || true
	[[ $mode == *zero_copy=false* ]] && NOTE[af_xdp]+=", copy" || true
}

# DPDK: needs the binary built with --features dpdk and the AF_PACKET PMD.
DPDK_PMDS=/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0
bench_dpdk() {
	if ((!HAVE_DPDK)); then
		log "dpdk: libdpdk not found by pkg-config, binary built without --features dpdk"
		NOTE[dpdk]="cutover dpdk" OFF[dpdk]="" DEL[dpdk]=""
		return 0
	fi
	bench_cutover dpdk
}

kernel_setup() {
	nsx lb sysctl -qw net.ipv4.ip_forward=1
	for k in all default eth0; do
		nsx lb sysctl -qw "net.ipv4.conf.$k.send_redirects=0"
		nsx lb sysctl -qw "net.ipv4.conf.$k.rp_filter=0"
	done
	nsx lb nft -f - <<EOF
flush ruleset
table ip lb {
	chain pre {
		type nat hook prerouting priority -100;
		ip daddr $VIP udp dport $PORT dnat to numgen inc mod $NB map { $(for i in $(seq 1 "$NB"); do printf '%d : 10.99.0.%d%s' $((i - 1)) $((10 + i)) "$([[ $i -lt $NB ]] && echo ', ')"; done) }
	}
}
EOF
	# The lb must know the backends' MACs before the flood starts.
	for i in $(seq 1 "$NB"); do nsx lb ping -c1 -W1 "10.99.0.$((10 + i))" >/dev/null 2>&1 || true; done
}

kernel_teardown() {
	nsx lb nft flush ruleset || true
	nsx lb sysctl -qw net.ipv4.ip_forward=0 || true
	nsx lb conntrack -F >/dev/null 2>&1 || true
}

# veth has no NIC queue: the receive side of a veth runs in softirq on the
# core that sent the frame, so without RPS the lb's kernel forwarding runs
# on the generator's core.
bench_kernel_nft() {
	kernel_setup
	measure kernel
	kernel_teardown
	OFF[kernel]=$OFFERED DEL[kernel]=$DELIVERED
	NOTE[kernel]="kernel nftables DNAT (softirq on gen core)"
}

# Same, with RPS on the lb's eth0 steering its receive processing (and so
# the forwarding) to core LB_CPU: the closest to "one LB core" veth allows.
bench_kernel_nft_rps() {
	local f=/sys/class/net/eth0/queues/rx-0/rps_cpus
	kernel_setup
	nsx lb sh -c "echo $(printf '%x' $((1 << LB_CPU))) > $f" ||
		{ log "cannot set RPS in $P-lb"; kernel_teardown; return 1; }
	measure kernel_rps
	nsx lb sh -c "echo 0 > $f" || true
	kernel_teardown
	OFF[kernel_rps]=$OFFERED DEL[kernel_rps]=$DELIVERED
	NOTE[kernel_rps]="kernel nftables DNAT (RPS lb eth0 -> core $LB_CPU)"
}

bench_kernel() { bench_kernel_nft; }
bench_kernel_rps() { bench_kernel_nft_rps; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for key in "${SELECTED[@]}"; do
	log "path $key (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	if "bench_$key"; then PATHS+=("$key"); else NOTE[$key]="${NOTE[$key]:-$key}"; OFF[$key]="" DEL[$key]="failed"; PATHS+=("$key"); fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- table ------------------------------------------------------------------

# ratio KEY REF: DEL[KEY]/DEL[REF], or "-" when either is missing.
ratio() {
	local a=${DEL[$1]:-} b=${DEL[$2]:-}
	if [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && ((b > 0)); then
		awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a/b}'
	else
		echo -
	fi
}

echo
echo "cutover bench-netns: $(date -u +%FT%TZ), $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "${SIZE}-byte UDP, $FLOWS flows, ${DUR} s per path, $NB backends; generator on core $GEN_CPU; nice $NICE; load average $LOAD_START at start, $LOAD_END at end"
printf '%-54s %14s %14s %10s %10s\n' PATH "OFFERED pps" "DELIVERED pps" "/kernel" "/kernel_rps"
for key in "${PATHS[@]}"; do
	if [[ -z "${DEL[$key]}" ]]; then
		printf '%-54s %s\n' "${NOTE[$key]}" "not measured (driver not built)"
	elif [[ "${DEL[$key]}" == failed ]]; then
		printf '%-54s %s\n' "${NOTE[$key]}" "failed (see log above)"
	else
		printf '%-54s %14s %14s %10s %10s\n' "${NOTE[$key]}" "${OFF[$key]}" "${DEL[$key]}" \
			"$(ratio "$key" kernel)" "$(ratio "$key" kernel_rps)"
	fi
done
