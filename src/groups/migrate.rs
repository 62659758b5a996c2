//! Keeps committed offsets and group metadata with their coordinator when `--shards` changes.
//!
//! A group lives in the group log of `coordinator_shard(group, shards)`
//! (`<data>/__groups/shard-<n>`). At start-up, before any shard runs (plain file I/O, nothing
//! else touches these files yet), every group log is read; when some group is in a log other
//! than its coordinator's, the latest record of every key is written into new logs under
//! `__groups.migrating/shard-<s>` (one segment each, synced), and the directories are swapped by
//! renames. A crash leaves either the old or the new layout: [`finish_or_undo`] completes a swap
//! cut short, or removes an unfinished `__groups.migrating`.
//!
//! A key found in several logs (left by a version without this migration) takes its value from
//! the log of its coordinator under the new count if it is there, else from the last log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::info;

use super::coordinator_shard;
use super::store::{self, StoreKey, StoreRecord, GROUPS_DIR};
use crate::storage::{batch, StorageError};

const MIGRATING_DIR: &str = "__groups.migrating";
const OLD_DIR: &str = "__groups.old";
/// Records per batch in a migrated log.
const RECORDS_PER_BATCH: usize = 1000;

/// Moves every group to the log of its coordinator under `shards` if some group is elsewhere.
/// Returns the number of groups moved.
pub fn rebalance_group_logs(data_dir: &Path, shards: usize) -> Result<usize, StorageError> {
    finish_or_undo(data_dir)?;
    let logs = read_logs(&data_dir.join(GROUPS_DIR))?;
    let misplaced: std::collections::BTreeSet<&str> = logs
        .iter()
        .flat_map(|(shard, records)| records.iter().filter(move |r| coordinator_shard(r.key().group(), shards) != *shard))
        .map(|r| r.key().group())
        .collect();
    if misplaced.is_empty() {
        return Ok(0);
    }
    let latest = latest_per_key(&logs, shards);
    let migrating = data_dir.join(MIGRATING_DIR);
    let _ = std::fs::remove_dir_all(&migrating);
    for (shard, records) in by_shard(latest, shards) {
        write_log(&migrating.join(format!("shard-{shard}")), &records)?;
    }
    std::fs::create_dir_all(&migrating)?;
    sync_dir(&migrating)?;
    swap_in(data_dir)?;
    info!(groups = misplaced.len(), shards, "moved groups to their coordinator shard's group log (the shard count changed)");
    Ok(misplaced.len())
}

/// Completes or undoes a migration cut short by a crash.
fn finish_or_undo(data_dir: &Path) -> Result<(), StorageError> {
    let (current, migrating, old) = (data_dir.join(GROUPS_DIR), data_dir.join(MIGRATING_DIR), data_dir.join(OLD_DIR));
    if old.exists() {
        if !current.exists() {
            // Renamed away, the new layout (complete: it is renamed only once synced) not yet in.
            std::fs::rename(if migrating.exists() { &migrating } else { &old }, &current)?;
            sync_dir(data_dir)?;
        }
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
    }
    if migrating.exists() {
        std::fs::remove_dir_all(&migrating)?;
    }
    Ok(())
}

/// `__groups` -> `__groups.old`, `__groups.migrating` -> `__groups`, then the old one goes.
fn swap_in(data_dir: &Path) -> Result<(), StorageError> {
    let (current, migrating, old) = (data_dir.join(GROUPS_DIR), data_dir.join(MIGRATING_DIR), data_dir.join(OLD_DIR));
    std::fs::rename(&current, &old)?;
    std::fs::rename(&migrating, &current)?;
    sync_dir(data_dir)?;
    std::fs::remove_dir_all(&old)?;
    Ok(())
}

/// Every record of every group log, by shard number, in log order.
fn read_logs(groups_dir: &Path) -> Result<Vec<(usize, Vec<StoreRecord>)>, StorageError> {
    let Ok(entries) = std::fs::read_dir(groups_dir) else { return Ok(Vec::new()) };
    let mut logs = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(shard) = name.strip_prefix("shard-").and_then(|n| n.parse::<usize>().ok()) else { continue };
        logs.push((shard, read_log(&e.path())?));
    }
    logs.sort_by_key(|(shard, _)| *shard);
    Ok(logs)
}

/// The records of one log directory: its segments in order, each up to its first incomplete
/// batch (the zero tail of the active segment, or a torn write that recovery would cut).
fn read_log(dir: &Path) -> Result<Vec<StoreRecord>, StorageError> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".log")).is_some_and(|s| s.len() == 20))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for path in segments {
        let data = Bytes::from(std::fs::read(&path)?);
        for (pos, h) in batch::iter_headers(&data) {
            store::decode_batch(&mut data.slice(pos..pos + h.size), &mut out)?;
        }
    }
    Ok(out)
}

/// The latest record of each key that is not a tombstone.
fn latest_per_key(logs: &[(usize, Vec<StoreRecord>)], shards: usize) -> BTreeMap<StoreKey, StoreRecord> {
    let mut found_elsewhere: BTreeMap<StoreKey, StoreRecord> = BTreeMap::new();
    let mut found_at_coordinator: BTreeMap<StoreKey, StoreRecord> = BTreeMap::new();
    for (shard, records) in logs {
        for r in records {
            let at_coordinator = coordinator_shard(r.key().group(), shards) == *shard;
            let map = if at_coordinator { &mut found_at_coordinator } else { &mut found_elsewhere };
            map.insert(r.key().clone(), r.clone());
        }
    }
    found_elsewhere.extend(found_at_coordinator);
    found_elsewhere.retain(|_, r| !r.is_tombstone());
    found_elsewhere
}

fn by_shard(latest: BTreeMap<StoreKey, StoreRecord>, shards: usize) -> BTreeMap<usize, Vec<StoreRecord>> {
    let mut out: BTreeMap<usize, Vec<StoreRecord>> = BTreeMap::new();
    for (key, r) in latest {
        out.entry(coordinator_shard(key.group(), shards)).or_default().push(r);
    }
    out
}

/// Writes `records` as a log of one segment at offset 0 (its index is rebuilt when it opens).
fn write_log(dir: &Path, records: &[StoreRecord]) -> Result<(), StorageError> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::File::create(dir.join(format!("{:020}.log", 0)))?;
    let now = store::now_ms();
    for (i, chunk) in records.chunks(RECORDS_PER_BATCH).enumerate() {
        let first_offset = (i * RECORDS_PER_BATCH) as i64;
        file.write_all(&store::encode_records(chunk, first_offset, now)?)?;
    }
    file.sync_all()?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::store::OffsetValue;

    fn offset(g: &str, offset: i64) -> StoreRecord {
        let value = OffsetValue { offset, leader_epoch: -1, metadata: None, commit_ts: 0 };
        StoreRecord::Offset { key: StoreKey::Offset { g: g.into(), t: "t".into(), p: 0 }, value: Some(value) }
    }

    fn offsets_in(data: &Path, shard: usize) -> Vec<(String, i64)> {
        let records = read_log(&data.join(GROUPS_DIR).join(format!("shard-{shard}"))).unwrap();
        records
            .into_iter()
            .filter_map(|r| match r {
                StoreRecord::Offset { key, value: Some(v) } => Some((key.group().to_string(), v.offset)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn groups_follow_their_coordinator_and_a_cut_short_swap_completes() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path();
        let groups: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
        for shard in 0..2 {
            let mine: Vec<StoreRecord> = groups.iter().filter(|g| coordinator_shard(g, 2) == shard).map(|g| offset(g, 7)).collect();
            write_log(&data.join(GROUPS_DIR).join(format!("shard-{shard}")), &mine).unwrap();
        }
        assert_eq!(rebalance_group_logs(data, 2).unwrap(), 0, "nothing moves when the count is unchanged");
        assert!(rebalance_group_logs(data, 1).unwrap() > 0);
        assert_eq!(offsets_in(data, 0).len(), groups.len(), "every group is in shard 0's log");
        assert!(!data.join(GROUPS_DIR).join("shard-1").exists());
        // A crash between the two renames: the new layout is put in place at the next start.
        std::fs::rename(data.join(GROUPS_DIR), data.join(MIGRATING_DIR)).unwrap();
        std::fs::create_dir(data.join(OLD_DIR)).unwrap();
        assert!(rebalance_group_logs(data, 2).unwrap() > 0);
        for shard in 0..2 {
            let want: Vec<(String, i64)> = groups.iter().filter(|g| coordinator_shard(g, 2) == shard).map(|g| (g.clone(), 7)).collect();
            assert_eq!(offsets_in(data, shard), want);
        }
    }
}
