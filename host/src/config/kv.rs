//! What `--kv` and its limits say: the store's backend and its bounds,
//! as the command line and the configuration file give them.

use std::path::PathBuf;

/// What `--kv` and its limits say, validated by the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct KvConfig {
    pub backend: Backend,
    pub limits: KvLimits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `--kv memory`: gone when the host exits.
    Memory,
    /// `--kv PATH`: a redb database file, created if missing.
    Path(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub struct KvLimits {
    /// What the whole store may hold (`imports/keyvalue/usage.rs`),
    /// shared by every connection of the listener.
    pub max_bytes: u64,
    pub max_key_size: u64,
    pub max_value_size: u64,
    /// Operations one connection may make; `None` for no limit.
    pub max_ops: Option<u64>,
}

impl Backend {
    /// `memory`, or a database path written so that it cannot be a typo of
    /// a word: one with a `/` (`./cache`, `/var/lib/netplug/kv`) or ending
    /// in `.redb`. Anything else (`memry`, `Memory`) is refused rather than
    /// silently made a file of that name.
    pub fn parse(text: &str) -> Result<Backend, String> {
        if text == "memory" {
            Ok(Backend::Memory)
        } else if text.contains("://") {
            Err(format!("`{text}`: store URLs are not supported; use `memory` or a database path"))
        } else if text.contains('/') || (text.ends_with(".redb") && text.len() > ".redb".len()) {
            Ok(Backend::Path(PathBuf::from(text)))
        } else {
            Err(format!(
                "`{text}` is neither `memory` nor a database path: a path contains a `/` or ends in `.redb` \
                 (for example ./{text}.redb)"
            ))
        }
    }
}

/// The package `host run` adds to the guest's grants when `--kv` is given
/// (`guest::load::grant` lets `wasi:keyvalue` through only then).
pub const GRANT: &str = "wasi:keyvalue";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kv_value_is_memory_or_written_as_a_path() {
        assert_eq!(Backend::parse("memory"), Ok(Backend::Memory));
        for path in ["./memry", "/var/lib/netplug/kv", "cache.redb", "data/cache"] {
            assert_eq!(Backend::parse(path), Ok(Backend::Path(PathBuf::from(path))), "{path}");
        }
        for typo in ["memry", "Memory", "cache", ".redb", ""] {
            assert!(Backend::parse(typo).unwrap_err().contains("neither `memory` nor a database path"), "{typo}");
        }
        assert!(Backend::parse("redis://h:6379").unwrap_err().contains("URLs are not supported"));
    }
}
