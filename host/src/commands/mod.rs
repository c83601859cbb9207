//! The subcommands, one file each: what `main.rs` calls once the command
//! line is parsed. The top layer: it may use every layer below (runtime,
//! guest, imports, ops, config); nothing below uses it.

pub mod bundle;
pub mod compile;
pub mod inspect;
pub mod run;
pub mod serve;
pub mod wit;
