//! The operator's configuration: the `--config KEY=VALUE` pairs of `host
//! run`, read through `wasi:config/store`.
//!
//! A guest that never calls these functions does not import
//! `wasi:config/store` at all (the import is dropped when the component is
//! made), so it runs on hosts that do not grant it.
//!
//! In native tests (not `wasm32`) they read the pairs set with
//! [`testing::set_config`](crate::testing::set_config) instead.

/// The value of `key`, or `None` when the operator did not set it (a
/// store error is treated the same way).
pub fn get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::server::wasi::config::store::get(key).ok().flatten();
    #[cfg(not(target_arch = "wasm32"))]
    return native::get(key);
}

/// Every pair the operator set (none on a store error).
pub fn get_all() -> Vec<(String, String)> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::server::wasi::config::store::get_all().unwrap_or_default();
    #[cfg(not(target_arch = "wasm32"))]
    return native::get_all();
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

    pub fn get(key: &str) -> Option<String> {
        PAIRS.with_borrow(|pairs| pairs.get(key).cloned())
    }

    pub fn get_all() -> Vec<(String, String)> {
        PAIRS.with_borrow(|pairs| pairs.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
