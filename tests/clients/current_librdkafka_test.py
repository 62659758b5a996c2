#!/usr/bin/env python3
"""Client compatibility test: confluent-kafka (bundles a current librdkafka).

Debian only ships an old kcat/librdkafka (2.0.x); this runs the same flow with
the librdkafka bundled in the confluent-kafka wheel:
  CreateTopics, metadata, produce the lines of a file (acks=all), consume them
  back exactly with assign() (no consumer group), watermarks,
  offsets_for_times, AdminClient.list_offsets.

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
Usage: current_librdkafka_test.py [LINES_FILE]
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import (TestFailure, check, check_eq, ensure_broker, log,  # noqa: E402
                       make_lines, read_lines_file, run_main, write_lines_file)

BROKER_ARGS = ["--set", "auto.create.topics.enable=true", "--set", "num.partitions=3"]
NAME = "current_librdkafka_test"
PARTS = 3
N = int(os.environ.get("CLIENT_TEST_LINES", "1000"))


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    import confluent_kafka
    from confluent_kafka import (Consumer, KafkaError, Producer, TopicPartition,
                                 TIMESTAMP_CREATE_TIME, OFFSET_BEGINNING)
    from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

    log("confluent-kafka %s, librdkafka %s, bootstrap %s"
        % (confluent_kafka.__version__, confluent_kafka.libversion()[0], bootstrap))
    print("librdkafka version: %s" % confluent_kafka.libversion()[0], flush=True)

    if len(sys.argv) > 1:
        lines = read_lines_file(sys.argv[1])
    else:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        tmp.close()
        write_lines_file(tmp.name, make_lines(N))
        lines = read_lines_file(tmp.name)
        os.unlink(tmp.name)
    check(len(lines) == len(set(lines)), "input lines must be distinct")

    common = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 20000}
    topic = "rdk-lines"
    topic_keyed = "rdk-keyed"
    topic_times = "rdk-times"

    # ---------------------------------------------------------- CreateTopics
    admin = AdminClient(dict(common))
    futs = admin.create_topics(
        [NewTopic(topic, PARTS, 1), NewTopic(topic_keyed, PARTS, 1), NewTopic(topic_times, 1, 1)],
        operation_timeout=10, request_timeout=30)
    for t, f in futs.items():
        try:
            f.result(timeout=40)
        except Exception as e:
            raise TestFailure("CreateTopics %s failed: %s" % (t, e))
        log("ok: created topic %s" % t)

    # ---------------------------------------------------------- metadata
    md = None
    for _ in range(20):
        md = admin.list_topics(timeout=15)
        if all(t in md.topics and len(md.topics[t].partitions) > 0 for t in (topic, topic_keyed, topic_times)):
            break
        time.sleep(0.5)
    check_eq([1], sorted(md.brokers), "metadata broker ids")
    b = md.brokers[1]
    check_eq(bootstrap, "%s:%d" % (b.host, b.port), "metadata broker 1 address")
    check_eq(1, md.controller_id, "metadata controller id")
    for t, n in ((topic, PARTS), (topic_keyed, PARTS), (topic_times, 1)):
        check(t in md.topics, "topic %s missing from metadata (have %s)" % (t, sorted(md.topics)))
        tm = md.topics[t]
        check(tm.error is None, "topic %s metadata error: %s" % (t, tm.error))
        check_eq(list(range(n)), sorted(tm.partitions), "partitions of %s" % t)
        for p in tm.partitions.values():
            check(p.error is None, "%s[%d] error %s" % (t, p.id, p.error))
            check_eq((1, [1], [1]), (p.leader, list(p.replicas), list(p.isrs)),
                     "%s[%d] leader/replicas/isrs" % (t, p.id))

    # ---------------------------------------------------------- produce
    def produce_all(tp, items, **extra):
        """items: list of (key, value, kwargs). Returns list of (partition, offset) per item."""
        prod = Producer(dict(common, **{"acks": "all", "linger.ms": 5,
                                         "enable.idempotence": False}, **extra))
        results = [None] * len(items)
        errors = []

        def cb_for(i):
            def cb(err, msg):
                if err is not None:
                    errors.append("item %d: %s" % (i, err))
                else:
                    results[i] = (msg.partition(), msg.offset())
            return cb

        for i, (k, v, kw) in enumerate(items):
            while True:
                try:
                    prod.produce(tp, value=v, key=k, on_delivery=cb_for(i), **kw)
                    break
                except BufferError:
                    prod.poll(0.1)
            prod.poll(0)
        remaining = prod.flush(60)
        check(remaining == 0, "%d messages still undelivered after flush(60)" % remaining)
        check(not errors, "delivery errors for %s: %s" % (tp, errors[:5]))
        check(all(r is not None for r in results), "missing delivery reports")
        return results

    def check_offsets(what, results):
        """Per partition, offsets are 0..n-1 in produce order."""
        per = {}
        for i, (p, o) in enumerate(results):
            per.setdefault(p, []).append(o)
        for p, offs in sorted(per.items()):
            check_eq(list(range(len(offs))), offs, "%s: partition %d offsets in produce order" % (what, p))
        return per

    log("producing %d lines to %s (no key)" % (len(lines), topic))
    # Without stickiness librdkafka spreads null-key messages at random: with the default
    # (sticky.partitioning.linger.ms = 2 x linger.ms) a fast machine can send all 1000 lines
    # within one sticky period, to one partition (seen once in CI), and the check below would
    # test the client's timing instead of the broker.
    res = produce_all(topic, [(None, l.encode(), {}) for l in lines], **{"sticky.partitioning.linger.ms": 0})
    per = check_offsets(topic, res)
    check(len(per) > 1, "null-key messages all went to one partition: %s" % sorted(per))

    keyed = [("key-%03d" % (i % 37), "value-%06d" % i) for i in range(len(lines))]
    log("producing %d keyed messages to %s" % (len(keyed), topic_keyed))
    res_k = produce_all(topic_keyed, [(k.encode(), v.encode(),
                                       {"headers": [("idx", str(i).encode())]})
                                      for i, (k, v) in enumerate(keyed)])
    check_offsets(topic_keyed, res_k)
    key_part = {}
    for (k, _), (p, _) in zip(keyed, res_k):
        check(key_part.setdefault(k, p) == p, "key %s went to partitions %d and %d" % (k, key_part[k], p))

    # ---------------------------------------------------------- consume
    def consume_all(tp, nparts):
        c = Consumer(dict(common, **{
            # librdkafka requires a group.id, but assign() never joins a group;
            # no commits are made (no group coordinator needed).
            "group.id": "strand-unused-group",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }))
        try:
            c.assign([TopicPartition(tp, p, OFFSET_BEGINNING) for p in range(nparts)])
            got = {p: [] for p in range(nparts)}
            eof = set()
            deadline = time.time() + 60
            while len(eof) < nparts:
                check(time.time() < deadline, "%s: no EOF on partitions %s within 60s (got %s)"
                      % (tp, sorted(set(range(nparts)) - eof), {p: len(v) for p, v in got.items()}))
                m = c.poll(1.0)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise TestFailure("consume %s: %s" % (tp, m.error()))
                got[m.partition()].append(m)
            lo_hi = {p: c.get_watermark_offsets(TopicPartition(tp, p), timeout=15) for p in range(nparts)}
            return got, lo_hi, c
        except BaseException:
            c.close()
            raise

    got, wm, c = consume_all(topic, PARTS)
    c.close()
    for p in range(PARTS):
        want = [lines[i] for i, (pp, _) in sorted(enumerate(res), key=lambda x: x[1][1]) if pp == p]
        msgs = got[p]
        check_eq(want, [m.value().decode() for m in msgs], "%s[%d] values in order" % (topic, p))
        check_eq(list(range(len(want))), [m.offset() for m in msgs], "%s[%d] offsets" % (topic, p))
        check_eq((0, len(want)), tuple(wm[p]), "%s[%d] watermarks (low, high)" % (topic, p))
        for m in msgs:
            check(m.key() is None, "%s[%d]@%d: unexpected key %r" % (topic, p, m.offset(), m.key()))
            ts_type, ts = m.timestamp()
            check(ts_type == TIMESTAMP_CREATE_TIME, "%s[%d]@%d timestamp type %d" % (topic, p, m.offset(), ts_type))
            check(abs(ts - time.time() * 1000) < 600000, "%s[%d]@%d timestamp %d not recent" % (topic, p, m.offset(), ts))
    check_eq(sorted(lines), sorted(m.value().decode() for p in got for m in got[p]),
             "%s: every line exactly once" % topic)

    got_k, _, c = consume_all(topic_keyed, PARTS)
    c.close()
    back = {}
    for p, msgs in got_k.items():
        for m in msgs:
            hdrs = m.headers() or []
            idx = int(dict(hdrs).get("idx", b"-1"))
            check(idx >= 0, "%s[%d]@%d missing header idx: %r" % (topic_keyed, p, m.offset(), hdrs))
            check(res_k[idx] == (p, m.offset()),
                  "%s: message %d consumed at %s, delivered at %s" % (topic_keyed, idx, (p, m.offset()), res_k[idx]))
            back[idx] = (m.key().decode(), m.value().decode())
    check_eq(dict(enumerate(keyed)), back, "%s: keys, values and headers round-trip" % topic_keyed)

    # ---------------------------------------------------------- times
    base = (int(time.time()) - 3600) * 1000
    NT = 20
    log("producing %d messages to %s with timestamps base+i*1000" % (NT, topic_times))
    res_t = produce_all(topic_times, [(None, ("t-%02d" % i).encode(), {"timestamp": base + i * 1000})
                                      for i in range(NT)])
    check_eq([(0, i) for i in range(NT)], res_t, "%s delivery offsets" % topic_times)

    got_t, wm_t, c = consume_all(topic_times, 1)
    try:
        check_eq([(TIMESTAMP_CREATE_TIME, base + i * 1000) for i in range(NT)],
                 [m.timestamp() for m in got_t[0]], "%s timestamps round-trip" % topic_times)
        check_eq((0, NT), tuple(wm_t[0]), "%s watermarks" % topic_times)
        cases = [
            (base - 5000, 0, "before first"),
            (base, 0, "exactly first"),
            (base + 5000, 5, "exactly offset 5"),
            (base + 5500, 6, "between 5 and 6"),
            (base + (NT - 1) * 1000, NT - 1, "exactly last"),
            (base + NT * 1000, -1, "after last (Kafka: -1)"),
        ]
        for ts, want, what in cases:
            r = c.offsets_for_times([TopicPartition(topic_times, 0, ts)], timeout=15)
            check(r[0].error is None, "offsets_for_times(%d) error: %s" % (ts, r[0].error))
            check_eq(want, r[0].offset, "offsets_for_times %s" % what)
    finally:
        c.close()

    # AdminClient.list_offsets (ListOffsets through the admin API).
    # For a timestamp query Kafka returns the found record's timestamp.
    specs = {
        "earliest": (OffsetSpec.earliest(), 0, None),
        "latest": (OffsetSpec.latest(), NT, None),
        "max_timestamp": (OffsetSpec.max_timestamp(), NT - 1, base + (NT - 1) * 1000),
        "for_timestamp(base+5500)": (OffsetSpec.for_timestamp(base + 5500), 6, base + 6000),
    }
    for what, (spec, want, want_ts) in specs.items():
        fut = admin.list_offsets({TopicPartition(topic_times, 0): spec}, request_timeout=30)
        try:
            r = list(fut.values())[0].result(timeout=40)
        except Exception as e:
            raise TestFailure("AdminClient.list_offsets %s failed: %s" % (what, e))
        check_eq(want, r.offset, "AdminClient.list_offsets %s: offset" % what)
        if want_ts is not None:
            check_eq(want_ts, r.timestamp, "AdminClient.list_offsets %s: timestamp" % what)


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)  # before run_main's alarm: it may exec with_broker.sh
    run_main(NAME, main)
