//! Cluster metadata: topics, their ids, partition placement on shards and topic configs.
//!
//! Owns the metadata snapshot type and its persistence (`strand-meta.json`, written on shard 0
//! only). Every shard holds an immutable `Arc<MetadataSnapshot>`; changes are made on shard 0
//! and broadcast as a new snapshot. Knows nothing of logs or connections.

pub mod topic_config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const METADATA_FILE: &str = "strand-meta.json";
/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Topic-level config keys accepted by CreateTopics, with Kafka's names.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.type",
    "compression.zstd.level",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// Owner shard of each partition, by partition index.
    pub placement: Vec<usize>,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn partitions(&self) -> i32 {
        self.placement.len() as i32
    }

    pub fn config_u64(&self, key: &str) -> Option<u64> {
        self.configs.get(key).and_then(|v| v.parse().ok())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataSnapshot {
    pub version: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Producer ids below this may have been handed out (allocated in blocks, so ids stay
    /// unique across restarts).
    #[serde(default)]
    pub producer_id_block_end: i64,
}

impl MetadataSnapshot {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicMeta>> {
        self.topics.values().find(|t| t.id == id)
    }

    /// Owner shard of a partition, if the partition exists.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let t = self.topics.get(topic)?;
        usize::try_from(partition).ok().and_then(|p| t.placement.get(p).copied())
    }
}

/// Kafka's topic name rule: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is illegal"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!("topic name is longer than {MAX_TOPIC_NAME_LEN} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} contains illegal character {c:?}; legal: [a-zA-Z0-9._-]"));
    }
    Ok(())
}

/// Deterministic placement: partitions of a topic go round-robin over shards from a start
/// derived from the topic name, so topics do not all start on shard 0.
pub fn place(topic: &str, partitions: i32, shards: usize) -> Vec<usize> {
    let start = topic.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193)) as usize;
    (0..partitions as usize).map(|p| (start + p) % shards.max(1)).collect()
}

/// The persisted metadata, owned by shard 0.
pub struct MetadataStore {
    path: PathBuf,
    current: Arc<MetadataSnapshot>,
}

impl MetadataStore {
    /// Loads the metadata of `data_dir`, creating it on first start. Placements naming shards
    /// that no longer exist (fewer shards than before) are re-placed and saved.
    pub fn open(data_dir: &Path, shards: usize) -> Result<MetadataStore> {
        let path = data_dir.join(METADATA_FILE);
        let mut snap = if path.exists() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str::<MetadataSnapshot>(&text)
                .with_context(|| format!("{} is not valid metadata; restore it or move it away", path.display()))?
        } else {
            MetadataSnapshot { version: 1, cluster_id: new_cluster_id(), topics: BTreeMap::new(), producer_id_block_end: 0 }
        };
        let mut changed = !path.exists();
        for t in snap.topics.values_mut() {
            if t.placement.iter().any(|&s| s >= shards) {
                let mut nt = (**t).clone();
                nt.placement = place(&nt.name, nt.partitions(), shards);
                *t = Arc::new(nt);
                changed = true;
            }
        }
        let mut store = MetadataStore { path, current: Arc::new(snap) };
        if changed {
            store.save()?;
        }
        Ok(store)
    }

    pub fn snapshot(&self) -> Arc<MetadataSnapshot> {
        self.current.clone()
    }

    /// Applies a change and persists the result before it becomes visible: when the save fails
    /// the current snapshot stays as it was (what is on disk).
    pub fn update(&mut self, f: impl FnOnce(&mut MetadataSnapshot)) -> Result<Arc<MetadataSnapshot>> {
        let mut next = (*self.current).clone();
        f(&mut next);
        next.version += 1;
        let next = Arc::new(next);
        self.save_snapshot(&next)?;
        self.current = next;
        Ok(self.current.clone())
    }

    fn save(&mut self) -> Result<()> {
        self.save_snapshot(&self.current)
    }

    fn save_snapshot(&self, snapshot: &MetadataSnapshot) -> Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(snapshot)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn new_cluster_id() -> String {
    // Kafka cluster ids are 22-character URL-safe base64 of a UUID.
    let u = Uuid::new_v4();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = u.as_u128();
    (0..22).map(|i| alphabet[((v >> (i * 6)) & 63) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_placement() {
        assert!(validate_topic_name("rider-updates_1.x").is_ok());
        assert!(validate_topic_name("bad topic").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        let p = place("t", 4, 2);
        assert_eq!(p.len(), 4);
        assert!(p.contains(&0) && p.contains(&1));
        assert_eq!(p, place("t", 4, 2));
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_not_published() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let mut s = MetadataStore::open(&dir, 1).unwrap();
        s.update(|m| m.producer_id_block_end = 1000).unwrap();
        let before = s.snapshot();
        // The save fails: its directory is gone (a read-only directory does not stop root).
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(s.update(|m| m.producer_id_block_end = 2000).is_err());
        let after = s.snapshot();
        assert_eq!(after.producer_id_block_end, 1000, "ids beyond the saved block must not be handed out");
        assert_eq!(after.version, before.version);
    }

    #[test]
    fn persists_and_replaces_when_shards_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = MetadataStore::open(dir.path(), 4).unwrap();
        let cid = s.snapshot().cluster_id.clone();
        s.update(|m| {
            m.topics.insert(
                "t".into(),
                Arc::new(TopicMeta { name: "t".into(), id: Uuid::new_v4(), placement: vec![3, 2], configs: Default::default() }),
            );
        })
        .unwrap();
        let s2 = MetadataStore::open(dir.path(), 2).unwrap();
        let snap = s2.snapshot();
        assert_eq!(snap.cluster_id, cid);
        assert!(snap.topics["t"].placement.iter().all(|&x| x < 2));
    }
}
