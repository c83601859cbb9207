//! The host's log: `tracing` events to stderr, one line each (each written
//! with a single `write`, so lines from concurrent connections never
//! interleave). Connection events carry their span's listener and peer.

use crate::cli::LogLevel;
use anyhow::{Context, Result};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `RUST_LOG`, when set, is the whole filter (for
/// example `RUST_LOG=info,wasmtime=debug`); otherwise `--log-level` applies
/// to the host and its guests, and dependencies log warnings and errors.
pub fn init(level: LogLevel) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).with_context(|| format!("invalid RUST_LOG `{directives}`"))?
        }
        _ => {
            let level = match level {
                LogLevel::Error => "error",
                LogLevel::Warn => "warn",
                LogLevel::Info => "info",
                LogLevel::Debug => "debug",
                LogLevel::Trace => "trace",
            };
            let host = env!("CARGO_CRATE_NAME");
            EnvFilter::try_new(format!("warn,{host}={level},host={level},{}={level}", crate::guest_log::TARGET))
                .context("invalid log filter")?
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}
