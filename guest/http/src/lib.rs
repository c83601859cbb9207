//! HTTP/1.1 server: answers every request, whatever its method and path, with
//! `200 OK` and the body `Hello, World!`.
//!
//! Connections persist between requests (HTTP/1.1's default, or HTTP/1.0 with
//! `Connection: keep-alive`) until the client sends `Connection: close` or
//! closes, so one instance serves every request of its connection. Pipelined
//! requests are answered in order and their responses written together. A
//! body announced by `Content-Length` is read and discarded. What this server
//! cannot frame (bad syntax, a `Transfer-Encoding` body, an oversized head,
//! another HTTP version) gets the matching error status, after which the
//! connection is closed, as RFC 9112 asks.
//!
//! A request head must arrive within `HEAD_TIMEOUT` (like nginx's
//! `client_header_timeout`), else `408 Request Timeout` and the connection
//! closes: a client that sends a head a byte at a time cannot hold an
//! instance for long.

wit_bindgen::generate!({ path: "../../wit", world: "server" });

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::log::{log, Level};
use netplug::protocol::types::{Connection, ErrorCode};
use std::time::{Duration, Instant};

const BODY: &[u8] = b"Hello, World!\n";
/// The largest request line plus headers accepted (431 beyond it).
const MAX_HEAD: usize = 8 * 1024;
/// Bytes asked for per `recv`.
const CHUNK: u32 = 16 * 1024;
/// How much a closing connection reads and discards after an error response,
/// so the client's unread request does not turn the close into a reset that
/// could destroy the response before the client reads it.
const LINGER_BYTES: usize = 64 * 1024;
/// How long a request head may take to arrive in full. The clock starts when
/// the connection's first request is awaited, and for each later request at
/// its first byte: the wait between requests of a kept-alive connection is
/// bounded by the host's `--idle-timeout`, not by this. It is checked after
/// each `recv`, so a client that trickles its head is answered 408 at the
/// first `recv` past it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

struct Http;

impl Guest for Http {
    fn handle(conn: Connection) -> Result<(), String> {
        serve(&conn).map_err(|e| format!("connection failed: {}", e.name()))
    }
}

export!(Http);

/// One parsed request head: what the response depends on.
struct Request {
    keep_alive: bool,
    /// A HEAD request gets the headers of a GET without the body.
    head_only: bool,
    /// HTTP/1.0 clients must be told explicitly that the connection stays.
    http10: bool,
    body_len: usize,
}

/// An error status and why it was sent (for the log).
struct Reject {
    status: &'static str,
    why: String,
    /// A slow client is worth a warning; a malformed request is routine.
    level: Level,
    /// Read what the client still sends before closing (see `refuse`).
    linger: bool,
}

fn reject(status: &'static str, why: impl Into<String>) -> Reject {
    Reject { status, why: why.into(), level: Level::Info, linger: true }
}

enum Parsed {
    /// The head is not complete yet.
    Incomplete,
    /// A request whose head takes this many bytes.
    Request(Request, usize),
}

fn serve(conn: &Connection) -> Result<(), ErrorCode> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    // Body bytes of the current request still to be read and discarded.
    let mut skip = 0usize;
    // When the current request head's clock started (`HEAD_TIMEOUT`); none
    // between requests of a kept-alive connection.
    let mut head_since = Some(Instant::now());
    loop {
        // Answer every complete request already buffered.
        let mut start = 0;
        loop {
            let discard = skip.min(buf.len() - start);
            start += discard;
            skip -= discard;
            if skip > 0 {
                break;
            }
            match parse(&buf[start..]) {
                Ok(Parsed::Incomplete) => break,
                Ok(Parsed::Request(req, len)) => {
                    start += len;
                    skip = req.body_len;
                    head_since = None;
                    respond(&mut out, &req);
                    if !req.keep_alive {
                        // Closing: whatever the client sent after this
                        // request is not answered.
                        return conn.send(&out);
                    }
                }
                Err(r) => return refuse(conn, &mut out, r),
            }
        }
        buf.drain(..start);
        if buf.len() > MAX_HEAD {
            return refuse(conn, &mut out, reject("431 Request Header Fields Too Large", "request head over 8 KiB"));
        }
        if skip == 0 && !buf.is_empty() {
            // Part of a head is here: its first byte came with the last recv
            // at the latest.
            let since = *head_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= HEAD_TIMEOUT {
                let why = format!("request head incomplete after {}s ({} bytes)", HEAD_TIMEOUT.as_secs(), buf.len());
                // No lingering: a client this slow would hold the instance
                // for as long again.
                let r = Reject { level: Level::Warn, linger: false, ..reject("408 Request Timeout", why) };
                return refuse(conn, &mut out, r);
            }
        }
        if !out.is_empty() {
            conn.send(&out)?;
            out.clear();
        }
        let data = match conn.recv(CHUNK) {
            Ok(data) => data,
            // Between requests a client may close, reset or idle out: that
            // ends a keep-alive connection normally (the host logs idling).
            Err(ErrorCode::Closed | ErrorCode::Reset | ErrorCode::TimedOut) if buf.is_empty() && skip == 0 => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        if data.is_empty() {
            // The client closed; a request cut short is dropped unanswered.
            return Ok(());
        }
        if buf.is_empty() {
            buf = data;
        } else {
            buf.extend_from_slice(&data);
        }
    }
}

/// Parses one request head at the start of `buf`.
fn parse(buf: &[u8]) -> Result<Parsed, Reject> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(Parsed::Incomplete);
    };
    if end > MAX_HEAD {
        return Err(reject("431 Request Header Fields Too Large", "request head over 8 KiB"));
    }
    let mut lines = buf[..end].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(
            "400 Bad Request",
            format!("malformed request line {:?}", request_line.escape_ascii().to_string()),
        ));
    };
    if method.is_empty() || !method.iter().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(reject(
            "400 Bad Request",
            format!("malformed request line {:?}", request_line.escape_ascii().to_string()),
        ));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        v if v.starts_with(b"HTTP/") => {
            return Err(reject("505 HTTP Version Not Supported", format!("version {}", v.escape_ascii())))
        }
        v => return Err(reject("400 Bad Request", format!("not an HTTP version: {:?}", v.escape_ascii().to_string()))),
    };
    let mut keep_alive = !http10;
    let mut body_len: Option<usize> = None;
    let mut has_host = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(reject("400 Bad Request", "header line without a colon"));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(reject("400 Bad Request", "malformed header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let len = parse_length(value).ok_or_else(|| reject("400 Bad Request", "invalid Content-Length"))?;
            if body_len.is_some_and(|l| l != len) {
                return Err(reject("400 Bad Request", "conflicting Content-Length headers"));
            }
            body_len = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(reject("501 Not Implemented", "Transfer-Encoding request bodies are not supported"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            has_host = true;
        }
    }
    if !http10 && !has_host {
        return Err(reject("400 Bad Request", "HTTP/1.1 request without a Host header"));
    }
    let req = Request { keep_alive, head_only: method == b"HEAD", http10, body_len: body_len.unwrap_or(0) };
    Ok(Parsed::Request(req, end + 4))
}

/// Appends the response to `req` to `out`.
fn respond(out: &mut Vec<u8>, req: &Request) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n");
    if !req.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !req.head_only {
        out.extend_from_slice(BODY);
    }
}

/// Sends what is already answered plus the error response, then closes
/// gracefully: shut down the write side and (if `r.linger`) read what the
/// client still sends, up to a bound, so the close does not reset the
/// connection.
fn refuse(conn: &Connection, out: &mut Vec<u8>, r: Reject) -> Result<(), ErrorCode> {
    log(r.level, &format!("{}: {}", r.status, r.why));
    let reason = r.status.split_once(' ').map_or(r.status, |(_, reason)| reason);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
            r.status,
            reason.len() + 1
        )
        .as_bytes(),
    );
    conn.send(out)?;
    conn.shutdown()?;
    if !r.linger {
        return Ok(());
    }
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match conn.recv(CHUNK) {
            Ok(data) if !data.is_empty() => drained += data.len(),
            _ => break,
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

/// A Content-Length value: digits only (no sign, no spaces), no overflow.
fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}
