//! Log compaction with a real client (librdkafka via `rdkafka`): keyed updates and tombstones
//! over many segments (lz4, zstd, gzip and uncompressed batches) are cleaned to the latest
//! record per key at its original offset; tombstones go after `delete.retention.ms`; the result
//! survives restart; the internal group log stays bounded under many commits.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Broker, StartOpts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(30);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn create_topic(b: &Broker, topic: &str, configs: &[(&str, &str)]) {
    let a: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
    let mut nt = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new().request_timeout(Some(T)).operation_timeout(Some(T));
    assert_eq!(block_on(a.create_topics(&[nt], &opts)).expect("CreateTopics"), vec![Ok(topic.to_string())]);
}

/// Produces (key, value) records with `codec` in batches of `batch` records; returns each
/// record's acknowledged offset.
fn produce(b: &Broker, topic: &str, codec: &str, records: &[(String, Option<Vec<u8>>)], batch: usize) -> Vec<i64> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("compression.type", codec)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut offsets = Vec::with_capacity(records.len());
    block_on(async {
        for chunk in records.chunks(batch) {
            let futs: Vec<_> = chunk
                .iter()
                .map(|(k, v)| {
                    let mut r = FutureRecord::to(topic).key(k.as_bytes());
                    if let Some(v) = v {
                        r = r.payload(v.as_slice());
                    }
                    p.send(r, T)
                })
                .collect();
            for f in futs {
                let d = f.await.expect("delivery");
                offsets.push(d.offset);
            }
        }
    });
    offsets
}

/// Everything in the partition from the beginning: (offset, key, value).
fn consume_all(b: &Broker, topic: &str) -> Vec<(i64, String, Option<Vec<u8>>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = c.fetch_watermarks(topic, 0, T).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + T;
    while out.last().map_or(high > 0, |(o, _, _)| *o + 1 < high) {
        assert!(Instant::now() < deadline, "consumed only up to {:?} of {high}", out.last().map(|x: &(i64, String, Option<Vec<u8>>)| x.0));
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.offset(), String::from_utf8_lossy(m.key().unwrap_or_default()).to_string(), m.payload().map(|p| p.to_vec()))),
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

/// Bytes of data in the segment files: the active segment is preallocated (fallocate), so its
/// zero tail is not counted (nor, harmlessly, a last batch's final zero bytes).
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| data_len(&e.path()))
        .sum()
}

fn data_len(path: &Path) -> u64 {
    let d = std::fs::read(path).unwrap_or_default();
    d.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1)
}

const KEYS: usize = 40;
const ROUNDS: usize = 12;

/// Keyed updates over many segments, a tombstone for some keys, then filler on another key so
/// every real record is in a sealed segment. Returns the acknowledged offset of each key's
/// latest record and the tombstoned keys.
fn write_history(b: &Broker, topic: &str) -> (HashMap<String, (i64, Option<Vec<u8>>)>, Vec<String>) {
    let codecs = ["lz4", "zstd", "gzip", "none"];
    let mut latest = HashMap::new();
    for round in 0..ROUNDS {
        let recs: Vec<(String, Option<Vec<u8>>)> =
            (0..KEYS).map(|k| (format!("key-{k}"), Some(format!("r{round}-k{k}-{}", "x".repeat(60)).into_bytes()))).collect();
        let offs = produce(b, topic, codecs[round % codecs.len()], &recs, 8);
        for ((k, v), o) in recs.into_iter().zip(offs) {
            latest.insert(k, (o, v));
        }
    }
    let dead: Vec<String> = (0..KEYS).step_by(5).map(|k| format!("key-{k}")).collect();
    let tombs: Vec<(String, Option<Vec<u8>>)> = dead.iter().map(|k| (k.clone(), None)).collect();
    let offs = produce(b, topic, "lz4", &tombs, 4);
    for ((k, _), o) in tombs.into_iter().zip(offs) {
        latest.insert(k, (o, None));
    }
    let filler: Vec<(String, Option<Vec<u8>>)> = (0..60).map(|i| ("filler".to_string(), Some(format!("f{i}-{}", "y".repeat(100)).into_bytes()))).collect();
    produce(b, topic, "none", &filler, 1);
    (latest, dead)
}

/// Checks a consumed log against the expected latest records. `tombstones_kept`: whether the
/// tombstoned keys must still show their tombstone (else they must be gone).
fn check_compacted(got: &[(i64, String, Option<Vec<u8>>)], latest: &HashMap<String, (i64, Option<Vec<u8>>)>, dead: &[String], tombstones_kept: bool) -> Result<(), String> {
    let mut seen: HashMap<&str, Vec<(i64, &Option<Vec<u8>>)>> = HashMap::new();
    for (o, k, v) in got {
        if k != "filler" {
            seen.entry(k.as_str()).or_default().push((*o, v));
        }
    }
    for (k, (off, val)) in latest {
        let is_dead = dead.contains(k);
        match seen.get(k.as_str()) {
            None if is_dead && !tombstones_kept => {}
            None => return Err(format!("{k} is missing")),
            Some(_) if is_dead && !tombstones_kept => return Err(format!("tombstoned {k} is still there")),
            Some(v) if v.len() != 1 => return Err(format!("{k} appears {} times", v.len())),
            Some(v) => {
                if v[0].0 != *off || v[0].1 != val {
                    return Err(format!("{k}: got offset {} expected {off} (value match: {})", v[0].0, v[0].1 == val));
                }
            }
        }
    }
    let mut prev = -1;
    for (o, _, _) in got {
        if *o <= prev {
            return Err(format!("offsets not increasing at {o}"));
        }
        prev = *o;
    }
    Ok(())
}

fn wait_compacted(b: &Broker, topic: &str, latest: &HashMap<String, (i64, Option<Vec<u8>>)>, dead: &[String], tombstones_kept: bool) -> Vec<(i64, String, Option<Vec<u8>>)> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = consume_all(b, topic);
        match check_compacted(&got, latest, dead, tombstones_kept) {
            Ok(()) => return got,
            Err(e) if Instant::now() > deadline => panic!("log not compacted in time: {e}\n{}", b.log_tail(30)),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn cleaner_opts() -> StartOpts {
    StartOpts::default().set("log.cleaner.backoff.ms", "200").set("log.retention.check.interval.ms", "200")
}

fn cleaner_broker() -> Broker {
    Broker::start(cleaner_opts())
}

#[test]
fn compaction_keeps_latest_per_key_at_original_offsets_across_codecs_and_restart() {
    // Written with the cleaner off, so the log's size before cleaning is known.
    let b = Broker::start(StartOpts::default().set("log.cleaner.enable", "false"));
    let topic = "compacted";
    create_topic(&b, topic, &[("cleanup.policy", "compact"), ("segment.bytes", "4096"), ("min.cleanable.dirty.ratio", "0.01")]);
    let (latest, dead) = write_history(&b, topic);
    let uncleaned = consume_all(&b, topic);
    assert_eq!(uncleaned.len(), KEYS * ROUNDS + dead.len() + 60, "nothing is cleaned with log.cleaner.enable=false");
    // kill -9, then start with the cleaner on.
    let mut b = Broker::start_in(cleaner_opts(), b.into_dir());
    let dir = b.data_dir().join(format!("{topic}-0"));
    let before = log_bytes(&dir);
    let got = wait_compacted(&b, topic, &latest, &dead, true);
    let after = log_bytes(&dir);
    assert!(after * 2 < before, "compaction shrinks the log on disk: {before} -> {after}");
    // Every tombstone is still readable (delete.retention.ms is a day).
    for k in &dead {
        assert!(got.iter().any(|(_, kk, v)| kk == k && v.is_none()), "tombstone of {k}");
    }
    assert!(b.logs().contains("cleaned log"), "the cleaner logged its pass");

    // A cleaned segment left half-written by a crash is ignored and removed at start.
    let leftover = dir.join(format!("{:020}.log.cleaned", 0));
    std::fs::write(&leftover, vec![7u8; 1000]).unwrap();
    b.restart();
    assert!(!leftover.exists(), "the .cleaned leftover is removed at start");
    let again = consume_all(&b, topic);
    assert_eq!(again, got, "restart serves the same compacted log");
    // Writes after the restart continue the offsets.
    let offs = produce(&b, topic, "none", &[("key-1".to_string(), Some(b"after".to_vec()))], 1);
    assert_eq!(offs[0], latest.values().map(|v| v.0).max().unwrap() + 61);
}

#[test]
fn compaction_drops_tombstones_after_delete_retention() {
    let b = cleaner_broker();
    let topic = "compacted-del";
    create_topic(
        &b,
        topic,
        &[("cleanup.policy", "compact,delete"), ("segment.bytes", "4096"), ("min.cleanable.dirty.ratio", "0.01"), ("delete.retention.ms", "1000")],
    );
    let (latest, dead) = write_history(&b, topic);
    std::thread::sleep(Duration::from_millis(1200));
    // More filler, so the cleaner has dirty data to pass over once the tombstones are old.
    let filler: Vec<(String, Option<Vec<u8>>)> = (0..40).map(|i| ("filler".to_string(), Some(format!("g{i}-{}", "z".repeat(100)).into_bytes()))).collect();
    produce(&b, topic, "none", &filler, 1);
    wait_compacted(&b, topic, &latest, &dead, false);
}

#[test]
fn group_log_stays_bounded_under_many_commits() {
    let mut b = Broker::start(
        StartOpts::default().set("log.cleaner.backoff.ms", "200").set("offsets.topic.segment.bytes", "4096"),
    );
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "committer")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topic = "commits";
    create_topic(&b, topic, &[]);
    let commits = 2000;
    for i in 0..commits {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(i)).unwrap();
        c.commit(&tpl, CommitMode::Sync).expect("commit");
    }
    let dir = b.data_dir().join("__groups").join("shard-0");
    let deadline = Instant::now() + T;
    loop {
        let bytes = log_bytes(&dir);
        if bytes < 32 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "group log still {bytes} bytes after {commits} commits\n{}", b.log_tail(20));
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(c);
    b.restart();
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).set("group.id", "committer").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, T).unwrap();
    assert_eq!(got.find_partition(topic, 0).unwrap().offset(), Offset::Offset(commits - 1), "the latest commit survives compaction and restart");
}

/// Sends one record (key or none) and waits for its delivery report: the offset, or the error.
fn send_one(p: &FutureProducer, topic: &str, key: Option<&str>) -> Result<i64, rdkafka::error::KafkaError> {
    let mut r: FutureRecord<str, [u8]> = FutureRecord::to(topic).payload(b"v".as_slice());
    if let Some(k) = key {
        r = r.key(k);
    }
    block_on(p.send(r, T)).map(|d| d.offset).map_err(|(e, _)| e)
}

#[test]
fn compacted_topic_refuses_records_without_key() {
    let b = Broker::start(StartOpts::default());
    let topic = "compacted-keys";
    create_topic(&b, topic, &[("cleanup.policy", "compact")]);
    let plain = "plain-keys";
    create_topic(&b, plain, &[]);
    for codec in ["none", "lz4"] {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .set("compression.type", codec)
            .set("retries", "0")
            .create()
            .expect("producer");
        let before = send_one(&p, topic, Some("k")).expect("a keyed record is accepted");
        // librdkafka's delivery report carries the broker's INVALID_RECORD (87).
        match send_one(&p, topic, None) {
            Err(rdkafka::error::KafkaError::MessageProduction(code)) => {
                assert_eq!(code, rdkafka::types::RDKafkaErrorCode::InvalidRecord, "{codec}")
            }
            other => panic!("{codec}: a keyless record on a compacted topic: {other:?}"),
        }
        let after = send_one(&p, topic, Some("k")).expect("keyed records still succeed");
        assert_eq!(after, before + 1, "{codec}: the refused record took no offset");
        send_one(&p, plain, None).expect("a keyless record on a delete topic is accepted");
    }
    let keys: Vec<String> = consume_all(&b, topic).into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(keys, vec!["k"; 4], "only the keyed records are stored");
}
