#!/usr/bin/env python3
"""Client compatibility test: consumer groups with kafka-python 3.x.

1. Resume after commit: a KafkaConsumer in group G (enable_auto_commit=False,
   auto_offset_reset='earliest') reads all N messages, commit()s and closes; a
   second run with the same group_id gets none of them, only the messages
   produced after the commit, starting exactly at the committed offsets.
2. OffsetCommit metadata round-trip: commit({tp: OffsetAndMetadata(offset,
   "meta-string", -1)}) from a subscribed member and from a standalone
   (assign()) consumer; checked with committed(tp, metadata=True) and
   KafkaAdminClient.list_group_offsets.
3. auto_offset_reset for a new group: 'earliest' reads every existing
   message; 'latest' reads only messages produced after it joined.
4. Admin: describe_groups (Stable + member assignment for a live group, Empty
   for a closed one), list_groups, delete_groups (non-empty group ->
   NonEmptyGroupError, empty group -> deleted, unknown -> GroupIdNotFoundError),
   delete_group_offsets (OffsetDelete).

kafka-python 3.x renamed the admin group calls (describe_consumer_groups ->
describe_groups, list_consumer_groups -> list_groups, delete_consumer_groups ->
delete_groups, list_consumer_group_offsets -> list_group_offsets); this test
uses the 3.x names. Producers use enable_idempotence=False (no InitProducerId).

Uses $BOOTSTRAP if set, otherwise starts its own broker (with_broker.sh).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clientlib import TestFailure, check, check_eq, ensure_broker, log, run_main  # noqa: E402

# Groups start rebalancing immediately: one consumer per group here.
BROKER_ARGS = ["--set", "group.initial.rebalance.delay.ms=0",
               "--set", "auto.create.topics.enable=false"]
NAME = "kafka_python_groups_test"


def main():
    bootstrap = os.environ["BOOTSTRAP"]
    import kafka
    import kafka.errors as Errors
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    log("kafka-python %s, bootstrap %s" % (kafka.__version__, bootstrap))
    check(int(kafka.__version__.split(".")[0]) >= 3,
          "this test uses the kafka-python 3.x API; found %s" % kafka.__version__)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                             enable_idempotence=False, request_timeout_ms=30000,
                             max_block_ms=30000)

    def create(topic, parts):
        admin.create_topics({topic: {"num_partitions": parts, "replication_factor": 1}},
                            wait_for_metadata=True)
        check_eq(set(range(parts)), producer.partitions_for(topic), "partitions of %s" % topic)

    def produce(topic, per_partition, tag, parts=2):
        """Send per_partition messages to each partition; return [(p, offset, value)]."""
        futs = []
        for i in range(per_partition):
            for p in range(parts):
                v = "%s-p%d-%03d" % (tag, p, i)
                futs.append((p, v, producer.send(topic, key=("k%d" % i).encode(), value=v.encode(),
                                                 partition=p)))
        producer.flush(timeout=30)
        out = []
        for p, v, f in futs:
            md = f.get(timeout=30)
            check(md.partition == p, "sent %s to partition %d, landed in %d" % (v, p, md.partition))
            out.append((p, md.offset, v))
        return out

    def new_consumer(group, topic=None, **kw):
        cfg = dict(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                   auto_offset_reset="earliest", request_timeout_ms=30000,
                   session_timeout_ms=10000, heartbeat_interval_ms=1000,
                   fetch_max_wait_ms=200)
        cfg.update(kw)
        return KafkaConsumer(topic, **cfg) if topic else KafkaConsumer(**cfg)

    def consume(consumer, want, timeout_s=30, settle_s=0.0):
        """Poll until `want` records arrived (then keep polling settle_s more
        seconds to catch extras); return [(p, offset, value)]."""
        got = []
        deadline = time.time() + timeout_s
        while len(got) < want and time.time() < deadline:
            for tp, recs in consumer.poll(timeout_ms=500).items():
                got.extend((r.partition, r.offset, r.value.decode()) for r in recs)
        end = time.time() + settle_s
        while time.time() < end:
            for tp, recs in consumer.poll(timeout_ms=200).items():
                got.extend((r.partition, r.offset, r.value.decode()) for r in recs)
        return got

    def wait_assigned(consumer, n, timeout_s=30):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            consumer.poll(timeout_ms=200)
            a = consumer.assignment()
            if a and len(a) == n:
                return set(a)
        raise TestFailure("consumer was not assigned %d partitions within %ds (assignment %r)"
                          % (n, timeout_s, consumer.assignment()))

    def group_offsets(group):
        return admin.list_group_offsets({group: None})[group]

    # ------------------------------------------------- 1. resume after commit
    topic = "kp-groups-resume"
    G = "kp-group-resume"
    create(topic, 2)
    tps = [TopicPartition(topic, p) for p in range(2)]
    N = 25
    first = produce(topic, N, "first")
    c1 = new_consumer(G, topic)
    got = consume(c1, 2 * N, settle_s=1.0)
    check_eq(sorted(first), sorted(got), "run 1 (group %s): every message exactly once" % G)
    for p in range(2):
        check_eq([o for pp, o, _ in first if pp == p], [o for pp, o, _ in got if pp == p],
                 "run 1: partition %d offsets in order" % p)
    check_eq({tp: None for tp in tps}, {tp: c1.committed(tp) for tp in tps},
             "committed() before commit (auto commit off)")
    c1.commit()
    check_eq({tp: N for tp in tps}, {tp: c1.committed(tp) for tp in tps}, "committed() after commit()")
    c1.close()
    check_eq({tp: N for tp in tps}, {tp: om.offset for tp, om in group_offsets(G).items()},
             "admin.list_group_offsets(%s) after close" % G)

    second = produce(topic, 3, "second")
    c2 = new_consumer(G, topic)
    got2 = consume(c2, 6, settle_s=2.0)
    check_eq(sorted(second), sorted(got2),
             "run 2 (same group): only the messages produced after the commit")
    check_eq({0: N, 1: N}, {p: min(o for pp, o, _ in got2 if pp == p) for p in range(2)},
             "run 2 starts exactly at the committed offsets")
    c2.commit()
    check_eq({tp: N + 3 for tp in tps}, {tp: c2.committed(tp) for tp in tps}, "run 2 committed()")
    c2.close()

    # ------------------------------------------- 2. commit metadata round-trip
    GM = "kp-group-meta"
    cm = new_consumer(GM, topic)
    check_eq(set(tps), wait_assigned(cm, 2), "member of %s assigned both partitions" % GM)
    cm.commit({tps[0]: OffsetAndMetadata(7, "meta-string", -1),
               tps[1]: OffsetAndMetadata(3, "other meta \u00e9\u4e2d", -1)})
    om0 = cm.committed(tps[0], metadata=True)
    om1 = cm.committed(tps[1], metadata=True)
    check_eq((7, "meta-string"), (om0.offset, om0.metadata), "committed(tp0, metadata=True)")
    check_eq((3, "other meta \u00e9\u4e2d"), (om1.offset, om1.metadata), "committed(tp1, metadata=True) (non-ASCII)")
    offs = group_offsets(GM)
    check_eq({tps[0]: (7, "meta-string"), tps[1]: (3, "other meta \u00e9\u4e2d")},
             {tp: (om.offset, om.metadata) for tp, om in offs.items()},
             "admin.list_group_offsets(%s): offset and metadata" % GM)
    # Overwrite with an empty metadata string.
    cm.commit({tps[0]: OffsetAndMetadata(9, "", -1)})
    om0 = cm.committed(tps[0], metadata=True)
    check_eq((9, ""), (om0.offset, om0.metadata), "re-commit with empty metadata")
    cm.close()

    # Standalone consumer (assign(), generation -1, no member id).
    GS = "kp-group-standalone"
    cs = new_consumer(GS)
    cs.assign(tps)
    cs.commit({tps[1]: OffsetAndMetadata(11, "standalone-meta", -1)})
    om = cs.committed(tps[1], metadata=True)
    check_eq((11, "standalone-meta"), (om.offset, om.metadata), "standalone commit + committed()")
    check_eq(None, cs.committed(tps[0]), "standalone: uncommitted partition -> None")
    cs.close()
    offs = group_offsets(GS)
    check_eq({tps[1]: (11, "standalone-meta")}, {tp: (o.offset, o.metadata) for tp, o in offs.items()},
             "admin.list_group_offsets(%s)" % GS)

    # -------------------------------------- 3. auto_offset_reset for new groups
    rtopic = "kp-groups-reset"
    create(rtopic, 2)
    rtps = [TopicPartition(rtopic, p) for p in range(2)]
    old = produce(rtopic, 5, "old")
    ce = new_consumer("kp-group-earliest", rtopic, auto_offset_reset="earliest")
    got_e = consume(ce, 10, settle_s=1.0)
    check_eq(sorted(old), sorted(got_e), "auto_offset_reset='earliest': new group reads all existing messages")
    ce.close()

    cl = new_consumer("kp-group-latest", rtopic, auto_offset_reset="latest")
    check_eq(set(rtps), wait_assigned(cl, 2), "latest consumer assigned both partitions")
    # position() resolves the reset (ListOffsets latest) before we produce.
    check_eq({tp: 5 for tp in rtps}, {tp: cl.position(tp) for tp in rtps},
             "auto_offset_reset='latest': position is the end offset")
    check_eq(None, cl.committed(rtps[0]), "latest consumer: nothing committed")
    new = produce(rtopic, 2, "new")
    got_l = consume(cl, 4, settle_s=1.5)
    check_eq(sorted(new), sorted(got_l),
             "auto_offset_reset='latest': new group reads only messages produced after it joined")
    cl.close()

    # ------------------------------------------------------------ 4. admin ops
    GA = "kp-group-active"
    ca = new_consumer(GA, topic)
    check_eq(set(tps), wait_assigned(ca, 2), "member of %s assigned both partitions" % GA)
    ca.commit({tps[0]: OffsetAndMetadata(1, "", -1)})
    desc = admin.describe_groups([GA, G, "kp-group-never-existed"])
    log("describe_groups(%s) = %r" % (GA, desc.get(GA)))
    d = desc[GA]
    check_eq((None, "Stable", "consumer"), (d["error"], d["group_state"], d["protocol_type"]),
             "describe_groups(%s): (error, state, protocol_type)" % GA)
    check_eq(1, len(d["members"]), "describe_groups(%s): one member" % GA)
    m = d["members"][0]
    check(d["protocol_data"] in ("range", "roundrobin"),
          "describe_groups(%s): protocol %r" % (GA, d["protocol_data"]))
    asg = m["member_assignment"]
    check(isinstance(asg, dict), "describe_groups(%s): member_assignment not decoded: %r" % (GA, asg))
    check_eq([{"topic": topic, "partitions": [0, 1]}],
             [{"topic": t["topic"], "partitions": sorted(t["partitions"])} for t in asg["assigned_partitions"]],
             "describe_groups(%s): decoded member assignment" % GA)
    check_eq([topic], m["member_metadata"]["topics"], "describe_groups(%s): member subscription" % GA)
    check(m["client_id"].startswith("kafka-python"), "describe_groups(%s): client_id %r" % (GA, m["client_id"]))
    d = desc[G]
    check_eq((None, "Empty", 0), (d["error"], d["group_state"], len(d["members"])),
             "describe_groups(%s) (closed): (error, state, #members)" % G)
    d = desc["kp-group-never-existed"]
    check_eq("Dead", d["group_state"], "describe_groups(unknown group): state")

    listed = admin.list_groups()
    log("list_groups() = %r" % listed)
    by_id = {g["group_id"]: g for g in listed}
    for g in (G, GM, GS, GA, "kp-group-earliest", "kp-group-latest"):
        check(g in by_id, "list_groups() does not list %s: %r" % (g, sorted(by_id)))
    check_eq("consumer", by_id[GA]["protocol_type"], "list_groups: %s protocol_type" % GA)
    if "group_state" in by_id[GA]:
        check_eq(("Stable", "Empty"), (by_id[GA]["group_state"], by_id[G]["group_state"]),
                 "list_groups: states of %s, %s" % (GA, G))
    stable_only = {g["group_id"] for g in admin.list_groups(states_filter=["Stable"])}
    check_eq({GA}, stable_only, "list_groups(states_filter=['Stable'])")

    # OffsetDelete: refused per partition while the group is subscribed to the topic.
    res = admin.delete_group_offsets(GA, [tps[0]])
    check_eq({tps[0]: Errors.GroupSubscribedToTopicError}, res,
             "delete_group_offsets(%s) while subscribed" % GA)
    check_eq({tps[0]: 1}, {tp: o.offset for tp, o in group_offsets(GA).items()},
             "list_group_offsets(%s) after refused delete" % GA)

    check_eq({GA: "NonEmptyGroupError"}, admin.delete_groups([GA]),
             "delete_groups(non-empty %s)" % GA)
    check(GA in {g["group_id"] for g in admin.list_groups()}, "%s must survive a refused delete" % GA)
    ca.close()
    check_eq("Empty", admin.describe_groups([GA])[GA]["group_state"], "%s after close" % GA)

    # OffsetDelete on the now empty group.
    check_eq({tps[0]: Errors.NoError}, admin.delete_group_offsets(GM, [tps[0]]),
             "delete_group_offsets(empty %s, tp0)" % GM)
    check_eq({tps[1]: 3}, {tp: o.offset for tp, o in group_offsets(GM).items()},
             "list_group_offsets(%s) after delete_group_offsets(tp0)" % GM)

    res = admin.delete_groups([G, GA])
    check_eq({G: "OK", GA: "OK"}, res, "delete_groups(empty %s, %s)" % (G, GA))
    left = {g["group_id"] for g in admin.list_groups()}
    check(G not in left and GA not in left, "deleted groups still listed: %r" % sorted(left))
    check_eq({}, group_offsets(G), "list_group_offsets(%s) after delete" % G)
    check_eq("Dead", admin.describe_groups([G])[G]["group_state"], "describe_groups(%s) after delete" % G)
    check_eq({"kp-group-never-existed": "GroupIdNotFoundError"},
             admin.delete_groups(["kp-group-never-existed"]), "delete_groups(unknown group)")

    # A deleted group starts over: earliest reads everything again.
    c3 = new_consumer(G, topic)
    got3 = consume(c3, 2 * (N + 3), settle_s=1.0)
    check_eq(sorted(first + second), sorted(got3), "group %s after delete reads from earliest again" % G)
    c3.close()

    producer.close(timeout=10)
    admin.close()


if __name__ == "__main__":
    ensure_broker(BROKER_ARGS)  # before run_main's alarm: it may exec with_broker.sh
    run_main(NAME, main)
