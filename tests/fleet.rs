//! A fleet behind a real load balancer: three hosts on 127.0.0.2, .3 and .4
//! behind HAProxy (TCP mode, health checks against each host's `/readyz`),
//! with seed exchanges through HAProxy without pause while (a) the guest is
//! swapped on the three hosts one after another, (b) one host is stopped
//! with SIGTERM and started again, and (c) one host is killed with SIGKILL.
//! (a) and (b) must not fail a single exchange; in (c) only exchanges in
//! flight on the killed host may fail, and HAProxy routes around it within
//! its check interval.

use crate::support::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// HAProxy's health-check interval; a host is out after one failed check.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Client threads driving the fleet.
const CLIENTS: usize = 8;

/// A free port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// One member of the fleet: its address, admin address, guest file and
/// configuration file, so that it can be started again the same.
struct Member {
    ip: String,
    port: u16,
    admin: u16,
    guest: PathBuf,
    config: PathBuf,
}

impl Member {
    fn new(dir: &Path, ip: &str) -> Member {
        let (port, admin) = (free_port(ip), free_port(ip));
        let guest = dir.join(format!("{ip}.wasm"));
        std::fs::copy(guest_path("hello"), &guest).unwrap();
        let config = dir.join(format!("{ip}.toml"));
        let text = format!(
            "shutdown-timeout = \"5s\"\nshutdown-delay = \"1s\"\n[admin]\naddress = \"{ip}:{admin}\"\n\
             [listeners.seed]\naddress = \"{ip}:{port}\"\nguest = \"{}\"\n",
            guest.display()
        );
        std::fs::write(&config, text).unwrap();
        Member { ip: ip.to_string(), port, admin, guest, config }
    }

    fn start(&self) -> Host {
        Host::serve_config(&self.config, &[])
    }

    fn admin_addr(&self) -> SocketAddr {
        format!("{}:{}", self.ip, self.admin).parse().unwrap()
    }
}

fn guest_path(name: &str) -> PathBuf {
    guest(name)
}

/// The generation the admin endpoint reports for the listener.
fn generation(member: &Member) -> String {
    let (status, body) = http_request(member.admin_addr(), "GET", "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with("netplug_generation{") && l.contains("listener=\"seed\""))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("?")
        .to_string()
}

#[test]
fn a_fleet_behind_haproxy_swaps_restarts_and_loses_a_host_without_failing_exchanges() {
    if !installed(&["haproxy"]) {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let members: Vec<Member> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"].iter().map(|ip| Member::new(&dir, ip)).collect();
    let mut hosts: Vec<Option<Host>> = members.iter().map(|m| Some(m.start())).collect();
    let backends: Vec<(SocketAddr, SocketAddr)> =
        members.iter().map(|m| (format!("{}:{}", m.ip, m.port).parse().unwrap(), m.admin_addr())).collect();
    let balancer = Balancer::start(&dir, &backends, CHECK_INTERVAL);
    let load = SeedLoad::start(balancer.addr, CLIENTS, &[b"HELLO,WORLD", b"HELLO,AGAIN"]);
    // Every host in rotation before the phases start.
    std::thread::sleep(CHECK_INTERVAL * 3);
    load.progress(100);

    // (a) The guest swapped on each host in turn, by file and SIGHUP.
    let v2 = std::fs::read(guest_path("hello_v2")).unwrap();
    for (member, host) in members.iter().zip(&hosts) {
        let host = host.as_ref().unwrap();
        let tmp = member.guest.with_extension("tmp");
        std::fs::write(&tmp, &v2).unwrap();
        std::fs::rename(&tmp, &member.guest).unwrap();
        signal(host.pid(), "HUP");
        let start = Instant::now();
        while generation(member) != "2" {
            assert!(start.elapsed() < PATIENCE, "{} did not swap; log:\n{}", member.ip, host.log().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
        load.progress(50);
    }
    let (passed_a, failed_a) = load.counts();
    eprintln!("fleet (a) swaps: {passed_a} exchanges passed, {failed_a} failed");
    assert_eq!(failed_a, 0, "exchanges failed during the rolling swap");

    // (b) One host stopped with SIGTERM, then started again.
    let stopped = hosts[0].take().unwrap();
    assert!(stopped.terminate().success());
    load.progress(100);
    hosts[0] = Some(members[0].start());
    // Back in rotation after one good check.
    std::thread::sleep(CHECK_INTERVAL * 3);
    load.progress(100);
    let (passed_b, failed_b) = load.counts();
    eprintln!("fleet (b) restart: {} exchanges passed, {} failed", passed_b - passed_a, failed_b - failed_a);
    assert_eq!(failed_b, 0, "exchanges failed while a host was stopped and started again");

    // (c) One host killed: only what was in flight on it may fail.
    let killed = hosts[1].take().unwrap();
    let at = Instant::now();
    signal(killed.pid(), "KILL");
    let _ = killed.wait_exit();
    std::thread::sleep(CHECK_INTERVAL * 5);
    load.progress(200);
    let (passed_c, _) = load.counts();
    let (_, failures) = load.finish();
    let in_c: Vec<Duration> = failures.iter().map(|t| t.saturating_duration_since(at)).collect();
    eprintln!(
        "fleet (c) SIGKILL: {} exchanges passed, {} failed, at {:?} after the kill",
        passed_c - passed_b,
        in_c.len(),
        in_c
    );
    assert!(in_c.len() <= CLIENTS, "more exchanges failed than were in flight: {}", in_c.len());
    for t in &in_c {
        assert!(*t < CHECK_INTERVAL * 5, "an exchange failed {t:?} after the kill: HAProxy did not route around it");
    }
    drop(balancer);
}
