//! Storage write path on the real disk, inside a glommio LocalExecutor:
//! - `SegmentWriter::append`: copy into a DMA buffer + one aligned O_DIRECT write, for 16 KiB,
//!   16000 B (unaligned: the partial last block is rewritten by the next append) and 1 MiB chunks;
//! - `PartitionLog::append` + `wait_persisted`: one payload at a time (acks=1: written; acks=all:
//!   fdatasync'd), and 16 payloads in flight before waiting (the writer task's group commit).
//!
//! The directory is `$STRAND_BENCH_DIR` if set, else cargo's target/tmp. It must be on a disk
//! filesystem: on tmpfs glommio silently drops O_DIRECT and the figures mean nothing (a warning
//! is printed). Each sample starts from an empty segment; segments are capped at 256 MiB
//! (SegmentWriter) / 1 GiB (PartitionLog) and removed after the sample, so disk use is bounded.
//!
//! Run: `cargo bench --bench segment_append -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use strand::storage::batch::validate_batches;
use strand::storage::segment::{self, SegmentWriter};
use strand::storage::{LogConfig, PartitionLog};

const SEGMENT_CAP: u64 = 256 << 20;
const PROBE: &str = ".strand-bench-probe";

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("STRAND_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new().prefix("strand-bench-").tempdir_in(&base).unwrap().keep();
    warn_if_tmpfs(&dir);
    // glommio trap B: the first DMA file an executor opens must not be empty.
    std::fs::write(dir.join(PROBE), vec![b'S'; 4096]).unwrap();
    eprintln!("segment_append: data directory {}", dir.display());
    dir
}

fn warn_if_tmpfs(dir: &Path) {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == 0x0102_1994 {
        eprintln!("WARNING: {} is on tmpfs: O_DIRECT is off there, these figures are page-cache copies", dir.display());
    }
}

fn executor(dir: &Path) -> LocalExecutor {
    let ex = LocalExecutorBuilder::new(Placement::Unbound).name("bench").make().expect("glommio executor");
    let probe = dir.join(PROBE);
    ex.run(async move {
        let f = glommio::io::DmaFile::open(&probe).await.expect("open probe file");
        let _ = f.read_at(0, 512).await;
        let _ = f.close().await;
    });
    ex
}

/// Times `iters` appends of `chunk` to a fresh segment (truncated back to empty, untimed, at
/// SEGMENT_CAP).
fn time_segment_appends(ex: &LocalExecutor, dir: &Path, chunk: &Bytes, iters: u64) -> Duration {
    let path = segment::segment_path(dir, 0);
    let chunks = [chunk.clone()];
    ex.run(async move {
        let _ = std::fs::remove_file(&path);
        let file = Rc::new(segment::open_rw(&path).await.unwrap());
        let mut w = SegmentWriter::resume(file.clone(), 0, 0).await.unwrap();
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            if w.size() + chunks[0].len() as u64 > SEGMENT_CAP {
                file.truncate(0).await.unwrap();
                w = SegmentWriter::resume(file.clone(), 0, 0).await.unwrap();
            }
            let t = Instant::now();
            w.append(&chunks).await.unwrap();
            total += t.elapsed();
        }
        drop(w);
        if let Ok(f) = Rc::try_unwrap(file) {
            let _ = f.close().await;
        }
        let _ = std::fs::remove_file(&path);
        total
    })
}

fn bench_segment_writer(c: &mut Criterion, ex: &LocalExecutor, dir: &Path) {
    let mut g = c.benchmark_group("segment/SegmentWriter::append");
    g.sample_size(20);
    for (name, len) in [("16KiB", 16usize << 10), ("16000B-unaligned", 16_000), ("1MiB", 1 << 20)] {
        let chunk = Bytes::from(common::az_payload(len, 7).to_vec());
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| time_segment_appends(ex, dir, &chunk, iters))
        });
    }
    g.finish();
}

/// Times `iters` rounds of: append `depth` payloads, then wait until the last is persisted.
fn time_log_appends(ex: &LocalExecutor, dir: &Path, payload: &Bytes, depth: usize, acks_all: bool, iters: u64) -> Duration {
    let summary = validate_batches(payload, usize::MAX).unwrap();
    let payload = payload.clone();
    let dir = tempfile::Builder::new().prefix("log-").tempdir_in(dir).unwrap();
    let log_dir = dir.path().join("bench-0");
    let total = ex.run(async move {
        let config = LogConfig {
            segment_bytes: 1 << 30,
            roll_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            tail_cache_bytes: 4 << 20,
            producer_id_expiration_ms: 86_400_000,
        };
        let log = PartitionLog::open("bench", 0, log_dir, config).await.unwrap();
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            // The log takes the producer's bytes as received (slices of the request frame).
            let datas: Vec<Bytes> = (0..depth).map(|_| payload.clone()).collect();
            let t = Instant::now();
            let mut last = 0;
            for d in datas {
                last = log.append(d, &summary, acks_all).unwrap().next_offset;
            }
            log.wait_persisted(last, acks_all).await.unwrap();
            total += t.elapsed();
        }
        log.close();
        while log.is_writer_running() {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
        total
    });
    drop(dir);
    total
}

fn bench_partition_log(c: &mut Criterion, ex: &LocalExecutor, dir: &Path) {
    let mut g = c.benchmark_group("segment/PartitionLog::append+wait_persisted");
    g.sample_size(20);
    // Payloads made of ~16 KiB batches (batch.size=16384) of 1000-byte records.
    let p16k = Bytes::from(common::batch_of_about(16 << 10, 1000));
    let p1m = Bytes::from(common::payload_of_batches(1 << 20, 16 << 10, 1000));
    for (name, payload, depth) in [("16KiB", &p16k, 1usize), ("16KiB-x16-in-flight", &p16k, 16), ("1MiB", &p1m, 1)] {
        for acks_all in [false, true] {
            let acks = if acks_all { "acks=all" } else { "acks=1" };
            g.throughput(Throughput::Bytes((payload.len() * depth) as u64));
            g.bench_function(BenchmarkId::new(acks, format!("{name}({}B)", payload.len())), |b| {
                b.iter_custom(|iters| time_log_appends(ex, dir, payload, depth, acks_all, iters))
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let dir = bench_dir();
    let ex = executor(&dir);
    bench_segment_writer(c, &ex, &dir);
    bench_partition_log(c, &ex, &dir);
    drop(ex);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(group, benches);
criterion_main!(group);
