//! LeaveGroup: one member (v0-v2) or a batch of members (v3+) leave; the rest rebalance.

use std::rc::Rc;

use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let group_id = req.group_id.0.to_string();
    match shard.call_group(&group_id, GroupCall::Leave { version, req }).await {
        GroupReply::Leave(r) => r,
        _ => unreachable!("leave answered with another kind"),
    }
}
