#!/usr/bin/env python3
"""Client compatibility test: kafka-python with every compression codec.

For each codec kafka-python supports here (gzip; snappy via python-snappy or
cramjam; lz4 via lz4; zstd via zstandard) and for both producer modes
(enable_idempotence=True, kafka-python 3.x's default, which needs
InitProducerId; and enable_idempotence=False):

  * a KafkaProducer (acks='all', that compression_type) sends messages to a
    fresh 3-partition topic: small lines plus a few large, very compressible
    values (so batches really are compressed), keyed so they spread over the
    partitions;
  * the record metadata offsets must be 0..n-1 per partition, in send order;
  * a KafkaConsumer (assign + seek_to_beginning, no group) reads everything
    back: exactly the messages sent, each once, at the offsets the producer
    was told, keys and values byte-identical;
  * a raw Fetch (clientlib.raw_fetch_batches, no client library) shows every
    stored batch still carries the producer's codec (stored as sent) and a
    producer id exactly when the producer was idempotent.

A codec whose Python package is missing fails the test (install with
scripts/install-test-deps.sh); set KAFKA_PYTHON_SKIP_MISSING_CODECS=1 to skip
such codecs instead.

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import (TestFailure, check, check_eq, check_stored_batches,  # noqa: E402
                       ensure_broker, log, run_main)

BROKER_ARGS = ["--set", "auto.create.topics.enable=true", "--set", "num.partitions=3"]
NAME = "kafka_python_codecs_test"
PARTS = 3
N = int(os.environ.get("CLIENT_TEST_LINES", "1500"))
CODECS = ["gzip", "snappy", "lz4", "zstd"]


def messages(codec, idem):
    out = []
    for i in range(N):
        key = ("key-%d" % (i % 37)).encode()
        if i % 250 == 0:
            # large, very compressible value
            value = (("%s-%s-%06d " % (codec, idem, i)) * 800).encode()
        else:
            value = ("%s idem=%s message %06d payload %d" % (codec, idem, i, (i * 7919) % 100003)).encode()
        out.append((key, value))
    return out


def run_one(bootstrap, codec, idem):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = "kp-codec-%s-%s" % (codec, "idem" if idem else "plain")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    admin.create_topics([NewTopic(topic, PARTS, 1)])
    admin.close()

    msgs = messages(codec, idem)
    t0 = time.time()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec,
                             enable_idempotence=idem, linger_ms=10, batch_size=64 * 1024,
                             request_timeout_ms=30000, max_block_ms=30000)
    futs = [producer.send(topic, key=k, value=v) for k, v in msgs]
    producer.flush(timeout=60)
    meta = []
    for i, f in enumerate(futs):
        try:
            md = f.get(timeout=30)
        except Exception as e:
            raise TestFailure("%s idem=%s: send of message %d failed: %r" % (codec, idem, i, e))
        meta.append((md.partition, md.offset))
    producer.close(timeout=10)

    per = {}
    for i, (p, o) in enumerate(meta):
        per.setdefault(p, []).append((o, i))
    for p, lst in sorted(per.items()):
        check_eq(list(range(len(lst))), [o for o, _ in lst],
                 "%s idem=%s: partition %d offsets 0.. in send order" % (codec, idem, p))
    check(len(per) > 1, "%s: keys should spread over partitions, got %s" % (codec, sorted(per)))
    expected = {(p, o): msgs[i] for i, (p, o) in enumerate(meta)}

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=2000,
                             request_timeout_ms=30000)
    tps = [TopicPartition(topic, p) for p in range(PARTS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    check_eq(N, sum(ends.values()), "%s idem=%s: sum of end offsets" % (codec, idem))
    got = {}
    deadline = time.time() + 60
    while sum(1 for tp in tps if consumer.position(tp) < ends[tp]) and time.time() < deadline:
        for tp, recs in consumer.poll(timeout_ms=1000).items():
            for r in recs:
                k = (tp.partition, r.offset)
                check(k not in got, "%s idem=%s: offset %s consumed twice" % (codec, idem, k))
                got[k] = (r.key, r.value)
    consumer.close()
    check_eq(len(expected), len(got), "%s idem=%s: consumed count" % (codec, idem))
    bad = [k for k in expected if got.get(k) != expected[k]]
    check(not bad, "%s idem=%s: %d messages differ, first at %s: got %r"
          % (codec, idem, len(bad), bad[:1], got.get(bad[0]) if bad else None))
    log("ok: %s idem=%s: %d messages consumed back exactly" % (codec, idem, len(got)))

    nb = check_stored_batches(bootstrap, topic, PARTS, codec, idempotent=idem)
    log("ok: %s idem=%s: all %d stored batches are %s-compressed%s (%.1fs)"
        % (codec, idem, nb, codec, ", with a producer id" if idem else ", without producer id",
           time.time() - t0))


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    import kafka
    from kafka import codec as kcodec
    log("kafka-python %s, bootstrap %s" % (kafka.__version__, bootstrap))
    have = {"gzip": kcodec.has_gzip(), "snappy": kcodec.has_snappy(),
            "lz4": kcodec.has_lz4(), "zstd": kcodec.has_zstd()}
    log("codec support in this kafka-python: %s" % have)
    missing = [c for c in CODECS if not have[c]]
    if missing:
        if os.environ.get("KAFKA_PYTHON_SKIP_MISSING_CODECS") == "1":
            log("SKIPPING codecs without their Python package: %s" % missing)
        else:
            raise TestFailure("kafka-python cannot use %s here: install python-snappy, lz4, zstandard "
                              "(scripts/install-test-deps.sh)" % missing)
    for codec in CODECS:
        if not have[codec]:
            continue
        for idem in (True, False):
            run_one(bootstrap, codec, idem)


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)
    run_main(NAME, main, timeout_s=280)
