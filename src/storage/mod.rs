//! Storage: partition logs made of segments, their indexes and record batch framing.
//!
//! Owns everything under the data directory's `<topic>-<partition>` folders. Knows nothing of
//! the Kafka protocol, connections or shards: callers hand it validated batches and offsets.

pub mod batch;
pub mod index;
pub mod partition_log;
pub mod producer_state;
pub mod segment;
pub mod verify;

pub use partition_log::{AppendInfo, LogConfig, PartitionLog, ReadData};

use thiserror::Error;

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
