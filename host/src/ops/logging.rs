//! The host's log: `tracing` events to stderr, one line each (each written
//! with a single `write`, so lines from concurrent connections never
//! interleave). Connection events carry their span's listener and peer.

use anyhow::{Context, Result};
use std::io::IsTerminal;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `RUST_LOG`, when set, is the whole filter (for
/// example `RUST_LOG=info,wasmtime=debug`); otherwise `--log-level` applies
/// to the host and its guests, and dependencies log warnings and errors.
/// With `json`, every line is one JSON object (an event's fields in
/// `fields`, its connection's in `span`); a span's field must not be called
/// `name`, which the formatter writes in `span` for the span's own name, a
/// key twice that parsers read differently. `access_log` false drops the
/// connection records (target `netplug::record`).
pub fn init(level: LevelFilter, json: bool, access_log: bool) -> Result<()> {
    let layer = match json {
        // Colors on a terminal, in the default format; elsewhere the same
        // text, written for less (`log_format.rs`).
        false if std::io::stderr().is_terminal() => tracing_subscriber::fmt::layer()
            .with_timer(crate::ops::log_time::LogTime)
            .with_writer(std::io::stderr)
            .with_ansi(true)
            .with_target(true)
            .boxed(),
        false => tracing_subscriber::fmt::layer()
            .event_format(crate::ops::log_format::PlainText)
            .fmt_fields(crate::ops::log_format::PlainFields)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .boxed(),
        true => tracing_subscriber::fmt::layer()
            .json()
            .with_timer(crate::ops::log_time::LogTime)
            .with_writer(std::io::stderr)
            .with_target(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(layer);
    let installed = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            let mut filter =
                EnvFilter::try_new(&directives).with_context(|| format!("invalid RUST_LOG `{directives}`"))?;
            if !access_log {
                filter = filter.add_directive(format!("{}=off", RECORD_TARGET).parse()?);
            }
            registry.with(filter).try_init().map_err(|e| e.to_string())
        }
        // A static per-target filter rather than an `EnvFilter`: it keeps no
        // per-span state, so entering and leaving a connection's span on
        // every poll costs no lock.
        _ => {
            let records = if access_log { level } else { LevelFilter::OFF };
            let filter = Targets::new()
                .with_default(LevelFilter::WARN.min(level))
                .with_target(env!("CARGO_CRATE_NAME"), level)
                .with_target(RECORD_TARGET, records)
                .with_target("host", level)
                .with_target(GUEST_TARGET, level);
            registry.with(filter).try_init().map_err(|e| e.to_string())
        }
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// The target of connection records (`--access-log off` turns it off).
pub const RECORD_TARGET: &str = "netplug::record";

/// The target of guest lines, so `RUST_LOG` can single them out.
pub const GUEST_TARGET: &str = "guest";
