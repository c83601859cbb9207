//! A TCP proxy: dials the configured `upstream` (`--config
//! upstream=HOST:PORT`, which `--allow-connect` must allow) for every
//! accepted connection and has the host relay bytes both ways with
//! `splice` until both directions are done. A half-close is passed on:
//! when one side ends its stream, the other side's write half is shut down
//! and the opposite direction goes on to its own end. One line at the end
//! logs the bytes moved each way.
//!
//! The bytes never enter the guest: one `splice` is the whole relay.

use netplug_guest::log::{info, warn};
use netplug_guest::{config, dial, Connection};

/// The configuration key naming the address to dial.
const UPSTREAM_KEY: &str = "upstream";

fn handle(mut client: Connection) -> Result<(), String> {
    let Some(address) = config::get(UPSTREAM_KEY).map_err(|e| e.to_string())? else {
        return Err(format!("missing configuration `{UPSTREAM_KEY}`: give --config {UPSTREAM_KEY}=HOST:PORT"));
    };
    let mut upstream = dial(&address).map_err(|e| format!("cannot connect to upstream {address}: {e}"))?;
    let spliced = client.splice(&mut upstream);
    let (up, down) = (spliced.a_to_b, spliced.b_to_a);
    let peer = client.peer_address();
    let moved = format!("{peer} <-> {address}: {up} bytes client to upstream, {down} bytes upstream to client");
    match spliced.ended {
        Ok(()) => {
            info!("{moved}; both directions ended");
            Ok(())
        }
        Err(e) => {
            warn!("{moved}; relay failed: {e}");
            Err(format!("relay failed: {e}"))
        }
    }
}

netplug_guest::serve!(handle);
