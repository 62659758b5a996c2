//! InitProducerId for idempotent (non-transactional) producers: a new producer id from shard 0
//! (unique across restarts), or, when the client names its current id and epoch (v3+, KIP-360),
//! the same id with the epoch bumped. Transactional ids are refused: transactions are not served.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::routing::{ShardRequest, ShardResponse};
use crate::shard::Shard;

/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED: the clearest refusal a client reports for a
/// transactional id on a broker without transactions.
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

pub async fn handle(shard: Rc<Shard>, _version: i16, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if req.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
        return resp.with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return resp.with_producer_id(req.producer_id).with_producer_epoch(req.producer_epoch + 1);
    }
    match shard.call(0, ShardRequest::AllocateProducerId).await {
        ShardResponse::ProducerId(Ok(id)) => resp.with_error_code(0).with_producer_id(ProducerId(id)).with_producer_epoch(0),
        ShardResponse::ProducerId(Err(code)) => resp.with_error_code(code),
        _ => unreachable!("producer id answered with another kind"),
    }
}
