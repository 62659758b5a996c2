#!/bin/bash
# bash scripts/roll-latency.sh [--rounds N] [--segment-bytes B] BINARY [BINARY...]: latency of a
# 100k records/s acks=all producer (1 KiB, 8 partitions, 2M records) while its partitions roll
# segments often (log.segment.bytes=B, default 4 MiB: about 490 rolls), under journal pressure
# from another process (64 KiB files written, fsynced and removed in a loop on the same
# filesystem, as other tenants of a disk do). The brokers run alternately, N rounds (default 3),
# each on a fresh data directory; the load generator is this checkout's. Prints one line per run.
# A roll seals the old segment and writes its index files and the producer snapshot; a sync
# there that waits for the journal on the shard's executor delays every partition of the shard.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
GEN="$REPO/target/release/strand"
ROUNDS=3
SEGMENT_BYTES=$((4 << 20))
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --segment-bytes) SEGMENT_BYTES="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[ "${#BINS[@]}" -ge 1 ] || BINS=("$GEN")
for b in "${BINS[@]}"; do [ -x "$b" ] || { echo "roll-latency: $b is not an executable" >&2; exit 2; }; done
[ -x "$GEN" ] || { echo "roll-latency: build the load generator first: cargo build --release" >&2; exit 2; }

DATA="$REPO/target/bench-data/roll-latency"
PRESSURE_DIR="$REPO/target/bench-data/roll-latency-pressure"
PID=""
PRESSURE=""
cleanup() {
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
    [ -n "$PRESSURE" ] && kill "$PRESSURE" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$DATA" "$PRESSURE_DIR"
}
trap cleanup EXIT

# Journal pressure until killed: small files written, fsynced and unlinked.
pressure() {
    mkdir -p "$PRESSURE_DIR"
    exec python3 -c "
import os, sys
d = sys.argv[1]
block = b'x' * 65536
while True:
    for k in range(200):
        p = os.path.join(d, 'f%d' % k)
        with open(p, 'wb') as f:
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
        os.unlink(p)
" "$PRESSURE_DIR"
}

run() { # BINARY
    rm -rf "$DATA"; mkdir -p "$DATA"
    local port=$((20000 + RANDOM % 20000)) log="$REPO/target/roll-latency-broker.log" out
    "$1" serve --listen "127.0.0.1:$port" --data-dir "$DATA" --set num.partitions=8 \
        --set "log.segment.bytes=$SEGMENT_BYTES" >"$log" 2>&1 &
    PID=$!
    for _ in $(seq 50); do grep -q "listening on" "$log" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$log" || { echo "roll-latency: $1 did not start, see $log" >&2; exit 1; }
    pressure & PRESSURE=$!
    sleep 0.5
    out="$("$GEN" perf produce --topic a --record-size 1024 --throughput 100000 --num-records 2000000 \
        --producer-props "bootstrap.servers=127.0.0.1:$port" acks=all 2>&1 | tail -1)"
    kill "$PRESSURE" 2>/dev/null; wait "$PRESSURE" 2>/dev/null; PRESSURE=""
    printf '%-40s %s rolls %s\n' "$1" "$(sed 's/.*avg latency, //' <<<"$out")" "$(grep -c 'rolled segment' "$log")"
    kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=""
    rm -rf "$DATA"
}

for _ in $(seq "$ROUNDS"); do
    for b in "${BINS[@]}"; do run "$b"; done
done
