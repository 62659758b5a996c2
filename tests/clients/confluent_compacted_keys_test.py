#!/usr/bin/env python3
"""Client compatibility test: confluent-kafka (bundled librdkafka) producing to a
compacted topic (cleanup.policy=compact).

  * a record without a key is refused: its delivery report carries
    INVALID_RECORD (the broker's per-record error, KIP-467), with each codec;
  * keyed records on the same topic are delivered, at consecutive offsets
    (the refused records took none).

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import TestFailure, check_eq, ensure_broker, log, run_main  # noqa: E402

BROKER_ARGS = ["--set", "auto.create.topics.enable=false"]
NAME = "confluent_compacted_keys_test"
TOPIC = "rdk-compacted-keys"
CODECS = ["none", "gzip", "lz4", "zstd"]


def send(producer, key):
    """Produces one record and returns its delivery report (error, offset)."""
    reports = []
    producer.produce(TOPIC, value=b"v", key=key, partition=0,
                     on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    producer.flush(30)
    if len(reports) != 1:
        raise TestFailure("no delivery report for key %r" % key)
    return reports[0]


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(TOPIC, 1, 1, config={"cleanup.policy": "compact"})
    for t, f in admin.create_topics([topic], request_timeout=30).items():
        f.result(timeout=30)
    expected = 0
    for codec in CODECS:
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "retries": 0})
        err, off = send(p, b"k-" + codec.encode())
        check_eq((None, expected), (err, off), "%s: keyed record delivered" % codec)
        err, _ = send(p, None)
        if err is None or err.code() != KafkaError.INVALID_RECORD:
            raise TestFailure("%s: keyless record: expected INVALID_RECORD, got %r" % (codec, err))
        log("ok: %s: keyless record refused: %s" % (codec, err))
        err, off = send(p, b"k-" + codec.encode())
        check_eq((None, expected + 1), (err, off), "%s: keyed record after the refused one" % codec)
        expected += 2


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)
    run_main(NAME, main, timeout_s=120)
