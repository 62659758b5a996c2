//! AlterConfigs: replaces the whole set of a topic's configs (configs not named go back to
//! their defaults), as Kafka's legacy API does. Also the core shared with
//! IncrementalAlterConfigs: structural checks here, the change itself on shard 0, which
//! persists it and broadcasts it (open logs take the new settings without a restart).
//!
//! Broker resources: Strand has no dynamic broker configs, so changing one is refused with
//! INVALID_REQUEST naming the keys (unknown keys: INVALID_CONFIG); an empty change is accepted.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::{AlterConfigsResourceResponse, AlterConfigsResponse};
use kafka_protocol::messages::AlterConfigsRequest;

use super::describe_configs::{check_broker_name, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::str_bytes;
use crate::config::KNOWN_KEYS;
use crate::metadata::topic_config::AlterOp;
use crate::protocol::errors;
use crate::routing::{AdminOutcome, ShardRequest, ShardResponse, TopicConfigChange};
use crate::shard::Shard;

/// One resource of an alter request, its ops already parsed (or why they could not be).
pub(crate) struct AlterResource {
    pub resource_type: i8,
    pub name: String,
    pub ops: Result<Vec<(String, AlterOp)>, AdminOutcome>,
}

pub(crate) fn refused(error: i16, msg: impl Into<String>) -> AdminOutcome {
    AdminOutcome { error, message: Some(msg.into()) }
}

/// Kafka refuses a resource naming the same config twice.
pub(crate) fn check_duplicate_keys<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), AdminOutcome> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(refused(errors::INVALID_REQUEST, format!("Error due to duplicate config keys: {n}")));
        }
    }
    Ok(())
}

/// Validates and applies `resources`; one outcome per resource, in request order.
pub(crate) async fn alter(shard: &Rc<Shard>, resources: Vec<AlterResource>, replace: bool, validate_only: bool) -> Vec<AdminOutcome> {
    let mut outcomes: Vec<AdminOutcome> = Vec::with_capacity(resources.len());
    let mut seen = HashSet::new();
    let dupes: HashSet<(i8, String)> =
        resources.iter().map(|r| (r.resource_type, r.name.clone())).filter(|k| !seen.insert(k.clone())).collect();
    let mut changes: Vec<(usize, TopicConfigChange)> = Vec::new();
    for r in resources {
        if dupes.contains(&(r.resource_type, r.name.clone())) {
            outcomes.push(refused(errors::INVALID_REQUEST, format!("Duplicate resource {} in request", r.name)));
            continue;
        }
        let ops = match r.ops {
            Ok(ops) => ops,
            Err(o) => {
                outcomes.push(o);
                continue;
            }
        };
        match r.resource_type {
            RESOURCE_TOPIC => {
                changes.push((outcomes.len(), TopicConfigChange { topic: r.name, replace, ops }));
                outcomes.push(AdminOutcome { error: 0, message: None });
            }
            RESOURCE_BROKER => outcomes.push(alter_broker(shard, &r.name, &ops)),
            other => outcomes.push(refused(errors::INVALID_REQUEST, format!("Unsupported resource type {other} (Strand alters TOPIC (2) configs)"))),
        }
    }
    if !changes.is_empty() {
        let (idx, changes): (Vec<usize>, Vec<TopicConfigChange>) = changes.into_iter().unzip();
        let ShardResponse::Admin(res) = shard.call(0, ShardRequest::AlterTopicConfigs { changes, validate_only }).await else {
            unreachable!("alter configs answered with another kind")
        };
        for (i, o) in idx.into_iter().zip(res) {
            outcomes[i] = o;
        }
    }
    outcomes
}

fn alter_broker(shard: &Shard, name: &str, ops: &[(String, AlterOp)]) -> AdminOutcome {
    if let Err(msg) = check_broker_name(shard, name) {
        return refused(errors::INVALID_REQUEST, msg);
    }
    if let Some((k, _)) = ops.iter().find(|(k, _)| !KNOWN_KEYS.contains(&k.as_str())) {
        return refused(errors::INVALID_CONFIG, format!("Unknown broker config: {k}"));
    }
    if ops.is_empty() {
        return AdminOutcome { error: 0, message: None };
    }
    let keys: Vec<&str> = ops.iter().map(|(k, _)| k.as_str()).collect();
    refused(
        errors::INVALID_REQUEST,
        format!(
            "Cannot update these configs dynamically: {}. Strand reads broker settings at start only: set them in the config file or with --set and restart.",
            keys.join(", ")
        ),
    )
}

pub async fn handle(shard: Rc<Shard>, _version: i16, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources = req
        .resources
        .iter()
        .map(|r| {
            let ops = check_duplicate_keys(r.configs.iter().map(|c| c.name.as_str())).and_then(|()| {
                r.configs
                    .iter()
                    .map(|c| match &c.value {
                        Some(v) => Ok((c.name.to_string(), AlterOp::Set(v.to_string()))),
                        None => Err(refused(errors::INVALID_REQUEST, format!("Null value not supported for : {}", c.name.as_str()))),
                    })
                    .collect()
            });
            AlterResource { resource_type: r.resource_type, name: r.resource_name.to_string(), ops }
        })
        .collect();
    let outcomes = alter(&shard, resources, true, req.validate_only).await;
    let responses = req
        .resources
        .iter()
        .zip(outcomes)
        .map(|(r, o)| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(o.error)
                .with_error_message(o.message.map(str_bytes))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
