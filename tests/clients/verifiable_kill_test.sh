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
# At the kill in the middle the consumers are SIGKILLed with the broker and new ones join the
# same groups after the restart: they must resume at the offsets committed before the crash.
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

# start_tool OUT TOOL ARGS...: run a Kafka tool in the background, stdout to OUT; its pid in
# TOOL_PID (and in TOOL_PIDS for the cleanup).
start_tool() {
    local out="$1"; shift
    bash "$REPO/scripts/kafka-tool.sh" "$@" --bootstrap-server "$BOOTSTRAP" >"$out" 2>"$out.stderr" </dev/null &
    TOOL_PID=$!
    TOOL_PIDS+=("$TOOL_PID")
}

# Per topic index: pids of its producer and current consumer, and the consumer output files
# (one per consumer process, in order, space-separated).
PRODUCER_PID=()
CONSUMER_PID=()
CONSUMER_OUTS=()

# start_consumer I: a new consumer process in topic I's group, writing the next output file.
start_consumer() {
    local t="${TOPICS[$1]}" n
    n=$(( $(wc -w <<<"${CONSUMER_OUTS[$1]:-}") + 1 ))
    # A 10 s session (Kafka's default: 45 s): the group drops a killed member sooner.
    start_tool "$WORK/$t.consumer.$n.jsonl" kafka-verifiable-consumer --topic "$t" --group-id "group-$t" --verbose \
        --session-timeout 10000
    CONSUMER_PID[$1]=$TOOL_PID
    CONSUMER_OUTS[$1]="${CONSUMER_OUTS[$1]:-} $WORK/$t.consumer.$n.jsonl"
}

# consumer_args I: --consumer FILE... of topic I, in order.
consumer_args() {
    local f
    for f in ${CONSUMER_OUTS[$1]}; do printf -- '--consumer\n%s\n' "$f"; done
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

# assigned I: topic I's current consumer has been given partitions.
assigned() { grep -q '"partitions_assigned"' "${CONSUMER_OUTS[$1]##* }"; }

wait_consumers_assigned() {
    local i
    for i in "${!TOPICS[@]}"; do wait_for 60 "consumer of ${TOPICS[$i]} assigned" assigned "$i"; done
}

start_clients() {
    printf 'enable.idempotence=false\n' >"$WORK/plain.properties"
    printf 'enable.idempotence=true\nretries=2147483647\nmax.in.flight.requests.per.connection=5\n' >"$WORK/idem.properties"
    local i
    for i in "${!TOPICS[@]}"; do start_consumer "$i"; done
    start_tool "$WORK/vp-plain.producer.jsonl" kafka-verifiable-producer --topic vp-plain --acks -1 \
        --throughput "$RATE" --producer.config "$WORK/plain.properties"
    PRODUCER_PID[0]=$TOOL_PID
    start_tool "$WORK/vp-idem.producer.jsonl" kafka-verifiable-producer --topic vp-idem --acks -1 \
        --throughput "$RATE" --producer.config "$WORK/idem.properties"
    PRODUCER_PID[1]=$TOOL_PID
    wait_for 60 "both producers acknowledged records" all_progressed 0 0
    wait_consumers_assigned
    log "producers and consumers running"
}

kill_loop() {
    local k i base_p base_i up_until
    for k in $(seq 1 "$KILLS"); do
        up_until=$((SECONDS + UP_S))
        base_p=$(acked vp-plain); base_i=$(acked vp-idem)
        # The broker must take new records after each restart before it is killed again.
        wait_for 60 "producers acknowledged records after restart $((k - 1))" all_progressed "$base_p" "$base_i"
        while [ "$SECONDS" -lt "$up_until" ]; do sleep 0.5; done
        log "kill $k/$KILLS: acked so far plain $(acked vp-plain), idempotent $(acked vp-idem)"
        if [ "$k" = $(((KILLS + 1) / 2)) ]; then
            kill -KILL "${CONSUMER_PID[@]}"
            kill9_broker
            wait "${CONSUMER_PID[@]}" 2>/dev/null || true
            log "consumers killed with the broker; new ones join after the restart"
        else
            kill9_broker
        fi
        sleep "0.$((RANDOM % 9 + 1))"
        restart_broker
        if [ "$k" = $(((KILLS + 1) / 2)) ]; then
            for i in "${!TOPICS[@]}"; do start_consumer "$i"; done
            wait_consumers_assigned
        fi
    done
    base_p=$(acked vp-plain); base_i=$(acked vp-idem)
    wait_for 60 "producers acknowledged records after the last restart" all_progressed "$base_p" "$base_i"
    sleep 3
}

# stop_producers: SIGTERM; their shutdown hook flushes and prints tool_data.
stop_producers() {
    kill -TERM "${PRODUCER_PID[@]}"
    wait "${PRODUCER_PID[@]}" || true
    local t
    for t in "${TOPICS[@]}"; do
        grep -q '"tool_data"' "$WORK/$t.producer.jsonl" || { cat "$WORK/$t.producer.jsonl.stderr" >&2; fail "producer of $t printed no tool_data"; }
    done
}

stop_consumers() {
    local i t cargs
    for i in "${!TOPICS[@]}"; do
        t="${TOPICS[$i]}"
        mapfile -t cargs < <(consumer_args "$i")
        wait_for 90 "consumers of $t consumed every acknowledged record" \
            "${CHECK[@]}" caught-up --topic "$t" --producer "$WORK/$t.producer.jsonl" "${cargs[@]}"
    done
    kill -TERM "${CONSUMER_PID[@]}"
    wait "${CONSUMER_PID[@]}" || true
}

check_topics() {
    local rc=0 cargs
    mapfile -t cargs < <(consumer_args 0)
    "${CHECK[@]}" --topic vp-plain --producer "$WORK/vp-plain.producer.jsonl" "${cargs[@]}" \
        --read-back "$BOOTSTRAP" || rc=1
    mapfile -t cargs < <(consumer_args 1)
    "${CHECK[@]}" --topic vp-idem --idempotent --producer "$WORK/vp-idem.producer.jsonl" "${cargs[@]}" \
        --read-back "$BOOTSTRAP" || rc=1
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
