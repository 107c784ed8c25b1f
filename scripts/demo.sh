#!/usr/bin/env bash
# The cutover demo: builds the release binary, generates a capture of TCP
# connections (IPv4 and IPv6, both forwarding modes, an oversize packet and
# some garbage), replays it through the data path and shows what went where.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --locked --quiet
cargo run --release --locked --quiet --example gen_capture -- "$work/in.pcap"
./target/release/cutover check --config conf/demo-replay.toml
./target/release/cutover replay --config conf/demo-replay.toml \
  --input "$work/in.pcap" --output "$work/out.pcap"
echo
echo "forwarded frames, first few (destination MAC = backend's next hop):"
if command -v tcpdump >/dev/null; then
  tcpdump -nn -e -r "$work/out.pcap" 2>/dev/null | head -8
else
  echo "(install tcpdump to see them decoded)"
fi
