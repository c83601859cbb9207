//! Command-line interface. The doc comments here are the `--help` text.

use crate::limits::{MaybeLimit, parse_duration, parse_optional_duration, parse_optional_size, parse_size};
use crate::logging::Level;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Run network protocols as sandboxed WebAssembly components.
///
/// The host owns the TCP sockets; each accepted connection is handed to a
/// fresh instance of the guest component, which holds only the protocol logic.
#[derive(Parser, Debug)]
#[command(name = "host", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Run(RunCommand),
    Inspect(InspectCommand),
}

/// Serve a server-world guest on a TCP port, or run a client-world guest once.
///
/// The guest's world is read from its exports: a guest exporting
/// `netplug:protocol/handler` is served on `--addr`:`--port`; a guest
/// exporting `run` is run once against `--connect`.
#[derive(Parser, Debug)]
pub struct RunCommand {
    /// The guest component (a `.wasm` built for wasm32-wasip2).
    #[arg(value_name = "GUEST.wasm")]
    pub guest: PathBuf,

    /// Port to listen on (server guests). 0 picks a free port; the bound
    /// address is printed on stdout as `listening on ADDR`.
    #[arg(long)]
    pub port: Option<u16>,

    /// IP address to listen on (server guests).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub addr: String,

    /// Length of the kernel's queue of connections not yet accepted.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub backlog: u32,

    /// Address the client guest connects to (client guests). It is passed to
    /// the guest's `run` as its first argument and is the one address it may
    /// dial besides those of `--allow-connect`.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,

    /// Let the guest dial this address through `dialer.connect`. Repeatable.
    /// Every other address is denied.
    #[arg(long = "allow-connect", value_name = "HOST:PORT")]
    pub allow_connect: Vec<String>,

    /// Let a guest that imports `wasi:filesystem` or `wasi:sockets` load.
    /// They are linked with nothing behind them: no preopened directory, no
    /// address a socket may use. Repeatable.
    #[arg(long, value_name = "INTERFACE", value_parser = ["wasi:filesystem", "wasi:sockets"])]
    pub grant: Vec<String>,

    /// Connections served at once. When all are busy the host stops accepting
    /// and new connections wait in the listen backlog. The instance pool is
    /// sized to this.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_connections: u32,

    /// Connections one guest instance may serve, one after another. 1 (the
    /// default) gives every connection a fresh instance. Above 1, an
    /// instance that finished a connection cleanly (no trap, no connection
    /// kept) serves the next one, which is faster, but whatever the guest
    /// left in its memory is then visible to the next connection it serves:
    /// use it only for guests trusted with that.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub connections_per_instance: u32,

    /// Linear memory a guest instance may grow to; growth past it fails
    /// inside the guest. Units: B, KiB, MiB, GiB (or K, M, G).
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_memory: u64,

    /// Guest execution time allowed per connection (time spent waiting on
    /// the peer does not count); past it the instance is interrupted.
    /// Units: ms, s, m, h.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub cpu_timeout: Duration,

    /// How long a `send` or `recv` may wait on the peer before it fails with
    /// `timed-out`. Also bounds `dialer.connect`.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Wall-clock time a connection may live in all, or `unlimited`.
    #[arg(long, default_value = "unlimited", value_parser = parse_optional_duration, value_name = "DURATION")]
    pub max_lifetime: MaybeLimit<Duration>,

    /// Bytes a connection may receive, or `unlimited`; past it `recv`
    /// returns `quota-exceeded`.
    #[arg(long, default_value = "unlimited", value_parser = parse_optional_size, value_name = "SIZE")]
    pub max_bytes_in: MaybeLimit<u64>,

    /// Bytes a connection may send, or `unlimited`; a `send` that would pass
    /// it sends nothing and returns `quota-exceeded`.
    #[arg(long, default_value = "unlimited", value_parser = parse_optional_size, value_name = "SIZE")]
    pub max_bytes_out: MaybeLimit<u64>,

    /// Host resources (connections, streams) one guest instance may hold at
    /// once; past it `dialer.connect` returns `resource-limit`.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_resources: u32,

    /// Log lines one connection's guest may write (log interface, stdout and
    /// stderr together); the rest is dropped with one notice.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_log_lines: u32,

    /// Log bytes one connection's guest may write; the rest is dropped with
    /// one notice.
    #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_log_bytes: u64,

    /// On SIGINT or SIGTERM, how long in-flight connections may run before
    /// they are closed.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,

    /// Most detailed host log level written to stderr.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: Level,

    /// Compile the guest afresh and leave the compiled-guest cache alone
    /// (by default compilations are cached in `$NETPLUG_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/netplug`, else `~/.cache/netplug`).
    #[arg(long)]
    pub no_cache: bool,

    /// Log traps with the guest's full wasm backtrace.
    #[arg(short, long)]
    pub verbose: bool,

    /// Arguments passed to a client guest's `run` after the `--connect`
    /// address.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Print a guest's world, imports and exports, and what the host would grant
/// or refuse.
#[derive(Parser, Debug)]
pub struct InspectCommand {
    /// The guest component (a `.wasm` built for wasm32-wasip2).
    #[arg(value_name = "GUEST.wasm")]
    pub guest: PathBuf,
}
