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

/// The store a [`Bucket`] is over: the host's bucket resource in a guest,
/// this thread's in-memory buckets in native tests (where there is no host
/// to import from). Here the target picks the implementation (the `host`
/// module below is compiled for `wasm32` only).
#[cfg(target_arch = "wasm32")]
type Raw = crate::bindings::server::wasi::keyvalue0_2_0_draft2::store::Bucket;
#[cfg(not(target_arch = "wasm32"))]
type Raw = crate::testing::memory_kv::MemoryBucket;

/// The operations [`Bucket`] and [`Cas`] are made of: one open bucket
/// (`Self`) and its compare-and-swap handle ([`Cas`](Backend::Cas)), as the
/// WIT `wasi:keyvalue/store` and `atomics` (and `netplug:protocol/expiry`)
/// have them. Implemented by the host's bucket resource (the `host` module
/// below, `wasm32` only) and by the native tests' fake
/// ([`MemoryBucket`](crate::testing::memory_kv::MemoryBucket)); `Raw` selects one.
///
/// Errors are already `io::Error`s, mapped as the module documentation
/// says, so the public types only forward them.
pub(crate) trait Backend: Sized {
    /// A compare-and-swap in progress on one key: the value read, and the
    /// swap that writes only if the key still holds it.
    type Cas;

    /// Opens the bucket `name`, creating it if needed.
    fn open(name: &str) -> io::Result<Self>;
    /// The value at `key`, or `None` when there is none.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// The values at `keys`, in order; one call where the store batches.
    fn get_many(&self, keys: &[&str]) -> io::Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// Stores each value at its key, replacing any value and deadline; one
    /// call where the store batches. Not atomic as a whole.
    fn set_many(&self, entries: &[(&str, &[u8])]) -> io::Result<()> {
        entries.iter().try_for_each(|(key, value)| self.set_until(key, value, 0))
    }
    /// Stores `value` at `key`, replacing any value and its deadline, to be
    /// deleted at `deadline` (milliseconds since the unix epoch; 0: never).
    fn set_until(&self, key: &str, value: &[u8], deadline: u64) -> io::Result<()>;
    /// Removes `key` and its deadline (a missing key is no error).
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Whether `key` has a value.
    fn exists(&self, key: &str) -> io::Result<bool>;
    /// Adds `delta` to the decimal `i64` at `key` (missing: 0), stores the
    /// sum in decimal and returns it, atomically; `Other` if the value is
    /// not one or the sum overflows.
    fn increment(&self, key: &str, delta: i64) -> io::Result<i64>;
    /// One page of keys from `cursor` (`None`: the first), and the cursor
    /// of the next page if there is one.
    fn list_keys(&self, cursor: Option<&str>) -> io::Result<(Vec<String>, Option<String>)>;
    /// Reads `key` now, for a later [`swap_until`](Backend::swap_until).
    fn cas(&self, key: &str) -> io::Result<Self::Cas>;
    /// The value `cas` read (`None`: the key had none).
    fn current(cas: &Self::Cas) -> io::Result<Option<Vec<u8>>>;
    /// Writes `value` (deleted at `deadline`, as in
    /// [`set_until`](Backend::set_until)) if the key still holds what `cas`
    /// read: `Ok(Ok(()))`. Otherwise nothing is written and the result is
    /// `Ok(Err(cas))`, a new handle holding the value now there.
    fn swap_until(cas: Self::Cas, value: &[u8], deadline: u64) -> io::Result<Result<(), Self::Cas>>;
}

/// The host's store, through the generated bindings.
#[cfg(target_arch = "wasm32")]
mod host {
    use super::Backend;
    use crate::bindings::server::netplug::protocol::expiry;
    use crate::bindings::server::wasi::keyvalue0_2_0_draft2::{atomics, store};
    use std::io;

    fn error(e: store::Error) -> io::Error {
        match e {
            store::Error::NoSuchStore => io::Error::new(io::ErrorKind::NotFound, "no such store"),
            store::Error::AccessDenied => io::Error::new(io::ErrorKind::PermissionDenied, "access denied"),
            store::Error::Other(message) => io::Error::other(message),
        }
    }

    impl Backend for store::Bucket {
        type Cas = atomics::Cas;

        fn open(name: &str) -> io::Result<Self> {
            store::open(name).map_err(error)
        }

        // The bytes are the list the host returned, not copied again.
        fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
            store::Bucket::get(self, key).map_err(error)
        }

        // `get-many`: one host call (and, on a Redis store, one `MGET`),
        // through the raw import (`raw_batch`), which lends the keys
        // as they are.
        fn get_many(&self, keys: &[&str]) -> io::Result<Vec<Option<Vec<u8>>>> {
            super::raw_batch::get_many(self.handle(), keys).map_err(error)
        }

        // `set-many`: one host call (and, on a Redis store, one `MSET`),
        // lending the keys and values as they are (`raw_batch`).
        fn set_many(&self, entries: &[(&str, &[u8])]) -> io::Result<()> {
            super::raw_batch::set_many(self.handle(), entries).map_err(error)
        }

        fn set_until(&self, key: &str, value: &[u8], deadline: u64) -> io::Result<()> {
            if deadline == 0 {
                store::Bucket::set(self, key, value).map_err(error)
            } else {
                expiry::set_until(self, key, value, deadline).map_err(error)
            }
        }

        fn delete(&self, key: &str) -> io::Result<()> {
            store::Bucket::delete(self, key).map_err(error)
        }

        fn exists(&self, key: &str) -> io::Result<bool> {
            store::Bucket::exists(self, key).map_err(error)
        }

        fn increment(&self, key: &str, delta: i64) -> io::Result<i64> {
            atomics::increment(self, key, delta).map_err(error)
        }

        fn list_keys(&self, cursor: Option<&str>) -> io::Result<(Vec<String>, Option<String>)> {
            store::Bucket::list_keys(self, cursor).map(|page| (page.keys, page.cursor)).map_err(error)
        }

        fn cas(&self, key: &str) -> io::Result<atomics::Cas> {
            atomics::Cas::new(self, key).map_err(error)
        }

        fn current(cas: &atomics::Cas) -> io::Result<Option<Vec<u8>>> {
            cas.current().map_err(error)
        }

        fn swap_until(cas: atomics::Cas, value: &[u8], deadline: u64) -> io::Result<Result<(), atomics::Cas>> {
            let swapped =
                if deadline == 0 { atomics::swap(cas, value) } else { expiry::swap_until(cas, value, deadline) };
            match swapped {
                Ok(()) => Ok(Ok(())),
                Err(atomics::CasError::CasFailed(cas)) => Ok(Err(cas)),
                Err(atomics::CasError::StoreError(e)) => Err(error(e)),
            }
        }
    }
}

/// `wasi:keyvalue/batch`'s `get-many` and `set-many` called through their
/// imports directly, by the canonical ABI. The generated bindings take
/// `&[String]` and `&[(String, Vec<u8>)]`, so a batch would first copy
/// every key and value into new allocations (and `get-many`'s keys come
/// back as `String`s the caller drops); here the caller's slices are lent
/// to the host as they are, and each value read becomes a `Vec` without a
/// copy. The functions are those of the WIT `batch` the bindings import
/// (same module and names), so the component imports nothing more.
#[cfg(target_arch = "wasm32")]
mod raw_batch {
    use crate::bindings::server::wasi::keyvalue0_2_0_draft2::store::Error;
    use std::alloc::{dealloc, Layout};

    #[link(wasm_import_module = "wasi:keyvalue/batch@0.2.0-draft2")]
    extern "C" {
        #[link_name = "get-many"]
        fn import_get_many(bucket: i32, keys: *const u8, len: usize, ret: *mut u8);
        #[link_name = "set-many"]
        fn import_set_many(bucket: i32, entries: *const u8, len: usize, ret: *mut u8);
    }

    /// Where the host writes a `result<_, error>` or a `result<list<..>,
    /// error>`: the case (byte 0), then the list (pointer at 4, length at
    /// 8) or the error (its case at byte 4, `other`'s string at 8 and 12).
    #[repr(C, align(4))]
    struct Ret([u8; 16]);

    impl Ret {
        fn word(&self, at: usize) -> usize {
            u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap()) as usize
        }

        /// The error of a result whose case is `err`.
        ///
        /// # Safety
        /// The host wrote an `error` at 4.
        unsafe fn error(&self) -> Error {
            match self.0[4] {
                0 => Error::NoSuchStore,
                1 => Error::AccessDenied,
                _ => {
                    let (ptr, len) = (self.word(8) as *mut u8, self.word(12));
                    // The host allocated the string with `cabi_realloc` and
                    // hands it over; the canonical ABI checked it is UTF-8.
                    Error::Other(String::from_utf8_unchecked(Vec::from_raw_parts(ptr, len, len)))
                }
            }
        }
    }

    pub(super) fn get_many(bucket: u32, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        // `list<string>`: a pointer and a length per key, 32 bits each.
        let lent: Vec<[u32; 2]> = keys.iter().map(|key| [key.as_ptr() as u32, key.len() as u32]).collect();
        let mut ret = Ret([0; 16]);
        // SAFETY: the signature of `get-many` lowered by the canonical ABI
        // (a borrowed handle, a list, a return area); `lent` and the keys
        // outlive the call.
        unsafe { import_get_many(bucket as i32, lent.as_ptr().cast(), lent.len(), ret.0.as_mut_ptr()) };
        if ret.0[0] != 0 {
            return Err(unsafe { ret.error() });
        }
        let (list, len) = (ret.word(4) as *mut u8, ret.word(8));
        // `list<option<tuple<string, list<u8>>>>`: 20 bytes an element, the
        // case at 0, the key's pointer and length at 4 and 8, the value's
        // at 12 and 16; each list allocated by the host with `cabi_realloc`
        // (alignment 1 for the bytes, 4 for the list) and handed over.
        const SIZE: usize = 20;
        let mut values = Vec::with_capacity(len);
        for i in 0..len {
            // SAFETY: the host wrote `len` elements at `list`.
            let element = unsafe { std::slice::from_raw_parts(list.add(i * SIZE), SIZE) };
            let word = |at: usize| u32::from_le_bytes(element[at..at + 4].try_into().unwrap()) as usize;
            if element[0] == 0 {
                values.push(None);
                continue;
            }
            let (key, key_len) = (word(4) as *mut u8, word(8));
            let (value, value_len) = (word(12) as *mut u8, word(16));
            // SAFETY: each is the host's allocation of that many bytes, ours
            // now: the key is freed unread, the value kept as a `Vec`.
            unsafe {
                if key_len != 0 {
                    dealloc(key, Layout::from_size_align_unchecked(key_len, 1));
                }
                values.push(Some(Vec::from_raw_parts(value, value_len, value_len)));
            }
        }
        if len != 0 {
            // SAFETY: the list's own allocation, as the host made it.
            unsafe { dealloc(list, Layout::from_size_align_unchecked(len * SIZE, 4)) };
        }
        Ok(values)
    }

    pub(super) fn set_many(bucket: u32, entries: &[(&str, &[u8])]) -> Result<(), Error> {
        // `list<tuple<string, list<u8>>>`: the key's pointer and length,
        // then the value's, 32 bits each.
        let lent: Vec<[u32; 4]> = entries
            .iter()
            .map(|(key, value)| [key.as_ptr() as u32, key.len() as u32, value.as_ptr() as u32, value.len() as u32])
            .collect();
        let mut ret = Ret([0; 16]);
        // SAFETY: the signature of `set-many` lowered by the canonical ABI;
        // `lent` and the entries outlive the call.
        unsafe { import_set_many(bucket as i32, lent.as_ptr().cast(), lent.len(), ret.0.as_mut_ptr()) };
        if ret.0[0] != 0 {
            return Err(unsafe { ret.error() });
        }
        Ok(())
    }
}

/// Whether `e` is the host's refusal of a write that would grow the store
/// past its total bound (`--kv-max-bytes`): the store is full until
/// something is deleted or expires. Reads and deletes still work.
pub fn is_store_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string().starts_with("store full:")
}

/// An open bucket: one namespace of the listener's store, by name (`""` is
/// the one guests share by default).
pub struct Bucket {
    inner: Raw,
}

impl Bucket {
    /// Opens the bucket `name`, creating it if needed.
    pub fn open(name: &str) -> io::Result<Bucket> {
        Ok(Bucket { inner: <Raw as Backend>::open(name)? })
    }

    /// The value at `key`, or `None` when there is none. The bytes are the
    /// list the host returned, not copied again.
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        Backend::get(&self.inner, key)
    }

    /// The values at `keys`, in order, in one call to the host: a pipelined
    /// run of reads costs one crossing instead of one per key. Not atomic
    /// as a whole.
    pub fn get_many(&self, keys: &[&str]) -> io::Result<Vec<Option<Vec<u8>>>> {
        Backend::get_many(&self.inner, keys)
    }

    /// Stores each value at its key, replacing any value (and deadline),
    /// in one call to the host. Not atomic as a whole: on an error, some
    /// may be written.
    pub fn set_many(&self, entries: &[(&str, &[u8])]) -> io::Result<()> {
        Backend::set_many(&self.inner, entries)
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
        Backend::set_until(&self.inner, key, value, deadline)
    }

    /// Removes `key` (nothing happens if it is missing).
    pub fn delete(&self, key: &str) -> io::Result<()> {
        Backend::delete(&self.inner, key)
    }

    /// Whether `key` has a value.
    pub fn exists(&self, key: &str) -> io::Result<bool> {
        Backend::exists(&self.inner, key)
    }

    /// Adds `delta` to the value at `key` read as a decimal `i64` (a missing
    /// key counts as 0), stores the sum in decimal and returns it, as one
    /// atomic step: exact however many connections increment at once. Fails
    /// (`Other`) if the value is not a decimal `i64` or the sum overflows.
    pub fn increment(&self, key: &str, delta: i64) -> io::Result<i64> {
        Backend::increment(&self.inner, key, delta)
    }

    /// Starts a compare-and-swap on `key`: reads its value now, which
    /// [`Cas::swap`] must still find there to write.
    pub fn cas(&self, key: &str) -> io::Result<Cas> {
        Ok(Cas { inner: Backend::cas(&self.inner, key)? })
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
        Backend::list_keys(&self.inner, cursor)
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
    pub fn as_raw(&self) -> &crate::bindings::server::wasi::keyvalue0_2_0_draft2::store::Bucket {
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
    inner: <Raw as Backend>::Cas,
}

impl Cas {
    /// The value read (`None`: the key had none).
    pub fn current(&self) -> io::Result<Option<Vec<u8>>> {
        <Raw as Backend>::current(&self.inner)
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
        Ok(<Raw as Backend>::swap_until(self.inner, value, deadline)?.map_err(|inner| Cas { inner }))
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
