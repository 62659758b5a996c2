//! The shard's memory for log data: the tail cache budget (shared by every partition log of
//! the shard, evicted least recently used partition first) and the bound on appended bytes not
//! yet written to the device (producers wait for room, they are never refused).
//!
//! Each shard is one thread, so the accounting is thread-local: no atomics, no locks, nothing
//! shared between cores. Owns only counters and the list of the shard's logs; the logs own
//! their cached batches and trim them when asked.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use event_listener::Event;

use super::PartitionLog;

/// Evictions free down to this fraction of the budget (in eighths), so they come in batches.
const EVICT_TO_EIGHTHS: usize = 7;

struct ShardMemory {
    cache_limit: usize,
    cache_used: usize,
    unwritten_limit: usize,
    unwritten: usize,
    logs: Vec<Weak<PartitionLog>>,
    tick: u64,
}

thread_local! {
    static MEMORY: RefCell<ShardMemory> = const { RefCell::new(ShardMemory {
        cache_limit: usize::MAX,
        cache_used: 0,
        unwritten_limit: usize::MAX,
        unwritten: 0,
        logs: Vec::new(),
        tick: 0,
    }) };
    static ROOM: Event = Event::new();
}

/// Sets this shard's budgets (called once when the shard starts).
pub fn set_limits(cache_bytes: usize, unwritten_bytes: usize) {
    MEMORY.with_borrow_mut(|m| {
        m.cache_limit = cache_bytes;
        m.unwritten_limit = unwritten_bytes.max(1);
    });
}

/// Bytes held by the tail cache of this shard, and its budget.
pub fn cache_usage() -> (usize, usize) {
    MEMORY.with_borrow(|m| (m.cache_used, m.cache_limit))
}

pub(crate) fn register(log: &Rc<PartitionLog>) {
    MEMORY.with_borrow_mut(|m| {
        m.logs.retain(|w| w.strong_count() > 0);
        m.logs.push(Rc::downgrade(log));
    });
}

/// A use stamp for LRU: greater is more recent.
pub(crate) fn touch() -> u64 {
    MEMORY.with_borrow_mut(|m| {
        m.tick += 1;
        m.tick
    })
}

/// Appended bytes now wait for the device (they enter the tail cache once written).
pub(crate) fn on_append(bytes: usize) {
    MEMORY.with_borrow_mut(|m| m.unwritten += bytes);
}

/// Written bytes entered the tail cache, holding `charge` bytes of memory.
pub(crate) fn on_cached(charge: usize) {
    MEMORY.with_borrow_mut(|m| m.cache_used += charge);
}

pub(crate) fn on_written(bytes: usize) {
    let wake = MEMORY.with_borrow_mut(|m| {
        let was_full = m.unwritten >= m.unwritten_limit;
        m.unwritten = m.unwritten.saturating_sub(bytes);
        was_full && m.unwritten < m.unwritten_limit
    });
    if wake {
        ROOM.with(|e| e.notify(usize::MAX));
    }
}

pub(crate) fn on_evicted(bytes: usize) {
    MEMORY.with_borrow_mut(|m| m.cache_used = m.cache_used.saturating_sub(bytes));
}

/// Waits while the shard holds more appended-but-unwritten bytes than its budget: the
/// connection stops reading requests until the device catches up (backpressure).
pub async fn wait_for_write_room() {
    loop {
        let listener = ROOM.with(|e| e.listen());
        if MEMORY.with_borrow(|m| m.unwritten < m.unwritten_limit) {
            return;
        }
        listener.await;
    }
}

/// Brings the tail cache back under budget, evicting the least recently used partitions'
/// oldest written batches first.
pub(crate) fn enforce() {
    let victims = MEMORY.with_borrow_mut(|m| {
        if m.cache_used <= m.cache_limit {
            return None;
        }
        let target = m.cache_limit / 8 * EVICT_TO_EIGHTHS;
        let mut logs: Vec<Rc<PartitionLog>> = m.logs.iter().filter_map(|w| w.upgrade()).collect();
        logs.sort_by_key(|l| l.last_used());
        Some((logs, m.cache_used - target))
    });
    let Some((logs, mut to_free)) = victims else { return };
    for log in logs {
        if to_free == 0 {
            break;
        }
        to_free = to_free.saturating_sub(log.evict_cached(to_free));
    }
}
