//! Record batch hot path on produce: CRC32C validation, header parse, offset assignment.
//!
//! Run: `cargo bench --bench batch -- --warm-up-time 1 --measurement-time 3`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use strand::storage::batch::{assign_offsets, crc_matches, parse_header, validate_batches};

const MAX_BATCH: usize = 8 << 20;

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // ~1 KiB: 9 records of 100 B (kafka-producer-perf-test --record-size 100, small batch).
        ("1KiB", common::batch_of_about(1024, 100)),
        // ~64 KiB: 63 records of 1 KiB.
        ("64KiB", common::batch_of_about(64 << 10, 1000)),
    ]
}

fn bench_validate(c: &mut Criterion) {
    for (name, b) in cases() {
        assert_eq!(common::count_batches(&b), 1, "{name} input must be one batch");
    }
    let mut g = c.benchmark_group("batch/validate_batches");
    for (name, b) in cases() {
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{name}({}B)", b.len())), &b, |bench, b| {
            bench.iter(|| validate_batches(black_box(b), MAX_BATCH).unwrap())
        });
    }
    // A 1 MiB produce payload of 1 KiB batches: per-batch overhead on top of the CRC.
    let p = common::payload_of_batches(1 << 20, 1024, 100);
    g.throughput(Throughput::Bytes(p.len() as u64));
    g.bench_with_input(BenchmarkId::from_parameter(format!("1MiB-of-1KiB-batches({}B)", p.len())), &p, |bench, p| {
        bench.iter(|| validate_batches(black_box(p), MAX_BATCH).unwrap())
    });
    g.finish();

    // The CRC alone (crc32c crate, hardware CRC32C when the CPU has it).
    let mut g = c.benchmark_group("batch/crc_matches");
    for (name, b) in cases() {
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &b, |bench, b| bench.iter(|| crc_matches(black_box(b))));
    }
    g.finish();
}

fn bench_parse_assign(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch/parse_header");
    let (_, b) = cases().remove(0);
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_header", |bench| bench.iter(|| parse_header(black_box(&b)).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("batch/assign_offsets");
    let mut inputs = cases();
    inputs.push(("1MiB-of-1KiB-batches", common::payload_of_batches(1 << 20, 1024, 100)));
    for (name, mut b) in inputs {
        let batches = validate_batches(&b, MAX_BATCH).unwrap().batches;
        // Only the headers are touched: the cost is per batch, not per byte.
        g.throughput(Throughput::Elements(batches as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("{name}({}B,{batches}batches)", b.len())), |bench| {
            let mut base = 0i64;
            bench.iter(|| {
                base = assign_offsets(black_box(&mut b), base, 0);
                base
            })
        });
    }
    g.finish();

    // What the produce path does per partition today: validate, copy into a BytesMut (the
    // handler's `BytesMut::from(&records[..])`), assign offsets.
    let mut g = c.benchmark_group("batch/produce_path(validate+copy+assign)");
    let mut inputs = cases();
    inputs.push(("1MiB-of-1KiB-batches", common::payload_of_batches(1 << 20, 1024, 100)));
    for (name, b) in inputs {
        let b = bytes::Bytes::from(b);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            let mut base = 0i64;
            bench.iter(|| {
                let s = validate_batches(black_box(&b), MAX_BATCH).unwrap();
                let mut data = bytes::BytesMut::from(&b[..]);
                base = assign_offsets(&mut data, base, 0);
                black_box((s, data));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_validate, bench_parse_assign);
criterion_main!(benches);
