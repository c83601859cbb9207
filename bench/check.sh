#!/bin/bash
# The instruction-count guard: instructions per operation of one host
# build, counted by callgrind (bench/callgrind/lib.sh), against the
# baseline committed in bench/baseline.tsv. Fails when a row costs more
# than 3% over its baseline (or its own tolerance, a third column there).
# Counts are exact for a given binary, guest and input, so unlike a timed
# run this cannot be mistaken for noise.
#
#   bench/check.sh HOST [GUESTS_DIR]          # compare (make bench-check)
#   bench/check.sh --update HOST [GUESTS_DIR] # write the baseline
#
# Moving the baseline is its own commit, whose message says why. Takes
# about 10 minutes; needs valgrind and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/callgrind/lib.sh

UPDATE=false
if [ "${1:-}" = "--update" ]; then
    UPDATE=true
    shift
fi
if [ $# -lt 1 ]; then
    echo "usage: $0 [--update] HOST [GUESTS_DIR]" >&2
    exit 2
fi
HOST=$1
GUESTS=${2:-target/wasm32-wasip2/release}
BASELINE=bench/baseline.tsv
# A row may carry its own tolerance in percent (a third column of the
# baseline); the rest get 3%.
DEFAULT_TOLERANCE=3
REPS=${REPS:-5}
require_valgrind
if $UPDATE && [ -n "${ONLY:-}" ]; then
    echo "$0: --update writes every row; run it without ONLY" >&2
    exit 2
fi
select_rows
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start_upstream "$WORK"
warm_cache "$HOST" "$WORK/cache" "$GUESTS"

baseline_of() {
    if [ -f "$BASELINE" ]; then
        awk -v row="$1" '$1 == row {print $2}' "$BASELINE"
    fi
}

tolerance_of() {
    local t=""
    if [ -f "$BASELINE" ]; then
        t=$(awk -v row="$1" '$1 == row {print $3}' "$BASELINE")
    fi
    echo "${t:-$DEFAULT_TOLERANCE}"
}

failed=()
measured=()
printf '| row | baseline instr/op | now | now/baseline | runs |\n|---|---:|---:|---:|---|\n'
for row in "${ROWS[@]}"; do
    mode=${row%% *}
    counted=$(per_op "$HOST" "$row" "$WORK/cache" "$GUESTS" "$REPS") || { echo "$0: a run of row '$row' failed" >&2; exit 1; }
    read -r now runs <<<"$counted"
    tolerance=$(tolerance_of "$mode")
    if [ "$tolerance" = "$DEFAULT_TOLERANCE" ]; then
        measured+=("$mode	$now")
    else
        measured+=("$mode	$now	$tolerance")
    fi
    base=$(baseline_of "$mode")
    if [ -z "$base" ]; then
        printf '| %s | (none) | %d | | %s |\n' "$mode" "$now" "$runs"
        $UPDATE || failed+=("$mode has no baseline in $BASELINE")
        continue
    fi
    ratio=$(echo "$now / $base" | bc -l)
    printf '| %s | %d | %d | %.3f | %s |\n' "$mode" "$base" "$now" "$ratio" "$runs"
    if [ "$(echo "$ratio > 1 + $tolerance / 100" | bc -l)" = 1 ]; then
        failed+=("$mode: $now instructions per operation, $(printf '%.1f' "$(echo "($ratio - 1) * 100" | bc -l)")% over the baseline's $base")
    fi
done

if $UPDATE; then
    # The baseline's comments (why a row has its own tolerance) stay.
    comments=$(grep '^#' "$BASELINE" 2>/dev/null \
        || echo "# Instructions per operation (bench/check.sh --update), from the lowest of $REPS short and long runs.")
    {
        echo "$comments"
        printf '%s\n' "${measured[@]}"
    } >"$BASELINE"
    echo "wrote $BASELINE"
    exit 0
fi
if [ ${#failed[@]} -gt 0 ]; then
    printf 'bench-check: %s\n' "${failed[@]}" >&2
    echo "bench-check: if the cost is earned, move the baseline in its own commit (bench/check.sh --update) and say why" >&2
    exit 1
fi
echo "bench-check: every row within its tolerance of $BASELINE"
