//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    match shard.call_group(&group_id, GroupCall::Heartbeat { req }).await {
        GroupReply::Heartbeat(r) => r,
        _ => unreachable!("heartbeat answered with another kind"),
    }
}
