#!/usr/bin/env bash
# Counts what one packet costs the pipeline under valgrind: instructions
# (callgrind) and, with --cache, simulated first- and last-level cache read
# misses (cachegrind). Repeatable where wall time is not: this machine has
# no hardware PMU and its timings vary by 10 % from one run to the next.
#
#   scripts/profile-pipeline.sh                          # 1 000 flows, 10 services
#   scripts/profile-pipeline.sh --flows 1 --services 10000
#   scripts/profile-pipeline.sh --cache                  # misses too (slower)
#   scripts/profile-pipeline.sh --baseline               # the MAC-swap baseline
#
# 10 000 services with --cache take about 7 minutes (most of it building
# 10 000 Maglev tables of 65 537 entries under callgrind; MAGLEV=251 in
# the environment shortens that, and changes the count slightly).
# Method (docs/performance.md, "Callgrind instructions per packet"): run
# examples/profile_pipeline with 0 bursts and with N bursts of 32 frames;
# the difference divided by 32 N packets is the cost per packet, with the
# setup (snapshot, Maglev tables, flow table) cancelled out. Instructions
# use N = 20 000; cache misses N = 5 000 with a 32 KiB 8-way first level
# and a 1 MiB 16-way last level (one core's L1d and L2 on the machines this
# was tuned on), and Maglev tables of 251 entries (MAGLEV) so that the
# setup of 10 000 services stays short under the simulator.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FLOWS=1000
SERVICES=10
CACHE=0
BASELINE=""

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --flows) FLOWS=${2:?--flows needs a number}; shift 2 ;;
        --services) SERVICES=${2:?--services needs a number}; shift 2 ;;
        --cache) CACHE=1; shift ;;
        --baseline) BASELINE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "profile-pipeline: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$FLOWS" "$SERVICES"; do
    [[ $n =~ ^[0-9]+$ && $n -gt 0 ]] || { echo "profile-pipeline: not a positive number: $n" >&2; exit 2; }
done
command -v valgrind >/dev/null || {
    echo "profile-pipeline: valgrind is needed (apt-get install valgrind)" >&2
    exit 2
}

cargo build --quiet --release --example profile_pipeline
BIN=target/release/examples/profile_pipeline
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# The example runs the baseline when BASELINE is set at all, even empty.
if [[ -n $BASELINE ]]; then export BASELINE; else unset BASELINE; fi

# Instructions of one run of BIN with $1 bursts.
instructions() {
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$1" \
        "$BIN" "$FLOWS" "$SERVICES" "$1" 2>&1 |
        awk '/Collected/ { print $4 }'
}

# "D1 LL" read misses of one run of BIN with $1 bursts.
misses() {
    MAGLEV=${MAGLEV:-251} valgrind --tool=cachegrind --cache-sim=yes \
        --D1=32768,8,64 --LL=1048576,16,64 --cachegrind-out-file="$TMP/cgc.$1" \
        "$BIN" "$FLOWS" "$SERVICES" "$1" 2>&1 |
        awk '/D1  misses:|LL misses:/ {
                 for (i = 1; i < NF; i++) if ($(i + 1) == "rd") { gsub(/[(,]/, "", $i); printf "%s ", $i }
             }'
}

per_packet() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.2f", (b - a) / n }'; }

what=${BASELINE:+baseline (MAC swap)}
echo "${what:-pipeline (ipip)}: $FLOWS flows, $SERVICES services"
i0=$(instructions 0)
iN=$(instructions 20000)
[[ -n $i0 && -n $iN ]] || { echo "profile-pipeline: callgrind printed no count" >&2; exit 1; }
echo "instructions per packet: $(per_packet "$i0" "$iN" 640000)"
if ((CACHE)); then
    read -r d0 l0 <<<"$(misses 0)"
    read -r dN lN <<<"$(misses 5000)"
    [[ -n ${l0:-} && -n ${lN:-} ]] || { echo "profile-pipeline: cachegrind printed no misses" >&2; exit 1; }
    echo "first-level read misses per packet: $(per_packet "$d0" "$dN" 160000)"
    echo "last-level read misses per packet: $(per_packet "$l0" "$lN" 160000)"
fi
