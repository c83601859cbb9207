//! Echo: send back every byte received until the peer closes its write side,
//! then close.

wit_bindgen::generate!({ path: "../../wit", world: "server" });

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::types::Connection;

/// The most one recv returns (the host's own per-call cap).
const CHUNK: u32 = 64 * 1024;

struct Echo;

impl Guest for Echo {
    fn handle(conn: Connection) -> Result<(), String> {
        loop {
            let data = conn.recv(CHUNK).map_err(|e| format!("recv failed: {}", e.name()))?;
            if data.is_empty() {
                return Ok(());
            }
            conn.send(&data).map_err(|e| format!("send failed: {}", e.name()))?;
        }
    }
}

export!(Echo);
