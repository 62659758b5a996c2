//! Sparse segment index lookups on an index of 250k entries (a 1 GiB segment indexed every
//! 4 KiB, Kafka's default index.interval.bytes).
//!
//! Run: `cargo bench --bench index -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strand::storage::index::SegmentIndex;

const ENTRIES: u32 = 250_000;
/// Records per indexed batch and bytes between entries.
const OFFSETS_PER_ENTRY: u32 = 4;
const BYTES_PER_ENTRY: u32 = 4096;
const TS0: i64 = 1_700_000_000_000;

fn build() -> SegmentIndex {
    let mut idx = SegmentIndex::default();
    for i in 0..ENTRIES {
        // interval 0: every append adds an entry.
        idx.on_append(i * OFFSETS_PER_ENTRY, i * BYTES_PER_ENTRY, BYTES_PER_ENTRY as usize, TS0 + i as i64 - 1, 0);
    }
    assert_eq!(idx.len(), ENTRIES as usize);
    idx
}

/// Pseudo-random probe targets, so the branch predictor and caches see a realistic spread.
fn targets(n: usize, max: u64) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % max
        })
        .collect()
}

fn bench_index(c: &mut Criterion) {
    let idx = build();
    let max_rel = (ENTRIES * OFFSETS_PER_ENTRY) as u64;
    let offs: Vec<u32> = targets(4096, max_rel).into_iter().map(|v| v as u32).collect();
    let times: Vec<i64> = targets(4096, ENTRIES as u64).into_iter().map(|v| TS0 + v as i64).collect();

    let mut g = c.benchmark_group("index/250k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_offset/random", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & 4095;
            idx.lookup_offset(black_box(offs[i]))
        })
    });
    g.bench_function("lookup_offset/tail", |b| {
        // A consumer at the log end: always the last entries (hot in cache).
        b.iter(|| idx.lookup_offset(black_box((max_rel - 3) as u32)))
    });
    g.bench_function("lookup_time/random", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & 4095;
            idx.lookup_time(black_box(times[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_index);
criterion_main!(benches);
