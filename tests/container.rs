//! The container image, built and run on a machine with no Docker engine
//! and no registry. A Debian bookworm base made by `debootstrap
//! --variant=minbase` (cached as target/container/debian-bookworm-minbase.tar,
//! so only a fresh clone pays its minute) is imported as a local image;
//! `buildah bud --isolation chroot` builds deploy/Dockerfile.runtime on it
//! from the host and guests of `make build`, the guests compiled by that
//! host as deploy/Dockerfile's build stage compiles them. The image's root
//! is mounted (`buildah from`, `buildah mount`) and its entrypoint runs as
//! its user, on that root mounted read-only, in network, mount and PID
//! namespaces of the test's own (`unshare`): the seed exchange and
//! `/readyz` are asked from inside them, so no traffic leaves them, and
//! everything in them dies with them. The docs' recipe
//! (docs/deploying.md) is these commands.
//!
//! Needs root (buildah's storage, the namespaces), buildah, debootstrap,
//! unshare and chroot; `.ci/run` installs them. Without them the test says
//! `SKIPPED: ...`; the check that deploy/Dockerfile's final stage is
//! deploy/Dockerfile.runtime needs none of them.

use crate::support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Names of this test process's containers and images: `netplug-test-PID`,
/// `localhost/netplug-test-PID[-base]`; its directories under `work_dir()`
/// end in `-PID`.
const PREFIX: &str = "netplug-test-";

/// The test's files: the cached base and each run's context and logs.
fn work_dir() -> PathBuf {
    repo_root().join("target/container")
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program args`, bounded by `limit` (coreutils' `timeout`, which sends
/// SIGKILL 5 s after its SIGTERM).
fn bounded(limit: Duration, program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["--kill-after=5", &format!("{}", limit.as_secs()), program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run timeout {program}: {e}"))
}

/// Like `bounded`, failing the test unless it succeeds: its stdout, trimmed.
fn must(limit: Duration, program: &str, args: &[&str]) -> String {
    let out = bounded(limit, program, args);
    // timeout's own status when the time ran out, or when it killed.
    let late = if matches!(out.status.code(), Some(124 | 137)) { format!(", over {limit:?}") } else { String::new() };
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{late}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// For buildah's quick commands (from, mount, rm, rmi, inspect).
const QUICK: Duration = Duration::from_secs(60);

/// Removes, when dropped (the test passed or panicked), the containers
/// (which unmounts them), then the images, newest first, then the
/// files and directories it holds.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    paths: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for container in self.containers.iter().rev() {
            let _ = bounded(QUICK, "buildah", &["rm", container]);
        }
        for image in self.images.iter().rev() {
            let _ = bounded(QUICK, "buildah", &["rmi", "--force", image]);
        }
        for path in &self.paths {
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
    }
}

/// The process a name of ours ends with, when it is gone.
fn gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else { return false };
    let pid = rest.split('-').next().unwrap_or_default();
    pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// What earlier test processes that were killed left behind.
fn remove_leftovers() {
    let containers = must(QUICK, "buildah", &["containers", "--all", "--noheading", "--format", "{{.ContainerName}}"]);
    let mut cleanup = Cleanup::default();
    cleanup.containers = containers.lines().filter(|name| gone(name)).map(str::to_string).collect();
    let images = must(QUICK, "buildah", &["images", "--noheading", "--format", "{{.Name}}"]);
    cleanup.images =
        images.lines().filter(|name| name.strip_prefix("localhost/").is_some_and(gone)).map(str::to_string).collect();
    // Removed last first: the bases after the images built on them.
    cleanup.images.sort_by_key(|name| !name.ends_with("-base"));
    for entry in std::fs::read_dir(work_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.rsplit('-').next().unwrap_or_default();
        if pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            cleanup.paths.push(entry.path());
        }
    }
}

/// Debian bookworm, `debootstrap --variant=minbase`, as a tar file: made
/// once (about a minute, from deb.debian.org), then taken from target/.
/// debootstrap runs in a mount namespace of its own, so that the mounts it
/// makes in its target die with it even if it is killed.
fn debian_base() -> PathBuf {
    let tar = work_dir().join("debian-bookworm-minbase.tar");
    if tar.exists() {
        return tar;
    }
    let pid = std::process::id();
    let dir = work_dir().join(format!("debootstrap-{pid}"));
    let partial = work_dir().join(format!("debian-bookworm-minbase.tar.partial-{pid}"));
    let mut cleanup = Cleanup::default();
    cleanup.paths.extend([dir.clone(), partial.clone()]);
    let dir_arg = dir.to_str().unwrap();
    let args = ["--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "debootstrap", "--variant=minbase"];
    must(Duration::from_secs(300), "unshare", &[&args[..], &["bookworm", dir_arg]].concat());
    must(QUICK, "tar", &["--numeric-owner", "-C", dir_arg, "-cf", partial.to_str().unwrap(), "."]);
    std::fs::rename(&partial, &tar).unwrap();
    drop(cleanup);
    tar
}

/// `tar` imported as the local image `image`, through the working
/// container `container`.
fn import(tar: &Path, image: &str, container: &str, cleanup: &mut Cleanup) {
    let container = must(QUICK, "buildah", &["from", "--name", container, "scratch"]);
    cleanup.containers.push(container.clone());
    let mnt = must(QUICK, "buildah", &["mount", &container]);
    must(QUICK, "tar", &["--numeric-owner", "-C", &mnt, "-xf", tar.to_str().unwrap()]);
    must(QUICK, "buildah", &["umount", &container]);
    cleanup.images.push(image.to_string());
    must(QUICK, "buildah", &["commit", "--quiet", "--rm", &container, image]);
}

/// deploy/Dockerfile.runtime's build context in `dir`: the host, each
/// served guest's .wasm and the .cwasm this host compiles beside it (as
/// deploy/Dockerfile's build stage does), and deploy/netplug.toml.
fn prepare_context(dir: &Path) {
    let guests = dir.join("guests");
    std::fs::create_dir_all(&guests).unwrap();
    std::fs::copy(host_bin(), dir.join("host")).unwrap();
    std::fs::copy(image_config_path(), dir.join("netplug.toml")).unwrap();
    for name in IMAGE_GUESTS {
        let wasm = guests.join(format!("{name}.wasm"));
        std::fs::copy(guest(name), &wasm).unwrap();
        // resp imports wasi:keyvalue, which its listener grants.
        let grant: &[&str] = if name == "resp" { &["--grant", "wasi:keyvalue"] } else { &[] };
        let out = run_host(&[&["compile"], grant, &[wasm.to_str().unwrap()]].concat());
        assert!(out.status.success(), "host compile {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Runs in new network, mount and PID namespaces (`unshare --net --mount
/// --pid --fork --kill-child --mount-proc`), as their root, with `ROOT OUT
/// HELLO_PORT ADMIN_PORT USER PATH ENTRYPOINT...`: brings the loopback
/// interface up, mounts the image's root read-only over itself (the mounts
/// stay in the namespace) with /proc, a read-only /sys and a small /dev in
/// it, as a container runtime would, and starts the entrypoint there as
/// USER with only PATH and HOME, its stdout and stderr in OUT. Once
/// `/readyz` answers 200, one seed exchange; then what the host runs as,
/// two write attempts on the root (as USER, as root) and the host's exit
/// status after SIGTERM, one `key: value` line each.
const RUN_IMAGE: &str = r#"
set -u
root=$1 out=$2 hello=$3 admin=$4 user=$5 path=$6
shift 6
# A new network namespace's lo is down: SIOCGIFFLAGS, then SIOCSIFFLAGS
# with IFF_UP (`ip link set lo up` without needing iproute2).
python3 -c 'import fcntl, socket, struct
s = socket.socket()
flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))' || exit 1
mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" || exit 1
mount -t proc proc "$root/proc" && mount -t sysfs -o ro sysfs "$root/sys" || exit 1
mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev" || exit 1
for node in null zero full random urandom; do
    touch "$root/dev/$node" && mount --bind "/dev/$node" "$root/dev/$node" || exit 1
done
env -i PATH="$path" HOME=/nonexistent chroot --userspec="$user" "$root" "$@" \
    </dev/null >"$out/host.out" 2>"$out/host.log" &
host=$!
python3 - "$hello" "$admin" <<'EOF'
import socket, sys, time, urllib.error, urllib.request
hello, admin = int(sys.argv[1]), int(sys.argv[2])
def readyz():
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return repr(e)
deadline = time.monotonic() + 20
while readyz() != 200 and time.monotonic() < deadline:
    time.sleep(0.05)
try:
    with socket.create_connection(("127.0.0.1", hello), timeout=10) as s:
        s.settimeout(10)
        s.sendall(b"this is client...")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    print("seed:", reply.decode("latin-1"))
except OSError as e:
    print("seed: failed:", repr(e))
print("readyz:", readyz())
EOF
echo "cmdline: $(tr '\0' ' ' </proc/$host/cmdline)"
awk '/^(Uid|Gid|Groups|CapEff):/ { $1 = tolower($1); print }' /proc/$host/status
awk '$5 == "/" { print "root-mount:", $6 }' /proc/$host/mountinfo
said=$(chroot --userspec="$user" "$root" touch /written-by-the-user 2>&1)
echo "user-write: $? $said"
said=$(touch "$root/written-by-root" 2>&1)
echo "root-write: $? $said"
kill -TERM $host
wait $host
echo "exit: $?"
"#;

/// The port of an `address = "HOST:PORT"`.
fn port(address: &toml::Value) -> String {
    address.as_str().unwrap().rsplit(':').next().unwrap().to_string()
}

#[test]
fn the_image_builds_with_buildah_and_serves_as_10001_on_a_read_only_root() {
    if !installed(&["buildah", "debootstrap", "unshare", "chroot", "python3"]) {
        return;
    }
    if !running_as_root() {
        let test = std::thread::current().name().unwrap_or("a test").to_string();
        let line = format!("SKIPPED: {test} needs root (buildah's storage, unshare --net)\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    let start = Instant::now();
    std::fs::create_dir_all(work_dir()).unwrap();
    remove_leftovers();
    let base_tar = debian_base();
    eprintln!("debian base: {:?}", start.elapsed());

    let pid = std::process::id();
    let mut cleanup = Cleanup::default();
    let base = format!("localhost/{PREFIX}{pid}-base");
    import(&base_tar, &base, &format!("{PREFIX}{pid}-import"), &mut cleanup);
    let context = work_dir().join(format!("context-{pid}"));
    let run = work_dir().join(format!("run-{pid}"));
    cleanup.paths.extend([context.clone(), run.clone()]);
    prepare_context(&context);
    std::fs::create_dir_all(&run).unwrap();
    eprintln!("base imported, context ready: {:?}", start.elapsed());

    let image = format!("localhost/{PREFIX}{pid}");
    cleanup.images.push(image.clone());
    let dockerfile = repo_root().join("deploy/Dockerfile.runtime");
    must(
        Duration::from_secs(180),
        "buildah",
        &[
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            "--build-arg",
            &format!("RUNTIME_IMAGE={base}"),
            "-f",
            dockerfile.to_str().unwrap(),
            "-t",
            &image,
            context.to_str().unwrap(),
        ],
    );
    eprintln!("image built: {:?}", start.elapsed());

    // What a runtime would run: the image's configuration.
    let inspect = must(QUICK, "buildah", &["inspect", "--type", "image", &image]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("buildah inspect's JSON");
    let config = &inspect["OCIv1"]["config"];
    let user = config["User"].as_str().expect("the image's user");
    assert_eq!(user, "10001:10001");
    let entrypoint: Vec<&str> =
        config["Entrypoint"].as_array().expect("an entrypoint").iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(entrypoint, ["/usr/local/bin/host", "serve", "/etc/netplug/netplug.toml"]);
    assert_eq!(config["StopSignal"], "SIGTERM");
    let path = config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|e| e.as_str()?.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");

    let container = format!("{PREFIX}{pid}");
    cleanup.containers.push(container.clone());
    must(QUICK, "buildah", &["from", "--pull=never", "--name", &container, &image]);
    let root = must(QUICK, "buildah", &["mount", &container]);

    let table: toml::Table = std::fs::read_to_string(image_config_path()).unwrap().parse().unwrap();
    let hello = port(&table["listeners"]["hello"]["address"]);
    let admin = port(&table["admin"]["address"]);
    let namespaces = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"];
    let script = ["sh", "-c", RUN_IMAGE, "sh", &root, run.to_str().unwrap(), &hello, &admin, user, path];
    let args: Vec<&str> = namespaces.into_iter().chain(script).chain(entrypoint.iter().copied()).collect();
    let out = bounded(Duration::from_secs(90), "unshare", &args);
    eprintln!("image run: {:?}", start.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = std::fs::read_to_string(run.join("host.log")).unwrap_or_default();
    let host_out = std::fs::read_to_string(run.join("host.out")).unwrap_or_default();
    let context_text = format!(
        "{}\nstdout:\n{stdout}\nstderr:\n{}\nthe host's stdout:\n{host_out}\nthe host's log:\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the namespace's script: {context_text}");
    let facts: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once(": ")).collect();
    let fact = |key: &str| *facts.get(key).unwrap_or_else(|| panic!("no `{key}:` line: {context_text}"));

    assert_eq!(fact("seed"), "HELLO,WORLD", "{context_text}");
    assert_eq!(fact("readyz"), "200", "{context_text}");
    assert_eq!(fact("cmdline").trim_end(), entrypoint.join(" "), "{context_text}");
    assert_eq!(fact("uid"), "10001 10001 10001 10001", "real, effective, saved, fs: {context_text}");
    assert_eq!(fact("gid"), "10001 10001 10001 10001", "{context_text}");
    assert_eq!(fact("groups").trim(), "10001", "{context_text}");
    assert_eq!(fact("capeff"), "0000000000000000", "no capability: {context_text}");
    assert!(fact("root-mount").split(',').any(|o| o == "ro"), "the host's root is read-only: {context_text}");
    for who in ["user-write", "root-write"] {
        let (status, said) = fact(who).split_once(' ').unwrap_or((fact(who), ""));
        assert_ne!(status, "0", "{who}: {context_text}");
        assert!(said.contains("Read-only file system"), "{who}: {context_text}");
    }
    assert_eq!(fact("exit"), "0", "SIGTERM: the host exits 0: {context_text}");
    assert!(host_out.contains(&format!("listener hello listening on 0.0.0.0:{hello}\n")), "{context_text}");
    assert!(log.contains("serving 4 listener(s) from /etc/netplug/netplug.toml"), "{context_text}");
    // .cwasm guests: not a word about the cache, nor any other warning.
    assert!(!log.contains(" WARN ") && !log.contains(" ERROR "), "{context_text}");
    drop(cleanup);
    eprintln!("cleaned up: {:?}", start.elapsed());
}

/// The instructions of a Dockerfile's text from its last `FROM` on: no
/// comment, no blank line.
fn final_stage(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    let from = lines.iter().rposition(|l| l.starts_with("FROM ")).expect("a FROM");
    lines[from..].to_vec()
}

#[test]
fn deploy_dockerfile_runtime_is_the_final_stage_of_deploy_dockerfile() {
    let full = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let runtime = std::fs::read_to_string(repo_root().join("deploy/Dockerfile.runtime")).unwrap();
    // The base images are build arguments, declared before the first FROM.
    let before_from: Vec<&str> = full.lines().take_while(|l| !l.starts_with("FROM ")).collect();
    let arg = |name: &str| {
        let prefix = format!("ARG {name}=");
        *before_from.iter().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("deploy/Dockerfile: {prefix}"))
    };
    arg("BUILD_IMAGE");
    assert!(full.contains("\nFROM ${BUILD_IMAGE} AS build\n"), "deploy/Dockerfile's build stage");
    assert!(
        runtime.lines().any(|l| l == arg("RUNTIME_IMAGE")),
        "deploy/Dockerfile.runtime's default base is deploy/Dockerfile's: {}",
        arg("RUNTIME_IMAGE")
    );
    // The same stage, its files from the build stage there and from the
    // context here.
    let mirrored: Vec<String> = final_stage(&full)
        .iter()
        .map(|l| {
            l.replace("COPY --from=build /src/target/release/host ", "COPY host ")
                .replace("COPY --from=build /out/guests/ ", "COPY guests/ ")
                .replace("COPY deploy/netplug.toml ", "COPY netplug.toml ")
        })
        .collect();
    assert_eq!(mirrored[0], "FROM ${RUNTIME_IMAGE}");
    assert_eq!(
        mirrored,
        final_stage(&runtime),
        "deploy/Dockerfile.runtime must be deploy/Dockerfile's final stage, its files taken from the context"
    );
}
