//! Graceful shutdown on SIGINT or SIGTERM.

use anyhow::{Context, Result};
use std::future::Future;
use tokio::signal::unix::{self, SignalKind};

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed
/// before this returns, so a signal that arrives at once is not missed.
pub fn signal() -> Result<impl Future<Output = ()>> {
    let mut int = unix::signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut term = unix::signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        info!("listener", "{name}: no longer accepting connections");
    })
}
