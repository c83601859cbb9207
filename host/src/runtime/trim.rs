//! Giving memory back after a burst. A pool slot keeps the pages its last
//! instance dirtied (up to the engine's keep-resident bounds), its guest's
//! memory image and its fiber stack: the next instance in the slot then
//! starts without page faults. But a burst of N connections leaves N slots
//! holding that memory (about 45 KiB each) long after they closed, and
//! wasmtime cannot return an idle slot's pages on its own. So once many
//! slots sit idle, the pool is renewed: new connections get a fresh engine
//! and pool (each listener's generation moved there as it is, same number,
//! same compiled guest), and the old engine, pool and all, is unmapped when
//! its last connection ends. Connections still open on it are not touched.

use crate::guest::engine::EpochTicker;
use crate::guest::linker::Runtime;
use crate::runtime::generation::Current;
use crate::runtime::prepare::Shared;
use crate::runtime::reload::Loader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// How often the pool's use is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Slots that held an instance since the pool was made (or renewed) and
/// hold none now, past which the pool is renewed: at about 45 KiB each,
/// what stays resident after a burst is bounded near 23 MiB.
pub const IDLE_SLOTS: i64 = 512;

/// Whether the pool should be renewed now: enough slots sit idle, and no
/// engine replaced earlier still serves connections (two pools at most,
/// each reserving its whole address space).
pub fn due(ticker: &EpochTicker) -> bool {
    let metrics = crate::ops::metrics::global();
    let idle = metrics.slots_peak.load(Ordering::Relaxed) - metrics.slots_in_use.get();
    idle >= IDLE_SLOTS && ticker.engines() == 1
}

/// Said once: every burst would say it again.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Why a new pool of `capacity` slots would not fit the kernel's limit on
/// memory mappings now, if it would not. Each of its fiber stacks is two
/// mappings (the stack and its guard page), and the old pool's slots keep
/// theirs (about four each) until its last connection ends.
fn mappings_short(capacity: u32) -> Option<String> {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?.trim().parse().ok()?;
    let used = std::fs::read("/proc/self/maps").ok()?.iter().filter(|&&b| b == b'\n').count();
    // Room for the new pool's first connections too.
    let needed = used + 2 * capacity as usize + 4 * 1024;
    (needed > limit).then(|| {
        format!(
            "it would take {needed} memory mappings, and vm.max_map_count is {limit}; \
             raise it (sysctl vm.max_map_count=262144) to serve bursts of many connections"
        )
    })
}

/// Renews the pool: a new engine for `shared`, ticked by `ticker`, and
/// every listener's current generation moved onto it.
pub async fn renew<'a>(
    shared: &Shared,
    ticker: &EpochTicker,
    listeners: impl Iterator<Item = (&'a Loader, &'a Current, &'a tracing::Span)>,
) {
    let metrics = crate::ops::metrics::global();
    let (peak, in_use) = (metrics.slots_peak.load(Ordering::Relaxed), metrics.slots_in_use.get());
    // Counted from here: the next renewal waits for the new pool's own idle
    // slots (the old pool's connections ending count too, once).
    metrics.slots_peak.store(in_use, Ordering::Relaxed);
    if let Some(short) = mappings_short(shared.capacity()) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot renew the instance pool, the current one keeps its memory: {short}");
        }
        return;
    }
    let runtime: Runtime = match shared.renew() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!("cannot renew the instance pool, the current one keeps its memory: {e:#}");
            return;
        }
    };
    ticker.tick(&runtime.engine);
    for (loader, current, span) in listeners {
        let moved = loader.move_to(current, runtime.clone()).instrument(span.clone()).await;
        if let Err(e) = moved {
            span.in_scope(|| tracing::error!("cannot move to the renewed pool, the current one keeps serving: {e:#}"));
        }
    }
    metrics.pool_renewals.inc();
    // What the burst's connections allocated is free by now, but held by
    // the workers that freed it.
    crate::ops::heap::request();
    for _ in 0..tokio::runtime::Handle::current().metrics().num_workers() {
        // A task for each idle worker: it wakes, runs it, parks again and
        // releases then, instead of at its next connection.
        tokio::spawn(async {});
    }
    tracing::info!(
        "instance pool renewed: {} of the {peak} slots used since it was made were idle; \
         their memory is returned as their last connections end",
        peak - in_use
    );
}
