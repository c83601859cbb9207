//! `host bundle`'s driver: the command a stock runtime runs
//! (`wasi:cli/run`, this binary's `main`). It reads where to listen from
//! its arguments or environment, has the provider listen, then hands each
//! accepted connection to the guest's `handler.handle`, one after another.
//!
//! Usage: `APP.wasm [--listen IP:PORT] [--idle-timeout SECONDS]
//! [--log-level LEVEL]`; each flag also comes from the environment
//! (`NETPLUG_LISTEN`, `NETPLUG_IDLE_TIMEOUT`, `NETPLUG_LOG_LEVEL`), and a
//! flag wins over its variable.

wit_bindgen::generate!({
    path: ["../../../wit", "../wit"],
    world: "netplug:bundle/driver",
    generate_all,
});

use netplug::bundle::listener::{accept, listen, Settings};
use netplug::protocol::handler::handle;
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "usage: APP.wasm [--listen IP:PORT] [--idle-timeout SECONDS] [--log-level LEVEL]";

fn main() -> ExitCode {
    let settings = match settings(std::env::args().skip(1)) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let local = match listen(&settings) {
        Ok(local) => local,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The line `host run` prints, so that a script (or a test) that asked
    // for port 0 learns the port.
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    loop {
        let conn = match accept() {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!(" WARN {e}");
                // A failure that lasts (out of file descriptors) must not
                // spin the CPU and flood the log.
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        let peer = conn.peer_address();
        // The guest's error is its reason; the connection closes either way
        // (the guest dropped it, or the provider drops it now).
        if let Err(reason) = handle(conn) {
            eprintln!(" WARN conn{{peer={peer}}}: guest error: {reason}");
        }
    }
}

/// The settings from `args`, each flag falling back to its environment
/// variable, then to the default `host run` has.
fn settings(mut args: impl Iterator<Item = String>) -> Result<Settings, String> {
    let env = |name: &str| std::env::var(name).ok();
    let (mut address, mut idle, mut level) =
        (env("NETPLUG_LISTEN"), env("NETPLUG_IDLE_TIMEOUT"), env("NETPLUG_LOG_LEVEL"));
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let slot = match flag.as_str() {
            "--listen" => &mut address,
            "--idle-timeout" => &mut idle,
            "--log-level" => &mut level,
            other => return Err(format!("unknown argument `{other}`")),
        };
        *slot = Some(inline.or_else(|| args.next()).ok_or(format!("{flag} needs a value"))?);
    }
    let idle_secs: u64 = match idle {
        None => 30,
        Some(text) => text.parse().map_err(|_| format!("idle timeout `{text}` is not a number of seconds"))?,
    };
    Ok(Settings {
        address: address.unwrap_or_else(|| "127.0.0.1:12345".to_string()),
        idle_timeout_ms: idle_secs.saturating_mul(1000),
        log_level: level.unwrap_or_else(|| "info".to_string()),
    })
}
