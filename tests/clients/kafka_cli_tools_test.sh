#!/usr/bin/env bash
# Kafka's own command-line tools (Apache Kafka 4.1 jars, run through scripts/kafka-tool.sh)
# against Strand, used the way Kafka's quickstart and tutorials use them:
#
#   kafka-topics            --create / --list / --describe / --alter --partitions
#   kafka-console-producer  plain lines; keys with parse.key=true and key.separator=:
#   kafka-console-consumer  --from-beginning, --group, print.key=true, --max-messages, --timeout-ms
#   kafka-consumer-groups   --list; --describe (CURRENT-OFFSET, LOG-END-OFFSET, LAG of a group
#                           that consumed part of a topic); --reset-offsets --to-earliest --execute
#   kafka-configs           --describe / --alter --add-config retention.ms on a topic
#   kafka-get-offsets       latest and earliest per partition
#   kafka-producer-perf-test / kafka-consumer-perf-test  a small run, summary lines, records landed
#   kafka-verifiable-producer  a record timestamped 2 h ahead: INVALID_TIMESTAMP, then accepted
#                           after kafka-configs sets message.timestamp.after.max.ms on the topic
#
# Uses $BOOTSTRAP if set (e.g. to run the same checks against Apache Kafka); otherwise starts
# its own broker (lib.sh). Each tool is a JVM start (~1-3 s): about 20 of them.
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

T="${CLI_TOOL_TIMEOUT:-90}"   # seconds per tool invocation
LINES=100
PERF_RECORDS=20000
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx256m}"

if [ -z "${BOOTSTRAP:-}" ]; then
    # No 3 s wait for more members before a new group's first rebalance (as Kafka's own tests).
    start_broker --set group.initial.rebalance.delay.ms=0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kafka-cli-test.XXXXXX")"
# shellcheck disable=SC2016
on_exit 'rm -rf "$WORK"'
CHECKS=0

# tool NAME ARGS...: run a Kafka tool against the broker; stdout to stdout, stderr to $WORK/stderr.
tool() {
    local name="$1"; shift
    timeout "$T" bash "$REPO/scripts/kafka-tool.sh" "$name" --bootstrap-server "$BOOTSTRAP" "$@" \
        2>"$WORK/stderr" || { cat "$WORK/stderr" >&2; fail "$name $* exited non-zero"; }
}

ok() { CHECKS=$((CHECKS + 1)); log "ok: $*"; }

# expect_line FILE REGEX WHAT: FILE has a line matching the extended REGEX.
expect_line() {
    grep -Eq -- "$2" "$1" || { sed 's/^/    | /' "$1" >&2; fail "$3: no line matching /$2/"; }
    ok "$3"
}

expect_eq() { # EXPECTED ACTUAL WHAT
    [ "$1" = "$2" ] || fail "$3: expected '$1', got '$2'"
    ok "$3 = $2"
}

expect_same_file() { # EXPECTED ACTUAL WHAT
    cmp -s "$1" "$2" || { diff "$1" "$2" | head -n 20 >&2; fail "$3: contents differ"; }
    ok "$3 ($(wc -l <"$1") lines identical)"
}

# ---------------------------------------------------------------- kafka-topics
topics_create_list_describe() {
    tool kafka-topics --create --topic lines --partitions 3 --replication-factor 1 >"$WORK/out"
    expect_line "$WORK/out" '^Created topic lines\.$' "kafka-topics --create"
    tool kafka-topics --list >"$WORK/out"
    expect_line "$WORK/out" '^lines$' "kafka-topics --list shows the topic"
    describe_topic lines 3
}

# describe_topic TOPIC PARTITIONS: --describe shows the counts and one line per partition.
describe_topic() {
    tool kafka-topics --describe --topic "$1" >"$WORK/describe"
    expect_line "$WORK/describe" "^Topic: $1	TopicId: [A-Za-z0-9_-]{22}	PartitionCount: $2	ReplicationFactor: 1	Configs:" \
        "kafka-topics --describe $1: TopicId, PartitionCount $2, ReplicationFactor 1"
    local p
    for p in $(seq 0 $(($2 - 1))); do
        grep -Eq "^	Topic: $1	Partition: $p	Leader: [0-9]+	Replicas: [0-9]+	Isr: [0-9]+" "$WORK/describe" \
            || { cat "$WORK/describe" >&2; fail "describe $1: no line for partition $p with Leader, Replicas, Isr"; }
    done
    expect_eq "$2" "$(grep -c '	Partition: ' "$WORK/describe")" "describe $1: partition lines"
    # One broker: leader, the only replica and the only in-sync replica are the same node.
    expect_eq 0 "$(awk -F'\t' '/\tPartition: /{ l=$4; r=$5; i=$6; sub(/Leader: /,"",l); sub(/Replicas: /,"",r); sub(/Isr: /,"",i); if (l!=r || l!=i) n++ } END { print n+0 }' "$WORK/describe")" \
        "describe $1: Leader = Replicas = Isr on every partition"
}

# ---------------------------------------------------------------- console producer/consumer
console_round_trip() {
    seq -f 'line-%03g hello from the console producer' 1 "$LINES" >"$WORK/lines.txt"
    tool kafka-console-producer --topic lines <"$WORK/lines.txt" >/dev/null
    tool kafka-console-consumer --topic lines --from-beginning --group cli-all \
        --max-messages "$LINES" >"$WORK/consumed.txt"
    sort "$WORK/lines.txt" >"$WORK/lines.sorted"
    sort "$WORK/consumed.txt" >"$WORK/consumed.sorted"
    expect_same_file "$WORK/lines.sorted" "$WORK/consumed.sorted" \
        "console consumer --from-beginning --group --max-messages reads every line"
    grep -q "Processed a total of $LINES messages" "$WORK/stderr" || { cat "$WORK/stderr" >&2; fail "console consumer summary"; }
    ok "console consumer: Processed a total of $LINES messages"
}

console_keyed() {
    awk 'BEGIN { for (i = 1; i <= 30; i++) printf "user-%d:event %d of user %d\n", i % 4, i, i % 4 }' >"$WORK/keyed.txt"
    tool kafka-console-producer --topic keyed --property parse.key=true --property key.separator=: \
        <"$WORK/keyed.txt" >/dev/null
    # No group, no message limit: --timeout-ms ends it once nothing more arrives.
    tool kafka-console-consumer --topic keyed --from-beginning --property print.key=true \
        --timeout-ms 5000 >"$WORK/keyed.out"
    tr ':' '\t' <"$WORK/keyed.txt" >"$WORK/keyed.expected"
    # The topic was auto-created with one partition: the order is the produce order.
    expect_same_file "$WORK/keyed.expected" "$WORK/keyed.out" \
        "console producer parse.key / consumer print.key (key<TAB>value, in order)"
}

# ---------------------------------------------------------------- kafka-get-offsets
# offsets TOPIC [TIME]: "partition offset" lines, sorted by partition.
offsets() {
    tool kafka-get-offsets --topic "$1" ${2:+--time "$2"} | awk -F: '{ print $(NF-1), $NF }' | sort -n
}

get_offsets() {
    offsets lines >"$WORK/latest"
    expect_eq 3 "$(wc -l <"$WORK/latest")" "kafka-get-offsets: one line per partition"
    expect_eq "$LINES" "$(awk '{ s += $2 } END { print s }' "$WORK/latest")" "kafka-get-offsets latest: sum = lines produced"
    offsets lines -2 >"$WORK/earliest"
    expect_eq "0 0 0" "$(awk '{ printf "%s%s", sep, $2; sep=" " }' "$WORK/earliest")" "kafka-get-offsets --time -2 (earliest): 0 everywhere"
}

# ---------------------------------------------------------------- kafka-consumer-groups
# group_rows GROUP: "partition current log-end lag" rows of --describe, sorted by partition.
group_rows() {
    tool kafka-consumer-groups --describe --group "$1" >"$WORK/group.$1"
    grep -Eq '^GROUP +TOPIC +PARTITION +CURRENT-OFFSET +LOG-END-OFFSET +LAG +CONSUMER-ID +HOST +CLIENT-ID' "$WORK/group.$1" \
        || { cat "$WORK/group.$1" >&2; fail "consumer-groups --describe $1: header"; }
    awk -v g="$1" '$1 == g && $2 == "lines" { print $3, $4, $5, $6 }' "$WORK/group.$1" | sort -n
}

consumer_groups() {
    # A group that consumes 40 of the 100 lines, one record per poll, and commits on close.
    tool kafka-console-consumer --topic lines --from-beginning --group cli-partial --max-messages 40 \
        --consumer-property max.poll.records=1 >/dev/null
    tool kafka-consumer-groups --list >"$WORK/groups"
    expect_line "$WORK/groups" '^cli-all$' "kafka-consumer-groups --list shows cli-all"
    expect_line "$WORK/groups" '^cli-partial$' "kafka-consumer-groups --list shows cli-partial"

    group_rows cli-all >"$WORK/rows"
    expect_eq "$(awk '{ print $1, $2, $2, 0 }' "$WORK/latest")" "$(cat "$WORK/rows")" \
        "describe cli-all (read everything): CURRENT-OFFSET = LOG-END-OFFSET, LAG 0"

    group_rows cli-partial >"$WORK/rows"
    expect_eq "$(cut -d' ' -f1 "$WORK/latest" | tr '\n' ' ')" "$(cut -d' ' -f1 "$WORK/rows" | tr '\n' ' ')" \
        "describe cli-partial: one row per partition"
    expect_eq "$(cat "$WORK/latest")" "$(awk '{ print $1, $3 }' "$WORK/rows")" "describe cli-partial: LOG-END-OFFSET per partition"
    expect_eq 40 "$(awk '$2 != "-" { s += $2 } END { print s }' "$WORK/rows")" "describe cli-partial: CURRENT-OFFSET sums to the 40 consumed"
    expect_eq 60 "$(awk '$4 != "-" { s += $4 } END { print s }' "$WORK/rows")" "describe cli-partial: LAG sums to the 60 left"
    expect_eq 0 "$(awk '$4 != $3 - ($2 == "-" ? 0 : $2) { n++ } END { print n+0 }' "$WORK/rows")" \
        "describe cli-partial: LAG = LOG-END-OFFSET - CURRENT-OFFSET on every row"

    tool kafka-consumer-groups --reset-offsets --to-earliest --execute --group cli-partial --topic lines >"$WORK/reset"
    expect_line "$WORK/reset" '^GROUP +TOPIC +PARTITION +NEW-OFFSET' "reset-offsets --to-earliest --execute: header"
    expect_eq 3 "$(awk '$1 == "cli-partial" && $2 == "lines" && $4 == 0' "$WORK/reset" | wc -l)" \
        "reset-offsets --to-earliest --execute: NEW-OFFSET 0 on every partition"
    group_rows cli-partial >"$WORK/rows"
    expect_eq "$(awk '{ print $1, 0, $2, $2 }' "$WORK/latest")" "$(cat "$WORK/rows")" \
        "describe after reset: CURRENT-OFFSET 0, LAG = LOG-END-OFFSET"
}

# ---------------------------------------------------------------- kafka-configs
configs() {
    local cfg=(--entity-type topics --entity-name lines)
    tool kafka-configs --describe "${cfg[@]}" >"$WORK/cfg"
    expect_line "$WORK/cfg" '^Dynamic configs for topic lines are:$' "kafka-configs --describe: header"
    if grep -q 'retention.ms=' "$WORK/cfg"; then cat "$WORK/cfg" >&2; fail "kafka-configs --describe: retention.ms set before --alter"; fi
    tool kafka-configs --alter "${cfg[@]}" --add-config retention.ms=86400000 >"$WORK/cfg"
    expect_line "$WORK/cfg" '^Completed updating config for topic lines\.$' "kafka-configs --alter --add-config retention.ms"
    tool kafka-configs --describe "${cfg[@]}" >"$WORK/cfg"
    expect_line "$WORK/cfg" '^  retention\.ms=86400000 sensitive=false synonyms=\{DYNAMIC_TOPIC_CONFIG:retention\.ms=86400000' \
        "kafka-configs --describe shows retention.ms=86400000 as a dynamic topic config"
}

# ---------------------------------------------------------------- kafka-topics --alter
alter_partitions() {
    tool kafka-topics --alter --topic lines --partitions 5 >/dev/null
    describe_topic lines 5
    expect_line "$WORK/describe" '^Topic: lines	.*	Configs: (.*,)?retention\.ms=86400000' \
        "kafka-topics --describe lists the altered retention.ms"
    offsets lines >"$WORK/latest5"
    expect_eq "$(cat "$WORK/latest"; printf '3 0\n4 0')" "$(cat "$WORK/latest5")" \
        "kafka-get-offsets after --alter --partitions 5: old partitions kept, new ones empty"
}

# ---------------------------------------------------------------- perf tests
perf_tests() {
    tool kafka-topics --create --topic perf --partitions 3 --replication-factor 1 >/dev/null
    # 4.1's ProducerPerformance takes the bootstrap address in --producer-props only.
    timeout "$T" bash "$REPO/scripts/kafka-tool.sh" kafka-producer-perf-test --topic perf \
        --num-records "$PERF_RECORDS" --record-size 100 --throughput -1 \
        --producer-props bootstrap.servers="$BOOTSTRAP" acks=all >"$WORK/pperf" 2>"$WORK/stderr" \
        || { cat "$WORK/pperf" "$WORK/stderr" >&2; fail "kafka-producer-perf-test exited non-zero"; }
    expect_line "$WORK/pperf" "^$PERF_RECORDS records sent, [0-9.]+ records/sec \([0-9.]+ MB/sec\), [0-9.]+ ms avg latency, [0-9.]+ ms max latency, [0-9]+ ms 50th, [0-9]+ ms 95th, [0-9]+ ms 99th, [0-9]+ ms 99\.9th\.$" \
        "kafka-producer-perf-test final summary line"
    expect_eq "$PERF_RECORDS" "$(offsets perf | awk '{ s += $2 } END { print s }')" \
        "records landed: log end offsets of perf sum to $PERF_RECORDS"

    tool kafka-consumer-perf-test --topic perf --messages "$PERF_RECORDS" --timeout 30000 >"$WORK/cperf"
    expect_line "$WORK/cperf" '^start\.time, end\.time, data\.consumed\.in\.MB, MB\.sec, data\.consumed\.in\.nMsg, nMsg\.sec, rebalance\.time\.ms, fetch\.time\.ms, fetch\.MB\.sec, fetch\.nMsg\.sec$' \
        "kafka-consumer-perf-test header"
    expect_eq "$PERF_RECORDS 1.9073" "$(awk -F', ' 'NR == 2 { print $5, $3 }' "$WORK/cperf")" \
        "kafka-consumer-perf-test: data.consumed.in.nMsg and data.consumed.in.MB"
}

# ---------------------------------------------------------------- timestamps from the future
# Kafka refuses records timestamped more than message.timestamp.after.max.ms (1 h) ahead of its
# clock with INVALID_TIMESTAMP; the topic config (set with kafka-configs) moves the bound.
future_timestamps() {
    local in2h=$(( $(date +%s) * 1000 + 2 * 3600 * 1000 ))
    tool kafka-verifiable-producer --topic future --max-messages 1 --message-create-time "$in2h" >"$WORK/future"
    expect_line "$WORK/future" '"name":"producer_send_error".*InvalidTimestampException' \
        "a record timestamped 2 h ahead is refused (InvalidTimestampException)"
    tool kafka-configs --alter --entity-type topics --entity-name future --add-config message.timestamp.after.max.ms=86400000 >/dev/null
    tool kafka-verifiable-producer --topic future --max-messages 1 --message-create-time "$in2h" >"$WORK/future"
    expect_line "$WORK/future" '"name":"producer_send_success"' \
        "accepted once the topic sets message.timestamp.after.max.ms to a day"
}

t0=$SECONDS
topics_create_list_describe
console_round_trip
console_keyed
get_offsets
consumer_groups
configs
alter_partitions
perf_tests
future_timestamps
log "kafka_cli_tools_test: $CHECKS checks passed in $((SECONDS - t0)) s"
