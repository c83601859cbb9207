//! The seed server: send the greeting (`HELLO,WORLD` unless the operator
//! configured `greeting`), read up to 1024 bytes, log what arrived, close.

// wit-bindgen leaves `wasi:` interfaces to the `wasi` crate unless told to
// generate them; this guest needs only `wasi:config/store`.
wit_bindgen::generate!({
    path: "../../wit",
    world: "server-with-config",
    with: { "wasi:config/store@0.2.0-rc.1": generate },
});

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::log::{enabled, log, Level};
use netplug::protocol::types::Connection;
use wasi::config::store;

/// The seed's greeting, sent when `--config greeting=...` is not given.
const DEFAULT_GREETING: &str = "HELLO,WORLD";

struct Hello;

impl Guest for Hello {
    fn handle(conn: Connection) -> Result<(), String> {
        // Read once per connection; a store error counts as unset, so the
        // exchange goes on with the default.
        let greeting = store::get("greeting").ok().flatten();
        let greeting = greeting.as_deref().unwrap_or(DEFAULT_GREETING);
        conn.send(greeting.as_bytes()).map_err(|e| format!("send failed: {}", e.name()))?;
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
