#!/usr/bin/env bash
# Compares the pipeline benchmark (benches/pipeline.rs) of two versions of
# the code on a machine whose speed drifts: builds each version's bench
# binary, then runs the two one after the other, round after round, pinned
# to one core, so that both see the same minutes of the host's load. One
# run of each, minutes apart, is not a comparison here: the same binary
# reads 10 to 30 % apart from one quarter of an hour to the next.
#
#   scripts/bench-compare.sh OLD NEW                # 4 rounds: 1 000 flows and the baseline
#   scripts/bench-compare.sh OLD NEW --rounds 3 --filter ''      # the whole group
#   scripts/bench-compare.sh HEAD~1 . --core 0      # "." is the working tree, uncommitted edits too
#
# OLD and NEW are anything `git rev-parse` takes, or "." for the working
# tree. Committed versions are built in temporary worktrees that share one
# target directory (removed at the end). Prints, per benchmark and version,
# every round's rate in Mpps (criterion's point estimate of the run),
# sorted, and their median. The docs' alternated tables come from this.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=4
FILTER='1000flows|baseline'
CORE=1

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
REVS=()
while (($#)); do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        --filter) FILTER=${2?--filter needs a regular expression}; shift 2 ;;
        --core) CORE=${2:?--core needs a CPU number}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "bench-compare: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) REVS+=("$1"); shift ;;
    esac
done
if ((${#REVS[@]} != 2)); then
    echo "bench-compare: give two versions, OLD and NEW" >&2
    usage >&2
    exit 2
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench-compare: --rounds must be a positive number" >&2; exit 2; }
command -v taskset >/dev/null || { echo "bench-compare: taskset (util-linux) is needed" >&2; exit 2; }

WORK=$(mktemp -d /tmp/bench-compare.XXXXXX)
WORKTREES=()
cleanup() {
    for w in "${WORKTREES[@]}"; do
        git -C "$ROOT" worktree remove --force "$w" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# build REV LABEL: the bench binary of REV, copied to $WORK/LABEL.
build() {
    local rev=$1 label=$2 dir
    if [[ $rev == . ]]; then
        dir=$ROOT
    else
        git -C "$ROOT" rev-parse --verify --quiet "$rev^{commit}" >/dev/null ||
            { echo "bench-compare: $rev is not a commit" >&2; exit 2; }
        dir=$WORK/src-$label
        git -C "$ROOT" worktree add --quiet --detach "$dir" "$rev"
        WORKTREES+=("$dir")
    fi
    echo "bench-compare: building $rev" >&2
    local exe
    exe=$(cd "$dir" && CARGO_TARGET_DIR=$WORK/target cargo bench --locked --bench pipeline \
        --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*/pipeline-[^"]*"' | tail -n 1 | cut -d'"' -f4)
    [[ -n $exe && -x $exe ]] || { echo "bench-compare: building $rev failed" >&2; exit 1; }
    cp "$exe" "$WORK/$label"
}

LABELS=("old:${REVS[0]}" "new:${REVS[1]}")
build "${REVS[0]}" old
build "${REVS[1]}" new

# Criterion prints a benchmark's name, then "time:" and "thrpt:" lines
# whose second number is the point estimate; change lines carry a %.
for ((r = 1; r <= ROUNDS; r++)); do
    echo "bench-compare: round $r of $ROUNDS" >&2
    for i in 0 1; do
        label=${LABELS[$i]%%:*}
        CRITERION_HOME=$WORK/criterion taskset -c "$CORE" "$WORK/$label" --bench "$FILTER" \
            --warm-up-time 1 --measurement-time 2 --noplot 2>&1 |
            awk -v v="${LABELS[$i]}" '
                /^[A-Za-z0-9_]+\/[^ ]+/ { name = $1 }
                /thrpt:/ && !/%/ {
                    x = $4; u = $5
                    if (u ~ /^Kelem/) x /= 1000
                    if (u ~ /^Gelem/) x *= 1000
                    printf "%s\t%s\t%.2f\n", name, v, x
                }'
    done
done >"$WORK/results"

[[ -s $WORK/results ]] || { echo "bench-compare: no benchmark matched '$FILTER'" >&2; exit 1; }
echo "Mpps per round, sorted, and the median; core $CORE, $ROUNDS rounds, filter '$FILTER'"
sort -t $'\t' -k1,1 -k2,2 -k3,3n "$WORK/results" | awk -F '\t' '
    function flush() {
        if (key == "") return
        m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        printf "%-48s %-16s median %7.2f  [%s]\n", bench, ver, m, list
    }
    { k = $1 "\t" $2
      if (k != key) { flush(); key = k; bench = $1; ver = $2; n = 0; list = "" }
      a[++n] = $3; list = list (n > 1 ? " " : "") $3 }
    END { flush() }'
