//! FindCoordinator: every group and transaction coordinator is this broker (v0-v3 single key,
//! v4+ batched `coordinator_keys`).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest};

use super::advertised;
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let (host, port) = advertised(&shard);
    let node = BrokerId(shard.config.node_id);
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| Coordinator::default().with_key(key).with_node_id(node).with_host(host.clone()).with_port(port))
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        FindCoordinatorResponse::default().with_node_id(node).with_host(host).with_port(port)
    }
}
