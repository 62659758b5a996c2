//! The Kafka wire protocol: framing, request headers, served versions and error codes.
//!
//! Owns the bytes on the wire: reading size-prefixed frames within limits, parsing request
//! headers, and encoding response frames. Message bodies are decoded and encoded with the
//! kafka-protocol crate. Knows nothing of shards or storage.

pub mod errors;
pub mod versions;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

/// Bytes of the fixed part of every request header: api key, version, correlation id.
pub const MIN_REQUEST_LEN: usize = 8;

/// Why a frame could not be turned into a request. All of these close the connection, as Kafka
/// does for requests it cannot parse.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame length {0} is negative or exceeds socket.request.max.bytes {1}")]
    BadLength(i64, usize),
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("malformed {0:?} v{1} request: {2}")]
    Malformed(ApiKey, i16, String),
}

/// The fixed fields of a request header, readable before anything else is parsed.
#[derive(Debug, Clone, Copy)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn peek_prefix(frame: &[u8]) -> Result<RequestPrefix, FrameError> {
    if frame.len() < MIN_REQUEST_LEN {
        return Err(FrameError::TooShort(frame.len()));
    }
    Ok(RequestPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes(frame[4..8].try_into().unwrap()),
    })
}

/// Validates a frame length prefix against the configured limit.
pub fn check_frame_len(len: i32, max: usize) -> Result<usize, FrameError> {
    if len < MIN_REQUEST_LEN as i32 || len as usize > max {
        return Err(FrameError::BadLength(len as i64, max));
    }
    Ok(len as usize)
}

/// Decodes the request header; `frame` is advanced past it. The API must be known.
pub fn decode_header(key: ApiKey, version: i16, frame: &mut Bytes) -> Result<RequestHeader, FrameError> {
    let hv = key.request_header_version(version);
    guard(|| RequestHeader::decode(frame, hv)).map_err(|e| FrameError::Malformed(key, version, e))
}

/// Decodes a request body of a served API and version.
pub fn decode_body(key: ApiKey, version: i16, frame: &mut Bytes) -> Result<RequestKind, FrameError> {
    guard(|| RequestKind::decode(key, frame, version)).map_err(|e| FrameError::Malformed(key, version, e))
}

/// Runs a decoder, turning both errors and panics on hostile input into an error message.
fn guard<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("decoder panicked".to_string()),
    }
}

/// Encodes a whole response frame: size prefix, header, body. `capacity_hint` avoids regrowing
/// the buffer for large bodies (Fetch).
pub fn encode_response(key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind, capacity_hint: usize) -> anyhow::Result<Bytes> {
    let header_version = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(capacity_hint.max(128));
    buf.put_i32(0);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}
