//! Running a client guest once: the host dials for it and exits with its
//! result.

use crate::imports::bindings::client::ClientPre;
use crate::imports::state::{new_store, GuestState, Policy, Stdout};
use crate::runtime::fault::{stop_signal, Fault};
use anyhow::{bail, Result};
use std::sync::Arc;
use wasmtime::component::InstancePre;

/// Calls the guest's `run(args)`; an `err` from the guest or a fault is
/// returned as this run's error.
pub async fn run(pre: InstancePre<GuestState>, policy: Arc<Policy>, guest: &str, args: Vec<String>) -> Result<()> {
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
        fault.log_backtrace(store.data().span.get());
    }
    bail!("guest {guest} stopped: {}", fault.describe(store.data()))
}
