//! The wasm side, built once per run: the engine with its instance pool and
//! epoch ticker, the guest component checked for its world and imports, and
//! the linker that grants a guest exactly what it may use.

use crate::limits::Limits;
use crate::state::GuestState;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The export that makes a component a server guest.
pub const HANDLER_EXPORT: &str = "netplug:protocol/handler@0.1.0";
/// The export that makes a component a client guest.
pub const RUN_EXPORT: &str = "run";

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

/// Freed instance slots returned to the kernel per `madvise` batch. A slot
/// waiting in a batch cannot be reused, so small pools use smaller batches.
const DECOMMIT_BATCH: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    Server,
    Client,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Server => "server",
            World::Client => "client",
        }
    }
}

/// The engine: Cranelift, epoch interruption, and a pooling allocator with
/// one slot per allowed connection, per idle instance kept for reuse, per
/// spare instance, and one for a client guest's run.
pub fn build_engine(limits: &Limits) -> Result<Engine> {
    let slots = limits.max_connections + limits.max_idle_instances() + crate::server::SPARE_INSTANCES + 1;
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
        .max_memory_size(limits.max_memory as usize)
        // A freed slot is reset by rewriting only the pages its last
        // instance dirtied (found with the PAGEMAP_SCAN ioctl, Linux 6.7+),
        // up to KEEP_RESIDENT bytes, instead of returning them all to the
        // kernel: the next instance in the slot then starts without page
        // faults. Slots keep those pages while unused, so resident memory
        // settles at the highest concurrency seen, not per connection ever
        // served. Without PAGEMAP_SCAN, wasmtime would memset the whole
        // KEEP_RESIDENT prefix on every free, which costs more than it saves.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(if pagemap { KEEP_RESIDENT } else { 0 })
        .table_keep_resident(if pagemap { TABLE_KEEP_RESIDENT } else { 0 })
        // Every unused slot may stay warm (its memory image mapped), so that
        // high concurrency does not fall back to cold slots that need a fresh
        // mmap of the image.
        .max_unused_warm_slots(slots)
        // What is still returned to the kernel goes in batches, saving a
        // madvise call and a TLB flush per connection.
        .decommit_batch_size(DECOMMIT_BATCH.min((slots as usize / 4).max(1)));
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(anyhow::Error::from).context("cannot create the wasm engine")
}

/// Reads and compiles a guest, naming the file and what is wrong with it.
/// With a cache dir, a previous compilation of the same bytes is reused.
pub fn load_component(engine: &Engine, path: &Path, cache_dir: Option<&Path>) -> Result<Component> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read guest {shown}"))?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("{shown} is not a WebAssembly file (it does not start with the \\0asm magic bytes)");
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "{shown} is a core WebAssembly module, not a component: build the guest for \
             wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
        );
    }
    if let Some(dir) = cache_dir {
        if let Some(component) = crate::cache::load(dir, engine, &bytes) {
            return Ok(component);
        }
    }
    let component = Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile guest {shown}"))?;
    if let Some(dir) = cache_dir {
        // A cache that cannot be written only costs the next start its time.
        if let Err(e) = crate::cache::store(dir, engine, &bytes, &component) {
            warn!("cache", "{e:#}");
        }
    }
    Ok(component)
}

/// Tells the worlds apart by the component's exports.
pub fn world_of(engine: &Engine, component: &Component, path: &Path) -> Result<World> {
    let ty = component.component_type();
    let exports: Vec<(String, ComponentItem)> =
        ty.exports(engine).map(|(name, item)| (name.to_string(), item.ty)).collect();
    let serves = exports.iter().any(|(n, i)| n == HANDLER_EXPORT && matches!(i, ComponentItem::ComponentInstance(_)));
    let runs = exports.iter().any(|(n, i)| n == RUN_EXPORT && matches!(i, ComponentItem::ComponentFunc(_)));
    match (serves, runs) {
        (true, false) => Ok(World::Server),
        (false, true) => Ok(World::Client),
        _ => {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "{} is neither a server nor a client guest: it exports [{}], expected `{HANDLER_EXPORT}` \
                 (world server) or a `{RUN_EXPORT}` function (world client), but not both",
                path.display(),
                names.join(", ")
            )
        }
    }
}

/// Interfaces a guest may import. Rust's std on wasip2 imports the
/// `wasi:cli`, `wasi:io`, `wasi:clocks` and `wasi:random` ones; with no
/// environment, arguments, preopens or stdin configured they grant nothing
/// beyond a clock, randomness and the stdio that goes to the host log.
const GRANTED: &[&str] = &[
    "netplug:protocol/",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
];

/// Whether the host links `name` for guests, and why not when it does not.
/// `extra` holds the packages granted with `--grant`.
pub fn grant(name: &str, extra: &[String]) -> Result<(), &'static str> {
    if GRANTED.iter().any(|prefix| name.starts_with(prefix)) {
        return Ok(());
    }
    if extra.iter().any(|pkg| name.starts_with(pkg.as_str()) && name[pkg.len()..].starts_with('/')) {
        return Ok(());
    }
    Err(if name.starts_with("wasi:sockets/") {
        "guests get no sockets of their own; connections come from the host (netplug:protocol/dialer); \
         --grant wasi:sockets loads it with every address denied"
    } else if name.starts_with("wasi:filesystem/") {
        "guests get no filesystem; --grant wasi:filesystem loads it with no directory to open"
    } else if name.starts_with("wasi:http/") {
        "the host does not provide wasi:http; speak HTTP over a netplug connection"
    } else {
        "the host does not provide this interface"
    })
}

/// Refuses, naming the import, a guest that needs what the host will not
/// grant.
pub fn check_imports(engine: &Engine, component: &Component, path: &Path, extra: &[String]) -> Result<()> {
    for (name, _) in component.component_type().imports(engine) {
        if let Err(why) = grant(name, extra) {
            bail!("{} imports `{name}`, which the host refuses: {why}", path.display());
        }
    }
    Ok(())
}

/// The linker every guest instance is built from: WASI's stdio, clocks and
/// random (configured empty per store), and the netplug interfaces.
pub fn build_linker(engine: &Engine) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from).context("cannot link WASI")?;
    // The server world imports every netplug interface the client world does.
    crate::bindings::server::Server::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link the netplug interfaces")?;
    crate::direct_io::link(&mut linker)
        .map_err(anyhow::Error::from)
        .context("cannot link connection.send and connection.recv")?;
    Ok(linker)
}

/// Advances the engine's epoch every `EPOCH_TICK` until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch ticker thread");
        EpochTicker { stop, thread: Some(thread) }
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
