//! Echo: send back every byte received until the peer closes its write side,
//! then close.

use netplug_guest::{Connection, Transport};
use std::io::{BufRead, Write};

fn handle(mut conn: Connection) -> Result<(), String> {
    echo(&mut conn)
}

netplug_guest::serve!(handle);

/// Sends each `recv`'s bytes straight back: the slice `fill_buf` lends is
/// the list the host returned, sent without another copy.
fn echo<T: Transport>(conn: &mut Connection<T>) -> Result<(), String> {
    let (mut rx, mut tx) = conn.halves();
    loop {
        let data = rx.fill_buf().map_err(|e| format!("recv failed: {e}"))?;
        if data.is_empty() {
            return Ok(());
        }
        tx.write_all(data).map_err(|e| format!("send failed: {e}"))?;
        let n = data.len();
        rx.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::echo;
    use netplug_guest::testing::{MemoryConnection, MemoryTransport};
    use netplug_guest::{Connection, ErrorCode};

    #[test]
    fn echoes_every_chunk_in_order_until_end_of_stream() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut conn = MemoryConnection::with_input([&b"ping"[..], &big, b"x"]);
        echo(&mut conn).unwrap();
        let mut want = b"ping".to_vec();
        want.extend_from_slice(&big);
        want.push(b'x');
        assert!(conn.transport().output() == want);
        // 64 KiB per recv: the 200 000 bytes take four.
        assert_eq!(conn.transport().recv_calls(), 1 + 4 + 1 + 1);
    }

    #[test]
    fn a_reset_is_an_error_after_what_came_before() {
        let mut conn = Connection::new(MemoryTransport::new(["abc"]).then_fail(ErrorCode::Reset));
        assert_eq!(echo(&mut conn), Err("recv failed: reset".to_string()));
        assert_eq!(conn.transport().output(), b"abc");
    }
}
