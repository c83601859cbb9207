//! Listening sockets, for the listeners and the admin endpoint alike, and
//! the stdout lines that announce their addresses.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// Prints one line on stdout, where tests and scripts read the bound
/// addresses. A serving host keeps SIGPIPE ignored (its peers close their
/// sockets), so a reader that has gone (`host run ... | head -1`) makes the
/// write fail with EPIPE: that costs the line, never the process, which
/// `println!` would end with a panic.
pub fn announce(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_fmt(line).and_then(|()| stdout.write_all(b"\n")).and_then(|()| stdout.flush());
}

/// Binds the listening socket with the given backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .with_context(|| format!("cannot create a socket for {addr}"))?;
    // Restarting the host must not wait for old connections in TIME_WAIT.
    socket.set_reuseaddr(true).with_context(|| format!("cannot set SO_REUSEADDR on {addr}"))?;
    socket.bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    socket.listen(backlog).with_context(|| format!("cannot listen on {addr}"))
}
