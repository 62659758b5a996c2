#!/usr/bin/env bash
# Loss check the way Kafka's system tests do it: Kafka's kafka-verifiable-producer and
# kafka-verifiable-consumer run while the broker is SIGKILLed and restarted (same port, same
# data dir) several times; then verifiable_check.py reads their JSON lines and the topic
# (read back from the beginning by a fresh consumer) and proves that nothing acknowledged was
# lost, that the group consumer's batches were contiguous and its commits never ahead of its
# position, and counts duplicates (fatal for the idempotent producer).
#
# Two producers run at once, each to its own topic (3 partitions) with its own consumer group
# (manual commits, the tool's default, --verbose so every value is checked):
#   vp-plain  acks=all, enable.idempotence=false (the tool's retries=0: failed sends are errors)
#   vp-idem   acks=all, enable.idempotence=true (retries, at most 5 in flight)
# At the end the broker is stopped and `strand verify` must find the data directory clean.
#
# Environment: VERIFIABLE_KILLS (default 4), VERIFIABLE_UP_S (seconds the broker runs
# between kills, default 12), VERIFIABLE_RATE (records/s per producer, default 500).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KILLS="${VERIFIABLE_KILLS:-4}"
UP_S="${VERIFIABLE_UP_S:-12}"
RATE="${VERIFIABLE_RATE:-500}"
TOPICS=(vp-plain vp-idem)
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx256m}"
CHECK=(python3 "$CLIENTS_DIR/verifiable_check.py")

start_broker --set num.partitions=3 --set group.initial.rebalance.delay.ms=0

WORK="$(mktemp -d "${TMPDIR:-/tmp}/verifiable-kill.XXXXXX")"
TOOL_PIDS=()
# shellcheck disable=SC2016
on_exit 'stop_tools KILL; [ "${KEEP_BROKER_DATA:-0}" = 1 ] && log "kept tool output in $WORK" || rm -rf "$WORK"'

# stop_tools SIGNAL: signal every tool still running and reap it.
stop_tools() {
    local pid
    for pid in "${TOOL_PIDS[@]}"; do
        kill -"$1" "$pid" 2>/dev/null || true
    done
    for pid in "${TOOL_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

# start_tool OUT TOOL ARGS...: run a Kafka tool in the background, stdout to OUT.
start_tool() {
    local out="$1"; shift
    bash "$REPO/scripts/kafka-tool.sh" "$@" --bootstrap-server "$BOOTSTRAP" >"$out" 2>"$out.stderr" </dev/null &
    TOOL_PIDS+=($!)
    eval "PID_$(basename "$out" .jsonl | tr -c 'a-zA-Z0-9\n' _)=$!"
}

acked() { grep -c '"producer_send_success"' "$WORK/$1.producer.jsonl" || true; }

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds; fail after SECONDS.
wait_for() {
    local secs="$1" what="$2"; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${secs}s waiting for: $what"
        sleep 0.5
    done
}

# progressed TOPIC BASE: the topic's producer has more acks than BASE.
progressed() { [ "$(acked "$1")" -gt "$2" ]; }

all_progressed() { # BASE_PLAIN BASE_IDEM
    progressed vp-plain "$1" && progressed vp-idem "$2"
}

assigned() { grep -q '"partitions_assigned"' "$WORK/$1.consumer.jsonl"; }

start_clients() {
    printf 'enable.idempotence=false\n' >"$WORK/plain.properties"
    printf 'enable.idempotence=true\nretries=2147483647\nmax.in.flight.requests.per.connection=5\n' >"$WORK/idem.properties"
    local t
    for t in "${TOPICS[@]}"; do
        start_tool "$WORK/$t.consumer.jsonl" kafka-verifiable-consumer --topic "$t" --group-id "group-$t" --verbose
    done
    start_tool "$WORK/vp-plain.producer.jsonl" kafka-verifiable-producer --topic vp-plain --acks -1 \
        --throughput "$RATE" --producer.config "$WORK/plain.properties"
    start_tool "$WORK/vp-idem.producer.jsonl" kafka-verifiable-producer --topic vp-idem --acks -1 \
        --throughput "$RATE" --producer.config "$WORK/idem.properties"
    wait_for 60 "both producers acknowledged records" all_progressed 0 0
    for t in "${TOPICS[@]}"; do wait_for 60 "consumer of $t assigned" assigned "$t"; done
    log "producers and consumers running"
}

kill_loop() {
    local k base_p base_i up_until
    for k in $(seq 1 "$KILLS"); do
        up_until=$((SECONDS + UP_S))
        base_p=$(acked vp-plain); base_i=$(acked vp-idem)
        # The broker must take new records after each restart before it is killed again.
        wait_for 60 "producers acknowledged records after restart $((k - 1))" all_progressed "$base_p" "$base_i"
        while [ "$SECONDS" -lt "$up_until" ]; do sleep 0.5; done
        log "kill $k/$KILLS: acked so far plain $(acked vp-plain), idempotent $(acked vp-idem)"
        kill9_broker
        sleep "0.$((RANDOM % 9 + 1))"
        restart_broker
    done
    base_p=$(acked vp-plain); base_i=$(acked vp-idem)
    wait_for 60 "producers acknowledged records after the last restart" all_progressed "$base_p" "$base_i"
    sleep 3
}

# stop_producers: SIGTERM; their shutdown hook flushes and prints tool_data.
stop_producers() {
    kill -TERM "$PID_vp_plain_producer" "$PID_vp_idem_producer"
    wait "$PID_vp_plain_producer" "$PID_vp_idem_producer" || true
    local t
    for t in "${TOPICS[@]}"; do
        grep -q '"tool_data"' "$WORK/$t.producer.jsonl" || { cat "$WORK/$t.producer.jsonl.stderr" >&2; fail "producer of $t printed no tool_data"; }
    done
}

stop_consumers() {
    local t
    for t in "${TOPICS[@]}"; do
        wait_for 90 "consumer of $t consumed every acknowledged record" \
            "${CHECK[@]}" caught-up --topic "$t" --producer "$WORK/$t.producer.jsonl" --consumer "$WORK/$t.consumer.jsonl"
    done
    kill -TERM "$PID_vp_plain_consumer" "$PID_vp_idem_consumer"
    wait "$PID_vp_plain_consumer" "$PID_vp_idem_consumer" || true
}

check_topics() {
    local rc=0
    "${CHECK[@]}" --topic vp-plain --producer "$WORK/vp-plain.producer.jsonl" \
        --consumer "$WORK/vp-plain.consumer.jsonl" --read-back "$BOOTSTRAP" || rc=1
    "${CHECK[@]}" --topic vp-idem --idempotent --producer "$WORK/vp-idem.producer.jsonl" \
        --consumer "$WORK/vp-idem.consumer.jsonl" --read-back "$BOOTSTRAP" || rc=1
    [ "$rc" = 0 ] || fail "verifiable_check found problems (see above)"
}

verify_data_dir() {
    stop_broker
    "$STRAND_BIN" verify --data-dir "$BROKER_DATA" >"$WORK/verify.txt" 2>&1 \
        || { cat "$WORK/verify.txt" >&2; fail "strand verify: data directory not clean after $KILLS kills"; }
    log "strand verify: $(tail -n 1 "$WORK/verify.txt")"
}

t0=$SECONDS
start_clients
kill_loop
stop_producers
stop_consumers
check_topics
verify_data_dir
log "verifiable_kill_test: $KILLS kills, passed in $((SECONDS - t0)) s"
