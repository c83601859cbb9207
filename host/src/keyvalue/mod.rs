//! Shared state: the standard `wasi:keyvalue` interfaces `store` and
//! `atomics` (0.2.0-draft, `wit/deps/wasi-keyvalue/`), backed by one store
//! per listener that every connection of it shares. Granted only with
//! `host run --kv memory` (`memory.rs`) or `--kv PATH` (`durable.rs`, a redb
//! file that survives restarts); a guest importing them without `--kv` is
//! refused at load (`guest::grant`).
//!
//! `store.open(name)` opens a bucket: a namespace of the store, created on
//! first use, any name (`""` included) up to `MAX_BUCKETS` of them. The
//! bucket resource lives in the store's `ResourceTable`, so it counts
//! against `--max-resources`. Every operation counts against the
//! connection's `--kv-max-ops`; keys and values over `--kv-max-key-size` and
//! `--kv-max-value-size` are refused. Each refusal is `error::other` with a
//! message, returned to the guest: never a trap.

mod durable;
mod memory;

use crate::budget::CpuClock;
use crate::cli::KvArgs;
use crate::store::{ConnSpan, GuestState};
use anyhow::{Context, Result};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTableError};

mod bindings {
    // Host functions are async so that the durable backend can run its
    // blocking transactions on tokio's blocking pool (`spawn_blocking`)
    // rather than stall a worker that serves other connections; the memory
    // backend never awaits, so its calls complete in their first poll.
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
        ",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, store};
use store::{Error, KeyResponse};

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
    pub max_key_size: u64,
    pub max_value_size: u64,
    /// Operations one connection may make; `None` for no limit.
    pub max_ops: Option<u64>,
}

impl KvConfig {
    /// `None` without `--kv`.
    pub fn from_args(args: &KvArgs) -> Option<Self> {
        let backend = match args.kv.as_deref()? {
            "memory" => Backend::Memory,
            path => Backend::Path(PathBuf::from(path)),
        };
        let limits = KvLimits {
            max_key_size: args.kv_max_key_size,
            max_value_size: args.kv_max_value_size,
            max_ops: args.kv_max_ops.0,
        };
        Some(KvConfig { backend, limits })
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
    pub fn open_configured(config: Option<&KvConfig>) -> Result<Option<Arc<KvStore>>> {
        config.map(|config| KvStore::open(config).map(Arc::new)).transpose()
    }

    pub fn open(config: &KvConfig) -> Result<KvStore> {
        let data = match &config.backend {
            Backend::Memory => Data::Memory(memory::Memory::default()),
            Backend::Path(path) => Data::Durable(Arc::new(durable::Durable::open(path)?)),
        };
        Ok(KvStore { data: Arc::new(data), backend: config.backend.clone(), limits: config.limits.clone() })
    }

    /// The store `config` asks for, if it is this one (the same backend):
    /// the same data under `config`'s limits.
    pub fn reused_for(&self, config: &KvConfig) -> Option<KvStore> {
        (self.backend == config.backend).then(|| KvStore {
            data: self.data.clone(),
            backend: self.backend.clone(),
            limits: config.limits.clone(),
        })
    }

    fn open_bucket(&self, name: &str) -> Result<Bucket, String> {
        if name.len() > MAX_BUCKET_NAME {
            return Err(format!("bucket name of {} bytes is over the limit of {MAX_BUCKET_NAME}", name.len()));
        }
        match &*self.data {
            Data::Memory(memory) => memory.bucket(name).map(Bucket::Memory),
            Data::Durable(db) => db.bucket(name).map(|table| Bucket::Durable(db.clone(), table)),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        let max = self.limits.max_key_size;
        if key.len() as u64 > max {
            return Err(Error::Other(format!(
                "key of {} bytes is over the limit of {max} (--kv-max-key-size)",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        let max = self.limits.max_value_size;
        if value.len() as u64 > max {
            return Err(Error::Other(format!(
                "value of {} bytes is over the limit of {max} (--kv-max-value-size)",
                value.len()
            )));
        }
        Ok(())
    }
}

/// An open bucket, as the guest's `bucket` resource holds it.
pub enum Bucket {
    Memory(Arc<memory::Bucket>),
    /// The database and the bucket's table name.
    Durable(Arc<durable::Durable>, Arc<str>),
}

/// `increment`'s arithmetic: the stored value (none for a missing key) read
/// as a decimal `u64` (the interface's type), plus `delta`, checked.
pub(crate) fn incremented(current: Option<&[u8]>, key: &str, delta: u64) -> Result<u64, String> {
    let Some(current) = current else { return Ok(delta) };
    let value = std::str::from_utf8(current)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| format!("the value of `{key}` is not a decimal unsigned 64-bit integer"))?;
    value.checked_add(delta).ok_or_else(|| format!("incrementing `{key}` ({value}) by {delta} overflows 64 bits"))
}

/// One page of `keys` (sorted) from `cursor`, an offset into them, with the
/// cursor of the next page if there is one.
pub(crate) fn page(keys: impl Iterator<Item = String>, cursor: Option<u64>) -> KeyResponse {
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
    KeyResponse { keys: taken, cursor: more.then_some(next) }
}

/// Counts one operation against the connection's `--kv-max-ops` and returns
/// the listener's store, or the error the guest gets. Fields, not `self`,
/// so the store is borrowed from the policy while the count is updated.
fn admit_op<'a>(kv: &'a Option<Arc<KvStore>>, ops: &mut u64, span: &ConnSpan) -> Result<&'a KvStore, Error> {
    // Unreachable in practice: a guest importing wasi:keyvalue is refused
    // at load unless --kv is given.
    let kv = kv.as_deref().ok_or(Error::AccessDenied)?;
    if let Some(max) = kv.limits.max_ops {
        if *ops >= max {
            if *ops == max {
                tracing::warn!(parent: span.get(), "key-value operation limit: {max} operations (--kv-max-ops)");
            }
            *ops = ops.saturating_add(1);
            return Err(Error::Other(format!("operation limit reached: {max} per connection (--kv-max-ops)")));
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
) -> wasmtime::Result<Result<T, Error>> {
    let began = clock.begin_wait();
    let done = tokio::task::spawn_blocking(job).await;
    clock.end_wait(began);
    match done {
        Ok(result) => Ok(result.map_err(Error::Other)),
        Err(e) => wasmtime::bail!("the key-value store failed: {e}"),
    }
}

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

impl store::Host for GuestState {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        let kv = op!(self);
        let bucket = match kv.open_bucket(&identifier) {
            Ok(bucket) => bucket,
            Err(why) => return Ok(Err(Error::Other(why))),
        };
        match self.table.push(bucket) {
            Ok(res) => Ok(Ok(res)),
            Err(ResourceTableError::Full) => {
                Ok(Err(Error::Other("too many host resources held (--max-resources)".to_string())))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl store::HostBucket for GuestState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let kv = op!(self);
        check!(kv.check_key(&key));
        match self.table.get(&bucket)? {
            Bucket::Memory(b) => Ok(Ok(b.get(&key))),
            Bucket::Durable(db, table) => {
                let (db, table) = (db.clone(), table.clone());
                blocking(&self.clock, move || db.get(&table, &key)).await
            }
        }
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let kv = op!(self);
        check!(kv.check_key(&key));
        check!(kv.check_value(&value));
        match self.table.get(&bucket)? {
            Bucket::Memory(b) => {
                b.set(key, value);
                Ok(Ok(()))
            }
            Bucket::Durable(db, table) => {
                let (db, table) = (db.clone(), table.clone());
                blocking(&self.clock, move || db.set(&table, &key, &value)).await
            }
        }
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), Error>> {
        let kv = op!(self);
        check!(kv.check_key(&key));
        match self.table.get(&bucket)? {
            Bucket::Memory(b) => {
                b.delete(&key);
                Ok(Ok(()))
            }
            Bucket::Durable(db, table) => {
                let (db, table) = (db.clone(), table.clone());
                blocking(&self.clock, move || db.delete(&table, &key)).await
            }
        }
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, Error>> {
        let kv = op!(self);
        check!(kv.check_key(&key));
        match self.table.get(&bucket)? {
            Bucket::Memory(b) => Ok(Ok(b.exists(&key))),
            Bucket::Durable(db, table) => {
                let (db, table) = (db.clone(), table.clone());
                blocking(&self.clock, move || db.exists(&table, &key)).await
            }
        }
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        op!(self);
        match self.table.get(&bucket)? {
            Bucket::Memory(b) => Ok(Ok(b.list_keys(cursor))),
            Bucket::Durable(db, table) => {
                let (db, table) = (db.clone(), table.clone());
                blocking(&self.clock, move || db.list_keys(&table, cursor)).await
            }
        }
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for GuestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let kv = op!(self);
        check!(kv.check_key(&key));
        match self.table.get(&bucket)? {
            Bucket::Memory(b) => Ok(b.increment(key, delta).map_err(Error::Other)),
            Bucket::Durable(db, table) => {
                let (db, table) = (db.clone(), table.clone());
                blocking(&self.clock, move || db.increment(&table, &key, delta)).await
            }
        }
    }
}

/// Links `store` and `atomics` for every guest: a guest that imports them
/// is admitted only with `--kv`, so the store is there when it calls.
pub fn link(linker: &mut Linker<GuestState>) -> Result<()> {
    store::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link wasi:keyvalue/store")?;
    atomics::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link wasi:keyvalue/atomics")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
