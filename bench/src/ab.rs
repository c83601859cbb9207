//! `bench ab`: two builds of the host, A and B, serving the same guests,
//! compared row by row. This is how a change shows it does not slow the
//! hot path.
//!
//! Each row runs `reps` pairs, A then B or B then A (the order alternates
//! from pair to pair, so slow drift on a shared machine cancels), each run
//! a fresh server pinned like the main report's rows (src/runner.rs does
//! the measuring). The verdict is the server's CPU per operation: the load
//! generator often sets the pace (the `*` marks), so rates can tie while
//! the CPU spent on each operation differs. Per row the report gives the
//! medians of A and B, and the median of the per-pair ratios B/A with
//! their range; a range that straddles 1 means no difference this run
//! could see.

use crate::report::{self, num, Stat};
use crate::runner::{self, median, Load, Plan, Runner, Sample};
use crate::server::{Build, Kind, Paths};
use crate::wrk;
use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

const USAGE: &str = "usage: bench ab --a HOST_BIN --b HOST_BIN [--label-a TEXT] [--label-b TEXT] [--reps N] [--duration SECS] [--rows LIST] [--out DIR] [--guests-a DIR] [--guests-b DIR] [--serve-b]
  LIST: comma-separated of seed32,seed256,echo64k,echo-rr8,http-ka,http-close (default: all)
  --guests-a/--guests-b: each side's guests (default: target/wasm32-wasip2/release), to compare two builds of the guests
  --serve-b: B serves through `host serve` and a one-listener file instead of `host run`";

/// One row of the A/B table: its `--rows` name, the guest both builds
/// serve, and how the main report's loads are picked and counted.
struct Spec {
    name: &'static str,
    title: &'static str,
    guest: &'static str,
    unit: &'static str,
    cpu_unit: &'static str,
}

const ROWS: [Spec; 6] = [
    Spec {
        name: "seed32",
        title: "seed exchange, 32 concurrent",
        guest: "hello.wasm",
        unit: "exch/s",
        cpu_unit: "µs/exch",
    },
    Spec {
        name: "seed256",
        title: "seed exchange, 256 concurrent",
        guest: "hello.wasm",
        unit: "exch/s",
        cpu_unit: "µs/exch",
    },
    Spec {
        name: "echo64k",
        title: "echo 64 KiB throughput, 1 conn",
        guest: "echo.wasm",
        unit: "MiB/s",
        cpu_unit: "µs/64KiB",
    },
    Spec {
        name: "echo-rr8", title: "echo 64 B req/resp, 8 conn", guest: "echo.wasm", unit: "rt/s", cpu_unit: "µs/rt"
    },
    Spec {
        name: "http-ka",
        title: "HTTP keep-alive, wrk -t1 -c32",
        guest: "http.wasm",
        unit: "req/s",
        cpu_unit: "µs/req",
    },
    Spec {
        name: "http-close",
        title: "HTTP Connection: close, wrk -t1 -c32",
        guest: "http.wasm",
        unit: "req/s",
        cpu_unit: "µs/req",
    },
];

impl Spec {
    fn load(&self, runner: &Runner) -> Load {
        match self.name {
            "seed32" => runner.seed_load(32),
            "seed256" => runner.seed_load(256),
            "echo64k" => runner.echo_tput_load(1),
            "echo-rr8" => runner.echo_rr_load(8),
            "http-ka" => Runner::http_load(false),
            "http-close" => Runner::http_load(true),
            other => unreachable!("row {other} has no load"),
        }
    }

    fn uses_wrk(&self) -> bool {
        self.name.starts_with("http")
    }
}

/// One measured (or skipped) row.
struct AbRow {
    spec: &'static Spec,
    a: Option<Stat>,
    b: Option<Stat>,
    /// Per pair where both sides succeeded: B/A of the rate, of CPU per op.
    rate_ratios: Vec<f64>,
    cpu_ratios: Vec<f64>,
    /// Samples kept although other processes were busy in their window,
    /// out of all samples kept.
    noisy: (usize, usize),
    /// Why the row was not measured.
    skipped: Option<String>,
}

struct Opts {
    a: PathBuf,
    b: PathBuf,
    label_a: String,
    label_b: String,
    reps: usize,
    duration: f64,
    rows: Vec<&'static Spec>,
    out: PathBuf,
    guests: [Option<PathBuf>; 2],
    serve_b: bool,
}

fn parse_args(args: &[String]) -> Result<Opts> {
    let (mut a, mut b) = (None, None);
    let mut o = Opts {
        a: PathBuf::new(),
        b: PathBuf::new(),
        label_a: "A".into(),
        label_b: "B".into(),
        reps: 5,
        duration: 3.0,
        rows: ROWS.iter().collect(),
        out: PathBuf::from("bench/results/ab"),
        guests: [None, None],
        serve_b: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--serve-b" {
            o.serve_b = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--a" => a = Some(PathBuf::from(v)),
            "--b" => b = Some(PathBuf::from(v)),
            "--label-a" => o.label_a = v.clone(),
            "--label-b" => o.label_b = v.clone(),
            "--reps" => o.reps = v.parse().with_context(|| format!("--reps {v}"))?,
            "--duration" => o.duration = v.parse().with_context(|| format!("--duration {v}"))?,
            "--rows" => o.rows = select_rows(v)?,
            "--out" => o.out = PathBuf::from(v),
            "--guests-a" => o.guests[0] = Some(guest_dir(v)?),
            "--guests-b" => o.guests[1] = Some(guest_dir(v)?),
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    if o.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if !(o.duration > 0.0 && o.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    o.a = host_bin(a, "--a")?;
    o.b = host_bin(b, "--b")?;
    Ok(o)
}

/// `all`, or names from ROWS, comma-separated; kept in ROWS's order.
fn select_rows(list: &str) -> Result<Vec<&'static Spec>> {
    let names: Vec<&str> = list.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    if names.contains(&"all") {
        return Ok(ROWS.iter().collect());
    }
    if let Some(bad) = names.iter().find(|n| !ROWS.iter().any(|r| r.name == **n)) {
        let known: Vec<&str> = ROWS.iter().map(|r| r.name).collect();
        bail!("unknown row {bad:?} in --rows (known: {}, or all)", known.join(", "));
    }
    if names.is_empty() {
        bail!("--rows is empty");
    }
    Ok(ROWS.iter().filter(|r| names.contains(&r.name)).collect())
}

/// The absolute path of a directory of guests.
fn guest_dir(dir: &str) -> Result<PathBuf> {
    let abs = Path::new(dir).canonicalize().with_context(|| format!("guest directory {dir}"))?;
    if !abs.is_dir() {
        bail!("{} is not a directory of guests", abs.display());
    }
    Ok(abs)
}

/// The absolute path of an executable host binary given as `flag`.
fn host_bin(path: Option<PathBuf>, flag: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = path.with_context(|| format!("{flag} HOST_BIN is required\n{USAGE}"))?;
    let abs = path.canonicalize().with_context(|| format!("{flag} {}", path.display()))?;
    let meta = std::fs::metadata(&abs)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("{flag} {} is not an executable file", abs.display());
    }
    Ok(abs)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

pub fn main(args: &[String]) -> Result<()> {
    let o = parse_args(args)?;
    let started = Instant::now();
    let (nproc, _) = crate::prepare_machine()?;
    // The full report's plan (warm-up, operation cap), with this mode's
    // repetitions and window.
    let mut plan = Plan::new(false);
    plan.reps = o.reps;
    plan.duration = o.duration;
    let plan_text = format!(
        "{} pair(s) per row, order alternating; {}s warm-up + {}s measured per run",
        plan.reps, plan.warmup, plan.duration
    );
    eprintln!("bench ab: {plan_text}");
    eprintln!("bench ab: A ({}) = {}", o.label_a, o.a.display());
    eprintln!("bench ab: B ({}) = {}", o.label_b, o.b.display());

    let paths = crate::find_paths(&o.out, Some(o.a.clone()))?;
    crate::fresh_logs(&paths.logs)?;
    let built_at_start = [mtime(&o.a), mtime(&o.b)];
    let builds = [
        Build { tag: "a", bin: o.a.clone(), guests: o.guests[0].clone(), serve: false },
        Build { tag: "b", bin: o.b.clone(), guests: o.guests[1].clone(), serve: o.serve_b },
    ];
    let mut runner = Runner::new(plan, paths.clone())?;
    let rows: Vec<AbRow> = o.rows.iter().map(|spec| run_row(&mut runner, &paths, &builds, spec)).collect();

    let mut notes = std::mem::take(&mut runner.notes);
    notes.extend(crate::server_log_notes(&paths.logs));
    for (i, (bin, label)) in [(&o.a, &o.label_a), (&o.b, &o.label_b)].into_iter().enumerate() {
        if mtime(bin) != built_at_start[i] {
            notes.push(format!("{label} ({}) was rebuilt during this run: its rows mix two builds", bin.display()));
        }
    }
    notes.push(format!("total time {:.0} s", started.elapsed().as_secs_f64()));
    let _ = std::fs::remove_dir_all(&paths.cache_dir);

    let built = |p: &Path| crate::command_line("date", &["-u", "-r", &p.to_string_lossy(), "+%Y-%m-%d %H:%M:%S UTC"]);
    let mut md = String::new();
    let _ = writeln!(md, "# netplug A/B: {} vs {}\n", o.label_a, o.label_b);
    let _ = writeln!(md, "- date: {}", crate::command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]));
    let _ = writeln!(md, "- machine: {nproc} CPUs (`nproc`), {}", crate::cpu_model());
    let _ = writeln!(md, "- A ({}): `{}`, built {}", o.label_a, o.a.display(), built(&o.a));
    let _ = writeln!(md, "- B ({}): `{}`, built {}", o.label_b, o.b.display(), built(&o.b));
    let side = |i: usize| o.guests[i].as_ref().unwrap_or(&paths.guests).display().to_string();
    let _ = writeln!(md, "- guests: A `{}`, B `{}`; bench at commit {}", side(0), side(1), crate::git_description());
    if o.serve_b {
        let _ = writeln!(md, "- B serves through `host serve` (a one-listener file), A through `host run`");
    }
    let _ = writeln!(md, "- plan: {plan_text}; server on CPU 0, load generator on CPU 1");
    md.push_str(&table(&rows));
    if !notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in &notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    std::fs::create_dir_all(&o.out)?;
    std::fs::write(o.out.join("ab.md"), &md)?;
    std::fs::write(o.out.join("ab.raw.txt"), runner.raw.join("\n") + "\n")?;
    println!("{md}");
    eprintln!("bench ab: wrote {}", o.out.join("ab.md").display());
    Ok(())
}

/// Runs one row's pairs, A and B serving its guest under the same load.
fn run_row(runner: &mut Runner, paths: &Paths, builds: &[Build; 2], spec: &'static Spec) -> AbRow {
    let mut row =
        AbRow { spec, a: None, b: None, rate_ratios: vec![], cpu_ratios: vec![], noisy: (0, 0), skipped: None };
    let guest = paths.guests.join(spec.guest);
    if spec.uses_wrk() && !wrk::installed() {
        row.skipped = Some("skipped: wrk not installed (apt-get install wrk)".into());
    } else if !guest.exists() {
        row.skipped = Some(format!("skipped: {} is missing (make build)", guest.display()));
    }
    if row.skipped.is_some() {
        return row;
    }
    eprintln!("» {} ({}), {} pair(s)", spec.title, spec.name, runner.plan.reps);
    let load = spec.load(runner);
    let variants: Vec<Kind> =
        builds.iter().map(|b| Kind::Host { guest: spec.guest, extra: vec![], build: Some(b.clone()) }).collect();
    let reps = runner.interleave_reps(&load, &variants);
    let (mut a, mut b): (Vec<Sample>, Vec<Sample>) = (Vec::new(), Vec::new());
    for rep in reps {
        let [sa, sb]: [Option<Sample>; 2] = rep.try_into().expect("two variants");
        if let (Some(x), Some(y)) = (&sa, &sb) {
            let m = load.metric;
            row.rate_ratios.push(m.value(y) / m.value(x));
            row.cpu_ratios.push(m.cpu_us(y) / m.cpu_us(x));
        }
        a.extend(sa);
        b.extend(sb);
    }
    let kept = a.iter().chain(&b);
    row.noisy = (kept.clone().filter(|s| runner::noise(s) > runner::NOISY).count(), kept.count());
    row.a = load.metric.stat(&a);
    row.b = load.metric.stat(&b);
    row
}

fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

/// The result table and its legend.
fn table(rows: &[AbRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n| row | unit | A | B | B/A | A CPU/op | B CPU/op | CPU/op B/A | CPU/op B/A range (pairs) | noisy runs |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let name = format!("{} `{}`", r.spec.title, r.spec.name);
        if let Some(why) = &r.skipped {
            let _ = writeln!(s, "| {name} | {} | {why} | | | | | | | |", r.spec.unit);
            continue;
        }
        let cpu = |st: &Option<Stat>| match st.as_ref().and_then(|x| x.cpu_us) {
            Some(v) if v.is_finite() => format!("{} {}", num(v), r.spec.cpu_unit),
            _ => "–".into(),
        };
        let range = match (min(&r.cpu_ratios), max(&r.cpu_ratios)) {
            (Some(lo), Some(hi)) => format!("{}–{} ({})", ratio(lo), ratio(hi), r.cpu_ratios.len()),
            _ => "– (0)".into(),
        };
        let _ = writeln!(
            s,
            "| {name} | {} ↑ | {} | {} | {} | {} | {} | **{}** | {range} | {}/{} |",
            r.spec.unit,
            report::value(&r.a),
            report::value(&r.b),
            ratio(median(r.rate_ratios.clone())),
            cpu(&r.a),
            cpu(&r.b),
            ratio(median(r.cpu_ratios.clone())),
            r.noisy.0,
            r.noisy.1,
        );
    }
    let _ = writeln!(
        s,
        "\nA and B: medians over the runs. B/A: median of the per-pair ratios (a pair is one A run and one B run \
         back to back); the range is their min–max. CPU = server utime+stime per operation: CPU/op B/A below 1 \
         means B spends less CPU per operation than A; a range that straddles 1.000 means no difference this run \
         could resolve. Noisy runs: other processes used more than {:.0}% of a CPU during the window, even \
         on a retry; where there are many, run again on a quieter machine. \\* the load generator used ≥{:.0}% \
         of its core: the rate is the client's pace, a lower bound of the server's capacity (CPU/op is not \
         affected).",
        runner::NOISY * 100.0,
        report::CLIENT_BOUND * 100.0
    );
    s
}

fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().filter(|x| x.is_finite()).reduce(f64::min)
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().filter(|x| x.is_finite()).reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_select_in_table_order() {
        let names = |l: &str| select_rows(l).unwrap().iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names("http-ka,seed32"), ["seed32", "http-ka"]);
        assert_eq!(names("all").len(), ROWS.len());
        assert!(select_rows("seed33").is_err());
        assert!(select_rows(",").is_err());
    }

    #[test]
    fn every_row_has_a_load() {
        let paths = Paths {
            host: "/bin/true".into(),
            guests: PathBuf::new(),
            python_server: PathBuf::new(),
            bench: PathBuf::new(),
            logs: PathBuf::new(),
            cache_dir: PathBuf::new(),
        };
        let runner = Runner::new(Plan::new(true), paths).unwrap();
        for spec in &ROWS {
            let load = spec.load(&runner);
            assert_eq!(spec.uses_wrk(), load.mode == wrk::MODE, "{}", spec.name);
        }
    }
}
