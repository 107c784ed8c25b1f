#!/usr/bin/env bash
# Runs every benchmark of the project and prints one table of the results,
# each with its ratio to the baseline it is measured against.
#
#   scripts/bench.sh                     # everything (root for netns)
#   scripts/bench.sh --quick             # short criterion runs, short dns/netns runs
#   scripts/bench.sh --only pipeline,dns # a subset
#   scripts/bench.sh --list              # the suites
#
# Suites:
#   pipeline  cargo bench --bench pipeline   Melem/s (packets/s) per benchmark,
#                                            median; ratio to baseline_swap_macs
#   maglev    cargo bench --bench maglev     build times (median) and per-packet
#                                            Melem/s; ratio to the group's baseline_*
#   snapshot  cargo bench --bench snapshot   only if benches/snapshot.rs exists;
#                                            ratio to the group's baseline_* if any
#   dns       scripts/bench-dns.sh           queries/s, cutover vs BIND 9
#   netns     scripts/bench-netns.sh         delivered pps, cutover vs kernel (root)
#
# Criterion results are read from the estimates.json files criterion writes
# (CRITERION_HOME is set to a fresh directory per run, so nothing stale is
# read): the median time per iteration, and for groups with a throughput,
# elements / median. "ratio" is value / baseline of the same group: for
# Melem/s above 1 is faster than the baseline, for times above 1 is slower.
#
# Every step is bounded by a timeout (BENCH_TIMEOUT seconds per suite,
# default 3600: the first cargo bench builds with LTO). Suites that cannot
# run (no root for netns, no snapshot bench) are listed as skipped with the
# reason. Exit status 1 if a suite that was run failed, else 0.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ALL=(pipeline maglev snapshot dns netns)
ONLY=""
QUICK=0
BENCH_TIMEOUT=${BENCH_TIMEOUT:-3600}

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
	case $1 in
	--quick) QUICK=1 ;;
	--only) [[ $# -ge 2 ]] || { echo "bench.sh: --only needs a list" >&2; exit 2; }; ONLY=$2; shift ;;
	--only=*) ONLY=${1#--only=} ;;
	--list) printf '%s\n' "${ALL[@]}"; exit 0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[[ "$BENCH_TIMEOUT" =~ ^[0-9]+$ ]] || { echo "bench.sh: BENCH_TIMEOUT must be seconds" >&2; exit 2; }

SUITES=()
if [[ -n "$ONLY" ]]; then
	IFS=, read -r -a req <<<"$ONLY"
	for s in "${req[@]}"; do
		[[ " ${ALL[*]} " == *" $s "* ]] || { echo "bench.sh: unknown suite '$s' (have: ${ALL[*]})" >&2; exit 2; }
		SUITES+=("$s")
	done
else
	SUITES=("${ALL[@]}")
fi

WORK=$(mktemp -d /tmp/cutover-bench.XXXXXX)
ROWS=$WORK/rows.tsv # suite, benchmark, value, unit, baseline, ratio
: >"$ROWS"
SKIPPED=()
FAILED=()
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
log() { echo "bench.sh: $*" >&2; }

CRIT_ARGS=()
((QUICK)) && CRIT_ARGS=(--warm-up-time 1 --measurement-time 2)

# Prints TSV rows from the criterion output directory $1 for suite $2.
criterion_rows() { # DIR SUITE
	python3 - "$1" "$2" <<'EOF'
import json, os, sys
root, suite = sys.argv[1], sys.argv[2]
groups = {}
for dirpath, dirs, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        b = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        e = json.load(f)
    ns = e["median"]["point_estimate"]
    thr = b.get("throughput") or {}
    elems = thr.get("Elements")
    name = b["function_id"] or ""
    if b.get("value_str"):
        name = f"{name}/{b['value_str']}" if name else b["value_str"]
    groups.setdefault(b["group_id"], []).append((name, ns, elems))
def fmt_time(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            return ns / div, unit
    return ns, "ns"
for group in sorted(groups):
    rows = groups[group]
    base = next((r for r in rows if r[0].startswith("baseline")), None)
    # the baseline first, then the others in name order
    rows.sort(key=lambda r: (not r[0].startswith("baseline"), r[0]))
    for name, ns, elems in rows:
        if elems:
            value, unit = elems / ns * 1e3, "Melem/s"
            ratio = (value / (base[2] / base[1] * 1e3)) if base and base[2] else None
        else:
            value, unit = fmt_time(ns)
            ratio = ns / base[1] if base else None
        bname = base[0] if base else "-"
        r = "-" if ratio is None or name == bname else f"{ratio:.3f}"
        print(f"{suite}\t{group}/{name}\t{value:.3f}\t{unit}\t{bname}\t{r}")
EOF
}

run_criterion() { # SUITE (bench name)
	local suite=$1 dir=$WORK/criterion-$1 log=$WORK/$1.log
	if [[ ! -f benches/$suite.rs ]]; then
		SKIPPED+=("$suite: benches/$suite.rs does not exist")
		return 0
	fi
	if ! grep -q "name = \"$suite\"" Cargo.toml; then
		SKIPPED+=("$suite: no [[bench]] name = \"$suite\" in Cargo.toml")
		return 0
	fi
	log "cargo bench --bench $suite ${CRIT_ARGS[*]} (timeout ${BENCH_TIMEOUT}s; log $log)"
	mkdir -p "$dir"
	if ! CRITERION_HOME=$dir timeout -k 10 "$BENCH_TIMEOUT" \
		cargo bench --locked --bench "$suite" -- "${CRIT_ARGS[@]}" >"$log" 2>&1; then
		tail -30 "$log" >&2
		FAILED+=("$suite: cargo bench failed or timed out (rc above)")
		return 0
	fi
	local rows
	rows=$(criterion_rows "$dir" "$suite")
	if [[ -z "$rows" ]]; then
		FAILED+=("$suite: no criterion results found in $dir")
		return 0
	fi
	echo "$rows" >>"$ROWS"
}

run_dns() {
	local log=$WORK/dns.log env=()
	((QUICK)) && env=(DURATION=3)
	log "scripts/bench-dns.sh ${env[*]} (timeout ${BENCH_TIMEOUT}s; log $log)"
	if ! env "${env[@]}" timeout -k 10 "$BENCH_TIMEOUT" scripts/bench-dns.sh >"$log" 2>&1; then
		tail -30 "$log" >&2
		FAILED+=("dns: scripts/bench-dns.sh failed or timed out")
		return 0
	fi
	# Table lines: "cutover   27537   3.491   0   275821", "bind ...", "ratio cutover/BIND: 1.11"
	awk '
		$1 == "server" && $2 == "queries/s" { t = 1; next }
		t && ($1 == "cutover" || $1 == "bind") && $2 ~ /^[0-9.]+$/ { q[$1] = $2; lat[$1] = $3 }
		END {
			if (!("cutover" in q) || !("bind" in q) || q["bind"] == 0) exit 1
			printf "dns\tbind9 (1 core, named -n 1)\t%s\tqueries/s\t-\t-\n", q["bind"]
			printf "dns\tcutover authoritative (1 core)\t%s\tqueries/s\tbind9\t%.3f\n", q["cutover"], q["cutover"] / q["bind"]
		}' "$log" >>"$ROWS" || FAILED+=("dns: could not parse the table of scripts/bench-dns.sh")
}

run_netns() {
	local log=$WORK/netns.log args=()
	if [[ $(id -u) -ne 0 ]]; then
		SKIPPED+=("netns: scripts/bench-netns.sh needs root (network namespaces)")
		return 0
	fi
	((QUICK)) && args=(-d 4)
	log "scripts/bench-netns.sh ${args[*]} (timeout ${BENCH_TIMEOUT}s; log $log)"
	if ! timeout -k 10 "$BENCH_TIMEOUT" scripts/bench-netns.sh "${args[@]}" >"$log" 2>&1; then
		tail -30 "$log" >&2
		FAILED+=("netns: scripts/bench-netns.sh failed or timed out")
		return 0
	fi
	# Table: "PATH  OFFERED pps  DELIVERED pps  cutover/this"; a row is a
	# free-text path then three fields (offered, delivered, ratio or "-"),
	# or the path then "not measured (...)" / "failed (...)".
	awk '
		/^PATH +OFFERED pps/ { t = 1; next }
		!t || NF < 2 { next }
		NF >= 4 && $(NF-2) ~ /^[0-9.]+$/ && $(NF-1) ~ /^[0-9.]+$/ {
			path = $1; for (i = 2; i <= NF - 3; i++) path = path " " $i
			name[++np] = path; del[np] = $(NF-1)
			if (path ~ /^cutover/ && cut == "") cut = $(NF-1)
			next
		}
		match($0, /(not measured|failed).*/) {
			path = substr($0, 1, RSTART - 1); sub(/ +$/, "", path)
			skip[++ns] = path; why[ns] = substr($0, RSTART)
		}
		END {
			if (np == 0) exit 1
			for (i = 1; i <= np; i++) {
				base = "-"; r = "-"
				if (name[i] !~ /^cutover/ && del[i] > 0 && cut != "") { r = sprintf("%.3f", cut / del[i]); base = "cutover/this" }
				printf "netns\t%s\t%s\tpps delivered\t%s\t%s\n", name[i], del[i], base, r
			}
			for (i = 1; i <= ns; i++) printf "netns\t%s\t-\t%s\t-\t-\n", skip[i], why[i]
		}' "$log" >>"$ROWS" || FAILED+=("netns: could not parse the table of scripts/bench-netns.sh")
}

START=$(date +%s)
for s in "${SUITES[@]}"; do
	case $s in
	pipeline | maglev | snapshot) run_criterion "$s" ;;
	dns) run_dns ;;
	netns) run_netns ;;
	esac
done

echo
echo "cutover benchmarks: $(date -u +%FT%TZ), $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), load $(cut -d' ' -f1-3 /proc/loadavg)$( ((QUICK)) && echo ', --quick')"
echo "ratio = value / baseline of the same group (netns: cutover / this path, as bench-netns.sh prints it)"
awk -F'\t' '
	BEGIN { fmt = "%-9s %-58s %14s %-14s %-22s %8s\n"; printf fmt, "SUITE", "BENCHMARK", "VALUE", "UNIT", "BASELINE", "RATIO" }
	{ printf fmt, $1, $2, $3, $4, $5, $6 }' "$ROWS"
for s in "${SKIPPED[@]}"; do echo "skipped  $s"; done
for s in "${FAILED[@]}"; do echo "FAILED   $s"; done
echo "($(( $(date +%s) - START )) s)"
((${#FAILED[@]} == 0))
