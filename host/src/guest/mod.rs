//! Guests as code: the engine, reading and admitting a component (through
//! the compiled-guest cache or a `.cwasm`), and the linker that gives it
//! its imports. Uses imports, ops and config.

pub mod bundle;
pub(crate) mod cache;
pub mod engine;
pub(crate) mod linker;
pub(crate) mod load;
pub mod precompiled;
