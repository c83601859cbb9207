//! What operators see: the log, metrics, and the admin endpoint (probes,
//! metrics, reload). Uses only config.

pub(crate) mod admin;
pub mod heap;
pub(crate) mod listen;
pub mod log_format;
mod log_time;
pub mod logging;
pub(crate) mod metrics;
