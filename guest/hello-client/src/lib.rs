//! The seed client: connect, send `this is client...`, print up to 1024
//! bytes of the reply, close.

wit_bindgen::generate!({ path: "../../wit", world: "client" });

use netplug::protocol::dialer::connect;

struct HelloClient;

impl Guest for HelloClient {
    fn run(args: Vec<String>) -> Result<(), String> {
        let address = args.first().ok_or("no address to connect to (host run ... --connect HOST:PORT)")?;
        let conn = connect(address).map_err(|e| format!("connect to {address}: {}", e.name()))?;
        conn.send(b"this is client...").map_err(|e| format!("send failed: {}", e.name()))?;
        let data = conn.recv(1024).map_err(|e| format!("recv failed: {}", e.name()))?;
        println!("{}", data.escape_ascii());
        Ok(())
    }
}

export!(HelloClient);
