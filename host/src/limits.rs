//! Per-connection limits: what one guest instance may use, and the small
//! types that enforce them inside a store.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most bytes one `recv` hands to a guest, whatever it asks for: the host
/// allocates the receive buffer, so a guest must not choose its size freely.
pub const MAX_RECV: u32 = 64 * 1024;

/// The most connections the instance pool can be sized for. Each pool slot
/// reserves address space for a linear memory (4 GiB plus guards), and
/// x86_64 user space is 128 TiB.
pub const MAX_POOL_SLOTS: u32 = 20_000;

/// Limits applied to every guest instance, one instance per connection.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: u32,
    pub max_memory: u64,
    pub cpu_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Option<Duration>,
    pub max_bytes_in: Option<u64>,
    pub max_bytes_out: Option<u64>,
    pub max_resources: u32,
    pub max_log_lines: u32,
    pub max_log_bytes: u64,
    /// Connections one instance may serve in turn; 1 means a fresh instance
    /// for every connection.
    pub connections_per_instance: u32,
}

impl Limits {
    /// Idle instances kept for reuse; each holds a pool slot.
    pub fn max_idle_instances(&self) -> u32 {
        if self.connections_per_instance > 1 {
            self.max_connections.min(256)
        } else {
            0
        }
    }
}

/// Enforces the linear-memory cap and remembers that it did, so a trap that
/// follows (a Rust guest aborts when allocation fails) can be reported as
/// the memory limit rather than as a bare `unreachable`.
pub struct MemoryGuard {
    pub max: usize,
    pub denied: bool,
}

impl wasmtime::ResourceLimiter for MemoryGuard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k entries is far beyond what a
        // protocol guest needs and keeps a table bomb small.
        Ok(desired <= 100_000)
    }
}

/// Measures a guest's own execution time: wall time since the instance
/// started, minus the time it spent in host calls that wait on the network
/// and the time it stood aside after an epoch yield while other connections
/// ran. What is left is time the guest was computing, or blocked in a WASI
/// call such as a sleep, which therefore counts against it too.
///
/// Two things enforce `--cpu-timeout` with it: the epoch callback, while the
/// guest computes, and `watch`, while it is blocked in WASI (epochs cannot
/// interrupt a guest parked in a host call).
pub struct CpuClock {
    shared: Arc<ClockState>,
}

struct ClockState {
    started: Instant,
    /// Nanoseconds not charged to the guest: finished waits and yields.
    excluded_ns: AtomicU64,
    /// When the wait on the peer now in progress began, as nanoseconds since
    /// `started` plus one; 0 when there is none.
    waiting_since: AtomicU64,
}

impl ClockState {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn guest_time(&self) -> Duration {
        let now = self.now_ns();
        let waiting = match self.waiting_since.load(Ordering::Relaxed) {
            0 => 0,
            since => now.saturating_sub(since - 1),
        };
        let excluded = self.excluded_ns.load(Ordering::Relaxed) + waiting;
        Duration::from_nanos(now.saturating_sub(excluded))
    }
}

/// Slack after the budget before `watch` acts, so that a computing guest is
/// caught by the epoch callback's precise interrupt first.
const WATCH_SLACK: Duration = Duration::from_millis(20);

impl CpuClock {
    pub fn start() -> Self {
        CpuClock {
            shared: Arc::new(ClockState {
                started: Instant::now(),
                excluded_ns: AtomicU64::new(0),
                waiting_since: AtomicU64::new(0),
            }),
        }
    }

    /// Marks the start of a wait on the peer, which is not charged.
    pub fn begin_wait(&self) -> Instant {
        let state = &self.shared;
        state.waiting_since.store(state.now_ns() + 1, Ordering::Relaxed);
        Instant::now()
    }

    /// Ends the wait that `begin_wait` started.
    pub fn end_wait(&self, began: Instant) {
        let state = &self.shared;
        state.excluded_ns.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        state.waiting_since.store(0, Ordering::Relaxed);
    }

    pub fn guest_time(&self) -> Duration {
        self.shared.guest_time()
    }

    /// A future that lets the executor run other tasks once and records how
    /// long that took, for the epoch callback to return as its yield.
    pub fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let state = self.shared.clone();
        Box::pin(async move {
            let from = Instant::now();
            tokio::task::yield_now().await;
            state.excluded_ns.fetch_add(from.elapsed().as_nanos() as u64, Ordering::Relaxed);
        })
    }

    /// Resolves once the guest has used more than `budget`. Meant to race
    /// the guest call: it wakes only when the budget could have run out,
    /// so an idle connection costs one timer firing per `budget`.
    pub fn watch(&self, budget: Duration) -> impl Future<Output = ()> + Send + 'static {
        let state = self.shared.clone();
        async move {
            loop {
                let used = state.guest_time();
                if used > budget + WATCH_SLACK {
                    return;
                }
                tokio::time::sleep(budget + WATCH_SLACK - used + Duration::from_millis(1)).await;
            }
        }
    }
}

/// Splits `64KiB` into 64 and `KiB` (the unit trimmed, possibly empty);
/// `None` without leading digits.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    Some((digits.parse().ok()?, unit.trim()))
}

/// Parses a size such as `16MiB`, `64K`, `1G` or `4096` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (n, unit) = split_number(text)
        .ok_or_else(|| format!("`{text}` is not a size (examples: 4096, 64KiB, 16MiB, 1GiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{text}` has an unknown unit (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large"))
}

/// A limit that may be `unlimited` (`None`) on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaybeLimit<T>(pub Option<T>);

/// Parses a size, or `unlimited`.
pub fn parse_optional_size(text: &str) -> Result<MaybeLimit<u64>, String> {
    if is_unlimited(text) {
        return Ok(MaybeLimit(None));
    }
    parse_size(text).map(|n| MaybeLimit(Some(n)))
}

/// Parses a duration such as `500ms`, `1s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = split_number(text)
        .ok_or_else(|| format!("`{text}` is not a duration (examples: 500ms, 1s, 2m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => return Err(format!("`{text}` needs a unit: ms, s, m or h")),
        _ => return Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err(format!("`{text}` is zero; give a positive duration"));
    }
    Ok(d)
}

/// Parses a duration, or `unlimited`.
pub fn parse_optional_duration(text: &str) -> Result<MaybeLimit<Duration>, String> {
    if is_unlimited(text) {
        return Ok(MaybeLimit(None));
    }
    parse_duration(text).map(|d| MaybeLimit(Some(d)))
}

fn is_unlimited(text: &str) -> bool {
    matches!(text.trim(), "unlimited" | "none")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_optional_size("unlimited"), Ok(MaybeLimit(None)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_optional_duration("unlimited"), Ok(MaybeLimit(None)));
    }
}
