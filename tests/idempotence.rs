//! Idempotent producers and compression (issue 4), against the real `strand` binary.
//!
//! * `librdkafka_idempotent_every_codec_through_faulty_proxy`: an idempotent librdkafka producer
//!   (acks=all, enable.idempotence=true) per codec (none, gzip, snappy, lz4, zstd), 200k
//!   messages in total over 4-partition topics, talking to the broker through a TCP proxy in this
//!   test that adds random delays and cuts connections (often right after forwarding a Produce
//!   request, so the broker appends the batch and the client never sees the answer and must
//!   retry). The proxy decodes every Produce request it forwards and counts batches sent more
//!   than once. A consumer then checks count, per-partition order, no duplicates, no gaps and a
//!   checksum in every payload; a raw Fetch checks that the stored batches carry the producer's
//!   codec and CRC (stored verbatim), and a captured compressed batch replayed raw is answered
//!   with its original offset without being written again.
//! * `raw_*`: InitProducerId / Produce on the wire (kafka-protocol over TcpStream): ids and
//!   epochs, duplicate batches answered with their original offset, sequence gaps (45), stale
//!   epochs (47), transactional ids refused, ids unique across restarts, dedup state surviving
//!   kill -9.
//! * `librdkafka_idempotent_producer_survives_three_kill9_restarts`: an idempotent producer runs
//!   while the broker is killed (-9) and restarted three times; every message ends up in the log
//!   exactly once and every delivery report is a success.
//!
//! The proxy listens on 127.0.0.2:P while the broker listens on 127.0.0.1:P and advertises
//! `advertised.host.name=127.0.0.2` (Metadata carries the listen port), so clients that follow
//! Metadata keep going through the proxy. Set IDEM_PROXY_SEED to replay a fault schedule.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{Broker, StartOpts};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ===========================================================================
// Raw wire helpers (kafka-protocol over a blocking TcpStream)
// ===========================================================================

struct Conn {
    s: TcpStream,
    corr: i32,
}

fn strb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn tname(s: &str) -> TopicName {
    TopicName(strb(s))
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { s, corr: 1 }
    }

    /// Send raw bytes of a request body (already encoded) under a header for `key`/`version`.
    fn send_raw(&mut self, key: ApiKey, version: i16, body: &[u8]) -> i32 {
        self.corr += 1;
        let corr = self.corr;
        let mut buf = BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = corr;
        h.client_id = Some(strb("strand-idempotence-test"));
        h.encode(&mut buf, key.request_header_version(version)).expect("encode header");
        buf.put_slice(body);
        let mut frame = Vec::with_capacity(buf.len() + 4);
        frame.extend_from_slice(&(buf.len() as i32).to_be_bytes());
        frame.extend_from_slice(&buf);
        self.s.write_all(&frame).expect("write request");
        corr
    }

    fn read_body(&mut self, key: ApiKey, version: i16, corr: i32) -> Bytes {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap_or_else(|e| panic!("read {key:?} v{version} response length: {e}"));
        let len = i32::from_be_bytes(len);
        assert!((4..200 << 20).contains(&len), "bad response length {len}");
        let mut body = vec![0u8; len as usize];
        self.s.read_exact(&mut body).expect("read response body");
        let mut b = Bytes::from(body);
        let hv = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
        let h = ResponseHeader::decode(&mut b, hv).expect("decode response header");
        assert_eq!(h.correlation_id, corr, "correlation id of {key:?} v{version}");
        b
    }

    fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> Resp {
        let mut body = BytesMut::new();
        req.encode(&mut body, version).unwrap_or_else(|e| panic!("encode {key:?} v{version}: {e:?}"));
        let corr = self.send_raw(key, version, &body);
        let mut b = self.read_body(key, version, corr);
        let resp = Resp::decode(&mut b, version).unwrap_or_else(|e| panic!("decode {key:?} v{version}: {e:?}"));
        assert_eq!(b.remaining(), 0, "{key:?} v{version} response has trailing bytes");
        resp
    }
}

fn init_pid(c: &mut Conn, version: i16, current: Option<(i64, i16)>, txn: Option<&str>) -> InitProducerIdResponse {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = txn.map(|t| TransactionalId(strb(t)));
    req.transaction_timeout_ms = if txn.is_some() { 60_000 } else { -1 };
    let (pid, epoch) = current.unwrap_or((-1, -1));
    req.producer_id = ProducerId(pid);
    req.producer_epoch = epoch;
    c.call(ApiKey::InitProducerId, version, &req)
}

/// Allocates a new producer id (v4); asserts success and epoch 0.
fn new_pid(c: &mut Conn) -> i64 {
    let r = init_pid(c, 4, None, None);
    assert_eq!(r.error_code, 0, "InitProducerId: {r:?}");
    assert_eq!(r.producer_epoch, 0, "a new producer id starts at epoch 0: {r:?}");
    assert!(r.producer_id.0 >= 0, "InitProducerId gave a negative id: {r:?}");
    r.producer_id.0
}

fn create_topic(c: &mut Conn, name: &str, partitions: i32) {
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 10_000;
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = tname(name);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    req.topics = vec![t];
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(resp.topics[0].error_code, 0, "create topic {name}: {resp:?}");
}

/// One v2 record batch of `n` records from an idempotent producer (pid >= 0), sequences
/// `base_seq..base_seq+n`. Values are `{tag}-{i}`.
fn idem_batch(pid: i64, epoch: i16, base_seq: i32, n: usize, tag: &str) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if pid >= 0 { base_seq.wrapping_add(i as i32) } else { i as i32 - 1 },
            timestamp: now,
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, recs.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode batch");
    let b = buf.freeze();
    assert_eq!(RecordBatchDecoder::decode_batch_info(&mut b.clone()).unwrap().len(), 1, "test bug: not one batch");
    let h = BatchHeader::parse(&b).unwrap();
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence, h.records), (pid, epoch, if pid >= 0 { base_seq } else { -1 }, n as i32));
    b
}

/// Produce one batch (acks=-1) to one partition; returns (error_code, base_offset).
fn produce(c: &mut Conn, version: i16, topic: &str, partition: i32, batch: Bytes) -> (i16, i64) {
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    let mut p = produce_request::PartitionProduceData::default();
    p.index = partition;
    p.records = Some(batch);
    let mut t = produce_request::TopicProduceData::default();
    t.name = tname(topic);
    t.partition_data = vec![p];
    req.topic_data = vec![t];
    let resp: ProduceResponse = c.call(ApiKey::Produce, version, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.index, partition);
    (p.error_code, p.base_offset)
}

/// ListOffsets latest (log end offset) of one partition.
fn log_end(c: &mut Conn, topic: &str, partition: i32) -> i64 {
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.partition_index = partition;
    p.current_leader_epoch = -1;
    p.timestamp = -1;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = tname(topic);
    t.partitions = vec![p];
    req.topics = vec![t];
    let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets {topic}/{partition}: {resp:?}");
    p.offset
}

/// Raw bytes of every batch of `topic`/`partition` from `from` up to the log end.
fn fetch_raw(c: &mut Conn, topic: &str, partition: i32, from: i64) -> Vec<Bytes> {
    let end = log_end(c, topic, partition);
    let mut out = Vec::new();
    let mut next = from;
    while next < end {
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = 100;
        req.min_bytes = 1;
        req.max_bytes = 64 << 20;
        req.session_epoch = -1;
        let mut p = fetch_request::FetchPartition::default();
        p.partition = partition;
        p.current_leader_epoch = -1;
        p.fetch_offset = next;
        p.last_fetched_epoch = -1;
        p.log_start_offset = -1;
        p.partition_max_bytes = 16 << 20;
        let mut t = fetch_request::FetchTopic::default();
        t.topic = tname(topic);
        t.partitions = vec![p];
        req.topics = vec![t];
        let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
        let pd = &resp.responses[0].partitions[0];
        assert_eq!(pd.error_code, 0, "fetch {topic}/{partition}@{next}");
        let mut data = pd.records.clone().unwrap_or_default();
        let before = next;
        while data.len() >= 61 {
            let h = BatchHeader::parse(&data).expect("fetched batch header");
            let total = 12 + h.batch_length as usize;
            if total > data.len() {
                break; // partial batch at the end of the answer
            }
            let b = data.split_to(total);
            if h.last_offset() >= next {
                next = h.last_offset() + 1;
                out.push(b);
            }
        }
        assert!(next > before, "fetch {topic}/{partition}@{before} made no progress");
    }
    out
}

/// Values of all records of a partition (uncompressed batches only), in offset order.
fn fetch_values(c: &mut Conn, topic: &str, partition: i32) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for b in fetch_raw(c, topic, partition, 0) {
        let mut bb = b.clone();
        for set in RecordBatchDecoder::decode_all(&mut bb).expect("decode fetched batch") {
            for r in set.records {
                out.push((r.offset, String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"")).into_owned()));
            }
        }
    }
    out
}

/// Fields of a v2 record batch header (see Kafka's DefaultRecordBatch).
#[derive(Debug, Clone, Copy)]
struct BatchHeader {
    base_offset: i64,
    batch_length: i32,
    crc: u32,
    attributes: i16,
    last_offset_delta: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: i32,
}

impl BatchHeader {
    fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < 61 || b[16] != 2 {
            return None;
        }
        let i64_at = |o: usize| i64::from_be_bytes(b[o..o + 8].try_into().unwrap());
        let i32_at = |o: usize| i32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        let i16_at = |o: usize| i16::from_be_bytes(b[o..o + 2].try_into().unwrap());
        Some(BatchHeader {
            base_offset: i64_at(0),
            batch_length: i32_at(8),
            crc: i32_at(17) as u32,
            attributes: i16_at(21),
            last_offset_delta: i32_at(23),
            producer_id: i64_at(43),
            producer_epoch: i16_at(51),
            base_sequence: i32_at(53),
            records: i32_at(57),
        })
    }
    fn codec(&self) -> i16 {
        self.attributes & 7
    }
    fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
}

// ===========================================================================
// Raw protocol tests
// ===========================================================================

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const INVALID_PRODUCER_EPOCH: i16 = 47;

#[test]
fn raw_init_producer_id_dedup_sequence_and_epoch_checks() {
    let b = Broker::start(StartOpts::default().shards(2));
    let mut c = Conn::connect(b.addr());

    // --- InitProducerId: every served version hands out a fresh id at epoch 0.
    let first = init_pid(&mut c, 0, None, None);
    assert_eq!((first.error_code, first.producer_epoch), (0, 0), "InitProducerId v0: {first:?}");
    assert!(first.producer_id.0 >= 0, "{first:?}");
    eprintln!("first producer id on a fresh broker: {}", first.producer_id.0);
    let mut ids = vec![first.producer_id.0];
    for v in 1..=4 {
        let r = init_pid(&mut c, v, None, None);
        assert_eq!((r.error_code, r.producer_epoch), (0, 0), "InitProducerId v{v}: {r:?}");
        assert!(!ids.contains(&r.producer_id.0), "v{v} reused producer id {}: {ids:?}", r.producer_id.0);
        ids.push(r.producer_id.0);
    }

    // --- A transactional id is refused (transactions are not served).
    for v in [0i16, 3, 4] {
        let r = init_pid(&mut c, v, None, Some("txn-app-1"));
        assert_ne!(r.error_code, 0, "InitProducerId v{v} with a transactional id must fail: {r:?}");
        assert_eq!(r.producer_id.0, -1, "no producer id for a refused transactional id: {r:?}");
        eprintln!("transactional id refused with error {} (v{v})", r.error_code);
    }

    create_topic(&mut c, "idem-raw", 2);
    let t = "idem-raw";
    let pid = new_pid(&mut c);

    // --- seq 0 gets offset 0; the same batch again gets the same offset and writes nothing.
    let a = idem_batch(pid, 0, 0, 5, "a");
    assert_eq!(produce(&mut c, 9, t, 0, a.clone()), (0, 0), "first idempotent batch");
    assert_eq!(log_end(&mut c, t, 0), 5);
    assert_eq!(produce(&mut c, 9, t, 0, a.clone()), (0, 0), "retry of the same batch: original offset");
    assert_eq!(produce(&mut c, 3, t, 0, a.clone()), (0, 0), "retry at Produce v3: original offset");
    assert_eq!(log_end(&mut c, t, 0), 5, "a duplicate must not move the log end");

    // --- next batches; a retry of an older one still retained gets its own original offset.
    let bb = idem_batch(pid, 0, 5, 3, "b");
    let cc = idem_batch(pid, 0, 8, 4, "c");
    assert_eq!(produce(&mut c, 11, t, 0, bb.clone()), (0, 5));
    assert_eq!(produce(&mut c, 11, t, 0, cc.clone()), (0, 8));
    assert_eq!(produce(&mut c, 11, t, 0, bb.clone()), (0, 5), "retry of the 2nd-to-last batch");
    assert_eq!(produce(&mut c, 11, t, 0, a.clone()), (0, 0), "retry of the 3rd-to-last batch");
    assert_eq!(log_end(&mut c, t, 0), 12);

    // --- sequence gap: OUT_OF_ORDER_SEQUENCE_NUMBER, nothing written.
    let gap = idem_batch(pid, 0, 20, 2, "gap");
    let (e, _) = produce(&mut c, 11, t, 0, gap);
    assert_eq!(e, OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence 20 after 11");
    // a batch overlapping the last one but not equal to any retained batch
    let (e, _) = produce(&mut c, 11, t, 0, idem_batch(pid, 0, 9, 4, "overlap"));
    assert!(matches!(e, OUT_OF_ORDER_SEQUENCE_NUMBER | DUPLICATE_SEQUENCE_NUMBER), "overlapping sequence gave {e}");
    assert_eq!(log_end(&mut c, t, 0), 12, "refused batches must not be written");

    // --- another producer on the same partition has its own sequence space.
    let pid2 = new_pid(&mut c);
    assert_eq!(produce(&mut c, 11, t, 0, idem_batch(pid2, 0, 0, 2, "p2")), (0, 12));
    assert_eq!(produce(&mut c, 11, t, 0, idem_batch(pid, 0, 12, 1, "d")), (0, 14));
    // a non-idempotent batch in between is just appended
    assert_eq!(produce(&mut c, 11, t, 0, idem_batch(-1, -1, 0, 1, "plain")), (0, 15));
    // the same producer id, same sequence, other partition: independent state
    assert_eq!(produce(&mut c, 11, t, 1, a.clone()), (0, 0), "partition 1 has its own state");

    // --- only the last 5 batches are retained: after 5 more, batch `a` is no longer known.
    let mut seq = 13;
    let mut last = (Bytes::new(), 0i64);
    for i in 0..5 {
        let bt = idem_batch(pid, 0, seq, 2, &format!("e{i}"));
        let (e, off) = produce(&mut c, 11, t, 0, bt.clone());
        assert_eq!(e, 0);
        last = (bt, off);
        seq += 2;
    }
    let end = log_end(&mut c, t, 0);
    let (e, _) = produce(&mut c, 11, t, 0, a.clone());
    assert!(matches!(e, OUT_OF_ORDER_SEQUENCE_NUMBER | DUPLICATE_SEQUENCE_NUMBER), "old batch not retained gave {e}");
    assert_eq!(produce(&mut c, 11, t, 0, last.0.clone()), (0, last.1), "latest batch still deduplicated");
    assert_eq!(log_end(&mut c, t, 0), end);

    // --- epoch bump (v3+ with the current id/epoch) keeps the id; the old epoch is fenced.
    let r = init_pid(&mut c, 3, Some((pid, 0)), None);
    assert_eq!((r.error_code, r.producer_id.0, r.producer_epoch), (0, pid, 1), "epoch bump: {r:?}");
    let (e, _) = produce(&mut c, 11, t, 0, idem_batch(pid, 1, 5, 1, "e1-gap"));
    assert_eq!(e, OUT_OF_ORDER_SEQUENCE_NUMBER, "a new epoch must start at sequence 0");
    let (e, off) = produce(&mut c, 11, t, 0, idem_batch(pid, 1, 0, 3, "e1"));
    assert_eq!((e, off), (0, end), "first batch of epoch 1");
    let (e, _) = produce(&mut c, 11, t, 0, idem_batch(pid, 0, seq, 1, "stale"));
    assert_eq!(e, INVALID_PRODUCER_EPOCH, "batch of the older epoch after a bump");
    let (e, _) = produce(&mut c, 11, t, 0, last.0.clone());
    assert_eq!(e, INVALID_PRODUCER_EPOCH, "retry of an old-epoch batch after a bump");
    let r = init_pid(&mut c, 4, Some((pid, 1)), None);
    assert_eq!((r.error_code, r.producer_id.0, r.producer_epoch), (0, pid, 2), "second bump (v4): {r:?}");
    // As in Kafka, a partition learns of a new epoch from the first batch written with it (the
    // non-transactional bump writes no marker), so epoch 1 is fenced once epoch 2 has written.
    assert_eq!(produce(&mut c, 11, t, 0, idem_batch(pid, 2, 0, 1, "e2")), (0, end + 3));
    let (e, _) = produce(&mut c, 11, t, 0, idem_batch(pid, 1, 3, 1, "stale1"));
    assert_eq!(e, INVALID_PRODUCER_EPOCH, "epoch 1 after epoch 2 has written");
    assert_eq!(log_end(&mut c, t, 0), end + 4);

    // --- the log holds every accepted batch exactly once, in order.
    let vals: Vec<String> = fetch_values(&mut c, t, 0).into_iter().enumerate().map(|(i, (o, v))| {
        assert_eq!(o, i as i64, "offsets must be dense");
        v
    }).collect();
    let mut expect: Vec<String> = Vec::new();
    let mut push = |tag: &str, n: usize| expect.extend((0..n).map(|i| format!("{tag}-{i}")));
    push("a", 5);
    push("b", 3);
    push("c", 4);
    push("p2", 2);
    push("d", 1);
    push("plain", 1);
    for i in 0..5 {
        push(&format!("e{i}"), 2);
    }
    push("e1", 3);
    push("e2", 1);
    assert_eq!(vals, expect, "partition 0 content");
    assert_eq!(fetch_values(&mut c, t, 1).len(), 5, "partition 1 content");
}

#[test]
fn raw_producer_ids_unique_and_dedup_state_survive_kill9() {
    restart_scenario(StartOpts::default().shards(2), "default segments");
}

/// The same with 1 KiB segments: every partition rolls several times, so after a restart the
/// producer state comes from the snapshot written at the last roll plus the active segment.
#[test]
fn raw_dedup_state_survives_kill9_with_segment_rolls() {
    restart_scenario(StartOpts::default().shards(2).set("log.segment.bytes", "1024"), "1 KiB segments");
}

fn restart_scenario(opts: StartOpts, what: &str) {
    let mut b = Broker::start(opts);
    let t = "idem-restart";
    eprintln!("restart scenario: {what}");
    let mut seen_ids: HashSet<i64> = HashSet::new();
    let mut batches: Vec<(i32, Bytes, i64)> = Vec::new(); // (partition, batch, base offset)
    let (pid, pid_bumped);
    {
        let mut c = Conn::connect(b.addr());
        create_topic(&mut c, t, 4);
        for _ in 0..3 {
            assert!(seen_ids.insert(new_pid(&mut c)));
        }
        pid = new_pid(&mut c);
        seen_ids.insert(pid);
        // three batches on every partition (partitions are spread over both shards)
        // 12 batches of ~100-150 bytes per partition (1 KiB segments roll twice); the last
        // five of each partition are the ones the broker must remember.
        for p in 0..4 {
            let mut seq = 0;
            for k in 0..12 {
                let n = 2 + k % 3;
                let bt = idem_batch(pid, 0, seq, n, &format!("p{p}-k{k}-{}", "x".repeat(40)));
                let (e, off) = produce(&mut c, 11, t, p, bt.clone());
                assert_eq!(e, 0);
                if k >= 7 {
                    batches.push((p, bt, off));
                }
                seq += n as i32;
            }
        }
        // a second producer that bumps its epoch before the crash
        pid_bumped = new_pid(&mut c);
        seen_ids.insert(pid_bumped);
        assert_eq!(produce(&mut c, 11, t, 0, idem_batch(pid_bumped, 0, 0, 1, "old-epoch")).0, 0);
        let r = init_pid(&mut c, 4, Some((pid_bumped, 0)), None);
        assert_eq!(r.producer_epoch, 1);
        assert_eq!(produce(&mut c, 11, t, 0, idem_batch(pid_bumped, 1, 0, 1, "new-epoch")).0, 0);
    }

    for round in 0..3 {
        let ends: Vec<i64> = {
            let mut c = Conn::connect(b.addr());
            (0..4).map(|p| log_end(&mut c, t, p)).collect()
        };
        if round < 2 {
            b.kill9();
            b.restart();
        } else {
            b.restart_graceful();
        }
        let how = if round < 2 { "kill -9" } else { "graceful restart" };
        let mut c = Conn::connect(b.addr());
        // ids never repeat across restarts
        for _ in 0..3 {
            let id = new_pid(&mut c);
            assert!(seen_ids.insert(id), "producer id {id} handed out again after {how} #{round}; seen {seen_ids:?}");
        }
        assert_eq!((0..4).map(|p| log_end(&mut c, t, p)).collect::<Vec<_>>(), ends, "log ends after {how}");
        // every retained batch, retried after the restart, gets its original offset, nothing is written
        let mut wrong = Vec::new();
        for (p, bt, off) in &batches {
            let h = BatchHeader::parse(bt).unwrap();
            let (e, got) = produce(&mut c, 11, t, *p, bt.clone());
            if (e, got) != (0, *off) {
                wrong.push(format!(
                    "partition {p}: batch seq {}..={} (original offset {off}) answered error {e} offset {got}",
                    h.base_sequence,
                    h.base_sequence + h.records - 1
                ));
            }
        }
        if !wrong.is_empty() {
            let listing = std::process::Command::new("find").arg(b.data_dir()).arg("-type").arg("f").arg("-printf").arg("%P %s\n")
                .output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            panic!(
                "retries after {how} #{round} ({what}) not answered with their original offsets (log ends {ends:?}):\n  {}\ndata dir:\n{listing}",
                wrong.join("\n  ")
            );
        }
        assert_eq!((0..4).map(|p| log_end(&mut c, t, p)).collect::<Vec<_>>(), ends, "retries after {how} wrote nothing");
        // gap still refused, stale epoch still fenced
        let (e, _) = produce(&mut c, 11, t, 1, idem_batch(pid, 0, 1000, 1, "gap"));
        assert_eq!(e, OUT_OF_ORDER_SEQUENCE_NUMBER, "gap after {how}");
        let (e, _) = produce(&mut c, 11, t, 0, idem_batch(pid_bumped, 0, 1, 1, "stale"));
        assert_eq!(e, INVALID_PRODUCER_EPOCH, "stale epoch after {how}");
        // the producer continues where it was: next sequence accepted at the log end
        let p = round as i32;
        let seq = batches.iter().filter(|(bp, _, _)| *bp == p).map(|(_, bt, _)| {
            let h = BatchHeader::parse(bt).unwrap();
            h.base_sequence + h.records
        }).max().unwrap();
        let bt = idem_batch(pid, 0, seq, 2, &format!("after-{round}"));
        let (e, off) = produce(&mut c, 11, t, p, bt.clone());
        assert_eq!((e, off), (0, ends[p as usize]), "continuation after {how}");
        batches.push((p, bt, off));
        // the broker retains 5 batches per producer and partition
        let of_p: Vec<usize> = batches.iter().enumerate().filter(|(_, x)| x.0 == p).map(|(i, _)| i).collect();
        if of_p.len() > 5 {
            batches.remove(of_p[0]);
        }
    }
    let segs = std::fs::read_dir(b.data_dir()).map(|d| d.count()).unwrap_or(0);
    eprintln!("restart scenario ({what}) passed; data dir entries: {segs}");
}

/// `producer.id.expiration.ms`: the state of a producer that keeps writing is kept, including
/// across a kill -9, even with an expiration time shorter than the test. (Forgetting idle
/// producers is not asserted: the broker checks at most once a minute.)
#[test]
fn raw_active_producer_state_is_not_expired() {
    let mut b = Broker::start(StartOpts::default().set("producer.id.expiration.ms", "2000"));
    let t = "idem-expiry";
    let (a, bp, a2, b1, a2_off, b1_off);
    {
        let mut c = Conn::connect(b.addr());
        create_topic(&mut c, t, 1);
        a = new_pid(&mut c);
        bp = new_pid(&mut c);
        assert_eq!(produce(&mut c, 11, t, 0, idem_batch(a, 0, 0, 2, "a1")), (0, 0));
        b1 = idem_batch(bp, 0, 0, 2, "b1");
        b1_off = produce(&mut c, 11, t, 0, b1.clone()).1;
        // A stays active for longer than the expiration time; B goes idle.
        let mut seq = 2;
        let mut last = (Bytes::new(), 0);
        for i in 0..6 {
            std::thread::sleep(Duration::from_millis(500));
            let bt = idem_batch(a, 0, seq, 2, &format!("a-active-{i}"));
            let (e, off) = produce(&mut c, 11, t, 0, bt.clone());
            assert_eq!(e, 0);
            last = (bt, off);
            seq += 2;
        }
        (a2, a2_off) = last;
    }
    b.kill9();
    b.restart();
    let mut c = Conn::connect(b.addr());
    let end = log_end(&mut c, t, 0);
    // The first accepted idempotent append after the start runs the expiry check: B (idle for
    // ~3 s) may go, A (active) must stay.
    let a3 = idem_batch(a, 0, 14, 2, "a-after-restart");
    assert_eq!(produce(&mut c, 11, t, 0, a3.clone()), (0, end), "active producer continues after the restart");
    assert_eq!(produce(&mut c, 11, t, 0, a3), (0, end), "and its batch is deduplicated");
    assert_eq!(produce(&mut c, 11, t, 0, a2.clone()), (0, a2_off), "as is the one before it");
    assert_eq!(log_end(&mut c, t, 0), end + 2, "retries were not written");
    let (e, _) = produce(&mut c, 11, t, 0, idem_batch(a, 0, 1000, 1, "a-gap"));
    assert_eq!(e, OUT_OF_ORDER_SEQUENCE_NUMBER, "active producer's sequence still checked");
    let (e, off) = produce(&mut c, 11, t, 0, b1.clone());
    eprintln!(
        "idle producer B ({}s idle, expiration 2s): retry of its batch at offset {b1_off} answered error {e} offset {off} \
         (original offset = still remembered; the broker checks expiry at most once a minute)",
        3
    );
}

// ===========================================================================
// Fault-injecting proxy
// ===========================================================================

#[derive(Default, Debug)]
struct TopicSeen {
    /// batches seen per codec id
    codecs: BTreeMap<i16, u64>,
    /// (partition, pid, epoch, base_seq, records) -> times forwarded
    batches: HashMap<(i32, i64, i16, i32, i32), u32>,
    crcs: HashSet<u32>,
    /// last forwarded raw batch per partition
    last_batch: HashMap<i32, Bytes>,
}

#[derive(Default)]
struct ProxyStats {
    connections: AtomicU64,
    frames: AtomicU64,
    produce_frames: AtomicU64,
    cuts_after_forward: AtomicU64,
    cuts_before_forward: AtomicU64,
    delays: AtomicU64,
    topics: Mutex<HashMap<String, TopicSeen>>,
}

struct ProxyShared {
    upstream: SocketAddr,
    faults: AtomicBool,
    seed: u64,
    stats: ProxyStats,
}

impl ProxyStats {
    fn snapshot(&self) -> [u64; 6] {
        [
            self.connections.load(Ordering::Relaxed),
            self.frames.load(Ordering::Relaxed),
            self.produce_frames.load(Ordering::Relaxed),
            self.cuts_after_forward.load(Ordering::Relaxed),
            self.cuts_before_forward.load(Ordering::Relaxed),
            self.delays.load(Ordering::Relaxed),
        ]
    }
}

/// Probability per forwarded Produce frame of cutting the connection (after forwarding it: 3/4,
/// before: 1/4), and of delaying any frame or response chunk.
const P_CUT: f64 = 0.06;
const P_DELAY: f64 = 0.04;

fn record_produce(shared: &ProxyShared, frame: &[u8]) {
    let mut b = Bytes::copy_from_slice(frame);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(_h) = RequestHeader::decode(&mut b, ApiKey::Produce.request_header_version(version)) else { return };
    let Ok(req) = ProduceRequest::decode(&mut b, version) else { return };
    let mut topics = shared.stats.topics.lock().unwrap();
    for t in req.topic_data {
        let seen = topics.entry(t.name.0.to_string()).or_default();
        for p in t.partition_data {
            let mut data = p.records.unwrap_or_default();
            while let Some(h) = BatchHeader::parse(&data) {
                let total = 12 + h.batch_length as usize;
                if total > data.len() {
                    break;
                }
                let raw = data.split_to(total);
                *seen.codecs.entry(h.codec()).or_default() += 1;
                *seen.batches.entry((p.index, h.producer_id, h.producer_epoch, h.base_sequence, h.records)).or_default() += 1;
                seen.crcs.insert(h.crc);
                seen.last_batch.insert(p.index, raw);
            }
        }
    }
}

async fn proxy_conn(client: tokio::net::TcpStream, shared: Arc<ProxyShared>, conn_no: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = match tokio::net::TcpStream::connect(shared.upstream).await {
        Ok(s) => s,
        Err(_) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut rng = StdRng::seed_from_u64(shared.seed ^ conn_no.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut rng2 = StdRng::seed_from_u64(shared.seed ^ conn_no.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ 1);
    let rst = rng.gen_bool(0.5);
    if rst {
        let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
    }
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let blackhole = Arc::new(AtomicBool::new(false));
    let bh_up = blackhole.clone();
    let sh_up = shared.clone();
    // client -> broker, frame by frame
    let up = async move {
        loop {
            let mut len = [0u8; 4];
            if cr.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = i32::from_be_bytes(len);
            if !(0..=(256 << 20)).contains(&n) {
                return;
            }
            let mut frame = vec![0u8; n as usize + 4];
            frame[..4].copy_from_slice(&len);
            if cr.read_exact(&mut frame[4..]).await.is_err() {
                return;
            }
            sh_up.stats.frames.fetch_add(1, Ordering::Relaxed);
            let faults = sh_up.faults.load(Ordering::Relaxed);
            let is_produce = n >= 4 && i16::from_be_bytes([frame[4], frame[5]]) == 0;
            let mut cut_after = false;
            if is_produce {
                let no = sh_up.stats.produce_frames.fetch_add(1, Ordering::Relaxed);
                // random cuts, plus a deterministic one every 25 Produce requests so that every
                // run loses some responses whatever the seed
                if faults && (no % 25 == 7 || rng.gen_bool(P_CUT)) {
                    if rng.gen_bool(0.25) {
                        sh_up.stats.cuts_before_forward.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    cut_after = true;
                }
                record_produce(&sh_up, &frame[4..]);
            }
            if faults && rng.gen_bool(P_DELAY) {
                sh_up.stats.delays.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1..40))).await;
            }
            if cut_after {
                // The answer to this request (and anything after it) never reaches the client.
                bh_up.store(true, Ordering::SeqCst);
            }
            if sw.write_all(&frame).await.is_err() {
                return;
            }
            if cut_after {
                sh_up.stats.cuts_after_forward.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
                return;
            }
        }
    };
    // broker -> client, chunk by chunk
    let sh_down = shared.clone();
    let down = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if sh_down.faults.load(Ordering::Relaxed) && rng2.gen_bool(P_DELAY) {
                sh_down.stats.delays.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(rng2.gen_range(1..40))).await;
            }
            if blackhole.load(Ordering::SeqCst) {
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Starts the proxy on `listen` (in a background thread with its own tokio runtime).
fn start_proxy(listen: SocketAddr, upstream: SocketAddr, seed: u64) -> Arc<ProxyShared> {
    let shared = Arc::new(ProxyShared { upstream, faults: AtomicBool::new(true), seed, stats: ProxyStats::default() });
    let sh = shared.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => {
                    tx.send(Ok(())).unwrap();
                    l
                }
                Err(e) => {
                    tx.send(Err(e.to_string())).unwrap();
                    return;
                }
            };
            loop {
                let Ok((s, _)) = l.accept().await else { continue };
                let n = sh.stats.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(proxy_conn(s, sh.clone(), n));
            }
        });
    });
    rx.recv().unwrap().unwrap_or_else(|e| panic!("proxy cannot listen on {listen}: {e}"));
    shared
}

// ===========================================================================
// librdkafka producer helpers
// ===========================================================================

#[derive(Default)]
struct DeliveryCtx {
    /// (message index, partition, offset)
    ok: Mutex<Vec<(u64, i32, i64)>>,
    failed: Mutex<Vec<String>>,
    client_errors: Mutex<Vec<String>>,
}

impl ClientContext for DeliveryCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.client_errors.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, r: &DeliveryResult<'_>, idx: Box<u64>) {
        match r {
            Ok(m) => self.ok.lock().unwrap().push((*idx, m.partition(), m.offset())),
            Err((e, m)) => self.failed.lock().unwrap().push(format!("message {} (partition {}): {e}", *idx, m.partition())),
        }
    }
}

fn idempotent_producer(bootstrap: &str, codec: &str) -> ThreadedProducer<DeliveryCtx> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", codec)
        .set("linger.ms", "5")
        .set("batch.num.messages", "250")
        .set("message.timeout.ms", "150000")
        .set("request.timeout.ms", "10000")
        .set("retry.backoff.ms", "20")
        .set("retry.backoff.max.ms", "250")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "250")
        .set("queue.buffering.max.messages", "400000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(DeliveryCtx::default())
        .expect("idempotent producer")
}

fn send_msg(p: &ThreadedProducer<DeliveryCtx>, topic: &str, partition: i32, idx: u64, key: &[u8], value: &[u8]) {
    let mut rec = BaseRecord::with_opaque_to(topic, Box::new(idx)).partition(partition).key(key).payload(value);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                assert!(Instant::now() < deadline, "producer queue full for 120 s");
                rec = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => panic!("send {idx} failed: {e}"),
        }
    }
}

fn verify_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "idempotence-verify")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("check.crcs", "true")
        .create()
        .expect("consumer")
}

/// Consumes partitions 0..ends.len() from the beginning up to `ends`, calling `f(partition,
/// offset, key, value)` in offset order per partition.
fn consume_all(bootstrap: &str, topic: &str, ends: &[i64], mut f: impl FnMut(i32, i64, &[u8], &[u8])) {
    let c = verify_consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for p in 0..ends.len() as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut next = vec![0i64; ends.len()];
    let deadline = Instant::now() + Duration::from_secs(120);
    while next.iter().zip(ends).any(|(n, e)| n < e) {
        assert!(Instant::now() < deadline, "consumer stuck at {next:?}, want {ends:?}");
        match c.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(e)) => eprintln!("consumer error (retrying): {e}"),
            Some(Ok(m)) => {
                let p = m.partition();
                f(p, m.offset(), m.key().unwrap_or(b""), m.payload().unwrap_or(b""));
                next[p as usize] = m.offset() + 1;
            }
        }
    }
}

fn watermarks(bootstrap: &str, topic: &str, parts: i32) -> Vec<i64> {
    let c = verify_consumer(bootstrap);
    (0..parts).map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(30)).expect("watermarks").1).collect()
}

/// Deterministic, fairly compressible payload body for message (partition, pseq).
fn filler(tag: &str, p: i32, pseq: u64) -> String {
    const WORDS: &[&str] = &["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"];
    let mut h = (p as u64) << 40 ^ pseq ^ 0x5151_7f7f;
    let mut s = String::new();
    let words = 3 + (pseq % 23) as usize;
    for _ in 0..words {
        h = h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        s.push_str(WORDS[(h >> 33) as usize % WORDS.len()]);
        s.push(' ');
    }
    format!("{tag}|{s}")
}

/// `tag|p{p}|s{pseq}|{filler}|{crc32c(filler) hex}`
fn payload(tag: &str, p: i32, pseq: u64) -> String {
    let body = filler(tag, p, pseq);
    format!("{tag}|p{p}|s{pseq:09}|{body}|{:08x}", crc32c::crc32c(body.as_bytes()))
}

/// Parses and checks a payload: returns (partition, pseq) or an error description.
fn parse_payload(tag: &str, v: &[u8]) -> Result<(i32, u64), String> {
    let s = std::str::from_utf8(v).map_err(|_| "payload is not UTF-8".to_string())?;
    let (rest, crc) = s.rsplit_once('|').ok_or("no checksum")?;
    let mut it = rest.splitn(4, '|');
    let t = it.next().ok_or("no tag")?;
    let p: i32 = it.next().and_then(|x| x.strip_prefix('p')).and_then(|x| x.parse().ok()).ok_or("bad partition field")?;
    let q: u64 = it.next().and_then(|x| x.strip_prefix('s')).and_then(|x| x.parse().ok()).ok_or("bad seq field")?;
    let body = it.next().ok_or("no body")?;
    if t != tag {
        return Err(format!("tag {t}, want {tag}"));
    }
    if format!("{:08x}", crc32c::crc32c(body.as_bytes())) != crc {
        return Err(format!("checksum mismatch in {s:?}"));
    }
    if body != filler(tag, p, q) {
        return Err(format!("body differs from the one sent: {s:?}"));
    }
    Ok((p, q))
}

// ===========================================================================
// librdkafka: every codec, idempotent, through the faulty proxy
// ===========================================================================

const CODECS: &[(&str, i16)] = &[("none", 0), ("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)];
const PARTS: i32 = 4;

fn per_codec_messages() -> u64 {
    std::env::var("IDEM_MESSAGES_PER_CODEC").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000)
}

#[test]
fn librdkafka_idempotent_every_codec_through_faulty_proxy() {
    let t0 = Instant::now();
    let seed: u64 = std::env::var("IDEM_PROXY_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("proxy fault seed: {seed} (IDEM_PROXY_SEED={seed} to replay)");
    let b = Broker::start(StartOpts::default().shards(2).set("advertised.host.name", "127.0.0.2"));
    let port = b.port();
    let proxy_addr: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let proxy = start_proxy(proxy_addr, b.addr(), seed);
    let via_proxy = proxy_addr.to_string();
    let n = per_codec_messages();

    let mut raw = Conn::connect(b.addr());
    for (codec, _) in CODECS {
        create_topic(&mut raw, &format!("idem-{codec}"), PARTS);
    }
    // Metadata really sends clients to the proxy.
    {
        let mut req = MetadataRequest::default();
        req.topics = None;
        let md: MetadataResponse = raw.call(ApiKey::Metadata, 12, &req);
        assert_eq!(md.brokers.len(), 1);
        assert_eq!((md.brokers[0].host.as_str(), md.brokers[0].port), ("127.0.0.2", port as i32), "advertised address");
    }

    let mut report = Vec::new();
    for (codec, codec_id) in CODECS {
        let tc = Instant::now();
        let topic = format!("idem-{codec}");
        let before = proxy.stats.snapshot();
        proxy.faults.store(true, Ordering::SeqCst);

        // ---- produce n messages: message i goes to partition i % PARTS as that partition's
        // message number i / PARTS.
        let prod = idempotent_producer(&via_proxy, codec);
        for i in 0..n {
            let p = (i % PARTS as u64) as i32;
            let pseq = i / PARTS as u64;
            let v = payload(codec, p, pseq);
            send_msg(&prod, &topic, p, i, format!("k{i}").as_bytes(), v.as_bytes());
            if i % 500 == 499 {
                // a steady stream of smallish requests (more requests = more fault opportunities)
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        prod.flush(Duration::from_secs(170)).unwrap_or_else(|e| panic!("{codec}: flush: {e}"));
        let fatal = prod.client().fatal_error();
        let ctx = prod.context();
        let failed = ctx.failed.lock().unwrap().clone();
        assert!(failed.is_empty(), "{codec}: {} delivery failures, first: {:?}", failed.len(), &failed[..failed.len().min(5)]);
        assert!(fatal.is_none(), "{codec}: idempotent producer raised a fatal error: {fatal:?}");
        let mut ok = ctx.ok.lock().unwrap().clone();
        assert_eq!(ok.len() as u64, n, "{codec}: every message must get a delivery report");
        let client_errors = ctx.client_errors.lock().unwrap().len();
        drop(prod);
        let produce_time = tc.elapsed();
        proxy.faults.store(false, Ordering::SeqCst);
        let after = proxy.stats.snapshot();

        // Delivery reports: message i acknowledged at partition i % PARTS, offset i / PARTS
        // (one producer per topic, no duplicates, no gaps), including batches that were answered
        // from the broker's dedup state after a lost response.
        ok.sort();
        for (k, (idx, p, off)) in ok.iter().enumerate() {
            assert_eq!(*idx, k as u64, "{codec}: duplicate or missing delivery report");
            assert_eq!((*p, *off), ((k as u64 % PARTS as u64) as i32, (k as u64 / PARTS as u64) as i64), "{codec}: delivery report of message {k}");
        }

        // ---- consume and verify
        let ends = watermarks(&via_proxy, &topic, PARTS);
        let want: Vec<i64> = (0..PARTS as u64).map(|p| ((n + PARTS as u64 - 1 - p) / PARTS as u64) as i64).collect();
        assert_eq!(ends, want, "{codec}: log end offsets (duplicates would make them larger, losses smaller)");
        let mut next_seq = vec![0u64; PARTS as usize];
        let mut count = 0u64;
        consume_all(&via_proxy, &topic, &ends, |p, off, key, v| {
            let (vp, q) = parse_payload(codec, v).unwrap_or_else(|e| panic!("{codec}: partition {p} offset {off}: {e}"));
            assert_eq!(vp, p, "{codec}: message for partition {vp} found in partition {p}");
            assert_eq!(q, next_seq[p as usize], "{codec}: partition {p} offset {off}: out of order, duplicate or gap");
            assert_eq!(off as u64, q, "{codec}: partition {p}: offset {off} holds message {q}");
            assert_eq!(key, format!("k{}", q * PARTS as u64 + p as u64).as_bytes(), "{codec}: key at {p}/{off}");
            next_seq[p as usize] += 1;
            count += 1;
        });
        assert_eq!(count, n, "{codec}: consumed count");

        // ---- the stored batches are the producer's (codec and CRC unchanged), and a captured
        // batch replayed raw is answered from the dedup state.
        let seen = {
            let topics = proxy.stats.topics.lock().unwrap();
            let s = topics.get(&topic).unwrap_or_else(|| panic!("{codec}: proxy saw no produce for {topic}"));
            (s.codecs.clone(), s.crcs.clone(), s.batches.values().filter(|&&k| k > 1).count(), s.batches.len(), s.last_batch.clone())
        };
        let (codecs_seen, crcs, retried_batches, distinct_batches, last_batch) = seen;
        assert_eq!(codecs_seen.keys().copied().collect::<Vec<_>>(), vec![*codec_id], "{codec}: codecs the producer sent");
        let mut stored_batches = 0;
        for p in 0..PARTS {
            for bt in fetch_raw(&mut raw, &topic, p, 0) {
                let h = BatchHeader::parse(&bt).unwrap();
                assert_eq!(h.codec(), *codec_id, "{codec}: stored batch at {p}/{} has codec {}", h.base_offset, h.codec());
                assert!(h.producer_id >= 0, "{codec}: stored batch without producer id");
                assert!(crcs.contains(&h.crc), "{codec}: stored batch at {p}/{} has a CRC the producer never sent (recompressed?)", h.base_offset);
                stored_batches += 1;
            }
        }
        for p in 0..PARTS {
            let bt = last_batch.get(&p).unwrap_or_else(|| panic!("{codec}: no batch captured for partition {p}")).clone();
            let h = BatchHeader::parse(&bt).unwrap();
            let end = log_end(&mut raw, &topic, p);
            let (e, off) = produce(&mut raw, 11, &topic, p, bt);
            assert_eq!((e, off), (0, end - h.records as i64), "{codec}: raw replay of the producer's last batch for partition {p}");
            assert_eq!(log_end(&mut raw, &topic, p), end, "{codec}: the replay must not be written");
        }

        let d: Vec<u64> = after.iter().zip(before.iter()).map(|(a, b)| a - b).collect();
        let line = format!(
            "{codec:>6}: {n} msgs in {:.1?} (produce {:.1?}); proxy: {} conns, {} produce reqs, {} cut after forwarding, {} cut before, {} delays; {distinct_batches} distinct batches sent, {retried_batches} sent more than once; {stored_batches} batches stored; {client_errors} client error callbacks",
            tc.elapsed(), produce_time, d[0], d[2], d[3], d[4], d[5]
        );
        eprintln!("{line}");
        report.push((codec, d[3], retried_batches));
    }
    // The faults must really have happened, and retries must really have hit the dedup path.
    let cuts: u64 = report.iter().map(|r| r.1).sum();
    let retried: usize = report.iter().map(|r| r.2).sum();
    assert!(report.iter().all(|r| r.1 >= 1), "every codec run needs at least one cut after forwarding: {report:?}");
    assert!(cuts >= 10, "too few injected faults ({cuts}) to mean anything: {report:?}");
    assert!(retried >= 5, "too few batches were retried ({retried}): {report:?}");
    eprintln!("total {} messages, {cuts} responses lost, {retried} batches retried, in {:.1?}", n * CODECS.len() as u64, t0.elapsed());
}

// ===========================================================================
// librdkafka: idempotent producer across three kill -9 restarts
// ===========================================================================

#[test]
fn librdkafka_idempotent_producer_survives_three_kill9_restarts() {
    let t0 = Instant::now();
    // Through the proxy without faults: it only counts the batches librdkafka sends again
    // after a restart (the broker advertises the proxy's address, see the file comment).
    // 256 KiB segments: partitions roll during the run, so restarts also read producer snapshots.
    let mut b = Broker::start(
        StartOpts::default().shards(2).set("advertised.host.name", "127.0.0.2").set("log.segment.bytes", "262144"),
    );
    let topic = "idem-kill9";
    {
        let mut c = Conn::connect(b.addr());
        create_topic(&mut c, topic, PARTS);
    }
    let proxy_addr: SocketAddr = format!("127.0.0.2:{}", b.port()).parse().unwrap();
    let proxy = start_proxy(proxy_addr, b.addr(), 0);
    proxy.faults.store(false, Ordering::SeqCst);
    let bootstrap = proxy_addr.to_string();
    let n: u64 = std::env::var("IDEM_KILL9_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(60_000);
    let prod = Arc::new(idempotent_producer(&bootstrap, "lz4"));
    let enqueued = Arc::new(AtomicU64::new(0));
    let sender = {
        let prod = prod.clone();
        let enqueued = enqueued.clone();
        std::thread::spawn(move || {
            // bursts of 600 messages, 100 ms apart (~6k/s), so that production spans all three kills
            // and there is a backlog of unacknowledged messages after every burst
            for i in 0..n {
                let p = (i % PARTS as u64) as i32;
                let v = payload("kill9", p, i / PARTS as u64);
                send_msg(&prod, topic, p, i, format!("id-{i:08}").as_bytes(), v.as_bytes());
                enqueued.store(i + 1, Ordering::Relaxed);
                if i % 600 == 599 {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    let mut kills = Vec::new();
    for k in 0..3 {
        // let it run a while after each (re)start, then kill while messages are in flight
        std::thread::sleep(Duration::from_millis(1200));
        let deadline = Instant::now() + Duration::from_secs(5);
        let (sent, acked) = loop {
            let acked = prod.context().ok.lock().unwrap().len() as u64;
            let sent = enqueued.load(Ordering::Relaxed);
            if sent >= acked + 300 || Instant::now() > deadline {
                break (sent, acked);
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        b.kill9();
        std::thread::sleep(Duration::from_millis(300 + 200 * k));
        let tr = Instant::now();
        b.restart();
        eprintln!(
            "kill -9 #{}: {sent} enqueued, {acked} acknowledged, {} unacknowledged at the kill; restarted in {:.1?}",
            k + 1,
            sent - acked,
            tr.elapsed()
        );
        kills.push((sent, acked));
    }
    sender.join().expect("sender thread");
    assert!(kills.iter().all(|(s, _)| *s < n), "production must still be running at every kill: {kills:?}");
    assert!(kills.iter().any(|(s, a)| s > a), "no kill happened with messages in flight: {kills:?}");
    prod.flush(Duration::from_secs(170)).expect("flush after the restarts");
    let ctx = prod.context();
    let failed = ctx.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "{} delivery failures, first: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert!(prod.client().fatal_error().is_none(), "fatal producer error: {:?}", prod.client().fatal_error());
    let mut ok = ctx.ok.lock().unwrap().clone();
    assert_eq!(ok.len() as u64, n, "every message must be acknowledged");
    ok.sort();
    let reported: HashMap<u64, (i32, i64)> = ok.iter().map(|(i, p, o)| (*i, (*p, *o))).collect();
    assert_eq!(reported.len() as u64, n, "one delivery report per message");
    eprintln!("client error callbacks during the run: {}", ctx.client_errors.lock().unwrap().len());

    // every message exactly once (by its unique id), in order per partition, at the offset its
    // delivery report named
    let ends = watermarks(&bootstrap, topic, PARTS);
    assert_eq!(ends.iter().sum::<i64>() as u64, n, "log end offsets {ends:?}: total must be exactly {n}");
    let mut seen = vec![false; n as usize];
    let mut next_seq = vec![0u64; PARTS as usize];
    consume_all(&bootstrap, topic, &ends, |p, off, key, v| {
        let (vp, q) = parse_payload("kill9", v).unwrap_or_else(|e| panic!("partition {p} offset {off}: {e}"));
        let id: u64 = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix("id-")).and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("bad key at {p}/{off}"));
        assert!(id < n, "unknown id {id}");
        assert!(!seen[id as usize], "message id {id} present twice (second copy at {p}/{off})");
        seen[id as usize] = true;
        assert_eq!((vp, q), ((id % PARTS as u64) as i32, id / PARTS as u64), "payload of id {id}");
        assert_eq!(q, next_seq[p as usize], "partition {p} offset {off}: order");
        next_seq[p as usize] += 1;
        assert_eq!(reported[&id], (p, off), "delivery report of id {id}");
    });
    let missing = seen.iter().filter(|s| !**s).count();
    assert_eq!(missing, 0, "{missing} messages missing");
    let (distinct, resent) = {
        let topics = proxy.stats.topics.lock().unwrap();
        let s = &topics[topic];
        (s.batches.len(), s.batches.values().filter(|&&k| k > 1).count())
    };
    eprintln!(
        "{n} messages exactly once across 3 kill -9 restarts in {:.1?}; {distinct} batches, {resent} of them sent more than once, {} connections",
        t0.elapsed(),
        proxy.stats.connections.load(Ordering::Relaxed)
    );
}
