//! A server guest that opens its own socket through std, so it imports
//! `wasi:sockets`: the host must refuse to load it.

wit_bindgen::generate!({ path: "../../../wit", world: "server" });

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::types::Connection;
use std::io::Write;

struct WantsNet;

impl Guest for WantsNet {
    fn handle(conn: Connection) -> Result<(), String> {
        let mut out = std::net::TcpStream::connect("127.0.0.1:9").map_err(|e| e.to_string())?;
        out.write_all(conn.peer_address().as_bytes()).map_err(|e| e.to_string())
    }
}

export!(WantsNet);
