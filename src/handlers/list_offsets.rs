//! ListOffsets: earliest (-2), latest (-1, the log end offset), max timestamp (-3) and by
//! timestamp (the first record with a timestamp >= the one asked, -1 when there is none).

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::ListOffsetsRequest;

use crate::protocol::errors;
use crate::routing::{ListOffsetsItem, ListOffsetsOutcome, ShardRequest, ShardResponse};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let snap = shard.metadata();
    let mut per_owner: Vec<(Vec<usize>, Vec<ListOffsetsItem>)> = (0..shard.shards()).map(|_| (Vec::new(), Vec::new())).collect();
    let mut slots: Vec<(usize, i32, ListOffsetsOutcome)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        for p in &t.partitions {
            let slot = slots.len();
            slots.push((ti, p.partition_index, ListOffsetsOutcome { error: errors::UNKNOWN_TOPIC_OR_PARTITION, timestamp: -1, offset: -1 }));
            if let Some(owner) = snap.owner(t.name.0.as_str(), p.partition_index) {
                per_owner[owner].0.push(slot);
                per_owner[owner].1.push(ListOffsetsItem { topic: t.name.0.to_string(), partition: p.partition_index, timestamp: p.timestamp });
            }
        }
    }
    let mut idxs = Vec::new();
    let mut calls = Vec::new();
    for (owner, (idx, items)) in per_owner.into_iter().enumerate() {
        if !idx.is_empty() {
            idxs.push(idx);
            calls.push(shard.call(owner, ShardRequest::ListOffsets { items }));
        }
    }
    for (idx, res) in idxs.into_iter().zip(join_all(calls).await) {
        let ShardResponse::ListOffsets(outcomes) = res else { unreachable!("list offsets answered with another kind") };
        for (slot, o) in idx.into_iter().zip(outcomes) {
            slots[slot].2 = o;
        }
    }
    let mut topics: Vec<ListOffsetsTopicResponse> =
        req.topics.iter().map(|t| ListOffsetsTopicResponse::default().with_name(t.name.clone())).collect();
    for (ti, partition, o) in slots {
        topics[ti].partitions.push(
            ListOffsetsPartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(o.error)
                .with_timestamp(o.timestamp)
                .with_offset(o.offset)
                .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
