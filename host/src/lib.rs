//! netplug's host: serves protocol guests (WebAssembly components) over
//! real TCP. The `host` binary (main.rs) is a thin command line over this
//! library; see docs/architecture.md for the layers and one connection's
//! way through them. Each folder is a layer and uses only the ones below
//! it: commands, runtime, guest, imports, ops, config. Only what the binary
//! and the tests use is public; the rest is the crate's own, so the
//! compiler finds what nothing uses.

pub mod commands;
pub mod config;
pub mod guest;
pub(crate) mod imports;
pub mod ops;
pub mod runtime;
