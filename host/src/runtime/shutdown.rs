//! Shutdown on SIGINT or SIGTERM: the first signal starts a graceful
//! shutdown; a second one exits at once, as users of servers expect when a
//! graceful shutdown takes longer than they will wait.

use anyhow::{Context, Result};
use std::future::Future;
use std::time::Duration;
use tokio::signal::unix::{self, Signal, SignalKind};
use tokio::sync::watch;

/// Installs the handlers (before this returns, so a signal that arrives at
/// once is not missed) and returns a future that resolves on the first
/// signal. From then on, the next signal exits the process.
pub fn signal() -> Result<impl Future<Output = ()>> {
    let mut int = unix::signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut term = unix::signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        let name = next(&mut int, &mut term).await;
        tracing::info!("{name}: no longer accepting connections (a second signal exits at once)");
        tokio::spawn(async move {
            let name = next(&mut int, &mut term).await;
            tracing::warn!("{name} again: exiting at once");
            std::process::exit(match name {
                "SIGINT" => 128 + libc::SIGINT,
                _ => 128 + libc::SIGTERM,
            });
        });
    })
}

/// A flag that becomes true when `shutdown` resolves: the signals for the
/// binary, any future for a caller that runs the host in-process.
pub fn flag_on(shutdown: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tx.send_replace(true);
        // Kept until the process ends, so receivers never see it closed.
        std::future::pending::<()>().await;
    });
    rx
}

/// `flag`, raised `delay` after it: what the listeners stop accepting on,
/// while the readiness probe (`/readyz`) follows `flag` itself. A load
/// balancer checking readiness then takes the host out of rotation while it
/// still accepts, instead of finding its listeners closed
/// (`--shutdown-delay`).
pub fn delayed(flag: watch::Receiver<bool>, delay: Duration) -> watch::Receiver<bool> {
    if delay.is_zero() {
        return flag;
    }
    let (tx, rx) = watch::channel(false);
    let mut flag = flag;
    tokio::spawn(async move {
        if flag.wait_for(|s| *s).await.is_ok() {
            tracing::info!("not ready; still accepting for {delay:?} (--shutdown-delay)");
            tokio::time::sleep(delay).await;
            tx.send_replace(true);
        }
        // Kept until the process ends, so receivers never see it closed.
        std::future::pending::<()>().await;
    });
    rx
}

async fn next(int: &mut Signal, term: &mut Signal) -> &'static str {
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
