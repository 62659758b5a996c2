//! DescribeGroups: state, protocol and members of each group, from its coordinator shard.
//! An unknown group is described as Dead, as Kafka does.

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let calls = req.groups.iter().map(|g| {
        let group_id = g.0.to_string();
        let shard = shard.clone();
        async move {
            match shard.call_group(&group_id.clone(), GroupCall::Describe { group_id }).await {
                GroupReply::Describe(d) => d,
                _ => unreachable!("describe answered with another kind"),
            }
        }
    });
    DescribeGroupsResponse::default().with_groups(join_all(calls).await)
}
