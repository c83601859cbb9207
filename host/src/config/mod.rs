//! What the host is told: the command line's flags, the configuration
//! file, and the validated settings both become. The bottom layer: it uses
//! no other part of the host, and everything else may use it.

pub mod file;
pub mod flags;
pub(crate) mod kv;
pub(crate) mod limits;
pub mod serve;
pub(crate) mod units;
