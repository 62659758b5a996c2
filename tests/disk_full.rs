//! Disk full, for real: the broker's data directory is a small ext4 filesystem on a loop device
//! (ext4 supports O_DIRECT; the broker refuses tmpfs). The test fills it with produce until the
//! partition answers KAFKA_STORAGE_ERROR, checks every acknowledged record still reads back,
//! frees space (deletes a filler file it put there first), checks produce resumes, restarts the
//! broker and checks every acknowledged record is there, in dense offsets.
//!
//! Needs root and loop devices (as CI has); fails, never skips, without them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, StartOpts};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "full";
/// Size of the filesystem image, and of the filler file freed to make space again.
const FS_BYTES: u64 = 48 << 20;
const FILLER_BYTES: usize = 8 << 20;
const VALUE_BYTES: usize = 8 << 10;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}\n(this test needs root and a loop device: losetup -f, modprobe loop)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The broker on a mounted loop filesystem. Dropping it kills the broker, then unmounts, so
/// nothing stays mounted even when the test fails.
struct FullFs {
    broker: Option<Broker>,
    mnt: PathBuf,
    mounted: bool,
}

impl FullFs {
    fn start() -> FullFs {
        let root = tempfile::Builder::new().prefix("strand-diskfull-").tempdir().unwrap();
        let img = root.path().join("fs.img");
        let mnt = root.path().join("data");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&img).unwrap().set_len(FS_BYTES).unwrap();
        run("mkfs.ext4", &["-q", "-F", "-m", "0", img.to_str().unwrap()]);
        run("mount", &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()]);
        let mut fs = FullFs { broker: None, mnt: mnt.clone(), mounted: true };
        // Out of the broker's way (it only looks at its own files), freed later to make space.
        write_synced(&filler_path(&mnt), &vec![0x5a; FILLER_BYTES]);
        let opts = StartOpts::default().shards(1).set("log.segment.bytes", "1048576");
        fs.broker = Some(Broker::start_in(opts, root));
        fs
    }

    fn broker(&mut self) -> &mut Broker {
        self.broker.as_mut().unwrap()
    }
}

impl Drop for FullFs {
    fn drop(&mut self) {
        if let Some(b) = self.broker.as_mut() {
            b.kill9();
        }
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn filler_path(mnt: &Path) -> PathBuf {
    mnt.join("lost+found").join("filler")
}

fn write_synced(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn value(i: u64) -> Vec<u8> {
    let mut v = format!("rec-{i}-").into_bytes();
    v.resize(VALUE_BYTES, b'a' + (i % 26) as u8);
    v
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        // No retries: the storage error reaches the test instead of being retried away.
        .set("retries", "0")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "15000")
        .create()
        .unwrap()
}

enum Sent {
    Acked(i64),
    StorageError,
    Other(String),
}

async fn send(p: &FutureProducer, i: u64) -> Sent {
    let key = i.to_string();
    let v = value(i);
    let rec = FutureRecord::to(TOPIC).partition(0).key(&key).payload(&v);
    match p.send(rec, Duration::from_secs(15)).await {
        Ok(d) => Sent::Acked(d.offset),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError), _)) => Sent::StorageError,
        Err((e, _)) => Sent::Other(e.to_string()),
    }
}

/// Reads the whole partition: offset -> record number (the key), checking each value.
fn read_all(bootstrap: &str) -> BTreeMap<i64, u64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "disk-full-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = c.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0i64;
    while next < high {
        assert!(Instant::now() < deadline, "read stopped at {next} of {high}");
        let Some(m) = c.poll(Duration::from_millis(500)) else { continue };
        let m = m.unwrap();
        assert_eq!(m.offset(), next, "offsets are dense");
        let i: u64 = std::str::from_utf8(m.key().unwrap()).unwrap().parse().unwrap();
        assert!(m.payload() == Some(&value(i)[..]), "value of record {i} at offset {} is intact", m.offset());
        out.insert(m.offset(), i);
        next = m.offset() + 1;
    }
    out
}

fn check_acked(read: &BTreeMap<i64, u64>, acked: &BTreeMap<i64, u64>, when: &str) {
    for (off, i) in acked {
        assert_eq!(read.get(off), Some(i), "{when}: acknowledged record {i} at offset {off} is missing or different");
    }
}

#[test]
fn disk_full_storage_error_then_resume_and_nothing_acknowledged_lost() {
    let mut fs = FullFs::start();
    let bootstrap = fs.broker().bootstrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let p = producer(&bootstrap);
    let mut acked: BTreeMap<i64, u64> = BTreeMap::new();
    let mut i = 0u64;
    let mut storage_errors = 0usize;
    let mut others = Vec::new();

    // Fill: batches of concurrent sends until the partition reports a storage error.
    let t0 = Instant::now();
    while storage_errors == 0 {
        assert!(i < (2 * FS_BYTES / VALUE_BYTES as u64), "no storage error after {i} records on a {FS_BYTES}-byte filesystem");
        assert!(t0.elapsed() < Duration::from_secs(120), "filling took too long");
        let results = rt.block_on(futures::future::join_all((i..i + 32).map(|n| send(&p, n))));
        for (n, r) in (i..i + 32).zip(results) {
            match r {
                Sent::Acked(off) => assert!(acked.insert(off, n).is_none(), "offset {off} acknowledged twice"),
                Sent::StorageError => storage_errors += 1,
                Sent::Other(e) => others.push(e),
            }
        }
        i += 32;
    }
    assert!(!acked.is_empty());
    assert!(others.is_empty(), "only storage errors expected, got {others:?}");
    assert!(fs.broker().logs().contains("log write failed"), "the broker logs the failure");
    eprintln!("filled: {} records acknowledged, {storage_errors} storage errors", acked.len());

    // While full: more produce keeps failing cleanly, acknowledged data reads back, an offset
    // commit (group log on the same full disk) answers instead of bringing the broker down.
    let more = rt.block_on(send(&p, i));
    i += 1;
    if let Sent::Acked(off) = more {
        acked.insert(off, i - 1);
    }
    check_acked(&read_all(&bootstrap), &acked, "while full");
    {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "disk-full-committer")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(1)).unwrap();
        let _ = c.commit(&tpl, CommitMode::Sync);
    }
    assert!(fs.broker().is_running(), "the broker survives a full disk");

    // Free space: produce resumes within a bounded time.
    std::fs::remove_file(filler_path(&fs.mnt)).unwrap();
    run("sync", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumed = 0;
    while resumed < 50 {
        assert!(Instant::now() < deadline, "produce did not resume after space was freed ({resumed} acknowledged)");
        match rt.block_on(send(&p, i)) {
            Sent::Acked(off) => {
                assert!(acked.insert(off, i).is_none(), "offset {off} acknowledged twice");
                resumed += 1;
            }
            Sent::StorageError => std::thread::sleep(Duration::from_millis(100)),
            Sent::Other(e) => panic!("unexpected error after freeing space: {e}"),
        }
        i += 1;
    }
    drop(p);
    check_acked(&read_all(&bootstrap), &acked, "after resume");

    // Restart (kill -9): everything acknowledged is there, offsets dense, values intact.
    fs.broker().restart();
    let read = read_all(&bootstrap);
    check_acked(&read, &acked, "after restart");
    eprintln!("after restart: {} records in the log, {} acknowledged", read.len(), acked.len());
    // The log takes appends after the restart too.
    let p = producer(&bootstrap);
    assert!(matches!(rt.block_on(send(&p, i)), Sent::Acked(_)));
}
