//! Metadata: this broker, and the requested topics (all when the list is null, or empty in v0).
//! Unknown topics are created when the request allows it and `auto.create.topics.enable` is on.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, TopicName};

use super::{advertised, str_bytes};
use crate::metadata::{validate_topic_name, TopicMeta};
use crate::protocol::errors;
use crate::routing::{NewTopic, ShardRequest};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: MetadataRequest) -> MetadataResponse {
    let mut snap = shard.metadata();
    // Requested names (None: all topics).
    let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match &req.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        // As Kafka: a topic given by a non-zero id is looked up by id, whatever its name field
        // holds (the Java admin client sends an empty name beside the id).
        Some(list) => Some(list.iter().map(|t| (t.name.as_ref().filter(|_| t.topic_id.is_nil()).map(|n| n.0.to_string()), t.topic_id)).collect()),
    };
    let allow_create = (version < 4 || req.allow_auto_topic_creation) && shard.config.auto_create_topics;
    if let Some(list) = &requested {
        let missing: Vec<NewTopic> = list
            .iter()
            .filter_map(|(n, _)| n.as_ref())
            .filter(|n| snap.topic(n).is_none() && validate_topic_name(n).is_ok())
            .map(|n| NewTopic { name: n.clone(), partitions: shard.config.num_partitions, configs: Vec::new() })
            .collect();
        if allow_create && !missing.is_empty() {
            let _ = shard.call(0, ShardRequest::CreateTopics { topics: missing, validate_only: false }).await;
            snap = shard.metadata();
        }
    }
    let node = BrokerId(shard.config.node_id);
    let topics: Vec<MetadataResponseTopic> = match requested {
        None => snap.topics.values().map(|t| describe(t, node)).collect(),
        Some(list) => list
            .into_iter()
            .map(|(name, id)| {
                let meta = match &name {
                    Some(n) => snap.topic(n),
                    None => snap.topic_by_id(id),
                };
                match meta {
                    Some(t) => describe(t, node),
                    None => {
                        let code = match &name {
                            Some(n) if validate_topic_name(n).is_err() => errors::INVALID_TOPIC_EXCEPTION,
                            Some(_) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                            None => errors::UNKNOWN_TOPIC_ID,
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code)
                            .with_name(name.map(|n| TopicName(str_bytes(n))))
                            .with_topic_id(id)
                    }
                }
            })
            .collect(),
    };
    let (host, port) = advertised(&shard);
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default().with_node_id(node).with_host(host).with_port(port)])
        .with_cluster_id(Some(str_bytes(snap.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
}

fn describe(t: &TopicMeta, node: BrokerId) -> MetadataResponseTopic {
    let partitions = (0..t.partitions())
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_topic_id(t.id)
        .with_partitions(partitions)
}
