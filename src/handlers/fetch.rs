//! Fetch: read whole batches from each partition's owner shard; when fewer than `min_bytes` are
//! available, park on the owners until an append arrives or `max_wait_ms` passes (no polling).
//! Honours `partition_max_bytes` and the response-level `max_bytes`, always returning at least
//! one batch when data exists. Incremental fetch sessions (KIP-227) are kept per shard in
//! `fetch_session`: a session's partitions are fetched without being resent, and only the
//! partitions with news are answered.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::{join_all, select, select_all};
use futures::FutureExt;
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::fetch_session::{PartitionParams, PartitionResult, PlannedPartition, SessionPartition, SessionTopic};
use super::Response;
use crate::storage::LogChunk;

use crate::protocol::errors;
use crate::routing::{FetchItem, FetchOutcome, ShardRequest, ShardResponse};
use crate::shard::Shard;

/// Longest a fetch may park, whatever the client asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

struct Wanted {
    topic_idx: usize,
    partition: i32,
    /// `None` when the topic is unknown (answered with an error, never routed).
    owner: Option<usize>,
    item: FetchItem,
}

pub async fn handle(shard: Rc<Shard>, version: i16, req: FetchRequest) -> FetchReply {
    let topic_ids = version >= 13;
    let key_of = |name: &TopicName, id: uuid::Uuid| if topic_ids { SessionTopic::Id(id) } else { SessionTopic::Name(Arc::from(name.0.as_str())) };
    let mut requested = Vec::with_capacity(req.topics.iter().map(|t| t.partitions.len()).sum());
    for t in &req.topics {
        let topic = key_of(&t.topic, t.topic_id);
        for p in &t.partitions {
            requested.push(PlannedPartition {
                key: SessionPartition { topic: topic.clone(), partition: p.partition },
                params: PartitionParams {
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: p.partition_max_bytes,
                    log_start_offset: p.log_start_offset,
                    current_leader_epoch: p.current_leader_epoch,
                },
            });
        }
    }
    let forgotten: Vec<SessionPartition> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let topic = key_of(&t.topic, t.topic_id);
            t.partitions.iter().map(move |&p| SessionPartition { topic: topic.clone(), partition: p })
        })
        .collect();
    // Sessions exist from v7; earlier requests carry id 0 / epoch -1 (sessionless) by default.
    let plan = shard.fetch_sessions.borrow_mut().begin(req.session_id, req.session_epoch, topic_ids, requested, &forgotten, Instant::now());
    let plan = match plan {
        Ok(plan) => plan,
        Err(code) => return FetchReply::error(code),
    };

    let snap = shard.metadata();
    let mut topics_out: Vec<(StrBytes, uuid::Uuid)> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::with_capacity(plan.partitions.len());
    let mut last_topic: Option<&SessionTopic> = None;
    for pp in &plan.partitions {
        let meta = match &pp.key.topic {
            SessionTopic::Id(id) => snap.topic_by_id(*id),
            SessionTopic::Name(n) => snap.topic(n),
        };
        // Consecutive partitions of one topic share a topic entry in the response.
        if last_topic != Some(&pp.key.topic) {
            let (name, id) = match &pp.key.topic {
                SessionTopic::Id(id) => (meta.map(|m| StrBytes::from_string(m.name.clone())).unwrap_or_default(), *id),
                SessionTopic::Name(n) => (StrBytes::from_string(n.to_string()), meta.map(|m| m.id).unwrap_or_default()),
            };
            topics_out.push((name, id));
            last_topic = Some(&pp.key.topic);
        }
        let name = meta.map(|m| m.name.clone()).unwrap_or_default();
        let owner = meta.and_then(|m| snap.owner(&m.name, pp.key.partition));
        wanted.push(Wanted {
            topic_idx: topics_out.len() - 1,
            partition: pp.key.partition,
            owner,
            item: FetchItem {
                topic: name,
                partition: pp.key.partition,
                offset: pp.params.fetch_offset,
                max_bytes: pp.params.partition_max_bytes.max(0) as usize,
            },
        });
    }
    let unknown = if version >= 13 { errors::UNKNOWN_TOPIC_ID } else { errors::UNKNOWN_TOPIC_OR_PARTITION };
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut outcomes = loop {
        let outcomes = fetch_round(&shard, &wanted).await;
        let total: usize = outcomes.iter().map(|o| o.bytes).sum();
        let any_error = outcomes.iter().zip(&wanted).any(|(o, w)| w.owner.is_some() && o.error != 0);
        let now = Instant::now();
        if total >= min_bytes.max(1) || any_error || now >= deadline || min_bytes == 0 {
            break outcomes;
        }
        // Park on every owner until one of the partitions grows or the deadline passes.
        let mut by_owner: Vec<Vec<(String, i32, i64)>> = vec![Vec::new(); shard.shards()];
        for (w, o) in wanted.iter().zip(&outcomes) {
            if let Some(owner) = w.owner {
                // Wake on anything appended after what this round saw.
                let from = o.high_watermark.max(w.item.offset);
                by_owner[owner].push((w.item.topic.clone(), w.partition, from));
            }
        }
        let waits: Vec<_> = by_owner
            .into_iter()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .map(|(owner, items)| shard.call(owner, ShardRequest::WaitForData { items, deadline }))
            .collect();
        if waits.is_empty() {
            break outcomes;
        }
        let timer = glommio::timer::sleep(deadline - now).boxed_local();
        // Whichever comes first: an append on one of the partitions, or the deadline.
        let _ = select(select_all(waits), timer).await;
    };

    // Response-level max_bytes: partitions after the limit get no records this time.
    let mut budget = req.max_bytes.max(0) as usize;
    let mut first = true;
    let mut results = Vec::with_capacity(wanted.len());
    for (w, o) in wanted.iter().zip(outcomes.iter_mut()) {
        if w.owner.is_none() {
            o.error = unknown;
            o.high_watermark = -1;
            o.log_start_offset = -1;
        }
        if !o.records.is_empty() {
            if !first && o.bytes > budget {
                o.records.clear();
            } else {
                budget = budget.saturating_sub(o.bytes);
                first = false;
            }
        }
        results.push(PartitionResult {
            error_code: o.error,
            high_watermark: o.high_watermark,
            last_stable_offset: o.high_watermark,
            log_start_offset: o.log_start_offset,
            has_records: !o.records.is_empty(),
        });
    }
    let outcome = shard.fetch_sessions.borrow_mut().finish(&plan, &results, Instant::now());
    if outcome.error_code != 0 {
        return FetchReply { error: outcome.error_code, session_id: outcome.session_id, topics: Vec::new() };
    }
    let mut reply = FetchReply { error: 0, session_id: outcome.session_id, topics: Vec::with_capacity(topics_out.len()) };
    let mut topic_slot: Vec<Option<usize>> = vec![None; topics_out.len()];
    let mut names: Vec<Option<(StrBytes, uuid::Uuid)>> = topics_out.into_iter().map(Some).collect();
    for ((w, o), include) in wanted.iter().zip(outcomes).zip(outcome.include) {
        if !include {
            continue;
        }
        let slot = *topic_slot[w.topic_idx].get_or_insert_with(|| {
            let (name, id) = names[w.topic_idx].take().unwrap_or_default();
            reply.topics.push(TopicReply { name, id, partitions: Vec::new() });
            reply.topics.len() - 1
        });
        reply.topics[slot].partitions.push(PartitionReply {
            index: w.partition,
            error: o.error,
            high_watermark: o.high_watermark,
            log_start_offset: o.log_start_offset,
            records: o.records,
        });
    }
    reply
}

/// A fetch response before encoding; records stay as the chunks storage handed out.
pub struct FetchReply {
    pub error: i16,
    pub session_id: i32,
    pub topics: Vec<TopicReply>,
}

pub struct TopicReply {
    pub name: StrBytes,
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionReply>,
}

pub struct PartitionReply {
    pub index: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Vec<LogChunk>,
}

impl FetchReply {
    pub fn error(code: i16) -> FetchReply {
        FetchReply { error: code, session_id: 0, topics: Vec::new() }
    }
}

/// Encodes a whole Fetch response frame (v4-v16) by hand so the records are not copied: the
/// frame is the fields around the records, interleaved with the record chunks themselves.
pub fn encode(version: i16, correlation_id: i32, reply: FetchReply) -> Response {
    debug_assert!((4..=16).contains(&version), "fetch v{version} is not served");
    let flexible = version >= 12;
    let mut chunks: Vec<LogChunk> = Vec::with_capacity(2 + reply.topics.iter().map(|t| t.partitions.len() * 2).sum::<usize>());
    let mut buf = BytesMut::with_capacity(256);
    let mut total = 0usize;
    buf.put_i32(correlation_id);
    if flexible {
        buf.put_u8(0); // header tagged fields
    }
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(reply.error);
        buf.put_i32(reply.session_id);
    }
    put_array_len(&mut buf, flexible, reply.topics.len());
    for t in reply.topics {
        if version >= 13 {
            buf.put_slice(t.id.as_bytes());
        } else if flexible {
            put_uvarint(&mut buf, t.name.len() as u64 + 1);
            buf.put_slice(t.name.as_bytes());
        } else {
            buf.put_i16(t.name.len() as i16);
            buf.put_slice(t.name.as_bytes());
        }
        put_array_len(&mut buf, flexible, t.partitions.len());
        for p in t.partitions {
            buf.put_i32(p.index);
            buf.put_i16(p.error);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            put_array_len(&mut buf, flexible, 0); // aborted_transactions
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            let len: usize = p.records.iter().map(|c| c.len()).sum();
            if flexible {
                put_uvarint(&mut buf, len as u64 + 1);
            } else {
                buf.put_i32(len as i32);
            }
            if len > 0 {
                total += buf.len() + len;
                chunks.push(LogChunk::Mem(buf.split().freeze()));
                chunks.extend(p.records.into_iter().filter(|c| !c.is_empty()));
            }
            if flexible {
                buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // response tagged fields
    }
    total += buf.len();
    chunks.push(LogChunk::Mem(buf.freeze()));
    let size = Bytes::copy_from_slice(&(total as i32).to_be_bytes());
    chunks.insert(0, LogChunk::Mem(size));
    Response { chunks }
}

fn put_array_len(buf: &mut BytesMut, flexible: bool, n: usize) {
    if flexible {
        put_uvarint(buf, n as u64 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Reads every wanted partition once, routing to owners in parallel; outcomes in `wanted` order.
async fn fetch_round(shard: &Rc<Shard>, wanted: &[Wanted]) -> Vec<FetchOutcome> {
    let shards = shard.shards();
    let mut per_owner: Vec<(Vec<usize>, Vec<FetchItem>)> = (0..shards).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, w) in wanted.iter().enumerate() {
        if let Some(owner) = w.owner {
            per_owner[owner].0.push(i);
            per_owner[owner].1.push(w.item.clone());
        }
    }
    let mut calls = Vec::new();
    for (owner, (idx, items)) in per_owner.into_iter().enumerate() {
        if !idx.is_empty() {
            calls.push((idx, shard.call(owner, ShardRequest::Fetch { items })));
        }
    }
    let (idxs, futs): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
    let results = join_all(futs).await;
    let mut out: Vec<FetchOutcome> = wanted.iter().map(|_| FetchOutcome { high_watermark: -1, log_start_offset: -1, ..Default::default() }).collect();
    for (idx, res) in idxs.into_iter().zip(results) {
        let ShardResponse::Fetch(outcomes) = res else { unreachable!("fetch answered with another kind") };
        for (i, o) in idx.into_iter().zip(outcomes) {
            out[i] = o;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, BrokerId, ResponseKind};

    fn reply(records: &[Bytes]) -> FetchReply {
        let id = uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788);
        let part = |index: i32, error: i16, recs: Vec<LogChunk>| PartitionReply { index, error, high_watermark: 1000 + index as i64, log_start_offset: 7, records: recs };
        FetchReply {
            error: 0,
            session_id: 99,
            topics: vec![
                TopicReply {
                    name: StrBytes::from_static_str("alpha"),
                    id,
                    partitions: vec![part(0, 0, records.iter().cloned().map(LogChunk::Mem).collect()), part(1, 1, Vec::new())],
                },
                TopicReply { name: StrBytes::from_static_str("b"), id, partitions: vec![part(5, 0, vec![LogChunk::Mem(records[0].clone())])] },
            ],
        }
    }

    fn expected(version: i16, records: &[Bytes]) -> Bytes {
        let r = reply(records);
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let out = if version < 13 {
                    FetchableTopicResponse::default().with_topic(TopicName(t.name))
                } else {
                    FetchableTopicResponse::default().with_topic_id(t.id)
                };
                out.with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            let mut all = BytesMut::new();
                            for c in &p.records {
                                let LogChunk::Mem(b) = c else { unreachable!() };
                                all.extend_from_slice(b);
                            }
                            PartitionData::default()
                                .with_partition_index(p.index)
                                .with_error_code(p.error)
                                .with_high_watermark(p.high_watermark)
                                .with_last_stable_offset(p.high_watermark)
                                .with_log_start_offset(if version >= 5 { p.log_start_offset } else { -1 })
                                .with_aborted_transactions(Some(Vec::new()))
                                .with_preferred_read_replica(BrokerId(-1))
                                .with_records(Some(all.freeze()))
                        })
                        .collect(),
                )
            })
            .collect();
        let body = ResponseKind::Fetch(FetchResponse::default().with_session_id(if version >= 7 { r.session_id } else { 0 }).with_responses(topics));
        crate::protocol::encode_response(ApiKey::Fetch, version, 42, &body, 256).unwrap()
    }

    #[test]
    fn hand_encoded_fetch_matches_kafka_protocol_for_every_served_version() {
        let records = [Bytes::from(vec![7u8; 300]), Bytes::from(vec![9u8; 5])];
        for version in 4..=16 {
            let r = encode(version, 42, reply(&records));
            let mut wire = BytesMut::new();
            for c in &r.chunks {
                let LogChunk::Mem(b) = c else { unreachable!() };
                wire.extend_from_slice(b);
            }
            assert_eq!(wire.freeze(), expected(version, &records), "fetch v{version}");
            // The record chunks are the very buffers handed in, not copies.
            assert!(r.chunks.iter().any(|c| matches!(c, LogChunk::Mem(b) if b.as_ptr() == records[0].as_ptr())));
        }
    }
}
