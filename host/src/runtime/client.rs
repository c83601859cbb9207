//! Running a client guest once: the host dials for it and exits with its
//! result.

use crate::config::serve::{ClientConfig, Origin};
use crate::guest::cache::Cache;
use crate::guest::load::{self, KvGrant, World};
use crate::guest::{engine, linker};
use crate::imports::bindings::client::ClientPre;
use crate::imports::state::{new_store, GuestState, Policy, Stdout};
use crate::runtime::fault::{stop_signal, Fault};
use crate::runtime::prepare::policy;
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use wasmtime::component::InstancePre;

/// `host run GUEST --connect HOST:PORT`: admits the guest, then runs it once
/// with the `--connect` address and the arguments.
pub async fn run_once(config: ClientConfig) -> Result<()> {
    let guest = &config.guest;
    let name = load::display_name(&guest.path);
    let engine = Arc::new(engine::build(guest.limits.slots_needed(), guest.limits.max_memory)?);
    let cache = config.cache_dir.clone().map(Cache::new);
    let admitted = load::admit(&engine, &guest.path, cache.as_ref(), &guest.grants, KvGrant::Run)?;
    if admitted.world == World::Server {
        bail!("{name} is a server guest: give --port to serve it (0 picks a free port)");
    }
    let stem = guest.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let policy = policy(&stem, guest, &Origin::Flags, None, config.verbose)?;
    let ticker = engine::EpochTicker::start()?;
    ticker.tick(&engine);
    let pre = linker::build(&engine)?
        .instantiate_pre(&admitted.component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link guest {name}"))?;
    let mut args = vec![config.connect];
    args.extend(config.args);
    run(pre, policy, &name, args).await
}

/// Calls the guest's `run(args)`; an `err` from the guest or a fault is
/// returned as this run's error.
async fn run(pre: InstancePre<GuestState>, policy: Arc<Policy>, guest: &str, args: Vec<String>) -> Result<()> {
    let pre = ClientPre::new(pre)?;
    let mut store = new_store(pre.engine(), &policy, Stdout::Inherit);
    let stop = stop_signal(store.data());
    let call = async {
        let client = pre.instantiate_async(&mut store).await?;
        client.call_run(&mut store, &args).await
    };
    let fault = tokio::select! {
        biased;
        result = call => match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(reason)) => bail!("guest {guest} failed: {reason}"),
            Err(err) => Fault::Trap(err),
        },
        stop = stop => Fault::Stopped(stop),
    };
    if policy.verbose {
        fault.log_backtrace(store.data().span().get());
    }
    bail!("guest {guest} stopped: {}", fault.describe(store.data()))
}
