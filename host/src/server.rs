//! Serving a server guest: the listener, the accept loop, and the handler
//! that runs one fresh guest instance per connection.

use crate::bindings::server::ServerPre;
use crate::connection::Connection;
use crate::outcome::{describe_fault, print_backtrace, Outcome};
use crate::state::{new_store, GuestState, Policy, Stdout};
use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Everything a connection handler needs, built once per run.
pub struct Service {
    pub pre: ServerPre<GuestState>,
    pub policy: Arc<Policy>,
    /// The guest's file name, for log lines.
    pub guest: String,
    pub stats: Stats,
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

/// Runs one connection in a fresh guest instance and logs how it ended.
async fn serve_connection(service: &Service, stream: TcpStream, peer: SocketAddr) {
    let source = peer.to_string();
    // Small protocol messages go out at once rather than waiting on Nagle.
    let _ = stream.set_nodelay(true);
    let mut store = new_store(service.pre.engine(), &service.policy, source.clone(), Stdout::Log);
    let call = async {
        let guest = service.pre.instantiate_async(&mut store).await?;
        let conn = store.data_mut().table.push(Connection::accepted(stream, peer))?;
        guest.netplug_protocol_handler().call_handle(&mut store, conn).await
    };
    let result = match service.policy.limits.max_lifetime {
        // Also bounds a guest parked in a WASI call, which epochs cannot
        // interrupt; dropping the call drops the instance and its socket.
        Some(lifetime) => tokio::time::timeout(lifetime, call).await.unwrap_or_else(|_| {
            Err(wasmtime::Error::msg(format!(
                "connection lifetime reached (--max-lifetime {lifetime:?})"
            )))
        }),
        None => call.await,
    };
    let outcome = match result {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(reason)) => Outcome::GuestError(reason),
        Err(err) => {
            let reason = describe_fault(&err, store.data());
            if service.policy.verbose {
                print_backtrace(&source, &err);
            }
            Outcome::Fault(reason)
        }
    };
    let stats = &service.stats;
    match outcome {
        Outcome::Done => {
            stats.completed.fetch_add(1, Ordering::Relaxed);
            debug!(&source, "closed");
        }
        Outcome::GuestError(reason) => {
            stats.guest_errors.fetch_add(1, Ordering::Relaxed);
            warn!(&source, "guest {} returned an error: {reason}", service.guest);
        }
        Outcome::Fault(reason) => {
            stats.faults.fetch_add(1, Ordering::Relaxed);
            error!(&source, "guest {} closed: {reason}", service.guest);
        }
    }
}
