//! The seed server: send the greeting (`HELLO,WORLD` unless the operator
//! configured `greeting`), read up to 1024 bytes, log what arrived, close.

use netplug_guest::log::info;
use netplug_guest::{config, Connection};

fn handle(mut conn: Connection) -> Result<(), String> {
    let greeting = config::get("greeting").map_err(|e| e.to_string())?;
    conn.send(greeting.as_deref().unwrap_or("HELLO,WORLD").as_bytes()).map_err(|e| format!("send failed: {e}"))?;
    let data = conn.recv(1024).map_err(|e| format!("recv failed: {e}"))?;
    info!("link addr: {} sent {} bytes: {}", conn.peer_address(), data.len(), data.escape_ascii());
    Ok(()) // dropping `conn` closes the socket, like the seed's close()
}

netplug_guest::serve!(handle);
