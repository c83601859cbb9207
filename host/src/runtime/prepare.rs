//! Getting a listener ready: its policy (its store opened, its dial list
//! resolved) and its guest admitted, through what every listener shares.
//! Used at start, by a reload's plan, and for a client guest's run.

use crate::config::serve::{GuestSettings, ListenerConfig, Origin, PoolSize, ServeConfig, Source};
use crate::guest::cache::Cache;
use crate::guest::linker::Runtime;
use crate::guest::load::{Admitted, KvGrant};
use crate::imports::dial::DialPolicy;
use crate::imports::keyvalue::{Backend, KvStore};
use crate::imports::overload::OverloadPolicy;
use crate::imports::state::Policy;
use crate::imports::wasi_config::GuestConfig;
use crate::runtime::reload::Loader;
use crate::runtime::slots::SlotBudget;
use anyhow::Result;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What every listener shares: one engine with one pool of instance slots,
/// one linker and one compiled-guest cache.
pub(crate) struct Shared {
    /// Replaced when the pool is renewed (runtime/trim.rs).
    runtime: Mutex<Runtime>,
    pool: PoolSize,
    cache: Option<Arc<Cache>>,
    verbose: bool,
    pub slots: Arc<SlotBudget>,
    /// How a refused `wasi:keyvalue` import is explained.
    kv_grant: KvGrant,
}

impl Shared {
    pub fn new(config: &ServeConfig) -> Result<Shared> {
        Ok(Shared {
            runtime: Mutex::new(Runtime::build(&config.pool)?),
            pool: config.pool,
            cache: config.cache_dir.clone().map(|dir| Arc::new(Cache::new(dir))),
            verbose: config.verbose,
            slots: SlotBudget::new(config.pool.instances),
            kv_grant: match config.source {
                Source::Flags => KvGrant::Run,
                Source::File(_) => KvGrant::Serve,
            },
        })
    }

    /// The pool's instance slots.
    pub fn capacity(&self) -> u32 {
        self.pool.instances
    }

    /// The engine and linker guests are loaded with now.
    pub fn runtime(&self) -> Runtime {
        self.runtime.lock().unwrap().clone()
    }

    /// Replaces the engine (and its pool) guests are loaded with by a new
    /// one of the same size, and returns it. What runs on the old one
    /// keeps it until it ends.
    pub fn renew(&self) -> Result<Runtime> {
        let renewed = Runtime::build(&self.pool)?;
        *self.runtime.lock().unwrap() = renewed.clone();
        Ok(renewed)
    }
}

/// A listener with its guest admitted, ready to start.
pub(crate) struct Prepared {
    pub config: ListenerConfig,
    pub loader: Arc<Loader>,
    pub admitted: Admitted,
}

/// Builds a listener's policy and admits its guest (compiling it, through
/// the cache), naming the setting that is wrong. A listener replacing one
/// (`previous`) keeps its key-value store if it names the same one: its
/// data stays, and a database file is not opened twice.
pub(crate) fn prepare(shared: &Shared, config: ListenerConfig, previous: Option<&Loader>) -> Result<Prepared> {
    let guest = &config.settings.guest;
    let previous_kv = previous.and_then(|p| p.policy.kv.as_deref());
    let policy = policy(&config.name, guest, &config.origin, previous_kv, shared.verbose)?;
    let loader = Arc::new(Loader::new(
        shared.runtime(),
        shared.cache.clone(),
        guest.path.clone(),
        guest.grants.clone(),
        shared.kv_grant,
        policy,
    ));
    let admitted = loader.admit().map_err(|e| config.origin.guest_error(&config.name, &e))?;
    Ok(Prepared { config, loader, admitted })
}

/// What every store of a listener (or of a client guest's run) shares,
/// with its key-value store opened, or `previous` reused.
pub(crate) fn policy(
    name: &str,
    guest: &GuestSettings,
    origin: &Origin,
    previous: Option<&KvStore>,
    verbose: bool,
) -> Result<Arc<Policy>> {
    let metrics = crate::ops::metrics::global();
    let kv = match &guest.kv {
        None => None,
        Some(kv) => match previous.and_then(|old| old.reused_for(kv)) {
            Some(reused) => Some(Arc::new(reused)),
            None => Some(Arc::new(KvStore::open(kv, metrics.kv(name)).map_err(|e| origin.key_error(name, "kv", &e))?)),
        },
    };
    let dial = DialPolicy::new(&guest.allow_connect).map_err(|e| origin.key_error(name, "allow-connect", &e))?;
    Ok(Arc::new(Policy {
        metrics: metrics.listener(name),
        limits: guest.limits.clone(),
        dial,
        overload: OverloadPolicy::new(guest.overload_threshold, guest.overload_idle_timeout, &guest.limits),
        config: GuestConfig::new(guest.config.clone()),
        kv,
        verbose,
    }))
}

/// `host serve --check` creates nothing: a listener's key-value database is
/// not opened, which would create the file (and, on a file a running host
/// holds, fail on its lock). Its directory is checked, as opening it would;
/// the listener is then prepared without a store, which admitting its
/// guest does not need (its grants still hold `wasi:keyvalue`).
pub(crate) fn without_store(mut config: ListenerConfig) -> Result<ListenerConfig> {
    if let Some(Backend::Path(path)) = config.settings.guest.kv.as_ref().map(|kv| &kv.backend) {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let wrong = if !dir.is_dir() {
            Some(format!("the directory {} does not exist", dir.display()))
        } else if path.is_dir() {
            Some("it is a directory, not a database file".to_string())
        } else {
            None
        };
        if let Some(wrong) = wrong {
            let e = anyhow::anyhow!("{}: {wrong}", path.display());
            return Err(config.origin.key_error(&config.name, "kv", &e));
        }
    }
    config.settings.guest.kv = None;
    Ok(config)
}
