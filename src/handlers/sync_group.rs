//! SyncGroup: routed to the coordinator; the leader's assignments are relayed to every member.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.0.to_string();
    match shard.call_group(&group_id, GroupCall::Sync { version, req }).await {
        GroupReply::Sync(r) => r,
        _ => unreachable!("sync answered with another kind"),
    }
}
