//! The RESP2 protocol and the string commands, as pure functions over bytes
//! and a small [`Store`] trait: no bindings here, so it is tested natively
//! (`cargo test --target x86_64-unknown-linux-gnu -p resp` in `guest/`).
//!
//! Requests are multibulk (`*N\r\n$LEN\r\n...`) or inline (`PING\r\n`, split
//! like redis-server splits them, quotes and escapes included). Every
//! complete command in the buffer is run in turn and the replies are appended
//! to one output buffer, so a pipelined batch costs one send. Replies and
//! errors are byte for byte those of redis-server 7.0.
//!
//! # How values are stored
//!
//! A key is the store's key as is when it is UTF-8 and does not start with
//! NUL; any other key is NUL followed by its bytes in hex ([`store_key`]).
//! A value without an expiry is stored as is; a value with one, and the few
//! values that could be mistaken for a header or a counter, are stored as a
//! NUL byte, the deadline (unix milliseconds, 8 bytes big-endian, 0 for
//! none) and the value ([`encode`], [`decode`]). The deadline also goes to
//! the host with the write (`netplug:protocol/expiry`), which deletes the
//! key once it passes, read or not (active expiry), and reads it as missing
//! until then; a read that still finds a value past its deadline here
//! deletes it and answers as if missing.
//!
//! # Concurrency
//!
//! Every command that reads a key then writes it (`SETNX`, `SET
//! NX|XX|GET|KEEPTTL`, `GETSET`, `APPEND`, `INCR` and the others on a
//! counter with a TTL or that `increment` cannot read, `EXPIRE`, `PERSIST`)
//! is a compare-and-swap loop ([`update`]): read the stored bytes, compute,
//! and [`Store::swap`] the result in only if the stored bytes are still
//! those read; if another connection wrote the key in between, read and
//! compute again. So no command loses a concurrent update, and each acts
//! as if it ran alone. `INCR`, `INCRBY`, `DECR` and `DECRBY` on a missing
//! key or a plain counter are one atomic `increment` (a signed one,
//! `wasi:keyvalue/atomics@0.2.0-draft2`) and need no loop.
//!
//! What is still not atomic: a command on several keys (`MSET`, `DEL`,
//! `EXISTS`, `MGET`) is not atomic across its keys, and the lazy deletion of an
//! expired key when a read finds it is a read then a delete (the store has
//! no conditional delete), so a value another connection writes to that
//! key in between is deleted with it.

use crate::keyspace;
use std::borrow::Cow;

/// The shared key-value store, as the commands need it. Keys are the
/// store's keys ([`store_key`] maps a client's key to one); values are the
/// stored bytes ([`encode`]). Errors are messages, replied as `-ERR ...`.
pub trait Store {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// The values at `keys`, in order: a pipelined run of `GET`s reads
    /// them in one call.
    fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// Stores each value at its key with no deadline: a pipelined run of
    /// plain `SET`s writes them in one call.
    fn set_many(&mut self, entries: &[(&str, &[u8])]) -> Result<(), String> {
        entries.iter().try_for_each(|(key, value)| self.set(key, value, 0))
    }
    /// Stores `value` at `key`; the host deletes it at `deadline` (unix ms,
    /// 0: never) whether or not it is read again.
    fn set(&mut self, key: &str, value: &[u8], deadline: u64) -> Result<(), String>;
    fn delete(&mut self, key: &str) -> Result<(), String>;
    /// The value read as a decimal `i64` (a missing key is 0) plus `delta`,
    /// stored and returned, as one atomic step; an error if the value is not
    /// a decimal `i64` or the sum overflows.
    fn increment(&mut self, key: &str, delta: i64) -> Result<i64, String>;
    /// Stores `new` at `key` if the stored bytes are still `expected`
    /// (`None`: no value), as one atomic step, and says whether it did;
    /// `false` writes nothing (another connection wrote the key meanwhile).
    /// What it writes gets `deadline`, as with [`set`](Store::set).
    fn swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8], deadline: u64) -> Result<bool, String>;
    /// One page of the selected database's keys from `cursor` (`None`: the
    /// first), and the cursor of the next page, if any.
    fn list_keys(&mut self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), String>;
    /// Later commands use database `db` (`SELECT`), `0..DATABASES`.
    fn select(&mut self, db: u32) -> Result<(), String>;
    /// The time, in unix milliseconds.
    fn now_ms(&mut self) -> u64;
}

/// `SELECT` takes `0..DATABASES`, as redis-server's default `databases 16`.
pub const DATABASES: i64 = 16;

/// The longest bulk string a request may hold; a longer one is refused with
/// `Protocol error: invalid bulk length` (redis-server's
/// `proto-max-bulk-len` is 512 MiB; a guest has `--max-memory`). The host's
/// `--kv-max-value-size` (4 MiB by default) bounds what is stored.
pub const MAX_BULK: usize = 8 << 20;

/// The most arguments a request may hold (redis-server 6's bound), past it
/// `Protocol error: invalid multibulk length`.
pub const MAX_ARGS: i64 = 1024 * 1024;

/// The most bytes one request may take before it is complete; past it the
/// connection is closed without a reply, as redis-server closes a client
/// past its query buffer limit.
pub const MAX_REQUEST: usize = 16 << 20;

/// The longest inline request or `*`/`$` header line (redis-server's
/// `PROTO_INLINE_MAX_SIZE`).
const MAX_INLINE: usize = 64 * 1024;

/// What the connection does once a batch's replies are sent.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Wait for more bytes.
    Continue,
    /// Close the connection (`QUIT`, a protocol error, a request too large).
    Close,
}

/// One connection's request buffer: bytes in, replies out.
#[derive(Default)]
pub struct Session {
    buffer: Vec<u8>,
    /// Bytes the buffer must hold before the request at its start can be
    /// complete; no parse is tried below it.
    need: usize,
    /// The client asked for RESP3 (`HELLO 3`).
    resp3: bool,
}

/// Where a batch's replies go, and in which protocol version.
pub struct Out<'a> {
    bytes: &'a mut Vec<u8>,
    resp3: bool,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `data` and runs every complete command, appending the replies
    /// to `out`.
    pub fn feed(&mut self, data: &[u8], store: &mut dyn Store, out: &mut Vec<u8>) -> After {
        if self.buffer.is_empty() {
            self.buffer.reserve(self.need.max(data.len()));
        } else if self.need > self.buffer.capacity() {
            // One allocation of what the pending bulk needs, rather than
            // doublings that would hold twice as much.
            self.buffer.reserve_exact(self.need - self.buffer.len());
        }
        self.buffer.extend_from_slice(data);
        if self.buffer.len() < self.need {
            return After::Continue;
        }
        let mut pos = 0;
        let out = &mut Out { bytes: out, resp3: self.resp3 };
        let after = loop {
            match parse(&self.buffer[pos..]) {
                Parsed::Command(args, used) if args.is_get() => {
                    // A pipelined run of GETs is read in one call; a GET
                    // alone takes the usual path. Each command is parsed
                    // once (the one that ends a run, twice).
                    // Nothing is allocated for a run until it has two.
                    let mut keys = Vec::new();
                    let mut end = pos + used;
                    while let Parsed::Command(next, used) = parse(&self.buffer[end..]) {
                        if !next.is_get() {
                            break;
                        }
                        if keys.is_empty() {
                            // redis-benchmark -P 16 sends runs of 16.
                            keys.reserve(16);
                            keys.push(args.key());
                        }
                        keys.push(next.key());
                        end += used;
                    }
                    if keys.is_empty() {
                        execute_args(&args, store, out);
                    } else {
                        get_run(&keys, store, out);
                    }
                    pos = end;
                }
                Parsed::Command(args, used) if args.is_plain_set() => {
                    // A pipelined run of plain SETs is written in one call;
                    // a SET alone takes the usual path.
                    let mut run = Vec::new();
                    let mut end = pos + used;
                    while let Parsed::Command(next, used) = parse(&self.buffer[end..]) {
                        if !next.is_plain_set() {
                            break;
                        }
                        if run.is_empty() {
                            run.reserve(16);
                            run.push(args.clone());
                        }
                        run.push(next);
                        end += used;
                    }
                    if run.is_empty() {
                        execute_args(&args, store, out);
                    } else {
                        set_run(&run, store, out);
                    }
                    pos = end;
                }
                Parsed::Command(args, used) if args.is_incr() => {
                    pos += used;
                    incr(args.arg(1), store, out);
                }
                Parsed::Command(args, used) => {
                    pos += used;
                    if execute_args(&args, store, out) == After::Close {
                        break After::Close;
                    }
                }
                Parsed::Empty(used) => pos += used,
                Parsed::Incomplete(need) => {
                    self.need = need;
                    break if need > MAX_REQUEST { After::Close } else { After::Continue };
                }
                Parsed::Error(message) => {
                    error(out, &format!("Protocol error: {message}"));
                    break After::Close;
                }
            }
        };
        self.resp3 = out.resp3;
        self.buffer.drain(..pos);
        if self.buffer.is_empty() && self.buffer.capacity() > 1 << 20 {
            self.buffer = Vec::new();
        }
        after
    }
}

/// The replies to a run of `GET`s of `keys`, as `execute` gives them one by
/// one, from one `get_many`; if that fails, each `GET` on its own, so that
/// each gets its own reply.
fn get_run(keys: &[Cow<'_, str>], store: &mut dyn Store, out: &mut Out<'_>) {
    let names: Vec<&str> = keys.iter().map(|key| &**key).collect();
    let Ok(values) = store.get_many(&names) else {
        return keys.iter().for_each(|key| reply_get(read(store, key), out));
    };
    let mut now = None;
    for (key, stored) in keys.iter().zip(values) {
        match stored {
            None => nil(out),
            // Stored without a header: no deadline, and the value as it is
            // (what `unexpired` would find), replied without its detour.
            Some(stored) if stored.first() != Some(&TAG) => bulk(out, &stored),
            Some(stored) => reply_get(unexpired(store, key, stored, &mut now), out),
        }
    }
}

/// The replies to a run of plain `SET`s, as `execute` gives them one by
/// one, from one `set_many`; if that fails (the store full, say), each
/// `SET` on its own, so that each gets its own reply (a plain `SET` written
/// twice is written once).
fn set_run(run: &[Args<'_>], store: &mut dyn Store, out: &mut Out<'_>) {
    // Keys and values are nearly always stored as sent: then the entries
    // borrow them, in one list; else the ones made are kept alongside.
    let mut entries: Vec<(&str, &[u8])> = Vec::with_capacity(run.len());
    for args in run {
        match (store_key(args.arg(1)), encode(args.arg(2), 0)) {
            (Cow::Borrowed(key), Cow::Borrowed(value)) => entries.push((key, value)),
            _ => break,
        }
    }
    let (keys, values): (Vec<Cow<'_, str>>, Vec<Cow<'_, [u8]>>);
    if entries.len() < run.len() {
        keys = run.iter().map(|args| store_key(args.arg(1))).collect();
        values = run.iter().map(|args| encode(args.arg(2), 0)).collect();
        entries = keys.iter().zip(&values).map(|(key, value)| (&**key, &**value)).collect();
    }
    if store.set_many(&entries).is_ok() {
        run.iter().for_each(|_| ok(out));
        return;
    }
    for args in run {
        execute_args(args, store, out);
    }
}

/// `GET`'s reply to what [`read`] (or a run's read) found.
fn reply_get(value: Result<Option<(u64, Vec<u8>)>, Failed>, out: &mut Out<'_>) {
    match value {
        Ok(Some((_, value))) => bulk(out, &value),
        Ok(None) => nil(out),
        Err(Failed(message)) => error(out, &message),
    }
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A command and the bytes it took.
    Command(Args<'a>, usize),
    /// Bytes that hold no command (an empty line, `*0`, `*-1`).
    Empty(usize),
    /// The request is not complete; at least this many bytes are needed.
    Incomplete(usize),
    /// A protocol error: the text after `Protocol error: `.
    Error(String),
}

/// The most arguments [`Args::Short`] holds.
const SHORT_ARGS: usize = 4;

/// A command's arguments, the name first.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Args<'a> {
    /// Those of a multibulk request of up to [`SHORT_ARGS`] (as `GET`,
    /// `SET` and `INCR` are): the request's bytes, held without allocating.
    Short([&'a [u8]; SHORT_ARGS], usize),
    /// Those of a longer multibulk request: the request's bytes.
    Long(Vec<&'a [u8]>),
    /// Those of an inline request, unquoted and unescaped.
    Inline(Vec<Vec<u8>>),
}

impl<'a> Args<'a> {
    fn len(&self) -> usize {
        match self {
            Args::Short(_, len) => *len,
            Args::Long(args) => args.len(),
            Args::Inline(args) => args.len(),
        }
    }

    fn arg(&self, i: usize) -> &[u8] {
        match self {
            Args::Short(args, _) => args[i],
            Args::Long(args) => args[i],
            Args::Inline(args) => &args[i],
        }
    }

    /// Whether this is a `GET` with its one key.
    fn is_get(&self) -> bool {
        self.len() == 2 && self.arg(0).eq_ignore_ascii_case(b"GET")
    }

    /// Whether this is an `INCR` with its one key.
    fn is_incr(&self) -> bool {
        self.len() == 2 && self.arg(0).eq_ignore_ascii_case(b"INCR")
    }

    /// Whether this is a `SET` of a key to a value, with no options.
    fn is_plain_set(&self) -> bool {
        self.len() == 3 && self.arg(0).eq_ignore_ascii_case(b"SET")
    }

    /// [`store_key`] of the first argument after the name, borrowing the
    /// request's bytes unless the request was inline.
    fn key(&self) -> Cow<'a, str> {
        match self {
            Args::Short(args, _) => store_key(args[1]),
            Args::Long(args) => store_key(args[1]),
            Args::Inline(args) => Cow::Owned(store_key(&args[1]).into_owned()),
        }
    }
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    if let Some((args, used)) = parse_short(buf) {
        return Parsed::Command(args, used);
    }
    match buf.first() {
        None => Parsed::Incomplete(1),
        Some(b'*') => parse_multibulk(buf),
        Some(_) => parse_inline(buf),
    }
}

/// A `*` or `$` header line at `buf[start..]`: its number and the offset
/// after its `\r\n`, `Ok(None)` if incomplete, `Err` if too long.
fn header(buf: &[u8], start: usize) -> Result<Option<(Option<i64>, usize)>, ()> {
    let rest = &buf[start..];
    // Nearly every header is a few digits then `\r\n`: read them in one
    // pass. Up to 18 digits cannot overflow, and a leading zero (other than
    // `0` alone) is left to `string2ll`, which refuses it, as is anything
    // else (a sign, another byte, a line not yet complete).
    let mut end = 1;
    let mut value: i64 = 0;
    while end <= 18 && end < rest.len() && rest[end].is_ascii_digit() {
        value = value * 10 + i64::from(rest[end] - b'0');
        end += 1;
    }
    if end > 1 && end + 1 < rest.len() && rest[end] == b'\r' && (rest[1] != b'0' || end == 2) {
        return Ok(Some((Some(value), start + end + 2)));
    }
    match rest.iter().position(|&b| b == b'\r') {
        // redis-server reads the number up to `\r` and skips `\r\n`.
        Some(cr) if cr + 1 < rest.len() => Ok(Some((string2ll(&rest[1..cr]), start + cr + 2))),
        Some(_) => Ok(None),
        None if rest.len() > MAX_INLINE => Err(()),
        None => Ok(None),
    }
}

/// The usual request read in one pass: a multibulk of 1 to [`SHORT_ARGS`]
/// arguments whose lengths are plain digits (up to 9), all in `buf`.
/// `None` for any other (longer, unusual, incomplete or wrong), which
/// [`parse_multibulk`] reads; what this reads, that reads the same way.
#[inline]
fn parse_short(buf: &[u8]) -> Option<(Args<'_>, usize)> {
    let &[b'*', count, b'\r', _, ..] = buf else { return None };
    let count = usize::from(count.wrapping_sub(b'0'));
    if !(1..=SHORT_ARGS).contains(&count) {
        return None;
    }
    let mut args: [&[u8]; SHORT_ARGS] = [&[]; SHORT_ARGS];
    let mut pos = 4;
    for arg in &mut args[..count] {
        if buf.get(pos) != Some(&b'$') {
            return None;
        }
        // Nine digits fit a `usize` of wasm32.
        let first = pos + 1;
        let mut end = first;
        let mut len = 0;
        while end - first < 9 && end < buf.len() && buf[end].is_ascii_digit() {
            len = len * 10 + usize::from(buf[end] - b'0');
            end += 1;
        }
        let digits = end - first;
        // As `string2ll`: no leading zero but in `0`.
        if digits == 0 || (digits > 1 && buf[first] == b'0') || buf.get(end) != Some(&b'\r') || len > MAX_BULK {
            return None;
        }
        // Past `\r` and the byte after it, the data and the 2 bytes after
        // it, all unread as redis-server skips them.
        let start = end + 2;
        if buf.len() < start + len + 2 {
            return None;
        }
        *arg = &buf[start..start + len];
        pos = start + len + 2;
    }
    Some((Args::Short(args, count), pos))
}

fn parse_multibulk(buf: &[u8]) -> Parsed<'_> {
    let (count, mut pos) = match header(buf, 0) {
        Ok(Some(found)) => found,
        Ok(None) => return Parsed::Incomplete(buf.len() + 1),
        Err(()) => return Parsed::Error("too big mbulk count string".into()),
    };
    let count = match count {
        Some(count) if count <= MAX_ARGS => count,
        _ => return Parsed::Error("invalid multibulk length".into()),
    };
    if count <= 0 {
        return Parsed::Empty(pos);
    }
    let count = count as usize;
    let mut short: [&[u8]; SHORT_ARGS] = [&[]; SHORT_ARGS];
    let mut long = Vec::new();
    if count > SHORT_ARGS {
        long.reserve(count.min(64));
    }
    for parsed in 0..count {
        match buf.get(pos) {
            None => return Parsed::Incomplete(pos + 1),
            Some(b'$') => {}
            Some(&other) => return Parsed::Error(format!("expected '$', got '{}'", other as char)),
        }
        let (len, start) = match header(buf, pos) {
            Ok(Some(found)) => found,
            Ok(None) => return Parsed::Incomplete(buf.len() + 1),
            Err(()) => return Parsed::Error("too big bulk count string".into()),
        };
        let len = match len {
            Some(len) if (0..=MAX_BULK as i64).contains(&len) => len as usize,
            _ => return Parsed::Error("invalid bulk length".into()),
        };
        // The data and its `\r\n` (which redis-server skips unread).
        let end = start + len + 2;
        if buf.len() < end {
            return Parsed::Incomplete(end);
        }
        let arg = &buf[start..start + len];
        if let Some(slot) = short.get_mut(parsed).filter(|_| count <= SHORT_ARGS) {
            *slot = arg;
        } else {
            long.push(arg);
        }
        pos = end;
    }
    let args = if count <= SHORT_ARGS { Args::Short(short, count) } else { Args::Long(long) };
    Parsed::Command(args, pos)
}

fn parse_inline(buf: &[u8]) -> Parsed<'_> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Parsed::Error("too big inline request".into());
        }
        return Parsed::Incomplete(buf.len() + 1);
    };
    let mut line = &buf[..newline];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    match split_args(line) {
        Some(args) if args.is_empty() => Parsed::Empty(newline + 1),
        Some(args) => Parsed::Command(Args::Inline(args), newline + 1),
        None => Parsed::Error("unbalanced quotes in request".into()),
    }
}

/// Splits an inline request as redis-server's `sdssplitargs` does: words
/// separated by white space, `"..."` with `\n`, `\r`, `\t`, `\b`, `\a`,
/// `\xHH` and `\<any>` escapes, `'...'` with `\'` only. A closing quote must
/// be followed by white space or the end; `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    loop {
        while i < line.len() && space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            if in_double {
                let &c = line.get(i)?;
                if c == b'\\' && i + 3 < line.len() && line[i + 1] == b'x' {
                    if let (Some(high), Some(low)) = (hex_digit(line[i + 2]), hex_digit(line[i + 3])) {
                        current.push(high * 16 + low);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < line.len() {
                    current.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if i + 1 < line.len() && !space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                current.push(c);
                i += 1;
            } else if in_single {
                let &c = line.get(i)?;
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    current.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < line.len() && !space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                current.push(c);
                i += 1;
            } else {
                match line.get(i) {
                    None => break,
                    Some(&c) if space(c) => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(&c) => current.push(c),
                }
                i += 1;
            }
        }
        args.push(current);
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A decimal `i64` exactly as redis-server's `string2ll` reads one: no sign
/// but `-`, no leading zero, no space, nothing past the range.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // Only 20 digits can overflow a `u64`: fewer skip the checked
        // multiply (a 128-bit one in wasm32, `__multi3`).
        value = if digits.len() < 20 {
            value * 10 + u64::from(d - b'0')
        } else {
            value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?
        };
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            return None;
        }
        Some((value as i64).wrapping_neg())
    } else {
        i64::try_from(value).ok()
    }
}

/// The store's key for a client's key: itself when it is UTF-8 and does not
/// start with NUL, else NUL and its bytes in hex.
#[inline]
pub fn store_key(key: &[u8]) -> Cow<'_, str> {
    // Most keys are short and ASCII: checked as such, inline, they skip the
    // UTF-8 validation's setup.
    if key.first().is_some_and(|&b| b != 0) && key.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(key) });
    }
    store_key_slow(key)
}

/// [`store_key`] of a key that is not ASCII or starts with NUL.
#[inline(never)]
fn store_key_slow(key: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with('\0') => Cow::Borrowed(text),
        _ => {
            let mut escaped = String::with_capacity(1 + key.len() * 2);
            escaped.push('\0');
            for b in key {
                escaped.push_str(&format!("{b:02x}"));
            }
            Cow::Owned(escaped)
        }
    }
}

/// The byte that starts a stored value with a header.
const TAG: u8 = 0;
const HEADER: usize = 9;

/// The stored bytes of `value` with its deadline (unix ms, 0 for none).
pub fn encode(value: &[u8], deadline: u64) -> Cow<'_, [u8]> {
    if deadline == 0 && !needs_header(value) {
        return Cow::Borrowed(value);
    }
    let mut stored = Vec::with_capacity(HEADER + value.len());
    stored.push(TAG);
    stored.extend_from_slice(&deadline.to_be_bytes());
    stored.extend_from_slice(value);
    Cow::Owned(stored)
}

/// Whether a value without expiry must still get a header: it starts like
/// one, or the store's `increment` would read it as a number although
/// redis-server would not (`+1`, `007`, `-0`).
fn needs_header(value: &[u8]) -> bool {
    match value.first() {
        Some(&TAG) => return true,
        // The store reads a number only from a sign or a digit on (as
        // `i64::from_str`): any other value needs no more look.
        Some(b'+' | b'-' | b'0'..=b'9') => {}
        _ => return false,
    }
    let store_reads = std::str::from_utf8(value).is_ok_and(|text| text.parse::<i64>().is_ok());
    store_reads && string2ll(value).is_none()
}

/// The deadline (0 for none) and the value of stored bytes.
pub fn decode(stored: &[u8]) -> (u64, &[u8]) {
    if stored.len() >= HEADER && stored[0] == TAG {
        let deadline = u64::from_be_bytes(stored[1..HEADER].try_into().unwrap());
        (deadline, &stored[HEADER..])
    } else {
        (0, stored)
    }
}

// Replies.

fn simple(out: &mut Out<'_>, text: &str) {
    out.bytes.push(b'+');
    out.bytes.extend_from_slice(text.as_bytes());
    out.bytes.extend_from_slice(b"\r\n");
}

fn ok(out: &mut Out<'_>) {
    out.bytes.extend_from_slice(b"+OK\r\n");
}

/// `-ERR message`, with any CR or LF in it turned into a space.
fn error(out: &mut Out<'_>, message: &str) {
    error_bytes(out, message.as_bytes());
}

fn error_bytes(out: &mut Out<'_>, message: &[u8]) {
    out.bytes.extend_from_slice(b"-ERR ");
    out.bytes.extend(message.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.bytes.extend_from_slice(b"\r\n");
}

fn integer(out: &mut Out<'_>, n: i64) {
    out.bytes.push(b':');
    out.bytes.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.bytes.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Out<'_>, data: &[u8]) {
    if data.len() < 10 {
        // A one-digit length (redis-benchmark's values have 3 bytes): the
        // header is one 4-byte write.
        out.bytes.extend_from_slice(&[b'$', b'0' + data.len() as u8, b'\r', b'\n']);
    } else {
        out.bytes.push(b'$');
        out.bytes.extend_from_slice(itoa::Buffer::new().format(data.len()).as_bytes());
        out.bytes.extend_from_slice(b"\r\n");
    }
    out.bytes.extend_from_slice(data);
    out.bytes.extend_from_slice(b"\r\n");
}

/// The null reply: `$-1` in RESP2, `_` in RESP3.
fn nil(out: &mut Out<'_>) {
    out.bytes.extend_from_slice(if out.resp3 { b"_\r\n" } else { b"$-1\r\n" });
}

/// A map of `len` pairs: an array of keys and values in RESP2.
fn map(out: &mut Out<'_>, len: usize) {
    if out.resp3 {
        out.bytes.push(b'%');
        out.bytes.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.bytes.extend_from_slice(b"\r\n");
    } else {
        array(out, len * 2);
    }
}

fn array(out: &mut Out<'_>, len: usize) {
    out.bytes.push(b'*');
    out.bytes.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.bytes.extend_from_slice(b"\r\n");
}

const NOT_INTEGER: &str = "value is not an integer or out of range";
const SYNTAX: &str = "syntax error";
const OVERFLOW: &str = "increment or decrement would overflow";

/// The commands: name (lower case), arity as redis-server counts it (the
/// name included; negative: at least that many).
const COMMANDS: &[(&str, i32)] = &[
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getset", 3),
    ("append", 3),
    ("strlen", 2),
    ("del", -2),
    ("exists", -2),
    ("incr", 2),
    ("incrby", 3),
    ("decr", 2),
    ("decrby", 3),
    ("mget", -2),
    ("mset", -3),
    ("expire", -3),
    ("pexpire", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("persist", 2),
    ("dbsize", 1),
    ("keys", 2),
    ("scan", -2),
    ("ping", -1),
    ("echo", 2),
    ("select", 2),
    ("quit", -1),
    ("command", -1),
    ("config", -2),
    ("client", -2),
    ("hello", -1),
];

/// Up to 8 bytes of a name, lower-cased, as one number (the first byte
/// lowest; 0 past the name): a command name is then found by comparing
/// numbers, not bytes. No command name is longer, nor holds a NUL.
const fn word(name: &[u8]) -> Option<u64> {
    if name.len() > 8 {
        return None;
    }
    let mut word = 0;
    let mut i = 0;
    while i < name.len() {
        // A name with a NUL would match a shorter one padded with zeros.
        if name[i] == 0 {
            return None;
        }
        word |= (name[i].to_ascii_lowercase() as u64) << (8 * i);
        i += 1;
    }
    Some(word)
}

/// [`COMMANDS`]' names as [`word`]s, in the same order.
const WORDS: [u64; COMMANDS.len()] = {
    let mut words = [0; COMMANDS.len()];
    let mut i = 0;
    while i < COMMANDS.len() {
        words[i] = match word(COMMANDS[i].0.as_bytes()) {
            Some(word) => word,
            None => panic!("a command name longer than 8 bytes, or with a NUL"),
        };
        i += 1;
    }
    words
};

/// The command named `name` (in any case).
fn lookup(name: &[u8]) -> Option<&'static (&'static str, i32)> {
    let word = word(name)?;
    WORDS.iter().position(|&w| w == word).map(|i| &COMMANDS[i])
}

/// A failed store operation, replied as an error.
struct Failed(String);

/// How the host's refusal of a write past the store's bound begins.
const STORE_FULL: &str = "store full:";

/// redis-server's reply to a write past `maxmemory` with `noeviction`.
const OOM: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";

impl From<String> for Failed {
    fn from(message: String) -> Self {
        Failed(message)
    }
}

/// [`execute`] on parsed arguments (only an inline request's are
/// collected into a new list).
fn execute_args(args: &Args<'_>, store: &mut dyn Store, out: &mut Out<'_>) -> After {
    match args {
        Args::Short(args, len) => execute(&args[..*len], store, out),
        Args::Long(args) => execute(args, store, out),
        Args::Inline(args) => execute(&args.iter().map(Vec::as_slice).collect::<Vec<_>>(), store, out),
    }
}

/// Runs one command, appending its reply to `out`.
pub fn execute(args: &[&[u8]], store: &mut dyn Store, out: &mut Out<'_>) -> After {
    let Some(&(command, arity)) = lookup(args[0]) else {
        unknown_command(args, out);
        return After::Continue;
    };
    let argc = args.len() as i32;
    if (arity > 0 && argc != arity) || argc < -arity {
        error(out, &format!("wrong number of arguments for '{command}' command"));
        return After::Continue;
    }
    match run(command, args, store, out) {
        Ok(after) => after,
        Err(failed) => {
            reply_failed(failed, out);
            After::Continue
        }
    }
}

/// The reply to a command that failed.
fn reply_failed(Failed(message): Failed, out: &mut Out<'_>) {
    if message.starts_with(STORE_FULL) {
        // The store's bound (`--kv-max-bytes`) is redis-server's
        // `maxmemory` under `noeviction`: the same reply.
        out.bytes.extend_from_slice(OOM);
    } else {
        error(out, &message);
    }
}

/// `INCR key`, as [`execute`] runs it, without looking the name up: the
/// one command of a pipelined run of `INCR`s that is not batched (each is
/// its own atomic `increment`).
fn incr(key: &[u8], store: &mut dyn Store, out: &mut Out<'_>) {
    match increment(store, key, 1) {
        Ok(n) => integer(out, n),
        Err(failed) => reply_failed(failed, out),
    }
}

/// `unknown command 'NAME', with args beginning with: 'A' 'B' `, as
/// redis-server builds it: each argument quoted and followed by a space
/// while the list is under 128 bytes, each cut to what is left of them.
fn unknown_command(args: &[&[u8]], out: &mut Out<'_>) {
    // `%.Ns` of C: up to N bytes, stopping at a NUL.
    fn c_str(s: &[u8], max: usize) -> &[u8] {
        let s = &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())];
        &s[..s.len().min(max)]
    }
    let mut listed = Vec::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        listed.push(b'\'');
        listed.extend_from_slice(c_str(arg, 128 - listed.len() + 1));
        listed.extend_from_slice(b"' ");
    }
    let mut message = b"unknown command '".to_vec();
    message.extend_from_slice(c_str(args[0], 128));
    message.extend_from_slice(b"', with args beginning with: ");
    message.extend_from_slice(&listed);
    error_bytes(out, &message);
}

fn unknown_subcommand(out: &mut Out<'_>, sub: &[u8], command: &str) {
    let mut message = b"unknown subcommand '".to_vec();
    message.extend_from_slice(&sub[..sub.len().min(128)]);
    message.extend_from_slice(format!("'. Try {command} HELP.").as_bytes());
    error_bytes(out, &message);
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

fn int_arg(arg: &[u8]) -> Result<i64, Failed> {
    string2ll(arg).ok_or_else(|| Failed(NOT_INTEGER.into()))
}

/// A key's live value and deadline; an expired one is deleted and missing.
fn read(store: &mut dyn Store, key: &str) -> Result<Option<(u64, Vec<u8>)>, Failed> {
    let Some(stored) = store.get(key)? else { return Ok(None) };
    unexpired(store, key, stored, &mut None)
}

/// The value and deadline in `stored`, the bytes read at `key`, or none
/// (and the key deleted) if its deadline has passed. `now` is the time,
/// read at the first deadline seen.
fn unexpired(
    store: &mut dyn Store,
    key: &str,
    mut stored: Vec<u8>,
    now: &mut Option<u64>,
) -> Result<Option<(u64, Vec<u8>)>, Failed> {
    let (deadline, _) = decode(&stored);
    if deadline != 0 && deadline <= *now.get_or_insert_with(|| store.now_ms()) {
        store.delete(key)?;
        return Ok(None);
    }
    if stored.len() >= HEADER && stored[0] == TAG {
        stored.drain(..HEADER);
    }
    Ok(Some((deadline, stored)))
}

fn write(store: &mut dyn Store, key: &str, value: &[u8], deadline: u64) -> Result<(), Failed> {
    store.set(key, &encode(value, deadline), deadline)?;
    Ok(())
}

/// What [`update`]'s function decides: the value and deadline to store
/// (`None`: leave the key as it is), and the command's result.
type Decision<T> = (Option<(Vec<u8>, u64)>, T);

/// Attempts [`update`] makes before it gives up: each failed one means
/// another connection's write to the key succeeded meanwhile.
const MAX_ATTEMPTS: usize = 1000;

/// Reads `key` and writes what `decide` makes of its live value and deadline
/// (`None` if missing or expired) with a compare-and-swap against the bytes
/// read; if another connection wrote the key in between, reads and decides
/// again. Returns the result of the decision that was written.
fn update<T>(
    store: &mut dyn Store,
    key: &str,
    mut decide: impl FnMut(Option<(u64, &[u8])>) -> Result<Decision<T>, Failed>,
) -> Result<T, Failed> {
    for _ in 0..MAX_ATTEMPTS {
        let stored = store.get(key)?;
        let now = store.now_ms();
        let live = stored.as_deref().map(decode).filter(|&(deadline, _)| deadline == 0 || deadline > now);
        let (write, result) = decide(live)?;
        let Some((value, deadline)) = write else { return Ok(result) };
        if store.swap(key, stored.as_deref(), &encode(&value, deadline), deadline)? {
            return Ok(result);
        }
    }
    Err(Failed(format!("the key was written by others {MAX_ATTEMPTS} times while this command tried to update it")))
}

/// The absolute deadline of an expire time given in `unit_ms` units,
/// relative or absolute (`EXAT`, `PXAT`), or `None` when redis-server finds
/// it invalid (zero or less, or past `i64` milliseconds).
fn deadline_of(store: &mut dyn Store, when: i64, unit_ms: i64, relative: bool) -> Option<u64> {
    if when <= 0 || when > i64::MAX / unit_ms {
        return None;
    }
    let mut ms = when * unit_ms;
    if relative {
        let now = store.now_ms() as i64;
        if ms > i64::MAX - now {
            return None;
        }
        ms += now;
    }
    Some(ms as u64)
}

fn run(command: &str, args: &[&[u8]], store: &mut dyn Store, out: &mut Out<'_>) -> Result<After, Failed> {
    match command {
        "get" => match read(store, &store_key(args[1]))? {
            Some((_, value)) => bulk(out, &value),
            None => nil(out),
        },
        "set" => set(args, store, out)?,
        "setnx" => {
            let set = update(store, &store_key(args[1]), |old| {
                Ok(match old {
                    Some(_) => (None, 0),
                    None => (Some((args[2].to_vec(), 0)), 1),
                })
            })?;
            integer(out, set);
        }
        "setex" | "psetex" => {
            let when = int_arg(args[2])?;
            let unit = if command == "setex" { 1000 } else { 1 };
            let Some(deadline) = deadline_of(store, when, unit, true) else {
                return Err(Failed(format!("invalid expire time in '{command}' command")));
            };
            write(store, &store_key(args[1]), args[3], deadline)?;
            ok(out);
        }
        "getset" => {
            let old = update(store, &store_key(args[1]), |old| {
                Ok((Some((args[2].to_vec(), 0)), old.map(|(_, value)| value.to_vec())))
            })?;
            match old {
                Some(value) => bulk(out, &value),
                None => nil(out),
            }
        }
        "append" => {
            let len = update(store, &store_key(args[1]), |old| {
                let (deadline, old) = old.unwrap_or((0, b""));
                let value = [old, args[2]].concat();
                let len = value.len();
                Ok((Some((value, deadline)), len))
            })?;
            integer(out, len as i64);
        }
        "strlen" => {
            let len = read(store, &store_key(args[1]))?.map_or(0, |(_, value)| value.len());
            integer(out, len as i64);
        }
        "del" | "exists" => {
            let mut count = 0;
            for key in &args[1..] {
                let key = store_key(key);
                if read(store, &key)?.is_some() {
                    if command == "del" {
                        store.delete(&key)?;
                    }
                    count += 1;
                }
            }
            integer(out, count);
        }
        "incr" => integer(out, increment(store, args[1], 1)?),
        "decr" => integer(out, increment(store, args[1], -1)?),
        "incrby" => {
            let delta = int_arg(args[2])?;
            integer(out, increment(store, args[1], delta)?);
        }
        "decrby" => {
            let delta = int_arg(args[2])?;
            let delta = delta.checked_neg().ok_or_else(|| Failed("decrement would overflow".into()))?;
            integer(out, increment(store, args[1], delta)?);
        }
        "mget" => {
            array(out, args.len() - 1);
            for key in &args[1..] {
                match read(store, &store_key(key))? {
                    Some((_, value)) => bulk(out, &value),
                    None => nil(out),
                }
            }
        }
        "mset" => {
            if args.len().is_multiple_of(2) {
                return Err(Failed("wrong number of arguments for 'mset' command".into()));
            }
            for pair in args[1..].chunks(2) {
                write(store, &store_key(pair[0]), pair[1], 0)?;
            }
            ok(out);
        }
        "expire" | "pexpire" => expire(command, args, store, out)?,
        "ttl" | "pttl" => {
            let reply = match read(store, &store_key(args[1]))? {
                None => -2,
                Some((0, _)) => -1,
                Some((deadline, _)) => {
                    let left = deadline.saturating_sub(store.now_ms()) as i64;
                    if command == "ttl" {
                        (left + 500) / 1000
                    } else {
                        left
                    }
                }
            };
            integer(out, reply);
        }
        "persist" => {
            let persisted = update(store, &store_key(args[1]), |old| {
                Ok(match old {
                    Some((deadline, value)) if deadline != 0 => (Some((value.to_vec(), 0)), 1),
                    _ => (None, 0),
                })
            })?;
            integer(out, persisted);
        }
        "dbsize" => integer(out, keyspace::all_keys(store)?.len() as i64),
        "keys" => {
            let keys: Vec<Vec<u8>> =
                keyspace::all_keys(store)?.into_iter().filter(|key| keyspace::glob(args[1], key)).collect();
            array(out, keys.len());
            keys.iter().for_each(|key| bulk(out, key));
        }
        "scan" => scan(args, store, out)?,
        "ping" => match args.len() {
            1 => simple(out, "PONG"),
            2 => bulk(out, args[1]),
            _ => return Err(Failed("wrong number of arguments for 'ping' command".into())),
        },
        "echo" => bulk(out, args[1]),
        "select" => {
            let db = string2ll(args[1]).ok_or_else(|| Failed(NOT_INTEGER.into()))?;
            if i32::try_from(db).is_err() {
                return Err(Failed("value is out of range, value must between -2147483648 and 2147483647".into()));
            }
            if !(0..DATABASES).contains(&db) {
                return Err(Failed("DB index is out of range".into()));
            }
            store.select(db as u32)?;
            ok(out);
        }
        "quit" => {
            ok(out);
            return Ok(After::Close);
        }
        "command" => match args.get(1) {
            // No command table: clients (redis-cli, redis-benchmark) start
            // without it.
            None => array(out, 0),
            Some(sub) if is(sub, "docs") => map(out, 0),
            Some(sub) if is(sub, "info") => array(out, 0),
            Some(sub) if is(sub, "count") => integer(out, COMMANDS.len() as i64),
            Some(sub) => unknown_subcommand(out, sub, "COMMAND"),
        },
        "config" => {
            if is(args[1], "get") {
                if args.len() < 3 {
                    return Err(Failed("wrong number of arguments for 'config|get' command".into()));
                }
                // What redis-benchmark asks at start; no persistence here.
                let mut pairs: Vec<(&str, &str)> = Vec::new();
                for pattern in &args[2..] {
                    for (name, value) in [("save", ""), ("appendonly", "no")] {
                        if glob_match(pattern, name.as_bytes()) && !pairs.iter().any(|(n, _)| *n == name) {
                            pairs.push((name, value));
                        }
                    }
                }
                map(out, pairs.len());
                for (name, value) in pairs {
                    bulk(out, name.as_bytes());
                    bulk(out, value.as_bytes());
                }
            } else {
                unknown_subcommand(out, args[1], "CONFIG");
            }
        }
        "client" => {
            // Client libraries name themselves at connect (redis-py sends
            // `CLIENT SETINFO`); accepted and forgotten.
            if is(args[1], "setinfo") || is(args[1], "setname") {
                ok(out);
            } else {
                unknown_subcommand(out, args[1], "CLIENT");
            }
        }
        "hello" => hello(args, out)?,
        _ => unreachable!("{command} is in COMMANDS"),
    }
    Ok(After::Continue)
}

/// A glob of `*` and `?` (enough for `CONFIG GET`), ignoring case.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((&p, rest)) => match name.split_first() {
            Some((&n, name_rest)) if p == b'?' || p.eq_ignore_ascii_case(&n) => glob_match(rest, name_rest),
            _ => false,
        },
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: RESP2 or RESP3, and
/// the server's description. As redis-server's default user, which has no
/// password, `AUTH` takes any.
fn hello(args: &[&[u8]], out: &mut Out<'_>) -> Result<(), Failed> {
    let mut resp3 = out.resp3;
    if let Some(version) = args.get(1) {
        let version =
            string2ll(version).ok_or_else(|| Failed("Protocol version is not an integer or out of range".into()))?;
        if !(2..=3).contains(&version) {
            out.bytes.extend_from_slice(b"-NOPROTO unsupported protocol version\r\n");
            return Ok(());
        }
        resp3 = version == 3;
        let mut j = 2;
        while j < args.len() {
            let more = args.len() - j - 1;
            if is(args[j], "auth") && more >= 2 {
                j += 3;
            } else if is(args[j], "setname") && more >= 1 {
                j += 2;
            } else {
                let mut message = b"Syntax error in HELLO option '".to_vec();
                message.extend_from_slice(args[j]);
                message.push(b'\'');
                return Err(Failed(String::from_utf8_lossy(&message).into_owned()));
            }
        }
    }
    out.resp3 = resp3;
    map(out, 7);
    for (name, value) in [("server", "redis"), ("version", "7.0.15")] {
        bulk(out, name.as_bytes());
        bulk(out, value.as_bytes());
    }
    bulk(out, b"proto");
    integer(out, if resp3 { 3 } else { 2 });
    bulk(out, b"id");
    integer(out, 1);
    for (name, value) in [("mode", "standalone"), ("role", "master")] {
        bulk(out, name.as_bytes());
        bulk(out, value.as_bytes());
    }
    bulk(out, b"modules");
    array(out, 0);
    Ok(())
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]` (`keyspace.rs`).
fn scan(args: &[&[u8]], store: &mut dyn Store, out: &mut Out<'_>) -> Result<(), Failed> {
    let cursor = std::str::from_utf8(args[1]).ok().filter(|c| c.parse::<u64>().is_ok());
    let Some(cursor) = cursor else { return Err(Failed("invalid cursor".into())) };
    let options = keyspace::scan_options(&args[2..]).map_err(Failed)?;
    let (page, next) = store.list_keys((cursor != "0").then_some(cursor))?;
    let keys: Vec<Vec<u8>> = page
        .iter()
        .map(|key| keyspace::client_key(key))
        .filter(|key| options.strings && options.pattern.is_none_or(|pattern| keyspace::glob(pattern, key)))
        .collect();
    array(out, 2);
    bulk(out, next.as_deref().unwrap_or("0").as_bytes());
    array(out, keys.len());
    keys.iter().for_each(|key| bulk(out, key));
    Ok(())
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
fn set(args: &[&[u8]], store: &mut dyn Store, out: &mut Out<'_>) -> Result<(), Failed> {
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    // The unit in ms, whether relative, and the argument.
    let mut expire: Option<(i64, bool, &[u8])> = None;
    let mut j = 3;
    while j < args.len() {
        let opt = args[j];
        let next = args.get(j + 1);
        if is(opt, "nx") && !xx {
            nx = true;
        } else if is(opt, "xx") && !nx {
            xx = true;
        } else if is(opt, "get") {
            get = true;
        } else if is(opt, "keepttl") && expire.is_none() {
            keep_ttl = true;
        } else if let (Some(next), false, None) = (next, keep_ttl, expire) {
            let unit = if is(opt, "ex") {
                (1000, true)
            } else if is(opt, "px") {
                (1, true)
            } else if is(opt, "exat") {
                (1000, false)
            } else if is(opt, "pxat") {
                (1, false)
            } else {
                return Err(Failed(SYNTAX.into()));
            };
            expire = Some((unit.0, unit.1, next));
            j += 1;
        } else {
            return Err(Failed(SYNTAX.into()));
        }
        j += 1;
    }
    let mut deadline = 0;
    if let Some((unit, relative, when)) = expire {
        let when = int_arg(when)?;
        deadline = deadline_of(store, when, unit, relative)
            .ok_or_else(|| Failed("invalid expire time in 'set' command".into()))?;
    }
    let key = store_key(args[1]);
    if !(nx || xx || get || keep_ttl) {
        return write(store, &key, args[2], deadline).map(|()| ok(out));
    }
    // Whether it wrote, and the old value.
    let (written, old) = update(store, &key, |old| {
        let skip = (nx && old.is_some()) || (xx && old.is_none());
        let deadline = if keep_ttl { old.map_or(0, |(d, _)| d) } else { deadline };
        let old_value = old.map(|(_, value)| value.to_vec());
        Ok(((!skip).then(|| (args[2].to_vec(), deadline)), (!skip, old_value)))
    })?;
    match (get, old) {
        (true, Some(value)) => bulk(out, &value),
        (true, None) => nil(out),
        (false, _) if written => ok(out),
        (false, _) => nil(out),
    }
    Ok(())
}

/// `EXPIRE key seconds [NX|XX|GT|LT]`, `PEXPIRE` in milliseconds.
fn expire(command: &str, args: &[&[u8]], store: &mut dyn Store, out: &mut Out<'_>) -> Result<(), Failed> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        if is(opt, "nx") {
            nx = true;
        } else if is(opt, "xx") {
            xx = true;
        } else if is(opt, "gt") {
            gt = true;
        } else if is(opt, "lt") {
            lt = true;
        } else {
            let mut message = b"Unsupported option ".to_vec();
            message.extend_from_slice(opt);
            return Err(Failed(String::from_utf8_lossy(&message).into_owned()));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Failed("NX and XX, GT or LT options at the same time are not compatible".into()));
    }
    if gt && lt {
        return Err(Failed("GT and LT options at the same time are not compatible".into()));
    }
    let when = int_arg(args[2])?;
    let invalid = || Failed(format!("invalid expire time in '{command}' command"));
    let mut ms = when;
    if command == "expire" {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return Err(invalid());
        }
        ms = when * 1000;
    }
    let now = store.now_ms() as i64;
    if ms > i64::MAX - now {
        return Err(invalid());
    }
    let deadline = ms + now;
    let key = store_key(args[1]);
    let set = update(store, &key, |old| {
        let Some((current, value)) = old else { return Ok((None, 0)) };
        // No expiry counts as an infinite TTL for GT and LT.
        let skip = (nx && current != 0)
            || (xx && current == 0)
            || (gt && (current == 0 || deadline <= current as i64))
            || (lt && current != 0 && deadline >= current as i64);
        if skip {
            return Ok((None, 0));
        }
        // A deadline already past deletes the key, as redis-server does:
        // stored as expired (1 ms past the epoch), it reads as missing and
        // is deleted by the next read.
        Ok((Some((value.to_vec(), deadline.max(1) as u64)), 1))
    })?;
    integer(out, set);
    Ok(())
}

/// `INCRBY key delta` and the others: one atomic `increment` when the store
/// can read the value (a missing key or a plain counter), else (a counter
/// with a TTL, a value that is not a number, a sum past `i64`) a
/// compare-and-swap loop that gives redis-server's answer.
fn increment(store: &mut dyn Store, key: &[u8], delta: i64) -> Result<i64, Failed> {
    let key = store_key(key);
    if let Ok(n) = store.increment(&key, delta) {
        return Ok(n);
    }
    update(store, &key, |old| {
        let (deadline, current) = match old {
            Some((deadline, value)) => (deadline, string2ll(value).ok_or_else(|| Failed(NOT_INTEGER.into()))?),
            None => (0, 0),
        };
        let new = current.checked_add(delta).ok_or_else(|| Failed(OVERFLOW.into()))?;
        Ok((Some((new.to_string().into_bytes(), deadline)), new))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Memory {
        dbs: HashMap<u32, HashMap<String, Vec<u8>>>,
        db: u32,
        now: u64,
        /// Every write fails as the host's does past `--kv-max-bytes`.
        full: bool,
        /// `get_many` calls made, and whether they fail.
        batches: usize,
        batches_fail: bool,
    }

    impl Store for Memory {
        fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.dbs.entry(self.db).or_default().get(key).cloned())
        }
        fn set_many(&mut self, entries: &[(&str, &[u8])]) -> Result<(), String> {
            self.batches += 1;
            if self.full {
                return Err("store full: a write of 9 more bytes would pass the store's bound".to_string());
            }
            entries.iter().try_for_each(|(key, value)| self.set(key, value, 0))
        }
        fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
            self.batches += 1;
            if self.batches_fail {
                return Err("batch refused".to_string());
            }
            Ok(keys.iter().map(|key| self.dbs.entry(self.db).or_default().get(*key).cloned()).collect())
        }
        fn set(&mut self, key: &str, value: &[u8], _deadline: u64) -> Result<(), String> {
            if self.full {
                return Err("store full: a write of 9 more bytes would pass the store's bound".to_string());
            }
            self.dbs.entry(self.db).or_default().insert(key.to_string(), value.to_vec());
            Ok(())
        }
        fn delete(&mut self, key: &str) -> Result<(), String> {
            self.dbs.entry(self.db).or_default().remove(key);
            Ok(())
        }
        fn increment(&mut self, key: &str, delta: i64) -> Result<i64, String> {
            let db = self.dbs.entry(self.db).or_default();
            let current = match db.get(key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(|| "not a decimal signed 64-bit integer".to_string())?,
            };
            let new = current.checked_add(delta).ok_or_else(|| "overflows 64 bits".to_string())?;
            db.insert(key.to_string(), new.to_string().into_bytes());
            Ok(new)
        }
        fn swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8], deadline: u64) -> Result<bool, String> {
            if self.full {
                return self.set(key, new, deadline).map(|()| false);
            }
            let db = self.dbs.entry(self.db).or_default();
            if db.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            db.insert(key.to_string(), new.to_vec());
            Ok(true)
        }
        fn list_keys(&mut self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), String> {
            let mut keys: Vec<String> = self.dbs.entry(self.db).or_default().keys().cloned().collect();
            keys.sort();
            let start: usize = cursor.map_or(0, |c| c.parse().unwrap());
            let page: Vec<String> = keys.iter().skip(start).take(2).cloned().collect();
            let next = start + page.len();
            Ok((page, (next < keys.len()).then(|| next.to_string())))
        }
        fn select(&mut self, db: u32) -> Result<(), String> {
            self.db = db;
            Ok(())
        }
        fn now_ms(&mut self) -> u64 {
            self.now
        }
    }

    fn memory() -> Memory {
        Memory { now: 1_700_000_000_000, ..Default::default() }
    }

    #[test]
    fn dbsize_keys_and_scan_page_through_the_store() {
        let mut store = memory();
        talk(&mut store, b"mset user:1 a user:2 b session:1 c\r\n");
        assert_eq!(text(talk(&mut store, b"dbsize\r\n")), ":3\r\n");
        assert_eq!(text(talk(&mut store, b"keys user:*\r\n")), "*2\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n");
        // Pages of two (the test store's): the cursor leads on, `0` ends.
        assert_eq!(text(talk(&mut store, b"scan 0\r\n")), "*2\r\n$1\r\n2\r\n*2\r\n$9\r\nsession:1\r\n$6\r\nuser:1\r\n");
        assert_eq!(
            text(talk(&mut store, b"scan 2 match user:* count 10\r\n")),
            "*2\r\n$1\r\n0\r\n*1\r\n$6\r\nuser:2\r\n"
        );
        assert_eq!(text(talk(&mut store, b"scan 0 type hash\r\n")), "*2\r\n$1\r\n2\r\n*0\r\n");
        assert_eq!(
            text(talk(&mut store, b"scan x\r\nscan 0 count\r\n")),
            "-ERR invalid cursor\r\n-ERR syntax error\r\n"
        );
    }

    #[test]
    fn a_full_store_replies_as_redis_server_under_maxmemory() {
        let mut store = memory();
        talk(&mut store, b"set k v\r\n");
        store.full = true;
        let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
        assert_eq!(
            text(talk(&mut store, b"set k2 v\r\nget k\r\nappend k x\r\nsetnx k3 v\r\ndel k\r\nget k\r\n")),
            format!("{oom}$1\r\nv\r\n{oom}{oom}:1\r\n$-1\r\n")
        );
    }

    /// Feeds `input` in one piece, returns the replies.
    fn talk(store: &mut Memory, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Session::new().feed(input, store, &mut out);
        out
    }

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    /// A pipelined run of plain SETs is one `set_many`, answered as one SET
    /// at a time would be, clearing a TTL as SET does; a run broken by a SET
    /// with options; a full store gives each its own OOM reply.
    #[test]
    fn a_run_of_sets_is_one_batch_with_the_same_replies() {
        let mut store = memory();
        talk(&mut store, b"SET t 0 EX 100\r\n");
        let replies = talk(&mut store, b"SET a 1\r\nset b 2\r\nSET t 3\r\nSET c 4 NX\r\nSET d 5\r\nGET t\r\nTTL t\r\n");
        assert_eq!(text(replies), "+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n$1\r\n3\r\n:-1\r\n");
        assert_eq!(store.batches, 1, "the run of three, then two single SETs");
        store.full = true;
        let replies = talk(&mut store, b"SET x 1\r\nSET y 2\r\n");
        assert_eq!(text(replies), String::from_utf8(OOM.repeat(2)).unwrap());
        assert_eq!(store.batches, 2);
    }

    /// A pipelined run of GETs is one `get_many`, answered as one GET at a
    /// time would be: missing keys nil, an expired key nil (and deleted),
    /// the run broken by another command; if the batch fails, each GET is
    /// read on its own.
    #[test]
    fn a_run_of_gets_is_one_batch_with_the_same_replies() {
        for fail in [false, true] {
            let mut store = memory();
            store.batches_fail = fail;
            talk(&mut store, b"SET a 1\r\nSET b 2\r\nPSETEX e 10 x\r\n");
            store.now += 20;
            store.batches = 0;
            let replies = talk(
                &mut store,
                b"GET a\r\nGET missing\r\nget b\r\n*2\r\n$3\r\nGET\r\n$1\r\ne\r\nSET c 3\r\nGET c\r\nGET a\r\n",
            );
            assert_eq!(
                text(replies),
                "$1\r\n1\r\n$-1\r\n$1\r\n2\r\n$-1\r\n+OK\r\n$1\r\n3\r\n$1\r\n1\r\n",
                "fail: {fail}"
            );
            assert_eq!(store.batches, 2, "fail: {fail}");
            assert!(!store.dbs[&0].contains_key("e"), "the expired key is deleted");
        }
    }

    /// The digits-only fast path of `header` reads what `string2ll` reads.
    #[test]
    fn headers_read_numbers_as_string2ll() {
        for number in [
            "0",
            "1",
            "12",
            "01",
            "007",
            "-1",
            "-0",
            "123456789012345678",
            "1234567890123456789",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999",
            "1a",
            "",
        ] {
            let line = format!("${number}\r\nx");
            let expected = Ok(Some((string2ll(number.as_bytes()), number.len() + 3)));
            assert_eq!(header(line.as_bytes(), 0), expected, "{number}");
        }
        assert_eq!(header(b"$12\r", 0), Ok(None));
        assert_eq!(header(b"$12", 0), Ok(None));
    }

    /// What the one-pass reader of short requests reads, the general
    /// reader reads the same; what it leaves, the general reader handles.
    #[test]
    fn short_requests_read_as_the_general_reader_does() {
        let read: &[&[u8]] = &[
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"*3\r\n$3\r\nset\r\n$0\r\n\r\n$10\r\n0123456789\r\n*1",
            b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n",
            // The bytes after a header's `\r` and after the data are skipped
            // unread, as redis-server skips them.
            b"*2\r\n$3\rxGETxx$1\r\nk\r\n",
        ];
        for &request in read {
            let (args, used) = parse_short(request).expect("short");
            assert_eq!(parse_multibulk(request), Parsed::Command(args, used), "{request:?}");
        }
        let left: &[&[u8]] = &[
            b"*5\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n",
            b"*0\r\n",
            b"*-1\r\n",
            b"*02\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r",
            b"*2\r\n$3\r\nGET\r\n$-1\r\n",
            b"*2\r\n$3\r\nGET\r\n+1\r\nk\r\n",
            b"*2\r\n$3\r\nGET\r\n$1234567890\r\n",
            b"*2\r\n$3\r\nGET\r\n$9999999\r\n",
            b"*2\r\n$3\r\nGET\r\n$1",
            b"*2\r",
        ];
        for &request in left {
            assert_eq!(parse_short(request), None, "{request:?}");
        }
    }

    #[test]
    fn commands_are_found_in_any_case() {
        for &(name, arity) in COMMANDS {
            assert_eq!(lookup(name.as_bytes()), Some(&(name, arity)));
            assert_eq!(lookup(name.to_uppercase().as_bytes()), Some(&(name, arity)));
        }
        for name in [&b""[..], b"ge", b"gett", b"get\0", b"\0get", b"incrbyfloat", b"getsetx"] {
            assert_eq!(lookup(name), None, "{name:?}");
        }
    }

    #[test]
    fn string2ll_is_redis_strict() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-12"), Some(-12));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-0", b"007", b"+1", b" 1", b"1 ", b"9223372036854775808", b"1a", b"-"] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoding_round_trips_and_keeps_counters_plain() {
        for (value, deadline) in [(&b"42"[..], 0), (b"abc", 0), (b"", 0), (b"\0x", 0), (b"007", 0), (b"5", 99)] {
            let stored = encode(value, deadline);
            assert_eq!(decode(&stored), (deadline, value));
        }
        assert_eq!(&*encode(b"42", 0), b"42");
        assert_eq!(&*encode(b"-3", 0), b"-3");
        for not_plain in [&b"007"[..], b"+1", b"-0", b"-007"] {
            assert_eq!(encode(not_plain, 0)[0], TAG, "{not_plain:?}");
        }
        // The store reads neither as an `i64`, as redis-server does not.
        assert_eq!(&*encode(b"18446744073709551615", 0), b"18446744073709551615");
    }

    #[test]
    fn keys_map_to_store_keys_without_collisions() {
        assert_eq!(store_key(b"user:1"), "user:1");
        assert_eq!(store_key(b"\xff"), "\0ff");
        assert_eq!(store_key(b"\0ff"), "\x00006666");
    }

    #[test]
    fn strings_and_counters() {
        let mut store = memory();
        let out = talk(
            &mut store,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\nGET k\r\nincr n\r\nincrby n 10\r\ndecrby n 20\r\nincr n\r\n\
              append k xy\r\nstrlen k\r\nmset a 1 b 2\r\nmget a b c\r\nexists a b c a\r\ndel a c\r\nincr k\r\n",
        );
        assert_eq!(
            text(out),
            "+OK\r\n$2\r\nv1\r\n:1\r\n:11\r\n:-9\r\n:-8\r\n:4\r\n:4\r\n+OK\r\n*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n\
             :3\r\n:1\r\n-ERR value is not an integer or out of range\r\n"
        );
    }

    #[test]
    fn increments_past_i64_are_refused_and_undone() {
        let mut store = memory();
        let out = talk(
            &mut store,
            b"set n 9223372036854775806\r\nincr n\r\nincr n\r\nget n\r\ndecrby n -9223372036854775808\r\n",
        );
        assert_eq!(
            text(out),
            "+OK\r\n:9223372036854775807\r\n-ERR increment or decrement would overflow\r\n\
             $19\r\n9223372036854775807\r\n-ERR decrement would overflow\r\n"
        );
    }

    #[test]
    fn expiry_is_lazy_and_ttl_rounds() {
        let mut store = memory();
        assert_eq!(
            text(talk(&mut store, b"set k v EX 10\r\nttl k\r\npttl k\r\nincr k\r\n")),
            "+OK\r\n:10\r\n:10000\r\n-ERR value is not an integer or out of range\r\n"
        );
        store.now += 9_400;
        assert_eq!(text(talk(&mut store, b"ttl k\r\nget k\r\n")), ":1\r\n$1\r\nv\r\n");
        store.now += 600;
        assert_eq!(text(talk(&mut store, b"get k\r\nttl k\r\nexists k\r\n")), "$-1\r\n:-2\r\n:0\r\n");
        assert!(store.dbs[&0].is_empty(), "the expired key is deleted");
        // INCR keeps the TTL; SET drops it; EXPIRE in the past deletes.
        assert_eq!(
            text(talk(
                &mut store,
                b"set c 5 px 5000\r\nincr c\r\npttl c\r\nset c 1\r\nttl c\r\nexpire c -1\r\nexists c\r\n"
            )),
            "+OK\r\n:6\r\n:5000\r\n+OK\r\n:-1\r\n:1\r\n:0\r\n"
        );
    }

    #[test]
    fn set_options() {
        let mut store = memory();
        let out = talk(
            &mut store,
            b"set k v NX\r\nset k w NX\r\nset k w XX GET\r\nset q v XX\r\nset k v EX 10 PX 10\r\nset k v EX abc\r\n\
              set k v EX 0\r\nset k v NX XX\r\nset k v foo\r\nsetnx k z\r\nsetnx z z\r\ngetset k n\r\nset k v KEEPTTL GET\r\n",
        );
        assert_eq!(
            text(out),
            "+OK\r\n$-1\r\n$1\r\nv\r\n$-1\r\n-ERR syntax error\r\n-ERR value is not an integer or out of range\r\n\
             -ERR invalid expire time in 'set' command\r\n-ERR syntax error\r\n-ERR syntax error\r\n:0\r\n:1\r\n\
             $1\r\nw\r\n$1\r\nn\r\n"
        );
    }

    #[test]
    fn errors_are_redis_errors() {
        let mut store = memory();
        let out = talk(&mut store, b"foo a b\r\nget\r\nGET a b\r\nping a b\r\nselect 1\r\nselect 16\r\n");
        assert_eq!(
            text(out),
            "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n\
             -ERR wrong number of arguments for 'get' command\r\n-ERR wrong number of arguments for 'get' command\r\n\
             -ERR wrong number of arguments for 'ping' command\r\n+OK\r\n-ERR DB index is out of range\r\n"
        );
        let long = format!("foo {}\r\n", "x ".repeat(100));
        let reply = text(talk(&mut store, long.as_bytes()));
        assert!(reply.starts_with("-ERR unknown command 'foo', with args beginning with: 'x' 'x' "), "{reply}");
    }

    #[test]
    fn inline_quotes_like_redis() {
        assert_eq!(split_args(br#"set "a b" "x\x41y\n" 'it\'s'"#).unwrap(), [&b"set"[..], b"a b", b"xAy\n", b"it's"]);
        assert_eq!(split_args(b"  ").unwrap(), Vec::<Vec<u8>>::new());
        assert!(split_args(b"echo \"open").is_none());
        assert!(split_args(b"echo \"a\"b").is_none());
    }

    #[test]
    fn protocol_errors_close_after_the_earlier_replies() {
        let mut store = memory();
        for (input, reply) in [
            (&b"PING\r\n*2\r\n$3\r\nGET\r\n$-5\r\n"[..], "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
            (b"*2\r\n$3\r\nGET\r\n$99999999999\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
            (b"*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*99999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*2\r\n+3\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"),
            (b"echo \"x\r\nPING\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
        ] {
            let mut out = Vec::new();
            assert_eq!(Session::new().feed(input, &mut store, &mut out), After::Close);
            assert_eq!(text(out), reply);
        }
    }

    #[test]
    fn requests_split_anywhere_and_pipelined() {
        let mut store = memory();
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\n*0\r\n*1\r\n$4\r\nPING\r\n";
        let expected = "+OK\r\n$5\r\nhello\r\n+PONG\r\n+PONG\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let mut session = Session::new();
            let mut out = Vec::new();
            for chunk in input.chunks(step) {
                assert_eq!(session.feed(chunk, &mut store, &mut out), After::Continue);
            }
            assert_eq!(text(out), expected, "chunks of {step}");
        }
    }

    #[test]
    fn binary_values_of_a_mebibyte() {
        let mut store = memory();
        let value: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 256) as u8).collect();
        let mut request = b"*3\r\n$3\r\nSET\r\n$4\r\nb\xffin\r\n".to_vec();
        request.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\n*2\r\n$3\r\nGET\r\n$4\r\nb\xffin\r\n");
        let mut session = Session::new();
        let mut out = Vec::new();
        for chunk in request.chunks(65536) {
            session.feed(chunk, &mut store, &mut out);
        }
        let mut expected = format!("+OK\r\n${}\r\n", value.len()).into_bytes();
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\n");
        assert!(out == expected);
    }

    #[test]
    fn hello_switches_to_resp3() {
        let mut store = memory();
        let mut session = Session::new();
        let mut out = Vec::new();
        session.feed(b"HELLO 4\r\nHELLO x\r\nHELLO 2 foo\r\nHELLO 3 SETNAME me\r\n", &mut store, &mut out);
        let reply = text(std::mem::take(&mut out));
        assert!(
            reply.starts_with(
                "-NOPROTO unsupported protocol version\r\n-ERR Protocol version is not an integer or out of range\r\n\
                 -ERR Syntax error in HELLO option 'foo'\r\n%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"
            ),
            "{reply}"
        );
        session.feed(b"GET nope\r\nMGET nope\r\nCONFIG GET save\r\nHELLO 2\r\nGET nope\r\n", &mut store, &mut out);
        let reply = text(out);
        assert!(reply.starts_with("_\r\n*1\r\n_\r\n%1\r\n$4\r\nsave\r\n$0\r\n\r\n*14\r\n"), "{reply}");
        assert!(reply.ends_with("$-1\r\n"), "{reply}");
    }

    #[test]
    fn startup_commands_of_clients() {
        let mut store = memory();
        let out = talk(&mut store, b"CONFIG GET save\r\nCONFIG GET appendonly\r\nCOMMAND DOCS\r\nCLIENT SETINFO lib-name x\r\nquit\r\nping\r\n");
        assert_eq!(
            text(out),
            "*2\r\n$4\r\nsave\r\n$0\r\n\r\n*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n*0\r\n+OK\r\n+OK\r\n"
        );
    }

    /// A store where another connection writes `key` (the stored bytes
    /// `theirs`) just before the first swap on it, which therefore fails.
    struct Racing {
        inner: Memory,
        race: Option<(String, Vec<u8>)>,
        swaps: usize,
    }

    impl Store for Racing {
        fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], deadline: u64) -> Result<(), String> {
            self.inner.set(key, value, deadline)
        }
        fn delete(&mut self, key: &str) -> Result<(), String> {
            self.inner.delete(key)
        }
        fn increment(&mut self, key: &str, delta: i64) -> Result<i64, String> {
            self.inner.increment(key, delta)
        }
        fn swap(&mut self, key: &str, expected: Option<&[u8]>, new: &[u8], deadline: u64) -> Result<bool, String> {
            self.swaps += 1;
            if let Some((_, theirs)) = self.race.take_if(|(k, _)| k == key) {
                self.inner.set(key, &theirs, 0)?;
            }
            self.inner.swap(key, expected, new, deadline)
        }
        fn list_keys(&mut self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), String> {
            self.inner.list_keys(cursor)
        }
        fn select(&mut self, db: u32) -> Result<(), String> {
            self.inner.select(db)
        }
        fn now_ms(&mut self) -> u64 {
            self.inner.now_ms()
        }
    }

    /// Runs `input` on a store holding `before` (stored bytes), where
    /// another connection writes `theirs` to `key` just before the first
    /// swap; returns the replies, the bytes stored at the end and the swaps.
    fn race(before: &[(&str, &[u8])], theirs: &[u8], input: &[u8]) -> (String, Option<Vec<u8>>, usize) {
        let mut inner = memory();
        for (key, value) in before {
            inner.set(key, value, 0).unwrap();
        }
        let mut store = Racing { inner, race: Some(("k".to_string(), theirs.to_vec())), swaps: 0 };
        let mut out = Vec::new();
        Session::new().feed(input, &mut store, &mut out);
        (text(out), store.inner.get("k").unwrap(), store.swaps)
    }

    #[test]
    fn read_then_write_commands_retry_when_another_writes_in_between() {
        // Each loses nothing of the other connection's write: the command
        // is computed again on it.
        assert_eq!(race(&[("k", b"a")], b"xy", b"append k b\r\n"), (":3\r\n".into(), Some(b"xyb".to_vec()), 2));
        assert_eq!(race(&[], b"theirs", b"setnx k mine\r\n"), (":0\r\n".into(), Some(b"theirs".to_vec()), 1));
        assert_eq!(race(&[], b"theirs", b"set k mine NX\r\n"), ("$-1\r\n".into(), Some(b"theirs".to_vec()), 1));
        assert_eq!(
            race(&[("k", b"old")], b"new", b"getset k mine\r\n"),
            ("$3\r\nnew\r\n".into(), Some(b"mine".to_vec()), 2)
        );
        assert_eq!(
            race(&[("k", b"old")], b"new", b"set k mine XX GET\r\n"),
            ("$3\r\nnew\r\n".into(), Some(b"mine".to_vec()), 2)
        );
        // A counter with a TTL is not the store's `increment`: DECR swaps.
        let ttl = encode(b"5", 1_800_000_000_000).into_owned();
        let theirs = encode(b"10", 1_800_000_000_000).into_owned();
        let (replies, stored, swaps) = race(&[("k", &ttl)], &theirs, b"decr k\r\n");
        assert_eq!((replies.as_str(), swaps), (":9\r\n", 2));
        assert_eq!(decode(&stored.unwrap()), (1_800_000_000_000, &b"9"[..]));
        // EXPIRE and PERSIST keep the value the other connection wrote.
        let (replies, stored, _) = race(&[("k", b"v")], b"w", b"expire k 100\r\n");
        assert_eq!(replies, ":1\r\n");
        assert_eq!(decode(&stored.unwrap()), (1_700_000_100_000, &b"w"[..]));
        let (replies, stored, _) = race(&[("k", &ttl)], &theirs, b"persist k\r\n");
        assert_eq!((replies.as_str(), stored.as_deref()), (":1\r\n", Some(&b"10"[..])));
        // An empty value written meanwhile still exists for XX.
        let (replies, _, _) = race(&[("k", b"v")], b"", b"set k w XX\r\n");
        assert_eq!(replies, "+OK\r\n");
    }

    #[test]
    fn counters_use_the_stores_signed_increment() {
        let mut store = memory();
        assert_eq!(text(talk(&mut store, b"decr n\r\ndecrby n 5\r\nincr n\r\n")), ":-1\r\n:-6\r\n:-5\r\n");
        assert_eq!(store.get("n").unwrap().as_deref(), Some(&b"-5"[..]));
        // A value the store would read but redis-server would not.
        assert_eq!(
            text(talk(&mut store, b"set z 007\r\nincr z\r\n")),
            "+OK\r\n-ERR value is not an integer or out of range\r\n"
        );
    }
}
