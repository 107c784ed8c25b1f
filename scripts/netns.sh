#!/usr/bin/env bash
# One-armed L4 load-balancer topology in network namespaces, for demos and
# benchmarks; tests/common/netns.rs builds the same one from Rust.
#
#   netns.sh up PREFIX N     client, lb and N backends on one bridge
#   netns.sh down PREFIX     delete every namespace of PREFIX
#   netns.sh info PREFIX N   print namespace, interface, MAC and addresses
#
#                      PREFIX-sw: bridge br0
#        +--------------+---------+------+--------------+
#  PREFIX-client     PREFIX-lb       PREFIX-b1 ...   PREFIX-bN
#  10.99.0.1/24      10.99.0.2/24    10.99.0.11/24 ...
#  fd99::1/64        fd99::2/64      fd99::11/64 ...
#  route VIPs via lb                 VIPs local on lo (direct server return)
#
# Every node's interface is eth0, MAC 02:99:00:00:00:XX (XX = host number
# in hex: 01 client, 02 lb, 0b.. backends). VIP prefixes: 198.18.0.0/24 and
# fd98::/64. Backends: arp_ignore=1, arp_announce=2, rp_filter=0,
# ip_nonlocal_bind=1. Checksum/segmentation offloads are off on every eth0
# (ethtool if installed, else python3 ioctls): over veth a locally sent
# packet otherwise carries a partial checksum an AF_PACKET data plane would
# forward as is. Needs root. Every command is bounded by a timeout.
set -euo pipefail

T=20 # seconds per command

die() { echo "netns.sh: $*" >&2; exit 1; }
ipc() { timeout "$T" ip "$@"; }
sysctl_in() { timeout "$T" ip netns exec "$1" sysctl -qw "$2=$3" >/dev/null; }

check_prefix() {
	[[ "$1" =~ ^[A-Za-z0-9_.]{1,24}$ ]] || die "prefix '$1': 1-24 of [A-Za-z0-9_.]"
}

mac_of() { printf '02:99:00:00:00:%02x' "$1"; }

disable_offloads() { # NS IF
	if command -v ethtool >/dev/null 2>&1; then
		timeout "$T" ip netns exec "$1" ethtool -K "$2" tx off sg off tso off gso off gro off \
			>/dev/null 2>&1 || true
	elif command -v python3 >/dev/null 2>&1; then
		timeout "$T" ip netns exec "$1" python3 - "$2" <<'PY' || true
import ctypes, fcntl, socket, struct, sys
name = sys.argv[1].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# ETHTOOL_STXCSUM, _SSG, _STSO, _SGSO, _SGRO with data 0 (struct ethtool_value)
for cmd in (0x17, 0x19, 0x1F, 0x24, 0x2C):
    val = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
    ifr = struct.pack("16sP", name, ctypes.addressof(val)).ljust(40, b"\0")
    try:
        fcntl.ioctl(s, 0x8946, ifr)  # SIOCETHTOOL
    except OSError:
        pass
PY
	else
		echo "netns.sh: warning: no ethtool or python3: offloads stay on in $1" >&2
	fi
}

nodes() { # PREFIX N -> "role host" lines
	echo "client 1"
	echo "lb 2"
	for i in $(seq 1 "$2"); do echo "b$i $((10 + i))"; done
}

down() {
	local p=$1 ns
	check_prefix "$p"
	for ns in $(timeout "$T" ip netns list | awk '{print $1}'); do
		if [[ "$ns" =~ ^${p//./\\.}-(sw|client|lb|b[0-9]+)$ ]]; then
			ipc netns del "$ns" || true
		fi
	done
}

up() {
	local p=$1 n=$2 role host ns sw
	check_prefix "$p"
	[[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 200)) || die "N must be 1 to 200"
	down "$p"
	trap 'echo "netns.sh: setup failed, cleaning up" >&2; down "$p"' ERR
	sw="$p-sw"
	ipc netns add "$sw"
	ipc -n "$sw" link set lo up
	ipc -n "$sw" link add br0 type bridge
	ipc -n "$sw" link set br0 up
	while read -r role host; do
		ns="$p-$role"
		ipc netns add "$ns"
		ipc link add eth0 address "$(mac_of "$host")" netns "$ns" type veth peer name "$role" netns "$sw"
		ipc -n "$sw" link set "$role" master br0 up
		ipc -n "$ns" link set lo up
		for k in all default eth0; do sysctl_in "$ns" "net.ipv6.conf.$k.accept_dad" 0; done
		ipc -n "$ns" addr add "10.99.0.$host/24" dev eth0
		ipc -n "$ns" -6 addr add "fd99::$host/64" dev eth0 nodad
		ipc -n "$ns" link set eth0 up
		disable_offloads "$ns" eth0
	done < <(nodes "$p" "$n")
	ipc -n "$p-client" route add 198.18.0.0/24 via 10.99.0.2
	ipc -n "$p-client" -6 route add fd98::/64 via fd99::2
	# The lb's kernel sees a copy of what AF_PACKET takes: without a route
	# for the VIPs, IPv6 would answer each packet with "no route".
	ipc -n "$p-lb" route add blackhole 198.18.0.0/24
	ipc -n "$p-lb" -6 route add blackhole fd98::/64
	for i in $(seq 1 "$n"); do
		ns="$p-b$i"
		ipc -n "$ns" route add local 198.18.0.0/24 dev lo
		ipc -n "$ns" -6 route add local fd98::/64 dev lo
		for kv in net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
			net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.lo.rp_filter=0 \
			net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1 \
			net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_announce=2 \
			net.ipv4.ip_nonlocal_bind=1 net.ipv6.ip_nonlocal_bind=1; do
			sysctl_in "$ns" "${kv%%=*}" "${kv#*=}"
		done
	done
	trap - ERR
	info "$p" "$n"
}

info() {
	local p=$1 n=$2 role host
	check_prefix "$p"
	printf '%-16s %-6s %-18s %-12s %s\n' NAMESPACE IF MAC IPV4 IPV6
	while read -r role host; do
		printf '%-16s %-6s %-18s %-12s %s\n' "$p-$role" eth0 "$(mac_of "$host")" \
			"10.99.0.$host" "fd99::$host"
	done < <(nodes "$p" "$n")
	echo "VIPs: 198.18.0.0/24 fd98::/64 (routed to $p-lb, local on backends)"
}

case "${1:-}" in
up) [[ $# -eq 3 ]] || die "usage: netns.sh up PREFIX N"; up "$2" "$3" ;;
down) [[ $# -eq 2 ]] || die "usage: netns.sh down PREFIX"; down "$2" ;;
info) [[ $# -eq 3 ]] || die "usage: netns.sh info PREFIX N"; info "$2" "$3" ;;
*) die "usage: netns.sh up PREFIX N | down PREFIX | info PREFIX N" ;;
esac
