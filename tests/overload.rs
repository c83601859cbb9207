//! Overload: slow clients must not lock good ones out. With the host's
//! default flags serving the `http` guest, 1,100 slowloris clients (more than
//! `--max-connections`, 1000 by default) each trickle a request head that
//! never ends and reconnect whenever they are closed; meanwhile a good
//! client's request must still be answered in under 5 s, every time.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Slow clients: more than the default `--max-connections`.
const SLOW_CLIENTS: usize = 1100;
/// How long the good client keeps trying, and how often.
const GOOD_FOR: Duration = Duration::from_secs(40);
const GOOD_EVERY: Duration = Duration::from_secs(5);

#[test]
fn slowloris_does_not_lock_out_a_good_client() {
    let limit = raise_fd_limit();
    assert!(limit >= 2500, "this test needs an open-file limit of 2500 (host and slow clients), have {limit}");
    let host = Host::serve("http", &[]);

    // The slow clients, bounded: the script stops when its stdin closes, or
    // at the latest after GOOD_FOR plus a margin.
    let bound = (GOOD_FOR + Duration::from_secs(15)).as_secs().to_string();
    let mut slowloris = Command::new("python3")
        .arg(python_script("slowloris.py"))
        .args([&host.addr.port().to_string(), &SLOW_CLIENTS.to_string(), &bound, "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let stdin = slowloris.stdin.take().unwrap();
    let mut lines = BufReader::new(slowloris.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    let connected: usize = ready.strip_prefix("ready ").and_then(|r| r.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(connected >= SLOW_CLIENTS, "the slow clients did not all connect: {ready:?}");

    // The good client: a fresh curl every GOOD_EVERY, each allowed 5 s.
    let start = Instant::now();
    let mut results = Vec::new();
    let mut next = start;
    while next < start + GOOD_FOR {
        // Pacing, not synchronization: the next request is due at `next`.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let out = Command::new("curl")
            .args(["-m", "5", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
            .arg(format!("http://{}/", host.addr))
            .output()
            .expect("run curl (Debian package curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut fields = text.split(' ');
        let code = fields.next().unwrap_or("").to_string();
        let seconds: f64 = fields.next().and_then(|t| t.parse().ok()).unwrap_or(f64::INFINITY);
        results.push((next.duration_since(start).as_secs(), code, seconds));
        next += GOOD_EVERY;
    }

    // Stop the slow clients and collect their counts.
    drop(stdin);
    let counts = lines.next().and_then(Result::ok).unwrap_or_default();
    let status = slowloris.wait().unwrap();
    let report: Vec<String> = results.iter().map(|(at, code, s)| format!("at {at:>2} s: {code} in {s:.3} s")).collect();
    let summary = format!("slow clients: {counts}\ngood requests:\n  {}", report.join("\n  "));
    println!("{summary}");
    assert!(status.success(), "the slowloris script failed\n{summary}");
    assert!(counts.starts_with("connects "), "no counts from the slowloris script\n{summary}");
    let bad: Vec<&String> =
        results.iter().zip(&report).filter(|((_, code, s), _)| code != "200" || *s >= 5.0).map(|(_, r)| r).collect();
    assert!(bad.is_empty(), "{} of {} good requests not answered 200 within 5 s\n{summary}", bad.len(), results.len());
}
