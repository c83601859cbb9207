//! What one guest instance's store holds, and how a fresh store is made.

use crate::budget::{self, CpuClock};
use crate::dial::DialPolicy;
use crate::guest_log::{GuestLog, LogStdio};
use crate::keyvalue::KvStore;
use crate::limits::{Limits, MemoryGuard};
use crate::overload::{OverloadPolicy, Signal};
use crate::wasi_config::GuestConfig;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tracing::Level;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Settings shared by every store of one listener (or client run), built once.
#[derive(Debug)]
pub struct Policy {
    pub limits: Limits,
    pub dial: DialPolicy,
    pub overload: OverloadPolicy,
    /// The guest's `wasi:config/store`, borrowed from here by every store
    /// (`wasi_config.rs`) rather than copied into each.
    pub config: GuestConfig,
    /// The `wasi:keyvalue` store the listener's connections share (`--kv`).
    pub kv: Option<Arc<KvStore>>,
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
    /// The connection's log budget, shared with the guest's stdio streams.
    pub log: Arc<Mutex<GuestLog>>,
    /// How the listener reaches the connection now served (eviction,
    /// shutdown); a fresh, never-raised one between connections.
    pub signal: Arc<Signal>,
    /// The connection's span (listener, generation, peer): the parent of
    /// every event about it. Events name it explicitly instead of the task
    /// entering it on every poll, which would cost each `recv` and `send`.
    pub span: Arc<ConnSpan>,
    /// When the connection must be closed whatever it is doing.
    pub deadline: Option<Instant>,
    /// Connections the guest holds that it dialed itself.
    pub dialed: u32,
    /// Connection resources alive in this store; an instance is reused only
    /// if it let go of all of them.
    pub live_connections: u32,
    /// Set when the epoch callback interrupted the guest for CPU time.
    pub cpu_exhausted: bool,
    /// `wasi:keyvalue` operations of the connection, for `--kv-max-ops`.
    pub kv_ops: u64,
}

impl GuestState {
    /// Readies a store for the connection it is about to serve: the
    /// connection's signal, and (for an instance that served one before) a
    /// fresh log budget, CPU budget and lifetime. Memory is the instance's
    /// own and stays as the guest left it (that is what reuse gives up).
    pub fn start_connection(&mut self, signal: Arc<Signal>, span: &Arc<ConnSpan>, reused: bool) {
        self.signal = signal;
        self.span = span.clone();
        let limits = &self.policy.limits;
        let mut log = self.log.lock().unwrap();
        if reused {
            log.reset(limits.max_log_lines, limits.max_log_bytes);
        }
        log.span = span.clone();
        drop(log);
        if !reused {
            return;
        }
        self.clock = CpuClock::start();
        self.deadline = limits.max_lifetime.map(|d| Instant::now() + d);
        self.cpu_exhausted = false;
        self.memory.denied = false;
        self.kv_ops = 0;
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A fresh store for one guest instance: no filesystem, no environment, no
/// network of its own; stdio into the log; limits and the guest's
/// configuration from `policy`.
pub fn new_store(engine: &Engine, policy: &Arc<Policy>, stdout: Stdout) -> Store<GuestState> {
    let limits = &policy.limits;
    let log = Arc::new(Mutex::new(GuestLog::new(limits.max_log_lines, limits.max_log_bytes)));
    let mut wasi = WasiCtx::builder();
    match stdout {
        Stdout::Log => wasi.stdout(LogStdio::new(log.clone(), Level::INFO)),
        Stdout::Inherit => wasi.stdout(wasmtime_wasi::cli::stdout()),
    };
    wasi.stderr(LogStdio::new(log.clone(), Level::WARN));
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_resources as usize);
    let state = GuestState {
        wasi: wasi.build(),
        table,
        memory: MemoryGuard { max: limits.max_memory as usize, denied: false },
        clock: CpuClock::start(),
        policy: policy.clone(),
        log,
        signal: Arc::default(),
        span: Arc::default(),
        deadline: limits.max_lifetime.map(|d| Instant::now() + d),
        dialed: 0,
        live_connections: 0,
        cpu_exhausted: false,
        kv_ops: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    budget::install(&mut store);
    store
}

/// A connection's span (listener, generation, peer), made only when the
/// first event about the connection is: at `--log-level warn` most
/// connections log nothing, and making a span (its fields formatted and
/// registered) measurably costs each short connection.
#[derive(Debug, Default)]
pub struct ConnSpan {
    /// `None` outside a listener (a client run).
    fields: Option<(Arc<str>, u64, SocketAddr)>,
    span: OnceLock<tracing::Span>,
}

impl ConnSpan {
    pub fn new(listener: Arc<str>, generation: u64, peer: SocketAddr) -> Self {
        ConnSpan { fields: Some((listener, generation, peer)), span: OnceLock::new() }
    }

    /// The span, the parent of every event about the connection.
    pub fn get(&self) -> &tracing::Span {
        self.span.get_or_init(|| match &self.fields {
            Some((listener, generation, peer)) => {
                tracing::error_span!(parent: None, "conn", listener = %listener, generation, %peer)
            }
            None => tracing::Span::none(),
        })
    }
}
