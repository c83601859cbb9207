//! `wait`: one bounded wait on several connections at once, for a guest that
//! serves more than one (a proxy copying both ways). With `try-recv` and
//! `try-send`, which never wait, it is what a single-threaded guest needs to
//! move bytes in both directions without either blocking the other.
//!
//! The wait is one wait on the peers, as a `recv` is: its idle timeout runs
//! from the call and is restarted only by the next call, so a guest waiting
//! on two connections times out when neither moves for that long; its time
//! is not charged as CPU; it counts as idle for eviction. It is never at a
//! request boundary (the host cannot tell where the requests of a relayed
//! protocol end), so at shutdown a guest in `wait` finishes within
//! `--shutdown-timeout` like one in the middle of a request.

use super::io::{bounded, Waited};
use super::Connection;
use crate::imports::bindings::server::netplug::protocol::types::Readiness;
use crate::imports::bindings::ErrorCode;
use crate::imports::state::GuestState;
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;
use wasmtime::component::Resource;
use wasmtime::StoreContextMut;

/// One watched connection: its socket and what the guest asked of it.
type Watch<'a> = (&'a TcpStream, Readiness);

/// `types.wait`.
pub(super) async fn wait(
    store: &mut StoreContextMut<'_, GuestState>,
    watched: Vec<(Resource<Connection>, Readiness)>,
) -> wasmtime::Result<Result<Vec<Readiness>, ErrorCode>> {
    let state = store.data_mut();
    let asks_nothing = watched.iter().all(|(_, want)| *want == Readiness::empty());
    if asks_nothing || watched.len() > state.policy.limits.max_resources as usize {
        return Ok(Err(ErrorCode::InvalidArgument));
    }
    let mut found = vec![Readiness::empty(); watched.len()];
    let mut known = false;
    let mut watches = Vec::with_capacity(watched.len());
    for ((conn, want), found) in watched.iter().zip(&mut found) {
        let c = state.table.get(conn)?;
        // Whatever is asked of a failed connection returns at once (its
        // error), as does a send on one shut for writing (`closed`).
        if c.broken.is_some() {
            *found = *want;
        } else if c.write_closed {
            *found = *want & Readiness::WRITABLE;
        }
        known |= *found != Readiness::empty();
        watches.push((&*c.stream, *want));
    }
    if known {
        return Ok(Ok(found));
    }
    // Already ready (more data queued, room to write): answered without a
    // timer or the wait's bookkeeping. The no-op waker registered here is
    // replaced by the task's own at the first poll of the wait below.
    if poll_watches(&watches, &mut found, &mut Context::from_waker(Waker::noop())).is_ready() {
        return Ok(Ok(found));
    }
    let (budget, end) = state.wait_budget();
    let started = state.clock.begin_wait();
    let ready = std::future::poll_fn(|cx| poll_watches(&watches, &mut found, cx));
    let signal = state.signal().clone();
    let waited = bounded(&mut state.wait_timer, budget, &signal, false, started, ready).await;
    state.clock.end_wait(started);
    drop(watches);
    match waited {
        Waited::Done(()) => return Ok(Ok(found)),
        Waited::TimedOut => state.timed_out(end, WHAT),
        Waited::Evicted => state.evicted(WHAT),
        Waited::ShutDown => unreachable!("a wait is never at a request boundary"),
    }
    // As after a timed-out `recv`: every watched connection now fails at
    // once, so the guest cannot wait again past the timeout.
    for (conn, _) in &watched {
        state.table.get_mut(conn)?.broken = Some(ErrorCode::TimedOut);
    }
    Ok(Err(ErrorCode::TimedOut))
}

/// What a wait that ran out was waiting for, in the log line.
const WHAT: &str = "recv or send on any of the connections it waits on";

/// Polls every watched socket for what is asked of it, registering the
/// task's waker with each one not ready; `Ready` once any is, with `found`
/// saying which and for what. A socket error counts as ready: the guest's
/// next call on that connection returns it.
fn poll_watches(watches: &[Watch], found: &mut [Readiness], cx: &mut Context<'_>) -> Poll<()> {
    let mut any = false;
    for ((stream, want), found) in watches.iter().zip(found.iter_mut()) {
        if want.contains(Readiness::READABLE) && stream.poll_read_ready(cx).is_ready() {
            *found |= Readiness::READABLE;
            any = true;
        }
        if want.contains(Readiness::WRITABLE) && stream.poll_write_ready(cx).is_ready() {
            *found |= Readiness::WRITABLE;
            any = true;
        }
    }
    if any {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}
