//! A server guest that reads a file through std, so it imports
//! `wasi:filesystem`: the host must refuse to load it.

wit_bindgen::generate!({ path: "../../../wit", world: "server" });

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::types::Connection;

struct WantsFs;

impl Guest for WantsFs {
    fn handle(conn: Connection) -> Result<(), String> {
        let secret = std::fs::read("/etc/passwd").map_err(|e| e.to_string())?;
        conn.send(&secret).map_err(|e| e.name().to_string())
    }
}

export!(WantsFs);
