//! The HTTP load generator: `wrk`, pinned to the load generator's CPU.
//!
//! wrk has no warm-up, no operation cap and knows nothing of the server, so
//! the orchestrator does around it what loadgen.rs does inside its own
//! modes: a warm-up of plain requests (each response checked), then the
//! server's CPU time (/proc/PID/stat), wrk's own CPU time (wait4) and the
//! machine's busy time read right before wrk starts and right after it
//! exits. The server is idle between requests, so that window holds exactly
//! the work wrk caused, and `ops` is wrk's count of completed requests. The
//! result has the keys of a loadgen RESULT line, so the rows use the same
//! medians, noise check and report columns.

use crate::native::HTTP_BODY;
use crate::proc_stats;
use crate::server::LOADGEN_CPU;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `mode` under which the runner's rows hand a measurement to wrk.
pub const MODE: &str = "wrk";

/// wrk's fixed shape: one thread, 32 connections (as in the row names).
pub const THREADS: u32 = 1;
pub const CONNS: u32 = 32;

/// One request (warm-up, or inside wrk) taking longer than this is an
/// error: loadgen.rs's OP_TIMEOUT.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// What wrk printed, parsed.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Completed requests (any status).
    pub requests: u64,
    pub req_per_sec: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// `Socket errors: connect, read, write, timeout` (absent line: zeros).
    pub socket_errors: [u64; 4],
    /// `Non-2xx or 3xx responses`.
    pub non_2xx: u64,
}

impl Report {
    pub fn errors(&self) -> u64 {
        self.socket_errors.iter().sum::<u64>() + self.non_2xx
    }
}

/// Whether an executable `wrk` is on PATH.
pub fn installed() -> bool {
    on_path("wrk")
}

/// Whether an executable `name` is on PATH.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Warm-up, then one wrk run of `duration` (whole seconds, at least 1: wrk
/// takes no fractions) against `addr`, with `extra` wrk arguments (such as
/// `-H 'Connection: close'`). Returns the sample and what is worth quoting
/// in the notes (error counts, wrk's stderr).
pub fn run(
    addr: SocketAddr,
    server_pid: u32,
    warmup: f64,
    duration: f64,
    extra: &[String],
    budget: Duration,
) -> Result<(HashMap<String, f64>, Vec<String>)> {
    warm_up(addr, warmup)?;
    let secs = duration.ceil().max(1.0) as u64;
    let mut args: Vec<String> = vec![
        format!("-t{THREADS}"),
        format!("-c{CONNS}"),
        format!("-d{secs}s"),
        "--timeout".into(),
        format!("{}s", OP_TIMEOUT.as_secs()),
        "--latency".into(),
    ];
    args.extend(extra.iter().cloned());
    args.push(format!("http://{addr}/"));

    let cpu0 = proc_stats::cpu_seconds(server_pid)?;
    let busy0 = proc_stats::machine_busy_seconds()?;
    let t0 = Instant::now();
    let out = spawn_wrk(&args, budget)?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = proc_stats::cpu_seconds(server_pid)?;
    let busy1 = proc_stats::machine_busy_seconds()?;

    let report = parse(&out.stdout).with_context(|| format!("parsing wrk's output: {}", out.stderr.trim()))?;
    // wrk's own rate is requests over its own clock; keep it exact.
    let secs = if report.req_per_sec > 0.0 { report.requests as f64 / report.req_per_sec } else { wall };
    let server_cpu = cpu1 - cpu0;
    let [connect, read, write, timeout] = report.socket_errors;
    let mut s = HashMap::new();
    for (k, v) in [
        ("ops", report.requests as f64),
        ("secs", secs),
        ("bytes", 0.0),
        ("errors", report.errors() as f64),
        ("cpu", server_cpu),
        ("client_cpu", out.cpu),
        ("other_cpu", (busy1 - busy0) - server_cpu - out.cpu),
        ("p50_us", report.p50_us.unwrap_or(f64::NAN)),
        ("p99_us", report.p99_us.unwrap_or(f64::NAN)),
        ("err_connect", connect as f64),
        ("err_read", read as f64),
        ("err_write", write as f64),
        ("err_timeout", timeout as f64),
        ("non_2xx", report.non_2xx as f64),
    ] {
        s.insert(k.to_string(), v);
    }
    let mut said = Vec::new();
    if report.errors() > 0 {
        said.push(format!(
            "wrk: socket errors connect {connect}, read {read}, write {write}, timeout {timeout}; non-2xx or 3xx responses {}",
            report.non_2xx
        ));
    }
    said.extend(out.stderr.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("wrk: {l}")));
    for l in &said {
        eprintln!("  {l}");
    }
    Ok((s, said))
}

/// Sequential requests with `Connection: close` for `secs`, at least one:
/// the server's first connections, instances and page faults happen here
/// rather than in wrk's window (loadgen's warm-up does the same for the
/// other rows). Every response is checked, because wrk itself only counts
/// non-2xx statuses: a wrong body or content type must fail the sample.
fn warm_up(addr: SocketAddr, secs: f64) -> Result<()> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let resp = get_with_close(addr).context("warm-up request")?;
        check_response(&resp).context("warm-up response")?;
        if Instant::now() >= end {
            return Ok(());
        }
    }
}

/// One `GET /` with `Connection: close`, read to EOF: the server must close.
fn get_with_close(addr: SocketAddr) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, OP_TIMEOUT).context("connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(OP_TIMEOUT))?;
    s.set_write_timeout(Some(OP_TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").context("write")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).context("read to EOF (did the server close?)")?;
    Ok(resp)
}

/// Status 200, `content-type: text/plain`, body exactly HTTP_BODY.
pub fn check_response(resp: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") {
        bail!("status line {status:?}");
    }
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim());
    if content_type != Some("text/plain") {
        bail!("content-type {content_type:?}, expected text/plain");
    }
    if body.as_bytes() != HTTP_BODY {
        bail!("body {body:?}, expected {:?}", String::from_utf8_lossy(HTTP_BODY));
    }
    Ok(())
}

pub struct ToolOut {
    pub stdout: String,
    pub stderr: String,
    /// The tool's own utime+stime, seconds.
    pub cpu: f64,
}

fn spawn_wrk(args: &[String], budget: Duration) -> Result<ToolOut> {
    spawn_tool("wrk", args, budget)
}

/// Runs `taskset -c LOADGEN_CPU TOOL ARGS` and reaps it with wait4, which
/// hands back its rusage (taskset execs the tool, so the pid is the
/// tool's). Killed past `budget`; an exit status other than 0 is an error.
pub fn spawn_tool(tool: &str, args: &[String], budget: Duration) -> Result<ToolOut> {
    let mut child = Command::new("taskset")
        .args(["-c", LOADGEN_CPU, tool])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {tool}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let end = Instant::now() + budget;
    // SAFETY: wait4 on our own child, with local out-parameters. Once it
    // has reaped the child, `child` is never waited on or killed again
    // (dropping a std Child does neither).
    let (status, usage) = unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        loop {
            let r = libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage);
            if r == pid {
                break;
            }
            if r < 0 {
                bail!("wait4 on {tool}: {}", std::io::Error::last_os_error());
            }
            if Instant::now() > end {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut usage);
                bail!("{tool} ran over its {budget:?} budget and was killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (status, usage)
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{tool} failed (wait status {status}): {}", stderr.trim());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(ToolOut { stdout, stderr, cpu: tv(usage.ru_utime) + tv(usage.ru_stime) })
}

/// Parses wrk 4's report: `N requests in ...`, `Requests/sec: X`, the
/// `--latency` distribution, and the error lines, which wrk prints only
/// when non-zero.
pub fn parse(out: &str) -> Result<Report> {
    let mut r = Report::default();
    let mut have = (false, false);
    let mut in_distribution = false;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        // The distribution is the block of `P%  DURATION` lines after it.
        if in_distribution {
            match words[..] {
                [p, v] if p.ends_with('%') => {
                    match p {
                        "50%" => r.p50_us = Some(duration_us(v)?),
                        "99%" => r.p99_us = Some(duration_us(v)?),
                        _ => {}
                    }
                    continue;
                }
                _ => in_distribution = false,
            }
        }
        if words.get(1) == Some(&"requests") && words.get(2) == Some(&"in") {
            r.requests = words[0].parse().with_context(|| format!("request count in {line:?}"))?;
            have.0 = true;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.req_per_sec = v.trim().parse().with_context(|| format!("rate in {line:?}"))?;
            have.1 = true;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 12, write 0, timeout 0"
            for (i, name) in ["connect", "read", "write", "timeout"].iter().enumerate() {
                let field = v.split(',').map(str::trim).find_map(|f| f.strip_prefix(name));
                let field = field.ok_or_else(|| anyhow!("no `{name}` in {line:?}"))?;
                r.socket_errors[i] = field.trim().parse().with_context(|| format!("{name} in {line:?}"))?;
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().with_context(|| format!("count in {line:?}"))?;
        }
    }
    match have {
        (true, true) => Ok(r),
        _ => bail!("no `requests in` or `Requests/sec:` line in wrk's output: {out:?}"),
    }
}

/// wrk's durations: `190.00us`, `2.55ms`, `1.02s`, `1.50m`.
fn duration_us(v: &str) -> Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(|| anyhow!("no unit in {v:?}"))?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("number in {v:?}"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown unit in {v:?}"),
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real wrk 4.1.0 output (Connection: close against a server that
    /// closes early), with both error lines.
    const WITH_ERRORS: &str = "Running 1s test @ http://127.0.0.1:33749/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   689.78us  331.38us   4.08ms   69.15%
    Req/Sec    24.10k   355.46    24.44k    90.00%
  Latency Distribution
     50%  698.00us
     75%    0.89ms
     90%    1.06ms
     99%    1.53ms
  23927 requests in 1.00s, 2.24MB read
  Socket errors: connect 0, read 17, write 2, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  23912.32
Transfer/sec:      2.23MB
";

    #[test]
    fn parses_counts_latency_and_errors() {
        let r = parse(WITH_ERRORS).unwrap();
        assert_eq!(r.requests, 23927);
        assert_eq!(r.req_per_sec, 23912.32);
        assert_eq!(r.p50_us, Some(698.0));
        assert_eq!(r.p99_us, Some(1530.0));
        assert_eq!(r.socket_errors, [0, 17, 2, 1]);
        assert_eq!(r.non_2xx, 5);
        assert_eq!(r.errors(), 25);
    }

    #[test]
    fn clean_run_has_no_errors() {
        let clean: String = WITH_ERRORS
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .collect::<Vec<_>>()
            .join("\n");
        let r = parse(&clean).unwrap();
        assert_eq!(r.errors(), 0);
        assert_eq!(r.p50_us, Some(698.0));
    }

    #[test]
    fn output_without_totals_is_an_error() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
    }

    #[test]
    fn response_check_wants_status_type_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 14\r\n\r\nHello, World!\n";
        check_response(ok).unwrap();
        let wrong_body = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nHello\n";
        assert!(check_response(wrong_body).is_err());
        let wrong_type = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n\r\nHello, World!\n";
        assert!(check_response(wrong_type).is_err());
        let wrong_status = b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n\r\nHello, World!\n";
        assert!(check_response(wrong_status).is_err());
    }
}
