//! `strand perf sink`: a Kafka endpoint that acknowledges Produce requests at once and
//! discards their data, so the generator's own ceiling can be measured.
//!
//! Owns nothing but sockets: one thread per connection reads frames and answers
//! ApiVersions, Metadata (any topic asked for exists with `--partitions` partitions, led by
//! this endpoint), InitProducerId (unless `--no-init-producer-id`) and Produce (per `acks`; offsets count up per partition of
//! the connection). Record batches are not validated. Anything else closes the connection.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::metadata_response::{MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, BrokerId, ProducerId, RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::client;

/// Node id the sink reports for itself.
const NODE_ID: i32 = 0;
/// Largest request frame accepted (Kafka's socket.request.max.bytes).
const MAX_REQUEST_BYTES: usize = 104_857_600;
/// Read buffer per connection.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// What the sink answers, as advertised in ApiVersions.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
];

#[derive(clap::Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// Partitions reported for every topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Do not offer InitProducerId (as a broker without idempotent producers).
    #[arg(long = "no-init-producer-id")]
    pub no_init_producer_id: bool,
}

struct SinkState {
    addr: SocketAddr,
    /// What ApiVersions advertises (a subset of [`SERVED`]).
    apis: Vec<(ApiKey, i16, i16)>,
    partitions: i32,
    topics: Mutex<HashMap<String, uuid::Uuid>>,
    next_producer_id: AtomicI64,
}

impl SinkState {
    fn topic_id(&self, name: &str) -> uuid::Uuid {
        *self.topics.lock().unwrap().entry(name.to_string()).or_insert_with(uuid::Uuid::new_v4)
    }
}

pub fn run(a: SinkArgs) -> Result<()> {
    if a.partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let addr = a
        .listen
        .to_socket_addrs()
        .with_context(|| format!("invalid --listen {:?}", a.listen))?
        .next()
        .ok_or_else(|| anyhow!("--listen {:?} resolves to no address", a.listen))?;
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let apis = SERVED.iter().copied().filter(|(k, _, _)| !(a.no_init_producer_id && *k == ApiKey::InitProducerId)).collect();
    let state = Arc::new(SinkState { addr, apis, partitions: a.partitions, topics: Mutex::new(HashMap::new()), next_producer_id: AtomicI64::new(1000) });
    eprintln!("strand perf sink listening on {addr} ({} partition(s) per topic)", a.partitions);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let st = state.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(st, stream) {
                tracing::debug!("sink connection ended: {e:#}");
            }
        });
    }
    Ok(())
}

fn serve(st: Arc<SinkState>, stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut rbuf = BytesMut::new();
    loop {
        let mut frame = match client::read_frame(&mut reader, &mut rbuf) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if frame.len() > MAX_REQUEST_BYTES || frame.len() < 8 {
            bail!("bad request frame of {} bytes", frame.len());
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
        let key = ApiKey::try_from(key).map_err(|_| anyhow!("unknown API key {key}"))?;
        let Some(&(_, lo, hi)) = st.apis.iter().find(|(k, _, _)| *k == key) else {
            bail!("{key:?} is not served by the sink");
        };
        if version < lo || version > hi {
            if key == ApiKey::ApiVersions {
                let body = api_versions(&st.apis, 35);
                respond(&mut out, &mut buf, key, 0, correlation_id, &ResponseKind::ApiVersions(body))?;
                continue;
            }
            bail!("{key:?} v{version} is not served by the sink");
        }
        let _header = RequestHeader::decode(&mut frame, key.request_header_version(version))?;
        let req = RequestKind::decode(key, &mut frame, version)?;
        let resp = match req {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(&st.apis, 0)),
            RequestKind::Metadata(r) => {
                let names: Vec<String> = match r.topics {
                    Some(list) if !(list.is_empty() && version == 0) => list.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect(),
                    _ => st.topics.lock().unwrap().keys().cloned().collect(),
                };
                let topics = names
                    .into_iter()
                    .map(|n| {
                        let id = st.topic_id(&n);
                        MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(n)))).with_topic_id(id).with_partitions(
                            (0..st.partitions)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(NODE_ID))
                                        .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                        .with_isr_nodes(vec![BrokerId(NODE_ID)])
                                })
                                .collect(),
                        )
                    })
                    .collect();
                ResponseKind::Metadata(
                    MetadataResponse::default()
                        .with_brokers(vec![MetadataResponseBroker::default()
                            .with_node_id(BrokerId(NODE_ID))
                            .with_host(StrBytes::from_string(st.addr.ip().to_string()))
                            .with_port(st.addr.port() as i32)])
                        .with_cluster_id(Some(StrBytes::from_static_str("strand-perf-sink")))
                        .with_controller_id(BrokerId(NODE_ID))
                        .with_topics(topics),
                )
            }
            RequestKind::InitProducerId(_) => ResponseKind::InitProducerId(
                InitProducerIdResponse::default().with_producer_id(ProducerId(st.next_producer_id.fetch_add(1, Ordering::Relaxed))).with_producer_epoch(0),
            ),
            RequestKind::Produce(r) => {
                if r.acks == 0 {
                    continue;
                }
                let topics = r
                    .topic_data
                    .into_iter()
                    .map(|t| {
                        let name = t.name.0.to_string();
                        let parts = t
                            .partition_data
                            .into_iter()
                            .map(|p| {
                                let n = p.records.as_ref().map(count_records).unwrap_or(0);
                                let next = offsets.entry((name.clone(), p.index)).or_insert(0);
                                let base = *next;
                                *next += n;
                                PartitionProduceResponse::default().with_index(p.index).with_base_offset(base).with_log_start_offset(0)
                            })
                            .collect();
                        TopicProduceResponse::default().with_name(t.name).with_topic_id(t.topic_id).with_partition_responses(parts)
                    })
                    .collect();
                ResponseKind::Produce(ProduceResponse::default().with_responses(topics))
            }
            _ => bail!("unexpected request"),
        };
        respond(&mut out, &mut buf, key, version, correlation_id, &resp)?;
    }
}

/// Records in the batches of `records` (from each header's lastOffsetDelta).
fn count_records(records: &Bytes) -> i64 {
    let mut n = 0;
    let mut at = 0;
    while records.len() - at >= client::BATCH_HEADER_LEN {
        let b = &records[at..];
        let len = i32::from_be_bytes(b[8..12].try_into().unwrap());
        let delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        if len < 0 {
            break;
        }
        n += delta as i64 + 1;
        at += len as usize + 12;
        if at > records.len() {
            break;
        }
    }
    n
}

fn api_versions(apis: &[(ApiKey, i16, i16)], error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(
        apis.iter().map(|&(k, lo, hi)| ApiVersion::default().with_api_key(k as i16).with_min_version(lo).with_max_version(hi)).collect(),
    )
}

fn respond(out: &mut TcpStream, buf: &mut BytesMut, key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind) -> Result<()> {
    buf.clear();
    buf.put_i32(0);
    let hv = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
    ResponseHeader::default().with_correlation_id(correlation_id).encode(buf, hv)?;
    body.encode(buf, version)?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    out.write_all(buf)?;
    Ok(())
}
