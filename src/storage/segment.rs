//! One segment file: the O_DIRECT writer of the active segment and the batch scanner used by
//! recovery.
//!
//! Owns file I/O on `<base offset>.log` files. All writes are aligned: the partial last block is
//! kept in memory and rewritten with the next write, so a write never needs a read.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use super::batch::{self, BatchHeader, BATCH_HEADER_LEN};

/// Alignment of every DMA write (a multiple of any logical block size we meet).
pub const WRITE_ALIGN: u64 = 4096;
/// Bytes read per call while scanning a segment at recovery.
const SCAN_CHUNK: usize = 1 << 20;

/// Name of a segment file: the 20-digit zero-padded base offset, as Kafka.
pub fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

pub fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(segment_file_name(base_offset))
}

/// Opens a segment for reading and writing (never `DmaFile::create`, which is write-only).
/// A newly created file's directory entry is made durable before this returns.
pub async fn open_rw(path: &Path) -> std::io::Result<DmaFile> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(std::io::Error::from)?;
    if !existed {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(file)
}

/// fsyncs a directory so that entries created in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Appends to the active segment with aligned O_DIRECT writes.
pub struct SegmentWriter {
    pub file: Rc<DmaFile>,
    pub base_offset: i64,
    /// File offset of the first byte of `partial` (always aligned).
    aligned_pos: u64,
    /// Bytes of the last, incomplete block, rewritten by the next write.
    partial: Vec<u8>,
    /// File size reserved with fallocate: writes below it overwrite allocated blocks and
    /// neither allocate nor grow the file (so io_uring submits them inline, without punting
    /// to a worker thread). Zeros past the data read as block padding at recovery.
    allocated: u64,
}

/// First preallocation of a segment; each next one doubles the reservation, up to
/// `PREALLOCATE_MAX_STEP` at a time, so idle partitions reserve little and busy ones call
/// fallocate rarely.
const PREALLOCATE_MIN: u64 = 256 << 10;

/// `log.preallocate`: whether segments are preallocated (set once at start-up).
static PREALLOCATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub fn set_preallocate(on: bool) {
    PREALLOCATE.store(on, std::sync::atomic::Ordering::Relaxed);
}
const PREALLOCATE_MAX_STEP: u64 = 32 << 20;

impl SegmentWriter {
    /// A writer continuing a segment whose valid length is `size`.
    pub async fn resume(file: Rc<DmaFile>, base_offset: i64, size: u64) -> std::io::Result<Self> {
        let aligned_pos = size - size % WRITE_ALIGN;
        let mut partial = Vec::with_capacity(WRITE_ALIGN as usize);
        if size > aligned_pos {
            let rr = file
                .read_at(aligned_pos, (size - aligned_pos) as usize)
                .await
                .map_err(std::io::Error::from)?;
            if rr.len() != (size - aligned_pos) as usize {
                return Err(std::io::Error::other("short read of the segment's last block"));
            }
            partial.extend_from_slice(&rr);
        }
        let allocated = file.file_size().await.map_err(std::io::Error::from)?;
        Ok(SegmentWriter { file, base_offset, aligned_pos, partial, allocated })
    }

    /// Reserves blocks ahead of a write that would end at `end`.
    async fn reserve(&mut self, end: u64) -> std::io::Result<()> {
        if end <= self.allocated || !PREALLOCATE.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let step = self.allocated.clamp(PREALLOCATE_MIN, PREALLOCATE_MAX_STEP);
        let target = (self.allocated + step).max(end).div_ceil(PREALLOCATE_MIN) * PREALLOCATE_MIN;
        match self.file.pre_allocate(target, false).await.map_err(std::io::Error::from) {
            Ok(()) => self.allocated = target,
            // Not every filesystem can: the write then grows the file itself.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => self.allocated = u64::MAX,
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The logical size of the segment (bytes written so far).
    pub fn size(&self) -> u64 {
        self.aligned_pos + self.partial.len() as u64
    }

    /// Writes `chunks` after the current end with one DMA write, returning the new size.
    /// The data is on the device (not necessarily durable) when this returns.
    pub async fn append(&mut self, chunks: &[Bytes]) -> std::io::Result<u64> {
        let data_len: usize = chunks.iter().map(|c| c.len()).sum();
        let total = self.partial.len() + data_len;
        let padded = (total as u64).div_ceil(WRITE_ALIGN) * WRITE_ALIGN;
        self.reserve(self.aligned_pos + padded).await?;
        let mut buf = self.file.alloc_dma_buffer(padded as usize);
        {
            let dst = buf.as_bytes_mut();
            let mut at = self.partial.len();
            dst[..at].copy_from_slice(&self.partial);
            for c in chunks {
                dst[at..at + c.len()].copy_from_slice(c);
                at += c.len();
            }
            dst[at..].fill(0);
        }
        let written = self
            .file
            .write_at(buf, self.aligned_pos)
            .await
            .map_err(std::io::Error::from)?;
        if (written as u64) < padded {
            return Err(std::io::Error::other(format!(
                "short DMA write: {written} of {padded} bytes"
            )));
        }
        // Keep the new partial block: the tail of what was just written.
        let new_size = self.aligned_pos + total as u64;
        let new_aligned = new_size - new_size % WRITE_ALIGN;
        let keep = (new_size - new_aligned) as usize;
        let mut tail = Vec::with_capacity(WRITE_ALIGN as usize);
        if keep > 0 {
            // The last `keep` bytes of partial ++ chunks.
            let mut need = keep;
            let mut parts: Vec<&[u8]> = Vec::new();
            for c in chunks.iter().rev() {
                if need == 0 {
                    break;
                }
                let take = need.min(c.len());
                parts.push(&c[c.len() - take..]);
                need -= take;
            }
            if need > 0 {
                parts.push(&self.partial[self.partial.len() - need..]);
            }
            for p in parts.iter().rev() {
                tail.extend_from_slice(p);
            }
        }
        self.aligned_pos = new_aligned;
        self.partial = tail;
        debug_assert_eq!(self.size(), new_size);
        Ok(new_size)
    }

    /// Makes everything written durable.
    pub async fn sync(&self) -> std::io::Result<()> {
        self.file.fdatasync().await.map_err(std::io::Error::from)
    }

    /// Seals the segment: cuts the block padding off and makes it durable.
    pub async fn seal(&self) -> std::io::Result<()> {
        self.file.truncate(self.size()).await.map_err(std::io::Error::from)?;
        self.sync().await
    }
}

/// What a scan of a segment found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Every valid batch: (position, header).
    pub batches: Vec<(u64, BatchHeader)>,
    /// Bytes of valid batches from the start of the file.
    pub valid_len: u64,
    /// Bytes after `valid_len` in the file (torn write, corruption or block padding).
    pub trailing: u64,
    /// Why the scan stopped before the end of the file, if it did on something not all zeros.
    pub stop_reason: Option<String>,
}

/// Segment scans performed by this process (recovery reads; a counter for tests and metrics).
pub static SEGMENT_SCANS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reads a segment batch by batch from the start. With `check_crc`, each batch's CRC32C is
/// verified; the scan stops at the first batch that is incomplete or invalid.
pub async fn scan(file: &DmaFile, file_len: u64, check_crc: bool) -> std::io::Result<ScanResult> {
    SEGMENT_SCANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut res = ScanResult::default();
    let mut pos = 0u64;
    let mut expected_offset: Option<i64> = None;
    while pos < file_len {
        let want = (file_len - pos).min(SCAN_CHUNK as u64) as usize;
        let chunk = file.read_at(pos, want).await.map_err(std::io::Error::from)?;
        let mut at = 0usize;
        let mut stop = None;
        while at < chunk.len() {
            let rest = &chunk[at..];
            if rest.len() < BATCH_HEADER_LEN {
                if pos + at as u64 + (rest.len() as u64) < file_len {
                    break; // read more
                }
                stop = Some(describe_tail(rest, "incomplete batch header"));
                break;
            }
            let size = match batch::peek_batch_size(rest) {
                Some(s) => s,
                None => {
                    stop = Some(describe_tail(rest, "invalid batch length"));
                    break;
                }
            };
            if size > rest.len() {
                if pos + at as u64 + size as u64 > file_len {
                    stop = Some(format!("torn batch: {} of {} bytes present", rest.len(), size));
                    break;
                }
                if at == 0 {
                    // A batch larger than the chunk: read it whole.
                    let whole = file.read_at(pos, size).await.map_err(std::io::Error::from)?;
                    match check_one(&whole, check_crc, &mut expected_offset) {
                        Ok(h) => {
                            res.batches.push((pos, h));
                            pos += size as u64;
                            res.valid_len = pos;
                            at = usize::MAX;
                        }
                        Err(e) => stop = Some(e),
                    }
                }
                break;
            }
            match check_one(&rest[..size], check_crc, &mut expected_offset) {
                Ok(h) => {
                    res.batches.push((pos + at as u64, h));
                    at += size;
                    res.valid_len = pos + at as u64;
                }
                Err(e) => {
                    stop = Some(e);
                    break;
                }
            }
        }
        if let Some(reason) = stop {
            res.stop_reason = Some(reason);
            break;
        }
        if at == usize::MAX {
            continue;
        }
        if at == 0 {
            break;
        }
        pos += at as u64;
    }
    res.trailing = file_len - res.valid_len;
    Ok(res)
}

fn check_one(b: &[u8], check_crc: bool, expected: &mut Option<i64>) -> Result<BatchHeader, String> {
    let h = batch::parse_header(b).map_err(|e| e.to_string())?;
    if check_crc && !batch::crc_matches(b) {
        return Err(format!("CRC32C mismatch in batch at offset {}", h.base_offset));
    }
    if let Some(e) = *expected {
        if h.base_offset < e {
            return Err(format!("offset {} goes backwards (expected >= {e})", h.base_offset));
        }
    }
    *expected = Some(h.next_offset());
    Ok(h)
}

fn describe_tail(rest: &[u8], what: &str) -> String {
    if rest.iter().all(|&b| b == 0) {
        "block padding".to_string()
    } else {
        what.to_string()
    }
}
