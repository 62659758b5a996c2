#!/usr/bin/env python3
"""Strand against Apache Kafka, the benchmark peer: same machine, same disk, same clients, alternated.

    python3 scripts/bench/peer.py [--quick] [--cases PATTERNS] [--targets LIST] [--rounds N]
                                  [--out FILE] [--data-dir DIR] [--no-ceilings] [--list]
    python3 scripts/bench/peer.py --report-from target/bench-logs/peer-.../results.json [--out FILE]
    bash scripts/bench.sh --peer [same options]

Full run: every case below, ~20-25 min on 2 cores. --quick: a few 1 KiB 16-partition cases with
short runs (a smoke test, ~3 min).

One run starts a single-node KRaft Apache Kafka 4.1.2 (the jars scripts/install-kafka.sh caches;
Kafka's defaults; the JVM flags kafka-server-start.sh sets: -Xmx1G -Xms1G, G1 with
MaxGCPauseMillis=20) and the Strand release
broker, each on a fresh data directory on the same disk (default target/bench-data), and runs every
case against each target in turn, alternating which goes first round by round. Targets:

  strand        Strand (acks=1: answered after the O_DIRECT write; acks=all: after fdatasync)
  kafka         Kafka as shipped: answers from the page cache, fsyncs lazily
  kafka-fsync   the same Kafka broker, topic config flush.messages=1 (log.flush.interval.messages=1
                per topic): an fsync every append, durable as Strand's acks=all (acks=all cases only)

Cases (ids for --cases, shell-style patterns, comma-separated, e.g. 'produce/java-default/*'):

  produce/<client>/<size>/acks<1|all>/p<partitions>   unthrottled, each target; MiB/s, broker CPU
      clients: java-default   kafka-producer-perf-test with only bootstrap.servers and acks
               java-tuned     the same with batch.size=262144 linger.ms=5
               rdkafka        librdkafka's rdkafka_performance (librdkafka defaults)
               strand         strand perf produce, batch.size=262144 linger.ms=5
  latency/<client>/1k/acksall/p16    OpenMessaging's 1-topic-16-partitions-1kb at a fixed rate
               (acks=all linger.ms=1 batch.size=1048576): p50/p99/p99.9 at the same load
  consume/<client>/<size>/p<partitions>   a data set produced once per target (strand perf, acks=1),
               consumed from the tail, then cold (broker restarted, page cache dropped) per client:
               java (kafka-consumer-perf-test) and strand (strand perf consume)

Each produce run is sized from short sizing runs (then from the previous round) to last about 4 s
(--quick: 2 s); the default-settings cases (java-default) and the consume cases run 3 rounds
(--rounds), the brokers alternated, and report the median and the spread. Broker CPU is utime+stime of the broker process (/proc/PID/stat) during the client's
run, per GiB of payload; memory is VmHWM/VmRSS of the broker processes. Dirty pages are synced
between runs (not timed), so one target's writeback does not land in the other's run. Each broker
gets an unmeasured warm-up (strand perf produce and consume on another topic) after each start,
the restarts before the cold reads included (the page cache is dropped after it).

Writes the section between <!-- peer:begin --> and <!-- peer:end --> of BENCHMARKS.md (or --out);
logs, commands and results.json go to target/bench-logs/peer-<timestamp>/.
Environment: STRAND_BIN (default target/release/strand). Exit 0 if every run succeeded, 1 if some
failed (the report is still written), 2 on a setup error.

Extending: a case is a Case(kind, client, size, acks, parts, rounds); a target is a Target(name,
broker, topic_configs). A cluster peer is another Broker subclass (start/stop/pids/bootstrap); the
metering already sums the CPU of every pid a broker reports.
"""
import argparse
import base64
import contextlib
import fnmatch
import gc
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAFKA_TOOL = os.path.join(REPO, "scripts", "kafka-tool.sh")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
GIB = 1 << 30

MODES = {
    # run_s: target seconds of an unthrottled run; sizing runs: see sizing_rate
    "full": dict(run_s=4.0, sizing_s=8.0, sizing_min_s=1.5, sizing_bytes=64 * MIB, max_bytes=4 * GIB, rounds=3, consume_bytes=1 * GIB,
                 latency_s=10.0, latency_rate=50000, iperf_s=5, fio_s=5, fio_size="1G"),
    "quick": dict(run_s=2.0, sizing_s=6.0, sizing_min_s=1.5, sizing_bytes=16 * MIB, max_bytes=256 * MIB, rounds=1, consume_bytes=64 * MIB,
                  latency_s=2.0, latency_rate=20000, iperf_s=2, fio_s=1, fio_size="256M"),
}
TUNED = ["batch.size=262144", "linger.ms=5"]
OMB = ["linger.ms=1", "batch.size=1048576"]
CLIENT_LABEL = {
    "java-default": "kafka-producer-perf-test, defaults",
    "java-tuned": "kafka-producer-perf-test, batch.size=262144 linger.ms=5",
    "rdkafka": "rdkafka_performance, librdkafka defaults",
    "strand": "strand perf produce, batch.size=262144 linger.ms=5",
}
CONSUMER_LABEL = {"java": "kafka-consumer-perf-test", "strand": "strand perf consume"}
LATENCY_LABEL = {"java": "kafka-producer-perf-test", "rdkafka": "rdkafka_performance", "strand": "strand perf produce"}


def log(msg):
    print("[peer %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class SetupError(Exception):
    pass


# --- cases --------------------------------------------------------------------------------------
class Case:
    def __init__(self, kind, client, size, acks, parts, rounds=1):
        self.kind, self.client, self.size, self.acks, self.parts, self.rounds = kind, client, size, acks, parts, rounds

    @property
    def id(self):
        sz = "1k" if self.size == 1024 else "%db" % self.size
        if self.kind == "consume":
            return "consume/%s/%s/p%d" % (self.client, sz, self.parts)
        return "%s/%s/%s/acks%s/p%d" % (self.kind, self.client, sz, self.acks, self.parts)


def all_cases(mode):
    rounds = MODES[mode]["rounds"]
    cases = []
    for client in ("java-default", "java-tuned", "rdkafka", "strand"):
        for size in (100, 1024):
            for acks in ("1", "all"):
                for parts in (1, 16):
                    cases.append(Case("produce", client, size, acks, parts, rounds if client == "java-default" else 1))
    for client in ("java", "rdkafka", "strand"):
        cases.append(Case("latency", client, 1024, "all", 16))
    for client in ("java", "strand"):
        cases.append(Case("consume", client, 1024, None, 16, rounds))
    return cases


QUICK = ["produce/java-default/1k/acks1/p16", "produce/java-default/1k/acksall/p16",
         "produce/java-tuned/1k/acksall/p16", "produce/rdkafka/1k/acks1/p16",
         "produce/strand/1k/acksall/p16", "latency/java/1k/acksall/p16", "consume/*/1k/p16"]


# --- processes and metering ----------------------------------------------------------------------
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening(port):
    """Whether something listens on 127.0.0.1:PORT (from /proc/net/tcp, without connecting)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        return any(l.split()[1] == want and l.split()[3] == "0A" for l in list(f)[1:])


def cpu_ticks(pid):
    """utime+stime of a whole process (all threads), in ticks; 0 if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def busy_ticks():
    with open("/proc/stat") as f:
        v = f.readline().split()[1:]
    return sum(int(v[i]) for i in (0, 1, 2, 5, 6, 7))


def vm_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise SetupError("timed out after %d s waiting for %s" % (timeout, what))


class Broker:
    """A broker process under test; subclasses say how to start it."""
    name = "broker"

    def __init__(self, run):
        self.run = run
        self.proc = None
        self.port = None
        self.peak_hwm_kib = 0
        self.starts = 0

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.port

    def pids(self):
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def cpu_ticks(self):
        return sum(cpu_ticks(p) for p in self.pids())

    def rss_kib(self):
        return sum(vm_kib(p, "VmRSS") for p in self.pids())

    def sample_hwm(self):
        self.peak_hwm_kib = max(self.peak_hwm_kib, sum(vm_kib(p, "VmHWM") for p in self.pids()))

    def _spawn(self, argv, env=None):
        self.starts += 1
        logf = open(os.path.join(self.run.log_dir, "%s-%d.log" % (self.name, self.starts)), "w")
        self.run.record(argv)
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        self.log_path = logf.name

    def _log_has(self, text):
        try:
            with open(self.log_path, errors="replace") as f:
                return text in f.read()
        except OSError:
            return False

    def stop(self, timeout=90):
        if not self.proc:
            return
        self.sample_hwm()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        self.start(fresh=False)


class StrandBroker(Broker):
    name = "strand"

    def __init__(self, run, binary):
        super().__init__(run)
        self.binary = binary
        self.data = os.path.join(run.data_root, "strand")

    def start(self, fresh=True):
        if fresh:
            shutil.rmtree(self.data, ignore_errors=True)
        self.port = self.port or free_port()
        env = dict(os.environ, STRAND_LOG="warn")
        self._spawn([self.binary, "serve", "--listen", self.bootstrap, "--data-dir", self.data], env)
        wait_for(lambda: self._log_has("strand listening on") or self.proc.poll() is not None, 60, "strand to listen")
        if self.proc.poll() is not None:
            raise SetupError("strand did not start, see %s" % self.log_path)


class KafkaBroker(Broker):
    """Single-node KRaft Apache Kafka from the cached jars (kafka-tool.sh kafka-server-start)."""
    name = "kafka"
    HEAP = "-Xmx1G -Xms1G"  # what kafka-server-start.sh sets
    JVM_OPTS = "-XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent"

    def __init__(self, run):
        super().__init__(run)
        self.data = os.path.join(run.data_root, "kafka")
        self.config = os.path.join(run.log_dir, "kafka-server.properties")

    def write_config(self):
        cport = free_port()
        props = [
            "process.roles=broker,controller", "node.id=1",
            "controller.quorum.voters=1@127.0.0.1:%d" % cport,
            "listeners=PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d" % (self.port, cport),
            "advertised.listeners=PLAINTEXT://127.0.0.1:%d" % self.port,
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs=%s" % self.data,
            # one node: the internal topics' replication factors 1 (as Kafka's shipped server.properties)
            "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # as Kafka's shipped server.properties: no 3 s wait before the first group rebalance
            "group.initial.rebalance.delay.ms=0",
        ]
        with open(self.config, "w") as f:
            f.write("\n".join(props) + "\n")

    def start(self, fresh=True):
        if fresh:
            shutil.rmtree(self.data, ignore_errors=True)
            self.port = free_port()
            self.write_config()
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            argv = ["bash", KAFKA_TOOL, "kafka-storage", "format", "-t", cluster_id, "-c", self.config]
            self.run.record(argv)
            out = subprocess.run(argv, capture_output=True, text=True, timeout=180)
            if out.returncode != 0:
                raise SetupError("kafka-storage format failed: %s" % (out.stderr or out.stdout)[-2000:])
        env = dict(os.environ, KAFKA_HEAP_OPTS=self.HEAP, KAFKA_OPTS=self.JVM_OPTS, KAFKA_LOG_LEVEL="INFO")
        self._spawn(["bash", KAFKA_TOOL, "kafka-server-start", self.config], env)
        wait_for(lambda: self._log_has("Kafka Server started") or self.proc.poll() is not None, 240, "kafka to start")
        if self.proc.poll() is not None:
            raise SetupError("kafka did not start, see %s" % self.log_path)


class Target:
    def __init__(self, name, broker, topic_configs=None, acks_only=None):
        self.name, self.broker, self.topic_configs, self.acks_only = name, broker, topic_configs or {}, acks_only

    def applies(self, case):
        return case.kind == "consume" and not self.acks_only or case.kind != "consume" and (
            self.acks_only is None or case.acks == self.acks_only)


# --- admin (topics) ------------------------------------------------------------------------------
@contextlib.contextmanager
def admin(bootstrap):
    """A fresh AdminClient per topic operation, destroyed after it: a long-lived one keeps stale
    metadata (no leaders for a topic created after it looked, old leader epochs after a restart).
    Topic auto-creation off: a producer-type librdkafka handle allows it by default."""
    from confluent_kafka.admin import AdminClient
    a = AdminClient({"bootstrap.servers": bootstrap, "allow.auto.create.topics": False, "log_level": 3})
    try:
        yield a
    finally:
        del a
        gc.collect()  # futures keep the handle in reference cycles; its threads and sockets go now


def create_topic(bootstrap, topic, parts, configs):
    from confluent_kafka.admin import NewTopic
    with admin(bootstrap) as a:
        fs = a.create_topics([NewTopic(topic, parts, 1, config=configs)], operation_timeout=60, request_timeout=60)
        fs[topic].result(timeout=90)
        del fs
    wait_ready(bootstrap, topic, parts)


def wait_ready(bootstrap, topic, parts):
    """Kafka answers CreateTopics, and logs "Kafka Server started", before its partitions take
    requests: they answer NOT_LEADER_OR_FOLLOWER for a moment (Kafka's clients retry; strand perf
    does not). ListOffsets answers the same way: wait until it succeeds on every partition."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec
    end = time.monotonic() + 60
    while True:
        try:
            with admin(bootstrap) as a:
                fs = a.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(parts)}, request_timeout=10)
                for f in fs.values():
                    f.result(timeout=15)
                del fs
            return
        except Exception as e:
            if time.monotonic() > end:
                raise RuntimeError("topic %s: ListOffsets still failing after 60 s: %s" % (topic, e))
            time.sleep(0.2)


def delete_topic(bootstrap, topic):
    with admin(bootstrap) as a:
        try:
            fs = a.delete_topics([topic], operation_timeout=60, request_timeout=60)
            fs[topic].result(timeout=90)
            del fs
        except Exception as e:  # the data is deleted with the run's directory anyway
            log("  (delete %s: %s)" % (topic, e))


# --- clients -------------------------------------------------------------------------------------
FINAL_RE = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec .*?, ([\d.]+) ms 50th, ([\d.]+) ms 95th, "
                      r"([\d.]+) ms 99th, ([\d.]+) ms 99\.9th\.$", re.M)
WINDOW_RE = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec \(", re.M)
US_RE = re.compile(r"([\d.]+) us 50th, [\d.]+ us 95th, ([\d.]+) us 99th, ([\d.]+) us 99\.9th\.$", re.M)
STRAND_REQ_RE = re.compile(r"^(\d+) requests, round trip", re.M)
JAVA_METRIC_RE = r"^%s:%s:\{client-id=[^}]*\}\s*:\s*([\d.E+-]+)"
RK_RE = re.compile(r"^% (\d+) messages produced \((\d+) bytes\), (\d+) delivered \(offset \d+, (\d+) failed\) in (\d+)ms", re.M)


def java_metric(text, group, name):
    m = re.search(JAVA_METRIC_RE % (re.escape(group), re.escape(name)), text, re.M)
    return float(m.group(1)) if m else None


def produce_argv(run, client, bootstrap, topic, size, n, acks, rate=-1, latency_file=None, props=None):
    props = list(props if props is not None else (TUNED if client in ("java-tuned", "strand") else []))
    if client.startswith("java"):
        return ["bash", KAFKA_TOOL, "kafka-producer-perf-test", "--topic", topic, "--num-records", str(n),
                "--record-size", str(size), "--throughput", str(rate), "--producer-props",
                "bootstrap.servers=" + bootstrap, "acks=" + acks] + props + ["--print-metrics"]
    if client == "strand":
        return [run.strand_bin, "perf", "produce", "--topic", topic, "--num-records", str(n), "--record-size", str(size),
                "--throughput", str(rate), "--producer-props", "bootstrap.servers=" + bootstrap, "acks=" + acks] + props + [
                "--latency-us", "--reporting-interval", "1000"]
    argv = [run.rk_bin, "-P", "-t", topic, "-s", str(size), "-c", str(n), "-b", bootstrap, "-X", "acks=" + acks]
    for p in props:
        argv += ["-X", p]
    if rate > 0:
        argv += ["-r", str(rate), "-l", "-A", latency_file]
    return argv


def parse_produce(client, text, n, size, latency_file=None):
    """-> dict(records, rps, p50, p99, p999 (ms), requests) or None. A killed run: rps from its last window."""
    r = {"requests": None, "p50": None, "p99": None, "p999": None}
    if client == "rdkafka":
        lines = RK_RE.findall(text)
        if not lines:
            return None
        last = lines[-1]
        r["records"] = int(last[2])
        if int(last[3]) or int(last[2]) != n:
            r["failed"] = "delivered %s of %d (%s failed)" % (last[2], n, last[3])
        # The rate while sending: the last once-a-second line before every record was handed over
        # (librdkafka may sleep up to 1 s before sending the last queued records); else the end.
        steady = [int(d) / (int(ms) / 1000.0) for p, _, d, _, ms in lines if int(p) < n and int(ms) >= 1000]
        r["rps"] = steady[-1] if steady else int(last[2]) / max(int(last[4]) / 1000.0, 1e-3)
        if latency_file and os.path.exists(latency_file):
            with open(latency_file) as f:
                v = sorted(float(x.split()[0]) for x in f if x.strip())
            if v:
                pick = lambda q: v[max(0, min(len(v) - 1, int(len(v) * q) - 1))] / 1000.0
                r["p50"], r["p99"], r["p999"] = pick(0.5), pick(0.99), pick(0.999)
        return r
    m = FINAL_RE.search(text)
    if not m:
        w = WINDOW_RE.findall(text)
        return {"records": 0, "rps": float(w[-1][1]), "partial": True} if w else None
    r["records"], r["rps"] = int(m.group(1)), float(m.group(2))
    r["p50"], r["p99"], r["p999"] = float(m.group(3)), float(m.group(5)), float(m.group(6))
    us = US_RE.search(text)
    if us:
        r["p50"], r["p99"], r["p999"] = (float(x) / 1000.0 for x in us.groups())
    if client == "strand":
        q = STRAND_REQ_RE.search(text)
        r["requests"] = int(q.group(1)) if q else None
    else:
        q = java_metric(text, "producer-metrics", "request-total")
        r["requests"] = int(q) if q else None
    if r["records"] != n:
        r["failed"] = "%d of %d records" % (r["records"], n)
    return r


def consume_argv(run, client, bootstrap, topic, n):
    if client == "java":
        return ["bash", KAFKA_TOOL, "kafka-consumer-perf-test", "--bootstrap-server", bootstrap, "--topic", topic,
                "--messages", str(n), "--timeout", "10000", "--print-metrics"]
    return [run.strand_bin, "perf", "consume", "--bootstrap-server", bootstrap, "--topic", topic,
            "--messages", str(n), "--timeout", "10000", "--print-metrics"]


def parse_consume(client, text, n):
    # start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, rebalance.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    rows = re.findall(r"^\d{4}-\d\d-\d\d [^,]*, [^,]*, ([\d.]+), ([\d.]+), (\d+), ([\d.]+), (-?\d+), (\d+), ([\d.]+), ([\d.]+)", text, re.M)
    if not rows:
        return None
    row = rows[-1]
    r = {"records": int(row[2]), "mibs": float(row[6]), "rps": float(row[7]), "requests": None}
    q = java_metric(text, "consumer-fetch-manager-metrics", "fetch-total")
    if q:
        r["requests"] = int(q)
    if r["records"] < n:
        r["failed"] = "%d of %d records" % (r["records"], n)
    return r


# --- the run -------------------------------------------------------------------------------------
class Run:
    def __init__(self, args):
        self.args = args
        self.mode = "quick" if args.quick else "full"
        self.m = MODES[self.mode]
        self.t0 = time.monotonic()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.log_dir = os.path.join(REPO, "target", "bench-logs", "peer-%s-%d" % (stamp, os.getpid()))
        os.makedirs(self.log_dir)
        self.data_root = os.path.join(os.path.abspath(args.data_dir), "peer-%s-%d" % (stamp, os.getpid()))
        os.makedirs(self.data_root)
        self.commands = []
        self.results = []  # one dict per client run
        self.rates = {}  # (case id, target) -> records/s of the last run, sizes the next one
        self.failed = 0
        self.seq = 0

    def record(self, argv):
        s = " ".join(a if re.fullmatch(r"[A-Za-z0-9_./:=,+@%-]+", a) else "'%s'" % a for a in argv)
        s = s.replace(self.strand_bin, "strand").replace(self.rk_bin or "//", "rdkafka_performance")
        s = s.replace(self.data_root, "$DATA").replace(self.log_dir, "$LOGS").replace(REPO + "/", "")
        s = s.replace("bash scripts/kafka-tool.sh ", "")
        self.commands.append(s)

    def client(self, argv, timeout, name):
        """Runs a client; -> (exit status or 'timeout', output text, client CPU s, wall s)."""
        self.seq += 1
        path = os.path.join(self.log_dir, "%03d-%s.log" % (self.seq, name.replace("/", "_")))
        self.record(argv)
        c0, w0 = children_cpu(), time.monotonic()
        with open(path, "w") as out:
            try:
                rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                    stdin=subprocess.DEVNULL).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        with open(path, errors="replace") as f:
            text = f.read()
        return rc, text, children_cpu() - c0, time.monotonic() - w0, path

    def metered(self, target, argv, timeout, name):
        """A client run with the brokers metered: -> dict with rc/text/cpu figures."""
        os.sync()
        brokers = self.brokers
        b0 = {b.name: b.cpu_ticks() for b in brokers}
        t0 = busy_ticks()
        rc, text, ccpu, wall, path = self.client(argv, timeout, name)
        t1 = busy_ticks()
        bcpu = {b.name: (b.cpu_ticks() - b0[b.name]) / CLK_TCK for b in brokers}
        mine = bcpu[target.broker.name]
        other = max(0.0, ((t1 - t0) / CLK_TCK - mine - ccpu) / wall) if wall > 0 else 0.0
        rss = target.broker.rss_kib()
        # What the run left in the page cache to write: Kafka acknowledges before its writes reach
        # the disk; their write-back happens here, outside the timed run.
        s0 = time.monotonic()
        os.sync()
        return dict(rc=rc, text=text, ccpu=ccpu, wall=wall, bcpu=mine, other=other, log=os.path.relpath(path, REPO),
                    rss_kib=rss, sync_s=time.monotonic() - s0)


def order(targets, rnd):
    """Alternate which target goes first, round by round."""
    return targets if rnd % 2 == 1 else list(reversed(targets))


def clamp(run, n, size):
    return int(max(1000, min(n, run.m["max_bytes"] // size)))


def sizing_rate(run, case, target, topic):
    """Records/s from short runs: sizing_bytes first (a quarter for a JVM client, whose first
    progress line comes after 5 s), cut at sizing_s (then its last progress line counts); a run that
    ended within sizing_min_s was dominated by start-up (connections, metadata, a cold JIT), so it
    is repeated with more records."""
    java = case.client.startswith("java")
    ns = clamp(run, run.m["sizing_bytes"] // (4 if java else 1) // case.size, case.size)
    known = [r for (cid, _), r in run.rates.items() if cid == case.id]
    if known:  # the same case on another target: start from its rate
        ns = clamp(run, max(known) * run.m["sizing_min_s"] * 1.25, case.size)
    cap = run.m["sizing_s"] + (6 if java else 0)
    rps = None
    for attempt in range(4):
        argv = produce_argv(run, case.client, target.broker.bootstrap, topic, case.size, ns, case.acks)
        out = run.client(argv, cap, "%s-%s-sizing" % (case.id, target.name))
        p = parse_produce(case.client, out[1], ns, case.size)
        if not p or not p.get("rps"):
            break
        rps = p["rps"]
        took = ns / rps
        if p.get("partial") or took >= run.m["sizing_min_s"] or ns >= run.m["max_bytes"] // case.size:
            return rps
        ns = clamp(run, ns * min(16.0, 2.5 * run.m["sizing_min_s"] / max(took, 1e-3)), case.size)
    if rps:
        return rps
    log("  sizing run of %s on %s gave no rate (%s): guessing %d records/s" % (case.id, target.name, out[4], ns / cap / 2))
    return ns / cap / 2


def produce_case(run, case, target, rnd):
    key = (case.id, target.name)
    b = target.broker
    topic = "%s-%s-r%d" % (case.id.replace("/", "-"), target.name, rnd)
    res = dict(case=case.id, kind=case.kind, client=case.client, size=case.size, acks=case.acks, parts=case.parts,
               target=target.name, round=rnd)
    try:
        create_topic(b.bootstrap, topic, case.parts, target.topic_configs)
        if case.kind == "latency":
            rate = run.m["latency_rate"]
            n = int(rate * run.m["latency_s"])
        else:
            rate = -1
            if key not in run.rates:
                run.rates[key] = sizing_rate(run, case, target, topic)
            n = clamp(run, run.rates[key] * run.m["run_s"], case.size)
        lat = os.path.join(run.log_dir, "lat-%d.txt" % run.seq) if case.client == "rdkafka" and rate > 0 else None
        props = OMB if case.kind == "latency" else None
        argv = produce_argv(run, case.client, b.bootstrap, topic, case.size, n, case.acks, rate, lat, props)
        limit = max(60.0, 12 * run.m["run_s"], 3 * run.m["latency_s"]) + 30
        mres = run.metered(target, argv, limit, "%s-%s-r%d" % (case.id, target.name, rnd))
        p = parse_produce(case.client, mres.pop("text"), n, case.size, lat)
        res.update(mres)
        if mres["rc"] != 0 or not p or p.get("partial"):
            res["error"] = "exit %s, see %s" % (mres["rc"], mres["log"])
        else:
            res.update(p)
            if "failed" in p:
                res["error"] = p.pop("failed")
            run.rates[key] = p["rps"]
            res["mibs"] = p["rps"] * case.size / MIB
            res["bytes"] = p["records"] * case.size
    except Exception as e:
        res["error"] = str(e)
    finally:
        delete_topic(b.bootstrap, topic)
    return res


def warm_up(run, broker, times=4):
    """Not measured: a JVM broker just started still interprets and compiles its hot paths, which
    would land in the first case. Produce and consume some data on a throw-away topic first."""
    topic, size = "warm-up", 1024
    n = times * run.m["sizing_bytes"] // size
    create_topic(broker.bootstrap, topic, 16, {})
    run.client(produce_argv(run, "strand", broker.bootstrap, topic, size, n, "1"), 300, "warm-up-produce-" + broker.name)
    run.client(consume_argv(run, "strand", broker.bootstrap, topic, n), 300, "warm-up-consume-" + broker.name)
    delete_topic(broker.bootstrap, topic)


def consume_data(run, target, size, parts):
    """Produces the data set of the consume cases on a target (strand perf produce, acks=1); -> topic, records."""
    b = target.broker
    n = run.m["consume_bytes"] // size
    topic = "consume-%d-p%d" % (size, parts)
    create_topic(b.bootstrap, topic, parts, target.topic_configs)
    log("%s: produce %d records of %d B to %s (strand perf produce, acks=1)" % (target.name, n, size, topic))
    rc, text, _, _, path = run.client(produce_argv(run, "strand", b.bootstrap, topic, size, n, "1"), 600,
                                      "consume-data-" + target.name)
    p = parse_produce("strand", text, n, size)
    if rc != 0 or not p or "failed" in p:
        raise RuntimeError("producing the data set failed, see %s" % path)
    return topic, n


def consume_once(run, case, target, topic, n, phase, rnd):
    """One consumer run; cold: the broker restarted and the page cache dropped first."""
    b = target.broker
    res = dict(case=case.id, kind="consume", client=case.client, size=case.size, parts=case.parts,
               target=target.name, phase=phase, round=rnd)
    try:
        if phase == "cold":
            b.restart()
            warm_up(run, b, 2)  # a JVM restarts cold: warm it on another topic, then drop that too
            res["dropped"] = drop_caches()
            wait_ready(b.bootstrap, topic, case.parts)
        mres = run.metered(target, consume_argv(run, case.client, b.bootstrap, topic, n), 600,
                           "%s-%s-%s-r%d" % (case.id, target.name, phase, rnd))
        r = parse_consume(case.client, mres.pop("text"), n)
        res.update(mres)
        if mres["rc"] != 0 or not r:
            res["error"] = "exit %s, see %s" % (mres["rc"], mres["log"])
        else:
            res.update(r)
            if "failed" in r:
                res["error"] = r.pop("failed")
            res["bytes"] = n * case.size
    except Exception as e:  # e.g. the broker did not come back after the restart
        res["error"] = str(e)
    log_result(res)
    return res


def consume_cases(run, cases, targets):
    """A data set per target and (size, partitions), then rounds of tail reads by each client,
    targets alternated, then rounds of cold reads (each after a restart and a dropped page cache).
    The consume cases take the rounds of the default-settings cases: kafka-consumer-perf-test is one."""
    out = []
    targets = [t for t in targets if t.applies(cases[0])]
    groups = {}
    for c in cases:
        groups.setdefault((c.size, c.parts), []).append(c)
    rounds = max(c.rounds for c in cases)
    for (size, parts), cs in groups.items():
        data = {}
        for t in targets:
            try:
                data[t.name] = consume_data(run, t, size, parts)
            except Exception as e:
                log("  consume data on %s: FAILED %s" % (t.name, e))
                out.extend(dict(case=c.id, kind="consume", client=c.client, size=size, parts=parts, target=t.name,
                                phase="tail", round=1, error=str(e)) for c in cs)
        for phase in ("tail", "cold"):
            for rnd in range(1, rounds + 1):
                for t in order(targets, rnd):
                    if t.name in data:
                        out.extend(consume_once(run, c, t, *data[t.name], phase, rnd) for c in cs if c.rounds >= rnd)
        for t in targets:
            if t.name in data:
                delete_topic(t.broker.bootstrap, data[t.name][0])
    return out


def log_result(r):
    if r.get("error"):
        log("  %s %s%s: FAILED %s" % (r["case"], r["target"], " " + r.get("phase", ""), r["error"]))
        return
    extra = ""
    if r.get("p99") is not None:
        extra = ", p50 %.1f p99 %.1f p99.9 %.1f ms" % (r["p50"], r["p99"], r["p999"])
    mibs = r.get("mibs", 0)
    log("  %s %s%s r%d: %.0f MiB/s, broker CPU %.2f s/GiB%s" % (
        r["case"], r["target"], " " + r["phase"] if r.get("phase") else "", r["round"], mibs,
        r["bcpu"] / (r["bytes"] / GIB) if r.get("bytes") else 0, extra))


# --- ceilings ------------------------------------------------------------------------------------
def ceilings(run):
    c = {}
    if shutil.which("iperf3"):
        port = free_port()
        srv = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Not by connecting: iperf3 -s -1 would take that connection as its one test.
            wait_for(lambda: listening(port), 10, "iperf3 server")
        except SetupError:
            pass
        rc, text, _, _, _ = run.client(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-l", "1M", "-t",
                                        str(run.m["iperf_s"]), "-J"], 60, "iperf3")
        srv.kill()
        srv.wait()
        try:
            c["loopback"] = json.loads(text)["end"]["sum_received"]["bits_per_second"] / 8 / MIB
        except (ValueError, KeyError):
            pass
    probe = [os.path.join(REPO, "tuning", "probe-disk.sh"), "--runtime", str(run.m["fio_s"]), "--size", run.m["fio_size"]]
    rc, text, _, _, _ = run.client(["bash"] + probe + [run.data_root], 300, "probe-disk")
    kv = dict(re.findall(r"^(\w+)=([\d.]+)$", text, re.M))
    for k, name in (("seq_write_MBps", "write"), ("seq_read_MBps", "read"), ("append_fdatasync_p50_us", "sync_p50_us"),
                    ("append_fdatasync_p99_us", "sync_p99_us")):
        if k in kv:
            c[name] = float(kv[k])
    return c


# --- report --------------------------------------------------------------------------------------
def med(vals):
    return statistics.median(vals) if vals else None


def per_gib(r):
    return r["bcpu"] / (r["bytes"] / GIB) if r.get("bytes") else None


def num(v):
    """MiB/s: whole numbers, one decimal under 10."""
    return "%.1f" % v if v < 10 else "%.0f" % v


def spread(vals, fmt=num):
    """'median' or 'median (min-max)' over the rounds."""
    if not vals:
        return "-"
    f = fmt if callable(fmt) else (lambda v: fmt % v)
    s = f(med(vals))
    if len(vals) > 1:
        s += " (%s-%s)" % (f(min(vals)), f(max(vals)))
    return s


def ok_runs(results, **kw):
    return [r for r in results if not r.get("error") and all(r.get(k) == v for k, v in kw.items())]


def ratio(a, b):
    return "%.2f" % (a / b) if a and b else "-"


def size_label(size):
    return "1 KiB" if size == 1024 else "%d B" % size


def machine_facts(run, args, targets, ceil, elapsed):
    """Everything the report shows, as saved in results.json (--report-from redraws from it)."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", run.data_root], capture_output=True, text=True).stdout.split()
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return dict(
        mode=run.mode, params=run.m, date=run.date, elapsed=elapsed, command=run.command_line,
        cores=os.cpu_count(), cpu=cpu, mem_gib=int(open("/proc/meminfo").readline().split()[1]) / (1 << 20),
        kernel=" ".join(os.uname()[i] for i in (0, 2)), fs=(fs + ["?", "?"])[:2], dirty=dirty_limits(),
        strand="release build of %s; HEAD %s" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(run.strand_src))), commit or "unknown"),
        kafka="Apache Kafka 4.1.2, single-node KRaft, defaults; %s; %s" % (java[0] if java else "java", KafkaBroker.HEAP),
        load_start=run.load_start, load_end=" ".join(open("/proc/loadavg").read().split()[:3]),
        targets=[t.name for t in targets], ceilings=ceil, results=run.results, commands=run.commands,
        memory={b.name: dict(hwm_kib=b.peak_hwm_kib, produce_rss_kib=run.produce_rss.get(b.name, 0),
                             end_rss_kib=run.final_rss.get(b.name, 0)) for b in run.brokers})


def dirty_limits():
    """The page cache's write-back thresholds (vm.dirty_background_*, vm.dirty_*), as text."""
    def get(name):
        try:
            return int(open("/proc/sys/vm/" + name).read())
        except (OSError, ValueError):
            return 0
    mem = int(open("/proc/meminfo").readline().split()[1]) * 1024
    gib = [(get(k + "_bytes") or mem * get(k + "_ratio") / 100) / GIB for k in ("dirty_background", "dirty")]
    return "background write-back from %.1f GiB of dirty pages, writers throttled from %.1f GiB" % tuple(gib)


def report(F):
    """The Markdown section from the facts of a run (machine_facts)."""
    cases = []
    for r in F["results"]:
        if r["kind"] != "consume" and all(c.id != r["case"] for c in cases):
            cases.append(Case(r["kind"], r["client"], r["size"], r["acks"], r["parts"]))
    L = ["<!-- peer:begin -->",
         "<!-- generated by scripts/bench/peer.py (bash scripts/bench.sh --peer); edits between the markers are overwritten -->"]
    for part in (report_run, report_ceilings, report_produce, report_latency, report_consume, report_memory,
                 report_every_run, report_commands):
        L.extend(part(F, cases))
    L.append("<!-- peer:end -->")
    return "\n".join(L) + "\n"


def report_run(F, cases):
    """Machine, versions, load."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    add("### Machine and run")
    add("")
    if F["mode"] == "quick":
        add("**Smoke run (`--quick`): a few cases, runs of ~%.0f s, JVM start-up included; it shows the page's shape, "
            "not a comparison.**" % m["run_s"])
        add("")
    if float(F["load_start"].split()[0]) > F["cores"]:
        add("**The machine was busy (load average %s at the start on %d cores): other work took CPU from both brokers "
            "and the clients.**" % (F["load_start"].split()[0], F["cores"]))
        add("")
    add("| | |")
    add("| --- | --- |")
    add("| date | %s (%s run, %d min %d s) |" % (F["date"], F["mode"], F["elapsed"] // 60, F["elapsed"] % 60))
    add("| command | `%s` |" % F["command"])
    add("| machine | %d cores, %s, %.0f GiB RAM, %s |" % (F["cores"], F["cpu"], F["mem_gib"], F["kernel"]))
    add("| data directories | %s on %s, both brokers (fresh, deleted after the run) |" % tuple(F["fs"]))
    if F.get("dirty"):
        add("| page cache (vm.dirty_*) | %s |" % F["dirty"])
    add("| Strand | %s; defaults (one shard per core) |" % F["strand"])
    add("| Kafka | %s |" % F["kafka"])
    add("| load average (1/5/15 min) | start %s, end %s |" % (F["load_start"], F["load_end"]))
    add("")
    return L


def report_ceilings(F, cases):
    """Loopback and disk ceilings (iperf3, fio)."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    if ceil:
        add("### Ceilings")
        add("")
        add("| loopback TCP | O_DIRECT write | O_DIRECT read | 4 KiB append + fdatasync p50 / p99 |")
        add("| ---: | ---: | ---: | ---: |")
        g = lambda k, f="%.0f MiB/s": f % ceil[k] if k in ceil else "-"
        add("| %s | %s | %s | %s / %s |" % (g("loopback"), g("write"), g("read"), g("sync_p50_us", "%.0f us"), g("sync_p99_us", "%.0f us")))
        add("")
        add("iperf3 (one stream, 1 MiB writes, %d s); fio via tuning/probe-disk.sh on the data directories' disk." % m["iperf_s"])
        add("")
    return L


def report_produce(F, cases):
    """Unthrottled produce: MiB/s per target, ratios, broker CPU."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    prod = [c for c in cases if c.kind == "produce"]
    if prod:
        add("### Produce, unthrottled (MiB/s of payload; broker CPU s/GiB)")
        add("")
        add("`kafka` answers from the page cache; `kafka-fsync` is the same broker with the topic config "
            "flush.messages=1 (an fsync every append), durable as Strand's acks=all. Cells with rounds: median (min-max). "
            "Runs last ~%.0f s: what `kafka` acknowledged mostly stays in the page cache during its run (thresholds in the "
            "table above), and reaches the disk in the untimed sync after it (\"sync after the run\" in the every-run table)."
            % m["run_s"])
        add("")
        hdr = "| producer | record | acks | partitions | " + " | ".join("%s MiB/s" % t for t in tnames)
        hdr += " | Strand/Kafka | " + " | ".join("%s CPU s/GiB" % t for t in tnames) + " |"
        if "kafka-fsync" in tnames:
            hdr = hdr.replace(" | Strand/Kafka |", " | Strand/Kafka | Strand/Kafka-fsync |")
        add(hdr)
        add("|" + " --- |" * 4 + " ---: |" * (hdr.count("|") - 5))
        for c in prod:
            cells, mibs = [], {}
            for t in tnames:
                v = [r["mibs"] for r in ok_runs(R, case=c.id, target=t)]
                mibs[t] = med(v)
                tried = [r for r in R if r["case"] == c.id and r["target"] == t]
                cells.append(spread(v) if v else ("failed" if tried else ""))
            rat = [ratio(mibs.get("strand"), mibs.get("kafka"))]
            if "kafka-fsync" in tnames:
                rat.append(ratio(mibs.get("strand"), mibs.get("kafka-fsync")))
            cpus = [spread([per_gib(r) for r in ok_runs(R, case=c.id, target=t)], "%.2f") for t in tnames]
            if all(x in ("", "-") for x in cells):
                continue
            add("| %s | %s | %s | %s | %s | %s | %s |" % (CLIENT_LABEL[c.client], size_label(c.size), c.acks, c.parts,
                                                          " | ".join(cells), " | ".join(rat), " | ".join(cpus)))
        add("")
    return L


def report_latency(F, cases):
    """The fixed-rate (OpenMessaging) latency rows."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    lat = [c for c in cases if c.kind == "latency"]
    if lat:
        add("### Latency at a fixed rate: %d records/s of 1 KiB, 16 partitions, acks=all, linger.ms=1 batch.size=1048576"
            % m["latency_rate"])
        add("")
        add("OpenMessaging Benchmark's `1-topic-16-partitions-1kb` workload, %d s per run. Milliseconds from the send "
            "call (kafka-producer-perf-test: whole ms; strand perf: from the intended send time; rdkafka_performance `-l`)." % m["latency_s"])
        add("")
        add("| producer | target | records/s reached | p50 ms | p99 ms | p99.9 ms | broker CPU s/GiB | broker CPU per request, us |")
        add("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in lat:
            for t in tnames:
                for r in [r for r in R if r["case"] == c.id and r["target"] == t]:
                    if r.get("error"):
                        add("| %s | %s | failed | | | | | |" % (LATENCY_LABEL[c.client], t))
                        continue
                    add("| %s | %s | %.0f | %s | %s | %s | %.2f | %s |" % (
                        LATENCY_LABEL[c.client], t, r["rps"],
                        *("%.2f" % r[k] if r.get(k) is not None else "-" for k in ("p50", "p99", "p999")),
                        per_gib(r), "%.0f" % (1e6 * r["bcpu"] / r["requests"]) if r.get("requests") else "-"))
        add("")
    return L


def report_consume(F, cases):
    """Tail and cold consume per client and target."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    cons = [r for r in R if r["kind"] == "consume"]
    if cons:
        add("### Consume %d MiB of 1 KiB records, 16 partitions: from the tail, and cold (broker restarted, page cache dropped)"
            % (m["consume_bytes"] >> 20))
        add("")
        add("The data set was produced by strand perf produce (acks=1) before the reads; fetch-phase MiB/s as the tools "
            "print them. Rounds alternate the brokers: median (min-max).")
        add("")
        add("| consumer | phase | " + " | ".join("%s MiB/s" % t for t in tnames if t != "kafka-fsync") + " | Strand/Kafka | "
            + " | ".join("%s CPU s/GiB" % t for t in tnames if t != "kafka-fsync") + " |")
        ct = [t for t in tnames if t != "kafka-fsync"]
        add("|" + " --- |" * 2 + " ---: |" * (2 * len(ct) + 1))
        for client in sorted({r["client"] for r in cons}):
            for phase in ("tail", "cold"):
                mibs, cells, cpus = {}, [], []
                for t in ct:
                    tried = [r for r in cons if r["client"] == client and r["phase"] == phase and r["target"] == t]
                    good = [r for r in tried if not r.get("error")]
                    mibs[t] = med([r["mibs"] for r in good])
                    cells.append(spread([r["mibs"] for r in good]) if good else ("failed" if tried else ""))
                    cpus.append(spread([per_gib(r) for r in good], "%.2f") if good else "")
                add("| %s | %s | %s | %s | %s |" % (CONSUMER_LABEL[client], phase, " | ".join(cells),
                                                    ratio(mibs.get("strand"), mibs.get("kafka")), " | ".join(cpus)))
        add("")
    return L


def report_memory(F, cases):
    """The brokers' resident memory."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    add("### Broker memory")
    add("")
    add("| broker | peak resident (VmHWM, largest over its restarts) | resident after the produce cases (VmRSS) | resident at the end, after the cold-read restart |")
    add("| --- | ---: | ---: | ---: |")
    for name, mem in F["memory"].items():
        add("| %s | %.0f MiB | %.0f MiB | %.0f MiB |" % (name, mem["hwm_kib"] / 1024, mem["produce_rss_kib"] / 1024, mem["end_rss_kib"] / 1024))
    add("")
    return L


def report_every_run(F, cases):
    """Every client run, folded."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    add("<details><summary>Every run (%d): records/s, latency at that load, broker CPU per request, others' CPU</summary>" % len(R))
    add("")
    add("| case | target | round | records | MiB/s | p50 / p99 / p99.9 ms | broker CPU s (s/GiB) | requests | broker CPU per request, us | client CPU s | others' CPU, cores | broker VmRSS MiB | sync after the run, s | log |")
    add("| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in R:
        name = r["case"] + (" " + r["phase"] if r.get("phase") else "")
        if r.get("error"):
            add("| %s | %s | %d | failed: %s | | | | | | | | | | |" % (name, r["target"], r["round"], r["error"].replace("|", "/")))
            continue
        lat_s = " / ".join("%.1f" % r[k] for k in ("p50", "p99", "p999")) if r.get("p50") is not None else "-"
        add("| %s | %s | %d | %d | %s | %s | %.2f (%.2f) | %s | %s | %.2f | %.2f | %.0f | %s | %s |" % (
            name, r["target"], r["round"], r["records"], num(r["mibs"]), lat_s, r["bcpu"], per_gib(r) or 0,
            r.get("requests") or "-", "%.0f" % (1e6 * r["bcpu"] / r["requests"]) if r.get("requests") else "-",
            r["ccpu"], r["other"], r.get("rss_kib", 0) / 1024,
            "%.1f" % r["sync_s"] if "sync_s" in r else "-", os.path.basename(r["log"])))
    add("")
    add("</details>")
    add("")
    return L


def report_commands(F, cases):
    """Every command, folded."""
    R, tnames, m, ceil = F["results"], F["targets"], F["params"], F["ceilings"]
    L = []
    add = L.append
    add("<details><summary>Commands (%d; strand = the release binary, $DATA = the run's data directory)</summary>" % len(F["commands"]))
    add("")
    add("```")
    L.extend(F["commands"])
    add("```")
    add("")
    add("</details>")
    return L


def splice(out_file, section):
    if not os.path.exists(out_file):
        with open(out_file, "w") as f:
            f.write("# Benchmarks\n\n")
    text = open(out_file).read()
    b, e = "<!-- peer:begin -->", "<!-- peer:end -->"
    if b in text and e in text:
        text = text[:text.index(b)] + section.rstrip("\n") + text[text.index(e) + len(e):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = out_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out_file)


# --- main ----------------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description="Strand against Apache Kafka (see the top of this file).")
    ap.add_argument("--quick", action="store_true", help="a few 1 KiB cases, short runs (~3 min)")
    ap.add_argument("--cases", help="comma-separated patterns of case ids (fnmatch), e.g. 'produce/java-default/*'")
    ap.add_argument("--targets", default="strand,kafka,kafka-fsync", help="comma-separated (default: all three)")
    ap.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"), help="file to write the section into")
    ap.add_argument("--data-dir", default=os.path.join(REPO, "target", "bench-data"), help="where the brokers' data go (a real disk)")
    ap.add_argument("--no-ceilings", action="store_true", help="skip iperf3/fio")
    ap.add_argument("--rounds", type=int, help="rounds of the default-settings cases (full: 3, quick: 1)")
    ap.add_argument("--list", action="store_true", help="print the case ids and exit")
    ap.add_argument("--report-from", metavar="RESULTS_JSON", help="redraw the section from a run's results.json into --out")
    return ap.parse_args(argv)


def select_cases(args, mode):
    cases = all_cases(mode)
    pats = args.cases.split(",") if args.cases else (QUICK if mode == "quick" else ["*"])
    chosen = [c for c in cases if any(fnmatch.fnmatchcase(c.id, p.strip()) for p in pats)]
    if args.rounds:
        for c in chosen:
            if c.client == "java-default" or c.kind == "consume":
                c.rounds = args.rounds
    return chosen


def main(argv):
    args = parse_args(argv)
    if args.report_from:
        with open(args.report_from) as f:
            splice(args.out, report(json.load(f)))
        print("written to %s" % args.out)
        return 0
    mode = "quick" if args.quick else "full"
    cases = select_cases(args, mode)
    if args.list:
        for c in cases:
            print(c.id, "(%d rounds)" % c.rounds if c.rounds > 1 else "")
        return 0
    if not cases:
        print("peer: no case matches --cases %s (see --list)" % args.cases, file=sys.stderr)
        return 2
    run = Run(args)
    run.date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    shown = [a for a in argv if a != "--out" and a != args.out]
    run.command_line = " ".join(["bash scripts/bench.sh --peer"] + ["'%s'" % a if "*" in a or " " in a else a for a in shown])
    run.load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    run.strand_src = os.environ.get("STRAND_BIN") or os.path.join(REPO, "target", "release", "strand")
    run.strand_bin = os.path.join(run.log_dir, "strand")
    run.rk_bin = None
    run.brokers = []
    try:
        return run_all(run, args, cases)
    except SetupError as e:
        print("peer: ERROR: %s" % e, file=sys.stderr)
        return 2
    finally:
        for b in run.brokers:
            b.kill()
        shutil.rmtree(run.data_root, ignore_errors=True)
        if os.path.exists(run.strand_bin):
            os.remove(run.strand_bin)


def run_all(run, args, cases):
    if not os.access(run.strand_src, os.X_OK):
        raise SetupError("no release build at %s (cargo build --release, or set STRAND_BIN)" % run.strand_src)
    shutil.copy(run.strand_src, run.strand_bin)  # a rebuild during the run does not change it
    try:
        import confluent_kafka  # noqa: F401  (topics are created with its AdminClient)
    except ImportError:
        raise SetupError("python3 confluent_kafka is needed (bash scripts/install-test-deps.sh, or pip install confluent-kafka)")
    if subprocess.run(["bash", os.path.join(REPO, "scripts", "install-kafka.sh")], capture_output=True).returncode:
        raise SetupError("bash scripts/install-kafka.sh failed")
    if any(c.client == "rdkafka" for c in cases):
        out = subprocess.run(["bash", os.path.join(REPO, "scripts", "bench", "build-rdkafka.sh")], capture_output=True, text=True)
        if out.returncode:
            raise SetupError("rdkafka_performance: %s" % out.stderr.strip())
        run.rk_bin = out.stdout.strip().splitlines()[-1]
    log("%s run, %d cases; logs in %s" % (run.mode, len(cases), os.path.relpath(run.log_dir, REPO)))
    ceil = {} if args.no_ceilings else ceilings(run)
    if ceil:
        log("ceilings: %s" % ", ".join("%s %.0f" % kv for kv in sorted(ceil.items())))
    strand, kafka = StrandBroker(run, run.strand_bin), KafkaBroker(run)
    run.brokers = [strand, kafka]
    all_targets = {"strand": Target("strand", strand), "kafka": Target("kafka", kafka),
                   "kafka-fsync": Target("kafka-fsync", kafka, {"flush.messages": "1"}, acks_only="all")}
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in names if t not in all_targets]
    if bad:
        raise SetupError("unknown target(s) %s (strand, kafka, kafka-fsync)" % ",".join(bad))
    targets = [all_targets[t] for t in names]
    run.brokers = [b for b in (strand, kafka) if any(t.broker is b for t in targets)]
    for b in run.brokers:
        log("starting %s" % b.name)
        b.start()
        log("  %s on %s (pid %d)" % (b.name, b.bootstrap, b.proc.pid))
    for b in run.brokers:
        warm_up(run, b)
    runs = [c for c in cases if c.kind != "consume"]
    for rnd in range(1, max([c.rounds for c in runs] or [1]) + 1):
        for c in runs:
            if c.rounds < rnd:
                continue
            for t in order(targets, rnd):
                if not t.applies(c):
                    continue
                r = produce_case(run, c, t, rnd)
                run.results.append(r)
                log_result(r)
                for b in run.brokers:
                    b.sample_hwm()
    run.produce_rss = {b.name: b.rss_kib() for b in run.brokers}
    cons = [c for c in cases if c.kind == "consume"]
    if cons:
        run.results.extend(consume_cases(run, cons, targets))
    run.final_rss = {b.name: b.rss_kib() for b in run.brokers}
    for b in run.brokers:
        b.sample_hwm()
    run.failed = sum(1 for r in run.results if r.get("error"))
    elapsed = int(time.monotonic() - run.t0)
    facts = machine_facts(run, args, targets, ceil, elapsed)
    with open(os.path.join(run.log_dir, "results.json"), "w") as f:
        json.dump(facts, f, indent=1)
    section = report(facts)
    with open(os.path.join(run.log_dir, "section.md"), "w") as f:
        f.write(section)
    splice(args.out, section)
    log("done in %d min %d s: %d runs, %d failed; written to %s (logs %s)" % (
        elapsed // 60, elapsed % 60, len(run.results), run.failed, args.out, os.path.relpath(run.log_dir, REPO)))
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
