//! Bad input gets one clear line on stderr naming what is wrong, and a
//! non-zero exit.

use crate::support::*;
use std::path::PathBuf;

/// Runs `host run` and returns its stderr, asserting a failed exit and a
/// single line.
fn refused(args: &[&str]) -> String {
    let out = run_host(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{args:?}: expected one line, got:\n{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", String::from_utf8_lossy(&out.stdout));
    err
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netplug-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn missing_file() {
    let err = refused(&["run", "/nonexistent/guest.wasm", "--port", "0"]);
    assert!(err.contains("/nonexistent/guest.wasm"), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn not_webassembly() {
    let path = temp_file("notes.wasm", b"this is a text file, not a component\n");
    let err = refused(&["run", path.to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("notes.wasm"), "{err}");
    assert!(err.contains("not a WebAssembly file"), "{err}");
}

#[test]
fn core_module_instead_of_a_component() {
    // The smallest valid core module: magic and version 1.
    let path = temp_file("core.wasm", b"\0asm\x01\0\0\0");
    let err = refused(&["run", path.to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("core.wasm"), "{err}");
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");
}

#[test]
fn component_of_neither_world() {
    // The smallest valid component: it exports nothing.
    let path = temp_file("empty.wasm", b"\0asm\x0d\0\x01\0");
    let err = refused(&["run", path.to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("empty.wasm is neither a server nor a client guest"), "{err}");
    assert!(err.contains("netplug:protocol/handler@0.1.0"), "names the expected export: {err}");
}

#[test]
fn truncated_component() {
    let hello = std::fs::read(guest("hello")).unwrap();
    let path = temp_file("truncated.wasm", &hello[..hello.len() / 2]);
    let err = refused(&["run", path.to_str().unwrap(), "--port", "0", "--no-cache"]);
    assert!(err.contains("cannot compile guest"), "{err}");
    assert!(err.contains("truncated.wasm"), "{err}");
}

#[test]
fn address_already_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let hello = guest("hello");
    let err = refused(&["run", hello.to_str().unwrap(), "--port", &port]);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn unparseable_address() {
    let hello = guest("hello");
    let err = refused(&["run", hello.to_str().unwrap(), "--port", "0", "--addr", "not-an-ip"]);
    assert!(err.contains("--addr") && err.contains("`not-an-ip` is not an IP address"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn unparseable_port() {
    let hello = guest("hello");
    for port in ["abc", "70000", "12.5"] {
        let err = refused(&["run", hello.to_str().unwrap(), "--port", port]);
        assert!(err.contains("--port"), "{port}: {err}");
    }
}

#[test]
fn unparseable_connect_target() {
    let client = guest("hello_client");
    let err = refused(&["run", client.to_str().unwrap(), "--connect", "localhost"]);
    assert!(err.contains("`localhost`"), "{err}");
    assert!(err.contains("HOST:PORT"), "{err}");
}

#[test]
fn bad_limit_values() {
    let hello = guest("hello");
    let err = refused(&["run", hello.to_str().unwrap(), "--port", "0", "--max-memory", "lots"]);
    assert!(err.contains("--max-memory"), "{err}");
    let err = refused(&["run", hello.to_str().unwrap(), "--port", "0", "--idle-timeout", "10"]);
    assert!(err.contains("needs a unit"), "{err}");
    let err = refused(&["run", hello.to_str().unwrap(), "--port", "0", "--max-connections", "0"]);
    assert!(err.contains("--max-connections"), "{err}");
}

#[test]
fn server_guest_without_a_port_and_client_guest_without_a_target() {
    let hello = guest("hello");
    let err = refused(&["run", hello.to_str().unwrap()]);
    assert!(err.contains("hello.wasm is a server guest: give --port"), "{err}");
    let client = guest("hello_client");
    let err = refused(&["run", client.to_str().unwrap()]);
    assert!(err.contains("hello_client.wasm is a client guest: give --connect"), "{err}");
    // With --port too: the same advice, not the one for a listener.
    let err = refused(&["run", client.to_str().unwrap(), "--port", "0"]);
    assert!(err.contains("hello_client.wasm is a client guest: give --connect"), "{err}");
}

#[test]
fn inspect_names_world_imports_and_verdict() {
    let out = run_host(&["inspect", guest("hello").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("world: server"), "{text}");
    assert!(text.contains("netplug:protocol/log@0.1.0: granted"), "{text}");
    assert!(text.contains("verdict: the host would run this guest"), "{text}");
}

/// A guest built against another version of `netplug:protocol` is refused
/// at load in one line naming both versions, and `host inspect` warns.
#[test]
fn another_protocol_version_is_refused_naming_both() {
    let path = guest("other_version");
    let shown = path.to_str().unwrap();
    let why = "built against netplug:protocol@0.2.0; this host speaks 0.1.0 \u{2014} rebuild the guest with a \
               netplug-guest release for this host";
    let err = refused(&["run", shown, "--port", "0"]);
    assert!(err.contains("other_version.wasm is built against"), "{err}");
    assert!(err.contains(why), "{err}");
    let err = refused(&["compile", shown, "-o", "/nonexistent/x.cwasm"]);
    assert!(err.contains(why), "{err}");

    let out = run_host(&["inspect", shown]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == format!("warning: {why}")), "{text}");
    assert!(text.contains("netplug:protocol/types@0.2.0: REFUSED"), "{text}");
    assert!(text.contains("verdict: the host would refuse this guest"), "{text}");
}

/// `host wit` prints the contract it speaks; `--all` adds its dependencies.
#[test]
fn wit_prints_the_contract() {
    let out = run_host(&["wit"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, std::fs::read_to_string(repo_root().join("wit/netplug.wit")).unwrap());
    let out = run_host(&["wit", "--all"]);
    assert!(out.status.success());
    let all = String::from_utf8(out.stdout).unwrap();
    assert!(all.starts_with("// wit/netplug.wit\n"), "{all}");
    assert!(all.contains(&text));
    assert!(all.contains("// wit/deps/wasi-config/store.wit\n"));
    assert!(all.contains("// wit/deps/wasi-keyvalue/atomic.wit\n"));
    assert!(all.contains("package wasi:keyvalue@0.2.0-draft;"));
    assert!(all.contains("// wit/deps/wasi-keyvalue-draft2/atomic.wit\n"));
    assert!(all.contains("package wasi:keyvalue@0.2.0-draft2;"));
}

/// A guest importing `wasi:keyvalue` without it granted is refused in one
/// line that names how the same subcommand grants it: `--kv` for `host
/// run`, `--grant wasi:keyvalue` for `host compile` (which takes no
/// `--kv`), the listener's `kv` key for `host serve`.
#[test]
fn a_keyvalue_guest_is_refused_naming_the_subcommands_own_grant() {
    let resp = guest("resp");
    let shown = resp.to_str().unwrap();
    let err = refused(&["compile", shown, "-o", "/nonexistent/x.cwasm"]);
    assert!(err.contains("resp.wasm imports `wasi:keyvalue/"), "{err}");
    assert!(err.contains("--grant wasi:keyvalue"), "{err}");
    assert!(!err.contains("--kv"), "compile takes no --kv: {err}");

    let err = refused(&["run", shown, "--port", "0"]);
    assert!(err.contains("--kv (memory, a redis:// URL or a database path)"), "{err}");
    assert!(!err.contains("--grant"), "run's --grant takes no wasi:keyvalue: {err}");

    let config = temp_file(
        "kv-missing.toml",
        format!("[listeners.cache]\naddress = \"127.0.0.1:0\"\nguest = \"{shown}\"\n").as_bytes(),
    );
    let err = refused(&["serve", "--check", config.to_str().unwrap()]);
    assert!(err.contains(":3: listeners.cache.guest: "), "{err}");
    assert!(err.contains("`kv`"), "{err}");
    assert!(!err.contains("--kv") && !err.contains("--grant"), "serve takes neither flag: {err}");
}

/// A `--kv` value that is neither `memory` nor written as a path (with a
/// `/`, or ending in `.redb`) is a typo, not a new database file.
#[test]
fn a_kv_typo_is_refused_and_creates_nothing() {
    let dir = std::env::temp_dir().join(format!("netplug-kv-typo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resp = guest("resp");
    for typo in ["memry", "Memory", "cache"] {
        let out = host_command()
            .current_dir(&dir)
            .args(["run", resp.to_str().unwrap(), "--port", "0", "--kv", typo])
            .output()
            .unwrap();
        assert!(!out.status.success(), "--kv {typo} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("`{typo}` is neither `memory` nor a database path")), "{err}");
        assert!(err.contains("./") && err.contains(".redb"), "suggests a path: {err}");
        assert!(!dir.join(typo).exists(), "--kv {typo} created a file");
    }
    // A URL of a store the host does not speak, or a Redis URL with TLS
    // (not built in), or one that is not a URL: one line, naming what is
    // taken, and never the password.
    for (url, says) in [
        ("memcached://127.0.0.1:11211", "the store URLs are redis://"),
        ("rediss://user:secret@127.0.0.1:6379", "TLS is not built in"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1", "is not HOST:PORT"),
    ] {
        let out = run_host(&["run", resp.to_str().unwrap(), "--port", "0", "--kv", url]);
        assert!(!out.status.success(), "--kv {url} accepted");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(err.contains(says), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
