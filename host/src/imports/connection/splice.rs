//! `splice`: relays bytes both ways between two connections inside the
//! host, for a guest that forwards bytes it does not inspect (the proxy).
//! Where a relay through `wait`, `try-recv` and `try-send` crosses into the
//! guest several times per chunk, a splice is one host call for the whole
//! relay: one future on the connection's task copies through one host
//! buffer per direction, allocated once per call.
//!
//! Its limits are those of the other calls: the byte quotas of each
//! connection (a read takes at most what is left of them), one idle timeout
//! for both directions (as `wait`'s: it runs out only when neither moved a
//! byte), the lifetime, eviction, and shutdown, which lets it go on within
//! `--shutdown-timeout` like a `wait` (it is never at a request boundary).
//! Its time is not guest CPU.

use super::io::{read_noting_drain, WaitEnd};
use super::{code_for, Connection};
use crate::imports::bindings::server::netplug::protocol::types::Spliced;
use crate::imports::bindings::ErrorCode;
use crate::imports::overload::Interrupt;
use crate::imports::state::GuestState;
use crate::ops::metrics::Outcome;
use std::future::Future;
use std::io;
use std::ops::ControlFlow;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;
use wasmtime::component::Resource;
use wasmtime::StoreContextMut;

/// The host buffer of each direction: a chunk is read into it and written
/// out of it. Allocated once per call; two per splicing connection pair.
const BUF: usize = 32 * 1024;

/// Chunks one direction moves per poll before the other gets its turn and
/// the task yields: a bulk transfer neither starves the other direction nor
/// the other connections of its worker.
const ROUNDS: usize = 16;

/// What a splice that ran out was waiting for, in the log line.
const WHAT: &str = "recv or send on either spliced connection";

/// Why one direction stopped before its end.
#[derive(Clone, Copy)]
enum Stop {
    /// An I/O error on the direction's source (`true`) or destination.
    Io { on_src: bool, code: ErrorCode },
    /// The source's in quota is spent.
    QuotaIn,
    /// The destination's out quota is spent.
    QuotaOut,
}

/// Where one direction stands after a poll.
enum Step {
    /// Waiting on a socket; the task's waker is registered with it.
    Blocked,
    /// Moved `ROUNDS` chunks without blocking: more may be ready.
    Yield,
    /// End of stream passed on: the destination is shut for writing.
    Done,
    Failed(Stop),
}

/// One direction of the splice.
struct Pipe {
    src: Arc<TcpStream>,
    dst: Arc<TcpStream>,
    buf: Box<[u8]>,
    /// The bytes received and not yet sent: `buf[start..end]`.
    start: usize,
    end: usize,
    /// The source reached end of stream.
    eof: bool,
    done: bool,
    /// The source's `bytes_in` and the destination's `bytes_out`, kept here
    /// while the splice runs and written back to the table after each poll.
    src_in: u64,
    dst_out: u64,
    /// Bytes sent to the destination by this splice.
    sent: u64,
}

impl Pipe {
    fn new(src: &Connection, dst: &Connection) -> Self {
        Pipe {
            src: src.stream.clone(),
            dst: dst.stream.clone(),
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            done: false,
            src_in: src.bytes_in,
            dst_out: dst.bytes_out,
            sent: 0,
        }
    }

    /// Moves what can move without waiting, up to `ROUNDS` chunks: sends
    /// what is held, else reads the next chunk (at most what the quotas
    /// leave; with one spent, the direction fails once more bytes arrive),
    /// else, at end of stream with nothing held, shuts down the
    /// destination's write side.
    fn poll(&mut self, cx: &mut Context<'_>, quota_in: Option<u64>, quota_out: Option<u64>) -> Step {
        if self.done {
            return Step::Done;
        }
        for _ in 0..ROUNDS {
            // Each round does one of the three; `Continue` goes on to the
            // next round, `Break` is where the direction stands.
            let round = if self.start < self.end {
                self.send_held(cx)
            } else if self.eof {
                ControlFlow::Break(self.pass_on_eof())
            } else {
                self.receive(cx, quota_in, quota_out)
            };
            if let ControlFlow::Break(step) = round {
                return step;
            }
        }
        Step::Yield
    }

    /// Writes what is held, `buf[start..end]`, as far as the destination
    /// takes it.
    #[inline]
    fn send_held(&mut self, cx: &mut Context<'_>) -> ControlFlow<Step> {
        match self.dst.poll_write_ready(cx) {
            Poll::Pending => return ControlFlow::Break(Step::Blocked),
            Poll::Ready(Err(e)) => {
                return ControlFlow::Break(Step::Failed(Stop::Io { on_src: false, code: code_for(&e) }))
            }
            Poll::Ready(Ok(())) => {}
        }
        // A write that finds the buffer full clears tokio's
        // readiness, so the next poll waits for room.
        match self.dst.try_write(&self.buf[self.start..self.end]) {
            Ok(n) => {
                self.start += n;
                self.sent += n as u64;
                self.dst_out += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return ControlFlow::Break(Step::Failed(Stop::Io { on_src: false, code: code_for(&e) })),
        }
        ControlFlow::Continue(())
    }

    /// Passes the source's end of stream on, once all it sent was
    /// delivered: shuts the destination for writing, which ends the
    /// direction.
    #[inline]
    fn pass_on_eof(&mut self) -> Step {
        let shut = socket2::SockRef::from(&*self.dst).shutdown(std::net::Shutdown::Write);
        if let Err(e) = shut {
            return Step::Failed(Stop::Io { on_src: false, code: code_for(&e) });
        }
        self.done = true;
        Step::Done
    }

    /// Reads the next chunk, at most what the quotas leave, into the empty
    /// buffer; with a quota spent, only looks whether more is coming.
    #[inline]
    fn receive(&mut self, cx: &mut Context<'_>, quota_in: Option<u64>, quota_out: Option<u64>) -> ControlFlow<Step> {
        match self.src.poll_read_ready(cx) {
            Poll::Pending => return ControlFlow::Break(Step::Blocked),
            Poll::Ready(Err(e)) => {
                return ControlFlow::Break(Step::Failed(Stop::Io { on_src: true, code: code_for(&e) }))
            }
            Poll::Ready(Ok(())) => {}
        }
        let in_left = quota_in.map(|quota| quota.saturating_sub(self.src_in));
        let out_left = quota_out.map(|quota| quota.saturating_sub(self.dst_out));
        if in_left == Some(0) || out_left == Some(0) {
            return self.at_spent_quota(in_left == Some(0));
        }
        let want = [in_left, out_left].into_iter().flatten().fold(BUF as u64, u64::min);
        let want = want as usize;
        let (src, buf) = (&self.src, &mut self.buf[..want]);
        // A short read tells tokio the socket is drained, so the next
        // poll waits instead of reading only to find it empty.
        match read_noting_drain(src, want, || src.try_read(buf)) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.start = 0;
                self.end = n;
                self.src_in += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return ControlFlow::Break(Step::Failed(Stop::Io { on_src: true, code: code_for(&e) })),
        }
        ControlFlow::Continue(())
    }

    /// With the source's in quota (`in_spent`) or else the destination's
    /// out quota spent. A spent quota fails the direction only once a byte
    /// more has arrived: one that moved exactly its quota still passes its
    /// end of stream on, and waits while the other moves.
    #[inline]
    fn at_spent_quota(&mut self, in_spent: bool) -> ControlFlow<Step> {
        match peek_queued(&self.src) {
            Ok(true) => return ControlFlow::Break(Step::Failed(if in_spent { Stop::QuotaIn } else { Stop::QuotaOut })),
            Ok(false) => self.eof = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return ControlFlow::Break(Step::Failed(Stop::Io { on_src: true, code: code_for(&e) })),
        }
        ControlFlow::Continue(())
    }
}

/// Whether `src` has a byte queued (`true`) or is at end of stream
/// (`false`), without taking it; `WouldBlock`, with tokio's readiness
/// cleared, when neither.
fn peek_queued(src: &TcpStream) -> io::Result<bool> {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    src.try_io(Interest::READABLE, || socket2::SockRef::from(src).peek(&mut byte)).map(|n| n > 0)
}

/// How the splice ended, before the bookkeeping.
enum Ended {
    Both,
    Stopped { a_to_b: bool, stop: Stop },
    TimedOut(WaitEnd),
    Evicted,
}

/// `types.splice`: checks that the two can be spliced, relays until the
/// splice ends, then records how it ended.
pub(super) async fn splice(
    store: &mut StoreContextMut<'_, GuestState>,
    a: Resource<Connection>,
    b: Resource<Connection>,
) -> wasmtime::Result<Spliced> {
    let state = store.data_mut();
    if let Some(code) = refusal(state, &a, &b)? {
        return Ok(Spliced { a_to_b: 0, b_to_a: 0, ended: Err(code) });
    }
    let mut ab = Pipe::new(state.table.get(&a)?, state.table.get(&b)?);
    let mut ba = Pipe::new(state.table.get(&b)?, state.table.get(&a)?);
    let ended = relay(state, &a, &b, &mut ab, &mut ba).await;
    let ended = settle(state, &a, &b, &ab, &ba, ended)?;
    Ok(Spliced { a_to_b: ab.sent, b_to_a: ba.sent, ended })
}

/// Why the splice may not start, checked before anything moves (`a`, then
/// `b`): the same connection twice, or one whose stream already failed
/// (the code it failed with) or was shut for writing (`closed`).
fn refusal(
    state: &GuestState,
    a: &Resource<Connection>,
    b: &Resource<Connection>,
) -> wasmtime::Result<Option<ErrorCode>> {
    if a.rep() == b.rep() {
        return Ok(Some(ErrorCode::InvalidArgument));
    }
    for conn in [a, b] {
        let c = state.table.get(conn)?;
        if let Some(code) = c.broken {
            return Ok(Some(code));
        }
        if c.write_closed {
            return Ok(Some(ErrorCode::Closed));
        }
    }
    Ok(None)
}

/// Relays both ways until both directions end, one fails, or the splice
/// runs out (idle or lifetime) or is evicted. It is bracketed as a wait on
/// the peer: not charged to the guest's CPU clock, and marked on the
/// connection's signal (again at each byte moved) so the overload roster
/// sees how long the splice has been idle.
async fn relay(
    state: &mut GuestState,
    a: &Resource<Connection>,
    b: &Resource<Connection>,
    ab: &mut Pipe,
    ba: &mut Pipe,
) -> Ended {
    let limits = &state.policy.limits;
    let (quota_in, quota_out) = (limits.max_bytes_in, limits.max_bytes_out);
    let normal_idle = limits.idle_timeout;
    let started = state.clock.begin_wait();
    let signal = state.signal().clone();
    signal.begin_wait(started);
    // The idle timer runs from the last byte moved; it is not re-armed per
    // chunk, only when it fires early (bytes moved since it was set).
    let mut last = started;
    let (first, _) = state.wait_budget();
    let mut timer = pin!(tokio::time::sleep_until((started + first).into()));
    let mut raised = pin!(signal.raised());
    let mut listening = true;
    // `a`'s bytes in and out, then `b`'s, as last written to the table.
    let mut counted = (ab.src_in, ba.dst_out, ba.src_in, ab.dst_out);
    // Each poll moves both directions, then looks at the signal, then the timer.
    let ended = std::future::poll_fn(|cx| {
        let (step_ab, step_ba) = (ab.poll(cx, quota_in, quota_out), ba.poll(cx, quota_in, quota_out));
        if count_moved(state, a, b, ab, ba, &mut counted) {
            last = Instant::now();
            signal.begin_wait(last);
        }
        match (step_ab, step_ba) {
            (Step::Failed(stop), _) => return Poll::Ready(Ended::Stopped { a_to_b: true, stop }),
            (_, Step::Failed(stop)) => return Poll::Ready(Ended::Stopped { a_to_b: false, stop }),
            (Step::Done, Step::Done) => return Poll::Ready(Ended::Both),
            (Step::Yield, _) | (_, Step::Yield) => cx.waker().wake_by_ref(),
            _ => {}
        }
        if listening {
            match raised.as_mut().poll(cx) {
                Poll::Ready(Interrupt::Evicted) => return Poll::Ready(Ended::Evicted),
                // Never at a request boundary: go on, within the shutdown
                // timeout.
                Poll::Ready(Interrupt::Shutdown) => listening = false,
                Poll::Pending => {}
            }
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let (until, end) = runs_out_at(state, last, normal_idle);
            if until <= now {
                return Poll::Ready(Ended::TimedOut(end));
            }
            timer.as_mut().reset(until.into());
        }
        Poll::Pending
    })
    .await;
    signal.end_wait();
    state.clock.end_wait(started);
    ended
}

/// Writes the pipes' byte counts back to both connections' records if they
/// moved since last written, and says whether they did. Counted as they
/// go: the connection's record reads them even if the task is closed
/// mid-splice (at the shutdown timeout).
#[inline]
fn count_moved(
    state: &mut GuestState,
    a: &Resource<Connection>,
    b: &Resource<Connection>,
    ab: &Pipe,
    ba: &Pipe,
    counted: &mut (u64, u64, u64, u64),
) -> bool {
    let moved = (ab.src_in, ba.dst_out, ba.src_in, ab.dst_out);
    if moved == *counted {
        return false;
    }
    *counted = moved;
    if let Ok(c) = state.table.get_mut(a) {
        (c.bytes_in, c.bytes_out) = (moved.0, moved.1);
    }
    if let Ok(c) = state.table.get_mut(b) {
        (c.bytes_in, c.bytes_out) = (moved.2, moved.3);
    }
    true
}

/// When a splice idle since `last` runs out, and why: the idle timeout
/// (read again each time, as overload shortens it), or the connection's
/// lifetime if that ends first.
#[inline]
fn runs_out_at(state: &GuestState, last: Instant, normal_idle: Duration) -> (Instant, WaitEnd) {
    let idle = state.policy.overload.idle_timeout(normal_idle);
    let idle_end = WaitEnd::Idle { timeout: idle, overloaded: idle < normal_idle };
    let (mut until, mut end) = (last + idle, idle_end);
    if let Some(deadline) = state.deadline() {
        if deadline < until {
            (until, end) = (deadline, WaitEnd::Lifetime);
        }
    }
    (until, end)
}

/// Records how the relay ended on the two connections (and, for a timeout,
/// eviction or quota, in the log and the outcome), and returns what the
/// guest gets in `spliced.ended`.
fn settle(
    state: &mut GuestState,
    a: &Resource<Connection>,
    b: &Resource<Connection>,
    ab: &Pipe,
    ba: &Pipe,
    ended: Ended,
) -> wasmtime::Result<Result<(), ErrorCode>> {
    let (a_to_b, stop) = match ended {
        Ended::Both => {
            state.table.get_mut(a)?.write_closed = true;
            state.table.get_mut(b)?.write_closed = true;
            return Ok(Ok(()));
        }
        Ended::Stopped { a_to_b, stop } => (a_to_b, stop),
        Ended::TimedOut(end) => {
            state.timed_out(end, WHAT);
            broken_both(state, a, b, ErrorCode::TimedOut)?;
            return Ok(Err(ErrorCode::TimedOut));
        }
        Ended::Evicted => {
            state.evicted(WHAT);
            broken_both(state, a, b, ErrorCode::TimedOut)?;
            return Ok(Err(ErrorCode::TimedOut));
        }
    };
    // A direction that finished shut its destination for writing.
    if ab.done {
        state.table.get_mut(b)?.write_closed = true;
    }
    if ba.done {
        state.table.get_mut(a)?.write_closed = true;
    }
    let (src, dst) = if a_to_b { (a, b) } else { (b, a) };
    Ok(Err(record_stop(state, src, dst, stop)?))
}

/// Records why one direction (`src` to `dst`) stopped: the failed stream
/// as broken, or a spent quota in the log and as the connection's outcome;
/// returns the code the splice ends with.
fn record_stop(
    state: &mut GuestState,
    src: &Resource<Connection>,
    dst: &Resource<Connection>,
    stop: Stop,
) -> wasmtime::Result<ErrorCode> {
    let limits = &state.policy.limits;
    let code = match stop {
        Stop::Io { on_src, code } => {
            state.table.get_mut(if on_src { src } else { dst })?.broken = Some(code);
            code
        }
        Stop::QuotaIn => {
            let quota = limits.max_bytes_in.unwrap_or_default();
            tracing::warn!(parent: state.span().get(), "byte quota: --max-bytes-in {quota} received, ending splice");
            state.end_by(Outcome::QuotaIn);
            ErrorCode::QuotaExceeded
        }
        Stop::QuotaOut => {
            let quota = limits.max_bytes_out.unwrap_or_default();
            tracing::warn!(parent: state.span().get(), "byte quota: --max-bytes-out {quota} sent, ending splice");
            state.end_by(Outcome::QuotaOut);
            ErrorCode::QuotaExceeded
        }
    };
    Ok(code)
}

/// After a splice that timed out or was evicted, both connections fail at
/// once, as every watched connection does after a `wait` that ran out.
fn broken_both(
    state: &mut GuestState,
    a: &Resource<Connection>,
    b: &Resource<Connection>,
    code: ErrorCode,
) -> wasmtime::Result<()> {
    state.table.get_mut(a)?.broken = Some(code);
    state.table.get_mut(b)?.broken = Some(code);
    Ok(())
}
