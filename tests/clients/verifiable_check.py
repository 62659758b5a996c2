#!/usr/bin/env python3
"""Loss check the way Kafka's system tests do it, over the JSON lines of Kafka's
VerifiableProducer and VerifiableConsumer (kafka-verifiable-producer / -consumer).

Usage:
  verifiable_check.py --topic T --producer P.jsonl [--producer ...]
                      [--consumer C1.jsonl [--consumer C2.jsonl ...]] --read-back BOOTSTRAP [--idempotent]
  verifiable_check.py caught-up --topic T --producer P.jsonl --consumer C.jsonl ...
      (exit 0 once the consumers' record_data lines hold every acknowledged value)
The --consumer files are successive processes of one group member, in order (the next one
started after the previous one ended or was killed): commits carry over, positions do not.

What it proves (exit 1 with the reasons otherwise):
  - nothing acknowledged is lost: every producer_send_success value is in the topic as read
    back from the beginning by a fresh consumer (confluent-kafka), at its acknowledged
    partition and offset;
  - the log has no offset gaps and no record differs from what a group consumer was given
    at that offset (a consumer never saw data the broker later dropped or replaced);
  - duplicates (a value stored twice) are counted; fatal only with --idempotent;
  - the group consumer (VerifiableConsumer, manual commits): records only while joined and
    only for assigned partitions; within one assignment each partition's records_consumed
    batch starts at the previous batch's maxOffset + 1; a successful commit is never ahead of
    the consumed position, and consumption never restarts below the last commit (a commit
    lost, e.g. by a broker crash); with --verbose output, it consumed every acknowledged value.
Prints one summary line per topic: acked, consumed (read back), lost, duplicates, ...
Reusable for other fault tests: the inputs are only the tools' stdout files.
"""
import argparse
import json
import sys
import time
from collections import Counter, defaultdict


def events(path):
    """The JSON objects of a tool's stdout (other lines, e.g. deprecation notes, skipped)."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    pass  # a line cut by the tool's kill


class Producers:
    """What the producers had acknowledged: value -> (partition, offset)."""

    def __init__(self, paths, topic):
        self.acked = {}
        self.errors = Counter()
        self.tool_acked = 0
        for path in paths:
            for e in events(path):
                name = e.get("name")
                if name == "producer_send_success" and e["topic"] == topic:
                    self.acked[e["value"]] = (e["partition"], e["offset"])
                elif name == "producer_send_error":
                    self.errors[e.get("exception", "?")] += 1
                elif name == "tool_data":
                    self.tool_acked += e["acked"]


class GroupConsumer:
    """Kafka's ConsumerEventHandler rules over the events of successive VerifiableConsumer
    processes of one group member."""

    def __init__(self, paths, problems):
        self.paths = paths
        self.path = None
        self.problems = problems
        self.joined = False
        self.assignment = set()
        self.position = {}      # within the current assignment
        self.committed = {}     # last successful commit per partition, over the whole run
        self.records = []       # (partition, offset, value) of record_data lines
        self.batches = 0
        self.rebalances = 0
        self.failed_commits = 0

    def problem(self, msg):
        self.problems.append("%s: %s" % (self.path, msg))

    def run(self):
        for path in self.paths:
            self.path = path
            self.on_shutdown_complete(None)  # a new process: nothing assigned yet
            for e in events(path):
                handler = getattr(self, "on_" + e.get("name", ""), None)
                if handler:
                    handler(e)
        self.path = " + ".join(self.paths)
        return self

    def on_partitions_assigned(self, e):
        self.joined = True
        self.rebalances += 1
        self.assignment = {(p["topic"], p["partition"]) for p in e["partitions"]}

    def on_partitions_revoked(self, e):
        self.joined = False
        self.position = {}

    def on_shutdown_complete(self, e):
        self.joined = False
        self.assignment = set()
        self.position = {}

    def on_records_consumed(self, e):
        self.batches += 1
        if not self.joined and e["partitions"]:
            self.problem("records consumed while not joined: %s" % e)
        for b in e["partitions"]:
            tp = (b["topic"], b["partition"])
            if tp not in self.assignment:
                self.problem("records of %s, which is not assigned (%s)" % (tp, sorted(self.assignment)))
            if tp in self.position and self.position[tp] != b["minOffset"]:
                self.problem("%s: batch starts at %d, the previous one ended at %d (not contiguous)"
                             % (tp, b["minOffset"], self.position[tp] - 1))
            if tp not in self.position and tp in self.committed and b["minOffset"] < self.committed[tp]:
                self.problem("%s: consumption restarted at %d, below the committed offset %d (commit lost?)"
                             % (tp, b["minOffset"], self.committed[tp]))
            self.position[tp] = b["maxOffset"] + 1

    def on_record_data(self, e):
        self.records.append((e["partition"], e["offset"], e["value"]))

    def on_offsets_committed(self, e):
        if not e["success"]:
            self.failed_commits += 1
            return
        for c in e["offsets"]:
            tp = (c["topic"], c["partition"])
            pos = self.position.get(tp)
            if pos is None or c["offset"] > pos:
                self.problem("%s: committed %d, ahead of the consumed position %s" % (tp, c["offset"], pos))
            self.committed[tp] = c["offset"]


def read_back(bootstrap, topic, timeout_s=60):
    """Every record of the topic, from the beginning: {partition: [(offset, value)]}."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING, KafkaError
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "verifiable-check-read-back",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        parts = sorted(c.list_topics(topic, timeout=20).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        log = {p: [] for p in parts}
        at_end = set()
        deadline = time.time() + timeout_s
        while len(at_end) < len(parts):
            if time.time() > deadline:
                raise SystemExit("read-back of %s timed out; partitions at their end: %s" % (topic, sorted(at_end)))
            for m in c.consume(1000, 1.0):
                if m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                elif m.error():
                    raise SystemExit("read-back of %s: %s" % (topic, m.error()))
                else:
                    log[m.partition()].append((m.offset(), m.value().decode()))
        return log
    finally:
        c.close()


def check_log(log, problems):
    """No offset gaps: every partition holds offsets start..end-1 once each."""
    for p, recs in log.items():
        for i, (offset, _) in enumerate(recs):
            if offset != recs[0][0] + i:
                problems.append("partition %d: offset %d follows %d (not contiguous)" % (p, offset, recs[i - 1][0]))
                break


def check(args):
    problems = []
    prod = Producers(args.producer, args.topic)
    log = read_back(args.read_back, args.topic)
    check_log(log, problems)
    at = {(p, o): v for p, recs in log.items() for o, v in recs}
    stored = Counter(v for recs in log.values() for _, v in recs)

    lost = [v for v in prod.acked if v not in stored]
    moved = [(v, po) for v, po in prod.acked.items() if v in stored and at.get(po) != v]
    dups = sum(n - 1 for n in stored.values() if n > 1)
    if lost:
        problems.append("%d acknowledged records lost, e.g. %s" % (len(lost), sorted(lost, key=int)[:10]))
    if moved:
        problems.append("%d acknowledged records not at their acknowledged offset, e.g. %s" % (len(moved), moved[:5]))
    if dups and args.idempotent:
        problems.append("%d duplicates with an idempotent producer" % dups)
    if prod.tool_acked and prod.tool_acked != len(prod.acked):
        problems.append("producer's tool_data acked=%d, but %d producer_send_success lines"
                        % (prod.tool_acked, len(prod.acked)))

    consumers = [GroupConsumer(args.consumer, problems).run()] if args.consumer else []
    for gc in consumers:
        check_consumer_against_log(gc, at, prod, problems)

    print("%s: acked %d, send errors %d, consumed (read back) %d, lost %d, misplaced %d, duplicates %d%s; "
          "group consumers: %s; %s"
          % (args.topic, len(prod.acked), sum(prod.errors.values()), sum(stored.values()), len(lost), len(moved),
             dups, " (idempotent)" if args.idempotent else "",
             ", ".join("%d processes, %d records in %d batches, %d assignments, %d failed commits"
                       % (len(g.paths), len(g.records), g.batches, g.rebalances, g.failed_commits)
                       for g in consumers) or "none",
             "OK" if not problems else "%d PROBLEMS" % len(problems)))
    if prod.errors:
        print("  send errors: %s" % dict(prod.errors))
    for p in problems[:30]:
        print("  PROBLEM: %s" % p)
    return 1 if problems else 0


def check_consumer_against_log(gc, at, prod, problems):
    """What a group consumer was given is what the log holds; it got every acknowledged value."""
    wrong = [(p, o, v) for p, o, v in gc.records if at.get((p, o)) != v]
    if wrong:
        problems.append("%s: %d records differ from the log at their offset, e.g. %s" % (gc.path, len(wrong), wrong[:5]))
    if gc.records:
        seen = {v for _, _, v in gc.records}
        missed = [v for v in prod.acked if v not in seen]
        if missed:
            problems.append("%s: never consumed %d acknowledged records, e.g. %s"
                            % (gc.path, len(missed), sorted(missed, key=int)[:10]))


def caught_up(args):
    prod = Producers(args.producer, args.topic)
    seen = set()
    for path in args.consumer:
        seen.update(e["value"] for e in events(path) if e.get("name") == "record_data")
    missing = sum(1 for v in prod.acked if v not in seen)
    print("%s: %d acked, %d not consumed yet" % (args.topic, len(prod.acked), missing))
    return 0 if missing == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="check", choices=["check", "caught-up"])
    ap.add_argument("--topic", required=True)
    ap.add_argument("--producer", action="append", default=[], help="VerifiableProducer stdout")
    ap.add_argument("--consumer", action="append", default=[], help="VerifiableConsumer stdout")
    ap.add_argument("--read-back", metavar="BOOTSTRAP", help="read the topic back from this broker")
    ap.add_argument("--idempotent", action="store_true", help="duplicates are fatal")
    args = ap.parse_args()
    if args.mode == "caught-up":
        return caught_up(args)
    if not args.read_back:
        ap.error("check needs --read-back BOOTSTRAP")
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
