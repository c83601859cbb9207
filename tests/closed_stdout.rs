//! A reader that goes away before the host has printed (`host inspect
//! GUEST | head -1`) ends the printing subcommands quietly, as it ends any
//! Unix filter: a success, or death by SIGPIPE, never a panic. The serving
//! subcommands keep serving: the lines they print are for whoever reads.
//! Each command's stdout is a pipe whose read end is closed before it
//! starts, so its first write fails every time.

use crate::support::*;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

/// `host ARGS...` with stdout a pipe nobody reads from any more; stderr is
/// piped back.
fn spawn_with_closed_stdout(args: &[&str]) -> Running {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let command = host_command().args(args).stdin(Stdio::null()).stdout(writer).stderr(Stdio::piped()).spawn();
    Running(command.expect("start host"))
}

/// Runs `host ARGS...` with a closed stdout to its end: its exit status and
/// stderr.
fn run_with_closed_stdout(args: &[&str]) -> (ExitStatus, String) {
    let mut child = spawn_with_closed_stdout(args);
    let mut stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = child.wait_exit();
    (status, reader.join().unwrap())
}

/// A quiet end: success or SIGPIPE, nothing on stderr (so no panic and no
/// `error: Broken pipe`).
fn assert_ends_quietly(args: &[&str]) {
    let (status, stderr) = run_with_closed_stdout(args);
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "host {args:?} on a closed stdout: {status:?} (101 is a panic), stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "host {args:?} panicked:\n{stderr}");
    assert!(stderr.is_empty(), "host {args:?} wrote to stderr:\n{stderr}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("closed-stdout-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn inspect_wit_help_and_version_end_quietly() {
    let hello = guest("hello");
    assert_ends_quietly(&["inspect", hello.to_str().unwrap()]);
    assert_ends_quietly(&["wit"]);
    assert_ends_quietly(&["wit", "--all"]);
    assert_ends_quietly(&["--help"]);
    assert_ends_quietly(&["inspect", "--help"]);
    assert_ends_quietly(&["--version"]);
}

#[test]
fn compile_and_serve_check_end_quietly() {
    let dir = scratch("compile");
    let cwasm = dir.join("hello.cwasm");
    assert_ends_quietly(&["compile", guest("hello").to_str().unwrap(), "-o", cwasm.to_str().unwrap()]);
    // The line it could not print was the last thing it did.
    assert!(cwasm.exists(), "{} was not written", cwasm.display());

    let config = dir.join("netplug.toml");
    let hello = guest("hello");
    std::fs::write(&config, format!("[listeners.a]\naddress = \"127.0.0.1:0\"\nguest = \"{}\"\n", hello.display()))
        .unwrap();
    assert_ends_quietly(&["serve", "--check", config.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(dir);
}

/// `host run` keeps SIGPIPE ignored (a peer closing its socket ends that
/// connection, not the host) and a closed stdout costs it only the
/// `listening on` line: it serves, and stops cleanly on SIGTERM.
#[test]
fn run_keeps_serving_when_nobody_reads_its_stdout() {
    let hello = guest("hello");
    let mut child = spawn_with_closed_stdout(&["run", hello.to_str().unwrap(), "--port", "0"]);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    // The log's `serving ... on ADDR` line comes after the `listening on`
    // line to stdout, and names the address too.
    let addr = loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(line) => {
                if let Some((_, addr)) = line.split_once("(world server, generation 1) on ") {
                    break addr.parse().expect("parse the bound address");
                }
            }
            Err(_) => {
                let status = child.0.try_wait().unwrap();
                drop(child);
                panic!("host did not start serving (exit: {status:?}), log:\n{}", reader.join().unwrap().join("\n"));
            }
        }
    };
    assert_eq!(seed_exchange(addr).0, b"HELLO,WORLD");
    signal(child.0.id(), "TERM");
    let status = child.wait_exit();
    let log = reader.join().unwrap().join("\n");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}, log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}
