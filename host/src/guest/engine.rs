//! The wasm engine, built once per process: Cranelift, epoch interruption,
//! and a pooling allocator sized by the caller; and the epoch ticker that
//! drives the CPU budget (see `imports/budget.rs`).

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; a guest computing without pause is checked
/// against its CPU budget (and yields) this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances, memories and tables one guest component may create. A
/// Rust guest built by wit-bindgen instantiates 3 core modules (its own, and
/// wit-component's shim and fixup modules) with one memory and a shim
/// table; the rest is headroom.
const CORE_INSTANCES_PER_GUEST: u32 = 16;
const TABLES_PER_GUEST: u32 = 4;

/// Dirty bytes of a freed linear memory (and table) reset in place rather
/// than returned to the kernel. A seed-exchange guest dirties a few pages.
const KEEP_RESIDENT: usize = 256 << 10;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Unused slots past which one last used by another guest (an old
/// generation) is reused before a never-used one.
const WARM_SLOTS: u32 = 16;

/// Freed instance slots returned to the kernel per `madvise` batch. A slot
/// waiting in a batch cannot be reused, so small pools use smaller batches.
const DECOMMIT_BATCH: usize = 16;

/// The settings every engine shares, whatever its allocator: they decide
/// the compiled code, so a compiled guest (a cache entry, a `.cwasm` from
/// `host compile`) fits every engine. wasmtime's check of a precompiled
/// guest compares these, never the pooling allocator's sizes.
pub fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config
}

/// An engine whose pooling allocator has `slots` instance slots, each with
/// linear memory up to `max_memory` bytes.
pub fn build(slots: u32, max_memory: u64) -> Result<Engine> {
    crate::ops::metrics::global().slots_capacity.set(slots as i64);
    let pagemap = PoolingAllocationConfig::is_pagemap_scan_available();
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_GUEST)
        .max_core_instances_per_component(CORE_INSTANCES_PER_GUEST)
        .total_memories(slots)
        .max_memories_per_component(1)
        .total_tables(slots * TABLES_PER_GUEST)
        .max_tables_per_component(TABLES_PER_GUEST)
        .total_stacks(slots)
        .max_memory_size(max_memory as usize)
        // A freed slot is reset by rewriting only the pages its last
        // instance dirtied (found with the PAGEMAP_SCAN ioctl, Linux 6.7+),
        // up to KEEP_RESIDENT bytes, instead of returning them all to the
        // kernel: the next instance in the slot then starts without page
        // faults. Slots keep those pages while unused, so resident memory
        // follows the highest concurrency seen, not per connection ever
        // served, until a burst's idle slots are given back by renewing
        // the pool (runtime/trim.rs). Without PAGEMAP_SCAN, wasmtime would
        // memset the whole KEEP_RESIDENT prefix on every free, which costs
        // more than it saves.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(if pagemap { KEEP_RESIDENT } else { 0 })
        .table_keep_resident(if pagemap { TABLE_KEEP_RESIDENT } else { 0 })
        // An instance takes a slot last used by the same guest (its image
        // still mapped) whenever there is one, whatever this is. It matters
        // when there is none, as after a swap: past this many unused warm
        // slots, a new generation reuses the least recently used slot of an
        // old one (whose pages are resident) instead of touching a fresh
        // slot, so resident memory does not grow with every swap.
        .max_unused_warm_slots(WARM_SLOTS.min(slots))
        // What is still returned to the kernel goes in batches, saving a
        // madvise call and a TLB flush per connection.
        .decommit_batch_size(DECOMMIT_BATCH.min((slots as usize / 4).max(1)));
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(anyhow::Error::from).context("cannot create the wasm engine")
}

/// An engine that only compiles and inspects guests (`host inspect`, `host
/// compile`): no instance pool to reserve.
pub fn for_inspection() -> Result<Engine> {
    Engine::new(&base_config()).map_err(anyhow::Error::from).context("cannot create the wasm engine")
}

/// Advances the epoch of every engine it was given, every `EPOCH_TICK`,
/// until dropped. It holds them weakly: an engine replaced by a renewed
/// pool (see `runtime/trim.rs`) is ticked while connections still run on
/// it, and freed, pool and all, when the last of them ends.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    engines: Arc<Mutex<Vec<Weak<Engine>>>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start() -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engines: Arc<Mutex<Vec<Weak<Engine>>>> = Arc::default();
        let (flag, ticked) = (stop.clone(), engines.clone());
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticked.lock().unwrap().retain(|engine| match engine.upgrade() {
                        Some(engine) => {
                            engine.increment_epoch();
                            true
                        }
                        None => false,
                    });
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(EpochTicker { stop, engines, thread: Some(thread) })
    }

    /// Ticks `engine` for as long as anything holds it.
    pub fn tick(&self, engine: &Arc<Engine>) {
        self.engines.lock().unwrap().push(Arc::downgrade(engine));
    }

    /// Engines still held, the newest included.
    pub fn engines(&self) -> usize {
        let mut engines = self.engines.lock().unwrap();
        engines.retain(|engine| engine.strong_count() > 0);
        engines.len()
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
