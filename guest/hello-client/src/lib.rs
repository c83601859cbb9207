//! The seed client: connect, send `this is client...`, print up to 1024
//! bytes of the reply, close.

fn run(args: Vec<String>) -> Result<(), String> {
    let address = args.first().ok_or("no address to connect to (host run ... --connect HOST:PORT)")?;
    let mut conn = netplug_guest::dial(address).map_err(|e| format!("connect to {address}: {e}"))?;
    conn.send(b"this is client...").map_err(|e| format!("send failed: {e}"))?;
    let data = conn.recv(1024).map_err(|e| format!("recv failed: {e}"))?;
    println!("{}", data.escape_ascii());
    Ok(())
}

netplug_guest::client!(run);
