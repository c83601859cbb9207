//! What one guest instance's store holds, and how a fresh store is made for
//! each connection.

use crate::dial::DialPolicy;
use crate::guest_log::{GuestLog, LogStdio, SharedLog};
use crate::limits::{CpuClock, Limits, MemoryGuard};
use crate::logging::Level;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Settings shared by every store of one run, built once.
pub struct Policy {
    pub limits: Limits,
    pub dial: DialPolicy,
    pub verbose: bool,
}

/// Where a guest's stdout goes.
pub enum Stdout {
    /// Into the host log, like its `log` calls (server guests).
    Log,
    /// To the host's own stdout (a client guest run from the command line).
    Inherit,
}

pub struct GuestState {
    wasi: WasiCtx,
    pub table: ResourceTable,
    pub memory: MemoryGuard,
    pub clock: CpuClock,
    pub policy: Arc<Policy>,
    pub log: SharedLog,
    /// When the connection must be closed whatever it is doing.
    pub deadline: Option<Instant>,
    /// Connections the guest holds that it dialed itself.
    pub dialed: u32,
    /// Connection resources alive in this store; an instance is reused only
    /// if it let go of all of them.
    pub live_connections: u32,
    /// Set when the epoch callback interrupted the guest for CPU time.
    pub cpu_exhausted: bool,
}

impl GuestState {
    /// Readies a store whose instance served a connection to serve another:
    /// a fresh log budget, CPU budget and lifetime. Memory is the instance's
    /// own and stays as the guest left it (that is what reuse gives up).
    pub fn reset_for_connection(&mut self, source: String) {
        let limits = &self.policy.limits;
        self.log.lock().unwrap().reset(source, limits.max_log_lines, limits.max_log_bytes);
        self.clock = CpuClock::start();
        self.deadline = limits.max_lifetime.map(|d| Instant::now() + d);
        self.cpu_exhausted = false;
        self.memory.denied = false;
    }
}

/// Why the host stops a guest call that neither returned nor trapped.
pub enum Stop {
    /// Its CPU budget ran out while it was blocked in a WASI call (a sleep),
    /// where epochs cannot interrupt it.
    BlockedPastCpu(Duration),
    /// The connection reached `--max-lifetime`.
    Lifetime(Duration),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::BlockedPastCpu(budget) => {
                write!(f, "CPU time limit reached (--cpu-timeout {budget:?}) while blocked in a WASI call")
            }
            Stop::Lifetime(lifetime) => write!(f, "connection lifetime reached (--max-lifetime {lifetime:?})"),
        }
    }
}

impl GuestState {
    /// Resolves when the guest must be stopped whatever it is doing; raced
    /// against the guest call, whose dropping drops the instance. Epochs
    /// interrupt a guest that computes; this covers one blocked in WASI, and
    /// the lifetime bounds everything.
    pub fn stop_signal(&self) -> impl Future<Output = Stop> + Send + 'static {
        let limits = &self.policy.limits;
        let (budget, lifetime) = (limits.cpu_timeout, limits.max_lifetime);
        let watch = self.clock.watch(budget);
        async move {
            let lifetime_ends = async {
                match lifetime {
                    Some(lifetime) => tokio::time::sleep(lifetime).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = watch => Stop::BlockedPastCpu(budget),
                () = lifetime_ends => Stop::Lifetime(lifetime.unwrap_or_default()),
            }
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Ticks between epoch checks that may interrupt a guest; see `EpochTicker`.
pub const EPOCH_TICKS_PER_CHECK: u64 = 1;

/// A fresh store for one guest instance: no filesystem, no environment, no
/// network of its own; stdio into the log; limits from `policy`.
pub fn new_store(engine: &Engine, policy: &Arc<Policy>, source: String, stdout: Stdout) -> Store<GuestState> {
    let limits = &policy.limits;
    let log = GuestLog::new(source, limits.max_log_lines, limits.max_log_bytes);
    let mut wasi = WasiCtx::builder();
    match stdout {
        Stdout::Log => wasi.stdout(LogStdio::new(log.clone(), Level::Info)),
        Stdout::Inherit => wasi.stdout(wasmtime_wasi::cli::stdout()),
    };
    wasi.stderr(LogStdio::new(log.clone(), Level::Warn));
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_resources as usize);
    let state = GuestState {
        wasi: wasi.build(),
        table,
        memory: MemoryGuard { max: limits.max_memory as usize, denied: false },
        clock: CpuClock::start(),
        policy: policy.clone(),
        log,
        deadline: limits.max_lifetime.map(|d| Instant::now() + d),
        dialed: 0,
        live_connections: 0,
        cpu_exhausted: false,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    store.set_epoch_deadline(EPOCH_TICKS_PER_CHECK);
    // Each epoch tick that finds the guest running checks its CPU budget,
    // then yields to the executor so one busy guest cannot starve the other
    // connections sharing its thread.
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        if state.clock.guest_time() > state.policy.limits.cpu_timeout {
            state.cpu_exhausted = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::YieldCustom(EPOCH_TICKS_PER_CHECK, state.clock.yield_now()))
    });
    store
}
