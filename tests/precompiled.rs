//! Precompiled guests: `host compile` writes a `.cwasm` that `host run`
//! serves and `host inspect` reads without compiling; a damaged one, or one
//! made by another wasmtime version or configuration, is refused in one line
//! naming the file, and so is a guest `host compile` must not admit.

use crate::support::*;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasmtime::{Engine, ModuleVersionStrategy};

/// A fresh directory under cargo's scratch space for one test. Those of
/// earlier test processes that are gone are removed: each holds compiled
/// guests of a few MiB.
fn scratch(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    static CLEAN: std::sync::Once = std::sync::Once::new();
    CLEAN.call_once(|| {
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("precompiled-test-")) else { continue };
            let pid = rest.split('-').next().unwrap_or_default();
            let gone = pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let dir = root.join(format!("precompiled-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `host compile ARGS...`, which must succeed; its one line of stdout.
fn compile(args: &[&str]) -> String {
    let mut all = vec!["compile"];
    all.extend_from_slice(args);
    let out = run_host(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "host compile {args:?} failed: {stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    stdout
}

/// hello.wasm compiled by `host compile`, once for every test here.
fn hello_cwasm() -> &'static Path {
    static CWASM: OnceLock<PathBuf> = OnceLock::new();
    CWASM.get_or_init(|| {
        let path = scratch("hello").join("hello.cwasm");
        compile(&[guest("hello").to_str().unwrap(), "-o", path.to_str().unwrap()]);
        path
    })
}

/// Runs the host, which must fail with one line on stderr naming `file`
/// and nothing on stdout; returns the line.
fn refused(args: &[&str], file: &Path) -> String {
    let out = run_host(args);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "{args:?} should fail: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: expected one line, got:\n{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(&file.display().to_string()), "names {}: {err}", file.display());
    err
}

/// `host run FILE` and `host inspect FILE` both refuse `file`; returns
/// `host run`'s line.
fn run_and_inspect_refuse(file: &Path) -> String {
    let shown = file.to_str().unwrap();
    let inspect = refused(&["inspect", shown], file);
    let run = refused(&["run", shown, "--port", "0"], file);
    assert_eq!(run, inspect, "the same reason from both");
    run
}

/// A copy of the compiled hello guest, changed by `change`.
fn damaged(name: &str, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(hello_cwasm()).unwrap();
    change(&mut bytes);
    let path = scratch(name).join("hello.cwasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// hello.wasm precompiled by an engine built with `config`, written as
/// `host compile` writes it (checksum trailer included), so that only
/// wasmtime's own compatibility check stands between it and the host.
fn foreign(name: &str, config: &wasmtime::Config) -> PathBuf {
    let engine = Engine::new(config).unwrap();
    let object = engine.precompile_component(&std::fs::read(guest("hello")).unwrap()).unwrap();
    let path = scratch(name).join("hello.cwasm");
    std::fs::write(&path, netplug::guest::precompiled::seal(&object)).unwrap();
    path
}

#[test]
fn a_compiled_guest_serves_the_seed_exchange_and_leaves_the_cache_alone() {
    let cache = scratch("cache").join("netplug");
    let host = Host::serve_with_env(hello_cwasm(), &[], &[("NETPLUG_CACHE_DIR", &cache)]);
    let (reply, local) = seed_exchange(host.addr);
    assert_eq!(reply, b"HELLO,WORLD");
    let line = host.wait_for_log("with the client's data", |l| l.contains("sent 17 bytes: this is client..."));
    assert!(line.contains(&local.to_string()), "names the peer {local}: {line}");
    assert!(host.log().iter().any(|l| l.contains("serving hello.cwasm (world server")), "{:?}", host.log());
    // Nothing was compiled, so nothing was cached.
    let entries = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 0, "no cache entry for a .cwasm");
}

#[test]
fn compile_writes_beside_the_guest_by_default_and_says_what_it_wrote() {
    let dir = scratch("default-output");
    let wasm = dir.join("hello.wasm");
    std::fs::copy(guest("hello"), &wasm).unwrap();
    let line = compile(&[wasm.to_str().unwrap()]);
    let cwasm = dir.join("hello.cwasm");
    let size = std::fs::metadata(&cwasm).unwrap().size();
    assert_eq!(
        line,
        format!(
            "wrote {} ({size} bytes): {}, a server guest, precompiled for this host",
            cwasm.display(),
            wasm.display()
        )
    );
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["hello.cwasm", "hello.wasm"], "no temporary file left behind");
    // Compiling again replaces the file with the same contents.
    compile(&[wasm.to_str().unwrap()]);
    assert_eq!(std::fs::read(&cwasm).unwrap(), std::fs::read(hello_cwasm()).unwrap());
}

#[test]
fn a_compiled_client_guest_runs() {
    let server = Host::serve("hello", &[]);
    let cwasm = scratch("client").join("hello_client.cwasm");
    let line = compile(&[guest("hello_client").to_str().unwrap(), "-o", cwasm.to_str().unwrap()]);
    assert!(line.contains("a client guest"), "{line}");
    let out = run_host(&["run", cwasm.to_str().unwrap(), "--connect", &server.addr.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "HELLO,WORLD");
}

/// The instance pool is sized by `--max-connections` and `--max-memory`, and
/// `host compile` has no pool at all: wasmtime's check compares only what
/// decides the compiled code, so the pool must not matter.
#[test]
fn pool_settings_do_not_matter() {
    for flags in [
        &["--max-connections", "1", "--max-memory", "4GiB"][..],
        &["--max-connections", "3000", "--max-memory", "2MiB"],
    ] {
        let host = Host::serve_path(hello_cwasm(), flags);
        assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD", "{flags:?}");
    }
    // A pool too small for the guest refuses it as it refuses the `.wasm`,
    // without blaming the file.
    let cwasm = hello_cwasm();
    let err = refused(&["run", cwasm.to_str().unwrap(), "--port", "0", "--max-memory", "1MiB"], cwasm);
    assert!(err.contains("cannot load guest") && err.contains("exceeds the limit"), "{err}");
    assert!(!err.contains("another host"), "{err}");
}

/// A reload reads the served file afresh and tells a `.cwasm` by its
/// contents, so a `.wasm` may be replaced by a precompiled guest under the
/// same name; a damaged one leaves the current guest serving.
#[test]
fn a_reload_takes_a_cwasm_and_refuses_a_damaged_one() {
    let dir = scratch("reload");
    let served = dir.join("guest.wasm");
    std::fs::copy(guest("hello"), &served).unwrap();
    let host = Host::serve_path(&served, &[]);
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    let echo = dir.join("echo.cwasm");
    compile(&[guest("echo").to_str().unwrap(), "-o", echo.to_str().unwrap()]);
    std::fs::rename(&echo, &served).unwrap();
    signal(host.pid(), "HUP");
    host.wait_for_log("the swap", |l| l.contains("generation 2 serving"));
    let echoed = |addr| {
        let mut stream = connect(addr);
        stream.write_all(b"this is client...").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        read_to_end(&mut stream)
    };
    assert_eq!(echoed(host.addr), b"this is client...", "the echo guest, precompiled, serves");
    let bytes = std::fs::read(&served).unwrap();
    std::fs::write(&served, &bytes[..bytes.len() / 2]).unwrap();
    signal(host.pid(), "HUP");
    let line = host.wait_for_log("the failed reload", |l| l.contains("reload of") && l.contains("failed"));
    assert!(line.contains("truncated") && line.contains("generation 2 keeps serving"), "{line}");
    assert_eq!(echoed(host.addr), b"this is client...");
}

#[test]
fn inspect_reads_a_compiled_guest() {
    let out = run_host(&["inspect", hello_cwasm().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("world: server"), "{text}");
    assert!(text.contains("netplug:protocol/log@0.1.0: granted"), "{text}");
    assert!(text.contains("verdict: the host would run this guest"), "{text}");
}

#[test]
fn a_truncated_cwasm_is_refused() {
    let half = damaged("truncated", |bytes| bytes.truncate(bytes.len() / 2));
    let err = run_and_inspect_refuse(&half);
    assert!(err.contains("truncated") && err.contains("host compile"), "{err}");
}

#[test]
fn a_cwasm_with_flipped_bytes_is_refused() {
    let flipped = damaged("flipped", |bytes| {
        let middle = bytes.len() / 2;
        for byte in &mut bytes[middle..middle + 16] {
            *byte ^= 0xff;
        }
    });
    let err = run_and_inspect_refuse(&flipped);
    assert!(err.contains("is damaged") && err.contains("host compile"), "{err}");
}

/// wasmtime refuses an artifact whose header names another wasmtime
/// version. The engine here is the host's (`base_config`) but for the
/// version string it writes, which is what an artifact of another wasmtime
/// release differs in first, and its file carries a valid checksum: only
/// wasmtime's own check can refuse it.
#[test]
fn a_cwasm_from_another_wasmtime_version_is_refused() {
    let mut config = netplug::guest::engine::base_config();
    config.module_version(ModuleVersionStrategy::Custom("0.0.1-elsewhere".into())).unwrap();
    let file = foreign("version", &config);
    let err = run_and_inspect_refuse(&file);
    assert!(err.contains("was precompiled for another host"), "{err}");
    assert!(err.contains("incompatible version '0.0.1-elsewhere'"), "wasmtime's reason: {err}");
    assert!(err.contains("compile it again with this host's `host compile`"), "{err}");
}

/// wasmtime's defaults, as a plain `wasmtime compile` uses them: without the
/// epoch interruption the host's CPU budget relies on, the code could not be
/// interrupted, and wasmtime's check refuses it.
#[test]
fn a_cwasm_from_another_configuration_is_refused() {
    let file = foreign("config", &wasmtime::Config::new());
    let err = run_and_inspect_refuse(&file);
    assert!(err.contains("was precompiled for another host"), "{err}");
    assert!(err.contains("epoch interruption"), "wasmtime's reason: {err}");
}

#[test]
fn wasmtimes_own_output_without_the_checksum_is_refused() {
    let object = Engine::new(&netplug::guest::engine::base_config())
        .unwrap()
        .precompile_component(&std::fs::read(guest("hello")).unwrap())
        .unwrap();
    let path = scratch("bare").join("hello.cwasm");
    std::fs::write(&path, object).unwrap();
    let err = run_and_inspect_refuse(&path);
    assert!(err.contains("was not written by `host compile`"), "{err}");
}

#[test]
fn a_precompiled_core_module_is_refused() {
    // The smallest core module, precompiled by the host's engine.
    let object =
        Engine::new(&netplug::guest::engine::base_config()).unwrap().precompile_module(b"\0asm\x01\0\0\0").unwrap();
    let path = scratch("core").join("core.cwasm");
    std::fs::write(&path, netplug::guest::precompiled::seal(&object)).unwrap();
    let err = run_and_inspect_refuse(&path);
    assert!(err.contains("is a precompiled core WebAssembly module, not a component"), "{err}");
}

#[test]
fn compile_refuses_what_run_refuses_and_writes_nothing() {
    let dir = scratch("refused");
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    let cases = [
        (core.clone(), "core WebAssembly module, not a component"),
        (empty.clone(), "is neither a server nor a client guest"),
        (guest("wants_net"), "imports `wasi:sockets/"),
    ];
    for (wasm, why) in cases {
        let out = dir.join("out.cwasm");
        let err = refused(&["compile", wasm.to_str().unwrap(), "-o", out.to_str().unwrap()], &wasm);
        assert!(err.contains(why), "{err}");
        assert!(!out.exists(), "nothing written for {}", wasm.display());
    }
    // As with `host run`, an explicit grant admits it.
    let out = dir.join("wants_net.cwasm");
    compile(&[guest("wants_net").to_str().unwrap(), "--grant", "wasi:sockets", "-o", out.to_str().unwrap()]);
    let err = refused(&["run", out.to_str().unwrap(), "--port", "0"], &out);
    assert!(err.contains("imports `wasi:sockets/"), "`host run` still needs the grant: {err}");
}
