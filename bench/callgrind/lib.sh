# Counting a host's instructions per operation with callgrind: sourced by
# bench/instructions.sh (two builds, A/B) and bench/check.sh (one build
# against the committed baseline).
#
# Each row serves one guest under valgrind and drives it with
# client.py over loopback, twice: a short run and a long one. The
# difference, divided by the difference in operations, is the cost of one
# operation with start-up, compilation and shutdown taken out. The pool is
# kept small (--max-connections 4): valgrind cannot reserve the default
# pool's address space.

CALLGRIND_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Rows: mode, guest, short run, long run. resp runs on `--kv memory`, the
# proxy in front of an echo upstream (start_upstream).
ROWS=(
    "seed hello.wasm 100 600"
    "http http.wasm 200 2200"
    "echo echo.wasm 100 1100"
    "resp-get resp.wasm 200 2200"
    "resp-set resp.wasm 200 2200"
    "proxy proxy.wasm 200 2200"
)

require_valgrind() {
    command -v valgrind >/dev/null || { echo "$0: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
}

# Keeps only the row named $ONLY, if set.
select_rows() {
    if [ -n "${ONLY:-}" ]; then
        local row
        for row in "${ROWS[@]}"; do [ "${row%% *}" = "$ONLY" ] && ROWS=("$row") && return; done
        echo "$0: no row $ONLY" >&2
        exit 2
    fi
}

# Starts the proxy row's echo upstream (on fd 9, so it ends with the
# script) and sets UPSTREAM_PORT.
start_upstream() {
    local work=$1
    mkfifo "$work/upstream.in"
    python3 "$CALLGRIND_DIR/upstream.py" <"$work/upstream.in" >"$work/upstream.port" &
    exec 9>"$work/upstream.in"
    local i
    for i in $(seq 100); do
        UPSTREAM_PORT=$(head -1 "$work/upstream.port" 2>/dev/null || true)
        [ -n "$UPSTREAM_PORT" ] && return
        sleep 0.1
    done
    echo "$0: the echo upstream did not start" >&2
    exit 1
}

# The flags a row's guest is served with, beyond the defaults.
row_flags() {
    case $1 in
        resp-*) echo "--kv memory" ;;
        proxy) echo "--config upstream=127.0.0.1:$UPSTREAM_PORT --allow-connect 127.0.0.1:$UPSTREAM_PORT" ;;
    esac
}

# Instructions for one run of HOST serving GUEST to N operations of MODE,
# with the compiled-guest cache CACHE and the guests of GUESTS.
count() {
    local host=$1 guest=$2 mode=$3 n=$4 cache=$5 guests=$6
    local out="$WORK/cg.out"
    # Port 0, read back from the host's `listening on` line: a port picked
    # here could be taken meanwhile (by any client's ephemeral port).
    # The previous run's file goes first: the background job truncates it
    # only once it starts, and its old port must not be read meanwhile.
    rm -f "$WORK/host.out"
    # shellcheck disable=SC2046 # the flags are words
    NETPLUG_CACHE_DIR=$cache valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$host" run "$guests/$guest" --port 0 --addr 127.0.0.1 --max-connections 4 $(row_flags "$mode") \
        >"$WORK/host.out" 2>"$WORK/host.log" &
    local pid=$!
    local i port=""
    for i in $(seq 240); do
        port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/host.out" 2>/dev/null || true)
        [ -n "$port" ] && break
        kill -0 $pid 2>/dev/null || { cat "$WORK/host.log" >&2; return 1; }
        sleep 0.5
    done
    [ -n "$port" ] || { echo "$0: the host did not listen within 2 minutes" >&2; kill $pid; return 1; }
    timeout 600 python3 "$CALLGRIND_DIR/client.py" "$mode" "$port" "$n" || { cat "$WORK/host.log" >&2; kill $pid; return 1; }
    kill -INT $pid
    wait $pid || true
    awk '/^totals:/ {print $2}' "$out"
}

# Instructions per operation of ROW for HOST over REPS short and long
# runs: the lowest long run less the lowest short run, over the difference
# in operations. A run's total can only gain from chance (a message that
# arrives in more pieces takes more recv calls, a thread or a timer
# starts, the allocator maps a segment), so each side's lowest is its
# cleanest; taking differences run by run instead would let a short run's
# extra cost make an operation look cheaper. Prints that, then each
# rep's own difference, comma-separated.
per_op() {
    local host=$1 row=$2 cache=$3 guests=$4 reps=$5
    local mode guest short long
    read -r mode guest short long <<<"$row"
    local best_s="" best_l="" rep s l runs=""
    for rep in $(seq "$reps"); do
        # A failed run fails the row: a count read from nothing would pass
        # for one.
        s=$(count "$host" "$guest" "$mode" "$short" "$cache" "$guests") || return 1
        l=$(count "$host" "$guest" "$mode" "$long" "$cache" "$guests") || return 1
        if [ -z "$best_s" ] || [ "$s" -lt "$best_s" ]; then best_s=$s; fi
        if [ -z "$best_l" ] || [ "$l" -lt "$best_l" ]; then best_l=$l; fi
        runs="$runs${runs:+,}$(((l - s) / (long - short)))"
    done
    echo "$(((best_l - best_s) / (long - short))) $runs"
}

# A first run of each row's guest fills CACHE, uncounted.
warm_cache() {
    local host=$1 cache=$2 guests=$3 row mode guest
    mkdir -p "$cache"
    for row in "${ROWS[@]}"; do
        read -r mode guest _ <<<"$row"
        count "$host" "$guest" "$mode" 1 "$cache" "$guests" >/dev/null
    done
}
