//! The group coordinator of one shard: the classic consumer-group protocol (Kafka's states
//! Empty, PreparingRebalance, CompletingRebalance, Stable, Dead) and committed offsets, for the
//! groups whose id hashes to this shard.
//!
//! Owns the state of those groups and their internal log (`GroupStore`). Every request for a
//! group is routed here, whatever shard's connection it came from. Assignment is the clients'
//! business: the coordinator relays protocol metadata to the leader and the leader's assignments
//! to the members, so every client-side assignor works. Never holds a `RefCell` borrow across
//! an `.await`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use indexmap::IndexMap;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info, warn};

use super::store::{now_ms, GroupStore, GroupValue, MemberValue, OffsetValue, StoreKey, StoreRecord};
use crate::config::BrokerConfig;
use crate::metadata::MetadataSnapshot;

/// Kafka error codes used by the coordinator.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}
use codes::*;

/// How often expired sessions, pending member ids and rebalance deadlines are checked.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Most groups one shard coordinates.
pub const MAX_GROUPS_PER_SHARD: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a waiting JoinGroup is answered with.
#[derive(Debug, Clone)]
struct JoinOutcome {
    error: i16,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: String,
    member_id: String,
    members: Vec<(String, Option<String>, Bytes)>,
    /// KIP-814: a static leader that rejoined a Stable group keeps the current assignment.
    skip_assignment: bool,
}

#[derive(Debug, Clone)]
struct SyncOutcome {
    error: i16,
    assignment: Bytes,
    protocol_type: Option<String>,
    protocol: Option<String>,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    last_heartbeat: Instant,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), not joined yet: id -> expiry.
    pending: HashMap<String, Instant>,
    /// group.instance.id -> member id (KIP-345 static members).
    static_members: HashMap<String, String>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    rebalance_deadline: Option<Instant>,
    /// In the first rebalance of an empty group: wait `group.initial.rebalance.delay.ms`.
    initial_rebalance: bool,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            offsets: BTreeMap::new(),
            rebalance_deadline: None,
            initial_rebalance: false,
        }
    }

    /// Whether a member with this protocol type and protocols may join.
    fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // Some protocol must be supported by every member.
        protocols.iter().any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for m in self.members.values() {
            if let Some(pref) = m.protocols.iter().map(|(n, _)| n).find(|n| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == pref) {
                    v.0 += 1;
                }
            }
        }
        // Highest vote; ties go to the earlier candidate.
        let mut best: Option<(usize, &String)> = None;
        for (n, c) in votes {
            if best.is_none_or(|(bn, _)| n > bn) {
                best = Some((n, c));
            }
        }
        best.map(|(_, c)| c.clone())
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn outcome_for(&self, member_id: &str, error: i16) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id && error == NONE {
            let p = self.protocol.clone().unwrap_or_default();
            self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata_for(&p))).collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    /// Kafka's check of a request from an existing member (join, sync, heartbeat, commit): with
    /// an instance id, that instance must be known (else UNKNOWN_MEMBER_ID) and belong to this
    /// member id (else FENCED_INSTANCE_ID, also when the member id is gone because a newer
    /// member took the instance over); without one, the member id must be known.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        match instance_id {
            Some(inst) => match self.static_members.get(inst) {
                None => Err(UNKNOWN_MEMBER_ID),
                Some(id) if id != member_id => Err(FENCED_INSTANCE_ID),
                Some(_) if self.members.contains_key(member_id) => Ok(()),
                Some(_) => Err(UNKNOWN_MEMBER_ID),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(UNKNOWN_MEMBER_ID),
        }
    }
}

fn join_error(error: i16, member_id: &str) -> JoinOutcome {
    JoinOutcome {
        error,
        generation: -1,
        protocol_type: None,
        protocol: None,
        leader: String::new(),
        member_id: member_id.to_string(),
        members: Vec::new(),
        skip_assignment: false,
    }
}

fn s(b: &StrBytes) -> String {
    b.as_str().to_string()
}

fn sb(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub struct GroupCoordinator {
    shard: usize,
    config: Rc<BrokerConfig>,
    groups: RefCell<HashMap<String, Group>>,
    store: GroupStore,
}

impl GroupCoordinator {
    /// Opens this shard's group log, replays it, and starts the session/rebalance sweeper.
    /// The internal log this coordinator persists to.
    pub fn store_log(&self) -> Rc<crate::storage::PartitionLog> {
        self.store.log()
    }

    pub async fn start(shard: usize, config: Rc<BrokerConfig>, store: GroupStore) -> Result<Rc<GroupCoordinator>, crate::storage::StorageError> {
        let records = store.replay().await?;
        let mut groups: HashMap<String, Group> = HashMap::new();
        let n = records.len();
        for r in records {
            match r {
                StoreRecord::Offset { key: StoreKey::Offset { g, t, p }, value } => {
                    let grp = groups.entry(g).or_insert_with(Group::new);
                    match value {
                        Some(v) => {
                            grp.offsets.insert((t, p), v);
                        }
                        None => {
                            grp.offsets.remove(&(t, p));
                        }
                    }
                }
                StoreRecord::Group { key: StoreKey::Group { g }, value } => match value {
                    Some(v) => {
                        let grp = groups.entry(g).or_insert_with(Group::new);
                        grp.generation = v.generation;
                        grp.protocol_type = v.protocol_type;
                        grp.protocol = v.protocol.clone();
                        grp.leader = v.leader;
                        grp.members.clear();
                        grp.static_members.clear();
                        // A Stable group comes back Stable; members get a full session to return.
                        let proto = v.protocol.unwrap_or_default();
                        for m in v.members {
                            if let Some(inst) = &m.instance_id {
                                grp.static_members.insert(inst.clone(), m.id.clone());
                            }
                            grp.members.insert(
                                m.id.clone(),
                                Member {
                                    id: m.id,
                                    instance_id: m.instance_id,
                                    client_id: m.client_id,
                                    client_host: m.client_host,
                                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                                    protocols: vec![(proto.clone(), Bytes::from(m.metadata))],
                                    assignment: Bytes::from(m.assignment),
                                    join_waiter: None,
                                    sync_waiter: None,
                                    last_heartbeat: Instant::now(),
                                },
                            );
                        }
                        grp.state = if grp.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
                    }
                    None => {
                        groups.remove(&g);
                    }
                },
                _ => {}
            }
        }
        if n > 0 {
            info!(shard, groups = groups.len(), records = n, "replayed group log");
        }
        let c = Rc::new(GroupCoordinator { shard, config, groups: RefCell::new(groups), store });
        let weak = Rc::downgrade(&c);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(SWEEP_INTERVAL).await;
                let Some(c) = weak.upgrade() else { break };
                c.sweep();
            }
        })
        .detach();
        Ok(c)
    }

    fn persist_group_later(self: &Rc<Self>, group_id: &str) {
        let value = {
            let groups = self.groups.borrow();
            groups.get(group_id).map(|g| {
                let stable = g.state == GroupState::Stable;
                let proto = g.protocol.clone().unwrap_or_default();
                GroupValue {
                    generation: g.generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    leader: if stable { g.leader.clone() } else { None },
                    members: if stable {
                        g.members
                            .values()
                            .map(|m| MemberValue {
                                id: m.id.clone(),
                                instance_id: m.instance_id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                                session_timeout_ms: m.session_timeout.as_millis() as u64,
                                rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                                metadata: m.metadata_for(&proto).to_vec(),
                                assignment: m.assignment.to_vec(),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                }
            })
        };
        let rec = StoreRecord::Group { key: StoreKey::Group { g: group_id.to_string() }, value };
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = me.store.write(&[rec]).await {
                warn!(shard = me.shard, "cannot persist group metadata: {e}");
            }
        })
        .detach();
    }

    // ----- JoinGroup -----

    pub async fn join(self: Rc<Self>, version: i16, req: JoinGroupRequest, client_id: String, client_host: String) -> JoinGroupResponse {
        let rx = self.join_start(version, req, client_id, client_host);
        let outcome = match rx {
            Ok(o) => o,
            Err(rx) => rx.await.unwrap_or_else(|_| join_error(UNKNOWN_MEMBER_ID, "")),
        };
        let mut resp = JoinGroupResponse::default()
            .with_error_code(outcome.error)
            .with_generation_id(outcome.generation)
            .with_leader(sb(outcome.leader))
            .with_member_id(sb(outcome.member_id))
            .with_members(
                outcome
                    .members
                    .into_iter()
                    .map(|(id, inst, md)| JoinGroupResponseMember::default().with_member_id(sb(id)).with_group_instance_id(if version >= 5 { inst.map(sb) } else { None }).with_metadata(md))
                    .collect(),
            );
        resp.protocol_name = Some(sb(outcome.protocol.unwrap_or_default()));
        if version >= 7 {
            resp.protocol_type = outcome.protocol_type.map(sb);
        }
        if version >= 9 {
            resp.skip_assignment = outcome.skip_assignment;
        }
        resp
    }

    /// The synchronous part of a join: either an immediate answer or a receiver to await.
    fn join_start(self: &Rc<Self>, version: i16, req: JoinGroupRequest, client_id: String, client_host: String) -> Result<JoinOutcome, oneshot::Receiver<JoinOutcome>> {
        let group_id = s(&req.group_id.0);
        let member_id = s(&req.member_id);
        if group_id.is_empty() {
            return Ok(join_error(INVALID_GROUP_ID, &member_id));
        }
        let session = req.session_timeout_ms;
        if session < self.config.group_min_session_timeout_ms || session > self.config.group_max_session_timeout_ms {
            return Ok(join_error(INVALID_SESSION_TIMEOUT, &member_id));
        }
        let protocol_type = s(&req.protocol_type);
        let protocols: Vec<(String, Bytes)> = req.protocols.iter().map(|p| (s(&p.name), p.metadata.clone())).collect();
        if protocol_type.is_empty() || protocols.is_empty() {
            return Ok(join_error(INCONSISTENT_GROUP_PROTOCOL, &member_id));
        }
        let instance_id = req.group_instance_id.as_ref().map(s);
        let session_timeout = Duration::from_millis(session as u64);
        // rebalance_timeout_ms is v1+; v0 uses the session timeout.
        let rebalance_timeout = Duration::from_millis(if version >= 1 && req.rebalance_timeout_ms > 0 { req.rebalance_timeout_ms } else { session } as u64);

        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(&group_id) && groups.len() >= MAX_GROUPS_PER_SHARD {
            return Ok(join_error(COORDINATOR_NOT_AVAILABLE, &member_id));
        }
        let group = groups.entry(group_id.clone()).or_insert_with(Group::new);
        if group.state == GroupState::Dead {
            return Ok(join_error(COORDINATOR_NOT_AVAILABLE, &member_id));
        }
        if !group.accepts(&protocol_type, &protocols) {
            return Ok(join_error(INCONSISTENT_GROUP_PROTOCOL, &member_id));
        }
        if group.members.is_empty() {
            group.protocol_type = Some(protocol_type.clone());
        }
        let new_member = |id: String| Member {
            id,
            instance_id: instance_id.clone(),
            client_id: client_id.clone(),
            client_host: client_host.clone(),
            session_timeout,
            rebalance_timeout,
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            last_heartbeat: Instant::now(),
        };

        if member_id.is_empty() {
            if let Some(inst) = &instance_id {
                let new_id = format!("{inst}-{}", uuid::Uuid::new_v4());
                if let Some(old_id) = group.static_members.get(inst).cloned() {
                    // A static member came back under a new member id: it replaces the old one.
                    if let Some(mut old) = group.members.shift_remove(&old_id) {
                        if let Some(w) = old.join_waiter.take() {
                            let _ = w.send(join_error(FENCED_INSTANCE_ID, &old_id));
                        }
                        if let Some(w) = old.sync_waiter.take() {
                            let _ = w.send(SyncOutcome { error: FENCED_INSTANCE_ID, assignment: Bytes::new(), protocol_type: None, protocol: None });
                        }
                        let mut m = new_member(new_id.clone());
                        m.assignment = old.assignment.clone();
                        group.members.insert(new_id.clone(), m);
                        group.static_members.insert(inst.clone(), new_id.clone());
                        if group.leader.as_deref() == Some(old_id.as_str()) {
                            group.leader = Some(new_id.clone());
                        }
                        // As Kafka: a static member back in a Stable group causes no rebalance
                        // unless its protocols change the group's protocol (its subscription
                        // metadata may differ: owned partitions are not remembered over a restart).
                        if group.state == GroupState::Stable && group.select_protocol() == group.protocol {
                            let mut outcome = group.outcome_for(&new_id, NONE);
                            outcome.skip_assignment = version >= 9 && group.leader.as_deref() == Some(new_id.as_str());
                            return Ok(outcome);
                        }
                        return Err(self.await_join(group, &new_id));
                    }
                }
                group.members.insert(new_id.clone(), new_member(new_id.clone()));
                group.static_members.insert(inst.clone(), new_id.clone());
                return Err(self.await_join(group, &new_id));
            }
            let new_id = format!("{}-{}", if client_id.is_empty() { "member" } else { &client_id }, uuid::Uuid::new_v4());
            if version >= 4 {
                group.pending.insert(new_id.clone(), Instant::now() + session_timeout);
                return Ok(JoinOutcome { member_id: new_id, ..join_error(MEMBER_ID_REQUIRED, "") });
            }
            group.members.insert(new_id.clone(), new_member(new_id.clone()));
            return Err(self.await_join(group, &new_id));
        }

        if group.pending.remove(&member_id).is_some() {
            group.members.insert(member_id.clone(), new_member(member_id.clone()));
            return Err(self.await_join(group, &member_id));
        }
        if let Err(e) = group.validate_member(&member_id, instance_id.as_deref()) {
            return Ok(join_error(e, &member_id));
        }
        let m = group.members.get_mut(&member_id).expect("validated member");
        let changed = m.protocols != protocols;
        m.protocols = protocols;
        m.session_timeout = session_timeout;
        m.rebalance_timeout = rebalance_timeout;
        m.last_heartbeat = Instant::now();
        match group.state {
            GroupState::PreparingRebalance => Err(self.await_join(group, &member_id)),
            GroupState::CompletingRebalance if !changed => Ok(group.outcome_for(&member_id, NONE)),
            GroupState::Stable if !changed && group.leader.as_deref() != Some(member_id.as_str()) => Ok(group.outcome_for(&member_id, NONE)),
            GroupState::CompletingRebalance | GroupState::Stable => Err(self.await_join(group, &member_id)),
            GroupState::Empty | GroupState::Dead => Ok(join_error(UNKNOWN_MEMBER_ID, &member_id)),
        }
    }

    /// Parks a member's join, starting a rebalance if none is in progress.
    fn await_join(&self, group: &mut Group, member_id: &str) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = group.members.get_mut(member_id) {
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(join_error(UNKNOWN_MEMBER_ID, member_id));
            }
        }
        if group.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(group);
        }
        self.maybe_complete_join(group);
        rx
    }

    fn prepare_rebalance(&self, group: &mut Group) {
        if group.state == GroupState::CompletingRebalance {
            for m in group.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncOutcome { error: REBALANCE_IN_PROGRESS, assignment: Bytes::new(), protocol_type: None, protocol: None });
                }
            }
        }
        let max_rebalance = group.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(60));
        let now = Instant::now();
        if group.state == GroupState::Empty {
            group.initial_rebalance = true;
            let delay = Duration::from_millis(self.config.group_initial_rebalance_delay_ms);
            group.rebalance_deadline = Some(now + delay.min(max_rebalance));
        } else {
            group.initial_rebalance = false;
            group.rebalance_deadline = Some(now + max_rebalance);
        }
        group.state = GroupState::PreparingRebalance;
    }

    fn maybe_complete_join(&self, group: &mut Group) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let ready = if group.initial_rebalance {
            // Initial rebalance: wait out the delay so concurrently starting members join together,
            // but not longer than needed once the delay is zero.
            self.config.group_initial_rebalance_delay_ms == 0 && group.all_joined()
        } else {
            group.all_joined()
        };
        if ready {
            self.complete_join(group);
        }
    }

    fn complete_join(&self, group: &mut Group) {
        // Members that did not rejoin in time leave the group.
        let gone: Vec<String> = group.members.values().filter(|m| m.join_waiter.is_none()).map(|m| m.id.clone()).collect();
        for id in gone {
            self.remove_member(group, &id);
        }
        group.pending.clear();
        group.rebalance_deadline = None;
        group.initial_rebalance = false;
        group.generation += 1;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol = None;
            group.leader = None;
            return;
        }
        group.protocol = group.select_protocol();
        if group.leader.as_ref().is_none_or(|l| !group.members.contains_key(l)) {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let outcome = group.outcome_for(&id, NONE);
            let m = group.members.get_mut(&id).unwrap();
            m.last_heartbeat = Instant::now();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(outcome);
            }
        }
        debug!(shard = self.shard, generation = group.generation, members = group.members.len(), "rebalance completed");
    }

    fn remove_member(&self, group: &mut Group, member_id: &str) {
        if let Some(mut m) = group.members.shift_remove(member_id) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(join_error(UNKNOWN_MEMBER_ID, member_id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncOutcome { error: UNKNOWN_MEMBER_ID, assignment: Bytes::new(), protocol_type: None, protocol: None });
            }
            if let Some(inst) = &m.instance_id {
                if group.static_members.get(inst).map(String::as_str) == Some(member_id) {
                    group.static_members.remove(inst);
                }
            }
            if group.leader.as_deref() == Some(member_id) {
                group.leader = None;
            }
        }
    }

    /// Removes a member (leave or expiry) and rebalances the rest.
    fn remove_member_and_rebalance(&self, group: &mut Group, member_id: &str) {
        self.remove_member(group, member_id);
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group);
                self.maybe_complete_join(group);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group),
            _ => {}
        }
    }

    /// Expires sessions and pending member ids, and completes rebalances whose time is up.
    fn sweep(self: &Rc<Self>) {
        let now = Instant::now();
        let mut changed = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for (id, group) in groups.iter_mut() {
                let gen = group.generation;
                group.pending.retain(|_, expiry| *expiry > now);
                let expired: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.join_waiter.is_none() && now.duration_since(m.last_heartbeat) > m.session_timeout)
                    .map(|m| m.id.clone())
                    .collect();
                for m in expired {
                    info!(shard = self.shard, group = %id, member = %m, "session expired");
                    self.remove_member_and_rebalance(group, &m);
                }
                if group.state == GroupState::PreparingRebalance {
                    if group.rebalance_deadline.is_some_and(|d| now >= d) {
                        self.complete_join(group);
                    } else {
                        self.maybe_complete_join(group);
                    }
                }
                if group.generation != gen {
                    changed.push(id.clone());
                }
            }
        }
        for id in changed {
            self.persist_group_later(&id);
        }
    }

    // ----- SyncGroup -----

    pub async fn sync(self: Rc<Self>, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
        let res = self.sync_start(&req);
        let (outcome, persist) = match res {
            Ok(o) => o,
            Err(rx) => (rx.await.unwrap_or(SyncOutcome { error: REBALANCE_IN_PROGRESS, assignment: Bytes::new(), protocol_type: None, protocol: None }), false),
        };
        if persist {
            self.persist_group_later(req.group_id.0.as_str());
        }
        let mut r = SyncGroupResponse::default().with_error_code(outcome.error).with_assignment(outcome.assignment);
        if version >= 5 {
            r.protocol_type = outcome.protocol_type.map(sb);
            r.protocol_name = outcome.protocol.map(sb);
        }
        r
    }

    #[allow(clippy::type_complexity)]
    fn sync_start(&self, req: &SyncGroupRequest) -> Result<(SyncOutcome, bool), oneshot::Receiver<SyncOutcome>> {
        let err = |e| Ok((SyncOutcome { error: e, assignment: Bytes::new(), protocol_type: None, protocol: None }, false));
        let group_id = s(&req.group_id.0);
        let member_id = s(&req.member_id);
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&group_id) else { return err(UNKNOWN_MEMBER_ID) };
        if group.state == GroupState::Dead {
            return err(COORDINATOR_NOT_AVAILABLE);
        }
        if let Err(e) = group.validate_member(&member_id, req.group_instance_id.as_ref().map(|i| i.as_str())) {
            return err(e);
        }
        let member = &group.members[&member_id];
        if req.generation_id != group.generation {
            return err(ILLEGAL_GENERATION);
        }
        if req.protocol_type.as_ref().is_some_and(|p| Some(p.as_str()) != group.protocol_type.as_deref())
            || req.protocol_name.as_ref().is_some_and(|p| Some(p.as_str()) != group.protocol.as_deref())
        {
            return err(INCONSISTENT_GROUP_PROTOCOL);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => err(UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => err(REBALANCE_IN_PROGRESS),
            GroupState::Stable => Ok((
                SyncOutcome { error: NONE, assignment: member.assignment.clone(), protocol_type: group.protocol_type.clone(), protocol: group.protocol.clone() },
                false,
            )),
            GroupState::CompletingRebalance => {
                if group.leader.as_deref() != Some(member_id.as_str()) {
                    let (tx, rx) = oneshot::channel();
                    group.members.get_mut(&member_id).unwrap().sync_waiter = Some(tx);
                    return Err(rx);
                }
                // The leader's assignments complete the rebalance for everyone.
                let given: HashMap<String, Bytes> = req.assignments.iter().map(|a| (s(&a.member_id), a.assignment.clone())).collect();
                group.state = GroupState::Stable;
                let (pt, p) = (group.protocol_type.clone(), group.protocol.clone());
                for m in group.members.values_mut() {
                    m.assignment = given.get(&m.id).cloned().unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(SyncOutcome { error: NONE, assignment: m.assignment.clone(), protocol_type: pt.clone(), protocol: p.clone() });
                    }
                }
                let own = group.members.get(&member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                Ok((SyncOutcome { error: NONE, assignment: own, protocol_type: pt, protocol: p }, true))
            }
        }
    }

    // ----- Heartbeat -----

    pub fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let code = {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(req.group_id.0.as_str()) {
                None => UNKNOWN_MEMBER_ID,
                Some(g) if g.state == GroupState::Dead => COORDINATOR_NOT_AVAILABLE,
                Some(g) => {
                    let state = g.state;
                    let generation = g.generation;
                    match g.validate_member(req.member_id.as_str(), req.group_instance_id.as_ref().map(|i| i.as_str())) {
                        Err(e) => e,
                        Ok(()) if req.generation_id != generation => ILLEGAL_GENERATION,
                        Ok(()) => {
                            g.members.get_mut(req.member_id.as_str()).expect("validated member").last_heartbeat = Instant::now();
                            match state {
                                GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
                                GroupState::Empty => UNKNOWN_MEMBER_ID,
                                _ => NONE,
                            }
                        }
                    }
                }
            }
        };
        HeartbeatResponse::default().with_error_code(code)
    }

    // ----- LeaveGroup -----

    pub fn leave(self: &Rc<Self>, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let identities: Vec<(String, Option<String>)> = if version >= 3 {
            req.members.iter().map(|m| (s(&m.member_id), m.group_instance_id.as_ref().map(s))).collect()
        } else {
            vec![(s(&req.member_id), None)]
        };
        let group_id = s(&req.group_id.0);
        let mut results = Vec::with_capacity(identities.len());
        let mut top = NONE;
        let gen_before;
        let gen_after;
        {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = groups.get_mut(&group_id) else {
                return LeaveGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID).with_members(
                    if version >= 3 {
                        identities.into_iter().map(|(m, i)| kafka_protocol::messages::leave_group_response::MemberResponse::default().with_member_id(sb(m)).with_group_instance_id(i.map(sb)).with_error_code(UNKNOWN_MEMBER_ID)).collect()
                    } else {
                        Vec::new()
                    },
                );
            };
            gen_before = group.generation;
            for (member_id, instance) in identities {
                let target = match (&instance, member_id.is_empty()) {
                    (Some(inst), true) => group.static_members.get(inst).cloned(),
                    (Some(inst), false) => {
                        if group.static_members.get(inst) == Some(&member_id) { Some(member_id.clone()) } else { None }
                    }
                    (None, _) => group.members.contains_key(&member_id).then(|| member_id.clone()),
                };
                let code = match target {
                    Some(id) => {
                        self.remove_member_and_rebalance(group, &id);
                        NONE
                    }
                    None if instance.as_ref().is_some_and(|i| group.static_members.contains_key(i)) => FENCED_INSTANCE_ID,
                    None => UNKNOWN_MEMBER_ID,
                };
                if version < 3 {
                    top = code;
                }
                results.push(
                    kafka_protocol::messages::leave_group_response::MemberResponse::default()
                        .with_member_id(sb(member_id))
                        .with_group_instance_id(instance.map(sb))
                        .with_error_code(code),
                );
            }
            gen_after = group.generation;
        }
        if gen_after != gen_before {
            self.persist_group_later(&group_id);
        }
        let r = LeaveGroupResponse::default().with_error_code(top);
        if version >= 3 { r.with_members(results) } else { r }
    }

    // ----- Offsets -----

    /// Validates and persists a commit; per-partition error codes in request order.
    pub async fn commit(self: Rc<Self>, req: OffsetCommitRequest, snapshot: Arc<MetadataSnapshot>) -> OffsetCommitResponse {
        let group_id = s(&req.group_id.0);
        let member_id = s(&req.member_id);
        let generation = req.generation_id_or_member_epoch;
        let group_error = {
            let mut groups = self.groups.borrow_mut();
            match groups.get(&group_id) {
                None if generation < 0 => {
                    groups.insert(group_id.clone(), Group::new());
                    NONE
                }
                None => ILLEGAL_GENERATION,
                Some(g) if g.state == GroupState::Dead => COORDINATOR_NOT_AVAILABLE,
                Some(g) if generation < 0 && g.state == GroupState::Empty => NONE,
                Some(g) => match g.validate_member(&member_id, req.group_instance_id.as_ref().map(|i| i.as_str())) {
                    Err(e) => e,
                    Ok(()) if generation != g.generation => ILLEGAL_GENERATION,
                    Ok(()) if g.state == GroupState::CompletingRebalance => REBALANCE_IN_PROGRESS,
                    Ok(()) => NONE,
                },
            }
        };
        let max_md = self.config.offset_metadata_max_bytes;
        let now = now_ms();
        let mut codes: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
        let mut records = Vec::new();
        let mut updates = Vec::new();
        for t in &req.topics {
            let topic = s(&t.name.0);
            let known = snapshot.topic(&topic);
            let mut tc = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let code = if group_error != NONE {
                    group_error
                } else if known.is_none_or(|m| p.partition_index < 0 || p.partition_index >= m.partitions()) {
                    UNKNOWN_TOPIC_OR_PARTITION
                } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > max_md) {
                    OFFSET_METADATA_TOO_LARGE
                } else {
                    let value = OffsetValue {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(s),
                        commit_ts: now,
                    };
                    let key = StoreKey::Offset { g: group_id.clone(), t: topic.clone(), p: p.partition_index };
                    records.push(StoreRecord::Offset { key, value: Some(value.clone()) });
                    updates.push(((topic.clone(), p.partition_index), value));
                    NONE
                };
                tc.push(code);
            }
            codes.push(tc);
        }
        if !records.is_empty() {
            let res = self.store.write(&records).await;
            match res {
                Ok(()) => {
                    let mut groups = self.groups.borrow_mut();
                    let g = groups.entry(group_id.clone()).or_insert_with(Group::new);
                    for (k, v) in updates {
                        g.offsets.insert(k, v);
                    }
                }
                Err(e) => {
                    warn!(shard = self.shard, "offset commit not persisted: {e}");
                    for c in codes.iter_mut().flatten() {
                        if *c == NONE {
                            *c = COORDINATOR_NOT_AVAILABLE;
                        }
                    }
                }
            }
        }
        let topics = req
            .topics
            .iter()
            .zip(codes)
            .map(|(t, tc)| {
                kafka_protocol::messages::offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(tc)
                            .map(|(p, c)| kafka_protocol::messages::offset_commit_response::OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(c))
                            .collect(),
                    )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// Committed offsets of a group: for the asked partitions, or all when `topics` is None.
    /// Each entry: (topic, [(partition, offset, leader_epoch, metadata)]); -1 where none.
    pub fn fetch_offsets(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Vec<(String, Vec<(i32, i64, i32, Option<String>)>)> {
        let groups = self.groups.borrow();
        let group = groups.get(group_id);
        match topics {
            Some(list) => list
                .into_iter()
                .map(|(t, parts)| {
                    let ps = parts
                        .into_iter()
                        .map(|p| match group.and_then(|g| g.offsets.get(&(t.clone(), p))) {
                            Some(v) => (p, v.offset, v.leader_epoch, v.metadata.clone()),
                            None => (p, -1, -1, Some(String::new())),
                        })
                        .collect();
                    (t, ps)
                })
                .collect(),
            None => {
                let mut out: Vec<(String, Vec<(i32, i64, i32, Option<String>)>)> = Vec::new();
                if let Some(g) = group {
                    for ((t, p), v) in &g.offsets {
                        if out.last().is_none_or(|(lt, _)| lt != t) {
                            out.push((t.clone(), Vec::new()));
                        }
                        out.last_mut().unwrap().1.push((*p, v.offset, v.leader_epoch, v.metadata.clone()));
                    }
                }
                out
            }
        }
    }

    pub async fn delete_offsets(self: Rc<Self>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
        use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
        let group_id = s(&req.group_id.0);
        let (top, subscribed) = {
            let groups = self.groups.borrow();
            match groups.get(&group_id) {
                None => (GROUP_ID_NOT_FOUND, Vec::new()),
                Some(g) if g.state == GroupState::Dead => (GROUP_ID_NOT_FOUND, Vec::new()),
                Some(g) => {
                    let proto = g.protocol.clone().unwrap_or_default();
                    let subs: Vec<String> = if g.protocol_type.as_deref() == Some("consumer") && g.state != GroupState::Empty {
                        g.members.values().flat_map(|m| subscribed_topics(&m.metadata_for(&proto))).collect()
                    } else {
                        Vec::new()
                    };
                    (NONE, subs)
                }
            }
        };
        if top != NONE {
            return OffsetDeleteResponse::default().with_error_code(top);
        }
        let mut records = Vec::new();
        let mut topics = Vec::new();
        for t in &req.topics {
            let name = s(&t.name.0);
            let code = if subscribed.contains(&name) { GROUP_SUBSCRIBED_TO_TOPIC } else { NONE };
            let mut parts = Vec::new();
            for p in &t.partitions {
                if code == NONE {
                    records.push(StoreRecord::Offset { key: StoreKey::Offset { g: group_id.clone(), t: name.clone(), p: p.partition_index }, value: None });
                }
                parts.push(OffsetDeleteResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code));
            }
            topics.push(OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(parts));
        }
        if let Err(e) = self.store.write(&records).await {
            warn!("offset delete not persisted: {e}");
            return OffsetDeleteResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
        }
        {
            let mut groups = self.groups.borrow_mut();
            if let Some(g) = groups.get_mut(&group_id) {
                for r in &records {
                    if let StoreRecord::Offset { key: StoreKey::Offset { t, p, .. }, .. } = r {
                        g.offsets.remove(&(t.clone(), *p));
                    }
                }
            }
        }
        OffsetDeleteResponse::default().with_topics(topics)
    }

    // ----- Group admin -----

    pub fn describe(&self, group_id: &str) -> DescribedGroup {
        let groups = self.groups.borrow();
        let d = DescribedGroup::default().with_group_id(GroupId(sb(group_id)));
        let Some(g) = groups.get(group_id) else {
            return d.with_group_state(sb("Dead"));
        };
        let proto = g.protocol.clone().unwrap_or_default();
        let show_members = matches!(g.state, GroupState::Stable | GroupState::CompletingRebalance | GroupState::PreparingRebalance);
        let members = if show_members {
            g.members
                .values()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(sb(m.id.clone()))
                        .with_group_instance_id(m.instance_id.clone().map(sb))
                        .with_client_id(sb(m.client_id.clone()))
                        .with_client_host(sb(m.client_host.clone()))
                        .with_member_metadata(if g.state == GroupState::Stable { m.metadata_for(&proto) } else { Bytes::new() })
                        .with_member_assignment(if g.state == GroupState::Stable { m.assignment.clone() } else { Bytes::new() })
                })
                .collect()
        } else {
            Vec::new()
        };
        d.with_group_state(sb(g.state.name()))
            .with_protocol_type(sb(g.protocol_type.clone().unwrap_or_default()))
            .with_protocol_data(sb(if g.state == GroupState::Stable { proto } else { String::new() }))
            .with_members(members)
    }

    pub fn list(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let mut out: Vec<ListedGroup> = groups
            .iter()
            .filter(|(_, g)| g.state != GroupState::Dead)
            .filter(|(_, g)| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(g.state.name())))
            .filter(|_| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("classic")))
            .map(|(id, g)| {
                ListedGroup::default()
                    .with_group_id(GroupId(sb(id.clone())))
                    .with_protocol_type(sb(g.protocol_type.clone().unwrap_or_default()))
                    .with_group_state(sb(g.state.name()))
                    .with_group_type(sb("classic"))
            })
            .collect();
        out.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
        out
    }

    pub async fn delete_group(self: Rc<Self>, group_id: String) -> i16 {
        let keys: Vec<(String, i32)> = {
            let groups = self.groups.borrow();
            match groups.get(&group_id) {
                None => return GROUP_ID_NOT_FOUND,
                Some(g) if g.state == GroupState::Dead => return GROUP_ID_NOT_FOUND,
                Some(g) if g.state != GroupState::Empty => return NON_EMPTY_GROUP,
                Some(g) => g.offsets.keys().cloned().collect(),
            }
        };
        if let Some(g) = self.groups.borrow_mut().get_mut(&group_id) {
            g.state = GroupState::Dead;
        }
        let mut records: Vec<StoreRecord> = keys
            .into_iter()
            .map(|(t, p)| StoreRecord::Offset { key: StoreKey::Offset { g: group_id.clone(), t, p }, value: None })
            .collect();
        records.push(StoreRecord::Group { key: StoreKey::Group { g: group_id.clone() }, value: None });
        let res = self.store.write(&records).await;
        self.groups.borrow_mut().remove(&group_id);
        match res {
            Ok(()) => NONE,
            Err(e) => {
                warn!("group delete not persisted: {e}");
                COORDINATOR_NOT_AVAILABLE
            }
        }
    }
}

/// Topics in a consumer-protocol subscription (any version: the topic list comes first).
fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if metadata.len() < 6 {
        return out;
    }
    let n = i32::from_be_bytes(metadata[2..6].try_into().unwrap());
    let mut pos = 6usize;
    for _ in 0..n.max(0) {
        if pos + 2 > metadata.len() {
            break;
        }
        let len = i16::from_be_bytes([metadata[pos], metadata[pos + 1]]) as usize;
        pos += 2;
        if pos + len > metadata.len() {
            break;
        }
        out.push(String::from_utf8_lossy(&metadata[pos..pos + len]).into_owned());
        pos += len;
    }
    out
}
