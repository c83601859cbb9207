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

use super::{page, BucketOps, Page, Updater, MAX_BUCKETS};
use anyhow::{bail, Context, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The prefix of a bucket's table name, so any bucket name (`""` too) makes
/// a valid table name of its own.
const TABLE_PREFIX: &str = "bucket:";

pub struct Durable {
    db: Database,
    path: PathBuf,
    /// Buckets known: those with a table when the file was opened, and
    /// every name opened since. Bounded by `MAX_BUCKETS`.
    buckets: Mutex<HashSet<String>>,
}

fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// A redb error as the message the guest gets.
fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("the key-value store cannot {what}: {e}")
}

impl Durable {
    /// Opens the database at `path`, creating the file if missing; the
    /// directory must exist.
    pub fn open(path: &Path) -> Result<Durable> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            bail!("--kv {}: the directory {} does not exist", path.display(), dir.display());
        }
        let db =
            Database::create(path).with_context(|| format!("--kv {}: cannot open the database", path.display()))?;
        let tables: HashSet<String> = db
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(|tx| Ok(tx.list_tables()?.map(|t| t.name().to_string()).collect()))
            .with_context(|| format!("--kv {}: cannot read the database", path.display()))?;
        let buckets: HashSet<String> =
            tables.iter().filter_map(|t| t.strip_prefix(TABLE_PREFIX)).map(str::to_string).collect();
        tracing::info!("key-value store {} opened: {} bucket(s)", path.display(), buckets.len());
        Ok(Durable { db, path: path.to_path_buf(), buckets: Mutex::new(buckets) })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// Reads `key` from the table with `read`; a missing table is an empty
    /// bucket.
    fn read<T>(
        &self,
        name: &str,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, redb::StorageError>,
        missing: T,
    ) -> Result<T, String> {
        let tx = self.db.begin_read().map_err(|e| failed("read", e))?;
        match tx.open_table(table(name)) {
            Ok(t) => read(&t).map_err(|e| failed("read", e)),
            Err(TableError::TableDoesNotExist(_)) => Ok(missing),
            Err(e) => Err(failed("read", e)),
        }
    }

    /// Runs `write` on the table in one write transaction and commits it.
    fn write<T>(
        &self,
        name: &str,
        write: impl FnOnce(&mut redb::Table<&'static str, &'static [u8]>) -> Result<Result<T, String>, redb::StorageError>,
    ) -> Result<T, String> {
        let tx = self.db.begin_write().map_err(|e| failed("write", e))?;
        let outcome = {
            let mut t = tx.open_table(table(name)).map_err(|e| failed("write", e))?;
            write(&mut t).map_err(|e| failed("write", e))?
        };
        match outcome {
            Ok(value) => {
                tx.commit().map_err(|e| failed("commit", e))?;
                Ok(value)
            }
            Err(why) => {
                tx.abort().map_err(|e| failed("abort", e))?;
                Err(why)
            }
        }
    }

    pub fn get(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.read(name, |t| Ok(t.get(key)?.map(|v| v.value().to_vec())), None)
    }

    pub fn exists(&self, name: &str, key: &str) -> Result<bool, String> {
        self.read(name, |t| Ok(t.get(key)?.is_some()), false)
    }

    pub fn list_keys(&self, name: &str, cursor: Option<u64>) -> Result<Page, String> {
        let empty = Page { keys: Vec::new(), cursor: None };
        self.read(
            name,
            |t| {
                // The table iterates in key order; the cursor is an offset.
                // Keys are read as the page needs them, not all at once.
                let mut failure = None;
                let keys = t.iter()?.map_while(|entry| match entry {
                    Ok((key, _)) => Some(key.value().to_string()),
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                });
                let response = page(keys, cursor);
                failure.map_or(Ok(response), Err)
            },
            empty,
        )
    }

    pub fn set(&self, name: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.write(name, |t| {
            t.insert(key, value)?;
            Ok(Ok(()))
        })
    }

    pub fn delete(&self, name: &str, key: &str) -> Result<(), String> {
        self.write(name, |t| {
            t.remove(key)?;
            Ok(Ok(()))
        })
    }

    /// Reads `key` and writes what `f` makes of it in one write
    /// transaction; committed only if `f` wrote, else aborted.
    pub fn update(&self, name: &str, key: &str, f: &mut Updater<'_>) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(|e| failed("write", e))?;
        let wrote = {
            let mut t = tx.open_table(table(name)).map_err(|e| failed("write", e))?;
            let next = {
                let current = t.get(key).map_err(|e| failed("read", e))?;
                f(current.as_ref().map(|v| v.value()))
            };
            match next {
                Ok(Some(value)) => t.insert(key, value.as_slice()).map(|_| true).map_err(|e| failed("write", e)),
                Ok(None) => Ok(false),
                Err(why) => Err(why),
            }
        };
        match wrote {
            Ok(true) => tx.commit().map_err(|e| failed("commit", e)),
            Ok(false) => tx.abort().map_err(|e| failed("abort", e)),
            Err(why) => {
                tx.abort().map_err(|e| failed("abort", e))?;
                Err(why)
            }
        }
    }
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

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.db.set(&self.name, &key, &value)
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

    fn update(&self, key: String, f: &mut Updater<'_>) -> Result<(), String> {
        self.db.update(&self.name, &key, f)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::append_from_threads;
    use super::super::{compare_and_swap, increment, incremented};
    use super::*;

    fn incr(db: &Durable, name: &str, key: &str, delta: u64) -> Result<u64, String> {
        let mut sum = None;
        db.update(name, key, &mut |current| {
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
            let db = Durable::open(&path).unwrap();
            let a = db.bucket("a").unwrap();
            db.set(&a, "k", b"value").unwrap();
            assert_eq!(incr(&db, &a, "n", 2), Ok(2));
            assert_eq!(db.get(&db.bucket("").unwrap(), "k"), Ok(None));
        }
        let db = Durable::open(&path).unwrap();
        let a = db.bucket("a").unwrap();
        assert_eq!(db.get(&a, "k"), Ok(Some(b"value".to_vec())));
        assert_eq!(incr(&db, &a, "n", 3), Ok(5));
        assert_eq!(db.list_keys(&a, None).unwrap().keys, ["k", "n"]);
        db.delete(&a, "k").unwrap();
        assert_eq!(db.exists(&a, "k"), Ok(false));
        assert!(incr(&db, &a, "missing-table-ok", 1).is_ok());
        db.set(&a, "text", b"x").unwrap();
        assert!(incr(&db, &a, "text", 1).unwrap_err().contains("not a decimal"));
        assert_eq!(db.get(&a, "text"), Ok(Some(b"x".to_vec())));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn increments_are_exact_under_threads() {
        let path = temp_path("threads");
        let db = Arc::new(Durable::open(&path).unwrap());
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
        let err = Durable::open(Path::new("/nonexistent-netplug/dir/store.redb")).err().unwrap().to_string();
        assert!(err.contains("/nonexistent-netplug/dir") && err.contains("does not exist"), "{err}");
    }

    #[test]
    fn compare_and_swap_is_exact_under_threads() {
        let path = temp_path("cas");
        let db = Arc::new(Durable::open(&path).unwrap());
        let table = Arc::new(Table::open(&db, "").unwrap());
        assert_eq!(increment(&*table, "n".to_string(), |c, k| incremented(c, k, 1)), Ok(1));
        assert_eq!(append_from_threads(table.clone(), 4, 25), [25; 4]);
        // A swap that finds another value writes nothing.
        assert_eq!(compare_and_swap(&*table, "n".to_string(), Some(b"7"), b"8".to_vec()), Ok(Err(Some(b"1".to_vec()))));
        assert_eq!(compare_and_swap(&*table, "new".to_string(), None, b"x".to_vec()), Ok(Ok(())));
        assert_eq!(table.get("new").unwrap(), Some(b"x".to_vec()));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
