//! `wasi:keyvalue@0.2.0-draft` (`wit/deps/wasi-keyvalue/`): `store` and
//! `atomics` (an unsigned `increment`, no compare-and-swap), for guests
//! built against that version. Every call is one of the operations of
//! `mod.rs`, on the same store as draft2's.

use super::Bucket;
use crate::imports::state::GuestState;
use anyhow::Result;
use wasmtime::component::{HasSelf, Linker, Resource};

mod bindings {
    // Host functions are async so that the durable backend can run its
    // blocking transactions on tokio's blocking pool (`spawn_blocking`)
    // rather than stall a worker that serves other connections; the memory
    // backend never awaits, so its calls complete in their first poll.
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
        ",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::imports::keyvalue::Bucket,
        },
    });
}

use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use store::{Error, KeyResponse};

store_host! {
    store,
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let page = ours(self.kv_list_keys(&bucket, cursor).await)?;
        Ok(page.map(|page| KeyResponse { keys: page.keys, cursor: page.cursor }))
    }
}

impl atomics::Host for GuestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        ours(self.kv_increment(&bucket, key, delta).await)
    }
}

pub fn link(linker: &mut Linker<GuestState>) -> Result<()> {
    super::linked(
        store::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s),
        "wasi:keyvalue/store@0.2.0-draft",
    )?;
    super::linked(
        atomics::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s),
        "wasi:keyvalue/atomics@0.2.0-draft",
    )?;
    Ok(())
}
