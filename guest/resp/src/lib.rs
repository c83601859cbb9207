//! `resp.wasm`: a Redis-compatible server (RESP2, string commands) on the
//! listener's shared `wasi:keyvalue` store (run with `host run resp.wasm
//! --port 6379 --kv memory`). The protocol and the commands are in
//! `protocol.rs`, over a small `Store` trait; this file binds them to the
//! connection and the store through the guest SDK.
//!
//! Database 0 is the bucket `""`, the one other guests of the listener use by
//! default; `SELECT N` (1 to 15) uses the bucket `dbN`.

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod alloc;
mod keyspace;
mod protocol;

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc::Pool = alloc::Pool::new();

use netplug_guest::kv::Bucket;
use netplug_guest::{Connection, Transport};
use protocol::{After, Session};
use std::io::BufRead;

/// The shared store, through the open bucket of the selected database.
struct Shared {
    bucket: Bucket,
}

impl protocol::Store for Shared {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.bucket.get(key).map_err(|e| e.to_string())
    }

    fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        self.bucket.get_many(keys).map_err(|e| e.to_string())
    }

    fn set_many(&mut self, entries: &[(&str, &[u8])]) -> Result<(), String> {
        self.bucket.set_many(entries).map_err(|e| e.to_string())
    }

    fn set(&mut self, key: &str, value: &[u8], deadline: u64) -> Result<(), String> {
        self.bucket.set_until(key, value, deadline).map_err(|e| e.to_string())
    }

    fn delete(&mut self, key: &str) -> Result<(), String> {
        self.bucket.delete(key).map_err(|e| e.to_string())
    }

    fn increment(&mut self, key: &str, delta: i64) -> Result<i64, String> {
        self.bucket.increment(key, delta).map_err(|e| e.to_string())
    }

    fn swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8], deadline: u64) -> Result<bool, String> {
        self.bucket.compare_and_swap_until(key, expected, new, deadline).map_err(|e| e.to_string())
    }

    fn list_keys(&mut self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), String> {
        self.bucket.list_keys(cursor).map_err(|e| e.to_string())
    }

    fn select(&mut self, db: u32) -> Result<(), String> {
        let name = if db == 0 { String::new() } else { format!("db{db}") };
        self.bucket = Bucket::open(&name).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

fn handle(mut conn: Connection) -> Result<(), String> {
    serve(&mut conn)
}

netplug_guest::serve!(handle);

/// One session: each `recv`'s bytes (the list the host returned, lent by
/// `fill_buf` without another copy) are fed to the protocol, and the
/// replies to every complete command in them go out in one send.
fn serve<T: Transport>(conn: &mut Connection<T>) -> Result<(), String> {
    let bucket = Bucket::open("").map_err(|e| format!("cannot open the store: {e}"))?;
    let mut shared = Shared { bucket };
    let mut session = Session::new();
    let mut out = Vec::new();
    loop {
        let after = match conn.fill_buf() {
            // A client that hangs up is the normal end of a session.
            Ok([]) | Err(_) => return Ok(()),
            Ok(data) => {
                let after = session.feed(data, &mut shared, &mut out);
                let n = data.len();
                conn.consume(n);
                after
            }
        };
        if !out.is_empty() {
            conn.send(&out).map_err(|e| format!("send failed: {e}"))?;
            out.clear();
            if out.capacity() > 1 << 20 {
                out = Vec::new();
            }
        }
        if after == After::Close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::serve;
    use netplug_guest::testing::{kv_contents, kv_deny, kv_reset, MemoryConnection};

    #[test]
    fn pipelined_commands_on_the_shared_store() {
        kv_reset();
        let mut conn = MemoryConnection::with_input([
            &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..],
            b"INCR n\r\nINCR n\r\nSELECT 2\r\nSET k w\r\n",
            b"QUIT\r\nPING\r\n",
        ]);
        serve(&mut conn).unwrap();
        assert_eq!(
            String::from_utf8(conn.transport().output()).unwrap(),
            "+OK\r\n$1\r\nv\r\n:1\r\n:2\r\n+OK\r\n+OK\r\n+OK\r\n"
        );
        assert_eq!(kv_contents("").get("k").map(Vec::as_slice), Some(&b"v"[..]));
        assert_eq!(kv_contents("").get("n").map(Vec::as_slice), Some(&b"2"[..]));
        assert_eq!(kv_contents("db2").get("k").map(Vec::as_slice), Some(&b"w"[..]));
    }

    #[test]
    fn a_store_the_host_denies_ends_the_session_with_an_error() {
        kv_reset();
        kv_deny(Some("access denied"));
        let mut conn = MemoryConnection::with_input(["PING\r\n"]);
        assert_eq!(serve(&mut conn), Err("cannot open the store: access denied".to_string()));
        kv_reset();
    }
}
