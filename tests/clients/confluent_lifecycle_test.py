#!/usr/bin/env python3
"""Client compatibility test: confluent-kafka (bundled librdkafka) against the log lifecycle.

  * AdminClient.delete_records moves the low watermark (answered by the broker), a consumer
    reading from the beginning starts there, and an offset past the high watermark fails;
  * a compacted topic (cleanup.policy=compact, tiny segments) written with snappy batches is
    cleaned: reading from the beginning gives one record per key, the latest, at the offset
    its delivery report named.

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import TestFailure, check, check_eq, ensure_broker, log, run_main  # noqa: E402

BROKER_ARGS = ["--set", "log.cleaner.backoff.ms=200", "--set", "log.retention.check.interval.ms=200"]
NAME = "confluent_lifecycle_test"


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
    from confluent_kafka.admin import AdminClient, NewTopic

    common = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 20000}
    admin = AdminClient(dict(common))
    new = [NewTopic("lc-del", 1, 1, config={"segment.bytes": "4096"}),
           NewTopic("lc-compact", 1, 1, config={"cleanup.policy": "compact", "segment.bytes": "4096",
                                                 "min.cleanable.dirty.ratio": "0.01"})]
    for t, f in admin.create_topics(new, operation_timeout=10, request_timeout=30).items():
        f.result(timeout=30)

    def produce(topic, records, codec):
        p = Producer(dict(common, **{"acks": "all", "compression.type": codec, "linger.ms": 5}))
        offsets = [None] * len(records)

        def cb(i):
            def done(err, msg):
                if err is not None:
                    raise TestFailure("delivery failed: %s" % err)
                offsets[i] = msg.offset()
            return done
        for i, (k, v) in enumerate(records):
            p.produce(topic, key=k, value=v, on_delivery=cb(i))
            p.poll(0)
        check_eq(0, p.flush(30), "messages left after flush")
        return offsets

    def read_all(topic):
        c = Consumer(dict(common, **{"group.id": "lc-reader", "enable.auto.commit": False}))
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.time() + 30
        while (not out or out[-1][0] + 1 < high) and high > low:
            if time.time() > deadline:
                raise TestFailure("read %d records of %s up to %d" % (len(out), topic, high))
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                raise TestFailure("consume error: %s" % m.error())
            out.append((m.offset(), m.key(), m.value()))
        c.close()
        return low, high, out

    # DeleteRecords.
    produce("lc-del", [(b"k%d" % i, b"v" * 300) for i in range(60)], "none")
    res = admin.delete_records([TopicPartition("lc-del", 0, 23)], request_timeout=30)
    for tp, f in res.items():
        check_eq(23, f.result(timeout=30).low_watermark, "low watermark")
    low, high, got = read_all("lc-del")
    check_eq((23, 60), (low, high), "watermarks after DeleteRecords")
    check_eq(23, got[0][0], "first offset read from the beginning")
    res = admin.delete_records([TopicPartition("lc-del", 0, 61)], request_timeout=30)
    for tp, f in res.items():
        try:
            f.result(timeout=30)
            raise TestFailure("DeleteRecords past the high watermark succeeded")
        except TestFailure:
            raise
        except Exception as e:
            check("OFFSET_OUT_OF_RANGE" in str(e), "expected OFFSET_OUT_OF_RANGE, got %r" % e)
    log("DeleteRecords ok")

    # Compaction of snappy batches.
    latest = {}
    for rnd in range(10):
        recs = [(b"key-%d" % k, b"r%d-%d-" % (rnd, k) + b"x" * 60) for k in range(30)]
        for (k, v), o in zip(recs, produce("lc-compact", recs, "snappy")):
            latest[k] = (o, v)
    filler = [(b"filler", b"f" * 150) for _ in range(50)]
    for (k, v), o in zip(filler, produce("lc-compact", filler, "none")):
        pass
    deadline = time.time() + 40
    while True:
        _, _, got = read_all("lc-compact")
        seen = {}
        for o, k, v in got:
            if k != b"filler":
                seen.setdefault(k, []).append((o, v))
        bad = [k for k, ov in latest.items() if seen.get(k) != [ov]]
        if not bad:
            break
        if time.time() > deadline:
            raise TestFailure("not compacted in time; e.g. %r: %r expected %r"
                              % (bad[0], seen.get(bad[0]), latest[bad[0]]))
        time.sleep(0.5)
    log("compaction ok: %d records read, %d keys" % (len(got), len(latest)))


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)
    run_main(NAME, main, timeout_s=200)
