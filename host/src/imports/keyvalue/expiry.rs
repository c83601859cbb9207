//! Entries with a deadline (`netplug:protocol/expiry`: `set-until`,
//! `swap-until`), and the sweep that deletes them once it passes, whether
//! or not anything reads them again, as Redis's active expiry does. Without
//! it a cache (`SET key value EX 10` on ever-new keys) would grow without
//! end, each key held until a read that never comes.
//!
//! Each store has one sweeping thread, which wakes every `SWEEP_EVERY`,
//! deletes what is due and goes back to sleep; it holds the store weakly
//! and ends once the store is dropped. The memory store looks only into
//! shards whose earliest deadline has passed, so an idle store costs a few
//! read locks per wake. Until its sweep, an expired entry already reads as
//! missing.

use super::{Bucket, Cas, Data};
use crate::imports::state::GuestState;
use anyhow::{Context, Result};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::component::{HasSelf, Linker, Resource};

use super::draft2::bindings::netplug::protocol::expiry;
use super::draft2::bindings::wasi::keyvalue0_2_0_draft2::{atomics::CasError, store::Error};

/// How often a store's expired entries are deleted: an entry is gone at
/// most this long after its deadline.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Now, in milliseconds since the unix epoch: a deadline's unit, as guests
/// give it.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether an entry with `deadline` (0: none) is still there at `now`.
pub fn is_live(deadline: u64, now: u64) -> bool {
    deadline == 0 || deadline > now
}

/// Starts the sweep of `data`'s expired entries, on a thread of its own
/// (the durable store's deletes wait for the disk).
pub(super) fn start_sweeping(data: &Arc<Data>) -> Result<()> {
    let data: Weak<Data> = Arc::downgrade(data);
    std::thread::Builder::new()
        .name("kv-expiry".to_string())
        .spawn(move || loop {
            std::thread::sleep(SWEEP_EVERY);
            let Some(data) = data.upgrade() else { return };
            if let Err(e) = data.sweep(now_ms()) {
                tracing::warn!("key-value store: deleting expired entries failed: {e}");
            }
        })
        .context("cannot start the key-value store's expiry thread")?;
    Ok(())
}

impl expiry::Host for GuestState {
    async fn set_until(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        deadline: u64,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.kv_set(&bucket, key, value, deadline).await?.map_err(Error::from))
    }

    async fn swap_until(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
        deadline: u64,
    ) -> wasmtime::Result<Result<(), CasError>> {
        let cas = self.table.delete(cas)?;
        let swapped = match self.kv_swap(cas, value, deadline).await? {
            Ok(swapped) => swapped,
            Err(failure) => return Ok(Err(CasError::StoreError(failure.into()))),
        };
        match swapped {
            Ok(()) => Ok(Ok(())),
            Err(now) => Ok(Err(match self.kv_push(now)? {
                Ok(cas) => CasError::CasFailed(cas),
                Err(failure) => CasError::StoreError(failure.into()),
            })),
        }
    }
}

pub fn link(linker: &mut Linker<GuestState>) -> Result<()> {
    super::linked(
        expiry::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s),
        "netplug:protocol/expiry@0.1.0",
    )
}
