//! Persistence of groups: committed offsets and group metadata as key/value records in an
//! internal log owned by the coordinator shard (`<data>/__groups/shard-<n>`), replayed at start.
//!
//! Owns the record encoding of the internal log. Uses the storage module's `PartitionLog` like
//! any other log; knows nothing of the group state machine.

use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use serde::{Deserialize, Serialize};

use crate::storage::{batch, LogConfig, PartitionLog, StorageError};

/// Directory (under the data directory) of the internal group logs. Topic directories are
/// always `<topic>-<partition>`, so this cannot collide with one.
pub const GROUPS_DIR: &str = "__groups";
/// Bytes read per call while replaying the log.
const REPLAY_READ_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(tag = "k")]
pub enum StoreKey {
    /// A committed offset of (group, topic, partition).
    Offset { g: String, t: String, p: i32 },
    /// Group metadata (generation, protocol) of a group.
    Group { g: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupValue {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    /// The leader and members of a Stable group, so that a broker restart does not force a
    /// rebalance: members keep heartbeating into the same generation, as with Kafka.
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberValue {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// Metadata of the group's selected protocol.
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// One change: a value, or a tombstone (`None`).
#[derive(Debug, Clone)]
pub enum StoreRecord {
    Offset { key: StoreKey, value: Option<OffsetValue> },
    Group { key: StoreKey, value: Option<GroupValue> },
}

pub struct GroupStore {
    log: Rc<PartitionLog>,
}

impl GroupStore {
    pub async fn open(data_dir: &Path, shard: usize, config: LogConfig) -> Result<GroupStore, StorageError> {
        let dir = data_dir.join(GROUPS_DIR).join(format!("shard-{shard}"));
        let log = PartitionLog::open("__groups", shard as i32, dir, config).await?;
        Ok(GroupStore { log })
    }

    /// The internal log (compacted by the shard's cleaner).
    pub fn log(&self) -> Rc<PartitionLog> {
        self.log.clone()
    }

    /// Appends records and waits until they are durable.
    pub async fn write(&self, records: &[StoreRecord]) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let buf = encode_records(records, 0, now_ms())?;
        let summary = batch::validate_batches(&buf, usize::MAX).map_err(|e| StorageError::Failed(e.to_string()))?;
        let info = self.log.append(buf.freeze(), &summary, true)?;
        self.log.wait_persisted(&info, true).await
    }

    /// Reads every record of the log in order.
    pub async fn replay(&self) -> Result<Vec<StoreRecord>, StorageError> {
        let mut out = Vec::new();
        let mut offset = self.log.log_start_offset();
        let end = self.log.next_offset();
        while offset < end {
            let data = self.log.read(offset, REPLAY_READ_BYTES).await?;
            if data.chunks.is_empty() {
                break;
            }
            for chunk in data.chunks {
                let mut buf = chunk;
                while !buf.is_empty() {
                    offset = offset.max(decode_batch(&mut buf, &mut out)?);
                }
            }
        }
        Ok(out)
    }
}

impl StoreRecord {
    pub fn key(&self) -> &StoreKey {
        match self {
            StoreRecord::Offset { key, .. } | StoreRecord::Group { key, .. } => key,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        matches!(self, StoreRecord::Offset { value: None, .. } | StoreRecord::Group { value: None, .. })
    }
}

impl StoreKey {
    pub fn group(&self) -> &str {
        match self {
            StoreKey::Offset { g, .. } | StoreKey::Group { g } => g,
        }
    }
}

/// Encodes records as one batch whose records take offsets from `first_offset`.
pub fn encode_records(records: &[StoreRecord], first_offset: i64, now: i64) -> Result<BytesMut, StorageError> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (key, value) = match r {
                StoreRecord::Offset { key, value } => (key, value.as_ref().map(|v| serde_json::to_vec(v).unwrap())),
                StoreRecord::Group { key, value } => (key, value.as_ref().map(|v| serde_json::to_vec(v).unwrap())),
            };
            Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: first_offset + i as i64,
                // The encoder only groups records whose offset - sequence is constant.
                sequence: i as i32,
                timestamp: now,
                key: Some(Bytes::from(serde_json::to_vec(key).unwrap())),
                value: value.map(Bytes::from),
                headers: Default::default(),
                delete_horizon: false,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, recs.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None })
        .map_err(|e| StorageError::Failed(format!("encode group record: {e}")))?;
    Ok(buf)
}

/// Decodes the batch at the start of `buf` (consumed) into `out`; returns the offset after its
/// last record.
pub fn decode_batch(buf: &mut Bytes, out: &mut Vec<StoreRecord>) -> Result<i64, StorageError> {
    let set = RecordBatchDecoder::decode(buf).map_err(|e| StorageError::Failed(format!("decode group log: {e}")))?;
    let mut next = 0;
    for r in set.records {
        next = next.max(r.offset + 1);
        let Some(key) = r.key.as_ref().and_then(|k| serde_json::from_slice::<StoreKey>(k).ok()) else { continue };
        match &key {
            StoreKey::Offset { .. } => {
                let value = r.value.as_ref().and_then(|v| serde_json::from_slice(v).ok());
                out.push(StoreRecord::Offset { key, value });
            }
            StoreKey::Group { .. } => {
                let value = r.value.as_ref().and_then(|v| serde_json::from_slice(v).ok());
                out.push(StoreRecord::Group { key, value });
            }
        }
    }
    Ok(next)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
