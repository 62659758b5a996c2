//! DescribeCluster: this single broker, which is also the controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::{DescribeClusterBroker, DescribeClusterResponse};
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest};

use super::{advertised, str_bytes};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let (host, port) = advertised(&shard);
    let node = BrokerId(shard.config.node_id);
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(shard.metadata().cluster_id.clone()))
        .with_controller_id(node)
        .with_endpoint_type(1)
        .with_brokers(vec![DescribeClusterBroker::default().with_broker_id(node).with_host(host).with_port(port)])
}
