//! Shared state: the standard `wasi:keyvalue` interfaces, backed by one
//! store per listener that every connection of it shares. Two versions are
//! served over the same store: 0.2.0-draft (`store`, `atomics` with an
//! unsigned `increment`; `draft.rs`, `wit/deps/wasi-keyvalue/`) and
//! 0.2.0-draft2 (`store`, `atomics` with a signed `increment` and the
//! compare-and-swap `cas`/`swap`, and `batch`; `draft2.rs`,
//! `wit/deps/wasi-keyvalue-draft2/`). Both call the operations here, so they
//! see the same buckets and data under the same grant and limits. Granted
//! only with `host run --kv memory` (`memory.rs`) or `--kv PATH`
//! (`durable.rs`, a redb file that survives restarts); a guest importing
//! them without `--kv` is refused at load (`guest::grant`).
//!
//! `store.open(name)` opens a bucket: a namespace of the store, created on
//! first use, any name (`""` included) up to `MAX_BUCKETS` of them. The
//! bucket (and `cas`) resources live in the store's `ResourceTable`, so they
//! count against `--max-resources`. Every operation counts against the
//! connection's `--kv-max-ops` (a `cas.new`, which reads the value, and a
//! `swap` are one each; a batch call one per key); keys and values over
//! `--kv-max-key-size` and `--kv-max-value-size` are refused. Each refusal
//! is `error::other` with a message, returned to the guest: never a trap.

/// The host side of one version's `store` interface, the same in both but
/// for `list-keys` (its cursor's type), which the caller writes: the
/// conversion of a [`Failure`] to that version's `error`, `ours` (an
/// [`Outcome`] with that error), `open`, and the bucket's methods, each one
/// of the operations below. `$store` is the version's generated module.
macro_rules! store_host {
    ($store:ident, $($list_keys:tt)*) => {
        impl From<$crate::keyvalue::Failure> for $store::Error {
            fn from(failure: $crate::keyvalue::Failure) -> $store::Error {
                match failure {
                    $crate::keyvalue::Failure::AccessDenied => $store::Error::AccessDenied,
                    $crate::keyvalue::Failure::Other(message) => $store::Error::Other(message),
                }
            }
        }

        /// An outcome with this version's error.
        fn ours<T>(outcome: $crate::keyvalue::Outcome<T>) -> wasmtime::Result<Result<T, $store::Error>> {
            outcome.map(|result| result.map_err($store::Error::from))
        }

        impl $store::Host for GuestState {
            async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<Bucket>, $store::Error>> {
                ours(self.kv_open(&identifier))
            }
        }

        impl $store::HostBucket for GuestState {
            async fn get(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
            ) -> wasmtime::Result<Result<Option<Vec<u8>>, $store::Error>> {
                ours(self.kv_get(&bucket, key).await)
            }

            async fn set(
                &mut self,
                bucket: Resource<Bucket>,
                key: String,
                value: Vec<u8>,
            ) -> wasmtime::Result<Result<(), $store::Error>> {
                ours(self.kv_set(&bucket, key, value, 0).await)
            }

            async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), $store::Error>> {
                ours(self.kv_delete(&bucket, key).await)
            }

            async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, $store::Error>> {
                ours(self.kv_exists(&bucket, key).await)
            }

            async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
                self.kv_drop(bucket)
            }

            $($list_keys)*
        }
    };
}

mod draft;
mod draft2;
mod durable;
mod expiry;
mod memory;
mod usage;

use crate::budget::CpuClock;
use crate::metrics::KvMetrics;
use crate::store::{ConnSpan, GuestState};
use anyhow::{Context, Result};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use wasmtime::component::{Linker, Resource, ResourceTableError};

/// The package `host run` adds to the guest's grants when `--kv` is given
/// (`guest::grant` lets `wasi:keyvalue` through only then).
pub const GRANT: &str = "wasi:keyvalue";

/// Buckets one store may hold: each is a namespace (and in the durable
/// store a table), made by any `open` of a new name.
pub const MAX_BUCKETS: usize = 1024;

/// Longest bucket name `open` accepts.
pub const MAX_BUCKET_NAME: usize = 256;

/// A `list-keys` page ends after this many keys, or sooner once its keys
/// add up to `PAGE_BYTES`; its cursor leads to the next page.
const PAGE_KEYS: usize = 1000;
const PAGE_BYTES: usize = 1 << 20;

/// What `--kv` and its limits say, validated by the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct KvConfig {
    pub backend: Backend,
    pub limits: KvLimits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `--kv memory`: gone when the host exits.
    Memory,
    /// `--kv PATH`: a redb database file, created if missing.
    Path(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub struct KvLimits {
    /// What the whole store may hold (`usage.rs`), shared by every
    /// connection of the listener.
    pub max_bytes: u64,
    pub max_key_size: u64,
    pub max_value_size: u64,
    /// Operations one connection may make; `None` for no limit.
    pub max_ops: Option<u64>,
}

impl Backend {
    /// `memory`, or a database path written so that it cannot be a typo of
    /// a word: one with a `/` (`./cache`, `/var/lib/netplug/kv`) or ending
    /// in `.redb`. Anything else (`memry`, `Memory`) is refused rather than
    /// silently made a file of that name.
    pub fn parse(text: &str) -> Result<Backend, String> {
        if text == "memory" {
            Ok(Backend::Memory)
        } else if text.contains("://") {
            Err(format!("`{text}`: store URLs are not supported; use `memory` or a database path"))
        } else if text.contains('/') || (text.ends_with(".redb") && text.len() > ".redb".len()) {
            Ok(Backend::Path(PathBuf::from(text)))
        } else {
            Err(format!(
                "`{text}` is neither `memory` nor a database path: a path contains a `/` or ends in `.redb` \
                 (for example ./{text}.redb)"
            ))
        }
    }
}

/// The store every connection of one listener shares.
pub struct KvStore {
    /// Shared with the store of a listener that replaces this one's (a
    /// reload of `host serve` that changed other settings): the data stays.
    data: Arc<Data>,
    backend: Backend,
    pub limits: KvLimits,
}

enum Data {
    Memory(memory::Memory),
    Durable(Arc<durable::Durable>),
}

impl Data {
    fn usage(&self) -> &usage::Usage {
        match self {
            Data::Memory(memory) => memory.usage(),
            Data::Durable(db) => db.usage(),
        }
    }

    /// Deletes the entries whose deadline has passed (`expiry.rs` calls it
    /// on its own thread); how many.
    fn sweep(&self, now: u64) -> Result<u64, String> {
        match self {
            Data::Memory(memory) => Ok(memory.sweep(now)),
            Data::Durable(db) => db.sweep(now),
        }
    }
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &*self.data {
            Data::Memory(_) => "memory".to_string(),
            Data::Durable(db) => db.path().display().to_string(),
        };
        f.debug_struct("KvStore").field("backend", &backend).field("limits", &self.limits).finish()
    }
}

impl KvStore {
    /// Opens the configured store (creating the database file if missing),
    /// or says in one line why not; `None` without `--kv`.
    pub fn open_configured(config: Option<&KvConfig>, metrics: KvMetrics) -> Result<Option<Arc<KvStore>>> {
        config.map(|config| KvStore::open(config, metrics).map(Arc::new)).transpose()
    }

    /// Opens the store, with `metrics` following what it holds, and starts
    /// its expiry sweep (which ends when the store is dropped).
    pub fn open(config: &KvConfig, metrics: KvMetrics) -> Result<KvStore> {
        let usage = Arc::new(usage::Usage::new(config.limits.max_bytes, metrics));
        let data = match &config.backend {
            Backend::Memory => Data::Memory(memory::Memory::new(usage)),
            Backend::Path(path) => Data::Durable(Arc::new(durable::Durable::open(path, usage)?)),
        };
        let data = Arc::new(data);
        expiry::start_sweeping(&data)?;
        Ok(KvStore { data, backend: config.backend.clone(), limits: config.limits.clone() })
    }

    /// Bytes and entries the store holds, as its bound counts them.
    pub fn held(&self) -> (u64, u64) {
        let usage = self.data.usage();
        (usage.bytes(), usage.keys())
    }

    /// The store `config` asks for, if it is this one (the same backend):
    /// the same data under `config`'s limits.
    pub fn reused_for(&self, config: &KvConfig) -> Option<KvStore> {
        if self.backend != config.backend {
            return None;
        }
        self.data.usage().set_max(config.limits.max_bytes);
        Some(KvStore { data: self.data.clone(), backend: self.backend.clone(), limits: config.limits.clone() })
    }

    fn open_bucket(&self, name: &str) -> Result<Bucket, String> {
        if name.len() > MAX_BUCKET_NAME {
            return Err(format!("bucket name of {} bytes is over the limit of {MAX_BUCKET_NAME}", name.len()));
        }
        match &*self.data {
            Data::Memory(memory) => memory.bucket(name).map(Bucket::Memory),
            Data::Durable(db) => durable::Table::open(db, name).map(|table| Bucket::Durable(Arc::new(table))),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), Failure> {
        let max = self.limits.max_key_size;
        if key.len() as u64 > max {
            return Err(Failure::Other(format!(
                "key of {} bytes is over the limit of {max} (--kv-max-key-size)",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Failure> {
        let max = self.limits.max_value_size;
        if value.len() as u64 > max {
            return Err(Failure::Other(format!(
                "value of {} bytes is over the limit of {max} (--kv-max-value-size)",
                value.len()
            )));
        }
        Ok(())
    }
}

/// Why an operation failed, before it becomes either version's `error`.
#[derive(Debug, PartialEq)]
pub(crate) enum Failure {
    AccessDenied,
    Other(String),
}

/// What a host function returns: a trap (`Err`), or the guest's result.
pub(crate) type Outcome<T> = wasmtime::Result<Result<T, Failure>>;

/// One page of `list-keys`: the keys and the offset of the next page.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub keys: Vec<String>,
    pub cursor: Option<u64>,
}

/// What `BucketOps::update` calls with the value it read: the value to
/// write, or `None` for nothing.
pub type Updater<'a> = dyn FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, String> + 'a;

/// The deadline a write gives its entry (`expiry.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Expiry {
    /// The one the entry has (none for a new entry): an `increment`.
    Keep,
    /// This one (unix ms, 0: none): `set` and `swap` and their `-until`s.
    At(u64),
}

/// What a backend does for one bucket. Each call is one atomic step. An
/// entry whose deadline has passed reads as missing; a write that would
/// grow the store past its bound fails (`usage.rs`).
pub(crate) trait BucketOps: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Writes `value` with `deadline` (unix ms, 0: none).
    fn set(&self, key: String, value: Vec<u8>, deadline: u64) -> Result<(), String>;
    fn delete(&self, key: &str) -> Result<(), String>;
    fn exists(&self, key: &str) -> Result<bool, String>;
    fn list_keys(&self, cursor: Option<u64>) -> Result<Page, String>;
    /// Calls `f` once with the value at `key` (none if missing) and stores
    /// what it returns (`Ok(None)`: nothing), as one atomic step: no other
    /// write to the key comes between the read and the write. An `Err`
    /// from `f` writes nothing. What is written gets `expiry`'s deadline.
    fn update(&self, key: String, expiry: Expiry, f: &mut Updater<'_>) -> Result<(), String>;
}

/// An open bucket, as the guest's `bucket` resource holds it (either
/// version's). Cheap to clone.
#[derive(Clone)]
pub enum Bucket {
    Memory(Arc<memory::Bucket>),
    Durable(Arc<durable::Table>),
}

impl Bucket {
    /// Runs `op` on the backend: in place for the memory store, which never
    /// waits, on the blocking pool for the durable one.
    async fn call<T: Send + 'static>(
        &self,
        clock: &CpuClock,
        op: impl FnOnce(&dyn BucketOps) -> Result<T, String> + Send + 'static,
    ) -> Outcome<T> {
        match self {
            Bucket::Memory(bucket) => Ok(op(&**bucket).map_err(Failure::Other)),
            Bucket::Durable(table) => {
                let table = table.clone();
                blocking(clock, move || op(&*table)).await
            }
        }
    }
}

/// A compare-and-swap in progress (draft2's `cas` resource): the key and
/// the value `cas.new` read (none if missing), which a `swap` must still
/// find there to write.
pub struct Cas {
    bucket: Bucket,
    key: String,
    current: Option<Vec<u8>>,
    /// The bytes this handle holds in the host, counted against the
    /// connection's `--max-memory` until it is dropped.
    _charge: CasCharge,
}

/// A `Cas`'s share of its connection's held bytes, given back on drop.
struct CasCharge {
    held: Arc<AtomicU64>,
    bytes: u64,
}

impl CasCharge {
    /// Counts `key` and `current` against `held`, unless that would take it
    /// past `max`: a guest keeping many handles on large values would
    /// otherwise make the host hold them all for as long as it lives.
    fn new(held: &Arc<AtomicU64>, key: &str, current: Option<&[u8]>, max: u64) -> Result<CasCharge, Failure> {
        let bytes = (key.len() + current.map_or(0, <[u8]>::len)) as u64;
        let before = held.fetch_add(bytes, Relaxed);
        let charge = CasCharge { held: held.clone(), bytes };
        if before + bytes > max {
            return Err(Failure::Other(format!(
                "compare-and-swap handles would hold {} bytes in the host, over the connection's {max} \
                 (--max-memory); drop or swap some first",
                before + bytes
            )));
        }
        Ok(charge)
    }
}

impl Drop for CasCharge {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Relaxed);
    }
}

impl Cas {
    pub fn current(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }
}

/// Replaces `current` with `value` if `current` is still `expected`; else
/// keeps it and says what it is now. `swap`'s step, under `update`; the
/// value written gets `deadline` (0: none).
pub(crate) fn compare_and_swap(
    ops: &dyn BucketOps,
    key: String,
    expected: Option<&[u8]>,
    value: Vec<u8>,
    deadline: u64,
) -> Result<Result<(), Option<Vec<u8>>>, String> {
    let mut value = Some(value);
    let mut outcome = Ok(());
    ops.update(key, Expiry::At(deadline), &mut |current| {
        if current == expected {
            Ok(value.take())
        } else {
            outcome = Err(current.map(<[u8]>::to_vec));
            Ok(None)
        }
    })?;
    Ok(outcome)
}

/// The stored value (none for a missing key) read as a decimal `N`.
fn number<N: FromStr>(current: Option<&[u8]>, key: &str, kind: &str) -> Result<Option<N>, String> {
    let Some(current) = current else { return Ok(None) };
    std::str::from_utf8(current)
        .ok()
        .and_then(|text| text.parse::<N>().ok())
        .map(Some)
        .ok_or_else(|| format!("the value of `{key}` is not a decimal {kind} 64-bit integer"))
}

/// draft's `increment` arithmetic: the stored value (none for a missing
/// key) read as a decimal `u64` (that version's type), plus `delta`,
/// checked.
pub(crate) fn incremented(current: Option<&[u8]>, key: &str, delta: u64) -> Result<u64, String> {
    let Some(value) = number::<u64>(current, key, "unsigned")? else { return Ok(delta) };
    value.checked_add(delta).ok_or_else(|| format!("incrementing `{key}` ({value}) by {delta} overflows 64 bits"))
}

/// draft2's: the value read as a decimal `i64` (that version's type).
pub(crate) fn incremented_signed(current: Option<&[u8]>, key: &str, delta: i64) -> Result<i64, String> {
    let Some(value) = number::<i64>(current, key, "signed")? else { return Ok(delta) };
    value.checked_add(delta).ok_or_else(|| format!("incrementing `{key}` ({value}) by {delta} overflows 64 bits"))
}

/// Adds `delta` with `add` (one of the above) and stores the sum in decimal,
/// as one atomic step on the backend; the entry keeps its deadline.
pub(crate) fn increment<N: fmt::Display + Copy>(
    ops: &dyn BucketOps,
    key: String,
    add: impl Fn(Option<&[u8]>, &str) -> Result<N, String>,
) -> Result<N, String> {
    let mut sum = None;
    let name = key.clone();
    ops.update(key, Expiry::Keep, &mut |current| {
        let next = add(current, &name)?;
        sum = Some(next);
        Ok(Some(next.to_string().into_bytes()))
    })?;
    sum.ok_or_else(|| "the store did not run the increment".to_string())
}

/// One page of `keys` (sorted) from `cursor`, an offset into them, with the
/// cursor of the next page if there is one.
pub(crate) fn page(keys: impl Iterator<Item = String>, cursor: Option<u64>) -> Page {
    let start = cursor.unwrap_or(0);
    let mut taken = Vec::new();
    let mut bytes = 0;
    let mut keys = keys.skip(usize::try_from(start).unwrap_or(usize::MAX));
    for key in keys.by_ref() {
        bytes += key.len();
        taken.push(key);
        if taken.len() >= PAGE_KEYS || bytes >= PAGE_BYTES {
            break;
        }
    }
    let more = keys.next().is_some();
    let next = start + taken.len() as u64;
    Page { keys: taken, cursor: more.then_some(next) }
}

/// Counts one operation against the connection's `--kv-max-ops` and returns
/// the listener's store, or the error the guest gets. Fields, not `self`,
/// so the store is borrowed from the policy while the count is updated.
fn admit_op<'a>(kv: &'a Option<Arc<KvStore>>, ops: &mut u64, span: &ConnSpan) -> Result<&'a KvStore, Failure> {
    // Unreachable in practice: a guest importing wasi:keyvalue is refused
    // at load unless --kv is given.
    let kv = kv.as_deref().ok_or(Failure::AccessDenied)?;
    if let Some(max) = kv.limits.max_ops {
        if *ops >= max {
            if *ops == max {
                tracing::warn!(parent: span.get(), "key-value operation limit: {max} operations (--kv-max-ops)");
            }
            *ops = ops.saturating_add(1);
            return Err(Failure::Other(format!("operation limit reached: {max} per connection (--kv-max-ops)")));
        }
    }
    *ops += 1;
    Ok(kv)
}

/// Runs a durable store's transaction on the blocking pool: redb blocks
/// (a commit waits for its fsync), and a worker blocked on it would stall
/// every other connection it serves. The wait is not charged to the
/// guest's CPU budget, like a wait on its peer: the disk's speed is not the
/// guest's doing.
async fn blocking<T: Send + 'static>(
    clock: &CpuClock,
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Outcome<T> {
    let began = clock.begin_wait();
    let done = tokio::task::spawn_blocking(job).await;
    clock.end_wait(began);
    match done {
        Ok(result) => Ok(result.map_err(Failure::Other)),
        Err(e) => wasmtime::bail!("the key-value store failed: {e}"),
    }
}

/// Counts the operation and returns the store, or returns the refusal.
macro_rules! op {
    ($state:expr) => {
        match admit_op(&$state.policy.kv, &mut $state.kv_ops, &$state.span) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        }
    };
}

macro_rules! check {
    ($e:expr) => {
        if let Err(e) = $e {
            return Ok(Err(e));
        }
    };
}

/// The operations both versions' host functions are made of: each counts
/// as one operation, checks its key and value, and runs on the bucket.
impl GuestState {
    /// Puts a resource in the table; a full table is the guest's error.
    pub(crate) fn kv_push<T: Send + 'static>(&mut self, value: T) -> Outcome<Resource<T>> {
        match self.table.push(value) {
            Ok(res) => Ok(Ok(res)),
            Err(ResourceTableError::Full) => {
                Ok(Err(Failure::Other("too many host resources held (--max-resources)".to_string())))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn kv_open(&mut self, identifier: &str) -> Outcome<Resource<Bucket>> {
        let kv = op!(self);
        match kv.open_bucket(identifier) {
            Ok(bucket) => self.kv_push(bucket),
            Err(why) => Ok(Err(Failure::Other(why))),
        }
    }

    /// Counts the operation, checks `key` (and `value`, if written) and
    /// returns the bucket.
    fn kv_key_op(&mut self, bucket: &Resource<Bucket>, key: &str, value: Option<&[u8]>) -> Outcome<Bucket> {
        let kv = op!(self);
        check!(kv.check_key(key));
        check!(value.map_or(Ok(()), |value| kv.check_value(value)));
        Ok(Ok(self.table.get(bucket)?.clone()))
    }

    pub(crate) async fn kv_get(&mut self, bucket: &Resource<Bucket>, key: String) -> Outcome<Option<Vec<u8>>> {
        let bucket = match self.kv_key_op(bucket, &key, None)? {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        bucket.call(&self.clock, move |b| b.get(&key)).await
    }

    /// `set`, and `expiry.set-until` with a `deadline` (0: none).
    pub(crate) async fn kv_set(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        deadline: u64,
    ) -> Outcome<()> {
        let bucket = match self.kv_key_op(bucket, &key, Some(&value))? {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        bucket.call(&self.clock, move |b| b.set(key, value, deadline)).await
    }

    pub(crate) async fn kv_delete(&mut self, bucket: &Resource<Bucket>, key: String) -> Outcome<()> {
        let bucket = match self.kv_key_op(bucket, &key, None)? {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        bucket.call(&self.clock, move |b| b.delete(&key)).await
    }

    pub(crate) async fn kv_exists(&mut self, bucket: &Resource<Bucket>, key: String) -> Outcome<bool> {
        let bucket = match self.kv_key_op(bucket, &key, None)? {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        bucket.call(&self.clock, move |b| b.exists(&key)).await
    }

    pub(crate) async fn kv_list_keys(&mut self, bucket: &Resource<Bucket>, cursor: Option<u64>) -> Outcome<Page> {
        op!(self);
        let bucket = self.table.get(bucket)?.clone();
        bucket.call(&self.clock, move |b| b.list_keys(cursor)).await
    }

    /// An increment, `add` being either version's arithmetic.
    pub(crate) async fn kv_increment<N: fmt::Display + Copy + Send + 'static>(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
        add: impl Fn(Option<&[u8]>, &str) -> Result<N, String> + Send + 'static,
    ) -> Outcome<N> {
        let bucket = match self.kv_key_op(bucket, &key, None)? {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        bucket.call(&self.clock, move |b| increment(b, key, add)).await
    }

    pub(crate) fn kv_drop<T: 'static>(&mut self, resource: Resource<T>) -> wasmtime::Result<()> {
        self.table.delete(resource)?;
        Ok(())
    }

    /// `cas.new`: reads the value at `key`, which a later `swap` compares.
    pub(crate) async fn kv_cas(&mut self, bucket: &Resource<Bucket>, key: String) -> Outcome<Cas> {
        let bucket = match self.kv_key_op(bucket, &key, None)? {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        let read = {
            let key = key.clone();
            bucket.call(&self.clock, move |b| b.get(&key)).await?
        };
        let current = match read {
            Ok(current) => current,
            Err(e) => return Ok(Err(e)),
        };
        let max = self.policy.limits.max_memory;
        Ok(CasCharge::new(self.kv_cas_held.get_or_insert_with(Arc::default), &key, current.as_deref(), max)
            .map(|charge| Cas { bucket, key, current, _charge: charge }))
    }

    /// `swap`: writes `value` if the key still holds what `cas` read, as one
    /// atomic step; if not, `Err` with a new `Cas` that holds the value now
    /// there (read in the same step), for a retry. What it writes gets
    /// `deadline` (0: none; `expiry.swap-until` gives one).
    pub(crate) async fn kv_swap(&mut self, cas: Cas, value: Vec<u8>, deadline: u64) -> Outcome<Result<(), Cas>> {
        let kv = op!(self);
        check!(kv.check_value(&value));
        let Cas { bucket, key, current, _charge } = cas;
        // The handle is spent: its bytes are no longer held.
        drop(_charge);
        let swapped = {
            let key = key.clone();
            bucket.call(&self.clock, move |b| compare_and_swap(b, key, current.as_deref(), value, deadline)).await?
        };
        let max = self.policy.limits.max_memory;
        Ok(swapped.and_then(|done| match done {
            Ok(()) => Ok(Ok(())),
            Err(current) => {
                CasCharge::new(self.kv_cas_held.get_or_insert_with(Arc::default), &key, current.as_deref(), max)
                    .map(|charge| Err(Cas { bucket, key, current, _charge: charge }))
            }
        }))
    }
}

/// One interface's `add_to_linker` result, naming the interface on failure.
fn linked(result: wasmtime::Result<()>, interface: &str) -> Result<()> {
    result.map_err(anyhow::Error::from).with_context(|| format!("cannot link {interface}"))
}

/// Links both versions' interfaces for every guest: a guest that imports
/// them is admitted only with `--kv`, so the store is there when it calls.
pub fn link(linker: &mut Linker<GuestState>) -> Result<()> {
    draft::link(linker)?;
    draft2::link(linker)?;
    expiry::link(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `threads` threads each append their own letter `each` times to the
    /// value at `log` with `compare_and_swap`, retrying from the value a
    /// failed swap returns; the letters of each thread in the final value.
    pub(super) fn append_from_threads(bucket: Arc<dyn BucketOps>, threads: u8, each: usize) -> Vec<usize> {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let bucket = bucket.clone();
                std::thread::spawn(move || {
                    for _ in 0..each {
                        let mut seen = bucket.get("log").unwrap();
                        loop {
                            let mut next = seen.clone().unwrap_or_default();
                            next.push(b'a' + i);
                            match compare_and_swap(&*bucket, "log".to_string(), seen.as_deref(), next, 0).unwrap() {
                                Ok(()) => break,
                                Err(now) => seen = now,
                            }
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let log = bucket.get("log").unwrap().unwrap_or_default();
        (0..threads).map(|i| log.iter().filter(|&&b| b == b'a' + i).count()).collect()
    }

    #[test]
    fn a_kv_value_is_memory_or_written_as_a_path() {
        assert_eq!(Backend::parse("memory"), Ok(Backend::Memory));
        for path in ["./memry", "/var/lib/netplug/kv", "cache.redb", "data/cache"] {
            assert_eq!(Backend::parse(path), Ok(Backend::Path(PathBuf::from(path))), "{path}");
        }
        for typo in ["memry", "Memory", "cache", ".redb", ""] {
            assert!(Backend::parse(typo).unwrap_err().contains("neither `memory` nor a database path"), "{typo}");
        }
        assert!(Backend::parse("redis://h:6379").unwrap_err().contains("URLs are not supported"));
    }

    #[test]
    fn increment_arithmetic() {
        assert_eq!(incremented(None, "k", 5), Ok(5));
        assert_eq!(incremented(Some(b"41"), "k", 1), Ok(42));
        assert!(incremented(Some(b"x"), "k", 1).unwrap_err().contains("not a decimal"));
        assert!(incremented(Some(b"-1"), "k", 1).is_err());
        let max = u64::MAX.to_string();
        assert!(incremented(Some(max.as_bytes()), "k", 1).unwrap_err().contains("overflows"));
        assert_eq!(incremented(Some(max.as_bytes()), "k", 0), Ok(u64::MAX));
    }

    #[test]
    fn signed_increment_arithmetic() {
        assert_eq!(incremented_signed(None, "k", -5), Ok(-5));
        assert_eq!(incremented_signed(Some(b"-1"), "k", 3), Ok(2));
        assert_eq!(incremented_signed(Some(b"10"), "k", -20), Ok(-10));
        assert!(incremented_signed(Some(b"x"), "k", 1).unwrap_err().contains("not a decimal signed"));
        let max = i64::MAX.to_string();
        assert!(incremented_signed(Some(max.as_bytes()), "k", 1).unwrap_err().contains("overflows"));
        assert!(incremented_signed(Some(u64::MAX.to_string().as_bytes()), "k", 0).is_err());
    }

    #[test]
    fn pages_carry_a_cursor_until_the_last() {
        let keys = |n: usize| (0..n).map(|i| format!("{i:05}"));
        let first = page(keys(2500), None);
        assert_eq!(first.keys.len(), PAGE_KEYS);
        assert_eq!(first.cursor, Some(1000));
        let last = page(keys(2500), Some(2000));
        assert_eq!(last.keys.len(), 500);
        assert_eq!(last.keys[0], "02000");
        assert_eq!(last.cursor, None);
        assert!(page(keys(3), Some(u64::MAX)).keys.is_empty());
        assert_eq!(page(keys(1000), None).cursor, None);
    }
}
