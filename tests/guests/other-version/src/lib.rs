//! A test guest built against `netplug:protocol@0.2.0` (its own `wit/`, a
//! version this host does not speak): `host run` must refuse it in one line
//! naming both versions, and `host inspect` warn about it.

wit_bindgen::generate!({
    path: "wit",
    world: "server",
});

use exports::netplug::protocol::handler::Guest;
use netplug::protocol::types::Connection;

struct OtherVersion;

impl Guest for OtherVersion {
    fn handle(conn: Connection) -> Result<(), String> {
        conn.send(b"from the future\n").map_err(|_| "send failed".to_string())
    }
}

export!(OtherVersion);
