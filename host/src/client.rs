//! Running a client guest once: the host dials for it and exits with its
//! result.

use crate::bindings::client::ClientPre;
use crate::outcome::{describe_fault, print_backtrace};
use crate::state::{new_store, GuestState, Policy, Stdout};
use anyhow::{bail, Result};
use std::sync::Arc;
use wasmtime::component::InstancePre;

/// Calls the guest's `run(args)`; an `err` from the guest or a fault is
/// returned as this run's error.
pub async fn run(pre: InstancePre<GuestState>, policy: Arc<Policy>, guest: &str, args: Vec<String>) -> Result<()> {
    let pre = ClientPre::new(pre)?;
    let mut store = new_store(pre.engine(), &policy, guest.to_string(), Stdout::Inherit);
    let stop = store.data().stop_signal();
    let call = async {
        let client = pre.instantiate_async(&mut store).await?;
        client.call_run(&mut store, &args).await
    };
    let result = tokio::select! {
        biased;
        result = call => result,
        stop = stop => bail!("guest {guest} stopped: {stop}"),
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => bail!("guest {guest} failed: {reason}"),
        Err(err) => {
            if policy.verbose {
                print_backtrace(guest, &err);
            }
            bail!("guest {guest} stopped: {}", describe_fault(&err, store.data()))
        }
    }
}
