//! A shard: one pinned core's executor state, the partition logs it owns, and the owner-side
//! execution of routed work.
//!
//! Owns the `PartitionLog`s placed on this shard and this shard's copy of the metadata snapshot.
//! On shard 0 it also owns the `MetadataStore` (topic create/delete, topic config changes,
//! partition growth). It must not touch another shard's logs: everything for a partition it
//! does not own goes through the `ShardRouter`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, select_all, LocalBoxFuture};
use futures::FutureExt;
use glommio::sync::Semaphore;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::handlers::fetch_session::FetchSessionCache;
use crate::config::{parse_cleanup_policy, BrokerConfig};
use crate::groups::store::GroupStore;
use crate::groups::GroupCoordinator;
use crate::metadata::{self, topic_config, MetadataSnapshot, MetadataStore, TopicMeta};
use crate::protocol::errors;
use crate::routing::*;
use crate::storage::cleaner::Cleaner;
use crate::storage::{self, retention, LogConfig, PartitionLog};

/// CPU shares of the lifecycle task queue (retention, cleaner) against the default queue's 1000.
const LIFECYCLE_SHARES: usize = 50;

fn config_i64(topic: &TopicMeta, key: &str) -> Option<i64> {
    topic.configs.get(key).and_then(|v| v.trim().parse().ok())
}

fn storage_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The logs of one topic open on this shard, by partition index (None: owned elsewhere).
struct OpenTopic {
    id: Uuid,
    partitions: Vec<Option<Rc<PartitionLog>>>,
}

pub struct Shard {
    pub id: usize,
    pub config: Rc<BrokerConfig>,
    metadata: RefCell<Arc<MetadataSnapshot>>,
    logs: RefCell<HashMap<String, OpenTopic>>,
    router: RefCell<Option<Rc<ShardRouter>>>,
    /// Shard 0 only: the persisted metadata and the lock serializing its changes.
    store: Option<RefCell<MetadataStore>>,
    metadata_lock: Semaphore,
    /// The coordinator of the groups that hash to this shard.
    groups: RefCell<Option<Rc<GroupCoordinator>>>,
    /// Shard 0 only: the next producer id to hand out.
    next_producer_id: std::cell::Cell<i64>,
    /// Incremental fetch sessions of the connections this shard serves.
    pub fetch_sessions: RefCell<FetchSessionCache>,
    /// Low-priority task queue of retention, cleaning and segment file removal.
    lifecycle_queue: std::cell::Cell<Option<glommio::TaskQueueHandle>>,
}

impl Shard {
    pub fn new(id: usize, config: Rc<BrokerConfig>, snapshot: Arc<MetadataSnapshot>, store: Option<MetadataStore>) -> Rc<Shard> {
        let snapshot_block_end = snapshot.producer_id_block_end;
        // Kafka's slot count is per broker: each shard keeps its share, with ids from its own
        // slice of the id space so a full fetch landing on another shard closes nothing there.
        let shards = config.shards.max(1);
        let slots = config.fetch_session_cache_slots.div_ceil(shards);
        let fetch_sessions = FetchSessionCache::new(slots)
            .with_min_eviction(Duration::from_millis(config.fetch_session_min_eviction_ms))
            .with_id_space(id, shards);
        Rc::new(Shard {
            id,
            fetch_sessions: RefCell::new(fetch_sessions),
            config,
            metadata: RefCell::new(snapshot),
            logs: RefCell::new(HashMap::new()),
            router: RefCell::new(None),
            store: store.map(RefCell::new),
            metadata_lock: Semaphore::new(1),
            groups: RefCell::new(None),
            next_producer_id: std::cell::Cell::new(snapshot_block_end),
            lifecycle_queue: std::cell::Cell::new(None),
        })
    }

    pub fn set_router(&self, router: ShardRouter) {
        *self.router.borrow_mut() = Some(Rc::new(router));
    }

    /// Opens this shard's group log and starts its group coordinator.
    pub async fn start_groups(&self) -> Result<(), crate::storage::StorageError> {
        // The group log is compacted (the latest value of each key wins), never deleted by age.
        let config = LogConfig {
            segment_bytes: self.config.offsets_topic_segment_bytes,
            roll_ms: self.config.log_roll_ms,
            index_interval_bytes: self.config.index_interval_bytes,
            tail_cache_bytes: self.config.tail_cache_bytes,
            producer_id_expiration_ms: self.config.producer_id_expiration_ms,
            retention_ms: -1,
            retention_bytes: -1,
            cleanup_delete: false,
            cleanup_compact: true,
            delete_retention_ms: self.config.cleaner_delete_retention_ms,
            min_cleanable_dirty_ratio: self.config.cleaner_min_cleanable_ratio,
            min_compaction_lag_ms: 0,
        };
        let store = GroupStore::open(&self.config.data_dir, self.id, config).await?;
        let c = GroupCoordinator::start(self.id, self.config.clone(), store).await?;
        *self.groups.borrow_mut() = Some(c);
        Ok(())
    }

    async fn group_call(self: Rc<Self>, call: GroupCall) -> ShardResponse {
        let c = self.groups.borrow().clone().expect("group coordinator started");
        let reply = match call {
            GroupCall::Join { version, req, client_id, client_host } => GroupReply::Join(c.join(version, req, client_id, client_host).await),
            GroupCall::Sync { version, req } => GroupReply::Sync(c.sync(version, req).await),
            GroupCall::Heartbeat { req } => GroupReply::Heartbeat(c.heartbeat(req)),
            GroupCall::Leave { version, req } => GroupReply::Leave(c.leave(version, req)),
            GroupCall::Commit { req } => GroupReply::Commit(c.commit(req, self.metadata()).await),
            GroupCall::FetchOffsets { group_id, topics } => GroupReply::Offsets(c.fetch_offsets(&group_id, topics)),
            GroupCall::DeleteOffsets { req } => GroupReply::DeleteOffsets(c.delete_offsets(req).await),
            GroupCall::Describe { group_id } => GroupReply::Describe(c.describe(&group_id)),
            GroupCall::List { states, types } => GroupReply::List(c.list(&states, &types)),
            GroupCall::Delete { group_id } => GroupReply::Delete(c.delete_group(group_id).await),
        };
        ShardResponse::Group(reply)
    }

    /// Routes a group call to the group's coordinator shard.
    pub async fn call_group(self: &Rc<Self>, group_id: &str, call: GroupCall) -> GroupReply {
        let target = crate::groups::coordinator_shard(group_id, self.shards());
        match self.call(target, ShardRequest::Group(call)).await {
            ShardResponse::Group(r) => r,
            _ => unreachable!("group call answered with another kind"),
        }
    }

    pub fn router(&self) -> Rc<ShardRouter> {
        self.router.borrow().clone().expect("router connected")
    }

    pub fn shards(&self) -> usize {
        self.router().shards()
    }

    /// The current metadata snapshot (cheap clone of an `Arc`).
    pub fn metadata(&self) -> Arc<MetadataSnapshot> {
        self.metadata.borrow().clone()
    }

    /// Routes a request to `target` (run inline when it is this shard).
    pub fn call(self: &Rc<Self>, target: usize, request: ShardRequest) -> LocalBoxFuture<'static, ShardResponse> {
        self.router().call(self, target, request)
    }

    fn log(&self, topic: &str, partition: i32) -> Option<Rc<PartitionLog>> {
        let logs = self.logs.borrow();
        let t = logs.get(topic)?;
        usize::try_from(partition).ok().and_then(|p| t.partitions.get(p)).cloned().flatten()
    }

    /// The topic's `cleanup.policy` (its own or the broker's default) as (delete, compact).
    pub fn cleanup_policy(&self, topic: &TopicMeta) -> (bool, bool) {
        topic
            .configs
            .get("cleanup.policy")
            .and_then(|p| parse_cleanup_policy(p))
            .or_else(|| parse_cleanup_policy(&self.config.log_cleanup_policy))
            .unwrap_or((true, false))
    }

    /// The log settings of a topic: its configs with the broker's defaults applied. The one
    /// place a `LogConfig` is built from topic configs (logs opened and config changes).
    fn log_config(&self, topic: &TopicMeta) -> LogConfig {
        let policy = self.cleanup_policy(topic);
        LogConfig {
            segment_bytes: topic.config_u64("segment.bytes").unwrap_or(self.config.log_segment_bytes),
            roll_ms: topic.config_u64("segment.ms").unwrap_or(self.config.log_roll_ms),
            index_interval_bytes: topic
                .config_u64("index.interval.bytes")
                .map(|v| v as usize)
                .unwrap_or(self.config.index_interval_bytes),
            tail_cache_bytes: self.config.tail_cache_bytes,
            producer_id_expiration_ms: self.config.producer_id_expiration_ms,
            retention_ms: config_i64(topic, "retention.ms").unwrap_or_else(|| self.config.retention_ms()),
            retention_bytes: config_i64(topic, "retention.bytes").unwrap_or(self.config.log_retention_bytes),
            cleanup_delete: policy.0,
            cleanup_compact: policy.1,
            delete_retention_ms: config_i64(topic, "delete.retention.ms").unwrap_or(self.config.cleaner_delete_retention_ms),
            min_cleanable_dirty_ratio: topic
                .configs
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse().ok())
                .unwrap_or(self.config.cleaner_min_cleanable_ratio),
            min_compaction_lag_ms: config_i64(topic, "min.compaction.lag.ms").unwrap_or(self.config.cleaner_min_compaction_lag_ms),
        }
    }

    /// Opens the logs this shard owns per `snapshot`, closes (and deletes) those of topics that
    /// are gone, then installs the snapshot.
    pub async fn apply_metadata(self: Rc<Self>, snapshot: Arc<MetadataSnapshot>) {
        let previous = self.metadata();
        if snapshot.version < previous.version {
            return;
        }
        // Topics removed or replaced (same name, new id): close and delete their logs.
        let gone: Vec<(String, OpenTopic)> = {
            let mut logs = self.logs.borrow_mut();
            let names: Vec<String> = logs
                .iter()
                .filter(|(name, t)| snapshot.topic(name).is_none_or(|m| m.id != t.id))
                .map(|(n, _)| n.clone())
                .collect();
            names.into_iter().map(|n| { let t = logs.remove(&n).unwrap(); (n, t) }).collect()
        };
        for (name, topic) in gone {
            for log in topic.partitions.into_iter().flatten() {
                log.close();
                storage::file_deleter::delete_log_dir(log.dir());
            }
            info!(shard = self.id, topic = %name, "deleted topic's logs");
        }
        // Config changes reach the open logs of the topic (same id: a replaced topic's logs
        // were closed above).
        for topic in snapshot.topics.values() {
            let changed = previous.topic(&topic.name).is_some_and(|p| p.id == topic.id && p.configs != topic.configs);
            if !changed {
                continue;
            }
            let logs: Vec<Rc<PartitionLog>> =
                self.logs.borrow().get(&topic.name).map(|t| t.partitions.iter().flatten().cloned().collect()).unwrap_or_default();
            if !logs.is_empty() {
                let config = self.log_config(topic);
                for log in logs {
                    log.update_config(config.clone());
                }
                info!(shard = self.id, topic = %topic.name, "applied topic config change to its open logs");
            }
        }
        for topic in snapshot.topics.values() {
            let owned: Vec<usize> = topic.placement.iter().enumerate().filter(|(_, &s)| s == self.id).map(|(p, _)| p).collect();
            for p in owned {
                if self.log(&topic.name, p as i32).is_some() {
                    continue;
                }
                let dir = self.config.data_dir.join(storage::partition_dir_name(&topic.name, p as i32));
                match PartitionLog::open(&topic.name, p as i32, dir, self.log_config(topic)).await {
                    Ok(log) => {
                        let mut logs = self.logs.borrow_mut();
                        let entry = logs.entry(topic.name.clone()).or_insert_with(|| OpenTopic { id: topic.id, partitions: Vec::new() });
                        if entry.partitions.len() < topic.placement.len() {
                            entry.partitions.resize(topic.placement.len(), None);
                        }
                        entry.partitions[p] = Some(log);
                    }
                    Err(e) => error!(topic = %topic.name, partition = p, "cannot open partition log: {e}"),
                }
            }
        }
        let mut cur = self.metadata.borrow_mut();
        if snapshot.version >= cur.version {
            *cur = snapshot;
        }
    }

    fn produce(&self, items: Vec<ProduceItem>, acks: i16) -> LocalBoxFuture<'static, ShardResponse> {
        // Appends happen now, in call order; only the durability wait is deferred.
        let mut waits = Vec::with_capacity(items.len());
        for item in items {
            let Some(log) = self.log(&item.topic, item.partition) else {
                waits.push(Err(errors::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            match log.append(item.data, &item.summary, acks == -1) {
                Ok(info) => waits.push(Ok((log, info))),
                Err(e) => waits.push(Err(e.kafka_code())),
            }
        }
        async move {
            let mut out = Vec::with_capacity(waits.len());
            for w in waits {
                out.push(match w {
                    Err(code) => ProduceOutcome { error: code, base_offset: -1, log_start_offset: -1 },
                    Ok((log, info)) => {
                        let res = if acks == 0 { Ok(()) } else { log.wait_persisted(&info, acks == -1).await };
                        match res {
                            Ok(()) => ProduceOutcome { error: 0, base_offset: info.base_offset, log_start_offset: info.log_start_offset },
                            Err(e) => ProduceOutcome { error: e.kafka_code(), base_offset: -1, log_start_offset: -1 },
                        }
                    }
                });
            }
            ShardResponse::Produce(out)
        }
        .boxed_local()
    }

    async fn fetch(self: Rc<Self>, items: Vec<FetchItem>) -> ShardResponse {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(log) = self.log(&item.topic, item.partition) else {
                out.push(FetchOutcome { error: errors::UNKNOWN_TOPIC_OR_PARTITION, high_watermark: -1, log_start_offset: -1, ..Default::default() });
                continue;
            };
            let res = log.read_for_send(item.offset, item.max_bytes).await;
            let (hw, start) = (log.high_watermark(), log.log_start_offset());
            out.push(match res {
                Ok(data) => FetchOutcome { error: 0, high_watermark: hw, log_start_offset: start, records: data.chunks, bytes: data.bytes },
                Err(e) => FetchOutcome { error: e.kafka_code(), high_watermark: hw, log_start_offset: start, ..Default::default() },
            });
        }
        ShardResponse::Fetch(out)
    }

    async fn wait_for_data(self: Rc<Self>, items: Vec<(String, i32, i64)>, deadline: Instant) -> ShardResponse {
        let logs: Vec<(Rc<PartitionLog>, i64)> = items
            .iter()
            .filter_map(|(t, p, o)| self.log(t, *p).map(|l| (l, *o)))
            .collect();
        if logs.is_empty() {
            return ShardResponse::Waited;
        }
        let waits = logs.iter().map(|(l, o)| {
            let l = l.clone();
            let o = *o;
            async move { l.wait_for_data(o, deadline).await }.boxed_local()
        });
        select_all(waits).await;
        ShardResponse::Waited
    }

    async fn list_offsets(self: Rc<Self>, items: Vec<ListOffsetsItem>) -> ShardResponse {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(log) = self.log(&item.topic, item.partition) else {
                out.push(ListOffsetsOutcome { error: errors::UNKNOWN_TOPIC_OR_PARTITION, timestamp: -1, offset: -1 });
                continue;
            };
            let r = match item.timestamp {
                // LATEST, and LATEST_TIERED (-5): the log end offset.
                -1 | -5 => ListOffsetsOutcome { error: 0, timestamp: -1, offset: log.high_watermark() },
                // EARLIEST, EARLIEST_LOCAL (-4).
                -2 | -4 => ListOffsetsOutcome { error: 0, timestamp: -1, offset: log.log_start_offset() },
                // MAX_TIMESTAMP
                -3 => match log.max_timestamp().await {
                    Ok(Some((ts, off))) => ListOffsetsOutcome { error: 0, timestamp: ts, offset: off },
                    Ok(None) => ListOffsetsOutcome { error: 0, timestamp: -1, offset: -1 },
                    Err(e) => ListOffsetsOutcome { error: e.kafka_code(), timestamp: -1, offset: -1 },
                },
                ts if ts >= 0 => match log.offset_for_timestamp(ts).await {
                    Ok(Some((off, found_ts))) => ListOffsetsOutcome { error: 0, timestamp: found_ts, offset: off },
                    Ok(None) => ListOffsetsOutcome { error: 0, timestamp: -1, offset: -1 },
                    Err(e) => ListOffsetsOutcome { error: e.kafka_code(), timestamp: -1, offset: -1 },
                },
                _ => ListOffsetsOutcome { error: errors::INVALID_REQUEST, timestamp: -1, offset: -1 },
            };
            out.push(r);
        }
        ShardResponse::ListOffsets(out)
    }

    async fn delete_records(self: Rc<Self>, items: Vec<DeleteRecordsItem>) -> ShardResponse {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(log) = self.log(&item.topic, item.partition) else {
                out.push(DeleteRecordsOutcome { error: errors::UNKNOWN_TOPIC_OR_PARTITION, low_watermark: -1 });
                continue;
            };
            match retention::delete_records(&log, item.offset).await {
                Ok((low_watermark, removed)) => {
                    if !removed.is_empty() {
                        info!(topic = %item.topic, partition = item.partition, segments = removed.len(), low_watermark, "DeleteRecords deleted segments");
                        let dir = log.dir().to_path_buf();
                        self.spawn_lifecycle(async move { retention::remove_segment_files(&dir, &removed).await });
                    }
                    out.push(DeleteRecordsOutcome { error: 0, low_watermark });
                }
                Err(e) => out.push(DeleteRecordsOutcome { error: e.kafka_code(), low_watermark: -1 }),
            }
        }
        ShardResponse::DeleteRecords(out)
    }

    /// Runs background storage work (file removal) in the low-priority lifecycle queue.
    fn spawn_lifecycle(&self, fut: impl std::future::Future<Output = ()> + 'static) {
        match self.lifecycle_queue.get() {
            Some(tq) => match glommio::spawn_local_into(fut, tq) {
                Ok(t) => {
                    t.detach();
                }
                Err(e) => warn!(shard = self.id, "cannot spawn lifecycle work: {e}"),
            },
            None => {
                glommio::spawn_local(fut).detach();
            }
        }
    }

    /// Starts this shard's log lifecycle task in a low-priority task queue: every
    /// `log.retention.check.interval.ms` it applies retention to the logs it owns, and every
    /// `log.cleaner.backoff.ms` (when `log.cleaner.enable`) it compacts the compacted ones,
    /// including its group log. Request handling always runs first.
    pub fn start_lifecycle(self: &Rc<Self>) {
        let tq = glommio::executor().create_task_queue(glommio::Shares::Static(LIFECYCLE_SHARES), glommio::Latency::NotImportant, "log-lifecycle");
        self.lifecycle_queue.set(Some(tq));
        let weak = Rc::downgrade(self);
        let retention_every = std::time::Duration::from_millis(self.config.retention_check_interval_ms);
        let cleaner_every = std::time::Duration::from_millis(self.config.cleaner_backoff_ms);
        let tick = retention_every.min(cleaner_every).min(std::time::Duration::from_secs(1));
        let mut cleaner = Cleaner::new(self.config.cleaner_io_max_bytes_per_second);
        let cleaner_enabled = self.config.cleaner_enable;
        self.spawn_lifecycle(async move {
            let mut last_retention = Instant::now();
            let mut last_clean = Instant::now();
            loop {
                glommio::timer::sleep(tick).await;
                let Some(shard) = weak.upgrade() else { return };
                let mut logs: Vec<Rc<PartitionLog>> = shard.logs.borrow().values().flat_map(|t| t.partitions.iter().flatten().cloned()).collect();
                if let Some(g) = shard.groups.borrow().as_ref() {
                    logs.push(g.store_log());
                }
                drop(shard);
                let now = storage_now_ms();
                if last_retention.elapsed() >= retention_every {
                    last_retention = Instant::now();
                    for log in logs.iter().filter(|l| l.is_writer_running()) {
                        if let Err(e) = retention::enforce(log, now).await {
                            warn!(topic = %log.topic, partition = log.partition, "retention failed: {e}");
                        }
                    }
                }
                if cleaner_enabled && last_clean.elapsed() >= cleaner_every {
                    last_clean = Instant::now();
                    cleaner.retain(&logs);
                    for log in logs.iter().filter(|l| l.is_writer_running()) {
                        if let Err(e) = cleaner.clean(log, now).await {
                            warn!(topic = %log.topic, partition = log.partition, "cleaning failed: {e}");
                        }
                    }
                }
            }
        });
    }

    /// Shard 0: creates topics, persists metadata, and waits until every shard applied it.
    async fn create_topics(self: Rc<Self>, topics: Vec<NewTopic>, validate_only: bool) -> ShardResponse {
        let _permit = self.metadata_lock.acquire_permit(1).await.expect("metadata lock");
        let shards = self.shards();
        let current = self.metadata();
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut to_add = Vec::new();
        for t in topics {
            if current.topic(&t.name).is_some() || to_add.iter().any(|m: &TopicMeta| m.name == t.name) {
                outcomes.push(TopicOutcome {
                    name: t.name.clone(),
                    error: errors::TOPIC_ALREADY_EXISTS,
                    message: Some(format!("Topic '{}' already exists.", t.name)),
                    topic_id: Uuid::nil(),
                    partitions: -1,
                });
                continue;
            }
            let meta = TopicMeta {
                name: t.name.clone(),
                id: Uuid::new_v4(),
                placement: metadata::place(&t.name, t.partitions, shards),
                configs: t.configs.into_iter().collect(),
            };
            outcomes.push(TopicOutcome { name: t.name, error: 0, message: None, topic_id: meta.id, partitions: t.partitions });
            to_add.push(meta);
        }
        if validate_only || to_add.is_empty() {
            return ShardResponse::Topics(outcomes);
        }
        let store = self.store.as_ref().expect("metadata store lives on shard 0");
        let snap = store.borrow_mut().update(|m| {
            for t in to_add {
                m.topics.insert(t.name.clone(), Arc::new(t));
            }
        });
        match snap {
            Ok(snap) => self.broadcast(snap).await,
            Err(e) => {
                error!("cannot persist metadata: {e:#}");
                for o in outcomes.iter_mut().filter(|o| o.error == 0) {
                    o.error = errors::KAFKA_STORAGE_ERROR;
                    o.message = Some(format!("metadata write failed: {e}"));
                }
            }
        }
        ShardResponse::Topics(outcomes)
    }

    /// Shard 0: deletes topics and waits until every shard removed their logs.
    async fn delete_topics(self: Rc<Self>, names: Vec<String>) -> ShardResponse {
        let _permit = self.metadata_lock.acquire_permit(1).await.expect("metadata lock");
        let current = self.metadata();
        let mut outcomes = Vec::with_capacity(names.len());
        let mut remove = Vec::new();
        for n in names {
            match current.topic(&n) {
                Some(t) => {
                    outcomes.push(TopicOutcome { name: n.clone(), error: 0, message: None, topic_id: t.id, partitions: t.partitions() });
                    remove.push(n);
                }
                None => outcomes.push(TopicOutcome {
                    name: n,
                    error: errors::UNKNOWN_TOPIC_OR_PARTITION,
                    message: Some("This server does not host this topic.".into()),
                    topic_id: Uuid::nil(),
                    partitions: -1,
                }),
            }
        }
        if !remove.is_empty() {
            let store = self.store.as_ref().expect("metadata store lives on shard 0");
            let snap = store.borrow_mut().update(|m| {
                for n in &remove {
                    m.topics.remove(n);
                }
            });
            match snap {
                Ok(snap) => self.broadcast(snap).await,
                Err(e) => error!("cannot persist metadata: {e:#}"),
            }
        }
        ShardResponse::Topics(outcomes)
    }

    /// Shard 0: applies topic config changes, persists them and waits until every shard
    /// installed them (live logs pick the new settings up in `apply_metadata`).
    async fn alter_topic_configs(self: Rc<Self>, changes: Vec<TopicConfigChange>, validate_only: bool) -> ShardResponse {
        let _permit = self.metadata_lock.acquire_permit(1).await.expect("metadata lock");
        let current = self.metadata();
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut updates: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        for c in changes {
            let Some(t) = current.topic(&c.topic) else {
                outcomes.push(AdminOutcome {
                    error: errors::UNKNOWN_TOPIC_OR_PARTITION,
                    message: Some(format!("Topic {} does not exist.", c.topic)),
                });
                continue;
            };
            match topic_config::alter(&t.configs, c.replace, &c.ops) {
                Ok(next) => {
                    if next != t.configs {
                        updates.push((c.topic, next));
                    }
                    outcomes.push(AdminOutcome { error: 0, message: None });
                }
                Err(msg) => outcomes.push(AdminOutcome { error: errors::INVALID_CONFIG, message: Some(msg) }),
            }
        }
        if validate_only || updates.is_empty() {
            return ShardResponse::Admin(outcomes);
        }
        self.change_topics(updates, |t, configs| t.configs = configs, outcomes).await
    }

    /// Shard 0: grows topics; the new partitions are placed like a new topic's would be and
    /// their logs are open on their owners before the answer.
    async fn create_partitions(self: Rc<Self>, items: Vec<(String, i32)>, validate_only: bool) -> ShardResponse {
        let _permit = self.metadata_lock.acquire_permit(1).await.expect("metadata lock");
        let shards = self.shards();
        let current = self.metadata();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut grow: Vec<(String, Vec<usize>)> = Vec::new();
        for (name, count) in items {
            let fail = |error: i16, msg: String| AdminOutcome { error, message: Some(msg) };
            match current.topic(&name) {
                None => outcomes.push(fail(errors::UNKNOWN_TOPIC_OR_PARTITION, format!("The topic '{name}' does not exist."))),
                Some(t) if count == t.partitions() => {
                    outcomes.push(fail(errors::INVALID_PARTITIONS, format!("Topic already has {count} partitions.")))
                }
                Some(t) if count < t.partitions() => outcomes.push(fail(
                    errors::INVALID_PARTITIONS,
                    format!("Topic currently has {} partitions, which is higher than the requested {count}.", t.partitions()),
                )),
                Some(t) => {
                    let mut placement = t.placement.clone();
                    placement.extend_from_slice(&metadata::place(&name, count, shards)[t.placement.len()..]);
                    grow.push((name, placement));
                    outcomes.push(AdminOutcome { error: 0, message: None });
                }
            }
        }
        if validate_only || grow.is_empty() {
            return ShardResponse::Admin(outcomes);
        }
        self.change_topics(grow, |t, placement| t.placement = placement, outcomes).await
    }

    /// Shard 0: applies `change` to each named topic, persists and broadcasts the new metadata;
    /// if it cannot be persisted the successful outcomes become KAFKA_STORAGE_ERROR.
    async fn change_topics<T>(self: &Rc<Self>, changes: Vec<(String, T)>, change: impl Fn(&mut TopicMeta, T), mut outcomes: Vec<AdminOutcome>) -> ShardResponse {
        let store = self.store.as_ref().expect("metadata store lives on shard 0");
        let snap = store.borrow_mut().update(|m| {
            for (name, value) in changes {
                if let Some(t) = m.topics.get_mut(&name) {
                    let mut nt = (**t).clone();
                    change(&mut nt, value);
                    *t = Arc::new(nt);
                }
            }
        });
        match snap {
            Ok(snap) => self.broadcast(snap).await,
            Err(e) => {
                error!("cannot persist metadata: {e:#}");
                for o in outcomes.iter_mut().filter(|o| o.error == 0) {
                    o.error = errors::KAFKA_STORAGE_ERROR;
                    o.message = Some(format!("metadata write failed: {e}"));
                }
            }
        }
        ShardResponse::Admin(outcomes)
    }

    fn log_sizes(&self, items: Vec<(String, i32)>) -> ShardResponse {
        ShardResponse::LogSizes(items.iter().map(|(t, p)| self.log(t, *p).map(|l| l.size_bytes())).collect())
    }

    /// Shard 0: hands out producer ids, persisting a new block of them before using it.
    fn allocate_producer_id(&self) -> Result<i64, i16> {
        const BLOCK: i64 = 1000;
        let store = self.store.as_ref().expect("metadata store lives on shard 0");
        let id = self.next_producer_id.get();
        if id >= store.borrow().snapshot().producer_id_block_end {
            let res = store.borrow_mut().update(|m| m.producer_id_block_end = id + BLOCK);
            if let Err(e) = res {
                error!("cannot persist producer id block: {e:#}");
                return Err(errors::KAFKA_STORAGE_ERROR);
            }
        }
        self.next_producer_id.set(id + 1);
        Ok(id)
    }

    async fn broadcast(self: &Rc<Self>, snapshot: Arc<MetadataSnapshot>) {
        let calls = (0..self.shards()).map(|s| self.call(s, ShardRequest::ApplyMetadata { snapshot: snapshot.clone() }));
        join_all(calls).await;
    }
}

impl ShardExecutor for Shard {
    fn execute(self: Rc<Self>, request: ShardRequest) -> LocalBoxFuture<'static, ShardResponse> {
        match request {
            ShardRequest::Produce { items, acks } => self.produce(items, acks),
            ShardRequest::Fetch { items } => self.fetch(items).boxed_local(),
            ShardRequest::WaitForData { items, deadline } => self.wait_for_data(items, deadline).boxed_local(),
            ShardRequest::ListOffsets { items } => self.list_offsets(items).boxed_local(),
            ShardRequest::DeleteRecords { items } => self.delete_records(items).boxed_local(),
            ShardRequest::ApplyMetadata { snapshot } => async move {
                self.apply_metadata(snapshot).await;
                ShardResponse::Applied
            }
            .boxed_local(),
            ShardRequest::CreateTopics { topics, validate_only } => self.create_topics(topics, validate_only).boxed_local(),
            ShardRequest::DeleteTopics { names } => self.delete_topics(names).boxed_local(),
            ShardRequest::AlterTopicConfigs { changes, validate_only } => self.alter_topic_configs(changes, validate_only).boxed_local(),
            ShardRequest::CreatePartitions { items, validate_only } => self.create_partitions(items, validate_only).boxed_local(),
            ShardRequest::LogSizes { items } => {
                let r = self.log_sizes(items);
                async move { r }.boxed_local()
            }
            ShardRequest::Group(call) => self.group_call(call).boxed_local(),
            ShardRequest::AllocateProducerId => {
                let r = self.allocate_producer_id();
                async move { ShardResponse::ProducerId(r) }.boxed_local()
            }
        }
    }
}
