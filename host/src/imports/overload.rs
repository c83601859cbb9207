//! Overload protection and the signals a listener sends to its connections.
//!
//! The policy, as users of nginx and Envoy know it:
//! - Past a high-water mark of open connections (`--overload-threshold`,
//!   80% of `--max-connections` by default) the host is overloaded, and every
//!   new wait on a peer is bounded by `--overload-idle-timeout` (2 s) instead
//!   of `--idle-timeout`, as Envoy's overload manager shrinks timeouts.
//! - At `--max-connections`, the connection that has waited on its peer the
//!   longest (at least `EVICT_MIN_IDLE`) is closed to admit a new one, as
//!   nginx closes idle keep-alive connections when it runs out.
//!
//! A slow client that trickles bytes (slowloris) therefore holds its
//! instance only briefly once connections run short, and good clients are
//! still admitted.
//!
//! Every live connection has a `Signal`, registered in the listener's
//! `Roster`, through which the listener reaches a connection that is waiting
//! on its peer: to evict it, or at shutdown (see `Interrupt`).

use crate::config::limits::Limits;
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

/// A connection must have waited at least this long on its peer to be
/// closed for a newcomer: one in the middle of a quick exchange is not idle.
pub const EVICT_MIN_IDLE: Duration = Duration::from_secs(1);

/// The overload settings of one listener, and its live connections.
#[derive(Debug)]
pub struct OverloadPolicy {
    /// Open connections past which the idle timeout shrinks.
    pub high_water: u32,
    pub idle_timeout: Duration,
    pub roster: Roster,
}

impl OverloadPolicy {
    /// Overloaded past `threshold` percent of `limits.max_connections`
    /// (100: never), when waits are bounded by `idle_timeout`.
    pub fn new(threshold: u8, idle_timeout: Duration, limits: &Limits) -> Self {
        let high_water =
            if threshold >= 100 { u32::MAX } else { (limits.max_connections as u64 * threshold as u64 / 100) as u32 };
        OverloadPolicy { high_water, idle_timeout, roster: Roster::default() }
    }

    /// The idle timeout for a wait that starts now.
    pub fn idle_timeout(&self, normal: Duration) -> Duration {
        if self.roster.open() > self.high_water {
            normal.min(self.idle_timeout)
        } else {
            normal
        }
    }
}

/// Why the listener interrupted a connection's wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Interrupt {
    /// The host is shutting down: a `recv` at a request boundary (the guest
    /// answered what it received and waits for more) ends with `closed`.
    Shutdown = 1,
    /// Closed to admit a new connection while at `--max-connections`.
    Evicted = 2,
}

/// What the listener and one connection share.
#[derive(Debug, Default)]
pub struct Signal {
    /// When the connection began its current wait on the peer, in
    /// nanoseconds since `origin()` plus one; 0 when it is not waiting.
    waiting_since: AtomicU64,
    /// 0, or an `Interrupt` as its `u8`.
    interrupt: AtomicU8,
    /// The task waiting on the peer, woken when an interrupt is raised.
    /// Lock-free: registering costs each wait two atomic operations.
    waker: AtomicWaker,
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Signal {
    /// Marks the connection as waiting on its peer since `at` (the time the
    /// CPU clock already read, so as not to read it twice).
    pub fn begin_wait(&self, at: Instant) {
        let since = at.saturating_duration_since(origin()).as_nanos() as u64;
        self.waiting_since.store(since + 1, Ordering::Relaxed);
    }

    pub fn end_wait(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// How long the connection has been waiting on its peer, if it is.
    fn idle_for(&self, now_ns: u64) -> Option<Duration> {
        match self.waiting_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_nanos(now_ns.saturating_sub(since - 1))),
        }
    }

    pub fn interrupt(&self) -> Option<Interrupt> {
        match self.interrupt.load(Ordering::Acquire) {
            1 => Some(Interrupt::Shutdown),
            2 => Some(Interrupt::Evicted),
            _ => None,
        }
    }

    fn raise(&self, why: Interrupt) {
        // Eviction outranks shutdown: an evicted connection stays evicted.
        self.interrupt.fetch_max(why as u8, Ordering::Release);
        // A wait that starts later sees the flag itself.
        self.waker.wake();
    }

    /// Resolves when the listener raises an interrupt (possibly one raised
    /// before this was called).
    pub fn raised(&self) -> impl Future<Output = Interrupt> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(why) = self.interrupt() {
                return Poll::Ready(why);
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: seen here.
            match self.interrupt() {
                Some(why) => Poll::Ready(why),
                None => Poll::Pending,
            }
        })
    }
}

/// The live connections of one listener.
#[derive(Debug, Default)]
pub struct Roster {
    next_id: AtomicU64,
    open: AtomicU32,
    live: Mutex<HashMap<u64, Arc<Signal>>>,
}

/// A connection's place in the roster; leaves it when dropped, whatever way
/// the connection's task ends.
pub struct Registration<'a> {
    roster: &'a Roster,
    id: u64,
    pub signal: Arc<Signal>,
}

impl Registration<'_> {
    /// The connection's number in its listener, in order of arrival.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.roster.live.lock().unwrap().remove(&self.id);
        self.roster.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Roster {
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn register(&self) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::default());
        self.live.lock().unwrap().insert(id, signal.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        Registration { roster: self, id, signal }
    }

    /// Interrupts the connection that has waited on its peer the longest, if
    /// one has waited at least `EVICT_MIN_IDLE`; returns how long it waited.
    pub fn evict_longest_idle(&self) -> Option<Duration> {
        let now = origin().elapsed().as_nanos() as u64;
        let live = self.live.lock().unwrap();
        let (signal, idle) = live
            .values()
            .filter(|s| s.interrupt().is_none())
            .filter_map(|s| s.idle_for(now).map(|idle| (s, idle)))
            .max_by_key(|(_, idle)| *idle)?;
        if idle < EVICT_MIN_IDLE {
            return None;
        }
        signal.raise(Interrupt::Evicted);
        Some(idle)
    }

    /// Tells every live connection that the host is shutting down.
    pub fn shut_down(&self) {
        for signal in self.live.lock().unwrap().values() {
            signal.raise(Interrupt::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_idle_connection_is_evicted_first() {
        let roster = Roster::default();
        let (a, b, c) = (roster.register(), roster.register(), roster.register());
        assert_eq!(roster.open(), 3);
        a.signal.begin_wait(Instant::now());
        std::thread::sleep(EVICT_MIN_IDLE / 2);
        b.signal.begin_wait(Instant::now());
        // Nobody has been idle long enough yet.
        assert_eq!(roster.evict_longest_idle(), None);
        std::thread::sleep(EVICT_MIN_IDLE / 2 + Duration::from_millis(50));
        assert!(roster.evict_longest_idle().is_some());
        assert_eq!(a.signal.interrupt(), Some(Interrupt::Evicted));
        assert_eq!(b.signal.interrupt(), None);
        // `c` is computing, not waiting: never a candidate.
        assert_eq!(c.signal.interrupt(), None);
        drop(a);
        assert_eq!(roster.open(), 2);
        roster.shut_down();
        assert_eq!(b.signal.interrupt(), Some(Interrupt::Shutdown));
    }

    #[tokio::test]
    async fn an_interrupt_raised_before_the_wait_is_seen() {
        let roster = Roster::default();
        let conn = roster.register();
        roster.shut_down();
        let why = tokio::time::timeout(Duration::from_secs(1), conn.signal.raised()).await;
        assert_eq!(why.ok(), Some(Interrupt::Shutdown));
    }

    #[test]
    fn the_idle_timeout_shrinks_past_the_high_water_mark() {
        // The default threshold and overload idle timeout, on 10 connections.
        let limits = Limits {
            max_connections: 10,
            max_memory: 16 << 20,
            cpu_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            max_lifetime: None,
            max_bytes_in: None,
            max_bytes_out: None,
            max_resources: 64,
            max_log_lines: 100,
            max_log_bytes: 64 << 10,
            connections_per_instance: 1,
        };
        let policy = OverloadPolicy::new(80, Duration::from_secs(2), &limits);
        let normal = limits.idle_timeout;
        let held: Vec<_> = (0..8).map(|_| policy.roster.register()).collect();
        assert_eq!(policy.idle_timeout(normal), normal, "8 of 10 is the mark, not past it");
        let ninth = policy.roster.register();
        assert_eq!(policy.idle_timeout(normal), Duration::from_secs(2));
        drop((held, ninth));
        assert_eq!(policy.idle_timeout(normal), normal);
    }
}
