//! The CPU budget (`--cpu-timeout`): how a guest's own execution time is
//! measured, and the two things that stop it when the budget is spent.
//!
//! - While the guest computes, the engine's epoch (advanced by the ticker in
//!   `guest/engine.rs`) reaches the store's deadline every tick; the callback
//!   installed by `install` checks the budget there, interrupts the guest
//!   past it, and otherwise yields so one busy guest cannot starve the other
//!   connections on its thread.
//! - Epochs cannot interrupt a guest parked in an async host call, so a
//!   guest blocked in a WASI call (a sleep) is caught by `CpuClock::watch`,
//!   which the connection's task races against the guest call.

use crate::imports::state::GuestState;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, UpdateDeadline};

/// Epoch ticks between checks of a running guest; see `engine::EPOCH_TICK`.
pub const EPOCH_TICKS_PER_CHECK: u64 = 1;

/// Slack after the budget before `watch` acts, so that a computing guest is
/// caught by the epoch callback's precise interrupt first.
const WATCH_SLACK: Duration = Duration::from_millis(20);

/// Arms a store's epoch deadline and the callback that enforces the budget.
pub fn install(store: &mut Store<GuestState>) {
    store.set_epoch_deadline(EPOCH_TICKS_PER_CHECK);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        if state.clock.guest_time() > state.policy.limits.cpu_timeout {
            state.clock.exhausted = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::YieldCustom(EPOCH_TICKS_PER_CHECK, state.clock.yield_now()))
    });
}

/// Measures a guest's own execution time: wall time since the instance
/// started, minus the time it spent in host calls that wait on the network
/// and the time it stood aside after an epoch yield while other connections
/// ran. What is left is time the guest was computing, or blocked in a WASI
/// call such as a sleep, which therefore counts against it too.
pub struct CpuClock {
    shared: Arc<ClockState>,
    /// Set when the epoch callback interrupted the guest for CPU time.
    exhausted: bool,
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

impl CpuClock {
    pub fn start() -> Self {
        CpuClock {
            shared: Arc::new(ClockState {
                started: Instant::now(),
                excluded_ns: AtomicU64::new(0),
                waiting_since: AtomicU64::new(0),
            }),
            exhausted: false,
        }
    }

    /// Whether the guest was interrupted for using up `--cpu-timeout`.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Marks the start of a wait on the peer, which is not charged.
    pub fn begin_wait(&self) -> Instant {
        // One reading of the clock serves both: a connection brackets every
        // host call that does I/O.
        let now = Instant::now();
        let state = &self.shared;
        let since = now.saturating_duration_since(state.started).as_nanos() as u64;
        state.waiting_since.store(since + 1, Ordering::Relaxed);
        now
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn waits_on_the_peer_are_not_charged() {
        let clock = CpuClock::start();
        spin(Duration::from_millis(30));
        let began = clock.begin_wait();
        std::thread::sleep(Duration::from_millis(200));
        // During the wait, the time it has lasted so far is not charged.
        assert!(clock.guest_time() < Duration::from_millis(150), "{:?}", clock.guest_time());
        clock.end_wait(began);
        let used = clock.guest_time();
        assert!(used >= Duration::from_millis(30), "computing is charged: {used:?}");
        assert!(used < Duration::from_millis(150), "the wait is not: {used:?}");
    }

    #[test]
    fn time_outside_waits_is_charged() {
        // A guest blocked in a WASI call (here: a sleep outside any wait)
        // is charged, which is what lets `watch` stop it.
        let clock = CpuClock::start();
        std::thread::sleep(Duration::from_millis(100));
        assert!(clock.guest_time() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn watch_fires_only_past_the_budget() {
        let clock = CpuClock::start();
        let began = clock.begin_wait();
        // Waiting on the peer: a 50 ms budget is not spent in 300 ms.
        let watch = clock.watch(Duration::from_millis(50));
        tokio::pin!(watch);
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut watch).await.is_err());
        // Blocked outside a wait: the budget runs out and the watch fires.
        clock.end_wait(began);
        tokio::time::timeout(Duration::from_secs(5), watch).await.expect("watch fired");
    }

    #[tokio::test]
    async fn yields_are_not_charged() {
        let clock = CpuClock::start();
        let hog = tokio::spawn(async { spin(Duration::from_millis(100)) });
        // On a current-thread runtime the hog runs during the yield.
        clock.yield_now().await;
        hog.await.unwrap();
        assert!(clock.guest_time() < Duration::from_millis(50), "{:?}", clock.guest_time());
    }
}
