//! `host serve CONFIG.toml`: the listeners of a configuration file in one
//! process. One engine (with one pool of instance slots), one linker, one
//! epoch ticker and one compiled-guest cache serve them all; each listener
//! has its own socket, limits, guest configuration and generations.
//!
//! SIGHUP reads the file again and, if all of it checks (every key, every
//! guest, every new address), applies the difference: added listeners
//! start, removed ones stop accepting and finish their connections, a
//! listener whose settings changed is replaced by one accepting on the same
//! socket, a changed guest file becomes a new generation, and the rest are
//! not touched. Otherwise one line says what is wrong and nothing changes.

use crate::config::file::{ListenerConfig, ServeFile};
use crate::config::flags::ServeCommand;
use crate::config::limits::MAX_INSTANCES;
use crate::guest::cache::Cache;
use crate::guest::engine;
use crate::guest::linker;
use crate::guest::load::{Admitted, KvGrant};
use crate::imports::dial::DialPolicy;
use crate::imports::keyvalue::{Backend, KvStore};
use crate::imports::overload::OverloadPolicy;
use crate::imports::state::{GuestState, Policy};
use crate::imports::wasi_config::GuestConfig;
use crate::ops::admin::{self, Admin, Health, ReloadFn};
use crate::ops::listen;
use crate::runtime::generation::Current;
use crate::runtime::listener::{self, Service, Stats, Stopping};
use crate::runtime::reload::{self, Loader};
use crate::runtime::shutdown;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime::Engine;

/// The pool's slots take linear memories up to 4 GiB (what a slot reserves
/// anyway), so a reload may raise a listener's `max-memory`; each
/// listener's own limit is enforced in its stores (`limits.rs`).
const POOL_MAX_MEMORY: u64 = 4 << 30;

pub fn serve(cmd: ServeCommand) -> Result<()> {
    let file = ServeFile::read(&cmd.config)?;
    let needed: u32 = file.listeners.iter().map(|l| l.settings.limits.slots_needed()).sum();
    let instances = match file.instances {
        Some(n) if n < needed => bail!(
            "{}: instances = {n} is fewer than the {needed} instance slots the listeners need \
             (each needs its max-connections, its idle instances and 5 more)",
            file.path.display()
        ),
        Some(n) => n,
        // Room to add or replace as many listeners again by a reload.
        None => needed.saturating_mul(2).min(MAX_INSTANCES).max(needed),
    };
    let shared = Arc::new(Shared::new(instances, &cmd)?);
    let prepared: Vec<Prepared> = file
        .listeners
        .iter()
        .cloned()
        .map(|l| prepare(&shared, if cmd.check { without_store(l)? } else { l }, None))
        .collect::<Result<_>>()?;
    if cmd.check {
        let names: Vec<&str> = prepared.iter().map(|p| p.config.name.as_str()).collect();
        println!("{}: ok, {} listener(s): {}", file.path.display(), names.len(), names.join(", "));
        return Ok(());
    }
    let tokio =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let _ticker = engine::EpochTicker::start(&shared.engine)?;
    let admin_addr = cmd.admin.admin_addr.or(file.admin_address);
    tokio.block_on(async move {
        let shutdown = shutdown::flag()?;
        let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let admin_socket = admin_addr.map(admin::bind).transpose()?;
        let health = Health::new(shutdown.clone());
        // The listeners stop accepting `shutdown-delay` after readiness turns false.
        let shutdown = shutdown::delayed(shutdown, file.shutdown_delay);
        for p in &prepared {
            health.expect(&p.config.name);
        }
        // POST /reload: handed to the loop below, which reloads as on SIGHUP.
        let (reload_tx, mut reload_requests) = mpsc::channel::<oneshot::Sender<Result<String, String>>>(4);
        // Every address is bound before any listener starts: a file that
        // cannot be served as a whole is not served in part.
        let mut sockets = Vec::new();
        for p in &prepared {
            let s = &p.config.settings;
            let socket =
                listen::bind(s.address, s.backlog).map_err(|e| p.config.origin.address_error(&p.config.name, &e))?;
            sockets.push(Arc::new(socket));
        }
        let mut supervisor = Supervisor {
            shared: shared.clone(),
            path: file.path.clone(),
            grace: file.shutdown_timeout,
            instances,
            shutdown: shutdown.clone(),
            active: BTreeMap::new(),
            tasks: JoinSet::new(),
            health: health.clone(),
        };
        for (p, socket) in prepared.into_iter().zip(sockets) {
            let slots = shared.slots.reserve(p.config.settings.limits.slots_needed()).expect("sized for these");
            supervisor.start(p, socket, 1, slots)?;
        }
        if let Some(socket) = admin_socket {
            let reload: ReloadFn = Box::new(move || {
                let requests = reload_tx.clone();
                Box::pin(async move {
                    let (reply, outcome) = oneshot::channel();
                    requests.send(reply).await.map_err(|_| "shutting down: not reloading".to_string())?;
                    outcome.await.map_err(|_| "shutting down: not reloading".to_string())?
                })
            });
            let bound = admin::spawn(socket, Admin { health, reload })?;
            listen::announce(format_args!("admin listening on {bound}"));
        }
        std::io::stdout().flush().ok();
        tracing::info!(
            "serving {} listener(s) from {} ({instances} instance slots); SIGHUP reads it again",
            supervisor.active.len(),
            file.path.display()
        );
        let mut stopping = shutdown.clone();
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    let _ = supervisor.reload("SIGHUP").await;
                }
                Some(reply) = reload_requests.recv() => {
                    let _ = reply.send(supervisor.reload("POST /reload").await);
                }
                _ = stopping.wait_for(|s| *s) => break,
            }
        }
        supervisor.finish().await;
        Ok(())
    })
}

/// What every listener shares.
struct Shared {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<Arc<Cache>>,
    verbose: bool,
    slots: Arc<SlotBudget>,
}

impl Shared {
    fn new(instances: u32, cmd: &ServeCommand) -> Result<Shared> {
        let engine = engine::build(instances, POOL_MAX_MEMORY)?;
        let linker = linker::build(&engine)?;
        let cache =
            if cmd.no_cache { None } else { crate::guest::cache::default_dir().map(|dir| Arc::new(Cache::new(dir))) };
        let slots = Arc::new(SlotBudget { capacity: instances, reserved: Mutex::new(0) });
        Ok(Shared { engine, linker, cache, verbose: cmd.log.verbose, slots })
    }
}

/// The pool's instance slots, shared out among listeners: a listener holds
/// what its limits need from its start until its last connection ends, so
/// the pool never runs out under a listener that stays within its limits.
struct SlotBudget {
    capacity: u32,
    reserved: Mutex<u32>,
}

impl SlotBudget {
    fn reserve(self: &Arc<Self>, slots: u32) -> Option<Reservation> {
        let mut reserved = self.reserved.lock().unwrap();
        if *reserved + slots > self.capacity {
            return None;
        }
        *reserved += slots;
        Some(Reservation { budget: self.clone(), slots: Mutex::new(slots) })
    }

    fn free(&self) -> u32 {
        self.capacity - *self.reserved.lock().unwrap()
    }
}

/// Slots held by one listener; given back when dropped.
struct Reservation {
    budget: Arc<SlotBudget>,
    slots: Mutex<u32>,
}

impl Reservation {
    /// Gives back all but `slots` (a removed listener keeps one per open
    /// connection: it accepts no more, and its spares are dropped).
    fn shrink_to(&self, slots: u32) {
        let mut held = self.slots.lock().unwrap();
        let freed = held.saturating_sub(slots);
        *self.budget.reserved.lock().unwrap() -= freed;
        *held -= freed;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// `--check` creates nothing: a listener's key-value database is not opened,
/// which would create the file (and, on a file a running host holds, fail
/// on its lock). Its directory is checked, as opening it would; the
/// listener is then prepared without a store, which admitting its guest
/// does not need (its grants still hold `wasi:keyvalue`).
fn without_store(mut config: ListenerConfig) -> Result<ListenerConfig> {
    if let Some(Backend::Path(path)) = config.settings.kv.as_ref().map(|kv| &kv.backend) {
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
    config.settings.kv = None;
    Ok(config)
}

/// A listener of the file with its guest admitted, ready to start.
struct Prepared {
    config: ListenerConfig,
    loader: Arc<Loader>,
    admitted: Admitted,
}

/// Builds a listener's policy and admits its guest (compiling it, through
/// the cache), naming the file, line and key of whatever is wrong. A
/// listener replacing one (`previous`) keeps its key-value store if it
/// names the same one: its data stays, and a database file is not opened
/// twice.
fn prepare(shared: &Shared, config: ListenerConfig, previous: Option<&Loader>) -> Result<Prepared> {
    let s = &config.settings;
    let kv = match &s.kv {
        None => None,
        Some(kv) => match previous.and_then(|p| p.policy.kv.as_ref()).and_then(|old| old.reused_for(kv)) {
            Some(reused) => Some(Arc::new(reused)),
            None => Some(Arc::new(
                KvStore::open(kv, crate::ops::metrics::global().kv(&config.name))
                    .map_err(|e| config.origin.key_error(&config.name, "kv", &e))?,
            )),
        },
    };
    let dial =
        DialPolicy::new(&s.allow_connect).map_err(|e| config.origin.key_error(&config.name, "allow-connect", &e))?;
    let policy = Arc::new(Policy {
        metrics: crate::ops::metrics::global().listener(&config.name),
        limits: s.limits.clone(),
        dial,
        overload: OverloadPolicy::new(s.overload_threshold, s.overload_idle_timeout, &s.limits),
        config: GuestConfig::new(s.guest_config.clone()),
        kv,
        verbose: shared.verbose,
    });
    let loader = Arc::new(Loader::new(
        shared.engine.clone(),
        shared.linker.clone(),
        shared.cache.clone(),
        s.guest.clone(),
        s.grants.clone(),
        KvGrant::Serve,
        policy,
    ));
    let admitted = loader.admit().map_err(|e| config.origin.guest_error(&config.name, &e))?;
    Ok(Prepared { config, loader, admitted })
}

/// A running listener.
struct Active {
    config: ListenerConfig,
    socket: Arc<TcpListener>,
    loader: Arc<Loader>,
    current: Arc<Current>,
    span: tracing::Span,
    /// Set to stop accepting (the listener was removed or replaced).
    removed: watch::Sender<bool>,
    /// Reloads on changes of the guest file (`watch = true`).
    watcher: Option<JoinHandle<()>>,
}

impl Active {
    /// Stops accepting; the accept loop then waits for the connections.
    fn stop(self) {
        self.removed.send_replace(true);
        if let Some(watcher) = self.watcher {
            watcher.abort();
        }
    }
}

/// The process's listeners, and what a reload changes.
struct Supervisor {
    shared: Arc<Shared>,
    path: PathBuf,
    grace: Duration,
    instances: u32,
    shutdown: watch::Receiver<bool>,
    active: BTreeMap<String, Active>,
    /// The accept loops, removed listeners' included until their last
    /// connection ends.
    tasks: JoinSet<()>,
    /// What `/readyz` reports.
    health: Arc<Health>,
}

/// What one reload does to one listener.
enum Change {
    Add(Prepared),
    Replace(Prepared),
    Regenerate(String, Admitted),
    Remove(String),
}

/// A reload's changes, all checked.
struct Plan {
    changes: Vec<Change>,
    unchanged: usize,
    grace: Duration,
    instances: Option<u32>,
}

impl Supervisor {
    /// Starts a listener on `socket` with its first generation numbered
    /// `first`, holding `slots` until its last connection ends.
    fn start(&mut self, prepared: Prepared, socket: Arc<TcpListener>, first: u64, slots: Reservation) -> Result<()> {
        let Prepared { config, loader, admitted } = prepared;
        let name = config.name.clone();
        // `listener`, as in a connection's span; never `name`, which the JSON log
        // writes beside the fields for the span's own name (a key twice).
        let span = tracing::info_span!("listener", listener = %name);
        let generation = loader
            .generation(first, &admitted.component, &admitted.bytes)
            .map_err(|e| config.origin.guest_error(&name, &e))?;
        let guest = generation.guest.clone();
        let current = Arc::new(Current::new(generation, config.settings.drain_timeout));
        let service = Arc::new(Service {
            name: name.as_str().into(),
            policy: loader.policy.clone(),
            current: current.clone(),
            stats: Stats::default(),
        });
        let (removed, removed_rx) = watch::channel(false);
        let slots = Arc::new(slots);
        let shrink = slots.clone();
        let stopping = Stopping {
            shutdown: self.shutdown.clone(),
            grace: self.grace,
            removed: Some(removed_rx),
            on_removed: Some(Box::new(move |open| shrink.shrink_to(open as u32))),
        };
        let run = listener::run(socket.clone(), service, stopping);
        self.tasks.spawn(
            async move {
                // Released when the listener's last connection has ended.
                let _slots = slots;
                if let Err(e) = run.await {
                    tracing::error!("{e:#}");
                }
            }
            .instrument(span.clone()),
        );
        let watcher = if config.settings.watch {
            Some(span.in_scope(|| reload::spawn_watch(loader.clone(), current.clone()))?)
        } else {
            None
        };
        let bound = socket.local_addr().context("cannot read the bound address")?;
        // Tests and scripts read these lines to find the ports.
        listen::announce(format_args!("listener {name} listening on {bound}"));
        let watching = if config.settings.watch { ", reloading when it changes" } else { "" };
        span.in_scope(|| tracing::info!("serving {guest} (generation {first}) on {bound}{watching}"));
        self.health.serving(&name);
        self.active.insert(name, Active { config, socket, loader, current, span, removed, watcher });
        Ok(())
    }

    /// SIGHUP (or POST /reload): reads the file again and applies it, or
    /// logs why not; returns the line it logged.
    async fn reload(&mut self, trigger: &str) -> Result<String, String> {
        let result = self.reload_file(trigger).await;
        match &result {
            Ok(line) => tracing::info!("{line}"),
            Err(line) => tracing::error!("{line}"),
        }
        crate::ops::metrics::global().reloaded(result.is_ok());
        result
    }

    async fn reload_file(&mut self, trigger: &str) -> Result<String, String> {
        let known: BTreeMap<String, (crate::config::file::ListenerSettings, Arc<Loader>)> =
            self.active.iter().map(|(n, a)| (n.clone(), (a.config.settings.clone(), a.loader.clone()))).collect();
        let (shared, path) = (self.shared.clone(), self.path.clone());
        // Compiling guests is CPU work: off the async workers.
        let planned = tokio::task::spawn_blocking(move || plan(&shared, &path, &known)).await;
        let plan = match planned {
            Ok(Ok(plan)) => plan,
            Ok(Err(e)) => return Err(format!("{trigger}: {e:#}; nothing changed")),
            Err(e) => return Err(format!("{trigger}: reading {} failed: {e}; nothing changed", self.path.display())),
        };
        self.apply(plan, trigger).await.map_err(|e| format!("{trigger}: {e:#}; nothing changed"))
    }

    /// Binds the new addresses and reserves slots for every new listener,
    /// then (only if all of that worked) makes the changes.
    async fn apply(&mut self, plan: Plan, trigger: &str) -> Result<String> {
        let Plan { changes, unchanged, grace, instances } = plan;
        let mut starting = Vec::new();
        for change in &changes {
            let prepared = match change {
                Change::Add(p) | Change::Replace(p) => p,
                _ => continue,
            };
            let (name, s) = (&prepared.config.name, &prepared.config.settings);
            let socket = match self.socket_at(name, s.address) {
                Some(socket) => socket,
                None => Arc::new(
                    listen::bind(s.address, s.backlog).map_err(|e| prepared.config.origin.address_error(name, &e))?,
                ),
            };
            let needed = s.limits.slots_needed();
            let free = self.shared.slots.free();
            let slots = self.shared.slots.reserve(needed).with_context(|| {
                format!(
                    "{}: listeners.{name}: needs {needed} instance slots, but only {free} of the {} are free \
                     (raise `instances`, which takes a restart, or let replaced listeners finish)",
                    self.path.display(),
                    self.instances
                )
            })?;
            starting.push((socket, slots));
        }
        let mut counts = [0usize; 4];
        let mut starting = starting.into_iter();
        for change in changes {
            match change {
                Change::Add(prepared) => {
                    let (socket, slots) = starting.next().expect("one per start");
                    self.start(prepared, socket, 1, slots)?;
                    counts[0] += 1;
                }
                Change::Replace(prepared) => {
                    let (socket, slots) = starting.next().expect("one per start");
                    let name = prepared.config.name.clone();
                    let old = self.active.remove(&name).expect("planned from the active listeners");
                    let first = old.current.get().id + 1;
                    old.span.in_scope(|| tracing::info!("settings changed: replaced by generation {first}"));
                    // The successor accepts before the old one stops, on the
                    // same socket when the address is the same.
                    if let Err(e) = self.start(prepared, socket, first, slots) {
                        self.active.insert(name, old);
                        return Err(e);
                    }
                    old.stop();
                    counts[1] += 1;
                }
                Change::Regenerate(name, admitted) => {
                    let active = &self.active[&name];
                    reload::install(&active.loader, &active.current, admitted, trigger)
                        .instrument(active.span.clone())
                        .await;
                    counts[2] += 1;
                }
                Change::Remove(name) => {
                    let old = self.active.remove(&name).expect("planned from the active listeners");
                    old.span.in_scope(|| tracing::info!("removed from {}", self.path.display()));
                    self.health.removed(&name);
                    old.stop();
                    counts[3] += 1;
                }
            }
        }
        if grace != self.grace || instances.is_some_and(|n| n != self.instances) {
            tracing::warn!("{trigger}: `shutdown-timeout` and `instances` take effect at the next start");
        }
        Ok(format!(
            "{trigger}: {} read again: {} added, {} replaced, {} new generation(s), {} removed, {unchanged} unchanged",
            self.path.display(),
            counts[0],
            counts[1],
            counts[2],
            counts[3]
        ))
    }

    /// The socket a listener `name` starting on `addr` takes over: its
    /// predecessor's if it keeps the address (port 0 included: it keeps the
    /// port it was given), else that of another listener bound to `addr`
    /// (one being removed or moved elsewhere), else none.
    fn socket_at(&self, name: &str, addr: SocketAddr) -> Option<Arc<TcpListener>> {
        if let Some(old) = self.active.get(name).filter(|old| old.config.settings.address == addr) {
            return Some(old.socket.clone());
        }
        if addr.port() == 0 {
            return None;
        }
        self.active.values().find(|a| a.config.settings.address == addr).map(|a| a.socket.clone())
    }

    /// After the shutdown signal: waits for every accept loop (each bounded
    /// by the shutdown timeout).
    async fn finish(mut self) {
        for active in std::mem::take(&mut self.active).into_values() {
            if let Some(watcher) = active.watcher {
                watcher.abort();
            }
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Reads the file again and works out, checking everything, what changes.
fn plan(
    shared: &Shared,
    path: &std::path::Path,
    known: &BTreeMap<String, (crate::config::file::ListenerSettings, Arc<Loader>)>,
) -> Result<Plan> {
    let file = ServeFile::read(path)?;
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for listener in &file.listeners {
        let known = known.get(&listener.name);
        let loader = known.map(|(_, loader)| loader.as_ref());
        match decide(&listener.settings, known.map(|(settings, _)| settings), || loader.is_some_and(Loader::unchanged))
        {
            Decision::Add => changes.push(Change::Add(prepare(shared, listener.clone(), None)?)),
            Decision::Replace => changes.push(Change::Replace(prepare(shared, listener.clone(), loader)?)),
            Decision::Regenerate => {
                let loader = loader.expect("a known listener");
                let admitted = loader.admit().map_err(|e| listener.origin.guest_error(&listener.name, &e))?;
                changes.push(Change::Regenerate(listener.name.clone(), admitted));
            }
            Decision::Keep => unchanged += 1,
        }
    }
    let wanted: Vec<&str> = file.listeners.iter().map(|l| l.name.as_str()).collect();
    changes.extend(removed(known.keys(), &wanted).into_iter().map(Change::Remove));
    Ok(Plan { changes, unchanged, grace: file.shutdown_timeout, instances: file.instances })
}

/// What a reload does to a listener the file names.
#[derive(Debug, PartialEq)]
enum Decision {
    /// New in the file: started.
    Add,
    /// Its settings changed: replaced by one accepting on the same socket.
    Replace,
    /// Only its guest file changed: a new generation.
    Regenerate,
    /// Nothing changed: left alone.
    Keep,
}

/// The decision for a listener the file gives `wanted` settings, that runs
/// with `running` ones (`None`: not running); `guest_unchanged` reads its
/// guest file, asked only when the settings are the same.
fn decide<S: PartialEq>(wanted: &S, running: Option<&S>, guest_unchanged: impl FnOnce() -> bool) -> Decision {
    match running {
        None => Decision::Add,
        Some(running) if running != wanted => Decision::Replace,
        Some(_) if !guest_unchanged() => Decision::Regenerate,
        Some(_) => Decision::Keep,
    }
}

/// The running listeners the file no longer names: removed.
fn removed<'a>(running: impl Iterator<Item = &'a String>, wanted: &[&str]) -> Vec<String> {
    running.filter(|name| !wanted.contains(&name.as_str())).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_is_added_replaced_regenerated_kept_or_removed() {
        let never = || panic!("the guest file is read only when the settings are the same");
        assert_eq!(decide(&1, None, never), Decision::Add);
        assert_eq!(decide(&1, Some(&2), never), Decision::Replace);
        assert_eq!(decide(&1, Some(&1), || false), Decision::Regenerate);
        assert_eq!(decide(&1, Some(&1), || true), Decision::Keep);
        let running = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(removed(running.iter(), &["b", "d"]), ["a", "c"]);
        assert!(removed(running.iter(), &["a", "b", "c"]).is_empty());
    }

    #[test]
    fn slots_are_reserved_up_to_capacity_and_given_back() {
        let budget = Arc::new(SlotBudget { capacity: 10, reserved: Mutex::new(0) });
        let a = budget.reserve(6).expect("fits");
        assert!(budget.reserve(5).is_none(), "6 + 5 is past 10");
        let b = budget.reserve(4).expect("fits exactly");
        assert_eq!(budget.free(), 0);
        // A removed listener keeps one slot per open connection.
        a.shrink_to(2);
        assert_eq!(budget.free(), 4);
        drop(b);
        assert_eq!(budget.free(), 8);
        drop(a);
        assert_eq!(budget.free(), 10);
    }
}
