#!/bin/bash
# Broker CPU per GiB of two or more broker binaries, measured alternately on the same machine
# (single runs on a shared VM spread by up to 30%: only rotated series compare).
#
#   bash scripts/cpu-ab.sh [--rounds N] [--case steady|pipeline|both] LABEL=BINARY LABEL=BINARY...
#
# e.g. the "before issue 6" binary against main:
#   git worktree add /tmp/before f82c2fc && (cd /tmp/before && cargo build --release)
#   bash scripts/cpu-ab.sh before=/tmp/before/target/release/strand main=target/release/strand
#
# Cases (1 KiB records, acks=1, 8 partitions, batch.size=262144, linger.ms=5; a fresh broker and
# data directory per run; the load generator is always this checkout's `strand perf`):
#   steady    a 4M-record warm-up fills the tail cache, then broker CPU over 6M records produced;
#   pipeline  a 3M-record warm-up on another topic, then a consumer (2 connections) tails the
#             topic while 3M records are produced: broker CPU per GiB produced and consumed.
# Prints one line per run: label, case, producer MB/s, consumer MB/s, broker CPU s/GiB, faults.
set -u
REPO="$(cd "$(dirname "$0")/.." && pwd)"
GEN="$REPO/target/release/strand"
ROUNDS=3
CASES="both"
BROKERS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --case) CASES="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *=*) BROKERS+=("$1"); shift ;;
        *) echo "cpu-ab: unexpected argument '$1' (want LABEL=BINARY)" >&2; exit 2 ;;
    esac
done
case "$CASES" in steady|pipeline|both) ;; *) echo "cpu-ab: --case is steady, pipeline or both" >&2; exit 2 ;; esac
if [ "${#BROKERS[@]}" -lt 1 ]; then
    echo "cpu-ab: give at least one LABEL=BINARY" >&2; exit 2
fi
for b in "${BROKERS[@]}"; do
    [ -x "${b#*=}" ] || { echo "cpu-ab: ${b#*=} is not an executable" >&2; exit 2; }
done
[ -x "$GEN" ] || { echo "cpu-ab: build the load generator first: cargo build --release" >&2; exit 2; }

DATA="$REPO/target/bench-data/cpu-ab"
TCK=$(getconf CLK_TCK)
PID=""
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"; }
trap cleanup EXIT

# start BINARY: starts a broker on a random port; sets PID and PORT.
start() {
    rm -rf "$DATA"; mkdir -p "$DATA"
    PORT=$((20000 + RANDOM % 20000))
    "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --set num.partitions=8 >"$REPO/target/cpu-ab-broker.log" 2>&1 &
    PID=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$REPO/target/cpu-ab-broker.log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "cpu-ab: the broker $1 did not start, see target/cpu-ab-broker.log" >&2; exit 1
}
stop() { kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=""; rm -rf "$DATA"; }
# ticks and minor faults of the broker
stat_of() { awk '{print $14 + $15, $10}' "/proc/$PID/stat"; }
produce() { # TOPIC RECORDS
    "$GEN" perf produce --topic "$1" --record-size 1024 --num-records "$2" --throughput -1 \
        --producer-props "bootstrap.servers=127.0.0.1:$PORT" acks=1 batch.size=262144 linger.ms=5 | tail -1
}
mbs() { sed -n 's/.*records\/sec (\([0-9.]*\) MB\/sec).*/\1/p'; }
report() { # LABEL CASE PROD_MBS CONS_MBS RECORDS BEFORE AFTER
    local a=($6) b=($7)
    printf '%-12s %-9s produce %8s MB/s  consume %8s MB/s  broker CPU %s s/GiB  faults %s\n' "$1" "$2" "$3" "$4" \
        "$(awk -v t=$((b[0] - a[0])) -v hz="$TCK" -v n="$5" 'BEGIN { printf "%.3f", t / hz / (n * 1024 / 2^30) }')" $((b[1] - a[1]))
}

steady() { # LABEL BINARY
    start "$2"
    produce w 4000000 >/dev/null
    local s0 s1 out
    s0="$(stat_of)"; out="$(produce t 6000000)"; s1="$(stat_of)"
    report "$1" steady "$(echo "$out" | mbs)" - 6000000 "$s0" "$s1"
    stop
}
pipeline() { # LABEL BINARY
    start "$2"
    produce w 3000000 >/dev/null
    produce t 1000 >/dev/null
    local s0 s1 out cons cpid
    s0="$(stat_of)"
    "$GEN" perf consume --bootstrap-server "127.0.0.1:$PORT" --topic t --messages 3001000 --connections 2 \
        --timeout 20000 >"$REPO/target/cpu-ab-consume.log" 2>&1 & cpid=$!
    out="$(produce t 3000000)"
    wait "$cpid"
    s1="$(stat_of)"
    cons="$(tail -1 "$REPO/target/cpu-ab-consume.log" | cut -d, -f4 | tr -d ' ')"
    report "$1" pipeline "$(echo "$out" | mbs)" "$cons" 3000000 "$s0" "$s1"
    stop
}

for r in $(seq "$ROUNDS"); do
    for b in "${BROKERS[@]}"; do
        [ "$CASES" = pipeline ] || steady "${b%%=*}" "${b#*=}"
    done
    for b in "${BROKERS[@]}"; do
        [ "$CASES" = steady ] || pipeline "${b%%=*}" "${b#*=}"
    done
done
