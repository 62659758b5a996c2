#!/bin/bash
# bash scripts/delete-latency.sh [BIN]: latency of a 100k records/s acks=all producer on topic "a" while a 2 GB topic
# ("big", 8 partitions) is deleted 3 s into its run.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
B=${1:-$REPO/target/release/strand}
d="$REPO/target/bench-data/del"; rm -rf "$d"; mkdir -p "$d"
port=$((20000 + RANDOM % 20000))
$B serve --listen 127.0.0.1:$port --data-dir "$d" --set num.partitions=8 >"$REPO/target/delete-latency-broker.log" 2>&1 & pid=$!; sleep 2
P="$REPO/target/release/strand perf produce --record-size 1024 --producer-props bootstrap.servers=127.0.0.1:$port acks=all --latency-us"
$P --topic big --num-records 2000000 --throughput -1 > /dev/null 2>&1
$P --topic a --num-records 1000 --throughput -1 > /dev/null 2>&1
( sleep 3; python3 -c "
from confluent_kafka.admin import AdminClient
import time
a = AdminClient({'bootstrap.servers': '127.0.0.1:$port'})
t = time.time()
for _, f in a.delete_topics(['big'], operation_timeout=30).items(): f.result()
print('delete took %.3f s' % (time.time() - t))
" ) & del=$!
$P --topic a --num-records 1000000 --throughput 100000 | tail -2
wait $del
kill -9 $pid; wait $pid 2>/dev/null; rm -rf "$d"
