#!/usr/bin/env bash
# Client compatibility test: Debian's kcat (old librdkafka 2.0.x) against Strand.
#
# Checks: -L metadata (text and -J), produce a file of lines with -P -l to one
# partition and to all partitions, keyed produce with -K, consume back with
# -C -e -o beginning and compare exactly (per partition order), -C -J
# envelope fields, and -Q offsets-by-timestamp.
#
# Uses $BOOTSTRAP if set; otherwise starts its own broker (lib.sh).
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${KCAT_TEST_LINES:-1000}"
PARTS=3
T="${KCAT_TEST_TIMEOUT:-60}"   # per kcat invocation, seconds

command -v kcat >/dev/null || fail "kcat not installed (run scripts/install-test-deps.sh)"
log "kcat: $(kcat -V 2>&1 | grep -m1 '^Version' || true)"

if [ -z "${BOOTSTRAP:-}" ]; then
    start_broker --set num.partitions=$PARTS --set auto.create.topics.enable=true
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kcat-test.XXXXXX")"
# shellcheck disable=SC2016
on_exit 'rm -rf "$WORK"'

K=(-b "$BOOTSTRAP" -X socket.timeout.ms=20000 -m 20)

kc() { timeout "$T" kcat "${K[@]}" "$@"; }

# assert_same_file EXPECTED ACTUAL WHAT
assert_same_file() {
    if ! cmp -s "$1" "$2"; then
        echo "--- diff (expected vs actual), first 20 lines:" >&2
        diff "$1" "$2" | head -n 20 >&2 || true
        fail "$3: expected $(wc -l <"$1") lines, got $(wc -l <"$2"); contents differ"
    fi
    log "ok: $3 ($(wc -l <"$1") lines identical)"
}

assert_eq() { # EXPECTED ACTUAL WHAT
    [ "$1" = "$2" ] || fail "$3: expected '$1', got '$2'"
    log "ok: $3 = $2"
}

# consume_partition TOPIC PARTITION FORMAT OUT: read a partition from the
# beginning to its end.
consume_partition() {
    kc -C -q -t "$1" -p "$2" -o beginning -e -f "$3" >"$4" \
        || fail "kcat -C -t $1 -p $2 exited non-zero"
}

# ---------------------------------------------------------------- inputs
# Lines are numbered so per-partition order is checkable.
seq -f 'line-%06g' 1 "$N" | awk '{ printf "%s the quick brown fox %d\n", $0, NR * 7919 % 100003 }' >"$WORK/lines.txt"
seq 1 "$N" | awk '{ printf "key-%03d:value-%06d\n", $1 % 37, $1 }' >"$WORK/keyed.txt"

# ---------------------------------------------------------------- metadata
TOPIC=kcat-lines
log "metadata: kcat -L -t $TOPIC (auto-creates the topic)"
kc -L -t "$TOPIC" >"$WORK/meta.txt" || fail "kcat -L failed"
# Auto-creation may need one more round for leaders to show up.
for _ in 1 2 3 4 5; do
    grep -q "topic \"$TOPIC\" with $PARTS partitions" "$WORK/meta.txt" && break
    sleep 1
    kc -L -t "$TOPIC" >"$WORK/meta.txt" || fail "kcat -L failed"
done
cat "$WORK/meta.txt" >&2
grep -q "^ *1 brokers:" "$WORK/meta.txt" || fail "-L: expected '1 brokers:'"
grep -Eq "^ *broker 1 at 127\.0\.0\.1:${BOOTSTRAP##*:}" "$WORK/meta.txt" \
    || fail "-L: expected 'broker 1 at $BOOTSTRAP'"
grep -q "topic \"$TOPIC\" with $PARTS partitions:" "$WORK/meta.txt" \
    || fail "-L: expected topic \"$TOPIC\" with $PARTS partitions"
for p in $(seq 0 $((PARTS - 1))); do
    grep -Eq "^ *partition $p, leader 1, replicas: 1, isrs: 1" "$WORK/meta.txt" \
        || fail "-L: expected 'partition $p, leader 1, replicas: 1, isrs: 1'"
done
log "ok: -L shows broker 1 and $PARTS partitions led by 1"

log "metadata: kcat -L -J"
kc -L -J -t "$TOPIC" >"$WORK/meta.json" || fail "kcat -L -J failed"
python3 - "$WORK/meta.json" "$TOPIC" "$PARTS" "$BOOTSTRAP" <<'PY' || fail "-L -J metadata JSON check"
import json, sys
path, topic, parts, bootstrap = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
m = json.load(open(path))
def need(cond, msg):
    if not cond:
        print("JSON metadata: " + msg + "\n" + json.dumps(m, indent=1), file=sys.stderr); sys.exit(1)
need([b["id"] for b in m["brokers"]] == [1], "expected exactly broker id 1")
need(m["brokers"][0]["name"] == bootstrap, "broker name %r != %r" % (m["brokers"][0]["name"], bootstrap))
ts = [t for t in m["topics"] if t["topic"] == topic]
need(len(ts) == 1, "topic %s missing" % topic)
need(ts[0].get("error") is None, "topic error %r" % ts[0].get("error"))
ps = sorted(ts[0]["partitions"], key=lambda p: p["partition"])
need([p["partition"] for p in ps] == list(range(parts)), "partitions %r" % [p["partition"] for p in ps])
for p in ps:
    need(p["leader"] == 1, "partition %d leader %r" % (p["partition"], p["leader"]))
    need(p.get("error") is None, "partition %d error %r" % (p["partition"], p.get("error")))
PY
log "ok: -L -J JSON has broker 1 and $PARTS partitions"

# --------------------------------------------- produce to one partition
TOPIC_P=kcat-one-partition
log "produce $N lines to $TOPIC_P partition 1 with -P -l"
kc -P -t "$TOPIC_P" -p 1 -X acks=all -l "$WORK/lines.txt" || fail "kcat -P -p 1 failed"
consume_partition "$TOPIC_P" 1 '%s\n' "$WORK/out-p1.txt"
assert_same_file "$WORK/lines.txt" "$WORK/out-p1.txt" "consume $TOPIC_P partition 1"
for p in 0 2; do
    consume_partition "$TOPIC_P" $p '%s\n' "$WORK/out-p$p.txt"
    assert_eq 0 "$(wc -l <"$WORK/out-p$p.txt")" "lines in untouched partition $p"
done

# ------------------------------------ produce across partitions (no key)
log "produce $N lines to $TOPIC (all partitions) with -P -l"
kc -P -t "$TOPIC" -X acks=all -l "$WORK/lines.txt" || fail "kcat -P failed"
: >"$WORK/all.txt"
for p in $(seq 0 $((PARTS - 1))); do
    consume_partition "$TOPIC" "$p" '%s\n' "$WORK/part-$p.txt"
    # Within a partition, lines must come back in the order they were produced.
    sort -c "$WORK/part-$p.txt" 2>/dev/null || fail "partition $p of $TOPIC is not in produce order"
    log "partition $p: $(wc -l <"$WORK/part-$p.txt") lines, in produce order"
    cat "$WORK/part-$p.txt" >>"$WORK/all.txt"
done
sort "$WORK/all.txt" >"$WORK/all-sorted.txt"
assert_same_file "$WORK/lines.txt" "$WORK/all-sorted.txt" "union of $TOPIC partitions"

log "consume all partitions at once (-C without -p)"
kc -C -q -t "$TOPIC" -o beginning -e -f '%s\n' >"$WORK/all2.txt" || fail "kcat -C (all partitions) failed"
sort "$WORK/all2.txt" >"$WORK/all2-sorted.txt"
assert_same_file "$WORK/lines.txt" "$WORK/all2-sorted.txt" "kcat -C of whole topic $TOPIC"

# ------------------------------------------------------------- keyed
TOPIC_K=kcat-keyed
log "produce $N keyed lines to $TOPIC_K with -K :"
kc -P -t "$TOPIC_K" -K : -X acks=all -l "$WORK/keyed.txt" || fail "kcat -P -K failed"
: >"$WORK/keyed-all.txt"
for p in $(seq 0 $((PARTS - 1))); do
    consume_partition "$TOPIC_K" "$p" "$p %k:%s\n" "$WORK/keyed-$p.txt"
    cut -d' ' -f2- "$WORK/keyed-$p.txt" | sort -t: -k2 -c 2>/dev/null \
        || fail "partition $p of $TOPIC_K is not in produce order"
    cat "$WORK/keyed-$p.txt" >>"$WORK/keyed-all.txt"
done
# Every line exactly once, with key and value intact.
cut -d' ' -f2- "$WORK/keyed-all.txt" | sort -t: -k2 >"$WORK/keyed-sorted.txt"
assert_same_file "$WORK/keyed.txt" "$WORK/keyed-sorted.txt" "keyed lines (key:value) of $TOPIC_K"
# A key always lands on one partition.
bad_keys="$(awk '{ split($2, a, ":"); k = a[1]; if (k in part && part[k] != $1) print k; part[k] = $1 }' "$WORK/keyed-all.txt" | sort -u)"
[ -z "$bad_keys" ] || fail "keys spread over several partitions: $bad_keys"
log "ok: each key on exactly one partition"

# ------------------------------------------------ -J consumer envelope
log "consume $TOPIC_P partition 1 with -J"
kc -C -q -J -t "$TOPIC_P" -p 1 -o beginning -e >"$WORK/p1.json" || fail "kcat -C -J failed"
python3 - "$WORK/p1.json" "$WORK/lines.txt" "$TOPIC_P" <<'PY' || fail "-C -J envelope check"
import json, sys, time
path, lines_path, topic = sys.argv[1:4]
want = open(lines_path).read().splitlines()
msgs = [json.loads(l) for l in open(path) if l.strip()]
def need(cond, msg):
    if not cond:
        print("-J: " + msg, file=sys.stderr); sys.exit(1)
need(len(msgs) == len(want), "expected %d messages, got %d" % (len(want), len(msgs)))
now = time.time() * 1000
for i, (m, w) in enumerate(zip(msgs, want)):
    need(m["topic"] == topic, "message %d topic %r" % (i, m["topic"]))
    need(m["partition"] == 1, "message %d partition %r" % (i, m["partition"]))
    need(m["offset"] == i, "message %d has offset %r, expected %d" % (i, m["offset"], i))
    need(m["payload"] == w, "message %d payload %r != %r" % (i, m["payload"], w))
    need(m["key"] is None, "message %d key %r, expected null" % (i, m["key"]))
    need(m.get("broker") == 1, "message %d broker %r, expected 1" % (i, m.get("broker")))
    need(m["tstype"] == "create", "message %d tstype %r, expected create" % (i, m["tstype"]))
    need(now - 600000 < m["ts"] <= now + 1000, "message %d timestamp %r not within the last 10 minutes" % (i, m["ts"]))
PY
log "ok: -J envelopes: topic, partition, offsets 0..$((N - 1)), payload, key null, broker 1, CreateTime"

# ---------------------------------------------- -Q offsets by timestamp
TOPIC_T=kcat-times
A=100; B=50
head -n $A "$WORK/lines.txt" >"$WORK/a.txt"
tail -n $B "$WORK/lines.txt" >"$WORK/b.txt"
log "produce $A lines, wait, then $B lines to $TOPIC_T partition 0"
t0=$(date +%s%3N)
kc -P -t "$TOPIC_T" -p 0 -X acks=all -l "$WORK/a.txt" || fail "kcat -P (batch A) failed"
sleep 1.2
t_mid=$(date +%s%3N)
sleep 1.2
kc -P -t "$TOPIC_T" -p 0 -X acks=all -l "$WORK/b.txt" || fail "kcat -P (batch B) failed"
t_end=$(date +%s%3N)

# query_offset TS -> prints the offset kcat -Q reports for $TOPIC_T [0]
query_offset() {
    local out
    out="$(kc -Q -t "$TOPIC_T:0:$1")" || fail "kcat -Q -t $TOPIC_T:0:$1 failed"
    echo "$out" | sed -n "s/^$TOPIC_T \[0\] offset \(-\{0,1\}[0-9]*\)\$/\1/p" | head -n1 | grep . \
        || fail "kcat -Q -t $TOPIC_T:0:$1: unexpected output: $out"
}
assert_eq 0 "$(query_offset $((t0 - 60000)))" "-Q offset for a time before batch A"
assert_eq $A "$(query_offset "$t_mid")" "-Q offset for a time between batches"
assert_eq -1 "$(query_offset $((t_end + 3600000)))" "-Q offset for a time after every message (Kafka: -1)"
assert_eq 0 "$(query_offset -2)" "-Q earliest (-2)"
assert_eq $((A + B)) "$(query_offset -1)" "-Q latest (-1)"

# The exact timestamp of a message must give that message's offset.
kc -C -q -t "$TOPIC_T" -p 0 -o beginning -e -f '%o %T\n' >"$WORK/ts.txt" || fail "kcat -C -f %T failed"
assert_eq $((A + B)) "$(wc -l <"$WORK/ts.txt")" "messages in $TOPIC_T"
read -r off7 ts7 < <(sed -n "$((A + 1))p" "$WORK/ts.txt")
first_with_ts=$(awk -v t="$ts7" '$2 >= t { print $1; exit }' "$WORK/ts.txt")
assert_eq "$first_with_ts" "$(query_offset "$ts7")" "-Q at exact timestamp of offset $off7 (first offset with ts >= it)"

broker_alive
echo "kcat_test: PASS"
