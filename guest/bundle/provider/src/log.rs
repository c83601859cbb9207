//! The `log` interface: one line on stderr per message, with the level and
//! the peer of the connection being served, as the host's own log reads
//! (`INFO conn{peer=127.0.0.1:33626}: guest: ...`).

use crate::exports::netplug::protocol::log::{Guest, Level};
use crate::Provider;
use std::cell::{Cell, RefCell};
use std::io::Write;

thread_local! {
    static MIN_LEVEL: Cell<u8> = const { Cell::new(2) };
    static PEER: RefCell<String> = const { RefCell::new(String::new()) };
}

fn rank(level: Level) -> u8 {
    match level {
        Level::Trace => 0,
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
        Level::Error => 4,
    }
}

/// Sets the lowest level written from its name, as `host run
/// --log-level` names them.
pub fn set_min_level(name: &str) -> Result<(), String> {
    let level = match name {
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" => Level::Warn,
        "error" => Level::Error,
        other => return Err(format!("unknown log level `{other}`: give trace, debug, info, warn or error")),
    };
    MIN_LEVEL.set(rank(level));
    Ok(())
}

/// The connection now being served, whose lines the log prefixes.
pub fn set_peer(peer: &str) {
    PEER.with_borrow_mut(|p| peer.clone_into(p));
}

impl Guest for Provider {
    fn log(level: Level, message: String) {
        if !Self::enabled(level) {
            return;
        }
        let name = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"][usize::from(rank(level))];
        let line = PEER.with_borrow(|peer| format!("{name:>5} conn{{peer={peer}}}: guest: {message}\n"));
        // One write per line, so that lines from the guest's own stderr do
        // not cut into it.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn enabled(level: Level) -> bool {
        rank(level) >= MIN_LEVEL.get()
    }
}
