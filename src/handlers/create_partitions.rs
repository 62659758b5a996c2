//! CreatePartitions: grows topics. New partitions are placed on shards like a new topic's
//! (`metadata::place`), persisted by shard 0, and their logs are open on their owner shards
//! before the answer. Explicit assignments are accepted only when they name this broker alone
//! (one per new partition) and are otherwise ignored: placement is per shard, not per broker.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::{CreatePartitionsResponse, CreatePartitionsTopicResult};
use kafka_protocol::messages::CreatePartitionsRequest;

use super::create_topics::MAX_PARTITIONS_PER_TOPIC;
use super::str_bytes;
use crate::protocol::errors;
use crate::routing::{AdminOutcome, ShardRequest, ShardResponse};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let snap = shard.metadata();
    let node = shard.config.node_id;
    let mut seen = HashSet::new();
    let dupes: HashSet<&str> = req.topics.iter().map(|t| t.name.0.as_str()).filter(|n| !seen.insert(*n)).collect();
    let mut outcomes: Vec<AdminOutcome> = Vec::with_capacity(req.topics.len());
    let mut valid: Vec<(usize, (String, i32))> = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        let fail = |error: i16, msg: String| AdminOutcome { error, message: Some(msg) };
        let current = snap.topic(name).map(|m| m.partitions());
        let outcome = if dupes.contains(name) {
            fail(errors::INVALID_REQUEST, format!("Duplicate topic {name} in request."))
        } else if t.count > MAX_PARTITIONS_PER_TOPIC {
            fail(errors::INVALID_PARTITIONS, format!("Number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}."))
        } else if let (Some(assignments), Some(current)) = (t.assignments.as_ref().filter(|a| !a.is_empty()), current) {
            let adding = t.count - current;
            if adding > 0 && assignments.len() as i32 != adding {
                fail(
                    errors::INVALID_REPLICA_ASSIGNMENT,
                    format!("Increasing the number of partitions by {adding} but {} assignments provided.", assignments.len()),
                )
            } else if assignments.iter().any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node) {
                fail(errors::INVALID_REPLICA_ASSIGNMENT, format!("Replica assignments may only name broker {node}."))
            } else {
                AdminOutcome { error: 0, message: None }
            }
        } else {
            AdminOutcome { error: 0, message: None }
        };
        if outcome.error == 0 {
            valid.push((outcomes.len(), (name.to_string(), t.count)));
        }
        outcomes.push(outcome);
    }
    if !valid.is_empty() {
        let (idx, items): (Vec<usize>, Vec<(String, i32)>) = valid.into_iter().unzip();
        let ShardResponse::Admin(res) = shard.call(0, ShardRequest::CreatePartitions { items, validate_only: req.validate_only }).await else {
            unreachable!("create partitions answered with another kind")
        };
        for (i, o) in idx.into_iter().zip(res) {
            outcomes[i] = o;
        }
    }
    let results = req
        .topics
        .iter()
        .zip(outcomes)
        .map(|(t, o)| {
            CreatePartitionsTopicResult::default().with_name(t.name.clone()).with_error_code(o.error).with_error_message(o.message.map(str_bytes))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
