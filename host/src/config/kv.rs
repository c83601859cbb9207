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
    /// `--kv redis://[USER:PASS@]HOST:PORT[/DB]`: one Redis-protocol
    /// server, shared by every host pointed at it.
    Redis(String),
    /// `--kv redis+cluster://[USER:PASS@]HOST:PORT,HOST:PORT,...`: a Redis
    /// Cluster, found from these seed nodes.
    RedisCluster(String),
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
    /// `memory`, a Redis URL (`redis://`, `redis+cluster://`), or a
    /// database path written so that it cannot be a typo of a word: one
    /// with a `/` (`./cache`, `/var/lib/netplug/kv`) or ending in `.redb`.
    /// Anything else (`memry`, `Memory`) is refused rather than silently
    /// made a file of that name.
    pub fn parse(text: &str) -> Result<Backend, String> {
        if text == "memory" {
            Ok(Backend::Memory)
        } else if text.starts_with("redis://") {
            redis::Client::open(text).map_err(|e| format!("`{}`: not a Redis URL: {e}", redacted(text)))?;
            Ok(Backend::Redis(text.to_string()))
        } else if text.starts_with("redis+cluster://") {
            cluster_nodes(text)?;
            Ok(Backend::RedisCluster(text.to_string()))
        } else if text.contains("://") {
            Err(format!(
                "`{}`: the store URLs are redis://HOST:PORT[/DB] and redis+cluster://HOST:PORT,HOST:PORT,... \
                 (TLS is not built in)",
                redacted(text)
            ))
        } else if text.contains('/') || (text.ends_with(".redb") && text.len() > ".redb".len()) {
            Ok(Backend::Path(PathBuf::from(text)))
        } else {
            Err(format!(
                "`{text}` is neither `memory` nor a database path: a path contains a `/` or ends in `.redb` \
                 (for example ./{text}.redb)"
            ))
        }
    }

    /// The store as logs and errors name it: a URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Backend::Memory => "memory".to_string(),
            Backend::Path(path) => path.display().to_string(),
            Backend::Redis(url) | Backend::RedisCluster(url) => redacted(url),
        }
    }
}

/// A `redis+cluster://` URL's seed nodes, each as a `redis://` URL with the
/// credentials given once for all. A database number has no place there: a
/// cluster has only database 0.
pub fn cluster_nodes(text: &str) -> Result<Vec<String>, String> {
    let shown = redacted(text);
    let rest = &text["redis+cluster://".len()..];
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    if hosts.contains('/') {
        return Err(format!("`{shown}`: a Redis Cluster has no databases; give HOST:PORT,HOST:PORT,..."));
    }
    let nodes: Vec<String> = hosts.split(',').map(|node| format!("redis://{credentials}{node}")).collect();
    for (node, host) in nodes.iter().zip(hosts.split(',')) {
        if host.is_empty() || !host.contains(':') {
            return Err(format!("`{shown}`: `{host}` is not HOST:PORT"));
        }
        redis::Client::open(node.as_str()).map_err(|e| format!("`{shown}`: `{host}` is not a node address: {e}"))?;
    }
    Ok(nodes)
}

/// `url` with its password, if any, written as `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((credentials, hosts)) = rest.rsplit_once('@') else { return url.to_string() };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{hosts}"),
        None => format!("{scheme}://***@{hosts}"),
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
        assert_eq!(Backend::parse("redis://h:6379/2"), Ok(Backend::Redis("redis://h:6379/2".to_string())));
        let cluster = "redis+cluster://u:secret@h1:7000,h2:7001";
        assert_eq!(Backend::parse(cluster), Ok(Backend::RedisCluster(cluster.to_string())));
        assert_eq!(cluster_nodes(cluster).unwrap(), ["redis://u:secret@h1:7000", "redis://u:secret@h2:7001"]);
        for bad in ["rediss://h:6379", "memcached://h:11211"] {
            assert!(Backend::parse(bad).unwrap_err().contains("store URLs are redis://"), "{bad}");
        }
        let no_db = Backend::parse("redis+cluster://h1:7000,h2:7001/3").unwrap_err();
        assert!(no_db.contains("no databases"), "{no_db}");
        assert!(Backend::parse("redis+cluster://h1:7000,,h2:1").unwrap_err().contains("is not HOST:PORT"));
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(redacted("redis://u:secret@h:6379/1"), "redis://u:***@h:6379/1");
        assert_eq!(redacted("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
        let err = Backend::parse("rediss://u:secret@h:6379").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert_eq!(Backend::Redis("redis://u:pw@h:1".into()).shown(), "redis://u:***@h:1");
    }
}
