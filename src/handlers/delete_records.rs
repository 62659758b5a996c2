//! DeleteRecords: moves the log start offset of partitions forward (-1: to the high watermark);
//! each owner shard deletes the segments wholly below it in the background. Answers the new low
//! watermark, OFFSET_OUT_OF_RANGE past the high watermark, UNKNOWN_TOPIC_OR_PARTITION.

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult};
use kafka_protocol::messages::DeleteRecordsRequest;

use crate::protocol::errors;
use crate::routing::{DeleteRecordsItem, DeleteRecordsOutcome, ShardRequest, ShardResponse};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let snap = shard.metadata();
    let mut per_owner: Vec<(Vec<usize>, Vec<DeleteRecordsItem>)> = (0..shard.shards()).map(|_| (Vec::new(), Vec::new())).collect();
    let mut slots: Vec<(usize, i32, DeleteRecordsOutcome)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        for p in &t.partitions {
            let slot = slots.len();
            let mut outcome = DeleteRecordsOutcome { error: errors::UNKNOWN_TOPIC_OR_PARTITION, low_watermark: -1 };
            match snap.owner(t.name.0.as_str(), p.partition_index) {
                Some(_) if p.offset < -1 => outcome.error = errors::OFFSET_OUT_OF_RANGE,
                Some(owner) => {
                    per_owner[owner].0.push(slot);
                    per_owner[owner].1.push(DeleteRecordsItem { topic: t.name.0.to_string(), partition: p.partition_index, offset: p.offset });
                }
                None => {}
            }
            slots.push((ti, p.partition_index, outcome));
        }
    }
    let mut idxs = Vec::new();
    let mut calls = Vec::new();
    for (owner, (idx, items)) in per_owner.into_iter().enumerate() {
        if !idx.is_empty() {
            idxs.push(idx);
            calls.push(shard.call(owner, ShardRequest::DeleteRecords { items }));
        }
    }
    for (idx, res) in idxs.into_iter().zip(join_all(calls).await) {
        let ShardResponse::DeleteRecords(outcomes) = res else { unreachable!("delete records answered with another kind") };
        for (slot, o) in idx.into_iter().zip(outcomes) {
            slots[slot].2 = o;
        }
    }
    let mut topics: Vec<DeleteRecordsTopicResult> =
        req.topics.iter().map(|t| DeleteRecordsTopicResult::default().with_name(t.name.clone())).collect();
    for (ti, partition, o) in slots {
        topics[ti].partitions.push(
            DeleteRecordsPartitionResult::default()
                .with_partition_index(partition)
                .with_low_watermark(o.low_watermark)
                .with_error_code(o.error),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
