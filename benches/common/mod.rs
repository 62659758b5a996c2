//! Helpers shared by the benches: producer-like v2 record batches built with kafka-protocol.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// Random A-Z payload, as kafka-producer-perf-test makes (deterministic seed-free LCG).
pub fn az_payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<u8> = (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            b'A' + ((x >> 33) % 26) as u8
        })
        .collect();
    Bytes::from(v)
}

/// One uncompressed v2 batch of `n` records with null keys and `value_size`-byte values, as a
/// producer sends it (producer id -1, CreateTime timestamps 1 ms apart).
pub fn encode_batch(n: usize, value_size: usize, ts0: i64) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch whenever offset - sequence changes: keep it
            // constant so the records share one batch, whose baseSequence is then -1 (no
            // idempotence), as a plain producer sends.
            sequence: i as i32 - 1,
            timestamp: ts0 + i as i64,
            key: None,
            value: Some(az_payload(value_size, i as u64)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode batch");
    buf.to_vec()
}

/// A batch of roughly `target` bytes made of `value_size`-byte records (at least one record).
pub fn batch_of_about(target: usize, value_size: usize) -> Vec<u8> {
    // v2 record overhead with a null key and no headers is ~7-9 bytes; the batch header is 61.
    let per_record = value_size + 8;
    let n = ((target.saturating_sub(61)) / per_record).max(1);
    encode_batch(n, value_size, 1_700_000_000_000)
}

/// A produce payload of whole batches (each ~`batch_target` bytes) totalling at least `total` bytes.
pub fn payload_of_batches(total: usize, batch_target: usize, value_size: usize) -> Vec<u8> {
    let one = batch_of_about(batch_target, value_size);
    let mut out = Vec::with_capacity(total + one.len());
    while out.len() < total {
        out.extend_from_slice(&one);
    }
    out
}

/// Number of batches in a buffer of whole batches (sanity checks of the inputs above).
pub fn count_batches(buf: &[u8]) -> usize {
    strand::storage::batch::iter_headers(buf).count()
}
