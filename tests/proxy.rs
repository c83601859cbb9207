//! The `proxy` guest relays each connection to its configured upstream
//! through `dialer`, both ways at once with the host's `splice`, passing
//! half-closes on: in front of another host serving `echo`, in front of a
//! real `redis-server`, and when the upstream is not allowed or refuses;
//! and `splice`'s own limits (the byte quotas, the idle timeout, the
//! lifetime, eviction at `--max-connections`, shutdown).
//! The `relay` test guest does the same copy in the guest (`wait`,
//! `try-recv`, `try-send`) and runs the copying tests too; the `hostile`
//! test guest drives `wait` and `try-send` to their limits: a wait that
//! asks nothing, the idle timeout, the out quota.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes that are not periodic in any buffer size the hosts use, made in
/// pieces: the writer and the checker each run their own copy.
struct Pattern(u32);

impl Pattern {
    fn new() -> Self {
        Pattern(0x9e37_79b9)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            *byte = self.0 as u8;
        }
    }
}

/// A host serving the proxy guest in front of `upstream`, which it may dial.
fn proxy_for(upstream: SocketAddr, extra: &[&str]) -> Host {
    relay_with("proxy", upstream, extra)
}

/// A host serving `guest` (`proxy`, or the `relay` test guest) in front of
/// `upstream`, which it may dial.
fn relay_with(guest: &str, upstream: SocketAddr, extra: &[&str]) -> Host {
    let config = format!("upstream={upstream}");
    let allow = upstream.to_string();
    let mut args = vec!["--config", &config, "--allow-connect", &allow];
    args.extend_from_slice(extra);
    Host::serve(guest, &args)
}

/// The guests that relay: the proxy on `splice`, and the `relay` test
/// guest on `wait`, `try-recv` and `try-send`.
const RELAYS: [&str; 2] = ["proxy", "relay"];

/// A port on loopback that nothing listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn sixty_four_mib_each_way_at_once_come_back_intact() {
    for guest in RELAYS {
        sixty_four_mib_each_way(guest);
    }
}

fn sixty_four_mib_each_way(guest: &str) {
    const TOTAL: usize = 64 * 1024 * 1024;
    const PIECE: usize = 1024 * 1024;
    let echo = Host::serve("echo", &[]);
    let proxy = relay_with(guest, echo.addr, &[]);
    let mut stream = connect(proxy.addr);
    let mut writer = stream.try_clone().unwrap();
    // Writing and reading at once: the echo sends back while the client is
    // still sending, so the proxy must move both directions together.
    let sender = std::thread::spawn(move || {
        let mut pattern = Pattern::new();
        let mut piece = vec![0u8; PIECE];
        for _ in 0..TOTAL / PIECE {
            pattern.fill(&mut piece);
            writer.write_all(&piece).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut expected = Pattern::new();
    let mut want = vec![0u8; PIECE];
    let mut got = vec![0u8; PIECE];
    let mut received = 0;
    while received < TOTAL {
        let n = stream.read(&mut got).unwrap();
        assert!(n > 0, "end of stream after {received} of {TOTAL} bytes");
        expected.fill(&mut want[..n]);
        assert!(got[..n] == want[..n], "bytes {received}..{} differ from those sent", received + n);
        received += n;
    }
    // The client's half-close reached the echo through the proxy, and the
    // echo's end came back: end of stream, nothing more.
    assert_eq!(stream.read(&mut got).unwrap(), 0, "end of stream after the echoed bytes");
    sender.join().unwrap();
    let line = proxy.wait_for_log("the proxy's byte counts", |l| l.contains("bytes client to upstream"));
    let each = format!("{TOTAL} bytes client to upstream, {TOTAL} bytes upstream to client");
    assert!(line.contains(&each), "{line}");
}

#[test]
fn client_half_close_gets_every_echoed_byte_then_end_of_stream() {
    for guest in RELAYS {
        client_half_close(guest);
    }
}

fn client_half_close(guest: &str) {
    let echo = Host::serve("echo", &[]);
    let proxy = relay_with(guest, echo.addr, &[]);
    let mut stream = connect(proxy.addr);
    let mut data = vec![0u8; 300_001];
    Pattern::new().fill(&mut data);
    // All written before anything is read back, then the write side shut:
    // the proxy must still deliver the rest and then the end of stream.
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let got = read_to_end(&mut stream);
    assert_eq!(got.len(), data.len(), "echoed length");
    assert!(got == data, "echoed bytes differ from those sent");
    proxy.wait_for_log("the proxy's byte counts", |l| {
        l.contains("300001 bytes client to upstream, 300001 bytes upstream to client; both directions ended")
    });
}

#[test]
fn upstream_end_reaches_the_client() {
    for guest in RELAYS {
        upstream_end(guest);
    }
}

fn upstream_end(guest: &str) {
    // The seed server sends first, reads once and closes: its end of stream
    // must reach the client, which then closes its side.
    let hello = Host::serve("hello", &[]);
    let proxy = relay_with(guest, hello.addr, &[]);
    let mut stream = connect(proxy.addr);
    let mut greeting = [0u8; 11];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"HELLO,WORLD");
    stream.write_all(b"this is client...").unwrap();
    assert_eq!(read_to_end(&mut stream), b"", "end of stream after the upstream closed");
    drop(stream);
    hello.wait_for_log("the seed server's line", |l| l.contains("sent 17 bytes: this is client..."));
    proxy.wait_for_log("the proxy's byte counts", |l| {
        l.contains("17 bytes client to upstream, 11 bytes upstream to client; both directions ended")
    });
}

#[test]
fn a_relay_times_out_only_when_neither_side_moves() {
    for (guest, what) in [
        ("proxy", "recv or send on either spliced connection"),
        ("relay", "recv or send on any of the connections it waits on"),
    ] {
        relay_idle_timeout(guest, what);
    }
}

fn relay_idle_timeout(guest: &str, what: &str) {
    // Traffic every 400 ms keeps a relay under a 1 s idle timeout alive for
    // over 2 s, and its waits are not charged as CPU (budget 100 ms); once
    // both sides are silent for 1 s, it is closed.
    let echo = Host::serve("echo", &[]);
    let proxy = relay_with(guest, echo.addr, &["--idle-timeout", "1s", "--cpu-timeout", "100ms"]);
    let mut stream = connect(proxy.addr);
    for i in 0..6u8 {
        stream.write_all(&[b'a' + i]).unwrap();
        let mut back = [0u8; 1];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back[0], b'a' + i);
        std::thread::sleep(Duration::from_millis(400));
    }
    let quiet = Instant::now();
    assert_eq!(read_to_end(&mut stream), b"", "closed after the idle timeout");
    let waited = quiet.elapsed();
    assert!(waited < Duration::from_secs(5), "closed {waited:?} after the last byte");
    proxy.wait_for_log("the idle timeout", |l| l.contains(&format!("idle timeout (1s) waiting to {what}")));
    proxy.wait_for_log("the record", |l| l.contains("netplug::record") && l.contains("outcome=idle_timeout"));
    assert_eq!(proxy.count_log("CPU time limit"), 0, "{:?}", proxy.log());
}

#[test]
fn upstream_not_allowed_is_denied_and_the_client_closed() {
    let echo = Host::serve("echo", &[]);
    let upstream = format!("upstream={}", echo.addr);
    // Another address is allowed, not the configured upstream.
    let other = format!("127.0.0.1:{}", free_port());
    let proxy = Host::serve("proxy", &["--config", &upstream, "--allow-connect", &other]);
    let mut stream = connect(proxy.addr);
    stream.write_all(b"hello?").unwrap();
    assert_eq!(read_to_end(&mut stream), b"", "closed without a byte");
    proxy.wait_for_log("the denied dial", |l| l.contains("denied"));
    proxy.wait_for_log("the guest's error", |l| l.contains("cannot connect to upstream") && l.contains("denied"));
}

#[test]
fn upstream_refusing_closes_the_client_promptly() {
    let nothing = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = proxy_for(nothing, &[]);
    let started = Instant::now();
    let mut stream = connect(proxy.addr);
    assert_eq!(read_to_end(&mut stream), b"", "closed without a byte");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    proxy.wait_for_log("the refused dial", |l| l.contains("cannot connect to upstream") && l.contains("refused"));
}

#[test]
fn missing_upstream_configuration_names_the_key() {
    let proxy = Host::serve("proxy", &[]);
    let mut stream = connect(proxy.addr);
    assert_eq!(read_to_end(&mut stream), b"", "closed without a byte");
    proxy.wait_for_log("the missing key", |l| l.contains("missing configuration `upstream`"));
}

/// Runs a redis client tool (redis-tools) to completion, bounded by
/// `limit`; returns its stdout, failing the test on an error exit.
fn redis_tool(tool: &str, args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool} ({e}): install it with `apt-get install redis-server redis-tools`, as .ci/run does"
            )
        });
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{tool} {args:?} did not finish within {limit:?}: {}", String::from_utf8_lossy(&out.stdout));
        }
        // Poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{tool} {args:?}: {}, {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn redis_through_the_proxy() {
    if !installed(&["redis-benchmark", "redis-cli", "redis-server"]) {
        return;
    }
    let redis = RedisServer::start();
    let proxy = proxy_for(redis.addr, &["--log-level", "warn"]);
    let port = proxy.addr.port().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        redis_tool("redis-cli", &all, PATIENCE).trim().to_string()
    };
    assert_eq!(cli(&["SET", "k", "v"]), "OK");
    assert_eq!(cli(&["GET", "k"]), "v");

    let out = redis_tool(
        "redis-benchmark",
        &["-h", "127.0.0.1", "-p", &port, "-t", "ping,set,get", "-n", "2000", "-c", "16", "-q"],
        Duration::from_secs(60),
    );
    // `-q` prints the progress lines with carriage returns and one final
    // line per test.
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
        let done = format!("{test}: ");
        let line = out.split(['\r', '\n']).rfind(|l| l.starts_with(&done));
        let line = line.unwrap_or_else(|| panic!("no result for {test}: {out}"));
        assert!(line.contains("requests per second"), "{test}: {line}");
    }
    let lower = out.to_lowercase();
    assert!(!lower.contains("error"), "redis-benchmark reported errors: {out}");
    // No relay ended in a failure (their lines are warnings), and the
    // benchmark's keys really reached the server.
    assert_eq!(proxy.count_log("failed"), 0, "{:?}", proxy.log());
    assert_eq!(cli(&["GET", "k"]), "v");
    assert_eq!(
        redis_tool("redis-cli", &["-p", &redis.addr.port().to_string(), "EXISTS", "key:__rand_int__"], PATIENCE).trim(),
        "1"
    );
}

// `splice`'s own limits.

/// Writes `total` pattern bytes to `stream` from a thread, ignoring the
/// error that ends it early when the host closes the connection.
fn flood(stream: &TcpStream, total: usize) -> std::thread::JoinHandle<()> {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut piece = vec![0u8; 64 * 1024];
        let mut pattern = Pattern::new();
        for _ in 0..total / piece.len() {
            pattern.fill(&mut piece);
            if writer.write_all(&piece).is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_splice_ends_at_the_bytes_in_quota() {
    // The client sends 8 MiB through a proxy whose connections may each
    // receive 1 MiB: the splice stops there, the client sees the close
    // (after at most the 1 MiB the echo sent back), and the record says so.
    let echo = Host::serve("echo", &[]);
    let proxy = proxy_for(echo.addr, &["--max-bytes-in", "1MiB"]);
    let mut stream = connect(proxy.addr);
    let sender = flood(&stream, 8 << 20);
    let got = read_to_end(&mut stream);
    assert!(got.len() <= 1 << 20, "{} bytes back past a quota of 1 MiB in", got.len());
    sender.join().unwrap();
    proxy.wait_for_log("the quota", |l| l.contains("byte quota: --max-bytes-in 1048576 received, ending splice"));
    let line = proxy.wait_for_log("the proxy's line", |l| l.contains("bytes client to upstream"));
    assert!(line.contains("relay failed: quota-exceeded"), "{line}");
    let record = proxy.wait_for_log("the record", |l| l.contains("netplug::record"));
    assert!(record.contains("outcome=quota"), "{record}");
    let bytes_in: u64 = record.split("bytes_in=").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(bytes_in <= 1 << 20, "{record}");
}

#[test]
fn a_splice_that_moves_exactly_its_quota_ends_normally() {
    // 1 KiB up and back, then the ends: every connection received exactly
    // its quota, and nothing more arrived.
    let echo = Host::serve("echo", &[]);
    let proxy = proxy_for(echo.addr, &["--max-bytes-in", "1KiB", "--max-bytes-out", "1KiB"]);
    let mut stream = connect(proxy.addr);
    let mut data = vec![0u8; 1024];
    Pattern::new().fill(&mut data);
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut stream) == data, "the echoed bytes");
    proxy.wait_for_log("the proxy's line", |l| {
        l.contains("1024 bytes client to upstream, 1024 bytes upstream to client; both directions ended")
    });
    let record = proxy.wait_for_log("the record", |l| l.contains("netplug::record"));
    assert!(record.contains("bytes_in=1024 bytes_out=1024 outcome=ok"), "{record}");
}

#[test]
fn a_splice_ends_at_the_bytes_out_quota() {
    // Each connection may send 256 KiB: the upstream's is spent first, by
    // the client's 8 MiB going up.
    let echo = Host::serve("echo", &[]);
    let proxy = proxy_for(echo.addr, &["--max-bytes-out", "256KiB"]);
    let mut stream = connect(proxy.addr);
    let sender = flood(&stream, 8 << 20);
    let got = read_to_end(&mut stream);
    assert!(got.len() <= 256 << 10, "{} bytes back past a quota of 256 KiB out", got.len());
    sender.join().unwrap();
    proxy.wait_for_log("the quota", |l| l.contains("byte quota: --max-bytes-out 262144 sent, ending splice"));
    let line = proxy.wait_for_log("the proxy's line", |l| l.contains("bytes client to upstream"));
    assert!(line.contains("262144 bytes client to upstream"), "{line}");
    assert!(line.contains("relay failed: quota-exceeded"), "{line}");
    let record = proxy.wait_for_log("the record", |l| l.contains("netplug::record"));
    assert!(record.contains("outcome=quota"), "{record}");
}

#[test]
fn a_silent_splice_times_out_while_both_connections_stay_open() {
    // Neither the client nor the echo sends: after the idle timeout the
    // splice ends, both connections are closed, and it is not CPU time.
    let echo = Host::serve("echo", &[]);
    let proxy = proxy_for(echo.addr, &["--idle-timeout", "1s", "--cpu-timeout", "100ms"]);
    let started = Instant::now();
    let mut stream = connect(proxy.addr);
    assert_eq!(read_to_end(&mut stream), b"", "closed after the idle timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after only {took:?}");
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    proxy.wait_for_log("the idle timeout", |l| {
        l.contains("idle timeout (1s) waiting to recv or send on either spliced connection")
    });
    let line = proxy.wait_for_log("the proxy's line", |l| l.contains("bytes client to upstream"));
    assert!(line.contains("0 bytes client to upstream, 0 bytes upstream to client; relay failed: timed-out"), "{line}");
    proxy.wait_for_log("the record", |l| l.contains("netplug::record") && l.contains("outcome=idle_timeout"));
    assert_eq!(proxy.count_log("CPU time limit"), 0, "{:?}", proxy.log());
}

#[test]
fn a_busy_splice_ends_at_the_connection_lifetime() {
    // Bytes moving every 200 ms keep the idle timeout (30 s) away; the
    // lifetime (1 s) still ends the relay, both connections are closed,
    // and the record says why.
    let echo = Host::serve("echo", &[]);
    let proxy = proxy_for(echo.addr, &["--max-lifetime", "1s"]);
    let mut stream = connect(proxy.addr);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut echoed = 0;
    let mut back = [0u8; 1];
    // Bounded: the lifetime ends it after about 5 rounds; 50 would be 10 s.
    for i in 0..50u8 {
        if stream.write_all(&[i]).is_err() || !matches!(stream.read(&mut back), Ok(1)) {
            break;
        }
        assert_eq!(back[0], i);
        echoed += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    assert!(echoed >= 2, "the relay echoed {echoed} bytes before it ended");
    assert!(took >= Duration::from_millis(900), "ended after only {took:?}");
    assert!(took < Duration::from_secs(8), "ended after {took:?}: the lifetime did not end it");
    proxy.wait_for_log("the lifetime", |l| {
        l.contains("connection lifetime (1s) reached while waiting to recv or send on either spliced connection")
    });
    proxy.wait_for_log("the record", |l| l.contains("netplug::record") && l.contains("outcome=lifetime"));
}

#[test]
fn a_silent_splice_makes_room_for_a_new_connection() {
    // At --max-connections (1), a new client does not wait behind a relay
    // that has moved nothing for over 1 s: that splice is ended (evicted)
    // and the new client is relayed.
    let echo = Host::serve("echo", &[]);
    let proxy = proxy_for(echo.addr, &["--max-connections", "1"]);
    let mut idle = connect(proxy.addr);
    idle.write_all(b"a").unwrap();
    let mut back = [0u8; 1];
    idle.read_exact(&mut back).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut fresh = connect(proxy.addr);
    fresh.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    fresh.write_all(b"b").unwrap();
    fresh.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"b", "the new client is relayed");
    assert_eq!(read_to_end(&mut idle), b"", "the silent relay was closed");
    proxy.wait_for_log("the eviction", |l| {
        l.contains("closed to admit a new connection while waiting to recv or send on either spliced connection")
    });
    proxy.wait_for_log("the record", |l| l.contains("netplug::record") && l.contains("outcome=overload"));
}

#[test]
fn shutdown_mid_splice_ends_within_the_shutdown_timeout() {
    // A splice is never at a request boundary: at SIGTERM it goes on, and
    // the shutdown timeout (1 s) closes it.
    let echo = Host::serve("echo", &[]);
    let proxy = proxy_for(echo.addr, &["--shutdown-timeout", "1s"]);
    let mut stream = connect(proxy.addr);
    stream.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    let started = Instant::now();
    signal(proxy.pid(), "TERM");
    proxy.wait_for_log("the shutdown", |l| l.contains("SIGTERM: no longer accepting"));
    // Still relaying until the timeout.
    stream.write_all(b"pong").unwrap();
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"pong");
    proxy.wait_for_log("the shutdown timeout", |l| l.contains("shutdown timeout: closing 1 connection"));
    assert_eq!(read_to_end(&mut stream), b"");
    let status = proxy.wait_exit();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "exited {took:?} after the signal");
}

#[test]
fn a_splice_refuses_a_connection_with_itself_or_one_shut_for_writing() {
    let echo = Host::serve("echo", &[]);
    let allow = echo.addr.to_string();
    let host = Host::serve("hostile", &["--allow-connect", &allow]);
    let mut stream = hostile_trigger(&host, format!("splicebad {allow}").as_bytes());
    assert_eq!(read_to_end(&mut stream), b"splicebad: itself invalid-argument, shut closed\n");
}

// The primitives the relay guest is built on, driven by the `hostile` test
// guest.

/// Starts a hostile exchange: reads the greeting and sends `trigger`.
fn hostile_trigger(host: &Host, trigger: &[u8]) -> TcpStream {
    let mut stream = connect(host.addr);
    let mut greeting = [0u8; 11];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"HELLO,WORLD");
    stream.write_all(trigger).unwrap();
    stream
}

#[test]
fn a_wait_that_asks_nothing_is_an_invalid_argument() {
    let host = Host::serve("hostile", &[]);
    let mut stream = hostile_trigger(&host, b"waitnothing");
    assert_eq!(read_to_end(&mut stream), b"waitnothing: invalid-argument\n");
}

#[test]
fn a_wait_for_room_times_out_and_the_connection_stays_failed() {
    // The client never reads: the guest's `try-send`s fill the socket, its
    // `wait` for room runs out after the idle timeout, not charged as CPU,
    // and the next `try-send` fails at once with the same code.
    let host = Host::serve("hostile", &["--idle-timeout", "1s", "--cpu-timeout", "500ms"]);
    let _stream = hostile_trigger(&host, b"tryflood");
    host.wait_for_log("the guest's outcome", |l| l.contains("tryflood: wait timed-out, then try-send timed-out"));
    assert!(
        host.count_log("idle timeout (1s) waiting to recv or send on any of the connections it waits on") == 1,
        "{:?}",
        host.log()
    );
    assert_eq!(host.count_log("CPU time limit"), 0, "{:?}", host.log());
}

#[test]
fn try_send_keeps_to_the_bytes_out_quota() {
    let host = Host::serve("hostile", &["--max-bytes-out", "1MiB"]);
    let mut stream = hostile_trigger(&host, b"tryflood");
    let got = read_to_end(&mut stream);
    assert!(got.len() <= 1024 * 1024 + 1, "{} bytes sent past a quota of 1 MiB", got.len());
    host.wait_for_log("the guest's outcome", |l| l.contains("tryflood: try-send quota-exceeded"));
}
