//! The operations both versions' host functions are made of, on the
//! connection's `GuestState`: each counts against `--kv-max-ops`, checks its
//! key and value, and runs on the bucket; and the compare-and-swap handle,
//! whose held bytes count against the connection's `--max-memory`.

use super::{awaited, compare_and_swap, increment, Bucket, Delta, Failure, KvStore, Outcome, Page};
use crate::imports::state::GuestState;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use wasmtime::component::{Resource, ResourceTableError};

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

/// What one connection used of the store: its operations, for
/// `--kv-max-ops`, and the bytes its compare-and-swap handles hold in the
/// host (each gives its own back when dropped), bounded by `--max-memory`;
/// made at the first, so a connection that makes none allocates nothing.
#[derive(Default)]
pub struct KvUse {
    ops: u64,
    cas_held: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl KvUse {
    /// For an instance that serves another connection.
    pub fn start(&mut self) {
        self.ops = 0;
    }
}

/// Counts one operation against the connection's `--kv-max-ops` and returns
/// the listener's store, or the error the guest gets (and, the first time
/// past the limit, the limit to warn about). Fields, not `self`, so the
/// store is borrowed from the policy while the count is updated.
fn admit_op<'a>(kv: &'a Option<Arc<KvStore>>, ops: &mut u64) -> Result<&'a KvStore, (Failure, Option<u64>)> {
    // Unreachable in practice: a guest importing wasi:keyvalue is refused
    // at load unless --kv is given.
    let kv = kv.as_deref().ok_or((Failure::AccessDenied, None))?;
    if let Some(max) = kv.limits.max_ops {
        if *ops >= max {
            let warn = (*ops == max).then_some(max);
            *ops = ops.saturating_add(1);
            let failure = Failure::Other(format!("operation limit reached: {max} per connection (--kv-max-ops)"));
            return Err((failure, warn));
        }
    }
    *ops += 1;
    Ok(kv)
}

/// Counts the operation and returns the store, or returns the refusal.
macro_rules! op {
    ($state:expr) => {
        match admit_op(&$state.policy.kv, &mut $state.kv.ops) {
            Ok(kv) => kv,
            Err((e, warn)) => {
                if let Some(max) = warn {
                    tracing::warn!(parent: $state.span().get(), "key-value operation limit: {max} operations (--kv-max-ops)");
                }
                return Ok(Err(e));
            }
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
        match self.kv_key_op(bucket, &key, None)? {
            Err(e) => Ok(Err(e)),
            Ok(Bucket::Local(local)) => local.call(&self.clock, move |b| b.get(&key)).await,
            Ok(Bucket::Remote(remote)) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.get(&key)).await
            }
        }
    }

    /// `set`, and `expiry.set-until` with a `deadline` (0: none).
    pub(crate) async fn kv_set(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        deadline: u64,
    ) -> Outcome<()> {
        match self.kv_key_op(bucket, &key, Some(&value))? {
            Err(e) => Ok(Err(e)),
            Ok(Bucket::Local(local)) => local.call(&self.clock, move |b| b.set(key, value, deadline)).await,
            Ok(Bucket::Remote(remote)) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.set(&key, &value, deadline)).await
            }
        }
    }

    pub(crate) async fn kv_delete(&mut self, bucket: &Resource<Bucket>, key: String) -> Outcome<()> {
        match self.kv_key_op(bucket, &key, None)? {
            Err(e) => Ok(Err(e)),
            Ok(Bucket::Local(local)) => local.call(&self.clock, move |b| b.delete(&key)).await,
            Ok(Bucket::Remote(remote)) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.delete(&key)).await
            }
        }
    }

    pub(crate) async fn kv_exists(&mut self, bucket: &Resource<Bucket>, key: String) -> Outcome<bool> {
        match self.kv_key_op(bucket, &key, None)? {
            Err(e) => Ok(Err(e)),
            Ok(Bucket::Local(local)) => local.call(&self.clock, move |b| b.exists(&key)).await,
            Ok(Bucket::Remote(remote)) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.exists(&key)).await
            }
        }
    }

    pub(crate) async fn kv_list_keys(&mut self, bucket: &Resource<Bucket>, cursor: Option<u64>) -> Outcome<Page> {
        op!(self);
        match self.table.get(bucket)?.clone() {
            Bucket::Local(local) => local.call(&self.clock, move |b| b.list_keys(cursor)).await,
            Bucket::Remote(remote) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.list_keys(cursor)).await
            }
        }
    }

    /// Either version's increment, by `delta`: in the host, its arithmetic
    /// under the backend's atomic update; on a Redis store, `INCRBY`.
    pub(crate) async fn kv_increment<N: Delta>(
        &mut self,
        bucket: &Resource<Bucket>,
        key: String,
        delta: N,
    ) -> Outcome<N> {
        match self.kv_key_op(bucket, &key, None)? {
            Err(e) => Ok(Err(e)),
            Ok(Bucket::Local(local)) => {
                local
                    .call(&self.clock, move |b| increment(b, key, move |current, key| delta.added_to(current, key)))
                    .await
            }
            Ok(Bucket::Remote(remote)) => {
                let signed = match delta.signed(&key) {
                    Ok(signed) => signed,
                    Err(why) => return Ok(Err(Failure::Other(why))),
                };
                let sum =
                    awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.increment(&key, signed))
                        .await?;
                Ok(sum.and_then(|sum| N::from_sum(sum, &key).map_err(Failure::Other)))
            }
        }
    }

    /// Counts one operation per key and checks every key (and value)
    /// before any runs: a batch past `--kv-max-ops`, or with one key or
    /// value over its limit, does nothing.
    fn kv_batch_op<'k>(
        &mut self,
        bucket: &Resource<Bucket>,
        entries: impl Iterator<Item = (&'k str, Option<&'k [u8]>)>,
    ) -> Outcome<Bucket> {
        for (key, value) in entries {
            let kv = op!(self);
            check!(kv.check_key(key));
            check!(value.map_or(Ok(()), |value| kv.check_value(value)));
        }
        Ok(Ok(self.table.get(bucket)?.clone()))
    }

    /// `get-many`: each key's value, in order. The answer goes into the
    /// guest's memory, so it may be no larger than the connection's
    /// `--max-memory`: past it the host would hold (and then fail to copy)
    /// as many large values as the guest can name keys. A Redis store is
    /// asked in one `MGET` per as many keys as fit that bound at the
    /// largest value size.
    pub(crate) async fn kv_get_many(
        &mut self,
        bucket: &Resource<Bucket>,
        keys: Vec<String>,
    ) -> Outcome<Vec<Option<(String, Vec<u8>)>>> {
        let bucket = match self.kv_batch_op(bucket, keys.iter().map(|key| (key.as_str(), None)))? {
            Ok(bucket) => bucket,
            Err(e) => return Ok(Err(e)),
        };
        let max = self.policy.limits.max_memory;
        let over = || Failure::Other(format!("get-many's values pass the connection's {max} bytes (--max-memory)"));
        let mut found = Vec::with_capacity(keys.len().min(1024));
        let mut bytes = 0u64;
        let mut keep = |key: String, value: Option<Vec<u8>>, found: &mut Vec<_>| {
            bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
            found.push(value.map(|value| (key, value)));
            bytes <= max
        };
        match bucket {
            Bucket::Local(local) => {
                for key in keys {
                    let read = key.clone();
                    let value = match local.call(&self.clock, move |b| b.get(&read)).await? {
                        Ok(value) => value,
                        Err(e) => return Ok(Err(e)),
                    };
                    if !keep(key, value, &mut found) {
                        return Ok(Err(over()));
                    }
                }
            }
            Bucket::Remote(remote) => {
                let kv = self.policy.kv.as_deref().expect("a bucket was opened on the store");
                let per_call = (max / (kv.limits.max_key_size + kv.limits.max_value_size).max(1)).max(1) as usize;
                for chunk in keys.chunks(per_call) {
                    let values =
                        match awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.get_many(chunk))
                            .await?
                        {
                            Ok(values) => values,
                            Err(e) => return Ok(Err(e)),
                        };
                    for (key, value) in chunk.iter().zip(values) {
                        if !keep(key.clone(), value, &mut found) {
                            return Ok(Err(over()));
                        }
                    }
                }
            }
        }
        Ok(Ok(found))
    }

    /// `set-many`: on a Redis store, one `MSET`.
    pub(crate) async fn kv_set_many(
        &mut self,
        bucket: &Resource<Bucket>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Outcome<()> {
        let checked = entries.iter().map(|(key, value)| (key.as_str(), Some(value.as_slice())));
        match self.kv_batch_op(bucket, checked)? {
            Err(e) => Ok(Err(e)),
            Ok(Bucket::Local(local)) => {
                for (key, value) in entries {
                    if let Err(e) = local.call(&self.clock, move |b| b.set(key, value, 0)).await? {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            }
            Ok(Bucket::Remote(remote)) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.set_many(&entries)).await
            }
        }
    }

    /// `delete-many`: on a Redis store, one `DEL`.
    pub(crate) async fn kv_delete_many(&mut self, bucket: &Resource<Bucket>, keys: Vec<String>) -> Outcome<()> {
        match self.kv_batch_op(bucket, keys.iter().map(|key| (key.as_str(), None)))? {
            Err(e) => Ok(Err(e)),
            Ok(Bucket::Local(local)) => {
                for key in keys {
                    if let Err(e) = local.call(&self.clock, move |b| b.delete(&key)).await? {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            }
            Ok(Bucket::Remote(remote)) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, &remote, remote.delete_many(&keys)).await
            }
        }
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
        let read = match &bucket {
            Bucket::Local(local) => {
                let key = key.clone();
                local.call(&self.clock, move |b| b.get(&key)).await?
            }
            Bucket::Remote(remote) => {
                awaited(&self.clock, self.policy.limits.idle_timeout, remote, remote.get(&key)).await?
            }
        };
        let current = match read {
            Ok(current) => current,
            Err(e) => return Ok(Err(e)),
        };
        let max = self.policy.limits.max_memory;
        Ok(CasCharge::new(self.kv.cas_held.get_or_insert_with(Arc::default), &key, current.as_deref(), max)
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
        let swapped = match &bucket {
            Bucket::Local(local) => {
                let key = key.clone();
                local.call(&self.clock, move |b| compare_and_swap(b, key, current.as_deref(), value, deadline)).await?
            }
            Bucket::Remote(remote) => {
                awaited(
                    &self.clock,
                    self.policy.limits.idle_timeout,
                    remote,
                    remote.compare_and_swap(&key, current.as_deref(), &value, deadline),
                )
                .await?
            }
        };
        let max = self.policy.limits.max_memory;
        Ok(swapped.and_then(|done| match done {
            Ok(()) => Ok(Ok(())),
            Err(current) => {
                CasCharge::new(self.kv.cas_held.get_or_insert_with(Arc::default), &key, current.as_deref(), max)
                    .map(|charge| Err(Cas { bucket, key, current, _charge: charge }))
            }
        }))
    }
}
