//! ListGroups: asks every shard's coordinator (groups are spread over shards) and merges.

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};

use crate::routing::{GroupCall, GroupReply, ShardRequest, ShardResponse};
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_string()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_string()).collect();
    let calls = (0..shard.shards()).map(|s| shard.call(s, ShardRequest::Group(GroupCall::List { states: states.clone(), types: types.clone() })));
    let mut groups = Vec::new();
    for r in join_all(calls).await {
        match r {
            ShardResponse::Group(GroupReply::List(g)) => groups.extend(g),
            _ => unreachable!("list groups answered with another kind"),
        }
    }
    ListGroupsResponse::default().with_groups(groups)
}
