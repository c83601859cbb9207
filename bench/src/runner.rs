//! The orchestrator: runs every row, host+guest and native side by side.
//!
//! For each row and each repetition it starts a fresh server pinned to CPU 0
//! and a fresh load generator pinned to CPU 1, alternating which variant
//! goes first so slow drift on this shared machine hits both alike, and
//! reports the median over repetitions.

use crate::report::{Row, Stat};
use crate::server::{self, Kind, Paths, Server, LOADGEN_CPU};
use crate::{proc_stats, redisb, wrk};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long and how often: full vs quick.
#[derive(Clone, Debug)]
pub struct Plan {
    pub reps: usize,
    pub warmup: f64,
    pub duration: f64,
    /// Hard cap on operations per measured window (a second bound next to
    /// the duration).
    pub max_ops: u64,
    pub mem_conns: usize,
    pub startup_runs: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan { reps: 1, warmup: 0.2, duration: 1.0, max_ops: 1_000_000, mem_conns: 2_000, startup_runs: 3 }
        } else {
            Plan { reps: 3, warmup: 0.5, duration: 3.0, max_ops: 5_000_000, mem_conns: 10_000, startup_runs: 7 }
        }
    }
}

/// One load-generator result: the `key=value` pairs of its RESULT line.
pub type Sample = HashMap<String, f64>;

/// How a row counts: what its value is and what one operation is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// Operations per second (exchanges, round trips, requests).
    Rate,
    /// MiB/s, with one 64 KiB message as the operation.
    Tput64k,
}

/// One timed load: the load generator's mode and arguments (or wrk's, for
/// `wrk::MODE`), and how its samples are counted. `what` names it in tags.
#[derive(Clone, Debug)]
pub struct Load {
    pub what: String,
    pub mode: &'static str,
    pub args: Vec<String>,
    pub metric: Metric,
}

/// Share of a CPU that other processes may use during a window before the
/// sample counts as noisy. Generous: some of the kernel's own network work
/// (softirq) is charged to no process and lands here too.
pub const NOISY: f64 = 0.25;

/// CPU share used by everything but the server and the load generator.
pub fn noise(s: &Sample) -> f64 {
    match (s.get("other_cpu"), s.get("secs")) {
        (Some(o), Some(t)) if *t > 0.0 => o / t,
        _ => 0.0,
    }
}

pub struct Runner {
    pub plan: Plan,
    pub paths: Paths,
    /// Problems worth telling the reader (errors, unclean shutdowns, logs).
    pub notes: Vec<String>,
    /// Whether this host build knows `--no-cache`.
    pub has_no_cache: bool,
    /// Every load-generator result, for `<out>/latest.raw.txt`.
    pub raw: Vec<String>,
    /// The pid of an upstream server (on the load generator's CPU) behind
    /// the proxy under test, while the proxy rows run: its CPU time is not
    /// counted as noise.
    upstream: Option<u32>,
    seq: usize,
}

impl Runner {
    pub fn new(plan: Plan, paths: Paths) -> Result<Runner> {
        let help = Command::new(&paths.host).args(["run", "--help"]).output().context("running host run --help")?;
        let has_no_cache = String::from_utf8_lossy(&help.stdout).contains("--no-cache");
        Ok(Runner { plan, paths, notes: Vec::new(), has_no_cache, raw: Vec::new(), upstream: None, seq: 0 })
    }

    fn tag(&mut self, what: &str, kind: &Kind) -> String {
        self.seq += 1;
        format!("{:03}-{what}-{}", self.seq, kind.label())
    }

    /// Starts `kind`, runs one load-generator pass against it, stops it.
    /// A sample taken while something else was busy on the machine (a cargo
    /// build, say) is taken again once, after a pause; the quieter of the
    /// two is kept and, if still noisy, flagged in the notes.
    fn measure(&mut self, what: &str, kind: &Kind, mode: &str, args: &[String]) -> Result<Sample> {
        let (mut tag, mut sample, mut said) = self.measure_once(what, kind, mode, args)?;
        if noise(&sample) > NOISY {
            std::thread::sleep(Duration::from_secs(3));
            if let Ok(again) = self.measure_once(what, kind, mode, args) {
                // Keep the quieter sample; mark the other in the raw file.
                let dropped = if noise(&again.1) < noise(&sample) {
                    let first = tag.clone();
                    (tag, sample, said) = again;
                    first
                } else {
                    again.0
                };
                if let Some(line) = self.raw.iter_mut().find(|l| l.starts_with(&format!("{dropped} "))) {
                    line.push_str(" DISCARDED(noisier-than-retry)");
                }
            }
        }
        if noise(&sample) > NOISY {
            self.notes.push(format!(
                "{tag}: other processes used {:.0}% of a CPU during the window, even on a retry (noisy sample)",
                noise(&sample) * 100.0
            ));
        }
        if sample.get("errors").copied().unwrap_or(0.0) > 0.0 {
            // The client's first line names it (`loadgen: ...`, `wrk: ...`).
            self.notes.push(format!(
                "{tag}: {} client errors; {}",
                sample["errors"],
                said.first().map(String::as_str).unwrap_or("-")
            ));
        }
        Ok(sample)
    }

    fn measure_once(
        &mut self,
        what: &str,
        kind: &Kind,
        mode: &str,
        args: &[String],
    ) -> Result<(String, Sample, Vec<String>)> {
        let tag = self.tag(what, kind);
        let mut srv = Server::start(kind, &self.paths, &tag, Duration::from_secs(120))?;
        let budget = Duration::from_secs_f64(self.plan.warmup + self.plan.duration) + Duration::from_secs(360);
        let upstream0 = self.upstream.and_then(|pid| proc_stats::cpu_seconds(pid).ok());
        let t0 = Instant::now();
        let mut result = if mode == wrk::MODE {
            wrk::run(srv.addr, srv.pid(), self.plan.warmup, self.plan.duration, args, budget)
        } else if mode == redisb::MODE {
            // A run is a fixed number of requests: bounded tighter than
            // the timed loads, at 20 times the planned window.
            let budget = Duration::from_secs_f64(60.0 + 20.0 * self.plan.duration);
            redisb::run(srv.addr, srv.pid(), args, budget)
        } else {
            run_loadgen(&self.paths, mode, srv.addr, srv.pid(), args, budget)
        };
        // The upstream's CPU time is read around the whole client run (warm-up
        // included): its share inside the measured window is prorated.
        let wall = t0.elapsed().as_secs_f64();
        let upstream1 = self.upstream.and_then(|pid| proc_stats::cpu_seconds(pid).ok());
        if let (Ok((sample, _)), Some(a), Some(b)) = (&mut result, upstream0, upstream1) {
            let in_window = (b - a) * (sample.get("secs").copied().unwrap_or(wall) / wall).min(1.0);
            sample.insert("upstream_cpu".into(), in_window);
            if let Some(other) = sample.get_mut("other_cpu") {
                *other -= in_window;
            }
        }
        let clean = srv.stop()?;
        // A stock runtime (src/bundle.rs) has no graceful stop: SIGTERM
        // ends it, and that is no news.
        if !clean && !matches!(kind, Kind::Stock { .. }) {
            self.notes.push(format!("{tag}: server did not exit cleanly after SIGTERM"));
        }
        let (sample, said) = result.with_context(|| format!("{tag}: {}", srv.tail_log()))?;
        self.raw.push(format!("{tag} {mode} {}", sample_line(&sample)));
        Ok((tag, sample, said))
    }

    /// Runs `variants` × `reps`, interleaved, and returns all samples of each.
    fn interleave(&mut self, load: &Load, variants: &[Kind]) -> Vec<Vec<Sample>> {
        let mut out = vec![Vec::new(); variants.len()];
        for rep in self.interleave_reps(load, variants) {
            for (i, sample) in rep.into_iter().enumerate() {
                out[i].extend(sample);
            }
        }
        out
    }

    /// Runs `variants` × `reps`, rotating which variant goes first in each
    /// repetition so slow drift hits all alike; returns, per repetition, the
    /// sample of each variant (None where it failed, noted).
    pub fn interleave_reps(&mut self, load: &Load, variants: &[Kind]) -> Vec<Vec<Option<Sample>>> {
        let mut out = Vec::with_capacity(self.plan.reps);
        for rep in 0..self.plan.reps {
            let mut samples = vec![None; variants.len()];
            for k in 0..variants.len() {
                let i = (k + rep) % variants.len();
                match self.measure(&load.what, &variants[i], load.mode, &load.args) {
                    Ok(s) => samples[i] = Some(s),
                    Err(e) => {
                        eprintln!("  {} {}: FAILED: {e:#}", load.what, variants[i].label());
                        self.notes.push(format!("{} {}: failed: {e:#}", load.what, variants[i].label()));
                    }
                }
            }
            out.push(samples);
        }
        out
    }

    /// The load generator's arguments for a timed mode: the plan's
    /// window and cap, `conns` connections, then `extra` flag/value pairs.
    fn timed_args(&self, conns: usize, extra: &[(&str, String)]) -> Vec<String> {
        let plan = [
            ("--conns", conns.to_string()),
            ("--warmup", self.plan.warmup.to_string()),
            ("--duration", self.plan.duration.to_string()),
            ("--max-ops", self.plan.max_ops.to_string()),
        ];
        plan.iter().chain(extra).flat_map(|(k, v)| [k.to_string(), v.clone()]).collect()
    }

    // ------------------------------------------------------------ loads
    //
    // What each timed row runs against a server, shared by the main
    // report's rows and the A/B mode (src/ab.rs).

    /// Seed exchanges, `conns` concurrent (hello.wasm, or native seed).
    pub fn seed_load(&self, conns: usize) -> Load {
        Load { what: format!("seed-c{conns}"), mode: "seed", args: self.timed_args(conns, &[]), metric: Metric::Rate }
    }

    /// Echo throughput: 64 KiB messages, 4 in flight per connection.
    pub fn echo_tput_load(&self, conns: usize) -> Load {
        Load {
            what: format!("tput-c{conns}"),
            mode: "echo-tput",
            args: self.timed_args(conns, &[("--size", "65536".into()), ("--window", "4".into())]),
            metric: Metric::Tput64k,
        }
    }

    /// Echo request/response: 64 B, one in flight per connection.
    pub fn echo_rr_load(&self, conns: usize) -> Load {
        Load {
            what: format!("rr-c{conns}"),
            mode: "echo-rr",
            args: self.timed_args(conns, &[("--size", "64".into())]),
            metric: Metric::Rate,
        }
    }

    /// wrk against an HTTP server, keep-alive or `Connection: close`. wrk's
    /// window is the plan's duration rounded up to whole seconds, and the
    /// plan's `max_ops` does not apply (wrk has no such cap).
    pub fn http_load(close: bool) -> Load {
        let (what, args) = if close {
            ("http-close", vec!["-H".to_string(), "Connection: close".to_string()])
        } else {
            ("http-ka", vec![])
        };
        Load { what: what.into(), mode: wrk::MODE, args, metric: Metric::Rate }
    }

    // ------------------------------------------------------------ rows

    /// Row 1 (and 6): seed exchange rate at 1, 32, 256 concurrent.
    pub fn seed_rows(&mut self) -> (Vec<Row>, Option<Stat>) {
        let host = Kind::host("hello.wasm", vec![]);
        let native = Kind::Native { mode: "seed" };
        let reuse = Kind::host("hello.wasm", vec!["--connections-per-instance".into(), "1000".into()]);
        let mut rows = Vec::new();
        let mut reuse_rows = Vec::new();
        let mut python = None;
        for conns in [1usize, 32, 256] {
            eprintln!("» seed exchange, {conns} concurrent");
            // Row 6: the seed's own blocking design, beside host and native
            // in the same interleaved run.
            let mut variants = vec![host.clone(), native.clone()];
            if conns == 32 {
                variants.push(Kind::Python);
            }
            // The opt-in instance reuse mode, in the same interleaved run.
            let reuse_index = variants.len();
            variants.push(reuse.clone());
            let load = self.seed_load(conns);
            let samples = self.interleave(&load, &variants);
            let mut row = Row::new(&format!("1. seed exchange, {conns} concurrent"), "exch/s", true);
            row.host = load.metric.stat(&samples[0]);
            row.native = load.metric.stat(&samples[1]);
            row.cpu_unit = "µs/exch";
            if conns == 32 {
                python = load.metric.stat(&samples[2]);
            }
            rows.push(row);
            let mut row = Row::new(
                &format!("1r. seed exchange, {conns} concurrent, opt-in reuse (--connections-per-instance 1000)"),
                "exch/s",
                true,
            );
            row.host = load.metric.stat(&samples[reuse_index]);
            row.native = load.metric.stat(&samples[1]);
            row.cpu_unit = "µs/exch";
            reuse_rows.push(row);
        }
        rows.extend(reuse_rows);
        (rows, python)
    }

    /// Row 2: echo throughput (64 KiB messages) and request/response (64 B).
    pub fn echo_rows(&mut self) -> Vec<Row> {
        let host = Kind::host("echo.wasm", vec![]);
        let native = Kind::Native { mode: "echo" };
        let variants = [host, native];
        let mut rows = Vec::new();
        for conns in [1usize, 8] {
            eprintln!("» echo 64 KiB throughput, {conns} connection(s)");
            let load = self.echo_tput_load(conns);
            let s = self.interleave(&load, &variants);
            let mut row = Row::new(&format!("2. echo 64 KiB throughput, {conns} conn"), "MiB/s", true);
            // MiB/s from bytes; CPU per 64 KiB message.
            row.host = load.metric.stat(&s[0]);
            row.native = load.metric.stat(&s[1]);
            row.cpu_unit = "µs/64KiB";
            row.latency = false;
            rows.push(row);
        }
        for conns in [1usize, 8] {
            eprintln!("» echo 64 B request/response, {conns} connection(s)");
            let load = self.echo_rr_load(conns);
            let s = self.interleave(&load, &variants);
            let mut row = Row::new(&format!("2. echo 64 B req/resp, {conns} conn"), "rt/s", true);
            row.host = load.metric.stat(&s[0]);
            row.native = load.metric.stat(&s[1]);
            row.cpu_unit = "µs/rt";
            rows.push(row);
        }
        rows
    }

    /// Row 5: HTTP/1.1 with wrk against http.wasm and hyper, keep-alive and
    /// `Connection: close` (see `http_load`). Without wrk the rows say so
    /// instead of failing the run.
    pub fn http_rows(&mut self) -> Vec<Row> {
        let cases = [("5. HTTP keep-alive, wrk -t1 -c32", false), ("5. HTTP Connection: close, wrk -t1 -c32", true)];
        let installed = wrk::installed();
        if !installed {
            self.notes.push("HTTP rows skipped: wrk not installed (apt-get install wrk)".into());
        }
        let has_guest = self.paths.guests.join("http.wasm").exists();
        if installed && !has_guest {
            self.notes.push(format!(
                "HTTP rows: {} is missing (make build): host side not measured",
                self.paths.guests.join("http.wasm").display()
            ));
        }
        let mut variants = vec![Kind::Native { mode: "http" }];
        if has_guest {
            variants.insert(0, Kind::host("http.wasm", vec![]));
        }
        let mut rows = Vec::new();
        for (name, close) in cases {
            let mut row = Row::new(name, "req/s", true);
            row.cpu_unit = "µs/req";
            if !installed {
                row.na = Some("wrk not installed (apt-get install wrk)");
                rows.push(row);
                continue;
            }
            eprintln!("» {}", &name[3..]);
            let load = Self::http_load(close);
            let s = self.interleave(&load, &variants);
            row.native = load.metric.stat(s.last().expect("native is always measured"));
            if has_guest {
                row.host = load.metric.stat(&s[0]);
            }
            rows.push(row);
        }
        rows
    }

    /// redis-benchmark running `test` from `clients` connections, `pipeline`
    /// requests in flight on each. The request count sizes a run to a few
    /// seconds at this machine's rates (some 20,000 requests/s unpipelined
    /// for the slower side, ten times that pipelined), scaled by the plan's
    /// window; on a faster machine runs are shorter, never unbounded.
    pub fn redis_load(&self, what: &str, test: &str, clients: usize, pipeline: usize) -> Load {
        let per_sec = if pipeline > 1 { 200_000.0 } else { 20_000.0 };
        let requests = ((per_sec * self.plan.duration) as u64).max(10_000);
        Load {
            what: what.to_string(),
            mode: redisb::MODE,
            args: redisb::args(test, clients, requests, pipeline),
            metric: Metric::Rate,
        }
    }

    /// Row 10: resp.wasm on the shared store (`--kv memory`) against
    /// redis-server, by redis-benchmark with 32 clients: PING, SET, GET and
    /// INCR one request at a time, then SET, GET and INCR pipelined 16 deep.
    pub fn resp_rows(&mut self) -> Vec<Row> {
        const CASES: [(&str, &str, usize); 7] = [
            ("PING", "ping_mbulk", 1),
            ("SET", "set", 1),
            ("GET", "get", 1),
            ("INCR", "incr", 1),
            ("SET", "set", 16),
            ("GET", "get", 16),
            ("INCR", "incr", 16),
        ];
        let installed = redisb::installed();
        if !installed {
            self.notes.push(format!(
                "resp rows skipped: redis-server or redis-benchmark not installed ({})",
                redisb::PACKAGES
            ));
        }
        let has_guest = self.guest_or_note("resp", "resp.wasm");
        let host = Kind::host(
            "resp.wasm",
            ["--kv", "memory", "--idle-timeout", "1h", "--cpu-timeout", "1h"].map(String::from).to_vec(),
        );
        let mut variants = vec![Kind::Redis];
        if has_guest {
            variants.insert(0, host);
        }
        let mut rows = Vec::new();
        for (name, test, pipeline) in CASES {
            let label = if pipeline > 1 { format!(", -P {pipeline}") } else { String::new() };
            let mut row = Row::new(&format!("10. resp {name}, 32 clients{label}"), "req/s", true);
            row.cpu_unit = "µs/req";
            if !installed {
                row.na =
                    Some("redis-server / redis-benchmark not installed (apt-get install redis-server redis-tools)");
                rows.push(row);
                continue;
            }
            eprintln!("» resp {name}, 32 clients{label}");
            let load = self.redis_load(&format!("resp-{}-p{pipeline}", name.to_lowercase()), test, 32, pipeline);
            let s = self.interleave(&load, &variants);
            row.native = load.metric.stat(s.last().expect("redis-server is always measured"));
            if has_guest {
                row.host = load.metric.stat(&s[0]);
            }
            rows.push(row);
        }
        rows
    }

    /// Row 13: resp.wasm on a Redis store (`--kv redis://`) against the
    /// same redis-server asked directly: what the host, the guest and the
    /// store's round trip add to a GET and a SET. The store runs on the
    /// load generator's CPU, so the host is alone on the server's; the
    /// store's CPU during the host's runs is its `upstream_cpu`.
    /// redis-benchmark, 32 clients, one request at a time; the host and the
    /// direct runs alternate.
    pub fn resp_on_redis_rows(&mut self) -> Vec<Row> {
        let installed = redisb::installed();
        let has_guest = self.guest_or_note("resp on redis", "resp.wasm");
        let mut rows = Vec::new();
        let store = if installed && has_guest {
            let tag = self.tag("resp-kv-store", &Kind::Redis);
            match Server::start_on(&Kind::Redis, &self.paths, &tag, Duration::from_secs(60), LOADGEN_CPU) {
                Ok(store) => Some(store),
                Err(e) => {
                    self.notes.push(format!("resp on redis: the store did not start: {e:#}"));
                    None
                }
            }
        } else {
            None
        };
        for (name, test) in [("GET", "get"), ("SET", "set")] {
            let mut row = Row::new(
                &format!("13. resp {name} on --kv redis://, 32 clients (native: that redis-server)"),
                "req/s",
                true,
            );
            row.cpu_unit = "µs/req";
            let Some(store) = &store else {
                row.na = Some(if installed {
                    "resp.wasm missing or the store did not start (see the notes)"
                } else {
                    "redis-server / redis-benchmark not installed (apt-get install redis-server redis-tools)"
                });
                rows.push(row);
                continue;
            };
            eprintln!("» resp {name} on --kv redis://, 32 clients");
            let load = self.redis_load(&format!("resp-kv-{test}"), test, 32, 1);
            let url = format!("redis://{}", store.addr);
            let host = Kind::host(
                "resp.wasm",
                ["--kv", &url, "--idle-timeout", "1h", "--cpu-timeout", "1h"].map(String::from).to_vec(),
            );
            let (mut on_host, mut direct) = (Vec::new(), Vec::new());
            for rep in 0..self.plan.reps {
                for turn in 0..2 {
                    if (turn + rep) % 2 == 0 {
                        self.upstream = Some(store.pid());
                        let sample = self.measure(&load.what, &host, load.mode, &load.args);
                        self.upstream = None;
                        match sample {
                            Ok(sample) => on_host.push(sample),
                            Err(e) => self.notes.push(format!("{} host: failed: {e:#}", load.what)),
                        }
                    } else {
                        match self.measure_direct(&load, store) {
                            Ok(sample) => direct.push(sample),
                            Err(e) => self.notes.push(format!("{} direct: failed: {e:#}", load.what)),
                        }
                    }
                }
            }
            row.host = load.metric.stat(&on_host);
            row.native = load.metric.stat(&direct);
            rows.push(row);
        }
        rows
    }

    /// `load` (redis-benchmark) sent straight to the running `server`.
    fn measure_direct(&mut self, load: &Load, server: &Server) -> Result<Sample> {
        let tag = format!("{:03}-{}-direct", self.seq + 1, load.what);
        self.seq += 1;
        let budget = Duration::from_secs_f64(60.0 + 20.0 * self.plan.duration);
        let (sample, _) = redisb::run(server.addr, server.pid(), &load.args, budget).with_context(|| tag.clone())?;
        self.raw.push(format!("{tag} {} {}", load.mode, sample_line(&sample)));
        Ok(sample)
    }

    /// Row 11: proxy.wasm against HAProxy (TCP mode, one thread), each in
    /// front of the same upstream, which runs on the load generator's CPU
    /// so the proxy under test is alone on the server's: redis-benchmark
    /// GET through the proxy to a redis-server, one at a time and pipelined
    /// 16 deep, and 64 KiB echo throughput through the proxy to the native
    /// echo server. The CPU columns are the proxy's.
    pub fn proxy_rows(&mut self) -> Vec<Row> {
        let has_haproxy = wrk::on_path("haproxy");
        let has_redis = redisb::installed();
        if !has_haproxy {
            self.notes.push("proxy rows skipped: haproxy not installed (apt-get install haproxy)".into());
        } else if !has_redis {
            self.notes.push(format!(
                "proxy rows through Redis skipped: redis-server or redis-benchmark not installed ({})",
                redisb::PACKAGES
            ));
        }
        let has_guest = self.guest_or_note("proxy", "proxy.wasm");
        let mut rows = Vec::new();
        let redis_cases = [
            ("11. proxy, redis-benchmark GET, 16 clients", 1),
            ("11. proxy, redis-benchmark GET, 16 clients, -P 16", 16),
        ];
        for (name, pipeline) in redis_cases {
            let mut row = Row::new(name, "req/s", true);
            row.cpu_unit = "µs/req";
            if !has_haproxy {
                row.na = Some("haproxy not installed (apt-get install haproxy)");
            } else if !has_redis {
                row.na =
                    Some("redis-server / redis-benchmark not installed (apt-get install redis-server redis-tools)");
            } else {
                eprintln!("» {}", &name[4..]);
                let load = self.redis_load(&format!("proxy-get-p{pipeline}"), "get", 16, pipeline);
                if let Some((host, native)) = self.behind_proxies(&Kind::Redis, &load, has_guest) {
                    (row.host, row.native) = (host, native);
                }
            }
            rows.push(row);
        }
        let name = "11. proxy, 64 KiB throughput to an echo upstream, 1 conn";
        let mut row = Row::new(name, "MiB/s", true);
        row.cpu_unit = "µs/64KiB";
        row.latency = false;
        if !has_haproxy {
            row.na = Some("haproxy not installed (apt-get install haproxy)");
        } else {
            eprintln!("» {}", &name[4..]);
            let mut load = self.echo_tput_load(1);
            load.what = "proxy-tput-c1".into();
            if let Some((host, native)) = self.behind_proxies(&Kind::Native { mode: "echo" }, &load, has_guest) {
                (row.host, row.native) = (host, native);
            }
        }
        rows.push(row);
        rows
    }

    /// Starts `upstream` on the load generator's CPU, then runs `load`
    /// through proxy.wasm (if `has_guest`) and HAProxy in front of it,
    /// interleaved; stops the upstream. The stats of host and HAProxy, or
    /// None if the upstream did not start (noted).
    fn behind_proxies(
        &mut self,
        upstream: &Kind,
        load: &Load,
        has_guest: bool,
    ) -> Option<(Option<Stat>, Option<Stat>)> {
        let tag = self.tag(&format!("{}-upstream", load.what), upstream);
        let up = match Server::start_on(upstream, &self.paths, &tag, Duration::from_secs(60), LOADGEN_CPU) {
            Ok(up) => up,
            Err(e) => {
                eprintln!("  {} upstream: FAILED: {e:#}", load.what);
                self.notes.push(format!("{} upstream {}: failed: {e:#}", load.what, upstream.label()));
                return None;
            }
        };
        let addr = up.addr.to_string();
        let host = Kind::host(
            "proxy.wasm",
            [
                "--config",
                &format!("upstream={addr}"),
                "--allow-connect",
                &addr,
                "--idle-timeout",
                "1h",
                "--cpu-timeout",
                "1h",
            ]
            .map(String::from)
            .to_vec(),
        );
        let mut variants = vec![Kind::Haproxy { upstream: up.addr }];
        if has_guest {
            variants.insert(0, host);
        }
        self.upstream = Some(up.pid());
        let s = self.interleave(load, &variants);
        self.upstream = None;
        drop(up);
        let native = load.metric.stat(s.last().expect("HAProxy is always measured"));
        let host = if has_guest { load.metric.stat(&s[0]) } else { None };
        Some((host, native))
    }

    /// Whether `target/wasm32-wasip2/release/GUEST` exists; if not, a note
    /// says the `group` rows measure the native side only.
    fn guest_or_note(&mut self, group: &str, guest: &str) -> bool {
        let path = self.paths.guests.join(guest);
        let has = path.exists();
        if !has {
            self.notes
                .push(format!("{group} rows: {} is missing (make build): host side not measured", path.display()));
        }
        has
    }

    /// Row 3: resident memory per idle connection, two load rounds.
    pub fn memory_rows(&mut self) -> (Vec<Row>, Vec<(String, Sample)>) {
        let n = self.plan.mem_conns;
        eprintln!("» memory: {n} idle connections, 2 rounds");
        // Renewing the pool after the burst takes a second pool's memory
        // mappings (docs/operations.md, "Memory after a burst").
        let map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse().ok());
        if let Some(limit) = map_count.filter(|&limit: &u64| limit < 8 * n as u64 + 8192) {
            self.notes.push(format!(
                "memory: vm.max_map_count is {limit}, too low for the host to renew a pool of {n} slots after the burst: \
                 the rows after closing show the host keeping its slots' memory"
            ));
        }
        let host = Kind::host(
            "echo.wasm",
            vec!["--max-connections".into(), n.to_string(), "--idle-timeout".into(), "300s".into()],
        );
        let native = Kind::Native { mode: "echo" };
        let args = vec!["--conns".into(), n.to_string(), "--rounds".into(), "2".into()];
        let mut raw = Vec::new();
        let mut per_round: [[Option<Stat>; 2]; 2] = Default::default();
        let mut after_close: [[Option<Stat>; 2]; 2] = Default::default();
        for (i, kind) in [host, native].iter().enumerate() {
            match self.measure("memory", kind, "idle", &args) {
                Ok(s) => {
                    for (r, slot) in per_round[i].iter_mut().enumerate() {
                        let key = format!("r{}_per_conn", r + 1);
                        if let Some(v) = s.get(&key) {
                            *slot = Some(Stat::single(v / 1024.0));
                        }
                        // Over the RSS before the first round, in MiB.
                        if let (Some(after), Some(before)) =
                            (s.get(&format!("r{}_after_5s", r + 1)), s.get("rss_before"))
                        {
                            after_close[i][r] = Some(Stat::single((after - before) / (1024.0 * 1024.0)));
                        }
                        if s.get(&format!("r{}_held", r + 1)) == Some(&0.0) {
                            self.notes.push(format!(
                                "memory {} round {}: the server never held all {n} connections (fd count)",
                                kind.label(),
                                r + 1
                            ));
                        }
                    }
                    raw.push((kind.label().to_string(), s));
                }
                Err(e) => {
                    eprintln!("  memory {}: FAILED: {e:#}", kind.label());
                    self.notes.push(format!("memory {}: failed: {e:#}", kind.label()));
                }
            }
        }
        let [host_rounds, native_rounds] = per_round;
        let mut rows = Vec::new();
        for (r, (host, native)) in host_rounds.into_iter().zip(native_rounds).enumerate() {
            let mut row = Row::new(&format!("3. memory per idle conn ({n}), round {}", r + 1), "KiB/conn", false);
            row.host = host;
            row.native = native;
            row.latency = false;
            rows.push(row);
        }
        let [host_after, native_after] = after_close;
        for (r, (host, native)) in host_after.into_iter().zip(native_after).enumerate() {
            let name = format!("3. memory 5 s after all {n} conns closed, over the start, round {}", r + 1);
            let mut row = Row::new(&name, "MiB", false);
            row.host = host;
            row.native = native;
            row.latency = false;
            rows.push(row);
        }
        (rows, raw)
    }

    /// Row 4: time from spawn to the first successful TCP connect.
    pub fn startup_rows(&mut self) -> Vec<Row> {
        eprintln!("» start-up time");
        let cold_flag = if self.has_no_cache { vec!["--no-cache".to_string()] } else { vec![] };
        let cold = Kind::host("hello.wasm", cold_flag);
        let warm = Kind::host("hello.wasm", vec![]);
        let native = Kind::Native { mode: "seed" };
        if !self.has_no_cache {
            self.notes.push(
                "this host has no `--no-cache` yet: \"cold\" start-up = default flags with the (private) cache directory emptied before each run"
                    .into(),
            );
        }
        // The guest precompiled by `host compile`, loaded with no cache.
        let cwasm = match self.precompile("hello.wasm") {
            Ok(path) => Some(Kind::host(path, vec!["--no-cache".to_string()])),
            Err(e) => {
                self.notes.push(format!("start-up from a .cwasm: {e:#}"));
                None
            }
        };
        // Populate the cache once, unmeasured, so "warm" really is warm.
        let _ = self.startup_once(&warm, false);
        let mut samples: [Vec<f64>; 4] = Default::default();
        let mut kinds = vec![cold, warm, native];
        kinds.extend(cwasm);
        let names = ["host-cold", "host-warm", "native", "host-cwasm"];
        for rep in 0..self.plan.startup_runs {
            for k in 0..kinds.len() {
                let i = (k + rep) % kinds.len();
                // Without --no-cache, a cold start is simulated by emptying
                // the cache (restored by the next warm run).
                let clear = i == 0 && !self.has_no_cache;
                match self.startup_once(&kinds[i].clone(), clear) {
                    Ok(ms) => {
                        self.raw.push(format!("startup {} ms={ms:.3}", names[i]));
                        samples[i].push(ms)
                    }
                    Err(e) => self.notes.push(format!("start-up {}: {e:#}", kinds[i].label())),
                }
            }
        }
        let native_stat = Stat::from_values(&samples[2]);
        let mut rows = Vec::new();
        for (i, name) in [
            (0, "4. start-up, host cold (--no-cache)"),
            (1, "4. start-up, host warm (cached)"),
            (3, "4. start-up, host from a .cwasm (host compile)"),
        ] {
            let mut row = Row::new(name, "ms", false);
            row.host = Stat::from_values(&samples[i]);
            row.native = native_stat.clone();
            row.latency = false;
            rows.push(row);
        }
        rows
    }

    /// `host compile GUEST -o LOGS/GUEST.cwasm`, returning the `.cwasm`'s
    /// path (absolute, so `Kind::host` takes it as is).
    fn precompile(&self, guest: &str) -> Result<&'static str> {
        let out = std::path::absolute(self.paths.logs.join(guest.replace(".wasm", ".cwasm")))?;
        let status = Command::new(&self.paths.host)
            .arg("compile")
            .arg(self.paths.guests.join(guest))
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .context("running host compile")?;
        if !status.success() {
            anyhow::bail!("host compile {guest} failed: {status}");
        }
        Ok(Box::leak(out.to_string_lossy().into_owned().into_boxed_str()))
    }

    /// The hot swap: `host run --watch` on a copy of the seed server, whose
    /// file is replaced by another version (renamed over it, both already
    /// in the compiled-guest cache); the time from the rename to the first
    /// connection answered by the new version. Most of it is the 150 ms the
    /// host waits for the file to be quiet.
    pub fn swap_rows(&mut self) -> Vec<Row> {
        eprintln!("» hot swap: file change to first connection on the new code");
        let mut row = Row::new("9. hot swap, file change → first connection on the new guest (--watch)", "ms", false);
        row.latency = false;
        row.host_only = true;
        match self.swap_samples() {
            Ok(ms) => {
                for v in &ms {
                    self.raw.push(format!("swap ms={v:.3}"));
                }
                row.host = Stat::from_values(&ms);
            }
            Err(e) => self.notes.push(format!("hot swap: {e:#}")),
        }
        let mut memory = Row::new("9. hot swap, resident memory after 100 swaps under load (× after 2)", "×", false);
        memory.latency = false;
        memory.host_only = true;
        match self.swap_memory(100) {
            Ok((after2, after_all)) => {
                self.raw.push(format!("swap-rss after2={after2} after100={after_all}"));
                memory.host = Stat::from_values(&[after_all as f64 / after2 as f64]);
            }
            Err(e) => self.notes.push(format!("hot swap memory: {e:#}")),
        }
        vec![row, memory]
    }

    /// Resident memory of `host run --watch` under 32 clients doing seed
    /// exchanges without pause, after 2 and after `swaps` swaps (SIGHUP after
    /// each new file, alternating the two versions): whether replaced
    /// generations give their memory back.
    fn swap_memory(&mut self, swaps: usize) -> Result<(u64, u64)> {
        let versions = [
            std::fs::read(self.paths.guests.join("hello_v2.wasm"))?,
            std::fs::read(self.paths.guests.join("hello.wasm"))?,
        ];
        let file = std::path::absolute(self.paths.logs.join("swapped-rss.wasm"))?;
        let tmp = self.paths.logs.join("swapped-rss.wasm.tmp");
        std::fs::write(&file, &versions[1])?;
        let path: &'static str = Box::leak(file.to_string_lossy().into_owned().into_boxed_str());
        let kind = Kind::host(path, vec![]);
        let tag = self.tag("swap-rss", &kind);
        let mut server = Server::start(&kind, &self.paths, &tag, Duration::from_secs(120))?;
        let (addr, pid) = (server.addr, server.pid());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..32)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    // Bounded by the swaps below, and by time.
                    let start = Instant::now();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && start.elapsed() < Duration::from_secs(300)
                    {
                        let Ok(mut s) = TcpStream::connect(addr) else { continue };
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let _ = s.write_all(b"this is client...");
                        let mut reply = Vec::new();
                        let _ = s.read_to_end(&mut reply);
                    }
                })
            })
            .collect();
        let mut after2 = 0;
        let result = (|| -> Result<u64> {
            std::thread::sleep(Duration::from_secs(1));
            for i in 1..=swaps {
                std::fs::write(&tmp, &versions[i % 2])?;
                std::fs::rename(&tmp, &file)?;
                Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
                std::thread::sleep(Duration::from_millis(250));
                if i == 2 {
                    std::thread::sleep(Duration::from_millis(500));
                    after2 = crate::proc_stats::rss_bytes(pid)?;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            crate::proc_stats::rss_bytes(pid)
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            let _ = c.join();
        }
        server.stop()?;
        Ok((after2, result?))
    }

    fn swap_samples(&mut self) -> Result<Vec<f64>> {
        let versions: Vec<(Vec<u8>, &[u8])> = vec![
            (
                std::fs::read(self.paths.guests.join("hello_v2.wasm")).context("hello_v2.wasm (make build)")?,
                b"HELLO,AGAIN",
            ),
            (std::fs::read(self.paths.guests.join("hello.wasm"))?, b"HELLO,WORLD"),
        ];
        let file = std::path::absolute(self.paths.logs.join("swapped.wasm"))?;
        let tmp = self.paths.logs.join("swapped.wasm.tmp");
        std::fs::write(&file, &versions[1].0)?;
        let path: &'static str = Box::leak(file.to_string_lossy().into_owned().into_boxed_str());
        let kind = Kind::host(path, vec!["--watch".to_string()]);
        let tag = self.tag("swap", &kind);
        let mut server = Server::start(&kind, &self.paths, &tag, Duration::from_secs(120))?;
        let exchange = |addr: SocketAddr| -> Result<Vec<u8>> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"this is client...")?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply)?;
            Ok(reply)
        };
        // Both versions once through the cache, unmeasured.
        let mut times = Vec::new();
        for round in 0..(2 + self.plan.startup_runs) {
            let (bytes, greeting) = &versions[round % 2];
            std::fs::write(&tmp, bytes)?;
            let t0 = Instant::now();
            std::fs::rename(&tmp, &file)?;
            loop {
                if exchange(server.addr)? == *greeting {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    anyhow::bail!("no answer from the new guest 30 s after the swap");
                }
            }
            if round >= 2 {
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            // Let the file be quiet before the next swap.
            std::thread::sleep(Duration::from_millis(300));
        }
        server.stop()?;
        Ok(times)
    }

    /// One start-up: a free port is picked first (the server must be told
    /// it, since we poll before it can print anything), then the clock runs
    /// from spawn until a connect succeeds, polling every ~1 ms.
    fn startup_once(&mut self, kind: &Kind, clear_cache: bool) -> Result<f64> {
        if clear_cache {
            let _ = std::fs::remove_dir_all(&self.paths.cache_dir);
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let tag = self.tag("startup", kind);
        let log = std::fs::File::create(self.paths.logs.join(format!("{tag}.stderr")))?;
        let t0 = Instant::now();
        let mut child =
            kind.command(&self.paths, port).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?;
        let deadline = t0 + Duration::from_secs(120);
        let result = loop {
            if let Ok(s) = TcpStream::connect(addr) {
                // On an unbound port in the ephemeral range, a connect can
                // succeed by connecting to itself; that's not the server.
                if s.local_addr()? != s.peer_addr()? {
                    break Ok(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            if let Some(status) = child.try_wait()? {
                break Err(anyhow::anyhow!("server exited during start-up: {status}"));
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!("no successful connect within 120 s"));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        server::terminate(&mut child, Duration::from_secs(15))?;
        result
    }
}

/// Runs `bench loadgen MODE` pinned to the load generator's CPU and parses
/// its RESULT line; also returns what it said on stderr. Killed if it
/// exceeds `budget`.
fn run_loadgen(
    paths: &Paths,
    mode: &str,
    addr: SocketAddr,
    pid: u32,
    args: &[String],
    budget: Duration,
) -> Result<(Sample, Vec<String>)> {
    let mut child = Command::new("taskset")
        .args(["-c", LOADGEN_CPU])
        .arg(&paths.bench)
        .args(["loadgen", mode, "--addr", &addr.to_string(), "--server-pid", &pid.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning loadgen")?;
    let stdout = child.stdout.take().expect("piped");
    // Its stderr is passed through and kept, to quote in the notes.
    let stderr = child.stderr.take().expect("piped");
    let said = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  {line}");
            kept.push(line);
        }
        kept
    });
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("RESULT "))
    });
    let end = Instant::now() + budget;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("loadgen ran over its {budget:?} budget and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let line = reader.join().ok().flatten();
    let said = said.join().unwrap_or_default();
    let Some(line) = line else { bail!("loadgen failed ({status}) without a RESULT line: {}", said.join(" | ")) };
    let mut sample = Sample::new();
    for kv in line["RESULT ".len()..].split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            sample.insert(k.to_string(), v.parse().unwrap_or(f64::NAN));
        }
    }
    Ok((sample, said))
}

impl Metric {
    /// The row's value of one sample: ops/s, or MiB/s.
    pub fn value(self, s: &Sample) -> f64 {
        match self {
            Metric::Rate => s["ops"] / s["secs"],
            Metric::Tput64k => s["bytes"] / s["secs"] / (1024.0 * 1024.0),
        }
    }

    /// Operations of one sample, for CPU per op: ops, or 64 KiB messages.
    fn ops(self, s: &Sample) -> f64 {
        match self {
            Metric::Rate => s["ops"],
            Metric::Tput64k => s["bytes"] / 65536.0,
        }
    }

    /// The server's CPU µs per operation in one sample (NaN without ops).
    pub fn cpu_us(self, s: &Sample) -> f64 {
        let ops = self.ops(s);
        if ops > 0.0 {
            s["cpu"] / ops * 1e6
        } else {
            f64::NAN
        }
    }

    /// Medians over repetitions of the value, CPU µs per op, p50 and p99;
    /// None if there are no samples.
    pub fn stat(self, samples: &[Sample]) -> Option<Stat> {
        stat_from(samples, |s| self.value(s), |s| self.cpu_us(s))
    }
}

fn stat_from(samples: &[Sample], value: impl Fn(&Sample) -> f64, cpu_us: impl Fn(&Sample) -> f64) -> Option<Stat> {
    if samples.is_empty() {
        return None;
    }
    let med = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Some(Stat {
        value: med(&|s| value(s)),
        cpu_us: Some(med(&|s| cpu_us(s))),
        p50_us: Some(med(&|s| s["p50_us"])),
        p99_us: Some(med(&|s| s["p99_us"])),
        errors: samples.iter().map(|s| s["errors"] as u64).sum(),
        client_busy: Some(med(&|s| s.get("client_cpu").copied().unwrap_or(f64::NAN) / s["secs"])),
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn sample_line(s: &Sample) -> String {
    let mut kv: Vec<_> = s.iter().map(|(k, v)| format!("{k}={v}")).collect();
    kv.sort();
    kv.join(" ")
}
