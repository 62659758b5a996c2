//! Strand: a Kafka-compatible message broker, thread-per-core on io_uring.
//!
//! The crate is laid out by responsibility:
//! - [`protocol`]: bytes on the wire (framing, headers, versions, error codes);
//! - [`handlers`]: one module per Kafka API;
//! - [`routing`]: the messages shards exchange and the router that carries them;
//! - [`shard`]: a core's state and the owner-side execution of routed work;
//! - [`storage`]: partition logs, segments, indexes (knows nothing of Kafka requests);
//! - [`groups`]: consumer-group coordinators and committed offsets;
//! - [`metadata`]: topics, placement and their persistence;
//! - [`server`]: process start-up, executors, listeners and connections;
//! - [`config`]: settings with Kafka's names;
//! - [`perf`]: the load generator (`strand perf produce|consume|sink`).
//! - [`fuzzing`]: fuzz targets over the parsers of untrusted bytes (cargo-fuzz and a stable replay test).

// Every unsafe block and impl says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod fuzzing;
pub mod groups;
pub mod handlers;
pub mod metadata;
pub mod perf;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod shard;
pub mod storage;
