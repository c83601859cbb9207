//! The seed exchange end to end: the `hello` guest served by the real host,
//! talked to by Rust and Python clients, and the `hello-client` guest run by
//! the host against a Python server and against the `hello` guest.

use crate::support::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn rust_client_gets_hello_and_the_server_logs_peer_and_data() {
    let host = Host::serve("hello", &[]);
    let (reply, local) = seed_exchange(host.addr);
    assert_eq!(reply, b"HELLO,WORLD");
    let line = host.wait_for_log("with the client's data", |l| l.contains("this is client..."));
    assert!(line.contains(&local.to_string()), "log line names the peer {local}: {line}");
}

#[test]
fn python_seed_client_gets_hello() {
    let host = Host::serve("hello", &[]);
    let out = Command::new("python3")
        .arg(python_script("seed_client.py"))
        .arg(host.addr.port().to_string())
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python client failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "b'HELLO,WORLD'");
    host.wait_for_log("with the python client's data", |l| l.contains("sent 17 bytes: this is client..."));
}

/// Starts the seed tutorial's Python server for `count` connections.
fn python_server(count: usize) -> (std::process::Child, BufReader<std::process::ChildStdout>, u16) {
    let mut child = Command::new("python3")
        .arg(python_script("seed_server.py"))
        .arg(count.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port = first.trim().rsplit(':').next().unwrap().parse().expect("python server port");
    (child, out, port)
}

#[test]
fn serves_on_ipv6_loopback() {
    let host = Host::serve("hello", &["--addr", "::1"]);
    assert_eq!(host.addr.ip().to_string(), "::1");
    let (reply, local) = seed_exchange(host.addr);
    assert_eq!(reply, b"HELLO,WORLD");
    host.wait_for_log("naming the IPv6 peer", |l| l.contains(&format!("peer={local}")));
}

#[test]
fn netcat_gets_hello() {
    let host = Host::serve("hello", &[]);
    let mut nc = Command::new("nc")
        .args(["-N", "-w", "10", "127.0.0.1", &host.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run nc (Debian package netcat-openbsd; .ci/run installs it)");
    nc.stdin.take().unwrap().write_all(b"this is client...").unwrap();
    let out = nc.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO,WORLD");
    host.wait_for_log("with nc's data", |l| l.contains("sent 17 bytes: this is client..."));
}

#[test]
fn hello_client_guest_talks_to_the_python_seed_server() {
    let (mut server, mut server_out, port) = python_server(1);
    let target = format!("127.0.0.1:{port}");
    let guest = guest("hello_client");
    let out = run_host(&["run", guest.to_str().unwrap(), "--connect", &target]);
    assert!(out.status.success(), "client guest failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "HELLO,WORLD");
    let mut printed = String::new();
    for _ in 0..3 {
        server_out.read_line(&mut printed).unwrap();
    }
    assert!(printed.contains("b'this is client...'"), "python server printed: {printed}");
    assert!(server.wait().unwrap().success());
}

#[test]
fn hello_client_guest_talks_to_the_hello_guest() {
    let host = Host::serve("hello", &[]);
    let guest = guest("hello_client");
    let target = host.addr.to_string();
    let out = run_host(&["run", guest.to_str().unwrap(), "--connect", &target]);
    assert!(out.status.success(), "client guest failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "HELLO,WORLD");
    host.wait_for_log("with the client guest's data", |l| l.contains("this is client..."));
}

#[test]
fn client_guest_reports_a_refused_connection() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let guest = guest("hello_client");
    let target = format!("127.0.0.1:{port}");
    let out = run_host(&["run", guest.to_str().unwrap(), "--connect", &target]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connect to 127.0.0.1:") && err.contains(": refused"), "stderr names the refusal: {err}");
}

#[test]
fn two_hundred_concurrent_clients_are_all_answered() {
    let host = Host::serve("hello", &["--log-level", "warn"]);
    assert_eq!(concurrent_seed_exchanges(host.addr, 200), 200);
    let status = host.terminate();
    assert!(status.success());
}

#[test]
fn silent_closing_and_oversized_peers_do_not_disturb_others() {
    let host = Host::serve("hello", &["--idle-timeout", "2s"]);
    // Connects and says nothing (held open while the others run).
    let silent = connect(host.addr);
    // Connects and closes at once.
    drop(connect(host.addr));
    // Sends far more than the 1024 bytes the guest reads.
    let mut big = connect(host.addr);
    let _ = big.write_all(&vec![b'x'; 256 * 1024]);
    assert_eq!(concurrent_seed_exchanges(host.addr, 50), 50);
    // The silent peer is closed by the idle timeout, with a reason logged.
    host.wait_for_log("naming the idle timeout", |l| l.contains("idle timeout"));
    let mut silent = silent;
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(read_to_end(&mut silent), b"HELLO,WORLD");
    assert_eq!(concurrent_seed_exchanges(host.addr, 10), 10);
}

/// `host run`'s server as a library call, in this process: bound on port
/// 0, its address read back, and stopped by a channel, with no child
/// process and no signal, as a test or an embedding program runs it.
#[test]
fn the_server_runs_in_process_until_its_shutdown_future() {
    use clap::Parser;
    use netplug::config::flags::{Cli, Command};
    use netplug::config::serve::ServeConfig;
    use netplug::runtime::server::Server;
    let hello = guest("hello");
    let args = ["host", "run", hello.to_str().unwrap(), "--port", "0", "--max-connections", "4", "--no-cache"];
    let Command::Run(cmd) = Cli::try_parse_from(args).unwrap().command else { unreachable!("a run command") };
    let config = ServeConfig::from_run(&cmd).unwrap().expect("a server configuration, with --port");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let server = runtime.block_on(async { Server::bind(config) }).unwrap();
    let addr = server.local_addrs().unwrap()[0];
    assert_ne!(addr.port(), 0, "the bound port");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(server.run(async {
        let _ = stopped.await;
    }));
    for _ in 0..3 {
        assert_eq!(seed_exchange(addr).0, b"HELLO,WORLD");
    }
    stop.send(()).unwrap();
    let ended = runtime.block_on(async { tokio::time::timeout(PATIENCE, server).await });
    ended.expect("stopped within PATIENCE").expect("the task ran").expect("served without an error");
    assert!(std::net::TcpStream::connect(addr).is_err(), "the socket is closed after the stop");
}
