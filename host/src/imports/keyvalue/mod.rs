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
//! them without `--kv` is refused at load (`guest::load::grant`).
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
        impl From<$crate::imports::keyvalue::Failure> for $store::Error {
            fn from(failure: $crate::imports::keyvalue::Failure) -> $store::Error {
                match failure {
                    $crate::imports::keyvalue::Failure::AccessDenied => $store::Error::AccessDenied,
                    $crate::imports::keyvalue::Failure::Other(message) => $store::Error::Other(message),
                }
            }
        }

        /// An outcome with this version's error.
        fn ours<T>(outcome: $crate::imports::keyvalue::Outcome<T>) -> wasmtime::Result<Result<T, $store::Error>> {
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
mod ops;
mod remote;
mod usage;
mod values;

pub use crate::config::kv::{Backend, KvConfig, KvLimits, GRANT};
pub use ops::{Cas, KvUse};
#[cfg(test)]
pub(crate) use values::incremented;
pub(crate) use values::{compare_and_swap, increment, page, Delta};

use crate::imports::budget::CpuClock;
use crate::imports::state::GuestState;
use crate::ops::metrics::KvMetrics;
use anyhow::{Context, Result};
use std::fmt;
use std::sync::Arc;
use wasmtime::component::Linker;

/// Buckets one store may hold: each is a namespace (and in the durable
/// store a table), made by any `open` of a new name.
pub const MAX_BUCKETS: usize = 1024;

/// Longest bucket name `open` accepts.
pub const MAX_BUCKET_NAME: usize = 256;

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
    Remote(Arc<remote::Remote>),
}

impl Data {
    /// What the host counts of the store; a Redis store counts its own.
    fn usage(&self) -> Option<&usage::Usage> {
        match self {
            Data::Memory(memory) => Some(memory.usage()),
            Data::Durable(db) => Some(db.usage()),
            Data::Remote(_) => None,
        }
    }

    /// Deletes the entries whose deadline has passed (`expiry.rs` calls it
    /// on its own thread); how many. Redis expires its entries itself.
    fn sweep(&self, now: u64) -> Result<u64, String> {
        match self {
            Data::Memory(memory) => Ok(memory.sweep(now)),
            Data::Durable(db) => db.sweep(now),
            Data::Remote(_) => Ok(0),
        }
    }
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &*self.data {
            Data::Memory(_) => "memory".to_string(),
            Data::Durable(db) => db.path().display().to_string(),
            Data::Remote(store) => store.shown().to_string(),
        };
        f.debug_struct("KvStore").field("backend", &backend).field("limits", &self.limits).finish()
    }
}

impl KvStore {
    /// Opens the store, with `metrics` following what it holds, and starts
    /// its expiry sweep (which ends when the store is dropped).
    pub fn open(config: &KvConfig, metrics: KvMetrics) -> Result<KvStore> {
        let data = match &config.backend {
            Backend::Redis(_) | Backend::RedisCluster(_) => {
                Data::Remote(Arc::new(remote::Remote::open(&config.backend, metrics.store_errors)?))
            }
            Backend::Memory => {
                Data::Memory(memory::Memory::new(Arc::new(usage::Usage::new(config.limits.max_bytes, metrics))))
            }
            Backend::Path(path) => {
                let usage = Arc::new(usage::Usage::new(config.limits.max_bytes, metrics));
                Data::Durable(Arc::new(durable::Durable::open(path, usage)?))
            }
        };
        let data = Arc::new(data);
        if data.usage().is_some() {
            expiry::start_sweeping(&data)?;
        }
        Ok(KvStore { data, backend: config.backend.clone(), limits: config.limits.clone() })
    }

    /// The store `config` asks for, if it is this one (the same backend):
    /// the same data under `config`'s limits.
    pub fn reused_for(&self, config: &KvConfig) -> Option<KvStore> {
        if self.backend != config.backend {
            return None;
        }
        if let Some(usage) = self.data.usage() {
            usage.set_max(config.limits.max_bytes);
        }
        Some(KvStore { data: self.data.clone(), backend: self.backend.clone(), limits: config.limits.clone() })
    }

    fn open_bucket(&self, name: &str) -> Result<Bucket, String> {
        if name.len() > MAX_BUCKET_NAME {
            return Err(format!("bucket name of {} bytes is over the limit of {MAX_BUCKET_NAME}", name.len()));
        }
        match &*self.data {
            Data::Memory(memory) => memory.bucket(name).map(|bucket| Bucket::Local(Local::Memory(bucket))),
            Data::Durable(db) => {
                durable::Table::open(db, name).map(|table| Bucket::Local(Local::Durable(Arc::new(table))))
            }
            Data::Remote(store) => Ok(Bucket::Remote(Arc::new(remote::Bucket::open(store, name)))),
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
    /// In this host: its operations are `BucketOps` steps.
    Local(Local),
    /// On a Redis server or cluster (`remote.rs`): each operation is a
    /// command, awaited on the host's runtime.
    Remote(Arc<remote::Bucket>),
}

#[derive(Clone)]
pub enum Local {
    Memory(Arc<memory::Bucket>),
    Durable(Arc<durable::Table>),
}

impl Local {
    /// Runs `op` on the backend: in place for the memory store, which never
    /// waits, on the blocking pool for the durable one.
    async fn call<T: Send + 'static>(
        &self,
        clock: &CpuClock,
        op: impl FnOnce(&dyn BucketOps) -> Result<T, String> + Send + 'static,
    ) -> Outcome<T> {
        match self {
            Local::Memory(bucket) => Ok(op(&**bucket).map_err(Failure::Other)),
            // Boxed, as `awaited`: the memory store's calls (an increment
            // per pipelined INCR) then do not carry the blocking pool's
            // wait in their own future, allocated and moved per call.
            Local::Durable(table) => {
                let table = table.clone();
                Box::pin(blocking(clock, move || op(&*table))).await
            }
        }
    }
}

/// Waits for a Redis store's answer to `call`, at most `bound` (the
/// connection's idle timeout: the store's speed is no more the guest's
/// doing than its peer's), without charging the wait to the guest's CPU
/// budget.
///
/// Boxed: the wait holds a timer, and a host function's future is as large
/// as its largest branch, so unboxed it would make every key-value call
/// of the in-host stores allocate and move that much more.
fn awaited<'a, T: 'a>(
    clock: &'a CpuClock,
    bound: std::time::Duration,
    bucket: &'a remote::Bucket,
    call: impl std::future::Future<Output = Result<T, String>> + 'a,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Outcome<T>> + 'a>> {
    Box::pin(async move {
        let reachability = bucket.store().begin();
        let began = clock.begin_wait();
        let answer = tokio::time::timeout(bound, call).await;
        clock.end_wait(began);
        Ok(match answer {
            Ok(answer) => answer.map_err(Failure::Other),
            Err(_) => {
                let why = format!("no answer within {} (the idle timeout)", humantime::format_duration(bound));
                Err(Failure::Other(bucket.store().lost(reachability, &why)))
            }
        })
    })
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
}
