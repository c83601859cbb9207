//! A listener: the bound socket, the accept loop with its connection cap
//! and overload policy, each connection's task, and graceful shutdown.

use crate::imports::state::{ConnSpan, Policy};
use crate::runtime::generation::{Current, Generation};
use crate::runtime::session::Stats;
use anyhow::Result;
use futures_util::FutureExt;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Everything a listener's connections share.
pub struct Service {
    /// The listener's name, carried by every event of its connections.
    pub name: Arc<str>,
    /// Limits, dial list and overload roster, the same for every generation.
    pub policy: Arc<Policy>,
    /// The generation new connections get.
    pub current: Arc<Current>,
    pub stats: Stats,
}

/// First pause after a failed accept; doubled on each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often a connection waiting for a free slot looks again for an idle
/// connection to close (one may become idle long enough meanwhile).
const EVICT_RETRY: Duration = Duration::from_millis(50);

/// What ends a listener's accept loop, and what its connections get then.
pub struct Stopping {
    /// Becomes true when the process shuts down (SIGINT, SIGTERM).
    pub shutdown: watch::Receiver<bool>,
    /// How long connections may run once the process shuts down.
    pub grace: Duration,
    /// Becomes true when a reload removes or replaces the listener (`host
    /// serve`); `None` for a listener that lives as long as the process.
    pub removed: Option<watch::Receiver<bool>>,
    /// Called once a removed listener stops accepting, with the number of
    /// connections still open: all the pool slots it needs from then on.
    pub on_removed: Option<Box<dyn FnOnce(usize) + Send>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Shutdown,
    Removed,
}

impl Stopping {
    async fn stopped(mut shutdown: watch::Receiver<bool>, removed: Option<watch::Receiver<bool>>) -> Stop {
        let removed = async {
            if let Some(mut removed) = removed {
                if removed.wait_for(|r| *r).await.is_ok() {
                    return;
                }
            }
            std::future::pending().await
        };
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => Stop::Shutdown,
            () = removed => Stop::Removed,
        }
    }
}

/// Accepts connections until the process shuts down or a reload removes
/// the listener. At shutdown, in-flight connections may finish for up to
/// `grace` and the rest are closed; a removed listener's connections finish
/// on their own (or at its `--drain-timeout`), unless the process shuts
/// down meanwhile.
///
/// At most `--max-connections` run at once. A connection accepted while all
/// are busy waits for a slot, and makes one by closing the connection that
/// has waited longest on its peer if one has waited long enough (see
/// `imports/overload.rs`); meanwhile further clients wait in the listen
/// backlog. A failing connection is logged and counted; it never ends the
/// loop.
///
/// The socket is shared: a listener replaced by a reload hands it to its
/// successor, which accepts on it at once, so no client is refused.
pub async fn run(listener: Arc<TcpListener>, service: Arc<Service>, stopping: Stopping) -> Result<()> {
    let limit = Arc::new(Semaphore::new(service.policy.limits.max_connections as usize));
    let mut tasks = JoinSet::new();
    let Stopping { shutdown, grace, removed, on_removed } = stopping;
    let stop = Stopping::stopped(shutdown.clone(), removed);
    tokio::pin!(stop);
    let stopped = accept_until_stopped(&listener, &service, &limit, &mut tasks, stop).await;
    drop(listener);
    // Removed by a reload: the connections finish on their generation, and
    // meet the shutdown's `grace` only if the process shuts down meanwhile.
    if stopped == Stop::Removed {
        if let Some(on_removed) = on_removed {
            on_removed(tasks.len());
        }
    }
    if stopped == Stop::Removed && !finish_removed(&service, &mut tasks, shutdown).await {
        log_stopped(&service);
        return Ok(());
    }
    close_at_shutdown(&service, &mut tasks, grace).await;
    log_stopped(&service);
    Ok(())
}

/// The accept loop: accepts, admits under `--max-connections` and spawns
/// each connection's task, reaping those that end, until `stop` resolves;
/// returns why it did.
async fn accept_until_stopped(
    listener: &TcpListener,
    service: &Arc<Service>,
    limit: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    mut stop: Pin<&mut impl Future<Output = Stop>>,
) -> Stop {
    let mut accept_errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            why = &mut stop => return why,
            // Reap finished tasks so the set does not grow without end.
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                reap(service, joined);
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                accept_errors.recovered();
                accepted
            }
            Err(e) => {
                // Typically out of file descriptors: wait for some to close.
                tokio::time::sleep(accept_errors.failed(&e)).await;
                continue;
            }
        };
        service.stats.accepted.fetch_add(1, Ordering::Relaxed);
        service.policy.metrics.accepted.inc();
        // A free slot is taken at once; only at the cap does the loop wait.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match wait_for_slot(service, limit, tasks, stop.as_mut()).await {
                ControlFlow::Continue(permit) => permit,
                ControlFlow::Break(why) => return why,
            },
        };
        let generation = service.current.get();
        let span = Arc::new(ConnSpan::new(service.name.clone(), generation.id, peer));
        // Not entered by the task on every poll (that would cost each recv
        // and send): events about the connection name it as their parent.
        // Boxed: the task's future holds the whole session (store, guest
        // call, waits), over a kilobyte that tokio would otherwise copy as
        // it spawns, starts and finishes the task.
        tasks.spawn(Box::pin(connection_task(service.clone(), generation, stream, peer, permit, span)));
        while let Some(joined) = tasks.try_join_next() {
            reap(service, joined);
        }
    }
}

/// Admission at `--max-connections`: waits for a slot, meanwhile closing
/// the connection that has waited longest on its peer whenever one has
/// waited long enough (`imports/overload.rs`), looking again every
/// `EVICT_RETRY` as one may become idle long enough meanwhile. Tasks that
/// end are reaped (their slots come back); `Break` if the listener stops
/// first.
async fn wait_for_slot(
    service: &Service,
    limit: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    mut stop: Pin<&mut impl Future<Output = Stop>>,
) -> ControlFlow<Stop, OwnedSemaphorePermit> {
    loop {
        if let Some(idle) = service.policy.overload.roster.evict_longest_idle() {
            service.stats.evicted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("at --max-connections: closing the connection idle longest ({idle:?})");
        }
        tokio::select! {
            permit = limit.clone().acquire_owned() => {
                return ControlFlow::Continue(permit.expect("the semaphore is never closed"));
            }
            () = tokio::time::sleep(EVICT_RETRY) => {}
            why = &mut stop => return ControlFlow::Break(why),
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => reap(service, joined),
        }
    }
}

/// At shutdown (or a removed listener's, once the process shuts down):
/// lets open connections finish for up to `grace`, then closes the rest.
async fn close_at_shutdown(service: &Service, tasks: &mut JoinSet<()>, grace: Duration) {
    // Guests waiting for a new request on a kept-alive connection are told
    // the connection is closed, so they end at a request boundary now
    // rather than hold the shutdown timeout.
    service.policy.overload.roster.shut_down();
    let open = tasks.len();
    if open > 0 {
        tracing::info!("shutting down: waiting up to {grace:?} for {open} open connection(s)");
        let drained = tokio::time::timeout(grace, async {
            while let Some(joined) = tasks.join_next().await {
                reap(service, joined);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout: closing {} connection(s) still open", tasks.len());
            tasks.shutdown().await;
        }
    }
}

/// Lets a removed listener's connections finish on their generation: with
/// no deadline, or closed (spread out) once `--drain-timeout` has passed.
/// Returns whether the process began shutting down meanwhile, which then
/// bounds them instead.
async fn finish_removed(service: &Service, tasks: &mut JoinSet<()>, mut shutdown: watch::Receiver<bool>) -> bool {
    let generation = service.current.get();
    // No more instances for connections that will not come.
    generation.pool.retire();
    let open = tasks.len();
    let drain = service.current.drain_timeout();
    match drain {
        Some(d) if open > 0 => tracing::info!("no longer accepting: {open} open connection(s) may run for {d:?}"),
        _ if open > 0 => tracing::info!("no longer accepting: {open} open connection(s) finish on their own"),
        _ => {}
    }
    let deadline = tokio::time::sleep(drain.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut drained = drain.is_none();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(joined) => reap(service, joined),
                None => return false,
            },
            _ = shutdown.wait_for(|s| *s) => return true,
            () = &mut deadline, if !drained => {
                drained = true;
                generation.drain();
            }
        }
    }
}

fn log_stopped(service: &Service) {
    let s = &service.stats;
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    tracing::info!(
        "stopped: {} connections accepted, {} completed, {} guest errors, {} faults, {} closed for newcomers, \
         {} closed by a drain, {} host panics",
        count(&s.accepted),
        count(&s.completed),
        count(&s.guest_errors),
        count(&s.faults),
        count(&s.evicted),
        count(&s.drained),
        count(&s.panics),
    );
}

/// One connection's task: registered with the overload roster while it
/// runs; the permit is released before spares are refilled, so a waiting
/// client is admitted without waiting for instantiation.
async fn connection_task(
    service: Arc<Service>,
    generation: Arc<Generation>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    span: Arc<ConnSpan>,
) {
    let registration = service.policy.overload.roster.register();
    let signal = registration.signal.clone();
    let served = crate::runtime::session::serve(&generation, &service.stats, stream, peer, signal, &span);
    let served = catching_panics(&service.stats, served, &span);
    // One select rather than a select and a plain await: the connection's
    // future then appears once in the task, which is moved whole when spawned.
    let drains = service.current.drain_timeout().is_some();
    tokio::select! {
        () = served => {}
        // A replaced generation's connection may be closed once it drained.
        () = async {
            generation.drained(registration.id()).await;
            // Seen by the record, written as the connection's store drops.
            span.drained.store(true, Ordering::Relaxed);
        }, if drains => {
            service.stats.drained.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(parent: span.get(), "closed: generation {} drained (--drain-timeout)", generation.id);
        }
    }
    drop(registration);
    drop(permit);
    // Boxed, like instantiation: keeps the task small while it serves.
    Box::pin(generation.pool.refill()).await;
}

/// Runs a connection's future; a panic in it (a host bug, never a guest's
/// doing: guest faults are errors) is logged in the connection's span and
/// counted, and the listener goes on.
async fn catching_panics(stats: &Stats, served: impl Future<Output = ()>, span: &ConnSpan) {
    if let Err(panic) = AssertUnwindSafe(served).catch_unwind().await {
        stats.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(parent: span.get(), "connection task panicked (a host bug; other connections go on): {}", panic_message(&panic));
    }
}

/// Logs a task that ended abnormally: a panic escaping `catch_unwind` (in
/// the refill) or a cancellation other than shutdown's.
fn reap(service: &Service, joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            service.stats.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!("connection task panicked: {}", panic_message(&e.into_panic()));
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(|s| s.as_str())).unwrap_or("?")
}

/// Failed accepts in a row: an exponential pause, and one log line per
/// episode rather than one per failure.
#[derive(Default)]
struct AcceptErrors {
    in_a_row: u64,
    pause: Duration,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.in_a_row += 1;
        self.pause = if self.in_a_row == 1 { ACCEPT_BACKOFF_MIN } else { (self.pause * 2).min(ACCEPT_BACKOFF_MAX) };
        if self.in_a_row == 1 {
            tracing::error!("accept failed: {e}; retrying with backoff up to {ACCEPT_BACKOFF_MAX:?}");
        }
        self.pause
    }

    fn recovered(&mut self) {
        if self.in_a_row > 0 {
            tracing::warn!("accepting again after {} failed accepts", self.in_a_row);
            *self = AcceptErrors::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_panics_is_counted_and_the_next_is_served() {
        let stats = Stats::default();
        let span = ConnSpan::default();
        catching_panics(&stats, async { panic!("a host bug on purpose") }, &span).await;
        let mut served = false;
        catching_panics(&stats, async { served = true }, &span).await;
        assert!(served);
        assert_eq!(stats.panics.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn accept_errors_back_off_exponentially_and_reset() {
        let mut errors = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..12).map(|_| errors.failed(&e)).collect();
        assert_eq!(pauses[0], ACCEPT_BACKOFF_MIN);
        assert_eq!(pauses[1], ACCEPT_BACKOFF_MIN * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), ACCEPT_BACKOFF_MAX);
        errors.recovered();
        assert_eq!(errors.failed(&e), ACCEPT_BACKOFF_MIN);
    }
}
