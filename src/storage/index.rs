//! Sparse offset and time index of one segment.
//!
//! Owns the in-memory index entries and their on-disk files (`.index`, `.timeindex`). Knows
//! nothing of batches beyond offsets, positions and timestamps.

use std::path::Path;

/// One sparse index point: the batch starting at `rel_offset` (relative to the segment base)
/// begins at byte `position`; every record before it has a timestamp <= `max_ts_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub rel_offset: u32,
    pub position: u32,
    pub max_ts_before: i64,
}

/// Bytes per entry in the `.index` file: relative offset (u32) + position (u32), as Kafka.
const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes per entry in the `.timeindex` file: timestamp (i64) + relative offset (u32), as Kafka.
const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Default, Clone)]
pub struct SegmentIndex {
    entries: Vec<IndexEntry>,
    bytes_since_last: usize,
}

impl SegmentIndex {
    /// Records a batch appended at `position`; adds an entry every `interval` bytes.
    pub fn on_append(&mut self, rel_offset: u32, position: u32, size: usize, max_ts_before: i64, interval: usize) {
        if self.entries.is_empty() || self.bytes_since_last >= interval {
            if let Some(last) = self.entries.last() {
                assert!(last.rel_offset < rel_offset && last.position < position, "index must grow");
            }
            self.entries.push(IndexEntry { rel_offset, position, max_ts_before });
            self.bytes_since_last = 0;
        }
        self.bytes_since_last += size;
    }

    /// Forgets the entries at or after `rel_offset` (the log was cut back there); the next
    /// append adds an entry.
    pub fn truncate(&mut self, rel_offset: u32) {
        let keep = self.entries.partition_point(|e| e.rel_offset < rel_offset);
        self.entries.truncate(keep);
        self.bytes_since_last = usize::MAX / 2;
    }

    /// The entry with the greatest relative offset <= `rel`, if any.
    pub fn lookup_offset(&self, rel: u32) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.rel_offset <= rel);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The greatest entry position <= `pos` (a batch boundary), if any.
    pub fn last_position_at_or_before(&self, pos: u64) -> Option<u64> {
        let i = self.entries.partition_point(|e| e.position as u64 <= pos);
        i.checked_sub(1).map(|i| self.entries[i].position as u64)
    }

    /// The last entry before which every record has a timestamp < `ts`.
    pub fn lookup_time(&self, ts: i64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.max_ts_before < ts);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes `.index` and `.timeindex` beside a sealed segment. A last entry records where the
    /// segment ends (its size, next offset and greatest timestamp), so a later start can open the
    /// segment without reading it.
    pub fn persist(&self, log_path: &Path, seal: &SealInfo, base_offset: i64) -> std::io::Result<()> {
        let n = self.entries.len() + 1;
        let mut off = Vec::with_capacity(n * OFFSET_ENTRY_LEN);
        let mut time = Vec::with_capacity(n * TIME_ENTRY_LEN);
        let sentinel = IndexEntry {
            rel_offset: (seal.next_offset - base_offset) as u32,
            position: seal.size as u32,
            max_ts_before: seal.max_timestamp,
        };
        for e in self.entries.iter().chain(std::iter::once(&sentinel)) {
            off.extend_from_slice(&e.rel_offset.to_be_bytes());
            off.extend_from_slice(&e.position.to_be_bytes());
            time.extend_from_slice(&e.max_ts_before.to_be_bytes());
            time.extend_from_slice(&e.rel_offset.to_be_bytes());
        }
        write_synced(&log_path.with_extension("index"), &off)?;
        write_synced(&log_path.with_extension("timeindex"), &time)
    }

    /// Loads the index files of a sealed segment of `file_size` bytes. Returns `None` when they
    /// are missing, disagree with each other, or do not end exactly at the file's end (the caller
    /// then rebuilds them by reading the segment).
    pub fn load(log_path: &Path, base_offset: i64, file_size: u64) -> Option<(SegmentIndex, SealInfo)> {
        let off = std::fs::read(log_path.with_extension("index")).ok()?;
        let time = std::fs::read(log_path.with_extension("timeindex")).ok()?;
        if off.len() % OFFSET_ENTRY_LEN != 0 || time.len() % TIME_ENTRY_LEN != 0 {
            return None;
        }
        let n = off.len() / OFFSET_ENTRY_LEN;
        if n == 0 || n != time.len() / TIME_ENTRY_LEN {
            return None;
        }
        let mut entries: Vec<IndexEntry> = Vec::with_capacity(n);
        for i in 0..n {
            let o = &off[i * OFFSET_ENTRY_LEN..];
            let t = &time[i * TIME_ENTRY_LEN..];
            let rel_offset = u32::from_be_bytes(o[0..4].try_into().unwrap());
            let position = u32::from_be_bytes(o[4..8].try_into().unwrap());
            let max_ts_before = i64::from_be_bytes(t[0..8].try_into().unwrap());
            let trel = u32::from_be_bytes(t[8..12].try_into().unwrap());
            if trel != rel_offset || position as u64 > file_size {
                return None;
            }
            if let Some(prev) = entries.last() {
                if prev.rel_offset >= rel_offset || prev.position >= position {
                    return None;
                }
            }
            entries.push(IndexEntry { rel_offset, position, max_ts_before });
        }
        let sentinel = entries.pop()?;
        if sentinel.position as u64 != file_size || entries.first().is_some_and(|e| e.position != 0) || (entries.is_empty() && file_size > 0) {
            return None;
        }
        let seal = SealInfo { size: file_size, next_offset: base_offset + sentinel.rel_offset as i64, max_timestamp: sentinel.max_ts_before };
        Some((SegmentIndex { entries, bytes_since_last: usize::MAX / 2 }, seal))
    }
}

/// The entries of a segment's index files as stored, without any check (for `strand verify`).
/// `None` for a file that does not exist; the `usize` counts bytes left over after the last whole
/// entry.
#[derive(Debug, Default)]
pub struct RawIndex {
    pub offsets: Option<(Vec<(u32, u32)>, usize)>,
    pub times: Option<(Vec<(i64, u32)>, usize)>,
}

pub fn read_raw(log_path: &Path) -> std::io::Result<RawIndex> {
    fn read_opt(p: &Path) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    let offsets = read_opt(&log_path.with_extension("index"))?.map(|b| {
        let v = b
            .chunks_exact(OFFSET_ENTRY_LEN)
            .map(|c| (u32::from_be_bytes(c[0..4].try_into().unwrap()), u32::from_be_bytes(c[4..8].try_into().unwrap())))
            .collect();
        (v, b.len() % OFFSET_ENTRY_LEN)
    });
    let times = read_opt(&log_path.with_extension("timeindex"))?.map(|b| {
        let v = b
            .chunks_exact(TIME_ENTRY_LEN)
            .map(|c| (i64::from_be_bytes(c[0..8].try_into().unwrap()), u32::from_be_bytes(c[8..12].try_into().unwrap())))
            .collect();
        (v, b.len() % TIME_ENTRY_LEN)
    });
    Ok(RawIndex { offsets, times })
}

/// Where a sealed segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealInfo {
    pub size: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Removes the index files of a segment.
pub fn remove_index_files(log_path: &Path) {
    let _ = std::fs::remove_file(log_path.with_extension("index"));
    let _ = std::fs::remove_file(log_path.with_extension("timeindex"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_lookup_and_roundtrip() {
        let mut idx = SegmentIndex::default();
        let mut pos = 0u32;
        for i in 0..100u32 {
            idx.on_append(i * 10, pos, 1000, i as i64 * 100 - 1, 4096);
            pos += 1000;
        }
        assert_eq!(idx.len(), 20); // every 5th batch
        assert_eq!(idx.lookup_offset(0).unwrap().position, 0);
        let e = idx.lookup_offset(57).unwrap();
        assert!(e.rel_offset <= 57 && e.rel_offset >= 10);
        let t = idx.lookup_time(1000).unwrap();
        assert!(t.max_ts_before < 1000);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00000000000000000000.log");
        let seal = SealInfo { size: pos as u64, next_offset: 1000, max_timestamp: 9900 };
        idx.persist(&p, &seal, 0).unwrap();
        let (back, seal_back) = SegmentIndex::load(&p, 0, pos as u64).unwrap();
        assert_eq!(back.entries, idx.entries);
        assert_eq!(seal_back, seal);
        assert!(SegmentIndex::load(&p, 0, 10).is_none(), "positions past the segment end are refused");
        assert!(SegmentIndex::load(&p, 0, pos as u64 + 1).is_none(), "a segment longer than sealed is refused");
    }
}
