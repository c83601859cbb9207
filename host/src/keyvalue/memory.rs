//! `--kv memory`: the store as maps in the host's memory, gone when it
//! exits. Each bucket is split into shards by key hash, each behind its own
//! `RwLock`, so connections working on different keys rarely wait on each
//! other; an `update` (an `increment`, a compare-and-swap) holds its
//! shard's write lock from read to write, which makes it exact under any
//! concurrency: a swap compares the bytes it read with those under the lock.
//! Nothing here awaits.

use super::{page, BucketOps, Page, Updater, MAX_BUCKETS};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

/// Shards per bucket: a power of two, well above the cores a host has.
const SHARDS: usize = 64;

/// The buckets of one store, by name.
#[derive(Default)]
pub struct Memory {
    buckets: RwLock<HashMap<String, Arc<Bucket>>>,
}

impl Memory {
    /// The bucket `name`, made on first use, unless the store already holds
    /// `MAX_BUCKETS`.
    pub fn bucket(&self, name: &str) -> Result<Arc<Bucket>, String> {
        if let Some(bucket) = self.buckets.read().unwrap().get(name) {
            return Ok(bucket.clone());
        }
        let mut buckets = self.buckets.write().unwrap();
        if let Some(bucket) = buckets.get(name) {
            return Ok(bucket.clone());
        }
        if buckets.len() >= MAX_BUCKETS {
            return Err(format!("the store holds {MAX_BUCKETS} buckets, the most it may"));
        }
        let bucket = Arc::new(Bucket::default());
        buckets.insert(name.to_string(), bucket.clone());
        Ok(bucket)
    }
}

/// One shard of a bucket: some of its keys and their values.
type Shard = RwLock<HashMap<String, Vec<u8>>>;

/// One bucket: its keys spread over `SHARDS` locked maps.
pub struct Bucket {
    hasher: RandomState,
    shards: Box<[Shard]>,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| RwLock::default()).collect() }
    }
}

impl Bucket {
    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }
}

impl BucketOps for Bucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.shard(key).read().unwrap().get(key).cloned())
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        // The old value is freed after the lock is released.
        let old = self.shard(&key).write().unwrap().insert(key, value);
        drop(old);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        let old = self.shard(key).write().unwrap().remove(key);
        drop(old);
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, String> {
        Ok(self.shard(key).read().unwrap().contains_key(key))
    }

    /// A page of the bucket's keys in sorted order, so that a cursor (an
    /// offset) stays meaningful between calls while no key is added or
    /// removed. Sorting every key is the cost of a call the interface
    /// itself calls expensive.
    fn list_keys(&self, cursor: Option<u64>) -> Result<Page, String> {
        let mut keys: Vec<String> =
            self.shards.iter().flat_map(|shard| shard.read().unwrap().keys().cloned().collect::<Vec<_>>()).collect();
        keys.sort_unstable();
        Ok(page(keys.into_iter(), cursor))
    }

    /// The shard stays write-locked from the read to the write.
    fn update(&self, key: String, f: &mut Updater<'_>) -> Result<(), String> {
        let mut shard = self.shard(&key).write().unwrap();
        let old = match f(shard.get(&key).map(Vec::as_slice))? {
            Some(value) => shard.insert(key, value),
            None => None,
        };
        drop(shard);
        drop(old);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::append_from_threads;
    use super::super::{compare_and_swap, increment, incremented};
    use super::*;

    fn incr(bucket: &Bucket, key: &str, delta: u64) -> Result<u64, String> {
        increment(bucket, key.to_string(), move |current, key| incremented(current, key, delta))
    }

    #[test]
    fn increments_are_exact_under_threads() {
        let bucket = Arc::new(Bucket::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let bucket = bucket.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        incr(&bucket, "hits", 1).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(bucket.get("hits").unwrap(), Some(b"80000".to_vec()));
        assert_eq!(incr(&bucket, "hits", 0), Ok(80_000));
    }

    #[test]
    fn increment_refuses_overflow_and_non_numbers_and_keeps_the_value() {
        let bucket = Bucket::default();
        bucket.set("big".to_string(), u64::MAX.to_string().into_bytes()).unwrap();
        assert!(incr(&bucket, "big", 1).unwrap_err().contains("overflows"));
        assert_eq!(bucket.get("big").unwrap(), Some(u64::MAX.to_string().into_bytes()));
        bucket.set("text".to_string(), b"hello".to_vec()).unwrap();
        assert!(incr(&bucket, "text", 1).unwrap_err().contains("not a decimal"));
        assert_eq!(bucket.get("text").unwrap(), Some(b"hello".to_vec()));
        assert_eq!(incr(&bucket, "new", 7), Ok(7));
    }

    #[test]
    fn buckets_are_namespaces_and_capped() {
        let memory = Memory::default();
        memory.bucket("a").unwrap().set("k".to_string(), b"1".to_vec()).unwrap();
        assert_eq!(memory.bucket("a").unwrap().get("k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(memory.bucket("").unwrap().get("k").unwrap(), None);
        for i in 0..MAX_BUCKETS - 2 {
            memory.bucket(&i.to_string()).unwrap();
        }
        assert!(memory.bucket("one too many").err().unwrap().contains("buckets"));
        assert!(memory.bucket("a").is_ok(), "an existing bucket still opens");
    }

    #[test]
    fn set_get_delete_exists_and_list() {
        let bucket = Bucket::default();
        bucket.set("b".to_string(), vec![0, 1, 2]).unwrap();
        bucket.set("a".to_string(), vec![]).unwrap();
        assert!(bucket.exists("a").unwrap());
        assert_eq!(bucket.get("b").unwrap(), Some(vec![0, 1, 2]));
        assert_eq!(bucket.list_keys(None).unwrap().keys, ["a", "b"]);
        bucket.delete("a").unwrap();
        bucket.delete("never there").unwrap();
        assert!(!bucket.exists("a").unwrap());
        assert_eq!(bucket.list_keys(None).unwrap().keys, ["b"]);
    }

    #[test]
    fn compare_and_swap_is_exact_under_threads() {
        // No append is lost, however the threads interleave.
        assert_eq!(append_from_threads(Arc::new(Bucket::default()), 8, 500), [500; 8]);
    }

    #[test]
    fn a_swap_from_missing_succeeds_once() {
        let bucket = Bucket::default();
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), None, b"1".to_vec()), Ok(Ok(())));
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), None, b"2".to_vec()), Ok(Err(Some(b"1".to_vec()))));
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), Some(b"1"), b"3".to_vec()), Ok(Ok(())));
        assert_eq!(bucket.get("k").unwrap(), Some(b"3".to_vec()));
    }
}
