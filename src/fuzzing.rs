//! Fuzz targets: the code that parses untrusted bytes, callable from cargo-fuzz (`fuzz/`) and
//! from the stable replay test (`tests/fuzz_replay.rs`).
//!
//! Each target takes arbitrary bytes and must return without panicking, aborting or allocating
//! beyond what the input justifies. The targets call the same decoders the connection path
//! uses, but without the broker's `catch_unwind` guard, so a decoder panic is found here rather
//! than hidden (the broker survives it, but it is still a bug). Owns nothing else.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::protocol::{self, versions};
use crate::storage::batch;

/// Frame limit used by the targets (the broker default of `socket.request.max.bytes`).
pub const MAX_FRAME: usize = 100 << 20;

/// Frame reading: `data` is what a client sent on a connection. It is cut into size-prefixed
/// frames with the connection's length checks, and every frame goes through the whole request
/// parse ([`request`]), as the connection does; parsing stops where the connection would close.
pub fn frames(data: &[u8]) {
    let mut rest = data;
    while rest.len() >= 4 {
        let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
        let Ok(len) = protocol::check_frame_len(len, MAX_FRAME) else { return };
        rest = &rest[4..];
        if rest.len() < len {
            return; // the connection would wait for more bytes
        }
        if request(Bytes::copy_from_slice(&rest[..len])).is_err() {
            return;
        }
        rest = &rest[len..];
    }
}

/// The outcome of parsing one frame, as the dispatcher sees it.
#[derive(Debug)]
pub enum Parsed {
    Request(RequestHeader, Box<RequestKind>),
    /// Produce v0-v2, parsed by hand and answered without decoding the body further.
    LegacyProduce,
    /// ApiVersions at a version above ours: answered with our ranges.
    ApiVersionsFallback,
}

/// One request frame (without its length prefix), parsed exactly as `handlers::dispatch` does.
pub fn request(frame: Bytes) -> Result<Parsed, String> {
    let prefix = protocol::peek_prefix(&frame).map_err(|e| e.to_string())?;
    let key = ApiKey::try_from(prefix.api_key).map_err(|_| format!("unknown API key {}", prefix.api_key))?;
    let version = prefix.api_version;
    if !versions::is_supported(key, version) {
        if key == ApiKey::ApiVersions && version > 0 {
            return Ok(Parsed::ApiVersionsFallback);
        }
        return Err(format!("unsupported version {version} of {key:?}"));
    }
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, key.request_header_version(version)).map_err(|e| e.to_string())?;
    if key == ApiKey::Produce && version < 3 {
        return crate::handlers::produce::handle_legacy(version, prefix.correlation_id, body)
            .map(|_| Parsed::LegacyProduce)
            .map_err(|e| e.to_string());
    }
    let req = RequestKind::decode(key, &mut body, version).map_err(|e| e.to_string())?;
    Ok(Parsed::Request(header, Box::new(req)))
}

/// Request header decoding: `data` is a frame without its length prefix; only the header is
/// decoded (for a served API and version, as the dispatcher requires before decoding it).
pub fn request_header(data: &[u8]) {
    let Ok(prefix) = protocol::peek_prefix(data) else { return };
    let Ok(key) = ApiKey::try_from(prefix.api_key) else { return };
    if !versions::is_supported(key, prefix.api_version) {
        return;
    }
    let mut b = Bytes::copy_from_slice(data);
    let _ = RequestHeader::decode(&mut b, key.request_header_version(prefix.api_version));
}

/// Every (API, version) this broker serves, in [`versions::SUPPORTED`] order.
pub fn served_versions() -> Vec<(ApiKey, i16)> {
    versions::SUPPORTED.iter().flat_map(|&(k, lo, hi)| (lo..=hi).map(move |v| (k, v))).collect()
}

/// Maps any (api key, version) pair onto a served one, so that every served version is reachable
/// whatever the first bytes are: served pairs map to themselves.
pub fn pick_served(api_key: i16, version: i16) -> (ApiKey, i16) {
    let table = versions::SUPPORTED;
    let (key, lo, hi) = match table.iter().find(|(k, _, _)| *k as i16 == api_key) {
        Some(&t) => t,
        None => table[(api_key as u16 as usize) % table.len()],
    };
    let span = (hi - lo + 1) as u16;
    let v = if version >= lo && version <= hi { version } else { lo + ((version as u16) % span) as i16 };
    (key, v)
}

/// Request body decoding for every served API at every served version: the first two bytes
/// pick the API key and the next two the version ([`pick_served`]); the rest is the body.
pub fn request_body(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (key, version) = pick_served(i16::from_be_bytes([data[0], data[1]]), i16::from_be_bytes([data[2], data[3]]));
    let body = Bytes::copy_from_slice(&data[4..]);
    if key == ApiKey::Produce && version < 3 {
        let _ = crate::handlers::produce::handle_legacy(version, 0, body);
        return;
    }
    let mut b = body;
    let _ = RequestKind::decode(key, &mut b, version);
}

/// The [`request_body`] input for a captured frame (without length prefix): api key, version,
/// then the bytes after the request header. `None` when the header does not decode.
pub fn body_input_from_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let prefix = protocol::peek_prefix(frame).ok()?;
    let key = ApiKey::try_from(prefix.api_key).ok()?;
    if !versions::is_supported(key, prefix.api_version) {
        return None;
    }
    let mut b = Bytes::copy_from_slice(frame);
    RequestHeader::decode(&mut b, key.request_header_version(prefix.api_version)).ok()?;
    let mut out = frame[..4].to_vec();
    out.extend_from_slice(&b);
    Some(out)
}

/// Record batch validation, as the produce path runs it on a partition's records, then the
/// broker-side operations on an accepted payload (offset assignment, header walk, timestamp
/// search). The first byte picks the size limit.
pub fn record_batch(data: &[u8]) {
    let Some((&sel, records)) = data.split_first() else { return };
    let limit = match sel % 4 {
        0 => 1 << 20,
        1 => 100,
        2 => usize::MAX,
        _ => records.len() / 2,
    };
    let Ok(summary) = batch::validate_batches(records, limit) else { return };
    let mut owned = records.to_vec();
    let next = batch::assign_offsets(&mut owned, 1000, 0);
    assert_eq!(next - 1000, summary.offset_count, "offsets assigned must match the summary");
    let mut count = 0;
    for (pos, h) in batch::iter_headers(&owned) {
        count += 1;
        let _ = batch::first_offset_at_or_after(&owned[pos..pos + h.size], h.base_timestamp.wrapping_add(sel as i64));
    }
    assert_eq!(count, summary.batches, "every validated batch must be walkable");
}

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// The targets by name (for the replay test and the corpus directories).
pub const TARGETS: &[(&str, Target)] =
    &[("frames", frames), ("request_header", request_header), ("request_body", request_body), ("record_batch", record_batch)];

/// A stable file name for a corpus input: its FNV-1a hash, 16 hex digits.
pub fn input_name(data: &[u8]) -> String {
    let h = data.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3));
    format!("{h:016x}")
}

/// Derives the `request_header`, `request_body` and `record_batch` corpora from the captured
/// frames in `corpus_dir/frames` (files `stream-*` are multi-frame streams and are skipped).
/// Returns the number of files written. Run by `cargo run --release --example derive_corpus`.
pub fn derive_corpus(corpus_dir: &std::path::Path) -> std::io::Result<usize> {
    /// At most this many produce payloads go into the record_batch corpus.
    const MAX_BATCH_INPUTS: usize = 40;
    let mut written = 0;
    let mut write = |target: &str, data: &[u8]| -> std::io::Result<()> {
        let dir = corpus_dir.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(input_name(data)), data)?;
        written += 1;
        Ok(())
    };
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(corpus_dir.join("frames"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut batches = 0;
    for p in paths {
        let b = std::fs::read(&p)?;
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("stream-")) || b.len() < 12 {
            continue;
        }
        let frame = &b[4..];
        write("request_header", &frame[..frame.len().min(512)])?;
        if let Some(body) = body_input_from_frame(frame) {
            write("request_body", &body)?;
        }
        if let Ok(Parsed::Request(_, req)) = request(Bytes::copy_from_slice(frame)) {
            if let RequestKind::Produce(r) = *req {
                for rec in r.topic_data.into_iter().flat_map(|t| t.partition_data).filter_map(|pd| pd.records) {
                    if batches < MAX_BATCH_INPUTS {
                        let mut input = vec![0u8];
                        input.extend_from_slice(&rec);
                        write("record_batch", &input)?;
                        batches += 1;
                    }
                }
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_version_is_reachable_and_stable() {
        for (k, v) in served_versions() {
            assert_eq!(pick_served(k as i16, v), (k, v));
        }
        for k in [-1i16, 0, 17, 999, i16::MAX] {
            for v in [-1i16, 0, 5, 100, i16::MIN] {
                let (key, ver) = pick_served(k, v);
                assert!(versions::is_supported(key, ver), "{k} {v} -> {key:?} {ver}");
            }
        }
    }
}
