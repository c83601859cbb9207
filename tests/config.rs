//! Guest configuration through `wasi:config/store`: the hello guest's
//! greeting is `--config greeting=...`, its default when unset; the host's
//! environment never reaches it; a malformed pair fails before anything
//! binds; and a guest that does not import the interface is unaffected.

use crate::support::*;
use std::io::Write;
use std::path::Path;

/// The hello guest's greeting with these flags.
fn greeting(extra: &[&str]) -> Vec<u8> {
    let host = Host::serve("hello", extra);
    seed_exchange(host.addr).0
}

#[test]
fn hello_without_config_sends_its_default() {
    assert_eq!(greeting(&[]), b"HELLO,WORLD");
    // Other keys leave it alone.
    assert_eq!(greeting(&["--config", "other=HOWDY"]), b"HELLO,WORLD");
}

#[test]
fn hello_sends_the_configured_greeting_and_the_exchange_goes_on() {
    let host = Host::serve("hello", &["--config", "greeting=HOWDY"]);
    let (reply, local) = seed_exchange(host.addr);
    assert_eq!(reply, b"HOWDY");
    let line = host.wait_for_log("with the client's data", |l| l.contains("this is client..."));
    assert!(line.contains(&local.to_string()), "log line names the peer {local}: {line}");
}

#[test]
fn a_value_keeps_its_equals_signs_and_spaces() {
    assert_eq!(greeting(&["--config", "greeting=a = b, c=d  "]), b"a = b, c=d  ");
}

#[test]
fn the_last_of_a_repeated_key_wins() {
    assert_eq!(greeting(&["--config", "greeting=ONE", "--config", "greeting=TWO"]), b"TWO");
}

#[test]
fn the_hosts_environment_is_never_the_guests_configuration() {
    let host = Host::serve_with_env(&guest("hello"), &[], &[("greeting", Path::new("FROM-ENV"))]);
    assert_eq!(seed_exchange(host.addr).0, b"HELLO,WORLD");
}

#[test]
fn a_malformed_pair_is_refused_before_binding() {
    let hello = guest("hello");
    let hello = hello.to_str().unwrap();
    for (pair, why) in [("nonsense", "has no `=`"), ("=HOWDY", "has an empty key")] {
        let out = run_host(&["run", hello, "--port", "0", "--config", pair]);
        assert!(!out.status.success(), "{pair} accepted");
        assert!(out.stdout.is_empty(), "nothing bound: {:?}", String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("--config") && err.contains(&format!("`{pair}` {why}")), "{err}");
    }
}

#[test]
fn a_guest_without_the_import_runs_with_config_given() {
    let host = Host::serve("echo", &["--config", "greeting=HOWDY"]);
    let mut stream = connect(host.addr);
    stream.write_all(b"ping").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut stream), b"ping");
}

#[test]
fn inspect_shows_the_import_granted() {
    let out = run_host(&["inspect", guest("hello").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.trim().starts_with("wasi:config/store@") && l.ends_with(": granted")), "{text}");
    assert!(text.contains("verdict: the host would run this guest"), "{text}");
    // A guest that does not import it does not show it.
    let out = run_host(&["inspect", guest("echo").to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wasi:config"));
}
