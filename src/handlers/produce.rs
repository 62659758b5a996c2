//! Produce: validate batches (framing, CRC32C, size), route each partition's batches to its
//! owner shard, and answer once they are persisted per `acks` (0: no answer, 1: written,
//! -1/all: fdatasync'd). The producer's bytes go to the owner as slices of the request frame,
//! uncopied; the log's writer stamps the offsets in its aligned copy (see `storage::partition_log`).

use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ResponseKind, TopicName};

use super::PendingResponse;
use crate::protocol::{errors, FrameError};
use crate::routing::{ProduceItem, ProduceOutcome, ShardRequest, ShardResponse};
use crate::metadata::TopicMeta;
use crate::shard::Shard;
use crate::storage::batch;

fn failed(code: i16) -> ProduceOutcome {
    ProduceOutcome { error: code, base_offset: -1, log_start_offset: -1 }
}

/// Whether a CreateTime timestamp of `records` is outside the topic's
/// `message.timestamp.before.max.ms` / `after.max.ms` window around now: Kafka refuses such
/// batches with INVALID_TIMESTAMP (by default, timestamps more than an hour in the future).
fn timestamps_out_of_range(shard: &Shard, meta: &TopicMeta, records: &[u8]) -> bool {
    if meta.configs.get("message.timestamp.type").is_some_and(|t| t == "LogAppendTime") {
        return false;
    }
    let limit = |key: &str, broker: i64| meta.config_u64(key).map_or(broker, |v| v.min(i64::MAX as u64) as i64);
    let before = limit("message.timestamp.before.max.ms", shard.config.message_timestamp_before_max_ms);
    let after = limit("message.timestamp.after.max.ms", shard.config.message_timestamp_after_max_ms);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    batch::timestamp_out_of_range(records, now, before, after).is_some()
}

pub fn handle(shard: &Rc<Shard>, version: i16, req: ProduceRequest) -> LocalBoxFuture<'static, Option<ResponseKind>> {
    let acks = req.acks;
    let snap = shard.metadata();
    let shards = shard.shards();
    // One slot per partition in request order; work grouped by owner shard.
    let mut slots: Vec<(usize, i32, ProduceOutcome)> = Vec::new();
    let mut names: Vec<(TopicName, uuid::Uuid)> = Vec::with_capacity(req.topic_data.len());
    let mut per_owner: Vec<(Vec<usize>, Vec<ProduceItem>)> = (0..shards).map(|_| (Vec::new(), Vec::new())).collect();
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let meta = if version >= 13 { snap.topic_by_id(topic.topic_id) } else { snap.topic(topic.name.0.as_str()) };
        names.push((topic.name.clone(), topic.topic_id));
        let unknown = if version >= 13 { errors::UNKNOWN_TOPIC_ID } else { errors::UNKNOWN_TOPIC_OR_PARTITION };
        for p in topic.partition_data {
            let slot = slots.len();
            slots.push((ti, p.index, failed(0)));
            if !matches!(acks, -1 | 0 | 1) {
                slots[slot].2 = failed(errors::INVALID_REQUIRED_ACKS);
                continue;
            }
            let Some(meta) = meta else {
                slots[slot].2 = failed(unknown);
                continue;
            };
            let Some(owner) = snap.owner(&meta.name, p.index) else {
                slots[slot].2 = failed(errors::UNKNOWN_TOPIC_OR_PARTITION);
                continue;
            };
            let records = p.records.unwrap_or_default();
            let max = meta.config_u64("max.message.bytes").map(|v| v as usize).unwrap_or(shard.config.message_max_bytes);
            match batch::validate_batches(&records, max) {
                Ok(_) if timestamps_out_of_range(shard, meta, &records) => slots[slot].2 = failed(errors::INVALID_TIMESTAMP),
                Ok(summary) => {
                    let (idx, items) = &mut per_owner[owner];
                    idx.push(slot);
                    items.push(ProduceItem {
                        topic: meta.name.clone(),
                        partition: p.index,
                        data: records,
                        summary,
                    });
                }
                Err(e) => slots[slot].2 = failed(e.kafka_code()),
            }
        }
    }
    // Hand the work to the owners now: this fixes the order of appends.
    let calls: Vec<(Vec<usize>, LocalBoxFuture<'static, ShardResponse>)> = per_owner
        .into_iter()
        .enumerate()
        .filter(|(_, (idx, _))| !idx.is_empty())
        .map(|(owner, (idx, items))| (idx, shard.call(owner, ShardRequest::Produce { items, acks })))
        .collect();
    async move {
        let (idxs, futs): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
        let results = join_all(futs).await;
        if acks == 0 {
            return None;
        }
        for (idx, res) in idxs.into_iter().zip(results) {
            let ShardResponse::Produce(outcomes) = res else { unreachable!("produce answered with another kind") };
            for (slot, o) in idx.into_iter().zip(outcomes) {
                slots[slot].2 = o;
            }
        }
        let mut topics: Vec<TopicProduceResponse> = names
            .into_iter()
            .map(|(name, id)| TopicProduceResponse::default().with_name(name).with_topic_id(id))
            .collect();
        for (ti, partition, o) in slots {
            topics[ti].partition_responses.push(
                PartitionProduceResponse::default()
                    .with_index(partition)
                    .with_error_code(o.error)
                    .with_base_offset(o.base_offset)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(o.log_start_offset),
            );
        }
        Some(ResponseKind::Produce(ProduceResponse::default().with_responses(topics)))
    }
    .boxed_local()
}

/// Produce v0-v2 carry magic v0/v1 message sets, which this broker does not store (as Kafka 4.0):
/// every partition is answered with UNSUPPORTED_FOR_MESSAGE_FORMAT.
pub fn handle_legacy(version: i16, correlation_id: i32, mut body: Bytes) -> Result<PendingResponse, FrameError> {
    let malformed = |what: &str| FrameError::Malformed(kafka_protocol::messages::ApiKey::Produce, version, what.to_string());
    fn need(b: &Bytes, n: usize) -> bool {
        b.remaining() >= n
    }
    if !need(&body, 10) {
        return Err(malformed("truncated header"));
    }
    let acks = body.get_i16();
    let _timeout = body.get_i32();
    let ntopics = body.get_i32();
    if ntopics < 0 || ntopics > 100_000 {
        return Err(malformed("bad topic count"));
    }
    let mut out = BytesMut::new();
    out.put_i32(0); // size, patched below
    out.put_i32(correlation_id);
    out.put_i32(ntopics);
    for _ in 0..ntopics {
        if !need(&body, 2) {
            return Err(malformed("truncated topic"));
        }
        let nlen = body.get_i16();
        if nlen < 0 || !need(&body, nlen as usize + 4) {
            return Err(malformed("bad topic name"));
        }
        let name = body.split_to(nlen as usize);
        let nparts = body.get_i32();
        if nparts < 0 || nparts > 1_000_000 {
            return Err(malformed("bad partition count"));
        }
        out.put_i16(nlen);
        out.put_slice(&name);
        out.put_i32(nparts);
        for _ in 0..nparts {
            if !need(&body, 8) {
                return Err(malformed("truncated partition"));
            }
            let partition = body.get_i32();
            let size = body.get_i32();
            if size < 0 || !need(&body, size as usize) {
                return Err(malformed("bad message set size"));
            }
            body.advance(size as usize);
            out.put_i32(partition);
            out.put_i16(errors::UNSUPPORTED_FOR_MESSAGE_FORMAT);
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0); // throttle_time_ms
    }
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    let frame = out.freeze();
    Ok(async move { (acks != 0).then(|| super::Response::from(frame)) }.boxed_local())
}
