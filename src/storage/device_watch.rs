//! Slow device operations: a partition writer's DMA write or fdatasync that took far longer than
//! a device should, reported in the log (rate-limited per shard) and counted.
//!
//! Owns only the per-shard warning state and a process-wide counter. It does not time anything
//! itself and never slows or fails a write: the writer measures, this module decides whether to
//! say so. When acks=all tail latency is high, these warnings tell the device's stalls apart
//! from the broker's own delays (on the CI VM's virtio disk, single 256 KiB writes stall for
//! 30-120 ms now and then, with the broker idle otherwise).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

/// A device write or fdatasync taking at least this long is a slow device operation (a healthy
/// NVMe or virtio disk answers a few hundred KiB in well under a millisecond).
pub const SLOW_DEVICE_OP: Duration = Duration::from_millis(20);
/// At most one slow-device warning per shard in this period; the others are counted into the
/// next one.
pub const SLOW_DEVICE_WARN_EVERY: Duration = Duration::from_secs(10);

/// Slow device operations seen by this process (all shards), for tests and benchmarks.
pub static SLOW_DEVICE_OPS: AtomicU64 = AtomicU64::new(0);

/// Rate limiter of one shard's warnings.
#[derive(Default)]
pub struct SlowOpWarnings {
    last_warn: Option<Instant>,
    /// Slow operations since the last warning that were not logged.
    unreported: u64,
}

impl SlowOpWarnings {
    /// Accounts an operation that took `took`, finished at `now`. Returns `Some(n)` when it must
    /// be logged, `n` being the slow operations not logged since the previous warning.
    pub fn record(&mut self, now: Instant, took: Duration) -> Option<u64> {
        if took < SLOW_DEVICE_OP {
            return None;
        }
        match self.last_warn {
            Some(at) if now.duration_since(at) < SLOW_DEVICE_WARN_EVERY => {
                self.unreported += 1;
                None
            }
            _ => {
                self.last_warn = Some(now);
                Some(std::mem::take(&mut self.unreported))
            }
        }
    }
}

thread_local! {
    static WARNINGS: RefCell<SlowOpWarnings> = RefCell::new(SlowOpWarnings::default());
}

/// Reports a device operation of a partition that started at `started`: `op` is "write" (with
/// the fallocate of a growing segment; `bytes` written) or "fdatasync" (`bytes` 0). Logs it if
/// it was slow and this shard logged no warning lately.
pub fn observe(op: &'static str, topic: &str, partition: i32, bytes: usize, started: Instant) {
    let now = Instant::now();
    let took = now.duration_since(started);
    if took < SLOW_DEVICE_OP {
        return;
    }
    SLOW_DEVICE_OPS.fetch_add(1, Ordering::Relaxed);
    if let Some(unreported) = WARNINGS.with(|w| w.borrow_mut().record(now, took)) {
        warn!(
            topic,
            partition,
            bytes,
            took_ms = took.as_millis() as u64,
            unreported_since_last_warning = unreported,
            "slow device: a {op} took over {} ms; producers waiting on it see that latency",
            SLOW_DEVICE_OP.as_millis()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_operations_are_never_reported() {
        let mut w = SlowOpWarnings::default();
        let t = Instant::now();
        assert_eq!(w.record(t, SLOW_DEVICE_OP - Duration::from_micros(1)), None);
        assert_eq!(w.record(t, Duration::ZERO), None);
        assert_eq!(w.unreported, 0);
    }

    #[test]
    fn slow_operations_warn_once_per_period_and_count_the_rest() {
        let mut w = SlowOpWarnings::default();
        let t = Instant::now();
        let slow = SLOW_DEVICE_OP * 2;
        assert_eq!(w.record(t, slow), Some(0));
        assert_eq!(w.record(t + Duration::from_secs(1), slow), None);
        assert_eq!(w.record(t + Duration::from_secs(2), SLOW_DEVICE_OP), None);
        // A fast operation in between is not counted.
        assert_eq!(w.record(t + Duration::from_secs(3), Duration::from_millis(1)), None);
        assert_eq!(w.record(t + SLOW_DEVICE_WARN_EVERY, slow), Some(2));
        assert_eq!(w.record(t + SLOW_DEVICE_WARN_EVERY + Duration::from_secs(1), slow), None);
    }
}
