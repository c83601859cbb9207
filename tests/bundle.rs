//! `host bundle`: the guests of guest/, unchanged, composed with the
//! stock-runtime adapter and run by the stock `wasmtime` CLI (the crates.io
//! `wasmtime-cli` at the host's wasmtime version, installed by .ci/run in
//! target/tools/bin), talked to by the same clients as under `host run`;
//! and the guests `host bundle` refuses, each with one line.

use crate::support::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The wasmtime CLI the tests run bundles with, where .ci/run installs it.
fn wasmtime() -> Option<PathBuf> {
    let path = repo_root().join("target/tools/bin/wasmtime");
    if path.exists() {
        return Some(path);
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let line = format!(
        "SKIPPED: {test} needs `target/tools/bin/wasmtime` (cargo install wasmtime-cli --version =48.0.8 --locked \
         --root target/tools, as .ci/run does)\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}

/// `host bundle GUEST -o ...`: the bundle's path, under a directory of this
/// test process, named after `tag` so that parallel tests do not share one.
fn bundle(guest_name: &str, tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = dir.join(format!("{guest_name}-{tag}.wasm"));
    let out = run_host(&["bundle", guest(guest_name).to_str().unwrap(), "-o", app.to_str().unwrap()]);
    assert!(out.status.success(), "host bundle {guest_name} failed: {}", String::from_utf8_lossy(&out.stderr));
    app
}

/// `wasmtime run` of a bundle on a free loopback port (`--listen
/// 127.0.0.1:0`; the driver prints `listening on ADDR` as `host run`
/// does), with `env` given as `--env` pairs: the README's line.
fn stock(wasmtime: &PathBuf, app: &PathBuf, env: &[(&str, &str)]) -> Host {
    let mut command = Command::new(wasmtime);
    command.args(["run", "-S", "inherit-network=y"]);
    for (name, value) in env {
        command.arg("--env").arg(format!("{name}={value}"));
    }
    command.arg(app).args(["--listen", "127.0.0.1:0"]);
    Host::start(command)
}

/// Runs `command` with `input` on its stdin, bounded by `PATIENCE`; its
/// stdout, read as it comes (an echo's answer outgrows a pipe's buffer).
fn run_tool(command: &mut Command, input: &[u8]) -> Vec<u8> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (.ci/run installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).map(|_| out)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {PATIENCE:?}");
        }
        // Poll interval.
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let out = reader.join().unwrap().unwrap();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
    assert!(status.success(), "{shown}: {status}: {stderr}");
    out
}

/// One HTTP/1.1 request that asks the server to close after answering:
/// the whole response as it came.
fn http_close(addr: SocketAddr) -> Vec<u8> {
    let mut stream = connect(addr);
    write!(stream, "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    read_to_end(&mut stream)
}

fn python_seed_client(addr: SocketAddr) -> String {
    let out = run_tool(Command::new("python3").arg(python_script("seed_client.py")).arg(addr.port().to_string()), b"");
    String::from_utf8_lossy(&out).trim().to_string()
}

/// What OpenBSD netcat gets back for `input`, its write side shut at the
/// end of it.
fn netcat(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    run_tool(Command::new("nc").args(["-N", "-w", "20", "127.0.0.1", &addr.port().to_string()]), input)
}

/// curl's status code and body for `GET /`.
fn curl(addr: SocketAddr) -> String {
    let url = format!("http://{addr}/");
    let out = run_tool(
        Command::new("curl").args([
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--write-out",
            " %{http_code}",
            &url,
        ]),
        b"",
    );
    String::from_utf8_lossy(&out).into_owned()
}

fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let port = addr.port().to_string();
    let out = run_tool(Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port]).args(args), b"");
    String::from_utf8_lossy(&out).trim().to_string()
}

#[test]
fn python_seed_client_gets_hello_and_stderr_logs_peer_and_data() {
    let Some(wasmtime) = wasmtime() else { return };
    let app = stock(&wasmtime, &bundle("hello", "seed"), &[]);
    assert_eq!(python_seed_client(app.addr), "b'HELLO,WORLD'");
    let line = app.wait_for_log("with the client's data", |l| l.contains("sent 17 bytes: this is client..."));
    assert!(line.contains("INFO conn{peer=127.0.0.1:"), "the line names the level and the peer: {line}");
    // The next client is served too: the driver loops.
    assert_eq!(seed_exchange(app.addr).0, b"HELLO,WORLD");
}

#[test]
fn netcat_round_trips_bytes_through_bundled_echo() {
    let Some(wasmtime) = wasmtime() else { return };
    let app = stock(&wasmtime, &bundle("echo", "nc"), &[]);
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let output = netcat(app.addr, &input);
    assert_eq!(output.len(), input.len());
    assert!(output == input, "echo changed the bytes");
}

#[test]
fn curl_gets_200_from_bundled_http() {
    let Some(wasmtime) = wasmtime() else { return };
    let app = stock(&wasmtime, &bundle("http", "curl"), &[]);
    let answer = curl(app.addr);
    assert!(answer.ends_with(" 200"), "curl: {answer}");
    assert!(answer.starts_with("Hello, World!"), "curl: {answer}");
}

#[test]
fn bundled_proxy_relays_to_redis_with_upstream_from_the_environment() {
    let Some(wasmtime) = wasmtime() else { return };
    if !installed(&["redis-server", "redis-cli"]) {
        return;
    }
    let redis = RedisServer::start();
    let upstream = redis.addr.to_string();
    let app = stock(&wasmtime, &bundle("proxy", "redis"), &[("upstream", &upstream)]);
    assert_eq!(redis_cli(app.addr, &["SET", "bundled", "yes"]), "OK");
    assert_eq!(redis_cli(app.addr, &["GET", "bundled"]), "yes");
    assert_eq!(redis_cli(redis.addr, &["GET", "bundled"]), "yes", "the value reached the real redis-server");
    app.wait_for_log("with the bytes moved", |l| {
        l.contains(&format!("<-> {upstream}")) && l.contains("both directions ended")
    });
}

#[test]
fn an_idle_client_times_out_and_the_next_one_is_served() {
    let Some(wasmtime) = wasmtime() else { return };
    let app = stock(&wasmtime, &bundle("hello", "idle"), &[("NETPLUG_IDLE_TIMEOUT", "1")]);
    let mut idle = connect(app.addr);
    let started = Instant::now();
    // The greeting, then nothing from this client: the guest's recv times
    // out after a second and the connection closes.
    assert_eq!(read_to_end(&mut idle), b"HELLO,WORLD");
    assert!(started.elapsed() < Duration::from_secs(10), "closed after {:?}", started.elapsed());
    app.wait_for_log("with the guest's error", |l| l.contains("guest error: recv failed: timed-out"));
    assert_eq!(seed_exchange(app.addr).0, b"HELLO,WORLD");
}

#[test]
fn a_trap_ends_the_bundle_for_every_later_client() {
    let Some(wasmtime) = wasmtime() else { return };
    let mut app = stock(&wasmtime, &bundle("hostile", "trap"), &[]);
    assert_eq!(seed_exchange(app.addr).0, b"HELLO,WORLD", "a good client first");
    let mut hostile = connect(app.addr);
    hostile.write_all(b"oob").unwrap();
    let _ = read_to_end(&mut hostile);
    let started = Instant::now();
    while app.is_running() {
        assert!(started.elapsed() < PATIENCE, "the bundle outlived its guest's trap");
        // Poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::net::TcpStream::connect(app.addr).is_err(), "nothing serves after the trap");
}

#[test]
fn host_run_and_the_bundle_give_the_same_answers() {
    let Some(wasmtime) = wasmtime() else { return };
    let echo_input: Vec<u8> = b"line one\nline two\n".repeat(1000);
    for guest_name in ["hello", "echo", "http"] {
        let served = Host::serve(guest_name, &[]);
        let bundled = stock(&wasmtime, &bundle(guest_name, "same"), &[]);
        let answers = |addr: SocketAddr| match guest_name {
            "hello" => {
                vec![seed_exchange(addr).0, python_seed_client(addr).into_bytes(), netcat(addr, b"this is client...")]
            }
            "echo" => vec![netcat(addr, &echo_input), netcat(addr, b"")],
            _ => vec![curl(addr).into_bytes(), http_close(addr)],
        };
        assert_eq!(answers(served.addr), answers(bundled.addr), "{guest_name}: host run and the bundle differ");
    }
}

#[test]
fn the_bundle_imports_only_standard_wasi() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = dir.join("hello-imports.wasm");
    let out = run_host(&["bundle", guest("hello").to_str().unwrap(), "-o", app.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    let imports = line.trim().rsplit("importing ").next().unwrap();
    for package in imports.split(", ") {
        let standard = ["wasi:cli@0.2.", "wasi:io@0.2.", "wasi:clocks@0.2.", "wasi:sockets@0.2."];
        assert!(standard.iter().any(|p| package.starts_with(p)), "a non-standard import {package}: {line}");
    }
    assert!(std::fs::metadata(&app).unwrap().len() > 0);
}

/// Runs `host bundle ARGS...`, which must fail with one line on stderr
/// containing `expected`, and write nothing.
fn refused(guest: &str, expected: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = dir.join(format!("refused-{}.wasm", expected.len()));
    let out = run_host(&["bundle", guest, "-o", app.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "host bundle {guest} succeeded");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(expected), "the line names {expected}: {stderr}");
    assert!(!app.exists(), "a refused bundle wrote {}", app.display());
}

#[test]
fn a_kv_guest_a_client_guest_and_a_non_wasm_file_are_refused_with_one_line() {
    refused(guest("resp").to_str().unwrap(), "wasi:keyvalue/store@0.2.0-draft2");
    refused(guest("hello_client").to_str().unwrap(), "is a client guest");
    let readme = repo_root().join("README.md");
    refused(readme.to_str().unwrap(), "is not a WebAssembly file");
}
