//! Outbound connections: the allow list, and the `dialer` interface that
//! guests dial through. Guests name an address; the host dials it only if it
//! is on the allow list, and never resolves a name that is not on the list
//! (a guest gets no DNS of its own).

use crate::imports::bindings::server::netplug::protocol::dialer;
use crate::imports::bindings::ErrorCode;
use crate::imports::connection::{bounded, code_for, report_eviction, report_timeout, Connection, Waited};
use crate::imports::state::GuestState;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, ToSocketAddrs};
use tokio::net::TcpStream;
use wasmtime::component::{Resource, ResourceTableError};

#[derive(Debug, Default)]
pub struct DialPolicy {
    entries: Vec<AllowEntry>,
}

#[derive(Debug)]
struct AllowEntry {
    /// `host:port` as given, lowercased.
    text: String,
    /// What it resolved to when the host started.
    addrs: Vec<SocketAddr>,
}

pub enum DialTarget {
    Allowed(Vec<SocketAddr>),
    Denied,
    Invalid,
}

impl DialPolicy {
    /// Resolves every allowed `HOST:PORT` once, at start-up.
    pub fn new(allowed: &[String]) -> Result<Self> {
        let mut entries = Vec::new();
        for text in allowed {
            if split_host_port(text).is_none() {
                bail!("invalid address `{text}`: expected HOST:PORT, such as 127.0.0.1:6379 or [::1]:80");
            }
            let addrs: Vec<SocketAddr> =
                text.to_socket_addrs().with_context(|| format!("cannot resolve `{text}`"))?.collect();
            if addrs.is_empty() {
                bail!("`{text}` resolves to no address");
            }
            entries.push(AllowEntry { text: text.to_ascii_lowercase(), addrs });
        }
        Ok(DialPolicy { entries })
    }

    /// Decides a guest's `dialer.connect(address)`.
    pub fn check(&self, address: &str) -> DialTarget {
        if split_host_port(address).is_none() {
            return DialTarget::Invalid;
        }
        let wanted = address.to_ascii_lowercase();
        if let Some(entry) = self.entries.iter().find(|e| e.text == wanted) {
            return DialTarget::Allowed(entry.addrs.clone());
        }
        // A literal IP:port is allowed when an allowed name resolved to it.
        if let Ok(addr) = address.parse::<SocketAddr>() {
            if self.entries.iter().any(|e| e.addrs.contains(&addr)) {
                return DialTarget::Allowed(vec![addr]);
            }
        }
        DialTarget::Denied
    }
}

impl dialer::Host for GuestState {
    async fn connect(&mut self, address: String) -> wasmtime::Result<Result<Resource<Connection>, ErrorCode>> {
        let addrs = match self.policy.dial.check(&address) {
            DialTarget::Allowed(addrs) => addrs,
            DialTarget::Invalid => return Ok(Err(ErrorCode::InvalidArgument)),
            DialTarget::Denied => {
                if self.may_warn() {
                    let address = crate::imports::log::clipped(&address);
                    tracing::warn!(parent: self.span().get(), "dial to {address} denied: not allowed by --allow-connect");
                }
                return Ok(Err(ErrorCode::Denied));
            }
        };
        // The guest's own connection is one resource; what it dials is capped
        // below the table's capacity so the cap is hit here, cleanly, before
        // a socket is opened.
        let max = self.policy.limits.max_resources;
        if self.connections.dialed() + 1 >= max {
            if self.connections.dialed() + 1 == max {
                tracing::warn!(parent: self.span().get(), "resource limit: guest holds {} connections (--max-resources)", self.connections.dialed());
            }
            return Ok(Err(ErrorCode::ResourceLimit));
        }
        let (budget, end) = self.wait_budget();
        let started = self.clock.begin_wait();
        let signal = self.signal().clone();
        let waited =
            bounded(&mut self.wait_timer, budget, &signal, false, started, TcpStream::connect(&addrs[..])).await;
        self.clock.end_wait(started);
        let stream = match waited {
            Waited::Done(Ok(stream)) => stream,
            Waited::Done(Err(e)) => {
                let address = crate::imports::log::clipped(&address);
                tracing::info!(parent: self.span().get(), "dial to {address} failed: {e}");
                return Ok(Err(code_for(&e)));
            }
            Waited::TimedOut => {
                report_timeout(self.span().get(), &self.policy.limits, end, "connect");
                return Ok(Err(ErrorCode::TimedOut));
            }
            Waited::Evicted => {
                report_eviction(self.span().get(), "connect");
                return Ok(Err(ErrorCode::TimedOut));
            }
            Waited::ShutDown => unreachable!("a dial is never at a request boundary"),
        };
        let _ = stream.set_nodelay(true);
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(e) => return Ok(Err(code_for(&e))),
        };
        match self.table.push(Connection::dialed(stream, peer)) {
            Ok(res) => {
                self.connections.dialed_one();
                Ok(Ok(res))
            }
            Err(ResourceTableError::Full) => Ok(Err(ErrorCode::ResourceLimit)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6), checking the port is a number.
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_addresses_are_allowed() {
        let policy = DialPolicy::new(&["127.0.0.1:7000".into(), "localhost:7001".into()]).unwrap();
        assert!(matches!(policy.check("127.0.0.1:7000"), DialTarget::Allowed(_)));
        assert!(matches!(policy.check("LOCALHOST:7001"), DialTarget::Allowed(_)));
        assert!(matches!(policy.check("127.0.0.1:7001"), DialTarget::Allowed(_)));
        assert!(matches!(policy.check("127.0.0.1:7002"), DialTarget::Denied));
        assert!(matches!(policy.check("example.com:80"), DialTarget::Denied));
        assert!(matches!(policy.check("no port"), DialTarget::Invalid));
        assert!(DialPolicy::new(&["nonsense".into()]).is_err());
    }
}
