//! JoinGroup: routed to the group's coordinator shard, which parks it until the rebalance
//! completes (or answers MEMBER_ID_REQUIRED to a new dynamic member, KIP-394).

use std::rc::Rc;

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: JoinGroupRequest, client_id: String, client_host: String) -> JoinGroupResponse {
    let group_id = req.group_id.0.to_string();
    match shard.call_group(&group_id, GroupCall::Join { version, req, client_id, client_host }).await {
        GroupReply::Join(r) => r,
        _ => unreachable!("join answered with another kind"),
    }
}
