//! What one guest instance's store holds, and how a fresh store is made.

use crate::config::limits::Limits;
use crate::imports::budget::{self, CpuClock};
use crate::imports::connection::{Connections, WaitTimer};
use crate::imports::dial::DialPolicy;
use crate::imports::keyvalue::{KvStore, KvUse};
use crate::imports::log::{GuestLog, LogStdio};
use crate::imports::memory::MemoryGuard;
use crate::imports::overload::{OverloadPolicy, Signal};
use crate::imports::wasi_config::GuestConfig;
use crate::ops::metrics::{ListenerMetrics, Outcome};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The listener's metric handles, resolved once.
    pub metrics: ListenerMetrics,
}

/// Where a guest's stdout goes.
pub enum Stdout {
    /// Into the host log, like its `log` calls (server guests).
    Log,
    /// To the host's own stdout (a client guest run from the command line).
    Inherit,
}

/// What one guest instance's store holds: one part per interface, each
/// with its own fields behind its own methods (defined beside the
/// interface), and the connection now served. The hub of the imports
/// layer: wasmtime's bindings implement every interface's `Host` trait on
/// the store's data type, so each interface's host functions are methods
/// of this type, and reach their own part of it.
pub struct GuestState {
    /// Built at the guest's first WASI call: std makes every Rust guest
    /// import WASI's stdio, environment and exit, yet a guest that neither
    /// prints nor panics never calls them, and building the context (its
    /// random generators, its stdio) costs each connection.
    wasi: Option<WasiCtx>,
    /// Where the guest's stdout goes, for the context when it is built.
    stdout: Stdout,
    /// wasmtime's resource table, shared by every interface (connections,
    /// buckets, WASI streams live in it).
    pub table: ResourceTable,
    /// The listener's settings: read-only, shared by its stores.
    pub policy: Arc<Policy>,
    /// `--max-memory`, the store's limiter.
    pub memory: MemoryGuard,
    /// `--cpu-timeout`: the guest's own time.
    pub clock: CpuClock,
    /// The connection's log budget, shared with the guest's stdio streams.
    pub log: Arc<Mutex<GuestLog>>,
    /// The guest's connection resources (`types`, `dialer`).
    pub connections: Connections,
    /// Its use of `wasi:keyvalue`.
    pub kv: KvUse,
    /// How the listener reaches the connection now served (eviction,
    /// shutdown); a fresh, never-raised one between connections.
    signal: Arc<Signal>,
    /// The timer of the connection's waits on its peers.
    pub(crate) wait_timer: WaitTimer,
    /// The connection's span (listener, generation, peer): the parent of
    /// every event about it. Events name it explicitly instead of the task
    /// entering it on every poll, which would cost each `recv` and `send`.
    span: Arc<ConnSpan>,
    /// When the connection must be closed whatever it is doing.
    deadline: Option<Instant>,
    /// Warnings the guest's own doing may still put in the host log for
    /// this connection (a denied dial, a spent quota, ...): a guest looping
    /// on a refused call must not flood the log.
    warnings_left: u8,
    /// Set while the store serves a listener's connection: its record is
    /// still to be written (when it ends, or when the store is dropped).
    recording: bool,
    /// The first limit or stop the host imposed on the connection (a wait
    /// timed out, a quota refused, an eviction, shutdown): how it ended,
    /// unless the guest then faulted.
    ended_by: Option<Outcome>,
}

impl GuestState {
    /// Readies a store for the connection it is about to serve: the
    /// connection's signal, and (for an instance that served one before) a
    /// fresh log budget, CPU budget and lifetime. Memory is the instance's
    /// own and stays as the guest left it (that is what reuse gives up).
    pub fn start_connection(&mut self, signal: Arc<Signal>, span: &Arc<ConnSpan>, reused: bool) {
        self.signal = signal;
        self.span = span.clone();
        self.recording = span.fields.is_some();
        if self.recording {
            self.policy.metrics.active.inc();
        }
        self.ended_by = None;
        self.warnings_left = HOST_WARNINGS;
        self.connections.start();
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
        self.memory.reset();
        self.kv.start();
    }
}

/// Warnings per connection about refusals the guest keeps asking for.
const HOST_WARNINGS: u8 = 8;

impl GuestState {
    /// Whether another warning about this connection's refused calls may be
    /// logged; the last one allowed says that the rest are not.
    pub fn may_warn(&mut self) -> bool {
        self.warnings_left = self.warnings_left.saturating_sub(1);
        if self.warnings_left == 0 {
            return false;
        }
        if self.warnings_left == 1 {
            tracing::warn!(parent: self.span.get(), "further refusals of this connection are not logged");
        }
        true
    }

    /// Notes a limit or stop the host imposed; the first one is how the
    /// connection ended (unless its guest faults).
    pub fn end_by(&mut self, outcome: Outcome) {
        self.ended_by.get_or_insert(outcome);
    }

    /// The connection's signal from its listener.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// The connection's span, the parent of every event about it.
    pub fn span(&self) -> &Arc<ConnSpan> {
        &self.span
    }

    /// When the connection must be closed (`--max-lifetime`).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The first limit or stop the host imposed on the connection.
    pub fn ended_by(&self) -> Option<Outcome> {
        self.ended_by
    }

    /// Writes the connection's record and counts it: one `info` event in
    /// its span (target `netplug::record`), whose fields are the duration,
    /// the bytes and the outcome (and a trap's kind). Once per connection.
    pub fn record(&mut self, outcome: Outcome, trap: Option<usize>) {
        if !std::mem::take(&mut self.recording) {
            return;
        }
        let (bytes_in, bytes_out) = self.connections.accepted_bytes(&self.table);
        let lasted = self.span.started.elapsed();
        self.policy.metrics.closed(outcome, trap, lasted, bytes_in, bytes_out);
        let duration_ms = lasted.as_micros() as f64 / 1000.0;
        let outcome = outcome.as_str();
        match trap {
            Some(kind) => tracing::info!(
                target: RECORD_TARGET, parent: self.span.get(),
                duration_ms, bytes_in, bytes_out, outcome = %outcome, trap = %crate::ops::metrics::TRAP_KINDS[kind], "closed"
            ),
            None => tracing::info!(
                target: RECORD_TARGET, parent: self.span.get(), duration_ms, bytes_in, bytes_out, outcome = %outcome, "closed"
            ),
        }
    }
}

pub use crate::ops::logging::RECORD_TARGET;

impl Drop for GuestState {
    /// A store dropped while it serves a connection (its task was closed at
    /// shutdown or at a drain timeout, or panicked) still writes its record.
    fn drop(&mut self) {
        crate::ops::metrics::global().slots_in_use.dec();
        if !self.recording {
            return;
        }
        let outcome = if std::thread::panicking() {
            Outcome::HostPanic
        } else if let Some(outcome) = self.ended_by {
            outcome
        } else if self.span.drained.load(Ordering::Relaxed) {
            Outcome::Drained
        } else if self.signal.interrupt() == Some(crate::imports::overload::Interrupt::Evicted) {
            Outcome::Overload
        } else {
            Outcome::Shutdown
        };
        self.record(outcome, None);
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = self.wasi.get_or_insert_with(|| wasi_ctx(&self.stdout, &self.log));
        WasiCtxView { ctx, table: &mut self.table }
    }
}

/// A fresh store for one guest instance: no filesystem, no environment, no
/// network of its own; stdio into the log; limits and the guest's
/// configuration from `policy`.
pub fn new_store(engine: &Engine, policy: &Arc<Policy>, stdout: Stdout) -> Store<GuestState> {
    let limits = &policy.limits;
    let log = Arc::new(Mutex::new(GuestLog::new(limits.max_log_lines, limits.max_log_bytes)));
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_resources as usize);
    let state = GuestState {
        wasi: None,
        stdout,
        table,
        memory: MemoryGuard::new(limits.max_memory),
        clock: CpuClock::start(),
        policy: policy.clone(),
        log,
        signal: Arc::default(),
        wait_timer: WaitTimer::default(),
        span: Arc::default(),
        deadline: limits.max_lifetime.map(|d| Instant::now() + d),
        connections: Connections::default(),
        kv: KvUse::default(),
        warnings_left: HOST_WARNINGS,
        recording: false,
        ended_by: None,
    };
    crate::ops::metrics::global().slot_taken();
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    // What one host call may copy out of the guest (a list of strings can
    // name the same bytes many times over): no more than the guest's own
    // memory could hold, instead of wasmtime's 128 MiB.
    store.set_hostcall_fuel((limits.max_memory as usize).max(MIN_HOSTCALL_FUEL));
    // Handles the guest's instance may hold at once (wasmtime's default is
    // 100,000, a few MiB per connection): far above what `--max-resources`
    // lets a guest keep of the host's.
    store.set_max_component_handles(MAX_COMPONENT_HANDLES);
    budget::install(&mut store);
    store
}

/// A guest's WASI context: no filesystem, no environment, no network of
/// its own; stdio into the log (or stdout to the host's, see `Stdout`).
fn wasi_ctx(stdout: &Stdout, log: &Arc<Mutex<GuestLog>>) -> WasiCtx {
    let mut wasi = WasiCtx::builder();
    match stdout {
        Stdout::Log => wasi.stdout(LogStdio::new(log.clone(), Level::INFO)),
        Stdout::Inherit => wasi.stdout(wasmtime_wasi::cli::stdout()),
    };
    wasi.stderr(LogStdio::new(log.clone(), Level::WARN));
    wasi.build()
}

/// The least host-call fuel, whatever `--max-memory` says.
const MIN_HOSTCALL_FUEL: usize = 1 << 20;

/// Component-model handles one instance may hold at once.
const MAX_COMPONENT_HANDLES: usize = 4096;

/// A connection's span (listener, generation, peer), made only when the
/// first event about the connection is: at `--log-level warn` most
/// connections log nothing, and making a span (its fields formatted and
/// registered) measurably costs each short connection.
#[derive(Debug)]
pub struct ConnSpan {
    /// `None` outside a listener (a client run).
    fields: Option<(Arc<str>, u64, SocketAddr)>,
    span: OnceLock<tracing::Span>,
    /// When the connection was accepted.
    pub started: Instant,
    /// Set when its generation's `--drain-timeout` closes it.
    pub drained: AtomicBool,
}

impl Default for ConnSpan {
    fn default() -> Self {
        ConnSpan { fields: None, span: OnceLock::new(), started: Instant::now(), drained: AtomicBool::new(false) }
    }
}

impl ConnSpan {
    pub fn new(listener: Arc<str>, generation: u64, peer: SocketAddr) -> Self {
        ConnSpan { fields: Some((listener, generation, peer)), ..ConnSpan::default() }
    }

    /// The span, the parent of every event about the connection.
    pub fn get(&self) -> &tracing::Span {
        self.span.get_or_init(|| match &self.fields {
            Some((listener, generation, peer)) => {
                let peer = crate::ops::log_format::Addr(*peer);
                tracing::error_span!(parent: None, "conn", listener = %listener, generation, %peer)
            }
            None => tracing::Span::none(),
        })
    }
}
