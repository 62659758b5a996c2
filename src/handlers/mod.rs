//! One handler per Kafka API. Each validates its request, routes per-partition work to the
//! owning shard through the shard's router, and builds the response. Handlers hold no state.

pub mod api_versions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_groups;
pub mod fetch;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use tracing::error;

use crate::protocol::{self, versions, FrameError};
use crate::shard::Shard;
use crate::storage::LogChunk;

/// A response still being computed; `None` for requests that get no response (acks=0).
pub type PendingResponse = LocalBoxFuture<'static, Option<Response>>;

/// A whole response frame ready for the socket, in chunks: most responses are one encoded
/// buffer; a Fetch response interleaves its encoded fields with the log's own chunks
/// (in-memory batches, segment file ranges), which are never copied into the frame.
pub struct Response {
    pub chunks: Vec<LogChunk>,
}

impl Response {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Response {
    fn from(b: Bytes) -> Response {
        Response { chunks: vec![LogChunk::Mem(b)] }
    }
}

/// Parses a request frame and starts handling it. Ordering-sensitive work (appends) is done
/// before this returns. An error means the connection must be closed.
/// What a handler may know of the connection a request came on.
pub struct ConnContext {
    pub client_host: String,
}

pub fn dispatch(shard: &Rc<Shard>, conn: &ConnContext, frame: Bytes) -> Result<PendingResponse, FrameError> {
    let prefix = protocol::peek_prefix(&frame)?;
    let key = ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApiKey(prefix.api_key))?;
    let version = prefix.api_version;
    let correlation_id = prefix.correlation_id;
    if !versions::is_supported(key, version) {
        if key == ApiKey::ApiVersions && version > 0 {
            // Answer in v0 framing with our ranges, so the client can retry with one of them.
            let body = ResponseKind::ApiVersions(api_versions::response(crate::protocol::errors::UNSUPPORTED_VERSION));
            return Ok(respond(key, 0, correlation_id, async move { Some(body) }.boxed_local()));
        }
        return Err(FrameError::UnsupportedVersion(key, version));
    }
    let mut body = frame;
    let header = protocol::decode_header(key, version, &mut body)?;
    if key == ApiKey::Produce && version < 3 {
        return produce::handle_legacy(version, correlation_id, body);
    }
    let request = protocol::decode_body(key, version, &mut body)?;
    let shard = shard.clone();
    let fut: LocalBoxFuture<'static, Option<ResponseKind>> = match request {
        RequestKind::ApiVersions(_) => {
            async move { Some(ResponseKind::ApiVersions(api_versions::response(0))) }.boxed_local()
        }
        RequestKind::Metadata(r) => metadata::handle(shard, version, r).map(|r| Some(ResponseKind::Metadata(r))).boxed_local(),
        RequestKind::Produce(r) => produce::handle(&shard, version, r),
        RequestKind::Fetch(r) => {
            return Ok(fetch::handle(shard, version, r).map(move |reply| Some(fetch::encode(version, correlation_id, reply))).boxed_local())
        }
        RequestKind::ListOffsets(r) => list_offsets::handle(shard, version, r).map(|r| Some(ResponseKind::ListOffsets(r))).boxed_local(),
        RequestKind::CreateTopics(r) => create_topics::handle(shard, version, r).map(|r| Some(ResponseKind::CreateTopics(r))).boxed_local(),
        RequestKind::DeleteTopics(r) => delete_topics::handle(shard, version, r).map(|r| Some(ResponseKind::DeleteTopics(r))).boxed_local(),
        RequestKind::DescribeCluster(r) => describe_cluster::handle(shard, version, r).map(|r| Some(ResponseKind::DescribeCluster(r))).boxed_local(),
        RequestKind::FindCoordinator(r) => find_coordinator::handle(shard, version, r).map(|r| Some(ResponseKind::FindCoordinator(r))).boxed_local(),
        RequestKind::JoinGroup(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            join_group::handle(shard, version, r, client_id, conn.client_host.clone()).map(|r| Some(ResponseKind::JoinGroup(r))).boxed_local()
        }
        RequestKind::InitProducerId(r) => init_producer_id::handle(shard, version, r).map(|r| Some(ResponseKind::InitProducerId(r))).boxed_local(),
        RequestKind::SyncGroup(r) => sync_group::handle(shard, version, r).map(|r| Some(ResponseKind::SyncGroup(r))).boxed_local(),
        RequestKind::Heartbeat(r) => heartbeat::handle(shard, version, r).map(|r| Some(ResponseKind::Heartbeat(r))).boxed_local(),
        RequestKind::LeaveGroup(r) => leave_group::handle(shard, version, r).map(|r| Some(ResponseKind::LeaveGroup(r))).boxed_local(),
        RequestKind::OffsetCommit(r) => offset_commit::handle(shard, version, r).map(|r| Some(ResponseKind::OffsetCommit(r))).boxed_local(),
        RequestKind::OffsetFetch(r) => offset_fetch::handle(shard, version, r).map(|r| Some(ResponseKind::OffsetFetch(r))).boxed_local(),
        RequestKind::OffsetDelete(r) => offset_delete::handle(shard, version, r).map(|r| Some(ResponseKind::OffsetDelete(r))).boxed_local(),
        RequestKind::ListGroups(r) => list_groups::handle(shard, version, r).map(|r| Some(ResponseKind::ListGroups(r))).boxed_local(),
        RequestKind::DescribeGroups(r) => describe_groups::handle(shard, version, r).map(|r| Some(ResponseKind::DescribeGroups(r))).boxed_local(),
        RequestKind::DeleteGroups(r) => delete_groups::handle(shard, version, r).map(|r| Some(ResponseKind::DeleteGroups(r))).boxed_local(),
        _ => return Err(FrameError::UnsupportedVersion(key, version)),
    };
    Ok(respond(key, version, correlation_id, fut))
}

fn respond(key: ApiKey, version: i16, correlation_id: i32, fut: LocalBoxFuture<'static, Option<ResponseKind>>) -> PendingResponse {
    async move {
        let body = fut.await?;
        match protocol::encode_response(key, version, correlation_id, &body, 256) {
            Ok(b) => Some(Response::from(b)),
            Err(e) => {
                error!("cannot encode {key:?} v{version} response: {e:#}");
                None
            }
        }
    }
    .boxed_local()
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Advertised host and port of this broker.
pub(crate) fn advertised(shard: &Shard) -> (StrBytes, i32) {
    (str_bytes(shard.config.advertised_host()), shard.config.listen.port() as i32)
}
