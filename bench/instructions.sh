#!/bin/bash
# Instructions per operation of two host builds, counted by callgrind.
#
#   bench/instructions.sh A_HOST B_HOST [A_GUESTS_DIR [B_GUESTS_DIR]]
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
# syscalls per operation (strace -c) alongside.
#
# Each row serves one guest under valgrind and drives it with a Python
# client over loopback, twice: a short run and a long one. The difference,
# divided by the difference in operations, is the cost of one operation
# with start-up, compilation and shutdown taken out. Rows: a seed exchange
# (hello.wasm, one connection each), an HTTP keep-alive request (http.wasm,
# one connection) and a 64 KiB echo (echo.wasm, one connection). Takes
# about 5 minutes; needs valgrind and python3.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 A_HOST B_HOST [A_GUESTS_DIR [B_GUESTS_DIR]]" >&2
    exit 2
fi
A=$1
B=$2
GUESTS_A=${3:-target/wasm32-wasip2/release}
GUESTS_B=${4:-$GUESTS_A}
command -v valgrind >/dev/null || { echo "$0: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/client.py" <<'EOF'
import socket, sys

mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
addr = ("127.0.0.1", port)
if mode == "seed":
    for _ in range(n):
        s = socket.create_connection(addr)
        assert s.recv(1024) == b"HELLO,WORLD"
        s.sendall(b"this is client...")
        while s.recv(1024):
            pass
        s.close()
elif mode == "http":
    s = socket.create_connection(addr)
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    for _ in range(n):
        s.sendall(req)
        got = b""
        while not got.endswith(b"Hello, World!\n"):
            data = s.recv(4096)
            assert data, "the server closed"
            got += data
elif mode == "echo":
    s = socket.create_connection(addr)
    block = b"x" * 65536
    for _ in range(n):
        s.sendall(block)
        got = 0
        while got < len(block):
            data = s.recv(65536)
            assert data, "the server closed"
            got += len(data)
EOF

# Instructions for one run of HOST serving GUEST to N operations of MODE.
# The pool is kept small (--max-connections 4): valgrind cannot reserve
# the default pool's address space. Each build gets its own cache, warmed
# by a first run that is not counted.
count() {
    local host=$1 guest=$2 mode=$3 n=$4 cache=$5 guests=$6
    local port=$((20000 + RANDOM % 20000))
    local out="$WORK/cg.out"
    NETPLUG_CACHE_DIR=$cache valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$host" run "$guests/$guest" --port "$port" --addr 127.0.0.1 --max-connections 4 \
        >/dev/null 2>"$WORK/host.log" &
    local pid=$!
    local i
    for i in $(seq 240); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null && break
        kill -0 $pid 2>/dev/null || { cat "$WORK/host.log" >&2; return 1; }
        sleep 0.5
    done
    python3 "$WORK/client.py" "$mode" "$port" "$n"
    kill -INT $pid
    wait $pid || true
    awk '/^totals:/ {print $2}' "$out"
}

ROWS=("seed hello.wasm 100 600" "http http.wasm 200 2200" "echo echo.wasm 100 1100")
# ONLY=echo (a row's first word) runs one row; REPS pairs per row.
if [ -n "${ONLY:-}" ]; then
    for row in "${ROWS[@]}"; do [ "${row%% *}" = "$ONLY" ] && ROWS=("$row") && break; done
fi
REPS=${REPS:-3}
printf '| row | A instr/op | B instr/op | B/A | A runs | B runs |\n|---|---:|---:|---:|---|---|\n'
declare -A HOSTS=([A]=$A [B]=$B) DIRS=([A]=$GUESTS_A [B]=$GUESTS_B)
for side in A B; do
    mkdir -p "$WORK/cache-$side"
    # A first run of each guest fills the compiled-guest cache.
    for row in "${ROWS[@]}"; do
        read -r mode guest _ <<<"$row"
        count "${HOSTS[$side]}" "$guest" "$mode" 1 "$WORK/cache-$side" "${DIRS[$side]}" >/dev/null
    done
done
for row in "${ROWS[@]}"; do
    read -r mode guest short long <<<"$row"
    declare -A per runs
    # Interleaved: A, B, A, B...; the table gives the lowest of each side's
    # runs. A run can only gain instructions: a message that arrives in
    # more pieces takes more recv calls (the echo row varies most), a timer
    # fires.
    for rep in $(seq "$REPS"); do
        for side in A B; do
            s=$(count "${HOSTS[$side]}" "$guest" "$mode" "$short" "$WORK/cache-$side" "${DIRS[$side]}")
            l=$(count "${HOSTS[$side]}" "$guest" "$mode" "$long" "$WORK/cache-$side" "${DIRS[$side]}")
            v=$(((l - s) / (long - short)))
            if [ -z "${per[$side]:-}" ] || [ "$v" -lt "${per[$side]}" ]; then per[$side]=$v; fi
            runs[$side]="${runs[$side]:-}${runs[$side]:+ }$v"
        done
    done
    printf '| %s | %d | %d | %.3f | %s | %s |\n' "$mode" "${per[A]}" "${per[B]}" \
        "$(echo "${per[B]} / ${per[A]}" | bc -l)" "${runs[A]}" "${runs[B]}"
    unset per runs
done
