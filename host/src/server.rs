//! Serving a server guest: the listener, the accept loop, and the handler
//! that runs one fresh guest instance per connection.

use crate::bindings::server::{Server, ServerPre};
use crate::connection::Connection;
use crate::outcome::{describe_fault, print_backtrace};
use crate::state::{new_store, GuestState, Policy, Stdout, Stop, EPOCH_TICKS_PER_CHECK};
use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wasmtime::Store;

/// Everything a connection handler needs, built once per run.
pub struct Service {
    pub pre: ServerPre<GuestState>,
    pub policy: Arc<Policy>,
    /// The guest's file name, for log lines.
    pub guest: String,
    pub stats: Stats,
    /// Instances that finished a connection cleanly and may serve another
    /// (only with `--connections-per-instance` above 1).
    idle: Mutex<Vec<Instance>>,
    /// Fresh instances, never used, made ahead of time so that a new
    /// connection does not wait for instantiation.
    spares: Mutex<Spares>,
}

#[derive(Default)]
struct Spares {
    ready: Vec<Instance>,
    /// Being instantiated now; counted so that concurrent refills never
    /// make more than `SPARE_INSTANCES`, which the pool is sized for.
    making: u32,
}

/// Fresh instances kept ready. Each serves exactly one connection like any
/// other fresh instance; it is only made before the connection arrives.
pub const SPARE_INSTANCES: u32 = 2;

/// A guest instance and its store.
struct Instance {
    store: Store<GuestState>,
    guest: Server,
    /// Connections it has served.
    served: u32,
}

impl Service {
    pub fn new(pre: ServerPre<GuestState>, policy: Arc<Policy>, guest: String) -> Self {
        Service {
            pre,
            policy,
            guest,
            stats: Stats::default(),
            idle: Mutex::new(Vec::new()),
            spares: Mutex::new(Spares::default()),
        }
    }

    /// An instance ready to serve: one kept for reuse (if reuse is on), else
    /// a fresh spare; `None` if the caller must instantiate.
    fn take_ready(&self) -> Option<Instance> {
        if self.policy.limits.connections_per_instance > 1 {
            if let Some(instance) = self.idle.lock().unwrap().pop() {
                return Some(instance);
            }
        }
        self.spares.lock().unwrap().ready.pop()
    }

    /// Instantiates fresh spares up to `SPARE_INSTANCES`. Called once a
    /// connection is over, off its client's path.
    async fn refill_spares(&self) {
        loop {
            {
                let mut spares = self.spares.lock().unwrap();
                if spares.ready.len() as u32 + spares.making >= SPARE_INSTANCES {
                    return;
                }
                spares.making += 1;
            }
            let mut store = new_store(self.pre.engine(), &self.policy, "spare".to_string(), Stdout::Log);
            let made = self.pre.instantiate_async(&mut store).await;
            let mut spares = self.spares.lock().unwrap();
            spares.making -= 1;
            match made {
                Ok(guest) => spares.ready.push(Instance { store, guest, served: 0 }),
                Err(e) => {
                    // Instantiation will be retried, and reported, inline.
                    debug!("listener", "could not make a spare instance: {e}");
                    return;
                }
            }
        }
    }

    /// Keeps an instance for the next connection if reuse is on, it has
    /// connections left, it kept no connection resource and there is room;
    /// otherwise drops it (freeing its pool slot).
    fn put_back(&self, instance: Instance) {
        let limits = &self.policy.limits;
        let state = instance.store.data();
        if instance.served >= limits.connections_per_instance || state.live_connections > 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < limits.max_idle_instances() as usize {
            idle.push(instance);
        }
    }
}

/// Connection counts, reported at shutdown.
#[derive(Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub completed: AtomicU64,
    pub guest_errors: AtomicU64,
    pub faults: AtomicU64,
}

/// Binds the listening socket with the given backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .with_context(|| format!("cannot create a socket for {addr}"))?;
    // Restarting the host must not wait for old connections in TIME_WAIT.
    socket.set_reuseaddr(true).with_context(|| format!("cannot set SO_REUSEADDR on {addr}"))?;
    socket.bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    socket.listen(backlog).with_context(|| format!("cannot listen on {addr}"))
}

/// Accepts connections until `shutdown` resolves, then lets in-flight ones
/// finish for up to `grace` and closes the rest.
///
/// At most `max_connections` run at once: when all are busy the loop stops
/// accepting, so new clients wait in the listen backlog instead of failing
/// for want of a pool slot. A failing connection is logged and counted; it
/// never ends the loop.
pub async fn run(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<()> {
    let limit = Arc::new(Semaphore::new(service.policy.limits.max_connections as usize));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Reap finished tasks so the set does not grow without end.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                service.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let service = service.clone();
                tasks.spawn(async move {
                    serve_connection(&service, stream, peer).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Typically out of file descriptors: wait for some to close.
                error!("listener", "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let open = tasks.len();
    if open > 0 {
        info!("listener", "shutting down: waiting up to {grace:?} for {open} open connection(s)");
        let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!("listener", "shutdown timeout: closing {} connection(s) still open", tasks.len());
            tasks.shutdown().await;
        }
    }
    let s = &service.stats;
    info!(
        "listener",
        "stopped: {} connections accepted, {} completed, {} guest errors, {} faults",
        s.accepted.load(Ordering::Relaxed),
        s.completed.load(Ordering::Relaxed),
        s.guest_errors.load(Ordering::Relaxed),
        s.faults.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Runs one connection in a guest instance (a fresh one unless instance
/// reuse is on) and logs how it ended.
async fn serve_connection(service: &Service, stream: TcpStream, peer: SocketAddr) {
    let source = peer.to_string();
    // Small protocol messages go out at once rather than waiting on Nagle.
    let _ = stream.set_nodelay(true);
    let (mut store, reused, served) = match service.take_ready() {
        Some(Instance { mut store, guest, served }) => {
            store.data_mut().reset_for_connection(source.clone());
            store.set_epoch_deadline(EPOCH_TICKS_PER_CHECK);
            (store, Some(guest), served)
        }
        None => (new_store(service.pre.engine(), &service.policy, source.clone(), Stdout::Log), None, 0),
    };
    let stop = store.data().stop_signal();
    let call = async {
        let guest = match reused {
            Some(guest) => guest,
            // Boxed: instantiation's future is large and short-lived; inline,
            // it would size every connection's task for the whole
            // connection (likewise `refill_spares` below).
            None => Box::pin(service.pre.instantiate_async(&mut store)).await?,
        };
        let conn = store.data_mut().table.push(Connection::accepted(stream, peer))?;
        store.data_mut().live_connections += 1;
        let result = guest.netplug_protocol_handler().call_handle(&mut store, conn).await?;
        Ok::<_, wasmtime::Error>((result, guest))
    };
    let result = tokio::select! {
        biased;
        result = call => result.map_err(Fault::Trap),
        stop = stop => Err(Fault::Stopped(stop)),
    };
    let stats = &service.stats;
    match result {
        Ok((result, guest)) => {
            match result {
                Ok(()) => {
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                    debug!(&source, "closed");
                }
                Err(reason) => {
                    stats.guest_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(&source, "guest {} returned an error: {reason}", service.guest);
                }
            }
            // The instance ended cleanly, so it may serve again.
            service.put_back(Instance { store, guest, served: served + 1 });
        }
        Err(fault) => {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            let reason = match &fault {
                Fault::Trap(err) => {
                    if service.policy.verbose {
                        print_backtrace(&source, err);
                    }
                    describe_fault(err, store.data())
                }
                Fault::Stopped(stop) => stop.to_string(),
            };
            error!(&source, "guest {} closed: {reason}", service.guest);
            // Free the slot and whatever the guest held before refilling.
            drop(store);
        }
    }
    Box::pin(service.refill_spares()).await;
}

/// Why a connection's guest call did not return.
enum Fault {
    Trap(wasmtime::Error),
    Stopped(Stop),
}
