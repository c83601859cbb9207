//! netplug's host: serves protocol guests (WebAssembly components) over
//! real TCP. The `host` binary (main.rs) is a thin command line over this
//! library; see docs/architecture.md for what each module holds.

pub mod admin;
mod bindings;
pub mod budget;
pub mod cache;
pub mod cli;
pub mod client;
pub mod compile;
pub mod config;
pub mod config_file;
pub mod connection;
pub mod dial;
pub mod engine;
pub mod fault;
pub mod generation;
pub mod guest;
pub mod guest_log;
pub mod inspect;
pub mod keyvalue;
pub mod limits;
pub mod linker;
pub mod listener;
mod log_time;
pub mod logging;
pub mod metrics;
pub mod overload;
pub mod pool;
pub mod precompiled;
pub mod reload;
pub mod run;
pub mod serve;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod units;
pub mod wasi_config;
pub mod wit;
