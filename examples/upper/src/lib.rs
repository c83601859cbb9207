//! `upper`: a line protocol. `UPPER text` replies `TEXT`, `REV text` replies
//! `txet`, `QUIT` replies `BYE` and closes; anything else is
//! `ERR unknown command`. Run it with `host run upper.wasm --port 7000`.

use netplug_guest::{Connection, Transport};
use std::io::{BufRead, Read, Write};

/// The longest line read; a longer one is cut there.
const MAX_LINE: u64 = 4096;

fn handle(mut conn: Connection) -> netplug_guest::Result {
    serve(&mut conn)
}

netplug_guest::serve!(handle);

/// Replies to each line until `QUIT` or the end of the stream. Generic over
/// the transport so the tests run it over memory.
fn serve<T: Transport>(conn: &mut Connection<T>) -> netplug_guest::Result {
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut *conn).take(MAX_LINE).read_line(&mut line) {
            // The end of the stream: the client is done.
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // The host ended the wait for an idle client (`--idle-timeout`);
            // the connection's record says so. Not an error of this guest.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let request = line.trim_end_matches(['\r', '\n']);
        let (command, text) = request.split_once(' ').unwrap_or((request, ""));
        let reply = match command {
            "UPPER" => text.to_uppercase(),
            "REV" => text.chars().rev().collect(),
            "QUIT" => return Ok(conn.write_all(b"BYE\n")?),
            _ => "ERR unknown command".to_string(),
        };
        conn.write_all(format!("{reply}\n").as_bytes())?;
    }
}

#[cfg(test)]
mod tests {
    use netplug_guest::testing::MemoryConnection;

    #[test]
    fn replies_to_each_command_until_quit() {
        let mut conn = MemoryConnection::with_input(["UPPER hello world\nREV ab", "c\r\nNOPE x\nQUIT\nUPPER late\n"]);
        super::serve(&mut conn).unwrap();
        assert_eq!(conn.transport().output(), b"HELLO WORLD\ncba\nERR unknown command\nBYE\n");
    }
}
