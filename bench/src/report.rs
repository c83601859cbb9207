//! The results: one row per measurement, rendered as a markdown table.
//!
//! Every row carries a host+guest value and a native value. The "host/native"
//! column is that literal ratio; whether more is better depends on the row
//! (rates: higher; memory and start-up: lower), marked ↑ or ↓ in the unit.

use std::fmt::Write;

/// The median of one variant over the repetitions.
#[derive(Clone, Debug, Default)]
pub struct Stat {
    pub value: f64,
    /// Server CPU time (utime+stime) per operation, µs.
    pub cpu_us: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Client-side errors, summed over repetitions.
    pub errors: u64,
    /// Share of its core the load generator used in the measured window
    /// (median); near 1.0 means the client, not the server, set the pace.
    pub client_busy: Option<f64>,
}

impl Stat {
    pub fn single(value: f64) -> Stat {
        Stat { value, ..Default::default() }
    }
    pub fn from_values(v: &[f64]) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        Some(Stat { value: crate::runner::median(v.to_vec()), ..Default::default() })
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub higher_better: bool,
    pub host: Option<Stat>,
    pub native: Option<Stat>,
    pub cpu_unit: &'static str,
    /// Whether p50/p99 latency columns apply.
    pub latency: bool,
    /// Shown instead of numbers (e.g. the HTTP row).
    pub na: Option<&'static str>,
    /// No native peer does this (a hot swap): the native column says so.
    pub host_only: bool,
}

impl Row {
    pub fn new(name: &str, unit: &'static str, higher_better: bool) -> Row {
        Row {
            name: name.to_string(),
            unit,
            higher_better,
            host: None,
            native: None,
            cpu_unit: "",
            latency: true,
            na: None,
            host_only: false,
        }
    }

    /// Literal host ÷ native; none where a side is not above zero (memory
    /// kept after a burst can be below what there was before it).
    pub fn ratio(&self) -> Option<f64> {
        let (h, n) = (self.host.as_ref()?.value, self.native.as_ref()?.value);
        (h.is_finite() && n.is_finite() && n > 0.0 && h > 0.0).then(|| h / n)
    }

    /// Host's performance relative to native, higher is better whatever the
    /// metric: host/native for rates, native/host for costs. This is what
    /// the chart plots against the 0.9x target.
    pub fn relative_performance(&self) -> Option<f64> {
        let r = self.ratio()?;
        Some(if self.higher_better {
            r
        } else if r > 0.0 {
            1.0 / r
        } else {
            f64::NAN
        })
    }

    pub fn cpu_ratio(&self) -> Option<f64> {
        let h = self.host.as_ref()?.cpu_us?;
        let n = self.native.as_ref()?.cpu_us?;
        (h.is_finite() && n.is_finite() && n > 0.0).then(|| h / n)
    }
}

/// Human-friendly number: thousands separators for big, 2–3 significant
/// digits for small.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>, suffix: &str) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{}{suffix}", num(x)),
        _ => "–".into(),
    }
}

fn latency(s: &Option<Stat>) -> String {
    match s {
        Some(s) => match (s.p50_us, s.p99_us) {
            (Some(a), Some(b)) => format!("{} / {}", num(a), num(b)),
            _ => "–".into(),
        },
        None => "–".into(),
    }
}

/// Above this share of its core, the load generator is the bottleneck.
pub const CLIENT_BOUND: f64 = 0.9;

pub fn value(s: &Option<Stat>) -> String {
    match s {
        Some(s) => {
            let mut v = num(s.value);
            if s.client_busy.is_some_and(|b| b >= CLIENT_BOUND) {
                v.push_str(" *");
            }
            if s.errors > 0 {
                let _ = write!(v, " ({} err)", s.errors);
            }
            v
        }
        None => "failed".into(),
    }
}

pub struct Header {
    pub date: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub mode: &'static str,
    pub git: String,
    /// The host binary's modification time: it may be rebuilt between runs.
    pub host_built: String,
    pub plan: String,
}

/// The extras the markdown shows below the main table.
pub struct Extras {
    /// Row 6: the seed's own design, beside host and native at 32.
    pub python: Option<Stat>,
    pub seed32: Option<Row>,
    /// Row 3 in detail: (label, RESULT pairs of the idle run).
    pub memory: Vec<(String, std::collections::HashMap<String, f64>)>,
    pub notes: Vec<String>,
}

pub fn markdown(h: &Header, rows: &[Row], x: &Extras) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# netplug benchmark ({})\n", h.mode);
    let _ = writeln!(s, "- date: {}", h.date);
    let _ = writeln!(s, "- machine: {} CPUs (`nproc`), {}", h.nproc, h.cpu_model);
    let _ = writeln!(s, "- commit: {}; host binary built {}", h.git, h.host_built);
    let _ = writeln!(s, "- mode: {} ({})", h.mode, h.plan);
    let _ = writeln!(
        s,
        "- server pinned to CPU 0, load generator to CPU 1; host+guest and native interleaved, median of repetitions"
    );
    let _ = writeln!(s, "- ↑ higher is better, ↓ lower is better; host/native is the literal ratio; CPU = server utime+stime per operation\n");
    let _ = writeln!(
        s,
        "| benchmark | unit | host+guest | native | host/native | host CPU/op | native CPU/op | CPU host/native | host p50 / p99 µs | native p50 / p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        if let Some(na) = r.na {
            let _ = writeln!(s, "| {} | {} | {na} | | | | | | | |", r.name, r.unit);
            continue;
        }
        let arrow = if r.higher_better { "↑" } else { "↓" };
        let cpu = |st: &Option<Stat>| opt(st.as_ref().and_then(|x| x.cpu_us), &format!(" {}", r.cpu_unit));
        let (lh, ln) = if r.latency { (latency(&r.host), latency(&r.native)) } else { ("".into(), "".into()) };
        let _ = writeln!(
            s,
            "| {} | {} {arrow} | {} | {} | {} | {} | {} | {} | {lh} | {ln} |",
            r.name,
            r.unit,
            value(&r.host),
            if r.host_only { "n/a".to_string() } else { value(&r.native) },
            opt(r.ratio(), "x"),
            cpu(&r.host),
            cpu(&r.native),
            opt(r.cpu_ratio(), "x"),
        );
    }

    let _ = writeln!(
        s,
        "\n\\* the load generator used ≥{:.0}% of its core in the measured window: the client may have set the pace, so that value is a lower bound of the server's capacity (the CPU/op columns are not affected).",
        CLIENT_BOUND * 100.0
    );

    // Row 6 in full: the seed's blocking design next to host and native.
    if let Some(seed) = &x.seed32 {
        let _ = writeln!(s, "\n## 6. The seed's own design as the floor (seed exchange, 32 concurrent)\n");
        let _ = writeln!(s, "| server | exch/s ↑ | CPU/exch | p50 / p99 µs | vs native |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        let native_v = seed.native.as_ref().map(|n| n.value);
        let mut line = |name: &str, st: &Option<Stat>| {
            let vs = match (st, native_v) {
                (Some(a), Some(n)) if n > 0.0 => format!("{}x", num(a.value / n)),
                _ => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {vs} |",
                value(st),
                opt(st.as_ref().and_then(|x| x.cpu_us), " µs"),
                latency(st)
            );
        };
        line("host + hello.wasm", &seed.host);
        line("native tokio", &seed.native);
        line("python seed_server.py (blocking, listen(5))", &x.python);
        let _ = writeln!(s, "\nThe Python server serves one connection at a time behind a listen(5) backlog; clients beyond the backlog have their handshakes dropped and retried by the kernel (1 s, 3 s, …), which shows up as client errors (5 s exchange timeout) rather than in p99.");
    }

    if !x.memory.is_empty() {
        let _ = writeln!(s, "\n## 3. Memory in detail (VmRSS, MiB)\n");
        let _ = writeln!(s, "| server | before | round 1 held | round 1 after close | round 2 held | round 2 after close | open time r1 / r2 s |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (label, m) in &x.memory {
            let mib = |k: &str| m.get(k).map(|v| num(v / 1048576.0)).unwrap_or("–".into());
            let g = |k: &str| m.get(k).map(|v| num(*v)).unwrap_or("–".into());
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} | {} | {} / {} |",
                mib("rss_before"),
                mib("r1_rss"),
                mib("r1_after_close"),
                mib("r2_rss"),
                mib("r2_after_close"),
                g("r1_open_secs"),
                g("r2_open_secs")
            );
        }
        let _ = writeln!(s, "\nThe native echo server allocates its 64 KiB buffer when a connection is accepted; on a fresh heap those pages are not touched until data arrives, but memory reused after round 1 is zeroed (touched) by the allocator, which shows up in round 2.");
        let _ = writeln!(s, "\nPer-connection figures in the main table are (RSS held − RSS before the first round) / connections, for both rounds, so memory kept from round 1 shows up as growth in round 2.");
    }

    if !x.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &x.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
