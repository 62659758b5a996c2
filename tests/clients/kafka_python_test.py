#!/usr/bin/env python3
"""Client compatibility test: kafka-python (pure Python client).

A KafkaProducer (acks='all') sends the lines of a file to an auto-created
topic; a KafkaConsumer with group_id=None and auto_offset_reset='earliest'
reads them all back (consumer_timeout_ms ends the loop); we compare the exact
set of lines and the per-partition order against the producer's record
metadata. A second consumer uses assign() with beginning/end offsets and
offsets_for_times.

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
Usage: kafka_python_test.py [LINES_FILE]
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import (TestFailure, check, check_eq, ensure_broker, log,  # noqa: E402
                       make_lines, read_lines_file, run_main, write_lines_file)

BROKER_ARGS = ["--set", "auto.create.topics.enable=true", "--set", "num.partitions=3"]
NAME = "kafka_python_test"
PARTS = 3
N = int(os.environ.get("CLIENT_TEST_LINES", "1000"))
# kafka-python >= 2.1 turns idempotence on by default, which needs
# InitProducerId; Strand does not implement it yet. Set
# KAFKA_PYTHON_IDEMPOTENCE=1 to test the default once it does.
IDEMPOTENCE = os.environ.get("KAFKA_PYTHON_IDEMPOTENCE", "0") == "1"


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    import kafka
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    log("kafka-python %s, bootstrap %s" % (kafka.__version__, bootstrap))

    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        tmp.close()
        write_lines_file(tmp.name, make_lines(N))
        path = tmp.name
    lines = read_lines_file(path)
    if len(sys.argv) <= 1:
        os.unlink(path)
    check(len(lines) == len(set(lines)), "input lines must be distinct")

    topic = "kp-lines"
    topic_times = "kp-times"

    # ---------------------------------------------------------- produce
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=IDEMPOTENCE,
                             request_timeout_ms=30000, max_block_ms=30000)
    log("producing %d lines to %s (auto-created)" % (len(lines), topic))
    futs = [producer.send(topic, value=l.encode()) for l in lines]
    producer.flush(timeout=60)
    meta = []
    for i, f in enumerate(futs):
        try:
            md = f.get(timeout=30)
        except Exception as e:
            raise TestFailure("send of line %d failed: %r" % (i, e))
        meta.append((md.partition, md.offset))
    per = {}
    for i, (p, o) in enumerate(meta):
        per.setdefault(p, []).append((o, lines[i]))
    check(set(per) <= set(range(PARTS)), "partitions used %s not within 0..%d" % (sorted(per), PARTS - 1))
    for p, lst in sorted(per.items()):
        check_eq(list(range(len(lst))), [o for o, _ in lst], "partition %d offsets 0.. in send order" % p)
    check_eq(PARTS, len(producer.partitions_for(topic)), "partitions_for(%s) (auto-created with num.partitions)" % topic)

    # timestamps for offsets_for_times: explicit CreateTime per message.
    base = (int(time.time()) - 3600) * 1000
    NT = 20
    tfuts = [producer.send(topic_times, value=("t-%02d" % i).encode(), partition=0,
                           timestamp_ms=base + i * 1000) for i in range(NT)]
    producer.flush(timeout=60)
    toffs = [f.get(timeout=30).offset for f in tfuts]
    check_eq(list(range(NT)), toffs, "%s partition 0 offsets" % topic_times)
    producer.close(timeout=30)

    # ---------------------------------------------- consume (no group)
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=10000, request_timeout_ms=30000)
    got = {}
    count = 0
    t_end = time.time() + 120
    for msg in consumer:
        got.setdefault(msg.partition, []).append((msg.offset, msg.value.decode()))
        count += 1
        if count >= len(lines) or time.time() > t_end:
            break
    consumer.close()
    consumed = [v for lst in got.values() for _, v in lst]
    check_eq(len(lines), len(consumed), "number of lines consumed from %s" % topic)
    check_eq(sorted(lines), sorted(consumed), "%s: exact set of lines" % topic)
    for p in range(PARTS):
        check_eq(per.get(p, []), got.get(p, []), "%s[%d]: (offset, line) in produce order" % (topic, p))

    # ------------------------------- assign(), offsets and offsets_for_times
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=10000, request_timeout_ms=30000)
    tp = TopicPartition(topic_times, 0)
    c.assign([tp])
    check_eq({tp: 0}, c.beginning_offsets([tp]), "beginning_offsets(%s)" % topic_times)
    check_eq({tp: NT}, c.end_offsets([tp]), "end_offsets(%s)" % topic_times)
    c.seek_to_beginning(tp)
    recs = []
    for msg in c:
        recs.append((msg.offset, msg.timestamp, msg.timestamp_type, msg.value.decode()))
        if len(recs) >= NT:
            break
    check_eq([(i, base + i * 1000, 0, "t-%02d" % i) for i in range(NT)], recs,
             "%s records (offset, CreateTime timestamp, type, value)" % topic_times)
    cases = [
        (base - 5000, 0, "before first"),
        (base, 0, "exactly first"),
        (base + 5000, 5, "exactly offset 5"),
        (base + 5500, 6, "between 5 and 6"),
        (base + (NT - 1) * 1000, NT - 1, "exactly last"),
    ]
    for ts, want, what in cases:
        r = c.offsets_for_times({tp: ts})
        check(r.get(tp) is not None, "offsets_for_times(%d) returned %r" % (ts, r))
        check_eq(want, r[tp].offset, "offsets_for_times %s" % what)
        check_eq(base + want * 1000, r[tp].timestamp, "offsets_for_times %s: timestamp" % what)
    r = c.offsets_for_times({tp: base + NT * 1000})
    check_eq(None, r.get(tp), "offsets_for_times after last (kafka-python: None)")
    c.close()


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)  # before run_main's alarm: it may exec with_broker.sh
    run_main(NAME, main)
