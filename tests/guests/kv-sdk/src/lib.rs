//! A test guest of the SDK's key-value wrappers (`netplug_guest::kv`), one
//! command a line, one reply a line (`ERR ` and the message on an error):
//!
//! - `FILL PREFIX N`: sets PREFIX0 .. PREFIX(N-1), replies `OK`
//! - `COUNT`: how many keys `Bucket::keys` yields (every page), replies N
//! - `INCR KEY DELTA` (DELTA may be negative), `SET KEY VALUE`, `GET KEY`
//!   (`(nil)` if missing), `DEL KEY`, `EXISTS KEY` (`1` or `0`)
//! - `APPEND KEY TEXT`: appends TEXT with `Bucket::update` (a
//!   compare-and-swap, retried), replies the new length
//! - `SETNX KEY VALUE`: `Bucket::compare_and_swap` from no value, replies
//!   `1` if it wrote, `0` if the key had a value
//! - `MSET K V K V...`, `MGET K...` (`K=V` or `(nil)` each), `MDEL K...`:
//!   draft2's `batch` on the raw bucket (`Bucket::as_raw`)
//! - `FLOOD PREFIX SIZE`: sets PREFIX0, PREFIX1, ... to SIZE bytes each
//!   until a write fails (a hostile guest filling the store); replies the
//!   error, or `OK` after 10,000 writes
//! - `MGETMANY KEY N`: one batch `get-many` of KEY N times over; replies
//!   how many values came back, or the error
//! - `HOARD KEY N`: holds N compare-and-swap handles on KEY at once;
//!   replies `held N`, or the error

use netplug_guest::bindings::server::wasi::keyvalue0_2_0_draft2::batch;
use netplug_guest::kv::Bucket;
use netplug_guest::Connection;
use std::io::{self, BufRead, Write};

fn command(bucket: &Bucket, line: &str) -> io::Result<String> {
    let mut words = line.splitn(3, ' ');
    let (verb, a, b) = (words.next().unwrap_or(""), words.next().unwrap_or(""), words.next().unwrap_or(""));
    let number = |text: &str| text.parse::<i64>().map_err(|_| io::Error::other(format!("`{text}` is not a number")));
    let batch_error = |e| io::Error::other(format!("{e:?}"));
    let words: Vec<&str> = line.split(' ').skip(1).collect();
    Ok(match verb {
        "MSET" => {
            let pairs: Vec<(String, Vec<u8>)> =
                words.chunks(2).map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").as_bytes().to_vec())).collect();
            batch::set_many(bucket.as_raw(), &pairs).map_err(batch_error)?;
            "OK".into()
        }
        "MGET" => {
            let keys: Vec<String> = words.iter().map(|k| k.to_string()).collect();
            let found = batch::get_many(bucket.as_raw(), &keys).map_err(batch_error)?;
            let shown: Vec<String> = found
                .into_iter()
                .map(|pair| pair.map_or("(nil)".into(), |(k, v)| format!("{k}={}", String::from_utf8_lossy(&v))))
                .collect();
            shown.join(" ")
        }
        "MDEL" => {
            let keys: Vec<String> = words.iter().map(|k| k.to_string()).collect();
            batch::delete_many(bucket.as_raw(), &keys).map_err(batch_error)?;
            "OK".into()
        }
        "FILL" => {
            for i in 0..number(b)? {
                bucket.set(&format!("{a}{i}"), i.to_string().as_bytes())?;
            }
            "OK".into()
        }
        "FLOOD" => {
            let value = vec![b'x'; usize::try_from(number(b)?).unwrap_or(0)];
            for i in 0..10_000 {
                bucket.set(&format!("{a}{i}"), &value)?;
            }
            "OK".into()
        }
        "MGETMANY" => {
            let keys = vec![a.to_string(); usize::try_from(number(b)?).unwrap_or(0)];
            let found = batch::get_many(bucket.as_raw(), &keys).map_err(batch_error)?;
            found.iter().flatten().count().to_string()
        }
        "HOARD" => {
            let mut held = Vec::new();
            for _ in 0..number(b)? {
                held.push(bucket.cas(a)?);
            }
            format!("held {}", held.len())
        }
        "COUNT" => bucket.keys().collect::<io::Result<Vec<_>>>()?.len().to_string(),
        "INCR" => bucket.increment(a, number(b)?)?.to_string(),
        "SET" => bucket.set(a, b.as_bytes()).map(|()| "OK".into())?,
        "APPEND" => {
            let new = bucket.update(a, |old| Some([old.unwrap_or_default(), b.as_bytes()].concat()))?;
            new.map_or(0, |value| value.len()).to_string()
        }
        "SETNX" => u8::from(bucket.compare_and_swap(a, None, b.as_bytes())?).to_string(),
        "GET" => bucket.get(a)?.map_or("(nil)".into(), |v| String::from_utf8_lossy(&v).into_owned()),
        "DEL" => bucket.delete(a).map(|()| "OK".into())?,
        "EXISTS" => u8::from(bucket.exists(a)?).to_string(),
        _ => return Err(io::Error::other(format!("unknown command `{verb}`"))),
    })
}

fn handle(mut conn: Connection) -> netplug_guest::Result {
    let bucket = Bucket::open("")?;
    let mut line = String::new();
    while {
        line.clear();
        conn.read_line(&mut line)? > 0
    } {
        let reply = command(&bucket, line.trim_end()).unwrap_or_else(|e| format!("ERR {e}"));
        conn.write_all(format!("{reply}\n").as_bytes())?;
    }
    Ok(())
}

netplug_guest::serve!(handle);
