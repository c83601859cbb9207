//! The host locked down as the container image runs it: a user that owns
//! nothing, no writable home, files it can read but not write. With a
//! `.wasm` it says once that the compiled-guest cache is not used and
//! serves; with a `.cwasm` it says nothing about the cache at all; `host
//! serve` runs the image's configuration from a read-only directory.
//!
//! Root ignores file modes, so when the tests run as root (CI does) the host
//! runs as uid 10001, the image's user, through `setpriv` (util-linux).

use crate::support::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The image's user.
const UID: u32 = 10001;

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// This test process's files, in the system's temporary directory: the
/// locked-down user must reach them, and the repository may sit under a
/// home it cannot enter. Those of earlier test processes that are gone are
/// removed (made writable again first, for a user that is not root).
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("netplug-locked-")) else { continue };
            if pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = Command::new("chmod").args(["-R", "u+w"]).arg(entry.path()).status();
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let root = tmp.join(format!("netplug-locked-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        root
    })
}

/// A fresh directory for one test's files, readable by everyone.
fn scratch(name: &str) -> PathBuf {
    let dir = root().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The host binary, where the locked-down user can run it.
fn host_program() -> &'static Path {
    static HOST: OnceLock<PathBuf> = OnceLock::new();
    HOST.get_or_init(|| {
        let staged = scratch("bin").join("host");
        if std::fs::hard_link(host_bin(), &staged).is_err() {
            std::fs::copy(host_bin(), &staged).unwrap();
        }
        staged
    })
}

/// A built guest, copied where the locked-down user can read it.
fn staged_guest(name: &str, dir: &Path) -> PathBuf {
    let staged = dir.join(format!("{name}.wasm"));
    std::fs::copy(guest(name), &staged).unwrap();
    staged
}

fn read_only(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `program` as the locked-down user: uid 10001 when the tests run as root,
/// this user otherwise. `home` is its HOME; `cache_home`, if any, its
/// XDG_CACHE_HOME; NETPLUG_CACHE_DIR is unset.
fn locked_down(program: &Path, home: &Path, cache_home: Option<&Path>) -> Command {
    let mut command = if running_as_root() {
        let mut setpriv = Command::new("setpriv");
        setpriv.arg(format!("--reuid={UID}")).arg(format!("--regid={UID}")).args(["--clear-groups", "--"]).arg(program);
        setpriv
    } else {
        Command::new(program)
    };
    command.env_remove("NETPLUG_CACHE_DIR").env_remove("XDG_CACHE_HOME").env("HOME", home);
    if let Some(dir) = cache_home {
        command.env("XDG_CACHE_HOME", dir);
    }
    command
}

/// The lock holds: the user cannot create a file in `dir`.
fn assert_cannot_write(dir: &Path) {
    let probe = dir.join("probe");
    let status = locked_down(Path::new("touch"), dir, None)
        .arg(&probe)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run touch through setpriv (util-linux, which .ci/run installs): {e}"));
    assert!(!status.success() && !probe.exists(), "the locked-down user can write {}", dir.display());
}

fn warnings(host: &Host) -> Vec<String> {
    host.log().into_iter().filter(|l| l.contains(" WARN ")).collect()
}

/// Seed exchanges until the host has logged the client's data of the last
/// one, so every log line of the start and of the connections is in.
fn serves_the_seed_exchange(host: &Host, addr: std::net::SocketAddr) {
    for _ in 0..3 {
        let (reply, local) = seed_exchange(addr);
        assert_eq!(reply, b"HELLO,WORLD", "log:\n{}", host.log().join("\n"));
        let peer = local.to_string();
        host.wait_for_log("with the client's data", |l| l.contains("this is client...") && l.contains(&peer));
    }
}

#[test]
fn a_wasm_guest_serves_with_one_warning_that_the_cache_is_not_used() {
    let dir = scratch("wasm");
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    read_only(&home, 0o555);
    assert_cannot_write(&home);
    let hello = staged_guest("hello", &dir);
    // A read-only HOME and XDG_CACHE_HOME; then a HOME that does not exist
    // (a user with no home, as the image's), no XDG_CACHE_HOME.
    let missing = Path::new("/nonexistent");
    for (home, cache_home) in [(home.as_path(), Some(home.as_path())), (missing, None)] {
        let mut command = locked_down(host_program(), home, cache_home);
        command.arg("run").arg(&hello).args(["--port", "0"]);
        let mut host = Host::start(command);
        serves_the_seed_exchange(&host, host.addr);
        let warnings = warnings(&host);
        assert_eq!(warnings.len(), 1, "one warning (HOME {}): {warnings:#?}", home.display());
        assert!(
            warnings[0].contains("compiled-guest cache not used, compiling in memory: cannot create "),
            "{}",
            warnings[0]
        );
        assert!(host.is_running());
        assert!(host.terminate().success());
    }
}

#[test]
fn a_cwasm_guest_serves_without_a_word_about_the_cache() {
    let dir = scratch("cwasm");
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    read_only(&home, 0o555);
    // Compiled by this user, readable by the locked-down one, not writable.
    let cwasm = dir.join("hello.cwasm");
    let hello = guest("hello");
    let out = run_host(&["compile", hello.to_str().unwrap(), "-o", cwasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    read_only(&cwasm, 0o444);
    read_only(&dir, 0o555);
    assert_cannot_write(&dir);

    let mut command = locked_down(host_program(), &home, Some(&home));
    command.arg("run").arg(&cwasm).args(["--port", "0"]);
    let mut host = Host::start(command);
    serves_the_seed_exchange(&host, host.addr);
    assert_eq!(warnings(&host), Vec::<String>::new());
    assert_eq!(host.count_log("cache"), 0, "{:#?}", host.log());
    assert!(!home.join("netplug").exists());
    assert!(host.is_running());
    assert!(host.terminate().success());
}

#[test]
fn host_serve_runs_the_image_config_from_a_read_only_directory() {
    // The image's layout: guests compiled by `host compile`, the config
    // file in a directory of its own, nothing writable by the user.
    let dir = scratch("serve");
    let guests = dir.join("guests");
    compile_image_guests(&guests);
    let etc = dir.join("etc");
    std::fs::create_dir(&etc).unwrap();
    // Its listeners on loopback, without the admin table (deploy.rs checks
    // that one).
    let config = etc.join("netplug.toml");
    std::fs::write(&config, image_config(&guests, true, false)).unwrap();
    read_only(&config, 0o444);
    for name in IMAGE_GUESTS {
        read_only(&guests.join(format!("{name}.cwasm")), 0o444);
    }
    for path in [&etc, &guests, &dir] {
        read_only(path, 0o555);
    }
    assert_cannot_write(&etc);

    let mut command = locked_down(host_program(), Path::new("/nonexistent"), None);
    command.arg("serve").arg(&config);
    let mut host = Host::start(command);
    serves_the_seed_exchange(&host, host.listener("hello"));

    let mut echo = connect(host.listener("echo"));
    echo.write_all(b"ping").unwrap();
    echo.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut echo), b"ping");

    // The resp listener's in-memory store.
    let mut resp = connect(host.listener("resp"));
    resp.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while reply.len() < b"+OK\r\n$2\r\nv1\r\n".len() {
        let n = std::io::Read::read(&mut resp, &mut buf).unwrap();
        assert!(n > 0, "resp closed after {:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(reply, b"+OK\r\n$2\r\nv1\r\n");
    drop(resp);

    assert_eq!(warnings(&host), Vec::<String>::new());
    assert!(host.is_running());
    assert!(host.terminate().success());
}
