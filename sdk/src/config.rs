//! The operator's configuration: the `--config KEY=VALUE` pairs of `host
//! run`, read through `wasi:config/store`.
//!
//! A guest that never calls these functions does not import
//! `wasi:config/store` at all (the import is dropped when the component is
//! made), so it runs on hosts that do not grant it.
//!
//! In native tests (not `wasm32`) they read the pairs set with
//! [`testing::set_config`](crate::testing::set_config) instead.

use std::io;

/// The value of `key`, or `None` when the operator did not set it. A store
/// error (the host could not read its configuration) is an `Other` error
/// with the host's message, not taken for a missing key.
pub fn get(key: &str) -> io::Result<Option<String>> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::server::wasi::config::store::get(key).map_err(error);
    #[cfg(not(target_arch = "wasm32"))]
    return native::get(key);
}

/// Every pair the operator set.
pub fn get_all() -> io::Result<Vec<(String, String)>> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::server::wasi::config::store::get_all().map_err(error);
    #[cfg(not(target_arch = "wasm32"))]
    return native::get_all();
}

#[cfg(target_arch = "wasm32")]
fn error(e: crate::bindings::server::wasi::config::store::Error) -> io::Error {
    use crate::bindings::server::wasi::config::store::Error;
    match e {
        Error::Upstream(message) | Error::Io(message) => {
            io::Error::other(format!("cannot read the configuration: {message}"))
        }
    }
}

/// The native tests' configuration, per thread.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) mod native {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static PAIRS: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub fn set(key: &str, value: Option<&str>) {
        PAIRS.with_borrow_mut(|pairs| match value {
            Some(value) => pairs.insert(key.to_string(), value.to_string()),
            None => pairs.remove(key),
        });
    }

    pub fn get(key: &str) -> std::io::Result<Option<String>> {
        Ok(PAIRS.with_borrow(|pairs| pairs.get(key).cloned()))
    }

    pub fn get_all() -> std::io::Result<Vec<(String, String)>> {
        Ok(PAIRS.with_borrow(|pairs| pairs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
}
