//! DeleteGroups: deletes empty groups and their committed offsets (NON_EMPTY_GROUP otherwise).

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let calls = req.groups_names.iter().map(|g| {
        let group_id = g.0.to_string();
        let shard = shard.clone();
        async move {
            match shard.call_group(&group_id.clone(), GroupCall::Delete { group_id }).await {
                GroupReply::Delete(code) => code,
                _ => unreachable!("delete group answered with another kind"),
            }
        }
    });
    let codes = join_all(calls).await;
    let results = req.groups_names.iter().zip(codes).map(|(g, c)| DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(c)).collect();
    DeleteGroupsResponse::default().with_results(results)
}
