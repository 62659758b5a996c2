//! DeleteTopics: by name (v0-v5) or by name or id (v6); shard 0 removes them from metadata and
//! every owner shard closes and deletes the logs before the answer.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};
use kafka_protocol::messages::{DeleteTopicsRequest, TopicName};

use super::str_bytes;
use crate::protocol::errors;
use crate::routing::{ShardRequest, ShardResponse};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let snap = shard.metadata();
    // (name if resolvable, id as asked)
    let asked: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => (Some(n.0.to_string()), t.topic_id),
                None => (snap.topic_by_id(t.topic_id).map(|m| m.name.clone()), t.topic_id),
            })
            .collect()
    } else {
        req.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
    };
    let names: Vec<String> = asked.iter().filter_map(|(n, _)| n.clone()).collect();
    let outcomes = if names.is_empty() {
        Vec::new()
    } else {
        match shard.call(0, ShardRequest::DeleteTopics { names }).await {
            ShardResponse::Topics(o) => o,
            _ => unreachable!("delete topics answered with another kind"),
        }
    };
    let mut outcomes = outcomes.into_iter();
    let responses = asked
        .into_iter()
        .map(|(name, id)| match name {
            None => DeletableTopicResult::default()
                .with_topic_id(id)
                .with_error_code(errors::UNKNOWN_TOPIC_ID)
                .with_error_message(Some(str_bytes("This server does not host this topic ID."))),
            Some(n) => {
                let o = outcomes.next().expect("one outcome per named topic");
                DeletableTopicResult::default()
                    .with_name(Some(TopicName(str_bytes(n))))
                    .with_topic_id(o.topic_id)
                    .with_error_code(o.error)
                    .with_error_message(o.message.map(str_bytes))
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
