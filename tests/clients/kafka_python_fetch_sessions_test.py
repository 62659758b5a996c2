#!/usr/bin/env python3
"""Client compatibility test: incremental fetch sessions (KIP-227) with kafka-python.

kafka-python (>= 2.1) opens a fetch session per broker and then sends incremental
fetches naming only the partitions whose position moved. A consumer assigned to 24
partitions reads records produced in waves to a few partitions at a time; every
record must arrive exactly once and in order, and the session must really be in use:
a non-zero session id with an epoch well past the first request. A second consumer
with sessions disabled reads the same data as the reference.

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import check, check_eq, ensure_broker, log, run_main  # noqa: E402

BROKER_ARGS = ["--set", "auto.create.topics.enable=false"]
NAME = "kafka_python_fetch_sessions_test"
TOPIC = "kp-sessions"
PARTS = 24
WAVES = 8
PER_WAVE = 50


def consume_all(bootstrap, expected_total, sessions):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100,
                      enable_incremental_fetch_sessions=sessions)
    tps = [TopicPartition(TOPIC, p) for p in range(PARTS)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = {}
    deadline = time.time() + 60
    n = 0
    while n < expected_total and time.time() < deadline:
        for tp, recs in c.poll(timeout_ms=200).items():
            for r in recs:
                got.setdefault(tp.partition, []).append((r.offset, r.value.decode()))
                n += 1
    return c, got, n


def main():
    bootstrap = ensure_broker(BROKER_ARGS)
    import kafka
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    log("kafka-python %s, bootstrap %s" % (kafka.__version__, bootstrap))

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(TOPIC, PARTS, 1)])
    admin.close()

    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=100)
    tps = [TopicPartition(TOPIC, p) for p in range(PARTS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    sent = {}
    got = {}
    total = 0
    for wave in range(WAVES):
        # Each wave writes to 3 partitions only: the others have no news for the session.
        parts = [(wave * 3 + k) % PARTS for k in range(3)]
        for i in range(PER_WAVE):
            p = parts[i % 3]
            v = "w%d-p%d-%04d" % (wave, p, i)
            md = producer.send(TOPIC, value=v.encode(), partition=p).get(timeout=30)
            sent.setdefault(p, []).append((md.offset, v))
            total += 1
        producer.flush()
        deadline = time.time() + 30
        while sum(len(v) for v in got.values()) < total and time.time() < deadline:
            for tp, recs in consumer.poll(timeout_ms=200).items():
                for r in recs:
                    got.setdefault(tp.partition, []).append((r.offset, r.value.decode()))
        check(sum(len(v) for v in got.values()) == total,
              "wave %d: consumed %d of %d" % (wave, sum(len(v) for v in got.values()), total))
    check_eq(sent, got, "every record exactly once, in order, with its offset (sessions on)")

    handlers = consumer._fetcher._session_handlers
    check(len(handlers) == 1, "one fetch session handler (one broker), got %d" % len(handlers))
    meta = list(handlers.values())[0].next_metadata
    log("session id %d, next epoch %d" % (meta.session_id, meta.epoch))
    check(meta.session_id != 0, "the broker granted a fetch session")
    check(meta.epoch > 3, "the consumer kept using the session incrementally (epoch %d)" % meta.epoch)
    consumer.close()

    ref, ref_got, n = consume_all(bootstrap, total, sessions=False)
    ref.close()
    check_eq(sent, ref_got, "sessionless consumer reads the same")


if __name__ == "__main__":
    run_main(NAME, main, timeout_s=180)
