//! The log of one partition: its segments, indexes, in-memory tail and the task that writes it.
//!
//! Owns offsets (log start, log end, written, durable), segment roll, the tail cache and group
//! commit. Lives on the shard that owns the partition and is only touched from that shard's
//! executor. Knows nothing of the Kafka protocol beyond record batch framing.
//!
//! Appends are synchronous (offsets are assigned in call order, which keeps per-partition order
//! for pipelined requests); durability is awaited separately. One writer task per partition
//! drains the pending batches: everything appended while a write is in flight goes out in the
//! next single DMA write, followed by one fdatasync when any of it was produced with acks=all.
//!
//! The producer's bytes are never copied nor changed on the append path: the writer copies them
//! once, into the aligned buffer of the DMA write, and stamps each batch's offsets there. That
//! buffer, once written, is the tail cache entry (`CachedBatches`): fetches of recent data send
//! slices of the very bytes on the device.
//!
//! A failed write, fdatasync or segment roll (ENOSPC, EIO) does not stop the log for good:
//! - the log end is cut back to the written offset: batches not yet on the device (the failed
//!   write and everything appended after it) are dropped from the pending queue, the segment's
//!   size and index and the producer state, and their producers are answered with
//!   KAFKA_STORAGE_ERROR. Their offsets are given to the next batches, so offsets stay dense and
//!   no consumer ever saw them (reads stop at the high watermark, the written offset; and the
//!   file is cut back to its logical size before the next write);
//! - data already written stays readable and is never touched again; after a failed fdatasync,
//!   acks=all producers waiting for it get the error (their data may still become durable, as
//!   with a timeout) and the next sync retries;
//! - appends are refused with KAFKA_STORAGE_ERROR while the log is failed; the writer retries
//!   after a backoff (`FAILURE_BACKOFF_*`): it cuts the file back to its logical size and takes
//!   appends again. When space is back, the next write succeeds and the log goes on.
//! The maximum timestamp of the segment is not rolled back (it may over-estimate).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use glommio::io::DmaFile;
use tracing::{debug, info, warn};

use super::batch::{self, BatchesSummary};
use super::index::{self, SealInfo, SegmentIndex};
use super::producer_state::{self, BatchMeta, ProducerStates, SequenceCheck};
use super::segment::{self, SegmentWriter};
use super::{device_watch, memory, FileRange, LogChunk, StorageError};

/// Largest number of bytes the writer task puts in one DMA write.
const MAX_WRITE_BYTES: usize = 8 << 20;
/// First and largest wait before a failed log takes appends again.
const FAILURE_BACKOFF_MIN: Duration = Duration::from_millis(100);
const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Cut-backs remembered, so a waiting producer can tell whether its batch was dropped.
const ROLLBACK_HISTORY: usize = 256;
/// Extra bytes read past `max_bytes` so the batch at an index point's offset is reached.
const READ_SLACK: usize = 64 << 10;
/// Bytes of a segment file read at once to find batch boundaries (headers only) when planning
/// a sendfile range; the records themselves never enter user space.
const HEADER_WINDOW: usize = 8 << 10;
/// Least a cold read asks the kernel to read ahead of the range it sends (the consumer's next
/// fetch), so the disk works while the shard sends.
const COLD_READ_AHEAD_BYTES: u64 = 4 << 20;

/// Per-log settings (topic configs with broker defaults applied).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub roll_ms: u64,
    pub index_interval_bytes: usize,
    pub tail_cache_bytes: usize,
    /// Idle producers are forgotten after this long (`producer.id.expiration.ms`); never while
    /// they keep producing.
    pub producer_id_expiration_ms: i64,
    /// `retention.ms`: sealed segments whose newest record is older are deleted (-1: never).
    pub retention_ms: i64,
    /// `retention.bytes`: oldest sealed segments are deleted while the log is larger (-1: never).
    pub retention_bytes: i64,
    /// `cleanup.policy` contains `delete` (retention applies).
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact` (the cleaner keeps the latest record per key).
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a tombstone stays in a compacted log.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are never compacted away.
    pub min_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    /// Kafka's defaults (segments of 1 GiB, 7 days retention, delete policy).
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            roll_ms: 7 * 24 * 3_600_000,
            index_interval_bytes: 4096,
            tail_cache_bytes: 16 << 20,
            producer_id_expiration_ms: 86_400_000,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
        }
    }
}

/// How often idle producer state is looked for.
const PRODUCER_EXPIRY_CHECK_MS: i64 = 60_000;

/// Where an append landed.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    /// True when the batch was a retry of one already in the log (nothing was written).
    pub duplicate: bool,
    pub base_offset: i64,
    /// Offset after the last record appended.
    pub next_offset: i64,
    pub log_start_offset: i64,
    /// Cut-backs of the log before this append (see `wait_persisted`).
    pub epoch: u64,
}

/// The result of a read: whole batches, in order.
#[derive(Debug, Default)]
pub struct ReadData {
    pub chunks: Vec<Bytes>,
    pub bytes: usize,
}

/// The result of a read for the network: whole batches as in-memory slices or file ranges.
#[derive(Debug, Default)]
pub struct SendData {
    pub chunks: Vec<LogChunk>,
    pub bytes: usize,
}

struct Segment {
    base_offset: i64,
    path: PathBuf,
    /// `None` until the writer task creates the file.
    file: Option<Rc<DmaFile>>,
    /// Logical size: bytes appended (written or pending).
    size: u64,
    /// Bytes on the device (readable from the file).
    written_size: u64,
    next_offset: i64,
    max_timestamp: i64,
    index: SegmentIndex,
    created: Instant,
    /// Producer state as of this segment's base offset, written as a snapshot when the
    /// previous segment is sealed.
    snapshot: Option<Vec<u8>>,
    /// Buffered read-only handle for sendfile, opened at the first cold read.
    reader: Option<Arc<std::fs::File>>,
}

/// Batches of one write as they are on the device, usually a slice of the write's own aligned
/// buffer (see `SegmentWriter::append_kept`).
struct CachedBatches {
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
    /// Memory held (the whole aligned buffer when `bytes` is a slice of it), charged to the
    /// partition's and the shard's cache budgets.
    charge: usize,
}

struct Pending {
    segment_base: i64,
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
}

struct LogState {
    segments: Vec<Segment>,
    log_start_offset: i64,
    next_offset: i64,
    written_offset: i64,
    durable_offset: i64,
    /// Highest offset (exclusive) an acks=all producer waits for.
    sync_wanted: i64,
    pending: VecDeque<Pending>,
    cache: VecDeque<CachedBatches>,
    cache_bytes: usize,
    /// Set from a failed write until the writer's backoff ends; appends are refused meanwhile.
    failed: Option<String>,
    /// Number of cut-backs after failed writes, and the offset each cut back to (newest last).
    epoch: u64,
    rollbacks: VecDeque<(u64, i64)>,
    closed: bool,
    producers: ProducerStates,
    last_producer_expiry_ms: i64,
}

pub struct PartitionLog {
    pub topic: String,
    pub partition: i32,
    dir: PathBuf,
    /// Replaced in place when the topic's configs change (`update_config`); read at each use.
    config: RefCell<LogConfig>,
    state: RefCell<LogState>,
    /// Fired when written/durable offsets advance (wakes parked fetches) or the log fails.
    progress: Event,
    /// Fired when there is work for the writer task.
    work: Event,
    writer_running: Cell<bool>,
    /// Serializes log-start moves and segment swaps (retention, DeleteRecords, cleaner).
    lifecycle_lock: glommio::sync::Semaphore,
    /// LRU stamp for the shard's tail cache budget (see `memory`).
    last_used: Cell<u64>,
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        memory::on_evicted(st.cache_bytes);
        let unwritten: usize = st.pending.iter().map(|p| p.bytes.len()).sum();
        memory::on_written(unwritten);
    }
}

/// A sealed segment as the retention and cleaner tasks see it (see `retention.rs`, `cleaner.rs`).
#[derive(Clone)]
pub struct SealedSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    pub path: PathBuf,
    pub file: Rc<DmaFile>,
}

/// A rewritten sealed segment, already renamed over the old file (see `cleaner.rs`).
pub struct CleanedSegment {
    pub file: Rc<DmaFile>,
    pub size: u64,
    pub index: SegmentIndex,
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, recovering the active segment: every batch
    /// is CRC-checked and a torn or corrupt tail is truncated. Spawns the writer task.
    pub async fn open(
        topic: &str,
        partition: i32,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<Rc<PartitionLog>, StorageError> {
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            if let Some(parent) = dir.parent() {
                segment::sync_dir(parent).await?;
            }
        }
        // A cleaner pass cut short leaves a `.cleaned` file; the segment it was replacing is intact.
        super::cleaner::remove_leftovers(&dir);
        let mut bases: Vec<i64> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".log")?;
                (stem.len() == 20).then(|| stem.parse::<i64>().ok()).flatten()
            })
            .collect();
        bases.sort_unstable();

        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut writer = None;
        // Producer state: the newest snapshot taken at a segment boundary, then the batches after it.
        let mut producers = ProducerStates::default();
        let mut replay_from = i64::MIN;
        for off in producer_state::list_snapshots(&dir).into_iter().rev() {
            if !bases.contains(&off) {
                continue;
            }
            let loaded = std::fs::read(producer_state::snapshot_path(&dir, off)).ok().and_then(|b| ProducerStates::from_bytes(&b));
            if let Some(p) = loaded {
                producers = p;
                replay_from = off;
                break;
            }
        }
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::segment_path(&dir, base);
            let last = i + 1 == bases.len();
            let feed = base >= replay_from;
            let seg = if last {
                let (seg, w) = recover_active(&path, base, &config, feed.then_some(&mut producers)).await?;
                writer = Some(w);
                seg
            } else {
                load_sealed(&path, base, &config, feed.then_some(&mut producers)).await?
            };
            segments.push(seg);
        }
        if segments.is_empty() {
            let path = segment::segment_path(&dir, 0);
            let file = Rc::new(segment::open_rw(&path).await?);
            writer = Some(SegmentWriter::resume(file.clone(), 0, 0).await?);
            segments.push(new_segment(0, path, Some(file)));
        }
        let next_offset = segments.last().unwrap().next_offset;
        // DeleteRecords may have moved the start inside the first segment.
        let log_start_offset = super::retention::read_log_start(&dir)
            .filter(|&o| o >= segments[0].base_offset && o <= next_offset)
            .unwrap_or(segments[0].base_offset);
        let log = Rc::new(PartitionLog {
            topic: topic.to_string(),
            partition,
            dir,
            config: RefCell::new(config),
            state: RefCell::new(LogState {
                segments,
                log_start_offset,
                next_offset,
                written_offset: next_offset,
                durable_offset: next_offset,
                sync_wanted: next_offset,
                pending: VecDeque::new(),
                cache: VecDeque::new(),
                cache_bytes: 0,
                failed: None,
                epoch: 0,
                rollbacks: VecDeque::new(),
                closed: false,
                producers,
                last_producer_expiry_ms: now_ms(),
            }),
            progress: Event::new(),
            work: Event::new(),
            writer_running: Cell::new(true),
            last_used: Cell::new(memory::touch()),
            lifecycle_lock: glommio::sync::Semaphore::new(1),
        });
        memory::register(&log);
        let w = writer.expect("active segment writer");
        glommio::spawn_local(run_writer(log.clone(), w)).detach();
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in force (topic configs with broker defaults applied).
    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    /// Installs new settings (a topic config change); they apply from the next append on, e.g.
    /// a smaller `segment_bytes` rolls the active segment at the next append that passes it.
    pub fn update_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    /// Bytes of all segments (appended, including those not yet on the device).
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.iter().map(|s| s.size).sum()
    }

    /// Log end offset: the offset the next appended record gets.
    pub fn next_offset(&self) -> i64 {
        self.state.borrow().next_offset
    }

    /// High watermark: the end of what is on the device. Readers see nothing past it, so they
    /// never see a batch that a failed write later drops (its offsets are reused).
    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().written_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().log_start_offset
    }

    /// Appends validated batches, assigning offsets from the log end. Synchronous: call order is
    /// log order. `sync` asks the writer to fdatasync after writing them (acks=all).
    pub fn append(&self, bytes: Bytes, summary: &BatchesSummary, sync: bool) -> Result<AppendInfo, StorageError> {
        let mut st = self.state.borrow_mut();
        if let Some(e) = &st.failed {
            return Err(StorageError::Failed(e.clone()));
        }
        if st.closed {
            return Err(StorageError::Closed);
        }
        let idempotent = summary.producer_id >= 0;
        let mut seq_range = (0, 0);
        if idempotent {
            if summary.batches != 1 || summary.transactional {
                // Kafka takes exactly one batch per partition from an idempotent producer;
                // transactions are not served.
                return Err(StorageError::Refused(87));
            }
            let last = producer_state::last_seq(summary.base_sequence, summary.first_batch_records);
            seq_range = (summary.base_sequence, last);
            match st.producers.check(summary.producer_id, summary.producer_epoch, summary.base_sequence, last) {
                SequenceCheck::Accept => {}
                SequenceCheck::Duplicate { base_offset, last_offset } => {
                    return Ok(AppendInfo { duplicate: true, base_offset, next_offset: last_offset + 1, log_start_offset: st.log_start_offset, epoch: st.epoch });
                }
                SequenceCheck::Reject(code) => return Err(StorageError::Refused(code)),
            }
        }
        // The producer's bytes are kept as they came; the writer stamps the offsets in its
        // aligned buffer (see `run_writer`).
        let base = st.next_offset;
        let next = base + summary.offset_count;
        let len = bytes.len() as u64;

        // Segment roll is decided here, so positions and indexes are known at append time.
        // Copied out (no clone of the whole config on the append path).
        let (segment_bytes, roll_ms, interval, expiration_ms) = {
            let c = self.config.borrow();
            (c.segment_bytes, c.roll_ms, c.index_interval_bytes, c.producer_id_expiration_ms)
        };
        let roll = {
            let active = st.segments.last().unwrap();
            active.size > 0
                && (active.size + len > segment_bytes
                    || active.created.elapsed() >= Duration::from_millis(roll_ms))
        };
        if roll {
            let path = segment::segment_path(&self.dir, base);
            let mut seg = new_segment(base, path, None);
            // The producer state now covers exactly the offsets below `base`.
            seg.snapshot = Some(st.producers.to_bytes());
            st.segments.push(seg);
        }
        // Recorded after the roll's snapshot, which must cover only offsets below `base`.
        if idempotent {
            let now = now_ms();
            let meta = BatchMeta { first_seq: seq_range.0, last_seq: seq_range.1, base_offset: base, last_offset: next - 1 };
            st.producers.record(summary.producer_id, summary.producer_epoch, meta, now);
            if now - st.last_producer_expiry_ms > PRODUCER_EXPIRY_CHECK_MS {
                st.last_producer_expiry_ms = now;
                let expired = st.producers.expire(now, expiration_ms);
                if expired > 0 {
                    info!(topic = %self.topic, partition = self.partition, expired, "forgot idle producers");
                }
            }
        }
        let active = st.segments.last_mut().unwrap();
        let mut batch_base = base;
        for (pos, h) in batch::iter_headers(&bytes) {
            let rel = (batch_base - active.base_offset) as u32;
            let position = (active.size + pos as u64) as u32;
            active.index.on_append(rel, position, h.size, active.max_timestamp, interval);
            active.max_timestamp = active.max_timestamp.max(h.max_timestamp);
            batch_base += h.last_offset_delta as i64 + 1;
        }
        debug_assert_eq!(batch_base, next);
        active.size += len;
        active.next_offset = next;
        let segment_base = active.base_offset;
        st.next_offset = next;
        if sync {
            st.sync_wanted = next;
        }
        memory::on_append(bytes.len());
        st.pending.push_back(Pending { segment_base, base_offset: base, next_offset: next, bytes });
        self.last_used.set(memory::touch());
        let log_start_offset = st.log_start_offset;
        let epoch = st.epoch;
        drop(st);
        self.work.notify(1);
        Ok(AppendInfo { duplicate: false, base_offset: base, next_offset: next, log_start_offset, epoch })
    }

    /// Waits until the batches of an append are on the device (acks=1) or durable (acks=all).
    /// Fails when they were dropped after a failed write, or the log is failed before they are
    /// persisted.
    pub async fn wait_persisted(&self, info: &AppendInfo, durable: bool) -> Result<(), StorageError> {
        let upto = info.next_offset;
        loop {
            let listener = self.progress.listen();
            {
                let st = self.state.borrow();
                if st.epoch != info.epoch {
                    // The first cut-back after this append decides: below its offset, the batch
                    // was written before it and survives; otherwise it was dropped.
                    let dropped = match st.rollbacks.iter().find(|(e, _)| *e > info.epoch) {
                        Some(&(_, to)) => to < upto,
                        None => true,
                    };
                    if dropped {
                        let why = st.failed.clone().unwrap_or_else(|| "write failed".into());
                        return Err(StorageError::Failed(format!("not written: {why}")));
                    }
                }
                let reached = if durable { st.durable_offset } else { st.written_offset };
                if reached >= upto {
                    return Ok(());
                }
                if let Some(e) = &st.failed {
                    return Err(StorageError::Failed(e.clone()));
                }
                if st.closed {
                    return Err(StorageError::Closed);
                }
            }
            listener.await;
        }
    }

    /// Waits until the high watermark moves past `offset` or `deadline` passes.
    pub async fn wait_for_data(&self, offset: i64, deadline: Instant) {
        loop {
            let listener = self.progress.listen();
            if self.high_watermark() > offset || self.state.borrow().closed {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let _ = glommio::timer::timeout(deadline - now, async {
                listener.await;
                Ok(())
            })
            .await;
        }
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (always at least one batch) and below the high watermark. Returns `OffsetOutOfRange`
    /// outside [log start, log end].
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadData, StorageError> {
        let mut at = offset;
        loop {
            let (file, start_pos, end_pos, next_base) = {
                let st = self.state.borrow();
                if offset < st.log_start_offset || offset > st.next_offset {
                    return Err(StorageError::OffsetOutOfRange);
                }
                if at >= st.written_offset {
                    return Ok(ReadData::default());
                }
                if st.cache.front().is_some_and(|c| at >= c.base_offset) {
                    return Ok(read_cache(&st.cache, at, max_bytes));
                }
                let si = st.segments.partition_point(|s| s.base_offset <= at).saturating_sub(1);
                let seg = &st.segments[si];
                let rel = (at.max(seg.base_offset) - seg.base_offset) as u32;
                let pos = seg.index.lookup_offset(rel).map(|e| e.position as u64).unwrap_or(0);
                let file = seg.file.clone().ok_or_else(|| StorageError::Failed("segment file missing".into()))?;
                (file, pos, seg.written_size, st.segments.get(si + 1).map(|s| s.base_offset))
            };
            let data = read_file(&file, start_pos, end_pos, at, max_bytes).await?;
            // A compacted segment may hold nothing at or after `at`: go on with the next one.
            match next_base {
                Some(next) if data.chunks.is_empty() && next > at => at = next,
                _ => return Ok(data),
            }
        }
    }

    /// Reads for the network, without copying records: whole batches starting with the one
    /// that contains `offset`, up to `max_bytes` (always at least one batch). Batches still in
    /// the tail cache are returned as slices of the appended `Bytes`; older ones as a range of
    /// the segment file (found from the index and batch headers only), to be sent with
    /// sendfile. Stops at the high watermark. Returns `OffsetOutOfRange` outside
    /// [log start, log end].
    pub async fn read_for_send(&self, offset: i64, max_bytes: usize) -> Result<SendData, StorageError> {
        {
            let st = self.state.borrow();
            if offset < st.log_start_offset || offset > st.next_offset {
                return Err(StorageError::OffsetOutOfRange);
            }
        }
        let mut at = offset;
        loop {
            // Decided under the borrow; the headers are read after it, off the executor thread.
            let (plan, next_base) = {
                let mut st = self.state.borrow_mut();
                if at >= st.written_offset {
                    return Ok(SendData::default());
                }
                if st.cache.front().is_some_and(|c| at >= c.base_offset) {
                    self.last_used.set(memory::touch());
                    let (chunks, bytes) = cached_slices(&st.cache, at, max_bytes, LogChunk::Mem);
                    return Ok(SendData { chunks, bytes });
                }
                let si = st.segments.partition_point(|s| s.base_offset <= at).saturating_sub(1);
                let next_base = st.segments.get(si + 1).map(|s| s.base_offset);
                (SendPlan::new(&mut st.segments[si], at, max_bytes)?, next_base)
            };
            let data = plan.run().await?;
            // A compacted segment may hold nothing at or after `at`: go on with the next one.
            match next_base {
                Some(next) if data.chunks.is_empty() && next > at => at = next,
                _ => return Ok(data),
            }
        }
    }

    /// The offset and timestamp of the first record with a timestamp >= `ts`, or `None` when
    /// there is none (compressed batches are decompressed to find the record, as Kafka does).
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let start = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.iter().find(|s| s.max_timestamp >= ts && s.next_offset > s.base_offset) else {
                return Ok(None);
            };
            let rel = seg.index.lookup_time(ts).map(|e| e.rel_offset).unwrap_or(0);
            (seg.base_offset + rel as i64).max(st.log_start_offset)
        };
        let mut offset = start;
        loop {
            let data = self.read(offset, 1 << 20).await?;
            if data.chunks.is_empty() {
                return Ok(None);
            }
            for chunk in &data.chunks {
                for (pos, h) in batch::iter_headers(chunk) {
                    offset = h.next_offset();
                    if h.max_timestamp >= ts {
                        let exact = batch::first_offset_at_or_after(&chunk[pos..pos + h.size], ts);
                        let approx = (h.base_offset, if h.base_timestamp >= ts { h.base_timestamp } else { h.max_timestamp });
                        return Ok(Some(exact.unwrap_or(approx)));
                    }
                }
            }
        }
    }

    /// The greatest timestamp and the offset of the first record carrying it (ListOffsets -3),
    /// as Kafka 3.8+ answers (KAFKA-16310): the record, not the last offset of its batch or
    /// segment. Falls back to the segment's last offset if that record is below the log start.
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let (max, last) = {
            let st = self.state.borrow();
            let Some(seg) = st.segments.iter().filter(|s| s.next_offset > s.base_offset).max_by_key(|s| s.max_timestamp) else {
                return Ok(None);
            };
            (seg.max_timestamp, seg.next_offset - 1)
        };
        Ok(Some(match self.offset_for_timestamp(max).await? {
            Some((offset, _)) => (max, offset),
            None => (max, last),
        }))
    }

    /// The segments the writer is done with: every one but the active segment, once the roll
    /// that sealed it (index written, next segment opened) has finished.
    pub fn sealed_segments(&self) -> Vec<SealedSegment> {
        let st = self.state.borrow();
        let n = st.segments.len();
        let sealed = (1..n).take_while(|&i| st.segments[i].file.is_some()).count();
        st.segments[..sealed]
            .iter()
            .filter_map(|s| {
                Some(SealedSegment {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                    size: s.size,
                    max_timestamp: s.max_timestamp,
                    path: s.path.clone(),
                    file: s.file.clone()?,
                })
            })
            .collect()
    }

    pub(crate) fn lifecycle_lock(&self) -> &glommio::sync::Semaphore {
        &self.lifecycle_lock
    }

    /// Moves the log start up to `offset` (never down, never past the log end) and forgets the
    /// sealed segments wholly below it, returning their base offsets. Reads below the new start
    /// answer `OffsetOutOfRange` from now on. The caller persists the start and removes files.
    pub(crate) fn advance_start(&self, offset: i64) -> (i64, Vec<i64>) {
        let mut st = self.state.borrow_mut();
        let start = offset.clamp(st.log_start_offset, st.next_offset);
        st.log_start_offset = start;
        let n = st.segments.len();
        let sealed = (1..n).take_while(|&i| st.segments[i].file.is_some()).count();
        let gone = st.segments[..sealed].iter().take_while(|s| s.next_offset <= start).count();
        let removed: Vec<i64> = st.segments.drain(..gone).map(|s| s.base_offset).collect();
        trim_cache_below(&mut st, start);
        (start, removed)
    }

    /// Swaps in a rewritten sealed segment at `base` (or drops the segment when `new` is None),
    /// provided it is still the one whose file is `old`. Cached batches up to its end are dropped,
    /// so reads see the cleaned data.
    pub(crate) fn replace_sealed(&self, base: i64, old: &Rc<DmaFile>, new: Option<CleanedSegment>) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(i) = st.segments.iter().position(|s| s.base_offset == base && s.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, old))) else {
            return false;
        };
        if i + 1 >= st.segments.len() {
            return false;
        }
        let end = st.segments[i].next_offset;
        match new {
            Some(c) => {
                let seg = &mut st.segments[i];
                seg.file = Some(c.file);
                // The sendfile handle still points at the replaced file.
                seg.reader = None;
                seg.size = c.size;
                seg.written_size = c.size;
                seg.index = c.index;
            }
            None => {
                st.segments.remove(i);
            }
        }
        trim_cache_below(&mut st, end);
        true
    }

    /// Stops the writer task; the directory can then be removed.
    pub fn close(&self) {
        self.state.borrow_mut().closed = true;
        self.work.notify(usize::MAX);
        self.progress.notify(usize::MAX);
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.get()
    }

    /// Drops up to `want` bytes of the oldest cached batches that are already on the device;
    /// returns the bytes freed. Later reads of them go to the segment file.
    pub(crate) fn evict_cached(&self, want: usize) -> usize {
        evict_front(&mut self.state.borrow_mut(), |freed, _, _| freed < want)
    }

    pub fn is_writer_running(&self) -> bool {
        self.writer_running.get()
    }

    /// A write, sync or roll failed: refuse appends until the writer's backoff ends and cut the
    /// log back to what is on the device (see the module doc).
    fn fail(&self, err: &std::io::Error) {
        let mut st = self.state.borrow_mut();
        let to = st.written_offset;
        let dropped = st.next_offset - to;
        warn!(topic = %self.topic, partition = self.partition, written_offset = to, dropped_records = dropped, "log write failed, appends refused for a while: {err}");
        st.failed = Some(err.to_string());
        let mut unwritten = 0;
        if dropped > 0 {
            st.next_offset = to;
            unwritten = st.pending.drain(..).map(|p| p.bytes.len()).sum();
            st.sync_wanted = st.sync_wanted.min(to);
            // Segments made by a roll whose file was never opened go; the active one is cut back.
            while st.segments.len() > 1 && st.segments.last().is_some_and(|s| s.file.is_none()) {
                st.segments.pop();
            }
            let active = st.segments.last_mut().unwrap();
            active.size = active.written_size;
            active.next_offset = to.max(active.base_offset);
            let rel = (to - active.base_offset).max(0) as u32;
            active.index.truncate(rel);
            // The tail cache holds written batches only (it is filled by the writer), so none
            // of the dropped ones is in it.
            debug_assert!(st.cache.back().is_none_or(|c| c.next_offset <= to));
            st.producers.truncate(to);
            st.epoch += 1;
            let epoch = st.epoch;
            st.rollbacks.push_back((epoch, to));
            if st.rollbacks.len() > ROLLBACK_HISTORY {
                st.rollbacks.pop_front();
            }
        }
        drop(st);
        // The dropped batches no longer wait for the device.
        memory::on_written(unwritten);
        self.progress.notify(usize::MAX);
    }

    /// After a failure: waits (growing backoff), cuts the file back to the writer's logical size
    /// (what a failed write may have left beyond it goes) and takes appends again. Returns false
    /// when the log was closed meanwhile.
    async fn recover(&self, writer: &SegmentWriter) -> bool {
        let mut backoff = FAILURE_BACKOFF_MIN;
        loop {
            glommio::timer::sleep(backoff).await;
            if self.state.borrow().closed {
                return false;
            }
            match writer.file.truncate(writer.size()).await {
                Ok(()) => break,
                Err(e) => warn!(topic = %self.topic, partition = self.partition, "log still failing: {e}"),
            }
            backoff = (backoff * 2).min(FAILURE_BACKOFF_MAX);
        }
        self.state.borrow_mut().failed = None;
        info!(topic = %self.topic, partition = self.partition, "log takes appends again after a failure");
        true
    }
}

/// Drops cached batches that end at or below `offset` (they are only on disk from now on).
fn trim_cache_below(st: &mut LogState, offset: i64) {
    evict_front(st, |_, _, c| c.next_offset <= offset);
}

/// Drops cached batches oldest first while `more(freed so far, bytes cached, batch)` says so.
/// Returns the bytes freed, which are released from the shard's budget.
fn evict_front(st: &mut LogState, mut more: impl FnMut(usize, usize, &CachedBatches) -> bool) -> usize {
    let mut freed = 0;
    while let Some(c) = st.cache.front() {
        if !more(freed, st.cache_bytes, c) {
            break;
        }
        let c = st.cache.pop_front().unwrap();
        st.cache_bytes -= c.charge;
        freed += c.charge;
    }
    memory::on_evicted(freed);
    freed
}

fn new_segment(base_offset: i64, path: PathBuf, file: Option<Rc<DmaFile>>) -> Segment {
    Segment {
        base_offset,
        path,
        file,
        size: 0,
        written_size: 0,
        next_offset: base_offset,
        max_timestamp: -1,
        index: SegmentIndex::default(),
        created: Instant::now(),
        snapshot: None,
        reader: None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Builds the in-memory description of a scanned segment, and replays its batches into the
/// producer state.
fn segment_from_scan(base: i64, path: PathBuf, file: Rc<DmaFile>, scan: &segment::ScanResult, config: &LogConfig, mut producers: Option<&mut ProducerStates>) -> Segment {
    let mut seg = new_segment(base, path, Some(file));
    for &(pos, h) in &scan.batches {
        if let (true, Some(producers)) = (h.producer_id >= 0, producers.as_deref_mut()) {
            let meta = BatchMeta {
                first_seq: h.base_sequence,
                last_seq: producer_state::last_seq(h.base_sequence, h.last_offset_delta + 1),
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
            };
            producers.record(h.producer_id, h.producer_epoch, meta, h.max_timestamp);
        }
        let rel = (h.base_offset - base) as u32;
        seg.index.on_append(rel, pos as u32, h.size, seg.max_timestamp, config.index_interval_bytes);
        seg.max_timestamp = seg.max_timestamp.max(h.max_timestamp);
        seg.next_offset = h.next_offset();
    }
    seg.size = scan.valid_len;
    seg.written_size = scan.valid_len;
    seg
}

/// Opens a sealed segment read-only. With valid index files (which record where it ends) and no
/// producer state to replay, the segment is not read at all; otherwise its batch headers are
/// scanned and missing or invalid indexes are rebuilt.
async fn load_sealed(path: &Path, base: i64, config: &LogConfig, producers: Option<&mut ProducerStates>) -> Result<Segment, StorageError> {
    let file = Rc::new(glommio::io::DmaFile::open(path).await.map_err(std::io::Error::from)?);
    let len = file.file_size().await.map_err(std::io::Error::from)?;
    let loaded = SegmentIndex::load(path, base, len);
    if let (Some((index, seal)), None) = (&loaded, &producers) {
        let mut seg = new_segment(base, path.to_path_buf(), Some(file));
        seg.index = index.clone();
        seg.size = seal.size;
        seg.written_size = seal.size;
        seg.next_offset = seal.next_offset;
        seg.max_timestamp = seal.max_timestamp;
        return Ok(seg);
    }
    let scan = segment::scan(&file, len, false).await?;
    let seg = segment_from_scan(base, path.to_path_buf(), file, &scan, config, producers);
    if loaded.is_none() {
        info!(segment = %path.display(), entries = seg.index.len(), "rebuilt missing or invalid index");
        let seal = SealInfo { size: seg.size, next_offset: seg.next_offset, max_timestamp: seg.max_timestamp };
        seg.index.persist(path, &seal, base)?;
    }
    if scan.trailing > 0 {
        warn!(segment = %path.display(), bytes = scan.trailing, reason = ?scan.stop_reason, "sealed segment has unreadable tail; serving up to it");
    }
    Ok(seg)
}

/// Recovers the active segment: validates every batch by CRC and truncates what follows the
/// last valid one.
async fn recover_active(path: &Path, base: i64, config: &LogConfig, producers: Option<&mut ProducerStates>) -> Result<(Segment, SegmentWriter), StorageError> {
    let file = Rc::new(segment::open_rw(path).await?);
    let len = file.file_size().await.map_err(std::io::Error::from)?;
    let scan = segment::scan(&file, len, true).await?;
    if scan.trailing > 0 {
        // Zeros after the last batch are the block padding and the preallocated space
        // (fallocate) of the active segment: normal after any stop. Anything else (a torn or
        // corrupt batch) is logged.
        let reason = match scan.stop_reason.as_deref() {
            Some("block padding") => None,
            Some(reason) => Some(reason),
            None => Some("unreadable bytes after the last batch"),
        };
        match reason {
            None => debug!(segment = %path.display(), bytes = scan.trailing, "recovery cut the block padding and preallocated space"),
            Some(reason) => warn!(
                segment = %path.display(),
                valid_bytes = scan.valid_len,
                truncated_bytes = scan.trailing,
                "recovery truncated a damaged tail: {reason}"
            ),
        }
        file.truncate(scan.valid_len).await.map_err(std::io::Error::from)?;
        file.fdatasync().await.map_err(std::io::Error::from)?;
    }
    index::remove_index_files(path);
    let seg = segment_from_scan(base, path.to_path_buf(), file.clone(), &scan, config, producers);
    let writer = SegmentWriter::resume(file, base, scan.valid_len).await?;
    Ok((seg, writer))
}

/// What planning a sendfile range of a segment needs, taken from the segment under the log's
/// borrow: the range's batch headers are then read without it, through io_uring.
struct SendPlan {
    file: Arc<std::fs::File>,
    offset: i64,
    max_bytes: usize,
    /// The batch boundary to walk from (the index entry at or before `offset`).
    from: u64,
    /// The segment's written end.
    end: u64,
    /// The last index position at or before `from + max_bytes`: a batch boundary the second walk
    /// may jump to (at or before the one `start + max_bytes` would give, so the result is the same).
    jump: Option<u64>,
}

impl SendPlan {
    fn new(seg: &mut Segment, offset: i64, max_bytes: usize) -> Result<SendPlan, StorageError> {
        let rel = (offset.max(seg.base_offset) - seg.base_offset) as u32;
        let from = seg.index.lookup_offset(rel).map(|e| e.position as u64).unwrap_or(0);
        if seg.reader.is_none() {
            // open(2) of a segment this process created or opened: a path lookup in the dentry
            // cache, no data read.
            let reader = std::fs::File::open(&seg.path)?;
            // Consumers read segments front to back: a larger kernel read-ahead window.
            // SAFETY: a hint about an open descriptor; no memory is passed.
            unsafe {
                libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&reader), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
            }
            seg.reader = Some(Arc::new(reader));
        }
        Ok(SendPlan {
            file: seg.reader.clone().expect("opened above"),
            offset,
            max_bytes,
            from,
            end: seg.written_size,
            jump: seg.index.last_position_at_or_before(from.saturating_add(max_bytes as u64)),
        })
    }

    /// The sendfile range: whole batches from the one containing `offset`, up to `max_bytes`
    /// (at least one), found from batch headers read with io_uring (buffered reads: a page-cache
    /// miss is waited for by the kernel's workers, not by this shard's thread).
    async fn run(self) -> Result<SendData, StorageError> {
        let headers = HeaderReader::new(&self.file)?;
        let range = self.find_range(&headers).await;
        headers.close().await;
        let Some((start, stop)) = range? else { return Ok(SendData::default()) };
        let len = (stop - start) as usize;
        // Start reading it from the device now, so sendfile finds it in the page cache, and read
        // ahead of the consumer: the range after it (as long, at least COLD_READ_AHEAD_BYTES) is
        // what its next fetch asks for, and the disk reads it while this one is sent.
        let ahead = (len as u64).max(COLD_READ_AHEAD_BYTES).min(self.end - stop);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.file);
        // SAFETY: posix_fadvise only takes a hint about an open descriptor; no memory is passed.
        unsafe {
            libc::posix_fadvise(fd, start as i64, (len as u64 + ahead) as i64, libc::POSIX_FADV_WILLNEED);
        }
        Ok(SendData { chunks: vec![LogChunk::File(FileRange { file: self.file, pos: start, len })], bytes: len })
    }

    /// (start, stop) of the range, `None` when no batch reaches past `offset`.
    async fn find_range(&self, headers: &HeaderReader) -> Result<Option<(u64, u64)>, StorageError> {
        let mut start = None;
        headers
            .walk(self.from, self.end, |pos, _size, next| {
                if next > self.offset {
                    start = Some(pos);
                    return false;
                }
                true
            })
            .await?;
        let Some(start) = start else { return Ok(None) };
        // Jump to the last index point within the budget, then walk the few headers after it.
        let target = start.saturating_add(self.max_bytes as u64);
        if target >= self.end {
            return Ok(Some((start, self.end)));
        }
        let jump = self.jump.filter(|&p| p > start).unwrap_or(start);
        let mut stop = jump;
        headers
            .walk(jump, self.end, |pos, size, _| {
                if pos + size as u64 <= target || pos == start {
                    stop = pos + size as u64;
                    true
                } else {
                    false
                }
            })
            .await?;
        Ok(Some((start, stop)))
    }
}

/// Reads `len` bytes of a segment at `pos` through io_uring, like [`HeaderReader`] (for a
/// connection that must copy part of a file range instead of sendfile).
pub async fn read_range(file: &std::fs::File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let reader = HeaderReader::new(file)?;
    let mut out = Vec::with_capacity(len);
    let mut res = Ok(());
    while out.len() < len {
        match reader.0.read_at(pos + out.len() as u64, len - out.len()).await {
            Ok(b) if b.is_empty() => {
                res = Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment file shorter than its index says"));
                break;
            }
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => {
                res = Err(e.into());
                break;
            }
        }
    }
    reader.close().await;
    res.map(|_| out)
}

/// Batch headers of a segment read through glommio's io_uring (a buffered file on a duplicate of
/// the sendfile descriptor), so that reading them never blocks the shard's thread.
struct HeaderReader(glommio::io::BufferedFile);

impl HeaderReader {
    fn new(file: &std::fs::File) -> std::io::Result<HeaderReader> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: dup of an open descriptor; takes no memory.
        let fd = unsafe { libc::dup(file.as_raw_fd()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nothing else; the BufferedFile takes it.
        Ok(HeaderReader(unsafe { glommio::io::BufferedFile::from_raw_fd(fd) }))
    }

    async fn close(self) {
        let _ = self.0.close().await;
    }

    /// Calls `f(position, size, next_offset)` for each batch from `pos` (a batch boundary) until
    /// `f` returns false or `end` is reached. Reads headers only, a window at a time; a malformed
    /// header ends the walk (recovery guarantees whole batches below `end`).
    async fn walk(&self, mut pos: u64, end: u64, mut f: impl FnMut(u64, usize, i64) -> bool) -> std::io::Result<()> {
        while pos < end {
            let want = ((end - pos) as usize).min(HEADER_WINDOW);
            let buf = self.0.read_at(pos, want).await.map_err(std::io::Error::from)?;
            let n = buf.len();
            if n < batch::HEADER_PREFIX {
                return Ok(());
            }
            let mut at = 0usize;
            while at + batch::HEADER_PREFIX <= n {
                let Some((size, next)) = batch::peek_extent(&buf[at..]) else { return Ok(()) };
                let p = pos + at as u64;
                if p + size as u64 > end {
                    return Ok(());
                }
                if !f(p, size, next) {
                    return Ok(());
                }
                at += size;
            }
            pos += at as u64;
        }
        Ok(())
    }
}

fn read_cache(cache: &VecDeque<CachedBatches>, offset: i64, max_bytes: usize) -> ReadData {
    let (chunks, bytes) = cached_slices(cache, offset, max_bytes, |b| b);
    ReadData { chunks, bytes }
}

/// Whole cached batches from the one containing `offset`, up to `max_bytes` (at least one), as
/// slices of the written buffers wrapped by `wrap`.
fn cached_slices<T>(cache: &VecDeque<CachedBatches>, offset: i64, max_bytes: usize, wrap: impl Fn(Bytes) -> T) -> (Vec<T>, usize) {
    let mut out = (Vec::new(), 0usize);
    let first = cache.partition_point(|c| c.next_offset <= offset);
    for c in cache.iter().skip(first) {
        // The batches taken from one entry are contiguous: one slice for all of them.
        let mut run: Option<(usize, usize)> = None;
        let mut full = false;
        for (pos, h) in batch::iter_headers(&c.bytes) {
            if h.next_offset() <= offset {
                continue;
            }
            if out.1 > 0 && out.1 + h.size > max_bytes {
                full = true;
                break;
            }
            run = Some((run.map_or(pos, |r| r.0), pos + h.size));
            out.1 += h.size;
        }
        if let Some((from, to)) = run {
            out.0.push(wrap(c.bytes.slice(from..to)));
        }
        if full {
            break;
        }
    }
    out
}

async fn read_file(file: &DmaFile, start: u64, end: u64, offset: i64, max_bytes: usize) -> Result<ReadData, StorageError> {
    let mut pos = start;
    let mut out = ReadData::default();
    while pos < end {
        let want = ((end - pos) as usize).min(max_bytes.saturating_sub(out.bytes) + READ_SLACK);
        let rr = file.read_at(pos, want).await.map_err(std::io::Error::from)?;
        let buf: &[u8] = &rr;
        let mut at = 0usize;
        let mut first_uncovered = None;
        let mut keep_from = None;
        for (p, h) in batch::iter_headers(buf) {
            at = p + h.size;
            if h.next_offset() <= offset {
                continue;
            }
            if out.bytes > 0 && out.bytes + h.size > max_bytes {
                if let Some(k) = keep_from {
                    out.chunks.push(Bytes::copy_from_slice(&buf[k..p]));
                }
                return Ok(out);
            }
            keep_from.get_or_insert(p);
            out.bytes += h.size;
        }
        if let Some(k) = keep_from {
            out.chunks.push(Bytes::copy_from_slice(&buf[k..at]));
        }
        if at == 0 {
            // The next batch is larger than what was read: read exactly that batch.
            match batch::peek_batch_size(buf) {
                Some(size) if pos + size as u64 <= end && size > buf.len() => {
                    first_uncovered = Some(size);
                }
                _ => break,
            }
        }
        if let Some(size) = first_uncovered {
            let rr = file.read_at(pos, size).await.map_err(std::io::Error::from)?;
            let h = batch::parse_header(&rr).map_err(|e| StorageError::Failed(e.to_string()))?;
            if h.next_offset() > offset {
                out.bytes += h.size;
                out.chunks.push(Bytes::copy_from_slice(&rr[..h.size]));
                return Ok(out);
            }
            pos += size as u64;
            continue;
        }
        pos += at as u64;
        if out.bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

/// The writer's fdatasync, reported to `device_watch` when it is slow.
async fn sync_observed(log: &PartitionLog, writer: &SegmentWriter) -> std::io::Result<()> {
    let started = Instant::now();
    let res = writer.sync().await;
    device_watch::observe("fdatasync", &log.topic, log.partition, 0, started);
    res
}

/// The writer task of one partition: drains pending batches into DMA writes (group commit),
/// rolls segments, fdatasyncs when producers wait for durability, trims the tail cache.
async fn run_writer(log: Rc<PartitionLog>, mut writer: SegmentWriter) {
    let mut chunks: Vec<Bytes> = Vec::new();
    // The base offset of each chunk's first batch, stamped in the aligned buffer.
    let mut bases: Vec<i64> = Vec::new();
    loop {
        let listener = log.work.listen();
        let (segment_base, last_next, want_sync, closed) = {
            let mut st = log.state.borrow_mut();
            chunks.clear();
            bases.clear();
            let mut bytes = 0usize;
            let mut seg_base = None;
            let mut last_next = st.written_offset;
            while let Some(p) = st.pending.front() {
                if *seg_base.get_or_insert(p.segment_base) != p.segment_base
                    || (bytes > 0 && bytes + p.bytes.len() > MAX_WRITE_BYTES)
                {
                    break;
                }
                let p = st.pending.pop_front().unwrap();
                bytes += p.bytes.len();
                last_next = p.next_offset;
                bases.push(p.base_offset);
                chunks.push(p.bytes);
            }
            let want_sync = st.sync_wanted > st.durable_offset;
            (seg_base, last_next, want_sync, st.closed)
        };
        if closed {
            break;
        }
        let Some(segment_base) = segment_base else {
            if want_sync {
                if let Err(e) = sync_observed(&log, &writer).await {
                    log.fail(&e);
                    if log.recover(&writer).await {
                        continue;
                    }
                    break;
                }
                let mut st = log.state.borrow_mut();
                st.durable_offset = st.written_offset;
                drop(st);
                log.progress.notify(usize::MAX);
                continue;
            }
            listener.await;
            continue;
        };
        drop(listener);
        if segment_base != writer.base_offset {
            match roll(&log, &writer, segment_base).await {
                Ok(w) => writer = w,
                Err(e) => {
                    memory::on_written(chunks.iter().map(|c| c.len()).sum());
                    log.fail(&e);
                    if log.recover(&writer).await {
                        continue;
                    }
                    break;
                }
            }
        }
        let bytes_written: usize = chunks.iter().map(|c| c.len()).sum();
        let first_base = bases[0];
        let started = Instant::now();
        let res = writer
            .append_kept(&chunks, |i, part| {
                batch::assign_offsets(part, bases[i], 0);
            })
            .await;
        device_watch::observe("write", &log.topic, log.partition, bytes_written, started);
        // Written or failed, these bytes no longer wait for the device.
        memory::on_written(bytes_written);
        chunks.clear();
        let appended = match res {
            Ok(a) => a,
            Err(e) => {
                log.fail(&e);
                if log.recover(&writer).await {
                    continue;
                }
                break;
            }
        };
        let sync_now = {
            let st = log.state.borrow();
            st.sync_wanted > st.durable_offset
        };
        let mut sync_failed = None;
        if sync_now {
            if let Err(e) = sync_observed(&log, &writer).await {
                sync_failed = Some(e);
            }
        }
        {
            let mut st = log.state.borrow_mut();
            st.written_offset = last_next;
            if sync_now && sync_failed.is_none() {
                st.durable_offset = last_next;
            }
            if let Some(seg) = st.segments.iter_mut().rev().find(|s| s.base_offset == segment_base) {
                seg.written_size = appended.size;
            }
            // The tail cache holds what was just written, as written.
            st.cache_bytes += appended.charge;
            memory::on_cached(appended.charge);
            st.cache.push_back(CachedBatches { base_offset: first_base, next_offset: last_next, bytes: appended.data, charge: appended.charge });
            // Trim the partition's share of the cache.
            let cap = log.config.borrow().tail_cache_bytes;
            evict_front(&mut st, |_, cached, _| cached > cap);
        }
        memory::enforce();
        log.progress.notify(usize::MAX);
        if let Some(e) = sync_failed {
            // Written but not known durable: stays; what is still pending is dropped.
            log.fail(&e);
            if !log.recover(&writer).await {
                break;
            }
        }
    }
    log.writer_running.set(false);
    log.progress.notify(usize::MAX);
}

/// Seals the active segment (truncate padding, fdatasync, write its indexes and the producer
/// snapshot at the new base offset) and opens the next.
async fn roll(log: &PartitionLog, old: &SegmentWriter, new_base: i64) -> std::io::Result<SegmentWriter> {
    let res = try_roll(log, old, new_base).await;
    if res.is_err() {
        // Leave the old segment active, as if the roll had not begun: a later start must not
        // take it for sealed (its index would cut off what is written after this) nor find the
        // new, empty segment after it.
        let old_path = segment::segment_path(&log.dir, old.base_offset);
        index::remove_index_files(&old_path);
        let _ = std::fs::remove_file(segment::segment_path(&log.dir, new_base));
        let _ = std::fs::remove_file(producer_state::snapshot_path(&log.dir, new_base));
        let _ = segment::sync_dir(&log.dir).await;
        // The snapshot was taken out of the new segment; it is dropped with it by `fail`.
    }
    res
}

async fn try_roll(log: &PartitionLog, old: &SegmentWriter, new_base: i64) -> std::io::Result<SegmentWriter> {
    old.seal().await?;
    let (index, seal, old_path, new_path, snapshot) = {
        let mut st = log.state.borrow_mut();
        let seg = st.segments.iter().find(|s| s.base_offset == old.base_offset).expect("sealed segment");
        let seal = SealInfo { size: old.size(), next_offset: seg.next_offset, max_timestamp: seg.max_timestamp };
        let (index, old_path) = (seg.index.clone(), seg.path.clone());
        let new_seg = st.segments.iter_mut().find(|s| s.base_offset == new_base).expect("new segment");
        (index, seal, old_path, new_seg.path.clone(), new_seg.snapshot.take())
    };
    // Index files and the producer snapshot are written and fdatasynced on glommio's blocking
    // pool: on the executor those syncs stalled every partition of the shard at each roll.
    let (dir, old_base) = (log.dir.clone(), old.base_offset);
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            index.persist(&old_path, &seal, old_base)?;
            if let Some(bytes) = snapshot {
                producer_state::write_snapshot(&dir, new_base, &bytes)?;
            }
            Ok(())
        })
        .await?;
    let file = Rc::new(segment::open_rw(&new_path).await?);
    {
        let mut st = log.state.borrow_mut();
        let durable = st.written_offset;
        st.durable_offset = st.durable_offset.max(durable);
        if let Some(seg) = st.segments.iter_mut().find(|s| s.base_offset == new_base) {
            seg.file = Some(file.clone());
        }
    }
    info!(topic = %log.topic, partition = log.partition, base_offset = new_base, "rolled segment");
    SegmentWriter::resume(file, new_base, 0).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn idempotent_batch(pid: i64, epoch: i16, first_seq: i32, n: usize) -> BytesMut {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: first_seq + i as i32,
                timestamp: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::from(vec![b'x'; 200])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None }).unwrap();
        buf
    }

    fn append(log: &PartitionLog, b: BytesMut) -> Result<AppendInfo, StorageError> {
        let summary = batch::validate_batches(&b, 1 << 20).unwrap();
        log.append(b.freeze(), &summary, true)
    }

    fn config() -> LogConfig {
        LogConfig { segment_bytes: 8 * 1024, roll_ms: u64::MAX / 4, index_interval_bytes: 1024, tail_cache_bytes: 0, ..LogConfig::default() }
    }

    /// A temporary data directory holding the non-empty file each executor must open first
    /// (glommio's polled-I/O probe, see docs/glommio.md). Keep the `TempDir` alive.
    fn data_dir_with_probe() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
        let data = dir.path().to_path_buf();
        std::fs::write(data.join("probe"), vec![1u8; 4096]).unwrap();
        (dir, data)
    }

    #[test]
    fn tail_cache_holds_the_written_buffer_and_producer_bytes_stay_untouched() {
        let (_dir, data) = data_dir_with_probe();
        glommio::LocalExecutorBuilder::default()
            .io_memory(segment::IO_MEMORY_BYTES)
            .spawn(move || async move {
                let probe = glommio::io::DmaFile::open(data.join("probe")).await.unwrap();
                let _ = probe.read_at(0, 512).await;
                let config = LogConfig { segment_bytes: 1 << 30, tail_cache_bytes: 64 << 20, ..config() };
                let log = PartitionLog::open("t", 0, data.join("t-0"), config).await.unwrap();
                // A large write: the cache keeps the aligned buffer itself, charged whole.
                let big = idempotent_batch(7, 0, 0, 500).freeze();
                assert!(big.len() > segment::IO_MEMORY_BYTES);
                let info = log.append(big.clone(), &batch::validate_batches(&big, 1 << 20).unwrap(), true).unwrap();
                log.wait_persisted(&info, true).await.unwrap();
                let padded = (big.len() as u64).div_ceil(segment::WRITE_ALIGN) as usize * segment::WRITE_ALIGN as usize;
                assert_eq!(memory::cache_usage().0, padded, "charged the whole aligned buffer");
                let r = log.read(0, 1 << 20).await.unwrap();
                assert_eq!(r.chunks.len(), 1);
                assert_eq!(r.chunks[0].as_ptr() as usize % segment::WRITE_ALIGN as usize, 0, "a slice of the DMA buffer, not a copy");
                // A small write is copied for the cache and charged its length.
                let small = idempotent_batch(7, 0, 500, 3).freeze();
                let info2 = log.append(small.clone(), &batch::validate_batches(&small, 1 << 20).unwrap(), true).unwrap();
                log.wait_persisted(&info2, true).await.unwrap();
                assert_eq!(memory::cache_usage().0, padded + small.len());
                // The offsets are stamped in the written copy; the producer's bytes are as sent.
                assert_eq!(batch::parse_header(&small).unwrap().base_offset, 0);
                let r = log.read(info2.base_offset, 1 << 20).await.unwrap();
                let h = batch::parse_header(&r.chunks[0]).unwrap();
                assert_eq!((h.base_offset, h.last_offset()), (500, 502));
                assert_eq!(&r.chunks[0][8..12], &small[8..12]);
                assert_eq!(&r.chunks[0][16..], &small[16..], "only baseOffset and partitionLeaderEpoch differ");
                // Both writes read back from the cache as one run of batches each.
                let all = log.read(0, 1 << 20).await.unwrap();
                assert_eq!(all.chunks.len(), 2);
                assert_eq!(all.bytes, big.len() + small.len());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// ListOffsets MAX_TIMESTAMP names the record with the greatest timestamp, as Kafka 3.8+, not
    /// the last offset of the segment holding it.
    #[test]
    fn max_timestamp_is_the_first_record_carrying_it() {
        let (_dir, data) = data_dir_with_probe();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let probe = glommio::io::DmaFile::open(data.join("probe")).await.unwrap();
                let _ = probe.read_at(0, 512).await;
                let log = PartitionLog::open("t", 0, data.join("t-0"), config()).await.unwrap();
                assert_eq!(log.max_timestamp().await.unwrap(), None);
                // Timestamps 1000..=1004 at offsets 0..=4, then 1000..=1002 at offsets 5..=7.
                for (seq, n) in [(0, 5), (5, 3)] {
                    let info = append(&log, idempotent_batch(9, 0, seq, n)).unwrap();
                    log.wait_persisted(&info, true).await.unwrap();
                }
                assert_eq!(log.max_timestamp().await.unwrap(), Some((1004, 4)));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn producer_state_survives_restart_from_snapshot_without_rescanning() {
        let (_dir, data) = data_dir_with_probe();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                // Open a non-empty file first (glommio's polled-I/O probe).
                let probe = glommio::io::DmaFile::open(data.join("probe")).await.unwrap();
                let _ = probe.read_at(0, 512).await;
                let pdir = data.join("t-0");
                let log = PartitionLog::open("t", 0, pdir.clone(), config()).await.unwrap();
                let mut seq = 0;
                let mut last = None;
                for _ in 0..60 {
                    let info = append(&log, idempotent_batch(42, 0, seq, 5)).unwrap();
                    log.wait_persisted(&info, true).await.unwrap();
                    last = Some((seq, info.base_offset));
                    seq += 5;
                }
                let end = log.next_offset();
                assert_eq!(end, 300);
                log.close();
                while log.is_writer_running() {
                    glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                }
                drop(log);
                let segments = std::fs::read_dir(&pdir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log")).count();
                assert!(segments > 3, "the test needs several segments, got {segments}");
                assert!(!producer_state::list_snapshots(&pdir).is_empty(), "a snapshot is written at roll");

                let scans_before = segment::SEGMENT_SCANS.load(std::sync::atomic::Ordering::Relaxed);
                let log = PartitionLog::open("t", 0, pdir.clone(), config()).await.unwrap();
                let scans = segment::SEGMENT_SCANS.load(std::sync::atomic::Ordering::Relaxed) - scans_before;
                assert_eq!(scans, 1, "only the active segment is read at start");
                assert_eq!(log.next_offset(), end);
                // A retry of the last batch is recognised after the restart.
                let (last_seq, last_base) = last.unwrap();
                let dup = append(&log, idempotent_batch(42, 0, last_seq, 5)).unwrap();
                assert!(dup.duplicate);
                assert_eq!(dup.base_offset, last_base);
                assert_eq!(log.next_offset(), end);
                // Out of order and stale epoch are refused; the next sequence is accepted.
                assert!(matches!(append(&log, idempotent_batch(42, 0, seq + 5, 5)), Err(StorageError::Refused(45))));
                let next = append(&log, idempotent_batch(42, 0, seq, 5)).unwrap();
                assert_eq!(next.base_offset, end);
                // Every batch reads back with its offsets after the restart.
                let data = log.read(0, 1 << 20).await.unwrap();
                let first = batch::parse_header(&data.chunks[0]).unwrap();
                assert_eq!(first.base_offset, 0);
                let mid = log.read(153, 1 << 20).await.unwrap();
                let h = batch::parse_header(&mid.chunks[0]).unwrap();
                assert!(h.base_offset <= 153 && h.last_offset() >= 153);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
