//! A TCP proxy: dials the configured `upstream` (`--config
//! upstream=HOST:PORT`, which `--allow-connect` must allow) for every
//! accepted connection and has the host relay bytes both ways with
//! `splice` until both directions are done. A half-close is passed on:
//! when one side ends its stream, the other side's write half is shut down
//! and the opposite direction goes on to its own end. One line at the end
//! logs the bytes moved each way.
//!
//! The bytes never enter the guest: one `splice` call is the whole relay.

wit_bindgen::generate!({
    path: "../../wit",
    world: "server-with-config",
    with: { "wasi:config/store@0.2.0-rc.1": generate },
});

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::dialer;
use netplug::protocol::log::{enabled, log, Level};
use netplug::protocol::types::{splice, Connection};
use wasi::config::store;

/// The configuration key naming the address to dial.
const UPSTREAM_KEY: &str = "upstream";

struct Proxy;

impl Guest for Proxy {
    fn handle(client: Connection) -> Result<(), String> {
        // A store error counts as unset, as in the hello guest.
        let Some(address) = store::get(UPSTREAM_KEY).ok().flatten() else {
            return Err(format!("missing configuration `{UPSTREAM_KEY}`: give --config {UPSTREAM_KEY}=HOST:PORT"));
        };
        let upstream =
            dialer::connect(&address).map_err(|e| format!("cannot connect to upstream {address}: {}", e.name()))?;
        let spliced = splice(&client, &upstream);
        let outcome = spliced.ended.map_err(|e| format!("relay failed: {}", e.name()));
        let level = if outcome.is_ok() { Level::Info } else { Level::Warn };
        if enabled(level) {
            let end = match &outcome {
                Ok(()) => "both directions ended",
                Err(failure) => failure,
            };
            log(
                level,
                &format!(
                    "{} <-> {address}: {} bytes client to upstream, {} bytes upstream to client; {end}",
                    client.peer_address(),
                    spliced.a_to_b,
                    spliced.b_to_a
                ),
            );
        }
        outcome
    }
}

export!(Proxy);
