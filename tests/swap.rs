//! Hot swap: replacing a listener's guest while it serves. New connections
//! get the new guest as soon as it is loaded, connections in flight finish
//! on the one they started with, and a file that does not load leaves the
//! current guest serving.

use crate::support::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How soon after a swap new connections must get the new guest.
const SWAP_WITHIN: Duration = Duration::from_secs(2);

/// A fresh directory for one test's guest file.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("swap-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path` with the bytes of `from`, written in place (truncate and
/// write, as `cp` does) or to a temporary file renamed over it (as editors
/// and deploy tools do).
fn replace(path: &Path, from: &[u8], in_place: bool) {
    if in_place {
        std::fs::write(path, from).unwrap();
    } else {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, from).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

/// Seed exchanges until one gets `greeting`, failing past `SWAP_WITHIN`
/// from `since`. The client closes its side after sending, so that an echo
/// guest (before a swap away from it) ends the exchange too.
fn wait_for_greeting(host: &Host, since: Instant, greeting: &[u8]) {
    loop {
        let mut stream = connect(host.addr);
        stream.write_all(b"this is client...").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let reply = read_to_end(&mut stream);
        if reply == greeting {
            return;
        }
        assert!(
            since.elapsed() < SWAP_WITHIN,
            "still {:?} {SWAP_WITHIN:?} after the swap to {:?}; log:\n{}",
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(greeting),
            host.log().join("\n")
        );
    }
}

/// Compiles both versions into this test process's compiled-guest cache
/// first, so that the 2 s allowed for a swap measures the swap and not a
/// cold compile competing with the other tests for the machine's 2 cores.
fn warm_cache() {
    for name in ["hello", "hello_v2"] {
        let host = Host::serve(name, &[]);
        assert!(seed_exchange(host.addr).0.starts_with(b"HELLO,"));
    }
}

fn greetings() -> [(Vec<u8>, &'static [u8]); 2] {
    [
        (std::fs::read(guest("hello_v2")).unwrap(), b"HELLO,AGAIN"),
        (std::fs::read(guest("hello")).unwrap(), b"HELLO,WORLD"),
    ]
}

#[test]
fn ten_swaps_by_watch_under_load_drop_no_exchange() {
    warm_cache();
    let dir = scratch("watch");
    let path = dir.join("guest.wasm");
    std::fs::copy(guest("hello"), &path).unwrap();
    let host = Host::serve_path(&path, &["--watch"]);
    let load = SeedLoad::start(host.addr, 32, &[b"HELLO,WORLD", b"HELLO,AGAIN"]);
    let versions = greetings();
    for swap in 0..10 {
        let (bytes, greeting) = &versions[swap % 2];
        let since = Instant::now();
        replace(&path, bytes, swap % 4 < 2);
        wait_for_greeting(&host, since, greeting);
        host.wait_for_log("the new generation", |l| l.contains(&format!("generation {} serving", swap + 2)));
    }
    let (ok, failures) = load.finish();
    let failed = failures.len();
    println!("under --watch swaps: {ok} exchanges answered, {failed} failed");
    assert_eq!(failed, 0, "{ok} answered, {failed} failed");
    assert!(ok > 100, "the load ran: {ok}");
}

#[test]
fn ten_swaps_by_sighup_under_load_drop_no_exchange() {
    warm_cache();
    let dir = scratch("sighup");
    let path = dir.join("guest.wasm");
    std::fs::copy(guest("hello"), &path).unwrap();
    let host = Host::serve_path(&path, &[]);
    let load = SeedLoad::start(host.addr, 32, &[b"HELLO,WORLD", b"HELLO,AGAIN"]);
    let versions = greetings();
    for swap in 0..10 {
        let (bytes, greeting) = &versions[swap % 2];
        // Without --watch the new file is not noticed until SIGHUP.
        replace(&path, bytes, swap % 2 == 0);
        let since = Instant::now();
        signal(host.pid(), "HUP");
        wait_for_greeting(&host, since, greeting);
    }
    let (ok, failures) = load.finish();
    let failed = failures.len();
    println!("under SIGHUP swaps: {ok} exchanges answered, {failed} failed");
    assert_eq!(failed, 0, "{ok} answered, {failed} failed");
    assert_eq!(host.count_log("SIGHUP: generation"), 10, "{:?}", host.log());
}

/// Sends `message` on a kept connection and expects it echoed.
fn echoes(stream: &mut std::net::TcpStream, message: &[u8]) {
    stream.write_all(message).unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
}

#[test]
fn a_connection_finishes_on_the_guest_it_started_with() {
    warm_cache();
    let dir = scratch("keep");
    let path = dir.join("guest.wasm");
    std::fs::copy(guest("echo"), &path).unwrap();
    let host = Host::serve_path(&path, &["--watch"]);
    let mut old = connect(host.addr);
    echoes(&mut old, b"before the swaps");
    for (swap, (bytes, greeting)) in greetings().iter().enumerate() {
        let since = Instant::now();
        replace(&path, bytes, swap == 0);
        wait_for_greeting(&host, since, greeting);
        // The echo connection still runs its own generation.
        echoes(&mut old, format!("after swap {}", swap + 1).as_bytes());
    }
    old.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut old), b"", "the old generation closes when its peer does");
}

#[test]
fn a_reload_that_fails_keeps_the_current_guest_serving() {
    warm_cache();
    let dir = scratch("bad");
    let path = dir.join("guest.wasm");
    std::fs::copy(guest("hello"), &path).unwrap();
    let host = Host::serve_path(&path, &["--watch"]);
    let good = std::fs::read(guest("hello_v2")).unwrap();
    let bad: [(&str, Vec<u8>, &str); 5] = [
        ("not WebAssembly", b"#!/bin/sh\necho hello\n".to_vec(), "not a WebAssembly file"),
        ("half-written", good[..good.len() / 2].to_vec(), "cannot compile guest"),
        ("another world", std::fs::read(guest("hello_client")).unwrap(), "client guest"),
        ("a refused import", std::fs::read(guest("wants_fs")).unwrap(), "which the host refuses"),
        ("a compile error", b"\0asm\x0d\0\x01\0\xff\xff\xff\xff".to_vec(), "cannot compile guest"),
    ];
    for (n, (what, bytes, reason)) in bad.iter().enumerate() {
        replace(&path, bytes, false);
        let start = Instant::now();
        while host.count_log("reload of") <= n {
            assert!(start.elapsed() < PATIENCE, "no failed reload logged for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let line = host.log().into_iter().filter(|l| l.contains("reload of")).nth(n).unwrap();
        assert!(line.contains("guest.wasm") && line.contains(reason), "{what}: {line}");
        assert!(line.contains("generation 1 keeps serving"), "{what}: {line}");
        assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD", "{what}: still served");
    }
    // The next good file is picked up.
    let since = Instant::now();
    replace(&path, &good, false);
    wait_for_greeting(&host, since, b"HELLO,AGAIN");
}

#[test]
fn a_drain_timeout_closes_what_the_old_guest_still_holds() {
    warm_cache();
    let dir = scratch("drain");
    let path = dir.join("guest.wasm");
    std::fs::copy(guest("echo"), &path).unwrap();
    let host = Host::serve_path(&path, &["--watch", "--drain-timeout", "1s"]);
    let mut old = connect(host.addr);
    echoes(&mut old, b"before the swap");
    let since = Instant::now();
    replace(&path, &std::fs::read(guest("hello")).unwrap(), false);
    wait_for_greeting(&host, since, b"HELLO,WORLD");
    // Closed a second after the swap, within the spread that follows.
    assert_eq!(read_to_end(&mut old), b"");
    host.wait_for_log("the drain", |l| l.contains("closed: generation 1 drained (--drain-timeout)"));
    assert!(since.elapsed() >= Duration::from_secs(1), "not before the drain timeout");
}
