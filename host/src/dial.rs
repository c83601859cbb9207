//! Which outbound addresses a guest may dial. Guests name an address; the
//! host dials it only if it is on the allow list, and never resolves a name
//! that is not on the list (a guest gets no DNS of its own).

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, ToSocketAddrs};

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
            let addrs: Vec<SocketAddr> = text
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve `{text}`"))?
                .collect();
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
