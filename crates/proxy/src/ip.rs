//! Phase `ip`: who is the client (the peer, or the last untrusted address of
//! `X-Forwarded-For` when the peer is a trusted proxy), and may it call this route.

use std::net::IpAddr;

use http::HeaderMap;
use portico_model::{Cidr, IpPolicy};

use crate::fault::{ErrorKind, ProxyError};

/// A route's compiled address policy.
#[derive(Debug, Default)]
pub struct IpRules {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

/// Parses a list of networks, skipping what does not parse (validation refused it already).
pub fn networks(list: &[String]) -> Vec<Cidr> {
    list.iter().filter_map(|s| Cidr::parse(s).ok()).collect()
}

impl IpRules {
    /// Compiles a policy.
    pub fn compile(p: &IpPolicy) -> Self {
        Self {
            allow: networks(&p.allow),
            deny: networks(&p.deny),
        }
    }

    /// 403 unless `ip` may call.
    pub fn check(&self, ip: IpAddr) -> Result<(), ProxyError> {
        let denied = self.deny.iter().any(|n| n.contains(ip))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(ip)));
        if denied {
            return Err(ProxyError::new(
                ErrorKind::Forbidden,
                "requests from this address are not allowed",
            ));
        }
        Ok(())
    }
}

/// The client's address: the peer, unless it is a trusted proxy; then the right-most
/// address in `X-Forwarded-For` that is not a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    if trusted.is_empty() || !trusted.iter().any(|n| n.contains(peer)) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted.iter().any(|n| n.contains(ip)) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let trusted = networks(&["10.0.0.0/8".into()]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("192.0.2.1"), &h, &trusted),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &[]),
            ip("10.0.0.1"),
            "nobody trusted"
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let r = IpRules::compile(&IpPolicy {
            allow: vec!["10.0.0.0/8".into()],
            deny: vec!["10.9.0.0/16".into()],
        });
        assert!(r.check(ip("10.1.2.3")).is_ok());
        assert!(r.check(ip("10.9.2.3")).is_err());
        assert!(r.check(ip("192.0.2.1")).is_err());
    }
}
