//! `resp.wasm`: a Redis-compatible server (RESP2, string commands) on the
//! listener's shared `wasi:keyvalue` store (world `server-with-kv`; run with
//! `host run resp.wasm --port 6379 --kv memory`). The protocol and the
//! commands are in `protocol.rs`, over a small `Store` trait; this file binds
//! them to the connection and the store.
//!
//! Database 0 is the bucket `""`, the one other guests of the listener use by
//! default; `SELECT N` (1 to 15) uses the bucket `dbN`.

mod protocol;

wit_bindgen::generate!({
    path: "../../wit",
    world: "server-with-kv",
    generate_all,
});

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::types::Connection;
use protocol::{After, Session};
use wasi::keyvalue::{atomics, store};

struct Resp;

fn message(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(message) => message,
    }
}

/// The shared store, through the open bucket of the selected database.
struct Shared {
    bucket: store::Bucket,
}

impl protocol::Store for Shared {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.bucket.get(key).map_err(message)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        self.bucket.set(key, value).map_err(message)
    }

    fn delete(&mut self, key: &str) -> Result<(), String> {
        self.bucket.delete(key).map_err(message)
    }

    fn increment(&mut self, key: &str, delta: u64) -> Result<u64, String> {
        atomics::increment(&self.bucket, key, delta).map_err(message)
    }

    fn select(&mut self, db: u32) -> Result<(), String> {
        let name = if db == 0 { String::new() } else { format!("db{db}") };
        self.bucket = store::open(&name).map_err(message)?;
        Ok(())
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

impl Guest for Resp {
    fn handle(conn: Connection) -> Result<(), String> {
        let bucket = store::open("").map_err(|e| format!("cannot open the store: {}", message(e)))?;
        let mut shared = Shared { bucket };
        let mut session = Session::new();
        let mut out = Vec::new();
        loop {
            let data = match conn.recv(64 * 1024) {
                Ok(data) => data,
                // A client that hangs up is the normal end of a session.
                Err(_) => return Ok(()),
            };
            if data.is_empty() {
                return Ok(());
            }
            let after = session.feed(&data, &mut shared, &mut out);
            if !out.is_empty() {
                conn.send(&out).map_err(|e| format!("send failed: {}", e.name()))?;
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
}

export!(Resp);
