//! The resp guest, a Redis-compatible server on the shared store, driven by
//! real Redis clients: `redis-cli`, `redis-benchmark` (plain and
//! pipelined), the Python `redis` package (RESP2 and RESP3, a 1 MiB binary
//! value); its replies compared byte for byte with a real `redis-server`'s
//! for the same requests (errors, inline commands, pipelined batches,
//! protocol errors included); `INCR` from 32 connections at once, exact;
//! and the read-then-write commands (`APPEND`, `SETNX`, `DECR`, a counter
//! with a TTL), compare-and-swap loops, exact from 16 connections at once
//! on both stores.
//! The Redis tools are required: `.ci/run` installs them.

use crate::support::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const GUEST: &str = "resp";

fn serve() -> Host {
    Host::serve(GUEST, &["--kv", "memory"])
}

/// Runs `command` to completion, bounded by `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{command:?} did not finish within {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `redis-cli -p PORT ARGS...`: its output, trimmed.
fn cli(addr: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()]).args(args);
    let out = run_bounded(command, PATIENCE);
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_string()
}

#[test]
fn redis_cli_commands() {
    if !installed(&["redis-cli"]) {
        return;
    }
    let host = serve();
    let addr = host.addr;
    assert_eq!(cli(addr, &["PING"]), "PONG");
    assert_eq!(cli(addr, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(addr, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(addr, &["GET", "nothing"]), "");
    assert_eq!(cli(addr, &["INCR", "visits"]), "1");
    assert_eq!(cli(addr, &["INCRBY", "visits", "9"]), "10");
    assert_eq!(cli(addr, &["DECR", "visits"]), "9");
    assert_eq!(cli(addr, &["MSET", "a", "1", "b", "2"]), "OK");
    // redis-cli prints a nil as an empty line (trimmed here).
    assert_eq!(cli(addr, &["MGET", "a", "b", "c"]), "1\n2");
    assert_eq!(cli(addr, &["MGET", "c", "a"]), "\n1");
    assert_eq!(cli(addr, &["EXISTS", "a", "b", "c"]), "2");
    assert_eq!(cli(addr, &["DEL", "a", "b", "c"]), "2");
    assert_eq!(cli(addr, &["TTL", "greeting"]), "-1");
    assert_eq!(cli(addr, &["EXPIRE", "greeting", "100"]), "1");
    assert_eq!(cli(addr, &["TTL", "greeting"]), "100");
    assert_eq!(cli(addr, &["TTL", "a"]), "-2");
    assert_eq!(cli(addr, &["PEXPIRE", "greeting", "1"]), "1");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(cli(addr, &["GET", "greeting"]), "");
    assert_eq!(cli(addr, &["TTL", "greeting"]), "-2");
    assert_eq!(cli(addr, &["INCR", "visits", "extra"]), "ERR wrong number of arguments for 'incr' command");
    assert_eq!(cli(addr, &["NOSUCH", "x"]), "ERR unknown command 'NOSUCH', with args beginning with: 'x'");
    // Interactive redis-cli (commands on stdin) starts with COMMAND DOCS.
    let mut command = Command::new("redis-cli");
    command.args(["-p", &addr.port().to_string()]).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"SET k v\nGET k\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\nv\n");
}

/// `redis-benchmark -q` output: each test's name and requests per second;
/// fails on any error it reports.
fn benchmark(addr: SocketAddr, extra: &[&str]) -> Vec<(String, f64)> {
    let mut command = Command::new("redis-benchmark");
    command
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", "ping,set,get,incr", "-n", "2000", "-c", "32", "-q"])
        .args(extra);
    let out = run_bounded(command, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-benchmark {extra:?} failed: {stdout}\n{stderr}");
    for text in [&stdout[..], &stderr[..]] {
        assert!(!text.contains("rror") && !text.contains("ERR"), "redis-benchmark {extra:?} saw errors:\n{text}");
    }
    // Final lines: `SET: 15503.88 requests per second, p50=1.111 msec`.
    stdout
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(": ")?;
            let rps = rest.strip_suffix(" msec").and(rest.split_once(" requests per second"))?.0;
            Some((name.trim().to_string(), rps.parse().ok()?))
        })
        .collect()
}

#[test]
fn redis_benchmark_runs_without_errors() {
    if !installed(&["redis-benchmark", "redis-cli"]) {
        return;
    }
    let host = serve();
    for extra in [&[][..], &["-P", "16"]] {
        let results = benchmark(host.addr, extra);
        let names: Vec<&str> = results.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"],
            "redis-benchmark {extra:?}: {results:?}"
        );
        assert!(results.iter().all(|(_, rps)| *rps > 0.0), "{results:?}");
    }
    // Its INCR test increments one key 2000 times per run, from 32 clients.
    assert_eq!(cli(host.addr, &["GET", "counter:__rand_int__"]), "4000");
    let log = host.log().join("\n");
    assert!(!log.contains("ERROR") && !log.contains("trap"), "host log:\n{log}");
}

#[test]
fn python_redis_client() {
    let host = serve();
    let out = run_bounded(
        {
            let mut command = Command::new("python3");
            command.arg(python_script("resp_client.py")).arg(host.addr.port().to_string());
            command
        },
        PATIENCE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'redis'"),
        "the Python `redis` package is missing: run the tests with `make test`, which installs it into target/venv"
    );
    assert!(out.status.success(), "resp_client.py failed:\n{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// What a server answers to `request` on a connection of its own: every
/// byte up to the reply to a trailing `ECHO` marker, or to the close when
/// the request ends the connection (`QUIT`, a protocol error).
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    const MARKER: &[u8] = b"*2\r\n$4\r\nECHO\r\n$9\r\n--the-end\r\n";
    const MARKER_REPLY: &[u8] = b"$9\r\n--the-end\r\n";
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    stream.write_all(MARKER).unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if reply.ends_with(MARKER_REPLY) {
            reply.truncate(reply.len() - MARKER_REPLY.len());
            return reply;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return reply,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return reply,
            Err(e) => panic!("read from {addr} failed after {} bytes: {e}", reply.len()),
        }
    }
}

/// A multibulk request.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Requests whose replies redis-server and resp.wasm must agree on, byte for
/// byte, run in order on fresh connections (each starts from the keys the
/// ones before left).
fn compatibility_cases() -> Vec<(&'static str, Vec<u8>)> {
    let long = "x".repeat(100);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("inline ping", b"PING\r\nping hello\r\nPING\n".to_vec()),
        ("set and get", [command(&[b"SET", b"k", b"v"]), command(&[b"GET", b"k"]), command(&[b"GET", b"none"])].concat()),
        ("unknown command", [command(&[b"foo", b"a", b"b"]), command(&[b"FOO"])].concat()),
        ("unknown command, long args", command(&[b"nosuch", long.as_bytes(), long.as_bytes(), b"c"])),
        ("unknown command, CR LF in args", command(&[b"bad\r\ncmd", b"a\nb"])),
        (
            "wrong arity",
            [
                command(&[b"GET"]),
                command(&[b"get", b"a", b"b"]),
                command(&[b"SET", b"k"]),
                command(&[b"PING", b"a", b"b"]),
                command(&[b"MSET", b"a"]),
                command(&[b"MSET", b"a", b"1", b"b"]),
                command(&[b"INCR"]),
                command(&[b"ECHO"]),
            ]
            .concat(),
        ),
        (
            "counters",
            b"incr c\r\nincrby c 41\r\ndecr c\r\ndecrby c 50\r\nincr c\r\nget c\r\nincrby c abc\r\nincrby c 1.5\r\n\
              set big 9223372036854775806\r\nincr big\r\nincr big\r\nget big\r\ndecrby big -9223372036854775808\r\n\
              set neg -9223372036854775807\r\ndecr neg\r\ndecr neg\r\n"
                .to_vec(),
        ),
        (
            "counters on strings",
            b"incr k\r\nset z 007\r\nincr z\r\nset p +1\r\nincr p\r\nset m -0\r\nincr m\r\nset s \" 1\"\r\nincr s\r\n\
              set u 18446744073709551615\r\nincr u\r\nset e \"\"\r\nincr e\r\nget z\r\n"
                .to_vec(),
        ),
        (
            "set options",
            b"set k v NX\r\nset k w XX GET\r\nset q v XX\r\nset k v EX 10 PX 10\r\nset k v EX abc\r\nset k v EX 0\r\n\
              set k v PX -5\r\nset k v EX 99999999999999999\r\nset k v NX XX\r\nset k v foo\r\nset k v EX\r\n\
              set k v KEEPTTL EX 5\r\nset k v NX GET\r\nset fresh v NX GET\r\nset k v2 GET\r\nset k v3 KEEPTTL\r\n\
              setnx k z\r\nsetnx z2 z\r\ngetset k n\r\ngetset none2 n\r\nget k\r\nsetex k 0 v\r\nsetex k abc v\r\n\
              setex k 100 v\r\nttl k\r\npsetex k -1 v\r\n"
                .to_vec(),
        ),
        (
            "strings",
            b"set s hello\r\nappend s \" world\"\r\nappend new abc\r\nstrlen s\r\nstrlen nothing\r\nget s\r\n\
              mset a 1 b 2 c 3\r\nmget a b nothing c\r\nexists a b a nothing\r\ndel a nothing b\r\nexists a b c\r\n"
                .to_vec(),
        ),
        (
            "expiry",
            b"set t v\r\nttl t\r\nexpire t 100\r\nttl t\r\nexpire t abc\r\nexpire t 10 nx xx\r\nexpire t 10 gt lt\r\n\
              expire t 10 foo\r\nexpire t 9999999999999999\r\nexpire t 200 nx\r\nexpire t 200 xx\r\nttl t\r\n\
              expire t 100 gt\r\nexpire t 50 lt\r\nttl t\r\npersist t\r\npersist t\r\nttl t\r\nexpire t 100 lt\r\n\
              ttl t\r\nexpire missing 10\r\nttl missing\r\nexpire t -1\r\nexists t\r\nttl t\r\npexpire t 100\r\n"
                .to_vec(),
        ),
        (
            "select",
            b"select 0\r\nselect 16\r\nselect -1\r\nselect x\r\nselect 99999999999999\r\nset in0 v\r\nselect 1\r\n\
              get in0\r\nselect 0\r\nget in0\r\n"
                .to_vec(),
        ),
        (
            "server commands",
            b"config get save\r\nconfig get appendonly\r\nCONFIG GET nonexistent\r\nconfig\r\nconfig get\r\n\
              config foo\r\ncommand foo\r\nclient foo\r\nclient setname x\r\n"
                .to_vec(),
        ),
        (
            "inline quoting",
            b"set \"a b\" \"x\\x41y\\n\"\r\nget \"a b\"\r\nset 'q' 'it\\'s'\r\nget q\r\n\r\n   \r\n*0\r\n*-1\r\necho \"\"\r\n".to_vec(),
        ),
        ("binary keys and values", {
            let mut request = command(&[b"SET", b"\xff\x00key", b"\x00\r\n\xff"]);
            request.extend(command(&[b"GET", b"\xff\x00key"]));
            request.extend(command(&[b"SET", b"\x00starts", b"x"]));
            request.extend(command(&[b"MGET", b"\xff\x00key", b"\x00starts", b"\x00"]));
            request.extend(command(&[b"SET", b"zero", b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00abc"]));
            request.extend(command(&[b"GET", b"zero"]));
            request.extend(command(&[b"STRLEN", b"zero"]));
            request
        }),
        ("pipelined batch", {
            let mut request = Vec::new();
            for i in 0..200 {
                request.extend(command(&[b"INCR", b"pipelined"]));
                request.extend(command(&[b"SET", format!("p{i}").as_bytes(), format!("{i}").as_bytes()]));
                request.extend(format!("GET p{i}\r\n").into_bytes());
            }
            request
        }),
        ("quit", b"SET before quit\r\nQUIT\r\nPING\r\n".to_vec()),
        ("invalid bulk length", [command(&[b"PING"]), b"*2\r\n$3\r\nGET\r\n$-5\r\n".to_vec()].concat()),
        ("bulk length not a number", b"*2\r\n$3\r\nGET\r\n$abc\r\n".to_vec()),
        ("absurd bulk length", b"*2\r\n$3\r\nGET\r\n$600000000\r\n".to_vec()),
        ("invalid multibulk length", b"*abc\r\n".to_vec()),
        ("absurd multibulk length", b"*99999999999\r\n".to_vec()),
        ("expected $", b"*2\r\n+3\r\n".to_vec()),
        ("unbalanced quotes", b"PING\r\necho \"open\r\nPING\r\n".to_vec()),
        ("closing quote then text", b"echo \"a\"b\r\n".to_vec()),
    ];
    cases.push(("after the errors", b"get k\r\nget pipelined\r\nget before\r\n".to_vec()));
    cases
}

#[test]
fn replies_match_redis_server_byte_for_byte() {
    if !installed(&["redis-server"]) {
        return;
    }
    let redis = RedisServer::start();
    let host = serve();
    let mut mismatches = Vec::new();
    for (name, request) in compatibility_cases() {
        let expected = exchange(redis.addr, &request);
        let got = exchange(host.addr, &request);
        assert!(!expected.is_empty(), "redis-server answered nothing to {name}");
        if got != expected {
            mismatches.push(format!(
                "{name}:\n  redis-server: {:?}\n  resp.wasm:    {:?}",
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(mismatches.is_empty(), "replies differ from redis-server's:\n{}", mismatches.join("\n"));
}

#[test]
fn concurrent_increments_are_exact() {
    let host = serve();
    let addr = host.addr;
    const CONNECTIONS: usize = 32;
    const EACH: usize = 200;
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                let mut seen = Vec::with_capacity(EACH);
                // Half the connections one command at a time, half in
                // pipelined batches of 20.
                let batch = if i % 2 == 0 { 1 } else { 20 };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                for _ in 0..EACH / batch {
                    stream.write_all(&command(&[b"INCR", b"hits"]).repeat(batch)).unwrap();
                    for _ in 0..batch {
                        let mut line = String::new();
                        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                        let value = line.strip_prefix(':').and_then(|v| v.trim_end().parse::<u64>().ok());
                        seen.push(value.unwrap_or_else(|| panic!("not an integer reply: {line:?}")));
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for thread in threads {
        let seen = thread.join().unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "one connection's counts go up: {seen:?}");
        all.extend(seen);
    }
    // Every increment got its own value: 1 to the total, each once.
    all.sort_unstable();
    let total = (CONNECTIONS * EACH) as u64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    assert_eq!(exchange(addr, b"GET hits\r\n"), format!("${}\r\n{total}\r\n", total.to_string().len()).into_bytes());
}

/// `connections` connections at once, each sending `request` `each` times
/// (half one at a time, half in pipelined batches of 20), each request
/// answered by one line; returns every connection's reply lines.
fn hammer(addr: SocketAddr, connections: usize, each: usize, request: &'static [u8]) -> Vec<Vec<String>> {
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let batch = if i % 2 == 0 { 1 } else { 20.min(each) };
                let mut replies = Vec::with_capacity(each);
                for _ in 0..each / batch {
                    stream.write_all(&request.repeat(batch)).unwrap();
                    for _ in 0..batch {
                        let mut line = String::new();
                        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                        replies.push(line.trim_end().to_string());
                    }
                }
                replies
            })
        })
        .collect();
    threads.into_iter().map(|thread| thread.join().unwrap()).collect()
}

/// Every read-then-write command is exact under concurrency: no `APPEND`
/// or `DECR` lost, one `SETNX` winner, a counter with a TTL keeps both its
/// count and its TTL. Sizes are smaller on the database file, where every
/// write waits for its fsync.
fn read_then_write_commands_lose_nothing(host: &Host, connections: usize, each: usize) {
    let addr = host.addr;
    let total = connections * each;
    let check = |replies: Vec<Vec<String>>, expect: &dyn Fn(&str) -> bool| {
        for reply in replies.iter().flatten() {
            assert!(expect(reply), "unexpected reply {reply:?}");
        }
        replies
    };

    check(hammer(addr, connections, each, b"APPEND log x\r\n"), &|r| r.starts_with(':'));
    assert_eq!(exchange(addr, b"STRLEN log\r\n"), format!(":{total}\r\n").into_bytes());

    let won = check(hammer(addr, connections, 1, b"SETNX lock me\r\n"), &|r| r == ":1" || r == ":0");
    assert_eq!(won.iter().flatten().filter(|r| *r == ":1").count(), 1, "{won:?}");

    check(hammer(addr, connections, each, b"DECR down\r\n"), &|r| r.starts_with(":-"));
    assert_eq!(
        exchange(addr, b"GET down\r\n"),
        format!("${}\r\n-{total}\r\n", total.to_string().len() + 1).into_bytes()
    );

    // With a TTL the counter is no plain number for the store's increment:
    // every DECR is a compare-and-swap.
    assert_eq!(exchange(addr, b"SET ttl 0 EX 1000\r\n"), b"+OK\r\n");
    check(hammer(addr, connections, each, b"DECR ttl\r\n"), &|r| r.starts_with(":-"));
    let reply = exchange(addr, b"GET ttl\r\nTTL ttl\r\n");
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with(&format!("${}\r\n-{total}\r\n:", total.to_string().len() + 1)), "{reply}");
    assert!(!reply.contains(":-"), "the TTL stays: {reply}");
}

#[test]
fn read_then_write_commands_are_exact_in_memory() {
    read_then_write_commands_lose_nothing(&serve(), 16, 200);
}

#[test]
fn read_then_write_commands_are_exact_in_a_database_file() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("netplug-resp-cas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.redb");
    let host = Host::serve(GUEST, &["--kv", path.to_str().unwrap()]);
    read_then_write_commands_lose_nothing(&host, 8, 20);
    drop(host);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_mebibyte_value_fits_the_default_limits() {
    let host = serve();
    let value: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let mut request = command(&[b"SET", b"big", &value]);
    request.extend(command(&[b"GET", b"big"]));
    request.extend(command(&[b"SET", b"big-ttl", &value, b"EX", b"100"]));
    request.extend(command(&[b"GET", b"big-ttl"]));
    let mut expected = Vec::new();
    for _ in 0..2 {
        expected.extend_from_slice(b"+OK\r\n");
        expected.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\n");
    }
    assert!(exchange(host.addr, &request) == expected, "the 1 MiB value did not come back whole");
    // A value over the store's limit is an error reply; the connection goes
    // on. A value with a TTL takes 9 bytes more.
    let host = Host::serve(GUEST, &["--kv", "memory", "--kv-max-value-size", "1KiB"]);
    let mut request = command(&[b"SET", b"big", &[b'x'; 2048]]);
    request.extend(command(&[b"SET", b"small", &[b'x'; 1024]]));
    request.extend(command(&[b"SET", b"small", &[b'x'; 1024], b"EX", b"10"]));
    request.extend(command(&[b"PING"]));
    let reply = String::from_utf8(exchange(host.addr, &request)).unwrap();
    assert_eq!(
        reply,
        "-ERR value of 2048 bytes is over the limit of 1024 (--kv-max-value-size)\r\n+OK\r\n\
         -ERR value of 1033 bytes is over the limit of 1024 (--kv-max-value-size)\r\n+PONG\r\n"
    );
}

#[test]
fn store_errors_are_error_replies() {
    // `open` and two increments use the three operations; then every
    // command that reaches the store gets the store's message, and the
    // connection goes on.
    let host = Host::serve(GUEST, &["--kv", "memory", "--kv-max-ops", "3"]);
    let reply = exchange(host.addr, b"INCR n\r\nINCR n\r\nINCR n\r\nGET n\r\nPING\r\n");
    let limit = "-ERR operation limit reached: 3 per connection (--kv-max-ops)\r\n";
    assert_eq!(String::from_utf8(reply).unwrap(), format!(":1\r\n:2\r\n{limit}{limit}+PONG\r\n"));
    // A key over the store's limit, likewise.
    let host = Host::serve(GUEST, &["--kv", "memory", "--kv-max-key-size", "8"]);
    let reply = exchange(host.addr, b"SET a-long-key v\r\nINCR a-long-key\r\nSET k v\r\nGET k\r\n");
    let reply = String::from_utf8(reply).unwrap();
    let lines: Vec<&str> = reply.split("\r\n").collect();
    assert!(lines[0].starts_with("-ERR key of 10 bytes is over the limit of 8"), "{reply}");
    assert!(lines[1].starts_with("-ERR key of 10 bytes is over the limit of 8"), "{reply}");
    assert_eq!(&lines[2..], ["+OK", "$1", "v", ""], "{reply}");
}

/// `SET key:N VALUE` from 0 until the first error reply (at most `max`):
/// the replies, the last being the error.
fn fill_until_refused(addr: SocketAddr, value: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    for i in 0..max {
        let reply = exchange(addr, &command(&[b"SET", format!("key:{i}").as_bytes(), value]));
        let refused = reply.starts_with(b"-");
        replies.push(reply);
        if refused {
            break;
        }
    }
    replies
}

/// A store at its bound (`--kv-max-bytes`) answers as redis-server does at
/// `maxmemory` with `noeviction`, byte for byte: writes that would grow it
/// get `-OOM`, reads and deletes go on.
#[test]
fn a_full_store_replies_as_redis_server_at_maxmemory() {
    if !installed(&["redis-server"]) {
        return;
    }
    let redis = RedisServer::start_with(&["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"]);
    let host = Host::serve(GUEST, &["--kv", "memory", "--kv-max-bytes", "8MiB"]);
    let value = vec![b'v'; 512 * 1024];
    for addr in [redis.addr, host.addr] {
        let replies = fill_until_refused(addr, &value, 100);
        let last = String::from_utf8_lossy(replies.last().unwrap()).into_owned();
        assert_eq!(last, "-OOM command not allowed when used memory > 'maxmemory'.\r\n", "{addr}");
        assert!(replies.len() > 4, "{addr} was full after {} writes", replies.len());
    }
    let mut request = command(&[b"SET", b"one-more", &value]);
    request.extend(command(&[b"APPEND", b"key:0", &value]));
    request.extend(command(&[b"STRLEN", b"key:0"]));
    request.extend(command(&[b"GET", b"key:1"]));
    request.extend(command(&[b"EXISTS", b"key:0", b"key:1", b"one-more"]));
    request.extend(command(&[b"DEL", b"key:0"]));
    let expected = exchange(redis.addr, &request);
    let got = exchange(host.addr, &request);
    assert!(expected.starts_with(b"-OOM"), "{:?}", String::from_utf8_lossy(&expected[..80.min(expected.len())]));
    assert!(got == expected, "resp.wasm answered differently from redis-server at maxmemory");
}

/// `redis-benchmark` SETs of 1 MB values on ever-new keys fill the store to
/// its bound and then get `-OOM`, while GETs from another client keep
/// answering; the host log warns once.
#[test]
fn redis_benchmark_megabyte_sets_get_oom_while_gets_answer() {
    if !installed(&["redis-benchmark", "redis-cli"]) {
        return;
    }
    let host = Host::serve(GUEST, &["--kv", "memory", "--kv-max-bytes", "32MiB", "--admin-addr", "127.0.0.1:0"]);
    let addr = host.addr;
    assert_eq!(cli(addr, &["SET", "greeting", "hello"]), "OK");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut answered = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                assert_eq!(exchange(addr, &command(&[b"GET", b"greeting"])), b"$5\r\nhello\r\n");
                answered += 1;
            }
            answered
        })
    };
    let mut benchmark = Command::new("redis-benchmark");
    benchmark
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", "set", "-d", "1000000", "-r", "100000", "-n", "200", "-c", "4", "-e", "-q"]);
    let out = run_bounded(benchmark, Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = reader.join().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("OOM command not allowed when used memory > 'maxmemory'"), "redis-benchmark:\n{text}");
    assert!(answered > 0);
    assert_eq!(cli(addr, &["GET", "greeting"]), "hello");
    let (_, metrics) = http_request(host.admin(), "GET", "/metrics");
    let held: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("netplug_kv_bytes{listener=\"resp\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no netplug_kv_bytes in:\n{metrics}"));
    assert!(held <= 32.0 * 1024.0 * 1024.0 && held > 30.0 * 1024.0 * 1024.0, "the store holds {held} bytes");
    assert_eq!(host.count_log("key-value store full"), 1, "{}", host.log().join("\n"));
}

/// 100,000 keys set with a 1 s TTL (through `redis-cli --pipe`) and never
/// read again are gone a few seconds later: the host's sweep reclaimed
/// them, so the store's bytes fall below a tenth and `DBSIZE`, `SCAN` and
/// `KEYS` no longer show them; a key without a TTL stays.
#[test]
fn expired_keys_are_reclaimed_without_being_read() {
    if !installed(&["redis-cli"]) {
        return;
    }
    const KEYS: usize = 100_000;
    let host = Host::serve(GUEST, &["--kv", "memory", "--admin-addr", "127.0.0.1:0"]);
    let addr = host.addr;
    let held = || -> (f64, f64) {
        let (_, metrics) = http_request(host.admin(), "GET", "/metrics");
        let value = |name: &str| -> f64 {
            let prefix = format!("{name}{{listener=\"resp\"}} ");
            metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap().trim().parse().unwrap()
        };
        (value("netplug_kv_bytes"), value("netplug_kv_keys"))
    };
    assert_eq!(cli(addr, &["SET", "kept", "forever"]), "OK");
    let mut input = Vec::new();
    for i in 0..KEYS {
        input.extend(command(&[b"SET", format!("session:{i}").as_bytes(), b"some cached value", b"EX", b"1"]));
    }
    let mut pipe = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = pipe.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = pipe.wait_with_output().unwrap();
    writer.join().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(&format!("errors: 0, replies: {KEYS}")), "redis-cli --pipe: {report}");
    let (peak, _) = held();

    let deadline = Instant::now() + Duration::from_secs(10);
    while held().1 > 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (bytes, keys) = held();
    let per_key = "session:99999".len() + "some cached value".len() + 9;
    assert!(bytes < (KEYS * per_key) as f64 / 10.0, "{bytes} bytes held (peak {peak})");
    assert_eq!(keys, 1.0);
    assert_eq!(cli(addr, &["DBSIZE"]), "1");
    assert_eq!(cli(addr, &["SCAN", "0"]), "0\nkept");
    assert_eq!(cli(addr, &["KEYS", "session:*"]), "");
    assert_eq!(cli(addr, &["GET", "kept"]), "forever");
}
