//! Storage: partition logs made of segments, their indexes and record batch framing.
//!
//! Owns everything under the data directory's `<topic>-<partition>` folders. Knows nothing of
//! the Kafka protocol, connections or shards: callers hand it validated batches and offsets.

pub mod batch;
pub mod cleaner;
pub mod device_watch;
pub mod file_deleter;
pub mod index;
pub mod memory;
pub mod partition_log;
pub mod producer_state;
pub mod retention;
pub mod segment;
pub mod verify;

pub use partition_log::{AppendInfo, LogConfig, PartitionLog, ReadData, SendData};

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

/// A piece of log data on its way to the network, never copied in user space: batches still
/// held in memory (the very `Bytes` that were appended) or a byte range of a segment file,
/// which the connection sends with sendfile(2).
#[derive(Debug, Clone)]
pub enum LogChunk {
    Mem(Bytes),
    File(FileRange),
}

/// Whole batches at `pos..pos + len` of a segment file (opened for buffered reads; the handle
/// keeps the data readable even if the segment is deleted meanwhile).
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<std::fs::File>,
    pub pos: u64,
    pub len: usize,
}

impl LogChunk {
    pub fn len(&self) -> usize {
        match self {
            LogChunk::Mem(b) => b.len(),
            LogChunk::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("log failed: {0}")]
    Failed(String),
    #[error("offset out of range")]
    OffsetOutOfRange,
    #[error("log closed")]
    Closed,
    /// Refused by idempotent-producer checks (sequence, epoch) or batch rules: a Kafka code.
    #[error("batch refused with error code {0}")]
    Refused(i16),
}

impl StorageError {
    /// The Kafka error code for a client.
    pub fn kafka_code(&self) -> i16 {
        match self {
            StorageError::OffsetOutOfRange => 1, // OFFSET_OUT_OF_RANGE
            StorageError::Closed => 3,           // UNKNOWN_TOPIC_OR_PARTITION
            StorageError::Refused(code) => *code,
            StorageError::Io(_) | StorageError::Failed(_) => 56, // KAFKA_STORAGE_ERROR
        }
    }
}

/// Directory name of a partition's log, as Kafka: `<topic>-<partition>`.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Ends the name of a deleted partition's directory awaiting removal (`<topic>-<partition>.<id>
/// -delete`, as Kafka names them). A partition directory always ends in its number, so no live
/// log is ever taken for one.
pub const DELETED_DIR_SUFFIX: &str = "-delete";

pub fn is_deleted_dir_name(name: &str) -> bool {
    name.ends_with(DELETED_DIR_SUFFIX)
}
