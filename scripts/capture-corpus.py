#!/usr/bin/env python3
"""Captures request frames sent by real Kafka clients, to seed the fuzz corpus.

Starts the release broker on 127.0.0.1:PORT advertising host 127.0.0.2, and a recording proxy on
127.0.0.2:PORT: every client connection (bootstrap and the ones metadata points to) goes through
the proxy, which cuts the client-to-broker stream into frames. Then runs workloads with
confluent-kafka (librdkafka), kafka-python, kcat and kafkajs, and writes each distinct frame
(length prefix included) to fuzz/corpus/frames/, plus the first frames of some connections as
multi-frame streams. Frames over 64 KiB are skipped and at most PER_VERSION frames are kept per
(api key, version), so the corpus stays small.

Afterwards derive the other targets' corpora from these frames:
  cargo run --release --example derive_corpus

Usage: scripts/capture-corpus.py   (needs target/release/strand and tests/clients deps)
"""
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus", "frames")
MAX_FRAME = 64 << 10
PER_VERSION = 6
STREAM_FRAMES = 12

frames = []  # (conn id, bytes incl. prefix)
lock = threading.Lock()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pump(src, dst, conn_id, record):
    buf = b""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            if record:
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack(">i", buf[:4])
                    if n < 0 or len(buf) < 4 + n:
                        break
                    with lock:
                        frames.append((conn_id, buf[: 4 + n]))
                    buf = buf[4 + n :]
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.2", port))
    ls.listen(64)
    n = 0
    while True:
        c, _ = ls.accept()
        n += 1
        try:
            b = socket.create_connection(("127.0.0.1", port))
        except OSError:
            c.close()
            continue
        threading.Thread(target=pump, args=(c, b, n, True), daemon=True).start()
        threading.Thread(target=pump, args=(b, c, n, False), daemon=True).start()


def run(cmd, **kw):
    print("+", " ".join(cmd) if isinstance(cmd, list) else cmd, file=sys.stderr)
    r = subprocess.run(cmd, timeout=120, **kw)
    if r.returncode != 0:
        print("  (exit %d, continuing)" % r.returncode, file=sys.stderr)


def workload_confluent(bs):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bs})
    for f in a.create_topics([NewTopic("cap-a", 3, 1), NewTopic("cap-b", 1, 1, config={"segment.bytes": "1048576"})]).values():
        f.result(30)
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        for idem in ["false", "true"]:
            p = Producer({"bootstrap.servers": bs, "acks": "all", "compression.codec": codec, "enable.idempotence": idem, "linger.ms": 5})
            for i in range(30):
                p.produce("cap-a", key=b"k%d" % i, value=(b"v%d-" % i) * (i + 1), headers=[("h", b"x")])
            p.flush(30)
    p = Producer({"bootstrap.servers": bs, "acks": "1"})
    p.produce("cap-b", value=b"one")
    p.flush(30)
    c = Consumer({"bootstrap.servers": bs, "group.id": "cap-g", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(["cap-a"])
    got = 0
    t0 = time.time()
    while got < 50 and time.time() - t0 < 30:
        m = c.poll(1)
        if m is not None and not m.error():
            got += 1
    c.commit(asynchronous=False)
    c.committed([TopicPartition("cap-a", 0)], 10)
    c.offsets_for_times([TopicPartition("cap-a", 0, int(time.time() * 1000) - 60000)], 10)
    c.get_watermark_offsets(TopicPartition("cap-a", 1), 10)
    c.close()
    for f in a.list_consumer_groups().result(30).valid:
        pass
    a.describe_consumer_groups(["cap-g"])["cap-g"].result(30)
    a.delete_topics(["cap-b"])["cap-b"].result(30)


def workload_kafka_python(bs):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    a = KafkaAdminClient(bootstrap_servers=bs)
    a.create_topics([NewTopic("cap-py", 2, 1)])
    p = KafkaProducer(bootstrap_servers=bs, acks="all", compression_type="gzip")
    for i in range(20):
        p.send("cap-py", key=b"k", value=b"py-%d" % i)
    p.flush()
    p.close()
    c = KafkaConsumer("cap-py", bootstrap_servers=bs, group_id="cap-pyg", auto_offset_reset="earliest", consumer_timeout_ms=5000)
    for _ in c:
        pass
    c.commit()
    c.close()
    a.list_consumer_groups()
    a.describe_consumer_groups(["cap-pyg"])
    a.delete_consumer_groups(["cap-pyg"])
    a.delete_topics(["cap-py"])
    a.close()


def workload_kcat(bs):
    run(["kcat", "-b", bs, "-L"])
    run(["kcat", "-b", bs, "-P", "-t", "cap-a", "-K:", "-z", "snappy"], input=b"a:1\nb:2\nc:3\n")
    run(["kcat", "-b", bs, "-C", "-t", "cap-a", "-p", "0", "-o", "beginning", "-e", "-q"], stdout=subprocess.DEVNULL)
    run(["kcat", "-b", bs, "-Q", "-t", "cap-a:0:1000"])


KAFKAJS = r"""
const { Kafka, logLevel } = require('kafkajs');
(async () => {
  const kafka = new Kafka({ brokers: [process.argv[2]], clientId: 'cap-js', logLevel: logLevel.NOTHING });
  const admin = kafka.admin(); await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'cap-js', numPartitions: 2 }] });
  const p = kafka.producer(); await p.connect();
  await p.send({ topic: 'cap-js', messages: [{ key: 'k', value: 'v1' }, { value: 'v2', headers: { h: 'x' } }] });
  await p.disconnect();
  const c = kafka.consumer({ groupId: 'cap-jsg' }); await c.connect();
  await c.subscribe({ topic: 'cap-js', fromBeginning: true });
  let n = 0; await c.run({ eachMessage: async () => { n++; } });
  await new Promise(r => setTimeout(r, 4000));
  await c.disconnect();
  await admin.fetchOffsets({ groupId: 'cap-jsg', topics: ['cap-js'] });
  await admin.fetchTopicOffsets('cap-js');
  await admin.describeGroups(['cap-jsg']);
  await admin.deleteTopics({ topics: ['cap-js'] });
  await admin.disconnect();
})().catch(e => { console.error(e); process.exit(1); });
"""


def workload_kafkajs(bs):
    path = os.path.join(ROOT, "tests", "clients", ".capture-kafkajs.js")
    with open(path, "w") as f:
        f.write(KAFKAJS)
    try:
        run(["node", path, bs], cwd=os.path.join(ROOT, "tests", "clients"))
    finally:
        os.unlink(path)


def main():
    binary = os.path.join(ROOT, "target", "release", "strand")
    port = free_port()
    data = tempfile.mkdtemp(prefix="strand-capture-")
    broker = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:%d" % port, "--data-dir", data, "--shards", "2", "--set", "advertised.host.name=127.0.0.2"],
        stderr=subprocess.DEVNULL,
    )
    try:
        threading.Thread(target=proxy, args=(port,), daemon=True).start()
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        bs = "127.0.0.2:%d" % port
        for w in (workload_confluent, workload_kafka_python, workload_kcat, workload_kafkajs):
            try:
                w(bs)
            except Exception as e:  # a failing client still left useful frames
                print("workload %s failed: %s" % (w.__name__, e), file=sys.stderr)
        time.sleep(1)
    finally:
        broker.kill()
        broker.wait()
        shutil.rmtree(data, ignore_errors=True)

    os.makedirs(OUT, exist_ok=True)
    per_version = {}
    seen = set()
    written = 0
    streams = {}
    with lock:
        captured = list(frames)
    for conn, f in captured:
        if len(f) > MAX_FRAME or len(f) < 12:
            continue
        streams.setdefault(conn, [])
        if len(streams[conn]) < STREAM_FRAMES:
            streams[conn].append(f)
        h = hashlib.sha1(f).hexdigest()[:16]
        if h in seen:
            continue
        seen.add(h)
        key, ver = struct.unpack(">hh", f[4:8])
        if per_version.get((key, ver), 0) >= PER_VERSION:
            continue
        per_version[(key, ver)] = per_version.get((key, ver), 0) + 1
        with open(os.path.join(OUT, "k%02d-v%02d-%s" % (key, ver, h)), "wb") as out:
            out.write(f)
        written += 1
    # A few whole connection openings: several frames in one input.
    for conn in sorted(streams)[:: max(1, len(streams) // 12)]:
        s = b"".join(streams[conn])[:MAX_FRAME]
        with open(os.path.join(OUT, "stream-%s" % hashlib.sha1(s).hexdigest()[:16]), "wb") as out:
            out.write(s)
    print("captured %d frames on %d connections; wrote %d frames, versions: %s" % (
        len(captured), len(streams), written, sorted(per_version)), file=sys.stderr)


if __name__ == "__main__":
    main()
