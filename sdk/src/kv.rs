//! The listener's shared key-value store (`wasi:keyvalue`, 0.2.0-draft2):
//! state that outlives a connection and is shared by every connection of the
//! listener, with an atomic `increment` and a compare-and-swap.
//!
//! ```no_run
//! use netplug_guest::kv::Bucket;
//!
//! # fn main() -> std::io::Result<()> {
//! let bucket = Bucket::open("")?;
//! let visits = bucket.increment("visits", 1)?;
//! bucket.set("last", b"hello")?;
//! assert_eq!(bucket.get("last")?.as_deref(), Some(&b"hello"[..]));
//! for key in bucket.keys() {
//!     println!("{}", key?);
//! }
//! // Append to a value without losing another connection's append.
//! bucket.update("log", |old| {
//!     let mut log = old.unwrap_or_default().to_vec();
//!     log.extend_from_slice(b"entry;");
//!     Some(log)
//! })?;
//! # let _ = visits;
//! # Ok(())
//! # }
//! ```
//!
//! The host grants the store only with `host run --kv memory` (in memory,
//! for the listener's lifetime) or `--kv PATH` (a database file); a guest
//! that calls these functions imports `wasi:keyvalue/store` and
//! `wasi:keyvalue/atomics` (0.2.0-draft2) and is refused without `--kv`. A guest that never
//! calls them does not import them (the imports are dropped when the
//! component is made).
//!
//! Errors are `io::Error`s: `no-such-store` is `NotFound`, `access-denied`
//! `PermissionDenied`, and the host's `other(message)` (a key or value over
//! its limits, the connection's quota spent, a value `increment` cannot
//! read...) is `Other`, displayed as the message.
//!
//! # Read, compute, write
//!
//! A `get` then a `set` can lose a concurrent writer's update: another
//! connection may write the key in between. [`Bucket::update`] does it
//! with a compare-and-swap and retries until no write came in between;
//! [`Bucket::compare_and_swap`] is one attempt; [`Cas`] is the host's
//! handle itself (`wasi:keyvalue/atomics.cas`). The host compares the bytes
//! it read with those there at the swap, under the key's lock (`--kv
//! memory`) or in one transaction (`--kv PATH`).
//!
//! In native tests (not `wasm32`) buckets live in memory, per thread:
//! [`testing::kv_reset`](crate::testing::kv_reset) empties them, and
//! [`testing::kv_contents`](crate::testing::kv_contents) shows one.

use std::io;

#[cfg(target_arch = "wasm32")]
use crate::bindings::server::netplug::protocol::expiry;
#[cfg(target_arch = "wasm32")]
use crate::bindings::server::wasi::keyvalue0_2_0_draft2::{atomics, store};

/// Whether `e` is the host's refusal of a write that would grow the store
/// past its total bound (`--kv-max-bytes`): the store is full until
/// something is deleted or expires. Reads and deletes still work.
pub fn is_store_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string().starts_with("store full:")
}

/// An open bucket: one namespace of the listener's store, by name (`""` is
/// the one guests share by default).
pub struct Bucket {
    #[cfg(target_arch = "wasm32")]
    inner: store::Bucket,
    #[cfg(not(target_arch = "wasm32"))]
    name: String,
}

#[cfg(target_arch = "wasm32")]
fn error(e: store::Error) -> io::Error {
    match e {
        store::Error::NoSuchStore => io::Error::new(io::ErrorKind::NotFound, "no such store"),
        store::Error::AccessDenied => io::Error::new(io::ErrorKind::PermissionDenied, "access denied"),
        store::Error::Other(message) => io::Error::other(message),
    }
}

impl Bucket {
    /// Opens the bucket `name`, creating it if needed.
    pub fn open(name: &str) -> io::Result<Bucket> {
        #[cfg(target_arch = "wasm32")]
        return Ok(Bucket { inner: store::open(name).map_err(error)? });
        #[cfg(not(target_arch = "wasm32"))]
        return native::open(name).map(|()| Bucket { name: name.to_string() });
    }

    /// The value at `key`, or `None` when there is none. The bytes are the
    /// list the host returned, not copied again.
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        #[cfg(target_arch = "wasm32")]
        return self.inner.get(key).map_err(error);
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.name, |b| Ok(b.get(key).cloned()));
    }

    /// Stores `value` at `key`, replacing any value (and its deadline).
    pub fn set(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.set_until(key, value, 0)
    }

    /// Stores `value` at `key`, to be deleted by the host at `deadline`
    /// (milliseconds since the unix epoch; 0: never), whether or not it is
    /// read again (`netplug:protocol/expiry`). Until then it reads as any
    /// value; after, as missing.
    pub fn set_until(&self, key: &str, value: &[u8], deadline: u64) -> io::Result<()> {
        #[cfg(target_arch = "wasm32")]
        return if deadline == 0 {
            self.inner.set(key, value).map_err(error)
        } else {
            expiry::set_until(&self.inner, key, value, deadline).map_err(error)
        };
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.name, |b| {
            b.insert(key.to_string(), value.to_vec());
            native::set_deadline(&self.name, key, deadline);
            Ok(())
        });
    }

    /// Removes `key` (nothing happens if it is missing).
    pub fn delete(&self, key: &str) -> io::Result<()> {
        #[cfg(target_arch = "wasm32")]
        return self.inner.delete(key).map_err(error);
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.name, |b| {
            b.remove(key);
            native::set_deadline(&self.name, key, 0);
            Ok(())
        });
    }

    /// Whether `key` has a value.
    pub fn exists(&self, key: &str) -> io::Result<bool> {
        #[cfg(target_arch = "wasm32")]
        return self.inner.exists(key).map_err(error);
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.name, |b| Ok(b.contains_key(key)));
    }

    /// Adds `delta` to the value at `key` read as a decimal `i64` (a missing
    /// key counts as 0), stores the sum in decimal and returns it, as one
    /// atomic step: exact however many connections increment at once. Fails
    /// (`Other`) if the value is not a decimal `i64` or the sum overflows.
    pub fn increment(&self, key: &str, delta: i64) -> io::Result<i64> {
        #[cfg(target_arch = "wasm32")]
        return atomics::increment(&self.inner, key, delta).map_err(error);
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.name, |b| {
            let sum = match b.get(key) {
                None => delta,
                Some(value) => std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| {
                        io::Error::other(format!("the value of `{key}` is not a decimal signed 64-bit integer"))
                    })?
                    .checked_add(delta)
                    .ok_or_else(|| io::Error::other(format!("incrementing `{key}` by {delta} overflows 64 bits")))?,
            };
            b.insert(key.to_string(), sum.to_string().into_bytes());
            Ok(sum)
        });
    }

    /// Starts a compare-and-swap on `key`: reads its value now, which
    /// [`Cas::swap`] must still find there to write.
    pub fn cas(&self, key: &str) -> io::Result<Cas> {
        #[cfg(target_arch = "wasm32")]
        return atomics::Cas::new(&self.inner, key).map(|inner| Cas { inner }).map_err(error);
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.name, |b| {
            Ok(Cas { bucket: self.name.clone(), key: key.to_string(), current: b.get(key).cloned() })
        });
    }

    /// Writes `new` at `key` if its value is `expected` (`None`: no value),
    /// as one atomic step. `Ok(false)` if it was not (nothing is written):
    /// read again and retry, or use [`update`](Self::update), which does.
    pub fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> io::Result<bool> {
        self.compare_and_swap_until(key, expected, new, 0)
    }

    /// [`compare_and_swap`](Self::compare_and_swap), with what it writes
    /// deleted at `deadline` (as [`set_until`](Self::set_until)).
    pub fn compare_and_swap_until(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: u64,
    ) -> io::Result<bool> {
        let cas = self.cas(key)?;
        if cas.current()?.as_deref() != expected {
            return Ok(false);
        }
        Ok(cas.swap_until(new, deadline)?.is_ok())
    }

    /// Replaces the value at `key` with what `f` makes of it (`f` gets the
    /// value, `None` if missing, and returns the new one, or `None` to
    /// leave it as it is), with a compare-and-swap: if another connection
    /// wrote the key in between, `f` is called again on its value, until a
    /// swap succeeds. No concurrent update is lost. Returns what the last
    /// call of `f` returned (the value written, if any). `f` may be called
    /// several times, so it should have no other effects.
    pub fn update(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut cas = self.cas(key)?;
        loop {
            let current = cas.current()?;
            let Some(new) = f(current.as_deref()) else { return Ok(None) };
            match cas.swap(&new)? {
                Ok(()) => return Ok(Some(new)),
                Err(again) => cas = again,
            }
        }
    }

    /// One page of keys from `cursor` (`None`: the first page), and the
    /// cursor of the next page if there is one (the WIT `list-keys`).
    /// [`keys`](Self::keys) iterates over every page.
    pub fn list_keys(&self, cursor: Option<&str>) -> io::Result<(Vec<String>, Option<String>)> {
        #[cfg(target_arch = "wasm32")]
        return self.inner.list_keys(cursor).map(|page| (page.keys, page.cursor)).map_err(error);
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.name, |b| {
            let start = match cursor {
                None => 0,
                Some(cursor) => cursor.parse::<usize>().map_err(|_| io::Error::other("not a list-keys cursor"))?,
            };
            let keys: Vec<String> = b.keys().skip(start).take(native::PAGE_KEYS).cloned().collect();
            let next = start + keys.len();
            Ok((keys, (next < b.len()).then(|| next.to_string())))
        });
    }

    /// Every key, page by page (a page is fetched as the iteration reaches
    /// it). Keys set or deleted meanwhile may or may not be seen. After an
    /// error the iteration ends.
    pub fn keys(&self) -> Keys<'_> {
        Keys { bucket: self, page: Vec::new().into_iter(), cursor: Some(None) }
    }

    /// The underlying `wasi:keyvalue` bucket resource, for calls this
    /// wrapper does not cover.
    #[cfg(target_arch = "wasm32")]
    pub fn as_raw(&self) -> &store::Bucket {
        &self.inner
    }
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").finish_non_exhaustive()
    }
}

/// A compare-and-swap in progress on one key, from [`Bucket::cas`]: the
/// value the key held when it was read, and the swap that writes only if
/// it still does.
pub struct Cas {
    #[cfg(target_arch = "wasm32")]
    inner: atomics::Cas,
    #[cfg(not(target_arch = "wasm32"))]
    bucket: String,
    #[cfg(not(target_arch = "wasm32"))]
    key: String,
    #[cfg(not(target_arch = "wasm32"))]
    current: Option<Vec<u8>>,
}

impl Cas {
    /// The value read (`None`: the key had none).
    pub fn current(&self) -> io::Result<Option<Vec<u8>>> {
        #[cfg(target_arch = "wasm32")]
        return self.inner.current().map_err(error);
        #[cfg(not(target_arch = "wasm32"))]
        return Ok(self.current.clone());
    }

    /// Writes `value` if the key still holds what was read, as one atomic
    /// step: `Ok(Ok(()))`. If it changed, nothing is written and the
    /// result is `Ok(Err(cas))`, a new `Cas` holding the value now there,
    /// to compute from and swap again.
    pub fn swap(self, value: &[u8]) -> io::Result<Result<(), Cas>> {
        self.swap_until(value, 0)
    }

    /// [`swap`](Self::swap), with what it writes deleted at `deadline`
    /// (as [`Bucket::set_until`]).
    pub fn swap_until(self, value: &[u8], deadline: u64) -> io::Result<Result<(), Cas>> {
        #[cfg(target_arch = "wasm32")]
        let swapped = if deadline == 0 {
            atomics::swap(self.inner, value)
        } else {
            expiry::swap_until(self.inner, value, deadline)
        };
        #[cfg(target_arch = "wasm32")]
        return match swapped {
            Ok(()) => Ok(Ok(())),
            Err(atomics::CasError::CasFailed(inner)) => Ok(Err(Cas { inner })),
            Err(atomics::CasError::StoreError(e)) => Err(error(e)),
        };
        #[cfg(not(target_arch = "wasm32"))]
        return native::with(&self.bucket.clone(), |b| {
            let now = b.get(&self.key);
            if now != self.current.as_ref() {
                return Ok(Err(Cas { current: now.cloned(), ..self }));
            }
            native::set_deadline(&self.bucket, &self.key, deadline);
            b.insert(self.key, value.to_vec());
            Ok(Ok(()))
        });
    }
}

impl std::fmt::Debug for Cas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cas").finish_non_exhaustive()
    }
}

/// The keys of a bucket, from [`Bucket::keys`].
pub struct Keys<'a> {
    bucket: &'a Bucket,
    page: std::vec::IntoIter<String>,
    /// The cursor of the next page to fetch (`Some(None)`: the first);
    /// `None` once the last page is fetched or a fetch failed.
    cursor: Option<Option<String>>,
}

impl Iterator for Keys<'_> {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<io::Result<String>> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            let cursor = self.cursor.take()?;
            match self.bucket.list_keys(cursor.as_deref()) {
                Ok((keys, next)) => {
                    self.page = keys.into_iter();
                    self.cursor = next.map(Some);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The native tests' store: buckets in memory, per thread.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) mod native {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};
    use std::io;

    /// Keys per `list_keys` page natively (small, so tests see several).
    pub const PAGE_KEYS: usize = 100;

    pub type Data = BTreeMap<String, Vec<u8>>;

    thread_local! {
        static BUCKETS: RefCell<HashMap<String, Data>> = RefCell::new(HashMap::new());
        /// Deadlines (unix ms) by bucket and key, as the host keeps them.
        static DEADLINES: RefCell<HashMap<(String, String), u64>> = RefCell::new(HashMap::new());
        static DENIED: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    pub fn open(name: &str) -> io::Result<()> {
        if let Some(message) = DENIED.with_borrow(Clone::clone) {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, message));
        }
        BUCKETS.with_borrow_mut(|b| {
            b.entry(name.to_string()).or_default();
        });
        Ok(())
    }

    /// Runs `f` on bucket `name`, after deleting its entries whose
    /// deadline has passed, as the host's sweep would have.
    pub fn with<R>(name: &str, f: impl FnOnce(&mut Data) -> io::Result<R>) -> io::Result<R> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let due: Vec<String> = DEADLINES.with_borrow_mut(|deadlines| {
            let due: Vec<String> =
                deadlines.iter().filter(|((b, _), &d)| b == name && d <= now).map(|((_, k), _)| k.clone()).collect();
            for key in &due {
                deadlines.remove(&(name.to_string(), key.clone()));
            }
            due
        });
        BUCKETS.with_borrow_mut(|b| {
            let bucket = b.entry(name.to_string()).or_default();
            for key in due {
                bucket.remove(&key);
            }
            f(bucket)
        })
    }

    /// Gives `key` of bucket `name` a deadline (0: none).
    pub fn set_deadline(name: &str, key: &str, deadline: u64) {
        DEADLINES.with_borrow_mut(|deadlines| {
            let at = (name.to_string(), key.to_string());
            if deadline == 0 {
                deadlines.remove(&at);
            } else {
                deadlines.insert(at, deadline);
            }
        });
    }

    pub fn reset() {
        BUCKETS.with_borrow_mut(HashMap::clear);
        DEADLINES.with_borrow_mut(HashMap::clear);
        DENIED.with_borrow_mut(|d| *d = None);
    }

    pub fn deny(message: Option<&str>) {
        DENIED.with_borrow_mut(|d| *d = message.map(str::to_string));
    }

    pub fn contents(name: &str) -> Data {
        BUCKETS.with_borrow(|b| b.get(name).cloned().unwrap_or_default())
    }
}
