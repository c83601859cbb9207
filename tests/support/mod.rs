//! Shared helpers for the end-to-end tests: start the real `host` binary on
//! port 0, find the bound address, collect its log, and stop it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_host")
}

/// The repository: the host package is `host/` in it.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A built guest component; the guests are built by `make build`.
pub fn guest(name: &str) -> PathBuf {
    let path = repo_root().join("target/wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    path
}

/// A Python client of tests/clients.
pub fn python_script(name: &str) -> PathBuf {
    repo_root().join("tests/clients").join(name)
}

/// The compiled-guest cache of the hosts this test process starts: a
/// directory of its own under cargo's scratch space, never the user's
/// `~/.cache/netplug`. The host creates it (with the permissions it wants);
/// the directories of earlier test processes that are gone are removed.
pub fn cache_dir() -> PathBuf {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    static CLEAN: std::sync::Once = std::sync::Once::new();
    CLEAN.call_once(|| {
        for entry in std::fs::read_dir(scratch).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("netplug-cache-")) else { continue };
            let gone = pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    scratch.join(format!("netplug-cache-{}", std::process::id()))
}

/// A command for the host binary, with its cache in `cache_dir()`. Every
/// host a test starts is made here.
pub fn host_command() -> Command {
    let mut command = Command::new(host_bin());
    command.env("NETPLUG_CACHE_DIR", cache_dir());
    command
}

/// The host's stderr, line by line, as it arrives.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    /// Set at the end of the stream: no line will come.
    ended: std::sync::atomic::AtomicBool,
}

/// A running `host run GUEST --port 0 ...`, killed when dropped.
pub struct Host {
    child: Child,
    /// The first address on stdout: the listener of `host run`, the first
    /// listener of `host serve`.
    pub addr: SocketAddr,
    log: Arc<Log>,
    out: Arc<Log>,
}

/// Waits up to `patience` for a line of `log` that satisfies `pred`.
fn wait_line(log: &Log, patience: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + patience;
    let mut lines = log.lines.lock().unwrap();
    loop {
        if let Some(line) = lines.iter().find(|l| pred(l)) {
            return Some(line.clone());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || log.ended.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        lines = log.grew.wait_timeout(lines, left).unwrap().0;
    }
}

impl Host {
    pub fn serve(guest_name: &str, extra: &[&str]) -> Host {
        Self::serve_path(&guest(guest_name), extra)
    }

    pub fn serve_path(guest: &Path, extra: &[&str]) -> Host {
        Self::serve_with_env(guest, extra, &[])
    }

    /// Like `serve_path`, with extra environment variables for the host.
    pub fn serve_with_env(guest: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Host {
        let mut command = host_command();
        command.envs(env.iter().copied()).arg("run").arg(guest).args(["--port", "0"]).args(extra);
        Self::start(command)
    }

    /// Starts `command`, a `host run ... --port 0` (possibly behind a
    /// wrapper that execs it, such as `prlimit`), and waits for its address.
    pub fn start(mut command: Command) -> Host {
        raise_fd_limit();
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start host");
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().push(line);
                sink.grew.notify_all();
            }
        });
        // Stdout names the bound addresses (`listening on ADDR` for `host
        // run`, `listener NAME listening on ADDR` for each listener of `host
        // serve`); it is read to its end so the host never blocks on it.
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Log::default());
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().push(line);
                sink.grew.notify_all();
            }
            // End of stdout: wake waiters so they fail fast.
            let _guard = sink.lines.lock().unwrap();
            sink.ended.store(true, std::sync::atomic::Ordering::SeqCst);
            sink.grew.notify_all();
        });
        let first = wait_line(&out, PATIENCE, |_| true);
        let addr = first.as_deref().and_then(|l| l.split("listening on ").nth(1));
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            // The host is gone, so its stderr is at its end.
            let _ = log_reader.join();
            panic!("host did not start: stdout {first:?}, log {:?}", log.lines.lock().unwrap());
        };
        let addr: SocketAddr = addr.parse().expect("parse the bound address");
        Host { child, addr, log, out }
    }

    /// `host serve CONFIG` (guest paths in it relative to it), waiting for
    /// its first listener.
    pub fn serve_config(config: &Path, extra: &[&str]) -> Host {
        let mut command = host_command();
        command.arg("serve").arg(config).args(extra);
        Self::start(command)
    }

    /// The address of `host serve`'s listener `name`, once it is listening.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let prefix = format!("listener {name} listening on ");
        let line = wait_line(&self.out, PATIENCE, |l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no listener {name} within {PATIENCE:?}; log:\n{}", self.log().join("\n")));
        line[prefix.len()..].parse().expect("parse the bound address")
    }

    /// The admin endpoint's address (`--admin-addr`, `[admin]`), printed on
    /// stdout as `admin listening on ADDR`.
    pub fn admin(&self) -> SocketAddr {
        let prefix = "admin listening on ";
        let line = wait_line(&self.out, PATIENCE, |l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no admin address within {PATIENCE:?}; log:\n{}", self.log().join("\n")));
        line[prefix.len()..].parse().expect("parse the admin address")
    }

    /// How many times listener `name` has started (each start prints its
    /// address once).
    pub fn listener_starts(&self, name: &str) -> usize {
        let prefix = format!("listener {name} listening on ");
        self.out.lines.lock().unwrap().iter().filter(|l| l.starts_with(&prefix)).count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host's stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred`, returning it.
    pub fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_line(&self.log, PATIENCE, pred)
            .unwrap_or_else(|| panic!("no log line {what} within {PATIENCE:?}; log:\n{}", self.log().join("\n")))
    }

    /// Lines that contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit()
    }

    /// Waits for the host to exit on its own (after a signal already sent),
    /// bounded by `PATIENCE`.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > PATIENCE {
                panic!("host did not exit within {PATIENCE:?}; log:\n{}", self.log().join("\n"));
            }
            // Poll interval.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until the host holds no TCP connection: every connection it
    /// accepted is closed on its side.
    pub fn wait_connections_closed(&self) {
        let start = Instant::now();
        loop {
            let open = tcp_connection_count(self.pid());
            if open == 0 {
                return;
            }
            assert!(start.elapsed() < PATIENCE, "the host still holds {open} connection(s) after {PATIENCE:?}");
            // Poll interval.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tests run in parallel threads of one process, and the load tests hold
/// hundreds of sockets each: lift the soft open-file limit to the hard one
/// (the host children inherit it too). Returns the limit now in force.
pub fn raise_fd_limit() -> libc::rlim_t {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain libc calls on a local struct.
        unsafe {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    });
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

/// Reads `pipe` to its end on a thread of its own, into a buffer that can be
/// looked at before the end.
fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = buffer.clone();
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buffer, handle)
}

/// Runs `host` to completion with `args`, bounded by `PATIENCE`. Its stdout
/// and stderr are read while it runs, so it never blocks on a full pipe.
pub fn run_host(args: &[&str]) -> Output {
    let mut child = host_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start host");
    let (stdout, stdout_reader) = drain(child.stdout.take().unwrap());
    let (stderr, stderr_reader) = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "host {args:?} did not finish within {PATIENCE:?}; stderr so far:\n{}",
                String::from_utf8_lossy(&stderr.lock().unwrap())
            );
        }
        // Poll interval.
        std::thread::sleep(Duration::from_millis(10));
    };
    // The host has exited, so both pipes are at their end.
    stdout_reader.join().unwrap();
    stderr_reader.join().unwrap();
    let stdout = std::mem::take(&mut *stdout.lock().unwrap());
    let stderr = std::mem::take(&mut *stderr.lock().unwrap());
    Output { status, stdout, stderr }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect to host");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads until the peer closes, returning everything it sent.
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the data counts as the end.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read failed after {} bytes: {e}", out.len()),
        }
    }
}

/// The seed client's side of the exchange: returns what the server sent and
/// the local address it connected from.
pub fn seed_exchange(addr: SocketAddr) -> (Vec<u8>, SocketAddr) {
    let mut stream = connect(addr);
    let local = stream.local_addr().unwrap();
    stream.write_all(b"this is client...").unwrap();
    (read_to_end(&mut stream), local)
}

/// Runs `count` seed exchanges at once, returning how many got `HELLO,WORLD`.
pub fn concurrent_seed_exchanges(addr: SocketAddr, count: usize) -> usize {
    let handles: Vec<_> =
        (0..count).map(|_| std::thread::spawn(move || seed_exchange(addr).0 == b"HELLO,WORLD")).collect();
    handles.into_iter().map(|h| h.join().unwrap_or(false)).filter(|ok| *ok).count()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// TCP connections a process holds open (its listeners not counted): its
/// socket descriptors looked up in the kernel's TCP tables.
pub fn tcp_connection_count(pid: u32) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|table| {
            std::fs::read_to_string(table).unwrap_or_default().lines().skip(1).map(str::to_string).collect::<Vec<_>>()
        })
        .filter(|row| {
            // sl local remote state ... uid timeout inode
            let fields: Vec<&str> = row.split_whitespace().collect();
            const LISTEN: &str = "0A";
            fields.len() > 9 && fields[3] != LISTEN && inodes.contains(fields[9])
        })
        .count()
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The guests the container image serves: deploy/Dockerfile compiles each
/// into `IMAGE_GUEST_DIR`, where deploy/netplug.toml names them.
pub const IMAGE_GUESTS: [&str; 4] = ["hello", "echo", "http", "resp"];
pub const IMAGE_GUEST_DIR: &str = "/usr/local/lib/netplug/";

/// deploy/netplug.toml, the image's configuration.
pub fn image_config_path() -> PathBuf {
    repo_root().join("deploy/netplug.toml")
}

/// `host compile` of each image guest into `dir`, as deploy/Dockerfile
/// does it.
pub fn compile_image_guests(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in IMAGE_GUESTS {
        let cwasm = dir.join(format!("{name}.cwasm"));
        // resp imports wasi:keyvalue, which its listener grants.
        let grant: &[&str] = if name == "resp" { &["--grant", "wasi:keyvalue"] } else { &[] };
        let guest = guest(name);
        let mut args = vec!["compile", guest.to_str().unwrap(), "-o", cwasm.to_str().unwrap()];
        args.extend_from_slice(grant);
        let out = run_host(&args);
        assert!(out.status.success(), "host compile {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// deploy/netplug.toml for a test: its guests taken from `guest_dir`
/// instead of the image's directory; with `loopback`, every address
/// `127.0.0.1:0`; without `admin`, its `[admin]` table left out.
pub fn image_config(guest_dir: &Path, loopback: bool, admin: bool) -> String {
    image_config_from(&image_config_path(), guest_dir, loopback, admin)
}

/// [`image_config`] of another configuration for the image, `path`
/// (deploy/kubernetes/redis/netplug.toml).
pub fn image_config_from(path: &Path, guest_dir: &Path, loopback: bool, admin: bool) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(IMAGE_GUEST_DIR), "{} takes its guests from {IMAGE_GUEST_DIR}", path.display());
    let mut out = String::new();
    let mut in_admin = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_admin = line.trim() == "[admin]";
        }
        if in_admin && !admin {
            continue;
        }
        if loopback && line.starts_with("address = ") {
            out.push_str("address = \"127.0.0.1:0\"\n");
            continue;
        }
        out.push_str(&line.replace(IMAGE_GUEST_DIR, &format!("{}/", guest_dir.display())));
        out.push('\n');
    }
    out
}

/// One HTTP/1.1 request (no body) to `addr`, answered with `Connection:
/// close`: the status and the body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = connect(addr);
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let response = String::from_utf8(read_to_end(&mut stream)).expect("a text response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body.to_string())
}

/// Seed exchanges on `addr` from `clients` threads without pause until
/// finished (and at most 180 s): a reply in `greetings` passes, anything
/// else (another reply, an error, a reset) fails, and when is kept.
pub struct SeedLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    passed: Arc<std::sync::atomic::AtomicU64>,
    failures: Arc<Mutex<Vec<Instant>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SeedLoad {
    pub fn start(addr: SocketAddr, clients: usize, greetings: &'static [&'static [u8]]) -> SeedLoad {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let passed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, passed, failures) = (stop.clone(), passed.clone(), failures.clone());
                std::thread::spawn(move || {
                    // Bounded: the test finishes it, and at most this long.
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(180) {
                        match try_seed_exchange(addr) {
                            Ok(reply) if greetings.contains(&reply.as_slice()) => {
                                passed.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => failures.lock().unwrap().push(Instant::now()),
                        }
                    }
                })
            })
            .collect();
        SeedLoad { stop, passed, failures, threads }
    }

    /// Exchanges so far: (passed, failed).
    pub fn counts(&self) -> (u64, usize) {
        (self.passed.load(std::sync::atomic::Ordering::Relaxed), self.failures.lock().unwrap().len())
    }

    /// Waits until `n` more exchanges have passed.
    pub fn progress(&self, n: u64) {
        let target = self.counts().0 + n;
        let start = Instant::now();
        while self.counts().0 < target {
            assert!(start.elapsed() < PATIENCE, "the load made no progress");
            // Poll interval.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the load: the exchanges that passed, and when each failure was.
    pub fn finish(self) -> (u64, Vec<Instant>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.passed.load(std::sync::atomic::Ordering::Relaxed), failures)
    }
}

/// One seed exchange that reports failure instead of panicking.
pub fn try_seed_exchange(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, PATIENCE)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.write_all(b"this is client...")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

/// A real `redis-server` on a free loopback port, without persistence
/// (its working directory under the tests' temporary directory), killed
/// when dropped. Fails, naming the package, when it is not installed.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// With more `redis-server` arguments (`--maxmemory 8mb`, ...).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        RedisServer::start_at(port, extra)
    }

    /// On `port` (again, after a `stop`), with more arguments; its working
    /// directory is the port's, so a cluster node finds its nodes file.
    pub fn start_at(port: u16, extra: &[&str]) -> RedisServer {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir", dir.to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it with `apt-get install redis-server redis-tools`, as .ci/run does")
            });
        let mut server = RedisServer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(server.addr).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("redis-server exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "redis-server not listening on {} within {PATIENCE:?}", server.addr);
            // Poll interval.
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl RedisServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server and waits for it to be gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in TCP mode in front of `backends` (each a service address
/// and the admin address whose `/readyz` is its health check, every
/// `check_interval`; out after one failed check, in after one good one),
/// in the foreground, killed on drop.
pub struct Balancer {
    child: Child,
    pub addr: SocketAddr,
}

impl Balancer {
    pub fn start(dir: &Path, backends: &[(SocketAddr, SocketAddr)], check_interval: Duration) -> Balancer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = format!(
            "global\n    maxconn 2000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n\
             \x20   retries 3\n    option redispatch\n\
             listen fleet\n    bind 127.0.0.1:{port}\n    balance roundrobin\n\
             \x20   option httpchk GET /readyz\n    http-check expect status 200\n\
             \x20   default-server inter {}ms fall 1 rise 1\n",
            check_interval.as_millis()
        );
        for (i, (service, admin)) in backends.iter().enumerate() {
            config.push_str(&format!("    server h{i} {service} check addr {} port {}\n", admin.ip(), admin.port()));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is not installed: `apt-get install haproxy` (.ci/run installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < PATIENCE, "haproxy did not start listening");
            // Poll interval.
            std::thread::sleep(Duration::from_millis(20));
        }
        Balancer { child, addr }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether every tool in `tools` (system servers and clients the tests
/// start: redis-server, redis-cli, redis-benchmark, haproxy) is on the
/// PATH. For each one missing, one line goes to the test run's stderr,
/// past the harness's capture so that every run shows it:
/// `SKIPPED: TEST needs `TOOL` (apt-get install PACKAGE)`, and the test
/// returns early. `.ci/run`, which installs them all, fails a run that
/// printed such a line.
pub fn installed(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        // haproxy takes -v; the Redis tools, --version.
        .filter(|tool| {
            let flag = if *tool == "haproxy" { "-v" } else { "--version" };
            !Command::new(tool).arg(flag).output().is_ok_and(|out| out.status.success())
        })
        .collect();
    for tool in &missing {
        let package = match *tool {
            "redis-cli" | "redis-benchmark" => "redis-tools",
            "unshare" => "util-linux",
            "chroot" => "coreutils",
            other => other,
        };
        let test = std::thread::current().name().unwrap_or("a test").to_string();
        let line = format!("SKIPPED: {test} needs `{tool}` (apt-get install {package})\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    missing.is_empty()
}

/// A host process started with stdio of the test's own choosing (where
/// `Host` would capture its log), killed if the test fails while it runs.
pub struct Running(pub Child);

impl Running {
    /// Waits for the exit, bounded by `PATIENCE`.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "host did not exit within {PATIENCE:?}");
            // Poll interval.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the sample `series` (name and labels, exactly as printed)
/// in a scrape of `/metrics`, if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub fn scrape(admin: SocketAddr) -> String {
    let (status, body) = http_request(admin, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}
