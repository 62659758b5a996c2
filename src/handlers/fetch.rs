//! Fetch: read whole batches from each partition's owner shard; when fewer than `min_bytes` are
//! available, park on the owners until an append arrives or `max_wait_ms` passes (no polling).
//! Honours `partition_max_bytes` and the response-level `max_bytes`, always returning at least
//! one batch when data exists.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::{join_all, select, select_all};
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};

use crate::protocol::errors;
use crate::routing::{FetchItem, FetchOutcome, ShardRequest, ShardResponse};
use crate::shard::Shard;

/// Longest a fetch may park, whatever the client asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

struct Wanted {
    topic_idx: usize,
    partition: i32,
    /// `None` when the topic is unknown (answered with an error, never routed).
    owner: Option<usize>,
    item: FetchItem,
}

pub async fn handle(shard: Rc<Shard>, version: i16, req: FetchRequest) -> FetchResponse {
    if req.session_id != 0 {
        // Sessions are not kept: the client falls back to full fetch requests.
        return FetchResponse::default().with_error_code(FETCH_SESSION_ID_NOT_FOUND).with_session_id(0);
    }
    let snap = shard.metadata();
    let mut topics_out: Vec<(TopicName, uuid::Uuid)> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    for t in &req.topics {
        let meta = if version >= 13 { snap.topic_by_id(t.topic_id) } else { snap.topic(t.topic.0.as_str()) };
        let ti = topics_out.len();
        topics_out.push((t.topic.clone(), t.topic_id));
        for p in &t.partitions {
            let name = meta.map(|m| m.name.clone()).unwrap_or_default();
            let owner = meta.and_then(|m| snap.owner(&m.name, p.partition));
            wanted.push(Wanted {
                topic_idx: ti,
                partition: p.partition,
                owner,
                item: FetchItem {
                    topic: name,
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                },
            });
        }
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
    let mut responses: Vec<FetchableTopicResponse> = topics_out
        .into_iter()
        .map(|(name, id)| {
            let r = FetchableTopicResponse::default().with_topic_id(id);
            if version >= 13 { r } else { r.with_topic(name) }
        })
        .collect();
    for (w, o) in wanted.iter().zip(outcomes.iter_mut()) {
        let error = if w.owner.is_none() { unknown } else { o.error };
        let mut records = std::mem::take(&mut o.records);
        if !records.is_empty() {
            if !first && o.bytes > budget {
                records.clear();
            } else {
                budget = budget.saturating_sub(o.bytes);
                first = false;
            }
        }
        let records = concat(records);
        let hw = if w.owner.is_none() { -1 } else { o.high_watermark };
        responses[w.topic_idx].partitions.push(
            PartitionData::default()
                .with_partition_index(w.partition)
                .with_error_code(error)
                .with_high_watermark(hw)
                .with_last_stable_offset(hw)
                .with_log_start_offset(if w.owner.is_none() { -1 } else { o.log_start_offset })
                .with_aborted_transactions(if version >= 4 { Some(Vec::new()) } else { None })
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(records)),
        );
    }
    FetchResponse::default().with_responses(responses).with_session_id(0)
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

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap(),
        _ => {
            let mut b = BytesMut::with_capacity(chunks.iter().map(|c| c.len()).sum());
            for c in chunks {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    }
}
