//! A test guest on raw bindings of `wasi:keyvalue@0.2.0-draft`, the
//! version before draft2 (which `server-with-kv` and the SDK use): it
//! proves the host still serves guests built against draft, over the same
//! store. A line protocol, enough to drive it from a test or `nc`.
//! Each line is one command, each reply one line:
//!
//! - `INCR KEY N`: increments KEY N times by 1 (N calls), replies the last value
//! - `INCRBY KEY DELTA`: one increment by DELTA, replies the value
//! - `SET KEY VALUE`: VALUE is the rest of the line, replies `OK`
//! - `GET KEY`: replies the value, or `(nil)`
//! - `DEL KEY`, `EXISTS KEY` (`1` or `0`), `KEYS` (space-separated, one page)
//! - `BUCKET NAME`: later commands use bucket NAME (`BUCKET` alone: `""`)
//!
//! Commands work on bucket `""` until `BUCKET`. A failed operation replies
//! `ERR ` and the store's message, and the connection goes on.

wit_bindgen::generate!({
    path: "../../../wit",
    inline: "
        package test:kv-counter;
        world kv-counter {
            include netplug:protocol/server@0.1.0;
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
        }
    ",
    world: "test:kv-counter/kv-counter",
    generate_all,
});

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::types::Connection;
use wasi::keyvalue0_2_0_draft::{atomics, store};

struct KvCounter;

fn error(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(message) => message,
    }
}

/// Runs one command line against `bucket` (which `BUCKET` replaces).
fn command(bucket: &mut store::Bucket, line: &str) -> Result<String, String> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut args = rest.split(' ');
    let mut arg = || args.next().filter(|a| !a.is_empty()).ok_or_else(|| format!("{verb}: missing argument"));
    match verb {
        "INCR" => {
            let key = arg()?;
            let times: u64 = arg()?.parse().map_err(|_| "INCR: N is not a number".to_string())?;
            let mut value = 0;
            for _ in 0..times {
                value = atomics::increment(bucket, key, 1).map_err(error)?;
            }
            Ok(value.to_string())
        }
        "INCRBY" => {
            let key = arg()?;
            let delta: u64 = arg()?.parse().map_err(|_| "INCRBY: DELTA is not a number".to_string())?;
            Ok(atomics::increment(bucket, key, delta).map_err(error)?.to_string())
        }
        "SET" => {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            bucket.set(key, value.as_bytes()).map_err(error)?;
            Ok("OK".to_string())
        }
        "GET" => match bucket.get(arg()?).map_err(error)? {
            Some(value) => Ok(String::from_utf8_lossy(&value).into_owned()),
            None => Ok("(nil)".to_string()),
        },
        "DEL" => {
            bucket.delete(arg()?).map_err(error)?;
            Ok("OK".to_string())
        }
        "EXISTS" => Ok(if bucket.exists(arg()?).map_err(error)? { "1" } else { "0" }.to_string()),
        "KEYS" => Ok(bucket.list_keys(None).map_err(error)?.keys.join(" ")),
        "BUCKET" => {
            *bucket = store::open(rest).map_err(error)?;
            Ok("OK".to_string())
        }
        _ => Err(format!("unknown command `{verb}`")),
    }
}

impl Guest for KvCounter {
    fn handle(conn: Connection) -> Result<(), String> {
        let mut bucket = store::open("").map_err(|e| format!("cannot open the store: {}", error(e)))?;
        let mut pending = Vec::new();
        loop {
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]);
                let line = line.trim_end_matches('\r');
                let reply = match command(&mut bucket, line) {
                    Ok(reply) => reply,
                    Err(why) => format!("ERR {why}"),
                };
                conn.send(format!("{reply}\n").as_bytes()).map_err(|e| format!("send failed: {}", e.name()))?;
            }
            let data = conn.recv(64 * 1024).map_err(|e| format!("recv failed: {}", e.name()))?;
            if data.is_empty() {
                return Ok(());
            }
            pending.extend_from_slice(&data);
        }
    }
}

export!(KvCounter);
