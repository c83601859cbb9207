//! The process's running listeners: starting one (its first generation,
//! its accept loop, its slots), and applying a reload to them. A listener
//! is the same whether `host run`'s flags or `host serve`'s file named it;
//! only a reload differs (`Source`): `host run` loads its guest again,
//! `host serve` reads its file again and applies the difference (added
//! listeners start, removed ones stop accepting and finish their
//! connections, a listener whose settings changed is replaced by one
//! accepting on the same socket, a changed guest file becomes a new
//! generation, the rest are not touched).

use crate::config::serve::{ListenerConfig, ServeConfig, Source};
use crate::guest::engine::EpochTicker;
use crate::ops::admin::Health;
use crate::ops::listen;
use crate::runtime::generation::Current;
use crate::runtime::listener::{self, Service, Stopping};
use crate::runtime::plan::{self, Change, Plan};
use crate::runtime::prepare::{Prepared, Shared};
use crate::runtime::reload::{self, Loader};
use crate::runtime::session::Stats;
use crate::runtime::slots::Reservation;
use crate::runtime::trim;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

/// A running listener.
struct Active {
    config: ListenerConfig,
    socket: Arc<TcpListener>,
    loader: Arc<Loader>,
    current: Arc<Current>,
    span: tracing::Span,
    /// Set to stop accepting (the listener was removed or replaced).
    removed: watch::Sender<bool>,
    /// Reloads on changes of the guest file (`watch`).
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
pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    source: Source,
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

impl Supervisor {
    pub fn new(
        shared: Arc<Shared>,
        config: &ServeConfig,
        shutdown: watch::Receiver<bool>,
        health: Arc<Health>,
    ) -> Supervisor {
        Supervisor {
            shared,
            source: config.source.clone(),
            grace: config.shutdown_timeout,
            instances: config.pool.instances,
            shutdown,
            active: BTreeMap::new(),
            tasks: JoinSet::new(),
            health,
        }
    }

    pub fn listeners(&self) -> usize {
        self.active.len()
    }

    /// Where the listeners were configured, for the log.
    fn source_name(&self) -> String {
        match &self.source {
            Source::Flags => "the command line".to_string(),
            Source::File(path) => path.display().to_string(),
        }
    }

    /// Starts a listener on `socket` with its first generation numbered
    /// `first`, holding `slots` until its last connection ends.
    pub fn start(
        &mut self,
        prepared: Prepared,
        socket: Arc<TcpListener>,
        first: u64,
        slots: Reservation,
    ) -> Result<()> {
        let Prepared { config, loader, admitted } = prepared;
        let name = config.name.clone();
        // `listener`, as in a connection's span; never `name`, which the JSON
        // log writes beside the fields for the span's own name (a key twice).
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
        let watcher = match config.settings.watch {
            true => Some(span.in_scope(|| reload::spawn_watch(loader.clone(), current.clone()))?),
            false => None,
        };
        let bound = socket.local_addr().context("cannot read the bound address")?;
        // Tests and scripts read these lines to find the ports.
        match self.source {
            Source::Flags => listen::announce(format_args!("listening on {bound}")),
            Source::File(_) => listen::announce(format_args!("listener {name} listening on {bound}")),
        }
        let watching = if config.settings.watch { ", reloading when it changes" } else { "" };
        span.in_scope(|| tracing::info!("serving {guest} (world server, generation {first}) on {bound}{watching}"));
        self.health.serving(&name);
        self.active.insert(name, Active { config, socket, loader, current, span, removed, watcher });
        Ok(())
    }

    /// SIGHUP or `POST /reload`: `host run` loads its guest again; `host
    /// serve` reads its file again and applies it. Returns the line it
    /// logged: the outcome, or why nothing changed.
    pub async fn reload(&mut self, trigger: &str) -> Result<String, String> {
        let path = match &self.source {
            Source::File(path) => path.clone(),
            Source::Flags => return self.reload_guests(trigger).await,
        };
        let result = self.reload_file(&path, trigger).await;
        match &result {
            Ok(line) => tracing::info!("{line}"),
            Err(line) => tracing::error!("{line}"),
        }
        crate::ops::metrics::global().reloaded(result.is_ok());
        result
    }

    /// Each listener's guest file loaded again as its next generation
    /// (`reload::reload` logs and counts each).
    async fn reload_guests(&mut self, trigger: &str) -> Result<String, String> {
        let mut lines = Vec::new();
        for active in self.active.values() {
            let reloaded = reload::reload(&active.loader, &active.current, trigger).instrument(active.span.clone());
            lines.push(reloaded.await?);
        }
        Ok(lines.join("\n"))
    }

    async fn reload_file(&mut self, path: &Path, trigger: &str) -> Result<String, String> {
        let running: plan::Running =
            self.active.iter().map(|(n, a)| (n.clone(), (a.config.settings.clone(), a.loader.clone()))).collect();
        let (shared, file) = (self.shared.clone(), path.to_path_buf());
        // Compiling guests is CPU work: off the async workers.
        let planned = tokio::task::spawn_blocking(move || plan::plan(&shared, &file, &running)).await;
        let plan = match planned {
            Ok(Ok(plan)) => plan,
            Ok(Err(e)) => return Err(format!("{trigger}: {e:#}; nothing changed")),
            Err(e) => return Err(format!("{trigger}: reading {} failed: {e}; nothing changed", path.display())),
        };
        let summary = self.apply(plan, trigger).await.map_err(|e| format!("{trigger}: {e:#}; nothing changed"))?;
        Ok(format!("{trigger}: {} read again: {summary}", path.display()))
    }

    /// Binds the new addresses and reserves slots for every listener that
    /// starts, then (only if all of that worked) makes the changes. Returns
    /// how many of each there were.
    async fn apply(&mut self, plan: Plan, trigger: &str) -> Result<String> {
        let Plan { changes, unchanged, grace, instances } = plan;
        let mut starting = self.bind_and_reserve(&changes)?.into_iter();
        let mut counts = [0usize; 4];
        for change in changes {
            match change {
                Change::Add(prepared) => {
                    let (socket, slots) = starting.next().expect("one per start");
                    self.start(prepared, socket, 1, slots)?;
                    counts[0] += 1;
                }
                Change::Replace(prepared) => {
                    let (socket, slots) = starting.next().expect("one per start");
                    self.replace(prepared, socket, slots)?;
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
                    old.span.in_scope(|| tracing::info!("removed from {}", self.source_name()));
                    self.health.removed(&name);
                    old.stop();
                    counts[3] += 1;
                }
            }
        }
        if grace != self.grace || instances.is_some_and(|n| n != self.instances) {
            tracing::warn!("{trigger}: `shutdown-timeout` and `instances` take effect at the next start");
        }
        let [added, replaced, regenerated, removed] = counts;
        Ok(format!(
            "{added} added, {replaced} replaced, {regenerated} new generation(s), {removed} removed, \
             {unchanged} unchanged"
        ))
    }

    /// A socket and slots for each listener of `changes` that starts, or
    /// the first reason one cannot start.
    fn bind_and_reserve(&self, changes: &[Change]) -> Result<Vec<(Arc<TcpListener>, Reservation)>> {
        let mut starting = Vec::new();
        for change in changes {
            let (Change::Add(prepared) | Change::Replace(prepared)) = change else { continue };
            let (name, s) = (&prepared.config.name, &prepared.config.settings);
            let socket = match self.socket_at(name, s.address) {
                Some(socket) => socket,
                None => Arc::new(
                    listen::bind(s.address, s.backlog).map_err(|e| prepared.config.origin.address_error(name, &e))?,
                ),
            };
            let needed = s.guest.limits.slots_needed();
            let free = self.shared.slots.free();
            let slots = self.shared.slots.reserve(needed).with_context(|| {
                format!(
                    "{}: listeners.{name}: needs {needed} instance slots, but only {free} of the {} are free \
                     (raise `instances`, which takes a restart, or let replaced listeners finish)",
                    self.source_name(),
                    self.instances
                )
            })?;
            starting.push((socket, slots));
        }
        Ok(starting)
    }

    /// Starts `prepared` in place of the running listener of its name: the
    /// successor accepts before the old one stops, on the same socket when
    /// the address is the same.
    fn replace(&mut self, prepared: Prepared, socket: Arc<TcpListener>, slots: Reservation) -> Result<()> {
        let name = prepared.config.name.clone();
        let old = self.active.remove(&name).expect("planned from the active listeners");
        let first = old.current.get().id + 1;
        old.span.in_scope(|| tracing::info!("settings changed: replaced by generation {first}"));
        if let Err(e) = self.start(prepared, socket, first, slots) {
            self.active.insert(name, old);
            return Err(e);
        }
        old.stop();
        Ok(())
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

    /// Renews the instance pool if a burst left many slots idle
    /// (runtime/trim.rs).
    pub async fn trim(&self, ticker: &EpochTicker) {
        if trim::due(ticker) {
            let listeners = self.active.values().map(|a| (a.loader.as_ref(), a.current.as_ref(), &a.span));
            trim::renew(&self.shared, ticker, listeners).await;
        }
    }

    /// After the shutdown signal: waits for every accept loop (each bounded
    /// by the shutdown timeout).
    pub async fn finish(mut self) {
        for active in std::mem::take(&mut self.active).into_values() {
            if let Some(watcher) = active.watcher {
                watcher.abort();
            }
        }
        while self.tasks.join_next().await.is_some() {}
    }
}
