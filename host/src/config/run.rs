//! `host run`'s arguments turned into one validated configuration, checked
//! before anything is compiled or bound. Ranges and formats are already
//! checked by the command-line parser; what is left needs the whole picture
//! (the dial allow list is resolved here, once).

use crate::config::flags::RunCommand;
use crate::config::kv::KvConfig;
use crate::config::limits::Limits;
use crate::imports::dial::DialPolicy;
use crate::imports::overload::OverloadPolicy;
use crate::imports::wasi_config::GuestConfig;
use anyhow::Result;
use std::net::SocketAddr;
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
    /// What the guest reads through `wasi:config/store`.
    pub guest_config: GuestConfig,
    /// The `wasi:keyvalue` store, with `--kv`.
    pub kv: Option<KvConfig>,
    pub limits: Limits,
    pub overload: OverloadPolicy,
    /// Reload when the guest file changes.
    pub watch: bool,
    /// How long a replaced generation's connections may run.
    pub drain_timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    /// How long to go on accepting after readiness turns false.
    pub shutdown_delay: Duration,
    pub verbose: bool,
    /// Where compiled guests are cached; `None` with `--no-cache`.
    pub cache_dir: Option<PathBuf>,
    /// The admin endpoint's address (`--admin-addr`).
    pub admin_addr: Option<SocketAddr>,
    pub args: Vec<String>,
}

impl RunConfig {
    pub fn from_cli(cmd: RunCommand) -> Result<Self> {
        let mut allowed = cmd.grants.allow_connect.clone();
        if let Some(target) = &cmd.connect {
            allowed.push(target.clone());
        }
        let limits = Limits::from(&cmd.limits);
        let kv = cmd.kv.config()?;
        let mut grants = cmd.grants.grant;
        if kv.is_some() {
            grants.push(crate::config::kv::GRANT.to_string());
        }
        Ok(RunConfig {
            listen: cmd.listen.port.map(|port| SocketAddr::new(cmd.listen.addr, port)),
            backlog: cmd.listen.backlog,
            connect: cmd.connect,
            dial: DialPolicy::new(&allowed)?,
            grants,
            kv,
            guest_config: GuestConfig::new(cmd.guest_config.config),
            overload: OverloadPolicy::new(cmd.overload.overload_threshold, cmd.overload.overload_idle_timeout, &limits),
            limits,
            watch: cmd.swap.watch,
            drain_timeout: cmd.swap.drain_timeout,
            shutdown_timeout: cmd.listen.shutdown_timeout,
            shutdown_delay: cmd.listen.shutdown_delay,
            verbose: cmd.log.verbose,
            cache_dir: if cmd.no_cache { None } else { crate::guest::cache::default_dir() },
            admin_addr: cmd.admin.admin_addr,
            guest: cmd.guest,
            args: cmd.args,
        })
    }
}
