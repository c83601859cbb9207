//! A second version of the seed server, for the hot-swap tests: the same
//! exchange with another greeting, so a client can tell which version
//! answered.

wit_bindgen::generate!({ path: "../../../wit", world: "server" });

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::types::Connection;

struct HelloAgain;

impl Guest for HelloAgain {
    fn handle(conn: Connection) -> Result<(), String> {
        conn.send(b"HELLO,AGAIN").map_err(|e| format!("send failed: {}", e.name()))?;
        conn.recv(1024).map_err(|e| format!("recv failed: {}", e.name()))?;
        Ok(())
    }
}

export!(HelloAgain);
