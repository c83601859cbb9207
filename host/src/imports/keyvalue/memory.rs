//! `--kv memory`: the store as maps in the host's memory, gone when it
//! exits. Each bucket is split into shards by key hash, each behind its own
//! `RwLock`, so connections working on different keys rarely wait on each
//! other; an `update` (an `increment`, a compare-and-swap) holds its
//! shard's write lock from read to write, which makes it exact under any
//! concurrency: a swap compares the bytes it read with those under the lock.
//! Nothing here awaits.

use super::expiry::{is_live, now_ms};
use super::usage::{entry_cost, Usage};
use super::{page, BucketOps, Expiry, Page, Updater, MAX_BUCKETS};
use std::collections::{hash_map, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

/// Shards per bucket: a power of two, well above the cores a host has.
const SHARDS: usize = 64;

/// The buckets of one store, by name, and what they hold together.
pub struct Memory {
    buckets: RwLock<HashMap<String, Arc<Bucket>>>,
    usage: Arc<Usage>,
}

impl Memory {
    pub fn new(usage: Arc<Usage>) -> Memory {
        Memory { buckets: RwLock::default(), usage }
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }

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
        let bucket = Arc::new(Bucket::new(self.usage.clone()));
        buckets.insert(name.to_string(), bucket.clone());
        Ok(bucket)
    }

    /// Deletes every entry whose deadline is `now` or earlier, shard by
    /// shard (each locked only for its own sweep); the entries removed.
    pub fn sweep(&self, now: u64) -> u64 {
        let buckets: Vec<Arc<Bucket>> = self.buckets.read().unwrap().values().cloned().collect();
        buckets.iter().map(|bucket| bucket.sweep(now)).sum()
    }
}

/// A value and its deadline (unix ms, 0: none).
struct Entry {
    value: Vec<u8>,
    deadline: u64,
}

/// Some of a bucket's keys and their entries.
#[derive(Default)]
struct ShardMap {
    entries: HashMap<String, Entry>,
    /// The earliest deadline of an entry here, 0 if none has one: a sweep
    /// looks into a shard only once this has passed.
    earliest: u64,
}

type Shard = RwLock<ShardMap>;

/// One bucket: its keys spread over `SHARDS` locked maps.
pub struct Bucket {
    /// Random per bucket: where a key's shard is is not known outside.
    seed: u64,
    shards: Box<[Shard]>,
    usage: Arc<Usage>,
}

impl Bucket {
    fn new(usage: Arc<Usage>) -> Bucket {
        let seed = RandomState::new().hash_one(0u8);
        Bucket { seed, shards: (0..SHARDS).map(|_| RwLock::default()).collect(), usage }
    }

    /// The shard of `key`: FNV-1a over its bytes from the bucket's seed,
    /// mixed (murmur3's finalizer: FNV alone leaves keys that differ in
    /// their last digit in few shards), by its top bits. Only how often two connections wait on one lock
    /// depends on it: each shard's map keeps std's SipHash, so keys made to
    /// land in one shard make one lock busier and no map slower. SipHash
    /// here hashed every key a second time, about 170 instructions of each
    /// operation.
    fn shard(&self, key: &str) -> &Shard {
        const _: () = assert!(SHARDS.is_power_of_two());
        let mut hash = self.seed;
        for byte in key.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ (hash >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash = (hash ^ (hash >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^= hash >> 33;
        &self.shards[(hash >> (64 - SHARDS.trailing_zeros())) as usize]
    }

    /// Writes `value` at `key` with `deadline` into a locked shard, charged
    /// to the store's bound first; the old value is returned, to be freed
    /// once the lock is released.
    fn write(&self, shard: &mut ShardMap, key: String, value: Vec<u8>, deadline: u64) -> Result<Option<Entry>, String> {
        self.put(&mut shard.earliest, shard.entries.entry(key), value, deadline)
    }

    /// `write` into the key's place in its shard (`earliest` being the
    /// shard's), found once: the key is hashed once for the read and the
    /// write, not once for each.
    fn put(
        &self,
        earliest: &mut u64,
        slot: hash_map::Entry<'_, String, Entry>,
        value: Vec<u8>,
        deadline: u64,
    ) -> Result<Option<Entry>, String> {
        let old_cost = match &slot {
            hash_map::Entry::Occupied(old) => entry_cost(old.key().len(), old.get().value.len()),
            hash_map::Entry::Vacant(_) => 0,
        };
        self.usage.replace(old_cost, entry_cost(slot.key().len(), value.len()))?;
        if deadline != 0 && (*earliest == 0 || deadline < *earliest) {
            *earliest = deadline;
        }
        let entry = Entry { value, deadline };
        Ok(match slot {
            hash_map::Entry::Occupied(mut old) => Some(old.insert(entry)),
            hash_map::Entry::Vacant(place) => {
                place.insert(entry);
                None
            }
        })
    }

    fn sweep(&self, now: u64) -> u64 {
        let mut swept = 0;
        for shard in self.shards.iter() {
            let earliest = shard.read().unwrap().earliest;
            if earliest == 0 || earliest > now {
                continue;
            }
            let mut shard = shard.write().unwrap();
            let mut earliest = 0;
            let usage = &self.usage;
            shard.entries.retain(|key, entry| {
                if is_live(entry.deadline, now) {
                    if entry.deadline != 0 && (earliest == 0 || entry.deadline < earliest) {
                        earliest = entry.deadline;
                    }
                    return true;
                }
                usage.removed(entry_cost(key.len(), entry.value.len()));
                swept += 1;
                false
            });
            shard.earliest = earliest;
        }
        swept
    }
}

/// The entry's value, unless its deadline has passed (an expired entry
/// reads as missing until a sweep removes it).
fn live(entry: Option<&Entry>) -> Option<&Entry> {
    entry.filter(|entry| entry.deadline == 0 || is_live(entry.deadline, now_ms()))
}

impl BucketOps for Bucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(live(self.shard(key).read().unwrap().entries.get(key)).map(|entry| entry.value.clone()))
    }

    fn set(&self, key: String, value: Vec<u8>, deadline: u64) -> Result<(), String> {
        // The old value is freed after the lock is released.
        let old = self.write(&mut self.shard(&key).write().unwrap(), key, value, deadline)?;
        drop(old);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        let old = self.shard(key).write().unwrap().entries.remove(key);
        if let Some(old) = &old {
            self.usage.removed(entry_cost(key.len(), old.value.len()));
        }
        drop(old);
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, String> {
        Ok(live(self.shard(key).read().unwrap().entries.get(key)).is_some())
    }

    /// A page of the bucket's live keys in sorted order, so that a cursor
    /// (an offset) stays meaningful between calls while no key is added or
    /// removed. Sorting every key is the cost of a call the interface
    /// itself calls expensive.
    fn list_keys(&self, cursor: Option<u64>) -> Result<Page, String> {
        let now = now_ms();
        let mut keys: Vec<String> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.read().unwrap();
                shard
                    .entries
                    .iter()
                    .filter(|(_, e)| is_live(e.deadline, now))
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort_unstable();
        Ok(page(keys.into_iter(), cursor))
    }

    /// The shard stays write-locked from the read to the write.
    fn update(&self, key: String, expiry: Expiry, f: &mut Updater<'_>) -> Result<(), String> {
        let mut shard = self.shard(&key).write().unwrap();
        let ShardMap { entries, earliest } = &mut *shard;
        let slot = entries.entry(key);
        let current = match &slot {
            hash_map::Entry::Occupied(entry) => live(Some(entry.get())),
            hash_map::Entry::Vacant(_) => None,
        };
        let kept = current.map_or(0, |entry| entry.deadline);
        let old = match f(current.map(|entry| entry.value.as_slice()))? {
            Some(value) => {
                let deadline = match expiry {
                    Expiry::Keep => kept,
                    Expiry::At(deadline) => deadline,
                };
                self.put(earliest, slot, value, deadline)?
            }
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
    use crate::ops::metrics::KvMetrics;

    fn test_usage() -> Arc<Usage> {
        Arc::new(Usage::new(u64::MAX, KvMetrics::default()))
    }

    fn test_bucket() -> Bucket {
        Bucket::new(test_usage())
    }

    fn incr(bucket: &Bucket, key: &str, delta: u64) -> Result<u64, String> {
        increment(bucket, key.to_string(), move |current, key| incremented(current, key, delta))
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let bucket = test_bucket();
        let mut keys = vec![0usize; SHARDS];
        for n in 0..SHARDS * 200 {
            // redis-benchmark's keys, and short ones.
            for key in [format!("key:{n:012}"), format!("{n}")] {
                let shard = bucket.shard(&key) as *const Shard;
                keys[bucket.shards.iter().position(|s| std::ptr::eq(s, shard)).unwrap()] += 1;
            }
        }
        // 400 keys per shard on average.
        assert!(keys.iter().all(|&n| (250..=550).contains(&n)), "{keys:?}");
    }

    #[test]
    fn increments_are_exact_under_threads() {
        let bucket = Arc::new(test_bucket());
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
        let bucket = test_bucket();
        bucket.set("big".to_string(), u64::MAX.to_string().into_bytes(), 0).unwrap();
        assert!(incr(&bucket, "big", 1).unwrap_err().contains("overflows"));
        assert_eq!(bucket.get("big").unwrap(), Some(u64::MAX.to_string().into_bytes()));
        bucket.set("text".to_string(), b"hello".to_vec(), 0).unwrap();
        assert!(incr(&bucket, "text", 1).unwrap_err().contains("not a decimal"));
        assert_eq!(bucket.get("text").unwrap(), Some(b"hello".to_vec()));
        assert_eq!(incr(&bucket, "new", 7), Ok(7));
    }

    #[test]
    fn buckets_are_namespaces_and_capped() {
        let memory = Memory::new(test_usage());
        memory.bucket("a").unwrap().set("k".to_string(), b"1".to_vec(), 0).unwrap();
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
        let bucket = test_bucket();
        bucket.set("b".to_string(), vec![0, 1, 2], 0).unwrap();
        bucket.set("a".to_string(), vec![], 0).unwrap();
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
        assert_eq!(append_from_threads(Arc::new(test_bucket()), 8, 500), [500; 8]);
    }

    #[test]
    fn a_swap_from_missing_succeeds_once() {
        let bucket = test_bucket();
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), None, b"1".to_vec(), 0), Ok(Ok(())));
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), None, b"2".to_vec(), 0), Ok(Err(Some(b"1".to_vec()))));
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), Some(b"1"), b"3".to_vec(), 0), Ok(Ok(())));
        assert_eq!(bucket.get("k").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn the_bound_refuses_growth_and_lets_reads_deletes_and_shrinks_through() {
        let usage = Arc::new(Usage::new(1000, KvMetrics::default()));
        let memory = Memory::new(usage.clone());
        let bucket = memory.bucket("").unwrap();
        bucket.set("a".to_string(), vec![0; 500], 0).unwrap();
        let err = bucket.set("b".to_string(), vec![0; 500], 0).unwrap_err();
        assert!(err.starts_with("store full:"), "{err}");
        assert_eq!(bucket.get("b").unwrap(), None, "a refused write writes nothing");
        // Through another bucket of the same store, and through an update.
        assert!(memory.bucket("other").unwrap().set("c".to_string(), vec![0; 500], 0).is_err());
        assert!(compare_and_swap(&*bucket, "a".to_string(), Some(&[0; 500]), vec![1; 950], 0).is_err());
        assert_eq!(bucket.get("a").unwrap().unwrap().len(), 500);
        // Equal or smaller writes, reads and deletes go on.
        bucket.set("a".to_string(), vec![1; 500], 0).unwrap();
        bucket.set("a".to_string(), vec![2; 10], 0).unwrap();
        assert_eq!(usage.bytes(), entry_cost(1, 10));
        bucket.delete("a").unwrap();
        assert_eq!((usage.bytes(), usage.keys()), (0, 0));
        bucket.set("b".to_string(), vec![0; 500], 0).unwrap();
    }

    #[test]
    fn expired_entries_read_as_missing_and_the_sweep_frees_them() {
        let usage = Arc::new(Usage::new(u64::MAX, KvMetrics::default()));
        let memory = Memory::new(usage.clone());
        let bucket = memory.bucket("").unwrap();
        let now = now_ms();
        for i in 0..1000 {
            bucket.set(format!("old{i}"), vec![0; 100], now - 1).unwrap();
        }
        bucket.set("later".to_string(), b"v".to_vec(), now + 60_000).unwrap();
        bucket.set("kept".to_string(), b"v".to_vec(), 0).unwrap();
        assert_eq!(bucket.get("old1").unwrap(), None);
        assert!(!bucket.exists("old2").unwrap());
        assert_eq!(bucket.list_keys(None).unwrap().keys, ["kept", "later"]);
        assert_eq!(usage.keys(), 1002, "held until swept");
        assert_eq!(memory.sweep(now), 1000);
        assert_eq!(usage.keys(), 2);
        assert_eq!(usage.bytes(), 2 * entry_cost(4, 1) + entry_cost(5, 1) - entry_cost(4, 1));
        assert_eq!(memory.sweep(now), 0);
        assert_eq!(memory.sweep(now + 60_000), 1);
        assert_eq!(bucket.get("kept").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn set_and_swap_replace_the_deadline_and_increment_keeps_it() {
        let bucket = test_bucket();
        let now = now_ms();
        bucket.set("k".to_string(), b"1".to_vec(), now + 60_000).unwrap();
        assert_eq!(incr(&bucket, "k", 1), Ok(2));
        assert_eq!(bucket.sweep(now + 60_000), 1, "the increment kept the deadline");
        bucket.set("k".to_string(), b"1".to_vec(), now + 60_000).unwrap();
        bucket.set("k".to_string(), b"2".to_vec(), 0).unwrap();
        assert_eq!(bucket.sweep(now + 60_000), 0, "a plain set cleared it");
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), Some(b"2"), b"3".to_vec(), now - 1), Ok(Ok(())));
        assert_eq!(bucket.get("k").unwrap(), None);
        // An expired entry is missing for an update too.
        assert_eq!(compare_and_swap(&bucket, "k".to_string(), None, b"4".to_vec(), 0), Ok(Ok(())));
        assert_eq!(bucket.get("k").unwrap(), Some(b"4".to_vec()));
    }
}
