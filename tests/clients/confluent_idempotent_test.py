#!/usr/bin/env python3
"""Client compatibility test: confluent-kafka (bundled librdkafka) idempotent
producer with every codec.

For each codec (none, gzip, snappy, lz4, zstd) a Producer with
enable.idempotence=True (acks=all implied) sends messages with unique ids to
a fresh 3-partition topic (explicit partitions and keyed ones), then:

  * every delivery report is a success, offsets are 0..n-1 per partition in
    produce order;
  * a Consumer (assign from the beginning, no group) reads every message back
    exactly once (by unique id), in order per partition, byte-identical, at
    the offset its delivery report named;
  * a raw Fetch (clientlib.raw_fetch_batches) shows the stored batches carry
    the codec librdkafka used, one producer id for the whole run (a different
    one for every producer instance: InitProducerId hands out fresh ids), and
    per partition sequences that start at 0 and continue batch after batch.

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import (TestFailure, check, check_eq, ensure_broker, log,  # noqa: E402
                       raw_fetch_batches, run_main)

BROKER_ARGS = ["--set", "auto.create.topics.enable=false"]
NAME = "confluent_idempotent_test"
PARTS = 3
N = int(os.environ.get("CLIENT_TEST_LINES", "6000"))
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    import confluent_kafka
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
    from confluent_kafka.admin import AdminClient, NewTopic

    log("confluent-kafka %s, librdkafka %s, bootstrap %s"
        % (confluent_kafka.__version__, confluent_kafka.libversion()[0], bootstrap))
    print("librdkafka version: %s" % confluent_kafka.libversion()[0], flush=True)
    common = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 20000}

    admin = AdminClient(dict(common))
    topics = {c: "rdk-idem-%s" % c for c in CODECS}
    for t, f in admin.create_topics([NewTopic(t, PARTS, 1) for t in topics.values()],
                                    operation_timeout=10, request_timeout=30).items():
        try:
            f.result(timeout=30)
        except Exception as e:
            raise TestFailure("create topic %s: %r" % (t, e))

    producer_ids = {}
    for codec in CODECS:
        t0 = time.time()
        topic = topics[codec]
        errors = []
        fatal = []
        reports = {}

        def on_error(err):
            if err.fatal():
                fatal.append(str(err))

        p = Producer(dict(common, **{"enable.idempotence": True, "acks": "all",
                                     "compression.type": codec, "linger.ms": 5,
                                     "batch.num.messages": 500, "message.timeout.ms": 60000,
                                     "error_cb": on_error}))
        sent = []
        for i in range(N):
            msg_id = "%s-%06d" % (codec, i)
            value = ("id=%s body=%s" % (msg_id, ("x%d " % (i % 97)) * (1 + i % 40))).encode()

            def cb(err, m, msg_id=msg_id):
                if err is not None:
                    errors.append("%s: %s" % (msg_id, err))
                else:
                    check(msg_id not in reports, "%s: two delivery reports for %s" % (codec, msg_id))
                    reports[msg_id] = (m.partition(), m.offset())

            while True:
                try:
                    if i % 5 == 0:
                        p.produce(topic, key=("k%d" % (i % 11)).encode(), value=value, on_delivery=cb)
                    else:
                        p.produce(topic, key=msg_id.encode(), value=value, partition=i % PARTS, on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.05)
            sent.append((msg_id, value))
            if i % 1000 == 0:
                p.poll(0)
        remaining = p.flush(60)
        check_eq(0, remaining, "%s: messages left after flush" % codec)
        check(not fatal, "%s: idempotent producer fatal error: %s" % (codec, fatal))
        check(not errors, "%s: %d delivery errors, first %s" % (codec, len(errors), errors[:3]))
        check_eq(N, len(reports), "%s: delivery reports" % codec)

        per = {}
        for msg_id, _ in sent:
            part, off = reports[msg_id]
            per.setdefault(part, []).append(off)
        for part, offs in sorted(per.items()):
            check(offs == list(range(len(offs))),
                  "%s: partition %d offsets are not 0..%d in produce order" % (codec, part, len(offs) - 1))
        log("ok: %s: %d delivery reports, offsets dense per partition" % (codec, N))

        # ------------------------------------------------------------- consume
        c = Consumer(dict(common, **{"group.id": "unused-%s" % codec, "enable.auto.commit": False,
                                     "enable.partition.eof": False, "check.crcs": True}))
        ends = {}
        for part in range(PARTS):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, part), timeout=30)
            check_eq(0, lo, "%s: partition %d low watermark" % (codec, part))
            ends[part] = hi
        check_eq(N, sum(ends.values()), "%s: sum of high watermarks (exactly once)" % codec)
        c.assign([TopicPartition(topic, part, OFFSET_BEGINNING) for part in range(PARTS)])
        by_id = dict(sent)
        got = {}
        pos = {part: 0 for part in range(PARTS)}
        deadline = time.time() + 60
        while any(pos[part] < ends[part] for part in range(PARTS)):
            check(time.time() < deadline, "%s: consume stuck at %s of %s" % (codec, pos, ends))
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                log("consumer error (retrying): %s" % m.error())
                continue
            part, off = m.partition(), m.offset()
            check(off == pos[part], "%s: partition %d: offset %d after %d (gap or reorder)"
                  % (codec, part, off, pos[part] - 1))
            pos[part] = off + 1
            v = m.value()
            msg_id = v.split(b" ", 1)[0][3:].decode()
            check(msg_id in by_id, "%s: unknown message %r" % (codec, v[:60]))
            check(msg_id not in got, "%s: message %s consumed twice" % (codec, msg_id))
            check(v == by_id[msg_id], "%s: message %s differs" % (codec, msg_id))
            check(reports[msg_id] == (part, off),
                  "%s: %s at %d/%d, delivery report said %s" % (codec, msg_id, part, off, reports[msg_id]))
            got[msg_id] = (part, off)
        c.close()
        check_eq(N, len(got), "%s: distinct messages consumed" % codec)

        # -------------------------------------------- what the broker stored
        pids = set()
        nbatches = 0
        for part in range(PARTS):
            expect_seq = 0
            for b in raw_fetch_batches(bootstrap, topic, part):
                check(b["codec_name"] == codec, "%s: stored batch %d/%d has codec %s"
                      % (codec, part, b["base_offset"], b["codec_name"]))
                check(b["producer_id"] >= 0, "%s: stored batch without producer id" % codec)
                check(b["base_sequence"] == expect_seq,
                      "%s: partition %d batch at offset %d has base sequence %d, want %d"
                      % (codec, part, b["base_offset"], b["base_sequence"], expect_seq))
                expect_seq = b["base_sequence"] + b["records"]
                pids.add((b["producer_id"], b["producer_epoch"]))
                nbatches += 1
        check_eq(1, len(pids), "%s: one producer id/epoch for the run" % codec)
        pid = pids.pop()
        check(pid[0] not in [x[0] for x in producer_ids.values()],
              "%s: producer id %d was already used by another producer: %s" % (codec, pid[0], producer_ids))
        producer_ids[codec] = pid
        log("ok: %s: %d messages exactly once; %d stored batches, codec %s, producer id %d epoch %d (%.1fs)"
            % (codec, N, nbatches, codec, pid[0], pid[1], time.time() - t0))
    log("producer ids per run: %s" % producer_ids)


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)
    run_main(NAME, main, timeout_s=280)
