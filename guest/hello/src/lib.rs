//! The seed server: send `HELLO,WORLD`, read up to 1024 bytes, log what
//! arrived, close.

wit_bindgen::generate!({ path: "../../wit", world: "server" });

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::log::{enabled, log, Level};
use netplug::protocol::types::Connection;

struct Hello;

impl Guest for Hello {
    fn handle(conn: Connection) -> Result<(), String> {
        conn.send(b"HELLO,WORLD").map_err(|e| format!("send failed: {}", e.name()))?;
        let data = conn.recv(1024).map_err(|e| format!("recv failed: {}", e.name()))?;
        // Built only if the host would show it (not at --log-level warn).
        if enabled(Level::Info) {
            log(
                Level::Info,
                &format!("link addr: {} sent {} bytes: {}", conn.peer_address(), data.len(), data.escape_ascii()),
            );
        }
        // Dropping `conn` closes the socket, like the seed's close().
        Ok(())
    }
}

export!(Hello);
