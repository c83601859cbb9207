//! `host run`: admit the guest, then serve it on a listener or run it once,
//! by its world. Engine and linker are built once here, and an
//! `InstancePre` per generation of the guest (see `reload.rs`); each
//! connection gets its own store (see `session.rs`).

use crate::admin::{self, Admin, Health, ReloadFn};
use crate::cache::Cache;
use crate::config::RunConfig;
use crate::generation::Current;
use crate::guest::{self, Admitted, KvGrant, World};
use crate::listener::{self, Service, Stats, Stopping};
use crate::pool;
use crate::reload::{self, Loader};
use crate::store::Policy;
use crate::{client, engine, linker, shutdown};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::sync::Arc;
use tracing::Instrument;

pub fn run(config: RunConfig) -> Result<()> {
    let engine = engine::build(pool::slots_needed(&config.limits), config.limits.max_memory)?;
    let cache = config.cache_dir.clone().map(|dir| Arc::new(Cache::new(dir)));
    let Admitted { bytes, component, world } =
        guest::admit(&engine, &config.guest, cache.as_deref(), &config.grants, KvGrant::Run)?;
    let guest_name = guest::display_name(&config.guest);
    match world {
        World::Server if config.listen.is_none() => {
            bail!("{guest_name} is a server guest: give --port to serve it (0 picks a free port)")
        }
        World::Client if config.connect.is_none() => {
            bail!("{guest_name} is a client guest: give --connect HOST:PORT to run it")
        }
        _ => {}
    }
    let linker = linker::build(&engine)?;
    // `host run` has one listener, named after its guest.
    let name = config.guest.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let policy = Arc::new(Policy {
        metrics: crate::metrics::global().listener(&name),
        limits: config.limits.clone(),
        dial: config.dial,
        overload: config.overload,
        config: config.guest_config,
        kv: crate::keyvalue::KvStore::open_configured(config.kv.as_ref(), crate::metrics::global().kv(&name))
            .map_err(|e| anyhow::anyhow!("--kv {e:#}"))?,
        verbose: config.verbose,
    });
    let tokio =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let _ticker = engine::EpochTicker::start(&engine)?;
    if world == World::Client {
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot link guest {guest_name}"))?;
        let mut args = vec![config.connect.clone().expect("checked above")];
        args.extend(config.args);
        return tokio.block_on(client::run(pre, policy, &guest_name, args));
    }
    let addr = config.listen.expect("checked above");
    let loader =
        Arc::new(Loader::new(engine, linker, cache, config.guest.clone(), config.grants, KvGrant::Run, policy.clone()));
    let first = loader.generation(1, &component, &bytes)?;
    let current = Arc::new(Current::new(first, config.drain_timeout));
    let service =
        Arc::new(Service { name: name.as_str().into(), policy, current: current.clone(), stats: Stats::default() });
    let admin_addr = config.admin_addr;
    // `listener`, as in a connection's span; never `name`, which the JSON log
    // writes beside the fields for the span's own name (a key twice).
    let span = tracing::info_span!("listener", listener = %name);
    tokio.block_on(
        async {
            let listener = listener::bind(addr, config.backlog)?;
            let bound = listener.local_addr().context("cannot read the bound address")?;
            let shutdown = shutdown::flag()?;
            let admin_socket = admin_addr.map(admin::bind).transpose()?;
            reload::spawn(loader.clone(), current.clone(), config.watch)?;
            // Tests and scripts read this line to find the port.
            listener::announce(format_args!("listening on {bound}"));
            if let Some(socket) = admin_socket {
                let health = Health::new(shutdown.clone());
                health.serving(&name);
                let reload: ReloadFn = Box::new(move || {
                    let (loader, current) = (loader.clone(), current.clone());
                    Box::pin(async move { reload::reload(&loader, &current, "POST /reload").await })
                });
                let bound = admin::spawn(socket, Admin { health, reload })?;
                listener::announce(format_args!("admin listening on {bound}"));
            }
            std::io::stdout().flush().ok();
            let watching = if config.watch { ", reloading when it changes" } else { "" };
            tracing::info!("serving {guest_name} (world server, generation 1) on {bound}{watching}");
            // The accept loop runs on a worker, beside the connections it
            // spawns, rather than on this thread: handing every new
            // connection across threads costs a wake-up each.
            let shutdown = shutdown::delayed(shutdown, config.shutdown_delay);
            let stopping = Stopping { shutdown, grace: config.shutdown_timeout, removed: None, on_removed: None };
            let serve = listener::run(Arc::new(listener), service, stopping);
            tokio::spawn(serve.in_current_span()).await.context("the accept loop failed")?
        }
        .instrument(span),
    )
}
