//! Cross-shard routing: the messages shards exchange and the `ShardRouter` that carries them.
//!
//! This is the one place cross-core messages are built and sent. Shards share no mutable state:
//! a connection's shard sends the work for partitions it does not own to their owner over a full
//! mesh of glommio shared channels, and awaits the owner's answer. Work for the local shard is run
//! directly, without a message. Sending is synchronous (an unbounded local outbox per peer, drained
//! in order by a pump task), so requests reach a peer in the order they were routed: per-partition
//! produce order across pipelined requests depends on it.
//!
//! Answers come back the same way, over a reply channel per pair of shards, and are handed to the
//! waiting caller on its own shard. No task waker ever crosses a thread: glommio 0.9 frees a task
//! twice when a waker is dropped on a foreign thread while its task completes (a race seen as
//! "double free" aborts under topic churn), so cross-thread oneshot channels are not used.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use tracing::warn;
use uuid::Uuid;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse,
};

use crate::metadata::topic_config::AlterOp;
use crate::metadata::MetadataSnapshot;
use crate::storage::batch::BatchesSummary;

/// Capacity of each shard-to-shard channel.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// Produce work for one partition: validated batches, offsets not yet assigned.
#[derive(Debug)]
pub struct ProduceItem {
    pub topic: String,
    pub partition: i32,
    /// The producer's batches as received: a slice of the request frame, never copied.
    pub data: Bytes,
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

#[derive(Debug, Clone)]
pub struct DeleteRecordsItem {
    pub topic: String,
    pub partition: i32,
    /// Records below this offset are deleted (-1: the high watermark).
    pub offset: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct DeleteRecordsOutcome {
    pub error: i16,
    pub low_watermark: i64,
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

/// A change to one topic's configs, already checked for structure by the handler.
#[derive(Debug, Clone)]
pub struct TopicConfigChange {
    pub topic: String,
    /// AlterConfigs: the ops are the whole new set (configs not named go back to defaults).
    pub replace: bool,
    pub ops: Vec<(String, AlterOp)>,
}

/// The answer for one resource of an admin change.
#[derive(Debug, Clone)]
pub struct AdminOutcome {
    pub error: i16,
    pub message: Option<String>,
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
    /// Move the log start of partitions owned by the target (DeleteRecords).
    DeleteRecords { items: Vec<DeleteRecordsItem> },
    /// Install a new metadata snapshot (opening and closing logs as placement says).
    ApplyMetadata { snapshot: Arc<MetadataSnapshot> },
    /// Metadata changes, served by shard 0 only.
    CreateTopics { topics: Vec<NewTopic>, validate_only: bool },
    DeleteTopics { names: Vec<String> },
    /// Topic config changes (shard 0), one outcome per change.
    AlterTopicConfigs { changes: Vec<TopicConfigChange>, validate_only: bool },
    /// Grow topics to the given partition counts (shard 0).
    CreatePartitions { items: Vec<(String, i32)>, validate_only: bool },
    /// Bytes on disk of partitions owned by the target (None: not open there).
    LogSizes { items: Vec<(String, i32)> },
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
    DeleteRecords(Vec<DeleteRecordsOutcome>),
    Applied,
    Topics(Vec<TopicOutcome>),
    Admin(Vec<AdminOutcome>),
    LogSizes(Vec<Option<u64>>),
    Group(GroupReply),
    /// A producer id, or the Kafka error code why none could be allocated.
    ProducerId(Result<i64, i16>),
}

/// A routed request and the caller's id for its answer.
pub struct Envelope {
    pub request: ShardRequest,
    pub call_id: u64,
}

/// An answer on its way back to the shard that routed the request.
pub struct Reply {
    pub call_id: u64,
    pub response: ShardResponse,
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
    /// Callers on this shard waiting for an answer, by call id (local oneshots only).
    waiting: Rc<RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>>,
    next_call_id: Cell<u64>,
}

/// The unconnected channels of a full mesh, built before the shards start.
pub struct MeshEndpoints {
    /// `senders[to]`: this shard's sender to shard `to` (None for itself).
    pub senders: Vec<Option<SharedSender<Envelope>>>,
    /// `receivers[from]`: this shard's receiver from shard `from` (None for itself).
    pub receivers: Vec<Option<SharedReceiver<Envelope>>>,
    /// `reply_senders[to]`: answers to requests that came from shard `to`.
    pub reply_senders: Vec<Option<SharedSender<Reply>>>,
    /// `reply_receivers[from]`: answers from shard `from` to this shard's requests.
    pub reply_receivers: Vec<Option<SharedReceiver<Reply>>>,
}

/// Builds a full mesh of channels for `shards` shards; element `i` goes to shard `i`.
pub fn build_mesh(shards: usize) -> Vec<MeshEndpoints> {
    let mut eps: Vec<MeshEndpoints> = (0..shards)
        .map(|_| MeshEndpoints {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
            reply_senders: (0..shards).map(|_| None).collect(),
            reply_receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_CAPACITY);
                eps[from].senders[to] = Some(tx);
                eps[to].receivers[from] = Some(rx);
                let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_CAPACITY);
                eps[to].reply_senders[from] = Some(tx);
                eps[from].reply_receivers[to] = Some(rx);
            }
        }
    }
    eps
}

async fn connect_sender<T: Send + Sized + 'static>(tx: Option<SharedSender<T>>) -> Option<ConnectedSender<T>> {
    match tx {
        Some(tx) => Some(tx.connect().await),
        None => None,
    }
}

async fn connect_receiver<T: Send + Sized + 'static>(rx: Option<SharedReceiver<T>>) -> Option<ConnectedReceiver<T>> {
    match rx {
        Some(rx) => Some(rx.connect().await),
        None => None,
    }
}

/// A local unbounded outbox in front of a shared channel, drained in order by a pump task, so
/// sending never waits and keeps the order of the calls.
fn pump<T: Send + Sized + 'static>(connected: ConnectedSender<T>) -> LocalSender<T> {
    let (local_tx, local_rx) = local_channel::new_unbounded::<T>();
    glommio::spawn_local(async move {
        while let Some(item) = local_rx.recv().await {
            if connected.send(item).await.is_err() {
                break;
            }
        }
    })
    .detach();
    local_tx
}

impl ShardRouter {
    /// Connects this shard's mesh endpoints: spawns a pump per outgoing channel (requests and
    /// replies), a receive loop per incoming request channel that runs requests on `executor`,
    /// and one per incoming reply channel that hands answers to the waiting callers.
    pub async fn connect<E: ShardExecutor + 'static>(shard_id: usize, endpoints: MeshEndpoints, executor: Weak<E>) -> ShardRouter {
        let shards = endpoints.senders.len();
        // Both ends of a shared channel must connect before either returns: connect all at once.
        let senders = futures::future::join_all(endpoints.senders.into_iter().map(connect_sender));
        let receivers = futures::future::join_all(endpoints.receivers.into_iter().map(connect_receiver));
        let reply_senders = futures::future::join_all(endpoints.reply_senders.into_iter().map(connect_sender));
        let reply_receivers = futures::future::join_all(endpoints.reply_receivers.into_iter().map(connect_receiver));
        let ((senders, receivers), (reply_senders, reply_receivers)) =
            futures::future::join(futures::future::join(senders, receivers), futures::future::join(reply_senders, reply_receivers)).await;
        let outboxes: Vec<Option<LocalSender<Envelope>>> = senders.into_iter().map(|c| c.map(pump)).collect();
        let reply_outboxes: Vec<Option<LocalSender<Reply>>> = reply_senders.into_iter().map(|c| c.map(pump)).collect();
        for (from, (connected, replies)) in receivers.into_iter().zip(reply_outboxes).enumerate() {
            let (Some(connected), Some(replies)) = (connected, replies) else { continue };
            let executor = executor.clone();
            let replies = Rc::new(replies);
            glommio::spawn_local(async move {
                while let Some(env) = connected.recv().await {
                    let Some(exec) = executor.upgrade() else { break };
                    // Synchronous part now (arrival order), the rest in its own task.
                    let fut = exec.execute(env.request);
                    let replies = replies.clone();
                    let call_id = env.call_id;
                    glommio::spawn_local(async move {
                        let response = fut.await;
                        if replies.try_send(Reply { call_id, response }).is_err() {
                            warn!(to = from, "reply outbox closed");
                        }
                    })
                    .detach();
                }
                warn!(from, "mesh receive loop ended");
            })
            .detach();
        }
        let waiting: Rc<RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>> = Rc::default();
        for (from, connected) in reply_receivers.into_iter().enumerate() {
            let Some(connected) = connected else { continue };
            let waiting = waiting.clone();
            glommio::spawn_local(async move {
                while let Some(reply) = connected.recv().await {
                    // The caller may have gone (its connection closed): the answer is dropped.
                    if let Some(tx) = waiting.borrow_mut().remove(&reply.call_id) {
                        let _ = tx.send(reply.response);
                    }
                }
                warn!(from, "mesh reply loop ended");
            })
            .detach();
        }
        ShardRouter { shard_id, shards, outboxes, waiting, next_call_id: Cell::new(0) }
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
        let call_id = self.next_call_id.get();
        self.next_call_id.set(call_id + 1);
        let (tx, rx) = oneshot::channel();
        let previous = self.waiting.borrow_mut().insert(call_id, tx);
        assert!(previous.is_none(), "call id {call_id} reused");
        let outbox = self.outboxes[target].as_ref().expect("outbox to peer");
        if outbox.try_send(Envelope { request, call_id }).is_err() {
            panic!("unbounded outbox to shard {target} refused a message");
        }
        async move { rx.await.expect("routed request lost its reply") }.boxed_local()
    }
}
