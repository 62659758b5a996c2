//! What the Java client (Apache Kafka clients 3.x and 4.x) needs from a broker's ApiVersions
//! answer, checked against the real `strand` binary. No JVM is available here, so instead of
//! running the Java producer/consumer/admin this file
//!
//! 1. (`java_client_needs_are_advertised`) lists every API the Java client uses for an
//!    idempotent producer, a classic-group consumer and basic admin work, with the version range
//!    the 3.x and 4.x clients support and the lowest version a needed feature requires, and
//!    asserts that our ApiVersions ranges overlap the client's and reach that feature version.
//!    APIs the Java client uses that Strand does not serve are listed as KNOWN GAPS and only
//!    reported (checked for overlap if they ever get advertised);
//! 2. (`java_client_wire_flow_at_negotiated_versions`) plays the Java clients' request sequence
//!    on the wire at the version each client would negotiate (the highest version both sides
//!    support: `NodeApiVersions.latestUsableVersion`), once for a 4.x client and once for the
//!    oldest 3.x (3.0), and checks the answers.
//!
//! Sources relied on for the table:
//! * The Kafka protocol guide (kafka.apache.org/protocol, "The Messages" / api keys) and the
//!   Java client's own message definitions, `clients/src/main/resources/common/message/
//!   *Request.json` (`validVersions`, and the per-version comments quoted in `why` below, e.g.
//!   ProduceRequest.json "Version 3 ... adds support for Kafka Message Format v2", "Starting in
//!   version 7, records can be produced using ZStandard compression. See KIP-110",
//!   FetchRequest.json "Version 10 indicates that we can use the ZStd compression algorithm").
//! * Java 4.x ranges: those JSON files as generated into the kafka-protocol 0.18 crate that this
//!   repository vendors (`vendor/kafka-protocol/src/messages/*_request.rs`, "Valid versions",
//!   also `ApiKey::valid_versions()`); `java4_ranges_match_the_message_definitions` checks the
//!   literals below against that crate. Their minimums are KIP-896's new baseline ("Remove old
//!   client protocol API versions in Kafka 4.0"; the 4.x Java clients refuse brokers below it:
//!   "the Java clients (producer, consumer and admin) would throw UnsupportedVersionException
//!   when interacting with brokers that do not support the newly established minimum protocol
//!   API versions"). ProduceRequest.json @ 4.0 also says versions 0-2 must still be listed in
//!   the ApiVersions answer "due to a bug in librdkafka (see KAFKA-18659)".
//! * Java 3.x ranges: every 3.x client still supports version 0 of these APIs (KIP-896 only
//!   removed old versions in 4.0); the maximum listed is that of the oldest 3.x client (3.0.0),
//!   from the 3.0 message definitions as I recall them (not verifiable here). The checks only
//!   need it to be >= our minimum, which holds with a wide margin for every row.
//! * Java client behaviour (relied on, from the Java client source as I know it): the producer
//!   enables idempotence and acks=all by default since 3.0.1/3.1.1/3.2 (KIP-679), gets its id
//!   with InitProducerId and needs record format v2 (Produce v3+); for an idempotent
//!   (non-transactional) producer the epoch bump after an OutOfOrderSequence/UnknownProducerId
//!   is done locally (KIP-360), the next batch simply carries epoch+1 and sequence 0; the
//!   consumer's default `group.protocol` is still `classic` in 4.0/4.1 (KIP-848's
//!   ConsumerGroupHeartbeat is opt-in); the consumer skips offset validation via
//!   OffsetForLeaderEpoch when the broker does not advertise it; Admin.describeTopics falls back
//!   from DescribeTopicPartitions to Metadata and describeCluster from DescribeCluster to
//!   Metadata when those are not advertised; the consumer uses topic ids in Fetch from v13 on,
//!   taking them from Metadata (v10+).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{Broker, StartOpts};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Producer,
    Consumer,
    Admin,
}

#[derive(Clone, Copy, Debug)]
struct Need {
    key: ApiKey,
    role: Role,
    /// Java 3.x: versions 0..=max of the 3.0.0 client.
    java3: (i16, i16),
    /// Java 4.x (KIP-896 minimum .. current maximum).
    java4: (i16, i16),
    /// Our maximum must reach this version for what the client does with the API.
    feature_min: i16,
    why: &'static str,
}

const fn need(key: ApiKey, role: Role, java3: (i16, i16), java4: (i16, i16), feature_min: i16, why: &'static str) -> Need {
    Need { key, role, java3, java4, feature_min, why }
}

/// Asserted: without these an idempotent Java producer or a classic-group Java consumer (or
/// the basic Admin calls listed) cannot work.
const REQUIRED: &[Need] = &[
    need(ApiKey::ApiVersions, Role::Producer, (0, 3), (0, 4), 3,
        "every connection starts with it; 3.x sends v3, 4.x v4 and falls back on UNSUPPORTED_VERSION (KIP-511)"),
    need(ApiKey::Metadata, Role::Producer, (0, 11), (0, 13), 10,
        "topics/leaders; v10+ carries the topic ids the consumer needs for Fetch v13+"),
    need(ApiKey::InitProducerId, Role::Producer, (0, 4), (0, 5), 0,
        "idempotent producer id/epoch (idempotence is on by default since 3.0.1/3.1.1/3.2)"),
    need(ApiKey::Produce, Role::Producer, (0, 9), (3, 13), 7,
        "v3: record format v2 (needed for idempotence); v7: zstd (KIP-110)"),
    need(ApiKey::FindCoordinator, Role::Consumer, (0, 4), (0, 6), 0,
        "group coordinator lookup (v4: batched keys, KIP-699)"),
    need(ApiKey::JoinGroup, Role::Consumer, (0, 7), (0, 9), 4,
        "classic group join; v4+: MEMBER_ID_REQUIRED two-step join (KIP-394)"),
    need(ApiKey::SyncGroup, Role::Consumer, (0, 5), (0, 5), 0, "assignment distribution"),
    need(ApiKey::Heartbeat, Role::Consumer, (0, 4), (0, 4), 0, "group liveness"),
    need(ApiKey::LeaveGroup, Role::Consumer, (0, 4), (0, 5), 0, "close()/unsubscribe"),
    need(ApiKey::OffsetCommit, Role::Consumer, (0, 8), (2, 9), 2, "commitSync/commitAsync/auto-commit"),
    need(ApiKey::OffsetFetch, Role::Consumer, (0, 8), (1, 9), 1, "committed positions at assignment"),
    need(ApiKey::ListOffsets, Role::Consumer, (0, 7), (1, 10), 1,
        "auto.offset.reset, seekToBeginning/End, offsetsForTimes"),
    need(ApiKey::Fetch, Role::Consumer, (0, 12), (4, 18), 10,
        "records; v4+: isolation level / record format v2; v10+: zstd batches (KIP-110)"),
    need(ApiKey::CreateTopics, Role::Admin, (0, 7), (2, 7), 2, "Admin.createTopics"),
    need(ApiKey::DeleteTopics, Role::Admin, (0, 6), (1, 6), 1, "Admin.deleteTopics"),
    need(ApiKey::DeleteRecords, Role::Admin, (0, 2), (0, 2), 0, "Admin.deleteRecords"),
    need(ApiKey::DescribeCluster, Role::Admin, (0, 0), (0, 2), 0, "Admin.describeCluster (falls back to Metadata)"),
    need(ApiKey::ListGroups, Role::Admin, (0, 4), (0, 5), 0, "Admin.listConsumerGroups / listGroups"),
    need(ApiKey::DescribeGroups, Role::Admin, (0, 5), (0, 6), 0, "Admin.describeConsumerGroups"),
    need(ApiKey::DeleteGroups, Role::Admin, (0, 2), (0, 2), 0, "Admin.deleteConsumerGroups"),
    need(ApiKey::OffsetDelete, Role::Admin, (0, 0), (0, 0), 0, "Admin.deleteConsumerGroupOffsets"),
    need(ApiKey::DescribeConfigs, Role::Admin, (0, 4), (1, 4), 1, "Admin.describeConfigs (v1+: synonyms; v0 gone in 4.x)"),
    need(ApiKey::AlterConfigs, Role::Admin, (0, 2), (0, 2), 0, "Admin.alterConfigs"),
    need(ApiKey::IncrementalAlterConfigs, Role::Admin, (0, 1), (0, 1), 0, "Admin.incrementalAlterConfigs"),
    need(ApiKey::CreatePartitions, Role::Admin, (0, 3), (0, 3), 0, "Admin.createPartitions"),
    need(ApiKey::DescribeLogDirs, Role::Admin, (0, 2), (1, 4), 1, "Admin.describeLogDirs"),
    need(ApiKey::DescribeTopicPartitions, Role::Admin, (0, 0), (0, 0), 0, "Admin.describeTopics (3.7+ prefers it; Metadata fallback)"),
];

/// KNOWN GAPS: used by the Java client but not served by Strand. Not asserted (only reported,
/// and checked for overlap should they ever be advertised).
/// * ElectLeaders, Alter/ListPartitionReassignments, DescribeAcls,
///   DescribeProducers, DescribeTransactions, ListTransactions: the matching Admin calls.
/// * OffsetForLeaderEpoch: consumer position validation (KIP-320), skipped when not advertised.
/// * ConsumerGroupHeartbeat / ConsumerGroupDescribe: only with `group.protocol=consumer`
///   (KIP-848), opt-in in 4.x.
/// * Transactions (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
///   WriteTxnMarkers): a transactional.id is refused by InitProducerId.
const KNOWN_GAPS: &[Need] = &[
    need(ApiKey::ElectLeaders, Role::Admin, (0, 2), (0, 2), 0, "Admin.electLeaders"),
    need(ApiKey::AlterPartitionReassignments, Role::Admin, (0, 0), (0, 1), 0, "Admin.alterPartitionReassignments"),
    need(ApiKey::ListPartitionReassignments, Role::Admin, (0, 0), (0, 0), 0, "Admin.listPartitionReassignments"),
    need(ApiKey::DescribeAcls, Role::Admin, (0, 2), (1, 3), 1, "Admin.describeAcls"),
    need(ApiKey::DescribeProducers, Role::Admin, (0, 0), (0, 0), 0, "Admin.describeProducers"),
    need(ApiKey::OffsetForLeaderEpoch, Role::Consumer, (0, 4), (2, 4), 2, "position validation (skipped if absent)"),
    need(ApiKey::ConsumerGroupHeartbeat, Role::Consumer, (0, 0), (0, 1), 0, "group.protocol=consumer (opt-in)"),
    need(ApiKey::ConsumerGroupDescribe, Role::Admin, (0, 0), (0, 1), 0, "describe KIP-848 groups"),
    need(ApiKey::AddPartitionsToTxn, Role::Producer, (0, 3), (0, 5), 0, "transactions only"),
    need(ApiKey::EndTxn, Role::Producer, (0, 3), (0, 5), 0, "transactions only"),
    need(ApiKey::TxnOffsetCommit, Role::Producer, (0, 3), (0, 5), 0, "transactions only"),
];

// ---------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------

const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn strb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

struct Conn {
    s: TcpStream,
    corr: i32,
}

impl Conn {
    fn open(b: &Broker) -> Conn {
        let s = TcpStream::connect(b.addr()).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { s, corr: 0 }
    }

    fn send<Req: Encodable>(&mut self, key: ApiKey, version: i16, req: &Req, body_version: i16) -> i32 {
        self.corr += 1;
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = self.corr;
        h.client_id = Some(strb("java-compat-producer-1"));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, key.request_header_version(version)).expect("encode header");
        req.encode(&mut buf, body_version).unwrap_or_else(|e| panic!("encode {key:?} v{body_version}: {e:?}"));
        let mut frame = Vec::with_capacity(buf.len() + 4);
        frame.extend_from_slice(&(buf.len() as i32).to_be_bytes());
        frame.extend_from_slice(&buf);
        self.s.write_all(&frame).expect("write");
        self.corr
    }

    fn recv<Resp: Decodable>(&mut self, key: ApiKey, version: i16, corr: i32) -> Resp {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap_or_else(|e| panic!("no answer to {key:?} v{version}: {e}"));
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).expect("read body");
        let mut b = Bytes::from(body);
        let hv = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
        let h = ResponseHeader::decode(&mut b, hv).expect("response header");
        assert_eq!(h.correlation_id, corr, "{key:?} v{version} correlation id");
        let r = Resp::decode(&mut b, version).unwrap_or_else(|e| panic!("decode {key:?} v{version}: {e:?}"));
        assert_eq!(b.remaining(), 0, "{key:?} v{version}: trailing bytes");
        r
    }

    fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> Resp {
        let corr = self.send(key, version, req, version);
        self.recv(key, version, corr)
    }
}

fn advertised(c: &mut Conn) -> Vec<(i16, i16, i16)> {
    let mut req = ApiVersionsRequest::default();
    req.client_software_name = strb("apache-kafka-java");
    req.client_software_version = strb("4.1.0");
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &req);
    assert_eq!(r.error_code, 0, "{r:?}");
    r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect()
}

fn range_of(adv: &[(i16, i16, i16)], key: ApiKey) -> Option<(i16, i16)> {
    adv.iter().find(|(k, _, _)| *k == key as i16).map(|(_, lo, hi)| (*lo, *hi))
}

/// The version a client with range `client` uses against a broker with range `broker`
/// (`NodeApiVersions.latestUsableVersion`), or None if the ranges do not overlap.
fn negotiate(broker: (i16, i16), client: (i16, i16)) -> Option<i16> {
    let lo = broker.0.max(client.0);
    let hi = broker.1.min(client.1);
    (lo <= hi).then_some(hi)
}

// ---------------------------------------------------------------------------
// 1. The table
// ---------------------------------------------------------------------------

#[test]
fn java4_ranges_match_the_message_definitions() {
    // The Java client's message definitions (as generated into kafka-protocol) are the source
    // of the 4.x column: same minimum (KIP-896 baseline), and a maximum no higher than theirs.
    for n in REQUIRED.iter().chain(KNOWN_GAPS) {
        let v = n.key.valid_versions();
        assert_eq!(n.java4.0, v.min, "{:?}: java4 minimum in the table vs the message definition", n.key);
        assert!(n.java4.1 <= v.max, "{:?}: java4 maximum {} above the message definition's {}", n.key, n.java4.1, v.max);
        assert!(n.java3.0 == 0 && n.java3.1 >= 0, "{:?}: java3 range", n.key);
    }
}

#[test]
fn java_client_needs_are_advertised() {
    let b = Broker::start(StartOpts::default());
    let mut c = Conn::open(&b);
    let adv = advertised(&mut c);
    let mut problems = Vec::new();
    eprintln!("{:<28} {:<9} {:>8} {:>8} {:>8} {:>6} {:>6}  why", "api", "role", "strand", "java3.0", "java4.x", "use3", "use4");
    for n in REQUIRED {
        let Some(br) = range_of(&adv, n.key) else {
            problems.push(format!("{:?} ({:?}) is not advertised: {}", n.key, n.role, n.why));
            continue;
        };
        let u3 = negotiate(br, n.java3);
        let u4 = negotiate(br, n.java4);
        eprintln!(
            "{:<28} {:<9} {:>8} {:>8} {:>8} {:>6} {:>6}  {}",
            format!("{:?}({})", n.key, n.key as i16),
            format!("{:?}", n.role),
            format!("{}-{}", br.0, br.1),
            format!("{}-{}", n.java3.0, n.java3.1),
            format!("{}-{}", n.java4.0, n.java4.1),
            u3.map_or("NONE".into(), |v| v.to_string()),
            u4.map_or("NONE".into(), |v| v.to_string()),
            n.why
        );
        match u3 {
            None => problems.push(format!("{:?}: our {br:?} does not overlap the Java 3.x client's {:?}", n.key, n.java3)),
            Some(v) if v < n.feature_min => problems.push(format!("{:?}: a 3.x client would use v{v}, below v{} ({})", n.key, n.feature_min, n.why)),
            _ => {}
        }
        match u4 {
            None => problems.push(format!("{:?}: our {br:?} does not overlap the Java 4.x client's {:?} (KIP-896 floor)", n.key, n.java4)),
            Some(v) if v < n.feature_min => problems.push(format!("{:?}: a 4.x client would use v{v}, below v{} ({})", n.key, n.feature_min, n.why)),
            _ => {}
        }
    }
    // Produce must still be listed from v0 (KAFKA-18659: librdkafka reads the minimum to decide
    // whether the broker is new enough; Kafka 4.x advertises 0 while refusing 0-2).
    if let Some((lo, _)) = range_of(&adv, ApiKey::Produce) {
        if lo != 0 {
            problems.push(format!("Produce advertised from v{lo}; Kafka lists it from v0 (KAFKA-18659)"));
        }
    }
    eprintln!("known gaps (not asserted):");
    for n in KNOWN_GAPS {
        match range_of(&adv, n.key) {
            None => eprintln!("  GAP {:?}({}): not served — {}", n.key, n.key as i16, n.why),
            Some(br) => {
                eprintln!("  {:?}({}): now advertised {br:?} — {}", n.key, n.key as i16, n.why);
                if negotiate(br, n.java4).is_none() || negotiate(br, n.java3).is_none() {
                    problems.push(format!("{:?}: advertised {br:?} but no overlap with the Java client", n.key));
                }
            }
        }
    }
    assert!(problems.is_empty(), "Java client compatibility problems:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------
// 2. The Java clients' request flow at the negotiated versions
// ---------------------------------------------------------------------------

fn consumer_subscription(topic: &str) -> Bytes {
    // ConsumerProtocolSubscription v0: topics, null user data.
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(-1);
    b.freeze()
}

fn consumer_assignment(topic: &str, parts: &[i32]) -> Bytes {
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

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize, tag: &str) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, recs.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode batch");
    buf.freeze()
}

/// Runs producer, consumer and admin flows with each API at `ver(key)`.
fn java_flow(b: &Broker, label: &str, ver: &dyn Fn(ApiKey) -> i16) {
    let topic = format!("java-compat-{label}");
    let group = format!("java-group-{label}");
    let mut c = Conn::open(b);
    let v = |k: ApiKey| {
        let x = ver(k);
        eprintln!("  [{label}] {k:?} v{x}");
        x
    };

    // ---- Admin.createTopics, then Metadata as the producer/consumer would send it
    let mut ct = CreateTopicsRequest::default();
    ct.timeout_ms = 30_000;
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = TopicName(strb(&topic));
    t.num_partitions = 2;
    t.replication_factor = -1; // Admin's NewTopic(name, Optional.empty(), Optional.empty()) uses broker defaults
    if v(ApiKey::CreateTopics) < 4 {
        t.replication_factor = 1;
    }
    ct.topics = vec![t];
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, ver(ApiKey::CreateTopics), &ct);
    assert_eq!(r.topics[0].error_code, 0, "[{label}] CreateTopics: {r:?}");

    let mv = v(ApiKey::Metadata);
    let mut md = MetadataRequest::default();
    let mut mt = metadata_request::MetadataRequestTopic::default();
    mt.name = Some(TopicName(strb(&topic)));
    md.topics = Some(vec![mt]);
    md.allow_auto_topic_creation = false;
    let m: MetadataResponse = c.call(ApiKey::Metadata, mv, &md);
    assert_eq!(m.brokers.len(), 1, "[{label}] {m:?}");
    assert_eq!(m.topics.len(), 1);
    let mt = &m.topics[0];
    assert_eq!((mt.error_code, mt.partitions.len()), (0, 2), "[{label}] metadata topic: {mt:?}");
    let topic_id = mt.topic_id;
    if mv >= 10 {
        assert!(!topic_id.is_nil(), "[{label}] Metadata v{mv} must carry a topic id (the consumer needs it for Fetch v13+)");
    }
    if mv >= 12 {
        // Admin.describeTopics(TopicCollection.ofTopicIds(..)) asks by id with an EMPTY name
        // (not null) beside it; Kafka looks such topics up by id.
        let mut by_id = MetadataRequest::default();
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.topic_id = topic_id;
        t.name = Some(TopicName(strb("")));
        by_id.topics = Some(vec![t]);
        let m: MetadataResponse = c.call(ApiKey::Metadata, mv, &by_id);
        let mt = &m.topics[0];
        assert_eq!((mt.error_code, mt.topic_id, mt.partitions.len()), (0, topic_id, 2), "[{label}] metadata by id: {mt:?}");
        assert_eq!(mt.name.as_ref().map(|n| n.0.as_str()), Some(topic.as_str()), "[{label}] metadata by id: {mt:?}");
    }

    // ---- Producer: InitProducerId, idempotent Produce (acks=all), a retry, a local epoch bump
    let r: InitProducerIdResponse = {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = i32::MAX; // what the Java TransactionManager sends when idempotent only
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        c.call(ApiKey::InitProducerId, v(ApiKey::InitProducerId), &req)
    };
    assert_eq!((r.error_code, r.producer_epoch), (0, 0), "[{label}] InitProducerId: {r:?}");
    let pid = r.producer_id.0;
    let pv = v(ApiKey::Produce);
    assert!(pv >= 3, "[{label}] idempotence needs Produce v3+");
    let produce = |c: &mut Conn, part: i32, batch: Bytes| -> (i16, i64) {
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 30_000;
        let mut p = produce_request::PartitionProduceData::default();
        p.index = part;
        p.records = Some(batch);
        let mut t = produce_request::TopicProduceData::default();
        t.name = TopicName(strb(&topic));
        if pv >= 13 {
            t.topic_id = topic_id;
        }
        t.partition_data = vec![p];
        req.topic_data = vec![t];
        let r: ProduceResponse = c.call(ApiKey::Produce, pv, &req);
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    let b0 = idempotent_batch(pid, 0, 0, 10, "m");
    assert_eq!(produce(&mut c, 0, b0.clone()), (0, 0), "[{label}] idempotent produce");
    assert_eq!(produce(&mut c, 0, b0), (0, 0), "[{label}] retried batch answered with its offset");
    assert_eq!(produce(&mut c, 0, idempotent_batch(pid, 0, 10, 5, "n")), (0, 10), "[{label}] next batch");
    // KIP-360 for idempotent producers: the Java client bumps the epoch itself and restarts
    // sequences at 0 (no InitProducerId round trip).
    assert_eq!(produce(&mut c, 0, idempotent_batch(pid, 1, 0, 5, "bumped")), (0, 15), "[{label}] locally bumped epoch");
    assert_eq!(produce(&mut c, 0, idempotent_batch(pid, 0, 15, 1, "stale")).0, 47, "[{label}] old epoch fenced");
    assert_eq!(produce(&mut c, 1, idempotent_batch(pid, 1, 0, 3, "p1")), (0, 0), "[{label}] partition 1");

    // ---- Consumer (classic protocol, as ConsumerCoordinator does it)
    let fv = v(ApiKey::FindCoordinator);
    let mut fc = FindCoordinatorRequest::default();
    if fv >= 4 {
        fc.coordinator_keys = vec![strb(&group)];
    } else {
        fc.key = strb(&group);
    }
    let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, fv, &fc);
    let (err, port) = if fv >= 4 { (r.coordinators[0].error_code, r.coordinators[0].port) } else { (r.error_code, r.port) };
    assert_eq!((err, port), (0, b.port() as i32), "[{label}] FindCoordinator: {r:?}");

    let jv = v(ApiKey::JoinGroup);
    let join = |c: &mut Conn, member: &str| -> JoinGroupResponse {
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(strb(&group));
        r.session_timeout_ms = 45_000; // Java 3.0+ default session.timeout.ms
        r.rebalance_timeout_ms = 300_000; // max.poll.interval.ms
        r.member_id = strb(member);
        r.protocol_type = strb("consumer");
        let mut p1 = join_group_request::JoinGroupRequestProtocol::default();
        p1.name = strb("range");
        p1.metadata = consumer_subscription(&topic);
        let mut p2 = join_group_request::JoinGroupRequestProtocol::default();
        p2.name = strb("cooperative-sticky");
        p2.metadata = consumer_subscription(&topic);
        r.protocols = vec![p1, p2];
        if jv >= 8 {
            r.reason = Some(strb("need to re-join with the given member-id"));
        }
        c.call(ApiKey::JoinGroup, jv, &r)
    };
    let first = join(&mut c, "");
    let (member, r) = if jv >= 4 {
        assert_eq!(first.error_code, 79, "[{label}] JoinGroup v{jv} without member id: MEMBER_ID_REQUIRED: {first:?}");
        let m = first.member_id.to_string();
        assert!(!m.is_empty(), "[{label}] MEMBER_ID_REQUIRED without a member id");
        (m.clone(), join(&mut c, &m))
    } else {
        (first.member_id.to_string(), first)
    };
    assert_eq!(r.error_code, 0, "[{label}] JoinGroup: {r:?}");
    assert_eq!(r.member_id.as_str(), member, "[{label}] {r:?}");
    assert_eq!(r.leader.as_str(), member, "[{label}] sole member leads");
    assert_eq!(r.members.len(), 1, "[{label}] the leader gets the member list: {r:?}");
    let generation = r.generation_id;
    let protocol = r.protocol_name.clone().map(|s| s.to_string()).unwrap_or_else(|| "range".into());

    let sv = v(ApiKey::SyncGroup);
    let mut sg = SyncGroupRequest::default();
    sg.group_id = GroupId(strb(&group));
    sg.generation_id = generation;
    sg.member_id = strb(&member);
    if sv >= 5 {
        sg.protocol_type = Some(strb("consumer"));
        sg.protocol_name = Some(strb(&protocol));
    }
    let mut a = sync_group_request::SyncGroupRequestAssignment::default();
    a.member_id = strb(&member);
    a.assignment = consumer_assignment(&topic, &[0, 1]);
    sg.assignments = vec![a];
    let r: SyncGroupResponse = c.call(ApiKey::SyncGroup, sv, &sg);
    assert_eq!(r.error_code, 0, "[{label}] SyncGroup: {r:?}");
    assert_eq!(r.assignment, consumer_assignment(&topic, &[0, 1]), "[{label}] assignment round trip");

    let ofv = v(ApiKey::OffsetFetch);
    let offset_fetch = |c: &mut Conn| -> Vec<(i32, i64)> {
        let mut r = OffsetFetchRequest::default();
        if ofv >= 8 {
            let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
            g.group_id = GroupId(strb(&group));
            let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
            t.name = TopicName(strb(&topic));
            t.partition_indexes = vec![0, 1];
            g.topics = Some(vec![t]);
            r.groups = vec![g];
            r.require_stable = true;
        } else {
            r.group_id = GroupId(strb(&group));
            let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
            t.name = TopicName(strb(&topic));
            t.partition_indexes = vec![0, 1];
            r.topics = Some(vec![t]);
            r.require_stable = ofv >= 7;
        }
        let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, ofv, &r);
        let mut out = Vec::new();
        if ofv >= 8 {
            assert_eq!(resp.groups[0].error_code, 0, "[{label}] OffsetFetch: {resp:?}");
            for t in &resp.groups[0].topics {
                for p in &t.partitions {
                    assert_eq!(p.error_code, 0);
                    out.push((p.partition_index, p.committed_offset));
                }
            }
        } else {
            assert_eq!(resp.error_code, 0, "[{label}] OffsetFetch: {resp:?}");
            for t in &resp.topics {
                for p in &t.partitions {
                    out.push((p.partition_index, p.committed_offset));
                }
            }
        }
        out.sort();
        out
    };
    assert_eq!(offset_fetch(&mut c), vec![(0, -1), (1, -1)], "[{label}] nothing committed yet");

    let lv = v(ApiKey::ListOffsets);
    let list_offsets = |c: &mut Conn, ts: i64| -> Vec<i64> {
        let mut r = ListOffsetsRequest::default();
        r.replica_id = BrokerId(-1);
        r.isolation_level = 0;
        let mut t = list_offsets_request::ListOffsetsTopic::default();
        t.name = TopicName(strb(&topic));
        t.partitions = (0..2)
            .map(|p| {
                let mut x = list_offsets_request::ListOffsetsPartition::default();
                x.partition_index = p;
                x.current_leader_epoch = -1;
                x.timestamp = ts;
                x
            })
            .collect();
        r.topics = vec![t];
        let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, lv, &r);
        let mut ps = resp.topics[0].partitions.clone();
        ps.sort_by_key(|p| p.partition_index);
        ps.iter().map(|p| {
            assert_eq!(p.error_code, 0, "[{label}] ListOffsets: {resp:?}");
            p.offset
        }).collect()
    };
    assert_eq!(list_offsets(&mut c, -2), vec![0, 0], "[{label}] earliest (auto.offset.reset=earliest)");
    assert_eq!(list_offsets(&mut c, -1), vec![20, 3], "[{label}] latest");

    let fv = v(ApiKey::Fetch);
    let mut fr = FetchRequest::default();
    fr.replica_id = BrokerId(-1);
    fr.max_wait_ms = 500; // fetch.max.wait.ms
    fr.min_bytes = 1;
    fr.max_bytes = 52_428_800;
    fr.isolation_level = 0;
    fr.session_id = 0;
    fr.session_epoch = 0; // the Java consumer opens a fetch session (epoch 0 = new full session)
    let mut ft = fetch_request::FetchTopic::default();
    if fv >= 13 {
        ft.topic_id = topic_id;
    } else {
        ft.topic = TopicName(strb(&topic));
    }
    ft.partitions = (0..2)
        .map(|p| {
            let mut x = fetch_request::FetchPartition::default();
            x.partition = p;
            x.current_leader_epoch = -1;
            x.fetch_offset = 0;
            x.last_fetched_epoch = -1;
            x.log_start_offset = -1;
            x.partition_max_bytes = 1_048_576;
            x
        })
        .collect();
    fr.topics = vec![ft];
    let r: FetchResponse = c.call(ApiKey::Fetch, fv, &fr);
    assert_eq!(r.error_code, 0, "[{label}] Fetch: {r:?}");
    assert_eq!(r.responses.len(), 1);
    if fv >= 13 {
        assert_eq!(r.responses[0].topic_id, topic_id, "[{label}] Fetch v{fv} answers by topic id");
    }
    let mut values = Vec::new();
    let mut parts = r.responses[0].partitions.clone();
    parts.sort_by_key(|p| p.partition_index);
    for p in &parts {
        assert_eq!(p.error_code, 0, "[{label}] Fetch partition: {p:?}");
        let mut data = p.records.clone().unwrap_or_default();
        for set in RecordBatchDecoder::decode_all(&mut data).expect("decode fetched records") {
            for rec in set.records {
                values.push((p.partition_index, rec.offset, String::from_utf8_lossy(rec.value.as_deref().unwrap()).into_owned()));
            }
        }
    }
    let mut expect: Vec<(i32, i64, String)> = Vec::new();
    expect.extend((0..10).map(|i| (0, i as i64, format!("m-{i}"))));
    expect.extend((0..5).map(|i| (0, 10 + i as i64, format!("n-{i}"))));
    expect.extend((0..5).map(|i| (0, 15 + i as i64, format!("bumped-{i}"))));
    expect.extend((0..3).map(|i| (1, i as i64, format!("p1-{i}"))));
    // partition 0 holds 20 records of the producer (offsets 0..20); "stale" was refused
    let expect: Vec<_> = expect.into_iter().filter(|(p, o, _)| *p == 1 || *o < 20).collect();
    assert_eq!(values, expect, "[{label}] fetched records");

    let ocv = v(ApiKey::OffsetCommit);
    let mut oc = OffsetCommitRequest::default();
    oc.group_id = GroupId(strb(&group));
    oc.generation_id_or_member_epoch = generation;
    oc.member_id = strb(&member);
    oc.retention_time_ms = -1;
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(strb(&topic));
    t.partitions = [(0, 20i64), (1, 3)]
        .iter()
        .map(|&(p, o)| {
            let mut x = offset_commit_request::OffsetCommitRequestPartition::default();
            x.partition_index = p;
            x.committed_offset = o;
            x.committed_leader_epoch = -1;
            x.committed_metadata = Some(strb(""));
            x
        })
        .collect();
    oc.topics = vec![t];
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, ocv, &oc);
    assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0), "[{label}] OffsetCommit v{ocv}: {r:?}");
    assert_eq!(offset_fetch(&mut c), vec![(0, 20), (1, 3)], "[{label}] committed offsets");

    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(strb(&group));
    hb.generation_id = generation;
    hb.member_id = strb(&member);
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, v(ApiKey::Heartbeat), &hb);
    assert_eq!(r.error_code, 0, "[{label}] Heartbeat: {r:?}");

    // ---- Admin while the group is Stable
    let lgv = v(ApiKey::ListGroups);
    let r: ListGroupsResponse = c.call(ApiKey::ListGroups, lgv, &ListGroupsRequest::default());
    assert_eq!(r.error_code, 0, "[{label}] ListGroups: {r:?}");
    assert!(r.groups.iter().any(|g| g.group_id.as_str() == group && g.protocol_type.as_str() == "consumer"), "[{label}] ListGroups: {r:?}");
    let mut dg = DescribeGroupsRequest::default();
    dg.groups = vec![GroupId(strb(&group))];
    let r: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, v(ApiKey::DescribeGroups), &dg);
    assert_eq!(r.groups[0].error_code, 0, "[{label}] DescribeGroups: {r:?}");
    assert_eq!(r.groups[0].group_state.as_str(), "Stable", "[{label}] {r:?}");
    assert_eq!(r.groups[0].members.len(), 1);
    let mut dc = DescribeClusterRequest::default();
    dc.include_cluster_authorized_operations = false;
    let dcv = v(ApiKey::DescribeCluster);
    if dcv >= 1 {
        dc.endpoint_type = 1; // brokers
    }
    let r: DescribeClusterResponse = c.call(ApiKey::DescribeCluster, dcv, &dc);
    assert_eq!(r.error_code, 0, "[{label}] DescribeCluster: {r:?}");
    assert_eq!(r.brokers.len(), 1, "[{label}] {r:?}");

    // ---- consumer.close(): LeaveGroup
    let lv2 = v(ApiKey::LeaveGroup);
    let mut lg = LeaveGroupRequest::default();
    lg.group_id = GroupId(strb(&group));
    if lv2 >= 3 {
        let mut mi = leave_group_request::MemberIdentity::default();
        mi.member_id = strb(&member);
        if lv2 >= 5 {
            mi.reason = Some(strb("the consumer is being closed"));
        }
        lg.members = vec![mi];
    } else {
        lg.member_id = strb(&member);
    }
    let r: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, lv2, &lg);
    assert_eq!(r.error_code, 0, "[{label}] LeaveGroup: {r:?}");

    // ---- Admin on the now Empty group, then clean up
    let mut od = OffsetDeleteRequest::default();
    od.group_id = GroupId(strb(&group));
    let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
    t.name = TopicName(strb(&topic));
    let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
    p.partition_index = 1;
    t.partitions = vec![p];
    od.topics = vec![t];
    let r: OffsetDeleteResponse = c.call(ApiKey::OffsetDelete, v(ApiKey::OffsetDelete), &od);
    assert_eq!(r.error_code, 0, "[{label}] OffsetDelete: {r:?}");
    assert_eq!(offset_fetch(&mut c), vec![(0, 20), (1, -1)], "[{label}] after OffsetDelete");
    let mut dgr = DeleteGroupsRequest::default();
    dgr.groups_names = vec![GroupId(strb(&group))];
    let r: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, v(ApiKey::DeleteGroups), &dgr);
    assert_eq!(r.results[0].error_code, 0, "[{label}] DeleteGroups: {r:?}");
    // ---- Admin: describe/alter configs, createPartitions, describeLogDirs, describeTopics
    let mut dcr = DescribeConfigsRequest::default();
    let mut res = describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = strb(&topic);
    res.configuration_keys = None;
    let mut bres = describe_configs_request::DescribeConfigsResource::default();
    bres.resource_type = 4;
    bres.resource_name = strb("1");
    bres.configuration_keys = None;
    dcr.resources = vec![res, bres];
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, v(ApiKey::DescribeConfigs), &dcr);
    assert!(r.results.iter().all(|x| x.error_code == 0 && !x.configs.is_empty()), "[{label}] DescribeConfigs: {r:?}");
    let mut iac = IncrementalAlterConfigsRequest::default();
    let mut ar = incremental_alter_configs_request::AlterConfigsResource::default();
    ar.resource_type = 2;
    ar.resource_name = strb(&topic);
    let mut op = incremental_alter_configs_request::AlterableConfig::default();
    op.name = strb("retention.ms");
    op.config_operation = 0;
    op.value = Some(strb("3600000"));
    ar.configs = vec![op];
    iac.resources = vec![ar];
    let r: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, v(ApiKey::IncrementalAlterConfigs), &iac);
    assert_eq!(r.responses[0].error_code, 0, "[{label}] IncrementalAlterConfigs: {r:?}");
    let mut cp = CreatePartitionsRequest::default();
    let mut cpt = create_partitions_request::CreatePartitionsTopic::default();
    cpt.name = TopicName(strb(&topic));
    cpt.count = 3;
    cpt.assignments = None;
    cp.topics = vec![cpt];
    cp.timeout_ms = 30_000;
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, v(ApiKey::CreatePartitions), &cp);
    assert_eq!(r.results[0].error_code, 0, "[{label}] CreatePartitions: {r:?}");
    let r: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, v(ApiKey::DescribeLogDirs), &DescribeLogDirsRequest::default());
    assert_eq!(r.results.len(), 1, "[{label}] DescribeLogDirs: {r:?}");
    let mut dtp = DescribeTopicPartitionsRequest::default();
    let mut tr = describe_topic_partitions_request::TopicRequest::default();
    tr.name = TopicName(strb(&topic));
    dtp.topics = vec![tr];
    let r: DescribeTopicPartitionsResponse = c.call(ApiKey::DescribeTopicPartitions, v(ApiKey::DescribeTopicPartitions), &dtp);
    assert_eq!(r.topics[0].partitions.len(), 3, "[{label}] DescribeTopicPartitions: {r:?}");

    let dtv = v(ApiKey::DeleteTopics);
    let mut dt = DeleteTopicsRequest::default();
    dt.timeout_ms = 30_000;
    if dtv >= 6 {
        let mut s = delete_topics_request::DeleteTopicState::default();
        s.name = Some(TopicName(strb(&topic)));
        dt.topics = vec![s];
    } else {
        dt.topic_names = vec![TopicName(strb(&topic))];
    }
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, dtv, &dt);
    assert_eq!(r.responses[0].error_code, 0, "[{label}] DeleteTopics: {r:?}");
}

#[test]
fn java_client_wire_flow_at_negotiated_versions() {
    let b = Broker::start(StartOpts::default().set("group.initial.rebalance.delay.ms", "0"));
    let mut c = Conn::open(&b);

    // A 4.x client opens with ApiVersions v4, which we do not serve: per KIP-511 the broker
    // answers UNSUPPORTED_VERSION in a v0 body that still lists its ApiVersions range, and the
    // client retries with the highest version both support.
    let mut req = ApiVersionsRequest::default();
    req.client_software_name = strb("apache-kafka-java");
    req.client_software_version = strb("4.1.0");
    let our_av = range_of(&advertised(&mut c), ApiKey::ApiVersions).unwrap();
    if our_av.1 < 4 {
        let corr = c.send(ApiKey::ApiVersions, 4, &req, 4);
        let r: ApiVersionsResponse = c.recv(ApiKey::ApiVersions, 0, corr);
        assert_eq!(r.error_code, 35, "ApiVersions v4 must get UNSUPPORTED_VERSION: {r:?}");
        let av = r.api_keys.iter().find(|k| k.api_key == ApiKey::ApiVersions as i16).expect("ApiVersions range in the error answer");
        assert_eq!((av.min_version, av.max_version), our_av, "range in the UNSUPPORTED_VERSION answer");
    }
    let adv = advertised(&mut c);
    for (label, java4) in [("java4", true), ("java3", false)] {
        let ver = |k: ApiKey| -> i16 {
            let n = REQUIRED.iter().find(|n| n.key == k).unwrap_or_else(|| panic!("{k:?} not in the table"));
            let client = if java4 { n.java4 } else { n.java3 };
            let br = range_of(&adv, k).unwrap_or_else(|| panic!("{k:?} not advertised"));
            negotiate(br, client).unwrap_or_else(|| panic!("{label}: no usable version of {k:?}: ours {br:?}, client {client:?}"))
        };
        java_flow(&b, label, &ver);
    }
}
