//! Cross-shard routing: the messages shards exchange and the `ShardRouter` that carries them.
//!
//! This is the one place cross-core messages are built and sent. Shards share no mutable state:
//! a connection's shard sends the work for partitions it does not own to their owner over a full
//! mesh of glommio shared channels, and awaits the owner's answer. Work for the local shard is run
//! directly, without a message. Sending is synchronous (an unbounded local outbox per peer, drained
//! in order by a pump task), so requests reach a peer in the order they were routed: per-partition
//! produce order across pipelined requests depends on it.

use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use tracing::warn;
use uuid::Uuid;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse,
};

use crate::metadata::MetadataSnapshot;
use crate::storage::batch::BatchesSummary;

/// Capacity of each shard-to-shard channel.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// Produce work for one partition: validated batches, offsets not yet assigned.
#[derive(Debug)]
pub struct ProduceItem {
    pub topic: String,
    pub partition: i32,
    pub data: BytesMut,
    pub summary: BatchesSummary,
}

#[derive(Debug, Clone, Copy)]
pub struct ProduceOutcome {
    pub error: i16,
    pub base_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone)]
pub struct FetchItem {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
}

#[derive(Debug, Default)]
pub struct FetchOutcome {
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches, as stored: in-memory slices or segment file ranges (never copied).
    pub records: Vec<crate::storage::LogChunk>,
    pub bytes: usize,
}

#[derive(Debug, Clone)]
pub struct ListOffsetsItem {
    pub topic: String,
    pub partition: i32,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct ListOffsetsOutcome {
    pub error: i16,
    pub timestamp: i64,
    pub offset: i64,
}

/// A topic to create, already validated by the handler.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct TopicOutcome {
    pub name: String,
    pub error: i16,
    pub message: Option<String>,
    pub topic_id: Uuid,
    pub partitions: i32,
}

/// Work one shard asks of another.
#[derive(Debug)]
pub enum ShardRequest {
    /// Append to partitions owned by the target. `acks` as in the Produce request.
    Produce { items: Vec<ProduceItem>, acks: i16 },
    Fetch { items: Vec<FetchItem> },
    /// Completes when any of the partitions' log end passes its offset, or at the deadline.
    WaitForData { items: Vec<(String, i32, i64)>, deadline: Instant },
    ListOffsets { items: Vec<ListOffsetsItem> },
    /// Install a new metadata snapshot (opening and closing logs as placement says).
    ApplyMetadata { snapshot: Arc<MetadataSnapshot> },
    /// Metadata changes, served by shard 0 only.
    CreateTopics { topics: Vec<NewTopic>, validate_only: bool },
    DeleteTopics { names: Vec<String> },
    /// Work for a consumer group, served by the group's coordinator shard.
    Group(GroupCall),
    /// A new idempotent producer id, served by shard 0.
    AllocateProducerId,
}

/// A group request for the coordinator shard (see `groups::coordinator_shard`).
#[derive(Debug)]
pub enum GroupCall {
    Join { version: i16, req: JoinGroupRequest, client_id: String, client_host: String },
    Sync { version: i16, req: SyncGroupRequest },
    Heartbeat { req: HeartbeatRequest },
    Leave { version: i16, req: LeaveGroupRequest },
    Commit { req: OffsetCommitRequest },
    /// Committed offsets of the asked partitions, or of all when `topics` is None.
    FetchOffsets { group_id: String, topics: Option<Vec<(String, Vec<i32>)>> },
    DeleteOffsets { req: OffsetDeleteRequest },
    Describe { group_id: String },
    List { states: Vec<String>, types: Vec<String> },
    Delete { group_id: String },
}

/// Committed offsets per topic: (partition, offset, leader epoch, metadata).
pub type GroupOffsets = Vec<(String, Vec<(i32, i64, i32, Option<String>)>)>;

#[derive(Debug)]
pub enum GroupReply {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
    Commit(OffsetCommitResponse),
    Offsets(GroupOffsets),
    DeleteOffsets(OffsetDeleteResponse),
    Describe(DescribedGroup),
    List(Vec<ListedGroup>),
    Delete(i16),
}

#[derive(Debug)]
pub enum ShardResponse {
    Produce(Vec<ProduceOutcome>),
    Fetch(Vec<FetchOutcome>),
    Waited,
    ListOffsets(Vec<ListOffsetsOutcome>),
    Applied,
    Topics(Vec<TopicOutcome>),
    Group(GroupReply),
    /// A producer id, or the Kafka error code why none could be allocated.
    ProducerId(Result<i64, i16>),
}

/// A routed request and where to send its answer.
pub struct Envelope {
    pub request: ShardRequest,
    pub reply: oneshot::Sender<ShardResponse>,
}

/// What a shard runs routed work with. Implemented by the shard; the first call performs any
/// ordering-sensitive effect (appends) synchronously, the returned future does the rest.
pub trait ShardExecutor {
    fn execute(self: Rc<Self>, request: ShardRequest) -> LocalBoxFuture<'static, ShardResponse>;
}

/// One shard's end of the mesh: the only way to reach another shard.
pub struct ShardRouter {
    shard_id: usize,
    shards: usize,
    outboxes: Vec<Option<LocalSender<Envelope>>>,
}

/// The unconnected channels of a full mesh, built before the shards start.
pub struct MeshEndpoints {
    /// `senders[to]`: this shard's sender to shard `to` (None for itself).
    pub senders: Vec<Option<SharedSender<Envelope>>>,
    /// `receivers[from]`: this shard's receiver from shard `from` (None for itself).
    pub receivers: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Builds a full mesh of channels for `shards` shards; element `i` goes to shard `i`.
pub fn build_mesh(shards: usize) -> Vec<MeshEndpoints> {
    let mut eps: Vec<MeshEndpoints> = (0..shards)
        .map(|_| MeshEndpoints {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_CAPACITY);
                eps[from].senders[to] = Some(tx);
                eps[to].receivers[from] = Some(rx);
            }
        }
    }
    eps
}

impl ShardRouter {
    /// Connects this shard's mesh endpoints: spawns a pump per outgoing channel and a receive
    /// loop per incoming one that runs requests on `executor`.
    pub async fn connect<E: ShardExecutor + 'static>(shard_id: usize, endpoints: MeshEndpoints, executor: Weak<E>) -> ShardRouter {
        let shards = endpoints.senders.len();
        // Both ends of a shared channel must connect before either returns: connect all at once.
        let senders = futures::future::join_all(endpoints.senders.into_iter().map(|tx| async move {
            match tx {
                Some(tx) => Some(tx.connect().await),
                None => None,
            }
        }));
        let receivers = futures::future::join_all(endpoints.receivers.into_iter().map(|rx| async move {
            match rx {
                Some(rx) => Some(rx.connect().await),
                None => None,
            }
        }));
        let (senders, receivers) = futures::future::join(senders, receivers).await;
        let mut outboxes = Vec::with_capacity(shards);
        for connected in senders {
            let Some(connected) = connected else {
                outboxes.push(None);
                continue;
            };
            let (local_tx, local_rx) = local_channel::new_unbounded::<Envelope>();
            glommio::spawn_local(async move {
                while let Some(env) = local_rx.recv().await {
                    if connected.send(env).await.is_err() {
                        break;
                    }
                }
            })
            .detach();
            outboxes.push(Some(local_tx));
        }
        for (from, connected) in receivers.into_iter().enumerate() {
            let Some(connected) = connected else { continue };
            let executor = executor.clone();
            glommio::spawn_local(async move {
                while let Some(env) = connected.recv().await {
                    let Some(exec) = executor.upgrade() else { break };
                    // Synchronous part now (arrival order), the rest in its own task.
                    let fut = exec.execute(env.request);
                    glommio::spawn_local(async move {
                        let _ = env.reply.send(fut.await);
                    })
                    .detach();
                }
                warn!(from, "mesh receive loop ended");
            })
            .detach();
        }
        ShardRouter { shard_id, shards, outboxes }
    }

    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Routes `request` to shard `target` and returns its answer. The request is handed over
    /// before this returns (run synchronously when local, queued in order when remote).
    pub fn call<E: ShardExecutor + 'static>(&self, local: &Rc<E>, target: usize, request: ShardRequest) -> LocalBoxFuture<'static, ShardResponse> {
        assert!(target < self.shards, "shard {target} out of range");
        if target == self.shard_id {
            return local.clone().execute(request);
        }
        let (tx, rx) = oneshot::channel();
        let outbox = self.outboxes[target].as_ref().expect("outbox to peer");
        if outbox.try_send(Envelope { request, reply: tx }).is_err() {
            panic!("unbounded outbox to shard {target} refused a message");
        }
        async move { rx.await.expect("owner shard dropped a routed request") }.boxed_local()
    }
}
