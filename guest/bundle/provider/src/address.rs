//! Addresses between their text (`ip:port`, IPv6 as `[ip]:port`, as the
//! host writes them) and wasi:sockets' records.

use crate::wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port: v4.port(), address: (a, b, c, d) })
        }
        SocketAddr::V6(v6) => {
            let s = v6.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: v6.port(),
                flow_info: v6.flowinfo(),
                address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                scope_id: v6.scope_id(),
            })
        }
    }
}

pub fn from_wasi(addr: &IpSocketAddress) -> SocketAddr {
    match *addr {
        IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address: (a, b, c, d) }) => {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
        }
        IpSocketAddress::Ipv6(Ipv6SocketAddress { port, flow_info, address: (a, b, c, d, e, f, g, h), scope_id }) => {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), port, flow_info, scope_id))
        }
    }
}

pub fn family(addr: SocketAddr) -> IpAddressFamily {
    if addr.is_ipv4() {
        IpAddressFamily::Ipv4
    } else {
        IpAddressFamily::Ipv6
    }
}

/// The text of a socket's address, or `unknown` when the runtime cannot
/// tell it (the connection is then already gone).
pub fn text(addr: Result<IpSocketAddress, crate::wasi::sockets::network::ErrorCode>) -> String {
    addr.map(|a| from_wasi(&a).to_string()).unwrap_or_else(|_| "unknown".to_string())
}
