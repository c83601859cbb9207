//! The instance pool after a burst (runtime/trim.rs): once 512 or more of
//! its slots held an instance and sit idle, the host renews the pool, which
//! returns their memory. New connections get the new pool, the same
//! generation of the same guest; a connection open across the renewal
//! finishes on the old one, under the same limits.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Past the host's threshold of idle slots (512).
const BURST: usize = 600;

fn greeted(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    let mut greeting = [0u8; 11];
    stream.read_exact(&mut greeting).expect("read the greeting");
    assert_eq!(&greeting, b"HELLO,WORLD");
    stream
}

#[test]
fn a_burst_that_ends_renews_the_pool_and_every_connection_carries_on() {
    raise_fd_limit();
    let host = Host::serve(
        "hostile",
        &[
            "--max-connections",
            "1000",
            "--cpu-timeout",
            "300ms",
            "--idle-timeout",
            "60s",
            "--admin-addr",
            "127.0.0.1:0",
        ],
    );
    let admin = host.admin();
    // Opened before the burst: its instance is in the pool being replaced.
    let mut held = greeted(host.addr);
    let burst: Vec<TcpStream> = (0..BURST).map(|_| greeted(host.addr)).collect();
    assert_eq!(host.count_log("instance pool renewed"), 0, "not while the burst's connections are open");
    drop(burst);
    host.wait_for_log("the renewal", |l| l.contains("instance pool renewed"));
    assert_eq!(sample(&scrape(admin), "netplug_pool_renewals_total"), Some(1.0));

    // A new connection: served by the renewed pool, as the same generation.
    let (reply, peer) = seed_exchange(host.addr);
    assert_eq!(reply, b"HELLO,WORLD");
    host.wait_for_log("its record", |l| l.contains(&format!("peer={peer}")) && l.contains("generation=1"));

    // The connection opened before: still served, and its CPU budget still
    // enforced (the old engine's epoch keeps ticking).
    held.write_all(b"loop").unwrap();
    let rest = read_to_end(&mut held);
    assert!(rest.is_empty(), "the spinning guest is closed without a reply");
    host.wait_for_log("the CPU limit", |l| l.contains("CPU time limit reached (--cpu-timeout 300ms)"));
    assert_eq!(host.count_log("instance pool renewed"), 1, "renewed once");
}

#[test]
fn a_renewed_pool_serves_the_same_file_until_it_changes_then_reloads() {
    raise_fd_limit();
    let dir = crate::keyvalue::scratch_dir("renewed-pool");
    let path = dir.join("guest.wasm");
    std::fs::copy(guest("hello"), &path).unwrap();
    let host = Host::serve_path(&path, &["--watch", "--max-connections", "1000"]);
    let burst: Vec<TcpStream> = (0..BURST).map(|_| greeted(host.addr)).collect();
    drop(burst);
    host.wait_for_log("the renewal", |l| l.contains("instance pool renewed"));
    // Moved, not reloaded: the same generation of the same guest.
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    assert_eq!(host.count_log("serving"), 1, "no new generation: {:?}", host.log());
    // A change of the file is still a reload, now on the renewed pool.
    std::fs::write(&path, std::fs::read(guest("hello_v2")).unwrap()).unwrap();
    host.wait_for_log("generation 2", |l| l.contains("generation 2 serving"));
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,AGAIN");
}
