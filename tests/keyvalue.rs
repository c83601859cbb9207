//! Shared state through `wasi:keyvalue`, with the kv-counter test guest (a
//! line protocol over the store, built against 0.2.0-draft): increments are
//! exact across concurrent connections; `--kv PATH` survives a restart; a
//! guest importing the interfaces is refused without `--kv`; size and
//! operation limits give the guest an error and the host goes on; buckets
//! are separate namespaces. With the kv-sdk test guest (the guest SDK, on
//! 0.2.0-draft2): the SDK's wrappers reach the store, its compare-and-swap
//! loses no update from 16 connections at once on either store, and both
//! versions see the same data.

use crate::support::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

const GUEST: &str = "kv_counter";

/// One connection: sends `lines`, closes its write side, returns the reply
/// lines (one per command).
pub(crate) fn session(addr: SocketAddr, lines: &[&str]) -> Vec<String> {
    let mut stream = connect(addr);
    let mut text = lines.join("\n");
    text.push('\n');
    stream.write_all(text.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = String::from_utf8(read_to_end(&mut stream)).unwrap();
    reply.lines().map(str::to_string).collect()
}

/// A fresh directory for a test's database, under cargo's scratch space.
pub(crate) fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("netplug-kv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn concurrent_increments_are_exact() {
    increments_are_exact(&Host::serve(GUEST, &["--kv", "memory"]));
}

/// 32 connections at once each add 100 to one counter: the total is
/// exact.
pub(crate) fn increments_are_exact(host: &Host) {
    let addr = host.addr;
    let mut last = Vec::new();
    for reply in hammer(addr, 32, 1, "INCR hits 100") {
        assert_eq!(reply.len(), 1, "{reply:?}");
        last.push(reply[0].parse::<u64>().unwrap_or_else(|_| panic!("not a number: {reply:?}")));
    }
    // Every connection's last increment saw at least its own 100, and one
    // of them saw the final count.
    assert!(last.iter().all(|&v| (100..=3200).contains(&v)), "{last:?}");
    assert_eq!(last.iter().max(), Some(&3200));
    assert_eq!(session(addr, &["GET hits"]), ["3200"]);
}

#[test]
fn a_database_file_survives_a_restart() {
    let dir = scratch_dir("restart");
    let path = dir.join("store.redb");
    let path = path.to_str().unwrap();
    let host = Host::serve(GUEST, &["--kv", path]);
    let reply = session(host.addr, &["SET greeting hello there", "INCR visits 5", "BUCKET other", "SET k v"]);
    assert_eq!(reply, ["OK", "5", "OK", "OK"]);
    assert!(host.terminate().success());

    let host = Host::serve(GUEST, &["--kv", path]);
    let reply = session(host.addr, &["GET greeting", "INCR visits 1", "GET k", "BUCKET other", "GET k"]);
    assert_eq!(reply, ["hello there", "6", "(nil)", "OK", "v"]);
    drop(host);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_guest_importing_keyvalue_is_refused_without_kv() {
    let guest = guest(GUEST);
    let guest = guest.to_str().unwrap();
    let out = run_host(&["run", guest, "--port", "0"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing bound: {:?}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("`wasi:keyvalue/store@0.2.0-draft`") && err.contains("--kv"), "{err}");

    let out = run_host(&["inspect", guest]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.trim().starts_with("wasi:keyvalue/atomics@") && l.contains("needs --kv")), "{text}");
    assert!(text.contains("verdict: the host would run this guest with --kv"), "{text}");
}

#[test]
fn a_database_in_a_missing_directory_is_refused_in_one_line() {
    let out = run_host(&["run", guest(GUEST).to_str().unwrap(), "--port", "0", "--kv", "/nonexistent-netplug/kv.redb"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing bound");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("/nonexistent-netplug") && err.contains("does not exist"), "{err}");
}

#[test]
fn limits_give_the_guest_an_error_and_the_host_goes_on() {
    let args = ["--kv", "memory", "--kv-max-key-size", "8", "--kv-max-value-size", "16", "--kv-max-ops", "6"];
    let host = Host::serve(GUEST, &args);
    // Operations: open, then one per command; the failed ones count too.
    let reply = session(
        host.addr,
        &["SET key-too-long v", "SET k 0123456789abcdefX", "SET k 0123456789abcdef", "GET k", "GET k", "GET k"],
    );
    assert_eq!(reply.len(), 6, "{reply:?}");
    assert!(reply[0].starts_with("ERR key of 12 bytes") && reply[0].contains("--kv-max-key-size"), "{reply:?}");
    assert!(reply[1].starts_with("ERR value of 17 bytes") && reply[1].contains("--kv-max-value-size"), "{reply:?}");
    assert_eq!(reply[2..5], ["OK", "0123456789abcdef", "0123456789abcdef"]);
    assert!(reply[5].starts_with("ERR operation limit") && reply[5].contains("--kv-max-ops"), "{reply:?}");
    host.wait_for_log("the operation limit warning", |l| l.contains("--kv-max-ops"));
    // The next connection has a quota of its own and sees the value.
    assert_eq!(session(host.addr, &["GET k"]), ["0123456789abcdef"]);
}

#[test]
fn increment_refuses_overflow_and_text() {
    let host = Host::serve(GUEST, &["--kv", "memory"]);
    let max = format!("SET big {}", u64::MAX);
    let reply = session(host.addr, &[&max, "INCRBY big 1", "GET big", "SET word hi", "INCRBY word 1", "INCRBY new 7"]);
    assert_eq!(reply.len(), 6, "{reply:?}");
    assert!(reply[1].starts_with("ERR") && reply[1].contains("overflows"), "{reply:?}");
    assert_eq!(reply[2], u64::MAX.to_string());
    assert!(reply[4].starts_with("ERR") && reply[4].contains("not a decimal"), "{reply:?}");
    assert_eq!(reply[5], "7");
}

#[test]
fn buckets_are_separate_namespaces() {
    buckets_are_separate(&Host::serve(GUEST, &["--kv", "memory"]));
}

pub(crate) fn buckets_are_separate(host: &Host) {
    let reply = session(host.addr, &["SET k one", "BUCKET other", "GET k", "SET k two", "KEYS", "BUCKET", "GET k"]);
    assert_eq!(reply, ["OK", "OK", "(nil)", "OK", "k", "OK", "one"]);
    // Another connection sees both, each in its bucket.
    assert_eq!(
        session(host.addr, &["GET k", "BUCKET other", "GET k", "DEL k", "EXISTS k"]),
        ["one", "OK", "two", "OK", "0"]
    );
    assert_eq!(session(host.addr, &["EXISTS k"]), ["1"]);
}

#[test]
fn a_reused_instance_gets_a_fresh_operation_quota() {
    // Each connection opens its bucket and makes one GET: two operations.
    let host = Host::serve(GUEST, &["--kv", "memory", "--kv-max-ops", "2", "--connections-per-instance", "100"]);
    for _ in 0..5 {
        assert_eq!(session(host.addr, &["GET k"]), ["(nil)"]);
    }
    assert!(session(host.addr, &["GET k", "GET k"])[1].starts_with("ERR operation limit"));
}

/// The guest SDK's wrappers (`netplug_guest::kv`) on the real store: every
/// call, errors as the store's message, and `keys()` across pages (the host
/// pages `list-keys` by 1000 keys).
#[test]
fn the_sdk_wrappers_reach_the_store() {
    the_sdk_wrappers_work_on("memory");
}

/// The SDK's calls on the store `kv` names, empty at first.
pub(crate) fn the_sdk_wrappers_work_on(kv: &str) {
    let host = Host::serve("kv_sdk", &["--kv", kv]);
    let reply = session(
        host.addr,
        &[
            "COUNT", "SET k v", "GET k", "EXISTS k", "DEL k", "EXISTS k", "GET k", "INCR n 5", "INCR n 2", "SET t x",
            "INCR t 1",
        ],
    );
    assert_eq!(reply[..9], ["0", "OK", "v", "1", "OK", "0", "(nil)", "5", "7"], "{reply:?}");
    assert_eq!(reply[9], "OK");
    assert!(reply[10].starts_with("ERR ") && reply[10].contains("not a decimal"), "{reply:?}");
    // draft2's increment is signed; the compare-and-swap wrappers.
    let reply = session(host.addr, &["INCR n -10", "SETNX s a", "SETNX s b", "GET s", "APPEND s bc", "APPEND new x"]);
    assert_eq!(reply, ["-3", "1", "0", "a", "3", "1"]);
    assert_eq!(session(host.addr, &["FILL key 2500", "COUNT"]), ["OK", "2504"]);
    // draft2's batch, one operation per key.
    let reply = session(host.addr, &["MSET a 1 b 2", "MGET a b c", "MDEL a c", "MGET a b"]);
    assert_eq!(reply, ["OK", "a=1 b=2 (nil)", "OK", "(nil) b=2"]);
    let host = Host::serve("kv_sdk", &["--kv", kv, "--kv-max-ops", "3"]);
    let reply = session(host.addr, &["MSET x 1 y 2 z 3"]);
    assert!(reply[0].starts_with("ERR") && reply[0].contains("--kv-max-ops"), "{reply:?}");
    // A batch past the limit does nothing (open, then one per key).
    assert_eq!(session(host.addr, &["MGET x y"]), ["(nil) (nil)"]);
    // Without --kv, a guest that uses the wrappers imports the store and is
    // refused; one that does not (echo) imports nothing of it.
    let out = run_host(&["inspect", guest("kv_sdk").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wasi:keyvalue/store@0.2.0-draft2: needs --kv"), "{text}");
    assert!(text.contains("wasi:keyvalue/atomics@0.2.0-draft2: needs --kv"), "{text}");
    let out = run_host(&["inspect", guest("echo").to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wasi:keyvalue"));
}

/// `connections` connections at once, each sending `line` `each` times in
/// one session; every connection's replies.
pub(crate) fn hammer(addr: SocketAddr, connections: usize, each: usize, line: &'static str) -> Vec<Vec<String>> {
    let threads: Vec<_> =
        (0..connections).map(|_| std::thread::spawn(move || session(addr, &vec![line; each]))).collect();
    threads.into_iter().map(|thread| thread.join().unwrap()).collect()
}

/// `Bucket::update` (compare-and-swap, retried) appends without losing one,
/// and `compare_and_swap` from no value has exactly one winner.
pub(crate) fn compare_and_swap_loses_nothing(host: &Host, connections: usize, each: usize) {
    let replies = hammer(host.addr, connections, each, "APPEND log x");
    for reply in &replies {
        assert_eq!(reply.len(), each);
        assert!(reply.iter().all(|r| r.parse::<usize>().is_ok()), "{reply:?}");
    }
    let total = connections * each;
    let log = session(host.addr, &["GET log"]);
    assert_eq!(log[0].len(), total, "every append is there");
    // Each connection saw its own appends in order.
    let lengths = |r: &Vec<String>| r.iter().map(|n| n.parse::<usize>().unwrap()).collect::<Vec<_>>();
    assert!(replies.iter().all(|r| lengths(r).windows(2).all(|w| w[0] < w[1])), "{replies:?}");
    let won = hammer(host.addr, connections, 1, "SETNX lock me");
    assert_eq!(won.iter().flatten().filter(|r| *r == "1").count(), 1, "{won:?}");
    assert_eq!(won.iter().flatten().filter(|r| *r == "0").count(), connections - 1, "{won:?}");
}

#[test]
fn compare_and_swap_is_exact_in_memory() {
    compare_and_swap_loses_nothing(&Host::serve("kv_sdk", &["--kv", "memory"]), 16, 200);
}

#[test]
fn compare_and_swap_is_exact_in_a_database_file() {
    let dir = scratch_dir("cas");
    let host = Host::serve("kv_sdk", &["--kv", dir.join("store.redb").to_str().unwrap()]);
    compare_and_swap_loses_nothing(&host, 8, 25);
    drop(host);
    let _ = std::fs::remove_dir_all(dir);
}

/// A guest built against 0.2.0-draft (kv-counter) and one against draft2
/// (kv-sdk) on the same database file see the same buckets and data, under
/// the same limits.
#[test]
fn both_versions_share_the_store_and_the_limits() {
    let dir = scratch_dir("versions");
    let path = dir.join("store.redb");
    let path = path.to_str().unwrap();
    let draft = Host::serve(GUEST, &["--kv", path]);
    assert_eq!(session(draft.addr, &["SET k from draft", "INCR n 41"]), ["OK", "41"]);
    assert!(draft.terminate().success());

    let draft2 = Host::serve("kv_sdk", &["--kv", path, "--kv-max-ops", "5", "--kv-max-value-size", "16"]);
    // open, then four operations; APPEND is a cas read and a swap.
    let reply = session(draft2.addr, &["GET k", "INCR n 1", "APPEND n 0123456789abcdefX", "APPEND n !", "GET n"]);
    assert_eq!(reply[..2], ["from draft", "42"], "{reply:?}");
    assert!(reply[2].contains("--kv-max-value-size"), "{reply:?}");
    assert!(reply[3].contains("--kv-max-ops") && reply[4].contains("--kv-max-ops"), "{reply:?}");
    assert!(draft2.terminate().success());

    let draft = Host::serve(GUEST, &["--kv", path]);
    assert_eq!(session(draft.addr, &["GET n", "INCR n 1"]), ["42", "43"]);
    drop(draft);
    let _ = std::fs::remove_dir_all(dir);
}

/// The value of the series `name{listener="LISTENER"}` on the host's
/// `/metrics`.
fn metric(admin: SocketAddr, name: &str, listener: &str) -> f64 {
    let (status, body) = http_request(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    let series = format!("{name}{{listener=\"{listener}\"}} ");
    let line = body.lines().find(|line| line.starts_with(&series)).unwrap_or_else(|| panic!("no {series}in:\n{body}"));
    line[series.len()..].trim().parse().unwrap()
}

/// A hostile guest floods the store with 1 MiB values from 12 connections
/// at default flags (the store's bound is 64 MiB) while good clients read:
/// every flood ends with the store's error, the host holds no more than the
/// bound and a stated margin, and the good clients see no failure.
#[test]
fn a_flood_stops_at_the_store_bound_and_good_clients_go_on() {
    const BOUND: f64 = 64.0 * 1024.0 * 1024.0;
    // Beyond the bound: the host's own baseline (about 25 MiB), the floods'
    // values in flight (12 connections, each copying a 1 MiB value through
    // its instance and the host) and the allocator's slack.
    const MARGIN_KIB: u64 = 96 * 1024;
    let host = Host::serve("kv_sdk", &["--kv", "memory", "--admin-addr", "127.0.0.1:0"]);
    let (addr, admin) = (host.addr, host.admin());
    assert_eq!(session(addr, &["SET greeting hello"]), ["OK"]);
    let before_kib = rss_kib(host.pid());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut passed, mut failed) = (0, Vec::new());
                let deadline = std::time::Instant::now() + PATIENCE;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    let reply = session(addr, &["GET greeting", "EXISTS greeting"]);
                    if reply == ["hello", "1"] {
                        passed += 1;
                    } else {
                        failed.push(reply);
                    }
                }
                (passed, failed)
            })
        })
        .collect();
    let floods: Vec<_> =
        (0..12).map(|i| std::thread::spawn(move || session(addr, &[&format!("FLOOD flood{i}- 1048576")]))).collect();
    let flood_replies: Vec<Vec<String>> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (passed, failed) in good.into_iter().map(|t| t.join().unwrap()) {
        assert!(failed.is_empty(), "good clients failed: {failed:?}");
        assert!(passed > 0, "a good client never got through");
    }
    for reply in &flood_replies {
        assert_eq!(reply.len(), 1, "{reply:?}");
        assert!(
            reply[0].starts_with("ERR store full:") && reply[0].contains("--kv-max-bytes"),
            "a flood ended with {reply:?}"
        );
    }

    let held = metric(admin, "netplug_kv_bytes", "kv_sdk");
    assert!(held <= BOUND && held > BOUND - 2.0 * 1024.0 * 1024.0, "the store holds {held} bytes");
    assert!(metric(admin, "netplug_kv_writes_refused_total", "kv_sdk") >= 12.0);
    assert_eq!(metric(admin, "netplug_kv_max_bytes", "kv_sdk"), BOUND);
    let rss = rss_kib(host.pid());
    assert!(rss < before_kib + (BOUND as u64 / 1024) + MARGIN_KIB, "resident {rss} KiB, {before_kib} KiB before");
    // One warning for the episode, not one per refused write.
    assert_eq!(host.count_log("key-value store full"), 1, "{}", host.log().join("\n"));

    // Reads and deletes still work, and a delete makes room again.
    assert_eq!(session(addr, &["GET greeting", "DEL flood0-0", "SET after x"]), ["hello", "OK", "OK"]);
    assert_eq!(session(addr, &["GET after"]), ["x"]);
}

/// The bound holds for the database file too, and counts what the file
/// already held when the host started.
#[test]
fn a_database_file_is_bounded_across_restarts() {
    let dir = scratch_dir("bounded");
    let path = dir.join("store.redb");
    let args = ["--kv", path.to_str().unwrap(), "--kv-max-bytes", "1MiB", "--admin-addr", "127.0.0.1:0"];
    {
        let host = Host::serve("kv_sdk", &args);
        let reply = session(host.addr, &["FLOOD big- 100000"]);
        assert!(reply[0].starts_with("ERR store full:"), "{reply:?}");
        assert_eq!(session(host.addr, &["COUNT"]), ["10"]);
    }
    let host = Host::serve("kv_sdk", &args);
    let held = metric(host.admin(), "netplug_kv_bytes", "kv_sdk");
    assert!(held > 1_000_000.0 && held <= 1024.0 * 1024.0, "reopened, the store counts {held} bytes");
    assert!(session(host.addr, &["FLOOD more- 100000"])[0].starts_with("ERR store full:"));
    assert_eq!(session(host.addr, &["COUNT"]), ["10"]);
    assert_eq!(session(host.addr, &["DEL big-0", "SET one-more x", "GET one-more"]), ["OK", "OK", "x"]);
}

/// What a guest can make the host hold through the store's calls is bounded
/// by its own `--max-memory`: a `get-many` naming one 1 MiB value a
/// thousand times, and a hoard of compare-and-swap handles on it, each get
/// the store's error, and the host goes on.
#[test]
fn batch_reads_and_held_swaps_are_bounded_by_the_guest_memory() {
    let host = Host::serve("kv_sdk", &["--kv", "memory", "--kv-max-bytes", "4MiB"]);
    let addr = host.addr;
    let reply = session(addr, &["FLOOD big 1048576"]);
    assert!(reply[0].starts_with("ERR store full:"), "{reply:?}");
    assert_eq!(session(addr, &["MGETMANY big0 8"]), ["8"]);
    let reply = session(addr, &["MGETMANY big0 1000"]);
    assert!(reply[0].starts_with("ERR") && reply[0].contains("--max-memory"), "{reply:?}");
    assert_eq!(session(addr, &["HOARD big0 8"]), ["held 8"]);
    let reply = session(addr, &["HOARD big0 60"]);
    assert!(reply[0].starts_with("ERR") && reply[0].contains("--max-memory"), "{reply:?}");
    // Handles given back with their connection: the next one may hold 8.
    assert_eq!(session(addr, &["HOARD big0 8", "GET big1"]).len(), 2);
    assert!(rss_kib(host.pid()) < 256 * 1024, "resident {} KiB", rss_kib(host.pid()));
}
