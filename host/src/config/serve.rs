//! What the host serves, validated: its listeners, each with its guest and
//! the settings it is sandboxed with, and what the process shares. `host
//! serve` builds it from a configuration file (`file.rs`), `host run` from
//! its flags as a single listener; the runtime serves both the same way
//! (`runtime/server.rs`).
//!
//! Defaults are stated once, by the flags (`flags.rs`): a file's listener
//! starts from the flags' values with nothing given and applies its keys
//! over them, and both go through `GuestSettings::from_args`.

use crate::config::flags::{KvArgs, LimitArgs, OverloadArgs, RunCommand};
use crate::config::kv::KvConfig;
use crate::config::limits::Limits;
use anyhow::Result;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The process's listeners and what they share.
#[derive(Debug)]
pub struct ServeConfig {
    pub source: Source,
    pub listeners: Vec<ListenerConfig>,
    /// How long connections may run after SIGINT or SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long to go on accepting after readiness turns false.
    pub shutdown_delay: Duration,
    pub pool: PoolSize,
    /// The admin endpoint's address, if any.
    pub admin_address: Option<SocketAddr>,
    /// Where compiled guests are cached; `None` with `--no-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Guest faults are logged with their wasm backtrace.
    pub verbose: bool,
}

/// Where the listeners come from, which decides what a reload (SIGHUP,
/// `POST /reload`) does and how the host names things in its output.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `host run`'s flags: one listener, named after its guest file. A
    /// reload loads its guest file again.
    Flags,
    /// `host serve`'s file: a reload reads it again and applies the
    /// difference.
    File(PathBuf),
}

/// The engine's pool of instance slots, shared by every listener.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSize {
    pub instances: u32,
    /// The largest linear memory a slot takes.
    pub max_memory: u64,
}

/// One listener, validated and with its defaults applied.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub settings: ListenerSettings,
    /// Where its settings were given, for errors found later (loading the
    /// guest, binding the address).
    pub origin: Origin,
}

/// Everything that makes one listener what it is. A reload that changes
/// any of these (other than the guest file's contents, which make a new
/// generation) replaces the listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub backlog: u32,
    /// Reload when the guest file changes.
    pub watch: bool,
    /// How long a replaced generation's connections may run.
    pub drain_timeout: Option<Duration>,
    pub guest: GuestSettings,
}

/// A guest and what it may use: what a listener's connections, or a client
/// guest's one run, are sandboxed with.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestSettings {
    /// The guest file (a file's guest resolved against the file's directory).
    pub path: PathBuf,
    /// Addresses the guest may dial.
    pub allow_connect: Vec<String>,
    /// WASI packages the guest may import though they are refused by default.
    pub grants: Vec<String>,
    /// The guest's `wasi:config/store` pairs, sorted by key; of a repeated
    /// key the last one given comes last (and wins).
    pub config: Vec<(String, String)>,
    /// The `wasi:keyvalue` store.
    pub kv: Option<KvConfig>,
    pub limits: Limits,
    pub overload_threshold: u8,
    pub overload_idle_timeout: Duration,
}

impl GuestSettings {
    /// The one place a guest's settings are built, from the flag groups as
    /// the command line gives them or as a file's keys fill them in.
    pub fn from_args(
        path: PathBuf,
        allow_connect: Vec<String>,
        mut grants: Vec<String>,
        mut config: Vec<(String, String)>,
        kv: &KvArgs,
        limits: &LimitArgs,
        overload: &OverloadArgs,
    ) -> Result<GuestSettings> {
        let kv = kv.config()?;
        if kv.is_some() {
            grants.push(crate::config::kv::GRANT.to_string());
        }
        // Stable: the last value given for a key stays last.
        config.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(GuestSettings {
            path,
            allow_connect,
            grants,
            config,
            kv,
            limits: Limits::from(limits),
            overload_threshold: overload.overload_threshold,
            overload_idle_timeout: overload.overload_idle_timeout,
        })
    }

    /// `host run`'s guest, as its flags give it.
    fn from_run(cmd: &RunCommand) -> Result<GuestSettings> {
        let mut allow_connect = cmd.grants.allow_connect.clone();
        // A client guest may dial its `--connect` target.
        allow_connect.extend(cmd.connect.iter().cloned());
        GuestSettings::from_args(
            cmd.guest.clone(),
            allow_connect,
            cmd.grants.grant.clone(),
            cmd.guest_config.config.clone(),
            &cmd.kv,
            &cmd.limits,
            &cmd.overload,
        )
    }
}

/// Where a listener's settings were given, so that an error found after
/// validation names what to change.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `host run`'s flags.
    Flags,
    /// A listener's table in a configuration file.
    File {
        file: PathBuf,
        /// The line of the listener's table.
        table_line: usize,
        guest_line: usize,
        address_line: usize,
    },
}

impl Origin {
    /// An error about the listener's guest: `FILE:LINE: listeners.NAME.guest:
    /// what` from a file; as it is from the flags, where the guest is the
    /// one argument.
    pub fn guest_error(&self, name: &str, e: &anyhow::Error) -> anyhow::Error {
        match self {
            Origin::Flags => anyhow::anyhow!("{e:#}"),
            Origin::File { file, guest_line, .. } => {
                anyhow::anyhow!("{}:{guest_line}: listeners.{name}.guest: {e:#}", file.display())
            }
        }
    }

    /// An error about another of the listener's settings: `--KEY what`
    /// from the flags, which have the same names as the file's keys.
    pub fn key_error(&self, name: &str, key: &str, e: &anyhow::Error) -> anyhow::Error {
        match self {
            Origin::Flags => anyhow::anyhow!("--{key} {e:#}"),
            Origin::File { file, table_line, .. } => {
                anyhow::anyhow!("{}:{table_line}: listeners.{name}.{key}: {e:#}", file.display())
            }
        }
    }

    /// An error about the listener's address.
    pub fn address_error(&self, name: &str, e: &anyhow::Error) -> anyhow::Error {
        match self {
            Origin::Flags => anyhow::anyhow!("{e:#}"),
            Origin::File { file, address_line, .. } => {
                anyhow::anyhow!("{}:{address_line}: listeners.{name}.address: {e:#}", file.display())
            }
        }
    }
}

impl ServeConfig {
    /// `host run GUEST --port N`: one listener, named after the guest file.
    /// `None` when no `--port` was given (a client guest is run, not served).
    pub fn from_run(cmd: &RunCommand) -> Result<Option<ServeConfig>> {
        let Some(port) = cmd.listen.port else { return Ok(None) };
        let guest = GuestSettings::from_run(cmd)?;
        let name = cmd.guest.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        // One listener whose limits no reload can change: the pool is sized
        // for exactly it.
        let pool = PoolSize { instances: guest.limits.slots_needed(), max_memory: guest.limits.max_memory };
        let settings = ListenerSettings {
            address: SocketAddr::new(cmd.listen.addr, port),
            backlog: cmd.listen.backlog,
            watch: cmd.swap.watch,
            drain_timeout: cmd.swap.drain_timeout,
            guest,
        };
        Ok(Some(ServeConfig {
            source: Source::Flags,
            listeners: vec![ListenerConfig { name, settings, origin: Origin::Flags }],
            shutdown_timeout: cmd.listen.shutdown_timeout,
            shutdown_delay: cmd.listen.shutdown_delay,
            pool,
            admin_address: cmd.admin.admin_addr,
            cache_dir: cache_dir(cmd.no_cache),
            verbose: cmd.log.verbose,
        }))
    }
}

/// A client guest's one run (`host run GUEST --connect HOST:PORT`).
#[derive(Debug)]
pub struct ClientConfig {
    pub guest: GuestSettings,
    /// The address it is given to connect to, as given.
    pub connect: String,
    /// Passed to its `run` after `connect`.
    pub args: Vec<String>,
    pub cache_dir: Option<PathBuf>,
    pub verbose: bool,
}

impl ClientConfig {
    /// What `host run` runs a client guest with (`--connect`).
    pub fn from_run(cmd: &RunCommand) -> Result<ClientConfig> {
        Ok(ClientConfig {
            guest: GuestSettings::from_run(cmd)?,
            connect: cmd.connect.clone().unwrap_or_default(),
            args: cmd.args.clone(),
            cache_dir: cache_dir(cmd.no_cache),
            verbose: cmd.log.verbose,
        })
    }
}

/// The compiled-guest cache's directory, unless `--no-cache`:
/// `$NETPLUG_CACHE_DIR`, else `$XDG_CACHE_HOME/netplug`, else
/// `~/.cache/netplug`.
pub fn cache_dir(no_cache: bool) -> Option<PathBuf> {
    if no_cache {
        return None;
    }
    if let Some(dir) = std::env::var_os("NETPLUG_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("netplug"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("netplug"))
}
