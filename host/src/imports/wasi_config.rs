//! `wasi:config/store`: the configuration the operator gives a guest with
//! `--config KEY=VALUE`, read-only to the guest. Built once per run and
//! reached by every store through its shared `Policy`, so a connection
//! neither copies nor counts it. Never filled from the host's environment:
//! what a guest is configured with is only what the command line says.

use crate::imports::state::GuestState;
use anyhow::{Context, Result};
use std::fmt;
use wasmtime::component::Linker;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

/// The operator's configuration for the guest.
pub struct GuestConfig {
    vars: WasiConfigVariables,
    /// The keys, sorted, for `Debug`; values are left out, as they may be
    /// secrets.
    keys: Vec<String>,
}

impl GuestConfig {
    /// From `--config` pairs in command-line order: of a repeated key the
    /// last value wins, so a wrapper script can append an override.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut keys: Vec<String> = pairs.iter().map(|(key, _)| key.clone()).collect();
        keys.sort();
        keys.dedup();
        // Collected into a map in order, so a later pair replaces an earlier one.
        GuestConfig { vars: pairs.into_iter().collect(), keys }
    }
}

impl fmt::Debug for GuestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestConfig").field("keys", &self.keys).finish_non_exhaustive()
    }
}

/// Links `wasi:config/store` for every guest. A guest that does not import
/// it never sees it; one that does sees only the operator's pairs (none
/// without `--config`).
pub fn link(linker: &mut Linker<GuestState>) -> Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, view).map_err(anyhow::Error::from).context("cannot link wasi:config")
}

/// The interface's view of a store: a borrow of the run's one map, through
/// the `Arc<Policy>` the store already holds, so no connection pays for it.
fn view(state: &mut GuestState) -> WasiConfig<'_> {
    WasiConfig::from(&state.policy.config.vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_keys_once_and_never_a_value() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let config = GuestConfig::new(vec![pair("b", "1"), pair("a", "secret"), pair("b", "2")]);
        let shown = format!("{config:?}");
        assert!(shown.contains(r#"keys: ["a", "b"]"#), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
