//! Produce: validate batches (framing, CRC32C, size), route each partition's batches to its
//! owner shard, and answer once they are persisted per `acks` (0: no answer, 1: written,
//! -1/all: fdatasync'd). A compacted topic refuses records without a key, as Kafka does: only
//! its batches are decoded (and decompressed) for that; the whole batch is refused with
//! INVALID_RECORD and per-record errors (KIP-467). The producer's bytes go to the owner as slices of the request frame,
//! uncopied; the log's writer stamps the offsets in its aligned copy (see `storage::partition_log`).

use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::{join_all, LocalBoxFuture};
use futures::FutureExt;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

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

/// Why a partition's records were refused record by record (INVALID_RECORD): each refused
/// record's index in its batch with its message, and the partition's message.
struct RecordErrors {
    records: Vec<(i32, String)>,
    message: String,
}

/// The records of a compacted topic's batches that have no key, as Kafka reports them.
fn keyless_errors(topic: &str, partition: i32, data: &Bytes) -> Result<Option<RecordErrors>, batch::BatchError> {
    let keyless = batch::keyless_records(data)?;
    if keyless.is_empty() {
        return Ok(None);
    }
    let why = format!("Compacted topic cannot accept message without key in topic partition {topic}-{partition}.");
    let records: Vec<(i32, String)> = keyless.into_iter().map(|i| (i, why.clone())).collect();
    // Kafka's RecordValidationException text, listing at most three RecordError(...)s.
    let shown: Vec<String> = records.iter().take(3).map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')")).collect();
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        records.len(),
        shown.join(", ")
    );
    Ok(Some(RecordErrors { records, message }))
}

pub fn handle(shard: &Rc<Shard>, version: i16, req: ProduceRequest) -> LocalBoxFuture<'static, Option<ResponseKind>> {
    let acks = req.acks;
    let snap = shard.metadata();
    let shards = shard.shards();
    // One slot per partition in request order; work grouped by owner shard.
    let mut slots: Vec<(usize, i32, ProduceOutcome)> = Vec::new();
    let mut record_errors: Vec<(usize, RecordErrors)> = Vec::new();
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
            let compacted = shard.cleanup_policy(meta).1;
            let checked = batch::validate_batches(&records, max).and_then(|summary| {
                let refused = if compacted { keyless_errors(&meta.name, p.index, &records)? } else { None };
                Ok((summary, refused))
            });
            match checked {
                Ok(_) if timestamps_out_of_range(shard, meta, &records) => slots[slot].2 = failed(errors::INVALID_TIMESTAMP),
                Ok((_, Some(refused))) => {
                    slots[slot].2 = failed(batch::BatchError::InvalidRecord.kafka_code());
                    record_errors.push((slot, refused));
                }
                Ok((summary, None)) => {
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
        let mut record_errors = record_errors.into_iter().peekable();
        for (slot, (ti, partition, o)) in slots.into_iter().enumerate() {
            let mut response = PartitionProduceResponse::default()
                .with_index(partition)
                .with_error_code(o.error)
                .with_base_offset(o.base_offset)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(o.log_start_offset);
            if let Some((_, errors)) = record_errors.next_if(|(s, _)| *s == slot) {
                // record_errors and error_message exist from Produce v8.
                if version >= 8 {
                    response = with_record_errors(response, errors);
                }
            }
            topics[ti].partition_responses.push(response);
        }
        Some(ResponseKind::Produce(ProduceResponse::default().with_responses(topics)))
    }
    .boxed_local()
}

fn with_record_errors(response: PartitionProduceResponse, errors: RecordErrors) -> PartitionProduceResponse {
    let records = errors
        .records
        .into_iter()
        .map(|(i, m)| BatchIndexAndErrorMessage::default().with_batch_index(i).with_batch_index_error_message(Some(StrBytes::from_string(m))))
        .collect();
    response.with_record_errors(records).with_error_message(Some(StrBytes::from_string(errors.message)))
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
