#!/bin/bash
# Instructions per operation of two host builds, counted by callgrind.
#
#   bench/instructions.sh A_HOST B_HOST [A_GUESTS_DIR [B_GUESTS_DIR]]
#   ONLY=echo REPS=5 bench/instructions.sh ...   # one row, more runs
#
# (the same host twice with two guest directories compares two builds of
# the guests, as `bench ab --guests-a/--guests-b` does).
#
# The timed A/B (`bench ab`) reads CPU time, which on a shared 2-core
# machine moves by several percent between runs of one build. Callgrind
# counts the instructions the host executes in user space (its own code,
# wasmtime, the guest's compiled code, libc), which are the same from run
# to run whatever else the machine does: what a change to the host's hot
# path costs shows up here exactly. It does not see the kernel: compare
# syscalls per operation (strace -c) alongside. The rows and the way they
# are counted are in bench/callgrind/lib.sh, shared with the CI guard
# (bench/check.sh). Rows run one after another, A's runs then B's.
set -euo pipefail
source "$(dirname "$0")/callgrind/lib.sh"

if [ $# -lt 2 ]; then
    echo "usage: $0 A_HOST B_HOST [A_GUESTS_DIR [B_GUESTS_DIR]]" >&2
    exit 2
fi
A=$1
B=$2
GUESTS_A=${3:-target/wasm32-wasip2/release}
GUESTS_B=${4:-$GUESTS_A}
REPS=${REPS:-3}
require_valgrind
select_rows
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start_upstream "$WORK"
warm_cache "$A" "$WORK/cache-A" "$GUESTS_A"
warm_cache "$B" "$WORK/cache-B" "$GUESTS_B"

printf '| row | A instr/op | B instr/op | B/A | A runs | B runs |\n|---|---:|---:|---:|---|---|\n'
for row in "${ROWS[@]}"; do
    # Interleaved: the two builds' runs alternate, REPS each.
    counted_a=$(per_op "$A" "$row" "$WORK/cache-A" "$GUESTS_A" "$REPS") || { echo "$0: a run of A failed" >&2; exit 1; }
    counted_b=$(per_op "$B" "$row" "$WORK/cache-B" "$GUESTS_B" "$REPS") || { echo "$0: a run of B failed" >&2; exit 1; }
    read -r a runs_a <<<"$counted_a"
    read -r b runs_b <<<"$counted_b"
    printf '| %s | %d | %d | %.3f | %s | %s |\n' "${row%% *}" "$a" "$b" "$(echo "$b / $a" | bc -l)" "$runs_a" "$runs_b"
done
