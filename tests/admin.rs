//! Admin APIs against the real `strand` binary: DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, CreatePartitions, DescribeLogDirs and DescribeTopicPartitions.
//!
//! librdkafka's AdminClient (the `rdkafka` crate) for the calls it has (describe/alter configs,
//! create partitions), raw protocol for the rest and for the error answers (codes and
//! messages), on 1 and 2 shards. Config changes and new partitions must survive a restart, and
//! a config change must reach the live logs (a smaller segment.bytes rolls segments at once).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use common::{Broker, StartOpts};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(30);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", b.bootstrap()).create().expect("admin client")
}

fn opts() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(T)).operation_timeout(Some(T))
}

fn create_topic(b: &Broker, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let res = block_on(admin(b).create_topics(&[nt], &opts())).expect("CreateTopics");
    assert!(res[0].is_ok(), "create {topic}: {:?}", res[0]);
}

/// (value, source) of every config of a topic, via librdkafka.
fn describe_topic(b: &Broker, topic: &str) -> Vec<(String, Option<String>, String)> {
    let res = block_on(admin(b).describe_configs(&[ResourceSpecifier::Topic(topic)], &opts())).expect("DescribeConfigs");
    let r = res.into_iter().next().unwrap().unwrap_or_else(|e| panic!("describe {topic}: {e:?}"));
    r.entries.into_iter().map(|e| (e.name, e.value, format!("{:?}", e.source))).collect()
}

fn value_of(entries: &[(String, Option<String>, String)], name: &str) -> (Option<String>, String) {
    let e = entries.iter().find(|e| e.0 == name).unwrap_or_else(|| panic!("{name} not described: {entries:?}"));
    (e.1.clone(), e.2.clone())
}

fn produce(b: &Broker, topic: &str, partition: i32, values: &[String]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    block_on(async {
        for v in values {
            let r = p.send(FutureRecord::<(), _>::to(topic).partition(partition).payload(v.as_bytes()), T).await;
            assert!(r.is_ok(), "produce to {topic}/{partition}: {r:?}");
        }
    });
}

fn consume(b: &Broker, topic: &str, partition: i32, n: usize) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "admin-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
            Some(Err(e)) => panic!("consume {topic}/{partition}: {e}"),
            None => {}
        }
    }
    got
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".log")).count()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Raw protocol
// ---------------------------------------------------------------------------

struct Conn {
    s: TcpStream,
    corr: i32,
}

impl Conn {
    fn open(b: &Broker) -> Conn {
        let s = TcpStream::connect(b.addr()).expect("connect");
        s.set_read_timeout(Some(T)).unwrap();
        Conn { s, corr: 0 }
    }

    fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> Resp {
        self.corr += 1;
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = self.corr;
        h.client_id = Some(StrBytes::from_static_str("admin-test"));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, key.request_header_version(version)).unwrap();
        req.encode(&mut buf, version).unwrap();
        self.s.write_all(&(buf.len() as i32).to_be_bytes()).unwrap();
        self.s.write_all(&buf).unwrap();
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap_or_else(|e| panic!("no answer to {key:?} v{version}: {e}"));
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).unwrap();
        let mut b = Bytes::from(body);
        let rh = ResponseHeader::decode(&mut b, key.response_header_version(version)).unwrap();
        assert_eq!(rh.correlation_id, self.corr);
        let r = Resp::decode(&mut b, version).unwrap_or_else(|e| panic!("decode {key:?} v{version}: {e:?}"));
        assert_eq!(b.remaining(), 0, "{key:?} v{version}: trailing bytes");
        r
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// IncrementalAlterConfigs of one topic: (key, op, value); returns (code, message).
fn incremental(c: &mut Conn, version: i16, topic: &str, ops: &[(&str, i8, Option<&str>)], validate_only: bool) -> (i16, Option<String>) {
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = ops
        .iter()
        .map(|(k, op, v)| AlterableConfig::default().with_name(s(k)).with_config_operation(*op).with_value(v.map(s)))
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![AlterConfigsResource::default().with_resource_type(2).with_resource_name(s(topic)).with_configs(configs)])
        .with_validate_only(validate_only);
    let r: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, version, &req);
    assert_eq!(r.responses.len(), 1);
    (r.responses[0].error_code, r.responses[0].error_message.as_ref().map(|m| m.to_string()))
}

fn create_partitions(c: &mut Conn, topic: &str, count: i32, validate_only: bool) -> (i16, Option<String>) {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default().with_name(TopicName(s(topic))).with_count(count)])
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &req);
    (r.results[0].error_code, r.results[0].error_message.as_ref().map(|m| m.to_string()))
}

fn describe_raw(c: &mut Conn, version: i16, resource_type: i8, name: &str, keys: Option<&[&str]>) -> kafka_protocol::messages::describe_configs_response::DescribeConfigsResult {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))
            .with_configuration_keys(keys.map(|k| k.iter().map(|k| s(k)).collect()))])
        .with_include_synonyms(true);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, version, &req);
    r.results.into_iter().next().unwrap()
}

fn partition_count(c: &mut Conn, topic: &str) -> usize {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))]));
    let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    r.topics[0].partitions.len()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// librdkafka describe/alter configs; the change reaches the open logs (segment.bytes
/// lowered: the next appends roll segments) and survives a restart.
fn configs_roundtrip(shards: usize) {
    let mut b = Broker::start(StartOpts::default().shards(shards).set("log.roll.ms", "3600000"));
    let topic = "cfg-topic";
    create_topic(&b, topic, 2, &[("retention.ms", "86400000")]);
    let d = describe_topic(&b, topic);
    assert_eq!(d.len(), 33, "every topic config of Kafka 4.1 is described: {d:?}");
    assert_eq!(value_of(&d, "retention.ms"), (Some("86400000".into()), "DynamicTopic".into()));
    assert_eq!(value_of(&d, "segment.bytes"), (Some("1073741824".into()), "Default".into()));
    assert_eq!(value_of(&d, "segment.ms"), (Some("3600000".into()), "StaticBroker".into()));

    // Some data in one segment, then lower segment.bytes (AlterConfigs replaces the whole set).
    let values: Vec<String> = (0..40).map(|i| format!("{i:04}-{}", "x".repeat(1000))).collect();
    produce(&b, topic, 0, &values[..20]);
    let pdir = b.data_dir().join(format!("{topic}-0"));
    assert_eq!(segment_files(&pdir), 1);
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("segment.bytes", "4096").set("cleanup.policy", "delete");
    let res = block_on(admin(&b).alter_configs(&[alter], &opts())).expect("AlterConfigs");
    assert!(res[0].is_ok(), "{:?}", res[0]);
    let d = describe_topic(&b, topic);
    assert_eq!(value_of(&d, "segment.bytes"), (Some("4096".into()), "DynamicTopic".into()));
    assert_eq!(value_of(&d, "retention.ms"), (Some("604800000".into()), "Default".into()), "not named: back to default");
    produce(&b, topic, 0, &values[20..]);
    let rolled = segment_files(&pdir);
    assert!(rolled >= 4, "segment.bytes=4096 must roll the live log without a restart: {rolled} segments");

    // (A bad value is checked with raw AlterConfigs in `raw_admin`: the rdkafka crate's
    // alter_configs reports every resource as Ok, whatever the broker answered.)

    b.restart();
    let d = describe_topic(&b, topic);
    assert_eq!(value_of(&d, "segment.bytes"), (Some("4096".into()), "DynamicTopic".into()), "after restart");
    assert_eq!(value_of(&d, "cleanup.policy"), (Some("delete".into()), "DynamicTopic".into()), "after restart");
    assert_eq!(consume(&b, topic, 0, 40), values, "data intact across the rolls and the restart");
    let meta = std::fs::read_to_string(b.data_dir().join("strand-meta.json")).unwrap();
    assert!(meta.contains("\"segment.bytes\": \"4096\""), "persisted in strand-meta.json: {meta}");

    // Broker resource: read-only settings, the explicit one as STATIC_BROKER_CONFIG.
    let res = block_on(admin(&b).describe_configs(&[ResourceSpecifier::Broker(1)], &opts())).expect("DescribeConfigs broker");
    let r = res.into_iter().next().unwrap().expect("broker configs");
    let roll = r.get("log.roll.ms").expect("log.roll.ms");
    assert_eq!((roll.value.as_deref(), format!("{:?}", roll.source), roll.is_read_only), (Some("3600000"), "StaticBroker".into(), true));
    let np = r.get("num.partitions").expect("num.partitions");
    assert_eq!((np.value.as_deref(), format!("{:?}", np.source)), (Some("1"), "Default".into()));
}

#[test]
fn configs_roundtrip_one_shard() {
    configs_roundtrip(1);
}

#[test]
fn configs_roundtrip_two_shards() {
    configs_roundtrip(2);
}

/// librdkafka CreatePartitions on 2 shards: new partitions land on both shards, take
/// produce and consume, and are still there after a restart.
#[test]
fn create_partitions_two_shards() {
    let mut b = Broker::start(StartOpts::default().shards(2));
    let topic = "grow-topic";
    create_topic(&b, topic, 1, &[]);
    let res = block_on(admin(&b).create_partitions(&[NewPartitions::new(topic, 6)], &opts())).expect("CreatePartitions");
    assert!(res[0].is_ok(), "{:?}", res[0]);
    let mut c = Conn::open(&b);
    assert_eq!(partition_count(&mut c, topic), 6);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(b.data_dir().join("strand-meta.json")).unwrap()).unwrap();
    let placement: Vec<u64> = meta["topics"][topic]["placement"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(placement.len(), 6);
    assert!(placement.contains(&0) && placement.contains(&1), "new partitions spread over both shards: {placement:?}");
    for p in 0..6 {
        let vals: Vec<String> = (0..5).map(|i| format!("p{p}-{i}")).collect();
        produce(&b, topic, p, &vals);
        assert_eq!(consume(&b, topic, p, 5), vals, "partition {p}");
    }
    b.restart();
    let mut c = Conn::open(&b);
    assert_eq!(partition_count(&mut c, topic), 6, "after restart");
    for p in 0..6 {
        assert_eq!(consume(&b, topic, p, 5), (0..5).map(|i| format!("p{p}-{i}")).collect::<Vec<_>>(), "partition {p} after restart");
    }
}

/// Error answers and the raw-protocol-only APIs.
fn raw_admin(shards: usize) {
    let b = Broker::start(StartOpts::default().shards(shards));
    let topic = "raw-admin";
    create_topic(&b, topic, 3, &[]);
    let mut c = Conn::open(&b);

    // IncrementalAlterConfigs: SET/DELETE/APPEND/SUBTRACT and errors.
    assert_eq!(incremental(&mut c, 1, topic, &[("segment.ms", 0, Some("60000")), ("cleanup.policy", 2, Some("compact"))], false), (0, None));
    let d = describe_raw(&mut c, 4, 2, topic, Some(&["segment.ms", "cleanup.policy", "no.such.key"]));
    assert_eq!(d.error_code, 0);
    let got: Vec<(String, Option<String>, i8, i8)> =
        d.configs.iter().map(|e| (e.name.to_string(), e.value.as_ref().map(|v| v.to_string()), e.config_source, e.config_type)).collect();
    assert_eq!(
        got,
        vec![
            ("cleanup.policy".into(), Some("delete,compact".into()), 1, 7),
            ("segment.ms".into(), Some("60000".into()), 1, 5)
        ]
    );
    let synonyms: Vec<(String, i8)> = d.configs[1].synonyms.iter().map(|s| (s.name.to_string(), s.source)).collect();
    assert_eq!(synonyms, vec![("segment.ms".into(), 1), ("log.roll.ms".into(), 5)], "synonyms in order of precedence");
    assert_eq!(incremental(&mut c, 0, topic, &[("cleanup.policy", 3, Some("delete")), ("segment.ms", 1, None)], false), (0, None));
    let d = describe_raw(&mut c, 1, 2, topic, Some(&["segment.ms", "cleanup.policy"]));
    assert_eq!(d.configs[0].value.as_deref().map(|v| v.to_string()), Some("compact".into()));
    assert_eq!((d.configs[1].value.as_ref().map(|v| v.to_string()), d.configs[1].config_source), (Some("604800000".into()), 5));

    let (code, msg) = incremental(&mut c, 1, topic, &[("segment.bytes", 0, Some("12x"))], false);
    assert_eq!(code, 40, "bad value: INVALID_CONFIG");
    let msg = msg.unwrap();
    assert!(msg.contains("segment.bytes") && msg.contains("12x"), "{msg}");
    let (code, msg) = incremental(&mut c, 1, topic, &[("max.message.bytes", 0, Some("-5"))], false);
    assert_eq!(code, 40, "out of range: {msg:?}");
    let (code, msg) = incremental(&mut c, 1, topic, &[("retention.hours", 0, Some("5"))], false);
    assert_eq!((code, msg.as_deref()), (40, Some("Unknown topic config name: retention.hours")));
    let (code, _) = incremental(&mut c, 1, topic, &[("segment.ms", 2, Some("5"))], false);
    assert_eq!(code, 40, "APPEND to a non-list config");
    let (code, _) = incremental(&mut c, 1, topic, &[("segment.ms", 0, Some("5")), ("segment.ms", 1, None)], false);
    assert_eq!(code, 42, "duplicate key: INVALID_REQUEST");
    let (code, _) = incremental(&mut c, 1, topic, &[("segment.ms", 9, Some("5"))], false);
    assert_eq!(code, 42, "unknown operation");
    let (code, _) = incremental(&mut c, 1, "raw-no-such-topic", &[("segment.ms", 0, Some("5"))], false);
    assert_eq!(code, 3, "unknown topic");
    assert_eq!(incremental(&mut c, 1, topic, &[("retention.ms", 0, Some("1000"))], true), (0, None));
    let d = describe_raw(&mut c, 4, 2, topic, Some(&["retention.ms"]));
    assert_eq!(d.configs[0].config_source, 5, "validate_only changed nothing");

    // AlterConfigs (legacy): replaces the whole set; errors per resource.
    {
        use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
        let res = |name: &str, kv: &[(&str, &str)]| {
            AlterConfigsResource::default().with_resource_type(2).with_resource_name(s(name)).with_configs(
                kv.iter().map(|(k, v)| AlterableConfig::default().with_name(s(k)).with_value(Some(s(v)))).collect(),
            )
        };
        let req = AlterConfigsRequest::default().with_resources(vec![
            res(topic, &[("segment.bytes", "lots")]),
            res("raw-no-such-topic", &[("segment.bytes", "4096")]),
            AlterConfigsResource::default().with_resource_type(4).with_resource_name(s("1")).with_configs(vec![
                AlterableConfig::default().with_name(s("num.partitions")).with_value(Some(s("3"))),
            ]),
        ]);
        let r: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, 2, &req);
        let codes: Vec<i16> = r.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![40, 3, 42], "{r:?}");
        let msg = r.responses[0].error_message.as_ref().unwrap().to_string();
        assert!(msg.contains("Invalid value lots for configuration segment.bytes"), "{msg}");
        let req = AlterConfigsRequest::default().with_resources(vec![res(topic, &[("retention.ms", "5000")])]);
        let r: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, 0, &req);
        assert_eq!(r.responses[0].error_code, 0);
        let d = describe_raw(&mut c, 4, 2, topic, Some(&["cleanup.policy", "retention.ms"]));
        let got: Vec<(Option<String>, i8)> = d.configs.iter().map(|e| (e.value.as_ref().map(|v| v.to_string()), e.config_source)).collect();
        assert_eq!(got, vec![(Some("delete".into()), 5), (Some("5000".into()), 1)], "the set was replaced");
    }

    // DescribeConfigs errors.
    assert_eq!(describe_raw(&mut c, 4, 2, "raw-no-such-topic", None).error_code, 3);
    assert_eq!(describe_raw(&mut c, 4, 4, "7", None).error_code, 42, "another broker's id");
    let br = describe_raw(&mut c, 4, 4, "1", Some(&["num.partitions"]));
    assert_eq!((br.error_code, br.configs.len(), br.configs[0].read_only), (0, 1, true));

    // CreatePartitions.
    assert_eq!(create_partitions(&mut c, topic, 3, false).0, 37, "same count: INVALID_PARTITIONS");
    let (code, msg) = create_partitions(&mut c, topic, 2, false);
    assert_eq!(code, 37);
    assert!(msg.unwrap().contains("higher than the requested 2"));
    assert_eq!(create_partitions(&mut c, "raw-no-such-topic", 4, false).0, 3);
    assert_eq!(create_partitions(&mut c, topic, 5, true), (0, None));
    assert_eq!(partition_count(&mut c, topic), 3, "validate_only created nothing");
    assert_eq!(create_partitions(&mut c, topic, 5, false), (0, None));
    assert_eq!(partition_count(&mut c, topic), 5);

    // DescribeLogDirs: sizes from the owner shards.
    let vals: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    produce(&b, topic, 4, &vals);
    for version in [1, 4] {
        let r: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, version, &DescribeLogDirsRequest::default().with_topics(None));
        assert_eq!(r.results.len(), 1);
        let dir = &r.results[0];
        assert_eq!(dir.error_code, 0);
        assert_eq!(Path::new(dir.log_dir.as_str()), std::fs::canonicalize(b.data_dir()).unwrap());
        let t = dir.topics.iter().find(|t| t.name.0.as_str() == topic).expect("topic in log dir");
        let sizes: Vec<(i32, i64)> = t.partitions.iter().map(|p| (p.partition_index, p.partition_size)).collect();
        assert_eq!(sizes.len(), 5, "{sizes:?}");
        assert!(sizes.iter().all(|&(p, s)| if p == 4 { s > 0 } else { s == 0 }), "{sizes:?}");
        if version >= 4 {
            assert!(dir.total_bytes > 0 && dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes, "{dir:?}");
        }
    }
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let req = DescribeLogDirsRequest::default()
        .with_topics(Some(vec![DescribableLogDirTopic::default().with_topic(TopicName(s(topic))).with_partitions(vec![4, 9])]));
    let r: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, 4, &req);
    let parts: Vec<i32> = r.results[0].topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.partition_index)).collect();
    assert_eq!(parts, vec![4], "only existing partitions are listed");

    // DescribeTopicPartitions with a cursor.
    create_topic(&b, "raw-admin-b", 2, &[]);
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let req = DescribeTopicPartitionsRequest::default().with_response_partition_limit(3).with_cursor(cursor.take());
        let r: DescribeTopicPartitionsResponse = c.call(ApiKey::DescribeTopicPartitions, 0, &req);
        for t in &r.topics {
            assert_eq!(t.error_code, 0);
            for p in &t.partitions {
                assert_eq!((p.leader_id.0, p.replica_nodes.len(), p.isr_nodes.len()), (1, 1, 1));
                seen.push((t.name.as_ref().unwrap().0.to_string(), p.partition_index));
            }
        }
        match r.next_cursor {
            Some(nc) => {
                cursor = Some(
                    kafka_protocol::messages::describe_topic_partitions_request::Cursor::default()
                        .with_topic_name(nc.topic_name)
                        .with_partition_index(nc.partition_index),
                )
            }
            None => break,
        }
    }
    let want: Vec<(String, i32)> =
        (0..5).map(|p| (topic.to_string(), p)).chain((0..2).map(|p| ("raw-admin-b".to_string(), p))).collect();
    assert_eq!(seen, want, "every partition once, in order, across pages");
    use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
    let req = DescribeTopicPartitionsRequest::default().with_topics(vec![TopicRequest::default().with_name(TopicName(s("raw-nope")))]);
    let r: DescribeTopicPartitionsResponse = c.call(ApiKey::DescribeTopicPartitions, 0, &req);
    assert_eq!(r.topics[0].error_code, 3);
}

#[test]
fn raw_admin_one_shard() {
    raw_admin(1);
}

#[test]
fn raw_admin_two_shards() {
    raw_admin(2);
}
