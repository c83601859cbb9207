//! The `connection` resource: a host-owned TCP stream that a guest reads and
//! writes through `send`/`recv`, with every wait bounded and every byte
//! counted against the connection's quotas.

use crate::bindings::server::netplug::protocol::{dialer, log, types};
use crate::bindings::{ErrorCode, Level as GuestLevel};
use crate::dial::DialTarget;
use crate::guest_log::level_of;
use crate::limits::MAX_RECV;
use crate::state::GuestState;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use wasmtime::component::{Resource, ResourceTableError};

pub struct Connection {
    pub(crate) stream: TcpStream,
    peer: SocketAddr,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    write_closed: bool,
    /// Set once a send or recv failed (timed out, reset, closed...): the
    /// stream's state is then unknown (a send may have been cut short), so
    /// every later call fails at once with the same code instead of waiting
    /// again.
    pub(crate) broken: Option<ErrorCode>,
    /// Dialed by the guest (counted against its resource cap), rather than
    /// accepted by the host.
    dialed: bool,
}

impl Connection {
    pub fn accepted(stream: TcpStream, peer: SocketAddr) -> Self {
        Connection { stream, peer, bytes_in: 0, bytes_out: 0, write_closed: false, broken: None, dialed: false }
    }
}

/// Why a bounded wait ended early.
pub(crate) enum WaitEnd {
    Idle,
    Lifetime,
}

impl GuestState {
    /// How long the next wait on the peer may take, and what ends it: the
    /// idle timeout, or the connection's remaining lifetime if shorter.
    pub(crate) fn wait_budget(&self) -> (Duration, WaitEnd) {
        let idle = self.policy.limits.idle_timeout;
        match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < idle {
                    (left, WaitEnd::Lifetime)
                } else {
                    (idle, WaitEnd::Idle)
                }
            }
            None => (idle, WaitEnd::Idle),
        }
    }

    fn note(&self, level: crate::logging::Level, message: &str) {
        let log = self.log.lock().unwrap();
        crate::logging::emit(level, log.source(), message);
    }

    /// Why a send of `len` bytes must not start, if it must not: the
    /// connection is broken or shut for writing, or the bytes would pass the
    /// out quota (a send is all or nothing against the quota).
    pub(crate) fn send_refusal(&self, conn: &Resource<Connection>, len: usize) -> wasmtime::Result<Option<ErrorCode>> {
        let c = self.table.get(conn)?;
        if let Some(code) = c.broken {
            return Ok(Some(code));
        }
        if c.write_closed {
            return Ok(Some(ErrorCode::Closed));
        }
        if let Some(max) = self.policy.limits.max_bytes_out {
            if c.bytes_out + len as u64 > max {
                self.note(
                    crate::logging::Level::Warn,
                    &format!("byte quota: send of {len} bytes would pass --max-bytes-out {max}"),
                );
                return Ok(Some(ErrorCode::QuotaExceeded));
            }
        }
        Ok(None)
    }

    /// Bookkeeping after a wait on the peer that began at `started`: the
    /// wait is not guest CPU time, a failure breaks the connection, and a
    /// timeout is logged.
    pub(crate) fn after_wait(
        &mut self,
        conn: &Resource<Connection>,
        failure: Option<ErrorCode>,
        started: Instant,
        end: WaitEnd,
        what: &str,
    ) -> wasmtime::Result<()> {
        self.clock.end_wait(started);
        if let Some(code) = failure {
            self.table.get_mut(conn)?.broken = Some(code);
            if code == ErrorCode::TimedOut {
                self.report_timeout(end, what);
            }
        }
        Ok(())
    }

    /// `connection.recv` up to its first bytes: the checks and quota, the
    /// bounded wait for data, the bookkeeping. What else the socket holds is
    /// read by the caller (see `Received`).
    pub(crate) async fn recv_head(
        &mut self,
        conn: &Resource<Connection>,
        max: u32,
    ) -> wasmtime::Result<Result<Received, ErrorCode>> {
        if max == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        let (budget, end) = self.wait_budget();
        let max_in = self.policy.limits.max_bytes_in;
        let c = self.table.get_mut(conn)?;
        if let Some(code) = c.broken {
            return Ok(Err(code));
        }
        let mut want = max.min(MAX_RECV) as u64;
        if let Some(quota) = max_in {
            let left = quota.saturating_sub(c.bytes_in);
            if left == 0 {
                self.note(
                    crate::logging::Level::Warn,
                    &format!("byte quota: --max-bytes-in {quota} received, refusing recv"),
                );
                return Ok(Err(ErrorCode::QuotaExceeded));
            }
            want = want.min(left);
        }
        let started = self.clock.begin_wait();
        let outcome = match bounded(budget, read_when_ready(&c.stream, want as usize)).await {
            Some(Ok(received)) => {
                c.bytes_in += received.head.len() as u64;
                Ok(received)
            }
            Some(Err(e)) => Err(code_for(&e)),
            None => Err(ErrorCode::TimedOut),
        };
        self.after_wait(conn, outcome.as_ref().err().copied(), started, end, "recv")?;
        Ok(outcome)
    }

    /// Logs a wait that ran out; the guest sees `timed-out`.
    fn report_timeout(&self, end: WaitEnd, what: &str) {
        let message = match end {
            WaitEnd::Idle => format!(
                "idle timeout ({:?}) waiting to {what}",
                self.policy.limits.idle_timeout
            ),
            WaitEnd::Lifetime => format!(
                "connection lifetime ({:?}) reached while waiting to {what}",
                self.policy.limits.max_lifetime.unwrap_or_default()
            ),
        };
        self.note(crate::logging::Level::Warn, &message);
    }
}

/// Runs `io` for at most `budget`, returning `None` if the time ran out.
/// The caller brackets the wait with the CPU clock's `begin_wait` and
/// `end_wait`: a guest waiting on its peer is not computing.
async fn bounded<T>(budget: Duration, io: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(budget, io).await.ok()
}

/// How many bytes `recv` first reads into a host buffer. Small messages
/// (a request line, a greeting) fit whole; of a bulk read only this much is
/// copied twice, the rest goes from the socket straight into guest memory.
const HEAD_READ: usize = 4096;

/// The bytes a `recv` returns: the first ones, read once the socket was
/// readable, and possibly more still queued in the socket. `direct_io` reads
/// the rest straight into guest memory while the result is lowered, so bulk
/// data is copied once (kernel to guest) rather than twice.
pub struct Received {
    pub head: Vec<u8>,
    /// Up to this many more bytes may follow from the socket. Non-zero only
    /// when `head` filled its whole buffer and the guest asked for more.
    pub more: usize,
}

/// Waits until the socket is readable, then reads the first bytes of at most
/// `want`. The buffer is allocated only once there is data, so a connection
/// whose guest waits in `recv` holds no buffer while it waits.
async fn read_when_ready(stream: &TcpStream, want: usize) -> io::Result<Received> {
    let first = want.min(HEAD_READ);
    loop {
        stream.readable().await?;
        // Capacity, not length: try_read_buf fills spare capacity, so the
        // buffer is never zeroed and never larger than asked.
        let mut head = Vec::with_capacity(first);
        match read_noting_drain(stream, first, || stream.try_read_buf(&mut head)) {
            Ok(n) => {
                let more = if n == first { want - first } else { 0 };
                return Ok(Received { head, more });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Runs `read` (a `try_read` on `stream` into at most `capacity` bytes)
/// and, if it came back short (some bytes, fewer than asked), tells tokio
/// the socket is no longer readable: the receive queue was empty. Without
/// this tokio learns it only from one more read failing with `WouldBlock`,
/// a wasted syscall on every request of a keep-alive connection.
///
/// The readiness cleared is the one seen *before* the read: an event for
/// data that arrived during or after the read is newer (another worker may
/// have polled the driver meanwhile), so tokio keeps it and no wake-up is
/// lost.
pub(crate) fn read_noting_drain(
    stream: &TcpStream,
    capacity: usize,
    read: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut got = None;
    let outcome = stream.try_io(Interest::READABLE, || {
        let n = read()?;
        got = Some(n);
        if n > 0 && n < capacity {
            // Makes `try_io` clear the readiness it saw before `read`.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match got {
        Some(n) => Ok(n),
        None => outcome,
    }
}

pub(crate) fn code_for(err: &io::Error) -> ErrorCode {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionReset | ConnectionAborted => ErrorCode::Reset,
        BrokenPipe | NotConnected | UnexpectedEof => ErrorCode::Closed,
        ConnectionRefused => ErrorCode::Refused,
        TimedOut => ErrorCode::TimedOut,
        PermissionDenied => ErrorCode::Denied,
        _ => ErrorCode::Other,
    }
}

fn format_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

impl types::Host for GuestState {}

impl types::HostConnection for GuestState {
    // Linked for completeness only: `link_direct_send` shadows it with a
    // version that reads the bytes in place from guest memory.
    async fn send(
        &mut self,
        conn: Resource<Connection>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        if let Some(code) = self.send_refusal(&conn, data.len())? {
            return Ok(Err(code));
        }
        let (budget, end) = self.wait_budget();
        let started = self.clock.begin_wait();
        let c = self.table.get_mut(&conn)?;
        let outcome = match bounded(budget, c.stream.write_all(&data)).await {
            Some(Ok(())) => {
                c.bytes_out += data.len() as u64;
                Ok(())
            }
            Some(Err(e)) => Err(code_for(&e)),
            None => Err(ErrorCode::TimedOut),
        };
        self.after_wait(&conn, outcome.err(), started, end, "send")?;
        Ok(outcome)
    }

    // Linked for completeness only, like `send`: `direct_io` shadows it.
    // The head alone is a whole answer: `recv` returns at least one byte.
    async fn recv(&mut self, conn: Resource<Connection>, max: u32) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        Ok(self.recv_head(&conn, max).await?.map(|received| received.head))
    }

    async fn shutdown(&mut self, conn: Resource<Connection>) -> wasmtime::Result<Result<(), ErrorCode>> {
        let c = self.table.get_mut(&conn)?;
        if c.write_closed {
            return Ok(Ok(()));
        }
        c.write_closed = true;
        Ok(c.stream.shutdown().await.map_err(|e| code_for(&e)))
    }

    async fn peer_address(&mut self, conn: Resource<Connection>) -> wasmtime::Result<String> {
        Ok(format_addr(self.table.get(&conn)?.peer))
    }

    async fn local_address(&mut self, conn: Resource<Connection>) -> wasmtime::Result<String> {
        // Asked for rarely, so read from the socket on demand rather than
        // paid for on every accept.
        let c = self.table.get(&conn)?;
        Ok(c.stream.local_addr().map(format_addr).unwrap_or_default())
    }

    async fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        let c = self.table.delete(conn)?;
        self.live_connections -= 1;
        if c.dialed {
            self.dialed -= 1;
        }
        // Dropping the stream closes the socket.
        Ok(())
    }
}

impl dialer::Host for GuestState {
    async fn connect(&mut self, address: String) -> wasmtime::Result<Result<Resource<Connection>, ErrorCode>> {
        let addrs = match self.policy.dial.check(&address) {
            DialTarget::Allowed(addrs) => addrs,
            DialTarget::Invalid => return Ok(Err(ErrorCode::InvalidArgument)),
            DialTarget::Denied => {
                self.note(
                    crate::logging::Level::Warn,
                    &format!("dial to {address} denied: not allowed by --allow-connect"),
                );
                return Ok(Err(ErrorCode::Denied));
            }
        };
        // The guest's own connection is one resource; what it dials is capped
        // below the table's capacity so the cap is hit here, cleanly, before
        // a socket is opened.
        if self.dialed + 1 >= self.policy.limits.max_resources {
            if self.dialed + 1 == self.policy.limits.max_resources {
                self.note(
                    crate::logging::Level::Warn,
                    &format!("resource limit: guest holds {} connections (--max-resources)", self.dialed),
                );
            }
            return Ok(Err(ErrorCode::ResourceLimit));
        }
        let (budget, end) = self.wait_budget();
        let started = self.clock.begin_wait();
        let result = bounded(budget, TcpStream::connect(&addrs[..])).await;
        self.clock.end_wait(started);
        let stream = match result {
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                self.note(crate::logging::Level::Info, &format!("dial to {address} failed: {e}"));
                return Ok(Err(code_for(&e)));
            }
            None => {
                self.report_timeout(end, "connect");
                return Ok(Err(ErrorCode::TimedOut));
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(e) => return Ok(Err(code_for(&e))),
        };
        let conn = Connection { dialed: true, ..Connection::accepted(stream, peer) };
        match self.table.push(conn) {
            Ok(res) => {
                self.dialed += 1;
                self.live_connections += 1;
                Ok(Ok(res))
            }
            Err(ResourceTableError::Full) => Ok(Err(ErrorCode::ResourceLimit)),
            Err(e) => Err(e.into()),
        }
    }
}

impl log::Host for GuestState {
    async fn log(&mut self, level: GuestLevel, message: String) -> wasmtime::Result<()> {
        self.log.lock().unwrap().write(level_of(level), &message);
        Ok(())
    }

    async fn enabled(&mut self, level: GuestLevel) -> wasmtime::Result<bool> {
        Ok(self.log.lock().unwrap().would_write(level_of(level)))
    }
}
