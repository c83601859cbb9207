//! `wasi:keyvalue@0.2.0-draft2` (`wit/deps/wasi-keyvalue-draft2/`): `store`
//! (a string cursor), `atomics` (a signed `increment`, and the
//! compare-and-swap: `cas.new` reads a key's value, `swap` writes only if it
//! is still that value, else fails with `cas-failed` and a new `cas` holding
//! the value now there), and `batch` (one operation per key, not atomic as a
//! whole, as the interface says). Every call is one or more of the
//! operations of `mod.rs`, on the same store as draft's.

use super::{Bucket, Cas};
use crate::imports::state::GuestState;
use anyhow::Result;
use wasmtime::component::{HasSelf, Linker, Resource};

pub(super) mod bindings {
    // Async for the durable backend, as draft's (see draft.rs).
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
            import wasi:keyvalue/batch@0.2.0-draft2;
            import netplug:protocol/expiry@0.1.0;
        ",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::imports::keyvalue::Bucket,
            "wasi:keyvalue/atomics.cas": crate::imports::keyvalue::Cas,
        },
    });
}

use atomics::CasError;
use bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use store::{Error, KeyResponse};

/// Returns the guest's error from the enclosing function, or the value.
macro_rules! or_return {
    ($outcome:expr) => {
        match ours($outcome)? {
            Ok(value) => value,
            Err(e) => return Ok(Err(e.into())),
        }
    };
}

store_host! {
    store,
    /// The cursor is the offset of the next page, in decimal.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let offset = match cursor.as_deref().map(str::parse::<u64>).transpose() {
            Ok(offset) => offset,
            Err(_) => return Ok(Err(Error::Other("the cursor is not one list-keys returned".to_string()))),
        };
        let page = or_return!(self.kv_list_keys(&bucket, offset).await);
        Ok(Ok(KeyResponse { keys: page.keys, cursor: page.cursor.map(|next| next.to_string()) }))
    }
}

impl atomics::HostCas for GuestState {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> wasmtime::Result<Result<Resource<Cas>, Error>> {
        let cas = or_return!(self.kv_cas(&bucket, key).await);
        ours(self.kv_push(cas))
    }

    /// The value `new` (or the failed swap) read: no operation of its own.
    async fn current(&mut self, cas: Resource<Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(Ok(self.table.get(&cas)?.current().map(<[u8]>::to_vec)))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.kv_drop(cas)
    }
}

impl atomics::Host for GuestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        ours(self.kv_increment(&bucket, key, delta).await)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), CasError>> {
        let cas = self.table.delete(cas)?;
        match or_return!(self.kv_swap(cas, value, 0).await) {
            Ok(()) => Ok(Ok(())),
            Err(now) => Ok(Err(CasError::CasFailed(or_return!(self.kv_push(now))))),
        }
    }
}

impl From<Error> for CasError {
    fn from(e: Error) -> CasError {
        CasError::StoreError(e)
    }
}

impl batch::Host for GuestState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, Error>> {
        ours(self.kv_get_many(&bucket, keys).await)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        ours(self.kv_set_many(&bucket, key_values).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        ours(self.kv_delete_many(&bucket, keys).await)
    }
}

pub fn link(linker: &mut Linker<GuestState>) -> Result<()> {
    super::linked(
        store::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s),
        "wasi:keyvalue/store@0.2.0-draft2",
    )?;
    super::linked(
        atomics::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s),
        "wasi:keyvalue/atomics@0.2.0-draft2",
    )?;
    super::linked(
        batch::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s),
        "wasi:keyvalue/batch@0.2.0-draft2",
    )?;
    Ok(())
}
