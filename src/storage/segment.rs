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

/// glommio's pool of io_uring-registered DMA memory per shard (`LocalExecutorBuilder::io_memory`).
/// Kept small on purpose: every DMA buffer larger than the pool comes from the global allocator,
/// so the tail cache can keep a written buffer and let any thread free it (see [`kept_bytes`]).
/// A larger pool bought no CPU in A/B runs (BENCHMARKS.md, issue 6).
pub const IO_MEMORY_BYTES: usize = 64 << 10;

/// What an [`SegmentWriter::append_kept`] wrote: the segment's new size, the appended bytes as
/// they are on the device, and the memory those bytes hold (what the tail cache is charged).
pub struct Appended {
    pub size: u64,
    pub data: Bytes,
    pub charge: usize,
}

/// A written DMA buffer that glommio took from the global allocator, not from its registered
/// pool (which belongs to the shard's thread): freeing it on another thread is sound, so the
/// tail cache may share it with fetches answered on any shard.
struct HeapDmaBuffer(glommio::io::DmaBuffer);

// SAFETY: only built by `kept_bytes` for buffers whose storage is glommio's `Sys` variant, a
// plain `std::alloc` allocation with no thread affinity; the buffer is never written again.
unsafe impl Send for HeapDmaBuffer {}

impl AsRef<[u8]> for HeapDmaBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Whether glommio allocated `buf` from the global allocator. glommio does not say so through
/// its API; its `Debug` output names the storage, which is read into a stack buffer here.
fn is_heap_buffer(buf: &glommio::io::DmaBuffer) -> bool {
    use std::io::Write;
    let mut text = [0u8; 48];
    let mut cursor = &mut text[..];
    let _ = write!(cursor, "{buf:?}");
    const SYS: &[u8] = b"DmaBuffer { storage: Sys(";
    text.starts_with(SYS)
}

/// The bytes `range` of a written buffer, for the tail cache: the buffer itself when it can
/// travel to other threads (no copy; charged its whole size), else a copy of the range.
fn kept_bytes(buf: Rc<glommio::io::DmaBuffer>, range: std::ops::Range<usize>) -> (Bytes, usize) {
    match Rc::try_unwrap(buf) {
        Ok(buf) if buf.len() > IO_MEMORY_BYTES && is_heap_buffer(&buf) => {
            let charge = buf.len();
            (Bytes::from_owner(HeapDmaBuffer(buf)).slice(range), charge)
        }
        Ok(buf) => (Bytes::copy_from_slice(&buf.as_bytes()[range.clone()]), range.len()),
        Err(shared) => (Bytes::copy_from_slice(&shared.as_bytes()[range.clone()]), range.len()),
    }
}

/// Name of a segment file: the 20-digit zero-padded base offset, as Kafka.
pub fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

pub fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(segment_file_name(base_offset))
}

/// Opens a segment for reading and writing (never `DmaFile::create`, which is write-only).
/// A newly created file's directory entry is made durable before this returns (with an fsync
/// through io_uring: the executor is not blocked).
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
            sync_dir(dir).await?;
        }
    }
    Ok(file)
}

/// fsyncs a directory so that entries created, renamed or removed in it survive a crash. For
/// the shard's executor: the fsync goes through io_uring and only this task waits for it.
pub async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // glommio's `Directory::open` fails with EBADF on a relative path.
    let d = glommio::io::Directory::open(std::path::absolute(dir)?).await.map_err(std::io::Error::from)?;
    d.sync().await.map_err(std::io::Error::from)?;
    d.close().await.map_err(std::io::Error::from)
}

/// [`sync_dir`] for code already on a blocking thread (glommio's blocking pool). Never call
/// this on the executor: a directory fsync waits for a journal commit, which under load takes
/// tens of milliseconds, and every partition of the shard would wait with it.
pub fn sync_dir_blocking(dir: &Path) -> std::io::Result<()> {
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
        Ok(self.write(chunks, |_, _| {}, false).await?.size)
    }

    /// As [`append`](Self::append), but each chunk may be rewritten in the aligned buffer by
    /// `patch(chunk index, bytes)` before the write (the log stamps offsets there, never in the
    /// producer's bytes), and the appended bytes come back as written, for the tail cache.
    pub async fn append_kept(&mut self, chunks: &[Bytes], patch: impl FnMut(usize, &mut [u8])) -> std::io::Result<Appended> {
        self.write(chunks, patch, true).await
    }

    async fn write(&mut self, chunks: &[Bytes], mut patch: impl FnMut(usize, &mut [u8]), keep: bool) -> std::io::Result<Appended> {
        let data_len: usize = chunks.iter().map(|c| c.len()).sum();
        let partial_len = self.partial.len();
        let total = partial_len + data_len;
        let padded = (total as u64).div_ceil(WRITE_ALIGN) * WRITE_ALIGN;
        self.reserve(self.aligned_pos + padded).await?;
        let mut buf = self.file.alloc_dma_buffer(padded as usize);
        {
            let dst = buf.as_bytes_mut();
            let mut at = partial_len;
            dst[..at].copy_from_slice(&self.partial);
            for (i, c) in chunks.iter().enumerate() {
                let part = &mut dst[at..at + c.len()];
                part.copy_from_slice(c);
                patch(i, part);
                at += c.len();
            }
            dst[at..].fill(0);
        }
        let buf = Rc::new(buf);
        let written = self
            .file
            .write_rc_at(buf.clone(), self.aligned_pos)
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
        let from = (new_aligned - self.aligned_pos) as usize;
        self.partial.clear();
        self.partial.extend_from_slice(&buf.as_bytes()[from..total]);
        self.aligned_pos = new_aligned;
        debug_assert_eq!(self.size(), new_size);
        let (data, charge) = if keep { kept_bytes(buf, partial_len..total) } else { (Bytes::new(), 0) };
        Ok(Appended { size: new_size, data, charge })
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
