//! Log retention and DeleteRecords with a real client (librdkafka via `rdkafka`): old sealed
//! segments leave the disk, the log start offset moves (ListOffsets earliest, Fetch), consumers
//! whose position fell below it reset per `auto.offset.reset`, and all of it survives restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Broker, StartOpts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(30);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().expect("admin client")
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(T)).operation_timeout(Some(T))
}

fn create_topic(b: &Broker, topic: &str, configs: &[(&str, &str)]) {
    let mut nt = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let res = block_on(admin(b).create_topics(&[nt], &admin_opts())).expect("CreateTopics");
    assert_eq!(res, vec![Ok(topic.to_string())]);
}

fn producer(b: &Broker) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

/// Produces `n` records of ~`size` bytes one by one (one batch each), with timestamp `ts`.
fn produce(b: &Broker, topic: &str, n: usize, size: usize, ts: Option<i64>) {
    let p = producer(b);
    let value = vec![b'v'; size];
    for i in 0..n {
        let key = format!("k{i}");
        let mut rec = BaseRecord::to(topic).key(&key).payload(&value);
        if let Some(ts) = ts {
            rec = rec.timestamp(ts);
        }
        p.send(rec).map_err(|(e, _)| e).expect("send");
        // Flushing each record keeps batches small, so segments roll often.
        p.flush(T).expect("flush");
    }
}

fn consumer(b: &Broker, group: &str, reset: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", reset)
        .create()
        .expect("consumer")
}

fn watermarks(b: &Broker, topic: &str) -> (i64, i64) {
    consumer(b, "wm", "earliest").fetch_watermarks(topic, 0, T).expect("watermarks")
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

fn dir_bytes(dir: &Path, ext: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
        .map(|e| data_len(&e.path()))
        .sum()
}

/// Bytes up to the last non-zero one: the active segment is preallocated (fallocate), so its
/// zero tail is not data.
fn data_len(path: &Path) -> u64 {
    let d = std::fs::read(path).unwrap_or_default();
    d.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1)
}

/// Waits until `f` holds, or fails with `what`.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// First message a consumer gets after assigning `offset` (or its committed one).
fn first_offset(c: &BaseConsumer, topic: &str, offset: Offset) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, offset).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => return Some(m.offset()),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    None
}

#[test]
fn retention_bytes_deletes_old_segments_and_consumers_reset() {
    let b = Broker::start(StartOpts::default().set("log.retention.check.interval.ms", "200"));
    let topic = "ret-bytes";
    create_topic(&b, topic, &[("segment.bytes", "4096"), ("retention.bytes", "8192")]);
    // A committed position that retention will leave behind.
    let early = consumer(&b, "g-early", "earliest");
    let late = consumer(&b, "g-late", "latest");
    for c in [&early, &late] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(3)).unwrap();
        c.commit(&tpl, CommitMode::Sync).expect("commit");
    }
    produce(&b, topic, 200, 300, None);
    let dir = b.data_dir().join(format!("{topic}-0"));
    let (_, high) = watermarks(&b, topic);
    assert_eq!(high, 200);
    wait_until("retention moved the log start", T, || watermarks(&b, topic).0 > 0);
    // Wait for the files to go (removed by the background task after the start moved).
    wait_until("old segment files are removed", T, || dir_bytes(&dir, ".log") <= 8192 + 4096 + 4096);
    let (low, high) = watermarks(&b, topic);
    assert_eq!(high, 200);
    let files = log_files(&dir);
    assert_eq!(files[0], format!("{low:020}.log"), "the log starts at the first remaining segment: {files:?}");
    assert!(!dir.join(format!("{:020}.log", 0)).exists());
    assert!(!dir.join(format!("{:020}.index", 0)).exists());

    // A fetch below the start is out of range: earliest resets to the start, latest to the end.
    assert_eq!(first_offset(&early, topic, Offset::Stored), Some(low));
    let reader = consumer(&b, "g-none", "earliest");
    assert_eq!(first_offset(&reader, topic, Offset::Offset(0)), Some(low));
    let tail = std::thread::spawn({
        let bootstrap = b.bootstrap();
        move || {
            std::thread::sleep(Duration::from_secs(2));
            let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
            p.send(BaseRecord::to("ret-bytes").key("new").payload("new")).map_err(|(e, _)| e).unwrap();
            p.flush(T).unwrap();
        }
    });
    assert_eq!(first_offset(&late, topic, Offset::Stored), Some(200), "latest resets to the end");
    tail.join().unwrap();
}

#[test]
fn retention_ms_deletes_by_timestamp_and_survives_restart() {
    let mut b = Broker::start(StartOpts::default().set("log.retention.check.interval.ms", "200"));
    let topic = "ret-time";
    create_topic(&b, topic, &[("segment.bytes", "4096"), ("retention.ms", "60000")]);
    let hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 3_600_000;
    produce(&b, topic, 60, 300, Some(hour_ago));
    // Fresh records: their segment (and the active one) stay.
    produce(&b, topic, 30, 300, None);
    let dir = b.data_dir().join(format!("{topic}-0"));
    wait_until("old segments are deleted", T, || watermarks(&b, topic).0 >= 50);
    let (low, high) = watermarks(&b, topic);
    assert_eq!(high, 90);
    assert!(low <= 60, "segments with fresh records are kept (start {low})");
    wait_until("files below the start are removed", T, || log_files(&dir)[0] == format!("{low:020}.log"));

    b.restart();
    assert_eq!(watermarks(&b, topic), (low, high), "the log start survives restart");
    let c = consumer(&b, "g", "earliest");
    assert_eq!(first_offset(&c, topic, Offset::Beginning), Some(low));
}

/// The README's start command runs with the default data directory, `strand-data` relative to
/// the working directory. DeleteRecords persists the log start with a directory fsync, which once
/// failed there with KAFKA_STORAGE_ERROR (glommio opens no directory by a relative path).
#[test]
fn delete_records_works_on_the_default_relative_data_dir() {
    let mut b = Broker::start(StartOpts::default().shards(2).default_data_dir());
    let topic = "rel-dir";
    create_topic(&b, topic, &[("segment.bytes", "4096")]);
    produce(&b, topic, 100, 300, None);
    assert!(b.data_dir().join(format!("{topic}-0")).is_dir(), "the log is under <cwd>/strand-data");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(40)).unwrap();
    let res = block_on(admin(&b).delete_records(&tpl, &admin_opts())).expect("DeleteRecords");
    assert_eq!(res.find_partition(topic, 0).unwrap().error(), Ok(()));
    assert_eq!(watermarks(&b, topic), (40, 100));
    b.restart();
    assert_eq!(watermarks(&b, topic), (40, 100), "the log start survives restart");
}

#[test]
fn delete_records_moves_the_start_and_survives_restart() {
    let mut b = Broker::start(StartOpts::default().shards(2).set("log.retention.check.interval.ms", "200"));
    let topic = "del-rec";
    create_topic(&b, topic, &[("segment.bytes", "4096")]);
    produce(&b, topic, 100, 300, None);
    let dir = b.data_dir().join(format!("{topic}-0"));
    let segments_before = log_files(&dir).len();
    assert!(segments_before > 5, "needs several segments, got {segments_before}");
    let a = admin(&b);

    // Inside a segment.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(57)).unwrap();
    let res = block_on(a.delete_records(&tpl, &admin_opts())).expect("DeleteRecords");
    let e = res.find_partition(topic, 0).unwrap();
    assert_eq!(e.error(), Ok(()));
    assert_eq!(e.offset(), Offset::Offset(57), "low watermark");
    assert_eq!(watermarks(&b, topic), (57, 100));
    wait_until("segments below the start are removed", T, || log_files(&dir).len() < segments_before);
    let c = consumer(&b, "g", "earliest");
    assert_eq!(first_offset(&c, topic, Offset::Offset(10)), Some(57), "reset to the new start");
    let c = consumer(&b, "g2", "earliest");
    assert_eq!(first_offset(&c, topic, Offset::Offset(57)), Some(57), "the batch at the start is served from 57");

    // Past the high watermark: OFFSET_OUT_OF_RANGE; unknown partition.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(101)).unwrap();
    let res = block_on(a.delete_records(&tpl, &admin_opts())).expect("DeleteRecords");
    assert_eq!(res.find_partition(topic, 0).unwrap().error().unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::OffsetOutOfRange));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("no-such-topic", 0, Offset::Offset(1)).unwrap();
    let res = block_on(a.delete_records(&tpl, &admin_opts()));
    match res {
        Ok(r) => assert!(r.find_partition("no-such-topic", 0).unwrap().error().is_err()),
        // librdkafka answers an unknown topic itself (no leader to send to); the broker's
        // UNKNOWN_TOPIC_OR_PARTITION is checked on the wire in protocol_edges.rs.
        Err(_) => {}
    }
    assert_eq!(watermarks(&b, topic), (57, 100));

    // Restart: the start stays inside its segment.
    b.restart();
    assert_eq!(watermarks(&b, topic), (57, 100));

    // -1: everything up to the high watermark.
    let a = admin(&b);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End).unwrap();
    let res = block_on(a.delete_records(&tpl, &admin_opts())).expect("DeleteRecords");
    assert_eq!(res.find_partition(topic, 0).unwrap().offset(), Offset::Offset(100));
    assert_eq!(watermarks(&b, topic), (100, 100));
    produce(&b, topic, 1, 10, None);
    let c = consumer(&b, "g3", "earliest");
    assert_eq!(first_offset(&c, topic, Offset::Beginning), Some(100));
    b.restart();
    assert_eq!(watermarks(&b, topic), (100, 101));
}
