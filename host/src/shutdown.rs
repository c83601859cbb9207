//! Shutdown on SIGINT or SIGTERM: the first signal starts a graceful
//! shutdown; a second one exits at once, as users of servers expect when a
//! graceful shutdown takes longer than they will wait.

use anyhow::{Context, Result};
use std::future::Future;
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

/// The same, as a flag every listener can watch: it becomes true on the
/// first signal.
pub fn flag() -> Result<watch::Receiver<bool>> {
    let signal = signal()?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        tx.send_replace(true);
        // Kept until the process ends, so receivers never see it closed.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

async fn next(int: &mut Signal, term: &mut Signal) -> &'static str {
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
