//! `--kv PATH`: the store in a redb database file, which survives a
//! restart. Each bucket is a table (`bucket:NAME`), created by its first
//! write; a bucket never written reads as empty. Every write is its own
//! transaction with redb's default durability: committed, and synced to
//! disk, when `set`, `delete`, `increment` or `swap` returns. An `update`
//! (an `increment`, a compare-and-swap) reads and writes in one write
//! transaction, and redb runs one write transaction at a time, so it is
//! exact under any concurrency; a swap that finds another value writes
//! nothing and aborts.
//!
//! redb blocks the calling thread (a commit waits for its fsync), so these
//! calls are made on tokio's blocking pool (`super::blocking`), never on a
//! worker that serves connections.

use super::expiry::{is_live, now_ms};
use super::usage::{entry_cost, Usage};
use super::{page, BucketOps, Expiry, Page, Updater, MAX_BUCKETS};
use anyhow::{bail, Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The prefix of a bucket's table name, so any bucket name (`""` too) makes
/// a valid table name of its own.
const TABLE_PREFIX: &str = "bucket:";

/// The deadlines of the entries that have one, by (table, key): what the
/// sweep reads, and what a read checks.
const EXPIRY: TableDefinition<'static, (&'static str, &'static str), u64> = TableDefinition::new("netplug:expiry");

pub struct Durable {
    db: Database,
    path: PathBuf,
    /// Buckets known: those with a table when the file was opened, and
    /// every name opened since. Bounded by `MAX_BUCKETS`.
    buckets: Mutex<HashSet<String>>,
    usage: Arc<Usage>,
}

fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// A redb error as the message the guest gets.
fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("the key-value store cannot {what}: {e}")
}

type ValueTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type ExpiryTable<'t> = redb::Table<'t, (&'static str, &'static str), u64>;

/// The deadline of `key` in table `name` (0: none), in a read transaction.
fn deadline_in(tx: &redb::ReadTransaction, name: &str, key: &str) -> Result<u64, String> {
    match tx.open_table(EXPIRY) {
        Ok(t) => Ok(t.get((name, key)).map_err(|e| failed("read", e))?.map_or(0, |d| d.value())),
        Err(TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(failed("read", e)),
    }
}

impl Durable {
    /// Opens the database at `path`, creating the file if missing (the
    /// directory must exist), and counts what it holds against `usage`.
    pub fn open(path: &Path, usage: Arc<Usage>) -> Result<Durable> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            bail!("{}: the directory {} does not exist", path.display(), dir.display());
        }
        let db = Database::create(path).with_context(|| format!("{}: cannot open the database", path.display()))?;
        let (buckets, bytes, keys) =
            contents(&db).with_context(|| format!("{}: cannot read the database", path.display()))?;
        usage.found(bytes, keys);
        tracing::info!(
            "key-value store {} opened: {} bucket(s), {keys} entries, {bytes} bytes",
            path.display(),
            buckets.len()
        );
        Ok(Durable { db, path: path.to_path_buf(), buckets: Mutex::new(buckets), usage })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The table name of bucket `name`, unless that would make one bucket
    /// more than `MAX_BUCKETS`. Nothing is written until the first write.
    pub fn bucket(&self, name: &str) -> Result<Arc<str>, String> {
        let mut buckets = self.buckets.lock().unwrap();
        if !buckets.contains(name) {
            if buckets.len() >= MAX_BUCKETS {
                return Err(format!("the store holds {MAX_BUCKETS} buckets, the most it may"));
            }
            buckets.insert(name.to_string());
        }
        Ok(format!("{TABLE_PREFIX}{name}").into())
    }

    /// Reads from the table with `read`, given the transaction to look up
    /// deadlines in; a missing table is an empty bucket.
    fn read<T>(
        &self,
        name: &str,
        read: impl FnOnce(&redb::ReadTransaction, &redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, String>,
        missing: T,
    ) -> Result<T, String> {
        let tx = self.db.begin_read().map_err(|e| failed("read", e))?;
        match tx.open_table(table(name)) {
            Ok(t) => read(&tx, &t),
            Err(TableError::TableDoesNotExist(_)) => Ok(missing),
            Err(e) => Err(failed("read", e)),
        }
    }

    /// The live value of `key`: none if missing or past its deadline.
    fn live(
        tx: &redb::ReadTransaction,
        t: &redb::ReadOnlyTable<&'static str, &'static [u8]>,
        name: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let Some(value) = t.get(key).map_err(|e| failed("read", e))? else { return Ok(None) };
        let deadline = deadline_in(tx, name, key)?;
        Ok(is_live(deadline, if deadline == 0 { 0 } else { now_ms() }).then(|| value.value().to_vec()))
    }

    pub fn get(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.read(name, |tx, t| Self::live(tx, t, name, key), None)
    }

    pub fn exists(&self, name: &str, key: &str) -> Result<bool, String> {
        self.get(name, key).map(|value| value.is_some())
    }

    pub fn list_keys(&self, name: &str, cursor: Option<u64>) -> Result<Page, String> {
        let empty = Page { keys: Vec::new(), cursor: None };
        self.read(
            name,
            |tx, t| {
                // The table iterates in key order; the cursor is an offset
                // into the live keys. Keys are read as the page needs them.
                let now = now_ms();
                let mut failure = None;
                let keys = t.iter().map_err(|e| failed("read", e))?.map_while(|entry| match entry {
                    Ok((key, _)) => Some(key.value().to_string()),
                    Err(e) => {
                        failure = Some(failed("read", e));
                        None
                    }
                });
                let live = keys.filter(|key| match deadline_in(tx, name, key) {
                    Ok(deadline) => is_live(deadline, now),
                    Err(_) => true,
                });
                let response = page(live, cursor);
                failure.map_or(Ok(response), Err)
            },
            empty,
        )
    }

    /// Runs `write` on the bucket's table and the deadlines in one write
    /// transaction, committed if it returns `Ok(true)` (it wrote), aborted
    /// otherwise. What `write` charged to the store's bound is `(old, new)`
    /// costs, given back if the commit fails.
    fn write(
        &self,
        write: impl FnOnce(&mut ValueTable<'_>, &mut ExpiryTable<'_>) -> Result<Option<(u64, u64)>, String>,
        name: &str,
    ) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(|e| failed("write", e))?;
        let outcome = {
            let mut t = tx.open_table(table(name)).map_err(|e| failed("write", e))?;
            let mut expiry = tx.open_table(EXPIRY).map_err(|e| failed("write", e))?;
            write(&mut t, &mut expiry)
        };
        match outcome {
            Ok(Some((old, new))) => tx.commit().map_err(|e| {
                self.undo(old, new);
                failed("commit", e)
            }),
            Ok(None) => tx.abort().map_err(|e| failed("abort", e)),
            Err(why) => {
                tx.abort().map_err(|e| failed("abort", e))?;
                Err(why)
            }
        }
    }

    /// Gives back what a write that did not commit charged.
    fn undo(&self, old: u64, new: u64) {
        match (old, new) {
            (0, new) => self.usage.removed(new),
            (old, 0) => {
                let _ = self.usage.replace(0, old);
            }
            (old, new) => {
                let _ = self.usage.replace(new, old);
            }
        }
    }

    /// Writes `value` at `key` with `deadline` in the open tables, charged
    /// to the store's bound first; the `(old, new)` costs.
    fn put(
        &self,
        t: &mut ValueTable<'_>,
        expiry: &mut ExpiryTable<'_>,
        name: &str,
        key: &str,
        value: &[u8],
        deadline: u64,
    ) -> Result<(u64, u64), String> {
        let old = t.get(key).map_err(|e| failed("read", e))?.map_or(0, |v| entry_cost(key.len(), v.value().len()));
        let new = entry_cost(key.len(), value.len());
        self.usage.replace(old, new)?;
        let stored = t.insert(key, value).map(drop).and_then(|()| {
            if deadline == 0 {
                expiry.remove((name, key)).map(drop)
            } else {
                expiry.insert((name, key), deadline).map(drop)
            }
        });
        if let Err(e) = stored {
            self.undo(old, new);
            return Err(failed("write", e));
        }
        Ok((old, new))
    }

    pub fn set(&self, name: &str, key: &str, value: &[u8], deadline: u64) -> Result<(), String> {
        self.write(|t, expiry| self.put(t, expiry, name, key, value, deadline).map(Some), name)
    }

    pub fn delete(&self, name: &str, key: &str) -> Result<(), String> {
        self.write(
            |t, expiry| {
                let removed =
                    t.remove(key).map_err(|e| failed("write", e))?.map(|v| entry_cost(key.len(), v.value().len()));
                expiry.remove((name, key)).map_err(|e| failed("write", e))?;
                Ok(removed.map(|cost| {
                    self.usage.removed(cost);
                    (cost, 0)
                }))
            },
            name,
        )
    }

    /// Reads `key` and writes what `f` makes of it in one write
    /// transaction; committed only if `f` wrote, else aborted.
    pub(crate) fn update(&self, name: &str, key: &str, how: Expiry, f: &mut Updater<'_>) -> Result<(), String> {
        self.write(
            |t, expiry| {
                let deadline = expiry.get((name, key)).map_err(|e| failed("read", e))?.map_or(0, |d| d.value());
                let live = is_live(deadline, if deadline == 0 { 0 } else { now_ms() });
                let next = {
                    let current = t.get(key).map_err(|e| failed("read", e))?.filter(|_| live);
                    f(current.as_ref().map(|v| v.value()))?
                };
                let Some(value) = next else { return Ok(None) };
                let deadline = match how {
                    Expiry::Keep if live => deadline,
                    Expiry::Keep => 0,
                    Expiry::At(deadline) => deadline,
                };
                self.put(t, expiry, name, key, &value, deadline).map(Some)
            },
            name,
        )
    }

    /// Deletes every entry whose deadline is `now` or earlier, in one
    /// write transaction; how many.
    pub fn sweep(&self, now: u64) -> Result<u64, String> {
        let due: Vec<(String, String)> = {
            let tx = self.db.begin_read().map_err(|e| failed("read", e))?;
            let t = match tx.open_table(EXPIRY) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(failed("read", e)),
            };
            let mut due = Vec::new();
            for entry in t.iter().map_err(|e| failed("read", e))? {
                let (key, deadline) = entry.map_err(|e| failed("read", e))?;
                if !is_live(deadline.value(), now) {
                    let (name, key) = key.value();
                    due.push((name.to_string(), key.to_string()));
                }
            }
            due
        };
        if due.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin_write().map_err(|e| failed("write", e))?;
        let mut freed = Vec::new();
        {
            let mut expiry = tx.open_table(EXPIRY).map_err(|e| failed("write", e))?;
            for (name, key) in &due {
                // Written again since the read above: no longer due.
                let deadline = expiry.get((name.as_str(), key.as_str())).map_err(|e| failed("read", e))?;
                if deadline.is_none_or(|d| is_live(d.value(), now)) {
                    continue;
                }
                expiry.remove((name.as_str(), key.as_str())).map_err(|e| failed("write", e))?;
                let mut t = tx.open_table(table(name)).map_err(|e| failed("write", e))?;
                let removed = t.remove(key.as_str()).map_err(|e| failed("write", e))?.map(|v| v.value().len());
                if let Some(len) = removed {
                    freed.push(entry_cost(key.len(), len));
                }
            }
        }
        tx.commit().map_err(|e| failed("commit", e))?;
        for cost in &freed {
            self.usage.removed(*cost);
        }
        Ok(freed.len() as u64)
    }
}

/// The bucket names, bytes and entries of an opened database, by its
/// bound's count.
fn contents(db: &Database) -> Result<(HashSet<String>, u64, u64), redb::Error> {
    let tx = db.begin_read()?;
    let mut buckets = HashSet::new();
    let (mut bytes, mut keys) = (0, 0);
    for handle in tx.list_tables()? {
        let Some(name) = handle.name().strip_prefix(TABLE_PREFIX) else { continue };
        buckets.insert(name.to_string());
        let t = tx.open_table(table(handle.name()))?;
        for entry in t.iter()? {
            let (key, value) = entry?;
            bytes += entry_cost(key.value().len(), value.value().len());
            keys += 1;
        }
    }
    Ok((buckets, bytes, keys))
}

/// One bucket of the database: its table, as the guest's handle holds it.
pub struct Table {
    db: Arc<Durable>,
    name: Arc<str>,
}

impl Table {
    /// The bucket `name` of `db` (see [`Durable::bucket`]).
    pub fn open(db: &Arc<Durable>, name: &str) -> Result<Table, String> {
        Ok(Table { db: db.clone(), name: db.bucket(name)? })
    }
}

impl BucketOps for Table {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.db.get(&self.name, key)
    }

    fn set(&self, key: String, value: Vec<u8>, deadline: u64) -> Result<(), String> {
        self.db.set(&self.name, &key, &value, deadline)
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.db.delete(&self.name, key)
    }

    fn exists(&self, key: &str) -> Result<bool, String> {
        self.db.exists(&self.name, key)
    }

    fn list_keys(&self, cursor: Option<u64>) -> Result<Page, String> {
        self.db.list_keys(&self.name, cursor)
    }

    fn update(&self, key: String, expiry: Expiry, f: &mut Updater<'_>) -> Result<(), String> {
        self.db.update(&self.name, &key, expiry, f)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::append_from_threads;
    use super::super::{compare_and_swap, increment, incremented};
    use super::*;
    use crate::ops::metrics::KvMetrics;

    fn test_usage() -> Arc<Usage> {
        Arc::new(Usage::new(u64::MAX, KvMetrics::default()))
    }

    fn incr(db: &Durable, name: &str, key: &str, delta: u64) -> Result<u64, String> {
        let mut sum = None;
        db.update(name, key, Expiry::Keep, &mut |current| {
            let next = incremented(current, key, delta)?;
            sum = Some(next);
            Ok(Some(next.to_string().into_bytes()))
        })?;
        Ok(sum.unwrap())
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netplug-kv-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("store.redb")
    }

    #[test]
    fn survives_reopening_and_keeps_buckets_apart() {
        let path = temp_path("reopen");
        {
            let db = Durable::open(&path, test_usage()).unwrap();
            let a = db.bucket("a").unwrap();
            db.set(&a, "k", b"value", 0).unwrap();
            assert_eq!(incr(&db, &a, "n", 2), Ok(2));
            assert_eq!(db.get(&db.bucket("").unwrap(), "k"), Ok(None));
        }
        let db = Durable::open(&path, test_usage()).unwrap();
        let a = db.bucket("a").unwrap();
        assert_eq!(db.get(&a, "k"), Ok(Some(b"value".to_vec())));
        assert_eq!(incr(&db, &a, "n", 3), Ok(5));
        assert_eq!(db.list_keys(&a, None).unwrap().keys, ["k", "n"]);
        db.delete(&a, "k").unwrap();
        assert_eq!(db.exists(&a, "k"), Ok(false));
        assert!(incr(&db, &a, "missing-table-ok", 1).is_ok());
        db.set(&a, "text", b"x", 0).unwrap();
        assert!(incr(&db, &a, "text", 1).unwrap_err().contains("not a decimal"));
        assert_eq!(db.get(&a, "text"), Ok(Some(b"x".to_vec())));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn increments_are_exact_under_threads() {
        let path = temp_path("threads");
        let db = Arc::new(Durable::open(&path, test_usage()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let b = db.bucket("").unwrap();
                    for _ in 0..25 {
                        incr(&db, &b, "hits", 1).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(db.get(&db.bucket("").unwrap(), "hits"), Ok(Some(b"100".to_vec())));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err =
            Durable::open(Path::new("/nonexistent-netplug/dir/store.redb"), test_usage()).err().unwrap().to_string();
        assert!(err.contains("/nonexistent-netplug/dir") && err.contains("does not exist"), "{err}");
    }

    #[test]
    fn compare_and_swap_is_exact_under_threads() {
        let path = temp_path("cas");
        let db = Arc::new(Durable::open(&path, test_usage()).unwrap());
        let table = Arc::new(Table::open(&db, "").unwrap());
        assert_eq!(increment(&*table, "n".to_string(), |c, k| incremented(c, k, 1)), Ok(1));
        assert_eq!(append_from_threads(table.clone(), 4, 25), [25; 4]);
        // A swap that finds another value writes nothing.
        assert_eq!(
            compare_and_swap(&*table, "n".to_string(), Some(b"7"), b"8".to_vec(), 0),
            Ok(Err(Some(b"1".to_vec())))
        );
        assert_eq!(compare_and_swap(&*table, "new".to_string(), None, b"x".to_vec(), 0), Ok(Ok(())));
        assert_eq!(table.get("new").unwrap(), Some(b"x".to_vec()));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn the_bound_counts_the_file_s_contents_and_expiry_sweeps_them() {
        let path = temp_path("bound");
        {
            let db = Durable::open(&path, test_usage()).unwrap();
            let a = db.bucket("a").unwrap();
            db.set(&a, "k", &[0; 300], 0).unwrap();
            db.set(&a, "gone", &[0; 100], now_ms() - 1).unwrap();
        }
        // Reopened: what the file holds counts against the bound.
        let usage = Arc::new(Usage::new(1000, KvMetrics::default()));
        let db = Durable::open(&path, usage.clone()).unwrap();
        let a = db.bucket("a").unwrap();
        assert_eq!(usage.bytes(), entry_cost(1, 300) + entry_cost(4, 100));
        assert_eq!(db.get(&a, "gone"), Ok(None), "expired reads as missing");
        assert_eq!(db.list_keys(&a, None).unwrap().keys, ["k"]);
        let err = db.set(&a, "big", &[0; 600], 0).unwrap_err();
        assert!(err.starts_with("store full:"), "{err}");
        assert_eq!(db.get(&a, "big"), Ok(None));
        assert_eq!(db.sweep(now_ms()), Ok(1));
        assert_eq!(usage.bytes(), entry_cost(1, 300));
        db.set(&a, "big", &[0; 500], 0).unwrap();
        assert!(db
            .update(&a, "k", Expiry::Keep, &mut |_| Ok(Some(vec![0; 400])))
            .unwrap_err()
            .starts_with("store full:"));
        db.delete(&a, "big").unwrap();
        assert_eq!((usage.bytes(), usage.keys()), (entry_cost(1, 300), 1));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
