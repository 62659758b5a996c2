//! Crash recovery: a librdkafka producer keeps producing while the broker is SIGKILLed and
//! restarted again and again (no acknowledged record may be lost; with idempotence none may be
//! duplicated), and damaged segment tails (torn, corrupt, zero-filled, missing indexes) that
//! start-up must repair. `strand verify` is run on the data directory throughout.
//!
//! The crash loop kills the broker 5 times per run by default; `STRAND_CRASH_KILLS=20` (see
//! `scripts/crash-loop.sh`) selects the long form.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, StartOpts};
use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use strand::storage::batch;

const T: Duration = Duration::from_secs(30);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn create_topic(b: &Broker, topic: &str, partitions: i32) {
    let a: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
    let opts = AdminOptions::new().request_timeout(Some(T)).operation_timeout(Some(T));
    let res = block_on(a.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &opts)).expect("CreateTopics");
    assert!(res[0].is_ok(), "CreateTopics {topic}: {:?}", res[0]);
    let c = consumer(b);
    let deadline = Instant::now() + T;
    loop {
        if let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            if md.topics().iter().any(|t| t.name() == topic && t.error().is_none() && t.partitions().len() == partitions as usize) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn consumer(b: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "strand-crash-test")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("consumer")
}

/// Every record of partitions `0..n` from offset 0 to the high watermark, as (offset, value)
/// per partition. Fails on a gap in offsets.
fn consume_all(b: &Broker, topic: &str, n: i32) -> Vec<Vec<Vec<u8>>> {
    let c = consumer(b);
    let ends: Vec<i64> = (0..n)
        .map(|p| {
            let (lo, hi) = c.fetch_watermarks(topic, p, T).expect("watermarks");
            assert_eq!(lo, 0, "low watermark of partition {p}");
            hi
        })
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n as usize];
    let mut last_progress = Instant::now();
    while out.iter().zip(&ends).any(|(v, &e)| (v.len() as i64) < e) {
        assert!(last_progress.elapsed() < Duration::from_secs(60), "consume stalled at {:?} of {ends:?}", out.iter().map(|v| v.len()).collect::<Vec<_>>());
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                assert_eq!(m.offset(), out[p].len() as i64, "partition {p}: offsets not contiguous");
                out[p].push(m.payload().unwrap_or_default().to_vec());
                last_progress = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer error (continuing): {e}"),
            None => {}
        }
    }
    out
}

/// Runs `strand verify` on a data directory: (exit code, output).
fn run_verify(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strand")).arg("verify").arg("--data-dir").arg(dir).output().expect("run strand verify");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

// ---------------------------------------------------------------------------
// Crash loop
// ---------------------------------------------------------------------------

struct AckCtx {
    ok: Mutex<Vec<(u64, i32, i64)>>,
    failed: Mutex<Vec<(u64, String)>>,
}
impl ClientContext for AckCtx {}
impl ProducerContext for AckCtx {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, r: &DeliveryResult<'_>, seq: Box<u64>) {
        match r {
            Ok(m) => self.ok.lock().unwrap().push((*seq, m.partition(), m.offset())),
            Err((e, _)) => self.failed.lock().unwrap().push((*seq, e.to_string())),
        }
    }
}

fn payload(run: u64, seq: u64) -> String {
    format!("{run:016x}:{seq:010}:{}", "p".repeat((seq % 200) as usize))
}

fn parse_seq(v: &[u8], run: u64) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.splitn(3, ':');
    (it.next()? == format!("{run:016x}")).then_some(())?;
    it.next()?.parse().ok()
}

fn crash_loop(idempotent: bool) {
    let kills: usize = std::env::var("STRAND_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let partitions = 4;
    let topic = if idempotent { "crash-idem" } else { "crash-acks" };
    // Small segments, so rolls (seals, indexes, producer snapshots) happen between kills.
    let mut b = Broker::start(StartOpts::default().shards(2).set("log.segment.bytes", "65536"));
    create_topic(&b, topic, partitions);
    let mut rng = rand::thread_rng();
    let run: u64 = rng.gen();
    let p = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", if idempotent { "true" } else { "false" })
            .set("linger.ms", "5")
            .set("message.timeout.ms", "300000")
            .set("request.timeout.ms", "5000")
            .set("retry.backoff.ms", "50")
            .set("retry.backoff.max.ms", "200")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "200")
            .set("queue.buffering.max.messages", "20000")
            .create_with_context::<_, ThreadedProducer<AckCtx>>(AckCtx { ok: Mutex::new(Vec::new()), failed: Mutex::new(Vec::new()) })
            .expect("producer"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key-{}", seq % 97);
                let value = payload(run, seq);
                let rec = BaseRecord::with_opaque_to(topic, Box::new(seq)).key(&key).payload(&value);
                match p.send(rec) {
                    Ok(()) => seq += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => std::thread::sleep(Duration::from_millis(2)),
                    Err((e, _)) => panic!("send {seq} failed: {e}"),
                }
                if seq.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            seq
        })
    };
    let t0 = Instant::now();
    let mut acked_before_kill = Vec::new();
    let mut torn_after_kill = 0;
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1200)));
        b.kill9();
        acked_before_kill.push(p.context().ok.lock().unwrap().len());
        // A crash leaves at most repairable damage (a torn tail), never corruption.
        let (code, out) = run_verify(&b.data_dir());
        assert!(code == 0 || code == 3, "kill {k}: strand verify exit {code} after SIGKILL:\n{out}");
        torn_after_kill += (code == 3) as usize;
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
        b.restart();
    }
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let sent = producer_thread.join().unwrap();
    p.flush(Duration::from_secs(120)).expect("flush after the crash loop");
    let acked = std::mem::take(&mut *p.context().ok.lock().unwrap());
    let failed = std::mem::take(&mut *p.context().failed.lock().unwrap());
    drop(p);
    eprintln!(
        "crash loop (idempotent={idempotent}): {kills} kills ({torn_after_kill} left a repairable tail) in {:?}, sent {sent}, acked {}, failed {} {:?}, acked at each kill {acked_before_kill:?}",
        t0.elapsed(),
        acked.len(),
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    assert!(failed.is_empty(), "deliveries failed although message.timeout.ms outlasts the run: {:?}", &failed[..failed.len().min(5)]);
    assert_eq!(acked.len() as u64, sent, "every sent record got a delivery report");
    assert!(acked.len() > 1000, "too few records acknowledged");

    let log = consume_all(&b, topic, partitions);
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for v in log.iter().flatten() {
        let seq = parse_seq(v, run).unwrap_or_else(|| panic!("foreign record {:?}", String::from_utf8_lossy(v)));
        *copies.entry(seq).or_default() += 1;
    }
    let mut missing = Vec::new();
    for &(seq, part, off) in &acked {
        match log[part as usize].get(off as usize) {
            Some(v) if parse_seq(v, run) == Some(seq) => {}
            other => missing.push((seq, part, off, other.map(|v| String::from_utf8_lossy(v).into_owned()))),
        }
    }
    assert!(missing.is_empty(), "{} acknowledged records not at their acknowledged offsets, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    let dups: Vec<_> = copies.iter().filter(|(_, &n)| n > 1).map(|(s, n)| (*s, *n)).collect();
    eprintln!("records in the log: {}, distinct {}, duplicated {}", log.iter().map(|v| v.len()).sum::<usize>(), copies.len(), dups.len());
    if idempotent {
        assert!(dups.is_empty(), "idempotent producer: {} records duplicated, e.g. {:?}", dups.len(), &dups[..dups.len().min(5)]);
        assert_eq!(copies.len(), acked.len(), "idempotent producer: exactly the acknowledged records");
    }

    b.kill9();
    let (code, out) = run_verify(&b.data_dir());
    eprintln!("{out}");
    assert_eq!(code, 0, "strand verify after the crash loop:\n{out}");
    assert!(out.contains("__groups/shard-1") || out.contains(&format!("{topic}-0")), "{out}");
}

#[test]
fn crash_loop_acks_all() {
    crash_loop(false);
}

#[test]
fn crash_loop_idempotent() {
    crash_loop(true);
}

// ---------------------------------------------------------------------------
// Damaged tails
// ---------------------------------------------------------------------------

const TORN_TOPIC: &str = "torn";

/// A broker with one partition holding `n` records in several segments; the active segment
/// holds several batches. Returns the broker (killed) and the values.
fn damaged_setup(n: usize) -> (Broker, Vec<String>) {
    let mut b = Broker::start(StartOpts::default().shards(2).set("log.segment.bytes", "32768"));
    create_topic(&b, TORN_TOPIC, 1);
    let p: ThreadedProducer<AckCtx> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "20")
        .create_with_context(AckCtx { ok: Mutex::new(Vec::new()), failed: Mutex::new(Vec::new()) })
        .unwrap();
    let values: Vec<String> = (0..n).map(|i| format!("torn-{i:06}-{}", "x".repeat(i % 150))).collect();
    for (i, v) in values.iter().enumerate() {
        // One partition, and a flush every 50 records, so offsets equal indexes.
        p.send(BaseRecord::with_opaque_to(TORN_TOPIC, Box::new(i as u64)).partition(0).key("k").payload(v)).map_err(|(e, _)| e).unwrap();
        if i % 50 == 49 {
            p.flush(T).unwrap();
        }
    }
    p.flush(T).unwrap();
    let ok = p.context().ok.lock().unwrap().clone();
    assert_eq!(ok.len(), n);
    assert!(ok.iter().all(|&(s, _, o)| s as i64 == o));
    drop(p);
    b.kill9();
    (b, values)
}

fn partition_dir(b: &Broker) -> PathBuf {
    b.data_dir().join(format!("{TORN_TOPIC}-0"))
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
    v.sort();
    v
}

/// (position, base offset, size) of every batch of a segment file.
fn batches_of(path: &Path) -> Vec<(usize, i64, usize)> {
    let data = std::fs::read(path).unwrap();
    batch::iter_headers(&data).map(|(pos, h)| (pos, h.base_offset, h.size)).collect()
}

/// Restarts on the damaged data, checks the log and what is served, and that verify is clean.
fn check_after_repair(mut b: Broker, values: &[String], served: usize, log_needles: &[String]) -> Broker {
    let before_len = b.logs().len();
    b.restart();
    let logs = b.logs()[before_len..].to_string();
    for needle in log_needles {
        assert!(logs.contains(needle.as_str()), "broker log lacks {needle:?}:\n{logs}");
    }
    let log = consume_all(&b, TORN_TOPIC, 1);
    assert_eq!(log[0].len(), served, "records served after repair");
    for (i, v) in log[0].iter().enumerate() {
        assert_eq!(v, values[i].as_bytes(), "record {i} after repair");
    }
    b.kill9();
    let (code, out) = run_verify(&b.data_dir());
    assert_eq!(code, 0, "verify after repair:\n{out}");
    b
}

fn verify_expect(b: &Broker, code_wanted: i32, needles: &[String]) {
    let (code, out) = run_verify(&b.data_dir());
    assert_eq!(code, code_wanted, "verify exit code:\n{out}");
    for n in needles {
        assert!(out.contains(n.as_str()), "verify output lacks {n:?}:\n{out}");
    }
}

#[test]
fn torn_tail_truncated_mid_batch() {
    let (b, values) = damaged_setup(1200);
    let segs = segments(&partition_dir(&b));
    assert!(segs.len() >= 3, "the test needs sealed segments, got {}", segs.len());
    let active = segs.last().unwrap().clone();
    let bs = batches_of(&active);
    assert!(bs.len() >= 2, "the active segment needs several batches");
    let &(pos, base, size) = bs.last().unwrap();
    let cut = pos + size / 2;
    std::fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(cut as u64).unwrap();
    let name = active.file_name().unwrap().to_string_lossy().into_owned();
    verify_expect(&b, 3, &[format!("REPAIRABLE torn-0/{name} at byte {pos}: torn tail")]);
    check_after_repair(b, &values, base as usize, &[name, format!("truncated_bytes={}", cut - pos)]);
}

#[test]
fn corrupt_last_batch_is_cut() {
    let (b, values) = damaged_setup(1200);
    let active = segments(&partition_dir(&b)).last().unwrap().clone();
    let bs = batches_of(&active);
    let &(pos, base, _) = bs.last().unwrap();
    let mut data = std::fs::read(&active).unwrap();
    let len = data.len();
    for i in 0..4 {
        data[pos + 70 + i] ^= 0xa5;
    }
    std::fs::write(&active, &data).unwrap();
    let name = active.file_name().unwrap().to_string_lossy().into_owned();
    verify_expect(&b, 3, &[format!("torn-0/{name} at byte {pos}: torn tail: CRC32C mismatch")]);
    check_after_repair(b, &values, base as usize, &[name, format!("truncated_bytes={}", len - pos)]);
}

#[test]
fn zeros_after_last_batch_are_cut() {
    let (b, values) = damaged_setup(1200);
    let active = segments(&partition_dir(&b)).last().unwrap().clone();
    let &(pos, _, size) = batches_of(&active).last().unwrap();
    let end = pos + size;
    // As a preallocated file leaves (fallocate ahead of the data): 1 MiB of zeros. Normal: verify
    // notes it, start-up cuts it without a warning, everything is served.
    let f = std::fs::OpenOptions::new().write(true).open(&active).unwrap();
    let len = f.metadata().unwrap().len() + (1 << 20);
    f.set_len(len).unwrap();
    let name = active.file_name().unwrap().to_string_lossy().into_owned();
    verify_expect(&b, 0, &[format!("torn-0/{name} at byte {end}: {} zero bytes", len as usize - end)]);
    check_after_repair(b, &values, values.len(), &[]);
}

#[test]
fn missing_indexes_are_rebuilt() {
    let (b, values) = damaged_setup(1200);
    let dir = partition_dir(&b);
    let mut removed = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "index" || x == "timeindex") {
            std::fs::remove_file(&p).unwrap();
            removed += 1;
        }
    }
    let sealed = segments(&dir).len() - 1;
    assert_eq!(removed, 2 * sealed, "every sealed segment had its two index files (the active has none)");
    verify_expect(&b, 3, &["index file missing".to_string()]);
    let first = segments(&dir)[0].file_name().unwrap().to_string_lossy().into_owned();
    let _b = check_after_repair(b, &values, values.len(), &["rebuilt missing or invalid index".to_string(), first]);
    let rebuilt = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "index")).count();
    assert_eq!(rebuilt, sealed, "indexes rebuilt for every sealed segment");
}

/// Damage in a sealed segment is not repaired by start-up: verify must call it corruption and
/// the broker must still start and serve what precedes it.
#[test]
fn verify_reports_corruption_in_sealed_segment() {
    let (b, _values) = damaged_setup(1200);
    let segs = segments(&partition_dir(&b));
    let sealed = &segs[0];
    let bs = batches_of(sealed);
    let (pos, _, _) = bs[bs.len() / 2];
    let mut data = std::fs::read(sealed).unwrap();
    data[pos + 65] ^= 0xff;
    std::fs::write(sealed, &data).unwrap();
    let name = sealed.file_name().unwrap().to_string_lossy().into_owned();
    verify_expect(&b, 2, &[format!("CORRUPT torn-0/{name} at byte {pos}: CRC32C mismatch")]);
}
