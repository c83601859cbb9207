//! The admin endpoint (`--admin-addr`, `[admin] address`): metrics under a
//! known load, outcome counters against the hostile guest, the probes
//! around a shutdown, POST /reload, and 404/405.

use crate::support::*;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Scrapes until `series` reaches `want` (a record is counted just after
/// the client sees its connection close), returning the last scrape.
fn scrape_until(admin: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = scrape(admin);
        if sample(&metrics, series) == Some(want) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "{series} never reached {want}:\n{metrics}");
        // Poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_a_known_load() {
    const N: usize = 20;
    let host = Host::serve("hello", &["--admin-addr", "127.0.0.1:0"]);
    let admin = host.admin();
    for _ in 0..N {
        assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    }
    let n = N as f64;
    let m = scrape_until(admin, r#"netplug_connections_closed_total{listener="hello",outcome="ok"}"#, n);
    let at = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert_eq!(at(r#"netplug_connections_accepted_total{listener="hello"}"#), n);
    assert_eq!(at(r#"netplug_connections_active{listener="hello"}"#), 0.0);
    assert_eq!(at(r#"netplug_bytes_received_total{listener="hello"}"#), 17.0 * n);
    assert_eq!(at(r#"netplug_bytes_sent_total{listener="hello"}"#), 11.0 * n);
    assert_eq!(at(r#"netplug_connection_duration_seconds_count{listener="hello"}"#), n);
    assert!(at(r#"netplug_instantiation_duration_seconds_count{listener="hello"}"#) >= n);
    assert_eq!(at(r#"netplug_connections_closed_total{listener="hello",outcome="trap"}"#), 0.0);
    assert_eq!(at(r#"netplug_generation{listener="hello"}"#), 1.0);
    assert!(at("netplug_pool_slots_capacity") >= 1000.0);
    // The spares, at least, are alive.
    assert!(at("netplug_pool_slots_in_use") >= 1.0);
    assert!(m.contains("# TYPE netplug_connection_duration_seconds histogram"), "{m}");
}

#[test]
fn outcomes_of_hostile_connections_are_counted() {
    let host = Host::serve("hostile", &["--admin-addr", "0", "--cpu-timeout", "200ms", "--max-memory", "2MiB"]);
    let admin = host.admin();
    for word in ["panic", "loop", "alloc"] {
        let mut stream = connect(host.addr);
        stream.write_all(word.as_bytes()).unwrap();
        read_to_end(&mut stream);
    }
    let series =
        |outcome: &str| format!(r#"netplug_connections_closed_total{{listener="hostile",outcome="{outcome}"}}"#);
    scrape_until(admin, &series("trap"), 1.0);
    scrape_until(admin, &series("cpu_limit"), 1.0);
    let m = scrape_until(admin, &series("memory_limit"), 1.0);
    let at = |series: &str| sample(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert_eq!(at(r#"netplug_guest_traps_total{listener="hostile",kind="unreachable"}"#), 1.0);
    assert_eq!(at(r#"netplug_limit_hits_total{listener="hostile",limit="cpu_timeout"}"#), 1.0);
    assert_eq!(at(r#"netplug_limit_hits_total{listener="hostile",limit="max_memory"}"#), 1.0);
    assert_eq!(at(&series("ok")), 0.0);
    assert_eq!(at(r#"netplug_connections_active{listener="hostile"}"#), 0.0);
}

#[test]
fn readyz_turns_503_when_shutdown_begins_while_a_connection_drains() {
    let host = Host::serve("hello", &["--admin-addr", "127.0.0.1:0", "--shutdown-timeout", "10s"]);
    let admin = host.admin();
    assert_eq!(http_request(admin, "GET", "/livez"), (200, "ok\n".to_string()));
    assert_eq!(http_request(admin, "GET", "/readyz"), (200, "ok\n".to_string()));
    // Held open mid-exchange: shutdown waits for it.
    let mut held = connect(host.addr);
    let mut greeting = [0u8; 11];
    std::io::Read::read_exact(&mut held, &mut greeting).unwrap();
    signal(host.pid(), "TERM");
    host.wait_for_log("the shutdown", |l| l.contains("waiting up to"));
    let (status, body) = http_request(admin, "GET", "/readyz");
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down\n"));
    assert_eq!(http_request(admin, "GET", "/livez").0, 200);
    assert_eq!(http_request(admin, "POST", "/reload").0, 409);
    held.write_all(b"this is client...").unwrap();
    read_to_end(&mut held);
    assert!(host.wait_exit().success());
}

#[test]
fn post_reload_swaps_the_generation_and_is_counted() {
    let host = Host::serve("hello", &["--admin-addr", "127.0.0.1:0"]);
    let admin = host.admin();
    let (status, body) = http_request(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("POST /reload: generation 2 serving hello.wasm"), "{body}");
    let m = scrape(admin);
    assert_eq!(sample(&m, r#"netplug_reloads_total{result="ok"}"#), Some(1.0), "{m}");
    assert_eq!(sample(&m, r#"netplug_generation{listener="hello"}"#), Some(2.0), "{m}");
    let (_, local) = seed_exchange(host.addr);
    host.wait_for_log("an exchange on generation 2", |l| l.contains(&format!("generation=2 peer={local}")));
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let host = Host::serve("hello", &["--admin-addr", "127.0.0.1:0"]);
    let admin = host.admin();
    assert_eq!(http_request(admin, "GET", "/nothing").0, 404);
    assert_eq!(http_request(admin, "POST", "/metrics").0, 405);
    assert_eq!(http_request(admin, "GET", "/reload").0, 405);
    assert_eq!(http_request(admin, "DELETE", "/readyz").0, 405);
}

#[test]
fn serve_takes_the_admin_address_from_the_file_and_reloads_it_by_post() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("netplug.toml");
    let text = format!(
        "log-format = \"json\"\n[admin]\naddress = \"127.0.0.1:0\"\n[listeners.hello]\naddress = \"127.0.0.1:0\"\nguest = \"{}\"\n",
        guest("hello").display()
    );
    std::fs::write(&config, &text).unwrap();
    let host = Host::serve_config(&config, &[]);
    let admin = host.admin();
    assert_eq!(http_request(admin, "GET", "/readyz"), (200, "ok\n".to_string()));
    assert_eq!(seed_exchange(host.listener("hello")).0, b"HELLO,WORLD");
    let (status, body) = http_request(admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("read again: 0 added, 0 replaced, 0 new generation(s), 0 removed, 1 unchanged"), "{body}");
    // A file that no longer checks: 500 with the error line.
    std::fs::write(&config, text.replace("[listeners.hello]", "[listeners.hello]\nbogus = 1")).unwrap();
    let (status, body) = http_request(admin, "POST", "/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("bogus") && body.contains("nothing changed"), "{body}");
    let m = scrape(admin);
    assert_eq!(sample(&m, r#"netplug_reloads_total{result="ok"}"#), Some(1.0), "{m}");
    assert_eq!(sample(&m, r#"netplug_reloads_total{result="error"}"#), Some(1.0), "{m}");
    // The file's log-format applies: every line is JSON.
    for line in host.log() {
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok(), "not JSON: {line}");
    }
}
