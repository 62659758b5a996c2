//! Consumer-group integration tests for Strand (issue 3).
//!
//! * librdkafka (`rdkafka` crate) consumers in a group: range and
//!   cooperative-sticky assignment of a 6-partition topic over 3 consumers,
//!   exactly-once consumption across the group, incremental (cooperative)
//!   rebalancing when a third member joins.
//! * Commit / close / resume exactly at the committed offset, then a kill -9
//!   restart of the broker keeps the committed offsets.
//! * Error paths of the classic group protocol with raw kafka-protocol
//!   requests over a blocking `TcpStream` (also with `--shards 2`, so groups
//!   live on both coordinator shards and requests cross shards).
//!
//! The broker harness is `tests/common/mod.rs`.

#![allow(clippy::field_reassign_with_default)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{Broker, StartOpts};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Generous upper bound for anything that should "eventually" happen.
const T: Duration = Duration::from_secs(60);
/// Socket timeout of raw requests (a parked JoinGroup is sent without reading).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

// Kafka error codes.
const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;

// ===========================================================================
// Raw kafka-protocol client (same approach as tests/protocol_edges.rs)
// ===========================================================================

fn strb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn tname(s: &str) -> TopicName {
    TopicName(strb(s))
}

fn gid(s: &str) -> GroupId {
    GroupId(strb(s))
}

/// One blocking connection; requests carry increasing correlation ids.
struct Conn {
    s: TcpStream,
    corr: i32,
    what: String,
}

impl Conn {
    fn open(b: &Broker, what: &str) -> Conn {
        let s = TcpStream::connect(b.addr()).unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            s,
            corr: 100,
            what: what.to_string(),
        }
    }

    /// Send a request without waiting for the answer; returns its correlation id.
    fn send<Req: Encodable>(&mut self, key: ApiKey, version: i16, body: &Req) -> i32 {
        self.corr += 1;
        let corr = self.corr;
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = corr;
        h.client_id = Some(strb(&format!("cg-{}", self.what)));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        body.encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{}: encode {key:?} v{version}: {e:?}", self.what));
        let mut frame = BytesMut::with_capacity(buf.len() + 4);
        frame.put_i32(buf.len() as i32);
        frame.put_slice(&buf);
        self.s
            .write_all(&frame)
            .unwrap_or_else(|e| panic!("{}: write {key:?}: {e}", self.what));
        corr
    }

    /// Read the answer to the request with correlation id `corr`.
    fn recv<Resp: Decodable>(&mut self, key: ApiKey, version: i16, corr: i32) -> Resp {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap_or_else(|e| {
            panic!(
                "{}: no response to {key:?} v{version} (corr {corr}): {e}",
                self.what
            )
        });
        let len = i32::from_be_bytes(len);
        assert!(
            (4..64 << 20).contains(&len),
            "{}: bad response length {len}",
            self.what
        );
        let mut body = vec![0u8; len as usize];
        self.s.read_exact(&mut body).expect("read response body");
        let mut buf = Bytes::from(body);
        let hv = key.response_header_version(version);
        let h = ResponseHeader::decode(&mut buf, hv).expect("decode response header");
        assert_eq!(
            h.correlation_id, corr,
            "{}: correlation id of {key:?} v{version}",
            self.what
        );
        let r = Resp::decode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{}: decode {key:?} v{version}: {e:?}", self.what));
        assert_eq!(
            buf.remaining(),
            0,
            "{}: {key:?} v{version}: trailing bytes",
            self.what
        );
        r
    }

    fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        let corr = self.send(key, version, body);
        self.recv(key, version, corr)
    }
}

/// Consumer protocol subscription (version 0) for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1); // null user data
    b.freeze()
}

/// Consumer protocol assignment (version 0): one topic, `parts`.
fn assignment_bytes(topic: &str, parts: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(parts.len() as i32);
    for p in parts {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

/// Parses a consumer protocol assignment (any version: the topic list comes first).
fn parse_assignment(mut b: &[u8]) -> BTreeMap<String, BTreeSet<i32>> {
    let mut out = BTreeMap::new();
    if b.len() < 6 {
        return out;
    }
    let _version = b.get_i16();
    let n = b.get_i32();
    for _ in 0..n.max(0) {
        let l = b.get_i16() as usize;
        let t = String::from_utf8_lossy(&b[..l]).into_owned();
        b.advance(l);
        let np = b.get_i32();
        let parts: BTreeSet<i32> = (0..np.max(0)).map(|_| b.get_i32()).collect();
        out.insert(t, parts);
    }
    out
}

fn create_topic_raw(c: &mut Conn, name: &str, partitions: i32) {
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 30_000;
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = tname(name);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    req.topics = vec![t];
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(r.topics.len(), 1, "{r:?}");
    assert_eq!(r.topics[0].error_code, 0, "create topic {name}: {r:?}");
}

fn join_req(
    group: &str,
    member: &str,
    session_ms: i32,
    protocols: &[(&str, Bytes)],
) -> JoinGroupRequest {
    let mut r = JoinGroupRequest::default();
    r.group_id = gid(group);
    r.session_timeout_ms = session_ms;
    r.rebalance_timeout_ms = 60_000;
    r.member_id = strb(member);
    r.protocol_type = strb("consumer");
    r.protocols = protocols
        .iter()
        .map(|(n, m)| {
            let mut p = join_group_request::JoinGroupRequestProtocol::default();
            p.name = strb(n);
            p.metadata = m.clone();
            p
        })
        .collect();
    r
}

fn sync_req(
    group: &str,
    generation: i32,
    member: &str,
    assignments: &[(&str, Bytes)],
) -> SyncGroupRequest {
    let mut r = SyncGroupRequest::default();
    r.group_id = gid(group);
    r.generation_id = generation;
    r.member_id = strb(member);
    r.protocol_type = Some(strb("consumer"));
    r.protocol_name = Some(strb("range"));
    r.assignments = assignments
        .iter()
        .map(|(m, a)| {
            let mut x = sync_group_request::SyncGroupRequestAssignment::default();
            x.member_id = strb(m);
            x.assignment = a.clone();
            x
        })
        .collect();
    r
}

fn heartbeat(c: &mut Conn, group: &str, generation: i32, member: &str) -> i16 {
    let mut r = HeartbeatRequest::default();
    r.group_id = gid(group);
    r.generation_id = generation;
    r.member_id = strb(member);
    let resp: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &r);
    resp.error_code
}

/// OffsetCommit (v8 unless `version` says otherwise); returns per-partition codes in order.
fn commit_raw(
    c: &mut Conn,
    version: i16,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    parts: &[(i32, i64, Option<&str>)],
) -> Vec<i16> {
    let mut r = OffsetCommitRequest::default();
    r.group_id = gid(group);
    r.generation_id_or_member_epoch = generation;
    r.member_id = strb(member);
    r.retention_time_ms = -1;
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = tname(topic);
    t.partitions = parts
        .iter()
        .map(|(p, o, md)| {
            let mut x = offset_commit_request::OffsetCommitRequestPartition::default();
            x.partition_index = *p;
            x.committed_offset = *o;
            x.committed_leader_epoch = -1;
            x.committed_metadata = md.map(strb);
            x
        })
        .collect();
    r.topics = vec![t];
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, version, &r);
    assert_eq!(resp.topics.len(), 1, "{resp:?}");
    assert_eq!(resp.topics[0].name.0.as_str(), topic);
    let codes: Vec<i16> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes.len(), parts.len(), "{resp:?}");
    codes
}

/// Committed offset and metadata per partition.
type Committed = BTreeMap<i32, (i64, Option<String>)>;

/// OffsetFetch v8 for several groups at once (`None` topics = all partitions).
fn fetch_offsets_v8(
    c: &mut Conn,
    groups: &[(&str, Option<(&str, Vec<i32>)>)],
) -> Vec<(i16, Committed)> {
    let mut r = OffsetFetchRequest::default();
    r.groups = groups
        .iter()
        .map(|(g, t)| {
            let mut x = offset_fetch_request::OffsetFetchRequestGroup::default();
            x.group_id = gid(g);
            x.topics = t.as_ref().map(|(name, parts)| {
                let mut tt = offset_fetch_request::OffsetFetchRequestTopics::default();
                tt.name = tname(name);
                tt.partition_indexes = parts.clone();
                vec![tt]
            });
            x
        })
        .collect();
    let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &r);
    assert_eq!(resp.groups.len(), groups.len(), "{resp:?}");
    resp.groups
        .iter()
        .zip(groups)
        .map(|(g, (want, _))| {
            assert_eq!(g.group_id.0.as_str(), *want, "{resp:?}");
            let mut m = Committed::new();
            for t in &g.topics {
                for p in &t.partitions {
                    assert_eq!(p.error_code, 0, "offset fetch partition error: {resp:?}");
                    m.insert(
                        p.partition_index,
                        (
                            p.committed_offset,
                            p.metadata.as_ref().map(|s| s.to_string()),
                        ),
                    );
                }
            }
            (g.error_code, m)
        })
        .collect()
}

/// OffsetFetch v1..v7 for one group and one topic.
fn fetch_offsets_single(
    c: &mut Conn,
    version: i16,
    group: &str,
    topic: &str,
    parts: &[i32],
) -> Committed {
    let mut r = OffsetFetchRequest::default();
    r.group_id = gid(group);
    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
    t.name = tname(topic);
    t.partition_indexes = parts.to_vec();
    r.topics = Some(vec![t]);
    let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, version, &r);
    assert_eq!(resp.error_code, 0, "{resp:?}");
    let mut m = Committed::new();
    for t in &resp.topics {
        assert_eq!(t.name.0.as_str(), topic);
        for p in &t.partitions {
            assert_eq!(p.error_code, 0, "{resp:?}");
            m.insert(
                p.partition_index,
                (
                    p.committed_offset,
                    p.metadata.as_ref().map(|s| s.to_string()),
                ),
            );
        }
    }
    m
}

fn describe_group(c: &mut Conn, group: &str) -> describe_groups_response::DescribedGroup {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![gid(group)];
    let resp: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, 5, &r);
    assert_eq!(resp.groups.len(), 1, "{resp:?}");
    let g = resp.groups.into_iter().next().unwrap();
    assert_eq!(g.group_id.0.as_str(), group);
    g
}

fn delete_group(c: &mut Conn, group: &str) -> i16 {
    let mut r = DeleteGroupsRequest::default();
    r.groups_names = vec![gid(group)];
    let resp: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, 2, &r);
    assert_eq!(resp.results.len(), 1, "{resp:?}");
    assert_eq!(resp.results[0].group_id.0.as_str(), group);
    resp.results[0].error_code
}

fn list_groups(c: &mut Conn, states: &[&str]) -> Vec<(String, String)> {
    let mut r = ListGroupsRequest::default();
    r.states_filter = states.iter().map(|s| strb(s)).collect();
    let resp: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &r);
    assert_eq!(resp.error_code, 0, "{resp:?}");
    resp.groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect()
}

/// The coordinator shard of a group id (FNV-1a modulo the shard count), as in
/// `src/groups/mod.rs`; used to pick group ids that land on each shard.
fn coordinator_shard(group_id: &str, shards: usize) -> usize {
    let h = group_id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    (h % shards as u64) as usize
}

fn group_on_shard(prefix: &str, shard: usize, shards: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|g| coordinator_shard(g, shards) == shard)
        .unwrap()
}

/// Polls DescribeGroups until the group is in `state` (or panics after T).
fn wait_group_state(
    c: &mut Conn,
    group: &str,
    state: &str,
) -> describe_groups_response::DescribedGroup {
    let deadline = Instant::now() + T;
    loop {
        let g = describe_group(c, group);
        if g.group_state.as_str() == state {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never reached state {state}; last: {g:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ===========================================================================
// rdkafka clients
// ===========================================================================

/// Consumer context recording rebalance events and librdkafka warnings.
#[derive(Default)]
struct Ctx {
    /// ("assign" | "revoke" | "error", partitions of the topic)
    events: Mutex<Vec<(String, BTreeSet<i32>)>>,
    warnings: Mutex<Vec<String>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        if (level as i32) <= RDKafkaLogLevel::Warning as i32 {
            self.warnings
                .lock()
                .unwrap()
                .push(format!("{level:?} {fac}: {msg}"));
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let (kind, parts) = match r {
            Rebalance::Assign(tpl) => (
                "assign",
                tpl.elements().iter().map(|e| e.partition()).collect(),
            ),
            Rebalance::Revoke(tpl) => (
                "revoke",
                tpl.elements().iter().map(|e| e.partition()).collect(),
            ),
            Rebalance::Error(e) => ("error", {
                self.warnings
                    .lock()
                    .unwrap()
                    .push(format!("rebalance error: {e}"));
                BTreeSet::new()
            }),
        };
        self.events.lock().unwrap().push((kind.to_string(), parts));
    }
}

type GroupConsumer = BaseConsumer<Ctx>;

fn group_consumer(
    b: &Broker,
    group: &str,
    name: &str,
    strategy: &str,
    topic: &str,
) -> GroupConsumer {
    let c: GroupConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .set("client.id", name)
        .set("partition.assignment.strategy", strategy)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "30000")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .set("allow.auto.create.topics", "false")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(Ctx::default())
        .unwrap_or_else(|e| panic!("create consumer {name}: {e}"));
    c.subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribe {name}: {e}"));
    c
}

/// A consumed message: (partition, offset, payload).
type Got = (i32, i64, String);

struct Member {
    name: String,
    c: GroupConsumer,
    got: Vec<Got>,
    /// Every distinct assignment (partitions of the topic) seen, in order.
    history: Vec<BTreeSet<i32>>,
    errors: Vec<String>,
}

impl Member {
    fn new(b: &Broker, group: &str, name: &str, strategy: &str, topic: &str) -> Member {
        Member {
            name: name.to_string(),
            c: group_consumer(b, group, name, strategy, topic),
            got: Vec::new(),
            history: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn assignment(&self, topic: &str) -> BTreeSet<i32> {
        self.c
            .assignment()
            .map(|tpl| {
                tpl.elements_for_topic(topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One poll; records a message or an error, and the assignment afterwards.
    fn poll_once(&mut self, topic: &str, timeout: Duration) {
        match self.c.poll(timeout) {
            Some(Ok(m)) => {
                assert_eq!(m.topic(), topic);
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.got.push((m.partition(), m.offset(), v));
            }
            Some(Err(e)) => {
                self.errors.push(e.to_string());
            }
            None => {}
        }
        let a = self.assignment(topic);
        if self.history.last() != Some(&a) {
            self.history.push(a);
        }
    }

    fn diag(&self) -> String {
        format!(
            "{}: assignment history {:?}; rebalance events {:?}; poll errors {:?}; librdkafka warnings {:?}",
            self.name,
            self.history,
            self.c.context().events.lock().unwrap(),
            self.errors,
            self.c.context().warnings.lock().unwrap()
        )
    }
}

fn diag_all(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| m.diag())
        .collect::<Vec<_>>()
        .join("\n")
}

fn poll_round(members: &mut [Member], topic: &str) {
    for m in members.iter_mut() {
        m.poll_once(topic, Duration::from_millis(20));
    }
}

/// Polls all members until each holds exactly `per_member` partitions, the
/// assignments are disjoint and cover all `nparts`, this held for a second,
/// and the broker describes the group as Stable with the same assignments.
/// Returns the assignments.
fn wait_balanced(
    b: &Broker,
    members: &mut [Member],
    group: &str,
    topic: &str,
    nparts: i32,
    per_member: usize,
) -> Vec<BTreeSet<i32>> {
    let mut admin = Conn::open(b, "wait-balanced");
    let deadline = Instant::now() + T;
    let mut since: Option<Instant> = None;
    let mut last_broker = String::new();
    loop {
        poll_round(members, topic);
        let asg: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment(topic)).collect();
        let union: BTreeSet<i32> = asg.iter().flatten().copied().collect();
        let total: usize = asg.iter().map(|a| a.len()).sum();
        let ok = asg.iter().all(|a| a.len() == per_member)
            && total == nparts as usize
            && union == (0..nparts).collect();
        if !ok {
            since = None;
        } else if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1) {
            // The broker's view: Stable, same members, same assignments.
            let g = describe_group(&mut admin, group);
            let mut broker_asg: Vec<BTreeSet<i32>> = g
                .members
                .iter()
                .map(|m| {
                    parse_assignment(&m.member_assignment)
                        .remove(topic)
                        .unwrap_or_default()
                })
                .collect();
            broker_asg.sort();
            let mut client_asg = asg.clone();
            client_asg.sort();
            if g.group_state.as_str() == "Stable"
                && g.members.len() == members.len()
                && broker_asg == client_asg
            {
                return asg;
            }
            last_broker = format!("{g:?}");
        }
        if Instant::now() > deadline {
            panic!(
                "group {group} never balanced to {per_member} partitions each over {} members; \
                 current {asg:?}; last broker view {last_broker}\n{}",
                members.len(),
                diag_all(members)
            );
        }
    }
}

/// Polls all members until `want` messages were consumed in total since the
/// members' `got` were last cleared, then keeps polling `linger` more to catch
/// duplicates.
fn consume_total(members: &mut [Member], topic: &str, want: usize, linger: Duration) {
    let deadline = Instant::now() + T;
    while members.iter().map(|m| m.got.len()).sum::<usize>() < want {
        poll_round(members, topic);
        if Instant::now() > deadline {
            let got: Vec<usize> = members.iter().map(|m| m.got.len()).collect();
            panic!(
                "consumed only {got:?} of {want} messages\n{}",
                diag_all(members)
            );
        }
    }
    let t = Instant::now();
    while t.elapsed() < linger {
        poll_round(members, topic);
    }
}

struct AckCtx {
    failures: Mutex<Vec<String>>,
    acks: Mutex<usize>,
}
impl ClientContext for AckCtx {}
impl ProducerContext for AckCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => *self.acks.lock().unwrap() += 1,
            Err((e, m)) => self
                .failures
                .lock()
                .unwrap()
                .push(format!("partition {}: {e}", m.partition())),
        }
    }
}

/// Produces `payload(p, i)` for i in `range` to every partition p in `parts`
/// (explicit partitions, no idempotence); panics on any delivery failure.
fn produce(b: &Broker, topic: &str, parts: &[i32], range: std::ops::Range<usize>) {
    let p: ThreadedProducer<AckCtx> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create_with_context(AckCtx {
            failures: Mutex::new(Vec::new()),
            acks: Mutex::new(0),
        })
        .expect("producer");
    let mut n = 0;
    for &part in parts {
        for i in range.clone() {
            let v = payload(part, i);
            let k = format!("k{part}-{i}");
            p.send(BaseRecord::to(topic).partition(part).key(&k).payload(&v))
                .unwrap_or_else(|(e, _)| panic!("send {v}: {e}"));
            n += 1;
        }
    }
    p.flush(T).expect("producer flush");
    let failures = p.context().failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "delivery failures: {failures:?}");
    assert_eq!(
        *p.context().acks.lock().unwrap(),
        n,
        "every message acknowledged"
    );
}

fn payload(part: i32, i: usize) -> String {
    format!("p{part}-m{i}")
}

/// Checks that the members together consumed every (partition, offset) of
/// `expect` exactly once, each member only from partitions in `allowed[idx]`.
fn check_exactly_once(
    members: &[Member],
    expect: &BTreeMap<(i32, i64), String>,
    allowed: &[BTreeSet<i32>],
) {
    let mut seen: BTreeMap<(i32, i64), Vec<String>> = BTreeMap::new();
    for (idx, m) in members.iter().enumerate() {
        for (p, o, v) in &m.got {
            assert!(
                allowed[idx].contains(p),
                "{} consumed {v} from partition {p}, which is not in its assignment {:?}",
                m.name,
                allowed[idx]
            );
            assert_eq!(
                expect.get(&(*p, *o)),
                Some(v),
                "{} consumed unexpected message {v} at {p}/{o}",
                m.name
            );
            seen.entry((*p, *o)).or_default().push(m.name.clone());
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, who)| who.len() > 1).collect();
    assert!(
        dups.is_empty(),
        "messages consumed more than once: {dups:?}"
    );
    let missing: Vec<_> = expect.keys().filter(|k| !seen.contains_key(k)).collect();
    assert!(missing.is_empty(), "messages never consumed: {missing:?}");
}

/// What `produce(.., parts, range)` wrote to a fresh topic, by (partition, offset).
fn expected(parts: &[i32], range: std::ops::Range<usize>) -> BTreeMap<(i32, i64), String> {
    let mut m = BTreeMap::new();
    for &p in parts {
        for i in range.clone() {
            m.insert((p, i as i64), payload(p, i));
        }
    }
    m
}

fn group_broker() -> Broker {
    Broker::start(
        StartOpts::default()
            .set("group.initial.rebalance.delay.ms", "200")
            .set("num.partitions", "1"),
    )
}

// ===========================================================================
// 1. Assignment: range and cooperative-sticky
// ===========================================================================

#[test]
fn range_assignment_three_consumers_six_partitions() {
    let b = group_broker();
    let topic = "cg-range";
    let group = "cg-range-group";
    create_topic_raw(&mut Conn::open(&b, "admin"), topic, 6);

    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::new(&b, group, &format!("range-{i}"), "range", topic))
        .collect();
    let asg = wait_balanced(&b, &mut members, group, topic, 6, 2);
    eprintln!("range assignment: {asg:?}");
    // The range assignor gives each member a contiguous range of partitions.
    for a in &asg {
        let v: Vec<i32> = a.iter().copied().collect();
        assert_eq!(
            v[1],
            v[0] + 1,
            "range assignment is not contiguous: {asg:?}"
        );
    }
    assert!(
        members.iter().all(|m| m.got.is_empty()),
        "consumed before anything was produced"
    );

    let parts: Vec<i32> = (0..6).collect();
    produce(&b, topic, &parts, 0..20);
    consume_total(&mut members, topic, 6 * 20, Duration::from_secs(2));
    check_exactly_once(&members, &expected(&parts, 0..20), &asg);
    // Nobody rebalanced while consuming.
    for (m, a) in members.iter().zip(&asg) {
        assert_eq!(&m.assignment(topic), a, "{}", m.diag());
    }
    for m in &members {
        eprintln!(
            "{}: {} messages; warnings {:?}",
            m.name,
            m.got.len(),
            m.c.context().warnings.lock().unwrap()
        );
    }
}

#[test]
fn cooperative_sticky_incremental_rebalance() {
    let b = group_broker();
    let topic = "cg-coop";
    let group = "cg-coop-group";
    create_topic_raw(&mut Conn::open(&b, "admin"), topic, 6);
    let parts: Vec<i32> = (0..6).collect();

    // Two consumers: 3 partitions each.
    let mut members: Vec<Member> = (0..2)
        .map(|i| Member::new(&b, group, &format!("coop-{i}"), "cooperative-sticky", topic))
        .collect();
    let before = wait_balanced(&b, &mut members, group, topic, 6, 3);
    eprintln!("cooperative-sticky with 2 members: {before:?}");

    // Phase 1: consume 5 messages per partition exactly once, commit.
    produce(&b, topic, &parts, 0..5);
    consume_total(&mut members, topic, 6 * 5, Duration::from_secs(1));
    check_exactly_once(&members, &expected(&parts, 0..5), &before);
    for m in &members {
        m.c.commit_consumer_state(CommitMode::Sync)
            .unwrap_or_else(|e| panic!("{}: commit: {e}\n{}", m.name, m.diag()));
    }
    let mut phase1: Vec<Vec<Got>> = Vec::new();
    for m in members.iter_mut() {
        phase1.push(std::mem::take(&mut m.got));
        m.history = vec![m.assignment(topic)];
        m.c.context().events.lock().unwrap().clear();
    }

    // A third consumer joins: each of the first two gives away exactly one partition.
    members.push(Member::new(
        &b,
        group,
        "coop-2",
        "cooperative-sticky",
        topic,
    ));
    let after = wait_balanced(&b, &mut members, group, topic, 6, 2);
    eprintln!("cooperative-sticky with 3 members: {after:?}");
    for i in 0..2 {
        let m = &members[i];
        assert!(
            after[i].is_subset(&before[i]),
            "{} kept {:?} of {:?}: sticky assignment should only take partitions away\n{}",
            m.name,
            after[i],
            before[i],
            diag_all(&members)
        );
        // Incremental: the member never lost all its partitions, never held a foreign one.
        for h in &m.history {
            assert!(
                !h.is_empty() && h.is_subset(&before[i]),
                "{}: assignment went through {:?} (started with {:?}); an incremental rebalance \
                 must not revoke everything\n{}",
                m.name,
                m.history,
                before[i],
                diag_all(&members)
            );
        }
        let revoked: BTreeSet<i32> =
            m.c.context()
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k == "revoke")
                .flat_map(|(_, p)| p.iter().copied())
                .collect();
        let moved: BTreeSet<i32> = before[i].difference(&after[i]).copied().collect();
        assert_eq!(
            revoked,
            moved,
            "{}: revoked partitions (incremental)\n{}",
            m.name,
            m.diag()
        );
    }

    // Phase 2: new messages, exactly once across the three; the newcomer
    // resumes at the committed offsets (no phase-1 message again).
    produce(&b, topic, &parts, 5..15);
    consume_total(&mut members, topic, 6 * 10, Duration::from_secs(2));
    check_exactly_once(&members, &expected(&parts, 5..15), &after);
    for m in &members {
        for (p, o, v) in &m.got {
            assert!(
                *o >= 5,
                "{} re-consumed phase-1 message {v} at {p}/{o} after the rebalance",
                m.name
            );
        }
    }
    let phase1_total: usize = phase1.iter().map(|g| g.len()).sum();
    assert_eq!(phase1_total, 6 * 5);
    eprintln!("{}", diag_all(&members));
}

// ===========================================================================
// 2. Commit, stop, resume; broker restart keeps committed offsets
// ===========================================================================

/// Polls `m` until it consumed `n` more messages.
fn consume_n(m: &mut Member, topic: &str, n: usize) {
    let want = m.got.len() + n;
    let deadline = Instant::now() + T;
    while m.got.len() < want {
        m.poll_once(topic, Duration::from_millis(100));
        assert!(
            Instant::now() < deadline,
            "{} consumed {} of {want} messages\n{}",
            m.name,
            m.got.len(),
            m.diag()
        );
    }
}

/// Committed offsets per partition according to the consumer (`None` = no commit).
fn committed_by_consumer(
    c: &GroupConsumer,
    topic: &str,
    nparts: i32,
) -> BTreeMap<i32, Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..nparts {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, T).expect("committed_offsets");
    got.elements_for_topic(topic)
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                Offset::Invalid => None,
                other => panic!(
                    "unexpected committed offset {other:?} for partition {}",
                    e.partition()
                ),
            };
            (e.partition(), o)
        })
        .collect()
}

/// First offset consumed per partition, and checks offsets are contiguous.
fn first_offsets(m: &Member) -> BTreeMap<i32, i64> {
    let mut first = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, v) in &m.got {
        first.entry(*p).or_insert(*o);
        if let Some(n) = next.get(p) {
            assert_eq!(
                o, n,
                "{}: partition {p} jumped to offset {o} ({v}), expected {n}",
                m.name
            );
        }
        next.insert(*p, o + 1);
    }
    first
}

/// Commit, close, resume; kill -9 + restart of the broker; resume again; with
/// `live_restart`, a consumer that stays up across a second broker restart
/// continues without duplicates or gaps. `group` hashes to the coordinator
/// shard under test.
fn commit_resume_scenario(shards: usize, group: &str, live_restart: bool) {
    let mut b = Broker::start(
        StartOpts::default()
            .shards(shards)
            .set("group.initial.rebalance.delay.ms", "0"),
    );
    let topic = "cg-resume";
    let parts = [0, 1];
    create_topic_raw(&mut Conn::open(&b, "admin"), topic, 2);
    produce(&b, topic, &parts, 0..10);

    // A consumes 7 messages, commits its position synchronously, closes.
    let mut a = Member::new(&b, group, "resume-a", "range", topic);
    consume_n(&mut a, topic, 7);
    a.c.commit_consumer_state(CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit_consumer_state: {e}\n{}", a.diag()));
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in &a.got {
        last.insert(*p, *o);
    }
    let committed_a = committed_by_consumer(&a.c, topic, 2);
    for p in parts {
        assert_eq!(
            committed_a[&p],
            last.get(&p).map(|o| o + 1),
            "partition {p}: committed offset after consuming {:?}",
            a.got
        );
    }
    let a_got = std::mem::take(&mut a.got);
    drop(a); // close: commits nothing more (auto commit off), leaves the group

    let mut raw = Conn::open(&b, "fetch");
    let fetched = fetch_offsets_single(&mut raw, 5, group, topic, &[0, 1]);
    for p in parts {
        assert_eq!(
            fetched[&p].0,
            committed_a[&p].unwrap_or(-1),
            "OffsetFetch partition {p}"
        );
    }

    // B resumes exactly at the committed offsets and reads the rest.
    let mut bm = Member::new(&b, group, "resume-b", "range", topic);
    consume_n(&mut bm, topic, 20 - 7);
    let first = first_offsets(&bm);
    for p in parts {
        let want = committed_a[&p].unwrap_or(0);
        if want < 10 {
            assert_eq!(
                first.get(&p),
                Some(&want),
                "partition {p}: B must resume at the committed offset"
            );
        } else {
            assert!(
                !first.contains_key(&p),
                "partition {p} was fully consumed by A"
            );
        }
    }
    let mut all: BTreeSet<(i32, i64)> = a_got.iter().map(|(p, o, _)| (*p, *o)).collect();
    for (p, o, v) in &bm.got {
        assert!(
            all.insert((*p, *o)),
            "message {v} ({p}/{o}) consumed by A and B"
        );
    }
    assert_eq!(all.len(), 20);
    // Commit explicitly (commit with CommitMode::Sync): the next offset of each partition.
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(topic, p, Offset::Offset(10))
            .unwrap();
    }
    bm.c.commit(&tpl, CommitMode::Sync).expect("commit Sync");
    assert_eq!(
        committed_by_consumer(&bm.c, topic, 2),
        BTreeMap::from([(0, Some(10)), (1, Some(10))])
    );
    drop(bm);

    // More messages while nobody consumes, then kill -9 and restart the broker.
    produce(&b, topic, &parts, 10..15);
    drop(raw);
    std::thread::sleep(Duration::from_millis(200));
    b.restart();

    let mut raw = Conn::open(&b, "fetch-after-restart");
    let fetched = fetch_offsets_single(&mut raw, 5, group, topic, &[0, 1]);
    assert_eq!(
        fetched[&0].0, 10,
        "committed offset of partition 0 after the restart: {fetched:?}"
    );
    assert_eq!(
        fetched[&1].0, 10,
        "committed offset of partition 1 after the restart: {fetched:?}"
    );
    let v8 = fetch_offsets_v8(&mut raw, &[(group, None)]);
    assert_eq!(v8[0].0, 0);
    assert_eq!(v8[0].1.get(&0).map(|x| x.0), Some(10), "{v8:?}");
    assert_eq!(v8[0].1.get(&1).map(|x| x.0), Some(10), "{v8:?}");
    let g = describe_group(&mut raw, group);
    assert_eq!(g.group_state.as_str(), "Empty", "{g:?}");

    // C sees the offsets and resumes at them.
    let mut c = Member::new(&b, group, "resume-c", "range", topic);
    assert_eq!(
        committed_by_consumer(&c.c, topic, 2),
        BTreeMap::from([(0, Some(10)), (1, Some(10))]),
        "consumer committed_offsets after the broker restart"
    );
    consume_n(&mut c, topic, 10);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        c.poll_once(topic, Duration::from_millis(100));
    }
    assert_eq!(c.got.len(), 10, "C got {:?}", c.got);
    assert_eq!(
        first_offsets(&c),
        BTreeMap::from([(0, 10), (1, 10)]),
        "C resumes at 10"
    );
    for (p, o, v) in &c.got {
        assert_eq!(v, &payload(*p, *o as usize));
    }

    if !live_restart {
        return;
    }
    // C commits and stays up while the broker is killed and restarted again;
    // it rejoins and continues exactly after its commit. (Rebinding the port
    // can take up to a minute here: the killed broker leaves TIME-WAIT
    // sockets of C's connections on it, see the harness warning.)
    c.c.commit_consumer_state(CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit_consumer_state: {e}\n{}", c.diag()));
    assert_eq!(
        fetch_offsets_single(&mut raw, 5, group, topic, &[0, 1])
            .values()
            .map(|x| x.0)
            .collect::<Vec<_>>(),
        vec![15, 15]
    );
    drop(raw);
    b.restart();
    produce(&b, topic, &parts, 15..20);
    consume_n(&mut c, topic, 10);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        c.poll_once(topic, Duration::from_millis(100));
    }
    assert_eq!(
        c.got.len(),
        20,
        "C across the restart got {:?}\n{}",
        c.got,
        c.diag()
    );
    // Contiguous per partition from 10 (no duplicate, no gap) up to 19.
    assert_eq!(first_offsets(&c), BTreeMap::from([(0, 10), (1, 10)]));
    assert!(c.got.iter().all(|(p, o, v)| v == &payload(*p, *o as usize)));
    c.c.commit_consumer_state(CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit after the restart: {e}\n{}", c.diag()));
    let mut raw = Conn::open(&b, "fetch-end");
    assert_eq!(
        fetch_offsets_single(&mut raw, 5, group, topic, &[0, 1])
            .values()
            .map(|x| x.0)
            .collect::<Vec<_>>(),
        vec![20, 20]
    );
    let g = describe_group(&mut raw, group);
    assert_eq!(
        (g.group_state.as_str(), g.members.len()),
        ("Stable", 1),
        "{g:?}"
    );
}

#[test]
fn commit_resume_and_broker_restart_keeps_offsets() {
    commit_resume_scenario(1, "cg-resume-group", true);
}

/// The same with two shards, the group coordinated by shard 1 (its own group log).
#[test]
fn commit_resume_and_broker_restart_two_shards() {
    commit_resume_scenario(2, &group_on_shard("cg-resume-group", 1, 2), false);
}

// ===========================================================================
// 3. Error paths with raw requests
// ===========================================================================

/// The whole classic-protocol error-path scenario for one group. `unknown` is a
/// group id that never exists.
fn error_paths(b: &Broker, group: &str, unknown: &str, topic: &str) {
    let mut admin = Conn::open(b, &format!("{group}-admin"));
    let mut ca = Conn::open(b, &format!("{group}-a"));
    let mut cb = Conn::open(b, &format!("{group}-b"));
    let protos = [("range", subscription(&[topic]))];

    // FindCoordinator (v1 key, v4 batched keys) answers this broker.
    let mut fc = FindCoordinatorRequest::default();
    fc.key = strb(group);
    let r: FindCoordinatorResponse = admin.call(ApiKey::FindCoordinator, 1, &fc);
    assert_eq!((r.error_code, r.port), (0, b.port() as i32), "{r:?}");
    let mut fc = FindCoordinatorRequest::default();
    fc.coordinator_keys = vec![strb(group), strb(unknown)];
    let r: FindCoordinatorResponse = admin.call(ApiKey::FindCoordinator, 4, &fc);
    assert_eq!(r.coordinators.len(), 2, "{r:?}");
    for c in &r.coordinators {
        assert_eq!((c.error_code, c.port), (0, b.port() as i32), "{r:?}");
    }

    // Session timeout outside [group.min, group.max].session.timeout.ms.
    for (v, session) in [(5i16, 1000), (9, 5999), (7, 120_001)] {
        let r: JoinGroupResponse =
            ca.call(ApiKey::JoinGroup, v, &join_req(group, "", session, &protos));
        assert_eq!(
            r.error_code, INVALID_SESSION_TIMEOUT,
            "JoinGroup v{v} session {session}: {r:?}"
        );
    }

    // Member A: KIP-394 two-step join (v4+).
    let r: JoinGroupResponse = ca.call(ApiKey::JoinGroup, 7, &join_req(group, "", 30_000, &protos));
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED, "{r:?}");
    let a = r.member_id.to_string();
    assert!(
        !a.is_empty(),
        "MEMBER_ID_REQUIRED without a member id: {r:?}"
    );
    let r: JoinGroupResponse = ca.call(ApiKey::JoinGroup, 7, &join_req(group, &a, 30_000, &protos));
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(r.member_id.as_str(), a);
    assert_eq!(r.leader.as_str(), a, "sole member leads");
    assert_eq!(r.protocol_name.as_ref().map(|s| s.as_str()), Some("range"));
    assert_eq!(
        r.protocol_type.as_ref().map(|s| s.as_str()),
        Some("consumer")
    );
    assert_eq!(r.members.len(), 1, "{r:?}");
    assert_eq!(
        r.members[0].metadata, protos[0].1,
        "leader gets the members' metadata"
    );
    let gen1 = r.generation_id;
    assert!(gen1 >= 1, "{r:?}");

    // SyncGroup with a wrong generation.
    let asg_a = assignment_bytes(topic, &[0, 1]);
    let r: SyncGroupResponse = ca.call(
        ApiKey::SyncGroup,
        5,
        &sync_req(group, gen1 + 7, &a, &[(&a, asg_a.clone())]),
    );
    assert_eq!(
        r.error_code, ILLEGAL_GENERATION,
        "SyncGroup wrong generation: {r:?}"
    );
    let r: SyncGroupResponse = ca.call(ApiKey::SyncGroup, 3, &sync_req(group, gen1 - 1, &a, &[]));
    assert_eq!(
        r.error_code, ILLEGAL_GENERATION,
        "SyncGroup v3 old generation: {r:?}"
    );
    // SyncGroup from an unknown member.
    let r: SyncGroupResponse = ca.call(ApiKey::SyncGroup, 5, &sync_req(group, gen1, "ghost", &[]));
    assert_eq!(
        r.error_code, UNKNOWN_MEMBER_ID,
        "SyncGroup unknown member: {r:?}"
    );
    // The real one.
    let r: SyncGroupResponse = ca.call(
        ApiKey::SyncGroup,
        5,
        &sync_req(group, gen1, &a, &[(&a, asg_a.clone())]),
    );
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(r.assignment, asg_a);
    assert_eq!(r.protocol_name.as_ref().map(|s| s.as_str()), Some("range"));
    assert_eq!(heartbeat(&mut ca, group, gen1, &a), NONE);
    assert_eq!(
        heartbeat(&mut ca, group, gen1 + 1, &a),
        ILLEGAL_GENERATION,
        "heartbeat future generation"
    );
    assert_eq!(
        heartbeat(&mut ca, group, gen1, "ghost"),
        UNKNOWN_MEMBER_ID,
        "heartbeat unknown member"
    );

    // DescribeGroups: Stable, A with its metadata and assignment.
    let g = describe_group(&mut admin, group);
    assert_eq!(g.error_code, 0, "{g:?}");
    assert_eq!(g.group_state.as_str(), "Stable", "{g:?}");
    assert_eq!(g.protocol_type.as_str(), "consumer");
    assert_eq!(g.protocol_data.as_str(), "range");
    assert_eq!(g.members.len(), 1, "{g:?}");
    assert_eq!(g.members[0].member_id.as_str(), a);
    assert_eq!(g.members[0].client_id.as_str(), format!("cg-{group}-a"));
    assert_eq!(g.members[0].member_metadata, protos[0].1);
    assert_eq!(g.members[0].member_assignment, asg_a);
    // ListGroups with a state filter.
    let lg = list_groups(&mut admin, &["Stable"]);
    assert!(
        lg.contains(&(group.to_string(), "Stable".to_string())),
        "{lg:?}"
    );
    let lg = list_groups(&mut admin, &["Empty"]);
    assert!(!lg.iter().any(|(g, _)| g == group), "{lg:?}");

    // OffsetCommit: metadata round-trips; unknown member; stale generation.
    let md0 = "meta-0: {\"k\":\"v\"} ✓";
    let codes = commit_raw(
        &mut ca,
        8,
        group,
        gen1,
        &a,
        topic,
        &[(0, 42, Some(md0)), (1, 7, Some(""))],
    );
    assert_eq!(codes, vec![NONE, NONE]);
    let f = fetch_offsets_v8(
        &mut admin,
        &[
            (group, Some((topic, vec![0, 1]))),
            (unknown, Some((topic, vec![0, 1]))),
        ],
    );
    assert_eq!(f[0].0, 0);
    assert_eq!(
        f[0].1[&0],
        (42, Some(md0.to_string())),
        "metadata round trip (v8)"
    );
    assert_eq!(f[0].1[&1].0, 7);
    assert_eq!(f[0].1[&1].1.as_deref().unwrap_or(""), "");
    assert_eq!(f[1].0, 0, "unknown group: no group-level error");
    assert_eq!(
        f[1].1.get(&0).map(|x| x.0),
        Some(-1),
        "unknown group offset: {f:?}"
    );
    assert_eq!(
        f[1].1.get(&1).map(|x| x.0),
        Some(-1),
        "unknown group offset: {f:?}"
    );
    let f1 = fetch_offsets_single(&mut admin, 1, group, topic, &[0, 1]);
    assert_eq!(
        f1[&0],
        (42, Some(md0.to_string())),
        "metadata round trip (v1)"
    );
    let fu = fetch_offsets_single(&mut admin, 7, unknown, topic, &[0, 1, 2]);
    assert_eq!(
        fu.values().map(|x| x.0).collect::<Vec<_>>(),
        vec![-1, -1, -1],
        "unknown group: {fu:?}"
    );

    assert_eq!(
        commit_raw(
            &mut ca,
            8,
            group,
            gen1,
            "ghost-member",
            topic,
            &[(0, 1, None)]
        ),
        vec![UNKNOWN_MEMBER_ID],
        "OffsetCommit v8 unknown member"
    );
    assert_eq!(
        commit_raw(
            &mut ca,
            2,
            group,
            gen1,
            "ghost-member",
            topic,
            &[(0, 1, None)]
        ),
        vec![UNKNOWN_MEMBER_ID],
        "OffsetCommit v2 unknown member"
    );
    assert_eq!(
        commit_raw(&mut ca, 8, group, gen1 - 1, &a, topic, &[(0, 1, None)]),
        vec![ILLEGAL_GENERATION],
        "OffsetCommit old generation"
    );
    // Nothing of the rejected commits stuck.
    let f = fetch_offsets_single(&mut admin, 5, group, topic, &[0]);
    assert_eq!(f[&0].0, 42);

    // DeleteGroups of a group with members.
    assert_eq!(delete_group(&mut admin, group), NON_EMPTY_GROUP);

    // Member B joins: MEMBER_ID_REQUIRED, then a join that parks while A is
    // asked to rejoin.
    let r: JoinGroupResponse = cb.call(ApiKey::JoinGroup, 5, &join_req(group, "", 30_000, &protos));
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED, "{r:?}");
    let bm = r.member_id.to_string();
    assert!(!bm.is_empty() && bm != a);
    assert_eq!(
        heartbeat(&mut ca, group, gen1, &a),
        NONE,
        "a pending member id does not rebalance"
    );
    let b_join = cb.send(ApiKey::JoinGroup, 5, &join_req(group, &bm, 30_000, &protos));
    wait_group_state(&mut admin, group, "PreparingRebalance");

    // Heartbeat during the rebalance.
    assert_eq!(
        heartbeat(&mut ca, group, gen1, &a),
        REBALANCE_IN_PROGRESS,
        "heartbeat during rebalance"
    );
    let r: SyncGroupResponse = ca.call(
        ApiKey::SyncGroup,
        5,
        &sync_req(group, gen1, &a, &[(&a, asg_a.clone())]),
    );
    assert_eq!(
        r.error_code, REBALANCE_IN_PROGRESS,
        "SyncGroup during rebalance: {r:?}"
    );
    let g = describe_group(&mut admin, group);
    assert_eq!(
        g.members.len(),
        2,
        "describe during rebalance lists both members: {g:?}"
    );

    // A rejoins: the rebalance completes for both.
    let r: JoinGroupResponse = ca.call(ApiKey::JoinGroup, 7, &join_req(group, &a, 30_000, &protos));
    assert_eq!(r.error_code, NONE, "{r:?}");
    let gen2 = r.generation_id;
    assert_eq!(gen2, gen1 + 1, "{r:?}");
    assert_eq!(r.leader.as_str(), a, "the leader stays the leader");
    let ids: BTreeSet<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
    assert_eq!(ids, BTreeSet::from([a.clone(), bm.clone()]), "{r:?}");
    let rb: JoinGroupResponse = cb.recv(ApiKey::JoinGroup, 5, b_join);
    assert_eq!(rb.error_code, NONE, "{rb:?}");
    assert_eq!(rb.generation_id, gen2);
    assert_eq!(rb.member_id.as_str(), bm);
    assert_eq!(rb.leader.as_str(), a);
    assert!(
        rb.members.is_empty(),
        "a follower gets no member list: {rb:?}"
    );

    // Sync: B (follower) waits for the leader's assignments.
    let (asg_a2, asg_b2) = (assignment_bytes(topic, &[0]), assignment_bytes(topic, &[1]));
    let b_sync = cb.send(ApiKey::SyncGroup, 4, &sync_req(group, gen2, &bm, &[]));
    let r: SyncGroupResponse = ca.call(
        ApiKey::SyncGroup,
        5,
        &sync_req(
            group,
            gen2,
            &a,
            &[(&a, asg_a2.clone()), (&bm, asg_b2.clone())],
        ),
    );
    assert_eq!((r.error_code, &r.assignment), (NONE, &asg_a2), "{r:?}");
    let r: SyncGroupResponse = cb.recv(ApiKey::SyncGroup, 4, b_sync);
    assert_eq!((r.error_code, &r.assignment), (NONE, &asg_b2), "{r:?}");

    assert_eq!(heartbeat(&mut ca, group, gen2, &a), NONE);
    assert_eq!(heartbeat(&mut cb, group, gen2, &bm), NONE);
    assert_eq!(
        heartbeat(&mut ca, group, gen1, &a),
        ILLEGAL_GENERATION,
        "heartbeat stale generation"
    );
    assert_eq!(
        commit_raw(&mut ca, 8, group, gen1, &a, topic, &[(0, 50, None)]),
        vec![ILLEGAL_GENERATION],
        "OffsetCommit v8 with the stale generation"
    );
    assert_eq!(
        commit_raw(&mut ca, 3, group, gen1, &a, topic, &[(0, 50, None)]),
        vec![ILLEGAL_GENERATION],
        "OffsetCommit v3 with the stale generation"
    );
    assert_eq!(
        commit_raw(
            &mut cb,
            8,
            group,
            gen2,
            &bm,
            topic,
            &[(1, 9, Some("from-b"))]
        ),
        vec![NONE]
    );
    let f = fetch_offsets_single(&mut admin, 6, group, topic, &[0, 1]);
    assert_eq!(f[&0], (42, Some(md0.to_string())), "{f:?}");
    assert_eq!(f[&1], (9, Some("from-b".to_string())), "{f:?}");

    let g = describe_group(&mut admin, group);
    assert_eq!(g.group_state.as_str(), "Stable", "{g:?}");
    let by_member: BTreeMap<String, Bytes> = g
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.member_assignment.clone()))
        .collect();
    assert_eq!(
        by_member,
        BTreeMap::from([(a.clone(), asg_a2), (bm.clone(), asg_b2)]),
        "{g:?}"
    );
    assert_eq!(delete_group(&mut admin, group), NON_EMPTY_GROUP);

    // Both leave in one batch (LeaveGroup v3+).
    let mut lr = LeaveGroupRequest::default();
    lr.group_id = gid(group);
    lr.members = [&a, &bm, &"ghost".to_string()]
        .iter()
        .map(|m| {
            let mut x = leave_group_request::MemberIdentity::default();
            x.member_id = strb(m);
            x
        })
        .collect();
    let r: LeaveGroupResponse = admin.call(ApiKey::LeaveGroup, 4, &lr);
    assert_eq!(r.error_code, NONE, "{r:?}");
    let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![NONE, NONE, UNKNOWN_MEMBER_ID], "{r:?}");
    let g = wait_group_state(&mut admin, group, "Empty");
    assert!(g.members.is_empty(), "{g:?}");
    assert_eq!(
        heartbeat(&mut ca, group, gen2, &a),
        UNKNOWN_MEMBER_ID,
        "heartbeat after leaving"
    );

    // An empty group: offsets stay; OffsetDelete; DeleteGroups.
    let mut od = OffsetDeleteRequest::default();
    od.group_id = gid(group);
    let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
    t.name = tname(topic);
    let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
    p.partition_index = 0;
    t.partitions = vec![p];
    od.topics = vec![t];
    let r: OffsetDeleteResponse = admin.call(ApiKey::OffsetDelete, 0, &od);
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(r.topics[0].partitions[0].error_code, NONE, "{r:?}");
    let f = fetch_offsets_single(&mut admin, 7, group, topic, &[0, 1]);
    assert_eq!(
        (f[&0].0, f[&1].0),
        (-1, 9),
        "after OffsetDelete of partition 0: {f:?}"
    );
    assert_eq!(
        delete_group(&mut admin, group),
        NONE,
        "DeleteGroups of an empty group"
    );
    let f = fetch_offsets_single(&mut admin, 7, group, topic, &[0, 1]);
    assert_eq!((f[&0].0, f[&1].0), (-1, -1), "after DeleteGroups: {f:?}");
    assert_eq!(
        delete_group(&mut admin, group),
        GROUP_ID_NOT_FOUND,
        "DeleteGroups twice"
    );
    let g = describe_group(&mut admin, group);
    assert_eq!(g.group_state.as_str(), "Dead", "{g:?}");
    // DescribeGroups v6 (Kafka 4.0+): GROUP_ID_NOT_FOUND with a message, state still Dead.
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![gid(group)];
    let resp: DescribeGroupsResponse = admin.call(ApiKey::DescribeGroups, 6, &r);
    let g = &resp.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str()), (GROUP_ID_NOT_FOUND, "Dead"), "{g:?}");
    assert_eq!(g.error_message.as_ref().map(|m| m.as_str()), Some(format!("Group {group} not found.").as_str()));
    let lg = list_groups(&mut admin, &[]);
    assert!(!lg.iter().any(|(g, _)| g == group), "{lg:?}");
}

fn error_broker(shards: usize) -> Broker {
    Broker::start(
        StartOpts::default()
            .shards(shards)
            .set("group.initial.rebalance.delay.ms", "0")
            .set("group.min.session.timeout.ms", "6000")
            .set("group.max.session.timeout.ms", "120000"),
    )
}

#[test]
fn raw_group_error_paths() {
    let b = error_broker(1);
    let topic = "cg-raw";
    create_topic_raw(&mut Conn::open(&b, "admin"), topic, 3);
    error_paths(&b, "cg-raw-group", "cg-raw-nobody", topic);
}

#[test]
fn raw_group_error_paths_two_shards() {
    let mut b = error_broker(2);
    let topic = "cg-raw2";
    create_topic_raw(&mut Conn::open(&b, "admin"), topic, 3);
    let g0 = group_on_shard("cg-raw2-group", 0, 2);
    let g1 = group_on_shard("cg-raw2-group", 1, 2);
    let u0 = group_on_shard("cg-raw2-nobody", 0, 2);
    let u1 = group_on_shard("cg-raw2-nobody", 1, 2);
    // Each group's unknown counterpart lives on the other shard, so the
    // multi-group OffsetFetch spans both shards.
    error_paths(&b, &g0, &u1, topic);
    error_paths(&b, &g1, &u0, topic);

    // Standalone commits (generation -1, no member) to a group on each shard
    // survive a kill -9 restart, metadata included; one OffsetFetch v8 spans both shards.
    let p0 = group_on_shard("cg-raw2-persist", 0, 2);
    let p1 = group_on_shard("cg-raw2-persist", 1, 2);
    let mut c = Conn::open(&b, "persist");
    for (i, g) in [&p0, &p1].into_iter().enumerate() {
        let md = format!("persisted by {g}");
        let codes = commit_raw(
            &mut c,
            8,
            g,
            -1,
            "",
            topic,
            &[(0, 100 + i as i64, Some(&md)), (2, 200, None)],
        );
        assert_eq!(codes, vec![NONE, NONE], "standalone commit to {g}");
    }
    drop(c);
    b.restart();
    let mut c = Conn::open(&b, "persist-after-restart");
    let f = fetch_offsets_v8(&mut c, &[(&p0, None), (&p1, Some((topic, vec![0, 1, 2])))]);
    for (i, (g, (code, offs))) in [&p0, &p1].into_iter().zip(&f).enumerate() {
        assert_eq!(*code, 0, "{f:?}");
        assert_eq!(
            offs[&0],
            (100 + i as i64, Some(format!("persisted by {g}"))),
            "{g} after restart: {f:?}"
        );
        assert_eq!(offs[&2].0, 200, "{g} after restart: {f:?}");
    }
    assert_eq!(f[1].1[&1].0, -1, "{f:?}");
    for g in [&p0, &p1] {
        let d = describe_group(&mut c, g);
        assert_eq!(d.group_state.as_str(), "Empty", "{d:?}");
    }
}

/// Static membership (KIP-345): a member with a group.instance.id that restarts (rejoins with an
/// empty member id and the same instance id) gets a new member id and its old assignment without
/// a rebalance (also with changed subscription metadata, as Kafka); the old member id is fenced;
/// leaving by instance id removes it.
#[test]
fn static_member_rejoins_without_rebalance() {
    let b = error_broker(1);
    let topic = "cg-static";
    let group = "cg-static-group";
    let mut c = Conn::open(&b, "static");
    create_topic_raw(&mut c, topic, 2);
    let protos = [("range", subscription(&[topic]))];

    let mut j = join_req(group, "", 10_000, &protos);
    j.group_instance_id = Some(strb("instance-a"));
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &j);
    assert_eq!(r.error_code, 0, "static members join directly (no MEMBER_ID_REQUIRED)");
    let old_id = r.member_id.to_string();
    let generation = r.generation_id;
    assert_eq!(r.leader.as_str(), old_id, "the only member leads");
    let mut s = sync_req(group, generation, &old_id, &[(&old_id, assignment_bytes(topic, &[0, 1]))]);
    s.group_instance_id = Some(strb("instance-a"));
    let sr: SyncGroupResponse = c.call(ApiKey::SyncGroup, 5, &s);
    assert_eq!(sr.error_code, 0);
    assert_eq!(describe_group(&mut c, group).group_state.as_str(), "Stable");

    // The same instance comes back under a new member id: no rebalance, same generation and assignment.
    let r2: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &j);
    assert_eq!(r2.error_code, 0);
    let new_id = r2.member_id.to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(r2.generation_id, generation, "a static rejoin must not bump the generation");
    assert_eq!(describe_group(&mut c, group).group_state.as_str(), "Stable");
    let mut s2 = sync_req(group, generation, &new_id, &[]);
    s2.group_instance_id = Some(strb("instance-a"));
    let sr2: SyncGroupResponse = c.call(ApiKey::SyncGroup, 5, &s2);
    assert_eq!(sr2.error_code, 0);
    assert_eq!(parse_assignment(&sr2.assignment), parse_assignment(&assignment_bytes(topic, &[0, 1])), "assignment kept");

    // The old member id is gone; the new one heartbeats fine.
    assert_eq!(heartbeat(&mut c, group, generation, &old_id), 25, "old member id is unknown");
    assert_eq!(heartbeat(&mut c, group, generation, &new_id), 0);
    // Kafka's ClassicGroup.validateMember: with an instance id, the instance decides: unknown
    // instance -> UNKNOWN_MEMBER_ID; known instance of another member id -> FENCED_INSTANCE_ID
    // (what tells the replaced consumer to stop instead of rejoining and fencing the new one).
    let static_heartbeat = |c: &mut Conn, member: &str, instance: &str| -> i16 {
        let mut hb = HeartbeatRequest::default();
        hb.group_id = gid(group);
        hb.generation_id = generation;
        hb.member_id = strb(member);
        hb.group_instance_id = Some(strb(instance));
        let hr: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &hb);
        hr.error_code
    };
    assert_eq!(static_heartbeat(&mut c, &new_id, "instance-b"), 25, "an unknown instance id is UNKNOWN_MEMBER_ID");
    assert_eq!(static_heartbeat(&mut c, &old_id, "instance-a"), 82, "the replaced member id is FENCED_INSTANCE_ID");
    let mut s_old = sync_req(group, generation, &old_id, &[]);
    s_old.group_instance_id = Some(strb("instance-a"));
    let sr_old: SyncGroupResponse = c.call(ApiKey::SyncGroup, 5, &s_old);
    assert_eq!(sr_old.error_code, 82, "SyncGroup of the replaced member id");

    // The leader restarts again, now with other subscription metadata (a restarted consumer's
    // owned partitions are gone) and JoinGroup v9: the group's protocol stays "range", so no
    // rebalance, and the leader is told to skip the assignment (KIP-814).
    let mut j9 = join_req(group, "", 10_000, &[("range", subscription(&[topic, "other"]))]);
    j9.group_instance_id = Some(strb("instance-a"));
    let r3: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &j9);
    assert_eq!(r3.error_code, 0);
    assert_eq!(r3.generation_id, generation, "changed metadata alone must not rebalance a static rejoin");
    assert!(r3.skip_assignment, "a returning static leader skips the assignment");
    assert_eq!(r3.leader.as_str(), r3.member_id.as_str());
    assert_eq!(describe_group(&mut c, group).group_state.as_str(), "Stable");

    // Leave by instance id (v3+ batch form with an empty member id).
    let mut l = LeaveGroupRequest::default();
    l.group_id = gid(group);
    let mut m = leave_group_request::MemberIdentity::default();
    m.group_instance_id = Some(strb("instance-a"));
    l.members = vec![m];
    let lr: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 4, &l);
    assert_eq!(lr.error_code, 0);
    assert_eq!(lr.members.len(), 1);
    assert_eq!(lr.members[0].error_code, 0);
    wait_group_state(&mut c, group, "Empty");
}

/// Committed offsets survive a change of `--shards` (2 -> 1 -> 2): groups follow their
/// coordinator shard across restarts.
#[test]
fn committed_offsets_survive_a_change_of_shard_count() {
    let topic = "reshard";
    let groups: Vec<String> = (0..2).flat_map(|s| (0..2).map(move |i| group_on_shard(&format!("reshard{i}"), s, 2))).collect();
    let b = Broker::start(StartOpts::default().shards(2));
    let mut c = Conn::open(&b, "2 shards");
    create_topic_raw(&mut c, topic, 1);
    for (i, g) in groups.iter().enumerate() {
        assert_eq!(commit_raw(&mut c, 8, g, -1, "", topic, &[(0, 10 + i as i64, Some("two"))]), vec![0]);
    }
    let fetch_all = |b: &Broker, what: &str| -> Vec<Committed> {
        let mut c = Conn::open(b, what);
        let want: Vec<(&str, Option<(&str, Vec<i32>)>)> = groups.iter().map(|g| (g.as_str(), Some((topic, vec![0])))).collect();
        fetch_offsets_v8(&mut c, &want).into_iter().map(|(code, m)| { assert_eq!(code, 0, "{what}"); m }).collect()
    };
    let expect = |base: i64, md: &str| -> Vec<Committed> {
        (0..groups.len()).map(|i| Committed::from([(0, (base + i as i64, Some(md.to_string())))])).collect()
    };
    assert_eq!(fetch_all(&b, "before"), expect(10, "two"));

    let b = Broker::start_in(StartOpts::default().shards(1), b.into_dir());
    assert_eq!(fetch_all(&b, "2 -> 1 shards"), expect(10, "two"), "offsets committed with 2 shards, read with 1");
    let mut c = Conn::open(&b, "1 shard");
    for (i, g) in groups.iter().enumerate() {
        assert_eq!(commit_raw(&mut c, 8, g, -1, "", topic, &[(0, 20 + i as i64, Some("one"))]), vec![0]);
    }
    let b = Broker::start_in(StartOpts::default().shards(2), b.into_dir());
    assert_eq!(fetch_all(&b, "1 -> 2 shards"), expect(20, "one"), "offsets committed with 1 shard, read with 2");
}
