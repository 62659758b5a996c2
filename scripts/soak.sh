#!/usr/bin/env bash
# Soak test of Strand (not part of CI): a release broker under mixed produce/consume at about half
# its maximum produce throughput, with consumer-group churn, for a long time; broker memory must
# stay flat and nothing may fail.
#
#   bash scripts/soak.sh [--minutes N] [--partitions P] [--record-size B] [--tail-cache BYTES] [--no-build]
#
# Steps:
#   1. builds the release binary (unless --no-build) and starts a broker on a free port with a fresh
#      data directory (target/soak-data; the machine's real disk);
#   2. measures the maximum produce rate (strand perf produce, unthrottled, acks=all, ~10 s) and
#      produces at half of it for the whole soak. The data goes to a new topic `soak-<k>` every
#      period (sized so that three periods use at most a third of the free disk) and the topic of
#      two periods before is deleted: disk use stays bounded and topic deletion runs under load;
#   3. consumers: per topic, `strand perf consume --group soak-tail-<k>` reading all of it, and a
#      churning group `soak-churn` (confluent-kafka / librdkafka consumers in a Python helper,
#      subscribed to ^soak-[0-9]+$): 1-3 members, one joins or leaves every few seconds, each
#      consuming and committing;
#   4. samples the broker's VmRSS (/proc/<pid>/status) every 10 s into target/soak-logs/rss.csv.
# At the end it reports throughput, consumed counts, errors and memory. Memory is flat when the
# largest RSS of the last W minutes is within 10% of the largest of the W minutes before
# (W = 5, or a third of the run when shorter than 15 minutes; runs under ~5 minutes are mostly
# warm-up: the tail caches of the live topics fill during the first three topic periods).
# Exit status: 0 when the broker stayed up, no client reported an error and memory was flat;
# 1 otherwise; 2 on a setup error.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MINUTES=30
PARTITIONS=8
RECORD_SIZE=1024
TAIL_CACHE=4194304
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="${2:?--minutes needs a number}"; shift ;;
        --partitions) PARTITIONS="${2:?}"; shift ;;
        --record-size) RECORD_SIZE="${2:?}"; shift ;;
        --tail-cache) TAIL_CACHE="${2:?}"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

BIN="${STRAND_BIN:-$REPO/target/release/strand}"
LOGS="$REPO/target/soak-logs"
DATA="$REPO/target/soak-data"
if [ "$BUILD" = 1 ]; then
    (cd "$REPO" && cargo build --release) || { echo "soak: build failed" >&2; exit 2; }
fi
[ -x "$BIN" ] || { echo "soak: no broker binary at $BIN" >&2; exit 2; }
python3 -c "import confluent_kafka" 2>/dev/null || { echo "soak: needs the confluent-kafka Python package (pip install -r tests/clients/requirements.txt)" >&2; exit 2; }

rm -rf "$DATA" "$LOGS"
mkdir -p "$DATA" "$LOGS"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BOOT="127.0.0.1:$PORT"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    [ -n "${BROKER:-}" ] && kill "$BROKER" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$DATA"
}
trap cleanup EXIT

# A small tail cache per partition: the steady state is reached within a few topic periods, so a
# leak stands out against it.
"$BIN" serve --listen "$BOOT" --data-dir "$DATA" --set "num.partitions=$PARTITIONS" \
    --set group.initial.rebalance.delay.ms=0 --set "log.tail.cache.bytes=$TAIL_CACHE" >"$LOGS/broker.log" 2>&1 &
BROKER=$!
for _ in $(seq 100); do
    grep -q "listening on" "$LOGS/broker.log" && break
    kill -0 "$BROKER" 2>/dev/null || { echo "soak: broker exited at start:"; tail -20 "$LOGS/broker.log"; exit 2; }
    sleep 0.1
done
echo "soak: broker pid $BROKER on $BOOT, $PARTITIONS partitions, ${RECORD_SIZE} B records, ${MINUTES} min; logs in $LOGS"

# 2. Maximum rate, then half of it.
"$BIN" perf produce --topic soak-sizing --num-records 200000 --throughput -1 --record-size "$RECORD_SIZE" \
    --producer-props "bootstrap.servers=$BOOT" acks=all >"$LOGS/sizing.log" 2>&1
MAX_RATE=$(grep -oE '[0-9.]+ records/sec' "$LOGS/sizing.log" | tail -1 | cut -d' ' -f1 | cut -d. -f1)
[ -n "$MAX_RATE" ] && [ "$MAX_RATE" -gt 0 ] || { echo "soak: sizing run failed:"; tail "$LOGS/sizing.log"; exit 2; }
RATE=$((MAX_RATE / 2))
python3 -c "
from confluent_kafka.admin import AdminClient
admin = AdminClient({'bootstrap.servers': '$BOOT'})
for t, x in admin.delete_topics(['soak-sizing'], operation_timeout=30).items():
    x.result()
" >>"$LOGS/sizing.log" 2>&1 || echo "soak: could not delete the sizing topic (see $LOGS/sizing.log)"
SECS=$((MINUTES * 60))
RECORDS=$((RATE * SECS))
echo "soak: maximum ${MAX_RATE} records/s (acks=all), soaking at ${RATE} records/s = ${RECORDS} records"

FREE=$(df -B1 --output=avail "$DATA" | tail -1)
PERIOD=$(( FREE / 9 / (RATE * RECORD_SIZE) ))
[ "$PERIOD" -gt 120 ] && PERIOD=120
[ "$PERIOD" -lt 10 ] && { echo "soak: not enough free disk ($FREE bytes) for ${RATE} records/s"; exit 2; }
echo "soak: a new topic every ${PERIOD}s (free disk $((FREE >> 30)) GiB)"

# Producer and per-topic tail consumers; topics two periods old are deleted.
(
    k=0
    t_end=$(( $(date +%s) + SECS ))
    while [ "$(date +%s)" -lt "$t_end" ]; do
        left=$(( t_end - $(date +%s) ))
        p=$(( left < PERIOD ? left : PERIOD ))
        [ "$p" -lt 1 ] && break
        n=$(( RATE * p ))
        "$BIN" perf produce --topic "soak-$k" --num-records "$n" --throughput "$RATE" --record-size "$RECORD_SIZE" \
            --reporting-interval 60000 --producer-props "bootstrap.servers=$BOOT" acks=all >>"$LOGS/produce.log" 2>&1 &
        prod=$!
        sleep 1
        "$BIN" perf consume --bootstrap-server "$BOOT" --topic "soak-$k" --messages "$n" --group "soak-tail-$k" \
            --timeout 30000 --hide-header >>"$LOGS/consume.log" 2>&1 || echo "error: tail consumer of soak-$k failed" >>"$LOGS/consume.log" &
        wait "$prod" || echo "error: producer of soak-$k exited non-zero" >>"$LOGS/produce.log"
        if [ "$k" -ge 2 ]; then
            python3 -c "
from confluent_kafka.admin import AdminClient
import sys
admin = AdminClient({'bootstrap.servers': '$BOOT'})
for t, x in admin.delete_topics(['soak-$((k - 2))'], operation_timeout=30).items():
    x.result()
" >>"$LOGS/produce.log" 2>&1 || echo "error: deleting soak-$((k - 2)) failed" >>"$LOGS/produce.log"
        fi
        k=$((k + 1))
    done
    wait
) &
PRODUCER=$!
PIDS+=("$PRODUCER")

# 3. Consumer-group churn (librdkafka consumers via confluent-kafka).
python3 - "$BOOT" "$SECS" >"$LOGS/churn.log" 2>&1 <<'EOF' &
import random, sys, threading, time
from confluent_kafka import Consumer, KafkaError, KafkaException

boot, secs = sys.argv[1], int(sys.argv[2])
stop_at = time.time() + secs
lock = threading.Lock()
stats = {"consumed": 0, "errors": 0, "joins": 0, "leaves": 0, "commits": 0}

def member(stop):
    c = Consumer({"bootstrap.servers": boot, "group.id": "soak-churn", "auto.offset.reset": "latest",
                  "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
                  "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
                  "topic.metadata.refresh.interval.ms": 5000})
    c.subscribe(["^soak-[0-9]+$"])
    try:
        while not stop.is_set():
            msgs = c.consume(500, 0.2)
            n = 0
            for m in msgs:
                if m.error() and m.error().code() not in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF):
                    with lock:
                        stats["errors"] += 1
                    print("consumer error:", m.error(), flush=True)
                else:
                    n += 1
            with lock:
                stats["consumed"] += n
        try:
            c.commit(asynchronous=False)
            with lock:
                stats["commits"] += 1
        except KafkaException as e:
            # Nothing consumed since the last commit is not an error.
            if "NO_OFFSET" not in str(e):
                with lock:
                    stats["errors"] += 1
                print("commit error:", e, flush=True)
    finally:
        c.close()

members = []
rng = random.Random(7)
last_report = time.time()
while time.time() < stop_at:
    if len(members) < 1 or (len(members) < 3 and rng.random() < 0.5):
        ev = threading.Event()
        t = threading.Thread(target=member, args=(ev,), daemon=True)
        t.start()
        members.append((t, ev))
        stats["joins"] += 1
    else:
        t, ev = members.pop(rng.randrange(len(members)))
        ev.set()
        t.join(30)
        stats["leaves"] += 1
    time.sleep(rng.uniform(3, 6))
    if time.time() - last_report > 60:
        last_report = time.time()
        with lock:
            print("churn:", dict(stats), "members", len(members), flush=True)
for t, ev in members:
    ev.set()
for t, ev in members:
    t.join(30)
print("churn final:", dict(stats), flush=True)
sys.exit(1 if stats["errors"] else 0)
EOF
CHURN=$!
PIDS+=("$CHURN")

# 4. RSS samples.
echo "elapsed_s,rss_kib" >"$LOGS/rss.csv"
T0=$(date +%s)
BROKER_DIED=0
while :; do
    NOW=$(( $(date +%s) - T0 ))
    if ! kill -0 "$BROKER" 2>/dev/null; then BROKER_DIED=1; echo "soak: broker died at ${NOW}s"; break; fi
    RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$BROKER/status" 2>/dev/null)
    echo "$NOW,$RSS" >>"$LOGS/rss.csv"
    [ "$NOW" -ge "$SECS" ] && break
    if [ $((NOW % 60)) -lt 10 ]; then echo "soak: ${NOW}s rss ${RSS} KiB"; fi
    sleep 10
done

# A dead broker ends the soak: stop the load instead of waiting out its topic periods.
if [ "$BROKER_DIED" = 1 ]; then kill "${PIDS[@]}" 2>/dev/null; pkill -P "$PRODUCER" 2>/dev/null; fi
wait "$PRODUCER"; PRODUCE_RC=$?
wait "$CHURN"; CHURN_RC=$?
CONSUME_ERRORS=$(grep -c '^error' "$LOGS/consume.log")
CONSUME_RC=$(( CONSUME_ERRORS > 0 ))

echo
echo "== producer (one line per topic) =="; grep 'records/sec' "$LOGS/produce.log" | grep ' 50th' | tail -3
echo "   total: $(grep ' 50th' "$LOGS/produce.log" | awk '{s += $1} END {print s}') records acknowledged"
echo "== tail consumers (one line per topic) =="; grep -v '^error' "$LOGS/consume.log" | tail -3
echo "   total: $(grep -v '^error' "$LOGS/consume.log" | awk -F', ' '{s += $5} END {print s}') records consumed"
echo "== churn group =="; tail -1 "$LOGS/churn.log"
PRODUCE_ERRORS=$(grep -c '^error' "$LOGS/produce.log")
BROKER_ERRORS=$(grep -cE ' ERROR |panicked' "$LOGS/broker.log")
BROKER_WARNS=$(grep -c ' WARN ' "$LOGS/broker.log")
echo "producer errors: $PRODUCE_ERRORS (exit $PRODUCE_RC); consumer exit $CONSUME_RC; churn exit $CHURN_RC"
echo "broker log: $BROKER_ERRORS errors, $BROKER_WARNS warnings"

# Memory flatness.
FLAT=$(python3 - "$LOGS/rss.csv" "$SECS" <<'EOF'
import csv, sys
rows = [(int(r["elapsed_s"]), int(r["rss_kib"])) for r in csv.DictReader(open(sys.argv[1])) if r["rss_kib"]]
secs = int(sys.argv[2])
w = 300 if secs >= 900 else secs // 3
end = rows[-1][0]
last = [v for t, v in rows if t > end - w]
prev = [v for t, v in rows if end - 2 * w < t <= end - w]
if not last or not prev:
    print("unknown: too few samples"); sys.exit(0)
a, b = max(last), max(prev)
ok = a <= b * 1.10
print(f"{'flat' if ok else 'GROWING'}: max RSS {a} KiB in the last {w}s vs {b} KiB in the {w}s before ({(a / b - 1) * 100:+.1f}%); first {rows[0][1]} KiB, peak {max(v for _, v in rows)} KiB")
EOF
)
echo "memory: $FLAT"

FAIL=0
[ "$BROKER_DIED" = 0 ] || FAIL=1
[ "$PRODUCE_RC" = 0 ] && [ "$PRODUCE_ERRORS" = 0 ] || FAIL=1
[ "$CONSUME_RC" = 0 ] || FAIL=1
[ "$CHURN_RC" = 0 ] || FAIL=1
[ "$BROKER_ERRORS" = 0 ] || FAIL=1
case "$FLAT" in flat*) ;; *) FAIL=1 ;; esac
if [ "$FAIL" = 0 ]; then echo "soak: PASS"; else echo "soak: FAIL"; fi
exit "$FAIL"
