//! `host run`: admit the guest, then serve it on a listener or run it once,
//! by its world. Engine, linker and `InstancePre` are built once here; each
//! connection gets its own store (see `session.rs`).

use crate::bindings::server::ServerPre;
use crate::cache::Cache;
use crate::config::RunConfig;
use crate::guest::{self, World};
use crate::listener::{self, Service, Stats};
use crate::pool::{self, Pool};
use crate::store::Policy;
use crate::{client, engine, linker, shutdown};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::sync::Arc;
use tracing::Instrument;

pub fn run(config: RunConfig) -> Result<()> {
    let engine = engine::build(pool::slots_needed(&config.limits), config.limits.max_memory)?;
    let cache = config.cache_dir.clone().and_then(Cache::open);
    let component = guest::load(&engine, &config.guest, cache.as_ref())?;
    let world = guest::world_of(&engine, &component, &config.guest)?;
    guest::check_imports(&engine, &component, &config.guest, &config.grants)?;
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
    let pre = linker::build(&engine)?
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link guest {guest_name}"))?;
    let policy = Arc::new(Policy {
        limits: config.limits.clone(),
        dial: config.dial,
        overload: config.overload,
        config: config.guest_config,
        verbose: config.verbose,
    });
    let tokio =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let _ticker = engine::EpochTicker::start(&engine)?;
    match world {
        World::Server => {
            let addr = config.listen.expect("checked above");
            let pre = ServerPre::new(pre)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("{guest_name} does not match the server world"))?;
            // `host run` has one listener, named after its guest.
            let name = config.guest.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let service = Arc::new(Service {
                name: name.clone(),
                guest: guest_name.clone(),
                pool: Pool::new(pre, policy),
                stats: Stats::default(),
            });
            let span = tracing::info_span!("listener", name = %name);
            tokio.block_on(
                async {
                    let listener = listener::bind(addr, config.backlog)?;
                    let bound = listener.local_addr().context("cannot read the bound address")?;
                    // Tests and scripts read this line to find the port.
                    println!("listening on {bound}");
                    std::io::stdout().flush().ok();
                    tracing::info!("serving {guest_name} (world server) on {bound}");
                    let shutdown = shutdown::signal()?;
                    // The accept loop runs on a worker, beside the connections
                    // it spawns, rather than on this thread: handing every new
                    // connection across threads costs a wake-up each.
                    let serve = listener::run(listener, service, shutdown, config.shutdown_timeout);
                    tokio::spawn(serve.in_current_span()).await.context("the accept loop failed")?
                }
                .instrument(span),
            )
        }
        World::Client => {
            let mut args = vec![config.connect.clone().expect("checked above")];
            args.extend(config.args);
            tokio.block_on(client::run(pre, policy, &guest_name, args))
        }
    }
}
