//! The fetch path and the memory budget with a real client (librdkafka via `rdkafka`):
//! - a broker with `memory` set keeps its resident memory within the budget while 1,000
//!   partitions take more data than the budget, and every record reads back;
//! - after a restart (empty tail cache) a consumer's fetches are served by sendfile(2) from the
//!   segment files, seen with strace: the records never pass through the broker's user space.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, StartOpts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(60);

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().unwrap();
    let rt = futures::executor::block_on(admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new().operation_timeout(Some(T))))
        .unwrap();
    for r in rt {
        r.unwrap();
    }
}

fn value(p: i32, i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("p{p}-m{i}-").into_bytes();
    let mut x = (p as u64) << 32 | i as u64;
    while v.len() < len {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.push(b'a' + (x >> 59) as u8);
    }
    v
}

/// Produces `per_partition` records of `len` bytes to every partition, acks=all.
fn produce(b: &Broker, topic: &str, partitions: i32, per_partition: usize, len: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "262144")
        .set("queue.buffering.max.kbytes", "262144")
        .create()
        .unwrap();
    for i in 0..per_partition {
        for part in 0..partitions {
            let v = value(part, i, len);
            let mut rec = BaseRecord::<(), [u8]>::to(topic).partition(part).payload(&v[..]);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        assert!(matches!(e, rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)), "{e}");
                        rec = r;
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    p.flush(T).unwrap();
    assert_eq!(p.in_flight_count(), 0);
}

/// Reads every partition from the beginning and checks every record.
fn consume_all(b: &Broker, topic: &str, partitions: i32, per_partition: usize, len: usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "1048576")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..partitions {
        tpl.add_partition_offset(topic, part, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut next: HashMap<i32, usize> = HashMap::new();
    let total = partitions as usize * per_partition;
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while got < total {
        assert!(Instant::now() < deadline, "consumed {got} of {total} records");
        let Some(m) = c.poll(Duration::from_millis(500)) else { continue };
        let m = m.unwrap();
        let i = next.entry(m.partition()).or_default();
        assert_eq!(m.offset(), *i as i64, "partition {} offsets are contiguous", m.partition());
        assert_eq!(m.payload().unwrap(), &value(m.partition(), *i, len)[..], "record {i} of partition {}", m.partition());
        *i += 1;
        got += 1;
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn memory_budget_bounds_resident_memory_with_1000_partitions() {
    const MEMORY: u64 = 128 << 20;
    const PARTITIONS: i32 = 1000;
    const PER_PARTITION: usize = 200;
    const LEN: usize = 1024;
    let b = Broker::start(StartOpts::default().shards(2).set("memory", "128M"));
    let pid = b.pid().unwrap();
    create_topic(&b, "mem", PARTITIONS);
    let base = rss_bytes(pid);
    // 200 MiB of records: more than the whole budget, so the tail cache must evict.
    produce(&b, "mem", PARTITIONS, PER_PARTITION, LEN);
    let after_produce = rss_bytes(pid);
    consume_all(&b, "mem", PARTITIONS, PER_PARTITION, LEN);
    let after_consume = rss_bytes(pid);
    eprintln!(
        "RSS: {} MiB with 1000 empty partitions, {} MiB after producing 200 MiB, {} MiB after consuming it (budget {} MiB)",
        base >> 20,
        after_produce >> 20,
        after_consume >> 20,
        MEMORY >> 20
    );
    for (what, rss) in [("after produce", after_produce), ("after consume", after_consume)] {
        assert!(rss <= base + MEMORY, "{what}: resident memory grew by {} MiB, over the {} MiB budget", (rss - base) >> 20, MEMORY >> 20);
    }
}

#[test]
fn cold_fetches_are_sent_with_sendfile() {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: usize = 5000;
    const LEN: usize = 1000;
    let mut b = Broker::start(StartOpts::default().shards(2));
    create_topic(&b, "cold", PARTITIONS);
    produce(&b, "cold", PARTITIONS, PER_PARTITION, LEN);
    // A restart empties the tail cache: everything is read from the segment files.
    b.restart();
    let pid = b.pid().unwrap();
    let trace = b.data_dir().with_extension("strace");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=sendfile,pread64,read", "-o"])
        .arg(&trace)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is installed by scripts/install-test-deps.sh");
    std::thread::sleep(Duration::from_secs(2));
    consume_all(&b, "cold", PARTITIONS, PER_PARTITION, LEN);
    unsafe {
        libc::kill(strace.id() as i32, libc::SIGINT);
    }
    let _ = strace.wait();
    let text = std::fs::read_to_string(&trace).unwrap();
    let returned = |call: &str| -> (u64, u64) {
        let mut calls = 0;
        let mut bytes = 0;
        for l in text.lines().filter(|l| l.contains(&format!("{call}("))) {
            if let Some(r) = l.rsplit("= ").next().and_then(|r| r.split_whitespace().next()).and_then(|r| r.parse::<i64>().ok()) {
                calls += 1;
                bytes += r.max(0) as u64;
            }
        }
        (calls, bytes)
    };
    let (sf_calls, sf_bytes) = returned("sendfile");
    let (pr_calls, pr_bytes) = returned("pread64");
    let data = (PARTITIONS as usize * PER_PARTITION * LEN) as u64;
    eprintln!("sendfile: {sf_calls} calls, {sf_bytes} bytes; pread64: {pr_calls} calls, {pr_bytes} bytes; records {data} bytes");
    assert!(sf_bytes >= data, "cold fetches went out by sendfile: {sf_bytes} of at least {data} bytes");
    assert!(pr_bytes < data / 10, "records were not read into user space: {pr_bytes} bytes pread");
    // The batch headers that place a cold fetch's range are read through io_uring: no blocking
    // pread on a shard's thread (a page-cache miss would stall the shard).
    assert_eq!(pr_calls, 0, "cold fetches are planned without a blocking pread");
}
