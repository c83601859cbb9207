//! Starting and stopping the servers under test.
//!
//! Every server is started pinned to CPU 0 with `--port 0`; its address is
//! taken from its `listening on ADDR` line. `Server` kills it on drop
//! (SIGTERM, wait, SIGKILL as a last resort), so an error anywhere in the
//! orchestrator never leaves a server behind.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Which server to run.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// `host run GUEST.wasm` with extra flags, by `Paths::host` or, in the
    /// A/B mode, by one of the two builds compared.
    Host { guest: &'static str, extra: Vec<String>, build: Option<Build> },
    /// `bench native seed|echo`.
    Native { mode: &'static str },
    /// bench/seed_server.py: the seed's own blocking design.
    Python,
    /// `redis-server` with persistence off: the peer of resp.wasm, and the
    /// upstream behind the proxies. It prints no `listening on` line: the
    /// port is chosen up front and the server polled until it accepts.
    Redis,
    /// HAProxy in TCP mode, one thread, relaying to `upstream`: the peer of
    /// proxy.wasm. Its configuration is generated in the logs directory.
    Haproxy { upstream: SocketAddr },
    /// A `host bundle` component run by the stock wasmtime CLI
    /// (src/bundle.rs); it prints `listening on ADDR` as `host run` does.
    Stock { wasmtime: PathBuf, app: PathBuf },
}

/// One of the two host builds an A/B run compares.
#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    /// "a" or "b": the label in tags and log names.
    pub tag: &'static str,
    pub bin: PathBuf,
    /// Where this side's guests are, if not the run's (comparing two
    /// builds of the guests under one host).
    pub guests: Option<PathBuf>,
    /// Serve through `host serve` and a one-listener configuration file
    /// instead of `host run` (comparing the two on the hot path).
    pub serve: bool,
}

/// Paths of everything the orchestrator runs.
#[derive(Clone, Debug)]
pub struct Paths {
    pub host: PathBuf,
    pub guests: PathBuf,
    pub python_server: PathBuf,
    pub bench: PathBuf,
    pub logs: PathBuf,
    /// Private compiled-component cache, so "warm" and "cold" are ours to
    /// control and the user's own cache is left alone.
    pub cache_dir: PathBuf,
}

/// CPU pinning: server on one core, load generator on the other.
pub const SERVER_CPU: &str = "0";
pub const LOADGEN_CPU: &str = "1";

impl Kind {
    /// `host run GUEST.wasm EXTRA...` by `Paths::host`.
    pub fn host(guest: &'static str, extra: Vec<String>) -> Kind {
        Kind::Host { guest, extra, build: None }
    }

    /// The command line, prefixed with `taskset -c SERVER_CPU`.
    pub fn command(&self, paths: &Paths, port: u16) -> Command {
        self.command_on(paths, port, SERVER_CPU)
    }

    /// The command line, prefixed with `taskset -c CPU`.
    pub fn command_on(&self, paths: &Paths, port: u16, cpu: &str) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cpu]);
        match self {
            Kind::Host { guest, extra, build } => {
                // Each build of an A/B run compiles into its own cache: two
                // builds may well differ in what they would cache.
                let (bin, cache) = match build {
                    Some(b) => (&b.bin, paths.cache_dir.join(b.tag)),
                    None => (&paths.host, paths.cache_dir.clone()),
                };
                let guests = build.as_ref().and_then(|b| b.guests.as_ref()).unwrap_or(&paths.guests);
                let guest = guests.join(guest);
                if let Some(b) = build.as_ref().filter(|b| b.serve) {
                    assert!(extra.is_empty(), "flags for `host serve` go in its file");
                    let config = paths.logs.join(format!("{}-{port}.toml", b.tag));
                    let text =
                        format!("[listeners.bench]\naddress = \"127.0.0.1:{port}\"\nguest = \"{}\"\n", guest.display());
                    std::fs::write(&config, text).expect("write the listener's configuration file");
                    cmd.arg(bin).arg("serve").arg(config).args(["--log-level", "warn"]);
                } else {
                    cmd.arg(bin).arg("run").arg(guest);
                    cmd.args(["--port", &port.to_string(), "--addr", "127.0.0.1", "--log-level", "warn"]);
                    cmd.args(extra);
                }
                cmd.env("NETPLUG_CACHE_DIR", cache);
            }
            Kind::Native { mode } => {
                cmd.arg(&paths.bench).args(["native", mode, "--port", &port.to_string()]);
            }
            Kind::Python => {
                cmd.arg("python3").arg(&paths.python_server).args(["--port", &port.to_string()]);
            }
            Kind::Redis => {
                cmd.arg("redis-server").args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
                cmd.args(["--save", "", "--appendonly", "no", "--loglevel", "warning"]);
            }
            Kind::Haproxy { upstream } => {
                let config = paths.logs.join(format!("haproxy-{port}.cfg"));
                std::fs::write(&config, haproxy_config(port, *upstream)).expect("write the HAProxy configuration");
                // -db: foreground, no daemon; -q: no warnings on start.
                cmd.arg("haproxy").args(["-db", "-q", "-f"]).arg(config);
            }
            Kind::Stock { wasmtime, app } => {
                cmd.arg(wasmtime).args(["run", "-S", "inherit-network=y"]).arg(app);
                cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--log-level", "warn"]);
            }
        }
        cmd
    }

    /// Servers that are given a port rather than reporting the one they
    /// bound (`--port 0` and a `listening on` line).
    fn polled(&self) -> bool {
        matches!(self, Kind::Redis | Kind::Haproxy { .. })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Kind::Host { build: Some(b), .. } => b.tag,
            Kind::Host { build: None, .. } => "host",
            Kind::Native { .. } => "native",
            Kind::Python => "python",
            Kind::Redis => "redis",
            Kind::Haproxy { .. } => "haproxy",
            Kind::Stock { .. } => "stock",
        }
    }
}

pub struct Server {
    child: Child,
    /// SIGTERM, or HAProxy's graceful stop (SIGUSR1: SIGTERM is its hard
    /// stop, which exits with status 143).
    stop_signal: libc::c_int,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    /// Starts `kind` on port 0 and waits (at most `limit`) for its
    /// `listening on` line. stderr goes to a log file under `paths.logs`.
    pub fn start(kind: &Kind, paths: &Paths, tag: &str, limit: Duration) -> Result<Server> {
        Server::start_on(kind, paths, tag, limit, SERVER_CPU)
    }

    /// `start`, pinned to `cpu`: an upstream behind a proxy under test runs
    /// beside the load generator, leaving CPU 0 to the proxy.
    pub fn start_on(kind: &Kind, paths: &Paths, tag: &str, limit: Duration, cpu: &str) -> Result<Server> {
        let log = paths.logs.join(format!("{tag}.stderr"));
        let stderr = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let port = if kind.polled() { free_port()? } else { 0 };
        let mut child = kind
            .command_on(paths, port, cpu)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {} server", kind.label()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        // Reads the first line, then keeps draining stdout so a chatty
        // server can never block on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let stop_signal = if matches!(kind, Kind::Haproxy { .. }) { libc::SIGUSR1 } else { libc::SIGTERM };
        let mut server = Server { child, stop_signal, addr: "127.0.0.1:0".parse()?, log };
        if kind.polled() {
            server.addr = SocketAddr::from(([127, 0, 0, 1], port));
            server.wait_accepting(kind, limit)?;
            return Ok(server);
        }
        let line = match rx.recv_timeout(limit) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => bail!("{} server exited before listening ({})", kind.label(), server.tail_log()),
            Err(_) => bail!("{} server did not print `listening on` within {limit:?}", kind.label()),
        };
        server.addr = parse_listening(&line)?;
        Ok(server)
    }

    /// Polls until a connect to `addr` succeeds (the server is up), the
    /// server exits, or `limit` passes.
    fn wait_accepting(&mut self, kind: &Kind, limit: Duration) -> Result<()> {
        let end = Instant::now() + limit;
        loop {
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} server exited before accepting ({status}): {}", kind.label(), self.tail_log());
            }
            if Instant::now() > end {
                bail!("{} server did not accept on {} within {limit:?}", kind.label(), self.addr);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Last lines of the server's stderr, for error messages.
    pub fn tail_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// SIGTERM (HAProxy: SIGUSR1), then wait up to 15 s (the host drains in-flight connections
    /// for up to its 10 s shutdown timeout), then SIGKILL. Returns whether
    /// it exited cleanly by itself.
    pub fn stop(&mut self) -> Result<bool> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status.success());
        }
        terminate_with(&mut self.child, Duration::from_secs(15), self.stop_signal)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Sends SIGTERM and waits; SIGKILL after `grace`. Ok(true) if the process
/// exited with status 0 on its own.
pub fn terminate(child: &mut Child, grace: Duration) -> Result<bool> {
    terminate_with(child, grace, libc::SIGTERM)
}

/// `terminate` with `signal` in place of SIGTERM.
pub fn terminate_with(child: &mut Child, grace: Duration, signal: libc::c_int) -> Result<bool> {
    // SAFETY: kill(2) on our own child's pid; the child is not yet reaped
    // (try_wait returned None), so the pid cannot have been reused.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(false)
}

/// A loopback port free right now (bound, read, released), for servers
/// that cannot report the one they bound themselves.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// HAProxy's configuration for the proxy rows: TCP mode, one thread, one
/// listener relaying to one server; no health checks, no logging.
pub fn haproxy_config(port: u16, upstream: SocketAddr) -> String {
    format!(
        "global\n    nbthread 1\n    maxconn 4096\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\n\
         listen p\n    bind 127.0.0.1:{port}\n    server s {upstream}\n"
    )
}

/// `listening on ADDR` (`host run`, the native servers) or `listener NAME
/// listening on ADDR` (`host serve`).
pub fn parse_listening(line: &str) -> Result<SocketAddr> {
    line.trim()
        .split_once("listening on ")
        .map(|(_, addr)| addr)
        .ok_or_else(|| anyhow!("unexpected first stdout line {line:?}"))?
        .parse()
        .with_context(|| format!("bad address in {line:?}"))
}
