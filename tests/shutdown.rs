//! Shutdown as an operator sees it: a kept-alive HTTP connection ends at its
//! request boundary instead of holding the shutdown timeout, a request in
//! the middle of arriving is still answered, and a second signal exits at
//! once.

use crate::support::*;
use std::io::{Read, Write};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/// Reads one whole `Hello, World!` response (its headers and 14-byte body).
fn read_response(stream: &mut std::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"Hello, World!\n") {
        let n = stream.read(&mut buf).expect("read a response");
        assert!(n > 0, "closed before a whole response: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn an_idle_keep_alive_connection_ends_at_shutdown_without_the_timeout() {
    // A shutdown timeout far past the test's patience: holding it would fail.
    let host = Host::serve("http", &["--shutdown-timeout", "1h"]);
    let mut idle = connect(host.addr);
    idle.write_all(REQUEST).unwrap();
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 200 OK"));
    signal(host.pid(), "TERM");
    // The guest, waiting for the next request, is told the connection closed.
    assert_eq!(read_to_end(&mut idle), b"", "closed without another response");
    let status = host.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_request_arriving_at_shutdown_is_still_answered() {
    let host = Host::serve("http", &["--shutdown-timeout", "1h"]);
    let mut busy = connect(host.addr);
    busy.write_all(REQUEST).unwrap();
    read_response(&mut busy);
    // Half of the next request is in when the signal comes.
    busy.write_all(&REQUEST[..10]).unwrap();
    signal(host.pid(), "TERM");
    host.wait_for_log("the shutdown", |l| l.contains("SIGTERM: no longer accepting"));
    busy.write_all(&REQUEST[10..]).unwrap();
    let response = read_response(&mut busy);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    // Then it ends at the boundary, and the host exits.
    assert_eq!(read_to_end(&mut busy), b"");
    assert!(host.wait_exit().success());
}

#[test]
fn a_second_signal_exits_at_once() {
    let host = Host::serve("hello", &["--shutdown-timeout", "1h"]);
    // An exchange that never finishes: the guest waits for the client.
    let mut stuck = connect(host.addr);
    let mut greeting = [0u8; 11];
    stuck.read_exact(&mut greeting).unwrap();
    signal(host.pid(), "INT");
    host.wait_for_log("the first signal", |l| l.contains("SIGINT: no longer accepting"));
    signal(host.pid(), "INT");
    host.wait_for_log("the second signal", |l| l.contains("SIGINT again: exiting at once"));
    let status = host.wait_exit();
    assert_eq!(status.code(), Some(130), "128 + SIGINT: {status:?}");
}
