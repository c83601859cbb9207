//! What one store holds, counted by the host, and its total bound
//! (`--kv-max-bytes`). Every backend charges a write here before making it:
//! a write that would grow the store past the bound is refused with a
//! `store full:` error, while reads, deletes and writes that do not grow it
//! go on. Without this the shared store is the one place a guest could make
//! the host hold memory without end, outside its own `--max-memory`.
//!
//! An entry costs its key, its value and [`ENTRY_OVERHEAD`], so a flood of
//! tiny entries is bounded too. The counts are exact (each change is one
//! atomic step); the gauges of `/metrics` follow them.

use crate::ops::metrics::KvMetrics;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// What the host counts for an entry beyond its key and value bytes: the
/// memory store's map slot (the key's and value's headers, the deadline,
/// the hash table's control byte and spare capacity) and the two
/// allocations' rounding, measured at about this much per entry. The
/// durable store counts the same, so the bound means the same on both.
pub const ENTRY_OVERHEAD: u64 = 96;

/// The cost of an entry of `key` and `value` bytes.
pub fn entry_cost(key: usize, value: usize) -> u64 {
    key as u64 + value as u64 + ENTRY_OVERHEAD
}

/// An episode of refusals ends once the store is back under this share of
/// its bound, so a store hovering at the bound logs one warning, not one
/// per write that happens to fit.
const RECOVERED_PERCENT: u64 = 90;

pub struct Usage {
    bytes: AtomicU64,
    keys: AtomicU64,
    max: AtomicU64,
    /// In an episode of refused writes (one warning each).
    full: AtomicBool,
    metrics: KvMetrics,
}

impl Usage {
    pub fn new(max: u64, metrics: KvMetrics) -> Usage {
        metrics.max_bytes.set(max as i64);
        Usage {
            bytes: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            max: AtomicU64::new(max),
            full: false.into(),
            metrics,
        }
    }

    /// A new bound (a reload of `host serve` that kept the store's data).
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Relaxed);
        self.metrics.max_bytes.set(max as i64);
    }

    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    #[cfg(test)]
    pub fn keys(&self) -> u64 {
        self.keys.load(Relaxed)
    }

    /// Counts what a store opened with data already holds.
    pub fn found(&self, bytes: u64, keys: u64) {
        self.bytes.fetch_add(bytes, Relaxed);
        self.keys.fetch_add(keys, Relaxed);
        self.metrics.bytes.inc_by(bytes as i64);
        self.metrics.keys.inc_by(keys as i64);
    }

    /// Charges a write that replaces an entry costing `old` (0: none) with
    /// one costing `new`: refused with the guest's `store full:` message if
    /// it grows the store past its bound, else counted.
    pub fn replace(&self, old: u64, new: u64) -> Result<(), String> {
        // A write of the same size (a counter, a same-length value) touches
        // no counter.
        if new > old {
            self.grow(new - old)?;
        } else if old > new {
            self.shrink(old - new);
        }
        if old == 0 {
            self.keys.fetch_add(1, Relaxed);
            self.metrics.keys.inc();
        }
        Ok(())
    }

    /// Counts an entry costing `cost` that was removed.
    pub fn removed(&self, cost: u64) {
        self.shrink(cost);
        self.keys.fetch_sub(1, Relaxed);
        self.metrics.keys.dec();
    }

    fn grow(&self, by: u64) -> Result<(), String> {
        let max = self.max.load(Relaxed);
        let mut now = self.bytes.load(Relaxed);
        loop {
            let next = now.saturating_add(by);
            if next > max {
                return Err(self.refuse(now, by, max));
            }
            match self.bytes.compare_exchange_weak(now, next, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(actual) => now = actual,
            }
        }
        self.metrics.bytes.inc_by(by as i64);
        Ok(())
    }

    fn shrink(&self, by: u64) {
        let now = self.bytes.fetch_sub(by, Relaxed) - by;
        self.metrics.bytes.dec_by(by as i64);
        let max = self.max.load(Relaxed);
        if self.full.load(Relaxed) && now < max / 100 * RECOVERED_PERCENT && self.full.swap(false, Relaxed) {
            tracing::info!(
                "key-value store: {now} of {max} bytes held (--kv-max-bytes); writes that grow it are accepted again"
            );
        }
    }

    /// Counts a refused write, warns once per episode, and says why.
    fn refuse(&self, now: u64, by: u64, max: u64) -> String {
        self.metrics.refused_writes.inc();
        if !self.full.swap(true, Relaxed) {
            tracing::warn!(
                "key-value store full: {now} of {max} bytes held (--kv-max-bytes); writes that grow it are \
                 refused until it shrinks below {RECOVERED_PERCENT}%"
            );
        }
        format!(
            "store full: a write of {by} more bytes would pass the store's bound of {max} bytes (--kv-max-bytes); \
             it holds {now}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_bound_is_refused_and_shrinking_is_not() {
        let usage = Usage::new(1000, KvMetrics::default());
        usage.replace(0, 600).unwrap();
        let err = usage.replace(0, 500).unwrap_err();
        assert!(err.starts_with("store full:") && err.contains("1000") && err.contains("--kv-max-bytes"), "{err}");
        assert_eq!((usage.bytes(), usage.keys()), (600, 1));
        // Replacing with something smaller or equal always works.
        usage.replace(600, 600).unwrap();
        usage.replace(600, 100).unwrap();
        assert_eq!((usage.bytes(), usage.keys()), (100, 1));
        usage.replace(0, 900).unwrap();
        usage.removed(100);
        assert_eq!((usage.bytes(), usage.keys()), (900, 1));
    }

    #[test]
    fn the_metrics_follow_and_count_refusals() {
        let metrics = KvMetrics::default();
        let usage = Usage::new(200, metrics.clone());
        usage.replace(0, 150).unwrap();
        assert!(usage.replace(0, 150).is_err());
        assert!(usage.replace(150, 250).is_err());
        assert_eq!(metrics.bytes.get(), 150);
        assert_eq!(metrics.keys.get(), 1);
        assert_eq!(metrics.refused_writes.get(), 2);
        assert_eq!(metrics.max_bytes.get(), 200);
        usage.removed(150);
        assert_eq!((metrics.bytes.get(), metrics.keys.get()), (0, 0));
    }

    #[test]
    fn exact_under_threads() {
        let usage = std::sync::Arc::new(Usage::new(10_000, KvMetrics::default()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let usage = usage.clone();
                std::thread::spawn(move || (0..1000).filter(|_| usage.replace(0, 7).is_ok()).count())
            })
            .collect();
        let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(accepted, 10_000 / 7);
        assert_eq!(usage.bytes(), accepted as u64 * 7);
    }
}
