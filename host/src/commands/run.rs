//! `host run`: admit the guest, then serve it on a listener or run it once,
//! by its world. Engine and linker are built once here, and an
//! `InstancePre` per generation of the guest (see `reload.rs`); each
//! connection gets its own store (see `session.rs`).

use crate::config::run::RunConfig;
use crate::guest::cache::Cache;
use crate::guest::engine;
use crate::guest::linker;
use crate::guest::load::{self, Admitted, KvGrant, World};
use crate::imports::state::Policy;
use crate::ops::admin::{self, Admin, Health, ReloadFn};
use crate::ops::listen;
use crate::runtime::client;
use crate::runtime::generation::Current;
use crate::runtime::listener::{self, Service, Stats, Stopping};
use crate::runtime::reload::{self, Loader};
use crate::runtime::shutdown;
use anyhow::{bail, Context, Result};
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::Instrument;

/// `host run`: a client guest is run once; a server guest is served on
/// `--port` until SIGINT or SIGTERM.
pub fn run(config: RunConfig) -> Result<()> {
    let (guest, world) = prepare(&config)?;
    let guest_name = load::display_name(&config.guest);
    let tokio =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    match (world, config.listen, &config.connect) {
        (World::Server, Some(addr), _) => tokio.block_on(async {
            let socket = listen::bind(addr, config.backlog)?;
            let shutdown = shutdown::signal()?;
            serve_guest(guest, config, socket, shutdown).await
        }),
        (World::Server, None, _) => {
            bail!("{guest_name} is a server guest: give --port to serve it (0 picks a free port)")
        }
        (World::Client, _, Some(_)) => tokio.block_on(run_client(guest, config)),
        (World::Client, _, None) => bail!("{guest_name} is a client guest: give --connect HOST:PORT to run it"),
    }
}

/// Serves `config`'s guest on `socket` until `shutdown` resolves, then lets
/// connections finish within `--shutdown-timeout`. What `host run` does for a
/// server guest, callable in-process (tests serve on a port-0 socket and
/// stop it with a channel). Must run inside a multi-threaded tokio runtime.
pub async fn serve(
    config: RunConfig,
    socket: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (guest, world) = prepare(&config)?;
    if world == World::Client {
        bail!("{} is a client guest: it is run, not served", load::display_name(&config.guest));
    }
    serve_guest(guest, config, socket, shutdown).await
}

/// `serve`, for a guest already admitted.
async fn serve_guest(
    guest: Guest,
    config: RunConfig,
    socket: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let shutdown = shutdown::flag_on(shutdown);
    let guest_name = load::display_name(&config.guest);
    let Guest { engine, linker, cache, admitted, name } = guest;
    let policy = policy(
        &name,
        config.limits.clone(),
        config.dial,
        config.overload,
        config.guest_config,
        config.kv.as_ref(),
        config.verbose,
    )?;
    let _ticker = engine::EpochTicker::start(&engine)?;
    let loader =
        Arc::new(Loader::new(engine, linker, cache, config.guest.clone(), config.grants, KvGrant::Run, policy.clone()));
    let first = loader.generation(1, &admitted.component, &admitted.bytes)?;
    let current = Arc::new(Current::new(first, config.drain_timeout));
    let service =
        Arc::new(Service { name: name.as_str().into(), policy, current: current.clone(), stats: Stats::default() });
    // `listener`, as in a connection's span; never `name`, which the JSON log
    // writes beside the fields for the span's own name (a key twice).
    let span = tracing::info_span!("listener", listener = %name);
    async {
        let bound = socket.local_addr().context("cannot read the bound address")?;
        let admin_socket = config.admin_addr.map(admin::bind).transpose()?;
        reload::spawn(loader.clone(), current.clone(), config.watch)?;
        // Tests and scripts read this line to find the port.
        listen::announce(format_args!("listening on {bound}"));
        if let Some(socket) = admin_socket {
            let health = Health::new(shutdown.clone());
            health.serving(&name);
            let reload: ReloadFn = Box::new(move || {
                let (loader, current) = (loader.clone(), current.clone());
                Box::pin(async move { reload::reload(&loader, &current, "POST /reload").await })
            });
            let bound = admin::spawn(socket, Admin { health, reload })?;
            listen::announce(format_args!("admin listening on {bound}"));
        }
        std::io::stdout().flush().ok();
        let watching = if config.watch { ", reloading when it changes" } else { "" };
        tracing::info!("serving {guest_name} (world server, generation 1) on {bound}{watching}");
        // The accept loop runs on a worker, beside the connections it
        // spawns, rather than on the caller's thread: handing every new
        // connection across threads costs a wake-up each.
        let shutdown = shutdown::delayed(shutdown, config.shutdown_delay);
        let stopping = Stopping { shutdown, grace: config.shutdown_timeout, removed: None, on_removed: None };
        let serve = listener::run(Arc::new(socket), service, stopping);
        tokio::spawn(serve.in_current_span()).await.context("the accept loop failed")?
    }
    .instrument(span)
    .await
}

/// A client guest, run once with the `--connect` address and the arguments.
async fn run_client(guest: Guest, config: RunConfig) -> Result<()> {
    let guest_name = load::display_name(&config.guest);
    let Guest { engine, linker, admitted, name, .. } = guest;
    let policy = policy(
        &name,
        config.limits.clone(),
        config.dial,
        config.overload,
        config.guest_config,
        config.kv.as_ref(),
        config.verbose,
    )?;
    let _ticker = engine::EpochTicker::start(&engine)?;
    let pre = linker
        .instantiate_pre(&admitted.component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link guest {guest_name}"))?;
    let mut args = vec![config.connect.clone().expect("a client run has --connect")];
    args.extend(config.args);
    client::run(pre, policy, &guest_name, args).await
}

/// What both worlds build first: the engine and its pool, the admitted
/// guest and the linker. `host run` has one listener, named after its
/// guest.
struct Guest {
    engine: wasmtime::Engine,
    linker: wasmtime::component::Linker<crate::imports::state::GuestState>,
    cache: Option<Arc<Cache>>,
    admitted: Admitted,
    name: String,
}

fn prepare(config: &RunConfig) -> Result<(Guest, World)> {
    let engine = engine::build(config.limits.slots_needed(), config.limits.max_memory)?;
    let cache = config.cache_dir.clone().map(|dir| Arc::new(Cache::new(dir)));
    let admitted = load::admit(&engine, &config.guest, cache.as_deref(), &config.grants, KvGrant::Run)?;
    let world = admitted.world;
    let linker = linker::build(&engine)?;
    let name = config.guest.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((Guest { engine, linker, cache, admitted, name }, world))
}

/// The listener's policy, from the parts of the run's configuration it
/// takes over, with its store opened.
fn policy(
    name: &str,
    limits: crate::config::limits::Limits,
    dial: crate::imports::dial::DialPolicy,
    overload: crate::imports::overload::OverloadPolicy,
    guest_config: crate::imports::wasi_config::GuestConfig,
    kv: Option<&crate::imports::keyvalue::KvConfig>,
    verbose: bool,
) -> Result<Arc<Policy>> {
    let kv = crate::imports::keyvalue::KvStore::open_configured(kv, crate::ops::metrics::global().kv(name))
        .map_err(|e| anyhow::anyhow!("--kv {e:#}"))?;
    Ok(Arc::new(Policy {
        metrics: crate::ops::metrics::global().listener(name),
        limits,
        dial,
        overload,
        config: guest_config,
        kv,
        verbose,
    }))
}
