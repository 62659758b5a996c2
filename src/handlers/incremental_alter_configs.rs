//! IncrementalAlterConfigs: SET / DELETE / APPEND / SUBTRACT on single topic configs (APPEND
//! and SUBTRACT only on list configs such as cleanup.policy). Shares the checks and the
//! shard-0 change with AlterConfigs (`alter_configs::alter`).

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::{AlterConfigsResourceResponse, IncrementalAlterConfigsResponse};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;

use super::alter_configs::{alter, check_duplicate_keys, refused, AlterResource};
use super::str_bytes;
use crate::metadata::topic_config::AlterOp;
use crate::protocol::errors;
use crate::shard::Shard;

fn op(code: i8, name: &str, value: Option<&str>) -> Result<AlterOp, crate::routing::AdminOutcome> {
    let need = |v: Option<&str>| {
        v.map(str::to_string).ok_or_else(|| refused(errors::INVALID_REQUEST, format!("Null value not supported for : {name}")))
    };
    Ok(match code {
        0 => AlterOp::Set(need(value)?),
        1 => AlterOp::Delete,
        2 => AlterOp::Append(need(value)?),
        3 => AlterOp::Subtract(need(value)?),
        other => return Err(refused(errors::INVALID_REQUEST, format!("Unknown config operation {other} for {name}"))),
    })
}

pub async fn handle(shard: Rc<Shard>, _version: i16, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let resources = req
        .resources
        .iter()
        .map(|r| {
            let ops = check_duplicate_keys(r.configs.iter().map(|c| c.name.as_str())).and_then(|()| {
                r.configs
                    .iter()
                    .map(|c| Ok((c.name.to_string(), op(c.config_operation, c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))?)))
                    .collect()
            });
            AlterResource { resource_type: r.resource_type, name: r.resource_name.to_string(), ops }
        })
        .collect();
    let outcomes = alter(&shard, resources, false, req.validate_only).await;
    let responses = req
        .resources
        .iter()
        .zip(outcomes)
        .map(|(r, o)| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(o.error)
                .with_error_message(o.message.map(str_bytes))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
