//! Incremental fetch sessions (KIP-227) as pure bookkeeping: which partitions a fetch must read
//! and which of them its response must carry. No I/O, no executor, no protocol types: the fetch
//! handler translates the request into [`PlannedPartition`]s, calls [`FetchSessionCache::begin`],
//! reads what the plan lists, then calls [`FetchSessionCache::finish`] with what it read.
//! Owns the sessions of one shard (the shard a connection lives on); must not touch logs,
//! routing or the wire.
//!
//! # Request cases (Kafka's `FetchManager.newContext`)
//!
//! | session id | epoch          | meaning                                                         |
//! |------------|----------------|-----------------------------------------------------------------|
//! | any        | `-1` (FINAL)   | close the id if nonzero, then a sessionless full fetch           |
//! | any        | `0` (INITIAL)  | close the id if nonzero, then a full fetch that opens a session  |
//! | unknown    | anything else  | `FETCH_SESSION_ID_NOT_FOUND` (70); id 0 is never allocated       |
//! | known      | not expected   | `INVALID_FETCH_SESSION_EPOCH` (71)                               |
//! | known      | expected       | incremental: add/update the listed partitions, drop forgotten    |
//!
//! An incremental fetch whose version disagrees with the session about topic ids (v13+ name
//! topics by id) gets `FETCH_SESSION_TOPIC_ID_ERROR` (106). Session errors are top-level codes
//! answered with session id 0 and no partitions. An incremental fetch that leaves its session
//! empty closes it and is answered sessionless (session id 0) with the partitions it listed.
//!
//! # Decisions
//!
//! - A new session is created in `finish`, not `begin` (as Kafka does): its cached response
//!   values come from the first response, and if the cache has no room the client just gets
//!   session id 0 (a plain full response) and tries again next time.
//! - A session's first expected epoch is 1; after each incremental request it is
//!   [`next_epoch`] (after `i32::MAX` comes 1). The epoch moves in `begin`; `finish` checks it
//!   moved exactly once, so a second request on the same session racing the first one makes
//!   the first answer `INVALID_FETCH_SESSION_EPOCH`, as in Kafka.
//! - An incremental fetch reads every session partition, in session order, with the request
//!   parameters last sent for it. The cached fetch offset is never advanced from a response:
//!   clients resend a partition whenever their position moves (Kafka does the same).
//! - An incremental response carries a partition when it has records, an error, or a changed
//!   high watermark, last stable offset or log start offset since the last response that carried
//!   it. Kafka does not compare the last stable offset; comparing it too only ever adds
//!   partitions, which clients accept. After an error the cached high watermark becomes -1,
//!   so the partition is sent again once the error clears.
//! - A partition that returned records moves to the end of its session, so partitions starting
//!   later in the order get the response byte budget next time (Kafka's fairness rule). The plan
//!   order may therefore interleave topics; the response groups consecutive runs by topic.
//! - Eviction follows Kafka for consumers (there are no follower sessions here): when the cache
//!   is full, a new session may replace the least recently used session if it has been idle
//!   longer than the minimum eviction time; otherwise the session with the fewest partitions
//!   among those created longer ago than that time, if the new one has strictly more
//!   partitions. Otherwise no session is created. Plain LRU would let more clients than slots
//!   evict each other's sessions on every fetch; this keeps busy recent sessions. Choosing a
//!   victim scans the sessions (at most `max_slots`), only when creating into a full cache.
//! - Memory is bounded: [`MAX_SESSION_PARTITIONS`] per session and [`MAX_CACHED_PARTITIONS`]
//!   per cache. A full fetch over the limits gets no session; an incremental fetch that grows
//!   its session past them closes it and gets `FETCH_SESSION_ID_NOT_FOUND`, after which the
//!   client falls back to full fetches.
//! - Duplicate partitions in one request collapse into one session entry (last parameters win,
//!   first position kept), as in Kafka's request map; a full fetch's plan keeps them as sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::protocol::errors;

/// Session id meaning "no session".
pub const INVALID_SESSION_ID: i32 = 0;
/// Epoch of a full fetch that asks for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// Epoch of a full fetch that wants no session (and closes the one it names).
pub const FINAL_EPOCH: i32 = -1;
/// Kafka's default for `max.incremental.fetch.session.cache.slots`.
pub const DEFAULT_MAX_SLOTS: usize = 1000;
/// Kafka's default for `min.incremental.fetch.session.eviction.ms`: a session younger than
/// this (created, or used, within it) is not displaced by an equal or smaller one.
pub const DEFAULT_MIN_EVICTION: Duration = Duration::from_millis(120_000);
/// Most partitions one session may cache.
pub const MAX_SESSION_PARTITIONS: usize = 50_000;
/// Most partitions all sessions of one cache may hold together (about 100 bytes each).
pub const MAX_CACHED_PARTITIONS: usize = 250_000;

/// The epoch a session expects after one that was `epoch` (Kafka's `FetchMetadata.nextEpoch`).
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// How a request names a topic: by name before Fetch v13, by id from v13.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionTopic {
    Name(Arc<str>),
    Id(Uuid),
}

/// A partition as a session knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionPartition {
    pub topic: SessionTopic,
    pub partition: i32,
}

impl SessionPartition {
    pub fn by_name(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        SessionPartition { topic: SessionTopic::Name(topic.into()), partition }
    }

    pub fn by_id(topic_id: Uuid, partition: i32) -> Self {
        SessionPartition { topic: SessionTopic::Id(topic_id), partition }
    }
}

/// The client's parameters for one partition, as last sent in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionParams {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    /// The client's log start offset (-1 for consumers).
    pub log_start_offset: i64,
    pub current_leader_epoch: i32,
}

/// One partition a fetch must read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPartition {
    pub key: SessionPartition,
    pub params: PartitionParams,
}

/// What kind of fetch a plan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanKind {
    /// No session: epoch -1, or an incremental fetch that emptied (and so closed) its session.
    Sessionless,
    /// A full fetch (epoch 0); `finish` tries to open a session from its results.
    NewSession,
    /// An incremental fetch on `session_id`; `request_epoch` is the epoch the request carried.
    Incremental { session_id: i32, request_epoch: i32 },
}

/// The partitions one fetch must read, in response order.
#[derive(Clone, Debug)]
pub struct SessionPlan {
    pub kind: PlanKind,
    /// The request names topics by id (Fetch v13+).
    pub topic_ids: bool,
    /// For full fetches, the request's partitions as sent; for incremental ones, every
    /// partition of the session in session order with its cached parameters.
    pub partitions: Vec<PlannedPartition>,
}

impl SessionPlan {
    pub fn is_incremental(&self) -> bool {
        matches!(self.kind, PlanKind::Incremental { .. })
    }
}

/// What a fetch produced for one planned partition, as it will be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionResult {
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// The broker's log start offset.
    pub log_start_offset: i64,
    /// Records are sent for this partition (after the response byte budget is applied).
    pub has_records: bool,
}

/// How to answer a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Top-level error; when nonzero the response carries no partitions.
    pub error_code: i16,
    /// The session id to put in the response (0 when there is none).
    pub session_id: i32,
    /// Per planned partition, whether the response carries it (empty on error).
    pub include: Vec<bool>,
}

/// What a session remembers of one partition.
#[derive(Clone, Copy, Debug)]
struct Cached {
    params: PartitionParams,
    /// Last values sent to the client (-1 before any).
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// Position key: the session map is kept in ascending `seq`.
    seq: u64,
}

impl Cached {
    fn new(params: PartitionParams, seq: u64) -> Self {
        Cached { params, high_watermark: -1, last_stable_offset: -1, log_start_offset: -1, seq }
    }

    /// Records what is sent and says whether an incremental response must carry it.
    fn observe(&mut self, r: &PartitionResult) -> bool {
        let mut include = r.has_records;
        if self.high_watermark != r.high_watermark {
            self.high_watermark = r.high_watermark;
            include = true;
        }
        if self.last_stable_offset != r.last_stable_offset {
            self.last_stable_offset = r.last_stable_offset;
            include = true;
        }
        if self.log_start_offset != r.log_start_offset {
            self.log_start_offset = r.log_start_offset;
            include = true;
        }
        if r.error_code != errors::NONE {
            // Forget the high watermark so the partition is sent again once the error clears.
            self.high_watermark = -1;
            include = true;
        }
        include
    }
}

struct Session {
    id: i32,
    /// The epoch the next incremental request must carry.
    epoch: i32,
    topic_ids: bool,
    created: Instant,
    last_used: Instant,
    partitions: IndexMap<SessionPartition, Cached>,
    next_seq: u64,
}

impl Session {
    /// Adds a partition at the end, or updates its parameters in place.
    fn upsert(&mut self, key: &SessionPartition, params: PartitionParams) -> &mut Cached {
        let seq = self.next_seq;
        let entry = self.partitions.entry(key.clone()).or_insert_with(|| Cached::new(params, seq));
        if entry.seq == seq {
            self.next_seq += 1;
        }
        entry.params = params;
        entry
    }
}

/// The fetch sessions of one shard.
pub struct FetchSessionCache {
    max_slots: usize,
    min_eviction: Duration,
    /// Ids are drawn from `id_low..id_high` (never 0).
    id_low: i32,
    id_high: i32,
    sessions: HashMap<i32, Session>,
    cached_partitions: usize,
    evictions: u64,
    rng: StdRng,
}

impl FetchSessionCache {
    /// A cache of at most `max_slots` sessions (0 disables sessions: every full fetch is
    /// answered without one), with Kafka's default minimum eviction time.
    pub fn new(max_slots: usize) -> Self {
        FetchSessionCache {
            max_slots,
            min_eviction: DEFAULT_MIN_EVICTION,
            id_low: 1,
            id_high: i32::MAX,
            sessions: HashMap::new(),
            cached_partitions: 0,
            evictions: 0,
            rng: StdRng::from_entropy(),
        }
    }

    /// Sets the minimum eviction time (`min.incremental.fetch.session.eviction.ms`).
    pub fn with_min_eviction(mut self, min_eviction: Duration) -> Self {
        self.min_eviction = min_eviction;
        self
    }

    /// Draws ids from shard `shard`'s share of the id space, so an id names one shard's session
    /// only (a full fetch that reaches another shard cannot close an unrelated session).
    pub fn with_id_space(mut self, shard: usize, shards: usize) -> Self {
        let shards = shards.max(1) as i64;
        let shard = (shard as i64).min(shards - 1);
        let range = i32::MAX as i64 / shards;
        self.id_low = (shard * range).max(1) as i32;
        self.id_high = ((shard + 1) * range) as i32;
        self
    }

    /// Seeds the id generator (tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions cached over all sessions.
    pub fn cached_partitions(&self) -> usize {
        self.cached_partitions
    }

    /// Sessions evicted to make room for new ones since start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Closes a session; false when there was none.
    pub fn remove(&mut self, session_id: i32) -> bool {
        match self.sessions.remove(&session_id) {
            Some(s) => {
                self.cached_partitions -= s.partitions.len();
                true
            }
            None => false,
        }
    }

    /// Resolves a request's session fields into the partitions to read. `requested` are the
    /// request's partitions in request order, `forgotten` its forgotten partitions,
    /// `topic_ids` whether the request version names topics by id (v13+). An error is a
    /// top-level error code to answer with (session id 0, no partitions).
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        topic_ids: bool,
        requested: Vec<PlannedPartition>,
        forgotten: &[SessionPartition],
        now: Instant,
    ) -> Result<SessionPlan, i16> {
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            // A full fetch closes any session it names.
            if session_id != INVALID_SESSION_ID {
                self.remove(session_id);
            }
            let kind = if epoch == FINAL_EPOCH { PlanKind::Sessionless } else { PlanKind::NewSession };
            return Ok(SessionPlan { kind, topic_ids, partitions: requested });
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Err(errors::FETCH_SESSION_ID_NOT_FOUND);
        };
        if session.epoch != epoch {
            return Err(errors::INVALID_FETCH_SESSION_EPOCH);
        }
        if session.topic_ids != topic_ids {
            return Err(errors::FETCH_SESSION_TOPIC_ID_ERROR);
        }
        let before = session.partitions.len();
        for p in &requested {
            session.upsert(&p.key, p.params);
        }
        for key in forgotten {
            session.partitions.shift_remove(key);
        }
        let after = session.partitions.len();
        self.cached_partitions = self.cached_partitions - before + after;
        if after == 0 {
            self.remove(session_id);
            return Ok(SessionPlan { kind: PlanKind::Sessionless, topic_ids, partitions: requested });
        }
        if after > MAX_SESSION_PARTITIONS || self.cached_partitions > MAX_CACHED_PARTITIONS {
            self.remove(session_id);
            return Err(errors::FETCH_SESSION_ID_NOT_FOUND);
        }
        session.last_used = now;
        session.epoch = next_epoch(epoch);
        let partitions = session
            .partitions
            .iter()
            .map(|(key, c)| PlannedPartition { key: key.clone(), params: c.params })
            .collect();
        Ok(SessionPlan { kind: PlanKind::Incremental { session_id, request_epoch: epoch }, topic_ids, partitions })
    }

    /// Records what a fetch read (`results[i]` for `plan.partitions[i]`, as sent) and says how
    /// to answer: full fetches carry every planned partition; incremental ones only those that
    /// changed. For a full fetch with epoch 0 this opens the session if there is room.
    pub fn finish(&mut self, plan: &SessionPlan, results: &[PartitionResult], now: Instant) -> SessionOutcome {
        let n = plan.partitions.len();
        match plan.kind {
            PlanKind::Sessionless => SessionOutcome { error_code: errors::NONE, session_id: INVALID_SESSION_ID, include: vec![true; n] },
            PlanKind::NewSession => {
                let session_id = self.create(plan, results, now);
                SessionOutcome { error_code: errors::NONE, session_id, include: vec![true; n] }
            }
            PlanKind::Incremental { session_id, request_epoch } => {
                let Some(session) = self.sessions.get_mut(&session_id) else {
                    // Closed or evicted while the fetch was reading.
                    return SessionOutcome { error_code: errors::FETCH_SESSION_ID_NOT_FOUND, session_id: INVALID_SESSION_ID, include: Vec::new() };
                };
                if session.epoch != next_epoch(request_epoch) {
                    // Another request on this session began meanwhile.
                    return SessionOutcome { error_code: errors::INVALID_FETCH_SESSION_EPOCH, session_id, include: Vec::new() };
                }
                let mut include = Vec::with_capacity(n);
                let mut moved = false;
                for (i, p) in plan.partitions.iter().enumerate() {
                    let carry = match (session.partitions.get_mut(&p.key), results.get(i)) {
                        (Some(c), Some(r)) => {
                            if r.has_records {
                                c.seq = session.next_seq;
                                session.next_seq += 1;
                                moved = true;
                            }
                            c.observe(r)
                        }
                        // Not expected (a result missing, or the partition gone): sending it is safe.
                        _ => true,
                    };
                    include.push(carry);
                }
                if moved {
                    session.partitions.sort_unstable_by(|_, a, _, b| a.seq.cmp(&b.seq));
                }
                SessionOutcome { error_code: errors::NONE, session_id, include }
            }
        }
    }

    /// Opens a session from a full fetch's plan and results; its id, or 0 when there is no room.
    fn create(&mut self, plan: &SessionPlan, results: &[PartitionResult], now: Instant) -> i32 {
        let size = plan.partitions.len();
        if self.max_slots == 0 || size > MAX_SESSION_PARTITIONS {
            return INVALID_SESSION_ID;
        }
        if self.sessions.len() >= self.max_slots && !self.try_evict(size, now) {
            return INVALID_SESSION_ID;
        }
        if self.cached_partitions + size > MAX_CACHED_PARTITIONS {
            return INVALID_SESSION_ID;
        }
        let id = self.new_id();
        let mut session = Session {
            id,
            epoch: next_epoch(INITIAL_EPOCH),
            topic_ids: plan.topic_ids,
            created: now,
            last_used: now,
            partitions: IndexMap::with_capacity(size),
            next_seq: 0,
        };
        for (i, p) in plan.partitions.iter().enumerate() {
            let c = session.upsert(&p.key, p.params);
            if let Some(r) = results.get(i) {
                c.observe(r);
            }
        }
        self.cached_partitions += session.partitions.len();
        self.sessions.insert(id, session);
        id
    }

    /// Makes room for a session of `size` partitions by Kafka's rule (see the module doc).
    fn try_evict(&mut self, size: usize, now: Instant) -> bool {
        let Some((lru_id, lru_used)) = self.sessions.values().map(|s| (s.id, s.last_used)).min_by_key(|&(id, used)| (used, id)) else {
            return false;
        };
        let victim = if now.saturating_duration_since(lru_used) > self.min_eviction {
            Some(lru_id)
        } else {
            self.sessions
                .values()
                .filter(|s| now.saturating_duration_since(s.created) > self.min_eviction)
                .min_by_key(|s| (s.partitions.len(), s.id))
                .filter(|s| size > s.partitions.len())
                .map(|s| s.id)
        };
        match victim {
            Some(id) => {
                self.remove(id);
                self.evictions += 1;
                true
            }
            None => false,
        }
    }

    fn new_id(&mut self) -> i32 {
        loop {
            let id = self.rng.gen_range(self.id_low..self.id_high);
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    #[cfg(test)]
    fn session(&self, id: i32) -> Option<&Session> {
        self.sessions.get(&id)
    }

    #[cfg(test)]
    fn session_mut(&mut self, id: i32) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(offset: i64) -> PartitionParams {
        PartitionParams { fetch_offset: offset, partition_max_bytes: 1 << 20, log_start_offset: -1, current_leader_epoch: -1 }
    }

    fn p(topic: &str, partition: i32, offset: i64) -> PlannedPartition {
        PlannedPartition { key: SessionPartition::by_name(topic, partition), params: params(offset) }
    }

    fn key(topic: &str, partition: i32) -> SessionPartition {
        SessionPartition::by_name(topic, partition)
    }

    /// A quiet partition: no records, no error.
    fn quiet(hw: i64) -> PartitionResult {
        PartitionResult { error_code: 0, high_watermark: hw, last_stable_offset: hw, log_start_offset: 0, has_records: false }
    }

    fn keys(plan: &SessionPlan) -> Vec<(String, i32)> {
        plan.partitions
            .iter()
            .map(|pp| match &pp.key.topic {
                SessionTopic::Name(n) => (n.to_string(), pp.key.partition),
                SessionTopic::Id(id) => (id.to_string(), pp.key.partition),
            })
            .collect()
    }

    fn named(v: &[(&str, i32)]) -> Vec<(String, i32)> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    fn cache() -> FetchSessionCache {
        FetchSessionCache::new(DEFAULT_MAX_SLOTS).with_seed(7)
    }

    /// Opens a session over `parts` (all quiet at hw 10); returns its id.
    fn open(c: &mut FetchSessionCache, parts: Vec<PlannedPartition>, now: Instant) -> i32 {
        let plan = c.begin(0, INITIAL_EPOCH, false, parts, &[], now).unwrap();
        assert_eq!(plan.kind, PlanKind::NewSession);
        let results = vec![quiet(10); plan.partitions.len()];
        let out = c.finish(&plan, &results, now);
        assert_eq!(out.error_code, 0);
        assert_ne!(out.session_id, 0);
        assert!(out.include.iter().all(|&b| b));
        out.session_id
    }

    #[test]
    fn next_epoch_follows_kafka() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(1), 2);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
        assert_eq!(next_epoch(-7), -1);
    }

    #[test]
    fn sessionless_full_fetch() {
        let mut c = cache();
        let now = Instant::now();
        let req = vec![p("a", 0, 5), p("b", 1, 7), p("a", 1, 0)];
        let plan = c.begin(0, FINAL_EPOCH, false, req.clone(), &[], now).unwrap();
        assert_eq!(plan.kind, PlanKind::Sessionless);
        assert!(!plan.is_incremental());
        assert_eq!(plan.partitions, req);
        let out = c.finish(&plan, &[quiet(1), quiet(2), quiet(3)], now);
        assert_eq!(out, SessionOutcome { error_code: 0, session_id: 0, include: vec![true, true, true] });
        assert!(c.is_empty());
        assert_eq!(c.cached_partitions(), 0);
    }

    #[test]
    fn full_fetch_opens_a_session() {
        let mut c = cache();
        let now = Instant::now();
        let req = vec![p("a", 0, 5), p("b", 1, 7)];
        let plan = c.begin(0, INITIAL_EPOCH, false, req.clone(), &[], now).unwrap();
        assert_eq!(plan.kind, PlanKind::NewSession);
        assert_eq!(plan.partitions, req);
        // Not created until the response is known.
        assert!(c.is_empty());
        let out = c.finish(&plan, &[quiet(10), quiet(20)], now);
        assert_eq!(out.error_code, 0);
        assert!(out.session_id > 0);
        assert_eq!(out.include, vec![true, true]);
        assert_eq!(c.len(), 1);
        assert_eq!(c.cached_partitions(), 2);
        let s = c.session(out.session_id).unwrap();
        assert_eq!(s.epoch, 1);
        let cached: Vec<_> = s.partitions.values().map(|c| (c.params.fetch_offset, c.high_watermark)).collect();
        assert_eq!(cached, vec![(5, 10), (7, 20)]);
    }

    #[test]
    fn incremental_without_changes_carries_nothing() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 5), p("a", 1, 6), p("b", 0, 7)], now);
        let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
        assert_eq!(plan.kind, PlanKind::Incremental { session_id: id, request_epoch: 1 });
        assert!(plan.is_incremental());
        assert_eq!(keys(&plan), named(&[("a", 0), ("a", 1), ("b", 0)]));
        let offsets: Vec<_> = plan.partitions.iter().map(|pp| pp.params.fetch_offset).collect();
        assert_eq!(offsets, vec![5, 6, 7]);
        let out = c.finish(&plan, &[quiet(10), quiet(10), quiet(10)], now);
        assert_eq!(out, SessionOutcome { error_code: 0, session_id: id, include: vec![false, false, false] });
        // And the next one expects epoch 2.
        assert!(c.begin(id, 2, false, vec![], &[], now).is_ok());
    }

    #[test]
    fn incremental_carries_changed_partitions() {
        let mut c = cache();
        let now = Instant::now();
        let parts: Vec<_> = (0..6).map(|i| p("t", i, 0)).collect();
        let id = open(&mut c, parts, now);
        let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
        let mut results = vec![quiet(10); 6];
        results[1].high_watermark = 11;
        results[1].last_stable_offset = 11;
        results[2].has_records = true;
        results[3].error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
        results[4].log_start_offset = 3;
        results[5].last_stable_offset = 9;
        let out = c.finish(&plan, &results, now);
        assert_eq!(out.include, vec![false, true, true, true, true, true]);

        // The new values are remembered; the errored partition's high watermark is forgotten,
        // so it is sent again once the error clears even at the old high watermark.
        let plan = c.begin(id, 2, false, vec![], &[], now).unwrap();
        let mut results: Vec<_> = plan
            .partitions
            .iter()
            .map(|pp| match pp.key.partition {
                1 => quiet(11),
                4 => PartitionResult { log_start_offset: 3, ..quiet(10) },
                5 => PartitionResult { last_stable_offset: 9, ..quiet(10) },
                _ => quiet(10),
            })
            .collect();
        let out = c.finish(&plan, &results, now);
        let carried: Vec<i32> = plan.partitions.iter().zip(&out.include).filter(|(_, &b)| b).map(|(pp, _)| pp.key.partition).collect();
        assert_eq!(carried, vec![3]);

        // Nothing changes: nothing is carried.
        let plan = c.begin(id, 3, false, vec![], &[], now).unwrap();
        for (r, pp) in results.iter_mut().zip(&plan.partitions) {
            *r = match pp.key.partition {
                1 => quiet(11),
                4 => PartitionResult { log_start_offset: 3, ..quiet(10) },
                5 => PartitionResult { last_stable_offset: 9, ..quiet(10) },
                _ => quiet(10),
            };
        }
        assert!(c.finish(&plan, &results, now).include.iter().all(|&b| !b));
    }

    #[test]
    fn partitions_with_records_move_to_the_end() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0), p("a", 1, 0), p("b", 0, 0), p("b", 1, 0)], now);
        let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
        let mut results = vec![quiet(10); 4];
        results[0].has_records = true;
        results[2].has_records = true;
        // A changed high watermark without records does not move a partition.
        results[1].high_watermark = 12;
        let out = c.finish(&plan, &results, now);
        assert_eq!(out.include, vec![true, true, true, false]);
        let plan = c.begin(id, 2, false, vec![], &[], now).unwrap();
        assert_eq!(keys(&plan), named(&[("a", 1), ("b", 1), ("a", 0), ("b", 0)]));
    }

    #[test]
    fn cached_offsets_change_only_by_request() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 5), p("a", 1, 6)], now);
        let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
        let mut results = vec![quiet(10); 2];
        results[0] = PartitionResult { has_records: true, ..quiet(100) };
        c.finish(&plan, &results, now);
        // The response does not move the fetch offset; the client's next request does.
        let plan = c.begin(id, 2, false, vec![], &[], now).unwrap();
        assert_eq!(plan.partitions.iter().find(|pp| pp.key == key("a", 0)).unwrap().params.fetch_offset, 5);
        c.finish(&plan, &[quiet(10), quiet(100)], now);
        let plan = c.begin(id, 3, false, vec![p("a", 0, 100)], &[], now).unwrap();
        // Updated in place (only records move a partition).
        assert_eq!(keys(&plan), named(&[("a", 1), ("a", 0)]));
        assert_eq!(plan.partitions[1].params.fetch_offset, 100);
        assert_eq!(plan.partitions[0].params.fetch_offset, 6);
    }

    #[test]
    fn added_and_forgotten_partitions() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0), p("a", 1, 0), p("b", 0, 0)], now);
        assert_eq!(c.cached_partitions(), 3);
        let plan = c.begin(id, 1, false, vec![p("c", 0, 3), p("a", 1, 4)], &[key("a", 0), key("zz", 9)], now).unwrap();
        assert_eq!(keys(&plan), named(&[("a", 1), ("b", 0), ("c", 0)]));
        assert_eq!(plan.partitions[0].params.fetch_offset, 4);
        assert_eq!(plan.partitions[2].params.fetch_offset, 3);
        assert_eq!(c.cached_partitions(), 3);
        // A new partition has no sent values yet, so it is carried even when quiet.
        let out = c.finish(&plan, &[quiet(10), quiet(10), quiet(10)], now);
        assert_eq!(out.include, vec![false, false, true]);
        let plan = c.begin(id, 2, false, vec![], &[key("b", 0)], now).unwrap();
        assert_eq!(keys(&plan), named(&[("a", 1), ("c", 0)]));
        assert_eq!(c.cached_partitions(), 2);
    }

    #[test]
    fn forgetting_everything_closes_the_session() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0)], now);
        // Listing and forgetting the same partition: Kafka answers sessionless with the listed ones.
        let plan = c.begin(id, 1, false, vec![p("b", 0, 2)], &[key("a", 0), key("b", 0)], now).unwrap();
        assert_eq!(plan.kind, PlanKind::Sessionless);
        assert_eq!(keys(&plan), named(&[("b", 0)]));
        assert!(c.is_empty());
        assert_eq!(c.cached_partitions(), 0);
        let out = c.finish(&plan, &[quiet(1)], now);
        assert_eq!(out, SessionOutcome { error_code: 0, session_id: 0, include: vec![true] });
        assert_eq!(c.begin(id, 2, false, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_ID_NOT_FOUND);
    }

    #[test]
    fn session_errors() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0)], now);
        assert_eq!(c.begin(id, 2, false, vec![], &[], now).unwrap_err(), errors::INVALID_FETCH_SESSION_EPOCH);
        assert_eq!(c.begin(id, -5, false, vec![], &[], now).unwrap_err(), errors::INVALID_FETCH_SESSION_EPOCH);
        let other = if id == i32::MAX - 1 { id - 1 } else { id + 1 };
        assert_eq!(c.begin(other, 1, false, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_ID_NOT_FOUND);
        // Id 0 is never allocated: an incremental fetch on it is unknown.
        assert_eq!(c.begin(0, 1, false, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_ID_NOT_FOUND);
        // The version must agree with the session about topic ids.
        assert_eq!(c.begin(id, 1, true, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_TOPIC_ID_ERROR);
        // Errors change nothing: the right epoch still works.
        assert!(c.begin(id, 1, false, vec![], &[], now).is_ok());
        // A repeated request (same epoch) is refused.
        assert_eq!(c.begin(id, 1, false, vec![], &[], now).unwrap_err(), errors::INVALID_FETCH_SESSION_EPOCH);
    }

    #[test]
    fn racing_requests_on_one_session() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0)], now);
        let first = c.begin(id, 1, false, vec![], &[], now).unwrap();
        let second = c.begin(id, 2, false, vec![], &[], now).unwrap();
        let out = c.finish(&first, &[quiet(10)], now);
        assert_eq!(out, SessionOutcome { error_code: errors::INVALID_FETCH_SESSION_EPOCH, session_id: id, include: vec![] });
        assert_eq!(c.finish(&second, &[quiet(10)], now).error_code, 0);
        // Closed while a fetch was reading.
        let third = c.begin(id, 3, false, vec![], &[], now).unwrap();
        assert!(c.remove(id));
        let out = c.finish(&third, &[quiet(10)], now);
        assert_eq!(out, SessionOutcome { error_code: errors::FETCH_SESSION_ID_NOT_FOUND, session_id: 0, include: vec![] });
    }

    #[test]
    fn missing_results_are_carried() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0), p("a", 1, 0)], now);
        let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
        assert_eq!(c.finish(&plan, &[quiet(10)], now).include, vec![false, true]);
    }

    #[test]
    fn final_epoch_closes_the_session() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0), p("a", 1, 0)], now);
        let plan = c.begin(id, FINAL_EPOCH, false, vec![p("a", 0, 4)], &[], now).unwrap();
        assert_eq!(plan.kind, PlanKind::Sessionless);
        assert_eq!(keys(&plan), named(&[("a", 0)]));
        assert!(c.is_empty());
        assert_eq!(c.cached_partitions(), 0);
        assert_eq!(c.finish(&plan, &[quiet(1)], now).session_id, 0);
        assert_eq!(c.begin(id, 1, false, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_ID_NOT_FOUND);
    }

    #[test]
    fn initial_epoch_with_an_id_replaces_the_session() {
        let mut c = cache();
        let now = Instant::now();
        let old = open(&mut c, vec![p("a", 0, 0)], now);
        let plan = c.begin(old, INITIAL_EPOCH, false, vec![p("b", 0, 0)], &[], now).unwrap();
        assert_eq!(plan.kind, PlanKind::NewSession);
        assert!(c.is_empty());
        let new = c.finish(&plan, &[quiet(1)], now).session_id;
        assert!(new > 0 && new != old);
        assert_eq!(c.len(), 1);
        assert_eq!(c.begin(old, 1, false, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_ID_NOT_FOUND);
        let plan = c.begin(new, 1, false, vec![], &[], now).unwrap();
        assert_eq!(keys(&plan), named(&[("b", 0)]));
    }

    #[test]
    fn epoch_wraps_after_max() {
        let mut c = cache();
        let now = Instant::now();
        let id = open(&mut c, vec![p("a", 0, 0)], now);
        c.session_mut(id).unwrap().epoch = i32::MAX;
        let plan = c.begin(id, i32::MAX, false, vec![], &[], now).unwrap();
        assert_eq!(c.finish(&plan, &[quiet(10)], now).error_code, 0);
        assert_eq!(c.session(id).unwrap().epoch, 1);
        let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
        assert_eq!(c.finish(&plan, &[quiet(10)], now).error_code, 0);
        assert_eq!(c.session(id).unwrap().epoch, 2);
    }

    #[test]
    fn topic_id_sessions() {
        let mut c = cache();
        let now = Instant::now();
        let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
        let by_id = |t: Uuid, part: i32, off: i64| PlannedPartition { key: SessionPartition::by_id(t, part), params: params(off) };
        let plan = c.begin(0, INITIAL_EPOCH, true, vec![by_id(t1, 0, 1), by_id(t1, 1, 2)], &[], now).unwrap();
        assert!(plan.topic_ids);
        let id = c.finish(&plan, &[quiet(10), quiet(10)], now).session_id;
        assert_ne!(id, 0);
        // An old-version request cannot use it.
        assert_eq!(c.begin(id, 1, false, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_TOPIC_ID_ERROR);
        let plan = c.begin(id, 1, true, vec![by_id(t2, 0, 3), by_id(t1, 1, 9)], &[SessionPartition::by_id(t1, 0)], now).unwrap();
        let got: Vec<_> = plan.partitions.iter().map(|pp| (pp.key.clone(), pp.params.fetch_offset)).collect();
        assert_eq!(got, vec![(SessionPartition::by_id(t1, 1), 9), (SessionPartition::by_id(t2, 0), 3)]);
        let out = c.finish(&plan, &[quiet(10), quiet(10)], now);
        assert_eq!(out.include, vec![false, true]);
        // A name-keyed session cannot be used by a v13+ request.
        let named_id = open(&mut c, vec![p("a", 0, 0)], now);
        assert_eq!(c.begin(named_id, 1, true, vec![], &[], now).unwrap_err(), errors::FETCH_SESSION_TOPIC_ID_ERROR);
    }

    #[test]
    fn stale_least_recently_used_session_is_evicted() {
        let t0 = Instant::now();
        let min = Duration::from_secs(120);
        let mut c = FetchSessionCache::new(2).with_min_eviction(min).with_seed(1);
        let a = open(&mut c, vec![p("a", 0, 0), p("a", 1, 0)], t0);
        let b = open(&mut c, vec![p("b", 0, 0), p("b", 1, 0)], t0 + Duration::from_secs(1));
        // `a` is used later than `b`, so `b` is the least recently used.
        let plan = c.begin(a, 1, false, vec![], &[], t0 + Duration::from_secs(60)).unwrap();
        c.finish(&plan, &[quiet(10), quiet(10)], t0 + Duration::from_secs(60));
        let later = t0 + Duration::from_secs(150);
        let new = open(&mut c, vec![p("c", 0, 0)], later);
        assert_eq!(c.len(), 2);
        assert_eq!(c.evictions(), 1);
        assert_eq!(c.begin(b, 1, false, vec![], &[], later).unwrap_err(), errors::FETCH_SESSION_ID_NOT_FOUND);
        assert!(c.begin(a, 2, false, vec![], &[], later).is_ok());
        assert!(c.begin(new, 1, false, vec![], &[], later).is_ok());
        assert_eq!(c.cached_partitions(), 3);
    }

    #[test]
    fn busy_recent_sessions_are_kept() {
        let t0 = Instant::now();
        let mut c = FetchSessionCache::new(2).with_seed(2);
        let a = open(&mut c, vec![p("a", 0, 0)], t0);
        let b = open(&mut c, vec![p("b", 0, 0)], t0);
        // Full and nothing idle or old: no session, a plain full response.
        let plan = c.begin(0, INITIAL_EPOCH, false, vec![p("c", 0, 0), p("c", 1, 0), p("c", 2, 0)], &[], t0 + Duration::from_secs(10)).unwrap();
        let out = c.finish(&plan, &[quiet(1), quiet(1), quiet(1)], t0 + Duration::from_secs(10));
        assert_eq!(out, SessionOutcome { error_code: 0, session_id: 0, include: vec![true, true, true] });
        assert_eq!(c.len(), 2);
        assert_eq!(c.evictions(), 0);
        assert!(c.session(a).is_some() && c.session(b).is_some());
    }

    #[test]
    fn larger_session_evicts_the_smallest_old_one() {
        let t0 = Instant::now();
        let mut c = FetchSessionCache::new(2).with_seed(3);
        let small = open(&mut c, vec![p("s", 0, 0)], t0);
        let big = open(&mut c, vec![p("b", 0, 0), p("b", 1, 0), p("b", 2, 0)], t0);
        // Both old enough, and both used recently (not stale).
        let now = t0 + Duration::from_secs(200);
        for (id, n) in [(small, 1), (big, 3)] {
            let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
            c.finish(&plan, &vec![quiet(10); n], now);
        }
        // Same size as the smallest: refused.
        let plan = c.begin(0, INITIAL_EPOCH, false, vec![p("x", 0, 0)], &[], now).unwrap();
        assert_eq!(c.finish(&plan, &[quiet(1)], now).session_id, 0);
        // Larger: the smallest goes.
        let plan = c.begin(0, INITIAL_EPOCH, false, vec![p("y", 0, 0), p("y", 1, 0)], &[], now).unwrap();
        let id = c.finish(&plan, &[quiet(1), quiet(1)], now).session_id;
        assert_ne!(id, 0);
        assert!(c.session(small).is_none());
        assert!(c.session(big).is_some());
        assert_eq!(c.evictions(), 1);
        assert_eq!(c.cached_partitions(), 5);
    }

    #[test]
    fn zero_slots_disables_sessions() {
        let mut c = FetchSessionCache::new(0);
        let now = Instant::now();
        let plan = c.begin(0, INITIAL_EPOCH, false, vec![p("a", 0, 0)], &[], now).unwrap();
        assert_eq!(c.finish(&plan, &[quiet(1)], now), SessionOutcome { error_code: 0, session_id: 0, include: vec![true] });
        assert!(c.is_empty());
    }

    #[test]
    fn partition_limits() {
        let mut c = cache();
        let now = Instant::now();
        let many = |topic: &str, n: usize| (0..n as i32).map(|i| p(topic, i, 0)).collect::<Vec<_>>();
        // Too large to cache: answered without a session.
        let plan = c.begin(0, INITIAL_EPOCH, false, many("big", MAX_SESSION_PARTITIONS + 1), &[], now).unwrap();
        let results = vec![quiet(1); plan.partitions.len()];
        assert_eq!(c.finish(&plan, &results, now).session_id, 0);
        assert!(c.is_empty());
        // Growing past the limit closes the session.
        let id = open(&mut c, many("t", MAX_SESSION_PARTITIONS), now);
        assert_eq!(c.begin(id, 1, false, vec![p("u", 0, 0)], &[], now).unwrap_err(), errors::FETCH_SESSION_ID_NOT_FOUND);
        assert!(c.is_empty());
        assert_eq!(c.cached_partitions(), 0);
        // The cache-wide limit.
        for i in 0..MAX_CACHED_PARTITIONS / MAX_SESSION_PARTITIONS {
            open(&mut c, many(&format!("t{i}"), MAX_SESSION_PARTITIONS), now);
        }
        assert_eq!(c.cached_partitions(), MAX_CACHED_PARTITIONS);
        let plan = c.begin(0, INITIAL_EPOCH, false, vec![p("v", 0, 0)], &[], now).unwrap();
        assert_eq!(c.finish(&plan, &[quiet(1)], now).session_id, 0);
    }

    #[test]
    fn duplicate_partitions_collapse_in_the_session() {
        let mut c = cache();
        let now = Instant::now();
        let plan = c.begin(0, INITIAL_EPOCH, false, vec![p("a", 0, 1), p("a", 1, 2), p("a", 0, 3)], &[], now).unwrap();
        assert_eq!(plan.partitions.len(), 3);
        let id = c.finish(&plan, &[quiet(1), quiet(1), quiet(1)], now).session_id;
        assert_eq!(c.cached_partitions(), 2);
        let plan = c.begin(id, 1, false, vec![], &[], now).unwrap();
        let got: Vec<_> = plan.partitions.iter().map(|pp| (pp.key.partition, pp.params.fetch_offset)).collect();
        assert_eq!(got, vec![(0, 3), (1, 2)]);
    }

    #[test]
    fn ids_are_unique_nonzero_and_in_the_shard_space() {
        let now = Instant::now();
        let mut c = FetchSessionCache::new(500).with_id_space(2, 4).with_seed(9);
        let range = i32::MAX / 4;
        let mut seen = std::collections::HashSet::new();
        for i in 0..500 {
            let id = open(&mut c, vec![p("a", i, 0)], now);
            assert!(id >= 2 * range && id < 3 * range, "{id}");
            assert!(seen.insert(id));
        }
        let mut c = FetchSessionCache::new(10).with_id_space(0, 4);
        let id = open(&mut c, vec![p("a", 0, 0)], now);
        assert!(id >= 1 && id < range);
    }
}
