//! Log compaction (`cleanup.policy=compact`): keeps the latest record of each key.
//!
//! Owns the cleaning of sealed segments, the `cleaner-offset-checkpoint` of each partition
//! directory (the first offset not yet cleaned: the "dirty" part starts there) and the
//! `<base>.log.cleaned` files a pass writes. Runs only from the shard's low-priority lifecycle
//! task, under an I/O budget, and never touches the active segment.
//!
//! A pass over a log whose dirty part is at least `min.cleanable.dirty.ratio` of its cleanable
//! sealed segments (those whose newest record is older than `min.compaction.lag.ms`):
//! 1. builds key -> latest offset over the dirty segments (batches decompressed as needed);
//! 2. rewrites every cleanable segment up to the end of that map, keeping a record when no later
//!    record has its key. Records keep their offsets (gaps are allowed; a batch whose records all
//!    stay is copied verbatim, others are re-encoded with the same codec, producer id/epoch and
//!    offsets). Tombstones (null value) are dropped once older than `delete.retention.ms`
//!    (measured from the tombstone's timestamp). Records without a key (refused at produce on
//!    compacted topics, but present if the policy became compact later) are kept.
//! 3. each rewritten segment goes to `<base>.log.cleaned`, is fsynced, its old index files are
//!    removed, it is renamed over `<base>.log`, and its index is rebuilt; a crash at any point
//!    leaves either the old or the new segment (a `.cleaned` leftover is removed at open; a
//!    missing index is rebuilt from the segment). A segment left empty is deleted, except the
//!    first, which keeps the log start.
//!
//! Uses the record batch codec of `kafka_protocol::records` (the storage format), no protocol
//! messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::io::DmaFile;
use kafka_protocol::records::{RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
use tracing::{info, warn};

use super::batch;
use super::index::{self, SealInfo, SegmentIndex};
use super::partition_log::{CleanedSegment, PartitionLog, SealedSegment};
use super::retention;
use super::segment::{self, SegmentWriter};
use super::StorageError;

/// Suffix of a segment being rewritten.
pub const CLEANED_EXTENSION: &str = "log.cleaned";
/// File (in the partition directory) holding the first offset not yet cleaned, in decimal.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Bytes read per call while scanning a segment.
const READ_CHUNK: usize = 1 << 20;
/// Bytes of cleaned batches gathered before one write.
const WRITE_CHUNK: usize = 1 << 20;
/// Most memory one pass's key map may take; the pass stops at a segment boundary past it.
const MAX_MAP_BYTES: usize = 64 << 20;
/// Estimated bytes per map entry besides the key.
const MAP_ENTRY_OVERHEAD: usize = 48;
/// Attribute bit of a control batch (transaction markers are kept as they are).
const ATTR_CONTROL: i16 = 0x20;

/// Removes `.cleaned` leftovers of a pass cut short (called when a log opens).
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(&format!(".{CLEANED_EXTENSION}")) {
            info!(file = %e.path().display(), "removing an unfinished cleaned segment");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A bytes-per-second budget for the cleaner's reads and writes.
pub struct Throttle {
    rate: f64,
    window_start: Instant,
    bytes: f64,
}

impl Throttle {
    pub fn new(bytes_per_second: f64) -> Throttle {
        Throttle { rate: bytes_per_second, window_start: Instant::now(), bytes: 0.0 }
    }

    /// Accounts `n` bytes of I/O, sleeping when the pass is ahead of its budget.
    pub async fn consume(&mut self, n: usize) {
        if !self.rate.is_finite() || self.rate >= f64::MAX / 2.0 {
            return;
        }
        self.bytes += n as f64;
        let due = Duration::from_secs_f64(self.bytes / self.rate);
        let elapsed = self.window_start.elapsed();
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        } else if elapsed > Duration::from_secs(1) {
            // Behind budget: start a new window so idle time is not saved up as a burst.
            self.window_start = Instant::now();
            self.bytes = 0.0;
        }
    }
}

/// What one cleaning pass over a log did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CleanOutcome {
    pub segments_rewritten: usize,
    pub segments_removed: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A log as the cleaner knows it: its directory and which open instance (a topic deleted and
/// created again gets the same directory but a new log).
type LogKey = (PathBuf, usize);

fn log_key(log: &PartitionLog) -> LogKey {
    (log.dir().to_path_buf(), log as *const PartitionLog as usize)
}

/// The cleaner of one shard: where each log's dirty part starts, and the I/O budget.
pub struct Cleaner {
    dirty_from: HashMap<LogKey, i64>,
    throttle: Throttle,
}

impl Cleaner {
    pub fn new(io_bytes_per_second: f64) -> Cleaner {
        Cleaner { dirty_from: HashMap::new(), throttle: Throttle::new(io_bytes_per_second) }
    }

    /// Forgets logs that are no longer open.
    pub fn retain(&mut self, logs: &[Rc<PartitionLog>]) {
        let open: Vec<LogKey> = logs.iter().map(|l| log_key(l)).collect();
        self.dirty_from.retain(|k, _| open.contains(k));
    }

    /// Cleans `log` when it is compacted and dirty enough. `None` when nothing was due.
    pub async fn clean(&mut self, log: &PartitionLog, now_ms: i64) -> Result<Option<CleanOutcome>, StorageError> {
        let cfg = log.config().clone();
        if !cfg.cleanup_compact {
            return Ok(None);
        }
        let sealed = log.sealed_segments();
        let lag_cutoff = now_ms.saturating_sub(cfg.min_compaction_lag_ms);
        let cleanable: Vec<SealedSegment> = sealed.iter().take_while(|s| s.max_timestamp <= lag_cutoff).cloned().collect();
        if cleanable.is_empty() {
            return Ok(None);
        }
        let dir = log.dir().to_path_buf();
        let key = log_key(log);
        let checkpoint = *self
            .dirty_from
            .entry(key.clone())
            .or_insert_with(|| std::fs::read_to_string(dir.join(CLEANER_CHECKPOINT_FILE)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0));
        let first_dirty = checkpoint.max(log.log_start_offset());
        let total: u64 = cleanable.iter().map(|s| s.size).sum();
        let dirty: u64 = cleanable.iter().filter(|s| s.next_offset > first_dirty).map(|s| s.size).sum();
        if dirty == 0 || (dirty as f64) < cfg.min_cleanable_dirty_ratio * total as f64 {
            return Ok(None);
        }

        // 1. The latest offset of every key in the dirty part.
        let mut map: HashMap<Bytes, i64> = HashMap::new();
        let mut map_bytes = 0usize;
        let mut clean_upto = first_dirty;
        for seg in cleanable.iter().filter(|s| s.next_offset > first_dirty) {
            if map_bytes > MAX_MAP_BYTES {
                break;
            }
            let mut pos = 0u64;
            while let Some(batches) = read_batches(&seg.file, &mut pos, seg.size, &mut self.throttle).await? {
                for b in batches {
                    let h = parse(&b)?;
                    if h.next_offset() <= first_dirty || h.attributes & ATTR_CONTROL != 0 {
                        continue;
                    }
                    let mut buf = b.clone();
                    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| StorageError::Failed(format!("cleaner cannot decode batch at {}: {e}", h.base_offset)))?;
                    for r in set.records {
                        let Some(key) = r.key else { continue };
                        if r.offset < first_dirty {
                            continue;
                        }
                        let key = Bytes::copy_from_slice(&key);
                        let len = key.len();
                        if map.insert(key, r.offset).is_none() {
                            map_bytes += len + MAP_ENTRY_OVERHEAD;
                        }
                    }
                    glommio::yield_if_needed().await;
                }
            }
            clean_upto = seg.next_offset;
        }

        // 2. Rewrite the cleanable segments up to the map's end.
        let tombstone_horizon = now_ms.saturating_sub(cfg.delete_retention_ms);
        let mut outcome = CleanOutcome::default();
        let first_base = sealed.first().map(|s| s.base_offset);
        for seg in cleanable.iter().filter(|s| s.next_offset <= clean_upto) {
            outcome.bytes_before += seg.size;
            let keep_empty = Some(seg.base_offset) == first_base;
            let r = self.rewrite(log, seg, &map, tombstone_horizon, keep_empty).await?;
            outcome.records_removed += r.records_removed;
            outcome.bytes_after += r.size;
            match r.result {
                Rewrite::Unchanged => {}
                Rewrite::Replaced => outcome.segments_rewritten += 1,
                Rewrite::Removed => outcome.segments_removed += 1,
            }
        }
        retention::write_file_atomic(&dir, CLEANER_CHECKPOINT_FILE, clean_upto.to_string().into_bytes()).await?;
        self.dirty_from.insert(key, clean_upto);
        info!(
            topic = %log.topic,
            partition = log.partition,
            cleaned_upto = clean_upto,
            keys = map.len(),
            records_removed = outcome.records_removed,
            segments_rewritten = outcome.segments_rewritten,
            segments_removed = outcome.segments_removed,
            bytes_before = outcome.bytes_before,
            bytes_after = outcome.bytes_after,
            "cleaned log"
        );
        Ok(Some(outcome))
    }

    async fn rewrite(&mut self, log: &PartitionLog, seg: &SealedSegment, map: &HashMap<Bytes, i64>, tombstone_horizon: i64, keep_empty: bool) -> Result<RewriteOutcome, StorageError> {
        let tmp = seg.path.with_extension(CLEANED_EXTENSION);
        let mut writer: Option<SegmentWriter> = None;
        let mut index = SegmentIndex::default();
        let interval = log.config().index_interval_bytes;
        let (mut size, mut max_ts) = (0u64, -1i64);
        let mut out: Vec<Bytes> = Vec::new();
        let mut out_bytes = 0usize;
        let mut changed = false;
        let mut removed = 0u64;
        let mut pos = 0u64;
        while let Some(batches) = read_batches(&seg.file, &mut pos, seg.size, &mut self.throttle).await? {
            for b in batches {
                let h = parse(&b)?;
                let kept = if h.attributes & ATTR_CONTROL != 0 {
                    Some(b)
                } else {
                    let (kept, dropped) = filter_batch(b, &h, map, tombstone_horizon)?;
                    removed += dropped;
                    changed |= dropped > 0;
                    kept
                };
                let Some(kept) = kept else { continue };
                for (p, kh) in batch::iter_headers(&kept) {
                    let rel = (kh.base_offset - seg.base_offset) as u32;
                    index.on_append(rel, (size + p as u64) as u32, kh.size, max_ts, interval);
                    max_ts = max_ts.max(kh.max_timestamp);
                }
                size += kept.len() as u64;
                out_bytes += kept.len();
                out.push(kept);
                if out_bytes >= WRITE_CHUNK && changed {
                    write_out(&mut writer, &tmp, seg.base_offset, &mut out).await?;
                    self.throttle.consume(out_bytes).await;
                    out_bytes = 0;
                }
                glommio::yield_if_needed().await;
            }
        }
        if !changed {
            drop(writer);
            if tmp.exists() {
                let _ = glommio::io::remove(&tmp).await;
            }
            return Ok(RewriteOutcome { result: Rewrite::Unchanged, records_removed: 0, size: seg.size });
        }
        write_out(&mut writer, &tmp, seg.base_offset, &mut out).await?;
        self.throttle.consume(out_bytes).await;
        let writer = writer.expect("writer opened by write_out");
        writer.seal().await?;
        let new_file = writer.file.clone();
        drop(writer);
        let _ = new_file.close_rc().await;

        let _guard = log.lifecycle_lock().acquire_permit(1).await.map_err(|_| StorageError::Closed)?;
        let still_there = log.sealed_segments().iter().any(|s| s.base_offset == seg.base_offset && Rc::ptr_eq(&s.file, &seg.file));
        if !still_there {
            // Deleted (retention, DeleteRecords) while this pass ran.
            let _ = glommio::io::remove(&tmp).await;
            return Ok(RewriteOutcome { result: Rewrite::Unchanged, records_removed: 0, size: 0 });
        }
        if size == 0 && !keep_empty {
            log.replace_sealed(seg.base_offset, &seg.file, None);
            drop(_guard);
            let _ = glommio::io::remove(&tmp).await;
            retention::remove_segment_files(log.dir(), &[seg.base_offset]).await;
            return Ok(RewriteOutcome { result: Rewrite::Removed, records_removed: removed, size: 0 });
        }
        // Without index files a crash after the rename rebuilds them from the new segment.
        index::remove_index_files(&seg.path);
        glommio::io::rename(&tmp, &seg.path).await.map_err(std::io::Error::from)?;
        segment::sync_dir(log.dir()).await?;
        let seal = SealInfo { size, next_offset: seg.next_offset, max_timestamp: seg.max_timestamp };
        // Written and fdatasynced on glommio's blocking pool, not on the shard's executor.
        let (path, base) = (seg.path.clone(), seg.base_offset);
        let (index, persisted) = glommio::executor()
            .spawn_blocking(move || {
                let res = index.persist(&path, &seal, base);
                (index, res)
            })
            .await;
        persisted?;
        let file = Rc::new(DmaFile::open(&seg.path).await.map_err(std::io::Error::from)?);
        log.replace_sealed(seg.base_offset, &seg.file, Some(CleanedSegment { file, size, index }));
        Ok(RewriteOutcome { result: Rewrite::Replaced, records_removed: removed, size })
    }
}

enum Rewrite {
    Unchanged,
    Replaced,
    Removed,
}

struct RewriteOutcome {
    result: Rewrite,
    records_removed: u64,
    size: u64,
}

fn parse(b: &[u8]) -> Result<batch::BatchHeader, StorageError> {
    batch::parse_header(b).map_err(|e| StorageError::Failed(format!("cleaner: {e}")))
}

/// Keeps the records of one batch that survive cleaning. Returns the batch to write (the
/// original bytes when every record stays, re-encoded when some go, none when all go) and how
/// many records were dropped.
fn filter_batch(b: Bytes, h: &batch::BatchHeader, map: &HashMap<Bytes, i64>, tombstone_horizon: i64) -> Result<(Option<Bytes>, u64), StorageError> {
    let mut buf = b.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| StorageError::Failed(format!("cleaner cannot decode batch at {}: {e}", h.base_offset)))?;
    let total = set.records.len();
    let kept: Vec<_> = set
        .records
        .into_iter()
        .filter(|r| {
            let Some(key) = &r.key else { return true };
            if map.get(key).is_some_and(|&latest| r.offset < latest) {
                return false;
            }
            !(r.value.is_none() && r.timestamp < tombstone_horizon)
        })
        .collect();
    let dropped = (total - kept.len()) as u64;
    if dropped == 0 {
        return Ok((Some(b), 0));
    }
    if kept.is_empty() {
        return Ok((None, dropped));
    }
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(&mut out, kept.iter(), &RecordEncodeOptions { version: 2, compression: set.compression })
        .map_err(|e| StorageError::Failed(format!("cleaner cannot encode batch at {}: {e}", h.base_offset)))?;
    Ok((Some(out.freeze()), dropped))
}

/// Writes the gathered batches to the `.cleaned` file, creating it first.
async fn write_out(writer: &mut Option<SegmentWriter>, tmp: &Path, base: i64, out: &mut Vec<Bytes>) -> Result<(), StorageError> {
    if writer.is_none() {
        if tmp.exists() {
            let _ = glommio::io::remove(tmp).await;
        }
        let file = Rc::new(segment::open_rw(tmp).await?);
        *writer = Some(SegmentWriter::resume(file, base, 0).await?);
    }
    if !out.is_empty() {
        writer.as_mut().unwrap().append(out).await?;
        out.clear();
    }
    Ok(())
}

/// Reads the next whole batches of a segment from `*pos` (at most about `READ_CHUNK` bytes, or
/// one larger batch). `None` at the end.
async fn read_batches(file: &DmaFile, pos: &mut u64, end: u64, throttle: &mut Throttle) -> Result<Option<Vec<Bytes>>, StorageError> {
    if *pos >= end {
        return Ok(None);
    }
    let want = ((end - *pos) as usize).min(READ_CHUNK);
    let rr = file.read_at(*pos, want).await.map_err(std::io::Error::from)?;
    throttle.consume(rr.len()).await;
    let chunk = Bytes::copy_from_slice(&rr);
    let mut batches = Vec::new();
    let mut at = 0usize;
    for (p, h) in batch::iter_headers(&chunk) {
        batches.push(chunk.slice(p..p + h.size));
        at = p + h.size;
    }
    if at == 0 {
        // One batch larger than the chunk.
        match batch::peek_batch_size(&chunk) {
            Some(size) if *pos + size as u64 <= end && size > chunk.len() => {
                let rr = file.read_at(*pos, size).await.map_err(std::io::Error::from)?;
                throttle.consume(rr.len()).await;
                *pos += size as u64;
                return Ok(Some(vec![Bytes::copy_from_slice(&rr)]));
            }
            _ => {
                warn!(pos = *pos, "cleaner stopped at an unreadable batch");
                return Ok(None);
            }
        }
    }
    *pos += at as u64;
    Ok(Some(batches))
}
