//! OffsetDelete: removes committed offsets of topics the group is not subscribed to.

use std::rc::Rc;

use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    match shard.call_group(&group_id, GroupCall::DeleteOffsets { req }).await {
        GroupReply::DeleteOffsets(r) => r,
        _ => unreachable!("offset delete answered with another kind"),
    }
}
