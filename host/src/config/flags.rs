//! The command line. The doc comments here are the `--help` text; option
//! groups are flattened structs so that later commands can share them.

use crate::config::kv::{Backend, KvConfig, KvLimits};
use crate::config::limits::Limits;
use crate::config::units::{
    parse_duration, parse_optional_count, parse_optional_duration, parse_optional_size, parse_size, MaybeLimit,
};
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
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
    Run(Box<RunCommand>),
    Serve(ServeCommand),
    Compile(CompileCommand),
    Bundle(BundleCommand),
    Inspect(InspectCommand),
    Wit(WitCommand),
}

/// The most connections the instance pool can be sized for. Each pool slot
/// reserves address space for a linear memory (4 GiB plus guards), and
/// x86_64 user space is 128 TiB.
pub const MAX_CONNECTIONS: u32 = 20_000;

/// Serve a server-world guest on a TCP port, or run a client-world guest once.
///
/// The guest's world is read from its exports: a guest exporting
/// `netplug:protocol/handler` is served on `--addr`:`--port`; a guest
/// exporting `run` is run once against `--connect`.
#[derive(Parser, Debug)]
pub struct RunCommand {
    /// The guest component (a `.wasm` built for wasm32-wasip2), or a `.cwasm`
    /// that `host compile` precompiled from one (native code: see `host
    /// compile --help`).
    #[arg(value_name = "GUEST.wasm")]
    pub guest: PathBuf,

    #[command(flatten)]
    pub listen: ListenArgs,

    /// Address the client guest connects to (client guests). It is passed to
    /// the guest's `run` as its first argument and is the one address it may
    /// dial besides those of `--allow-connect`.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "port")]
    pub connect: Option<String>,

    #[command(flatten)]
    pub grants: GrantArgs,

    #[command(flatten)]
    pub swap: SwapArgs,

    #[command(flatten)]
    pub guest_config: GuestConfigArgs,

    #[command(flatten)]
    pub kv: KvArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub overload: OverloadArgs,

    /// Compile the guest afresh and leave the compiled-guest cache alone
    /// (by default compilations are cached in `$NETPLUG_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/netplug`, else `~/.cache/netplug`). A `.cwasm` is
    /// never compiled nor cached.
    #[arg(long)]
    pub no_cache: bool,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub admin: AdminArgs,

    /// Arguments passed to a client guest's `run` after the `--connect`
    /// address.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Serve the listeners of a configuration file: several protocols, each on
/// its own address with its own guest, limits and configuration, in one
/// process.
///
/// The file is checked as a whole (every key, every guest) before anything
/// is bound; an error names the file, line and key. SIGHUP reads it again:
/// added listeners start, removed ones stop accepting and finish their
/// connections, a listener whose settings changed is replaced on the same
/// socket, a changed guest file becomes a new generation, and the rest are
/// left alone. A file that does not check leaves everything as it was. The
/// docs/configuration.md lists every key.
#[derive(Parser, Debug)]
pub struct ServeCommand {
    /// The configuration file (TOML). Guest paths in it are relative to it.
    #[arg(value_name = "CONFIG.toml")]
    pub config: PathBuf,

    /// Check the file and every guest in it, print one line, and exit
    /// without binding anything.
    #[arg(long)]
    pub check: bool,

    /// Compile guests afresh and leave the compiled-guest cache alone (see
    /// `host run --help`).
    #[arg(long)]
    pub no_cache: bool,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Where and how a server guest is served.
#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// Port to listen on (server guests). 0 picks a free port; the bound
    /// address is printed on stdout as `listening on ADDR`.
    #[arg(long)]
    pub port: Option<u16>,

    /// IP address to listen on (server guests): 127.0.0.1, ::1, 0.0.0.0...
    #[arg(long, default_value = "127.0.0.1", value_name = "IP", value_parser = parse_ip)]
    pub addr: IpAddr,

    /// Length of the kernel's queue of connections not yet accepted.
    #[arg(long, default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub backlog: u32,

    /// On SIGINT or SIGTERM, how long in-flight connections may run before
    /// they are closed. A second signal exits at once.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,

    /// On SIGINT or SIGTERM, how long to go on accepting after `/readyz`
    /// turns 503, so that a load balancer's health checks take the host out
    /// of rotation before its listeners close (0s: close at once).
    #[arg(long, default_value = "0s", value_parser = parse_delay, value_name = "DURATION")]
    pub shutdown_delay: Duration,
}

/// What a guest may reach beyond its own connection.
#[derive(Args, Debug, Clone)]
pub struct GrantArgs {
    /// Let the guest dial this address through `dialer.connect`. Repeatable.
    /// Every other address is denied.
    #[arg(long = "allow-connect", value_name = "HOST:PORT")]
    pub allow_connect: Vec<String>,

    /// Let a guest that imports `wasi:filesystem` or `wasi:sockets` load.
    /// They are linked with nothing behind them: no preopened directory, no
    /// address a socket may use. Repeatable.
    #[arg(long, value_name = "INTERFACE", value_parser = ["wasi:filesystem", "wasi:sockets"])]
    pub grant: Vec<String>,
}

/// Replacing the guest while serving (server guests).
#[derive(Args, Debug, Clone)]
pub struct SwapArgs {
    /// Reload the guest when its file changes (written in place or renamed
    /// over). SIGHUP reloads at any time, with or without this. New
    /// connections get the new guest as soon as it is loaded; connections
    /// in flight finish on the one they started with. A file that does not
    /// load leaves the current guest serving.
    #[arg(long)]
    pub watch: bool,

    /// How long connections of a replaced guest may go on; past it they are
    /// closed, spread over a few seconds. By default they run to their end.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Option<Duration>,
}

/// What the guest is configured with.
#[derive(Args, Debug, Clone)]
pub struct GuestConfigArgs {
    /// A configuration value the guest reads through `wasi:config/store`
    /// (`get("KEY")`). Repeatable; of a repeated KEY the last value wins.
    /// VALUE is everything after the first `=`, and may hold `=`, spaces or
    /// nothing. The guest sees these pairs only, never the host's
    /// environment variables.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_pair)]
    pub config: Vec<(String, String)>,
}

/// Shared state: the `wasi:keyvalue` store every connection of the listener
/// shares.
#[derive(Args, Debug, Clone)]
pub struct KvArgs {
    /// Grant `wasi:keyvalue` (`store`, `atomics`, `batch`): one store shared
    /// by every connection. `memory` keeps it in the host's memory until it
    /// exits; `redis://[USER:PASS@]HOST:PORT[/DB]` keeps it on a Redis
    /// server and `redis+cluster://HOST:PORT,HOST:PORT,...` on a Redis
    /// Cluster, shared by every host pointed there (buckets are key
    /// prefixes; the server's `maxmemory` bounds it); anything else is the
    /// path of a database file (redb) that survives restarts, created if
    /// missing in a directory that must exist. Without it, a guest
    /// importing `wasi:keyvalue` is refused. A path must contain a `/` or
    /// end in `.redb` (`./cache.redb`), so that a misspelt `memory` is an
    /// error, not a new file.
    // Checked by `config` rather than by clap, whose message would repeat
    // the value, and with it a URL's password.
    #[arg(long, value_name = "memory|URL|PATH")]
    pub kv: Option<String>,

    /// What the whole store may hold: keys, values and 96 bytes per
    /// entry, counted by the host. Past it, a write that would grow the
    /// store fails with a `store full:` error; reads, deletes and writes
    /// that do not grow it go on. It keeps one listener's shared state
    /// from taking the machine's memory (or disk) with it. A Redis store
    /// is bounded by the server's own `maxmemory` instead.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub kv_max_bytes: u64,

    /// Longest key a guest may use; a longer one fails with an error.
    #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
    pub kv_max_key_size: u64,

    /// Largest value a guest may store; a larger one fails with an error.
    /// Values are binary-safe.
    #[arg(long, default_value = "4MiB", value_parser = parse_size, value_name = "SIZE")]
    pub kv_max_value_size: u64,

    /// Key-value operations one connection may make, or `unlimited`; past
    /// it every operation fails with an error.
    #[arg(long, default_value = "unlimited", value_parser = parse_optional_count, value_name = "N")]
    pub kv_max_ops: MaybeLimit<u64>,
}

/// Limits on each connection's guest instance.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Connections served at once. When all are busy (and none has been idle
    /// long enough to be closed, see --overload-threshold) the host stops
    /// accepting and new connections wait in the listen backlog. The
    /// instance pool is sized to this.
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS as i64))]
    pub max_connections: u32,

    /// Connections one guest instance may serve, one after another. 1 (the
    /// default) gives every connection a fresh instance. Above 1, an
    /// instance that finished a connection cleanly (no trap, no connection
    /// kept) serves the next one, which is faster, but whatever the guest
    /// left in its memory is then visible to the next connection it serves:
    /// use it only for guests trusted with that.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connections_per_instance: u32,

    /// Linear memory a guest instance may grow to; growth past it fails
    /// inside the guest. Units: B, KiB, MiB, GiB (K, M, G: also 1024-based);
    /// 64KiB to 4GiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_memory, value_name = "SIZE")]
    pub max_memory: u64,

    /// Guest execution time allowed per connection (time spent waiting on
    /// the peer does not count); past it the instance is interrupted.
    /// Examples: 500ms, 1s, 2m.
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
    /// once, its own connection included; past it `dialer.connect` returns
    /// `resource-limit`.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_resources: u32,

    /// Log lines one connection's guest may write (log interface, stdout and
    /// stderr together); the rest is dropped with one notice.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_log_lines: u32,

    /// Log bytes one connection's guest may write; the rest is dropped with
    /// one notice.
    #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_log_bytes: u64,
}

/// What the host does when connections run short, in the spirit of nginx
/// (idle keep-alive connections are closed first when connections run out)
/// and Envoy's overload manager (timeouts shrink under pressure).
#[derive(Args, Debug, Clone)]
pub struct OverloadArgs {
    /// Open connections, in percent of --max-connections, past which the host
    /// counts as overloaded: from then on every new wait on a peer is bounded
    /// by --overload-idle-timeout instead of --idle-timeout. 100 turns the
    /// shrinking off.
    #[arg(long, default_value_t = 80, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub overload_threshold: u8,

    /// The idle timeout while overloaded.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub overload_idle_timeout: Duration,
}

/// How the host logs.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Most detailed level of the host's log (stderr). `RUST_LOG`, if set,
    /// takes precedence and accepts tracing's full filter syntax (for
    /// example `RUST_LOG=info,wasmtime=debug`).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: LogLevel,

    /// Log traps with the guest's full wasm backtrace.
    #[arg(short, long)]
    pub verbose: bool,

    /// `text` (one line per event) or `json` (one JSON object per line,
    /// every field a JSON field) [default: text, or the configuration
    /// file's `log-format`].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Each connection's record (one `info` line when it closes: duration,
    /// bytes in and out, outcome): `on` or `off` [default: on, or the
    /// configuration file's `access-log`].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub access_log: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{text}`: expected on or off")),
    }
}

/// The admin endpoint: metrics, health probes, reload.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// Serve HTTP on this address for operators: `GET /metrics`
    /// (Prometheus), `GET /livez`, `GET /readyz`, `POST /reload`. `IP:PORT`,
    /// or a bare `PORT` on 127.0.0.1. Off by default. It has no
    /// authentication: keep it on loopback or a private network.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_admin_addr)]
    pub admin_addr: Option<std::net::SocketAddr>,
}

/// An admin address: `IP:PORT`, or `PORT` alone on the loopback address.
pub(crate) fn parse_admin_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| format!("`{text}` is not IP:PORT or PORT (examples: 127.0.0.1:9901, 9901)"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing_subscriber::filter::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => Self::ERROR,
            LogLevel::Warn => Self::WARN,
            LogLevel::Info => Self::INFO,
            LogLevel::Debug => Self::DEBUG,
            LogLevel::Trace => Self::TRACE,
        }
    }
}

/// Precompile a guest for this host: a `.cwasm` that `host run` and `host
/// inspect` load instead of compiling.
///
/// The guest is admitted as `host run` would admit it (a component of the
/// server or client world, importing only what the host grants) and
/// compiled with the settings `host run` compiles with. The `.cwasm` fits
/// this host build only: another one refuses it and asks for it to be
/// compiled again. The file is written whole or not at all, and one line
/// on stdout says what was written.
///
/// A `.cwasm` is native code that runs inside the host process, outside the
/// sandbox: load only `.cwasm` files you trust as you trust the host binary,
/// kept where only trusted users can write.
#[derive(Parser, Debug)]
pub struct CompileCommand {
    /// The guest component (a `.wasm` built for wasm32-wasip2).
    #[arg(value_name = "GUEST.wasm")]
    pub guest: PathBuf,

    /// Where to write the precompiled guest [default: GUEST.wasm with the
    /// extension `.cwasm`]. An existing file is replaced.
    #[arg(short, long, value_name = "GUEST.cwasm")]
    pub output: Option<PathBuf>,

    /// Admit a guest that imports `wasi:filesystem` or `wasi:sockets`, as
    /// `host run --grant` does, or `wasi:keyvalue`, as `host run --kv` does;
    /// `host run` checks the imports again and needs the same `--grant` (or
    /// `--kv`) to load the `.cwasm`. Repeatable.
    #[arg(long, value_name = "INTERFACE", value_parser = ["wasi:filesystem", "wasi:sockets", "wasi:keyvalue"])]
    pub grant: Vec<String>,
}

/// Bundle a server guest into one component that runs on a stock WebAssembly
/// runtime, without this host: `wasmtime run -S inherit-network=y APP.wasm
/// --listen 127.0.0.1:12345`.
///
/// The guest, unchanged, is composed with this repository's adapter: a
/// provider of what the guest imports (`netplug:protocol` `types`, `log`,
/// `dialer` and `wasi:config/store`, over the standard `wasi:sockets`,
/// `wasi:io` and `wasi:clocks`), and a driver that exports `wasi:cli/run`,
/// listens and hands each connection to the guest's `handler`. The bundle
/// imports only standard WASI 0.2 interfaces. Its one instance serves the
/// connections one after another, without the host's limits (no CPU
/// budget, no byte quotas, no per-connection isolation): see
/// docs/portability.md. A guest that imports what a stock runtime lacks
/// (`wasi:keyvalue`) is refused, as is a client guest. The file is written
/// whole or not at all, and one line on stdout says what was written.
#[derive(Parser, Debug)]
pub struct BundleCommand {
    /// The server guest component (a `.wasm` built for wasm32-wasip2).
    #[arg(value_name = "GUEST.wasm")]
    pub guest: PathBuf,

    /// Where to write the bundled component. An existing file is replaced.
    #[arg(short, long, value_name = "APP.wasm")]
    pub output: PathBuf,
}

/// Print a guest's world, imports and exports, and what the host would grant
/// or refuse.
#[derive(Parser, Debug)]
pub struct InspectCommand {
    /// The guest component (a `.wasm` built for wasm32-wasip2), or a `.cwasm`
    /// from `host compile`.
    #[arg(value_name = "GUEST.wasm")]
    pub guest: PathBuf,
}

/// Print the WIT contract this host speaks (wit/netplug.wit, package
/// netplug:protocol), to build a guest against.
#[derive(Parser, Debug)]
pub struct WitCommand {
    /// Also print the packages it depends on (wit/deps/: wasi:config,
    /// wasi:keyvalue), each file after a `// wit/PATH` line.
    #[arg(long)]
    pub all: bool,
}

/// A duration that may be zero.
pub(crate) fn parse_delay(text: &str) -> Result<Duration, String> {
    if matches!(text.trim(), "0" | "0s" | "0ms") {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// An IP address, also accepted in brackets (`[::1]`).
fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.trim_matches(['[', ']'])
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address (examples: 127.0.0.1, ::1, 0.0.0.0)"))
}

/// A `--config` pair: the key up to the first `=`, which must not be empty,
/// and the rest as the value.
pub(crate) fn parse_config_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some(("", _)) => Err(format!("`{text}` has an empty key: expected KEY=VALUE")),
        Some((key, value)) => Ok((key.to_string(), value.to_string())),
        None => Err(format!("`{text}` has no `=`: expected KEY=VALUE (for example greeting=HOWDY)")),
    }
}

/// A linear-memory size: at least one wasm page, at most 4 GiB.
pub(crate) fn parse_memory(text: &str) -> Result<u64, String> {
    let n = parse_size(text)?;
    if !(64 << 10..=4 << 30).contains(&n) {
        return Err(format!("`{text}` is out of range: expected 64KiB (one wasm page) to 4GiB"));
    }
    Ok(n)
}

impl From<&LimitArgs> for Limits {
    fn from(args: &LimitArgs) -> Self {
        Limits {
            max_connections: args.max_connections,
            max_memory: args.max_memory,
            cpu_timeout: args.cpu_timeout,
            idle_timeout: args.idle_timeout,
            max_lifetime: args.max_lifetime.0,
            max_bytes_in: args.max_bytes_in.0,
            max_bytes_out: args.max_bytes_out.0,
            max_resources: args.max_resources,
            max_log_lines: args.max_log_lines,
            max_log_bytes: args.max_log_bytes,
            connections_per_instance: args.connections_per_instance,
        }
    }
}

impl KvArgs {
    /// The store these flags ask for: `None` without `--kv`.
    pub fn config(&self) -> anyhow::Result<Option<KvConfig>> {
        let Some(text) = self.kv.as_deref() else { return Ok(None) };
        let backend = Backend::parse(text).map_err(|e| anyhow::anyhow!("--kv {e}"))?;
        let limits = KvLimits {
            max_bytes: self.kv_max_bytes,
            max_key_size: self.kv_max_key_size,
            max_value_size: self.kv_max_value_size,
            max_ops: self.kv_max_ops.0,
        };
        Ok(Some(KvConfig { backend, limits }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_parse() {
        let cli = Cli::try_parse_from(["host", "run", "g.wasm", "--port", "0"]).unwrap();
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.limits.max_memory, 16 << 20);
        assert_eq!(run.limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(run.limits.max_lifetime, MaybeLimit(None));
        assert_eq!(run.listen.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn compile_takes_an_output_and_grants() {
        let cli =
            Cli::try_parse_from(["host", "compile", "g.wasm", "-o", "out.cwasm", "--grant", "wasi:sockets"]).unwrap();
        let Command::Compile(compile) = cli.command else { panic!("not compile") };
        assert_eq!(compile.output, Some(PathBuf::from("out.cwasm")));
        assert_eq!(compile.grant, ["wasi:sockets"]);
        assert!(Cli::try_parse_from(["host", "compile", "g.wasm", "--grant", "wasi:http"]).is_err());
    }

    #[test]
    fn ranges_are_checked_by_the_parser() {
        for bad in [
            &["--max-connections", "0"][..],
            &["--max-connections", "20001"],
            &["--backlog", "0"],
            &["--max-memory", "1K"],
            &["--overload-threshold", "101"],
            &["--addr", "localhost"],
            &["--connect", "127.0.0.1:1"],
            &["--config", "nonsense"],
            &["--config", "=value"],
        ] {
            let args = ["host", "run", "g.wasm", "--port", "0"].iter().chain(bad);
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from(["host", "run", "g.wasm", "--port", "0", "--addr", "[::1]"]).unwrap();
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.listen.addr, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn config_pairs_split_at_the_first_equals_sign() {
        let args =
            ["host", "run", "g.wasm", "--port", "0", "--config", "a=b = c", "--config", "empty=", "--config", "a=2"];
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Run(run) = cli.command else { panic!("not run") };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(run.guest_config.config, [pair("a", "b = c"), pair("empty", ""), pair("a", "2")]);
    }
}
