//! The load generator. Runs pinned to its own CPU (the orchestrator starts
//! it under `taskset`), on a current-thread tokio runtime: one core, one
//! thread, no cross-thread wakeups in the client's own numbers.
//!
//! Every mode is bounded twice: by a measured duration and by a maximum
//! operation count, and every single operation has a timeout, so a stuck
//! server cannot hang the run.
//!
//! Output: one line `RESULT key=value ...` on stdout, parsed by the
//! orchestrator. The server's CPU time is read here, from /proc, right at
//! the edges of the measured window, so it covers exactly the counted work.

use crate::proc_stats;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One operation (exchange, round trip, connect) taking longer than this
/// counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Opts {
    pub addr: SocketAddr,
    pub conns: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_ops: u64,
    pub server_pid: u32,
    /// Message size for echo modes.
    pub size: usize,
    /// Messages in flight per connection (echo throughput).
    pub window: usize,
    /// Load/measure/unload cycles (idle mode).
    pub rounds: usize,
}

/// `bench loadgen MODE --addr A [--conns N] ...`
pub fn main(args: &[String]) -> Result<()> {
    let mode = args.first().context("loadgen: missing mode")?.clone();
    let mut o = Opts {
        addr: "127.0.0.1:0".parse()?,
        conns: 1,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(3),
        max_ops: 10_000_000,
        server_pid: 0,
        size: 64,
        window: 4,
        rounds: 2,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => o.addr = v.parse()?,
            "--conns" => o.conns = v.parse()?,
            "--warmup" => o.warmup = Duration::from_secs_f64(v.parse()?),
            "--duration" => o.duration = Duration::from_secs_f64(v.parse()?),
            "--max-ops" => o.max_ops = v.parse()?,
            "--server-pid" => o.server_pid = v.parse()?,
            "--size" => o.size = v.parse()?,
            "--window" => o.window = v.parse()?,
            "--rounds" => o.rounds = v.parse()?,
            _ => bail!("loadgen: unknown flag {flag}"),
        }
    }
    if o.server_pid == 0 {
        bail!("loadgen: --server-pid is required (CPU time is read from /proc)");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let line = rt.block_on(async {
        match mode.as_str() {
            "seed" => run_timed(&o, seed_worker).await,
            "echo-rr" => run_timed(&o, rr_worker).await,
            "echo-tput" => run_timed(&o, tput_worker).await,
            "idle" => idle(&o).await,
            _ => bail!("loadgen: unknown mode {mode}"),
        }
    })?;
    // Don't wait for stragglers (tasks still blocked on a dead server).
    rt.shutdown_timeout(Duration::from_millis(100));
    println!("RESULT {line}");
    Ok(())
}

/// State shared by the workers of one timed run.
struct Shared {
    /// Set during the measured window: only then are operations counted.
    measuring: AtomicBool,
    stop: AtomicBool,
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    opts: Opts,
}

/// What a worker hands back: its latency samples (ns) and first error.
#[derive(Default)]
struct WorkerOut {
    lat_ns: Vec<u64>,
    first_error: Option<String>,
}

impl Shared {
    fn record_error(&self, out: &mut WorkerOut, e: anyhow::Error) {
        self.errors.fetch_add(1, Relaxed);
        if out.first_error.is_none() {
            out.first_error = Some(format!("{e:#}"));
        }
    }
    fn running(&self) -> bool {
        !self.stop.load(Relaxed)
    }
}

/// Runs `conns` workers: warm-up, then the measured window (ended by the
/// duration or by `max_ops`), then stop. Returns the RESULT line.
async fn run_timed<F, Fut>(o: &Opts, worker: F) -> Result<String>
where
    F: Fn(Arc<Shared>) -> Fut,
    Fut: std::future::Future<Output = WorkerOut> + 'static,
{
    let sh = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        opts: o.clone(),
    });
    let local = tokio::task::LocalSet::new();
    let handles: Vec<_> = (0..o.conns).map(|_| local.spawn_local(worker(sh.clone()))).collect();
    let res = local
        .run_until(async {
            tokio::time::sleep(o.warmup).await;
            let cpu0 = proc_stats::cpu_seconds(o.server_pid)?;
            let own0 = proc_stats::cpu_seconds(std::process::id())?;
            let busy0 = proc_stats::machine_busy_seconds()?;
            let t0 = Instant::now();
            sh.measuring.store(true, Relaxed);
            let deadline = t0 + o.duration;
            while Instant::now() < deadline && sh.ops.load(Relaxed) < o.max_ops {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let cpu1 = proc_stats::cpu_seconds(o.server_pid)?;
            let own1 = proc_stats::cpu_seconds(std::process::id())?;
            let busy1 = proc_stats::machine_busy_seconds()?;
            let secs = t0.elapsed().as_secs_f64();
            sh.measuring.store(false, Relaxed);
            sh.stop.store(true, Relaxed);
            let ops = sh.ops.load(Relaxed);
            let bytes = sh.bytes.load(Relaxed);
            // Collect samples; a worker stuck in an operation gives up at
            // OP_TIMEOUT, and we wait at most a little longer than that.
            let mut lat = Vec::new();
            let mut first_error = None;
            for h in handles {
                if let Ok(Ok(out)) = tokio::time::timeout(OP_TIMEOUT + Duration::from_secs(1), h).await {
                    lat.extend(out.lat_ns);
                    first_error = first_error.or(out.first_error);
                }
            }
            lat.sort_unstable();
            let pct = |p: f64| -> f64 {
                if lat.is_empty() {
                    return 0.0;
                }
                let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
                lat[i] as f64 / 1000.0
            };
            let errors = sh.errors.load(Relaxed);
            if let Some(e) = &first_error {
                eprintln!("loadgen: {errors} errors; first: {e}");
            }
            anyhow::Ok(format!(
                "ops={ops} secs={secs:.4} bytes={bytes} errors={errors} cpu={:.4} client_cpu={:.4} other_cpu={:.4} p50_us={:.1} p99_us={:.1}",
                cpu1 - cpu0,
                own1 - own0,
                // Everything else on the machine: other processes, kernel
                // threads (some softirq work lands here too, hence the
                // orchestrator's generous threshold).
                (busy1 - busy0) - (cpu1 - cpu0) - (own1 - own0),
                pct(0.50),
                pct(0.99)
            ))
        })
        .await;
    res
}

/// Counts one finished operation if it finished inside the window.
fn count(sh: &Shared, out: &mut WorkerOut, started: Instant, bytes: u64) {
    if sh.measuring.load(Relaxed) {
        sh.ops.fetch_add(1, Relaxed);
        sh.bytes.fetch_add(bytes, Relaxed);
        out.lat_ns.push(started.elapsed().as_nanos() as u64);
    }
}

/// After an error, pause a little so a refusing server is not hammered
/// in a tight loop (and errors don't flood the counters).
async fn backoff() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

// ---------------------------------------------------------------- seed

/// One seed exchange, as the seed's client does it, plus reading to EOF so
/// the exchange includes the server's close.
async fn seed_once(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    let mut buf = [0u8; 1024];
    let mut got = 0;
    while got < 11 {
        let n = s.read(&mut buf[got..]).await.context("read hello")?;
        if n == 0 {
            bail!("EOF after {got} bytes of HELLO,WORLD");
        }
        got += n;
    }
    if &buf[..11] != b"HELLO,WORLD" {
        bail!("unexpected greeting {:?}", String::from_utf8_lossy(&buf[..got]));
    }
    s.write_all(b"this is client...").await.context("write")?;
    loop {
        match s.read(&mut buf).await.context("read to EOF")? {
            0 => return Ok(()),
            _ => continue,
        }
    }
}

async fn seed_worker(sh: Arc<Shared>) -> WorkerOut {
    let mut out = WorkerOut::default();
    let addr = sh.opts.addr;
    while sh.running() {
        let start = Instant::now();
        match tokio::time::timeout(OP_TIMEOUT, seed_once(addr)).await {
            Ok(Ok(())) => count(&sh, &mut out, start, 0),
            Ok(Err(e)) => {
                sh.record_error(&mut out, e);
                backoff().await;
            }
            Err(_) => sh.record_error(&mut out, anyhow::anyhow!("exchange timed out")),
        }
    }
    out
}

// ------------------------------------------------------ echo req/resp

async fn rr_worker(sh: Arc<Shared>) -> WorkerOut {
    let mut out = WorkerOut::default();
    let size = sh.opts.size;
    let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; size];
    // Reconnect after an error; otherwise one connection for the whole run.
    'conn: while sh.running() {
        let mut s = match tokio::time::timeout(OP_TIMEOUT, TcpStream::connect(sh.opts.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                sh.record_error(&mut out, e.into());
                backoff().await;
                continue;
            }
            Err(_) => {
                sh.record_error(&mut out, anyhow::anyhow!("connect timed out"));
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        while sh.running() {
            let start = Instant::now();
            let rt = async {
                s.write_all(&msg).await?;
                s.read_exact(&mut back).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(OP_TIMEOUT, rt).await {
                Ok(Ok(())) if back == msg => count(&sh, &mut out, start, size as u64),
                Ok(Ok(())) => {
                    sh.record_error(&mut out, anyhow::anyhow!("echo mismatch"));
                    continue 'conn;
                }
                Ok(Err(e)) => {
                    sh.record_error(&mut out, e);
                    backoff().await;
                    continue 'conn;
                }
                Err(_) => {
                    sh.record_error(&mut out, anyhow::anyhow!("round trip timed out"));
                    continue 'conn;
                }
            }
        }
    }
    out
}

// --------------------------------------------------- echo throughput

/// Streams `size`-byte messages with up to `window` in flight: a writer
/// task keeps the pipe full while this task reads the echo back. The
/// window bounds the bytes in flight so neither side's buffers fill up
/// and deadlock (the echo server blocks on send if we stop reading).
async fn tput_worker(sh: Arc<Shared>) -> WorkerOut {
    let mut out = WorkerOut::default();
    let size = sh.opts.size;
    let s = match tokio::time::timeout(OP_TIMEOUT, TcpStream::connect(sh.opts.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            sh.record_error(&mut out, e.into());
            return out;
        }
        Err(_) => {
            sh.record_error(&mut out, anyhow::anyhow!("connect timed out"));
            return out;
        }
    };
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = s.into_split();
    let credits = Arc::new(tokio::sync::Semaphore::new(sh.opts.window));
    let writer = {
        let credits = credits.clone();
        let sh = sh.clone();
        tokio::task::spawn_local(async move {
            let msg = vec![0x5au8; size];
            while sh.running() {
                let Ok(permit) = credits.acquire().await else { break };
                permit.forget();
                if wr.write_all(&msg).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial = 0usize; // bytes of the current message received so far
    let mut msg_start = Instant::now();
    while sh.running() {
        match tokio::time::timeout(OP_TIMEOUT, rd.read(&mut buf)).await {
            Ok(Ok(0)) => {
                sh.record_error(&mut out, anyhow::anyhow!("server closed mid-stream"));
                break;
            }
            Ok(Ok(n)) => {
                partial += n;
                while partial >= size {
                    partial -= size;
                    // One whole message echoed: count it, free a slot.
                    count(&sh, &mut out, msg_start, size as u64);
                    msg_start = Instant::now();
                    credits.add_permits(1);
                }
            }
            Ok(Err(e)) => {
                sh.record_error(&mut out, e.into());
                break;
            }
            Err(_) => {
                sh.record_error(&mut out, anyhow::anyhow!("read timed out"));
                break;
            }
        }
    }
    // Stop cleanly: the writer finishes its message and shuts down its
    // side; we read the echo to EOF so the server ends the connection
    // normally instead of failing a send on a socket we dropped.
    credits.close();
    let drain = async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    writer.abort();
    out
}

// ----------------------------------------------------------- idle (memory)

/// Opens `conns` idle connections (they send nothing, so the echo server
/// waits in recv), waits until the server holds them all, reads its RSS,
/// closes them, waits until the server has let them go (and reads its RSS
/// 0.5 s and 5 s after), and does that
/// `rounds` times. Per-connection memory of every round is computed against
/// the RSS before the first round, so growth between rounds shows up.
async fn idle(o: &Opts) -> Result<String> {
    let pid = o.server_pid;
    let base_fds = proc_stats::fd_count(pid)?;
    let rss0 = proc_stats::rss_bytes(pid)?;
    let mut line = format!("conns={} rss_before={rss0}", o.conns);
    let started = Instant::now();
    for round in 1..=o.rounds {
        let t = Instant::now();
        let conns = open_many(o.addr, o.conns).await?;
        let open_secs = t.elapsed().as_secs_f64();
        // The server has them all once its fd table has grown by `conns`.
        let want = base_fds + o.conns;
        let held =
            wait_until(Duration::from_secs(60), || proc_stats::fd_count(pid).map(|n| n >= want).unwrap_or(false)).await;
        if !held {
            eprintln!(
                "loadgen: round {round}: server holds {} fds, expected >= {want}",
                proc_stats::fd_count(pid).unwrap_or(0)
            );
        }
        let rss = settled_rss(pid).await?;
        let per_conn = rss.saturating_sub(rss0) as f64 / o.conns as f64;
        drop(conns);
        wait_until(Duration::from_secs(60), || proc_stats::fd_count(pid).map(|n| n <= base_fds + 2).unwrap_or(true))
            .await;
        let closed = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = proc_stats::rss_bytes(pid)?;
        // What the server still holds once the burst is 5 s over.
        tokio::time::sleep_until((closed + Duration::from_secs(5)).into()).await;
        let rss_5s = proc_stats::rss_bytes(pid)?;
        line += &format!(
            " r{round}_rss={rss} r{round}_per_conn={per_conn:.0} r{round}_after_close={rss_after} r{round}_after_5s={rss_5s} r{round}_open_secs={open_secs:.3} r{round}_held={}",
            held as u8
        );
        if started.elapsed() > Duration::from_secs(300) {
            bail!("idle: took over 5 minutes, giving up");
        }
    }
    Ok(line)
}

/// Opens `n` connections, at most 256 connects in flight at once (the
/// listen backlog is 1024; more would only cause SYN retries).
async fn open_many(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut launched = 0;
    let mut errors = 0usize;
    while streams.len() + errors < n {
        while launched < n && set.len() < 256 {
            set.spawn(tokio::time::timeout(OP_TIMEOUT, TcpStream::connect(addr)));
            launched += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(Ok(s)))) => streams.push(s),
            Some(_) => errors += 1,
            None => break,
        }
    }
    if errors > 0 {
        eprintln!("loadgen: {errors} of {n} idle connections failed to open");
    }
    if streams.len() < n / 2 {
        bail!("only {} of {n} connections opened", streams.len());
    }
    Ok(streams)
}

async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// RSS once it stops moving (two samples 200 ms apart within 1%), at most
/// 5 s: a server may still be instantiating or faulting in pages.
async fn settled_rss(pid: u32) -> Result<u64> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut last = proc_stats::rss_bytes(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = proc_stats::rss_bytes(pid)?;
        if now.abs_diff(last) * 100 <= last || Instant::now() > end {
            return Ok(now);
        }
        last = now;
    }
}
