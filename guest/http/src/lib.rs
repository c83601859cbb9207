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
//! connection is closed, as RFC 9112 asks. Request heads are parsed by
//! `httparse`.
//!
//! A request head must arrive within `HEAD_TIMEOUT` (like nginx's
//! `client_header_timeout`), else `408 Request Timeout` and the connection
//! closes: a client that sends a head a byte at a time cannot hold an
//! instance for long.

use netplug_guest::log::{log, Level};
use netplug_guest::{Connection, ReadHalf, Transport, WriteHalf};
use std::io::{self, BufRead, Write};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

const BODY: &[u8] = b"Hello, World!\n";
/// The largest request line plus headers accepted (431 beyond it).
const MAX_HEAD: usize = 8 * 1024;
/// The most header lines a head may have (431 beyond it).
const MAX_HEADERS: usize = 100;
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

fn handle(mut conn: Connection) -> Result<(), String> {
    serve(&mut conn).map_err(|e| format!("connection failed: {e}"))
}

netplug_guest::serve!(handle);

/// One parsed request head: what the response depends on.
#[derive(Debug)]
struct Request {
    keep_alive: bool,
    /// A HEAD request gets the headers of a GET without the body.
    head_only: bool,
    /// HTTP/1.0 clients must be told explicitly that the connection stays.
    http10: bool,
    body_len: usize,
}

/// An error status and why it was sent (for the log).
#[derive(Debug)]
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

/// What answering the requests at the start of a buffer came to.
enum Step {
    /// Every complete request is answered; this many bytes are used, and
    /// the rest (if any) is the start of the next head.
    More(usize),
    /// A request asked to close: send what is answered and close.
    Close,
    /// A request that cannot be framed.
    Refuse(Reject),
}

/// Per connection: the bytes a `recv` returns are parsed where they are
/// (the list the host returned, lent by `fill_buf`); only the start of a
/// head cut off by the end of a `recv` is copied, to be completed by the
/// next ones.
fn serve<T: Transport>(conn: &mut Connection<T>) -> io::Result<()> {
    conn.set_recv_size(CHUNK);
    let (mut rx, tx) = conn.halves();
    // The start of a head that the last `recv` ended in.
    let mut partial: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    // Body bytes of the current request still to be read and discarded.
    let mut skip = 0usize;
    // When the current request head's clock started (`HEAD_TIMEOUT`); none
    // between requests of a kept-alive connection.
    let mut head_since = Some(Instant::now());
    loop {
        if !out.is_empty() {
            tx.send(&out)?;
            out.clear();
        }
        let data = match rx.fill_buf() {
            Ok(data) => data,
            // Between requests a client may close, reset or idle out: that
            // ends a keep-alive connection normally (the host logs idling).
            Err(e)
                if partial.is_empty()
                    && skip == 0
                    && matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::TimedOut
                    ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        if data.is_empty() {
            // The client closed; a request cut short is dropped unanswered.
            return Ok(());
        }
        let received = data.len();
        let step = if partial.is_empty() {
            let step = answer(data, &mut skip, &mut out, &mut head_since);
            if let Step::More(used) = step {
                partial.extend_from_slice(&data[used..]);
            }
            step
        } else {
            partial.extend_from_slice(data);
            let step = answer(&partial, &mut skip, &mut out, &mut head_since);
            if let Step::More(used) = step {
                partial.drain(..used);
            }
            step
        };
        rx.consume(received);
        match step {
            Step::More(_) => {}
            // Whatever the client sent after this request is not answered.
            Step::Close => return tx.send(&out),
            Step::Refuse(r) => return refuse(&mut rx, tx, &mut out, r),
        }
        if partial.len() > MAX_HEAD {
            return refuse(
                &mut rx,
                tx,
                &mut out,
                reject("431 Request Header Fields Too Large", "request head over 8 KiB"),
            );
        }
        if skip == 0 && !partial.is_empty() {
            // Part of a head is here: its first byte came with the last recv
            // at the latest.
            let since = *head_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= HEAD_TIMEOUT {
                let why =
                    format!("request head incomplete after {}s ({} bytes)", HEAD_TIMEOUT.as_secs(), partial.len());
                // No lingering: a client this slow would hold the instance
                // for as long again.
                let r = Reject { level: Level::Warn, linger: false, ..reject("408 Request Timeout", why) };
                return refuse(&mut rx, tx, &mut out, r);
            }
        }
    }
}

/// Answers, into `out`, every complete request at the start of `buf` (after
/// the `skip` bytes of a body still to discard).
fn answer(buf: &[u8], skip: &mut usize, out: &mut Vec<u8>, head_since: &mut Option<Instant>) -> Step {
    let mut start = 0;
    loop {
        let discard = (*skip).min(buf.len() - start);
        start += discard;
        *skip -= discard;
        if *skip > 0 || start == buf.len() {
            return Step::More(start);
        }
        match parse(&buf[start..]) {
            Ok(None) => return Step::More(start),
            Ok(Some((req, len))) => {
                start += len;
                *skip = req.body_len;
                *head_since = None;
                respond(out, &req);
                if !req.keep_alive {
                    return Step::Close;
                }
            }
            Err(r) => return Step::Refuse(r),
        }
    }
}

/// Parses one request head at the start of `buf`: the request and the
/// head's length, or `None` while it is incomplete.
fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, Reject> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error(buf, e)),
    };
    // The head without its final empty line.
    if len > MAX_HEAD + 4 {
        return Err(reject("431 Request Header Fields Too Large", "request head over 8 KiB"));
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(malformed_request_line(buf));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(malformed_request_line(buf));
    }
    let http10 = req.version == Some(0);
    let mut keep_alive = !http10;
    let mut body_len: Option<usize> = None;
    let mut has_host = false;
    for header in req.headers.iter() {
        let (name, value) = (header.name, trim(header.value));
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_length(value).ok_or_else(|| reject("400 Bad Request", "invalid Content-Length"))?;
            if body_len.is_some_and(|l| l != len) {
                return Err(reject("400 Bad Request", "conflicting Content-Length headers"));
            }
            body_len = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(reject("501 Not Implemented", "Transfer-Encoding request bodies are not supported"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            has_host = true;
        }
    }
    if !http10 && !has_host {
        return Err(reject("400 Bad Request", "HTTP/1.1 request without a Host header"));
    }
    let req = Request { keep_alive, head_only: method == "HEAD", http10, body_len: body_len.unwrap_or(0) };
    Ok(Some((req, len)))
}

/// Why `httparse` refused the head at the start of `buf`, as a status.
fn parse_error(buf: &[u8], e: httparse::Error) -> Reject {
    match e {
        httparse::Error::Version => {
            // A well-formed request line of another version is 505; a line
            // that only looks wrong there is 400.
            let line = first_line(buf);
            let mut parts = line.split(|&b| b == b' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(_), Some(_), Some(v), None) if v.starts_with(b"HTTP/") => {
                    reject("505 HTTP Version Not Supported", format!("version {}", v.escape_ascii()))
                }
                (Some(_), Some(_), Some(v), None) => {
                    reject("400 Bad Request", format!("not an HTTP version: {:?}", v.escape_ascii().to_string()))
                }
                _ => malformed_request_line(buf),
            }
        }
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            reject("400 Bad Request", "malformed header line")
        }
        httparse::Error::TooManyHeaders => {
            reject("431 Request Header Fields Too Large", format!("more than {MAX_HEADERS} header lines"))
        }
        _ => malformed_request_line(buf),
    }
}

fn malformed_request_line(buf: &[u8]) -> Reject {
    reject("400 Bad Request", format!("malformed request line {:?}", first_line(buf).escape_ascii().to_string()))
}

/// The request line (what has arrived of it), without its line end, at
/// most 200 bytes of it.
fn first_line(buf: &[u8]) -> &[u8] {
    let line = &buf[..buf.len().min(200)];
    let line = line.iter().position(|&b| b == b'\n').map_or(line, |end| &line[..end]);
    line.strip_suffix(b"\r").unwrap_or(line)
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
fn refuse<T: Transport>(
    rx: &mut ReadHalf<'_, T>,
    tx: WriteHalf<'_, T>,
    out: &mut Vec<u8>,
    r: Reject,
) -> io::Result<()> {
    log!(r.level, "{}: {}", r.status, r.why);
    let reason = r.status.split_once(' ').map_or(r.status, |(_, reason)| reason);
    write!(
        out,
        "HTTP/1.1 {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        r.status,
        reason.len() + 1
    )?;
    tx.send(out)?;
    tx.shutdown()?;
    if !r.linger {
        return Ok(());
    }
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match rx.fill_buf() {
            Ok(data) if !data.is_empty() => {
                let n = data.len();
                drained += n;
                rx.consume(n);
            }
            _ => break,
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::serve;
    use netplug_guest::testing::{MemoryConnection, MemoryTransport};
    use netplug_guest::{Connection, ErrorCode};

    const OK_BODY: &str = "Hello, World!\n";

    /// Serves a connection whose client sends `chunks` then closes; the
    /// reply as text, and whether the server shut its write side.
    fn exchange<const N: usize>(chunks: [&[u8]; N]) -> (String, bool) {
        let mut conn = MemoryConnection::with_input(chunks);
        serve(&mut conn).unwrap();
        let t = conn.transport();
        (String::from_utf8(t.output()).unwrap(), t.is_shut_down())
    }

    #[test]
    fn a_get_is_answered_and_the_connection_kept() {
        let (reply, shut) = exchange([b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"]);
        assert_eq!(
            reply,
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n\r\n{OK_BODY}")
        );
        assert!(!shut);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_bodies_skipped() {
        let (reply, _) = exchange([
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloHEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /unanswered HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(reply.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{reply}");
        assert_eq!(reply.matches(OK_BODY).count(), 2, "{reply}");
        assert!(reply.ends_with(&format!("connection: close\r\n\r\n{OK_BODY}")), "{reply}");
    }

    #[test]
    fn a_head_and_a_body_cut_anywhere_are_reassembled() {
        let request = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: t\r\n\r\n";
        for cut in 1..request.len() {
            let (reply, _) = exchange([&request[..cut], &request[cut..]]);
            assert_eq!(reply.matches(OK_BODY).count(), 2, "cut at {cut}: {reply}");
        }
        let bytes: Vec<&[u8]> = request.chunks(1).collect();
        let mut conn = MemoryConnection::with_input(bytes);
        serve(&mut conn).unwrap();
        assert_eq!(String::from_utf8(conn.transport().output()).unwrap().matches(OK_BODY).count(), 2);
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        let (plain, _) = exchange([b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(plain.matches("200 OK").count(), 1, "{plain}");
        assert!(plain.contains("connection: close\r\n"), "{plain}");
        let (both, _) = exchange([b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(both.matches("200 OK").count(), 2, "{both}");
        assert!(both.contains("connection: keep-alive\r\n"), "{both}");
    }

    #[test]
    fn requests_it_cannot_frame_get_an_error_status_and_a_close() {
        let huge_header = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "b".repeat(10_000));
        let many_headers = format!("GET / HTTP/1.1\r\nHost: t\r\n{}\r\n", "A: b\r\n".repeat(200));
        let cases: [(&[u8], &str); 12] = [
            (b"GARBAGE\r\n\r\n", "400 Bad Request"),
            (b"get / HTTP/1.1\r\nHost: t\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/1.1 x\r\nHost: t\r\n\r\n", "400 Bad Request"),
            (b"GET / FTP/1.1\r\nHost: t\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/1.1\r\nHost t\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", "505 HTTP Version Not Supported"),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "501 Not Implemented",
            ),
            (huge_header.as_bytes(), "431 Request Header Fields Too Large"),
            (many_headers.as_bytes(), "431 Request Header Fields Too Large"),
        ];
        for (request, status) in cases {
            let (reply, shut) = exchange([request]);
            assert!(reply.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{status}: {reply}");
            assert!(reply.contains("connection: close\r\n"), "{status}: {reply}");
            assert!(shut, "{status}: write side shut down");
        }
    }

    #[test]
    fn an_error_after_answered_requests_sends_both() {
        let (reply, shut) = exchange([b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n"]);
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
        assert!(shut);
    }

    #[test]
    fn closing_or_idling_out_between_requests_is_normal_but_not_mid_head() {
        for code in [ErrorCode::TimedOut, ErrorCode::Reset, ErrorCode::Closed] {
            let transport = MemoryTransport::new([b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"]).then_fail(code);
            let mut conn = Connection::new(transport);
            serve(&mut conn).unwrap();
            assert!(String::from_utf8(conn.transport().output()).unwrap().ends_with(OK_BODY));
            let transport = MemoryTransport::new([b"GET / HTTP/1.1\r\nHo"]).then_fail(code);
            let mut conn = Connection::new(transport);
            let err = serve(&mut conn).unwrap_err();
            assert_eq!(netplug_guest::error_code(&err), Some(code));
        }
        // A request cut short by the client's close is dropped unanswered.
        let (reply, _) = exchange([b"GET / HTTP/1.1\r\nHo"]);
        assert_eq!(reply, "");
    }
}
