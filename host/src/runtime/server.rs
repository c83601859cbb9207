//! Serving a configuration: `host run GUEST --port N` (one listener, from
//! flags) and `host serve CONFIG.toml` (the file's listeners) both come
//! here. The engine, its pool, the linker and the cache are built once;
//! every guest is admitted and every address bound before anything is
//! served, so a configuration that cannot be served as a whole is not
//! served in part. Then the listeners start, and the server runs until its
//! shutdown future resolves, reloading on SIGHUP and `POST /reload`.
//!
//! Callable in-process, as mini-redis's `server::run(listener, shutdown)`
//! is: a test binds port 0, reads `local_addrs`, and stops the server with
//! a channel.

use crate::config::serve::{ServeConfig, Source};
use crate::guest::engine;
use crate::ops::admin::{self, Admin, Health, ReloadFn};
use crate::ops::listen;
use crate::runtime::prepare::{prepare, without_store, Prepared, Shared};
use crate::runtime::shutdown;
use crate::runtime::supervisor::Supervisor;
use crate::runtime::trim;
use anyhow::{Context, Result};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

/// The async runtime the host serves on: a worker thread per core, each
/// releasing its heap's unused pages when asked (ops/heap.rs).
pub fn async_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::ops::heap::on_park)
        .build()
        .context("cannot start the async runtime")
}

/// A configuration ready to serve: guests admitted, addresses bound.
pub struct Server {
    config: ServeConfig,
    shared: Arc<Shared>,
    listeners: Vec<(Prepared, Arc<TcpListener>)>,
    admin: Option<TcpListener>,
}

/// `host serve --check`: every listener prepared as it would be served
/// (every key, every guest), creating nothing and binding nothing. Returns
/// the listeners' names.
pub fn check(config: ServeConfig) -> Result<Vec<String>> {
    let shared = Shared::new(&config)?;
    let mut names = Vec::new();
    for listener in config.listeners {
        let prepared = prepare(&shared, without_store(listener)?, None)?;
        names.push(prepared.config.name);
    }
    Ok(names)
}

impl Server {
    /// Admits every listener's guest (compiling it, through the cache),
    /// opens its store, and binds its address and the admin address.
    /// Nothing is served until `run`. Must be called within a tokio
    /// runtime (the sockets register with it).
    pub fn bind(config: ServeConfig) -> Result<Server> {
        let shared = Arc::new(Shared::new(&config)?);
        let prepared: Vec<Prepared> =
            config.listeners.iter().cloned().map(|l| prepare(&shared, l, None)).collect::<Result<_>>()?;
        let mut listeners = Vec::new();
        for p in prepared {
            let (name, s) = (&p.config.name, &p.config.settings);
            let socket = listen::bind(s.address, s.backlog).map_err(|e| p.config.origin.address_error(name, &e))?;
            listeners.push((p, Arc::new(socket)));
        }
        let admin = config.admin_address.map(admin::bind).transpose()?;
        Ok(Server { config, shared, listeners, admin })
    }

    /// The bound addresses, in the order of the configuration's listeners.
    pub fn local_addrs(&self) -> Result<Vec<SocketAddr>> {
        let addrs = self.listeners.iter().map(|(_, socket)| socket.local_addr());
        addrs.collect::<std::io::Result<_>>().context("cannot read a bound address")
    }

    /// Serves until `shutdown` resolves (the binary passes SIGINT and
    /// SIGTERM), then stops accepting after `shutdown-delay` and lets
    /// connections finish within `shutdown-timeout`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server { config, shared, listeners, admin } = self;
        let ticker = engine::EpochTicker::start()?;
        ticker.tick(&shared.runtime().engine);
        let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let shutdown = shutdown::flag_on(shutdown);
        let health = Health::new(shutdown.clone());
        // The listeners stop accepting `shutdown-delay` after readiness
        // turns false.
        let stopping = shutdown::delayed(shutdown, config.shutdown_delay);
        for (p, _) in &listeners {
            health.expect(&p.config.name);
        }
        let mut supervisor = Supervisor::new(shared.clone(), &config, stopping.clone(), health.clone());
        for (p, socket) in listeners {
            let needed = p.config.settings.guest.limits.slots_needed();
            let slots = shared.slots.reserve(needed).expect("the pool is sized for the configuration");
            supervisor.start(p, socket, 1, slots)?;
        }
        // POST /reload: handed to the loop below, which reloads as on SIGHUP.
        let (reload_tx, mut reload_requests) = mpsc::channel(4);
        if let Some(socket) = admin {
            let bound = admin::spawn(socket, Admin { health, reload: reload_fn(reload_tx) })?;
            listen::announce(format_args!("admin listening on {bound}"));
        }
        std::io::stdout().flush().ok();
        if let Source::File(path) = &config.source {
            tracing::info!(
                "serving {} listener(s) from {} ({} instance slots); SIGHUP reads it again",
                supervisor.listeners(),
                path.display(),
                config.pool.instances
            );
        }
        let mut stopping = stopping;
        // The guard `wait_for` returns is not Send: dropped inside, so that
        // the server is a future a caller can spawn.
        let mut stop = std::pin::pin!(async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        let mut trim_check = tokio::time::interval(trim::CHECK_EVERY);
        trim_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = trim_check.tick() => supervisor.trim(&ticker).await,
                _ = hangup.recv() => {
                    let _ = supervisor.reload("SIGHUP").await;
                }
                Some(reply) = reload_requests.recv() => {
                    let _ = reply.send(supervisor.reload("POST /reload").await);
                }
                () = &mut stop => break,
            }
        }
        supervisor.finish().await;
        Ok(())
    }
}

/// A reload request: the reply channel for its outcome.
type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What the admin endpoint's `POST /reload` calls: it asks the server's
/// loop, which reloads one request at a time.
fn reload_fn(requests: mpsc::Sender<ReloadRequest>) -> ReloadFn {
    Box::new(move || {
        let requests = requests.clone();
        Box::pin(async move {
            let (reply, outcome) = oneshot::channel();
            requests.send(reply).await.map_err(|_| "shutting down: not reloading".to_string())?;
            outcome.await.map_err(|_| "shutting down: not reloading".to_string())?
        })
    })
}
