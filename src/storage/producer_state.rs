//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! ranges and offsets of its last five batches (Kafka's NUM_BATCHES_TO_RETAIN).
//!
//! Owns deduplication and sequence checking. Rebuilt from the log's batch headers at start.
//! Knows nothing of requests: callers pass header fields and get a verdict.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Batches remembered per producer (hence at most 5 in-flight requests for idempotent clients).
pub const RETAINED_BATCHES: usize = 5;

pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Wall-clock ms of the last append (for expiry of idle producers).
    pub last_append_ms: i64,
}

/// The verdict on a batch from an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// Already in the log: answer with these offsets and write nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Refuse with this Kafka error code.
    Reject(i16),
}

/// The sequence after `seq`, wrapping at i32::MAX as Kafka does.
pub fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The last sequence of a batch of `count` records starting at `first`.
pub fn last_seq(first: i32, count: i32) -> i32 {
    ((first as i64 + count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProducerStates {
    map: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, last: i32) -> SequenceCheck {
        let Some(e) = self.map.get(&producer_id) else {
            // A producer this partition has not seen (new, or expired after long inactivity).
            return SequenceCheck::Accept;
        };
        if epoch < e.epoch {
            return SequenceCheck::Reject(INVALID_PRODUCER_EPOCH);
        }
        if epoch > e.epoch {
            // A bumped epoch restarts sequences at 0.
            return if first_seq == 0 { SequenceCheck::Accept } else { SequenceCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER) };
        }
        if let Some(b) = e.batches.iter().find(|b| b.first_seq == first_seq && b.last_seq == last) {
            return SequenceCheck::Duplicate { base_offset: b.base_offset, last_offset: b.last_offset };
        }
        let Some(latest) = e.batches.back() else { return SequenceCheck::Accept };
        if first_seq == next_seq(latest.last_seq) {
            return SequenceCheck::Accept;
        }
        let oldest = e.batches.front().map(|b| b.first_seq).unwrap_or(0);
        if first_seq < latest.last_seq && first_seq >= oldest.min(latest.last_seq) {
            SequenceCheck::Reject(DUPLICATE_SEQUENCE_NUMBER)
        } else {
            SequenceCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        }
    }

    /// Records an appended batch (also used when replaying the log).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta, now_ms: i64) {
        let e = self.map.entry(producer_id).or_default();
        if epoch != e.epoch {
            e.batches.clear();
            e.epoch = epoch;
        }
        if e.batches.len() == RETAINED_BATCHES {
            e.batches.pop_front();
        }
        e.batches.push_back(batch);
        e.last_append_ms = e.last_append_ms.max(now_ms);
    }

    /// Forgets every batch at or after `offset` (the log was cut back to `offset` after a failed
    /// write). Batches already pushed out of the retained window are not restored.
    pub fn truncate(&mut self, offset: i64) {
        for e in self.map.values_mut() {
            while e.batches.back().is_some_and(|b| b.last_offset >= offset) {
                e.batches.pop_back();
            }
        }
    }

    /// Forgets producers idle for longer than `max_idle_ms` (`producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| now_ms - e.last_append_ms <= max_idle_ms);
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Serialized state, for a snapshot file.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("producer state serializes")
    }

    pub fn from_bytes(b: &[u8]) -> Option<ProducerStates> {
        serde_json::from_slice(b).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Snapshot file of the producer state covering every batch below `offset`, as Kafka names them.
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Offsets of the snapshot files in `dir`, ascending.
pub fn list_snapshots(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| n.strip_suffix(".snapshot").filter(|s| s.len() == 20).and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Writes a snapshot durably and keeps only the two newest.
pub fn write_snapshot(dir: &Path, offset: i64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("snapshot.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    let all = list_snapshots(dir);
    for old in all.iter().take(all.len().saturating_sub(2)) {
        let _ = std::fs::remove_file(snapshot_path(dir, *old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, last: i32, off: i64) -> BatchMeta {
        BatchMeta { first_seq: first, last_seq: last, base_offset: off, last_offset: off + (last - first) as i64 }
    }

    #[test]
    fn dedup_and_ordering() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 9), SequenceCheck::Accept);
        s.record(7, 0, b(0, 9, 100), 1);
        assert_eq!(s.check(7, 0, 0, 9), SequenceCheck::Duplicate { base_offset: 100, last_offset: 109 });
        assert_eq!(s.check(7, 0, 10, 19), SequenceCheck::Accept);
        assert_eq!(s.check(7, 0, 11, 19), SequenceCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(7, 0, 30, 39), SequenceCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER));
        for i in 1..=5 {
            s.record(7, 0, b(i * 10, i * 10 + 9, 100 + i as i64 * 10), 2);
        }
        // Only the last five are remembered.
        assert_eq!(s.check(7, 0, 10, 19), SequenceCheck::Duplicate { base_offset: 110, last_offset: 119 });
        assert_eq!(s.check(7, 0, 0, 9), SequenceCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(7, 1, 0, 4), SequenceCheck::Accept);
        assert_eq!(s.check(7, 1, 5, 9), SequenceCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER));
        s.record(7, 1, b(0, 4, 200), 3);
        assert_eq!(s.check(7, 0, 60, 69), SequenceCheck::Reject(INVALID_PRODUCER_EPOCH));
        assert_eq!(last_seq(i32::MAX, 2), 0);
        assert_eq!(next_seq(i32::MAX), 0);
        assert_eq!(s.expire(10, 5), 1);
        assert!(s.is_empty());
    }
}
