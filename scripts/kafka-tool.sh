#!/usr/bin/env bash
# Run Kafka's own command-line tools without a Kafka install, from the jars that
# scripts/install-kafka.sh caches (installed on first use):
#
#   bash scripts/kafka-tool.sh kafka-topics --bootstrap-server 127.0.0.1:9092 --list
#   bash scripts/kafka-tool.sh kafka-producer-perf-test --topic t --num-records 100000 \
#        --record-size 1024 --throughput -1 --producer-props bootstrap.servers=127.0.0.1:9092
#
# Tools: kafka-topics, kafka-console-producer, kafka-console-consumer, kafka-consumer-groups,
# kafka-configs, kafka-get-offsets, kafka-producer-perf-test, kafka-consumer-perf-test,
# kafka-verifiable-producer, kafka-verifiable-consumer, kafka-e2e-latency, kafka-delete-records,
# kafka-log-dirs, kafka-storage, kafka-server-start (Apache Kafka's broker), connect-standalone,
# connect-distributed. `kafka-tool.sh --classpath` prints the classpath.
# Environment: KAFKA_HEAP_OPTS (default -Xmx512m), KAFKA_OPTS (more JVM flags),
# KAFKA_LOG_LEVEL (log4j level on stderr, default WARN).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIBS="$(bash "$HERE/install-kafka.sh")"

tool="${1:-}"
[ -n "$tool" ] || { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
shift
tool="${tool%.sh}"
case "$tool" in
    --classpath) echo "$LIBS/*"; exit 0 ;;
    kafka-topics) class=org.apache.kafka.tools.TopicCommand ;;
    kafka-console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
    kafka-console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-configs) class=kafka.admin.ConfigCommand ;;
    kafka-get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
    kafka-producer-perf-test) class=org.apache.kafka.tools.ProducerPerformance ;;
    kafka-consumer-perf-test) class=org.apache.kafka.tools.ConsumerPerformance ;;
    kafka-verifiable-producer) class=org.apache.kafka.tools.VerifiableProducer ;;
    kafka-verifiable-consumer) class=org.apache.kafka.tools.VerifiableConsumer ;;
    kafka-e2e-latency) class=org.apache.kafka.tools.EndToEndLatency ;;
    kafka-delete-records) class=org.apache.kafka.tools.DeleteRecordsCommand ;;
    kafka-log-dirs) class=org.apache.kafka.tools.LogDirsCommand ;;
    kafka-storage) class=kafka.tools.StorageTool ;;
    kafka-server-start) class=kafka.Kafka ;;
    connect-standalone) class=org.apache.kafka.connect.cli.ConnectStandalone ;;
    connect-distributed) class=org.apache.kafka.connect.cli.ConnectDistributed ;;
    *) echo "kafka-tool: unknown tool '$tool' (see: bash scripts/kafka-tool.sh)" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LIBS/log4j2.properties" ${KAFKA_OPTS:-} \
    -cp "$LIBS/*" "$class" "$@"
