#!/usr/bin/env bash
# Installs what cutover's build, tests and demo need on Debian 12.
# Idempotent; run as root (CI is root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(iproute2 iputils-ping procps pkg-config gcc libc6-dev tcpdump bind9 bind9-dnsutils python3 curl bc clang libbpf-dev nftables ethtool libdpdk-dev dpdk-dev librte-net-null23 librte-net-ring23 librte-net-af-packet23 librte-bus-vdev23 librte-mempool-ring23 libclang-dev dpkg-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
