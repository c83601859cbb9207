//! `--log-format json`: every line of the host's log is one strict JSON
//! object, with no key twice in any object, so that any JSON parser reads
//! it the same way (many keep the first of a repeated key, serde_json and
//! jq the last, some refuse the line), and connection lines carry their
//! listener and peer.

use crate::support::*;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Stdio;

/// A JSON value read by a parser that refuses a key repeated in an object,
/// at any depth (serde_json's own `Value` keeps the last one silently).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key `{key}`")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Parses one log line strictly: one JSON object, no repeated key.
fn parse_strict(line: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Strict>(line) {
        Ok(Strict(Value::Object(object))) => Ok(object),
        Ok(Strict(other)) => Err(format!("not an object: {other}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn the_strict_parser_refuses_a_repeated_key_at_any_depth() {
    assert!(parse_strict(r#"{"a":1,"b":{"c":[{"d":2}]}}"#).is_ok());
    assert!(parse_strict(r#"{"a":1,"a":2}"#).unwrap_err().contains("duplicate key `a`"));
    assert!(parse_strict(r#"{"span":{"name":"hello","name":"listener"}}"#).unwrap_err().contains("`name`"));
    assert!(parse_strict(r#"{"a":[{"b":1,"b":1}]}"#).is_err());
    assert!(parse_strict("[1]").is_err());
}

/// A whole run of `host run hello.wasm --log-format json`: start, an ok
/// exchange, one that ends in an idle timeout (warnings), SIGTERM; every
/// line it wrote to stderr, read to the end after it exited.
#[test]
fn every_json_line_is_strict_and_connection_lines_carry_listener_and_peer() {
    let mut child = Running(
        host_command()
            .arg("run")
            .arg(guest("hello"))
            .args(["--port", "0", "--log-format", "json", "--idle-timeout", "300ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start host"),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).expect("the log is UTF-8");
        text
    });
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let Some(addr) = first.trim().strip_prefix("listening on ") else {
        drop(child);
        panic!("host did not start: stdout {first:?}, log:\n{}", log.join().unwrap());
    };
    let addr: SocketAddr = addr.parse().unwrap();

    let (reply, ok_peer) = seed_exchange(addr);
    assert_eq!(reply, b"HELLO,WORLD");
    // Sends nothing: the guest's recv times out, which is logged as warnings.
    let mut idle = connect(addr);
    let idle_peer = idle.local_addr().unwrap();
    read_to_end(&mut idle);
    // The connections' records are written when their stores are dropped,
    // before the host ends them at SIGTERM (at worst, at its shutdown).
    signal(child.0.id(), "TERM");
    let status = child.wait_exit();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let text = log.join().unwrap();

    let lines: Vec<Map<String, Value>> = text
        .lines()
        .map(|line| parse_strict(line).unwrap_or_else(|e| panic!("not one strict JSON object ({e}): {line}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(line.contains_key(key), "no `{key}`: {line:?}");
        }
    }
    // The listener's own lines name it.
    assert!(
        lines.iter().any(|l| l["target"] == "netplug::runtime::supervisor"
            && l["span"]["name"] == "listener"
            && l["span"]["listener"] == "hello"),
        "no line of the listener's span naming it:\n{text}"
    );
    // Each connection's record names its listener and peer.
    let record = |peer: SocketAddr| {
        let found: Vec<&Map<String, Value>> = lines
            .iter()
            .filter(|l| l["target"] == "netplug::record" && l["span"]["peer"] == peer.to_string())
            .collect();
        assert_eq!(found.len(), 1, "one record for {peer}:\n{text}");
        assert_eq!(found[0]["span"]["name"], "conn", "{:?}", found[0]);
        assert_eq!(found[0]["span"]["listener"], "hello", "{:?}", found[0]);
        found[0]["fields"]["outcome"].clone()
    };
    assert_eq!(record(ok_peer), "ok");
    assert_eq!(record(idle_peer), "idle_timeout");
    assert!(
        lines.iter().any(|l| l["level"] == "WARN" && l["span"]["peer"] == idle_peer.to_string()),
        "no warning about the idle connection:\n{text}"
    );
}
