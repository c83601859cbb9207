//! Serving: listeners and their accept loops, one connection's life from a
//! pool slot to its record, generations and their reloads, overload and
//! shutdown. Uses the layers below (guest, imports, ops, config).

pub(crate) mod client;
pub(crate) mod fault;
pub(crate) mod generation;
pub(crate) mod listener;
pub(crate) mod plan;
pub(crate) mod pool;
pub(crate) mod prepare;
pub(crate) mod reload;
pub mod server;
pub(crate) mod session;
pub(crate) mod shutdown;
pub(crate) mod slots;
pub(crate) mod supervisor;
pub(crate) mod trim;
