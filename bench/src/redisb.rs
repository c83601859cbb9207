//! The Redis rows' client: `redis-benchmark` (redis-tools), pinned to the
//! load generator's CPU like every client, one command per run so the
//! server's CPU time of the run is that command's alone.
//!
//! Before each measured run the server (or the proxy in front of one) is
//! checked with a few commands whose replies must be exactly right, since
//! redis-benchmark itself counts replies without reading them, then warmed
//! up with a short unmeasured run of the same command.

use crate::proc_stats;
use crate::runner::Sample;
use crate::wrk;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The `mode` of a `Load` run by redis-benchmark (src/runner.rs).
pub const MODE: &str = "redis-benchmark";

/// The executables the Redis rows need, and the packages that have them.
pub const TOOL: &str = "redis-benchmark";
pub const SERVER: &str = "redis-server";
pub const PACKAGES: &str = "apt-get install redis-server redis-tools";

/// One reply taking longer than this fails the check.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether redis-benchmark and redis-server are both on PATH.
pub fn installed() -> bool {
    wrk::on_path(TOOL) && wrk::on_path(SERVER)
}

/// redis-benchmark's arguments for one run: `test` (one of its `-t` names)
/// from `clients` connections, `requests` in all, `pipeline` requests in
/// flight per connection. `run` adds the address, `-q` and `--csv`.
pub fn args(test: &str, clients: usize, requests: u64, pipeline: usize) -> Vec<String> {
    let mut a: Vec<String> =
        ["-t", test, "-c", &clients.to_string(), "-n", &requests.to_string()].iter().map(|s| s.to_string()).collect();
    if pipeline > 1 {
        a.extend(["-P".to_string(), pipeline.to_string()]);
    }
    a
}

/// The check, a warm-up run of a tenth of the requests (at least 1,000),
/// then the measured run, the server's CPU time read right before and after
/// it. The sample has the keys of loadgen's RESULT line.
pub fn run(addr: SocketAddr, server_pid: u32, args: &[String], budget: Duration) -> Result<(Sample, Vec<String>)> {
    check_commands(addr).context("checking replies before the run")?;
    let n_at = args.iter().position(|a| a == "-n").ok_or_else(|| anyhow!("no -n in {args:?}"))? + 1;
    let requests: u64 = args[n_at].parse().context("-n")?;
    let mut warm = args.to_vec();
    warm[n_at] = (requests / 10).max(1000).to_string();
    let full = |a: &[String]| -> Vec<String> {
        let mut v: Vec<String> =
            ["-h", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-q", "--csv"].map(String::from).to_vec();
        v.extend(a.iter().cloned());
        v
    };
    wrk::spawn_tool(TOOL, &full(&warm), budget).context("warm-up run")?;

    let cpu0 = proc_stats::cpu_seconds(server_pid)?;
    let busy0 = proc_stats::machine_busy_seconds()?;
    let t0 = Instant::now();
    let out = wrk::spawn_tool(TOOL, &full(args), budget)?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = proc_stats::cpu_seconds(server_pid)?;
    let busy1 = proc_stats::machine_busy_seconds()?;

    let report =
        parse_csv(&out.stdout).with_context(|| format!("parsing redis-benchmark's output: {}", out.stderr.trim()))?;
    let secs = if report.rps > 0.0 { requests as f64 / report.rps } else { wall };
    // Replies with an error (`-ERR ...`), rate-limited to one line a second
    // by redis-benchmark: a lower bound, but never zero when there are any.
    let errors = out.stderr.lines().filter(|l| l.contains("Error")).count();
    let server_cpu = cpu1 - cpu0;
    let mut s = Sample::new();
    for (k, v) in [
        ("ops", requests as f64),
        ("secs", secs),
        ("bytes", 0.0),
        ("errors", errors as f64),
        ("cpu", server_cpu),
        ("client_cpu", out.cpu),
        ("other_cpu", (busy1 - busy0) - server_cpu - out.cpu),
        ("p50_us", report.p50_ms * 1e3),
        ("p99_us", report.p99_ms * 1e3),
    ] {
        s.insert(k.to_string(), v);
    }
    let said: Vec<String> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(5)
        .map(|l| format!("redis-benchmark: {}", l.trim()))
        .collect();
    for l in &said {
        eprintln!("  {l}");
    }
    Ok((s, said))
}

/// One test's line of `redis-benchmark --csv`.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub test: String,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Parses redis-benchmark 7's `--csv` output: a header
/// (`"test","rps","avg_latency_ms",...`) and one line per test; exactly one
/// test is expected.
pub fn parse_csv(out: &str) -> Result<Report> {
    let fields = |l: &str| -> Vec<String> { l.split(',').map(|f| f.trim().trim_matches('"').to_string()).collect() };
    let mut lines = out.lines().map(str::trim).filter(|l| l.starts_with('"'));
    let header = fields(lines.next().ok_or_else(|| anyhow!("no CSV header in {out:?}"))?);
    let col =
        |name: &str| header.iter().position(|h| h == name).ok_or_else(|| anyhow!("no `{name}` column in {header:?}"));
    let (test, rps, p50, p99) = (col("test")?, col("rps")?, col("p50_latency_ms")?, col("p99_latency_ms")?);
    let rows: Vec<Vec<String>> = lines.map(fields).collect();
    let [row] = &rows[..] else { bail!("expected one test in redis-benchmark's output, got {}: {out:?}", rows.len()) };
    let get = |i: usize| -> Result<f64> {
        row.get(i)
            .ok_or_else(|| anyhow!("short line {row:?}"))?
            .parse()
            .with_context(|| format!("column {i} of {row:?}"))
    };
    Ok(Report { test: row[test].clone(), rps: get(rps)?, p50_ms: get(p50)?, p99_ms: get(p99)? })
}

/// PING, SET, GET and INCR on one connection, each reply checked; then
/// the key redis-benchmark's GET reads (`key:__rand_int__`, literally so
/// without `-r`) is given a 3-byte value, the size its SET writes by
/// default, so that GET measures hits on a fresh server, not misses.
pub fn check_commands(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, OP_TIMEOUT).context("connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(OP_TIMEOUT))?;
    s.set_write_timeout(Some(OP_TIMEOUT))?;
    let key = format!("bench:check:{}", std::process::id());
    expect(&mut s, &["PING"], "+PONG\r\n")?;
    expect(&mut s, &["SET", &key, "v"], "+OK\r\n")?;
    expect(&mut s, &["GET", &key], "$1\r\nv\r\n")?;
    let counter = format!("{key}:n");
    let first = command(&mut s, &["INCR", &counter])?;
    let second = command(&mut s, &["INCR", &counter])?;
    let int = |r: &str| r.strip_prefix(':').and_then(|v| v.trim_end().parse::<i64>().ok());
    match (int(&first), int(&second)) {
        (Some(a), Some(b)) if b == a + 1 => {}
        _ => bail!("INCR twice answered {first:?} then {second:?}"),
    }
    expect(&mut s, &["SET", "key:__rand_int__", "xxx"], "+OK\r\n")?;
    expect(&mut s, &["GET", "key:__rand_int__"], "$3\r\nxxx\r\n")
}

fn expect(s: &mut TcpStream, cmd: &[&str], want: &str) -> Result<()> {
    let got = command(s, cmd)?;
    if got != want {
        bail!("{} answered {got:?}, expected {want:?}", cmd[0]);
    }
    Ok(())
}

/// Sends `cmd` as a RESP array and reads one reply: a simple line, or a
/// bulk string's length line and its data.
fn command(s: &mut TcpStream, cmd: &[&str]) -> Result<String> {
    let mut req = format!("*{}\r\n", cmd.len());
    for a in cmd {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).with_context(|| format!("sending {}", cmd[0]))?;
    let mut got = Vec::new();
    let mut byte = [0u8];
    let complete = |b: &[u8]| -> bool {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return false };
        if b[0] != b'$' {
            return true;
        }
        match std::str::from_utf8(&b[1..eol]).ok().and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if n >= 0 => b.len() >= eol + 2 + n as usize + 2,
            _ => true,
        }
    };
    while !complete(&got) {
        let n = s.read(&mut byte).with_context(|| format!("reading the reply to {}", cmd[0]))?;
        if n == 0 {
            bail!("connection closed before the reply to {} (got {:?})", cmd[0], String::from_utf8_lossy(&got));
        }
        got.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real redis-benchmark 7.0 `-q --csv` output of one test.
    const ONE: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"
\"SET\",\"258064.53\",\"1.826\",\"0.200\",\"0.911\",\"5.559\",\"8.287\",\"13.055\"
";

    #[test]
    fn parses_one_test() {
        let r = parse_csv(ONE).unwrap();
        assert_eq!(r, Report { test: "SET".into(), rps: 258064.53, p50_ms: 0.911, p99_ms: 8.287 });
    }

    #[test]
    fn two_tests_or_none_is_an_error() {
        let two = format!("{ONE}\"GET\",\"1.0\",\"1\",\"1\",\"1\",\"1\",\"1\",\"1\"\n");
        assert!(parse_csv(&two).is_err());
        assert!(parse_csv("Could not connect to Redis at 127.0.0.1:1: Connection refused\n").is_err());
    }

    #[test]
    fn arguments_name_the_pipeline_only_when_there_is_one() {
        assert_eq!(args("get", 32, 1000, 1), ["-t", "get", "-c", "32", "-n", "1000"]);
        assert_eq!(args("set", 32, 1000, 16)[6..], ["-P", "16"]);
    }
}
