//! netplug's host: serves protocol guests (WebAssembly components) over
//! real TCP. The `host` binary (main.rs) is a thin command line over this
//! library; see docs/architecture.md for what each module holds. Only what
//! the binary and the tests use is public; the rest is the crate's own, so
//! the compiler finds what nothing uses.

pub(crate) mod admin;
mod bindings;
pub(crate) mod budget;
pub(crate) mod cache;
pub mod cli;
pub(crate) mod client;
pub mod compile;
pub mod config;
pub mod config_file;
pub(crate) mod connection;
pub(crate) mod dial;
pub mod engine;
pub(crate) mod fault;
pub(crate) mod generation;
pub(crate) mod guest;
pub(crate) mod guest_log;
pub mod inspect;
pub(crate) mod keyvalue;
pub(crate) mod limits;
pub(crate) mod linker;
pub(crate) mod listener;
mod log_time;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod overload;
pub(crate) mod pool;
pub mod precompiled;
pub(crate) mod reload;
pub mod run;
pub mod serve;
pub(crate) mod session;
pub(crate) mod shutdown;
pub(crate) mod store;
pub(crate) mod units;
pub(crate) mod wasi_config;
pub mod wit;
