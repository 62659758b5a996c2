#!/usr/bin/env python3
"""Client compatibility test: confluent-kafka (bundled librdkafka) AdminClient.

Against a broker started with `log.roll.ms` set (so one topic config has a
STATIC_BROKER_CONFIG source):

  * create_topics (with a config), again -> TOPIC_ALREADY_EXISTS;
  * describe_configs of a topic: every topic config Strand knows is listed,
    with the value and source of a topic-set one (DYNAMIC_TOPIC_CONFIG), a
    broker-set one (STATIC_BROKER_CONFIG) and a default one (DEFAULT_CONFIG);
  * incremental_alter_configs SET / DELETE / APPEND, then describe again;
    a bad value and an unknown key -> INVALID_CONFIG with a message naming the
    key; an unknown topic -> UNKNOWN_TOPIC_OR_PARTITION; validate_only changes
    nothing;
  * alter_configs (legacy): replaces the whole set of topic configs;
  * describe_configs of the broker (read-only settings) and alter_configs of
    the broker -> refused;
  * create_partitions 2 -> 4, then produce to the new partitions and consume
    the messages back; shrinking -> INVALID_PARTITIONS; unknown topic ->
    UNKNOWN_TOPIC_OR_PARTITION;
  * list_offsets: earliest, latest, max_timestamp and for_timestamp;
  * delete_topics, after which describe_configs answers UNKNOWN_TOPIC_OR_PARTITION.

(DescribeLogDirs is not exposed by confluent-kafka; tests/admin.rs covers it.)
Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import TestFailure, check, check_eq, ensure_broker, log, run_main  # noqa: E402

ROLL_MS = "3600000"
BROKER_ARGS = ["--set", "auto.create.topics.enable=false", "--set", "log.roll.ms=" + ROLL_MS]
NAME = "confluent_admin_test"
TIMEOUT = 30

# Kafka 4.1's topic configs, all described (as `kafka-configs --describe --all` shows them).
TOPIC_CONFIG_KEYS = [
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.type", "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms", "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
]


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    import confluent_kafka
    from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                                 TopicPartition, OFFSET_BEGINNING)
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ConfigSource, NewPartitions, NewTopic, OffsetSpec,
                                       ResourceType)

    log("confluent-kafka %s, librdkafka %s, bootstrap %s"
        % (confluent_kafka.__version__, confluent_kafka.libversion()[0], bootstrap))
    print("librdkafka version: %s" % confluent_kafka.libversion()[0], flush=True)
    common = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 20000}
    admin = AdminClient(dict(common))

    def wait_all(futures, what):
        out = {}
        for k, f in futures.items():
            try:
                out[k] = f.result(timeout=TIMEOUT)
            except Exception as e:
                raise TestFailure("%s %s: %r" % (what, k, e))
        return out

    def expect_error(future, code, what, words=()):
        try:
            future.result(timeout=TIMEOUT)
        except KafkaException as e:
            err = e.args[0]
            check_eq(code, err.code(), "%s: error code (%s)" % (what, err.str()))
            for w in words:
                check(w in err.str(), "%s: message %r should mention %r" % (what, err.str(), w))
            return
        raise TestFailure("%s: expected error %s, got success" % (what, code))

    def describe_topic(topic):
        res = ConfigResource(ResourceType.TOPIC, topic)
        return wait_all(admin.describe_configs([res], request_timeout=TIMEOUT), "describe_configs")[res]

    def entry(configs, name, value, source, what):
        check(name in configs, "%s: %s missing from %s" % (what, name, sorted(configs)))
        e = configs[name]
        check_eq((value, source), (e.value, ConfigSource(e.source)), "%s: %s value and source" % (what, name))

    # --- create topics -------------------------------------------------------
    topic, ts_topic = "adm-configs", "adm-timestamps"
    wait_all(admin.create_topics([NewTopic(topic, 2, 1, config={"retention.ms": "86400000"}),
                                  NewTopic(ts_topic, 1, 1)], request_timeout=TIMEOUT), "create_topics")
    fs = admin.create_topics([NewTopic(topic, 2, 1)], request_timeout=TIMEOUT)
    expect_error(fs[topic], KafkaError.TOPIC_ALREADY_EXISTS, "create existing topic")

    # --- describe topic configs ----------------------------------------------
    configs = describe_topic(topic)
    check_eq(sorted(TOPIC_CONFIG_KEYS), sorted(configs), "every topic config is described")
    entry(configs, "retention.ms", "86400000", ConfigSource.DYNAMIC_TOPIC_CONFIG, "topic-set")
    entry(configs, "segment.ms", ROLL_MS, ConfigSource.STATIC_BROKER_CONFIG, "broker-set")
    entry(configs, "segment.bytes", "1073741824", ConfigSource.DEFAULT_CONFIG, "default")
    entry(configs, "cleanup.policy", "delete", ConfigSource.DEFAULT_CONFIG, "default list")
    check(not configs["segment.bytes"].is_read_only, "topic configs are not read-only")

    # --- incremental alter ---------------------------------------------------
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ])
    wait_all(admin.incremental_alter_configs([res], request_timeout=TIMEOUT), "incremental_alter_configs")
    configs = describe_topic(topic)
    entry(configs, "segment.bytes", "1048576", ConfigSource.DYNAMIC_TOPIC_CONFIG, "after SET")
    entry(configs, "retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG, "after DELETE")
    entry(configs, "cleanup.policy", "delete,compact", ConfigSource.DYNAMIC_TOPIC_CONFIG, "after APPEND")

    def incremental(topic_name, name, value, op=AlterConfigOpType.SET, validate_only=False):
        r = ConfigResource(ResourceType.TOPIC, topic_name,
                           incremental_configs=[ConfigEntry(name, value, incremental_operation=op)])
        return admin.incremental_alter_configs([r], request_timeout=TIMEOUT, validate_only=validate_only)[r]

    expect_error(incremental(topic, "segment.bytes", "abc"), KafkaError.INVALID_CONFIG,
                 "bad segment.bytes", ["segment.bytes"])
    expect_error(incremental(topic, "retention.ms", "-7"), KafkaError.INVALID_CONFIG,
                 "retention.ms below -1", ["retention.ms"])
    expect_error(incremental(topic, "no.such.config", "1"), KafkaError.INVALID_CONFIG,
                 "unknown config key", ["no.such.config"])
    expect_error(incremental(topic, "segment.bytes", "1", AlterConfigOpType.APPEND), KafkaError.INVALID_CONFIG,
                 "APPEND to a non-list config")
    expect_error(incremental("adm-no-such-topic", "segment.bytes", "1048576"),
                 KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown topic")
    incremental(topic, "retention.ms", "1234", validate_only=True).result(timeout=TIMEOUT)
    entry(describe_topic(topic), "retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG, "validate_only")

    # --- legacy alter_configs: the whole set is replaced ----------------------
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "3600000"})
    wait_all(admin.alter_configs([res], request_timeout=TIMEOUT), "alter_configs")
    configs = describe_topic(topic)
    entry(configs, "retention.ms", "3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG, "alter_configs set")
    entry(configs, "segment.bytes", "1073741824", ConfigSource.DEFAULT_CONFIG, "alter_configs reset")
    entry(configs, "cleanup.policy", "delete", ConfigSource.DEFAULT_CONFIG, "alter_configs reset list")

    # --- broker configs --------------------------------------------------------
    md = admin.list_topics(timeout=TIMEOUT)
    broker_id = str(list(md.brokers)[0])
    bres = ConfigResource(ResourceType.BROKER, broker_id)
    bconf = wait_all(admin.describe_configs([bres], request_timeout=TIMEOUT), "describe broker")[bres]
    entry(bconf, "log.roll.ms", ROLL_MS, ConfigSource.STATIC_BROKER_CONFIG, "broker")
    entry(bconf, "auto.create.topics.enable", "false", ConfigSource.STATIC_BROKER_CONFIG, "broker")
    entry(bconf, "num.partitions", "1", ConfigSource.DEFAULT_CONFIG, "broker")
    check(bconf["num.partitions"].is_read_only, "broker settings are read-only")
    bres = ConfigResource(ResourceType.BROKER, broker_id, incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    expect_error(admin.incremental_alter_configs([bres], request_timeout=TIMEOUT)[bres],
                 KafkaError.INVALID_REQUEST, "alter a broker config", ["num.partitions"])

    # --- create partitions -----------------------------------------------------
    wait_all(admin.create_partitions([NewPartitions(topic, 4)], request_timeout=TIMEOUT), "create_partitions")
    parts = admin.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions
    check_eq([0, 1, 2, 3], sorted(parts), "partitions after create_partitions")
    expect_error(admin.create_partitions([NewPartitions(topic, 3)], request_timeout=TIMEOUT)[topic],
                 KafkaError.INVALID_PARTITIONS, "shrink partitions")
    expect_error(admin.create_partitions([NewPartitions(topic, 4)], request_timeout=TIMEOUT)[topic],
                 KafkaError.INVALID_PARTITIONS, "same partition count")
    expect_error(admin.create_partitions([NewPartitions("adm-no-such-topic", 4)],
                                         request_timeout=TIMEOUT)["adm-no-such-topic"],
                 KafkaError.UNKNOWN_TOPIC_OR_PART, "create partitions of an unknown topic")

    producer = Producer(dict(common, **{"enable.idempotence": True}))
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for p in (2, 3):
        for i in range(5):
            producer.produce(topic, ("p%d-m%d" % (p, i)).encode(), partition=p, on_delivery=on_delivery)
    check_eq(0, producer.flush(TIMEOUT), "messages left after flush")
    check_eq([], errors, "delivery errors to the new partitions")
    consumer = Consumer(dict(common, **{"group.id": "adm-test", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in (2, 3)])
    got = {2: [], 3: []}
    deadline = time.time() + TIMEOUT
    while sum(len(v) for v in got.values()) < 10 and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is None:
            continue
        if m.error():
            raise TestFailure("consume: %s" % m.error())
        got[m.partition()].append(m.value().decode())
    consumer.close()
    for p in (2, 3):
        check_eq(["p%d-m%d" % (p, i) for i in range(5)], got[p], "messages read back from new partition %d" % p)

    # --- list_offsets ----------------------------------------------------------
    base = int(time.time() * 1000) - 60_000
    for i in range(10):
        producer.produce(ts_topic, b"ts-%d" % i, partition=0, timestamp=base + i * 1000, on_delivery=on_delivery)
        producer.flush(TIMEOUT)  # one batch per record: timestamps resolve per batch
    check_eq([], errors, "delivery errors to the timestamp topic")
    tp = TopicPartition(ts_topic, 0)

    def offset_of(spec, what):
        res = wait_all(admin.list_offsets({tp: spec}, request_timeout=TIMEOUT), "list_offsets " + what)
        return res[tp].offset

    check_eq(0, offset_of(OffsetSpec.earliest(), "earliest"), "list_offsets earliest")
    check_eq(10, offset_of(OffsetSpec.latest(), "latest"), "list_offsets latest")
    check_eq(9, offset_of(OffsetSpec.max_timestamp(), "max_timestamp"), "list_offsets max_timestamp")
    check_eq(4, offset_of(OffsetSpec.for_timestamp(base + 3500), "for_timestamp"), "list_offsets for_timestamp")
    check_eq(0, offset_of(OffsetSpec.for_timestamp(base - 5000), "for_timestamp"), "list_offsets before the first")
    check_eq(-1, offset_of(OffsetSpec.for_timestamp(base + 60_000_000), "for_timestamp"),
             "list_offsets after the last")

    # --- delete ------------------------------------------------------------------
    wait_all(admin.delete_topics([topic, ts_topic], request_timeout=TIMEOUT), "delete_topics")
    res = ConfigResource(ResourceType.TOPIC, topic)
    expect_error(admin.describe_configs([res], request_timeout=TIMEOUT)[res],
                 KafkaError.UNKNOWN_TOPIC_OR_PART, "describe a deleted topic")


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)
    run_main(NAME, main)
