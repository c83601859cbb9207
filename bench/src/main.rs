//! `bench`: the project's benchmark suite, in one binary.
//!
//! - `bench [--quick] [--out DIR] ...`  the orchestrator (default)
//! - `bench ab --a HOST --b HOST ...`   two host builds compared, interleaved (src/ab.rs)
//! - `bench native seed|echo|http ...`  the native tokio (and hyper) baseline server
//! - `bench loadgen MODE ...`           the load generator
//!
//! The orchestrator re-runs its own executable for the other two roles, so
//! one `cargo build --release -p bench` builds everything. The HTTP rows use
//! `wrk` instead of the load generator (src/wrk.rs), the resp and proxy rows
//! `redis-benchmark` (src/redisb.rs), against `redis-server` and HAProxy as
//! the native peers; each group is skipped with a note where its tools are
//! not installed.

mod ab;
mod bundle;
mod loadgen;
mod native;
mod proc_stats;
mod redisb;
mod report;
mod runner;
mod server;
mod svg;
mod wrk;

use anyhow::{bail, Context, Result};
use report::{Extras, Header, Row};
use runner::{Plan, Runner};
use server::Paths;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const USAGE: &str = "usage: bench [--quick] [--out DIR] [--reps N] [--duration SECS] [--mem-conns N] [--skip-memory] [--only seed,echo,memory,startup,swap,http,resp,proxy,bundle]
       bench ab --a HOST_BIN --b HOST_BIN [--label-a TEXT] [--label-b TEXT] [--reps N] [--duration SECS] [--rows LIST] [--out DIR]
       bench native seed|echo|http [--port N] [--addr IP]
       bench loadgen seed|echo-rr|echo-tput|idle --addr A --server-pid P [...]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("native") => native::main(&args[1..]),
        Some("loadgen") => loadgen::main(&args[1..]),
        Some("ab") => ab::main(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => orchestrate(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn orchestrate(args: &[String]) -> Result<()> {
    let mut quick = args.iter().any(|a| a == "--quick");
    let mut plan = Plan::new(quick);
    let mut out = PathBuf::from("bench/results");
    let mut skip_memory = false;
    // Groups of rows to run (`--only`); all by default.
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(val()?),
            "--reps" => plan.reps = val()?.parse()?,
            "--duration" => plan.duration = val()?.parse()?,
            "--mem-conns" => plan.mem_conns = val()?.parse()?,
            "--skip-memory" => skip_memory = true,
            "--only" => only = Some(val()?.split(',').map(str::to_string).collect()),
            _ => bail!("unknown argument {a}\n{USAGE}"),
        }
    }
    let started = Instant::now();
    let (nproc, nofile) = prepare_machine()?;
    if nofile < plan.mem_conns as u64 + 100 {
        eprintln!("bench: RLIMIT_NOFILE is {nofile}, too low for {} idle connections; lowering", plan.mem_conns);
        plan.mem_conns = nofile.saturating_sub(100) as usize;
    }

    let paths = find_paths(&out, None)?;
    fresh_logs(&paths.logs)?;
    let plan_text = format!(
        "{} rep(s), {}s warm-up + {}s measured per window, {} idle conns for memory, {} start-up runs",
        plan.reps, plan.warmup, plan.duration, plan.mem_conns, plan.startup_runs
    );
    eprintln!("bench: {} mode: {plan_text}", if quick { "quick" } else { "full" });

    // The target directory is shared with ongoing host work: notice if the
    // host binary is replaced mid-run, which would mix two builds.
    let host_mtime = || std::fs::metadata(&paths.host).and_then(|m| m.modified()).ok();
    let host_at_start = host_mtime();
    let mut runner = Runner::new(plan, paths.clone())?;
    let mut rows: Vec<Row> = Vec::new();
    let wanted = |group: &str| only.as_ref().is_none_or(|o| o.iter().any(|g| g == group));
    let (mut python, mut seed32) = (None, None);
    if wanted("seed") {
        let (seed_rows, py) = runner.seed_rows();
        seed32 = seed_rows.get(1).cloned();
        python = py;
        rows.extend(seed_rows);
    }
    if wanted("echo") {
        rows.extend(runner.echo_rows());
    }
    let mut memory = Vec::new();
    if !skip_memory && wanted("memory") {
        let (mem_rows, raw) = runner.memory_rows();
        rows.extend(mem_rows);
        memory = raw;
    }
    if wanted("startup") {
        rows.extend(runner.startup_rows());
    }
    if wanted("swap") {
        rows.extend(runner.swap_rows());
    }
    if wanted("http") {
        rows.extend(runner.http_rows());
    }
    if wanted("resp") {
        rows.extend(runner.resp_rows());
        rows.extend(runner.resp_on_redis_rows());
    }
    if wanted("proxy") {
        rows.extend(runner.proxy_rows());
    }
    if wanted("bundle") {
        rows.extend(bundle::rows(&mut runner));
    }

    // Anything the servers wrote to stderr at warn level is worth a look.
    let mut notes = std::mem::take(&mut runner.notes);
    notes.extend(server_log_notes(&paths.logs));
    if host_mtime() != host_at_start {
        notes.push("the host binary was rebuilt during this run: its rows mix two builds, run again".into());
    }
    notes.push(format!("total bench time {:.0} s", started.elapsed().as_secs_f64()));
    let _ = std::fs::remove_dir_all(&paths.cache_dir);

    let mode = if quick { "quick" } else { "full" };
    let header = Header {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        nproc,
        cpu_model: cpu_model(),
        mode,
        git: git_description(),
        host_built: command_line("date", &["-u", "-r", &paths.host.to_string_lossy(), "+%Y-%m-%d %H:%M:%S UTC"]),
        plan: plan_text,
    };
    let md = report::markdown(&header, &rows, &Extras { python, seed32, memory, notes });
    let svg = svg::chart(&format!("netplug: host+guest vs native ({mode}, {})", header.date), &rows);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("latest.md"), &md)?;
    std::fs::write(out.join("latest.svg"), &svg)?;
    std::fs::write(out.join("latest.raw.txt"), runner.raw.join("\n") + "\n")?;
    println!("{md}");
    eprintln!("bench: wrote {} and {}", out.join("latest.md").display(), out.join("latest.svg").display());
    Ok(())
}

/// What every orchestrator needs before its first server starts: two CPUs,
/// itself off the server's CPU, and a raised open-file limit. Returns the
/// number of online CPUs and the soft open-file limit now in force.
fn prepare_machine() -> Result<(usize, u64)> {
    let nproc = online_cpus();
    if nproc < 2 {
        bail!("needs 2 CPUs (server on CPU 0, load generator on CPU 1); this machine has {nproc}");
    }
    // The orchestrator itself (which polls connects in the start-up row)
    // stays off the server's CPU.
    pin_self_to_cpu(1);
    // 10,000 idle connections need more than the default file limit, in the
    // load generator and in the server; children inherit this.
    Ok((nproc, raise_nofile(65_536)))
}

/// Creates the server log directory, emptied: old logs of a previous run
/// would confuse the notes.
fn fresh_logs(logs: &Path) -> Result<()> {
    std::fs::create_dir_all(logs)?;
    for e in std::fs::read_dir(logs)?.flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    Ok(())
}

/// Locates the host (`host`, else the workspace's release build), the
/// guests, the Python server and this binary. The workspace root is the
/// parent of this crate's source directory.
fn find_paths(out: &Path, host: Option<PathBuf>) -> Result<Paths> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.parent().context("no workspace root")?.to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(root.join("target"));
    let paths = Paths {
        host: host.unwrap_or_else(|| target.join("release/host")),
        guests: target.join("wasm32-wasip2/release"),
        python_server: crate_dir.join("seed_server.py"),
        bench: std::env::current_exe()?,
        logs: out.join("logs"),
        cache_dir: std::env::temp_dir().join(format!("netplug-bench-cache-{}", std::process::id())),
    };
    for p in [&paths.host, &paths.guests.join("hello.wasm"), &paths.guests.join("echo.wasm")] {
        if !p.exists() {
            bail!("{} is missing: run `make build` first", p.display());
        }
    }
    Ok(paths)
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

fn pin_self_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Raises the soft (and if allowed the hard) open-file limit; returns the
/// soft limit in force afterwards.
fn raise_nofile(want: u64) -> u64 {
    // SAFETY: plain getrlimit/setrlimit on local structs.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        // Raising the hard limit needs CAP_SYS_RESOURCE, which a container
        // may not grant even to root: then settle for the hard limit.
        let new = libc::rlimit { rlim_cur: want, rlim_max: want.max(lim.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
            return want;
        }
        let fallback = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &fallback) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn git_description() -> String {
    let rev = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !command_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if rev.is_empty() {
        "unknown".into()
    } else if dirty {
        format!("{rev} (+ uncommitted changes)")
    } else {
        rev
    }
}

/// One note per server whose stderr (`TAG.stderr`) was not empty (first
/// line quoted); empty logs are removed. The generated configuration files
/// beside them are not logs.
fn server_log_notes(dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "stderr")).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if text.trim().is_empty() {
            let _ = std::fs::remove_file(&p);
            continue;
        }
        let first = text.lines().next().unwrap_or("");
        notes.push(format!(
            "server log {} has {} line(s), first: `{}`",
            p.file_name().unwrap_or_default().to_string_lossy(),
            text.lines().count(),
            first.chars().take(160).collect::<String>()
        ));
    }
    notes
}
