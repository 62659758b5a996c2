//! Retention and DeleteRecords: moving a log's start offset forward and deleting the sealed
//! segments wholly below it.
//!
//! Owns the `log-start-offset` checkpoint of each partition directory and the removal of
//! segment files (`.log`, `.index`, `.timeindex`, producer `.snapshot`). Runs from the shard's
//! low-priority lifecycle task (retention) or a DeleteRecords call; files are always removed
//! afterwards by the lifecycle task queue, never on the request path. Never touches the active
//! segment. Knows nothing of the Kafka protocol.

use std::path::Path;

use tracing::info;

use super::partition_log::PartitionLog;
use super::{producer_state, segment, StorageError};

/// File (in the partition directory) holding the log start offset when it is not the first
/// segment's base offset (DeleteRecords inside a segment), in decimal.
pub const LOG_START_FILE: &str = "log-start-offset";

/// The checkpointed log start offset of a partition directory, if any.
pub fn read_log_start(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(LOG_START_FILE)).ok()?.trim().parse().ok()
}

/// Writes a small file atomically and durably (temp file, fdatasync, rename, directory sync)
/// with glommio I/O, so the executor is never blocked.
pub async fn write_file_atomic(dir: &Path, name: &str, data: Vec<u8>) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let f = glommio::io::BufferedFile::create(&tmp).await.map_err(std::io::Error::from)?;
    f.write_at(data, 0).await.map_err(std::io::Error::from)?;
    f.fdatasync().await.map_err(std::io::Error::from)?;
    f.close().await.map_err(std::io::Error::from)?;
    glommio::io::rename(&tmp, dir.join(name)).await.map_err(std::io::Error::from)?;
    segment::sync_dir(dir).await
}

/// Removes the files of deleted segments, gradually and off the executor
/// (`file_deleter`). Missing files are not an error.
pub async fn remove_segment_files(dir: &Path, bases: &[i64]) {
    let mut paths = Vec::with_capacity(bases.len() * 4);
    for &base in bases {
        let log = segment::segment_path(dir, base);
        paths.push(log.with_extension("index"));
        paths.push(log.with_extension("timeindex"));
        paths.push(producer_state::snapshot_path(dir, base));
        paths.push(log);
    }
    super::file_deleter::remove_files(paths).await;
}

/// Moves the start of `log` to `offset` and persists it. Returns the new start and the base
/// offsets of the segments to remove (their files are still on disk).
async fn move_start(log: &PartitionLog, offset: i64) -> Result<(i64, Vec<i64>), StorageError> {
    let before = log.log_start_offset();
    let (start, removed) = log.advance_start(offset);
    if start != before {
        write_file_atomic(log.dir(), LOG_START_FILE, start.to_string().into_bytes()).await?;
    }
    Ok((start, removed))
}

/// DeleteRecords: moves the log start to `offset` (-1: the high watermark). Answers the new low
/// watermark and the segments whose files the caller must remove (in the background).
/// `OffsetOutOfRange` when `offset` is past the high watermark.
pub async fn delete_records(log: &PartitionLog, offset: i64) -> Result<(i64, Vec<i64>), StorageError> {
    let _guard = log.lifecycle_lock().acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
    let end = log.next_offset();
    let target = if offset == -1 { end } else { offset };
    if target < 0 || target > end {
        return Err(StorageError::OffsetOutOfRange);
    }
    move_start(log, target).await
}

/// What one retention pass over a log did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// The base offset the log may start at under `retention.ms` / `retention.bytes`: the sealed
/// segments past a limit are the oldest ones, deleted in order. `None` when nothing is due.
fn retention_target(log: &PartitionLog, now_ms: i64) -> Option<(i64, usize, u64)> {
    let cfg = log.config();
    if !cfg.cleanup_delete {
        return None;
    }
    let sealed = log.sealed_segments();
    let mut total = log.size_bytes();
    let mut upto = None;
    let (mut n, mut bytes) = (0usize, 0u64);
    for (i, seg) in sealed.iter().enumerate() {
        let by_time = cfg.retention_ms >= 0 && seg.max_timestamp >= 0 && now_ms - seg.max_timestamp > cfg.retention_ms;
        let by_size = cfg.retention_bytes >= 0 && total.saturating_sub(seg.size) >= cfg.retention_bytes as u64;
        if !(by_time || by_size) {
            break;
        }
        total -= seg.size;
        n += 1;
        bytes += seg.size;
        // The start moves to the next segment's base (sealed segments are followed by another).
        upto = Some(sealed.get(i + 1).map(|s| s.base_offset).unwrap_or(seg.next_offset));
    }
    upto.map(|u| (u, n, bytes))
}

/// One retention pass over `log`: deletes the sealed segments past the topic's limits, and any
/// sealed segment wholly below the log start. Returns what was deleted.
pub async fn enforce(log: &PartitionLog, now_ms: i64) -> Result<RetentionOutcome, StorageError> {
    let _guard = log.lifecycle_lock().acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
    let target = retention_target(log, now_ms);
    let offset = target.map(|t| t.0).unwrap_or(i64::MIN);
    let (start, removed) = move_start(log, offset).await?;
    drop(_guard);
    if removed.is_empty() {
        return Ok(RetentionOutcome::default());
    }
    let bytes = target.map(|t| t.2).unwrap_or(0);
    info!(topic = %log.topic, partition = log.partition, segments = removed.len(), log_start_offset = start, "retention deleted segments");
    remove_segment_files(log.dir(), &removed).await;
    Ok(RetentionOutcome { segments_deleted: removed.len(), bytes_deleted: bytes })
}
