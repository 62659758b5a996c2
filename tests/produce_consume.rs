//! End-to-end tests of Strand with a real Kafka client (librdkafka via the
//! `rdkafka` crate): produce/consume round trips, restart and kill -9
//! durability, ListOffsets, Metadata, auto-create, CreateTopics/DeleteTopics.
//!
//! Consumers use `assign()` with explicit offsets only (no group protocol).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, StartOpts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(30);
/// Base for explicit record timestamps (ms since epoch).
const TS_BASE: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------
// Deterministic message contents
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Msg {
    key: Vec<u8>,
    value: Vec<u8>,
    ts: i64,
    /// (key, value) pairs; value None = null header value.
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

/// Message number `i` of run `run`. Value length 1..=256 bytes; timestamps
/// increase with `i` (step `ts_step` ms).
fn make_msg(run: u64, i: usize, ts_step: i64) -> Msg {
    let h = mix(run.wrapping_mul(1_000_003) ^ i as u64);
    let len = 1 + (h % 256) as usize;
    let mut value = format!("r{run}-v{i}:").into_bytes();
    let mut s = h;
    while value.len() < len {
        s = mix(s);
        value.push(b'a' + (s % 26) as u8);
    }
    value.truncate(len.max(1));
    let mut headers = vec![("idx".to_string(), Some(i.to_string().into_bytes()))];
    if i % 7 == 0 {
        headers.push(("nullh".to_string(), None));
    }
    if i % 5 == 0 {
        headers.push(("bin".to_string(), Some(vec![0u8, 255, 1, (i % 251) as u8])));
    }
    Msg {
        key: format!("key-{run}-{i}").into_bytes(),
        value,
        ts: TS_BASE + i as i64 * ts_step,
        headers,
    }
}

fn owned_headers(m: &Msg) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(m.headers.len());
    for (k, v) in &m.headers {
        h = h.insert(Header { key: k.as_str(), value: v.as_ref() });
    }
    h
}

fn check_message<M: Message>(got: &M, want: &Msg, what: &str) -> Result<(), String> {
    let key = got.key().map(|k| k.to_vec());
    if key.as_deref() != Some(&want.key[..]) {
        return Err(format!(
            "{what}: key mismatch: got {:?}, want {:?}",
            key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            String::from_utf8_lossy(&want.key)
        ));
    }
    if got.payload() != Some(&want.value[..]) {
        return Err(format!(
            "{what}: value mismatch: got {:?}, want {:?}",
            got.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            String::from_utf8_lossy(&want.value)
        ));
    }
    if got.timestamp() != Timestamp::CreateTime(want.ts) {
        return Err(format!(
            "{what}: timestamp mismatch: got {:?}, want CreateTime({})",
            got.timestamp(),
            want.ts
        ));
    }
    let mut hs: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    if let Some(h) = got.headers() {
        for hd in h.iter() {
            hs.push((hd.key.to_string(), hd.value.map(|v| v.to_vec())));
        }
    }
    if hs != want.headers {
        return Err(format!(
            "{what}: headers mismatch: got {:?}, want {:?}",
            hs, want.headers
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin client")
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(T))
        .operation_timeout(Some(T))
}

fn create_topic(b: &Broker, topic: &str, partitions: i32) {
    let a = admin(b);
    let nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = block_on(a.create_topics(&[nt], &admin_opts())).expect("CreateTopics request");
    assert_eq!(res.len(), 1);
    match &res[0] {
        Ok(name) => assert_eq!(name, topic),
        Err((name, code)) => panic!("CreateTopics {name} failed: {code:?}"),
    }
    wait_topic_partitions(b, topic, partitions as usize);
}

/// A consumer that never auto-creates topics and never joins a group.
fn consumer(b: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "strand-test-dummy")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("consumer")
}

/// Wait until metadata shows `topic` without error and with `n` partitions.
fn wait_topic_partitions(b: &Broker, topic: &str, n: usize) {
    let c = consumer(b);
    let deadline = Instant::now() + T;
    loop {
        let last = match c.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                let t = md.topics().iter().find(|t| t.name() == topic);
                match t {
                    Some(t) if t.error().is_none() && t.partitions().len() == n => return,
                    Some(t) => format!("error {:?}, {} partitions", t.error(), t.partitions().len()),
                    None => "topic missing".to_string(),
                }
            }
            Err(e) => format!("{e}"),
        };
        if Instant::now() > deadline {
            panic!("topic {topic} never showed {n} partitions in metadata: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

type Ack = (usize, Result<(i32, i64), String>);

struct AckCtx {
    acks: Mutex<Vec<Ack>>,
}
impl ClientContext for AckCtx {}
impl ProducerContext for AckCtx {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, r: &DeliveryResult<'_>, idx: Box<usize>) {
        let res = match r {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.acks.lock().unwrap().push((*idx, res));
    }
}

fn producer(b: &Broker, extra: &[(&str, &str)]) -> ThreadedProducer<AckCtx> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create_with_context(AckCtx { acks: Mutex::new(Vec::new()) })
        .expect("producer")
}

/// Enqueue message `i` (retrying while the local queue is full).
fn send(p: &ThreadedProducer<AckCtx>, topic: &str, partition: Option<i32>, i: usize, m: &Msg) {
    let headers = owned_headers(m);
    let mut rec = BaseRecord::with_opaque_to(topic, Box::new(i))
        .key(&m.key[..])
        .payload(&m.value[..])
        .timestamp(m.ts)
        .headers(headers);
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                assert!(Instant::now() < deadline, "producer queue full for 120 s");
                rec = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("send {i} failed: {e}"),
        }
    }
}

/// Produce `msgs` (index = position) and return per-index (partition, offset).
/// Panics on any delivery failure.
fn produce_all(
    b: &Broker,
    topic: &str,
    msgs: &[Msg],
    partition_of: impl Fn(usize) -> Option<i32>,
    extra: &[(&str, &str)],
) -> Vec<(i32, i64)> {
    let p = producer(b, extra);
    for (i, m) in msgs.iter().enumerate() {
        send(&p, topic, partition_of(i), i, m);
    }
    p.flush(Duration::from_secs(180)).expect("flush");
    let acks = std::mem::take(&mut *p.context().acks.lock().unwrap());
    assert_eq!(acks.len(), msgs.len(), "every message got a delivery report");
    let mut out = vec![(-1, -1); msgs.len()];
    for (i, r) in acks {
        match r {
            Ok(po) => out[i] = po,
            Err(e) => panic!("delivery of message {i} failed: {e}"),
        }
    }
    out
}

/// Read partitions from offset 0 up to (excluding) `ends[p]` and return the
/// messages in offset order. Panics on gaps, out-of-order offsets or timeout.
fn consume_range<F>(b: &Broker, topic: &str, ends: &[i64], mut f: F)
where
    F: FnMut(i32, i64, &rdkafka::message::BorrowedMessage<'_>),
{
    let c = consumer(b);
    let mut tpl = TopicPartitionList::new();
    for p in 0..ends.len() as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut next = vec![0i64; ends.len()];
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_progress = Instant::now();
    let mut errors: Vec<String> = Vec::new();
    while next.iter().zip(ends).any(|(n, e)| n < e) {
        if Instant::now() >= deadline || last_progress.elapsed() >= Duration::from_secs(60) {
            let wm: Vec<_> = (0..ends.len() as i32)
                .map(|p| c.fetch_watermarks(topic, p, Duration::from_secs(5)))
                .collect();
            panic!(
                "consume of {topic} timed out: next offsets {next:?}, expected ends {ends:?}, \
                 watermarks now {wm:?}, consumer errors: {errors:?}"
            );
        }
        match c.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(e)) => {
                eprintln!("consumer error (continuing): {e}");
                if errors.len() < 20 {
                    errors.push(e.to_string());
                }
            }
            Some(Ok(m)) => {
                assert_eq!(m.topic(), topic);
                let p = m.partition();
                let o = m.offset();
                assert!((p as usize) < ends.len(), "unexpected partition {p}");
                assert_eq!(
                    o, next[p as usize],
                    "partition {p}: offsets not contiguous (got {o}, expected {})",
                    next[p as usize]
                );
                if o < ends[p as usize] {
                    f(p, o, &m);
                }
                next[p as usize] = o + 1;
                last_progress = Instant::now();
            }
        }
    }
    drop(c);
}

fn watermarks(b: &Broker, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let c = consumer(b);
    (0..partitions)
        .map(|p| c.fetch_watermarks(topic, p, T).expect("fetch_watermarks"))
        .collect()
}

/// Verify that the topic holds exactly `msgs` at the given (partition, offset)s
/// and nothing else (contiguous, starting at 0).
fn verify_exact(b: &Broker, topic: &str, partitions: i32, msgs: &[Msg], pos: &[(i32, i64)]) {
    let mut by_pos: Vec<Vec<Option<usize>>> = vec![Vec::new(); partitions as usize];
    for (i, &(p, o)) in pos.iter().enumerate() {
        let v = &mut by_pos[p as usize];
        if v.len() <= o as usize {
            v.resize(o as usize + 1, None);
        }
        assert!(v[o as usize].is_none(), "two messages acknowledged at {p}/{o}");
        v[o as usize] = Some(i);
    }
    for (p, v) in by_pos.iter().enumerate() {
        assert!(
            v.iter().all(|x| x.is_some()),
            "delivered offsets for partition {p} are not contiguous from 0"
        );
    }
    let ends: Vec<i64> = by_pos.iter().map(|v| v.len() as i64).collect();
    let wm = watermarks(b, topic, partitions);
    for p in 0..partitions as usize {
        assert_eq!(wm[p], (0, ends[p]), "watermarks of partition {p}");
    }
    let mut seen = 0usize;
    let mut errors = Vec::new();
    consume_range(b, topic, &ends, |p, o, m| {
        let i = by_pos[p as usize][o as usize].unwrap();
        if let Err(e) = check_message(m, &msgs[i], &format!("msg {i} at {p}/{o}")) {
            if errors.len() < 10 {
                errors.push(e);
            }
        }
        seen += 1;
    });
    assert!(errors.is_empty(), "content mismatches:\n{}", errors.join("\n"));
    assert_eq!(seen, msgs.len());
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// 100k keyed messages with headers and timestamps, acks=all, 3 partitions;
/// consume everything back, then kill + restart and consume again.
#[test]
fn produce_consume_100k_then_restart() {
    let mut b = Broker::start(StartOpts::default().shards(2));
    let topic = "pc100k";
    create_topic(&b, topic, 3);

    const N: usize = 100_000;
    let msgs: Vec<Msg> = (0..N).map(|i| make_msg(1, i, 1)).collect();
    let t0 = Instant::now();
    let pos = produce_all(&b, topic, &msgs, |i| Some((i % 3) as i32), &[]);
    eprintln!("produced {N} in {:?}", t0.elapsed());
    for (i, &(p, _)) in pos.iter().enumerate() {
        assert_eq!(p, (i % 3) as i32, "message {i} delivered to wrong partition");
    }

    let t0 = Instant::now();
    verify_exact(&b, topic, 3, &msgs, &pos);
    eprintln!("consumed+verified {N} in {:?}", t0.elapsed());

    b.restart();
    wait_topic_partitions(&b, topic, 3);
    let t0 = Instant::now();
    verify_exact(&b, topic, 3, &msgs, &pos);
    eprintln!("after restart: consumed+verified {N} in {:?}", t0.elapsed());
}

/// Same as above but keyed partitioning by the client (murmur2) and
/// compressed batches (gzip, zstd, lz4, snappy), plus a graceful restart.
#[test]
fn compressed_keyed_roundtrip() {
    let mut b = Broker::start(StartOpts::default());
    let mut all: Vec<(String, Vec<Msg>, Vec<(i32, i64)>)> = Vec::new();
    for (run, codec) in ["gzip", "zstd", "lz4", "snappy", "none"].iter().enumerate() {
        let topic = format!("comp-{codec}");
        create_topic(&b, &topic, 3);
        let msgs: Vec<Msg> = (0..5000).map(|i| make_msg(100 + run as u64, i, 1)).collect();
        let pos = produce_all(
            &b,
            &topic,
            &msgs,
            |_| None,
            &[("compression.type", codec), ("partitioner", "murmur2_random")],
        );
        verify_exact(&b, &topic, 3, &msgs, &pos);
        all.push((topic, msgs, pos));
    }
    b.restart_graceful();
    for (topic, msgs, pos) in &all {
        verify_exact(&b, topic, 3, msgs, pos);
    }
}

/// acks=all producer sending continuously; the broker is SIGKILLed
/// mid-stream. Every acknowledged message must survive at its offset.
#[test]
fn kill9_during_produce_keeps_acked() {
    let mut b = Broker::start(StartOpts::default().shards(2));
    let topic = "k9";
    create_topic(&b, topic, 3);

    let p = Arc::new(producer(
        &b,
        &[
            ("message.timeout.ms", "4000"),
            ("linger.ms", "2"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(0usize));
    let th = {
        let p = p.clone();
        let stop = stop.clone();
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let m = make_msg(7, i, 1);
                // Don't block forever on a full queue after the kill.
                let rec = BaseRecord::with_opaque_to(topic, Box::new(i))
                    .partition((i % 3) as i32)
                    .key(&m.key[..])
                    .payload(&m.value[..])
                    .timestamp(m.ts)
                    .headers(owned_headers(&m));
                match p.send(rec) {
                    Ok(()) => i += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err((e, _)) => panic!("send failed: {e}"),
                }
                if i % 64 == 0 {
                    // pace a little so batches keep flowing at kill time
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            *sent.lock().unwrap() = i;
        })
    };

    // Let it run, then kill -9 while messages are in flight.
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let acked = p.context().acks.lock().unwrap().len();
        if (start.elapsed() > Duration::from_millis(1500) && acked > 1000)
            || start.elapsed() > Duration::from_secs(20)
        {
            break;
        }
    }
    b.kill9();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    th.join().unwrap();
    let sent = *sent.lock().unwrap();
    // Wait for every outstanding message to be resolved (acked or timed out)
    // before the broker comes back, so nothing is retried into the new run.
    let _ = p.flush(Duration::from_secs(30));
    let acks = std::mem::take(&mut *p.context().acks.lock().unwrap());
    drop(p);

    let mut acked: Vec<(usize, i32, i64)> = Vec::new();
    let mut failed = 0usize;
    for (i, r) in &acks {
        match r {
            Ok((p, o)) => acked.push((*i, *p, *o)),
            Err(_) => failed += 1,
        }
    }
    eprintln!(
        "sent {sent}, acked {}, failed {failed}, unresolved {}",
        acked.len(),
        sent - acks.len()
    );
    assert!(acked.len() > 100, "too few messages acknowledged before kill");

    b.restart();
    wait_topic_partitions(&b, topic, 3);

    let mut want: HashMap<(i32, i64), usize> = HashMap::new();
    let mut max_off = vec![-1i64; 3];
    for &(i, p, o) in &acked {
        assert_eq!(p, (i % 3) as i32);
        assert!(want.insert((p, o), i).is_none(), "duplicate ack offset {p}/{o}");
        max_off[p as usize] = max_off[p as usize].max(o);
    }
    let wm = watermarks(&b, topic, 3);
    for p in 0..3 {
        assert_eq!(wm[p].0, 0, "low watermark of partition {p}");
        assert!(
            wm[p].1 > max_off[p],
            "partition {p}: high watermark {} after restart but offset {} was acknowledged",
            wm[p].1,
            max_off[p]
        );
    }
    let ends: Vec<i64> = wm.iter().map(|w| w.1).collect();
    let mut found = 0usize;
    let mut errors = Vec::new();
    consume_range(&b, topic, &ends, |p, o, m| {
        if let Some(&i) = want.get(&(p, o)) {
            found += 1;
            if let Err(e) = check_message(m, &make_msg(7, i, 1), &format!("acked msg {i} at {p}/{o}")) {
                if errors.len() < 10 {
                    errors.push(e);
                }
            }
        }
    });
    assert!(errors.is_empty(), "acknowledged messages corrupted:\n{}", errors.join("\n"));
    assert_eq!(found, acked.len(), "some acknowledged messages missing");

    // The log must still be writable after recovery, continuing at the end.
    let more: Vec<Msg> = (0..30).map(|i| make_msg(8, i, 1)).collect();
    let pos = produce_all(&b, topic, &more, |i| Some((i % 3) as i32), &[]);
    for (i, &(p, o)) in pos.iter().enumerate() {
        assert!(o >= ends[p as usize], "post-recovery message {i} at {p}/{o} overwrote old data");
    }
}

/// ListOffsets: watermarks, earliest/latest, and by-timestamp lookups, before
/// and after a restart.
#[test]
fn list_offsets_watermarks_and_times() {
    let mut b = Broker::start(StartOpts::default());
    let topic = "lo";
    create_topic(&b, topic, 3);
    const N: usize = 3000;
    const STEP: i64 = 10;
    let msgs: Vec<Msg> = (0..N).map(|i| make_msg(3, i, STEP)).collect();
    let pos = produce_all(&b, topic, &msgs, |i| Some((i % 3) as i32), &[]);

    // Per-partition timestamps in offset order.
    let mut ts: Vec<Vec<i64>> = vec![Vec::new(); 3];
    let mut at: Vec<HashMap<i64, i64>> = vec![HashMap::new(); 3];
    for (i, &(p, o)) in pos.iter().enumerate() {
        at[p as usize].insert(o, msgs[i].ts);
    }
    for p in 0..3 {
        let n = at[p].len() as i64;
        ts[p] = (0..n).map(|o| at[p][&o]).collect();
    }
    let expected = |p: usize, t: i64| -> i64 {
        ts[p].iter().position(|&x| x >= t).map(|o| o as i64).unwrap_or(-1)
    };
    let max_ts = msgs.iter().map(|m| m.ts).max().unwrap();

    for round in 0..2 {
        let wm = watermarks(&b, topic, 3);
        for p in 0..3 {
            assert_eq!(wm[p], (0, ts[p].len() as i64), "round {round}: watermarks p{p}");
        }
        let c = consumer(&b);
        let queries: Vec<i64> = vec![
            0,
            TS_BASE - 1000,
            TS_BASE,
            TS_BASE + 1,
            TS_BASE + 7 * STEP,
            TS_BASE + 7 * STEP + 3,
            TS_BASE + (N as i64 / 2) * STEP,
            TS_BASE + (N as i64 / 2) * STEP - 1,
            max_ts - 1,
            max_ts,
            max_ts + 1,
            max_ts + 1_000_000,
        ];
        for &t in &queries {
            let mut tpl = TopicPartitionList::new();
            for p in 0..3 {
                tpl.add_partition_offset(topic, p, Offset::Offset(t)).unwrap();
            }
            let res = c.offsets_for_times(tpl, T).expect("offsets_for_times");
            for e in res.elements() {
                let p = e.partition() as usize;
                assert!(e.error().is_ok(), "offsets_for_times({t}) p{p}: {:?}", e.error());
                let want = expected(p, t);
                let got = e.offset();
                if want >= 0 {
                    assert_eq!(
                        got,
                        Offset::Offset(want),
                        "round {round}: offsets_for_times(ts={t}) partition {p}"
                    );
                } else {
                    // Kafka answers offset -1 (timestamp -1) for a timestamp
                    // after the last record; librdkafka reports that as End.
                    assert_eq!(
                        got,
                        Offset::End,
                        "round {round}: offsets_for_times(ts={t} > max ts {max_ts}) partition {p}"
                    );
                }
            }
        }
        // Special timestamps: -2 = earliest, -1 = latest.
        for (special, name) in [(Offset::Beginning, "earliest"), (Offset::End, "latest")] {
            let mut tpl = TopicPartitionList::new();
            for p in 0..3 {
                tpl.add_partition_offset(topic, p, special).unwrap();
            }
            let res = c.offsets_for_times(tpl, T).expect("offsets_for_times special");
            for e in res.elements() {
                let p = e.partition() as usize;
                let want = if name == "earliest" { 0 } else { ts[p].len() as i64 };
                assert_eq!(e.offset(), Offset::Offset(want), "round {round}: {name} p{p}");
            }
        }
        drop(c);
        if round == 0 {
            b.restart();
            wait_topic_partitions(&b, topic, 3);
        }
    }

    // Empty partition: watermarks (0,0) and by-time lookup -> End.
    create_topic(&b, "lo-empty", 1);
    assert_eq!(watermarks(&b, "lo-empty", 1), vec![(0, 0)]);
    let c = consumer(&b);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lo-empty", 0, Offset::Offset(TS_BASE)).unwrap();
    let res = c.offsets_for_times(tpl, T).expect("offsets_for_times empty");
    assert_eq!(res.elements()[0].offset(), Offset::End, "by-time lookup on empty partition");
}

/// Metadata for an explicitly created topic, CreateTopics on an existing
/// topic, and auto-creation via metadata and via produce.
#[test]
fn metadata_and_auto_create() {
    let b = Broker::start(StartOpts::default().set("num.partitions", "2"));
    create_topic(&b, "md", 3);

    let c = consumer(&b);
    let md = c.fetch_metadata(Some("md"), T).expect("metadata");
    assert_eq!(md.brokers().len(), 1, "one broker");
    let br = &md.brokers()[0];
    assert_eq!(br.id(), 1);
    assert_eq!(br.host(), "127.0.0.1");
    assert_eq!(br.port(), b.port() as i32);
    let t = md.topics().iter().find(|t| t.name() == "md").expect("topic md listed");
    assert!(t.error().is_none(), "topic error {:?}", t.error());
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2]);
    for p in t.partitions() {
        assert_eq!(p.leader(), 1, "leader of md/{}", p.id());
        assert!(p.error().is_none(), "partition error {:?}", p.error());
        assert_eq!(p.replicas(), &[1]);
        assert_eq!(p.isr(), &[1]);
    }
    // All-topics metadata lists it too.
    let all = c.fetch_metadata(None, T).expect("metadata all");
    assert!(all.topics().iter().any(|t| t.name() == "md" && t.partitions().len() == 3));

    // The consumer (allow.auto.create.topics=false) must not create topics.
    let md = c.fetch_metadata(Some("md-nocreate"), T).expect("metadata");
    let t = md.topics().iter().find(|t| t.name() == "md-nocreate").expect("topic entry");
    assert_eq!(
        t.error(),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        "metadata with allow_auto_topic_creation=false must not create"
    );

    // CreateTopics on an existing topic -> TopicAlreadyExists.
    let a = admin(&b);
    let res = block_on(a.create_topics(
        &[NewTopic::new("md", 3, TopicReplication::Fixed(1))],
        &admin_opts(),
    ))
    .expect("CreateTopics");
    assert_eq!(
        res[0],
        Err(("md".to_string(), RDKafkaErrorCode::TopicAlreadyExists)),
        "re-creating an existing topic"
    );

    // Auto-create through metadata (producer clients allow auto-creation).
    let p = producer(&b, &[("message.timeout.ms", "30000")]);
    let deadline = Instant::now() + T;
    loop {
        let md = p.client().fetch_metadata(Some("auto-md"), Duration::from_secs(5));
        if let Ok(md) = &md {
            if let Some(t) = md.topics().iter().find(|t| t.name() == "auto-md") {
                if t.error().is_none() && !t.partitions().is_empty() {
                    assert_eq!(t.partitions().len(), 2, "auto-created with num.partitions");
                    assert!(t.partitions().iter().all(|p| p.leader() == 1));
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "auto-md was never auto-created: {md:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Auto-create through produce.
    let msgs: Vec<Msg> = (0..20).map(|i| make_msg(5, i, 1)).collect();
    drop(p);
    let pos = produce_all(&b, "auto-prod", &msgs, |_| None, &[]);
    assert!(pos.iter().all(|&(p, _)| p == 0 || p == 1));
    wait_topic_partitions(&b, "auto-prod", 2);
    verify_exact(&b, "auto-prod", 2, &msgs, &pos);
}

/// With auto.create.topics.enable=false, unknown topics stay unknown.
#[test]
fn auto_create_disabled() {
    let b = Broker::start(StartOpts::default().set("auto.create.topics.enable", "false"));
    let p = producer(&b, &[("message.timeout.ms", "3000")]);
    for _ in 0..3 {
        let md = p.client().fetch_metadata(Some("nope"), T).expect("metadata");
        let t = md.topics().iter().find(|t| t.name() == "nope").expect("topic entry");
        assert_eq!(t.error(), Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = p.client().fetch_metadata(None, T).expect("metadata");
    assert!(!all.topics().iter().any(|t| t.name() == "nope"));
    // Explicit creation still works.
    drop(p);
    create_topic(&b, "yes", 1);
}

/// DeleteTopics removes the topic from metadata; re-creating it starts at
/// offset 0; deletion survives a restart.
#[test]
fn delete_and_recreate_topic() {
    let mut b = Broker::start(StartOpts::default().set("auto.create.topics.enable", "false"));
    let topic = "del";
    create_topic(&b, topic, 3);
    let msgs: Vec<Msg> = (0..300).map(|i| make_msg(9, i, 1)).collect();
    let pos = produce_all(&b, topic, &msgs, |i| Some((i % 3) as i32), &[]);
    verify_exact(&b, topic, 3, &msgs, &pos);

    let a = admin(&b);
    let res = block_on(a.delete_topics(&[topic], &admin_opts())).expect("DeleteTopics");
    assert_eq!(res, vec![Ok(topic.to_string())]);

    let c = consumer(&b);
    let deadline = Instant::now() + T;
    loop {
        let all = c.fetch_metadata(None, T).expect("metadata");
        if !all.topics().iter().any(|t| t.name() == topic) {
            break;
        }
        assert!(Instant::now() < deadline, "deleted topic still in metadata");
        std::thread::sleep(Duration::from_millis(200));
    }
    let md = c.fetch_metadata(Some(topic), T).expect("metadata");
    let t = md.topics().iter().find(|t| t.name() == topic).expect("topic entry");
    assert_eq!(t.error(), Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
    drop(c);

    // Deleting again -> UnknownTopicOrPartition.
    let res = block_on(a.delete_topics(&[topic], &admin_opts())).expect("DeleteTopics");
    assert_eq!(
        res,
        vec![Err((topic.to_string(), RDKafkaErrorCode::UnknownTopicOrPartition))]
    );
    drop(a);

    // Re-create with a different partition count: fresh log from offset 0.
    create_topic(&b, topic, 1);
    assert_eq!(watermarks(&b, topic, 1), vec![(0, 0)]);
    let msgs2: Vec<Msg> = (0..5).map(|i| make_msg(10, i, 1)).collect();
    let pos2 = produce_all(&b, topic, &msgs2, |_| Some(0), &[]);
    assert_eq!(pos2, (0..5).map(|o| (0, o)).collect::<Vec<_>>());
    verify_exact(&b, topic, 1, &msgs2, &pos2);

    // After a restart the old incarnation must not come back.
    b.restart();
    wait_topic_partitions(&b, topic, 1);
    verify_exact(&b, topic, 1, &msgs2, &pos2);

    // Delete then restart: stays deleted.
    let a = admin(&b);
    let res = block_on(a.delete_topics(&[topic], &admin_opts())).expect("DeleteTopics");
    assert_eq!(res, vec![Ok(topic.to_string())]);
    drop(a);
    b.restart();
    let c = consumer(&b);
    let all = c.fetch_metadata(None, T).expect("metadata");
    assert!(
        !all.topics().iter().any(|t| t.name() == topic),
        "deleted topic came back after restart"
    );
}
