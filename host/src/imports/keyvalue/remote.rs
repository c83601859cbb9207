//! `--kv redis://...` and `--kv redis+cluster://...`: the store on a
//! Redis-protocol server or a Redis Cluster, so that every host of a fleet
//! pointed there shares one state, and a host that goes away takes none
//! of it along.
//!
//! - A bucket is a key prefix: its name with `%` and `:` escaped, then `:`
//!   (`""` is `:`, `sessions` is `sessions:`), so no two buckets share a key.
//! - An increment is `INCRBY`: Redis's numbers are signed 64-bit decimals,
//!   which both versions' increments store too.
//! - A compare-and-swap is one Lua script, run atomically by the server (on
//!   a cluster too: it touches one key).
//! - A batch call is one command (`MGET`, `MSET`, `DEL`); a cluster client
//!   splits it by shard and sends each shard its part at once.
//! - A deadline is `PXAT`: the server expires entries itself.
//! - What the store may hold is bounded by the server's own `maxmemory`
//!   (a write past it fails with the server's `OOM` error); the host does
//!   not count it, so `--kv-max-bytes` does not apply.
//!
//! The connection is the `redis` crate's connection manager (one
//! multiplexed connection, made again after a failure) or its cluster
//! connection. When the server cannot be reached, a call fails at once with
//! the store's error: a connection is retried once, briefly, then the call
//! gives up, and the next call tries again. The host logs one warning when
//! the store stops answering and one line when it answers again, and
//! counts every error the store returns (`netplug_kv_store_errors_total`).
//! Each call waits at most the connection's idle timeout (`awaited` in
//! mod.rs), which is not charged as guest CPU.

use super::Page;
use crate::config::kv::{cluster_nodes, Backend};
use anyhow::{bail, Context, Result};
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisError, RedisFuture, RedisResult, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How long one attempt to connect may take. Loopback and LAN servers
/// answer in microseconds; a server that does not answer within this is
/// treated as down, and the call fails rather than holding its guest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The crate's own bound on an answer (500 ms by default), lifted: the
/// connection's idle timeout bounds each call instead (`awaited`), as it
/// bounds every other wait of the guest's. A cluster client takes a
/// duration, so there it is one far beyond any idle timeout.
const NO_RESPONSE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Keys one `list-keys` page asks each node to look at (`SCAN`'s `COUNT`).
const SCAN_COUNT: usize = 1000;

/// A cluster's `list-keys` cursor: the node's index in the high bits, that
/// node's own `SCAN` cursor in the low ones.
const NODE_SHIFT: u32 = 48;

/// The compare-and-swap, on the server: writes the new value only if the
/// key still holds the expected one (or, when none is expected, no value),
/// else returns what it holds. KEYS[1]: the key; ARGV: `1` if a value is
/// expected, else `0`; that value; the new value; its deadline in unix ms
/// (`0`: none).
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '1' and current ~= ARGV[2]) or (ARGV[1] == '0' and current) then
  return {0, current}
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PXAT', ARGV[4])
end
return {1}
";

/// One Redis store, shared by every listener that names the same URL.
pub struct Remote {
    /// The URL without its password, for the log.
    shown: String,
    link: Link,
    /// Changes of reachability so far: odd while the store is unreachable.
    /// One warning when an outage starts, one line when it ends; a call
    /// changes it only from the state it began in, so that a call that
    /// failed before the store came back, and ends after one that found
    /// it back, does not start a second outage in the log.
    episodes: AtomicU64,
    errors: Counter,
    cas: redis::Script,
}

enum Link {
    Single(ConnectionManager),
    /// Connected at the first call, so that a host starts (and serves its
    /// other listeners) while the cluster is down; the connection then
    /// follows the cluster's topology itself.
    Cluster {
        client: Box<ClusterClient>,
        connection: tokio::sync::OnceCell<ClusterConnection>,
    },
}

/// A connection to send one call on; both kinds are cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Remote {
    /// The store `backend` names, connected lazily: an unreachable server
    /// does not stop the host from starting. Must run inside the host's
    /// tokio runtime (the connection manager's task runs there).
    pub fn open(backend: &Backend, errors: Counter) -> Result<Remote> {
        let shown = backend.shown();
        let link = match backend {
            Backend::Redis(url) => {
                let client = redis::Client::open(url.as_str()).with_context(|| format!("store {shown}"))?;
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(100))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .with_context(|| format!("store {shown}"))?;
                Link::Single(manager)
            }
            Backend::RedisCluster(url) => {
                let nodes = cluster_nodes(url).map_err(anyhow::Error::msg)?;
                let client = ClusterClientBuilder::new(nodes)
                    .retries(1)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(NO_RESPONSE_TIMEOUT)
                    .build()
                    .with_context(|| format!("store {shown}"))?;
                Link::Cluster { client: Box::new(client), connection: tokio::sync::OnceCell::new() }
            }
            other => bail!("{} is not a Redis store", other.shown()),
        };
        Ok(Remote { shown, link, episodes: AtomicU64::new(0), errors, cas: redis::Script::new(CAS_SCRIPT) })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    async fn conn(&self) -> RedisResult<Conn> {
        match &self.link {
            Link::Single(manager) => Ok(Conn::Single(manager.clone())),
            Link::Cluster { client, connection } => {
                connection.get_or_try_init(|| client.get_async_connection()).await.cloned().map(Conn::Cluster)
            }
        }
    }

    /// Where the store's reachability stands, as a call begins: what
    /// [`outcome`](Remote::outcome) and [`lost`](Remote::lost) take.
    pub fn begin(&self) -> u64 {
        self.episodes.load(Relaxed)
    }

    /// Sends `cmd` and reads its answer as a `T`.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, String> {
        let began = self.begin();
        let answer = match self.conn().await {
            Ok(mut conn) => cmd.query_async(&mut conn).await,
            Err(e) => Err(e),
        };
        self.outcome(began, answer)
    }

    /// The answer to a call that began at `began`, or its error as the
    /// guest's message: counted, and logged when it starts an outage.
    fn outcome<T>(&self, began: u64, answer: RedisResult<T>) -> Result<T, String> {
        match answer {
            Ok(value) => {
                let now = self.episodes.load(Relaxed);
                if !now.is_multiple_of(2) && self.episodes.compare_exchange(now, now + 1, Relaxed, Relaxed).is_ok() {
                    tracing::info!("key-value store {} answers again", self.shown);
                }
                Ok(value)
            }
            Err(e) if is_unreachable(&e) => Err(self.lost(began, &e.to_string())),
            Err(e) => Err(self.refused(&e.to_string())),
        }
    }

    /// A call that began at `began` could not reach the store: counted,
    /// and, if the store was reachable then and still is, the warning that
    /// starts an outage. The guest's message.
    pub fn lost(&self, began: u64, why: &str) -> String {
        if began.is_multiple_of(2) && self.episodes.compare_exchange(began, began + 1, Relaxed, Relaxed).is_ok() {
            tracing::warn!("key-value store {} unreachable: {why}; key-value calls fail until it answers", self.shown);
        }
        self.refused(why)
    }

    /// A call the store answered with an error: counted. The guest's
    /// message.
    fn refused(&self, why: &str) -> String {
        self.errors.inc();
        format!("store error: {why}")
    }
}

/// Whether `e` says the store could not be reached (rather than refused
/// one call: a wrong type, a value that is not a number, `maxmemory`).
fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
}

/// One bucket of a Redis store: its keys are the store's keys under the
/// bucket's prefix.
pub struct Bucket {
    store: Arc<Remote>,
    prefix: String,
}

impl Bucket {
    pub fn open(store: &Arc<Remote>, name: &str) -> Bucket {
        Bucket { store: store.clone(), prefix: prefix(name) }
    }

    pub fn store(&self) -> &Remote {
        &self.store
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.store.query(redis::cmd("GET").arg(self.key(key))).await
    }

    /// Writes `value`, with `deadline` (unix ms, 0: none, which also
    /// clears one the entry had, as every backend's `set` does).
    pub async fn set(&self, key: &str, value: &[u8], deadline: u64) -> Result<(), String> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if deadline > 0 {
            cmd.arg("PXAT").arg(deadline);
        }
        self.store.query(&cmd).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.store.query::<i64>(redis::cmd("DEL").arg(self.key(key))).await.map(drop)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, String> {
        self.store.query::<i64>(redis::cmd("EXISTS").arg(self.key(key))).await.map(|n| n > 0)
    }

    /// `INCRBY`: the sum, the entry keeping its deadline.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        let sum = self.store.query(redis::cmd("INCRBY").arg(self.key(key)).arg(delta)).await;
        // Said as the other stores say it, rather than as Redis does.
        sum.map_err(|e| match e.contains("not an integer or out of range") {
            true => format!("the value of `{key}` is not a decimal signed 64-bit integer, or adding {delta} overflows"),
            false => e,
        })
    }

    /// Writes `value` if `key` still holds `expected` (none: no value), as
    /// one step on the server; else `Err` with what it holds now.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        deadline: u64,
    ) -> Result<Result<(), Option<Vec<u8>>>, String> {
        let mut invocation = self.store.cas.key(self.key(key));
        invocation.arg(if expected.is_some() { "1" } else { "0" }).arg(expected.unwrap_or_default());
        invocation.arg(value).arg(deadline);
        let began = self.store.begin();
        let answer = match self.store.conn().await {
            Ok(mut conn) => invocation.invoke_async::<Vec<Value>>(&mut conn).await,
            Err(e) => Err(e),
        };
        match self.store.outcome(began, answer)?.as_slice() {
            [Value::Int(1)] => Ok(Ok(())),
            [Value::Int(0), Value::Nil] | [Value::Int(0)] => Ok(Err(None)),
            [Value::Int(0), Value::BulkString(now)] => Ok(Err(Some(now.clone()))),
            other => Err(self.store.refused(&format!("unexpected compare-and-swap answer {other:?}"))),
        }
    }

    /// `MGET`: each key's value, in order.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key));
        }
        self.store.query(&cmd).await
    }

    /// `MSET`: the entries lose any deadline they had, as with `set`.
    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), String> {
        let mut cmd = redis::cmd("MSET");
        for (key, value) in entries {
            cmd.arg(self.key(key)).arg(value);
        }
        self.store.query(&cmd).await
    }

    pub async fn delete_many(&self, keys: &[String]) -> Result<(), String> {
        let mut cmd = redis::cmd("DEL");
        for key in keys {
            cmd.arg(self.key(key));
        }
        self.store.query::<i64>(&cmd).await.map(drop)
    }

    /// One page of the bucket's keys, by `SCAN` from `cursor`: a page may
    /// be short, or empty, with a cursor to go on from.
    pub async fn list_keys(&self, cursor: Option<u64>) -> Result<Page, String> {
        let pattern = format!("{}*", glob_escaped(&self.prefix));
        let mut scan = redis::cmd("SCAN");
        let cursor = cursor.unwrap_or(0);
        let (next, keys) = match &self.store.link {
            Link::Single(_) => {
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_COUNT);
                self.store.query::<(u64, Vec<Vec<u8>>)>(&scan).await?
            }
            Link::Cluster { .. } => self.scan_cluster(cursor, &pattern).await?,
        };
        let keys = keys.iter().map(|key| String::from_utf8_lossy(&key[self.prefix.len()..]).into_owned()).collect();
        Ok(Page { keys, cursor: (next != 0).then_some(next) })
    }

    /// `SCAN` on a cluster: each primary in turn (sorted by address), the
    /// node's index carried in the cursor's high bits.
    async fn scan_cluster(&self, cursor: u64, pattern: &str) -> Result<(u64, Vec<Vec<u8>>), String> {
        let store = &self.store;
        let nodes = store.query::<String>(&redis::cmd("CLUSTER").arg("NODES").clone()).await?;
        let primaries = primaries(&nodes);
        let (index, node_cursor) = ((cursor >> NODE_SHIFT) as usize, cursor & ((1 << NODE_SHIFT) - 1));
        let Some((host, port)) = primaries.get(index) else { return Ok((0, Vec::new())) };
        let mut scan = redis::cmd("SCAN");
        scan.arg(node_cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
        let began = store.begin();
        let answer = match store.conn().await {
            Ok(Conn::Cluster(mut conn)) => conn.route_command(scan, routing).await,
            Ok(Conn::Single(_)) => unreachable!("a cluster's link gives cluster connections"),
            Err(e) => Err(e),
        };
        let value = store.outcome(began, answer)?;
        let (next, keys): (u64, Vec<Vec<u8>>) =
            redis::from_redis_value(value).map_err(|e| store.refused(&format!("SCAN's answer: {e}")))?;
        if next >> NODE_SHIFT != 0 {
            return Err(store.refused(&format!("node {host}:{port} gave a SCAN cursor past 48 bits")));
        }
        let next = match (next, index + 1 < primaries.len()) {
            (0, true) => ((index + 1) as u64) << NODE_SHIFT,
            (0, false) => 0,
            (next, _) => ((index as u64) << NODE_SHIFT) | next,
        };
        Ok((next, keys))
    }
}

/// The keys of bucket `name` start with this: the name with `%` and `:`
/// escaped, then `:`, so that no bucket's prefix starts another's.
fn prefix(name: &str) -> String {
    format!("{}:", name.replace('%', "%25").replace(':', "%3A"))
}

/// The primaries in a `CLUSTER NODES` answer, sorted by address.
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    let mut found: Vec<(String, u16)> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let address = fields.get(1)?.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect();
    found.sort();
    found
}

/// `text` with `SCAN`'s glob characters escaped, to match only itself.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_come_from_cluster_nodes_in_address_order() {
        let nodes = "\
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
c3 127.0.0.1:7002@17002,host3 master - 0 1 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 1 1 connected
e5 127.0.0.1:7004@17004 master,fail - 0 1 4 disconnected
";
        let found = primaries(nodes);
        let ports: Vec<u16> = found.iter().map(|(_, port)| *port).collect();
        assert_eq!(ports, [7000, 7001, 7002]);
        assert!(found.iter().all(|(host, _)| host == "127.0.0.1"));
    }

    #[test]
    fn bucket_prefixes_never_overlap_and_globs_match_only_themselves() {
        assert_eq!(prefix(""), ":");
        assert_eq!(prefix("sessions"), "sessions:");
        assert_eq!(prefix("a:b"), "a%3Ab:");
        assert_ne!(prefix("a:b"), prefix("a%3Ab"));
        assert!(!prefix("a:b").starts_with(&prefix("a")));
        assert_eq!(glob_escaped("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
