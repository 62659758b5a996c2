//! DescribeGroups: state, protocol and members of each group, from its coordinator shard.
//! An unknown group is described as Dead up to v5 and answered GROUP_ID_NOT_FOUND with Kafka's
//! message from v6 on (Kafka 4.0+; the 4.x admin client turns it into GroupIdNotFoundException).

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use crate::routing::{GroupCall, GroupReply};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let calls = req.groups.iter().map(|g| {
        let group_id = g.0.to_string();
        let shard = shard.clone();
        async move {
            match shard.call_group(&group_id.clone(), GroupCall::Describe { group_id: group_id.clone() }).await {
                GroupReply::Describe(d) if version >= 6 && d.group_state.as_str() == "Dead" => not_found(&group_id),
                GroupReply::Describe(d) => d,
                _ => unreachable!("describe answered with another kind"),
            }
        }
    });
    DescribeGroupsResponse::default().with_groups(join_all(calls).await)
}

/// Kafka's v6 answer for a group that does not exist: still state Dead, now with the error.
fn not_found(group_id: &str) -> DescribedGroup {
    DescribedGroup::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_string())))
        .with_group_state(StrBytes::from_static_str("Dead"))
        .with_error_code(crate::groups::coordinator::codes::GROUP_ID_NOT_FOUND)
        .with_error_message(Some(StrBytes::from_string(format!("Group {group_id} not found."))))
}
