//! Broker configuration: embedded defaults, Kafka-named keys, `--set key=value` and config files.
//!
//! Owns parsing and validation of settings. Knows nothing of sockets, shards or storage.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Kafka's default `message.max.bytes` (1 MiB + record batch overhead).
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_048_588;
/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_SOCKET_REQUEST_MAX_BYTES: usize = 104_857_600;
/// Kafka's default `log.segment.bytes` (1 GiB).
pub const DEFAULT_LOG_SEGMENT_BYTES: u64 = 1 << 30;
/// Kafka's default `log.roll.ms` (7 days).
pub const DEFAULT_LOG_ROLL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Kafka's default `log.index.interval.bytes`.
pub const DEFAULT_INDEX_INTERVAL_BYTES: usize = 4096;
/// Default `max.connections` (broker-wide). Kafka's default is unlimited; each connection costs
/// two file descriptors and a 64 KiB read buffer, so a bound is kept.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default requests of one connection processed or waiting to be written at once.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
/// Default `queued.max.request.bytes` (broker-wide; Kafka's default is unlimited).
pub const DEFAULT_QUEUED_MAX_REQUEST_BYTES: usize = 256 << 20;
/// Kafka's default `connections.max.idle.ms` (10 minutes).
pub const DEFAULT_CONNECTIONS_MAX_IDLE_MS: u64 = 600_000;
/// Default bytes of recent batches kept in memory per partition (served without disk reads).
pub const DEFAULT_TAIL_CACHE_BYTES: usize = 1 << 30;

/// The type of a setting, as Kafka's ConfigDef names it (DescribeConfigs `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean,
    Str,
    Int,
    Long,
    Double,
    List,
}

impl ConfigKind {
    /// The DescribeConfigs v3+ `config_type` code.
    pub fn code(self) -> i8 {
        match self {
            ConfigKind::Boolean => 1,
            ConfigKind::Str => 2,
            ConfigKind::Int => 3,
            ConfigKind::Long => 5,
            ConfigKind::Double => 6,
            ConfigKind::List => 7,
        }
    }
}
/// Kafka's default `log.retention.hours` (7 days).
pub const DEFAULT_LOG_RETENTION_HOURS: i64 = 168;
/// Kafka's default `log.retention.check.interval.ms` (5 minutes).
pub const DEFAULT_RETENTION_CHECK_INTERVAL_MS: u64 = 300_000;
/// Kafka's default `log.cleaner.backoff.ms`.
pub const DEFAULT_CLEANER_BACKOFF_MS: u64 = 15_000;
/// Kafka's default `log.cleaner.delete.retention.ms` (1 day).
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 86_400_000;
/// Kafka's default `offsets.topic.segment.bytes` (100 MiB): segment size of the group logs.
pub const DEFAULT_OFFSETS_SEGMENT_BYTES: u64 = 100 << 20;

/// Every setting of the broker. Field names follow the Kafka keys they are read from.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// Host advertised to clients in Metadata (`advertised.host.name`); defaults to the listen host.
    pub advertised_host: String,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub cpus: Option<Vec<usize>>,
    /// `node.id`
    pub node_id: i32,
    /// `auto.create.topics.enable`
    pub auto_create_topics: bool,
    /// `num.partitions`
    pub num_partitions: i32,
    /// `log.segment.bytes`
    pub log_segment_bytes: u64,
    /// `log.roll.ms`
    pub log_roll_ms: u64,
    /// `message.max.bytes` (broker default for the topic's `max.message.bytes`)
    pub message_max_bytes: usize,
    /// `socket.request.max.bytes`
    pub socket_request_max_bytes: usize,
    /// `max.connections`: connections open at once, over all shards; more are closed at once.
    pub max_connections: usize,
    /// `max.connections.per.ip` (unlimited when `None`).
    pub max_connections_per_ip: Option<usize>,
    /// `max.in.flight.requests.per.connection` (Strand, broker side): requests of a connection
    /// processed or waiting to be written at once; the connection is not read meanwhile.
    pub max_in_flight_per_connection: usize,
    /// `queued.max.request.bytes`: bytes of requests read and not yet answered, over all shards
    /// (each shard gets an equal share; unlimited when `None`). Over it, a shard stops reading.
    pub queued_max_request_bytes: Option<usize>,
    /// `connections.max.idle.ms`: a connection that sends nothing for this long is closed.
    pub connections_max_idle_ms: u64,
    /// `log.index.interval.bytes`
    pub index_interval_bytes: usize,
    /// `log.preallocate`: reserve segment space with fallocate ahead of the writes.
    pub log_preallocate: bool,
    /// `log.tail.cache.bytes` (Strand): recent bytes per partition served from memory.
    pub tail_cache_bytes: usize,
    /// `group.min.session.timeout.ms`
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub group_initial_rebalance_delay_ms: u64,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
    /// `producer.id.expiration.ms`: idle time after which a producer's dedup state is dropped.
    pub producer_id_expiration_ms: i64,
    /// `--memory` / `memory` (as Redpanda's flag): the memory the broker may use for log data,
    /// split evenly among shards. Default: half of the machine's physical memory, at most
    /// 2 GiB per CPU.
    pub memory_bytes: usize,
    /// `max.incremental.fetch.session.cache.slots` (broker-wide, shared out among shards).
    pub fetch_session_cache_slots: usize,
    /// `min.incremental.fetch.session.eviction.ms`
    pub fetch_session_min_eviction_ms: u64,
    /// Keys given explicitly (`--set`, config file), as written: DescribeConfigs reports them
    /// as STATIC_BROKER_CONFIG, the others as DEFAULT_CONFIG.
    pub explicit: Vec<String>,
    /// `log.retention.ms` (wins over minutes and hours when set; -1: unlimited).
    pub log_retention_ms: Option<i64>,
    /// `log.retention.minutes` (wins over hours when set).
    pub log_retention_minutes: Option<i64>,
    /// `log.retention.hours`
    pub log_retention_hours: i64,
    /// `log.retention.bytes` (-1: unlimited)
    pub log_retention_bytes: i64,
    /// `log.retention.check.interval.ms`: how often each shard looks for segments to delete.
    pub retention_check_interval_ms: u64,
    /// `log.cleanup.policy`: broker default of the topic's `cleanup.policy`.
    pub log_cleanup_policy: String,
    /// `log.cleaner.enable`
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: pause between cleaner passes.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.delete.retention.ms`: how long tombstones stay readable.
    pub cleaner_delete_retention_ms: i64,
    /// `log.cleaner.min.cleanable.ratio`
    pub cleaner_min_cleanable_ratio: f64,
    /// `log.cleaner.min.compaction.lag.ms`
    pub cleaner_min_compaction_lag_ms: i64,
    /// `log.cleaner.io.max.bytes.per.second`: read + write budget of each shard's cleaner.
    pub cleaner_io_max_bytes_per_second: f64,
    /// `offsets.topic.segment.bytes`: segment size of the internal group logs.
    pub offsets_topic_segment_bytes: u64,
    /// `log.message.timestamp.after.max.ms`: how far in the future a CreateTime timestamp may be.
    pub message_timestamp_after_max_ms: i64,
    /// `log.message.timestamp.before.max.ms`: how far in the past a CreateTime timestamp may be.
    pub message_timestamp_before_max_ms: i64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".parse().unwrap(),
            advertised_host: String::new(),
            data_dir: PathBuf::from("strand-data"),
            shards: 0,
            cpus: None,
            node_id: 1,
            auto_create_topics: true,
            num_partitions: 1,
            log_segment_bytes: DEFAULT_LOG_SEGMENT_BYTES,
            log_roll_ms: DEFAULT_LOG_ROLL_MS,
            message_max_bytes: DEFAULT_MESSAGE_MAX_BYTES,
            socket_request_max_bytes: DEFAULT_SOCKET_REQUEST_MAX_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: None,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            queued_max_request_bytes: Some(DEFAULT_QUEUED_MAX_REQUEST_BYTES),
            connections_max_idle_ms: DEFAULT_CONNECTIONS_MAX_IDLE_MS,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            log_preallocate: true,
            tail_cache_bytes: DEFAULT_TAIL_CACHE_BYTES,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            offset_metadata_max_bytes: 4096,
            producer_id_expiration_ms: 86_400_000,
            memory_bytes: default_memory_bytes(),
            fetch_session_cache_slots: 1000,
            fetch_session_min_eviction_ms: 120_000,
            explicit: Vec::new(),
            log_retention_ms: None,
            log_retention_minutes: None,
            log_retention_hours: DEFAULT_LOG_RETENTION_HOURS,
            log_retention_bytes: -1,
            retention_check_interval_ms: DEFAULT_RETENTION_CHECK_INTERVAL_MS,
            log_cleanup_policy: "delete".to_string(),
            cleaner_enable: true,
            cleaner_backoff_ms: DEFAULT_CLEANER_BACKOFF_MS,
            cleaner_delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            cleaner_min_cleanable_ratio: 0.5,
            cleaner_min_compaction_lag_ms: 0,
            cleaner_io_max_bytes_per_second: f64::MAX,
            offsets_topic_segment_bytes: DEFAULT_OFFSETS_SEGMENT_BYTES,
            message_timestamp_after_max_ms: 3_600_000,
            message_timestamp_before_max_ms: i64::MAX,
        }
    }
}

/// Most memory the default budget gives each CPU (as Redpanda's sizing guide: 2 GiB per core).
/// A larger tail cache costs more than it serves: every byte of it is a fresh page the kernel
/// faults in and zeroes while it fills, and on the 2-core bench machine a budget of half of
/// 24 GiB cut produce throughput by a third and doubled broker CPU per GiB against 2 GiB per
/// shard (10 GB of 1 KiB records, acks=all, 8 partitions; BENCHMARKS.md).
pub const DEFAULT_MEMORY_PER_CPU: usize = 2 << 30;

/// The default memory budget: half of the physical memory, at most
/// [`DEFAULT_MEMORY_PER_CPU`] for each CPU this process may run on.
fn default_memory_bytes() -> usize {
    // SAFETY: sysconf only reads system values.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let half = if pages > 0 && page > 0 { (pages as usize).saturating_mul(page as usize) / 2 } else { 1 << 30 };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    half.min(cpus.saturating_mul(DEFAULT_MEMORY_PER_CPU))
}

/// A byte size: a number with an optional K, M, G or T suffix (powers of 1024), e.g. 2G.
pub fn parse_size(key: &str, v: &str, min: usize) -> Result<usize> {
    let t = v.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: usize = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("invalid value {v:?} for {key}: expected bytes with an optional K, M, G or T suffix, e.g. 2G"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid value {v:?} for {key}: expected bytes with an optional K, M, G or T suffix, e.g. 2G"))?;
    let bytes = n.checked_mul(mult).ok_or_else(|| anyhow::anyhow!("invalid value {v:?} for {key}: too large"))?;
    if bytes < min {
        bail!("invalid value {v:?} for {key}: must be at least {min} bytes");
    }
    Ok(bytes)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("invalid value {v:?} for {key}: expected true or false"),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str, min: T) -> Result<T>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let n: T = v
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid value {v:?} for {key}: expected a number"))?;
    if n < min {
        bail!("invalid value {v} for {key}: must be at least {min}");
    }
    Ok(n)
}

/// The Kafka-named keys accepted by `--set` and config files.
pub const KNOWN_KEYS: &[&str] = &[
    "listeners",
    "advertised.host.name",
    "log.dirs",
    "node.id",
    "broker.id",
    "auto.create.topics.enable",
    "num.partitions",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "message.max.bytes",
    "socket.request.max.bytes",
    "max.connections",
    "max.connections.per.ip",
    "max.in.flight.requests.per.connection",
    "queued.max.request.bytes",
    "connections.max.idle.ms",
    "log.index.interval.bytes",
    "log.preallocate",
    "log.tail.cache.bytes",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.initial.rebalance.delay.ms",
    "offset.metadata.max.bytes",
    "producer.id.expiration.ms",
    "memory",
    "max.incremental.fetch.session.cache.slots",
    "min.incremental.fetch.session.eviction.ms",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.cleanup.policy",
    "log.cleaner.enable",
    "log.cleaner.backoff.ms",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.io.max.bytes.per.second",
    "offsets.topic.segment.bytes",
    "log.message.timestamp.after.max.ms",
    "log.message.timestamp.before.max.ms",
];

impl BrokerConfig {
    /// Applies one `key=value` setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v = value.trim();
        match key.trim() {
            "listeners" => {
                let addr = v.strip_prefix("PLAINTEXT://").unwrap_or(v);
                self.listen = addr
                    .parse()
                    .with_context(|| format!("invalid listeners {v:?}: expected HOST:PORT, e.g. 127.0.0.1:9092"))?;
            }
            "advertised.host.name" => self.advertised_host = v.to_string(),
            "log.dirs" => self.data_dir = PathBuf::from(v),
            "node.id" | "broker.id" => self.node_id = parse_num(key, v, 0)?,
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(key, v)?,
            "num.partitions" => self.num_partitions = parse_num(key, v, 1)?,
            "log.segment.bytes" => {
                let n: u64 = parse_num(key, v, 1024)?;
                if n > i32::MAX as u64 {
                    bail!("invalid value {v} for log.segment.bytes: must be at most {} (segment positions are 32-bit, as in Kafka)", i32::MAX);
                }
                self.log_segment_bytes = n;
            }
            "log.roll.ms" => self.log_roll_ms = parse_num(key, v, 1)?,
            "log.roll.hours" => self.log_roll_ms = parse_num::<u64>(key, v, 1)? * 3_600_000,
            "message.max.bytes" => self.message_max_bytes = parse_num(key, v, 64)?,
            "socket.request.max.bytes" => self.socket_request_max_bytes = parse_num(key, v, 1024)?,
            "max.connections" => self.max_connections = parse_num(key, v, 1)?,
            "max.connections.per.ip" => {
                let n: i64 = parse_num(key, v, 1)?;
                self.max_connections_per_ip = (n < i32::MAX as i64).then_some(n as usize);
            }
            "max.in.flight.requests.per.connection" => self.max_in_flight_per_connection = parse_num(key, v, 1)?,
            "queued.max.request.bytes" => {
                // -1 (Kafka's default) means unlimited.
                let n: i64 = parse_num(key, v, -1)?;
                if n == 0 {
                    bail!("invalid value 0 for queued.max.request.bytes: use -1 for unlimited or a positive size");
                }
                self.queued_max_request_bytes = (n > 0).then_some(n as usize);
            }
            "connections.max.idle.ms" => self.connections_max_idle_ms = parse_num(key, v, 1)?,
            "log.index.interval.bytes" => self.index_interval_bytes = parse_num(key, v, 1)?,
            "log.preallocate" => self.log_preallocate = parse_bool(key, v)?,
            "log.tail.cache.bytes" => self.tail_cache_bytes = parse_num(key, v, 0)?,
            "group.min.session.timeout.ms" => self.group_min_session_timeout_ms = parse_num(key, v, 1)?,
            "group.max.session.timeout.ms" => self.group_max_session_timeout_ms = parse_num(key, v, 1)?,
            "group.initial.rebalance.delay.ms" => self.group_initial_rebalance_delay_ms = parse_num(key, v, 0)?,
            "offset.metadata.max.bytes" => self.offset_metadata_max_bytes = parse_num(key, v, 0)?,
            "producer.id.expiration.ms" => self.producer_id_expiration_ms = parse_num(key, v, 1)?,
            "memory" => self.memory_bytes = parse_size(key, v, 16 << 20)?,
            "max.incremental.fetch.session.cache.slots" => self.fetch_session_cache_slots = parse_num(key, v, 0)?,
            "min.incremental.fetch.session.eviction.ms" => self.fetch_session_min_eviction_ms = parse_num(key, v, 0)?,
            "log.retention.ms" => self.log_retention_ms = Some(parse_num(key, v, -1)?),
            "log.retention.minutes" => self.log_retention_minutes = Some(parse_num(key, v, -1)?),
            "log.retention.hours" => self.log_retention_hours = parse_num(key, v, -1)?,
            "log.retention.bytes" => self.log_retention_bytes = parse_num(key, v, -1)?,
            "log.retention.check.interval.ms" => self.retention_check_interval_ms = parse_num(key, v, 1)?,
            "log.cleanup.policy" => {
                if parse_cleanup_policy(v).is_none() {
                    bail!("invalid value {v:?} for log.cleanup.policy: expected delete, compact or compact,delete");
                }
                self.log_cleanup_policy = v.to_string();
            }
            "log.cleaner.enable" => self.cleaner_enable = parse_bool(key, v)?,
            "log.cleaner.backoff.ms" => self.cleaner_backoff_ms = parse_num(key, v, 1)?,
            "log.cleaner.delete.retention.ms" => self.cleaner_delete_retention_ms = parse_num(key, v, 0)?,
            "log.cleaner.min.cleanable.ratio" => {
                let r: f64 = parse_num(key, v, 0.0)?;
                if r > 1.0 {
                    bail!("invalid value {v} for {key}: must be at most 1");
                }
                self.cleaner_min_cleanable_ratio = r;
            }
            "log.cleaner.min.compaction.lag.ms" => self.cleaner_min_compaction_lag_ms = parse_num(key, v, 0)?,
            "log.message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms = parse_num(key, v, 0)?,
            "log.message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms = parse_num(key, v, 0)?,
            "log.cleaner.io.max.bytes.per.second" => self.cleaner_io_max_bytes_per_second = parse_num(key, v, 1.0)?,
            "offsets.topic.segment.bytes" => {
                let n: u64 = parse_num(key, v, 1024)?;
                if n > i32::MAX as u64 {
                    bail!("invalid value {v} for {key}: must be at most {}", i32::MAX);
                }
                self.offsets_topic_segment_bytes = n;
            }
            other => bail!(
                "unknown setting {other:?}; known settings: {}",
                KNOWN_KEYS.join(", ")
            ),
        }
        let key = key.trim().to_string();
        if !self.explicit.contains(&key) {
            self.explicit.push(key);
        }
        Ok(())
    }

    /// Whether `key` was set explicitly (a synonym counts: `log.roll.hours` for `log.roll.ms`).
    pub fn is_explicit(&self, key: &str) -> bool {
        let synonyms: &[&str] = match key {
            "log.roll.ms" | "log.roll.hours" => &["log.roll.ms", "log.roll.hours"],
            "node.id" | "broker.id" => &["node.id", "broker.id"],
            _ => &[],
        };
        self.explicit.iter().any(|k| k == key || synonyms.contains(&k.as_str()))
    }

    /// The current value of a known key, as Kafka would print it, and its type.
    pub fn value_of(&self, key: &str) -> Option<(String, ConfigKind)> {
        use ConfigKind::*;
        Some(match key {
            "listeners" => (format!("PLAINTEXT://{}", self.listen), List),
            "advertised.host.name" => (self.advertised_host(), Str),
            "log.dirs" => (self.data_dir.display().to_string(), Str),
            "node.id" | "broker.id" => (self.node_id.to_string(), Int),
            "auto.create.topics.enable" => (self.auto_create_topics.to_string(), Boolean),
            "num.partitions" => (self.num_partitions.to_string(), Int),
            "log.segment.bytes" => (self.log_segment_bytes.to_string(), Int),
            "log.roll.ms" => (self.log_roll_ms.to_string(), Long),
            "log.roll.hours" => ((self.log_roll_ms / 3_600_000).to_string(), Int),
            "message.max.bytes" => (self.message_max_bytes.to_string(), Int),
            "socket.request.max.bytes" => (self.socket_request_max_bytes.to_string(), Int),
            "log.index.interval.bytes" => (self.index_interval_bytes.to_string(), Int),
            "log.preallocate" => (self.log_preallocate.to_string(), Boolean),
            "log.tail.cache.bytes" => (self.tail_cache_bytes.to_string(), Long),
            "group.min.session.timeout.ms" => (self.group_min_session_timeout_ms.to_string(), Int),
            "group.max.session.timeout.ms" => (self.group_max_session_timeout_ms.to_string(), Int),
            "group.initial.rebalance.delay.ms" => (self.group_initial_rebalance_delay_ms.to_string(), Int),
            "offset.metadata.max.bytes" => (self.offset_metadata_max_bytes.to_string(), Int),
            "producer.id.expiration.ms" => (self.producer_id_expiration_ms.to_string(), Int),
            "memory" => (self.memory_bytes.to_string(), Long),
            "log.retention.ms" => (self.retention_ms().to_string(), Long),
            "log.retention.minutes" => (self.log_retention_minutes.map_or((self.retention_ms() / 60_000).to_string(), |m| m.to_string()), Int),
            "log.retention.hours" => (self.log_retention_hours.to_string(), Int),
            "log.retention.bytes" => (self.log_retention_bytes.to_string(), Long),
            "log.retention.check.interval.ms" => (self.retention_check_interval_ms.to_string(), Long),
            "log.cleanup.policy" => (self.log_cleanup_policy.clone(), List),
            "log.cleaner.enable" => (self.cleaner_enable.to_string(), Boolean),
            "log.cleaner.backoff.ms" => (self.cleaner_backoff_ms.to_string(), Long),
            "log.cleaner.delete.retention.ms" => (self.cleaner_delete_retention_ms.to_string(), Long),
            "log.cleaner.min.cleanable.ratio" => (self.cleaner_min_cleanable_ratio.to_string(), Double),
            "log.cleaner.min.compaction.lag.ms" => (self.cleaner_min_compaction_lag_ms.to_string(), Long),
            "log.message.timestamp.after.max.ms" => (self.message_timestamp_after_max_ms.to_string(), Long),
            "log.message.timestamp.before.max.ms" => (self.message_timestamp_before_max_ms.to_string(), Long),
            "log.cleaner.io.max.bytes.per.second" => (self.cleaner_io_max_bytes_per_second.to_string(), Double),
            "offsets.topic.segment.bytes" => (self.offsets_topic_segment_bytes.to_string(), Int),
            "max.connections" => (self.max_connections.to_string(), Int),
            "max.connections.per.ip" => (self.max_connections_per_ip.map_or(i32::MAX as i64, |n| n as i64).to_string(), Int),
            "max.in.flight.requests.per.connection" => (self.max_in_flight_per_connection.to_string(), Int),
            "queued.max.request.bytes" => (self.queued_max_request_bytes.map_or(-1, |n| n as i64).to_string(), Long),
            "connections.max.idle.ms" => (self.connections_max_idle_ms.to_string(), Long),
            "max.incremental.fetch.session.cache.slots" => (self.fetch_session_cache_slots.to_string(), Int),
            "min.incremental.fetch.session.eviction.ms" => (self.fetch_session_min_eviction_ms.to_string(), Long),
            _ => return None,
        })
    }

    /// Applies a `key=value` string as given to `--set`.
    pub fn set_pair(&mut self, pair: &str) -> Result<()> {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("invalid setting {pair:?}: expected key=value"))?;
        self.set(k, v)
    }

    /// Applies a Java-properties-style file: `key=value` lines, `#` comments.
    pub fn load_file(&mut self, path: &std::path::Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            self.set_pair(line)
                .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        }
        Ok(())
    }

    /// The broker default of `retention.ms`: `log.retention.ms`, else minutes, else hours
    /// (-1: unlimited).
    pub fn retention_ms(&self) -> i64 {
        match (self.log_retention_ms, self.log_retention_minutes) {
            (Some(ms), _) => ms,
            (None, Some(m)) if m < 0 => -1,
            (None, Some(m)) => m.saturating_mul(60_000),
            (None, None) if self.log_retention_hours < 0 => -1,
            (None, None) => self.log_retention_hours.saturating_mul(3_600_000),
        }
    }

    /// Host clients are told to connect to.
    pub fn advertised_host(&self) -> String {
        if !self.advertised_host.is_empty() {
            return self.advertised_host.clone();
        }
        let ip = self.listen.ip();
        if ip.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            ip.to_string()
        }
    }
}

/// Parses a `cleanup.policy` list: (delete, compact). `None` when it names anything else.
pub fn parse_cleanup_policy(v: &str) -> Option<(bool, bool)> {
    let (mut delete, mut compact) = (false, false);
    for p in v.split(',').map(str::trim) {
        match p {
            "delete" => delete = true,
            "compact" => compact = true,
            _ => return None,
        }
    }
    Some((delete, compact))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_and_errors() {
        let mut c = BrokerConfig::default();
        c.set_pair("log.segment.bytes=2048").unwrap();
        c.set_pair("auto.create.topics.enable=false").unwrap();
        assert_eq!(c.log_segment_bytes, 2048);
        assert!(!c.auto_create_topics);
        let e = c.set_pair("no.such.key=1").unwrap_err().to_string();
        assert!(e.contains("unknown setting"), "{e}");
        let e = c.set_pair("num.partitions=0").unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        assert!(c.set_pair("num.partitions").is_err());
        assert!(c.is_explicit("log.segment.bytes") && !c.is_explicit("log.roll.ms"));
        c.set_pair("queued.max.request.bytes=-1").unwrap();
        assert_eq!(c.queued_max_request_bytes, None);
        assert!(c.set_pair("queued.max.request.bytes=0").is_err());
        c.set_pair("max.connections.per.ip=2147483647").unwrap();
        assert_eq!(c.max_connections_per_ip, None);
        c.set_pair("max.connections.per.ip=3").unwrap();
        assert_eq!(c.max_connections_per_ip, Some(3));
    }

    #[test]
    fn every_known_key_has_a_value() {
        let c = BrokerConfig::default();
        for k in KNOWN_KEYS {
            assert!(c.value_of(k).is_some(), "{k} has no value_of (DescribeConfigs on the broker lists it)");
        }
    }

    #[test]
    fn retention_precedence() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.retention_ms(), 7 * 24 * 3_600_000);
        c.set_pair("log.retention.hours=1").unwrap();
        assert_eq!(c.retention_ms(), 3_600_000);
        c.set_pair("log.retention.minutes=2").unwrap();
        assert_eq!(c.retention_ms(), 120_000);
        c.set_pair("log.retention.ms=-1").unwrap();
        assert_eq!(c.retention_ms(), -1);
        assert!(c.set_pair("log.cleanup.policy=compact,delete").is_ok());
        assert!(c.set_pair("log.cleanup.policy=shred").is_err());
        assert_eq!(parse_cleanup_policy("compact"), Some((false, true)));
    }
}
