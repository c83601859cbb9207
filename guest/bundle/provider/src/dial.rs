//! The `dialer` interface over wasi:sockets: an `ip:port` is dialed as
//! is, a `name:port` through `wasi:sockets/ip-name-lookup` (which the
//! runtime must allow, `wasmtime run -S allow-ip-name-lookup=y`). There is
//! no allow list: what the guest may reach is what the runtime lets the
//! component reach.

use crate::address;
use crate::connection::{idle_timer, Connection as Conn};
use crate::exports::netplug::protocol::dialer::Guest;
use crate::exports::netplug::protocol::types::{Connection, ErrorCode};
use crate::wasi::io::poll::poll;
use crate::wasi::sockets::instance_network::instance_network;
use crate::wasi::sockets::ip_name_lookup::resolve_addresses;
use crate::wasi::sockets::network::{ErrorCode as NetError, IpAddress, Network};
use crate::wasi::sockets::tcp_create_socket::create_tcp_socket;
use crate::Provider;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

impl Guest for Provider {
    fn connect(address: String) -> Result<Connection, ErrorCode> {
        let network = instance_network();
        let targets = resolve(&network, &address)?;
        let mut last = ErrorCode::InvalidArgument;
        for target in targets {
            match connect(&network, target) {
                Ok(conn) => return Ok(Connection::new(conn)),
                Err(code) => last = code,
            }
        }
        Err(last)
    }
}

/// The addresses `address` (`host:port`) names.
fn resolve(network: &Network, address: &str) -> Result<Vec<SocketAddr>, ErrorCode> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) = address.rsplit_once(':').ok_or(ErrorCode::InvalidArgument)?;
    let port: u16 = port.parse().map_err(|_| ErrorCode::InvalidArgument)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let names = resolve_addresses(network, host).map_err(net_error)?;
    let mut found = Vec::new();
    loop {
        match names.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => {
                found.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
            }
            Ok(Some(IpAddress::Ipv6((a, b, c, d, e, f, g, h)))) => {
                found.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), port))
            }
            Ok(None) => break,
            Err(NetError::WouldBlock) => names.subscribe().block(),
            Err(e) => return Err(net_error(e)),
        }
    }
    if found.is_empty() {
        return Err(ErrorCode::Other);
    }
    Ok(found)
}

fn connect(network: &Network, target: SocketAddr) -> Result<Conn, ErrorCode> {
    let socket = create_tcp_socket(address::family(target)).map_err(net_error)?;
    socket.start_connect(network, address::to_wasi(target)).map_err(net_error)?;
    loop {
        match socket.finish_connect() {
            Ok((input, output)) => return Ok(Conn::new(socket, input, output)),
            Err(NetError::WouldBlock) => {
                let timer = idle_timer();
                if !poll(&[&socket.subscribe(), &timer]).contains(&0) {
                    return Err(ErrorCode::TimedOut);
                }
            }
            Err(e) => return Err(net_error(e)),
        }
    }
}

fn net_error(e: NetError) -> ErrorCode {
    match e {
        NetError::AccessDenied | NetError::NotSupported => ErrorCode::Denied,
        NetError::ConnectionRefused => ErrorCode::Refused,
        NetError::ConnectionReset => ErrorCode::Reset,
        NetError::Timeout => ErrorCode::TimedOut,
        NetError::InvalidArgument | NetError::InvalidState => ErrorCode::InvalidArgument,
        _ => ErrorCode::Other,
    }
}
