//! Consumer groups: the coordinator of each shard and the persistence of committed offsets.
//!
//! A group id hashes to one coordinator shard; every request for that group is routed there.
//! When the shard count changes, groups are moved to their new coordinator's log at start-up
//! (`migrate`).

pub mod coordinator;
pub mod migrate;
pub mod store;

pub use coordinator::GroupCoordinator;

/// The shard coordinating `group_id` (FNV-1a of the id, modulo the shard count).
pub fn coordinator_shard(group_id: &str, shards: usize) -> usize {
    let h = group_id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    (h % shards.max(1) as u64) as usize
}
