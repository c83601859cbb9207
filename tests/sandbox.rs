//! The sandbox: hostile guests, per-connection limits, no ambient authority
//! and graceful shutdown. Each hostile connection runs beside 50 good seed
//! exchanges on the same host (the `hostile` guest behaves like the seed
//! server unless its input is a trigger word), and every good one must
//! succeed while the hostile one is closed with its reason logged.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// Sends `trigger` on one connection while 50 good exchanges run; returns
/// what the hostile connection received before it was closed, and how long
/// that took.
fn hostile_beside_good(host: &Host, trigger: &'static [u8], read_reply: bool) -> (Vec<u8>, Duration) {
    let addr = host.addr;
    // Told once the hostile guest is running: it has sent its greeting, and
    // the trigger is already waiting for its recv.
    let (started_tx, started) = std::sync::mpsc::channel();
    let hostile = std::thread::spawn(move || {
        let start = Instant::now();
        let mut s = connect(addr);
        s.write_all(trigger).unwrap();
        let reply = if read_reply {
            let mut reply = vec![0u8; 11];
            s.read_exact(&mut reply).expect("the hostile guest's greeting");
            started_tx.send(()).unwrap();
            reply.extend(read_to_end(&mut s));
            reply
        } else {
            // A peer that never reads: once the guest is past its first
            // recv (more than HELLO,WORLD is queued), wait for the host to
            // close the connection, without draining what the guest sends.
            let mut head = [0u8; 64];
            let start = Instant::now();
            while s.peek(&mut head).unwrap_or(0) <= 11 {
                assert!(start.elapsed() < PATIENCE, "the guest never started sending");
                // Poll interval.
                std::thread::sleep(Duration::from_millis(10));
            }
            started_tx.send(()).unwrap();
            wait_closed_without_reading(&s);
            Vec::new()
        };
        (reply, start.elapsed())
    });
    // The good traffic starts once the hostile guest is running.
    if started.recv_timeout(PATIENCE).is_err() {
        match hostile.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_) => panic!("the hostile connection ended before its guest ran"),
        }
    }
    assert_eq!(concurrent_seed_exchanges(addr, 50), 50, "every good exchange succeeds");
    let result = hostile.join().expect("hostile client thread");
    assert_eq!(concurrent_seed_exchanges(addr, 10), 10, "later exchanges succeed too");
    result
}

/// Waits until the host closes `s` (seen as EOF or reset after the queued
/// data), reading nothing that would relieve a sending guest until then.
fn wait_closed_without_reading(s: &std::net::TcpStream) {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        // /proc/net/tcp would tell the state; simpler: a zero-length probe
        // write fails once the host has closed and reset the socket.
        if (&*s).write(b"x").is_err() {
            return;
        }
        // Poll interval.
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("host did not close a non-reading peer within {PATIENCE:?}");
}

#[test]
fn infinite_loop_is_interrupted_by_the_cpu_limit() {
    let host = Host::serve("hostile", &["--cpu-timeout", "500ms"]);
    let (reply, took) = hostile_beside_good(&host, b"loop", true);
    assert_eq!(reply, b"HELLO,WORLD");
    assert!(took < PATIENCE);
    host.wait_for_log("naming the CPU limit", |l| l.contains("CPU time limit reached (--cpu-timeout 500ms)"));
}

#[test]
fn sleeping_in_a_wasi_call_is_stopped_by_the_cpu_limit() {
    let host = Host::serve("hostile", &["--cpu-timeout", "500ms"]);
    let (reply, took) = hostile_beside_good(&host, b"sleep", true);
    assert_eq!(reply, b"HELLO,WORLD");
    assert!(took < PATIENCE, "closed long before the hour-long sleep");
    host.wait_for_log("naming the limit", |l| {
        l.contains("CPU time limit reached (--cpu-timeout 500ms) while blocked in a WASI call")
    });
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let host = Host::serve("hostile", &["--max-memory", "8MiB"]);
    let (reply, _) = hostile_beside_good(&host, b"alloc", true);
    assert_eq!(reply, b"HELLO,WORLD");
    host.wait_for_log("naming the memory limit", |l| l.contains("memory limit reached (--max-memory 8388608 bytes)"));
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    let host = Host::serve("hostile", &[]);
    let (reply, _) = hostile_beside_good(&host, b"recurse", true);
    assert_eq!(reply, b"HELLO,WORLD");
    host.wait_for_log("naming the stack overflow", |l| l.contains("trap: stack overflow"));
}

#[test]
fn out_of_bounds_access_is_a_trap() {
    let host = Host::serve("hostile", &[]);
    let (reply, _) = hostile_beside_good(&host, b"oob", true);
    assert_eq!(reply, b"HELLO,WORLD");
    host.wait_for_log("naming the access", |l| l.contains("trap: out-of-bounds memory access"));
}

#[test]
fn panic_closes_only_its_connection_and_is_logged_once() {
    let host = Host::serve("hostile", &[]);
    let (reply, _) = hostile_beside_good(&host, b"panic", true);
    assert_eq!(reply, b"HELLO,WORLD");
    host.wait_for_log("naming the abort", |l| l.contains("trap: the guest aborted (a panic"));
    // The guest's panic message reaches the log through its stderr.
    host.wait_for_log("with the panic message", |l| l.contains("hostile guest panics on purpose"));
    assert_eq!(host.count_log("trap: the guest aborted"), 1, "logged once");
    assert!(!host.log().iter().any(|l| l.contains("wasm backtrace")), "no backtrace without --verbose");
}

#[test]
fn endless_sender_to_a_reading_peer_hits_the_byte_quota() {
    let host = Host::serve("hostile", &["--max-bytes-out", "1MiB", "--cpu-timeout", "500ms"]);
    let (reply, _) = hostile_beside_good(&host, b"flood", true);
    assert!(reply.len() <= (1 << 20), "at most the quota is sent: {}", reply.len());
    assert!(reply.len() > (1 << 19), "the sends within the quota arrive: {}", reply.len());
    host.wait_for_log("naming the quota", |l| l.contains("would pass --max-bytes-out 1048576"));
    // Ignoring the error and retrying forever then exhausts its CPU time.
    host.wait_for_log("closing it", |l| l.contains("CPU time limit reached"));
}

#[test]
fn endless_sender_to_a_silent_peer_hits_the_idle_timeout() {
    let host = Host::serve("hostile", &["--idle-timeout", "1s", "--cpu-timeout", "500ms"]);
    let (_, took) = hostile_beside_good(&host, b"flood", false);
    assert!(took < PATIENCE);
    host.wait_for_log("naming the idle timeout", |l| l.contains("idle timeout (1s) waiting to send"));
}

#[test]
fn recv_of_4_gib_is_capped_at_64_kib() {
    let host = Host::serve("hostile", &[]);
    let addr = host.addr;
    let hostile = std::thread::spawn(move || {
        // The trigger and far more than 64 KiB at once: the guest's first
        // recv takes at most 1024 bytes, the trigger word and some of the
        // rest, and its 4 GiB recv finds the rest waiting.
        let mut s = connect(addr);
        let mut request = b"recv4g ".to_vec();
        request.resize(200 * 1024, b'y');
        s.write_all(&request).unwrap();
        String::from_utf8(read_to_end(&mut s)).unwrap()
    });
    assert_eq!(concurrent_seed_exchanges(addr, 50), 50, "every good exchange succeeds");
    let reply = hostile.join().unwrap();
    let got: usize = reply
        .trim()
        .strip_prefix("HELLO,WORLDrecv returned ")
        .and_then(|r| r.strip_suffix(" bytes"))
        .unwrap_or_else(|| panic!("unexpected reply {reply:?}"))
        .parse()
        .unwrap();
    assert!(got > 0 && got <= 65536, "recv returned {got} bytes");
}

#[test]
fn endless_logging_is_cut_at_the_log_budget() {
    let host = Host::serve("hostile", &["--max-log-lines", "100", "--cpu-timeout", "500ms"]);
    let (reply, _) = hostile_beside_good(&host, b"logflood", true);
    assert_eq!(reply, b"HELLO,WORLD");
    host.wait_for_log("closing it", |l| l.contains("CPU time limit reached"));
    assert_eq!(host.count_log("flooding the log"), 100, "exactly the budget is written");
    assert_eq!(host.count_log("guest log limit reached"), 1, "one notice");
}

#[test]
fn log_enabled_follows_the_log_level_and_the_budget() {
    for (flags, expected, written) in [
        (&["--max-log-lines", "5"][..], "debug 0 info 1 warn 1 lines 5", 5),
        (&["--max-log-lines", "5", "--log-level", "debug"][..], "debug 1 info 1 warn 1 lines 5", 5),
        (&["--max-log-lines", "5", "--log-level", "warn"][..], "debug 0 info 0 warn 1 lines 0", 0),
    ] {
        let host = Host::serve("hostile", flags);
        let (reply, _) = hostile_beside_good(&host, b"logwhile", true);
        assert_eq!(String::from_utf8_lossy(&reply), format!("HELLO,WORLD{expected}\n"), "{flags:?}");
        if written > 0 {
            // The notice follows the guest's last line in the log.
            host.wait_for_log("the budget notice", |l| l.contains("guest log limit reached"));
        }
        assert_eq!(host.count_log("logging while enabled"), written, "{flags:?}");
    }
}

#[test]
fn dialing_a_forbidden_address_is_denied_and_logged() {
    let host = Host::serve("hostile", &[]);
    let (reply, _) = hostile_beside_good(&host, b"dial 127.0.0.1:9", true);
    assert_eq!(reply, b"HELLO,WORLDdial: denied\n");
    host.wait_for_log("naming the denied address", |l| l.contains("dial to 127.0.0.1:9 denied"));
}

/// A loopback listener that accepts and holds connections until it is told
/// to stop (or its stopper is dropped, or PATIENCE is up); it then accepts
/// what is still queued and returns how many connections it got.
struct HoldingListener {
    addr: SocketAddr,
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<usize>,
}

impl HoldingListener {
    fn start() -> HoldingListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let mut held = Vec::new();
            let start = Instant::now();
            let mut stopping = false;
            loop {
                stopping = stopping
                    || !matches!(stopped.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty))
                    || start.elapsed() > PATIENCE;
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) if stopping => return held.len(),
                    // Poll interval.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HoldingListener { addr, stop, handle }
    }

    /// Stops the listener: the connections it accepted, including those
    /// still queued.
    fn accepted(self) -> usize {
        let _ = self.stop.send(());
        self.handle.join().unwrap()
    }
}

#[test]
fn hoarding_dialed_connections_stops_at_the_resource_limit() {
    let listener = HoldingListener::start();
    let target = listener.addr;
    let allow = target.to_string();
    let host = Host::serve("hostile", &["--allow-connect", &allow, "--max-resources", "16"]);
    let trigger: &'static [u8] = Box::leak(format!("dialmany {target}").into_bytes().into_boxed_slice());
    let (reply, _) = hostile_beside_good(&host, trigger, true);
    assert_eq!(reply, b"HELLO,WORLDdialmany: resource-limit after 15\n");
    host.wait_for_log("naming the resource limit", |l| l.contains("resource limit: guest holds 15 connections"));
    // The guest has returned, so every dial it made is in the listener's
    // queue or accepted.
    assert_eq!(listener.accepted(), 15, "no connection was opened past the limit");
}

#[test]
fn allowed_dial_succeeds() {
    let listener = HoldingListener::start();
    let target = listener.addr;
    let allow = target.to_string();
    let host = Host::serve("hostile", &["--allow-connect", &allow]);
    let mut s = connect(host.addr);
    s.write_all(format!("dial {target}").as_bytes()).unwrap();
    assert_eq!(read_to_end(&mut s), b"HELLO,WORLDdial: connected\n");
    assert_eq!(listener.accepted(), 1, "the guest's connection reached the target");
}

#[test]
fn idle_peer_is_closed_after_the_idle_timeout() {
    let host = Host::serve("hello", &["--idle-timeout", "1s"]);
    let mut silent = connect(host.addr);
    let start = Instant::now();
    assert_eq!(read_to_end(&mut silent), b"HELLO,WORLD");
    assert!(start.elapsed() >= Duration::from_millis(900), "not closed before the timeout");
    host.wait_for_log("naming the idle timeout", |l| l.contains("idle timeout (1s) waiting to recv"));
}

#[test]
fn connection_lifetime_is_bounded() {
    let host = Host::serve("hello", &["--max-lifetime", "1s"]);
    let mut silent = connect(host.addr);
    assert_eq!(read_to_end(&mut silent), b"HELLO,WORLD");
    host.wait_for_log("naming the lifetime", |l| l.contains("connection lifetime (1s) reached"));
}

#[test]
fn bytes_in_quota_stops_an_echo() {
    let host = Host::serve("echo", &["--max-bytes-in", "1000"]);
    let mut s = connect(host.addr);
    s.write_all(&[b'z'; 5000]).unwrap();
    let echoed = read_to_end(&mut s);
    assert_eq!(echoed.len(), 1000, "only the quota is received and echoed");
    host.wait_for_log("naming the quota", |l| l.contains("--max-bytes-in 1000 received"));
}

#[test]
fn bytes_out_quota_refuses_a_send() {
    // HELLO,WORLD is 11 bytes.
    let host = Host::serve("hello", &["--max-bytes-out", "10"]);
    let mut s = connect(host.addr);
    assert_eq!(read_to_end(&mut s), b"");
    host.wait_for_log("naming the quota", |l| l.contains("would pass --max-bytes-out 10"));
    host.wait_for_log("with the guest's error", |l| l.contains("send failed: quota-exceeded"));
}

#[test]
fn max_connections_holds_the_rest_in_the_backlog() {
    let host = Host::serve("hello", &["--max-connections", "2"]);
    let mut first = connect(host.addr);
    let mut second = connect(host.addr);
    let mut buf = [0u8; 11];
    first.read_exact(&mut buf).unwrap();
    second.read_exact(&mut buf).unwrap();
    // Both slots are busy: a third client connects (kernel backlog) but is
    // not served.
    let mut third = connect(host.addr);
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let waiting = third.read(&mut buf);
    assert!(waiting.is_err(), "third connection must wait, got {waiting:?}");
    // Finishing one exchange frees a slot and the third is served.
    first.write_all(b"this is client...").unwrap();
    assert_eq!(read_to_end(&mut first), b"", "first exchange completes and closes");
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    third.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HELLO,WORLD");
    assert!(!host.log().iter().any(|l| l.contains("ERROR")), "no instantiation failures");
}

#[test]
fn graceful_shutdown_finishes_in_flight_exchanges() {
    let host = Host::serve("hello", &[]);
    let addr = host.addr;
    let mut in_flight = connect(addr);
    let mut buf = [0u8; 11];
    in_flight.read_exact(&mut buf).unwrap();
    signal(host.pid(), "TERM");
    host.wait_for_log("stopping accepting", |l| l.contains("SIGTERM: no longer accepting"));
    // The listener is closed: new connections are refused.
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(start.elapsed() < PATIENCE, "listener still open after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The in-flight exchange still completes.
    in_flight.write_all(b"this is client...").unwrap();
    assert_eq!(read_to_end(&mut in_flight), b"");
    host.wait_for_log("with the in-flight data", |l| l.contains("this is client..."));
    // With nothing left open the host exits by itself.
    let status = host.wait_exit();
    assert!(status.success(), "exit 0 after a graceful shutdown: {status:?}");
}

#[test]
fn shutdown_timeout_closes_what_is_left() {
    let host = Host::serve("hello", &["--shutdown-timeout", "1s"]);
    let mut silent = connect(host.addr);
    let mut buf = [0u8; 11];
    silent.read_exact(&mut buf).unwrap();
    signal(host.pid(), "INT");
    host.wait_for_log("naming the timeout", |l| l.contains("shutdown timeout: closing 1 connection"));
    assert_eq!(read_to_end(&mut silent), b"");
    assert!(host.wait_exit().success());
}

#[test]
fn guests_needing_filesystem_or_sockets_are_refused() {
    for (name, import) in [("wants_fs", "wasi:filesystem/"), ("wants_net", "wasi:sockets/")] {
        let path = guest(name);
        let out = run_host(&["run", path.to_str().unwrap(), "--port", "0"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{name}.wasm imports `{import}")), "{err}");
        let out = run_host(&["inspect", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("REFUSED"), "{text}");
        assert!(text.contains("verdict: the host would refuse this guest"), "{text}");
    }
    // An explicit grant loads it, with nothing behind the interface.
    let host = Host::serve("wants_fs", &["--grant", "wasi:filesystem"]);
    let mut s = connect(host.addr);
    assert_eq!(read_to_end(&mut s), b"", "no file can be read");
    host.wait_for_log("with the guest's failure", |l| l.contains("returned an error"));
}

#[test]
fn load_of_20000_exchanges_leaves_no_descriptors_or_memory_behind() {
    let host = Host::serve("hello", &["--log-level", "warn"]);
    let addr = host.addr;
    let clients = 500;
    // Warm up at the same concurrency: instance pool slots keep the pages
    // their guests dirtied, so resident memory settles at the highest
    // concurrency seen. What must not happen is growth from one load to the
    // next.
    assert_eq!(concurrent_seed_exchanges(addr, clients), clients);
    host.wait_connections_closed();
    let fds_before = fd_count(host.pid());
    let rss_before = rss_kib(host.pid());
    let per_client = 40;
    let deadline = Instant::now() + Duration::from_secs(240);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut failures = 0;
                for _ in 0..per_client {
                    if Instant::now() > deadline {
                        failures += 1;
                        continue;
                    }
                    let ok = std::panic::catch_unwind(|| seed_exchange(addr).0 == b"HELLO,WORLD").unwrap_or(false);
                    if !ok {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    let failures: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(failures, 0, "all {} exchanges succeed", clients * per_client);
    // Connections close asynchronously: wait until the host holds none.
    host.wait_connections_closed();
    assert_eq!(fd_count(host.pid()), fds_before, "no file descriptors left behind");
    let rss_after = rss_kib(host.pid());
    assert!(
        rss_after < rss_before + rss_before / 10 + 8 * 1024,
        "resident memory back near the start: {rss_before} KiB before, {rss_after} KiB after"
    );
    assert!(host.log().iter().all(|l| !l.contains("ERROR")), "no errors logged");
}

/// Sends `count` and returns the guest's count of connections served by
/// its instance.
fn served_count(addr: SocketAddr) -> u32 {
    let mut s = connect(addr);
    s.write_all(b"count").unwrap();
    let reply = String::from_utf8(read_to_end(&mut s)).unwrap();
    reply
        .strip_prefix("HELLO,WORLDcount ")
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {reply:?}"))
}

#[test]
fn every_connection_gets_a_fresh_instance_by_default() {
    let host = Host::serve("hostile", &[]);
    for _ in 0..5 {
        assert_eq!(served_count(host.addr), 1, "no state survives from one connection to the next");
    }
}

#[test]
fn opt_in_instance_reuse_serves_several_connections_per_instance() {
    // The host takes an instance back once its guest has returned, which is
    // after the client sees the connection close; a client reconnecting
    // before that would get a fresh instance. With one connection at a time,
    // the host accepts the next connection only once the previous one is
    // over, instance taken back: the sequence is deterministic.
    let host = Host::serve("hostile", &["--connections-per-instance", "3", "--max-connections", "1"]);
    let counts: Vec<u32> = (0..6).map(|_| served_count(host.addr)).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3], "an instance serves 3 connections, then a fresh one takes over");
    // An instance that traps is never reused.
    let mut s = connect(host.addr);
    s.write_all(b"panic").unwrap();
    assert_eq!(read_to_end(&mut s), b"HELLO,WORLD");
    assert_eq!(served_count(host.addr), 1);
    // Nor one that kept a connection: the host closes what it kept. (The
    // instance that just counted 1 serves `keep`; were it reused after, the
    // next count would be 2.)
    let mut s = connect(host.addr);
    s.write_all(b"keep").unwrap();
    assert_eq!(read_to_end(&mut s), b"HELLO,WORLD", "the kept connection is closed");
    assert_eq!(served_count(host.addr), 1);
}

#[test]
fn busy_bulk_connections_are_not_charged_for_each_others_time() {
    // Eight echo connections moving 64 MiB each share one executor: each
    // waits on the others far longer than its own guest computes (a few ms
    // of copying), and none of that waiting may count against its CPU
    // budget, here 100ms.
    let host = Host::serve("echo", &["--cpu-timeout", "100ms"]);
    let addr = host.addr;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let mut reader = s.try_clone().unwrap();
                let total = 64 << 20;
                let sender = std::thread::spawn(move || {
                    let chunk = vec![b'e'; 64 * 1024];
                    for _ in 0..total / chunk.len() {
                        s.write_all(&chunk).unwrap();
                    }
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let echoed = read_to_end(&mut reader).len();
                sender.join().unwrap();
                echoed
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 64 << 20, "every byte echoed");
    }
    assert!(!host.log().iter().any(|l| l.contains("CPU time limit")), "no connection interrupted");
}

#[test]
fn running_out_of_file_descriptors_backs_off_and_recovers() {
    // The host gets few descriptors; the clients hold more connections open
    // than it can accept, so accepts fail with EMFILE until they close.
    let mut command = Command::new("prlimit");
    command
        .env("NETPLUG_CACHE_DIR", cache_dir())
        .arg("--nofile=64:64")
        .arg(host_bin())
        .arg("run")
        .arg(guest("hello"))
        .args(["--port", "0"]);
    let host = Host::start(command);
    let held: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut stream = connect(host.addr);
            // Accepted or not, the kernel completed the handshake.
            stream.write_all(b"").unwrap();
            stream
        })
        .collect();
    host.wait_for_log("the first failure", |l| l.contains("accept failed") && l.contains("retrying with backoff"));
    // The clients give up: the guests they reached finish, the host gets
    // its descriptors back, and accepts the ones still queued.
    drop(held);
    host.wait_for_log("the recovery", |l| l.contains("accepting again after"));
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD", "served again");
    // One line when an episode starts and one when it ends, however many
    // accepts failed in between (the queued clients may start a second
    // short episode as they are accepted).
    let (failed, recovered) = (host.count_log("accept failed"), host.count_log("accepting again after"));
    assert!(failed <= recovered + 1 && failed <= 3, "{failed} failure lines, {recovered} recoveries");
}

/// A guest that dials a denied 64 KiB address 10,000 times gets `denied`
/// each time, and the host logs a few clipped warnings, not 10,000 lines of
/// 64 KiB.
#[test]
fn repeated_refusals_do_not_flood_the_host_log() {
    let host = Host::serve("hostile", &[]);
    let (reply, _) = hostile_beside_good(&host, b"dialdenied", true);
    assert_eq!(reply, b"HELLO,WORLDdialdenied: 10000\n");
    let denied =
        host.log().into_iter().filter(|l| l.contains("denied: not allowed by --allow-connect")).collect::<Vec<_>>();
    assert!(!denied.is_empty() && denied.len() <= 8, "{} warnings", denied.len());
    assert!(denied.iter().all(|l| l.len() < 1024), "the address is clipped: {}", denied[0].len());
    host.wait_for_log("saying the rest are not logged", |l| {
        l.contains("further refusals of this connection are not logged")
    });
}

/// 8 MiB of empty lines written to stdout at once cost the host their
/// length (lines past the budget are counted and dropped), not hours.
#[test]
fn a_write_of_many_empty_lines_is_cheap() {
    let host = Host::serve("hostile", &[]);
    let (reply, took) = hostile_beside_good(&host, b"newlines", true);
    assert_eq!(reply, b"HELLO,WORLDnewlines: true\n");
    assert!(took < PATIENCE, "took {took:?}");
    host.wait_for_log("the log limit", |l| l.contains("guest log limit reached"));
}
