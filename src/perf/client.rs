//! The perf tool's native Kafka client: blocking std TCP connections, request framing and
//! version negotiation, cluster/topic discovery, and the hand-built pieces of the hot path
//! (v2 record batches and Produce request frames).
//!
//! Owns the wire side of the load generator. Every connection speaks ApiVersions first and
//! picks, per API, the highest version both sides support. Control-plane requests
//! (ApiVersions, Metadata, ListOffsets, InitProducerId, group APIs) go through
//! [`Conn::call`], one at a time, encoded and decoded with the kafka-protocol crate. The data
//! plane (Produce, Fetch) is pipelined by the callers: a connection is split into a writing and
//! a reading half ([`Conn::into_halves`]) that run on separate threads, and responses are
//! matched to requests by correlation id (Kafka answers a connection's requests in order).
//!
//! Produce frames are encoded by hand ([`ProduceFrame`]) so each record batch is written
//! exactly once, straight into the request buffer; the encoding is checked against
//! kafka-protocol's decoder in the tests below.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Largest response frame accepted (a Fetch answer is bounded by fetch.max.bytes, 50 MiB by
/// default; this leaves room for larger settings while refusing garbage lengths).
pub const MAX_RESPONSE_BYTES: usize = 1 << 30;
/// How long to wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long discovery retries while a topic has no leader yet (e.g. just auto-created).
pub const METADATA_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between Metadata retries during discovery.
const METADATA_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Highest API key we keep version ranges for.
const MAX_API_KEY: usize = 128;
/// Size of the fixed part of a v2 record batch, up to and including `recordsCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// Offset of the CRC in a v2 batch; the CRC covers everything from `attributes` on.
pub const BATCH_CRC_OFFSET: usize = 17;
/// Offset of `attributes` in a v2 batch.
pub const BATCH_ATTRIBUTES_OFFSET: usize = 21;
/// Error code for UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// Kafka error code as `NAME (code)`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE (0)".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN ({c})"),
        Some(e) => format!("{e:?} ({code})"),
    }
}

/// The API version ranges a broker advertised.
#[derive(Clone)]
pub struct ApiRanges(Vec<Option<(i16, i16)>>);

impl ApiRanges {
    pub fn get(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.0.get(key as i16 as usize).copied().flatten()
    }

    pub fn supports(&self, key: ApiKey) -> bool {
        self.get(key).is_some()
    }

    /// The highest version of `R` both we (up to `cap`) and the broker support.
    pub fn pick<R: Request>(&self, cap: i16) -> Option<i16> {
        let key = ApiKey::try_from(R::KEY).ok()?;
        let (lo, hi) = self.get(key)?;
        let ours = R::VERSIONS;
        let hi = hi.min(ours.max).min(cap);
        let lo = lo.max(ours.min);
        (lo <= hi).then_some(hi)
    }
}

/// Encodes a whole request frame (size prefix, header, body) into `buf`.
pub fn encode_request<R: Request>(buf: &mut BytesMut, version: i16, correlation_id: i32, client_id: &StrBytes, req: &R) -> Result<()> {
    let start = buf.len();
    buf.put_i32(0);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    header.encode(buf, R::header_version(version))?;
    req.encode(buf, version)?;
    let size = (buf.len() - start - 4) as i32;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads one size-prefixed frame (without its prefix) into `buf`'s memory and returns it.
/// The frame is split off `buf`, so once the caller drops it (and every slice of it), the next
/// read reuses the same allocation: a load generator reading megabytes per fetch response must
/// not allocate, fault in and free that much memory per response (with jemalloc that tripled
/// the consumer's time per fetch).
pub fn read_frame(r: &mut impl Read, buf: &mut BytesMut) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if len < 4 || len as usize > MAX_RESPONSE_BYTES {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("response frame length {len} is invalid")));
    }
    buf.clear();
    // Takes the whole allocation back when nothing split from it is alive any more.
    buf.reserve(len as usize);
    buf.resize(len as usize, 0);
    r.read_exact(buf)?;
    Ok(buf.split().freeze())
}

/// Decodes a response frame of `R` and checks its correlation id.
pub fn decode_response<R: Request>(mut frame: Bytes, version: i16, correlation_id: i32) -> Result<R::Response> {
    let header = ResponseHeader::decode(&mut frame, <R::Response as HeaderVersion>::header_version(version))
        .context("malformed response header")?;
    if header.correlation_id != correlation_id {
        bail!("response correlation id {} does not match request {}", header.correlation_id, correlation_id);
    }
    let key = ApiKey::try_from(R::KEY).map(|k| format!("{k:?}")).unwrap_or_default();
    R::Response::decode(&mut frame, version).with_context(|| format!("malformed {key} v{version} response"))
}

/// One blocking connection to a broker.
pub struct Conn {
    stream: TcpStream,
    pub addr: String,
    pub client_id: StrBytes,
    next_correlation_id: i32,
    pub apis: ApiRanges,
    buf: BytesMut,
    /// Memory of the response frames, reused once the previous response is dropped.
    rbuf: BytesMut,
}

impl Conn {
    /// Connects and negotiates API versions.
    pub fn connect(addr: &str, client_id: &str) -> Result<Conn> {
        let sock = addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {addr:?} (expected HOST:PORT)"))?
            .next()
            .ok_or_else(|| anyhow!("{addr:?} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT).with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: 1,
            apis: ApiRanges(vec![None; MAX_API_KEY]),
            buf: BytesMut::with_capacity(4096),
            rbuf: BytesMut::new(),
        };
        conn.negotiate()?;
        Ok(conn)
    }

    fn negotiate(&mut self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strand-perf"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp = self.call(&req, 3)?;
        if resp.error_code == UNSUPPORTED_VERSION {
            resp = self.call(&req, 0)?;
        }
        if resp.error_code != 0 {
            bail!("ApiVersions failed at {}: {}", self.addr, error_name(resp.error_code));
        }
        let mut ranges = vec![None; MAX_API_KEY];
        for k in &resp.api_keys {
            if (k.api_key as usize) < MAX_API_KEY && k.api_key >= 0 {
                ranges[k.api_key as usize] = Some((k.min_version, k.max_version));
            }
        }
        self.apis = ApiRanges(ranges);
        Ok(())
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        id
    }

    /// The version of `R` to use (highest common, at most `cap`), or an error naming the API.
    pub fn version<R: Request>(&self, cap: i16) -> Result<i16> {
        self.apis.pick::<R>(cap).ok_or_else(|| {
            let key = ApiKey::try_from(R::KEY).map(|k| format!("{k:?}")).unwrap_or_else(|_| R::KEY.to_string());
            anyhow!("the broker at {} does not support a version of {key} this tool speaks", self.addr)
        })
    }

    /// Sends one request and waits for its response.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let corr = self.next_correlation_id();
        self.buf.clear();
        encode_request(&mut self.buf, version, corr, &self.client_id, req)?;
        self.stream.write_all(&self.buf).with_context(|| format!("write to {}", self.addr))?;
        let frame = read_frame(&mut self.stream, &mut self.rbuf).with_context(|| format!("read from {}", self.addr))?;
        decode_response::<R>(frame, version, corr)
    }

    /// Writes one request without waiting; returns its correlation id (pipelining).
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32> {
        let corr = self.next_correlation_id();
        self.buf.clear();
        encode_request(&mut self.buf, version, corr, &self.client_id, req)?;
        self.stream.write_all(&self.buf).with_context(|| format!("write to {}", self.addr))?;
        Ok(corr)
    }

    /// Reads the response to a request written with [`Conn::send`] (responses come in order).
    pub fn recv<R: Request>(&mut self, version: i16, correlation_id: i32) -> Result<R::Response> {
        let frame = read_frame(&mut self.stream, &mut self.rbuf).with_context(|| format!("read from {}", self.addr))?;
        decode_response::<R>(frame, version, correlation_id)
    }

    /// A second handle on the socket, e.g. to shut it down from another thread.
    pub fn handle(&self) -> Result<TcpStream> {
        Ok(self.stream.try_clone()?)
    }

    pub fn set_timeouts(&self, timeout: Option<Duration>) -> Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)?;
        Ok(())
    }

    /// Splits the connection into a writing and a reading handle on the same socket.
    pub fn into_halves(self) -> Result<(TcpStream, TcpStream)> {
        let reader = self.stream.try_clone()?;
        Ok((self.stream, reader))
    }
}

/// A partition and the node leading it.
#[derive(Debug, Clone, Copy)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
}

/// What discovery learnt about the cluster and one topic.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionInfo>,
    /// node id -> "host:port"
    pub brokers: Vec<(i32, String)>,
}

impl TopicInfo {
    pub fn broker_addr(&self, node: i32) -> Option<&str> {
        self.brokers.iter().find(|(n, _)| *n == node).map(|(_, a)| a.as_str())
    }

    /// Leader node ids, each once, in ascending order.
    pub fn leaders(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.partitions.iter().map(|p| p.leader).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Splits `bootstrap.servers` into addresses.
pub fn parse_servers(s: &str) -> Vec<String> {
    s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()
}

/// Connects to the first reachable bootstrap server.
pub fn connect_any(servers: &[String], client_id: &str) -> Result<Conn> {
    let mut last = None;
    for s in servers {
        match Conn::connect(s, client_id) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("bootstrap.servers is empty")))
}

/// Asks for `topic`'s metadata (creating it if the broker auto-creates), retrying until every
/// partition has a leader. Returns the bootstrap connection for further use.
pub fn discover(servers: &[String], client_id: &str, topic: &str, allow_create: bool) -> Result<(Conn, TopicInfo)> {
    let mut conn = connect_any(servers, client_id)?;
    let version = conn.version::<MetadataRequest>(12)?;
    let deadline = Instant::now() + METADATA_READY_TIMEOUT;
    loop {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]))
            .with_allow_auto_topic_creation(allow_create);
        let resp = conn.call(&req, version)?;
        let brokers: Vec<(i32, String)> = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
            .ok_or_else(|| anyhow!("Metadata response does not mention topic {topic:?}"))?;
        let retriable = matches!(t.error_code, 3 | 5 | 6); // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER
        if t.error_code == 0 && !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader_id.0 >= 0 && p.error_code == 0) {
            let mut partitions: Vec<PartitionInfo> = t.partitions.iter().map(|p| PartitionInfo { index: p.partition_index, leader: p.leader_id.0 }).collect();
            partitions.sort_by_key(|p| p.index);
            for p in &partitions {
                if !brokers.iter().any(|(n, _)| *n == p.leader) {
                    bail!("partition {topic}-{} is led by node {} which Metadata does not list", p.index, p.leader);
                }
            }
            return Ok((conn, TopicInfo { name: topic.to_string(), id: t.topic_id, partitions, brokers }));
        }
        if (!retriable && t.error_code != 0) || Instant::now() >= deadline {
            bail!("topic {topic:?} is not available: {}", error_name(t.error_code));
        }
        std::thread::sleep(METADATA_RETRY_BACKOFF);
    }
}

// ---------------------------------------------------------------------------------------------
// Record batches (magic v2), written by hand.

/// Bytes of an unsigned varint.
#[inline]
pub fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[inline]
pub fn put_varint(buf: &mut BytesMut, v: i64) {
    put_uvarint(buf, zigzag(v))
}

/// Size of a record body (after its length prefix) with a null key, no headers, timestamp
/// delta 0, the given offset delta and value length.
#[inline]
fn record_body_len(offset_delta: usize, value_len: usize) -> usize {
    // attributes + timestampDelta(0) + offsetDelta + keyLength(-1) + valueLength + value + headers(0)
    1 + 1 + uvarint_len(zigzag(offset_delta as i64)) + 1 + uvarint_len(zigzag(value_len as i64)) + value_len + 1
}

/// Encoded size of one record (length prefix included) at `offset_delta`.
#[inline]
pub fn record_len(offset_delta: usize, value_len: usize) -> usize {
    let body = record_body_len(offset_delta, value_len);
    uvarint_len(zigzag(body as i64)) + body
}

/// Encoded size of the records of a batch (uncompressed).
pub fn records_len(values: &[(usize, usize)]) -> usize {
    values
        .iter()
        .enumerate()
        .map(|(d, &(_, len))| record_len(d, len))
        .sum()
}

/// Writes the records of a batch: null keys, values `arena[start..start+len]`.
pub fn write_records(buf: &mut BytesMut, arena: &[u8], values: &[(usize, usize)]) {
    for (d, &(start, len)) in values.iter().enumerate() {
        let body = record_body_len(d, len);
        put_varint(buf, body as i64);
        buf.put_u8(0); // attributes
        buf.put_u8(0); // timestampDelta 0
        put_varint(buf, d as i64);
        buf.put_u8(1); // keyLength -1 (zigzag)
        put_varint(buf, len as i64);
        buf.put_slice(&arena[start..start + len]);
        buf.put_u8(0); // no headers
    }
}

/// Compression codecs, with their attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    pub fn parse(s: &str) -> Result<Codec> {
        Ok(match s {
            "none" => Codec::None,
            "gzip" => Codec::Gzip,
            "snappy" => Codec::Snappy,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            _ => bail!("compression.type {s:?} is not one of none, gzip, snappy, lz4, zstd"),
        })
    }

    pub fn from_attributes(attributes: i16) -> Result<Codec> {
        Ok(match attributes & 0x07 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            c => bail!("unknown compression codec {c} in batch attributes"),
        })
    }

    /// Compresses `raw` (encoded records) onto the end of `out`.
    pub fn compress(self, raw: &[u8], out: &mut BytesMut) -> Result<()> {
        use kafka_protocol::compression::Compressor;
        let fill = |tmp: &mut BytesMut| -> Result<()> {
            tmp.put_slice(raw);
            Ok(())
        };
        match self {
            Codec::None => out.put_slice(raw),
            Codec::Gzip => kafka_protocol::compression::Gzip::compress(out, fill)?,
            Codec::Snappy => kafka_protocol::compression::Snappy::compress(out, fill)?,
            Codec::Lz4 => kafka_protocol::compression::Lz4::compress(out, fill)?,
            Codec::Zstd => kafka_protocol::compression::Zstd::compress(out, fill)?,
        }
        Ok(())
    }

    /// Decompresses the records section of a batch and hands the raw records to `f`.
    pub fn decompress<R>(self, data: Bytes, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        use kafka_protocol::compression::Decompressor;
        let mut data = data;
        match self {
            Codec::None => f(&data),
            Codec::Gzip => kafka_protocol::compression::Gzip::decompress(&mut data, |b: &mut Bytes| f(b)),
            Codec::Snappy => kafka_protocol::compression::Snappy::decompress(&mut data, |b: &mut Bytes| f(b)),
            Codec::Lz4 => kafka_protocol::compression::Lz4::decompress(&mut data, |b: &mut Bytes| f(b)),
            Codec::Zstd => kafka_protocol::compression::Zstd::decompress(&mut data, |b: &mut Bytes| f(b)),
        }
    }
}

/// Producer identity stamped on batches (idempotence), or none.
#[derive(Debug, Clone, Copy)]
pub struct ProducerIdentity {
    pub id: i64,
    pub epoch: i16,
}

/// The fields of one batch to build.
pub struct BatchSpec<'a> {
    pub arena: &'a [u8],
    pub values: &'a [(usize, usize)],
    pub timestamp_ms: i64,
    pub codec: Codec,
    pub producer: Option<ProducerIdentity>,
    pub base_sequence: i32,
}

/// Exact size of the batch `spec` describes when uncompressed.
pub fn batch_len_uncompressed(spec: &BatchSpec) -> usize {
    BATCH_HEADER_LEN + records_len(spec.values)
}

/// Appends a complete v2 record batch to `buf`. `scratch` holds the raw records while
/// compressing. Returns the batch's size.
pub fn write_batch(buf: &mut BytesMut, spec: &BatchSpec, scratch: &mut BytesMut) -> Result<usize> {
    let start = buf.len();
    let n = spec.values.len();
    buf.put_i64(0); // baseOffset (the broker assigns)
    buf.put_i32(0); // batchLength, patched below
    buf.put_i32(-1); // partitionLeaderEpoch
    buf.put_i8(2); // magic
    buf.put_u32(0); // crc, patched below
    buf.put_i16(spec.codec as i16);
    buf.put_i32(n as i32 - 1); // lastOffsetDelta
    buf.put_i64(spec.timestamp_ms);
    buf.put_i64(spec.timestamp_ms);
    match spec.producer {
        Some(p) => {
            buf.put_i64(p.id);
            buf.put_i16(p.epoch);
            buf.put_i32(spec.base_sequence);
        }
        None => {
            buf.put_i64(-1);
            buf.put_i16(-1);
            buf.put_i32(-1);
        }
    }
    buf.put_i32(n as i32);
    if spec.codec == Codec::None {
        buf.reserve(records_len(spec.values));
        write_records(buf, spec.arena, spec.values);
    } else {
        scratch.clear();
        write_records(scratch, spec.arena, spec.values);
        spec.codec.compress(scratch, buf)?;
    }
    let size = buf.len() - start;
    let batch_length = (size - 12) as i32;
    buf[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&buf[start + BATCH_ATTRIBUTES_OFFSET..]);
    buf[start + BATCH_CRC_OFFSET..start + BATCH_CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(size)
}

// ---------------------------------------------------------------------------------------------
// Produce request frames, written by hand so batches are encoded straight into the frame.

/// Builds one Produce request frame for a single topic, partition by partition.
///
/// Layout (v3-v8): header v1, transactional_id, acks, timeout, [topic, [index, records]].
/// v9+ is flexible: compact strings/arrays/bytes and empty tagged-field sections; v13+ names
/// the topic by id.
pub struct ProduceFrame {
    version: i16,
    expected: u32,
    partitions: u32,
}

impl ProduceFrame {
    /// Starts the frame for `partitions` partitions; `buf` must be empty.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(buf: &mut BytesMut, version: i16, correlation_id: i32, client_id: &str, acks: i16, timeout_ms: i32, topic: &str, topic_id: uuid::Uuid, partitions: usize) -> ProduceFrame {
        debug_assert!(buf.is_empty());
        let flexible = version >= 9;
        buf.put_i32(0); // size, patched in finish
        buf.put_i16(ApiKey::Produce as i16);
        buf.put_i16(version);
        buf.put_i32(correlation_id);
        buf.put_i16(client_id.len() as i16);
        buf.put_slice(client_id.as_bytes());
        if flexible {
            buf.put_u8(0); // header tagged fields
            buf.put_u8(0); // transactional_id: compact null
        } else {
            buf.put_i16(-1); // transactional_id: null
        }
        buf.put_i16(acks);
        buf.put_i32(timeout_ms);
        if flexible {
            put_uvarint(buf, 2); // one topic
            if version >= 13 {
                buf.put_slice(topic_id.as_bytes());
            } else {
                put_uvarint(buf, topic.len() as u64 + 1);
                buf.put_slice(topic.as_bytes());
            }
            put_uvarint(buf, partitions as u64 + 1);
        } else {
            buf.put_i32(1);
            buf.put_i16(topic.len() as i16);
            buf.put_slice(topic.as_bytes());
            buf.put_i32(partitions as i32);
        }
        ProduceFrame { version, expected: partitions as u32, partitions: 0 }
    }

    /// Appends one partition whose records are written by `write` (which returns their size).
    /// `known_len` must be the exact size for flexible versions (compact length prefix).
    pub fn partition(&mut self, buf: &mut BytesMut, index: i32, known_len: Option<usize>, write: impl FnOnce(&mut BytesMut) -> Result<usize>) -> Result<()> {
        buf.put_i32(index);
        if self.version >= 9 {
            let len = known_len.ok_or_else(|| anyhow!("flexible Produce needs the batch size up front"))?;
            put_uvarint(buf, len as u64 + 1);
            let written = write(buf)?;
            debug_assert_eq!(written, len);
            if written != len {
                bail!("batch size {written} differs from the announced {len}");
            }
            buf.put_u8(0); // partition tagged fields
        } else {
            let at = buf.len();
            buf.put_i32(0);
            let written = write(buf)?;
            buf[at..at + 4].copy_from_slice(&(written as i32).to_be_bytes());
        }
        self.partitions += 1;
        Ok(())
    }

    /// Closes the frame: patches the size prefix.
    pub fn finish(self, buf: &mut BytesMut) -> Result<()> {
        if self.partitions != self.expected {
            bail!("Produce frame announced {} partitions but holds {}", self.expected, self.partitions);
        }
        if self.version >= 9 {
            buf.put_u8(0); // topic tagged fields
            buf.put_u8(0); // request tagged fields
        }
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::records::RecordBatchDecoder;

    fn frame(version: i16, codec: Codec, parts: &[i32]) -> (BytesMut, Vec<u8>) {
        let arena = b"hello world, this is a value".to_vec();
        let values: Vec<(usize, usize)> = (0..300).map(|i| (i % 5, 10 + i % 7)).collect();
        let mut buf = BytesMut::new();
        let mut scratch = BytesMut::new();
        let mut f = ProduceFrame::begin(&mut buf, version, 7, "cid", -1, 30000, "topic-a", uuid::Uuid::from_u128(42), parts.len());
        for &p in parts {
            let spec = BatchSpec { arena: &arena, values: &values, timestamp_ms: 1234, codec, producer: None, base_sequence: -1 };
            let known = if codec == Codec::None {
                Some(batch_len_uncompressed(&spec))
            } else {
                let mut tmp = BytesMut::new();
                Some(write_batch(&mut tmp, &spec, &mut scratch).unwrap())
            };
            f.partition(&mut buf, p, known, |b| write_batch(b, &spec, &mut scratch)).unwrap();
        }
        f.finish(&mut buf).unwrap();
        (buf, arena)
    }

    #[test]
    fn frames_reuse_the_read_buffer_only_once_released() {
        let mut wire = Vec::new();
        for body in [&[1u8; 64][..], &[2u8; 48][..], &[3u8; 64][..]] {
            wire.extend_from_slice(&(body.len() as i32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        let mut r = std::io::Cursor::new(wire);
        let mut buf = BytesMut::new();
        let first = read_frame(&mut r, &mut buf).unwrap();
        assert_eq!(&first[..], &[1u8; 64][..]);
        let first_ptr = first.as_ptr();
        drop(first);
        // Released: the next frame lands in the same allocation.
        let second = read_frame(&mut r, &mut buf).unwrap();
        assert_eq!(&second[..], &[2u8; 48][..]);
        assert_eq!(second.as_ptr(), first_ptr);
        // Still held while the next frame is read: it must not be overwritten.
        let third = read_frame(&mut r, &mut buf).unwrap();
        assert_eq!(&second[..], &[2u8; 48][..]);
        assert_eq!(&third[..], &[3u8; 64][..]);
        assert_ne!(third.as_ptr(), second.as_ptr());
    }

    #[test]
    fn produce_frames_decode_with_kafka_protocol() {
        for version in 3..=13i16 {
            for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
                let (buf, arena) = frame(version, codec, &[0, 3, 5]);
                let mut b = buf.freeze();
                let size = i32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
                assert_eq!(size, b.len() - 4);
                let _ = b.split_to(4);
                let h = RequestHeader::decode(&mut b, ProduceRequest::header_version(version)).unwrap();
                assert_eq!(h.correlation_id, 7);
                assert_eq!(h.request_api_version, version);
                let req = ProduceRequest::decode(&mut b, version).unwrap();
                assert!(b.is_empty(), "v{version}: {} trailing bytes", b.len());
                assert_eq!(req.acks, -1);
                assert_eq!(req.topic_data.len(), 1);
                let t = &req.topic_data[0];
                if version >= 13 {
                    assert_eq!(t.topic_id, uuid::Uuid::from_u128(42));
                } else {
                    assert_eq!(t.name.0.as_str(), "topic-a");
                }
                let idx: Vec<i32> = t.partition_data.iter().map(|p| p.index).collect();
                assert_eq!(idx, vec![0, 3, 5]);
                for p in &t.partition_data {
                    let mut records = p.records.clone().unwrap();
                    let sets = RecordBatchDecoder::decode_all(&mut records).unwrap();
                    assert_eq!(sets.len(), 1);
                    let recs = &sets[0].records;
                    assert_eq!(recs.len(), 300);
                    for (i, r) in recs.iter().enumerate() {
                        assert_eq!(r.offset, i as i64);
                        assert!(r.key.is_none());
                        let (s, l) = (i % 5, 10 + i % 7);
                        assert_eq!(r.value.as_deref(), Some(&arena[s..s + l]));
                        assert_eq!(r.timestamp, 1234);
                    }
                }
            }
        }
    }

    #[test]
    fn many_partitions_count_varint() {
        let parts: Vec<i32> = (0..200).collect();
        let (buf, _) = frame(9, Codec::None, &parts);
        let mut b = buf.freeze();
        let _ = b.split_to(4);
        let _ = RequestHeader::decode(&mut b, 2).unwrap();
        let req = ProduceRequest::decode(&mut b, 9).unwrap();
        assert_eq!(req.topic_data[0].partition_data.len(), 200);
    }
}
