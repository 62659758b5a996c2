//! OffsetCommit: validated against the group's generation and member, persisted durably in the
//! coordinator shard's group log before the answer.

use std::rc::Rc;

use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    match shard.call_group(&group_id, GroupCall::Commit { req }).await {
        GroupReply::Commit(r) => r,
        _ => unreachable!("commit answered with another kind"),
    }
}
