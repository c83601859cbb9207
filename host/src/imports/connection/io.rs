//! `send` and `recv`: the checks, the quotas, and the bounded wait on the
//! peer. A wait ends when the peer is ready, when the idle timeout (shorter
//! under overload) or the connection's lifetime runs out, or when the
//! listener interrupts it (eviction; shutdown at a request boundary).

use super::{code_for, Connection};
use crate::imports::bindings::ErrorCode;
use crate::imports::overload::{Interrupt, Signal};
use crate::imports::state::GuestState;
use crate::ops::metrics::Outcome;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use wasmtime::component::{Resource, WasmList};
use wasmtime::StoreContextMut;

/// What bounded a wait on the peer, for the log line when it runs out.
#[derive(Clone, Copy)]
pub(crate) enum WaitEnd {
    Idle { timeout: Duration, overloaded: bool },
    Lifetime,
}

/// How a bounded wait ended.
pub(crate) enum Waited<T> {
    Done(T),
    TimedOut,
    Evicted,
    /// Shutdown reached a `recv` waiting for a new request.
    ShutDown,
}

/// The timer that bounds a connection's waits on its peers: one per
/// connection, moved to each wait's deadline. Moving an armed timer later
/// is one compare-and-swap in tokio's timer (the wheel hears of it only
/// when the earlier deadline comes), where a new timer per wait was an
/// insertion and a removal under the timer's lock: about 300 instructions
/// of every `recv` that waits.
#[derive(Default)]
pub(crate) struct WaitTimer(Option<Pin<Box<Sleep>>>);

impl WaitTimer {
    /// The timer, set to fire `after` from now.
    fn set(&mut self, after: Duration) -> Pin<&mut Sleep> {
        let now = tokio::time::Instant::now();
        // As `tokio::time::sleep` bounds a duration too long to add.
        let deadline = now.checked_add(after).unwrap_or_else(|| now + FAR_FUTURE);
        match self.0 {
            Some(ref mut sleep) => sleep.as_mut().reset(deadline),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.0.as_mut().expect("set above").as_mut()
    }
}

/// A deadline that never comes (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Runs `io` until it completes, `budget` runs out, or the listener raises
/// an interrupt that applies. The connection counts as idle (a candidate
/// for eviction) meanwhile. The caller brackets the wait with the CPU
/// clock's `begin_wait` and `end_wait`: a guest waiting on its peer is not
/// computing.
pub(crate) async fn bounded<T>(
    timer: &mut WaitTimer,
    budget: Duration,
    signal: &Signal,
    at_boundary: bool,
    started: Instant,
    io: impl Future<Output = T>,
) -> Waited<T> {
    tokio::pin!(io);
    let mut timeout = timer.set(budget);
    signal.begin_wait(started);
    let mut listening = true;
    let waited = loop {
        tokio::select! {
            biased;
            out = &mut io => break Waited::Done(out),
            why = signal.raised(), if listening => match why {
                Interrupt::Evicted => break Waited::Evicted,
                Interrupt::Shutdown if at_boundary => break Waited::ShutDown,
                // Mid-request: let it finish, within the shutdown timeout.
                Interrupt::Shutdown => listening = false,
            },
            () = timeout.as_mut() => break Waited::TimedOut,
        }
    };
    signal.end_wait();
    waited
}

/// How many bytes `recv` first reads into a host buffer. Small messages
/// (a request line, a greeting) fit whole; of a bulk read only this much is
/// copied twice, the rest goes from the socket straight into guest memory.
const HEAD_READ: usize = 4096;

/// The bytes a `recv` returns: the first ones, read once the socket was
/// readable, and possibly more still queued in the socket. `lower.rs` reads
/// the rest straight into guest memory while the result is lowered, so bulk
/// data is copied once (kernel to guest) rather than twice.
pub struct Received {
    pub head: Vec<u8>,
    /// Up to this many more bytes may follow from the socket. Non-zero only
    /// when `head` filled its whole buffer and the guest asked for more.
    pub more: usize,
}

impl GuestState {
    /// How long the next wait on the peer may take, and what ends it: the
    /// idle timeout (shortened while the listener is overloaded), or the
    /// connection's remaining lifetime if shorter.
    pub(crate) fn wait_budget(&self) -> (Duration, WaitEnd) {
        let normal = self.policy.limits.idle_timeout;
        let timeout = self.policy.overload.idle_timeout(normal);
        let idle = WaitEnd::Idle { timeout, overloaded: timeout < normal };
        match self.deadline() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < timeout {
                    (left, WaitEnd::Lifetime)
                } else {
                    (timeout, idle)
                }
            }
            None => (timeout, idle),
        }
    }

    /// Why a send of `len` bytes must not start, if it must not: the
    /// connection is broken or shut for writing, or the bytes would pass the
    /// A send refused by the out quota: how the connection ends, and a
    /// warning while the guest has warnings left.
    fn quota_out_refused(&mut self, len: usize) {
        self.end_by(Outcome::QuotaOut);
        if self.may_warn() {
            let max = self.policy.limits.max_bytes_out.unwrap_or_default();
            tracing::warn!(parent: self.span().get(), "byte quota: send of {len} bytes would pass --max-bytes-out {max}");
        }
    }

    /// out quota (a send is all or nothing against the quota).
    fn send_refusal(&self, conn: &Resource<Connection>, len: usize) -> wasmtime::Result<Option<ErrorCode>> {
        let c = self.table.get(conn)?;
        if let Some(code) = c.broken {
            return Ok(Some(code));
        }
        if c.write_closed {
            return Ok(Some(ErrorCode::Closed));
        }
        if let Some(max) = self.policy.limits.max_bytes_out {
            if c.bytes_out + len as u64 > max {
                return Ok(Some(ErrorCode::QuotaExceeded));
            }
        }
        Ok(None)
    }

    /// A wait on the guest's peers (`what`) ran out at `end`: logged, and
    /// the connection's outcome is the limit that ended it.
    pub(crate) fn timed_out(&mut self, end: WaitEnd, what: &str) {
        report_timeout(self.span().get(), &self.policy.limits, end, what);
        self.end_by(if matches!(end, WaitEnd::Lifetime) { Outcome::Lifetime } else { Outcome::IdleTimeout });
    }

    /// A wait on the guest's peers (`what`) was ended to admit a new
    /// connection: logged, and the connection's outcome is `overload`.
    pub(crate) fn evicted(&mut self, what: &str) {
        report_eviction(self.span().get(), what);
        self.end_by(Outcome::Overload);
    }

    /// Bookkeeping after a wait on the peer that began at `started`: the
    /// wait is not guest CPU time, a failure breaks the connection, and why
    /// it failed is logged.
    fn after_wait<T>(
        &mut self,
        conn: &Resource<Connection>,
        waited: Waited<io::Result<T>>,
        started: Instant,
        end: WaitEnd,
        what: &str,
    ) -> wasmtime::Result<Result<T, ErrorCode>> {
        self.clock.end_wait(started);
        let outcome = match waited {
            Waited::Done(Ok(value)) => return Ok(Ok(value)),
            Waited::Done(Err(e)) => code_for(&e),
            Waited::TimedOut => {
                self.timed_out(end, what);
                ErrorCode::TimedOut
            }
            Waited::Evicted => {
                self.evicted(what);
                ErrorCode::TimedOut
            }
            Waited::ShutDown => {
                tracing::debug!(parent: self.span().get(), "host shutting down: ending the connection between requests");
                self.end_by(Outcome::Shutdown);
                ErrorCode::Closed
            }
        };
        self.table.get_mut(conn)?.broken = Some(outcome);
        Ok(Err(outcome))
    }

    /// How many bytes a `recv` or `try-recv` of `max` may read, or why it
    /// must not read: a bad `max`, a broken connection, the in quota spent.
    fn recv_allowance(&mut self, conn: &Resource<Connection>, max: u32) -> wasmtime::Result<Result<usize, ErrorCode>> {
        if max == 0 {
            return Ok(Err(ErrorCode::InvalidArgument));
        }
        let c = self.table.get(conn)?;
        if let Some(code) = c.broken {
            return Ok(Err(code));
        }
        let bytes_in = c.bytes_in;
        let mut want = max.min(crate::config::limits::MAX_RECV) as u64;
        if let Some(quota) = self.policy.limits.max_bytes_in {
            let left = quota.saturating_sub(bytes_in);
            if left == 0 {
                if self.may_warn() {
                    tracing::warn!(parent: self.span().get(), "byte quota: --max-bytes-in {quota} received, refusing recv");
                }
                self.end_by(Outcome::QuotaIn);
                return Ok(Err(ErrorCode::QuotaExceeded));
            }
            want = want.min(left);
        }
        Ok(Ok(want as usize))
    }

    /// `connection.try-recv` up to its first bytes: `recv_head` without the
    /// wait, `None` when nothing is queued. A read that finds the socket
    /// empty clears tokio's readiness, so the guest's next `wait` blocks
    /// instead of reporting the connection readable again.
    pub(crate) fn try_recv_head(
        &mut self,
        conn: &Resource<Connection>,
        max: u32,
    ) -> wasmtime::Result<Result<Option<Received>, ErrorCode>> {
        let want = match self.recv_allowance(conn, max)? {
            Ok(want) => want,
            Err(code) => return Ok(Err(code)),
        };
        let c = self.table.get_mut(conn)?;
        // The read is I/O, not guest computing: not charged, as in `recv`
        // (the rest of a bulk read is bracketed in `lower.rs`).
        let started = self.clock.begin_wait();
        let read = try_read_head(&c.stream, want);
        self.clock.end_wait(started);
        match read {
            Ok(received) => {
                c.bytes_in += received.head.len() as u64;
                c.answered = false;
                Ok(Ok(Some(received)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Ok(None)),
            Err(e) => {
                let code = code_for(&e);
                c.broken = Some(code);
                Ok(Err(code))
            }
        }
    }

    /// `connection.recv` up to its first bytes: the checks and quota, the
    /// bounded wait for data, the bookkeeping. What else the socket holds is
    /// read while the result is lowered (see `Received`).
    pub(crate) async fn recv_head(
        &mut self,
        conn: &Resource<Connection>,
        max: u32,
    ) -> wasmtime::Result<Result<Received, ErrorCode>> {
        let want = match self.recv_allowance(conn, max)? {
            Ok(want) => want,
            Err(code) => return Ok(Err(code)),
        };
        let (budget, end) = self.wait_budget();
        let c = self.table.get(conn)?;
        let at_boundary = c.answered && c.bytes_in > 0;
        let stream = c.stream.clone();
        let started = self.clock.begin_wait();
        // Bytes already queued (a pipelined request, the rest of a message)
        // are read without arming the wait's timer and interrupt, as the
        // wait would have read them first. It costs no extra system call:
        // tokio reads only a socket last seen readable, and the wait's own
        // first read would have found it empty the same way.
        let waited = match try_read_head(&stream, want) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut timer = std::mem::take(&mut self.wait_timer);
                let waited =
                    bounded(&mut timer, budget, self.signal(), at_boundary, started, read_when_ready(&stream, want));
                let waited = waited.await;
                self.wait_timer = timer;
                match waited {
                    // A request already queued is served even at shutdown.
                    Waited::ShutDown => match try_read_head(&stream, want) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Waited::ShutDown,
                        read => Waited::Done(read),
                    },
                    waited => waited,
                }
            }
            read => Waited::Done(read),
        };
        let received = self.after_wait(conn, waited, started, end, "recv")?;
        if let Ok(received) = &received {
            let c = self.table.get_mut(conn)?;
            c.bytes_in += received.head.len() as u64;
            c.answered = false;
        }
        Ok(received)
    }
}

/// `connection.send` on bytes still in guest memory: written to the socket
/// straight from the guest's list, without a copy into a host buffer.
pub(super) async fn send_from_guest(
    store: &mut StoreContextMut<'_, GuestState>,
    conn: Resource<Connection>,
    data: WasmList<u8>,
) -> wasmtime::Result<Result<(), ErrorCode>> {
    let len = data.len();
    if let Some(code) = store.data().send_refusal(&conn, len)? {
        if matches!(code, ErrorCode::QuotaExceeded) {
            store.data_mut().quota_out_refused(len);
        }
        return Ok(Err(code));
    }
    let (budget, end) = store.data().wait_budget();
    let started = store.data().clock.begin_wait();
    let stream = store.data().table.get(&conn)?.stream.clone();
    let signal = store.data().signal().clone();
    let mut sent = 0;
    let waited = loop {
        if sent == len {
            break Waited::Done(Ok(()));
        }
        match stream.try_write(&data.as_le_slice(&*store)[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The budget covers the whole send, not each partial write.
                let left = budget.saturating_sub(started.elapsed());
                let mut timer = std::mem::take(&mut store.data_mut().wait_timer);
                let waited = bounded(&mut timer, left, &signal, false, started, stream.writable()).await;
                store.data_mut().wait_timer = timer;
                match waited {
                    Waited::Done(Ok(())) => {}
                    Waited::Done(Err(e)) => break Waited::Done(Err(e)),
                    Waited::TimedOut => break Waited::TimedOut,
                    Waited::Evicted => break Waited::Evicted,
                    Waited::ShutDown => unreachable!("a send is never at a request boundary"),
                }
            }
            Err(e) => break Waited::Done(Err(e)),
        }
    };
    let state = store.data_mut();
    let c = state.table.get_mut(&conn)?;
    // Partial sends count: those bytes reached the peer's kernel.
    c.bytes_out += sent as u64;
    let outcome = state.after_wait(&conn, waited, started, end, "send")?;
    if outcome.is_ok() {
        state.table.get_mut(&conn)?.answered = true;
    }
    Ok(outcome)
}

/// `connection.try-send`: one write of what the socket takes now, straight
/// from guest memory, never waiting. The refusals are `send`'s, the quota
/// included (judged on the whole of `data`).
pub(super) fn try_send_from_guest(
    store: &mut StoreContextMut<'_, GuestState>,
    conn: Resource<Connection>,
    data: WasmList<u8>,
) -> wasmtime::Result<Result<u32, ErrorCode>> {
    let len = data.len();
    if let Some(code) = store.data().send_refusal(&conn, len)? {
        if matches!(code, ErrorCode::QuotaExceeded) {
            store.data_mut().quota_out_refused(len);
        }
        return Ok(Err(code));
    }
    if len == 0 {
        return Ok(Ok(0));
    }
    // One write: what it leaves, the socket's buffer had no room for, and a
    // second would only find it full. A write that finds it full clears
    // tokio's readiness, so the guest's next `wait` blocks until there is
    // room.
    // The write is I/O, not guest computing: not charged, as in `send`. On
    // loopback it is the dearest part of a small relay (the kernel delivers
    // to the receiver within it), far dearer than the clock reads.
    let started = store.data().clock.begin_wait();
    let written = store.data().table.get(&conn)?.stream.try_write(data.as_le_slice(&*store));
    store.data().clock.end_wait(started);
    let c = store.data_mut().table.get_mut(&conn)?;
    match written {
        Ok(n) => {
            c.bytes_out += n as u64;
            c.answered = true;
            // At most the 4 GiB a list's length can say.
            Ok(Ok(n as u32))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Ok(0)),
        Err(e) => {
            let code = code_for(&e);
            c.broken = Some(code);
            Ok(Err(code))
        }
    }
}

/// Logs a wait that ran out; the guest sees `timed-out`.
pub(crate) fn report_timeout(span: &tracing::Span, limits: &crate::config::limits::Limits, end: WaitEnd, what: &str) {
    match end {
        WaitEnd::Idle { timeout, overloaded: false } => {
            tracing::warn!(parent: span, "idle timeout ({timeout:?}) waiting to {what}")
        }
        WaitEnd::Idle { timeout, overloaded: true } => tracing::warn!(
            parent: span,
            "idle timeout ({timeout:?}, --overload-idle-timeout: the listener is past its --overload-threshold) \
             waiting to {what}"
        ),
        WaitEnd::Lifetime => tracing::warn!(
            parent: span,
            "connection lifetime ({:?}) reached while waiting to {what}",
            limits.max_lifetime.unwrap_or_default()
        ),
    }
}

/// Logs an eviction; the guest sees `timed-out`.
pub(crate) fn report_eviction(span: &tracing::Span, what: &str) {
    tracing::warn!(
        parent: span,
        "closed to admit a new connection while waiting to {what}: the listener is at --max-connections \
         and this connection had waited longest on its peer"
    );
}

/// Waits until the socket is readable, then reads the first bytes of at most
/// `want`. The buffer is allocated only once there is data, so a connection
/// whose guest waits in `recv` holds no buffer while it waits.
async fn read_when_ready(stream: &TcpStream, want: usize) -> io::Result<Received> {
    loop {
        stream.readable().await?;
        match try_read_head(stream, want) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// Reads the first bytes of at most `want` if the socket has any queued.
fn try_read_head(stream: &TcpStream, want: usize) -> io::Result<Received> {
    let first = want.min(HEAD_READ);
    // Capacity, not length: try_read_buf fills spare capacity, so the
    // buffer is never zeroed and never larger than asked.
    let mut head = Vec::with_capacity(first);
    let n = read_noting_drain(stream, first, || stream.try_read_buf(&mut head))?;
    let more = if n == first { want - first } else { 0 };
    Ok(Received { head, more })
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
