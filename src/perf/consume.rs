//! `strand perf consume`: kafka-consumer-perf-test's interface on the native client.
//!
//! Owns the consumer benchmark: where consumption starts (earliest, latest, or a group's
//! committed offsets), the fetch loops, and the Java tool's report rows.
//!
//! Without `--group` the topic's partitions are assigned manually (no coordinator), starting
//! from the earliest offset (`--from-latest`: the latest). With `--group`, a broker that
//! advertises JoinGroup gets a real (single-generation) member: FindCoordinator, JoinGroup,
//! SyncGroup with a range assignment, committed offsets, heartbeats, a final commit and
//! LeaveGroup; a broker without group APIs is consumed by manual assignment instead, and the
//! tool says so on stderr.
//!
//! Each connection runs one fetch loop over its share of the partitions. As soon as a
//! response arrives the next positions are read from the batch headers and the next Fetch is
//! sent, so the broker works on it while this thread parses the records (CRC check only with
//! `check.crcs=true`, as Java's tool disables it). Counts stop at exactly `--messages`.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::client::{self, Codec, Conn, TopicInfo};
use super::{format_java_date, print_metrics, unix_ms, MetricValue};

/// kafka-consumer-perf-test defaults.
pub const DEFAULT_FETCH_SIZE: i32 = 1024 * 1024;
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_REPORTING_INTERVAL_MS: u64 = 5_000;
pub const DEFAULT_CLIENT_ID: &str = "perf-consumer-client";
/// Kafka consumer defaults.
const DEFAULT_FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
const DEFAULT_FETCH_MIN_BYTES: i32 = 1;
const DEFAULT_FETCH_MAX_WAIT_MS: i32 = 500;
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_SESSION_TIMEOUT_MS: i32 = 45_000;
const DEFAULT_REBALANCE_TIMEOUT_MS: i32 = 300_000;
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// How often the main thread checks progress, the timeout and the report interval.
const TICK: Duration = Duration::from_millis(20);
/// Pause before fetching again after a partition error.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Highest Fetch version this tool speaks (v13+ names topics by id).
const MAX_FETCH_VERSION: i16 = 16;
/// How long to keep retrying group coordination.
const GROUP_JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const ATTR_CONTROL: i16 = 0x20;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Broker(s) to bootstrap from (HOST:PORT[,HOST:PORT...]).
    #[arg(long = "bootstrap-server")]
    pub bootstrap_server: Option<String>,
    /// Topic to consume.
    #[arg(long)]
    pub topic: String,
    /// Number of messages to consume.
    #[arg(long)]
    pub messages: u64,
    /// Consumer group (needs group support in the broker, else manual assignment is used).
    #[arg(long)]
    pub group: Option<String>,
    /// Bytes to fetch per partition per request (max.partition.fetch.bytes).
    #[arg(long = "fetch-size", default_value_t = DEFAULT_FETCH_SIZE)]
    pub fetch_size: i32,
    /// Stop after this many milliseconds without new records.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS)]
    pub timeout: u64,
    /// Milliseconds between detailed rows.
    #[arg(long = "reporting-interval", default_value_t = DEFAULT_REPORTING_INTERVAL_MS)]
    pub reporting_interval: u64,
    /// Print a row per reporting interval instead of one summary.
    #[arg(long = "show-detailed-stats")]
    pub show_detailed_stats: bool,
    /// Do not print the header.
    #[arg(long = "hide-header")]
    pub hide_header: bool,
    /// Start from the latest offset when there is no committed one.
    #[arg(long = "from-latest")]
    pub from_latest: bool,
    /// Consumer properties file (bootstrap.servers, client.id, fetch.*, check.crcs).
    #[arg(long = "consumer.config", value_name = "CONFIG-FILE")]
    pub consumer_config: Option<PathBuf>,
    /// Print client metrics at the end.
    #[arg(long = "print-metrics")]
    pub print_metrics: bool,
    /// (strand) Connections per broker; partitions are spread over them.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

/// Consumer properties this tool honours.
#[derive(Debug, Clone)]
struct ConsumerSettings {
    servers: Vec<String>,
    client_id: String,
    fetch_max_bytes: i32,
    fetch_min_bytes: i32,
    fetch_max_wait_ms: i32,
    partition_max_bytes: i32,
    check_crcs: bool,
    request_timeout: Duration,
}

fn settings(a: &ConsumeArgs) -> Result<ConsumerSettings> {
    let mut props: BTreeMap<String, String> = match &a.consumer_config {
        Some(f) => super::read_properties(f)?,
        None => BTreeMap::new(),
    };
    if let Some(b) = &a.bootstrap_server {
        props.insert("bootstrap.servers".into(), b.clone());
    }
    let num = |k: &str, d: i64| -> Result<i64> {
        match props.get(k) {
            Some(v) => v.parse().map_err(|_| anyhow!("invalid value {v:?} for {k}")),
            None => Ok(d),
        }
    };
    let s = ConsumerSettings {
        servers: props.get("bootstrap.servers").map(|s| client::parse_servers(s)).unwrap_or_default(),
        client_id: props.get("client.id").cloned().unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string()),
        fetch_max_bytes: num("fetch.max.bytes", DEFAULT_FETCH_MAX_BYTES as i64)? as i32,
        fetch_min_bytes: num("fetch.min.bytes", DEFAULT_FETCH_MIN_BYTES as i64)? as i32,
        fetch_max_wait_ms: num("fetch.max.wait.ms", DEFAULT_FETCH_MAX_WAIT_MS as i64)? as i32,
        partition_max_bytes: a.fetch_size,
        check_crcs: props.get("check.crcs").map(|v| v == "true").unwrap_or(false),
        request_timeout: Duration::from_millis(num("request.timeout.ms", DEFAULT_REQUEST_TIMEOUT_MS as i64)?.max(1) as u64),
    };
    if s.servers.is_empty() {
        bail!("--bootstrap-server is required (or bootstrap.servers in --consumer.config)");
    }
    if a.fetch_size <= 0 {
        bail!("--fetch-size must be positive");
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Record parsing.

/// Reads a zigzag varint at `*at`.
#[inline]
fn varint(buf: &[u8], at: &mut usize) -> Result<i64> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*at).ok_or_else(|| anyhow!("record truncated"))?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            bail!("varint too long");
        }
    }
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// What [`count_records`] found.
#[derive(Debug, PartialEq, Eq)]
struct Counted {
    records: u64,
    bytes: u64,
    /// Offset of the last record counted (-1 when none).
    last_offset: i64,
}

/// Walks raw records; for each with offset >= `from` (up to `limit` of them) adds its key and
/// value sizes.
fn count_records(raw: &[u8], base_offset: i64, from: i64, limit: u64) -> Result<Counted> {
    let mut c = Counted { records: 0, bytes: 0, last_offset: -1 };
    let mut at = 0usize;
    while at < raw.len() && c.records < limit {
        let len = varint(raw, &mut at)?;
        if len < 0 || at + len as usize > raw.len() {
            bail!("record length {len} is invalid");
        }
        let end = at + len as usize;
        let mut p = at + 1; // attributes
        let _ts = varint(raw, &mut p)?;
        let delta = varint(raw, &mut p)?;
        let key_len = varint(raw, &mut p)?;
        if key_len > 0 {
            p += key_len as usize;
        }
        let value_len = varint(raw, &mut p)?;
        if p > end || (value_len > 0 && p + value_len as usize > end) {
            bail!("record fields overrun the record");
        }
        if base_offset + delta >= from {
            c.records += 1;
            c.bytes += key_len.max(0) as u64 + value_len.max(0) as u64;
            c.last_offset = base_offset + delta;
        }
        at = end;
    }
    Ok(c)
}

/// A complete batch in a fetch response.
struct BatchView {
    base_offset: i64,
    last_offset: i64,
    data: Bytes,
}

/// Splits a partition's records into complete v2 batches (a trailing partial batch is dropped).
fn split_batches(records: &Bytes) -> Vec<BatchView> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while records.len() - at >= client::BATCH_HEADER_LEN {
        let b = &records[at..];
        let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
        let len = i32::from_be_bytes(b[8..12].try_into().unwrap());
        if len < (client::BATCH_HEADER_LEN - 12) as i32 {
            break;
        }
        let size = len as usize + 12;
        if size > b.len() {
            break;
        }
        let delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        out.push(BatchView { base_offset: base, last_offset: base + delta as i64, data: records.slice(at..at + size) });
        at += size;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Shared state.

struct Shared {
    remaining: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    /// ms since start when records last arrived.
    last_consumed_ms: AtomicU64,
    stop: AtomicBool,
    fatal: std::sync::Mutex<Option<String>>,
    start: Instant,
    settings: ConsumerSettings,
    topic: TopicInfo,
    from_latest: bool,
    // metrics
    fetches: AtomicU64,
    fetch_latency_us: AtomicU64,
    fetch_bytes: AtomicU64,
}

impl Shared {
    /// Takes up to `want` messages from the budget.
    fn reserve(&self, want: u64) -> u64 {
        let mut cur = self.remaining.load(Ordering::Relaxed);
        loop {
            let take = want.min(cur);
            if take == 0 {
                return 0;
            }
            match self.remaining.compare_exchange_weak(cur, cur - take, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(v) => cur = v,
            }
        }
    }

    fn fail(&self, msg: String) {
        let mut f = self.fatal.lock().unwrap();
        if f.is_none() {
            *f = Some(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Positions of a partition set, resolved with ListOffsets (`-2` earliest, `-1` latest).
fn list_offsets(conn: &mut Conn, topic: &str, partitions: &[i32], timestamp: i64) -> Result<Vec<(i32, i64)>> {
    let version = conn.version::<ListOffsetsRequest>(9)?;
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(partitions.iter().map(|&p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(timestamp)).collect())]);
    let resp = conn.call(&req, version)?;
    let mut out = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!("ListOffsets for {topic}-{} failed: {}", p.partition_index, client::error_name(p.error_code));
            }
            out.push((p.partition_index, p.offset));
        }
    }
    Ok(out)
}

/// Final state of one fetch loop.
struct LoopResult {
    /// Per partition, the offset after the last record counted (what a group commits).
    consumed: Vec<(i32, i64)>,
}

/// One connection's fetch loop over `parts` (partition, position).
fn fetch_loop(sh: Arc<Shared>, mut conn: Conn, mut parts: Vec<(i32, i64)>) -> LoopResult {
    let mut consumed = parts.clone();
    if let Err(e) = fetch_loop_inner(&sh, &mut conn, &mut parts, &mut consumed) {
        if !sh.stop.load(Ordering::Relaxed) {
            sh.fail(format!("fetching from {} failed: {e:#}", conn.addr));
        }
    }
    LoopResult { consumed }
}

/// `parts` holds the fetch positions (ahead of parsing), `consumed` what was counted.
fn fetch_loop_inner(sh: &Shared, conn: &mut Conn, parts: &mut [(i32, i64)], consumed: &mut [(i32, i64)]) -> Result<()> {
    let s = &sh.settings;
    let cap = if sh.topic.id.is_nil() { 12 } else { MAX_FETCH_VERSION };
    let version = conn.version::<FetchRequest>(cap)?;
    let topic_name = TopicName(StrBytes::from_string(sh.topic.name.clone()));
    let build = |parts: &[(i32, i64)]| {
        let t = FetchTopic::default().with_partitions(
            parts
                .iter()
                .map(|&(p, off)| FetchPartition::default().with_partition(p).with_fetch_offset(off).with_partition_max_bytes(s.partition_max_bytes))
                .collect(),
        );
        let t = if version >= 13 { t.with_topic_id(sh.topic.id) } else { t.with_topic(topic_name.clone()) };
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(s.fetch_max_wait_ms)
            .with_min_bytes(s.fetch_min_bytes)
            .with_max_bytes(s.fetch_max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![t])
    };
    let mut warned: BTreeMap<i16, bool> = BTreeMap::new();
    let mut pending: Option<(i32, Instant)> = Some((conn.send(&build(parts), version)?, Instant::now()));
    while !sh.stop.load(Ordering::Relaxed) {
        let Some((corr, sent)) = pending.take() else { break };
        let resp = conn.recv::<FetchRequest>(version, corr)?;
        sh.fetches.fetch_add(1, Ordering::Relaxed);
        sh.fetch_latency_us.fetch_add(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
        if resp.error_code != 0 {
            bail!("Fetch failed: {}", client::error_name(resp.error_code));
        }
        // Next positions from the batch headers, then the next request goes out at once.
        let mut work: Vec<(usize, i64, Vec<BatchView>)> = Vec::new();
        let mut errors: Vec<(i32, i16)> = Vec::new();
        for t in &resp.responses {
            for p in &t.partitions {
                let Some(slot) = parts.iter().position(|x| x.0 == p.partition_index) else { continue };
                if p.error_code != 0 {
                    errors.push((p.partition_index, p.error_code));
                    continue;
                }
                let Some(records) = &p.records else { continue };
                sh.fetch_bytes.fetch_add(records.len() as u64, Ordering::Relaxed);
                let batches = split_batches(records);
                if let Some(last) = batches.last() {
                    let from = parts[slot].1;
                    parts[slot].1 = parts[slot].1.max(last.last_offset + 1);
                    work.push((slot, from, batches));
                }
            }
        }
        if errors.is_empty() && !sh.stop.load(Ordering::Relaxed) {
            pending = Some((conn.send(&build(parts), version)?, Instant::now()));
        }
        // Parse and count.
        let mut got = 0u64;
        for (slot, from, batches) in work {
            for b in batches {
                if sh.stop.load(Ordering::Relaxed) && sh.remaining.load(Ordering::Relaxed) == 0 {
                    break;
                }
                let data = &b.data;
                if data[16] != 2 {
                    continue; // legacy message sets are not counted
                }
                let attributes = i16::from_be_bytes([data[21], data[22]]);
                if attributes & ATTR_CONTROL != 0 || b.last_offset < from {
                    consumed[slot].1 = consumed[slot].1.max(b.last_offset + 1);
                    continue;
                }
                if s.check_crcs {
                    let stored = u32::from_be_bytes(data[client::BATCH_CRC_OFFSET..client::BATCH_CRC_OFFSET + 4].try_into().unwrap());
                    if crc32c::crc32c(&data[client::BATCH_ATTRIBUTES_OFFSET..]) != stored {
                        bail!("CRC mismatch in the batch at offset {} of {}", b.base_offset, sh.topic.name);
                    }
                }
                let count = i32::from_be_bytes(data[57..61].try_into().unwrap()).max(0) as u64;
                let granted = sh.reserve(count);
                if granted == 0 {
                    sh.stop.store(true, Ordering::SeqCst);
                    break;
                }
                let codec = Codec::from_attributes(attributes)?;
                let body = data.slice(client::BATCH_HEADER_LEN..);
                let c = codec.decompress(body, |raw| count_records(raw, b.base_offset, from, granted))?;
                let (n, bytes) = (c.records, c.bytes);
                if n < granted {
                    // The batch had fewer records past `from` than its count: all were taken.
                    sh.remaining.fetch_add(granted - n, Ordering::AcqRel);
                    consumed[slot].1 = consumed[slot].1.max(b.last_offset + 1);
                } else if granted < count {
                    consumed[slot].1 = consumed[slot].1.max(c.last_offset + 1);
                } else {
                    consumed[slot].1 = consumed[slot].1.max(b.last_offset + 1);
                }
                got += n;
                sh.messages.fetch_add(n, Ordering::Relaxed);
                sh.bytes.fetch_add(bytes, Ordering::Relaxed);
                if sh.remaining.load(Ordering::Relaxed) == 0 {
                    sh.stop.store(true, Ordering::SeqCst);
                }
            }
        }
        if got > 0 {
            sh.last_consumed_ms.fetch_max(sh.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        if !errors.is_empty() {
            for (p, code) in errors {
                if !warned.insert(code, true).unwrap_or(false) {
                    eprintln!("warning: fetching {}-{p}: {}", sh.topic.name, client::error_name(code));
                }
                if code == OFFSET_OUT_OF_RANGE {
                    let ts = if sh.from_latest { LATEST } else { EARLIEST };
                    for (pi, off) in list_offsets(conn, &sh.topic.name, &[p], ts)? {
                        if let Some(i) = parts.iter().position(|x| x.0 == pi) {
                            parts[i].1 = off;
                            consumed[i].1 = off;
                        }
                    }
                }
            }
            std::thread::sleep(ERROR_BACKOFF);
            if !sh.stop.load(Ordering::Relaxed) {
                pending = Some((conn.send(&build(parts), version)?, Instant::now()));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Consumer group membership (only with --group and a broker that has group APIs).

mod group {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::{ConsumerProtocolAssignment, TopicPartition as AssignedTopic};
    use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
    use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
    use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
    use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
    use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
    use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
    use kafka_protocol::messages::GroupId;

    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    const NOT_COORDINATOR: i16 = 16;
    const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    const REBALANCE_IN_PROGRESS: i16 = 27;
    const MEMBER_ID_REQUIRED: i16 = 79;
    const UNKNOWN_MEMBER_ID: i16 = 25;
    const PROTOCOL: &str = "range";

    /// Whether the broker offers the classic group protocol.
    pub fn supported(conn: &Conn) -> bool {
        [ApiKey::FindCoordinator, ApiKey::JoinGroup, ApiKey::SyncGroup, ApiKey::Heartbeat].iter().all(|k| conn.apis.supports(*k))
    }

    pub struct Member {
        pub conn: Conn,
        pub group: String,
        pub member_id: String,
        pub generation: i32,
    }

    fn encode_versioned<T: Encodable>(v: i16, m: &T) -> Result<Bytes> {
        let mut b = BytesMut::new();
        b.put_i16(v);
        m.encode(&mut b, v)?;
        Ok(b.freeze())
    }

    fn decode_versioned<T: Decodable>(mut b: Bytes) -> Result<T> {
        if b.len() < 2 {
            bail!("empty group protocol payload");
        }
        let v = b.get_i16().min(3);
        T::decode(&mut b, v)
    }

    fn find_coordinator(boot: &mut Conn, group: &str, client_id: &str) -> Result<Conn> {
        let version = boot.version::<FindCoordinatorRequest>(4)?;
        let deadline = Instant::now() + GROUP_JOIN_TIMEOUT;
        loop {
            let mut req = FindCoordinatorRequest::default().with_key_type(0);
            if version >= 4 {
                req = req.with_coordinator_keys(vec![StrBytes::from_string(group.to_string())]);
            } else {
                req = req.with_key(StrBytes::from_string(group.to_string()));
            }
            let resp = boot.call(&req, version)?;
            let (code, host, port) = if version >= 4 {
                let c = resp.coordinators.first().ok_or_else(|| anyhow!("FindCoordinator returned no coordinator"))?;
                (c.error_code, c.host.to_string(), c.port)
            } else {
                (resp.error_code, resp.host.to_string(), resp.port)
            };
            if code == 0 {
                return Conn::connect(&format!("{host}:{port}"), client_id);
            }
            if !matches!(code, COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR | COORDINATOR_LOAD_IN_PROGRESS) || Instant::now() >= deadline {
                bail!("FindCoordinator for group {group} failed: {}", client::error_name(code));
            }
            std::thread::sleep(ERROR_BACKOFF);
        }
    }

    /// Joins `group` for `topic` and returns the member and its assigned partitions.
    pub fn join(boot: &mut Conn, group: &str, client_id: &str, topic: &TopicInfo) -> Result<(Member, Vec<i32>)> {
        let mut conn = find_coordinator(boot, group, client_id)?;
        let jv = conn.version::<JoinGroupRequest>(7)?;
        let sv = conn.version::<SyncGroupRequest>(5)?;
        let subscription = encode_versioned(0, &ConsumerProtocolSubscription::default().with_topics(vec![StrBytes::from_string(topic.name.clone())]))?;
        let deadline = Instant::now() + GROUP_JOIN_TIMEOUT;
        let mut member_id = String::new();
        loop {
            if Instant::now() >= deadline {
                bail!("could not join group {group} within {GROUP_JOIN_TIMEOUT:?}");
            }
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_session_timeout_ms(DEFAULT_SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(DEFAULT_REBALANCE_TIMEOUT_MS)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(StrBytes::from_static_str(PROTOCOL)).with_metadata(subscription.clone())]);
            let resp = conn.call(&req, jv)?;
            match resp.error_code {
                0 => {}
                MEMBER_ID_REQUIRED => {
                    member_id = resp.member_id.to_string();
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    member_id.clear();
                    continue;
                }
                REBALANCE_IN_PROGRESS | COORDINATOR_LOAD_IN_PROGRESS => {
                    std::thread::sleep(ERROR_BACKOFF);
                    continue;
                }
                c => bail!("JoinGroup {group} failed: {}", client::error_name(c)),
            }
            member_id = resp.member_id.to_string();
            let generation = resp.generation_id;
            let mut assignments = Vec::new();
            if resp.leader == resp.member_id {
                // Range assignment of our topic over the members subscribed to it.
                let mut members: Vec<String> = Vec::new();
                for m in &resp.members {
                    let sub: ConsumerProtocolSubscription = decode_versioned(m.metadata.clone())?;
                    if sub.topics.iter().any(|t| t.as_str() == topic.name) {
                        members.push(m.member_id.to_string());
                    }
                }
                members.sort();
                let parts: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
                let per = parts.len() / members.len().max(1);
                let extra = parts.len() % members.len().max(1);
                let mut at = 0;
                for (i, m) in members.iter().enumerate() {
                    let n = per + usize::from(i < extra);
                    let mine = parts[at..at + n].to_vec();
                    at += n;
                    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![AssignedTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                        .with_partitions(mine)]);
                    assignments.push(SyncGroupRequestAssignment::default().with_member_id(StrBytes::from_string(m.clone())).with_assignment(encode_versioned(0, &a)?));
                }
            }
            let req = SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_generation_id(generation)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str(PROTOCOL)))
                .with_assignments(assignments);
            let resp = conn.call(&req, sv)?;
            match resp.error_code {
                0 => {}
                REBALANCE_IN_PROGRESS => continue,
                UNKNOWN_MEMBER_ID => {
                    member_id.clear();
                    continue;
                }
                c => bail!("SyncGroup {group} failed: {}", client::error_name(c)),
            }
            let mut mine = Vec::new();
            if !resp.assignment.is_empty() {
                let a: ConsumerProtocolAssignment = decode_versioned(resp.assignment.clone())?;
                for t in a.assigned_partitions {
                    if t.topic.0.as_str() == topic.name {
                        mine.extend(t.partitions);
                    }
                }
            }
            mine.sort_unstable();
            return Ok((Member { conn, group: group.to_string(), member_id, generation }, mine));
        }
    }

    impl Member {
        fn group_id(&self) -> GroupId {
            GroupId(StrBytes::from_string(self.group.clone()))
        }

        /// Committed offsets of `partitions` (None where there is none).
        pub fn committed(&mut self, topic: &str, partitions: &[i32]) -> Result<Vec<(i32, Option<i64>)>> {
            let Ok(version) = self.conn.version::<OffsetFetchRequest>(7) else {
                return Ok(partitions.iter().map(|&p| (p, None)).collect());
            };
            let req = OffsetFetchRequest::default().with_group_id(self.group_id()).with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(partitions.to_vec())]));
            let resp = self.conn.call(&req, version)?;
            if resp.error_code != 0 {
                bail!("OffsetFetch failed: {}", client::error_name(resp.error_code));
            }
            let mut out = Vec::new();
            for t in &resp.topics {
                for p in &t.partitions {
                    out.push((p.partition_index, (p.error_code == 0 && p.committed_offset >= 0).then_some(p.committed_offset)));
                }
            }
            Ok(out)
        }

        pub fn heartbeat(&mut self) -> Result<i16> {
            let version = self.conn.version::<HeartbeatRequest>(4)?;
            let req = HeartbeatRequest::default()
                .with_group_id(self.group_id())
                .with_generation_id(self.generation)
                .with_member_id(StrBytes::from_string(self.member_id.clone()));
            Ok(self.conn.call(&req, version)?.error_code)
        }

        pub fn commit(&mut self, topic: &str, positions: &[(i32, i64)]) -> Result<()> {
            let Ok(version) = self.conn.version::<OffsetCommitRequest>(8) else { return Ok(()) };
            let req = OffsetCommitRequest::default()
                .with_group_id(self.group_id())
                .with_generation_id_or_member_epoch(self.generation)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_retention_time_ms(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(
                    positions
                        .iter()
                        .map(|&(p, off)| OffsetCommitRequestPartition::default().with_partition_index(p).with_committed_offset(off).with_committed_leader_epoch(-1))
                        .collect(),
                )]);
            let resp = self.conn.call(&req, version)?;
            for t in &resp.topics {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        bail!("OffsetCommit {topic}-{} failed: {}", p.partition_index, client::error_name(p.error_code));
                    }
                }
            }
            Ok(())
        }

        pub fn leave(&mut self) -> Result<()> {
            let Ok(version) = self.conn.version::<LeaveGroupRequest>(5) else { return Ok(()) };
            let mut req = LeaveGroupRequest::default().with_group_id(self.group_id());
            if version >= 3 {
                req = req.with_members(vec![MemberIdentity::default().with_member_id(StrBytes::from_string(self.member_id.clone()))]);
            } else {
                req = req.with_member_id(StrBytes::from_string(self.member_id.clone()));
            }
            let _ = self.conn.call(&req, version)?;
            Ok(())
        }
    }
}

/// Heartbeats until told to stop, then commits the final positions and leaves the group.
fn run_member(mut m: group::Member, topic: String, stop: mpsc::Receiver<Vec<(i32, i64)>>) {
    let mut warned = false;
    loop {
        match stop.recv_timeout(DEFAULT_HEARTBEAT_INTERVAL) {
            Ok(positions) => {
                if let Err(e) = m.commit(&topic, &positions) {
                    eprintln!("warning: committing offsets failed: {e:#}");
                }
                if let Err(e) = m.leave() {
                    eprintln!("warning: leaving the group failed: {e:#}");
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => match m.heartbeat() {
                Ok(0) => {}
                Ok(code) if !warned => {
                    warned = true;
                    eprintln!("warning: group heartbeat answered {}; keeping the current assignment", client::error_name(code));
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("warning: group heartbeat failed: {e:#}");
                    return;
                }
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn header(detailed: bool) -> String {
    let tail = ", rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec";
    if detailed {
        format!("time, threadId, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec{tail}")
    } else {
        format!("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec{tail}")
    }
}

/// `%.4f` as Java prints it (Infinity and NaN spelled out).
fn f4(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        format!("{x:.4}")
    }
}

/// The summary row (Java's final printf).
fn summary_row(start_ms: i64, end_ms: i64, bytes: u64, messages: u64, join_ms: u64) -> String {
    let elapsed_sec = (end_ms - start_ms) as f64 / 1000.0;
    let fetch_ms = (end_ms - start_ms) - join_ms as i64;
    let mb = bytes as f64 / (1024.0 * 1024.0);
    format!(
        "{}, {}, {}, {}, {}, {}, {}, {}, {}, {}",
        format_java_date(start_ms),
        format_java_date(end_ms),
        f4(mb),
        f4(mb / elapsed_sec),
        messages,
        f4(messages as f64 / elapsed_sec),
        join_ms,
        fetch_ms,
        f4(mb / (fetch_ms as f64 / 1000.0)),
        f4(messages as f64 / (fetch_ms as f64 / 1000.0))
    )
}

/// A detailed-stats row (Java's printConsumerProgress with thread id 0).
fn progress_row(bytes: u64, last_bytes: u64, messages: u64, last_messages: u64, start_ms: i64, end_ms: i64, join_ms: u64) -> String {
    let elapsed_ms = (end_ms - start_ms) as f64;
    let total_mb = bytes as f64 / (1024.0 * 1024.0);
    let interval_mb = (bytes - last_bytes) as f64 / (1024.0 * 1024.0);
    let interval_msgs = messages - last_messages;
    let fetch_ms = (end_ms - start_ms) - join_ms as i64;
    let (fmb, fmsg) = if fetch_ms <= 0 { (0.0, 0.0) } else { (1000.0 * interval_mb / fetch_ms as f64, 1000.0 * interval_msgs as f64 / fetch_ms as f64) };
    format!(
        "{}, 0, {}, {}, {}, {}, {}, {}, {}, {}",
        format_java_date(end_ms),
        f4(total_mb),
        f4(1000.0 * interval_mb / elapsed_ms),
        messages,
        f4(interval_msgs as f64 / elapsed_ms * 1000.0),
        join_ms,
        fetch_ms,
        f4(fmb),
        f4(fmsg)
    )
}

pub fn run(a: ConsumeArgs) -> Result<()> {
    let s = settings(&a)?;
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !a.hide_header {
        println!("{}", header(a.show_detailed_stats));
    }
    let start_ms = unix_ms();
    let start = Instant::now();
    let (mut boot, topic) = client::discover(&s.servers, &s.client_id, &a.topic, true)?;
    let reset = if a.from_latest { LATEST } else { EARLIEST };

    // Assignment and start positions.
    let mut member = None;
    let all: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
    let mut assigned = all.clone();
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    if let Some(g) = &a.group {
        if group::supported(&boot) {
            let (mut m, mine) = group::join(&mut boot, g, &s.client_id, &topic)?;
            for (p, off) in m.committed(&topic.name, &mine)? {
                if let Some(off) = off {
                    committed.insert(p, off);
                }
            }
            assigned = mine;
            member = Some(m);
        } else {
            eprintln!(
                "The broker at {} does not support consumer groups (no JoinGroup); consuming without group {g:?}: \
                 all partitions of {} assigned manually, starting from the {} offset, no offsets committed.",
                boot.addr,
                topic.name,
                if a.from_latest { "latest" } else { "earliest" }
            );
        }
    }
    let join_ms = if member.is_some() { start.elapsed().as_millis() as u64 } else { 0 };

    let sh = Arc::new(Shared {
        remaining: AtomicU64::new(a.messages),
        messages: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        last_consumed_ms: AtomicU64::new(start.elapsed().as_millis() as u64),
        stop: AtomicBool::new(a.messages == 0),
        fatal: std::sync::Mutex::new(None),
        start,
        settings: s.clone(),
        topic: topic.clone(),
        from_latest: a.from_latest,
        fetches: AtomicU64::new(0),
        fetch_latency_us: AtomicU64::new(0),
        fetch_bytes: AtomicU64::new(0),
    });

    // Fetch loops: `--connections` per leader, partitions spread over them.
    let mut handles = Vec::new();
    let mut sockets: Vec<TcpStream> = Vec::new();
    for node in topic.leaders() {
        let addr = topic.broker_addr(node).expect("leader listed").to_string();
        let parts: Vec<i32> = topic.partitions.iter().filter(|p| p.leader == node && assigned.contains(&p.index)).map(|p| p.index).collect();
        if parts.is_empty() {
            continue;
        }
        let n = a.connections.min(parts.len());
        for c in 0..n {
            let mine: Vec<i32> = parts.iter().enumerate().filter(|(i, _)| i % n == c).map(|(_, p)| *p).collect();
            let mut conn = Conn::connect(&addr, &s.client_id)?;
            let missing: Vec<i32> = mine.iter().copied().filter(|p| !committed.contains_key(p)).collect();
            let mut positions: Vec<(i32, i64)> = mine.iter().filter_map(|p| committed.get(p).map(|o| (*p, *o))).collect();
            if !missing.is_empty() {
                positions.extend(list_offsets(&mut conn, &topic.name, &missing, reset)?);
            }
            conn.set_timeouts(Some(s.request_timeout + Duration::from_millis(s.fetch_max_wait_ms.max(0) as u64)))?;
            sockets.push(conn.handle()?);
            let sh2 = sh.clone();
            handles.push(std::thread::Builder::new().name(format!("perf-fetch-{c}")).spawn(move || fetch_loop(sh2, conn, positions)).context("spawn fetcher")?);
        }
    }
    drop(boot);
    let (member_tx, member_handle) = match member {
        Some(m) => {
            let (tx, rx) = mpsc::channel();
            let t = topic.name.clone();
            (Some(tx), Some(std::thread::spawn(move || run_member(m, t, rx))))
        }
        None => (None, None),
    };

    // Progress, timeout and detailed rows.
    let interval = Duration::from_millis(a.reporting_interval);
    // As in Java's tool, the first interval starts before the group join and includes it.
    let mut last_report = start;
    let mut last_report_ms = start_ms;
    let (mut last_msgs, mut last_bytes) = (0u64, 0u64);
    let mut first_row = true;
    let mut timed_out = false;
    loop {
        if sh.stop.load(Ordering::Relaxed) || handles.iter().all(|h| h.is_finished()) {
            break;
        }
        std::thread::sleep(TICK);
        let now_rel = sh.start.elapsed().as_millis() as u64;
        if now_rel.saturating_sub(sh.last_consumed_ms.load(Ordering::Relaxed)) > a.timeout {
            timed_out = true;
            break;
        }
        if a.show_detailed_stats && last_report.elapsed() >= interval {
            let msgs = sh.messages.load(Ordering::Relaxed);
            if msgs > last_msgs {
                let bytes = sh.bytes.load(Ordering::Relaxed);
                let now_ms = unix_ms();
                println!("{}", progress_row(bytes, last_bytes, msgs, last_msgs, last_report_ms, now_ms, if first_row { join_ms } else { 0 }));
                first_row = false;
                last_report = Instant::now();
                last_report_ms = now_ms;
                last_msgs = msgs;
                last_bytes = bytes;
            }
        }
    }
    let end_ms = unix_ms();
    sh.stop.store(true, Ordering::SeqCst);
    for sock in &sockets {
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
    let mut positions = Vec::new();
    for h in handles {
        let r = h.join().map_err(|_| anyhow!("a fetch thread panicked"))?;
        positions.extend(r.consumed);
    }
    if let Some(tx) = member_tx {
        let _ = tx.send(positions.clone());
    }
    if let Some(h) = member_handle {
        let _ = h.join();
    }
    if let Some(msg) = sh.fatal.lock().unwrap().take() {
        bail!("{msg}");
    }
    let messages = sh.messages.load(Ordering::Relaxed);
    let bytes = sh.bytes.load(Ordering::Relaxed);
    if messages < a.messages {
        let _ = timed_out;
        println!(
            "WARNING: Exiting before consuming the expected number of messages: timeout ({} ms) exceeded. You can use the --timeout option to increase the timeout.",
            a.timeout
        );
    }
    if !a.show_detailed_stats {
        println!("{}", summary_row(start_ms, end_ms, bytes, messages, join_ms));
    }
    if a.print_metrics {
        let secs = ((end_ms - start_ms) as f64 / 1000.0).max(1e-9);
        let fetches = sh.fetches.load(Ordering::Relaxed);
        let tag = format!("{{client-id={}}}", s.client_id);
        let m = |name: &str, v: f64| (format!("consumer-fetch-manager-metrics:{name}:{tag}"), MetricValue::Float(v));
        let per = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let wire = sh.fetch_bytes.load(Ordering::Relaxed);
        let metrics = vec![
            m("bytes-consumed-rate", bytes as f64 / secs),
            m("bytes-consumed-total", bytes as f64),
            m("fetch-latency-avg", per(sh.fetch_latency_us.load(Ordering::Relaxed), fetches) / 1000.0),
            m("fetch-rate", fetches as f64 / secs),
            m("fetch-size-avg", per(wire, fetches)),
            m("fetch-total", fetches as f64),
            m("records-consumed-rate", messages as f64 / secs),
            m("records-consumed-total", messages as f64),
            m("records-per-request-avg", per(messages, fetches)),
        ];
        print_metrics(&metrics);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::client::{write_batch, BatchSpec};

    #[test]
    fn counts_records_of_built_batches() {
        let arena = b"0123456789abcdef".to_vec();
        let values: Vec<(usize, usize)> = (0..50).map(|i| (0, 1 + i % 16)).collect();
        for codec in [Codec::None, Codec::Gzip, Codec::Lz4, Codec::Snappy, Codec::Zstd] {
            let mut buf = BytesMut::new();
            let mut scratch = BytesMut::new();
            let spec = BatchSpec { arena: &arena, values: &values, timestamp_ms: 1, codec, producer: None, base_sequence: -1 };
            write_batch(&mut buf, &spec, &mut scratch).unwrap();
            // Pretend the broker assigned base offset 100.
            buf[0..8].copy_from_slice(&100i64.to_be_bytes());
            let mut two = buf.clone();
            two.extend_from_slice(&buf);
            two.extend_from_slice(&buf[..30]); // a partial batch at the end
            let batches = split_batches(&two.freeze());
            assert_eq!(batches.len(), 2);
            assert_eq!(batches[0].last_offset, 149);
            let want_bytes: u64 = values.iter().map(|v| v.1 as u64).sum();
            let body = batches[0].data.slice(client::BATCH_HEADER_LEN..);
            let c = codec.decompress(body.clone(), |raw| count_records(raw, 100, 0, u64::MAX)).unwrap();
            assert_eq!(c, Counted { records: 50, bytes: want_bytes, last_offset: 149 });
            let c = codec.decompress(body.clone(), |raw| count_records(raw, 100, 140, u64::MAX)).unwrap();
            assert_eq!((c.records, c.last_offset), (10, 149));
            let c = codec.decompress(body, |raw| count_records(raw, 100, 0, 7)).unwrap();
            assert_eq!((c.records, c.last_offset), (7, 106));
        }
    }

    #[test]
    fn rows_have_java_shape() {
        let r = summary_row(1_700_000_000_000, 1_700_000_002_000, 2 * 1024 * 1024, 20000, 0);
        let parts: Vec<&str> = r.split(", ").collect();
        assert_eq!(parts.len(), 10);
        assert_eq!(parts[2], "2.0000");
        assert_eq!(parts[3], "1.0000");
        assert_eq!(parts[4], "20000");
        assert_eq!(parts[5], "10000.0000");
        assert_eq!(parts[7], "2000");
        assert_eq!(header(false).split(", ").count(), 10);
    }
}
