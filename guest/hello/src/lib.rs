//! The seed server: send the greeting (`HELLO,WORLD` unless the operator
//! configured `greeting`), read up to 1024 bytes, log what arrived, close.

use netplug_guest::log::info;
use netplug_guest::{config, Connection};

/// The seed's greeting, sent when `--config greeting=...` is not given.
const DEFAULT_GREETING: &str = "HELLO,WORLD";

fn handle(mut conn: Connection) -> Result<(), String> {
    let greeting = config::get("greeting");
    let greeting = greeting.as_deref().unwrap_or(DEFAULT_GREETING);
    conn.send(greeting.as_bytes()).map_err(|e| format!("send failed: {e}"))?;
    let data = conn.recv(1024).map_err(|e| format!("recv failed: {e}"))?;
    info!("link addr: {} sent {} bytes: {}", conn.peer_addr(), data.len(), data.escape_ascii());
    // Dropping `conn` closes the socket, like the seed's close().
    Ok(())
}

netplug_guest::serve!(handle);
