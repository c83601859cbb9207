//! `wasi:keyvalue@0.2.0-draft` (`wit/deps/wasi-keyvalue/`): `store` and
//! `atomics` (an unsigned `increment`, no compare-and-swap), for guests
//! built against that version. Every call is one of the operations of
//! `mod.rs`, on the same store as draft2's.

use super::{incremented, Bucket, Failure, Outcome};
use crate::store::GuestState;
use anyhow::{Context, Result};
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
            "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        },
    });
}

use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use store::{Error, KeyResponse};

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        match failure {
            Failure::AccessDenied => Error::AccessDenied,
            Failure::Other(message) => Error::Other(message),
        }
    }
}

/// An outcome with this version's error.
fn ours<T>(outcome: Outcome<T>) -> wasmtime::Result<Result<T, Error>> {
    outcome.map(|result| result.map_err(Error::from))
}

impl store::Host for GuestState {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        ours(self.kv_open(&identifier))
    }
}

impl store::HostBucket for GuestState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        ours(self.kv_get(&bucket, key).await)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        ours(self.kv_set(&bucket, key, value).await)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<(), Error>> {
        ours(self.kv_delete(&bucket, key).await)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<bool, Error>> {
        ours(self.kv_exists(&bucket, key).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let page = ours(self.kv_list_keys(&bucket, cursor).await)?;
        Ok(page.map(|page| KeyResponse { keys: page.keys, cursor: page.cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.kv_drop(bucket)
    }
}

impl atomics::Host for GuestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        ours(self.kv_increment(&bucket, key, move |current, key| incremented(current, key, delta)).await)
    }
}

pub fn link(linker: &mut Linker<GuestState>) -> Result<()> {
    store::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link wasi:keyvalue/store@0.2.0-draft")?;
    atomics::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("cannot link wasi:keyvalue/atomics@0.2.0-draft")?;
    Ok(())
}
