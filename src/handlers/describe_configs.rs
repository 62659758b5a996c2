//! DescribeConfigs: the configs of topics (every topic config, the broker-level value when the
//! topic does not set it) and of this broker (its settings, all read-only: Strand has no
//! dynamic broker configs). Answered from the local metadata snapshot; no routing.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::DescribeConfigsRequest;

use super::str_bytes;
use crate::config::KNOWN_KEYS;
use crate::metadata::topic_config::{self, Source, TOPIC_CONFIGS};
use crate::protocol::errors;
use crate::shard::Shard;

/// Kafka's ConfigResource.Type codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Checks a BROKER resource name: this broker's id, or "" (cluster-wide defaults).
pub fn check_broker_name(shard: &Shard, name: &str) -> Result<(), String> {
    let node = shard.config.node_id.to_string();
    if name.is_empty() || name == node {
        Ok(())
    } else {
        Err(format!("Unexpected broker id, expected {node} or empty string, but received {name}"))
    }
}

fn synonym(name: &str, value: &str, source: Source) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default().with_name(str_bytes(name)).with_value(Some(str_bytes(value))).with_source(source.code())
}

pub async fn handle(shard: Rc<Shard>, _version: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let snap = shard.metadata();
    let broker = &shard.config;
    let with_synonyms = req.include_synonyms;
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            // Null (or empty, as Kafka treats it) asks for every config.
            let wanted = |k: &str| r.configuration_keys.as_ref().is_none_or(|keys| keys.is_empty() || keys.iter().any(|w| w.as_str() == k));
            let result = DescribeConfigsResult::default().with_resource_type(r.resource_type).with_resource_name(r.resource_name.clone());
            let fail = |code: i16, msg: String| result.clone().with_error_code(code).with_error_message(Some(str_bytes(msg)));
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = snap.topic(&name) else {
                        return fail(errors::UNKNOWN_TOPIC_OR_PARTITION, format!("The topic '{name}' does not exist."));
                    };
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|d| wanted(d.name))
                        .map(|d| {
                            let (value, source) = topic_config::effective(topic, d, broker);
                            let mut e = DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(d.name))
                                .with_value(Some(str_bytes(value.clone())))
                                .with_config_source(source.code())
                                .with_config_type(d.kind.code());
                            if with_synonyms {
                                // In order of precedence: the topic's, the broker's, the default.
                                if source == Source::Topic {
                                    e.synonyms.push(synonym(d.name, &value, Source::Topic));
                                }
                                let (bv, bsource) = topic_config::broker_level(d, broker);
                                if bsource == Source::StaticBroker {
                                    e.synonyms.push(synonym(d.broker_key, &bv, Source::StaticBroker));
                                }
                                // The default the broker runs with (Strand's own where it differs
                                // from Kafka's, e.g. log.preallocate); none without a broker key.
                                let default = if bsource == Source::Default { bv.as_str() } else { d.default };
                                if !d.broker_key.is_empty() {
                                    e.synonyms.push(synonym(d.broker_key, default, Source::Default));
                                }
                            }
                            e
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => {
                    if let Err(msg) = check_broker_name(&shard, &name) {
                        return fail(errors::INVALID_REQUEST, msg);
                    }
                    if name.is_empty() {
                        // No dynamic cluster-wide defaults exist.
                        return result;
                    }
                    let configs = KNOWN_KEYS
                        .iter()
                        .filter(|k| wanted(k))
                        .filter_map(|k| {
                            let (value, kind) = broker.value_of(k)?;
                            let source = if broker.is_explicit(k) { Source::StaticBroker } else { Source::Default };
                            let mut e = DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(*k))
                                .with_value(Some(str_bytes(value.clone())))
                                .with_read_only(true)
                                .with_config_source(source.code())
                                .with_config_type(kind.code());
                            if with_synonyms {
                                e.synonyms.push(synonym(k, &value, source));
                            }
                            Some(e)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => fail(errors::INVALID_REQUEST, format!("Unsupported resource type {other} (Strand describes TOPIC (2) and BROKER (4))")),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
