//! The `listener` interface, for the driver: bind and listen once, then
//! accept one connection at a time.

use crate::address;
use crate::connection::{set_idle_timeout_ms, Connection as Conn};
use crate::exports::netplug::bundle::listener::{Guest, Settings};
use crate::exports::netplug::protocol::types::Connection;
use crate::wasi::sockets::instance_network::instance_network;
use crate::wasi::sockets::network::ErrorCode as NetError;
use crate::wasi::sockets::tcp::TcpSocket;
use crate::wasi::sockets::tcp_create_socket::create_tcp_socket;
use crate::Provider;
use std::cell::RefCell;
use std::net::SocketAddr;

thread_local! {
    static LISTENER: RefCell<Option<TcpSocket>> = const { RefCell::new(None) };
}

impl Guest for Provider {
    fn listen(settings: Settings) -> Result<String, String> {
        crate::log::set_min_level(&settings.log_level)?;
        set_idle_timeout_ms(settings.idle_timeout_ms);
        let addr: SocketAddr = settings
            .address
            .parse()
            .map_err(|_| format!("cannot listen on `{}`: not an IP:PORT address", settings.address))?;
        let fail = |what: &str, e: NetError| {
            let hint = match e {
                NetError::AccessDenied => " (the runtime denies the network: wasmtime needs -S inherit-network=y)",
                _ => "",
            };
            format!("cannot listen on {addr}: {what}: {}{hint}", e.name())
        };
        let network = instance_network();
        let socket = create_tcp_socket(address::family(addr)).map_err(|e| fail("socket", e))?;
        socket.start_bind(&network, address::to_wasi(addr)).map_err(|e| fail("bind", e))?;
        finish(&socket, TcpSocket::finish_bind).map_err(|e| fail("bind", e))?;
        socket.start_listen().map_err(|e| fail("listen", e))?;
        finish(&socket, TcpSocket::finish_listen).map_err(|e| fail("listen", e))?;
        let local = address::text(socket.local_address());
        LISTENER.set(Some(socket));
        Ok(local)
    }

    fn accept() -> Result<Connection, String> {
        LISTENER.with_borrow(|listener| {
            let socket = listener.as_ref().ok_or("accept before listen")?;
            loop {
                match socket.accept() {
                    Ok((conn, input, output)) => {
                        let conn = Conn::new(conn, input, output);
                        crate::log::set_peer(conn.peer());
                        return Ok(Connection::new(conn));
                    }
                    Err(NetError::WouldBlock) => socket.subscribe().block(),
                    Err(e) => return Err(format!("accept failed: {}", e.name())),
                }
            }
        })
    }
}

/// Completes a socket's two-phase operation, waiting as WASI asks.
fn finish(socket: &TcpSocket, op: fn(&TcpSocket) -> Result<(), NetError>) -> Result<(), NetError> {
    loop {
        match op(socket) {
            Err(NetError::WouldBlock) => socket.subscribe().block(),
            other => return other,
        }
    }
}
