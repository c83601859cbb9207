//! Reading a server's resource use from /proc, by pid.
//!
//! The servers under test are separate processes (host or native), so CPU
//! time and memory are read from the outside, the same way for both.

use anyhow::{anyhow, Context, Result};

/// Clock ticks per second, the unit of utime/stime in /proc/PID/stat.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of the whole process (all threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Field 2 (comm) is in parentheses and may contain spaces: split after
    // the last ')'. What follows starts at field 3 (state).
    let rest = &text[text.rfind(')').ok_or_else(|| anyhow!("bad stat line"))? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (1-based) are at index 11 and 12 of `rest`.
    let utime: f64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: f64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok((utime + stime) / clk_tck())
}

/// Resident memory (VmRSS) in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kib * 1024);
        }
    }
    Err(anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// Number of open file descriptors: tells when the server has accepted
/// (or closed) the connections we opened.
pub fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("listing /proc/{pid}/fd"))?.count())
}

/// Machine-wide busy CPU time in seconds (all CPUs, everything but idle and
/// iowait), from the first line of /proc/stat. Minus the server's and the
/// load generator's own time, it tells how much else ran during a window.
pub fn machine_busy_seconds() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text.lines().next().ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already included in user, so only the first 8 count.
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    Ok((total - idle) / clk_tck())
}
