//! `host serve CONFIG.toml`: several listeners from one file in one
//! process, each with its own guest, limits and configuration; errors that
//! name the file, line and key; and SIGHUP re-reading the file while
//! listeners serve, with no failed exchange.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` as `dir/netplug.toml`, replacing it whole (written beside
/// it and renamed over, so a SIGHUP never reads half of it).
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("netplug.toml");
    let tmp = dir.join("netplug.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A guest path for the file: the built guests, absolute.
fn guest_path(name: &str) -> String {
    guest(name).display().to_string()
}

/// Sends `data`, closes the write side and returns everything echoed.
fn echo_all(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            // The host may close early (a quota): a failed write is the test's to see in what came back.
            let _ = stream.write_all(&data);
            let _ = stream.shutdown(Shutdown::Write);
        })
    };
    let out = read_to_end(&mut stream);
    writer.join().unwrap();
    out
}

/// An HTTP/1.1 GET with Python's http.client, returning the status line.
fn http_get(addr: SocketAddr) -> String {
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('{}', {}, timeout=20)\nc.request('GET', '/')\n\
         r = c.getresponse()\nprint(r.status, r.read().decode())",
        addr.ip(),
        addr.port()
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().expect("run python3");
    assert!(out.status.success(), "http.client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn hello_echo_and_http_at_once_each_with_its_own_limits_and_configuration() {
    let dir = scratch("three");
    let config = write_config(
        &dir,
        &format!(
            r#"
shutdown-timeout = "2s"

[defaults]
max-memory = "16MiB"
max-bytes-in = "1KiB"

[listeners.hello]
address = "127.0.0.1:0"
guest = "{hello}"
[listeners.hello.config]
greeting = "HOWDY"

[listeners.echo]
address = "127.0.0.1:0"
guest = "{echo}"

[listeners.echo-big]
address = "127.0.0.1:0"
guest = "{echo}"
[listeners.echo-big.limits]
max-bytes-in = "unlimited"

[listeners.http]
address = "127.0.0.1:0"
guest = "{http}"
[listeners.http.limits]
max-bytes-in = "unlimited"
"#,
            hello = guest_path("hello"),
            echo = guest_path("echo"),
            http = guest_path("http"),
        ),
    );
    let host = Host::serve_config(&config, &[]);
    // Each listener has its own configuration...
    assert_eq!(seed_exchange(host.listener("hello")).0, b"HOWDY");
    // ...and its own limits: [defaults] caps echo at 1 KiB in, echo-big
    // overrides it.
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let capped = echo_all(host.listener("echo"), &data);
    assert!(
        capped.len() <= 1024 && data.starts_with(&capped),
        "echo sent back {} bytes past its 1 KiB quota",
        capped.len()
    );
    assert_eq!(echo_all(host.listener("echo-big"), &data), data);
    assert!(http_get(host.listener("http")).starts_with("200"), "http listener answers 200");
    // All four on one process, one line each.
    for name in ["hello", "echo", "echo-big", "http"] {
        assert_eq!(host.listener_starts(name), 1);
    }
    let status = host.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

/// `host serve --check` on a file, returning (success, first stderr line).
fn check(dir: &Path, text: &str) -> (bool, String) {
    let path = write_config(dir, text);
    let out = run_host(&["serve", "--check", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    if !out.status.success() {
        assert_eq!(lines.len(), 1, "one line for a bad file, got:\n{stderr}");
    }
    let shown = if out.status.success() { String::from_utf8_lossy(&out.stdout).to_string() } else { stderr };
    (out.status.success(), shown.trim().to_string())
}

#[test]
fn every_error_in_the_file_names_the_file_line_and_key() {
    let dir = scratch("errors");
    let file = dir.join("netplug.toml").display().to_string();
    let hello = guest_path("hello");
    let good = format!("[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"{hello}\"\n");
    let (ok, line) = check(&dir, &good);
    assert!(ok && line == format!("{file}: ok, 1 listener(s): a"), "{line}");
    let not_wasm = dir.join("notes.txt");
    std::fs::write(&not_wasm, "not a guest").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (format!("{good}[listeners.a.limits]\nidle-timout = \"5s\"\n"), ":5: listeners.a.limits.idle-timout: unknown field `idle-timout`"),
        (format!("{good}[listeners.a.limits]\nmax-memory = \"16MB\"\n"), ":5: listeners.a.limits.max-memory: `16MB` is ambiguous"),
        (format!("{good}[listeners.a.limits]\ncpu-timeout = 5\n"), ":5: listeners.a.limits.cpu-timeout: `5` needs a unit"),
        (format!("{good}[listeners.a.limits]\nmax-connections = 0\n"), ":5: listeners.a.limits.max-connections: 0 is out of range"),
        (format!("[defaults]\noverload-threshold = 101\n{good}"), ":2: defaults.overload-threshold: 101 is out of range"),
        (format!("{good}grant = [\"wasi:http\"]\n"), ":4: listeners.a.grant[0]: `wasi:http` cannot be granted"),
        (format!("{good}[listeners.a.config]\nlist = [1, 2]\n"), ":5: listeners.a.config.list: invalid type: sequence"),
        (format!("{good}[listeners.b]\naddress = \"127.0.0.1:4\"\n"), ":4: listeners.b: `guest` is missing"),
        ("[listeners.a]\naddress = \"localhost:80\"\nguest = \"x.wasm\"\n".into(), ":2: listeners.a.address: `localhost:80` is not IP:PORT"),
        ("[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"missing.wasm\"\n".into(), ":3: listeners.a.guest: cannot read guest"),
        ("[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"notes.txt\"\n".into(), ":3: listeners.a.guest: "),
        (
            format!("[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"{}\"\n", guest_path("hello_client")),
            ":3: listeners.a.guest: hello_client.wasm is a client guest",
        ),
        (
            format!("[listeners.a]\naddress = \"127.0.0.1:9\"\nguest = \"{hello}\"\n[listeners.b]\naddress = \"127.0.0.1:9\"\nguest = \"{hello}\"\n"),
            ":5: listeners.b.address: 127.0.0.1:9 is also the address of listener `a`",
        ),
        ("[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"x.wasm\"\nwatch = yes\n".into(), ":4: "),
        ("shutdown-timeout = \"10s\"\n".into(), ": no listeners"),
        (format!("{good}[listeners.a.limits]\nmax-bytes-in = \"lots\"\n"), ":5: listeners.a.limits.max-bytes-in: `lots` is not a size"),
        (format!("instances = 3\n{good}"), "instances = 3 is fewer than"),
        (format!("{good}kv = \"memry\"\n"), ":1: listeners.a.kv: `memry` is neither `memory` nor a database path"),
        (format!("{good}kv = \"rediss://127.0.0.1:6379\"\n"), ":1: listeners.a.kv: `rediss://127.0.0.1:6379`: the store URLs"),
        (format!("{good}[listeners.a.limits]\nkv-max-bytes = \"lots\"\n"), ":5: listeners.a.limits.kv-max-bytes: `lots` is not a size"),
    ];
    for (text, expected) in cases {
        let (ok, line) = check(&dir, &text);
        assert!(!ok, "accepted:\n{text}");
        assert!(line.starts_with(&format!("error: {file}")), "names the file: {line}");
        assert!(line.contains(expected), "expected {expected:?} in {line:?} for:\n{text}");
    }
    // A guest path is relative to the file.
    assert!(check(&dir, "[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"notes.txt\"\n")
        .1
        .contains("notes.txt is not a WebAssembly file"));
}

/// `--check` creates nothing: a listener's key-value database is not
/// opened (which would create the file), only its directory looked at.
#[test]
fn check_does_not_create_the_key_value_database() {
    let dir = scratch("check-kv");
    let file = dir.join("netplug.toml").display().to_string();
    let resp = guest_path("resp");
    let listener = format!("[listeners.cache]\naddress = \"127.0.0.1:0\"\nguest = \"{resp}\"\n");
    let (ok, line) = check(&dir, &format!("{listener}kv = \"cache.redb\"\n"));
    assert!(ok && line == format!("{file}: ok, 1 listener(s): cache"), "{line}");
    let db = dir.join("cache.redb");
    assert!(!db.exists(), "--check created {}", db.display());
    // The directory is still checked, naming the key.
    let (ok, line) = check(&dir, &format!("{listener}kv = \"missing/cache.redb\"\n"));
    assert!(!ok, "{line}");
    assert!(line.starts_with(&format!("error: {file}:1: listeners.cache.kv: ")), "{line}");
    assert!(line.contains("missing") && line.contains("does not exist"), "{line}");
    assert!(!dir.join("missing").exists());
    // Serving opens (and creates) it.
    let config = write_config(&dir, &format!("{listener}kv = \"cache.redb\"\n"));
    let host = Host::serve_config(&config, &[]);
    host.listener("cache");
    assert!(db.exists(), "serving did not create {}", db.display());
    assert!(host.terminate().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_address_that_cannot_be_bound_stops_the_start_before_anything_serves() {
    let dir = scratch("bind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let hello = guest_path("hello");
    let config = write_config(
        &dir,
        &format!(
            "[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"{hello}\"\n\n[listeners.b]\naddress = \"127.0.0.1:{port}\"\nguest = \"{hello}\"\n"
        ),
    );
    let out = run_host(&["serve", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("netplug.toml:6: listeners.b.address: cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    // Nothing was served: no listener line on stdout.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn sighup_adds_replaces_and_removes_listeners_while_another_serves_under_load() {
    let dir = scratch("sighup");
    let (hello, echo) = (guest_path("hello"), guest_path("echo"));
    let base = format!("[listeners.hello]\naddress = \"127.0.0.1:0\"\nguest = \"{hello}\"\n");
    let config = write_config(&dir, &base);
    let host = Host::serve_config(&config, &[]);
    let hello_addr = host.listener("hello");
    let load = SeedLoad::start(hello_addr, 32, &[b"HELLO,WORLD", b"HOWDY"]);
    load.progress(50);

    // Add a listener.
    let with_echo = format!("{base}\n[listeners.echo]\naddress = \"127.0.0.1:0\"\nguest = \"{echo}\"\n");
    write_config(&dir, &with_echo);
    signal(host.pid(), "HUP");
    let echo_addr = host.listener("echo");
    assert_eq!(echo_all(echo_addr, b"ping"), b"ping");
    host.wait_for_log("the reload's summary", |l| {
        l.contains("1 added, 0 replaced, 0 new generation(s), 0 removed, 1 unchanged")
    });
    // An echo connection opened now outlives its listener's removal.
    let mut kept = connect(echo_addr);
    kept.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    kept.read_exact(&mut buf).unwrap();
    load.progress(50);

    // A file that does not check changes nothing.
    write_config(&dir, &format!("{with_echo}[listeners.echo.limits]\nmax-memory = \"lots\"\n"));
    signal(host.pid(), "HUP");
    let refused = host.wait_for_log("the refused reload", |l| l.contains("nothing changed"));
    assert!(refused.contains("netplug.toml:9: listeners.echo.limits.max-memory"), "{refused}");
    assert_eq!(echo_all(echo_addr, b"still"), b"still");

    // Remove it: it stops accepting, its open connection goes on.
    write_config(&dir, &base);
    signal(host.pid(), "HUP");
    host.wait_for_log("the removal", |l| {
        l.contains("0 added, 0 replaced, 0 new generation(s), 1 removed, 1 unchanged")
    });
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&echo_addr, PATIENCE).is_ok() {
        assert!(start.elapsed() < PATIENCE, "the removed listener still accepts");
        std::thread::sleep(Duration::from_millis(10));
    }
    kept.write_all(b"after").unwrap();
    let mut buf = [0u8; 5];
    kept.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after", "a connection of a removed listener finishes on it");
    drop(kept);
    load.progress(50);

    // Change the loaded listener's settings: replaced on the same socket.
    let howdy_file = format!("{base}[listeners.hello.config]\ngreeting = \"HOWDY\"\n");
    write_config(&dir, &howdy_file);
    signal(host.pid(), "HUP");
    host.wait_for_log("the replacement", |l| l.contains("0 added, 1 replaced"));
    let start = Instant::now();
    while seed_exchange(hello_addr).0 != b"HOWDY" {
        assert!(start.elapsed() < Duration::from_secs(2), "the replaced listener still answers the old way");
    }
    load.progress(50);
    let (ok, failures) = load.finish();
    let failed = failures.len() as u64;
    assert_eq!(
        failed,
        0,
        "{failed} of {} exchanges failed during the reloads; log:\n{}",
        ok + failed,
        host.log().join("\n")
    );
    assert!(host.terminate().success());
}

/// Seed exchanges on `addr` until one gets `greeting`, failing after 2 s.
fn wait_for_greeting(host: &Host, addr: SocketAddr, greeting: &[u8]) {
    let since = Instant::now();
    while seed_exchange(addr).0 != greeting {
        assert!(
            since.elapsed() < Duration::from_secs(2),
            "no {:?} within 2 s; log:\n{}",
            String::from_utf8_lossy(greeting),
            host.log().join("\n")
        );
    }
}

#[test]
fn a_changed_guest_file_is_a_new_generation_by_watch_or_by_sighup_and_other_listeners_are_untouched() {
    let dir = scratch("generations");
    let (hello, v2) = (std::fs::read(guest("hello")).unwrap(), std::fs::read(guest("hello_v2")).unwrap());
    for name in ["watched.wasm", "signalled.wasm", "still.wasm"] {
        std::fs::write(dir.join(name), &hello).unwrap();
    }
    // Guest paths relative to the file.
    let config = write_config(
        &dir,
        "[listeners.watched]\naddress = \"127.0.0.1:0\"\nguest = \"watched.wasm\"\nwatch = true\n\n\
         [listeners.signalled]\naddress = \"127.0.0.1:0\"\nguest = \"signalled.wasm\"\n\n\
         [listeners.still]\naddress = \"127.0.0.1:0\"\nguest = \"still.wasm\"\n",
    );
    let host = Host::serve_config(&config, &[]);
    let (watched, signalled, still) = (host.listener("watched"), host.listener("signalled"), host.listener("still"));
    for addr in [watched, signalled, still] {
        assert_eq!(seed_exchange(addr).0, b"HELLO,WORLD");
    }
    // Written over in place: the watcher reloads it.
    std::fs::write(dir.join("watched.wasm"), &v2).unwrap();
    wait_for_greeting(&host, watched, b"HELLO,AGAIN");
    // Not watched: the file changes nothing until SIGHUP.
    std::fs::write(dir.join("signalled.wasm"), &v2).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(seed_exchange(signalled).0, b"HELLO,WORLD");
    signal(host.pid(), "HUP");
    wait_for_greeting(&host, signalled, b"HELLO,AGAIN");
    let summary = host.wait_for_log("the reload's summary", |l| l.contains("read again"));
    assert!(summary.contains("0 added, 0 replaced, 1 new generation(s), 0 removed, 2 unchanged"), "{summary}");
    assert!(
        host.count_log("listener{listener=signalled}: netplug::runtime::reload: SIGHUP: generation 2 serving") == 1
    );
    // The third listener kept its generation and its socket.
    assert_eq!(seed_exchange(still).0, b"HELLO,WORLD");
    assert_eq!(host.listener_starts("still"), 1);
    assert_eq!(host.count_log("listener{listener=still}: netplug::runtime::reload"), 0);
    assert!(host.terminate().success());
}

#[test]
fn the_example_configuration_checks() {
    let example = repo_root().join("examples/netplug.toml");
    let out = run_host(&["serve", "--check", example.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok, 4 listener(s): cache, echo, hello, http"));
}
