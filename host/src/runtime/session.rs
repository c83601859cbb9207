//! One accepted connection, from instance to outcome: take or make an
//! instance, hand it the connection, race the guest call against the stops
//! the host imposes, then count and log how it ended.

use crate::imports::bindings::server::Server;
use crate::imports::connection::Connection;
use crate::imports::overload::Signal;
use crate::imports::state::{ConnSpan, GuestState};
use crate::ops::metrics::Outcome;
use crate::runtime::fault::{stop_signal, Fault};
use crate::runtime::generation::Generation;
use crate::runtime::pool::Instance;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use wasmtime::Store;

/// Connection counts, reported at shutdown.
#[derive(Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub completed: AtomicU64,
    pub guest_errors: AtomicU64,
    pub faults: AtomicU64,
    /// Connection tasks that panicked (a host bug, never a guest's doing).
    pub panics: AtomicU64,
    /// Connections closed to admit new ones at `--max-connections`.
    pub evicted: AtomicU64,
    /// Connections of a replaced generation closed at `--drain-timeout`.
    pub drained: AtomicU64,
}

/// How a connection's guest ended.
enum Ended {
    /// `handle` returned; `Err` carries the guest's own reason.
    Returned(Result<(), String>, Server),
    Fault(Fault),
}

/// Serves one connection to its end. Never fails: what goes wrong is the
/// connection's own, logged in its span and counted.
pub async fn serve(
    generation: &Generation,
    stats: &Stats,
    stream: TcpStream,
    peer: SocketAddr,
    signal: Arc<Signal>,
    span: &Arc<ConnSpan>,
) {
    // Small protocol messages go out at once rather than waiting on Nagle.
    let _ = stream.set_nodelay(true);
    let pool = &generation.pool;
    let (mut store, ready, served) = match pool.take_ready() {
        Some(Instance { mut store, guest, served }) => {
            store.data_mut().start_connection(signal, span, true);
            (store, Some(guest), served)
        }
        None => {
            let mut store = pool.new_store();
            store.data_mut().start_connection(signal, span, false);
            (store, None, 0)
        }
    };
    let ended = run_guest(generation, &mut store, ready, Connection::accepted(stream, peer)).await;
    report(generation, stats, &ended, store.data_mut());
    if let Ended::Returned(_, guest) = ended {
        // The instance ended cleanly, so it may serve again.
        pool.put_back(Instance { store, guest, served: served + 1 });
    }
    // Otherwise the store is dropped here, freeing the slot and whatever
    // the guest held.
}

/// Instantiates (unless the instance is ready) and calls `handle`, raced
/// against the CPU watch and the lifetime.
async fn run_guest(
    generation: &Generation,
    store: &mut Store<GuestState>,
    ready: Option<Server>,
    conn: Connection,
) -> Ended {
    let stop = stop_signal(store.data());
    let call = async {
        let guest = match ready {
            Some(guest) => guest,
            None => generation.pool.instantiate(store).await?,
        };
        let conn = store.data_mut().table.push(conn)?;
        store.data_mut().connections.accepted(conn.rep());
        let result = guest.netplug_protocol_handler().call_handle(&mut *store, conn).await?;
        Ok::<_, wasmtime::Error>((result, guest))
    };
    tokio::select! {
        biased;
        result = call => match result {
            Ok((result, guest)) => Ended::Returned(result, guest),
            Err(err) => Ended::Fault(Fault::Trap(err)),
        },
        stop = stop => Ended::Fault(Fault::Stopped(stop)),
    }
}

/// Counts the outcome and logs it in the connection's span, then writes
/// the connection's record. A limit the host imposed (a wait that timed
/// out, a quota, an eviction, shutdown) is how the connection ended even if
/// the guest then returned; a fault is how it ended whatever came before.
fn report(generation: &Generation, stats: &Stats, ended: &Ended, state: &mut GuestState) {
    let (outcome, trap) = match ended {
        Ended::Fault(fault) => fault.outcome(state),
        Ended::Returned(_, _) if state.ended_by().is_some() => (state.ended_by().unwrap(), None),
        Ended::Returned(Ok(()), _) => (Outcome::Ok, None),
        Ended::Returned(Err(_), _) => (Outcome::GuestError, None),
    };
    match ended {
        Ended::Returned(Ok(()), _) => {
            stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        // The host ended one of its waits (an idle timeout, a quota, an
        // eviction, shutdown) and the guest passed the error on, as `?`
        // does: that end is in the record, and no fault of the guest's.
        Ended::Returned(Err(reason), _) if state.ended_by().is_some() => {
            let reason = crate::imports::log::clipped(reason);
            tracing::info!(parent: state.span().get(), "guest {} ended on the host's limit: {reason}", generation.guest);
        }
        Ended::Returned(Err(reason), _) => {
            stats.guest_errors.fetch_add(1, Ordering::Relaxed);
            let reason = crate::imports::log::clipped(reason);
            tracing::warn!(parent: state.span().get(), "guest {} returned an error: {reason}", generation.guest);
        }
        Ended::Fault(fault) => {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            if state.policy.verbose {
                fault.log_backtrace(state.span().get());
            }
            tracing::error!(parent: state.span().get(), "guest {} closed: {}", generation.guest, fault.describe(state));
        }
    }
    state.record(outcome, trap);
}
