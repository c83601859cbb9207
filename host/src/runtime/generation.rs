//! Generations: each load of a listener's guest (compiled, linked, its
//! checks passed) is a generation with its own instance pool. New
//! connections get the newest generation as soon as it is ready; a
//! connection keeps the generation it started with to its end, holding it
//! alive, so an old generation's code and pool slots are freed when its
//! last connection ends. With `--drain-timeout`, connections of a replaced
//! generation still open after that long are closed, spread over
//! `DRAIN_SPREAD` so their clients do not all reconnect at once.

use crate::imports::bindings::server::ServerPre;
use crate::imports::state::{GuestState, Policy};
use crate::runtime::pool::Pool;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use wasmtime::Engine;

/// Over how long a drained generation's remaining connections are closed.
pub const DRAIN_SPREAD: Duration = Duration::from_secs(5);

/// One loaded version of a listener's guest.
pub struct Generation {
    /// 1 for the guest loaded at start, then one more per reload.
    pub id: u64,
    /// The guest's file name, for log lines.
    pub guest: String,
    pub pool: Pool,
    /// The engine its pool's instances take slots of: held while any of
    /// its connections is open, which keeps the engine's epoch ticking.
    _engine: Arc<Engine>,
    /// Becomes true when a replaced generation's drain timeout has passed.
    drained: watch::Sender<bool>,
}

impl Generation {
    pub fn new(id: u64, guest: String, pre: ServerPre<GuestState>, policy: Arc<Policy>, engine: Arc<Engine>) -> Self {
        Generation { id, guest, pool: Pool::new(pre, policy), _engine: engine, drained: watch::Sender::new(false) }
    }

    /// Closes the generation's connections, spread over `DRAIN_SPREAD`
    /// (where `--drain-timeout` is set: without it nothing listens).
    pub fn drain(&self) {
        self.drained.send_replace(true);
    }

    /// Resolves when this generation has been drained and the connection
    /// numbered `seq` is due to close: connections are spread over
    /// `DRAIN_SPREAD` by their number.
    pub async fn drained(&self, seq: u64) {
        let mut drained = self.drained.subscribe();
        if drained.wait_for(|d| *d).await.is_err() {
            return std::future::pending().await;
        }
        let slot = (seq % 1000) as u32;
        tokio::time::sleep(DRAIN_SPREAD * slot / 1000).await;
    }
}

/// A listener's current generation, swapped atomically on reload: taking
/// it for a new connection is one atomic load and a reference count.
pub struct Current {
    current: ArcSwap<Generation>,
    drain_timeout: Option<Duration>,
}

impl Current {
    pub fn new(first: Generation, drain_timeout: Option<Duration>) -> Self {
        first.pool.policy().metrics.generation.set(first.id as i64);
        Current { current: ArcSwap::from_pointee(first), drain_timeout }
    }

    pub fn get(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    pub fn drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout
    }

    /// Makes `next`, the same guest and generation on a renewed pool, the
    /// one new connections get, and retires the one it replaces: its
    /// connections finish on it, never drained, as nothing changed for them.
    pub fn rebase(&self, next: Generation) {
        let old = self.current.swap(Arc::new(next));
        old.pool.retire();
    }

    /// Makes `next` the generation new connections get, and retires the
    /// one it replaces: its spare and idle instances are dropped now, its
    /// connections finish on it (or are closed after `--drain-timeout`).
    pub fn replace(&self, next: Generation) -> Arc<Generation> {
        next.pool.policy().metrics.generation.set(next.id as i64);
        let old = self.current.swap(Arc::new(next));
        old.pool.retire();
        if let Some(timeout) = self.drain_timeout {
            // Holds only a weak reference: a generation whose connections
            // all ended must not be kept alive by its drain timer.
            let weak = Arc::downgrade(&old);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(old) = weak.upgrade() {
                    tracing::info!(
                        "generation {} drained (--drain-timeout {timeout:?}): closing its connections over {:?}",
                        old.id,
                        DRAIN_SPREAD
                    );
                    old.drain();
                }
            });
        }
        old
    }
}
