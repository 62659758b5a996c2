//! CreateTopics: validate names, partition counts, replication factor (this is one broker) and
//! configs, then have shard 0 create them; answers once every shard has opened the new logs.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse};
use kafka_protocol::messages::CreateTopicsRequest;

use super::str_bytes;
use crate::metadata::{topic_config, validate_topic_name};
use crate::protocol::errors;
use crate::routing::{NewTopic, ShardRequest, ShardResponse};
use crate::shard::Shard;

/// Most partitions one topic may have on this broker.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

pub async fn handle(shard: Rc<Shard>, version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let node = shard.config.node_id;
    let mut results: Vec<CreatableTopicResult> = Vec::with_capacity(req.topics.len());
    let mut valid: Vec<(usize, NewTopic)> = Vec::new();
    let mut seen = HashSet::new();
    let dupes: HashSet<String> = req.topics.iter().filter(|t| !seen.insert(t.name.0.to_string())).map(|t| t.name.0.to_string()).collect();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default().with_name(t.name.clone()).with_num_partitions(-1).with_replication_factor(-1);
        let fail = |r: CreatableTopicResult, code: i16, msg: String| r.with_error_code(code).with_error_message(Some(str_bytes(msg)));
        if dupes.contains(&name) {
            results.push(fail(r, errors::INVALID_REQUEST, format!("Create topics request from client contains duplicate topic {name}")));
            continue;
        }
        if let Err(msg) = validate_topic_name(&name) {
            results.push(fail(r, errors::INVALID_TOPIC_EXCEPTION, msg));
            continue;
        }
        let partitions = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                results.push(fail(r, errors::INVALID_REQUEST, "Both numPartitions or replicationFactor and replicasAssignments were set.".into()));
                continue;
            }
            if t.assignments.iter().any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node) {
                results.push(fail(r, errors::INVALID_REPLICA_ASSIGNMENT, format!("Replica assignments may only name broker {node}.")));
                continue;
            }
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            shard.config.num_partitions
        } else {
            t.num_partitions
        };
        if partitions < 1 || partitions > MAX_PARTITIONS_PER_TOPIC {
            results.push(fail(r, errors::INVALID_PARTITIONS, format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}.")));
            continue;
        }
        if !matches!(t.replication_factor, -1 | 1) {
            results.push(fail(
                r,
                errors::INVALID_REPLICATION_FACTOR,
                format!("Unable to replicate the partition {} time(s): The target replication factor of {} cannot be reached because only 1 broker(s) are registered.", t.replication_factor, t.replication_factor),
            ));
            continue;
        }
        let mut configs = Vec::with_capacity(t.configs.len());
        let mut bad = None;
        for c in &t.configs {
            let Some(value) = c.value.as_ref() else {
                bad = Some(format!("Null value not supported for topic configs: {}", c.name));
                break;
            };
            match topic_config::validate(c.name.as_str(), value.as_str()) {
                Ok(v) => configs.push((c.name.to_string(), v)),
                Err(msg) => {
                    bad = Some(msg);
                    break;
                }
            }
        }
        if let Some(msg) = bad {
            results.push(fail(r, errors::INVALID_CONFIG, msg));
            continue;
        }
        r = r.with_num_partitions(partitions).with_replication_factor(1);
        if version >= 5 {
            r = r.with_configs(Some(
                configs
                    .iter()
                    .map(|(k, v)| CreatableTopicConfigs::default().with_name(str_bytes(k.clone())).with_value(Some(str_bytes(v.clone()))).with_config_source(1))
                    .collect(),
            ));
        }
        valid.push((results.len(), NewTopic { name, partitions, configs }));
        results.push(r);
    }
    if !valid.is_empty() {
        let (idx, topics): (Vec<usize>, Vec<NewTopic>) = valid.into_iter().unzip();
        let res = shard.call(0, ShardRequest::CreateTopics { topics, validate_only: req.validate_only }).await;
        let ShardResponse::Topics(outcomes) = res else { unreachable!("create topics answered with another kind") };
        for (i, o) in idx.into_iter().zip(outcomes) {
            let r = std::mem::take(&mut results[i]);
            results[i] = if o.error != 0 {
                r.with_error_code(o.error).with_error_message(o.message.map(str_bytes)).with_num_partitions(-1).with_replication_factor(-1).with_configs(None)
            } else {
                r.with_topic_id(o.topic_id)
            };
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}
