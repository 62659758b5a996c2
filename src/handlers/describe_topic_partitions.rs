//! DescribeTopicPartitions (KIP-966, used by the 3.7+ Java Admin.describeTopics): topics and
//! their partitions as Metadata describes them (this broker leads every partition), sorted by
//! name, at most `response_partition_limit` partitions per answer with a cursor to go on.

use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponse, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{BrokerId, DescribeTopicPartitionsRequest, TopicName};

use super::str_bytes;
use crate::protocol::errors;
use crate::shard::Shard;

/// Most partitions in one answer (Kafka's `max.request.partition.size.limit` default).
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let snap = shard.metadata();
    let node = BrokerId(shard.config.node_id);
    let mut names: Vec<String> = if req.topics.is_empty() {
        snap.topics.keys().cloned().collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut budget = req.response_partition_limit.clamp(1, MAX_PARTITIONS_PER_RESPONSE);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| cursor_topic.as_ref().is_none_or(|c| n >= c)) {
        let Some(t) = snap.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                    .with_name(Some(TopicName(str_bytes(name)))),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(TopicName(str_bytes(name))).with_partition_index(0));
            break;
        }
        let first = if cursor_topic.as_deref() == Some(name.as_str()) { cursor_partition } else { 0 };
        let last = t.partitions().min(first.saturating_add(budget));
        let partitions: Vec<_> = (first..last)
            .map(|p| {
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
            })
            .collect();
        budget -= (last - first).max(0);
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name.clone()))))
                .with_topic_id(t.id)
                .with_partitions(partitions),
        );
        if last < t.partitions() {
            next_cursor = Some(Cursor::default().with_topic_name(TopicName(str_bytes(name))).with_partition_index(last));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default().with_topics(topics).with_next_cursor(next_cursor)
}
