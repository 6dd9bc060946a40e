//! The address a request came from, for per-address limits and logs. Behind a front proxy
//! every connection comes from the proxy, so the proxy's `X-Forwarded-For` is believed, but
//! only from the networks the operator named as trusted proxies (anyone else could write
//! any address into the header).

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// Networks whose requests carry the client's address in `X-Forwarded-For`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From `10.0.0.0/8`, `127.0.0.1`, `::1`, …; names the entry it cannot read.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list {
            let s = item.as_ref().trim();
            if s.is_empty() {
                continue;
            }
            let net = match s.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => s
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("trusted proxy {s:?} is neither an address nor a network (10.0.0.0/8)"))?,
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the socket peer, or, when the peer is a trusted proxy, the
    /// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (each proxy
    /// appends the address it saw, so entries left of that one are the client's own claims).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
            client = canonical(ip);
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// `::ffff:10.0.0.1` is `10.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for x in v {
            h.append("x-forwarded-for", x.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1"]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer: its header is ignored.
        assert_eq!(t.client_ip(ip("203.0.113.9"), &xff(&["198.51.100.1"])), ip("203.0.113.9"));
        // The proxy appended the client's address: the rightmost untrusted entry.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff(&["198.51.100.1, 203.0.113.9"])), ip("203.0.113.9"));
        // Two trusted hops, several header lines.
        assert_eq!(t.client_ip(ip("127.0.0.1"), &xff(&["1.1.1.1", "203.0.113.9, 10.9.9.9"])), ip("203.0.113.9"));
        // No header: the proxy itself.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        // Garbage stops the walk at the last address that could be read.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff(&["203.0.113.9, junk, 10.0.0.7"])), ip("10.0.0.7"));
        // IPv4-mapped IPv6 peers count as their IPv4 address.
        assert_eq!(t.client_ip(ip("::ffff:127.0.0.1"), &xff(&["203.0.113.9"])), ip("203.0.113.9"));
        // Nothing trusted: always the peer.
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("10.1.2.3"), &xff(&["203.0.113.9"])), ip("10.1.2.3"));
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).unwrap_err().contains("10.0.0.0/33"));
    }
}
