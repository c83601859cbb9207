//! The host's metrics, served as Prometheus text on the admin address
//! (`GET /metrics`, see `admin.rs`), and each connection's outcome, which
//! its closing record (`GuestState::record`, `imports/state.rs`) and the
//! metrics share.
//!
//! One process-wide registry. Each listener resolves its labelled handles
//! once, when it is created (`ListenerMetrics`, held in its `Policy`), so a
//! connection costs a few atomic additions and no label lookup. A listener
//! replaced by a reload under the same name counts on in the same series.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How a connection ended: the `outcome` of its record and of
/// `netplug_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest returned `ok`.
    Ok,
    /// The guest returned `err`.
    GuestError,
    /// The guest trapped (the record names the kind).
    Trap,
    /// `--cpu-timeout`.
    CpuLimit,
    /// `--max-memory`: the guest aborted when it could not grow.
    MemoryLimit,
    /// A wait on the peer ran past `--idle-timeout` (or the overload one).
    IdleTimeout,
    /// `--max-lifetime`.
    Lifetime,
    /// `--max-bytes-in`.
    QuotaIn,
    /// `--max-bytes-out`.
    QuotaOut,
    /// Closed by the host's shutdown.
    Shutdown,
    /// Closed to admit a newcomer at `--max-connections`.
    Overload,
    /// Closed at its replaced generation's `--drain-timeout`.
    Drained,
    /// The connection's task panicked (a host bug).
    HostPanic,
}

/// The `outcome` label values, in the order of `Outcome::index`.
const OUTCOMES: [&str; 12] = [
    "ok",
    "guest_error",
    "trap",
    "cpu_limit",
    "memory_limit",
    "idle_timeout",
    "lifetime",
    "quota",
    "shutdown",
    "overload",
    "drained",
    "host_panic",
];

/// The `limit` label values of `netplug_limit_hits_total`: the flags' names.
const LIMITS: [&str; 6] =
    ["cpu_timeout", "max_memory", "idle_timeout", "max_lifetime", "max_bytes_in", "max_bytes_out"];

/// The `kind` label values of `netplug_guest_traps_total`.
pub const TRAP_KINDS: [&str; 5] = ["unreachable", "stack_overflow", "out_of_bounds", "other", "host_error"];

impl Outcome {
    pub fn as_str(self) -> &'static str {
        OUTCOMES[self.index()]
    }

    fn index(self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::GuestError => 1,
            Outcome::Trap => 2,
            Outcome::CpuLimit => 3,
            Outcome::MemoryLimit => 4,
            Outcome::IdleTimeout => 5,
            Outcome::Lifetime => 6,
            Outcome::QuotaIn | Outcome::QuotaOut => 7,
            Outcome::Shutdown => 8,
            Outcome::Overload => 9,
            Outcome::Drained => 10,
            Outcome::HostPanic => 11,
        }
    }

    /// The limit this outcome is a hit of, as an index into `LIMITS`.
    fn limit(self) -> Option<usize> {
        match self {
            Outcome::CpuLimit => Some(0),
            Outcome::MemoryLimit => Some(1),
            Outcome::IdleTimeout => Some(2),
            Outcome::Lifetime => Some(3),
            Outcome::QuotaIn => Some(4),
            Outcome::QuotaOut => Some(5),
            _ => None,
        }
    }
}

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// A histogram of durations on atomics: observing one is a few relaxed
/// additions, never a lock (prometheus-client's own takes a write lock).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds in seconds; a last bucket above them is `+Inf`.
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(Arc::new(HistogramInner { bounds, counts, count: AtomicU64::new(0), sum_ns: AtomicU64::new(0) }))
    }

    pub fn observe(&self, took: Duration) {
        let h = &*self.0;
        let secs = took.as_secs_f64();
        let bucket = h.bounds.iter().position(|&b| secs <= b).unwrap_or(h.bounds.len());
        h.counts[bucket].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &*self.0;
        let bounds = h.bounds.iter().copied().chain([f64::MAX]);
        let buckets: Vec<(f64, u64)> = bounds.zip(h.counts.iter().map(|c| c.load(Ordering::Relaxed))).collect();
        let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, h.count.load(Ordering::Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    accepted: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    closed: Family<Labels, Counter>,
    traps: Family<Labels, Counter>,
    limit_hits: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    duration: Histograms,
    instantiation: Histograms,
    generation: Family<Labels, Gauge>,
    reloads: Family<Labels, Counter>,
    kv_bytes: Family<Labels, Gauge>,
    kv_keys: Family<Labels, Gauge>,
    kv_max_bytes: Family<Labels, Gauge>,
    kv_refused_writes: Family<Labels, Counter>,
    kv_store_errors: Family<Labels, Counter>,
    /// Live guest instances (stores), all listeners together.
    pub slots_in_use: Gauge,
    /// Instance slots of the engine's pool.
    pub slots_capacity: Gauge,
    /// The most guest instances alive at once since the pool was last
    /// renewed: about how many of its slots hold memory (runtime/trim.rs).
    pub slots_peak: AtomicI64,
    /// Renewals of the pool after a burst.
    pub pool_renewals: Counter,
}

fn connection_buckets() -> Histogram {
    Histogram::new(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

fn instantiation_buckets() -> Histogram {
    Histogram::new(&[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05])
}

/// The process's metrics, made on first use.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("netplug");
        let m = Metrics {
            accepted: Family::default(),
            active: Family::default(),
            closed: Family::default(),
            traps: Family::default(),
            limit_hits: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            duration: Family::new_with_constructor(connection_buckets),
            instantiation: Family::new_with_constructor(instantiation_buckets),
            generation: Family::default(),
            reloads: Family::default(),
            kv_bytes: Family::default(),
            kv_keys: Family::default(),
            kv_max_bytes: Family::default(),
            kv_refused_writes: Family::default(),
            kv_store_errors: Family::default(),
            slots_in_use: Gauge::default(),
            slots_capacity: Gauge::default(),
            slots_peak: AtomicI64::new(0),
            pool_renewals: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("connections_accepted", "Connections accepted", m.accepted.clone());
        r.register("connections_active", "Connections open now", m.active.clone());
        r.register("connections_closed", "Connections closed, by outcome", m.closed.clone());
        r.register("guest_traps", "Connections whose guest trapped, by kind", m.traps.clone());
        r.register("limit_hits", "Connections ended by a per-connection limit, by limit", m.limit_hits.clone());
        r.register("bytes_received", "Bytes received from clients", m.bytes_in.clone());
        r.register("bytes_sent", "Bytes sent to clients", m.bytes_out.clone());
        r.register("connection_duration_seconds", "How long connections lasted", m.duration.clone());
        r.register("instantiation_duration_seconds", "How long instantiating the guest took", m.instantiation.clone());
        r.register("generation", "The generation new connections get", m.generation.clone());
        r.register("reloads", "Reloads (SIGHUP, POST /reload, file changes), by result", m.reloads.clone());
        r.register(
            "kv_bytes",
            "Bytes the key-value store holds: keys, values and per-entry overhead",
            m.kv_bytes.clone(),
        );
        r.register("kv_keys", "Entries the key-value store holds", m.kv_keys.clone());
        r.register("kv_max_bytes", "The key-value store's bound (--kv-max-bytes)", m.kv_max_bytes.clone());
        r.register(
            "kv_writes_refused",
            "Writes refused because the key-value store was at its bound",
            m.kv_refused_writes.clone(),
        );
        r.register(
            "kv_store_errors",
            "Errors a Redis key-value store returned, or calls it did not answer in time",
            m.kv_store_errors.clone(),
        );
        r.register("pool_slots_in_use", "Guest instances alive in the engine's pool", m.slots_in_use.clone());
        r.register("pool_slots_capacity", "Instance slots of the engine's pool", m.slots_capacity.clone());
        r.register(
            "pool_renewals",
            "Renewals of the instance pool after a burst, returning its idle slots' memory",
            m.pool_renewals.clone(),
        );
        Metrics { registry, ..m }
    }

    /// One more guest instance alive.
    pub fn slot_taken(&self) {
        let now = self.slots_in_use.inc() + 1;
        self.slots_peak.fetch_max(now, Ordering::Relaxed);
    }

    /// The handles of listener `name`, resolved once; every series of the
    /// listener exists (at zero) from then on.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        let labels = |extra: Option<(&'static str, &str)>| -> Labels {
            let mut labels = vec![("listener", name.to_string())];
            labels.extend(extra.map(|(k, v)| (k, v.to_string())));
            labels
        };
        let one = labels(None);
        ListenerMetrics {
            accepted: self.accepted.get_or_create(&one).clone(),
            active: self.active.get_or_create(&one).clone(),
            closed: OUTCOMES.map(|o| self.closed.get_or_create(&labels(Some(("outcome", o)))).clone()),
            traps: TRAP_KINDS.map(|k| self.traps.get_or_create(&labels(Some(("kind", k)))).clone()),
            limit_hits: LIMITS.map(|l| self.limit_hits.get_or_create(&labels(Some(("limit", l)))).clone()),
            bytes_in: self.bytes_in.get_or_create(&one).clone(),
            bytes_out: self.bytes_out.get_or_create(&one).clone(),
            duration: self.duration.get_or_create(&one).clone(),
            instantiation: self.instantiation.get_or_create(&one).clone(),
            generation: self.generation.get_or_create(&one).clone(),
        }
    }

    /// The key-value store handles of listener `name`: made only for a
    /// listener with a store, so the others have no such series.
    pub fn kv(&self, name: &str) -> KvMetrics {
        let labels = vec![("listener", name.to_string())];
        KvMetrics {
            bytes: self.kv_bytes.get_or_create(&labels).clone(),
            keys: self.kv_keys.get_or_create(&labels).clone(),
            max_bytes: self.kv_max_bytes.get_or_create(&labels).clone(),
            refused_writes: self.kv_refused_writes.get_or_create(&labels).clone(),
            store_errors: self.kv_store_errors.get_or_create(&labels).clone(),
        }
    }

    /// Counts a reload (of a guest, or of `host serve`'s file).
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&vec![("result", result.to_string())]).inc();
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        text
    }
}

/// One listener's key-value store's metric handles
/// (`imports/keyvalue/usage.rs` keeps them current). `Default` gives
/// handles in no registry, for a store opened outside a listener.
#[derive(Clone, Default)]
pub struct KvMetrics {
    pub bytes: Gauge,
    pub keys: Gauge,
    pub max_bytes: Gauge,
    pub refused_writes: Counter,
    /// Errors a Redis store returned, or calls it did not answer in time.
    pub store_errors: Counter,
}

/// One listener's metric handles.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub accepted: Counter,
    pub active: Gauge,
    closed: [Counter; OUTCOMES.len()],
    traps: [Counter; TRAP_KINDS.len()],
    limit_hits: [Counter; LIMITS.len()],
    bytes_in: Counter,
    bytes_out: Counter,
    duration: Histogram,
    instantiation: Histogram,
    pub generation: Gauge,
}

impl std::fmt::Debug for ListenerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerMetrics")
    }
}

impl ListenerMetrics {
    /// Counts a connection that closed.
    pub fn closed(&self, outcome: Outcome, trap: Option<usize>, lasted: Duration, bytes_in: u64, bytes_out: u64) {
        self.active.dec();
        self.closed[outcome.index()].inc();
        if let Some(kind) = trap {
            self.traps[kind].inc();
        }
        if let Some(limit) = outcome.limit() {
            self.limit_hits[limit].inc();
        }
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
        self.duration.observe(lasted);
    }

    pub fn instantiated(&self, took: Duration) {
        self.instantiation.observe(took);
    }
}
