//! Record batch (magic v2) framing: header parsing, CRC32C validation and offset assignment.
//!
//! Owns the byte layout of a v2 record batch. It never re-encodes records: the broker stores the
//! producer's bytes verbatim and only rewrites `baseOffset` and `partitionLeaderEpoch`, which the
//! CRC does not cover. Records are decoded (with the storage codec the cleaner uses) only to find
//! keyless records in batches bound for compacted topics ([`keyless_records`]).

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use thiserror::Error;

/// Size of the fixed v2 batch header, up to and including `recordsCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` (8) + `batchLength` (4): the bytes not counted in `batchLength`.
pub const BATCH_LOG_OVERHEAD: usize = 12;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORDS_COUNT: usize = 57;

/// Compression codec bits of the batch attributes.
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Timestamp type bit: set means LogAppendTime.
pub const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

/// The fields of a v2 batch header the broker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, including the 12-byte log overhead.
    pub size: usize,
    pub magic: i8,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }
}

/// Why a batch was refused. Each maps to one Kafka error code.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch framing is invalid")]
    Corrupt,
    #[error("record batch CRC32C mismatch")]
    CrcMismatch,
    #[error("record batch magic {0} is not supported (v2 only)")]
    UnsupportedMagic(i8),
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("record batch record count and offset delta disagree")]
    InvalidRecord,
}

impl BatchError {
    /// The Kafka error code a real broker answers with.
    pub fn kafka_code(&self) -> i16 {
        match self {
            BatchError::Corrupt | BatchError::CrcMismatch => 2, // CORRUPT_MESSAGE
            BatchError::UnsupportedMagic(_) => 43,              // UNSUPPORTED_FOR_MESSAGE_FORMAT
            BatchError::TooLarge { .. } => 10,                  // MESSAGE_TOO_LARGE
            BatchError::InvalidRecord => 87,                    // INVALID_RECORD
        }
    }
}

#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Reads the total size of the batch starting at `buf[0]` without validating it.
/// Returns `None` when fewer than 12 bytes are available or the length is not plausible.
pub fn peek_batch_size(buf: &[u8]) -> Option<usize> {
    if buf.len() < BATCH_LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, OFF_LENGTH);
    if len < (BATCH_HEADER_LEN - BATCH_LOG_OVERHEAD) as i32 {
        return None;
    }
    Some(len as usize + BATCH_LOG_OVERHEAD)
}

/// Bytes of a batch header needed by [`peek_extent`]: base offset, length, leader epoch, magic,
/// CRC, attributes and last offset delta.
pub const HEADER_PREFIX: usize = OFF_LAST_OFFSET_DELTA + 4;

/// The size and next offset (after its last record) of the batch starting at `buf[0]`, read
/// from its first [`HEADER_PREFIX`] bytes without validating it.
pub fn peek_extent(buf: &[u8]) -> Option<(usize, i64)> {
    let size = peek_batch_size(buf)?;
    if buf.len() < HEADER_PREFIX {
        return None;
    }
    let next = be_i64(buf, OFF_BASE_OFFSET) + be_i32(buf, OFF_LAST_OFFSET_DELTA) as i64 + 1;
    Some((size, next))
}

/// Parses the header of the batch at the start of `buf` (which must hold the whole header).
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let size = peek_batch_size(buf).ok_or(BatchError::Corrupt)?;
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Corrupt);
    }
    let magic = buf[OFF_MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, OFF_BASE_OFFSET),
        size,
        magic,
        attributes: be_i16(buf, OFF_ATTRIBUTES),
        last_offset_delta: be_i32(buf, OFF_LAST_OFFSET_DELTA),
        base_timestamp: be_i64(buf, OFF_BASE_TIMESTAMP),
        max_timestamp: be_i64(buf, OFF_MAX_TIMESTAMP),
        producer_id: be_i64(buf, OFF_PRODUCER_ID),
        producer_epoch: be_i16(buf, OFF_PRODUCER_EPOCH),
        base_sequence: be_i32(buf, OFF_BASE_SEQUENCE),
        records_count: be_i32(buf, OFF_RECORDS_COUNT),
    })
}

/// Verifies the CRC32C of one whole batch (`batch.len()` must equal its size).
pub fn crc_matches(batch: &[u8]) -> bool {
    let stored = u32::from_be_bytes(batch[OFF_CRC..OFF_CRC + 4].try_into().unwrap());
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..]) == stored
}

/// Parses one batch at the start of `buf` and validates it fully (framing, magic, CRC, counts).
pub fn validate_batch(buf: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    if header.size > buf.len() {
        return Err(BatchError::Corrupt);
    }
    if header.size > max_batch_bytes {
        return Err(BatchError::TooLarge { size: header.size, limit: max_batch_bytes });
    }
    if !crc_matches(&buf[..header.size]) {
        return Err(BatchError::CrcMismatch);
    }
    if header.records_count <= 0 || header.last_offset_delta < 0 {
        return Err(BatchError::InvalidRecord);
    }
    // Control batches and compacted logs may have gaps; a producer's batch must be dense.
    if header.attributes & ATTR_CONTROL == 0 && header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::InvalidRecord);
    }
    Ok(header)
}

/// Summary of a validated produce payload: one or more whole batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchesSummary {
    pub batches: usize,
    /// Producer fields of the first batch (-1 when not idempotent).
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Records in the first batch.
    pub first_batch_records: i32,
    pub transactional: bool,
    /// Sum over batches of `last_offset_delta + 1`: the offsets this payload occupies.
    pub offset_count: i64,
    pub max_timestamp: i64,
}

/// Validates that `buf` is a sequence of whole, valid v2 batches.
pub fn validate_batches(buf: &[u8], max_batch_bytes: usize) -> Result<BatchesSummary, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Corrupt);
    }
    let mut pos = 0;
    let mut summary = BatchesSummary { max_timestamp: -1, ..Default::default() };
    while pos < buf.len() {
        let h = validate_batch(&buf[pos..], max_batch_bytes)?;
        if summary.batches == 0 {
            summary.producer_id = h.producer_id;
            summary.producer_epoch = h.producer_epoch;
            summary.base_sequence = h.base_sequence;
            summary.first_batch_records = h.last_offset_delta + 1;
            summary.transactional = h.attributes & ATTR_TRANSACTIONAL != 0;
        }
        summary.batches += 1;
        summary.offset_count += h.last_offset_delta as i64 + 1;
        summary.max_timestamp = summary.max_timestamp.max(h.max_timestamp);
        pos += h.size;
    }
    Ok(summary)
}

/// The index within its batch of every record without a key in `buf` (whole batches that passed
/// [`validate_batches`]), decompressing compressed batches. A compacted topic refuses such
/// records (Kafka's `LogValidator`); only its batches pay for this decoding.
pub fn keyless_records(buf: &Bytes) -> Result<Vec<i32>, BatchError> {
    let mut keyless = Vec::new();
    let mut rest = buf.clone();
    while !rest.is_empty() {
        let size = peek_batch_size(&rest).filter(|&n| n <= rest.len()).ok_or(BatchError::Corrupt)?;
        let mut one = rest.split_to(size);
        let set = RecordBatchDecoder::decode(&mut one).map_err(|_| BatchError::Corrupt)?;
        let missing = set.records.iter().enumerate().filter(|(_, r)| !r.control && r.key.is_none());
        keyless.extend(missing.map(|(i, _)| i as i32));
    }
    Ok(keyless)
}

/// Rewrites baseOffset and partitionLeaderEpoch of every batch in `buf` so that the first batch
/// starts at `base_offset`. Returns the next offset after the last batch.
/// `buf` must have passed [`validate_batches`].
pub fn assign_offsets(buf: &mut [u8], base_offset: i64, leader_epoch: i32) -> i64 {
    let mut pos = 0;
    let mut next = base_offset;
    while pos < buf.len() {
        let size = peek_batch_size(&buf[pos..]).expect("validated batch");
        let delta = be_i32(&buf[pos..], OFF_LAST_OFFSET_DELTA);
        buf[pos + OFF_BASE_OFFSET..pos + OFF_BASE_OFFSET + 8].copy_from_slice(&next.to_be_bytes());
        buf[pos + OFF_LEADER_EPOCH..pos + OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
        next += delta as i64 + 1;
        pos += size;
    }
    debug_assert_eq!(pos, buf.len());
    next
}

/// Iterates over the batch headers of a buffer of whole batches, stopping at the first
/// incomplete or unparsable one. Yields `(position, header)`.
pub fn iter_headers(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = &buf[pos..];
        let h = parse_header(rest).ok()?;
        if h.size > rest.len() {
            return None;
        }
        let at = pos;
        pos += h.size;
        Some((at, h))
    })
}

/// The first CreateTime timestamp of `buf` (whole batches) outside
/// `[now_ms - before_max_ms, now_ms + after_max_ms]` (Kafka's `message.timestamp.before.max.ms` /
/// `after.max.ms`), if any. Looks at each batch's first (base) and greatest timestamps from the
/// header, without decoding records; LogAppendTime batches and "no timestamp" (-1) pass.
pub fn timestamp_out_of_range(buf: &[u8], now_ms: i64, before_max_ms: i64, after_max_ms: i64) -> Option<i64> {
    let earliest = now_ms.saturating_sub(before_max_ms);
    let latest = now_ms.saturating_add(after_max_ms);
    iter_headers(buf)
        .filter(|(_, h)| h.attributes & ATTR_TIMESTAMP_TYPE == 0)
        .flat_map(|(_, h)| [h.base_timestamp, h.max_timestamp])
        .find(|&ts| ts != -1 && (ts < earliest || ts > latest))
}

/// Reads a zig-zag varint; returns (value, bytes used).
fn read_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, i + 1));
        }
    }
    None
}

/// The offset and timestamp of the first record of the batch whose timestamp is >= `target`
/// (`None`: no such record, or a malformed batch).
pub fn first_offset_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    let h = parse_header(batch).ok()?;
    if h.size > batch.len() {
        return None;
    }
    if h.compression() != 0 {
        return first_compressed_at_or_after(&batch[..h.size], target);
    }
    let mut pos = BATCH_HEADER_LEN;
    for _ in 0..h.records_count {
        let (len, n) = read_varlong(&batch[pos..h.size])?;
        let body = pos + n;
        // attributes (1 byte), timestampDelta (varlong), offsetDelta (varint)
        let (ts_delta, m) = read_varlong(batch.get(body + 1..h.size)?)?;
        let (off_delta, _) = read_varlong(batch.get(body + 1 + m..h.size)?)?;
        if h.base_timestamp + ts_delta >= target {
            return Some((h.base_offset + off_delta, h.base_timestamp + ts_delta));
        }
        pos = body + len as usize;
        if pos > h.size {
            return None;
        }
    }
    None
}

/// `first_offset_at_or_after` inside a compressed batch: its records are decompressed (as Kafka
/// does for ListOffsets; only lookups by time pay for it).
fn first_compressed_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    let mut buf = bytes::Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).ok()?;
    set.records.iter().find(|r| r.timestamp >= target).map(|r| (r.offset, r.timestamp))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    pub(crate) fn encode_batch(n: usize, ts0: i64) -> Vec<u8> {
        encode_batch_with(n, ts0, Compression::None)
    }

    fn encode_batch_with(n: usize, ts0: i64, compression: Compression) -> Vec<u8> {
        let records = (0..n).map(|i| (ts0 + i as i64 * 10, Some(Bytes::from(format!("k{i}"))), Bytes::from(vec![b'v'; 20])));
        encode_records(records, compression)
    }

    /// One batch of plain records (no producer id), offsets from 0, from (timestamp, key, value).
    pub(crate) fn encode_records(records: impl Iterator<Item = (i64, Option<Bytes>, Bytes)>, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = records
            .enumerate()
            .map(|(i, (timestamp, key, value))| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder only groups records whose offset - sequence is constant.
                sequence: i as i32,
                timestamp,
                key,
                value: Some(value),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.to_vec()
    }

    #[test]
    fn validates_and_assigns_offsets() {
        let mut a = encode_batch(3, 1000);
        a.extend(encode_batch(2, 2000));
        let s = validate_batches(&a, 1 << 20).unwrap();
        assert_eq!(s.batches, 2);
        assert_eq!(s.offset_count, 5);
        let next = assign_offsets(&mut a, 100, 0);
        assert_eq!(next, 105);
        let hs: Vec<_> = iter_headers(&a).map(|(_, h)| h.base_offset).collect();
        assert_eq!(hs, vec![100, 103]);
        // Offsets are outside the CRC: still valid.
        validate_batches(&a, 1 << 20).unwrap();
    }

    #[test]
    fn timestamps_outside_the_allowed_window() {
        // Records at 1000, 1010, 1020 and, in a second batch, 5000, 5010.
        let mut a = encode_batch(3, 1000);
        a.extend(encode_batch(2, 5000));
        assert_eq!(timestamp_out_of_range(&a, 5000, i64::MAX, 3_600_000), None, "defaults: nothing too old");
        assert_eq!(timestamp_out_of_range(&a, 5000, 4000, 10), None, "bounds included");
        assert_eq!(timestamp_out_of_range(&a, 5000, 3999, 10), Some(1000), "first record too old");
        assert_eq!(timestamp_out_of_range(&a, 5000, 4000, 9), Some(5010), "greatest timestamp too new");
        // LogAppendTime batches are not checked (the broker's clock stamps them).
        let mut b = encode_batch(1, 1_000_000);
        b[OFF_ATTRIBUTES + 1] |= ATTR_TIMESTAMP_TYPE as u8;
        assert_eq!(timestamp_out_of_range(&b, 0, 0, 0), None);
    }

    #[test]
    fn rejects_corruption() {
        let mut a = encode_batch(3, 1000);
        let last = a.len() - 1;
        a[last] ^= 0xff;
        assert_eq!(validate_batches(&a, 1 << 20), Err(BatchError::CrcMismatch));
        let b = encode_batch(3, 1000);
        assert!(matches!(validate_batches(&b, 10), Err(BatchError::TooLarge { .. })));
        assert_eq!(validate_batches(&b[..b.len() - 1], 1 << 20), Err(BatchError::Corrupt));
        assert_eq!(validate_batches(&[0u8; 5], 1 << 20), Err(BatchError::Corrupt));
    }

    fn encode_keys(keys: &[Option<&str>], compression: Compression) -> Bytes {
        let records = keys.iter().map(|k| (1000, k.map(|k| Bytes::from(k.to_string())), Bytes::from_static(b"v")));
        Bytes::from(encode_records(records, compression))
    }

    #[test]
    fn finds_keyless_records_in_plain_and_compressed_batches() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let b = encode_keys(&[Some("a"), None, Some(""), None], codec);
            validate_batches(&b, 1 << 20).unwrap();
            assert_eq!(keyless_records(&b), Ok(vec![1, 3]), "{codec:?}");
            let keyed = encode_keys(&[Some("a"), Some("b")], codec);
            assert_eq!(keyless_records(&keyed), Ok(vec![]), "{codec:?}");
        }
    }

    #[test]
    fn finds_offset_by_timestamp() {
        let mut a = encode_batch(5, 1000);
        assign_offsets(&mut a, 50, 0);
        assert_eq!(first_offset_at_or_after(&a, 0), Some((50, 1000)));
        assert_eq!(first_offset_at_or_after(&a, 1015), Some((52, 1020)));
        assert_eq!(first_offset_at_or_after(&a, 1040), Some((54, 1040)));
        assert_eq!(first_offset_at_or_after(&a, 1041), None);
    }

    #[test]
    fn finds_offset_by_timestamp_inside_a_compressed_batch() {
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut a = encode_batch_with(5, 1000, compression);
            assign_offsets(&mut a, 50, 0);
            assert_ne!(parse_header(&a).unwrap().compression(), 0);
            assert_eq!(first_offset_at_or_after(&a, 1015), Some((52, 1020)), "{compression:?}");
            assert_eq!(first_offset_at_or_after(&a, 1040), Some((54, 1040)), "{compression:?}");
            assert_eq!(first_offset_at_or_after(&a, 1041), None, "{compression:?}");
        }
    }
}
