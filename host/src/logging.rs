//! The host's log: `tracing` events to stderr, one line each (each written
//! with a single `write`, so lines from concurrent connections never
//! interleave). Connection events carry their span's listener and peer.

use crate::cli::LogLevel;
use anyhow::{Context, Result};
use std::io::IsTerminal;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `RUST_LOG`, when set, is the whole filter (for
/// example `RUST_LOG=info,wasmtime=debug`); otherwise `--log-level` applies
/// to the host and its guests, and dependencies log warnings and errors.
pub fn init(level: LogLevel) -> Result<()> {
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let installed = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            let filter = EnvFilter::try_new(&directives).with_context(|| format!("invalid RUST_LOG `{directives}`"))?;
            fmt.with_env_filter(filter).try_init().map_err(|e| e.to_string())
        }
        // A static per-target filter rather than an `EnvFilter`: it keeps no
        // per-span state, so entering and leaving a connection's span on
        // every poll costs no lock.
        _ => {
            let level = match level {
                LogLevel::Error => LevelFilter::ERROR,
                LogLevel::Warn => LevelFilter::WARN,
                LogLevel::Info => LevelFilter::INFO,
                LogLevel::Debug => LevelFilter::DEBUG,
                LogLevel::Trace => LevelFilter::TRACE,
            };
            let filter = Targets::new()
                .with_default(LevelFilter::WARN.min(level))
                .with_target(env!("CARGO_CRATE_NAME"), level)
                .with_target("host", level)
                .with_target(crate::guest_log::TARGET, level);
            fmt.with_max_level(LevelFilter::TRACE).finish().with(filter).try_init().map_err(|e| e.to_string())
        }
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}
