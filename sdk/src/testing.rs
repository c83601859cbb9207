//! Native tests of protocol code: a [`Connection`] over memory.
//!
//! Protocol logic written over [`Connection<T>`](Connection) (or over
//! `impl BufRead + Write`) runs unchanged on a [`MemoryConnection`] in a
//! plain `cargo test` on the build machine. The guest workspace builds for
//! `wasm32-wasip2` by default, so name the native target:
//!
//! ```sh
//! cargo test --target x86_64-unknown-linux-gnu -p my-proto
//! ```
//!
//! ```
//! use netplug_guest::testing::MemoryConnection;
//! use std::io::{BufRead, Write};
//!
//! // Each chunk is what one `recv` returns; then end of stream.
//! let mut conn = MemoryConnection::with_input(["hello\nwor", "ld\n"]);
//! let mut line = String::new();
//! while { line.clear(); conn.read_line(&mut line).unwrap() > 0 } {
//!     conn.write_all(line.to_uppercase().as_bytes()).unwrap();
//! }
//! assert_eq!(conn.transport().output(), b"HELLO\nWORLD\n");
//! ```
//!
//! Only the host's imports are out of reach natively: a
//! [`HostConnection`](crate::HostConnection) cannot be made, [`dial`](crate::dial)
//! fails with `Unsupported`, log lines go nowhere,
//! [`config::get`](crate::config::get) reads what [`set_config`] set, and
//! [`kv::Bucket`](crate::kv::Bucket)s live in memory, per thread (see
//! [`kv_reset`], [`kv_contents`] and [`kv_deny`]).

use crate::{Connection, ErrorCode, Transport};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A [`Connection`] over memory.
pub type MemoryConnection = Connection<MemoryTransport>;

impl MemoryConnection {
    /// A connection whose peer sends `chunks` (each returned by one `recv`,
    /// or several if asked for fewer bytes) and then closes its write side.
    pub fn with_input<I, B>(chunks: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        Connection::new(MemoryTransport::new(chunks))
    }
}

/// A scripted peer: what `recv` returns, in order, and what was sent.
#[derive(Debug)]
pub struct MemoryTransport {
    input: RefCell<VecDeque<Vec<u8>>>,
    /// What `recv` fails with once the input is spent, instead of end of
    /// stream.
    end: Option<ErrorCode>,
    output: RefCell<Vec<u8>>,
    shut_down: Cell<bool>,
    recvs: Cell<usize>,
    peer: String,
    local: String,
}

impl MemoryTransport {
    /// A peer that sends `chunks`, then closes (empty chunks are skipped:
    /// `recv` returns nothing only at end of stream).
    pub fn new<I, B>(chunks: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        MemoryTransport {
            input: RefCell::new(chunks.into_iter().map(|c| c.as_ref().to_vec()).filter(|c| !c.is_empty()).collect()),
            end: None,
            output: RefCell::new(Vec::new()),
            shut_down: Cell::new(false),
            recvs: Cell::new(0),
            peer: "192.0.2.1:40000".into(),
            local: "127.0.0.1:12345".into(),
        }
    }

    /// Once the input is spent, `recv` fails with `code` (as the host's
    /// would on a reset or an idle timeout) instead of returning end of
    /// stream.
    pub fn then_fail(mut self, code: ErrorCode) -> Self {
        self.end = Some(code);
        self
    }

    /// The peer's address `peer_addr` returns (`192.0.2.1:40000` unless
    /// set).
    pub fn with_peer(mut self, address: &str) -> Self {
        self.peer = address.into();
        self
    }

    /// Everything sent so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.borrow().clone()
    }

    /// Whether the write side was shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.get()
    }

    /// How many `recv` calls were made (end of stream and failures
    /// included).
    pub fn recv_calls(&self) -> usize {
        self.recvs.get()
    }

    /// How many input bytes were never received.
    pub fn unread(&self) -> usize {
        self.input.borrow().iter().map(Vec::len).sum()
    }
}

impl Transport for MemoryTransport {
    fn send(&self, data: &[u8]) -> Result<(), ErrorCode> {
        if self.shut_down.get() {
            return Err(ErrorCode::Closed);
        }
        self.output.borrow_mut().extend_from_slice(data);
        Ok(())
    }

    fn recv(&self, max: u32) -> Result<Vec<u8>, ErrorCode> {
        self.recvs.set(self.recvs.get() + 1);
        let max = (max as usize).clamp(1, 65536);
        let mut input = self.input.borrow_mut();
        let Some(front) = input.front_mut() else {
            return match self.end {
                Some(code) => Err(code),
                None => Ok(Vec::new()),
            };
        };
        if front.len() <= max {
            return Ok(input.pop_front().unwrap_or_default());
        }
        let rest = front.split_off(max);
        Ok(std::mem::replace(front, rest))
    }

    fn shutdown(&self) -> Result<(), ErrorCode> {
        self.shut_down.set(true);
        Ok(())
    }

    fn peer_address(&self) -> String {
        self.peer.clone()
    }

    fn local_address(&self) -> String {
        self.local.clone()
    }
}

/// Sets a configuration value that [`config::get`](crate::config::get)
/// returns in native tests on this thread (in a guest the operator's
/// `--config` pairs are read instead).
pub fn set_config(key: &str, value: Option<&str>) {
    crate::config::native::set(key, value);
}

/// Empties every in-memory bucket of this thread's native store (and
/// undoes [`kv_deny`]), for a test that starts from an empty store.
pub fn kv_reset() {
    use memory_kv::{BUCKETS, DEADLINES, DENIED};
    BUCKETS.with_borrow_mut(HashMap::clear);
    DEADLINES.with_borrow_mut(HashMap::clear);
    DENIED.with_borrow_mut(|d| *d = None);
}

/// What the bucket `name` of this thread's native store holds, sorted by
/// key.
pub fn kv_contents(name: &str) -> BTreeMap<String, Vec<u8>> {
    memory_kv::BUCKETS.with_borrow(|b| b.get(name).cloned().unwrap_or_default())
}

/// Makes [`Bucket::open`](crate::kv::Bucket::open) fail with
/// `PermissionDenied` and `message` on this thread (as when the host denies
/// the store), or succeed again with `None`.
pub fn kv_deny(message: Option<&str>) {
    memory_kv::DENIED.with_borrow_mut(|d| *d = message.map(str::to_string));
}

/// The native tests' key-value store: what [`kv::Bucket`](crate::kv::Bucket)
/// is over when not built for `wasm32` (`kv` selects it).
// In a guest the host's bucket is the backend, and only the `kv_*`
// functions above reach this module.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) mod memory_kv {
    use crate::kv::Backend;
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};
    use std::io;

    /// Keys per `list_keys` page natively (small, so tests see several).
    const PAGE_KEYS: usize = 100;

    thread_local! {
        /// The native tests' store: buckets in memory, per thread.
        pub(super) static BUCKETS: RefCell<HashMap<String, BTreeMap<String, Vec<u8>>>> = RefCell::new(HashMap::new());
        /// Deadlines (unix ms) by bucket and key, as the host keeps them.
        pub(super) static DEADLINES: RefCell<HashMap<(String, String), u64>> = RefCell::new(HashMap::new());
        pub(super) static DENIED: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// What a [`kv::Bucket`](crate::kv::Bucket) is in native tests: a bucket of
    /// this thread's in-memory store, by name.
    pub(crate) struct MemoryBucket {
        name: String,
    }

    /// A compare-and-swap on a [`MemoryBucket`]: the value read, compared with
    /// the one there at the swap.
    pub(crate) struct MemoryCas {
        bucket: String,
        key: String,
        current: Option<Vec<u8>>,
    }

    impl MemoryBucket {
        /// Runs `f` on this bucket, after deleting its entries whose deadline
        /// has passed, as the host's sweep would have.
        fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> io::Result<R>) -> io::Result<R> {
            let name = &self.name;
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let due: Vec<String> = DEADLINES.with_borrow_mut(|deadlines| {
                let due: Vec<String> = deadlines
                    .iter()
                    .filter(|((b, _), &d)| b == name && d <= now)
                    .map(|((_, k), _)| k.clone())
                    .collect();
                for key in &due {
                    deadlines.remove(&(name.clone(), key.clone()));
                }
                due
            });
            BUCKETS.with_borrow_mut(|b| {
                let bucket = b.entry(name.clone()).or_default();
                for key in due {
                    bucket.remove(&key);
                }
                f(bucket)
            })
        }

        /// Gives `key` a deadline (0: none).
        fn set_deadline(&self, key: &str, deadline: u64) {
            DEADLINES.with_borrow_mut(|deadlines| {
                let at = (self.name.clone(), key.to_string());
                if deadline == 0 {
                    deadlines.remove(&at);
                } else {
                    deadlines.insert(at, deadline);
                }
            });
        }
    }

    impl Backend for MemoryBucket {
        type Cas = MemoryCas;

        fn open(name: &str) -> io::Result<Self> {
            if let Some(message) = DENIED.with_borrow(Clone::clone) {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, message));
            }
            BUCKETS.with_borrow_mut(|b| {
                b.entry(name.to_string()).or_default();
            });
            Ok(MemoryBucket { name: name.to_string() })
        }

        fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
            self.with(|b| Ok(b.get(key).cloned()))
        }

        fn set_until(&self, key: &str, value: &[u8], deadline: u64) -> io::Result<()> {
            self.with(|b| {
                b.insert(key.to_string(), value.to_vec());
                self.set_deadline(key, deadline);
                Ok(())
            })
        }

        fn delete(&self, key: &str) -> io::Result<()> {
            self.with(|b| {
                b.remove(key);
                self.set_deadline(key, 0);
                Ok(())
            })
        }

        fn exists(&self, key: &str) -> io::Result<bool> {
            self.with(|b| Ok(b.contains_key(key)))
        }

        fn increment(&self, key: &str, delta: i64) -> io::Result<i64> {
            self.with(|b| {
                let sum = match b.get(key) {
                    None => delta,
                    Some(value) => std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse::<i64>().ok())
                        .ok_or_else(|| {
                            io::Error::other(format!("the value of `{key}` is not a decimal signed 64-bit integer"))
                        })?
                        .checked_add(delta)
                        .ok_or_else(|| {
                            io::Error::other(format!("incrementing `{key}` by {delta} overflows 64 bits"))
                        })?,
                };
                b.insert(key.to_string(), sum.to_string().into_bytes());
                Ok(sum)
            })
        }

        fn list_keys(&self, cursor: Option<&str>) -> io::Result<(Vec<String>, Option<String>)> {
            self.with(|b| {
                let start = match cursor {
                    None => 0,
                    Some(cursor) => cursor.parse::<usize>().map_err(|_| io::Error::other("not a list-keys cursor"))?,
                };
                let keys: Vec<String> = b.keys().skip(start).take(PAGE_KEYS).cloned().collect();
                let next = start + keys.len();
                Ok((keys, (next < b.len()).then(|| next.to_string())))
            })
        }

        fn cas(&self, key: &str) -> io::Result<MemoryCas> {
            self.with(|b| {
                Ok(MemoryCas { bucket: self.name.clone(), key: key.to_string(), current: b.get(key).cloned() })
            })
        }

        fn current(cas: &MemoryCas) -> io::Result<Option<Vec<u8>>> {
            Ok(cas.current.clone())
        }

        fn swap_until(cas: MemoryCas, value: &[u8], deadline: u64) -> io::Result<Result<(), MemoryCas>> {
            let bucket = MemoryBucket { name: cas.bucket.clone() };
            bucket.with(|b| {
                let now = b.get(&cas.key);
                if now != cas.current.as_ref() {
                    return Ok(Err(MemoryCas { current: now.cloned(), ..cas }));
                }
                bucket.set_deadline(&cas.key, deadline);
                b.insert(cas.key, value.to_vec());
                Ok(Ok(()))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, BufRead, Read, Write};

    #[test]
    fn fill_buf_lends_each_recv_whole_and_recvs_only_when_consumed() {
        let mut conn = MemoryConnection::with_input(["abc", "", "defg"]);
        assert_eq!(conn.fill_buf().unwrap(), b"abc");
        assert_eq!(conn.fill_buf().unwrap(), b"abc");
        assert_eq!(conn.transport().recv_calls(), 1);
        conn.consume(1);
        assert_eq!(conn.fill_buf().unwrap(), b"bc");
        conn.consume(2);
        assert_eq!(conn.fill_buf().unwrap(), b"defg");
        conn.consume(4);
        assert_eq!(conn.fill_buf().unwrap(), b"");
        assert_eq!(conn.transport().recv_calls(), 3);
    }

    #[test]
    fn recv_size_bounds_each_recv() {
        let mut conn = MemoryConnection::with_input([b"0123456789"]);
        conn.set_recv_size(4);
        let mut chunks = Vec::new();
        loop {
            let data = conn.fill_buf().unwrap().to_vec();
            if data.is_empty() {
                break;
            }
            conn.consume(data.len());
            chunks.push(data);
        }
        assert_eq!(chunks, [&b"0123"[..], b"4567", b"89"]);
    }

    #[test]
    fn read_line_write_all_and_read_to_end() {
        let mut conn = MemoryConnection::with_input(["GET / HT", "TP/1.1\r\nHost: x\r\n", "\r\nbody"]);
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        assert_eq!(line, "GET / HTTP/1.1\r\n");
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"Host: x\r\n\r\nbody");
        conn.write_all(b"one ").unwrap();
        write!(conn, "{}", 2).unwrap();
        conn.flush().unwrap();
        assert_eq!(conn.transport().output(), b"one 2");
    }

    #[test]
    fn read_copies_out_of_the_buffer_in_order() {
        let mut conn = MemoryConnection::with_input(["hello", "world"]);
        let mut buf = [0u8; 3];
        assert_eq!(conn.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf, b"hel");
        assert_eq!(conn.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(conn.read(&mut []).unwrap(), 0);
        let mut buf = [0u8; 16];
        assert_eq!(conn.read(&mut buf).unwrap(), 5);
        assert_eq!(conn.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn raw_recv_returns_buffered_bytes_first() {
        let mut conn = MemoryConnection::with_input(["abcdef", "gh"]);
        assert_eq!(conn.fill_buf().unwrap(), b"abcdef");
        conn.consume(2);
        assert_eq!(conn.recv(3).unwrap(), b"cde");
        assert_eq!(conn.recv(100).unwrap(), b"f");
        assert_eq!(conn.recv(100).unwrap(), b"gh");
        assert_eq!(conn.recv(100).unwrap(), b"");
        // An unconsumed buffer is handed over whole.
        let mut conn = MemoryConnection::with_input(["xyz"]);
        conn.fill_buf().unwrap();
        assert_eq!(conn.recv(3).unwrap(), b"xyz");
        assert_eq!(conn.fill_buf().unwrap(), b"");
    }

    #[test]
    fn halves_send_the_lent_slice_then_consumes_it() {
        let mut conn = MemoryConnection::with_input(["ping", "pong"]);
        let (mut rx, mut tx) = conn.halves();
        loop {
            let data = rx.fill_buf().unwrap();
            if data.is_empty() {
                break;
            }
            tx.write_all(data).unwrap();
            let n = data.len();
            rx.consume(n);
        }
        tx.shutdown().unwrap();
        assert_eq!(conn.transport().output(), b"pingpong");
        assert!(conn.transport().is_shut_down());
        // Sending after shutdown fails as the host's does.
        let err = conn.write_all(b"late").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(crate::error_code(&err), Some(ErrorCode::Closed));
    }

    #[test]
    fn io_copy_between_halves() {
        let mut conn = MemoryConnection::with_input(["one ", "two"]);
        let (mut rx, mut tx) = conn.halves();
        assert_eq!(io::copy(&mut rx, &mut tx).unwrap(), 7);
        assert_eq!(conn.transport().output(), b"one two");
        // And through a BufReader, as any Read.
        let mut conn = MemoryConnection::with_input(["a\nb", "\n"]);
        let lines: Vec<String> = io::BufReader::new(&mut conn).lines().map(Result::unwrap).collect();
        assert_eq!(lines, ["a", "b"]);
    }

    #[test]
    fn failures_after_the_input_are_io_errors() {
        let transport = MemoryTransport::new(["a"]).then_fail(ErrorCode::TimedOut);
        let mut conn = Connection::new(transport);
        let mut all = Vec::new();
        let err = conn.read_to_end(&mut all).unwrap_err();
        assert_eq!(all, b"a");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let mut conn = Connection::new(MemoryTransport::new([""; 0]).then_fail(ErrorCode::Closed));
        assert_eq!(conn.fill_buf().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn splice_relays_both_ways_buffered_bytes_first() {
        let mut client = MemoryConnection::with_input(["GET", " k\r\n"]);
        let mut upstream = MemoryConnection::with_input(["$1\r\nv\r\n"]);
        // Read, not consumed: still the client's, sent on first.
        assert_eq!(client.fill_buf().unwrap(), b"GET");
        let spliced = client.splice(&mut upstream);
        assert!(spliced.ended.is_ok(), "{spliced:?}");
        assert_eq!((spliced.a_to_b, spliced.b_to_a), (7, 7));
        assert_eq!(upstream.transport().output(), b"GET k\r\n");
        assert_eq!(client.transport().output(), b"$1\r\nv\r\n");
        assert!(upstream.transport().is_shut_down() && client.transport().is_shut_down());
        // A failure on either side ends it, with what moved so far.
        let mut client = MemoryConnection::with_input(["abc"]);
        let mut upstream = Connection::new(MemoryTransport::new(["x"]).then_fail(ErrorCode::Reset));
        let spliced = client.splice(&mut upstream);
        assert_eq!((spliced.a_to_b, spliced.b_to_a), (3, 1));
        assert_eq!(spliced.ended.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn addresses_and_config() {
        let conn = Connection::new(MemoryTransport::new([""; 0]).with_peer("[::1]:9"));
        assert_eq!(conn.peer_address(), "[::1]:9");
        assert_eq!(conn.local_address(), "127.0.0.1:12345");
        assert_eq!(conn.peer_addr().unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(conn.local_addr().unwrap(), "127.0.0.1:12345".parse().unwrap());
        assert_eq!(crate::config::get("greeting").unwrap(), None);
        set_config("greeting", Some("HOWDY"));
        assert_eq!(crate::config::get("greeting").unwrap().as_deref(), Some("HOWDY"));
        assert_eq!(crate::config::get_all().unwrap(), [("greeting".to_string(), "HOWDY".to_string())]);
        set_config("greeting", None);
        assert_eq!(crate::config::get("greeting").unwrap(), None);
    }

    #[test]
    fn kv_buckets_in_memory() {
        use crate::kv::Bucket;
        kv_reset();
        let a = Bucket::open("").unwrap();
        let b = Bucket::open("other").unwrap();
        assert_eq!(a.get("k").unwrap(), None);
        a.set("k", b"v").unwrap();
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(a.exists("k").unwrap());
        assert!(!b.exists("k").unwrap());
        // Buckets opened again see the same data.
        assert_eq!(Bucket::open("").unwrap().get("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(a.increment("n", 5).unwrap(), 5);
        assert_eq!(a.increment("n", 2).unwrap(), 7);
        assert_eq!(a.get("n").unwrap().as_deref(), Some(&b"7"[..]));
        let err = a.increment("k", 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert!(err.to_string().contains("not a decimal"), "{err}");
        assert_eq!(a.increment("n", -10).unwrap(), -3);
        a.set("max", i64::MAX.to_string().as_bytes()).unwrap();
        assert!(a.increment("max", 1).unwrap_err().to_string().contains("overflows"));
        a.delete("k").unwrap();
        a.delete("k").unwrap();
        assert!(!a.exists("k").unwrap());
        assert_eq!(kv_contents("").keys().collect::<Vec<_>>(), ["max", "n"]);
        kv_deny(Some("no --kv"));
        let err = Bucket::open("").unwrap_err();
        assert_eq!((err.kind(), err.to_string()), (io::ErrorKind::PermissionDenied, "no --kv".to_string()));
        kv_reset();
        assert!(kv_contents("").is_empty());
        assert!(Bucket::open("").is_ok());
    }

    #[test]
    fn kv_keys_iterate_every_page() {
        use crate::kv::Bucket;
        kv_reset();
        let bucket = Bucket::open("many").unwrap();
        assert_eq!(bucket.keys().count(), 0);
        for i in 0..250 {
            bucket.set(&format!("{i:03}"), b"").unwrap();
        }
        let (first, cursor) = bucket.list_keys(None).unwrap();
        assert_eq!((first.len(), cursor.as_deref()), (100, Some("100")));
        let keys: Vec<String> = bucket.keys().map(Result::unwrap).collect();
        assert_eq!(keys, (0..250).map(|i| format!("{i:03}")).collect::<Vec<_>>());
    }

    #[test]
    fn kv_compare_and_swap_and_update_retry() {
        use crate::kv::Bucket;
        kv_reset();
        let bucket = Bucket::open("").unwrap();
        assert!(bucket.compare_and_swap("k", None, b"1").unwrap());
        assert!(!bucket.compare_and_swap("k", None, b"2").unwrap());
        assert!(!bucket.compare_and_swap("k", Some(b"0"), b"2").unwrap());
        assert!(bucket.compare_and_swap("k", Some(b"1"), b"2").unwrap());
        let cas = bucket.cas("k").unwrap();
        assert_eq!(cas.current().unwrap().as_deref(), Some(&b"2"[..]));
        bucket.set("k", b"3").unwrap();
        let again = cas.swap(b"4").unwrap().unwrap_err();
        assert_eq!(again.current().unwrap().as_deref(), Some(&b"3"[..]));
        assert!(again.swap(b"4").unwrap().is_ok());
        // Another writer between the read and the swap: `update` calls the
        // function again on its value, and neither update is lost.
        let mut calls = Vec::new();
        let written = bucket
            .update("k", |old| {
                calls.push(old.map(<[u8]>::to_vec));
                if calls.len() == 1 {
                    Bucket::open("").unwrap().set("k", b"40").unwrap();
                }
                let mut new = old.unwrap_or_default().to_vec();
                new.push(b'+');
                Some(new)
            })
            .unwrap();
        assert_eq!(calls, [Some(b"4".to_vec()), Some(b"40".to_vec())]);
        assert_eq!(written.as_deref(), Some(&b"40+"[..]));
        assert_eq!(bucket.get("k").unwrap().as_deref(), Some(&b"40+"[..]));
        assert_eq!(bucket.update("k", |_| None).unwrap(), None);
        assert_eq!(bucket.update("missing", |old| Some(vec![u8::from(old.is_none())])).unwrap(), Some(vec![1]));
    }

    #[test]
    fn kv_deadlines_expire_and_a_plain_write_clears_them() {
        use crate::kv::Bucket;
        kv_reset();
        let bucket = Bucket::open("").unwrap();
        // A deadline already past: the entry reads as missing.
        bucket.set_until("gone", b"v", 1).unwrap();
        assert_eq!(bucket.get("gone").unwrap(), None);
        assert!(!bucket.exists("gone").unwrap());
        let later = u64::MAX;
        bucket.set_until("k", b"v", later).unwrap();
        assert!(bucket.compare_and_swap_until("k", Some(b"v"), b"w", 1).unwrap());
        assert_eq!(bucket.get("k").unwrap(), None);
        // `set` drops the deadline with the value.
        bucket.set_until("k", b"v", 1).unwrap();
        bucket.set("k", b"kept").unwrap();
        assert_eq!(bucket.get("k").unwrap().as_deref(), Some(&b"kept"[..]));
        assert!(bucket.cas("k").unwrap().swap_until(b"x", later).unwrap().is_ok());
        assert_eq!(kv_contents("").get("k").map(Vec::as_slice), Some(&b"x"[..]));
    }

    #[test]
    fn dial_is_unsupported_natively() {
        assert_eq!(crate::dial("127.0.0.1:1").unwrap_err().kind(), io::ErrorKind::Unsupported);
    }
}
