//! The guest template, examples/upper, works outside this repository: a
//! copy in a fresh directory (outside every workspace of the repository),
//! with its SDK dependency pointed at the repository's sdk/, builds with a
//! plain `cargo build --release`, and `host run` serves the component it
//! makes.

use crate::support::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The template's cargo build may compile its dependencies (the first run
/// on a machine); later runs reuse them.
const BUILD_PATIENCE: Duration = Duration::from_secs(300);

/// Copies the files of `from` into `to`, leaving out a `target` directory.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (path, name) = (entry.path(), entry.file_name());
        if path.is_dir() {
            if name != "target" {
                copy_tree(&path, &to.join(&name));
            }
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// Runs `command` to completion within `patience`, its stdin fed `input`,
/// stdout and stderr collected in files under `dir` (so it never blocks on
/// a pipe). Killed and reported on overstaying.
fn run_bounded(mut command: Command, input: &[u8], patience: Duration, dir: &Path, what: &str) -> Output {
    let (out_path, err_path) = (dir.join(format!("{what}.stdout")), dir.join(format!("{what}.stderr")));
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > patience {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {patience:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        // Poll interval.
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: std::fs::read(&out_path).unwrap(), stderr: std::fs::read(&err_path).unwrap() }
}

/// The template copied to a fresh directory (under cargo's scratch space,
/// which no workspace of the repository includes: the template's own
/// `[workspace]` is the one cargo finds), built there; the directory and the
/// path of the component.
fn build_template() -> (PathBuf, PathBuf) {
    let repo = repo_root();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("template-upper-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&repo.join("examples/upper"), &dir);
    assert!(dir.join(".cargo/config.toml").exists(), "the template's .cargo/config.toml was not copied");
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let relative = r#"path = "../../sdk""#;
    assert!(text.contains(relative), "the template's netplug-guest dependency moved: {text}");
    let sdk = repo.join("sdk").canonicalize().unwrap();
    std::fs::write(&manifest, text.replace(relative, &format!("path = {:?}", sdk.to_str().unwrap()))).unwrap();

    // A target dir of the repository's own, so dependencies are built once
    // and reused by later runs; the template itself names none.
    let target = repo.join("target/template-upper");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(&dir).args(["build", "--release"]).env("CARGO_TARGET_DIR", &target);
    let out = run_bounded(command, b"", BUILD_PATIENCE, &dir, "cargo-build");
    assert!(
        out.status.success(),
        "cargo build --release of the template in {} failed ({}); stderr:\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/upper.wasm");
    assert!(wasm.exists(), "{} was not built", wasm.display());
    (dir, wasm)
}

#[test]
fn the_template_builds_outside_the_repository_and_serves() {
    let (dir, wasm) = build_template();
    let host = Host::serve_path(&wasm, &[]);
    let mut nc = Command::new("nc");
    nc.args(["-q1", &host.addr.ip().to_string(), &host.addr.port().to_string()]);
    let out = run_bounded(nc, b"UPPER hello world\nREV abc\nNOPE\nQUIT\nUPPER late\n", PATIENCE, &dir, "nc");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO WORLD\ncba\nERR unknown command\nBYE\n");
    assert!(out.status.success(), "nc: {}", String::from_utf8_lossy(&out.stderr));
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}
