//! Protocol edge-case integration tests for the Strand broker.
//!
//! Every test starts its own broker process (see the local `harness` module) on a
//! free port with a fresh data directory, and talks to it over a plain blocking
//! `std::net::TcpStream`, encoding requests / decoding responses with the
//! `kafka-protocol` crate.

#![allow(clippy::field_reassign_with_default)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

// ---------------------------------------------------------------------------
// Minimal local broker harness (independent from tests/common).
// ---------------------------------------------------------------------------
mod harness {
    use std::fs::File;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub const BIN: &str = env!("CARGO_BIN_EXE_strand");

    pub struct Broker {
        child: Option<Child>,
        pub port: u16,
        pub _dir: tempfile::TempDir,
        pub log_path: PathBuf,
    }

    pub fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral");
        l.local_addr().unwrap().port()
    }

    impl Broker {
        pub fn start(shards: usize, sets: &[&str]) -> Broker {
            // Retry a few times in case of a port race with another test.
            let mut last_log = String::new();
            for _attempt in 0..3 {
                let dir = tempfile::tempdir().expect("tempdir");
                let data = dir.path().join("data");
                std::fs::create_dir_all(&data).unwrap();
                let log_path = dir.path().join("broker.log");
                let log = File::create(&log_path).unwrap();
                let port = free_port();
                let mut cmd = Command::new(BIN);
                cmd.arg("serve")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--data-dir")
                    .arg(&data)
                    .arg("--shards")
                    .arg(shards.to_string());
                for s in sets {
                    cmd.arg("--set").arg(s);
                }
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::from(log.try_clone().unwrap()))
                    .stderr(Stdio::from(log));
                let child = cmd.spawn().expect("spawn strand");
                let mut b = Broker {
                    child: Some(child),
                    port,
                    _dir: dir,
                    log_path,
                };
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                        return b;
                    }
                    if let Some(st) = b.child.as_mut().unwrap().try_wait().unwrap() {
                        last_log = b.log();
                        eprintln!("broker exited during startup ({st}); log:\n{last_log}");
                        b.child = None;
                        break;
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "broker did not accept connections in 30s; log:\n{}",
                            b.log()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            panic!("broker failed to start 3 times; last log:\n{last_log}");
        }

        pub fn addr(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        pub fn log(&self) -> String {
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        }

        /// Exit status if the broker process has exited.
        pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
            self.child.as_mut().and_then(|c| c.try_wait().unwrap())
        }

        /// Panics if the broker process has died.
        pub fn assert_alive(&mut self) {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait().unwrap() {
                    panic!("broker process died ({st}); log:\n{}", self.log());
                }
            }
        }
    }

    impl Drop for Broker {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if std::thread::panicking() {
                let log = self.log();
                let tail: String = {
                    let lines: Vec<&str> = log.lines().collect();
                    let start = lines.len().saturating_sub(80);
                    lines[start..].join("\n")
                };
                eprintln!(
                    "---- broker log tail ({}) ----\n{tail}\n----",
                    self.log_path.display()
                );
            }
        }
    }
}

use harness::Broker;

// ---------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------

const IO_TIMEOUT: Duration = Duration::from_secs(15);

fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(b.addr()).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn strb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn tname(s: &str) -> TopicName {
    TopicName(strb(s))
}

/// Encode a request header with an explicit header version.
fn encode_header(buf: &mut BytesMut, api_key: i16, version: i16, corr: i32, header_version: i16) {
    let mut h = RequestHeader::default();
    h.request_api_key = api_key;
    h.request_api_version = version;
    h.correlation_id = corr;
    h.client_id = Some(strb("protocol-edges"));
    h.encode(buf, header_version).expect("encode header");
}

/// Frame and write `header ++ body` (body already encoded).
fn write_frame(stream: &mut TcpStream, payload: &[u8]) {
    let mut frame = BytesMut::with_capacity(payload.len() + 4);
    frame.put_i32(payload.len() as i32);
    frame.put_slice(payload);
    stream.write_all(&frame).expect("write frame");
    stream.flush().unwrap();
}

/// Send a request: the header version comes from `ApiKey::request_header_version`.
fn send_request<T: Encodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    corr: i32,
    body: &T,
) {
    let mut buf = BytesMut::new();
    encode_header(
        &mut buf,
        api_key as i16,
        version,
        corr,
        api_key.request_header_version(version),
    );
    body.encode(&mut buf, version).expect("encode body");
    write_frame(stream, &buf);
}

/// Read one response frame (4-byte length, then body). Returns the body.
fn read_response(stream: &mut TcpStream) -> Bytes {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("read response length");
    let len = i32::from_be_bytes(len);
    assert!(
        len >= 4 && len < 200 * 1024 * 1024,
        "bad response length {len}"
    );
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).expect("read response body");
    Bytes::from(body)
}

/// Decode the response header (checks the correlation id) and return the rest.
fn decode_response_header(mut buf: Bytes, api_key: ApiKey, version: i16, corr: i32) -> Bytes {
    let hv = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let h = ResponseHeader::decode(&mut buf, hv).expect("decode response header");
    assert_eq!(
        h.correlation_id, corr,
        "correlation id mismatch for {api_key:?} v{version}"
    );
    buf
}

/// Full round trip: send, read, decode.
fn roundtrip<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    corr: i32,
    body: &Req,
) -> Resp {
    send_request(stream, api_key, version, corr, body);
    let raw = read_response(stream);
    let mut rest = decode_response_header(raw, api_key, version, corr);
    let resp = Resp::decode(&mut rest, version)
        .unwrap_or_else(|e| panic!("decode {api_key:?} v{version} response: {e:?}"));
    assert_eq!(
        rest.remaining(),
        0,
        "{api_key:?} v{version} response has {} trailing bytes",
        rest.remaining()
    );
    resp
}

fn api_versions_request() -> ApiVersionsRequest {
    let mut r = ApiVersionsRequest::default();
    r.client_software_name = strb("strand-protocol-edges");
    r.client_software_version = strb("0.1.0");
    r
}

fn api_versions(stream: &mut TcpStream, version: i16, corr: i32) -> ApiVersionsResponse {
    roundtrip(
        stream,
        ApiKey::ApiVersions,
        version,
        corr,
        &api_versions_request(),
    )
}

/// Asserts that a healthy ApiVersions + Metadata round trip works on `stream`.
fn assert_conn_works(stream: &mut TcpStream, what: &str) {
    let r = api_versions(stream, 3, 4242);
    assert_eq!(r.error_code, 0, "{what}: ApiVersions error");
    assert!(!r.api_keys.is_empty(), "{what}: empty api list");
    let mut md = MetadataRequest::default();
    md.topics = Some(vec![]);
    let m: MetadataResponse = roundtrip(stream, ApiKey::Metadata, 12, 4243, &md);
    assert_eq!(
        m.brokers.len(),
        1,
        "{what}: metadata brokers {:?}",
        m.brokers
    );
    assert_eq!(m.brokers[0].node_id.0, 1, "{what}: node id");
}

/// Waits for the peer to close the connection. Panics if the connection is
/// still open after the timeout or if the broker sent any response bytes.
fn assert_closed(stream: &mut TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                break
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "{what}: connection was NOT closed by the broker within 10s (received {} bytes: {:02x?})",
                    got.len(),
                    &got[..got.len().min(64)]
                );
            }
            Err(e) => panic!("{what}: unexpected read error {e:?}"),
        }
    }
    assert!(
        got.is_empty(),
        "{what}: broker sent {} bytes before closing (expected no response): {:02x?}",
        got.len(),
        &got[..got.len().min(64)]
    );
}

fn make_records(n: usize, tag: &str, value_len: Option<usize>) -> Vec<Record> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (0..n)
        .map(|i| {
            let value = match value_len {
                Some(l) => {
                    let mut v = vec![b'x'; l];
                    let t = format!("{tag}-{i}");
                    v[..t.len()].copy_from_slice(t.as_bytes());
                    v
                }
                None => format!("{tag}-value-{i}").into_bytes(),
            };
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // base sequence -1 (no idempotence) while keeping all records in one batch
                sequence: i as i32 - 1,
                timestamp: now + i as i64,
                key: Some(Bytes::from(format!("{tag}-key-{i}"))),
                value: Some(Bytes::from(value)),
                headers: Default::default(),
            }
        })
        .collect()
}

fn encode_batch(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    let b = buf.freeze();
    let infos = RecordBatchDecoder::decode_batch_info(&mut b.clone()).unwrap();
    assert_eq!(
        infos.len(),
        1,
        "test bug: records were split into {} batches",
        infos.len()
    );
    b
}

fn produce_request(acks: i16, topics: Vec<(&str, Vec<(i32, Bytes)>)>) -> ProduceRequest {
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 10_000;
    req.topic_data = topics
        .into_iter()
        .map(|(name, parts)| {
            let mut t = produce_request::TopicProduceData::default();
            t.name = tname(name);
            t.partition_data = parts
                .into_iter()
                .map(|(idx, recs)| {
                    let mut p = produce_request::PartitionProduceData::default();
                    p.index = idx;
                    p.records = Some(recs);
                    p
                })
                .collect();
            t
        })
        .collect();
    req
}

/// Produce one batch to one partition, return (error_code, base_offset).
fn produce_one(
    stream: &mut TcpStream,
    version: i16,
    corr: i32,
    topic: &str,
    partition: i32,
    batch: Bytes,
) -> (i16, i64) {
    let req = produce_request(-1, vec![(topic, vec![(partition, batch)])]);
    let resp: ProduceResponse = roundtrip(stream, ApiKey::Produce, version, corr, &req);
    assert_eq!(resp.responses.len(), 1, "produce responses: {resp:?}");
    let t = &resp.responses[0];
    assert_eq!(t.name.0.as_str(), topic);
    assert_eq!(t.partition_responses.len(), 1, "{resp:?}");
    let p = &t.partition_responses[0];
    assert_eq!(p.index, partition);
    (p.error_code, p.base_offset)
}

fn create_topic(stream: &mut TcpStream, corr: i32, name: &str, partitions: i32) {
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 10_000;
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = tname(name);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    req.topics = vec![t];
    let resp: CreateTopicsResponse = roundtrip(stream, ApiKey::CreateTopics, 7, corr, &req);
    assert_eq!(resp.topics.len(), 1, "{resp:?}");
    assert_eq!(resp.topics[0].name.0.as_str(), name);
    assert_eq!(
        resp.topics[0].error_code, 0,
        "create topic {name}: {resp:?}"
    );
}

/// ListOffsets latest (-1) for one partition → offset.
fn latest_offset(stream: &mut TcpStream, corr: i32, topic: &str, partition: i32) -> i64 {
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = 0;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = tname(topic);
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.partition_index = partition;
    p.current_leader_epoch = -1;
    p.timestamp = -1;
    t.partitions = vec![p];
    req.topics = vec![t];
    let resp: ListOffsetsResponse = roundtrip(stream, ApiKey::ListOffsets, 7, corr, &req);
    assert_eq!(resp.topics.len(), 1, "{resp:?}");
    assert_eq!(resp.topics[0].partitions.len(), 1, "{resp:?}");
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "list offsets error: {resp:?}");
    p.offset
}

/// The Fetch request entry for (partition, fetch offset) pairs of one topic.
fn fetch_topic(topic: &str, parts: &[(i32, i64)], partition_max_bytes: i32) -> fetch_request::FetchTopic {
    let mut t = fetch_request::FetchTopic::default();
    t.topic = tname(topic);
    t.partitions = parts
        .iter()
        .map(|&(idx, off)| {
            let mut p = fetch_request::FetchPartition::default();
            p.partition = idx;
            p.current_leader_epoch = -1;
            p.fetch_offset = off;
            p.last_fetched_epoch = -1;
            p.log_start_offset = -1;
            p.partition_max_bytes = partition_max_bytes;
            p
        })
        .collect();
    t
}

/// Fetch v12 several partitions of one topic. Returns the per-partition data by index.
fn fetch(
    stream: &mut TcpStream,
    corr: i32,
    topic: &str,
    parts: &[(i32, i64)],
) -> Vec<fetch_response::PartitionData> {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 500;
    req.min_bytes = 1;
    req.max_bytes = 50 * 1024 * 1024;
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = vec![fetch_topic(topic, parts, 10 * 1024 * 1024)];
    let resp: FetchResponse = roundtrip(stream, ApiKey::Fetch, 12, corr, &req);
    assert_eq!(resp.error_code, 0, "fetch top-level error: {resp:?}");
    assert_eq!(resp.responses.len(), 1, "fetch responses: {resp:?}");
    assert_eq!(resp.responses[0].topic.0.as_str(), topic);
    let mut out = resp.responses[0].partitions.clone();
    out.sort_by_key(|p| p.partition_index);
    out
}

fn decode_records(data: &Option<Bytes>) -> Vec<Record> {
    let mut b = data.clone().unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut b).expect("decode fetched record batches");
    sets.into_iter().flat_map(|s| s.records).collect()
}

fn metadata_topic(
    stream: &mut TcpStream,
    version: i16,
    corr: i32,
    topic: &str,
) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(tname(topic));
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = true;
    roundtrip(stream, ApiKey::Metadata, version, corr, &req)
}

// Expected advertised API ranges: (key, min, max)
const EXPECTED_APIS: &[(i16, i16, i16)] = &[
    (18, 0, 3), // ApiVersions
    (3, 0, 12), // Metadata
    (0, 0, 11), // Produce (v0-v2 advertised for librdkafka's compression, answered 43)
    (1, 4, 16), // Fetch
    (2, 1, 9),  // ListOffsets
    (19, 2, 7), // CreateTopics
    (20, 1, 6), // DeleteTopics
    (21, 0, 2), // DeleteRecords
    (60, 0, 1), // DescribeCluster
    (10, 0, 4), // FindCoordinator
    (11, 0, 9), // JoinGroup
    (14, 0, 5), // SyncGroup
    (12, 0, 4), // Heartbeat
    (13, 0, 5), // LeaveGroup
    (8, 2, 8),  // OffsetCommit
    (9, 1, 8),  // OffsetFetch
    (47, 0, 0), // OffsetDelete
    (16, 0, 5), // ListGroups
    (15, 0, 6), // DescribeGroups
    (42, 0, 2), // DeleteGroups
    (22, 0, 4), // InitProducerId
    (32, 1, 4), // DescribeConfigs
    (33, 0, 2), // AlterConfigs
    (44, 0, 1), // IncrementalAlterConfigs
    (37, 0, 3), // CreatePartitions
    (35, 1, 4), // DescribeLogDirs
    (75, 0, 0), // DescribeTopicPartitions
];

fn check_api_list(resp: &ApiVersionsResponse, ctx: &str) {
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for a in &resp.api_keys {
        if !seen.insert(a.api_key) {
            problems.push(format!("api key {} listed twice", a.api_key));
        }
        if a.min_version > a.max_version {
            problems.push(format!("bad range {a:?}"));
        }
    }
    for &(key, min, max) in EXPECTED_APIS {
        match resp.api_keys.iter().find(|a| a.api_key == key) {
            None => problems.push(format!("api key {key} missing")),
            Some(a) if (a.min_version, a.max_version) != (min, max) => problems.push(format!(
                "api key {key}: advertised {}-{}, expected {min}-{max}",
                a.min_version, a.max_version
            )),
            Some(_) => {}
        }
    }
    let got: Vec<(i16, i16, i16)> = resp
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    assert!(
        problems.is_empty(),
        "{ctx}: {problems:#?}\nadvertised: {got:?}"
    );
}

// ---------------------------------------------------------------------------
// 1. ApiVersions
// ---------------------------------------------------------------------------

#[test]
fn api_versions_all_versions_list_ranges() {
    let b = Broker::start(1, &[]);
    let mut s = connect(&b);
    for v in 0..=3i16 {
        let r = api_versions(&mut s, v, 100 + v as i32);
        assert_eq!(r.error_code, 0, "ApiVersions v{v} error");
        check_api_list(&r, &format!("ApiVersions v{v}"));
    }
    // Also each version on a fresh connection (first request on a connection).
    for v in 0..=3i16 {
        let mut s = connect(&b);
        let r = api_versions(&mut s, v, 200 + v as i32);
        assert_eq!(r.error_code, 0);
        check_api_list(&r, &format!("ApiVersions v{v} (fresh conn)"));
    }
}

#[test]
fn api_versions_too_new_gives_unsupported_version_v0() {
    let b = Broker::start(1, &[]);
    for &v in &[4i16, 9, 127] {
        let mut s = connect(&b);
        // Body encoded as the newest version we know of (v3, flexible), header v2,
        // exactly as a newer client would send it.
        let mut buf = BytesMut::new();
        let corr = 7000 + v as i32;
        encode_header(&mut buf, ApiKey::ApiVersions as i16, v, corr, 2);
        api_versions_request().encode(&mut buf, 3).unwrap();
        write_frame(&mut s, &buf);
        let raw = read_response(&mut s);
        // v0 framing: response header v0 = correlation id only, then v0 body.
        let mut rest = raw.clone();
        let h = ResponseHeader::decode(&mut rest, 0).unwrap();
        assert_eq!(h.correlation_id, corr);
        let r = ApiVersionsResponse::decode(&mut rest, 0).unwrap_or_else(|e| {
            panic!("ApiVersions v{v} error response not v0-decodable: {e:?}; raw={raw:02x?}")
        });
        assert_eq!(
            rest.remaining(),
            0,
            "trailing bytes in v0 error response; raw={raw:02x?}"
        );
        assert_eq!(
            r.error_code, 35,
            "ApiVersions v{v}: expected UNSUPPORTED_VERSION"
        );
        // It carries the ApiVersions range (so the client can pick a version) and the same
        // list as a normal response. (Exact ranges are checked in api_versions_all_versions_list_ranges.)
        let av = r
            .api_keys
            .iter()
            .find(|a| a.api_key == 18)
            .expect("ApiVersions entry");
        assert_eq!(
            (av.min_version, av.max_version),
            (0, 3),
            "ApiVersions range"
        );
        // The connection stays usable (clients retry ApiVersions on the same connection).
        let r2 = api_versions(&mut s, 0, corr + 1);
        assert_eq!(
            r2.error_code, 0,
            "retry on same connection after UNSUPPORTED_VERSION"
        );
        let key = |x: &ApiVersionsResponse| {
            x.api_keys
                .iter()
                .map(|a| (a.api_key, a.min_version, a.max_version))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&r), key(&r2), "error response list == normal v0 list");
        assert_conn_works(&mut s, "same connection after too-new ApiVersions");
    }
}

// ---------------------------------------------------------------------------
// 2. Bad input closes only the offending connection
// ---------------------------------------------------------------------------

fn bad_input_case(b: &mut Broker, what: &str, payload: &[u8]) {
    let mut before = connect(b);
    assert_conn_works(&mut before, &format!("{what}: before (pre-check)"));
    let mut bad = connect(b);
    bad.write_all(payload).expect("write bad payload");
    bad.flush().unwrap();
    assert_closed(&mut bad, what);
    std::thread::sleep(Duration::from_millis(300));
    b.assert_alive();
    assert_conn_works(&mut before, &format!("{what}: connection opened before"));
    let mut after = connect(b);
    assert_conn_works(&mut after, &format!("{what}: connection opened after"));
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn header_only(api_key: i16, version: i16, header_version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_header(&mut buf, api_key, version, 31337, header_version);
    buf.to_vec()
}

/// Deterministic pseudo-random bytes.
fn rnd_bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn garbage_frame_fill_closes_connection() {
    // A frame whose "header" is garbage: api key 0xABAB (negative / unknown).
    let mut b = Broker::start(1, &[]);
    bad_input_case(&mut b, "garbage frame (0xAB fill)", &framed(&[0xAB; 64]));
}

#[test]
fn garbage_frame_random_closes_connection() {
    // A frame of random bytes with an invalid api key prefix.
    let mut b = Broker::start(1, &[]);
    let mut g = vec![0x7F, 0x3E];
    g.extend(rnd_bytes(0x1234_5678, 126));
    bad_input_case(&mut b, "garbage frame (random)", &framed(&g));
}

#[test]
fn garbage_metadata_body_closes_connection() {
    // A valid Metadata v12 header followed by a garbage body (0xFF: huge varint array length).
    let mut b = Broker::start(1, &[]);
    let mut m = header_only(ApiKey::Metadata as i16, 12, 2);
    m.extend([0xFF; 40]);
    bad_input_case(&mut b, "Metadata v12 with 0xFF garbage body", &framed(&m));
}

/// Sends `payload` on a fresh connection. The broker must either close that connection or
/// answer it (0xFF/0x7F garbage can occasionally decode as a valid request), must not hang
/// it, must stay alive, and other connections must keep working.
fn garbage_input_case(b: &mut Broker, what: &str, payload: &[u8]) -> Result<&'static str, String> {
    let ok_conn = |s: &mut TcpStream| -> Result<(), String> {
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_conn_works(s, what)));
        r.map_err(|_| "healthy connection stopped working".to_string())
    };
    let mut before = TcpStream::connect(b.addr()).map_err(|e| format!("connect: {e}"))?;
    before.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut bad = TcpStream::connect(b.addr()).map_err(|e| format!("connect: {e}"))?;
    bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = bad.write_all(payload);
    let mut buf = [0u8; 4096];
    let outcome = match bad.read(&mut buf) {
        Ok(0) => "closed",
        Ok(_) => "answered",
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Err("connection neither answered nor closed within 5s".into())
        }
        Err(_) => "closed",
    };
    std::thread::sleep(Duration::from_millis(200));
    if let Some(st) = b.exited() {
        let log = b.log();
        let last = log
            .lines()
            .filter(|l| {
                !l.starts_with(' ') && !l.starts_with("note:") && !l.starts_with("stack backtrace")
            })
            .last()
            .unwrap_or("")
            .to_string();
        return Err(format!("BROKER PROCESS DIED ({st}); last log line: {last}"));
    }
    ok_conn(&mut before)?;
    let mut after = connect(b);
    ok_conn(&mut after)?;
    Ok(outcome)
}

#[test]
fn garbage_bodies_of_served_apis_close_connection() {
    // Valid headers of every advertised API (at its min and max version) followed by a
    // garbage body. The broker is restarted whenever it dies; all failures are reported.
    let mut b = Broker::start(1, &[]);
    let advertised: Vec<(i16, i16, i16)> = {
        let mut s = connect(&b);
        api_versions(&mut s, 3, 1)
            .api_keys
            .iter()
            .map(|a| (a.api_key, a.min_version, a.max_version))
            .collect()
    };
    let mut failures = Vec::new();
    let mut cases = 0;
    for &(k, min, max) in &advertised {
        let Ok(key) = ApiKey::try_from(k) else {
            continue;
        };
        if key == ApiKey::ApiVersions {
            continue; // its v0-v2 body is empty: trailing garbage is legitimately ignored
        }
        let mut versions = vec![min, max];
        versions.dedup();
        for ver in versions {
            for fill in [0xFFu8, 0x7F] {
                cases += 1;
                let what = format!("{key:?} v{ver} + 48 x {fill:#04x}");
                let mut m = header_only(k, ver, key.request_header_version(ver));
                m.extend([fill; 48]);
                match garbage_input_case(&mut b, &what, &framed(&m)) {
                    Ok(outcome) => eprintln!("{what}: {outcome}"),
                    Err(e) => {
                        failures.push(format!("{what}: {e}"));
                        if b.exited().is_some() {
                            b = Broker::start(1, &[]);
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} garbage-body cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn truncated_produce_body_closes_connection() {
    // A Produce v9 header followed by a truncated body.
    let mut b = Broker::start(1, &[]);
    let mut p = header_only(ApiKey::Produce as i16, 9, 2);
    p.extend([0x00, 0x05]);
    bad_input_case(&mut b, "Produce v9 with truncated body", &framed(&p));
}

#[test]
fn raw_random_garbage_closes_connection() {
    // Raw random garbage with a 0xFF first byte (negative length prefix).
    let mut b = Broker::start(1, &[]);
    let mut r = vec![0xFF];
    r.extend(rnd_bytes(0x9E37_79B9, 255));
    bad_input_case(&mut b, "raw random garbage", &r);
}

#[test]
fn bad_frame_lengths_close_connection() {
    let mut b = Broker::start(1, &[]);
    bad_input_case(&mut b, "negative length -1", &(-1i32).to_be_bytes());
    bad_input_case(&mut b, "negative length i32::MIN", &i32::MIN.to_be_bytes());
    // Over socket.request.max.bytes (default 104857600); only the prefix is sent.
    bad_input_case(
        &mut b,
        "length 104857601 > socket.request.max.bytes",
        &(104_857_601i32).to_be_bytes(),
    );
    bad_input_case(&mut b, "length i32::MAX", &i32::MAX.to_be_bytes());
}

#[test]
fn small_socket_request_max_bytes_closes_connection() {
    // (The broker refuses values below 1024.)
    let mut b = Broker::start(1, &["socket.request.max.bytes=2048"]);
    // A well-formed, ~5000-byte Produce request: over the 2048-byte limit.
    let batch = encode_batch(&make_records(1, "big", Some(4000)));
    let req = produce_request(-1, vec![("t", vec![(0, batch)])]);
    let mut buf = BytesMut::new();
    encode_header(&mut buf, 0, 9, 1, 2);
    req.encode(&mut buf, 9).unwrap();
    assert!(buf.len() > 2048);
    bad_input_case(
        &mut b,
        "Produce frame > socket.request.max.bytes=2048",
        &framed(&buf),
    );
    // Length prefix alone, just above the limit.
    bad_input_case(&mut b, "length 2049 > 2048", &2049i32.to_be_bytes());
    // A normal request under the limit still works.
    let mut s = connect(&b);
    assert_conn_works(&mut s, "small request under socket.request.max.bytes");
}

#[test]
fn unknown_api_key_closes_connection() {
    let mut b = Broker::start(1, &[]);
    let mut payload = header_only(9999, 0, 1);
    payload.extend([0u8; 8]);
    bad_input_case(&mut b, "unknown api key 9999", &framed(&payload));
    let mut payload = header_only(-5, 0, 1);
    payload.extend([0u8; 8]);
    bad_input_case(&mut b, "negative api key -5", &framed(&payload));
    // A real Kafka API that Strand does not advertise.
    let advertised: Vec<i16> = {
        let mut s = connect(&b);
        api_versions(&mut s, 3, 1)
            .api_keys
            .iter()
            .map(|a| a.api_key)
            .collect()
    };
    let unserved = [29i16, 57, 24, 22, 21, 50]
        .into_iter()
        .find(|k| !advertised.contains(k))
        .expect("some Kafka API is not advertised");
    let v = ApiKey::try_from(unserved).unwrap().valid_versions().min;
    let hv = ApiKey::try_from(unserved)
        .unwrap()
        .request_header_version(v);
    let mut payload = header_only(unserved, v, hv);
    payload.extend([0u8; 16]);
    bad_input_case(
        &mut b,
        &format!("unserved api key {unserved} v{v}"),
        &framed(&payload),
    );
}

#[test]
fn unsupported_api_versions_close_connection() {
    let mut b = Broker::start(1, &[]);
    // Produce v99 with a v9-encoded body, header v2.
    let req = produce_request(
        -1,
        vec![("t", vec![(0, encode_batch(&make_records(1, "p", None)))])],
    );
    let mut buf = BytesMut::from(&header_only(ApiKey::Produce as i16, 99, 2)[..]);
    req.encode(&mut buf, 9).unwrap();
    bad_input_case(&mut b, "Produce v99", &framed(&buf));

    // Metadata v13 (max 12), body v12-encoded.
    let mut md = MetadataRequest::default();
    md.topics = None;
    let mut buf = BytesMut::from(&header_only(ApiKey::Metadata as i16, 13, 2)[..]);
    md.encode(&mut buf, 12).unwrap();
    bad_input_case(&mut b, "Metadata v13", &framed(&buf));

    // Fetch v17 (kafka-protocol knows it, Strand max is 16).
    let mut f = FetchRequest::default();
    f.replica_id = BrokerId(-1);
    f.max_wait_ms = 100;
    let mut buf = BytesMut::new();
    encode_header(
        &mut buf,
        ApiKey::Fetch as i16,
        17,
        5,
        ApiKey::Fetch.request_header_version(17),
    );
    f.encode(&mut buf, 17).unwrap();
    bad_input_case(&mut b, "Fetch v17", &framed(&buf));

    // ListOffsets v0 (min 1).
    let lo = ListOffsetsRequest::default();
    let mut buf = BytesMut::from(&header_only(ApiKey::ListOffsets as i16, 0, 1)[..]);
    lo.encode(&mut buf, 1).unwrap(); // the codec cannot encode v0; the v1 body is close enough
    bad_input_case(&mut b, "ListOffsets v0", &framed(&buf));
}

// ---------------------------------------------------------------------------
// 3. Corrupt CRC
// ---------------------------------------------------------------------------

#[test]
fn produce_corrupt_crc_is_rejected_and_log_unchanged() {
    let b = Broker::start(1, &[]);
    let mut s = connect(&b);
    create_topic(&mut s, 1, "crc-topic", 1);

    let good = encode_batch(&make_records(3, "good", None));
    let (err, base) = produce_one(&mut s, 9, 2, "crc-topic", 0, good);
    assert_eq!((err, base), (0, 0), "first good produce");
    assert_eq!(latest_offset(&mut s, 3, "crc-topic", 0), 3);

    for (i, &ver) in [3i16, 9, 11].iter().enumerate() {
        let mut bad = BytesMut::from(&encode_batch(&make_records(4, "bad", None))[..]);
        // Flip a byte inside the records area (after the 61-byte batch header).
        let pos = 61 + 5;
        assert!(bad.len() > pos);
        bad[pos] ^= 0x5A;
        let (err, _) = produce_one(&mut s, ver, 10 + i as i32, "crc-topic", 0, bad.freeze());
        assert_eq!(
            err, 2,
            "Produce v{ver} corrupted CRC: expected CORRUPT_MESSAGE (2)"
        );
        assert_eq!(
            latest_offset(&mut s, 20 + i as i32, "crc-topic", 0),
            3,
            "log end offset changed after corrupt batch (Produce v{ver})"
        );
    }

    // Corrupt the stored CRC field itself (bytes 17..21).
    let mut bad = BytesMut::from(&encode_batch(&make_records(2, "badcrc", None))[..]);
    bad[18] ^= 0xFF;
    let (err, _) = produce_one(&mut s, 9, 30, "crc-topic", 0, bad.freeze());
    assert_eq!(err, 2, "flipped CRC field: expected CORRUPT_MESSAGE");
    assert_eq!(latest_offset(&mut s, 31, "crc-topic", 0), 3);

    // Log still healthy: next good batch lands at offset 3, and fetch returns only good records.
    let (err, base) = produce_one(
        &mut s,
        9,
        40,
        "crc-topic",
        0,
        encode_batch(&make_records(2, "good2", None)),
    );
    assert_eq!((err, base), (0, 3));
    let parts = fetch(&mut s, 41, "crc-topic", &[(0, 0)]);
    assert_eq!(parts[0].error_code, 0);
    assert_eq!(parts[0].high_watermark, 5);
    let recs = decode_records(&parts[0].records);
    let vals: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        vals,
        vec![
            "good-value-0",
            "good-value-1",
            "good-value-2",
            "good2-value-0",
            "good2-value-1"
        ]
    );
    let offs: Vec<i64> = recs.iter().map(|r| r.offset).collect();
    assert_eq!(offs, vec![0, 1, 2, 3, 4]);
}

/// A batch of one record per key (`None`: no key) with `compression`.
fn batch_with_keys(keys: &[Option<&str>], compression: Compression) -> Bytes {
    let mut records = make_records(keys.len(), "keys", None);
    for (r, k) in records.iter_mut().zip(keys) {
        r.key = k.map(|k| Bytes::from(k.to_string()));
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression })
        .expect("encode batch");
    buf.freeze()
}

/// Kafka (KIP-467) refuses a keyless record on a compacted topic: the whole batch is refused
/// with INVALID_RECORD, each keyless record named by its index in the batch (Produce v8+).
#[test]
fn produce_keyless_records_to_compacted_topic_are_refused_per_record() {
    // Every topic is compacted by the broker default.
    let b = Broker::start(1, &["log.cleanup.policy=compact"]);
    let mut s = connect(&b);
    create_topic(&mut s, 1, "ck", 1);
    let why = "Compacted topic cannot accept message without key in topic partition ck-0.";
    let mut corr = 10;
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        for version in [3i16, 7, 8, 11] {
            corr += 1;
            let batch = batch_with_keys(&[Some("a"), None, Some(""), None], compression);
            let req = produce_request(-1, vec![("ck", vec![(0, batch)])]);
            let resp: ProduceResponse = roundtrip(&mut s, ApiKey::Produce, version, corr, &req);
            let p = &resp.responses[0].partition_responses[0];
            let ctx = format!("{compression:?} Produce v{version}: {p:?}");
            assert_eq!((p.error_code, p.base_offset), (87, -1), "INVALID_RECORD, {ctx}");
            if version < 8 {
                assert!(p.record_errors.is_empty() && p.error_message.is_none(), "{ctx}");
                continue;
            }
            let errs: Vec<(i32, String)> = p
                .record_errors
                .iter()
                .map(|e| (e.batch_index, e.batch_index_error_message.as_ref().map(|m| m.to_string()).unwrap_or_default()))
                .collect();
            assert_eq!(errs, vec![(1, why.to_string()), (3, why.to_string())], "{ctx}");
            let msg = p.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            assert!(msg.contains("2 record errors") && msg.contains(&format!("RecordError(batchIndex=3, message='{why}')")), "{ctx}");
        }
    }
    assert_eq!(latest_offset(&mut s, 100, "ck", 0), 0, "nothing of a refused batch is stored");
    let keyed = batch_with_keys(&[Some("a"), Some("b")], Compression::Lz4);
    assert_eq!(produce_one(&mut s, 11, 101, "ck", 0, keyed), (0, 0), "keyed records are stored");
}

/// Sets the batch's record count (bytes 57..61) and recomputes the CRC-32C so the
/// batch passes the checksum but lies about its contents.
fn with_record_count(batch: &Bytes, count: i32) -> Bytes {
    let mut b = BytesMut::from(&batch[..]);
    b[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[test]
fn produce_batch_with_lying_record_count_is_rejected() {
    let mut b = Broker::start(1, &[]);
    let mut s = connect(&b);
    create_topic(&mut s, 1, "count-topic", 1);
    let (err, base) = produce_one(
        &mut s,
        9,
        2,
        "count-topic",
        0,
        encode_batch(&make_records(3, "good", None)),
    );
    assert_eq!((err, base), (0, 0));
    let real = encode_batch(&make_records(4, "liar", None));
    for (i, &count) in [i32::MAX, 1_000_000, 1, 0, -1].iter().enumerate() {
        let (err, _) = produce_one(
            &mut s,
            9,
            10 + i as i32,
            "count-topic",
            0,
            with_record_count(&real, count),
        );
        b.assert_alive();
        assert!(
            err == 2 || err == 87,
            "batch with 4 records declaring record_count={count} (valid CRC): expected CORRUPT_MESSAGE(2) or INVALID_RECORD(87), got {err}"
        );
        assert_eq!(
            latest_offset(&mut s, 20 + i as i32, "count-topic", 0),
            3,
            "log end offset changed after batch declaring record_count={count}"
        );
    }
    // The log is intact and decodable by a client.
    let parts = fetch(&mut s, 40, "count-topic", &[(0, 0)]);
    assert_eq!(
        value_strings(&decode_records(&parts[0].records)),
        vec!["good-value-0", "good-value-1", "good-value-2"]
    );
}

// ---------------------------------------------------------------------------
// 4. MESSAGE_TOO_LARGE
// ---------------------------------------------------------------------------

#[test]
fn produce_over_message_max_bytes_is_rejected() {
    let b = Broker::start(1, &["message.max.bytes=10000"]);
    let mut s = connect(&b);
    create_topic(&mut s, 1, "big-topic", 1);
    let big = encode_batch(&make_records(1, "big", Some(20_000)));
    assert!(big.len() > 20_000);
    let (err, _) = produce_one(&mut s, 9, 2, "big-topic", 0, big);
    assert_eq!(
        err, 10,
        "20000-byte record with message.max.bytes=10000: expected MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        latest_offset(&mut s, 3, "big-topic", 0),
        0,
        "rejected batch must not be appended"
    );

    // Many small records adding up to > 10000 in one batch is also too large.
    let many = encode_batch(&make_records(40, "many", Some(400)));
    assert!(many.len() > 10_000);
    let (err, _) = produce_one(&mut s, 7, 4, "big-topic", 0, many);
    assert_eq!(
        err, 10,
        "16KB batch of small records: expected MESSAGE_TOO_LARGE"
    );

    // A batch under the limit is accepted.
    let small = encode_batch(&make_records(2, "small", Some(1000)));
    assert!(small.len() < 10_000);
    let (err, base) = produce_one(&mut s, 9, 5, "big-topic", 0, small);
    assert_eq!((err, base), (0, 0));
    assert_eq!(latest_offset(&mut s, 6, "big-topic", 0), 2);
    assert_conn_works(&mut s, "after MESSAGE_TOO_LARGE");
}

// ---------------------------------------------------------------------------
// 5. Unknown topic with auto-create disabled
// ---------------------------------------------------------------------------

#[test]
fn unknown_topic_without_auto_create() {
    let b = Broker::start(1, &["auto.create.topics.enable=false"]);
    let mut s = connect(&b);
    for (i, &ver) in [3i16, 9, 11].iter().enumerate() {
        let (err, _) = produce_one(
            &mut s,
            ver,
            10 + i as i32,
            "no-such-topic",
            0,
            encode_batch(&make_records(1, "x", None)),
        );
        assert_eq!(
            err, 3,
            "Produce v{ver} to unknown topic: expected UNKNOWN_TOPIC_OR_PARTITION"
        );
    }
    for (i, &ver) in [1i16, 4, 9, 12].iter().enumerate() {
        let m = metadata_topic(&mut s, ver, 20 + i as i32, "no-such-topic");
        assert_eq!(m.topics.len(), 1, "Metadata v{ver}: {m:?}");
        assert_eq!(
            m.topics[0].error_code, 3,
            "Metadata v{ver} unknown topic: {m:?}"
        );
    }
    // Still not created (Metadata with allow_auto_topic_creation=true did not create it).
    let m = metadata_topic(&mut s, 12, 30, "no-such-topic");
    assert_eq!(m.topics[0].error_code, 3);

    // An explicitly created topic works; unknown partition of it gives 3 as well.
    create_topic(&mut s, 31, "known-topic", 2);
    let (err, base) = produce_one(
        &mut s,
        9,
        32,
        "known-topic",
        1,
        encode_batch(&make_records(1, "k", None)),
    );
    assert_eq!((err, base), (0, 0));
    let (err, _) = produce_one(
        &mut s,
        9,
        33,
        "known-topic",
        7,
        encode_batch(&make_records(1, "k", None)),
    );
    assert_eq!(err, 3, "Produce to partition 7 of a 2-partition topic");
    let m = metadata_topic(&mut s, 12, 34, "known-topic");
    assert_eq!(m.topics[0].error_code, 0);
    assert_eq!(m.topics[0].partitions.len(), 2);
}

// ---------------------------------------------------------------------------
// 6. Two shards: one request spanning partitions on both shards
// ---------------------------------------------------------------------------

fn value_strings(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default().to_vec()).unwrap())
        .collect()
}

#[test]
fn two_shards_multi_partition_produce_and_fetch() {
    let b = Broker::start(2, &[]);
    let mut s = connect(&b);
    let topic = "sharded";
    create_topic(&mut s, 1, topic, 4);

    // Metadata shows 4 partitions, all led by node 1.
    let m = metadata_topic(&mut s, 12, 2, topic);
    assert_eq!(m.topics[0].error_code, 0);
    assert_eq!(m.topics[0].partitions.len(), 4);
    for p in &m.topics[0].partitions {
        assert_eq!(p.error_code, 0);
        assert_eq!(p.leader_id.0, 1);
    }

    let first_counts = [1usize, 2, 3, 4];
    let second_counts = [5usize, 3, 2, 1];
    let mut expected: Vec<Vec<Record>> = vec![vec![]; 4];

    for (round, counts) in [first_counts, second_counts].iter().enumerate() {
        let mut parts = Vec::new();
        for p in 0..4 {
            let recs = make_records(counts[p], &format!("r{round}-p{p}"), None);
            parts.push((p as i32, encode_batch(&recs)));
            expected[p].extend(recs);
        }
        let req = produce_request(-1, vec![(topic, parts)]);
        let resp: ProduceResponse = roundtrip(&mut s, ApiKey::Produce, 9, 10 + round as i32, &req);
        assert_eq!(resp.responses.len(), 1, "{resp:?}");
        let t = &resp.responses[0];
        assert_eq!(t.name.0.as_str(), topic);
        assert_eq!(t.partition_responses.len(), 4, "{resp:?}");
        let mut seen: Vec<i32> = t.partition_responses.iter().map(|p| p.index).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
        for pr in &t.partition_responses {
            assert_eq!(
                pr.error_code, 0,
                "round {round} partition {}: {resp:?}",
                pr.index
            );
            let want = if round == 0 {
                0
            } else {
                first_counts[pr.index as usize] as i64
            };
            assert_eq!(
                pr.base_offset, want,
                "round {round} partition {} base offset",
                pr.index
            );
        }
    }

    // Fetch all 4 partitions from offset 0 in one request.
    let parts = fetch(&mut s, 20, topic, &[(0, 0), (1, 0), (2, 0), (3, 0)]);
    assert_eq!(parts.len(), 4);
    for (p, pd) in parts.iter().enumerate() {
        assert_eq!(pd.partition_index, p as i32);
        assert_eq!(pd.error_code, 0, "fetch partition {p}");
        let total = (first_counts[p] + second_counts[p]) as i64;
        assert_eq!(pd.high_watermark, total, "partition {p} high watermark");
        let recs = decode_records(&pd.records);
        assert_eq!(recs.len() as i64, total, "partition {p} record count");
        assert_eq!(
            value_strings(&recs),
            value_strings(&expected[p]),
            "partition {p} values"
        );
        let keys: Vec<_> = recs.iter().map(|r| r.key.clone()).collect();
        let want_keys: Vec<_> = expected[p].iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, want_keys, "partition {p} keys");
        let offs: Vec<i64> = recs.iter().map(|r| r.offset).collect();
        assert_eq!(
            offs,
            (0..total).collect::<Vec<_>>(),
            "partition {p} offsets"
        );
        for (r, e) in recs.iter().zip(&expected[p]) {
            assert_eq!(r.timestamp, e.timestamp, "partition {p} timestamp");
        }
        let infos =
            RecordBatchDecoder::decode_batch_info(&mut pd.records.clone().unwrap()).unwrap();
        let bases: Vec<i64> = infos.iter().map(|i| i.min_offset).collect();
        assert_eq!(
            bases,
            vec![0, first_counts[p] as i64],
            "partition {p} batch base offsets"
        );
    }

    // ListOffsets agrees.
    for p in 0..4 {
        let total = (first_counts[p] + second_counts[p]) as i64;
        assert_eq!(latest_offset(&mut s, 30 + p as i32, topic, p as i32), total);
    }
    // Fetch at the log end returns no records, HW right.
    let parts = fetch(&mut s, 40, topic, &[(2, 5)]);
    assert_eq!(parts[0].error_code, 0);
    assert_eq!(parts[0].high_watermark, 5);
    assert!(decode_records(&parts[0].records).is_empty());
}

// ---------------------------------------------------------------------------
// 7. Fetch from the middle of a batch
// ---------------------------------------------------------------------------

#[test]
fn fetch_from_middle_of_batch_returns_whole_batch() {
    let b = Broker::start(1, &[]);
    let mut s = connect(&b);
    let topic = "mid";
    create_topic(&mut s, 1, topic, 1);
    let b1 = make_records(5, "b1", None); // offsets 0..4
    let b2 = make_records(3, "b2", None); // offsets 5..7
    assert_eq!(
        produce_one(&mut s, 9, 2, topic, 0, encode_batch(&b1)),
        (0, 0)
    );
    assert_eq!(
        produce_one(&mut s, 9, 3, topic, 0, encode_batch(&b2)),
        (0, 5)
    );

    for (i, &(off, want_base)) in [(2i64, 0i64), (4, 0), (6, 5), (7, 5)].iter().enumerate() {
        let parts = fetch(&mut s, 10 + i as i32, topic, &[(0, off)]);
        let pd = &parts[0];
        assert_eq!(pd.error_code, 0, "fetch at {off}");
        assert_eq!(pd.high_watermark, 8);
        let raw = pd.records.clone().expect("records present");
        let infos = RecordBatchDecoder::decode_batch_info(&mut raw.clone()).unwrap();
        assert!(!infos.is_empty(), "fetch at {off}: no batches");
        assert_eq!(
            infos[0].min_offset, want_base,
            "fetch at {off}: first batch base offset"
        );
        assert!(infos[0].min_offset <= off);
        let recs = decode_records(&pd.records);
        // The whole containing batch is returned (records before `off` included).
        let want_from = want_base;
        let offs: Vec<i64> = recs.iter().map(|r| r.offset).collect();
        assert_eq!(
            offs,
            (want_from..8).collect::<Vec<_>>(),
            "fetch at {off}: offsets"
        );
        let mut all = b1.clone();
        all.extend(b2.clone());
        assert_eq!(
            value_strings(&recs),
            value_strings(&all[want_from as usize..]),
            "fetch at {off}: values"
        );
    }
}

/// A Fetch v12 with explicit session fields; `parts` are (partition, fetch offset) to send.
fn session_fetch(
    stream: &mut TcpStream,
    corr: i32,
    topic: &str,
    session_id: i32,
    epoch: i32,
    parts: &[(i32, i64)],
    forgotten: &[i32],
) -> FetchResponse {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 50 * 1024 * 1024;
    req.session_id = session_id;
    req.session_epoch = epoch;
    if !parts.is_empty() {
        req.topics = vec![fetch_topic(topic, parts, 1024 * 1024)];
    }
    if !forgotten.is_empty() {
        let mut f = fetch_request::ForgottenTopic::default();
        f.topic = tname(topic);
        f.partitions = forgotten.to_vec();
        req.forgotten_topics_data = vec![f];
    }
    roundtrip(stream, ApiKey::Fetch, 12, corr, &req)
}

fn session_parts(resp: &FetchResponse) -> Vec<(i32, i64, usize)> {
    let mut out: Vec<(i32, i64, usize)> = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.high_watermark, decode_records(&p.records).len()))
        .collect();
    out.sort();
    out
}

/// KIP-227 on the wire: a full fetch with epoch 0 opens a session; incremental fetches name no
/// partitions yet fetch all of the session's and answer only those with news; forgotten
/// partitions leave; a wrong epoch gives INVALID_FETCH_SESSION_EPOCH (71), an unknown session
/// FETCH_SESSION_ID_NOT_FOUND (70), and epoch -1 closes it. Checked on 1 and 2 shards (the
/// partitions' owners differ from the connection's shard).
#[test]
fn incremental_fetch_sessions() {
    for shards in [1usize, 2] {
        let b = Broker::start(shards, &[]);
        let mut s = connect(&b);
        let topic = "sess";
        create_topic(&mut s, 1, topic, 4);
        for p in 0..4 {
            produce_one(&mut s, 9, 10 + p, topic, p, encode_batch(&make_records(2, "a", None)));
        }
        // Open: every partition answered, with its records.
        let r = session_fetch(&mut s, 20, topic, 0, 0, &[(0, 0), (1, 0), (2, 0), (3, 0)], &[]);
        assert_eq!(r.error_code, 0, "{shards} shards: open: {r:?}");
        let id = r.session_id;
        assert_ne!(id, 0, "{shards} shards: a session id is granted");
        assert_eq!(session_parts(&r), vec![(0, 2, 2), (1, 2, 2), (2, 2, 2), (3, 2, 2)]);
        // The client moves its positions (resends all four at offset 2): nothing new anywhere.
        let r = session_fetch(&mut s, 21, topic, id, 1, &[(0, 2), (1, 2), (2, 2), (3, 2)], &[]);
        assert_eq!((r.error_code, r.session_id), (0, id));
        assert_eq!(session_parts(&r), vec![], "{shards} shards: no news, no partitions");
        // New data on partition 2 only: an incremental fetch naming nothing returns just it.
        produce_one(&mut s, 9, 30, topic, 2, encode_batch(&make_records(3, "b", None)));
        let r = session_fetch(&mut s, 22, topic, id, 2, &[], &[]);
        assert_eq!(r.error_code, 0);
        assert_eq!(session_parts(&r), vec![(2, 5, 3)], "{shards} shards: only the partition with news");
        // Forget partition 2, then write to it and to 0: only 0 comes back.
        let r = session_fetch(&mut s, 23, topic, id, 3, &[(2, 5)], &[]);
        assert_eq!((r.error_code, session_parts(&r)), (0, vec![]), "{shards} shards: position moved, no news");
        let r = session_fetch(&mut s, 33, topic, id, 4, &[], &[2]);
        assert_eq!(r.error_code, 0);
        produce_one(&mut s, 9, 31, topic, 2, encode_batch(&make_records(1, "c", None)));
        produce_one(&mut s, 9, 32, topic, 0, encode_batch(&make_records(1, "c", None)));
        let r = session_fetch(&mut s, 24, topic, id, 5, &[], &[]);
        assert_eq!(session_parts(&r), vec![(0, 3, 1)], "{shards} shards: forgotten partition left the session");
        // Wrong epoch, unknown id.
        let r = session_fetch(&mut s, 25, topic, id, 9, &[], &[]);
        assert_eq!(r.error_code, 71, "{shards} shards: wrong epoch");
        let r = session_fetch(&mut s, 26, topic, id.wrapping_add(1), 1, &[], &[]);
        assert_eq!(r.error_code, 70, "{shards} shards: unknown session");
        // The session survives a wrong-epoch request; epoch -1 closes it (answered sessionless).
        let r = session_fetch(&mut s, 27, topic, id, 6, &[], &[]);
        assert_eq!(r.error_code, 0, "{shards} shards: right epoch still works");
        let r = session_fetch(&mut s, 28, topic, id, -1, &[(1, 0)], &[]);
        assert_eq!((r.error_code, r.session_id), (0, 0));
        assert_eq!(session_parts(&r), vec![(1, 2, 2)]);
        let r = session_fetch(&mut s, 29, topic, id, 7, &[], &[]);
        assert_eq!(r.error_code, 70, "{shards} shards: closed session is gone");
    }
}

// ---------------------------------------------------------------------------
// 8. Startup errors
// ---------------------------------------------------------------------------

/// Runs the broker expecting it to exit non-zero within 30s; returns stderr.
fn run_expect_startup_failure(args: &[String]) -> String {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let out_path = dir.path().join("stdout");
    let mut child = Command::new(harness::BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn strand");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "broker did not exit within 30s (args {args:?}); stderr:\n{}\nstdout:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default(),
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        !status.success(),
        "broker exited successfully but should have failed (args {args:?}); stderr:\n{stderr}"
    );
    stderr
}

struct TmpfsMount {
    dir: Option<tempfile::TempDir>,
    mounted: bool,
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if self.mounted {
            if let Some(d) = &self.dir {
                let _ = std::process::Command::new("umount").arg(d.path()).status();
            }
        }
    }
}

fn is_tmpfs(path: &std::path::Path) -> bool {
    std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs")
        .unwrap_or(false)
}

#[test]
fn startup_fails_on_tmpfs_data_dir() {
    // Prefer a private tmpfs mount; fall back to /dev/shm.
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(dir.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let guard;
    let base: std::path::PathBuf;
    let _shm_dir;
    if mounted {
        base = dir.path().to_path_buf();
        guard = TmpfsMount {
            dir: Some(dir),
            mounted: true,
        };
    } else if is_tmpfs(std::path::Path::new("/dev/shm")) {
        let d = tempfile::tempdir_in("/dev/shm").unwrap();
        base = d.path().to_path_buf();
        _shm_dir = d;
        guard = TmpfsMount {
            dir: None,
            mounted: false,
        };
    } else {
        eprintln!("SKIP: cannot mount tmpfs and /dev/shm is not tmpfs");
        return;
    }
    assert!(is_tmpfs(&base), "test setup: {base:?} is not tmpfs");
    let data = base.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let port = harness::free_port();
    let stderr = run_expect_startup_failure(&[
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
        "--shards".into(),
        "1".into(),
    ]);
    assert!(
        stderr.contains("O_DIRECT"),
        "stderr should mention O_DIRECT; got:\n{stderr}"
    );
    drop(guard);
}

#[test]
fn startup_fails_when_port_in_use() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let stderr = run_expect_startup_failure(&[
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--shards".into(),
        "1".into(),
    ]);
    assert!(
        stderr.contains("already in use"),
        "stderr should mention 'already in use'; got:\n{stderr}"
    );
    drop(listener);
}

/// DeleteRecords on the wire: low watermark, -1 (high watermark), past the high watermark
/// (OFFSET_OUT_OF_RANGE) and unknown topic or partition (UNKNOWN_TOPIC_OR_PARTITION), v0 and v2.
#[test]
fn delete_records_answers_low_watermark_and_errors() {
    let b = Broker::start(1, &[]);
    let mut s = connect(&b);
    create_topic(&mut s, 1, "dr-topic", 1);
    let (err, _) = produce_one(&mut s, 9, 2, "dr-topic", 0, encode_batch(&make_records(5, "dr", None)));
    assert_eq!(err, 0);
    let call = |s: &mut TcpStream, version: i16, corr: i32, parts: &[(&str, i32, i64)]| -> Vec<(String, i32, i16, i64)> {
        let mut req = DeleteRecordsRequest::default();
        req.timeout_ms = 10_000;
        for &(t, p, o) in parts {
            let mut dt = delete_records_request::DeleteRecordsTopic::default();
            dt.name = tname(t);
            let mut dp = delete_records_request::DeleteRecordsPartition::default();
            dp.partition_index = p;
            dp.offset = o;
            dt.partitions.push(dp);
            req.topics.push(dt);
        }
        let resp: DeleteRecordsResponse = roundtrip(s, ApiKey::DeleteRecords, version, corr, &req);
        resp.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index, p.error_code, p.low_watermark)))
            .collect()
    };
    let r = call(&mut s, 0, 3, &[("dr-topic", 0, 2), ("no-such", 0, 1), ("dr-topic", 7, 1)]);
    assert_eq!(r, vec![("dr-topic".into(), 0, 0, 2), ("no-such".into(), 0, 3, -1), ("dr-topic".into(), 7, 3, -1)]);
    let r = call(&mut s, 2, 4, &[("dr-topic", 0, 6)]);
    assert_eq!(r, vec![("dr-topic".into(), 0, 1, -1)], "past the high watermark");
    let r = call(&mut s, 1, 5, &[("dr-topic", 0, 1)]);
    assert_eq!(r, vec![("dr-topic".into(), 0, 0, 2)], "an offset below the start leaves it");
    let r = call(&mut s, 2, 6, &[("dr-topic", 0, -1)]);
    assert_eq!(r, vec![("dr-topic".into(), 0, 0, 5)], "-1 deletes up to the high watermark");
    assert_eq!(latest_offset(&mut s, 7, "dr-topic", 0), 5);
}

/// Request bodies are read straight from the socket into their final memory (not zeroed first),
/// with glommio's read only awaiting an empty socket. Frames that arrive in pieces, with pauses
/// inside a body (more and less than the 64 KiB read buffer still to come), and frames sent back
/// to back in one write must come out byte for byte.
#[test]
fn frames_in_pieces_and_back_to_back_are_read_whole() {
    let b = Broker::start(1, &[]);
    let mut s = connect(&b);
    create_topic(&mut s, 1, "pieces", 1);
    // Two produce requests of ~300 KiB each, framed.
    let batches: Vec<Bytes> = (0..2).map(|i| encode_batch(&make_records(300, &format!("p{i}"), Some(1000)))).collect();
    let frames: Vec<Vec<u8>> = batches
        .iter()
        .enumerate()
        .map(|(i, batch)| {
            let mut buf = BytesMut::new();
            encode_header(&mut buf, ApiKey::Produce as i16, 9, 10 + i as i32, ApiKey::Produce.request_header_version(9));
            produce_request(-1, vec![("pieces", vec![(0, batch.clone())])]).encode(&mut buf, 9).unwrap();
            framed(&buf)
        })
        .collect();
    // The first frame in uneven pieces with pauses: cuts inside the length prefix, early in the
    // body, and 40 KiB before its end.
    let f = &frames[0];
    let cuts = [0, 2, 3000, 150_000, f.len() - 40_000, f.len()];
    for w in cuts.windows(2) {
        s.write_all(&f[w[0]..w[1]]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // Then the second frame and an ApiVersions request in one write.
    let mut av = BytesMut::new();
    encode_header(&mut av, ApiKey::ApiVersions as i16, 3, 12, ApiKey::ApiVersions.request_header_version(3));
    api_versions_request().encode(&mut av, 3).unwrap();
    let mut both = frames[1].clone();
    both.extend_from_slice(&framed(&av));
    s.write_all(&both).unwrap();
    for (i, base) in [(0, 0), (1, 300)] {
        let raw = read_response(&mut s);
        let mut rest = decode_response_header(raw, ApiKey::Produce, 9, 10 + i);
        let resp = ProduceResponse::decode(&mut rest, 9).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, base), "produce {i}: {resp:?}");
    }
    let raw = read_response(&mut s);
    let mut rest = decode_response_header(raw, ApiKey::ApiVersions, 3, 12);
    let r = ApiVersionsResponse::decode(&mut rest, 3).unwrap();
    assert_eq!(r.error_code, 0);
    // Every record is there, as sent.
    let mut got = Vec::new();
    let mut next = 0;
    while next < 600 {
        let data = fetch(&mut s, 20 + next as i32, "pieces", &[(0, next)]);
        let recs = decode_records(&data[0].records);
        assert!(!recs.is_empty(), "no records at offset {next}");
        next += recs.len() as i64;
        got.extend(recs);
    }
    let want: Vec<Record> = (0..2).flat_map(|i| make_records(300, &format!("p{i}"), Some(1000))).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!((&g.key, &g.value), (&w.key, &w.value), "record {i}");
    }
    assert_conn_works(&mut s, "after pieces");
}
