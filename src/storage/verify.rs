//! `strand verify`: an offline check of every partition log under a data directory.
//!
//! Owns nothing on disk and writes nothing: it reads segments, indexes and producer snapshots
//! with plain buffered I/O (run it on a stopped broker) and reports what it finds. It reuses the
//! batch framing of [`super::batch`] and the index file layout of [`super::index`].
//!
//! Every finding has a severity:
//! - `Info`: normal or harmless (offset gaps, which compaction may leave; block padding after the
//!   last batch of the active segment; index files left beside the active segment).
//! - `Repairable`: what a crash leaves and start-up repairs without losing acknowledged data: a
//!   torn or corrupt tail of the *active* segment with nothing valid after it (start-up truncates
//!   it), zeros after the last batch beyond the block padding (a preallocated or torn write),
//!   missing or unreadable index files of a sealed segment (start-up rebuilds them by scanning),
//!   an unreadable producer snapshot (start-up replays the log instead).
//! - `Corrupt`: anything else: a bad batch in a sealed segment, a bad batch in the active
//!   segment followed by valid ones (truncation would lose them), offsets that overlap or go
//!   backwards, a base offset that disagrees with the file name, index entries that start-up
//!   would trust but that point to the wrong place.
//!
//! Exit codes of the command: 0 clean (info only), 3 repairable damage only, 2 corruption.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::batch::{self, BatchHeader, ATTR_CONTROL, BATCH_HEADER_LEN, BATCH_LOG_OVERHEAD};
use super::index::{self, SegmentIndex};
use super::producer_state::{self, ProducerStates};
use super::segment::WRITE_ALIGN;

/// Directory of the internal group logs (see `groups::store::GROUPS_DIR`; storage does not
/// depend on groups, so the name is repeated here).
const GROUPS_DIR: &str = "__groups";
/// Read buffer used while walking a segment.
const READ_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Repairable,
    Corrupt,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Repairable => "REPAIRABLE",
            Severity::Corrupt => "CORRUPT",
        }
    }
}

/// One thing found, with where: the file and, when it applies, the byte position in it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub file: PathBuf,
    pub position: Option<u64>,
    pub message: String,
}

/// What was found in one partition directory.
#[derive(Debug, Default)]
pub struct PartitionReport {
    /// Relative name, e.g. `orders-3` or `__groups/shard-0`.
    pub name: String,
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    /// Bytes of valid batches.
    pub bytes: u64,
    pub findings: Vec<Finding>,
}

impl PartitionReport {
    fn add(&mut self, severity: Severity, file: &Path, position: Option<u64>, message: impl Into<String>) {
        self.findings.push(Finding { severity, file: file.to_path_buf(), position, message: message.into() });
    }

    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub partitions: Vec<PartitionReport>,
}

impl Report {
    pub fn worst(&self) -> Option<Severity> {
        self.partitions.iter().filter_map(|p| p.worst()).max()
    }

    /// 0 clean, 3 repairable damage only, 2 corruption.
    pub fn exit_code(&self) -> u8 {
        match self.worst() {
            None | Some(Severity::Info) => 0,
            Some(Severity::Repairable) => 3,
            Some(Severity::Corrupt) => 2,
        }
    }

    /// The human-readable report: one line per partition, its findings, and a total.
    pub fn render(&self, data_dir: &Path) -> String {
        let mut out = String::new();
        let (mut segs, mut batches, mut records, mut bytes) = (0usize, 0u64, 0u64, 0u64);
        for p in &self.partitions {
            segs += p.segments;
            batches += p.batches;
            records += p.records;
            bytes += p.bytes;
            let offsets = match (p.first_offset, p.last_offset) {
                (Some(a), Some(b)) => format!("offsets {a}..={b}"),
                _ => "empty".to_string(),
            };
            let status = match p.worst() {
                None | Some(Severity::Info) => "ok",
                Some(Severity::Repairable) => "repairable damage",
                Some(Severity::Corrupt) => "CORRUPT",
            };
            let _ = writeln!(
                out,
                "{}: {} segments, {} batches, {} records, {offsets}, {} bytes: {status}",
                p.name, p.segments, p.batches, p.records, p.bytes
            );
            for f in &p.findings {
                let file = f.file.strip_prefix(data_dir).unwrap_or(&f.file).display();
                match f.position {
                    Some(at) => {
                        let _ = writeln!(out, "  {} {file} at byte {at}: {}", f.severity.label(), f.message);
                    }
                    None => {
                        let _ = writeln!(out, "  {} {file}: {}", f.severity.label(), f.message);
                    }
                }
            }
        }
        let result = match self.worst() {
            None | Some(Severity::Info) => "clean",
            Some(Severity::Repairable) => "repairable damage (start-up repairs it)",
            Some(Severity::Corrupt) => "CORRUPT",
        };
        let _ = writeln!(
            out,
            "total: {} partitions, {segs} segments, {batches} batches, {records} records, {bytes} bytes: {result}",
            self.partitions.len()
        );
        out
    }
}

/// Verifies every partition log under `data_dir`: topic partitions and the internal group logs.
pub fn verify_data_dir(data_dir: &Path) -> std::io::Result<Report> {
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(data_dir)? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if super::is_deleted_dir_name(&name) {
            // A deleted partition's files, removed by the broker (at its next start at the latest).
            continue;
        }
        if name == GROUPS_DIR {
            for g in std::fs::read_dir(e.path())? {
                let g = g?;
                if g.file_type()?.is_dir() {
                    dirs.push((format!("{name}/{}", g.file_name().to_string_lossy()), g.path()));
                }
            }
        } else {
            dirs.push((name, e.path()));
        }
    }
    dirs.sort();
    let mut report = Report::default();
    for (name, dir) in dirs {
        report.partitions.push(verify_partition(&name, &dir)?);
    }
    Ok(report)
}

/// Verifies one partition directory.
pub fn verify_partition(name: &str, dir: &Path) -> std::io::Result<PartitionReport> {
    let mut rep = PartitionReport { name: name.to_string(), ..Default::default() };
    let mut bases: Vec<i64> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let fname = e?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = fname.strip_suffix(".log") {
            match stem.parse::<i64>() {
                Ok(b) if stem.len() == 20 && b >= 0 => bases.push(b),
                _ => rep.add(Severity::Info, &dir.join(&fname), None, "not a segment name (ignored by start-up)"),
            }
        } else if fname.ends_with(".tmp") {
            rep.add(Severity::Info, &dir.join(&fname), None, "left-over temporary file of an interrupted write");
        }
    }
    bases.sort_unstable();
    let mut next_expected: Option<i64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let active = i + 1 == bases.len();
        verify_segment(dir, base, active, &mut next_expected, &mut rep)?;
    }
    rep.segments = bases.len();
    for off in producer_state::list_snapshots(dir) {
        let path = producer_state::snapshot_path(dir, off);
        let ok = std::fs::read(&path).ok().and_then(|b| ProducerStates::from_bytes(&b)).is_some();
        if !ok {
            rep.add(Severity::Repairable, &path, None, "producer snapshot unreadable; start-up replays the log instead");
        } else if !bases.contains(&off) {
            rep.add(Severity::Info, &path, None, "producer snapshot without a segment at its offset (unused)");
        }
    }
    Ok(rep)
}

/// A batch boundary seen while walking a segment, for the index checks.
struct Boundary {
    position: u64,
    base_offset: i64,
    /// Greatest timestamp of the batches before this one in the segment (-1 at the start).
    max_ts_before: i64,
}

/// Outcome of reading one batch at a position.
enum BatchRead {
    Ok(BatchHeader),
    /// Framing and CRC are fine but the contents break a rule.
    Invalid(BatchHeader, String),
    /// Cannot be used (torn, wrong length, CRC mismatch, bad magic); `header` when one could
    /// be parsed from complete bytes (the walk may then go on after it).
    Bad { size: Option<usize>, reason: String, header: Option<BatchHeader> },
}

/// Walks one segment batch by batch, checking framing, CRC32C, offsets and (for sealed
/// segments) its index files. `next_expected` carries the offset after the previous segment.
fn verify_segment(dir: &Path, base: i64, active: bool, next_expected: &mut Option<i64>, rep: &mut PartitionReport) -> std::io::Result<()> {
    let path = super::segment::segment_path(dir, base);
    let file = File::open(&path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(READ_BUFFER_BYTES, file.try_clone()?);
    let mut pos = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut boundaries: Vec<Boundary> = Vec::new();
    let mut max_ts = -1i64;
    let mut valid_end = 0u64;
    let mut first = true;
    while pos < len {
        let read = read_batch(&mut r, len - pos, &mut buf)?;
        let (h, invalid) = match read {
            BatchRead::Ok(h) => (h, None),
            BatchRead::Invalid(h, why) => (h, Some(why)),
            BatchRead::Bad { size: Some(size), reason, header: Some(h) } if valid_batch_at(&file, pos + size as u64, len)? => {
                // Valid batches follow the bad one: not a torn tail.
                let what = if active {
                    "; valid batches follow, which start-up would truncate with it"
                } else {
                    " in a sealed segment"
                };
                rep.add(Severity::Corrupt, &path, Some(pos), format!("{reason}{what}"));
                (h, None)
            }
            BatchRead::Bad { size, reason, .. } => {
                tail_finding(&file, &path, active, pos, len, size, reason, rep)?;
                break;
            }
        };
        if let Some(why) = invalid {
            rep.add(Severity::Corrupt, &path, Some(pos), format!("batch at offset {}: {why}", h.base_offset));
        }
        if first {
            first = false;
            if h.base_offset < base {
                rep.add(Severity::Corrupt, &path, Some(pos), format!("first batch has offset {} below the file's base offset {base}", h.base_offset));
            } else if h.base_offset > base {
                rep.add(Severity::Info, &path, Some(pos), format!("first batch starts at offset {}, after the file's base offset {base}", h.base_offset));
            }
        }
        match *next_expected {
            Some(e) if h.base_offset < e => rep.add(
                Severity::Corrupt,
                &path,
                Some(pos),
                format!("offsets overlap or go backwards: batch at offset {} where >= {e} was expected", h.base_offset),
            ),
            Some(e) if h.base_offset > e => rep.add(Severity::Info, &path, Some(pos), format!("offset gap: {e}..{} missing (compaction or aborted writes)", h.base_offset - 1)),
            _ => {}
        }
        boundaries.push(Boundary { position: pos, base_offset: h.base_offset, max_ts_before: max_ts });
        max_ts = max_ts.max(h.max_timestamp);
        *next_expected = Some(h.next_offset().max(next_expected.unwrap_or(i64::MIN)));
        rep.first_offset.get_or_insert(h.base_offset);
        rep.last_offset = Some(rep.last_offset.map_or(h.last_offset(), |l| l.max(h.last_offset())));
        rep.batches += 1;
        rep.records += h.records_count.max(0) as u64;
        rep.bytes += h.size as u64;
        pos += h.size as u64;
        valid_end = pos;
    }
    let next_offset = next_expected.unwrap_or(base).max(base);
    if active {
        if len > 0 && (path.with_extension("index").exists() || path.with_extension("timeindex").exists()) {
            rep.add(Severity::Info, &path.with_extension("index"), None, "index files beside the active segment (start-up removes them)");
        }
    } else {
        verify_index(&path, base, valid_end.min(len), len, &boundaries, next_offset, max_ts, rep)?;
    }
    Ok(())
}

/// Reads the batch at the reader's position (`remaining` bytes left in the file) into `buf`.
fn read_batch(r: &mut BufReader<File>, remaining: u64, buf: &mut Vec<u8>) -> std::io::Result<BatchRead> {
    let head = (remaining as usize).min(BATCH_HEADER_LEN);
    buf.resize(head, 0);
    r.read_exact(buf)?;
    if head < BATCH_LOG_OVERHEAD {
        return Ok(BatchRead::Bad { size: None, reason: format!("incomplete batch header ({head} bytes)"), header: None });
    }
    let Some(size) = batch::peek_batch_size(buf) else {
        return Ok(BatchRead::Bad { size: None, reason: "invalid batch length".into(), header: None });
    };
    if head < BATCH_HEADER_LEN {
        return Ok(BatchRead::Bad { size: Some(size), reason: format!("incomplete batch header ({head} bytes)"), header: None });
    }
    if size as u64 > remaining {
        return Ok(BatchRead::Bad { size: Some(size), reason: format!("torn batch: {remaining} of {size} bytes present"), header: None });
    }
    buf.resize(size, 0);
    r.read_exact(&mut buf[BATCH_HEADER_LEN..])?;
    let h = match batch::parse_header(buf) {
        Ok(h) => h,
        Err(e) => return Ok(BatchRead::Bad { size: Some(size), reason: e.to_string(), header: None }),
    };
    if !batch::crc_matches(buf) {
        return Ok(BatchRead::Bad { size: Some(size), reason: format!("CRC32C mismatch in batch at offset {}", h.base_offset), header: Some(h) });
    }
    if h.records_count <= 0 || h.last_offset_delta < 0 {
        return Ok(BatchRead::Invalid(h, format!("record count {} / last offset delta {}", h.records_count, h.last_offset_delta)));
    }
    if h.attributes & ATTR_CONTROL == 0 && h.last_offset_delta != h.records_count - 1 {
        return Ok(BatchRead::Invalid(h, format!("{} records but last offset delta {}", h.records_count, h.last_offset_delta)));
    }
    Ok(BatchRead::Ok(h))
}

/// Classifies what follows the last valid batch at `pos`.
#[allow(clippy::too_many_arguments)]
fn tail_finding(
    file: &File,
    path: &Path,
    active: bool,
    pos: u64,
    len: u64,
    size: Option<usize>,
    reason: String,
    rep: &mut PartitionReport,
) -> std::io::Result<()> {
    let tail = len - pos;
    if all_zero(file, pos, len)? {
        let padding_end = pos.div_ceil(WRITE_ALIGN) * WRITE_ALIGN;
        if active && len <= padding_end {
            return Ok(()); // the zero padding of the last written block: normal
        }
        if active {
            // The active segment is preallocated (fallocate) ahead of its data: normal.
            rep.add(Severity::Info, path, Some(pos), format!("{tail} zero bytes after the last batch (preallocated space); start-up cuts them"));
            return Ok(());
        }
        let sev = Severity::Corrupt;
        let what = if active { "start-up truncates them" } else { "a sealed segment should end at its last batch" };
        rep.add(sev, path, Some(pos), format!("{tail} zero bytes after the last batch (preallocated or torn write); {what}"));
        return Ok(());
    }
    // Is there a valid batch after the bad one? Then this is not just a torn tail.
    let followed = match size {
        Some(size) => valid_batch_at(file, pos + size as u64, len)?,
        None => false,
    };
    if active && !followed {
        rep.add(Severity::Repairable, path, Some(pos), format!("torn tail: {reason}; start-up truncates the last {tail} bytes"));
    } else if active {
        rep.add(Severity::Corrupt, path, Some(pos), format!("{reason}; valid batches follow, which start-up would truncate with it ({tail} bytes)"));
    } else {
        rep.add(Severity::Corrupt, path, Some(pos), format!("{reason} in a sealed segment; {tail} bytes from here are not served"));
    }
    Ok(())
}

/// Whether a whole batch with a valid CRC starts at `at` (positional reads: the walk's reader
/// shares the file offset).
fn valid_batch_at(file: &File, at: u64, len: u64) -> std::io::Result<bool> {
    if at + BATCH_HEADER_LEN as u64 > len {
        return Ok(false);
    }
    let mut head = [0u8; BATCH_HEADER_LEN];
    file.read_exact_at(&mut head, at)?;
    let Some(size) = batch::peek_batch_size(&head) else { return Ok(false) };
    if at + size as u64 > len {
        return Ok(false);
    }
    let mut buf = vec![0u8; size];
    file.read_exact_at(&mut buf, at)?;
    Ok(batch::parse_header(&buf).is_ok() && batch::crc_matches(&buf))
}

fn all_zero(file: &File, from: u64, to: u64) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; 64 << 10];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(chunk.len());
        file.read_exact_at(&mut chunk[..n], at)?;
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Checks the `.index` / `.timeindex` of a sealed segment against the batches actually found.
/// What [`SegmentIndex::load`] refuses is rebuilt at start (repairable); what it accepts but is
/// wrong would be trusted (corrupt).
#[allow(clippy::too_many_arguments)]
fn verify_index(
    path: &Path,
    base: i64,
    valid_end: u64,
    file_len: u64,
    boundaries: &[Boundary],
    next_offset: i64,
    max_ts: i64,
    rep: &mut PartitionReport,
) -> std::io::Result<()> {
    let idx_path = path.with_extension("index");
    let time_path = path.with_extension("timeindex");
    let accepted = SegmentIndex::load(path, base, file_len).is_some();
    let sev = if accepted { Severity::Corrupt } else { Severity::Repairable };
    let suffix = if accepted { "; start-up trusts this index" } else { "; start-up rebuilds the index by scanning" };
    let raw = index::read_raw(path)?;
    let mut problems: Vec<(PathBuf, String)> = Vec::new();
    let (Some((offs, off_rest)), Some((times, time_rest))) = (raw.offsets, raw.times) else {
        let missing = if path.with_extension("index").exists() { &time_path } else { &idx_path };
        rep.add(sev, missing, None, format!("index file missing{suffix}"));
        return Ok(());
    };
    if off_rest != 0 {
        problems.push((idx_path.clone(), format!("{off_rest} bytes after the last whole entry")));
    }
    if time_rest != 0 {
        problems.push((time_path.clone(), format!("{time_rest} bytes after the last whole entry")));
    }
    if offs.len() != times.len() {
        problems.push((time_path.clone(), format!("{} entries but the offset index has {}", times.len(), offs.len())));
    }
    if offs.is_empty() {
        problems.push((idx_path.clone(), "no entries (not even the seal record)".into()));
    }
    let n = offs.len().min(times.len());
    for i in 0..n {
        let (rel, position) = offs[i];
        let (ts, trel) = times[i];
        let last = i + 1 == offs.len();
        if trel != rel {
            problems.push((time_path.clone(), format!("entry {i}: relative offset {trel} but the offset index says {rel}")));
        }
        if i > 0 {
            if offs[i - 1].0 >= rel || offs[i - 1].1 >= position {
                problems.push((idx_path.clone(), format!("entry {i}: not increasing ({:?} then {:?})", offs[i - 1], offs[i])));
            }
            if times[i - 1].0 > ts {
                problems.push((time_path.clone(), format!("entry {i}: timestamp {ts} below the previous {}", times[i - 1].0)));
            }
        }
        if last {
            // The seal record: where the segment ends.
            if position as u64 != file_len || position as u64 != valid_end {
                problems.push((idx_path.clone(), format!("seal record says the segment ends at byte {position}; the file has {file_len} bytes, {valid_end} of them valid batches")));
            }
            if base + rel as i64 != next_offset {
                problems.push((idx_path.clone(), format!("seal record says the next offset is {}; the batches end at {next_offset}", base + rel as i64)));
            }
            if ts != max_ts {
                problems.push((time_path.clone(), format!("seal record says the greatest timestamp is {ts}; the batches say {max_ts}")));
            }
            continue;
        }
        match boundaries.binary_search_by_key(&(position as u64), |b| b.position) {
            Err(_) => problems.push((idx_path.clone(), format!("entry {i}: position {position} is not a batch boundary"))),
            Ok(j) => {
                let b = &boundaries[j];
                if base + rel as i64 != b.base_offset {
                    problems.push((idx_path.clone(), format!("entry {i}: offset {} but the batch at byte {position} starts at {}", base + rel as i64, b.base_offset)));
                }
                if ts != b.max_ts_before {
                    problems.push((time_path.clone(), format!("entry {i}: timestamp {ts} but the batches before byte {position} have {} at most", b.max_ts_before)));
                }
            }
        }
    }
    if offs.len() > 1 && offs[0].1 != 0 {
        problems.push((idx_path.clone(), "first entry does not point to the start of the segment".into()));
    }
    for (file, msg) in problems {
        rep.add(sev, &file, None, format!("{msg}{suffix}"));
    }
    if !accepted && rep.findings.iter().all(|f| f.file != idx_path && f.file != time_path) {
        rep.add(Severity::Repairable, &idx_path, None, format!("index refused by start-up{suffix}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::index::SealInfo;
    use bytes::Bytes;
    use kafka_protocol::records::Compression;

    fn encode(n: usize, ts0: i64) -> Vec<u8> {
        let records = (0..n).map(|i| (ts0 + i as i64, Some(Bytes::from(format!("k{i}"))), Bytes::from(vec![b'v'; 100])));
        batch::tests::encode_records(records, Compression::None)
    }

    /// Writes a segment of `batches` batches of 3 records from `base`; seals it (index files)
    /// unless `active`, in which case the file is padded to the write alignment like the writer.
    fn segment(dir: &Path, base: i64, batches: usize, active: bool) -> (PathBuf, Vec<u64>) {
        let mut data = Vec::new();
        let mut idx = SegmentIndex::default();
        let mut positions = Vec::new();
        let mut next = base;
        let mut max_ts = -1;
        for i in 0..batches {
            let mut b = encode(3, 1000 + (base + i as i64) * 10);
            let h = batch::parse_header(&b).unwrap();
            positions.push(data.len() as u64);
            idx.on_append((next - base) as u32, data.len() as u32, b.len(), max_ts, 300);
            max_ts = max_ts.max(h.max_timestamp);
            next = batch::assign_offsets(&mut b, next, 0);
            data.extend_from_slice(&b);
        }
        let path = crate::storage::segment::segment_path(dir, base);
        let size = data.len() as u64;
        if active {
            data.resize(size.div_ceil(WRITE_ALIGN) as usize * WRITE_ALIGN as usize, 0);
        } else {
            idx.persist(&path, &SealInfo { size, next_offset: next, max_timestamp: max_ts }, base).unwrap();
        }
        std::fs::write(&path, &data).unwrap();
        (path, positions)
    }

    fn check(dir: &Path) -> PartitionReport {
        verify_partition("t-0", dir).unwrap()
    }

    fn has(rep: &PartitionReport, sev: Severity, needle: &str) -> bool {
        rep.findings.iter().any(|f| f.severity == sev && f.message.contains(needle))
    }

    #[test]
    fn clean_log_with_padding_is_clean() {
        let d = tempfile::tempdir().unwrap();
        segment(d.path(), 0, 10, false);
        segment(d.path(), 30, 5, true);
        let rep = check(d.path());
        assert_eq!(rep.worst(), None, "{:?}", rep.findings);
        assert_eq!((rep.segments, rep.batches, rep.records), (2, 15, 45));
        assert_eq!((rep.first_offset, rep.last_offset), (Some(0), Some(44)));
    }

    #[test]
    fn torn_tail_of_active_segment_is_repairable() {
        let d = tempfile::tempdir().unwrap();
        segment(d.path(), 0, 10, false);
        let (p, pos) = segment(d.path(), 30, 5, true);
        let cut = pos[4] + 20;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(cut).unwrap();
        let rep = check(d.path());
        assert_eq!(rep.worst(), Some(Severity::Repairable), "{:?}", rep.findings);
        let f = &rep.findings[0];
        assert_eq!((f.file.clone(), f.position), (p.clone(), Some(pos[4])));
        assert!(f.message.contains("torn"), "{}", f.message);
        assert_eq!(rep.batches, 14);
    }

    #[test]
    fn flipped_byte_in_last_batch_is_repairable_but_in_the_middle_is_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let (p, pos) = segment(d.path(), 0, 5, true);
        let mut data = std::fs::read(&p).unwrap();
        data[pos[4] as usize + 80] ^= 0x55;
        std::fs::write(&p, &data).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Repairable, "CRC32C mismatch"), "{:?}", rep.findings);
        data[pos[2] as usize + 80] ^= 0x55;
        std::fs::write(&p, &data).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "valid batches follow"), "{:?}", rep.findings);
        assert_eq!(rep.findings[0].position, Some(pos[2]));
    }

    #[test]
    fn zeros_beyond_padding_are_preallocation_and_in_sealed_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let (sealed, _) = segment(d.path(), 0, 10, false);
        let (p, _) = segment(d.path(), 30, 5, true);
        let mut data = std::fs::read(&p).unwrap();
        data.resize(data.len() + 3 * WRITE_ALIGN as usize, 0);
        std::fs::write(&p, &data).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Info, "zero bytes"), "{:?}", rep.findings);
        let mut s = std::fs::read(&sealed).unwrap();
        s.extend_from_slice(&[0u8; 100]);
        std::fs::write(&sealed, &s).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "zero bytes"), "{:?}", rep.findings);
    }

    #[test]
    fn crc_error_in_sealed_segment_is_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let (p, pos) = segment(d.path(), 0, 10, false);
        segment(d.path(), 30, 1, true);
        let mut data = std::fs::read(&p).unwrap();
        data[pos[9] as usize + 70] ^= 1;
        std::fs::write(&p, &data).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "CRC32C mismatch"), "{:?}", rep.findings);
        assert_eq!(rep.findings[0].position, Some(pos[9]));
        // In the middle of a sealed segment: reported, and the walk goes on after it.
        data[pos[9] as usize + 70] ^= 1;
        data[pos[4] as usize + 70] ^= 1;
        std::fs::write(&p, &data).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "CRC32C mismatch in batch at offset 12 in a sealed segment"), "{:?}", rep.findings);
        assert_eq!(rep.findings.len(), 1, "{:?}", rep.findings);
        assert_eq!(rep.batches, 11);
    }

    #[test]
    fn overlaps_are_corrupt_gaps_are_info() {
        let d = tempfile::tempdir().unwrap();
        segment(d.path(), 0, 10, false);
        segment(d.path(), 40, 2, true); // gap 30..39
        let rep = check(d.path());
        assert_eq!(rep.worst(), Some(Severity::Info), "{:?}", rep.findings);
        assert!(has(&rep, Severity::Info, "gap"));
        let d = tempfile::tempdir().unwrap();
        segment(d.path(), 0, 10, false);
        segment(d.path(), 20, 2, true); // overlaps 20..29
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "overlap"), "{:?}", rep.findings);
        // A file name that disagrees with its first batch.
        let d = tempfile::tempdir().unwrap();
        let (p, _) = segment(d.path(), 0, 2, true);
        std::fs::rename(&p, crate::storage::segment::segment_path(d.path(), 5)).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "below the file's base offset"), "{:?}", rep.findings);
    }

    #[test]
    fn index_problems() {
        // Missing: start-up rebuilds it.
        let d = tempfile::tempdir().unwrap();
        let (p, _) = segment(d.path(), 0, 10, false);
        segment(d.path(), 30, 1, true);
        std::fs::remove_file(p.with_extension("timeindex")).unwrap();
        let rep = check(d.path());
        assert_eq!(rep.worst(), Some(Severity::Repairable), "{:?}", rep.findings);
        assert!(has(&rep, Severity::Repairable, "index file missing"));
        // An entry that points inside a batch: start-up would trust it.
        let d = tempfile::tempdir().unwrap();
        let (p, _) = segment(d.path(), 0, 10, false);
        segment(d.path(), 30, 1, true);
        let mut idx = std::fs::read(p.with_extension("index")).unwrap();
        assert!(idx.len() >= 24, "test needs several index entries");
        let at = u32::from_be_bytes(idx[12..16].try_into().unwrap()) + 7;
        idx[12..16].copy_from_slice(&at.to_be_bytes());
        std::fs::write(p.with_extension("index"), &idx).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "not a batch boundary"), "{:?}", rep.findings);
        // A time index going backwards.
        let d = tempfile::tempdir().unwrap();
        let (p, _) = segment(d.path(), 0, 10, false);
        segment(d.path(), 30, 1, true);
        let mut t = std::fs::read(p.with_extension("timeindex")).unwrap();
        t[12..20].copy_from_slice(&(-5i64).to_be_bytes());
        std::fs::write(p.with_extension("timeindex"), &t).unwrap();
        let rep = check(d.path());
        assert!(rep.worst() >= Some(Severity::Repairable), "{:?}", rep.findings);
        assert!(has(&rep, Severity::Corrupt, "below the previous") || has(&rep, Severity::Corrupt, "timestamp -5"), "{:?}", rep.findings);
        // A seal record that disagrees with the file.
        let d = tempfile::tempdir().unwrap();
        let (p, _) = segment(d.path(), 0, 10, false);
        segment(d.path(), 30, 1, true);
        let mut idx = std::fs::read(p.with_extension("index")).unwrap();
        let n = idx.len();
        idx[n - 8..n - 4].copy_from_slice(&29u32.to_be_bytes());
        std::fs::write(p.with_extension("index"), &idx).unwrap();
        let mut t = std::fs::read(p.with_extension("timeindex")).unwrap();
        let n = t.len();
        t[n - 4..].copy_from_slice(&29u32.to_be_bytes());
        std::fs::write(p.with_extension("timeindex"), &t).unwrap();
        let rep = check(d.path());
        assert!(has(&rep, Severity::Corrupt, "seal record says the next offset is 29"), "{:?}", rep.findings);
    }

    #[test]
    fn report_and_exit_codes() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t-0");
        let g = d.path().join("__groups").join("shard-0");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::create_dir_all(&g).unwrap();
        segment(&t, 0, 3, true);
        segment(&g, 0, 1, true);
        let rep = verify_data_dir(d.path()).unwrap();
        assert_eq!(rep.exit_code(), 0);
        let text = rep.render(d.path());
        assert!(text.contains("__groups/shard-0: 1 segments, 1 batches, 3 records"), "{text}");
        assert!(text.contains("total: 2 partitions, 2 segments, 4 batches, 12 records"), "{text}");
        let p = crate::storage::segment::segment_path(&t, 0);
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(100).unwrap();
        let rep = verify_data_dir(d.path()).unwrap();
        assert_eq!(rep.exit_code(), 3);
        assert!(rep.render(d.path()).contains("REPAIRABLE t-0/00000000000000000000.log at byte 0"), "{}", rep.render(d.path()));
    }
}
