//! `host run`'s arguments turned into one validated configuration, checked
//! before anything is compiled or bound.

use crate::cli::RunCommand;
use crate::dial::DialPolicy;
use crate::limits::{Limits, MAX_POOL_SLOTS};
use anyhow::{bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub struct RunConfig {
    pub guest: PathBuf,
    /// Where a server guest is served; `None` when no `--port` was given.
    pub listen: Option<SocketAddr>,
    pub backlog: u32,
    /// The client guest's target, as given.
    pub connect: Option<String>,
    pub dial: DialPolicy,
    /// WASI packages the guest may import though they are refused by default.
    pub grants: Vec<String>,
    pub limits: Limits,
    pub shutdown_timeout: Duration,
    pub verbose: bool,
    /// Where compiled guests are cached; `None` with `--no-cache`.
    pub cache_dir: Option<PathBuf>,
    pub args: Vec<String>,
}

impl RunConfig {
    pub fn from_cli(cmd: RunCommand) -> Result<Self> {
        let ip: IpAddr = cmd.addr.trim_matches(['[', ']']).parse().with_context(|| {
            format!(
                "invalid --addr `{}`: expected an IP address such as 127.0.0.1 or ::1",
                cmd.addr
            )
        })?;
        if cmd.port.is_some() && cmd.connect.is_some() {
            bail!("give --port (to serve a server guest) or --connect (to run a client guest), not both");
        }
        if cmd.max_connections == 0 || cmd.max_connections > MAX_POOL_SLOTS {
            bail!(
                "invalid --max-connections {}: expected 1 to {MAX_POOL_SLOTS}",
                cmd.max_connections
            );
        }
        if cmd.max_memory < 64 * 1024 || cmd.max_memory > 4 << 30 {
            bail!(
                "invalid --max-memory {} bytes: expected 64KiB (one wasm page) to 4GiB",
                cmd.max_memory
            );
        }
        if cmd.max_resources == 0 {
            bail!("invalid --max-resources 0: a guest needs at least its own connection");
        }
        if cmd.connections_per_instance == 0 {
            bail!("invalid --connections-per-instance 0: expected at least 1");
        }
        if cmd.backlog == 0 {
            bail!("invalid --backlog 0: expected at least 1");
        }
        let mut allowed = cmd.allow_connect.clone();
        if let Some(target) = &cmd.connect {
            allowed.push(target.clone());
        }
        let dial = DialPolicy::new(&allowed)?;
        Ok(RunConfig {
            guest: cmd.guest,
            listen: cmd.port.map(|port| SocketAddr::new(ip, port)),
            backlog: cmd.backlog,
            connect: cmd.connect,
            dial,
            grants: cmd.grant,
            limits: Limits {
                max_connections: cmd.max_connections,
                max_memory: cmd.max_memory,
                cpu_timeout: cmd.cpu_timeout,
                idle_timeout: cmd.idle_timeout,
                max_lifetime: cmd.max_lifetime.0,
                max_bytes_in: cmd.max_bytes_in.0,
                max_bytes_out: cmd.max_bytes_out.0,
                max_resources: cmd.max_resources,
                max_log_lines: cmd.max_log_lines,
                max_log_bytes: cmd.max_log_bytes,
                connections_per_instance: cmd.connections_per_instance,
            },
            shutdown_timeout: cmd.shutdown_timeout,
            verbose: cmd.verbose,
            cache_dir: if cmd.no_cache { None } else { crate::cache::default_dir() },
            args: cmd.args,
        })
    }
}
