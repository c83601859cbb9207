//! Connection records: one `info` line per connection when it closes, in
//! its span, with its duration, bytes in and out and outcome; as JSON
//! fields with `--log-format json`; none with `--access-log off`.

use crate::support::*;
use std::io::Write;

/// The record lines of the host's log so far.
fn records(host: &Host) -> Vec<String> {
    host.log().into_iter().filter(|l| l.contains("netplug::record")).collect()
}

#[test]
fn an_ok_exchange_is_recorded_with_its_bytes_in_its_span() {
    let host = Host::serve("hello", &[]);
    let (reply, local) = seed_exchange(host.addr);
    assert_eq!(reply, b"HELLO,WORLD");
    let line = host.wait_for_log("a record", |l| l.contains("netplug::record") && l.contains(&local.to_string()));
    assert!(line.contains(" INFO conn{listener=hello generation=1 peer="), "{line}");
    for field in ["closed duration_ms=", "bytes_in=17", "bytes_out=11", "outcome=ok"] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert_eq!(records(&host).len(), 1);
}

#[test]
fn a_trap_and_an_idle_timeout_are_recorded_with_their_outcome() {
    let host = Host::serve("hostile", &["--idle-timeout", "300ms"]);
    let mut stream = connect(host.addr);
    stream.write_all(b"panic").unwrap();
    read_to_end(&mut stream);
    let trap = host.wait_for_log("a trap's record", |l| l.contains("netplug::record") && l.contains("outcome=trap"));
    assert!(
        trap.contains("trap=unreachable") && trap.contains("bytes_in=5") && trap.contains("bytes_out=11"),
        "{trap}"
    );
    // Sends nothing: the guest's recv times out.
    let mut idle = connect(host.addr);
    read_to_end(&mut idle);
    let line = host.wait_for_log("an idle timeout's record", |l| l.contains("outcome=idle_timeout"));
    assert!(line.contains("bytes_in=0") && line.contains("bytes_out=11"), "{line}");
}

#[test]
fn json_lines_parse_and_carry_the_records_fields() {
    let host = Host::serve("hello", &["--log-format", "json"]);
    for _ in 0..3 {
        assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while records(&host).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no three records: {:?}", host.log());
        // Poll interval.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = host.log();
    assert!(log.len() > 3);
    for line in &log {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(value["level"].is_string() && value["timestamp"].is_string(), "{line}");
    }
    let records: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["target"] == "netplug::record")
        .collect();
    assert_eq!(records.len(), 3);
    for record in records {
        let fields = &record["fields"];
        assert_eq!(fields["outcome"], "ok", "{record}");
        assert_eq!(fields["bytes_in"], 17, "{record}");
        assert_eq!(fields["bytes_out"], 11, "{record}");
        assert!(fields["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{record}");
        assert_eq!(record["span"]["listener"], "hello", "{record}");
        assert_eq!(record["span"]["generation"], 1, "{record}");
    }
}

#[test]
fn access_log_off_writes_no_record() {
    let host = Host::serve("hello", &["--access-log", "off"]);
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
    // The guest's own line comes before the record would.
    host.wait_for_log("the guest's line", |l| l.contains("sent 17 bytes"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(records(&host).is_empty(), "{:?}", records(&host));
}
