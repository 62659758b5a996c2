#!/usr/bin/env bash
# Kafka Connect (Apache Kafka 4.1.2, run through scripts/kafka-tool.sh as users do) against Strand
# (issue 17, part 6), with connect-file's FileStreamSource and FileStreamSink connectors.
#
# Checks:
#  1. connect-standalone (worker + source + sink properties files) copies a file through a topic
#     byte for byte (multi-byte UTF-8, tabs, blanks, an empty line).
#  2. connect-distributed (group.id; config/offset/status topics created by Connect itself,
#     replication factor 1, compacted — Connect refuses to start otherwise) runs the same two
#     connectors submitted through its REST API and copies a file; then the worker is stopped
#     (SIGTERM) and started again, lines are appended to the source, and the sink receives exactly
#     the new lines: the topic holds each line once (the source resumed from its offset in the
#     offsets topic) and the sink file equals the source (the sink resumed from its group's
#     committed offsets and re-copied nothing).
set -euo pipefail
export LC_ALL=C.UTF-8
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WAIT="${CONNECT_TEST_TIMEOUT:-90}"   # seconds for each awaited condition
KAFKA_TOOL=(bash "$REPO/scripts/kafka-tool.sh")

# Uses $BOOTSTRAP if set (e.g. an Apache Kafka broker, to compare); otherwise starts Strand.
if [ -z "${BOOTSTRAP:-}" ]; then
    start_broker --set group.initial.rebalance.delay.ms=0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/connect-test.XXXXXX")"
CONNECT_PID=""
# shellcheck disable=SC2016
on_exit 'stop_connect; [ "${KEEP_BROKER_DATA:-0}" = 1 ] || rm -rf "$WORK"'

# ---------------------------------------------------------------- helpers

# wait_until DESCRIPTION COMMAND...: run COMMAND every 0.5 s until it succeeds, for at most $WAIT s.
wait_until() {
    local what="$1" start=$SECONDS
    shift
    until "$@"; do
        [ $((SECONDS - start)) -lt "$WAIT" ] || fail "timed out after ${WAIT}s waiting for: $what"
        connect_alive
        sleep 0.5
    done
    log "ok after $((SECONDS - start))s: $what"
}

# start_connect MODE LOG ARGS...: start connect-MODE in the background (the java process itself).
start_connect() {
    local mode="$1" logfile="$2"
    shift 2
    log "starting connect-$mode $*"
    "${KAFKA_TOOL[@]}" "connect-$mode" "$@" >>"$logfile" 2>&1 </dev/null &
    CONNECT_PID=$!
    CONNECT_LOG="$logfile"
}

# connect_alive: fail (with the worker's log) if the worker has exited.
connect_alive() {
    if [ -n "$CONNECT_PID" ] && ! kill -0 "$CONNECT_PID" 2>/dev/null; then
        tail -n 60 "$CONNECT_LOG" >&2 || true
        CONNECT_PID=""
        fail "the Connect worker exited (log above: $CONNECT_LOG)"
    fi
}

# stop_connect: SIGTERM (Connect's clean shutdown), SIGKILL after 30 s.
stop_connect() {
    stop_process "$CONNECT_PID" 30 "connect worker"
    CONNECT_PID=""
}

# write_lines FILE FROM N [ascii]: append lines FROM..FROM+N-1, with tabs, blanks, (line 7) an
# empty line and multi-byte UTF-8 unless "ascii" is given.
# FileStreamSource resumes a restarted task by skipping its stored offset — a count of
# characters — as bytes (BufferedReader.read(char[]) vs InputStream.skip in
# FileStreamSourceTask), so after a restart it re-reads from too early a position in a file with
# multi-byte characters (seen: 156 lines and a cut-off line sent again). That is the
# connector's bug, whatever the broker: the restart test uses ASCII lines.
write_lines() {
    python3 - "$@" <<'EOF'
import sys
path, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
word = "greetings +" if sys.argv[4:] == ["ascii"] else "grüße  ✓"
with open(path, "a", encoding="utf-8", newline="\n") as f:
    for i in range(start, start + n):
        if i == 7:
            f.write("\n")
        else:
            f.write(f"line {i:05d}\t{word} {'x' * (i % 50)} \n")
EOF
}

# sink_caught_up SOURCE SINK: the sink holds at least as many bytes as the source.
sink_caught_up() {
    [ -f "$2" ] && [ "$(stat -c %s "$2")" -ge "$(stat -c %s "$1")" ]
}

# assert_same_file EXPECTED ACTUAL WHAT
assert_same_file() {
    if ! cmp -s "$1" "$2"; then
        diff <(head -c 100000 "$1") <(head -c 100000 "$2") | head -n 20 >&2 || true
        fail "$3: $2 ($(wc -l <"$2") lines) differs from $1 ($(wc -l <"$1") lines)"
    fi
    log "ok: $3 ($(wc -l <"$1") lines, $(stat -c %s "$1") bytes identical)"
}

# copy_and_compare SOURCE SINK WHAT: wait for the sink to catch up, then compare bytes.
copy_and_compare() {
    wait_until "$3: sink file has caught up with the source" sink_caught_up "$1" "$2"
    assert_same_file "$1" "$2" "$3"
}

# topic_records TOPIC: records in the topic (sum of its partitions' end offsets; nothing is deleted).
topic_records() {
    "${KAFKA_TOOL[@]}" kafka-get-offsets --bootstrap-server "$BOOTSTRAP" --topic "$1" --time -1 \
        | awk -F: '{ n += $3 } END { print n + 0 }'
}

# rest METHOD PATH [JSON]: a request to the worker's REST API (Python's urllib: no curl or jq
# needed); prints the body; fails on an HTTP error or no answer within 10 s.
rest() {
    python3 - "$1" "http://127.0.0.1:$REST_PORT$2" "${3:-}" <<'EOF'
import sys, urllib.request
method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        sys.stdout.write(resp.read().decode())
except Exception as e:
    sys.exit(f"{method} {url}: {e}")
EOF
}

rest_ready() { rest GET / >/dev/null 2>&1; }

# connector_config CLASS FILE TOPIC_KEY TOPIC: the JSON config of a FileStream connector.
connector_config() {
    python3 -c 'import json, sys; print(json.dumps({"connector.class": sys.argv[1], "tasks.max": "1",
        "file": sys.argv[2], sys.argv[3]: sys.argv[4]}))' "$@"
}

# put_connector NAME CONFIG_JSON: create (or update) a connector; true once the worker accepts it.
put_connector() { rest PUT "/connectors/$1/config" "$2" >/dev/null 2>&1; }

# connector_running NAME: the connector and its single task are RUNNING.
connector_running() {
    local status
    status="$(rest GET "/connectors/$1/status" 2>/dev/null)" || return 1
    [ "$(python3 -c 'import json, sys; s = json.loads(sys.argv[1])
print(",".join([s["connector"]["state"]] + [t["state"] for t in s["tasks"]]))' "$status")" = "RUNNING,RUNNING" ]
}

# check_internal_topics: Connect's three topics as Strand describes them: the partition counts
# Connect asked for (its defaults: offsets 25, status 5, configs 1), replication factor 1, compacted.
check_internal_topics() {
    local described topic_parts topic parts line
    described="$("${KAFKA_TOOL[@]}" kafka-topics --bootstrap-server "$BOOTSTRAP" --describe)"
    for topic_parts in connect-configs:1 connect-offsets:25 connect-status:5; do
        topic="${topic_parts%%:*}" parts="${topic_parts##*:}"
        line="$(grep -P "^Topic: $topic\t" <<<"$described")" || fail "$topic not described"
        grep -q "PartitionCount: $parts\b" <<<"$line" || fail "$topic: expected $parts partitions: $line"
        grep -q "ReplicationFactor: 1\b" <<<"$line" || fail "$topic: expected replication factor 1: $line"
        grep -q "cleanup.policy=compact" <<<"$line" || fail "$topic: expected cleanup.policy=compact: $line"
    done
    log "ok: connect-configs/-offsets/-status: 1/25/5 partitions, replication factor 1, compacted"
}

# write_worker_properties FILE MODE: worker settings common to both modes, plus the mode's own.
write_worker_properties() {
    cat >"$1" <<EOF
bootstrap.servers=$BOOTSTRAP
listeners=http://127.0.0.1:$REST_PORT
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
offset.flush.interval.ms=500
# connect-file carries ServiceLoader manifests: no class path scan at start-up.
plugin.discovery=service_load
EOF
    if [ "$2" = standalone ]; then
        echo "offset.storage.file.filename=$WORK/standalone.offsets" >>"$1"
    else
        cat >>"$1" <<EOF
group.id=strand-connect
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
EOF
    fi
}

# ---------------------------------------------------------------- 1. standalone

phase_start=$SECONDS
S="$WORK/standalone"
mkdir -p "$S"
REST_PORT="$(free_port)"
write_worker_properties "$S/worker.properties" standalone
cat >"$S/source.properties" <<EOF
name=standalone-source
connector.class=FileStreamSource
tasks.max=1
file=$S/source.txt
topic=standalone-lines
EOF
cat >"$S/sink.properties" <<EOF
name=standalone-sink
connector.class=FileStreamSink
tasks.max=1
file=$S/sink.txt
topics=standalone-lines
EOF
write_lines "$S/source.txt" 0 2000
start_connect standalone "$S/connect.log" "$S/worker.properties" "$S/source.properties" "$S/sink.properties"
copy_and_compare "$S/source.txt" "$S/sink.txt" "standalone: file copied through the topic"
stop_connect
log "standalone done in $((SECONDS - phase_start))s"

# ---------------------------------------------------------------- 2. distributed

phase_start=$SECONDS
D="$WORK/distributed"
mkdir -p "$D"
REST_PORT="$(free_port)"
write_worker_properties "$D/worker.properties" distributed
write_lines "$D/source.txt" 0 2000 ascii
start_connect distributed "$D/connect.log" "$D/worker.properties"
wait_until "distributed worker's REST API answers" rest_ready
source_config="$(connector_config FileStreamSource "$D/source.txt" topic distributed-lines)"
sink_config="$(connector_config FileStreamSink "$D/sink.txt" topics distributed-lines)"
wait_until "source connector accepted" put_connector distributed-source "$source_config"
wait_until "sink connector accepted" put_connector distributed-sink "$sink_config"
wait_until "both connectors running" eval 'connector_running distributed-source && connector_running distributed-sink'
copy_and_compare "$D/source.txt" "$D/sink.txt" "distributed: file copied through the topic"
check_internal_topics

log "restarting the distributed worker (SIGTERM, start again)"
stop_connect
start_connect distributed "$D/connect.log" "$D/worker.properties"
wait_until "restarted worker's REST API answers" rest_ready
wait_until "connectors running again (from the config topic)" \
    eval 'connector_running distributed-source && connector_running distributed-sink'
write_lines "$D/source.txt" 2000 500 ascii
copy_and_compare "$D/source.txt" "$D/sink.txt" "distributed after restart: exactly the new lines appended"
records="$(topic_records distributed-lines)"
[ "$records" = 2500 ] || fail "distributed-lines holds $records records, expected 2500 (each line once)"
log "ok: distributed-lines holds each of the 2500 lines once"
stop_connect
log "distributed done in $((SECONDS - phase_start))s"
log "PASS kafka_connect_test"
