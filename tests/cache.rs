//! The compiled-guest cache holds native code the host runs outside the
//! sandbox: it is created private, and a directory or entry others could
//! have written is not trusted.

use crate::support::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A fresh directory under cargo's scratch space for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cache-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    found.sort();
    found
}

#[test]
fn the_cache_is_created_private_and_reused() {
    let dir = scratch("private").join("netplug");
    let host = Host::serve_with_env(&guest("hello"), &[], &[("NETPLUG_CACHE_DIR", &dir)]);
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700, "the directory is the user's alone");
    let made = entries(&dir);
    assert_eq!(made.len(), 1, "one compiled guest: {made:?}");
    assert_eq!(std::fs::metadata(&made[0]).unwrap().mode() & 0o777, 0o600, "the entry is the user's alone");
    drop(host);
    // A second start maps the same entry and says nothing about the cache.
    let again = Host::serve_with_env(&guest("hello"), &[], &[("NETPLUG_CACHE_DIR", &dir)]);
    assert_eq!(seed_exchange(again.addr).0, b"HELLO,WORLD");
    assert_eq!(entries(&dir), made);
    assert_eq!(again.count_log("compiled-guest cache"), 0, "{:?}", again.log());
}

#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    let dir = scratch("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = Host::serve_with_env(&guest("hello"), &[], &[("NETPLUG_CACHE_DIR", &dir)]);
    // It still serves, compiled in memory, and says why once.
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    let line = host.wait_for_log("the warning", |l| l.contains("compiled-guest cache not used"));
    assert!(line.contains("writable by others") && line.contains(&dir.display().to_string()), "{line}");
    assert!(entries(&dir).is_empty(), "nothing written to the shared directory");
}

#[test]
fn a_cache_entry_others_can_write_is_not_loaded() {
    let dir = scratch("entry");
    let first = Host::serve_with_env(&guest("hello"), &[], &[("NETPLUG_CACHE_DIR", &dir)]);
    drop(first);
    let made = entries(&dir);
    assert_eq!(made.len(), 1);
    std::fs::set_permissions(&made[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    let host = Host::serve_with_env(&guest("hello"), &[], &[("NETPLUG_CACHE_DIR", &dir)]);
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    let line = host.wait_for_log("the warning", |l| l.contains("not loading"));
    assert!(line.contains("writable by others"), "{line}");
}
