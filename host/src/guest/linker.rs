//! The linker every guest instance is built from: exactly what a guest may
//! use. WASI's stdio, clocks and random (configured empty per store, see
//! `new_store` in `imports/state.rs`), `wasi:config/store` (the operator's
//! `--config` pairs, `imports/wasi_config.rs`), and the netplug interfaces:
//! `types` (the connection, `imports/connection/`), `log`
//! (`imports/log.rs`) and `dialer` (`imports/dial.rs`). `wasi:keyvalue`
//! (`imports/keyvalue/`) is linked too, but only a guest admitted with
//! `--kv` may import it. A `Runtime` is an engine with its linker: what
//! guests are loaded with until the pool is renewed (runtime/trim.rs).

use crate::config::serve::PoolSize;
use crate::imports::bindings::server::netplug::protocol::{dialer, log};
use crate::imports::state::GuestState;
use anyhow::{Context, Result};
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::Engine;

pub fn build(engine: &Engine) -> Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from).context("cannot link WASI")?;
    crate::imports::wasi_config::link(&mut linker)?;
    crate::imports::keyvalue::link(&mut linker)?;
    crate::imports::connection::link(&mut linker).map_err(anyhow::Error::from).context("cannot link the connection")?;
    log::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link the log interface")?;
    dialer::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link the dialer interface")?;
    Ok(linker)
}

/// An engine with its pool of instance slots, and the linker for it.
#[derive(Clone)]
pub struct Runtime {
    /// Held by every generation made on it; the epoch ticker holds it
    /// weakly, and the pool is freed when the last holder is.
    pub engine: Arc<Engine>,
    pub linker: Linker<GuestState>,
}

impl Runtime {
    pub fn build(pool: &PoolSize) -> Result<Runtime> {
        let engine = super::engine::build(pool.instances, pool.max_memory)?;
        let linker = build(&engine)?;
        Ok(Runtime { engine: Arc::new(engine), linker })
    }
}
