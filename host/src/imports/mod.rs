//! The host side of each WIT interface a guest imports (its connection,
//! key-value store, dialer, log, configuration), and the per-instance state
//! they share (`state.rs`). Uses ops and config.
//!
//! `state.rs` is this layer's hub: `GuestState` holds one part per
//! interface, and each interface's host functions are methods on it, as
//! wasmtime's bindings require (`Host` traits are implemented for the
//! store's data type). Each part keeps its fields private to its own file.

pub(crate) mod bindings;
pub(crate) mod budget;
pub(crate) mod connection;
pub(crate) mod dial;
pub(crate) mod keyvalue;
pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod overload;
pub(crate) mod state;
pub(crate) mod wasi_config;
