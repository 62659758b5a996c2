//! OffsetFetch: committed offsets of one group (v1-v7) or several groups (v8+), each routed to
//! its coordinator shard. A partition without a commit answers offset -1.

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use crate::routing::{GroupCall, GroupOffsets, GroupReply};
use crate::shard::Shard;

async fn fetch(shard: &Rc<Shard>, group_id: String, topics: Option<Vec<(String, Vec<i32>)>>) -> GroupOffsets {
    match shard.call_group(&group_id.clone(), GroupCall::FetchOffsets { group_id, topics }).await {
        GroupReply::Offsets(o) => o,
        _ => unreachable!("offset fetch answered with another kind"),
    }
}

pub async fn handle(shard: Rc<Shard>, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let calls = req.groups.iter().map(|g| {
            let topics = g.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
            fetch(&shard, g.group_id.0.to_string(), topics)
        });
        let results = join_all(calls).await;
        let groups = req
            .groups
            .iter()
            .zip(results)
            .map(|(g, offsets)| {
                let topics = offsets
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopics::default().with_name(TopicName(str_bytes(t))).with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, o, e, md)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(e)
                                        .with_metadata(md.map(str_bytes))
                                })
                                .collect(),
                        )
                    })
                    .collect();
                OffsetFetchResponseGroup::default().with_group_id(GroupId(g.group_id.0.clone())).with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    let offsets = fetch(&shard, req.group_id.0.to_string(), topics).await;
    let topics = offsets
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(t))).with_partitions(
                parts
                    .into_iter()
                    .map(|(p, o, e, md)| {
                        let mut r = OffsetFetchResponsePartition::default().with_partition_index(p).with_committed_offset(o).with_metadata(md.map(str_bytes));
                        if version >= 5 {
                            r = r.with_committed_leader_epoch(e);
                        }
                        r
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
