"""Small helpers shared by the Python client tests (no pytest needed).

Each test calls ensure_broker(broker_args) first: if $BOOTSTRAP is not set, the
script re-executes itself under with_broker.sh, which starts a fresh broker
(lib.sh) and exports BOOTSTRAP.
"""
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class TestFailure(Exception):
    pass


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(expected, actual, what):
    if expected != actual:
        e, a = repr(expected), repr(actual)
        if len(e) > 400:
            e = e[:400] + "..."
        if len(a) > 400:
            a = a[:400] + "..."
        raise TestFailure("%s: expected %s, got %s" % (what, e, a))
    log("ok: %s" % what)


def ensure_broker(broker_args):
    """Return the bootstrap address, starting a broker if none was given."""
    if os.environ.get("BOOTSTRAP"):
        return os.environ["BOOTSTRAP"]
    script = os.path.abspath(sys.argv[0])
    cmd = ["bash", os.path.join(HERE, "with_broker.sh")] + list(broker_args) + \
          ["--", sys.executable, script] + sys.argv[1:]
    os.execvp(cmd[0], cmd)


def make_lines(n, prefix="line"):
    """n distinct lines, numbered so that order is checkable."""
    return ["%s-%06d payload %d" % (prefix, i, (i * 7919) % 100003) for i in range(1, n + 1)]


def write_lines_file(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_lines_file(path):
    with open(path) as f:
        return f.read().splitlines()


def run_main(name, main, timeout_s=240):
    """Run main() with a hard timeout; print PASS/FAIL and exit accordingly."""
    def on_alarm(signum, frame):
        raise TestFailure("timed out after %ds" % timeout_s)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout_s)
    try:
        main()
    except TestFailure as e:
        print("%s: FAIL: %s" % (name, e), file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception:
        import traceback
        traceback.print_exc()
        print("%s: FAIL: unexpected exception (see traceback above)" % name, file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        signal.alarm(0)
    print("%s: PASS" % name, flush=True)
    # Client libraries may leave non-daemon threads behind; do not hang on them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------------------
# Raw Fetch of stored record batches (no client library): lets a test check
# what the broker stored, e.g. the codec a client compressed with.
# ---------------------------------------------------------------------------

CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def _kafka_string(s):
    import struct
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def raw_fetch_batches(bootstrap, topic, partition, offset=0, timeout=20):
    """Header fields of every v2 record batch of topic/partition from `offset`
    to the high watermark, fetched with a hand-encoded Fetch v4 (so nothing is
    decompressed or re-encoded on the way). Returns a list of dicts with keys
    base_offset, last_offset, codec, codec_name, producer_id, producer_epoch,
    base_sequence, records, crc, length."""
    import socket
    import struct
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    corr = 0
    out = []

    def recv_exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise TestFailure("raw fetch: connection closed by broker")
            buf += chunk
        return buf

    try:
        while True:
            corr += 1
            body = struct.pack(">iiiib", -1, 500, 1, 64 << 20, 0)  # replica, wait, min, max, isolation
            body += struct.pack(">i", 1) + _kafka_string(topic)
            body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 16 << 20)
            hdr = struct.pack(">hhi", 1, 4, corr) + _kafka_string("strand-raw-fetch")
            req = hdr + body
            sock.sendall(struct.pack(">i", len(req)) + req)
            (n,) = struct.unpack(">i", recv_exact(4))
            resp = recv_exact(n)
            pos = 0

            def take(fmt):
                nonlocal pos
                vals = struct.unpack_from(fmt, resp, pos)
                pos += struct.calcsize(fmt)
                return vals

            (rcorr,) = take(">i")
            if rcorr != corr:
                raise TestFailure("raw fetch: correlation id %d, want %d" % (rcorr, corr))
            take(">i")  # throttle
            (ntopics,) = take(">i")
            records = b""
            hw = None
            for _ in range(ntopics):
                (tl,) = take(">h")
                pos += tl
                (nparts,) = take(">i")
                for _ in range(nparts):
                    p, err, hw_, _lso = take(">ihqq")
                    (naborted,) = take(">i")
                    pos += max(naborted, 0) * 16
                    (rl,) = take(">i")
                    data = resp[pos:pos + max(rl, 0)]
                    pos += max(rl, 0)
                    if p != partition:
                        continue
                    if err != 0:
                        raise TestFailure("raw fetch %s/%d@%d: error %d" % (topic, partition, offset, err))
                    records, hw = data, hw_
            if hw is None:
                raise TestFailure("raw fetch: no answer for %s/%d" % (topic, partition))
            if offset >= hw:
                return out
            i = 0
            progressed = False
            while i + 61 <= len(records):
                (base, blen) = struct.unpack_from(">qi", records, i)
                total = 12 + blen
                if i + total > len(records):
                    break
                magic = records[i + 16]
                if magic != 2:
                    raise TestFailure("raw fetch: batch at %d has magic %d" % (base, magic))
                (crc, attrs, lod) = struct.unpack_from(">Ihi", records, i + 17)
                (pid, epoch, bseq, count) = struct.unpack_from(">qhii", records, i + 43)
                if base + lod >= offset:
                    out.append({"base_offset": base, "last_offset": base + lod, "codec": attrs & 7,
                                "codec_name": CODEC_NAMES.get(attrs & 7, "?"), "producer_id": pid,
                                "producer_epoch": epoch, "base_sequence": bseq, "records": count,
                                "crc": crc, "length": total})
                    offset = base + lod + 1
                    progressed = True
                i += total
            if offset >= hw:
                return out
            if not progressed:
                raise TestFailure("raw fetch %s/%d@%d: no complete batch in the answer" % (topic, partition, offset))
    finally:
        sock.close()


def check_stored_batches(bootstrap, topic, partitions, codec, idempotent=None):
    """Stored batches of `topic` are as the producer sent them: compression
    `codec` (a name) or none (clients such as kafka-python send a batch
    uncompressed when compressing would not shrink it), never another codec,
    and at least one batch with `codec`. If `idempotent` is given, a producer
    id (>= 0) exactly when idempotent. Returns the number of batches checked."""
    n = 0
    with_codec = 0
    for p in range(partitions):
        for b in raw_fetch_batches(bootstrap, topic, p):
            check(b["codec_name"] in (codec, "none"),
                  "%s/%d: stored batch at offset %d has codec %s, the producer used %s"
                  % (topic, p, b["base_offset"], b["codec_name"], codec))
            with_codec += b["codec_name"] == codec
            if idempotent is not None:
                check((b["producer_id"] >= 0) == idempotent,
                      "%s/%d: stored batch at offset %d has producer id %d (idempotent=%s)"
                      % (topic, p, b["base_offset"], b["producer_id"], idempotent))
            n += 1
    check(with_codec > 0, "%s: no stored batch has codec %s" % (topic, codec))
    return n


if __name__ == "__main__":
    # CLI for non-Python tests: clientlib.py batches BOOTSTRAP TOPIC PARTITIONS
    # prints one JSON list with the batch headers of every partition.
    import json
    if len(sys.argv) == 5 and sys.argv[1] == "batches":
        res = []
        for part in range(int(sys.argv[4])):
            for b in raw_fetch_batches(sys.argv[2], sys.argv[3], part):
                b["partition"] = part
                res.append(b)
        print(json.dumps(res))
    else:
        print("usage: clientlib.py batches BOOTSTRAP TOPIC PARTITIONS", file=sys.stderr)
        sys.exit(2)
