//! The developer portal as gateways see it: the origin its Try Out tab calls APIs from, so
//! that gateways answer those browser calls (CORS) without each API configuring it.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

/// Control-plane settings every gateway's Snapshot carries (`[portal]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Portal {
    /// The portal's web origin, `scheme://host[:port]` (`https://portal.example.com`).
    /// Routes with `try_out` answer CORS preflights from it and mark their responses for it.
    pub origin: String,
}

/// Reads a web origin, `http(s)://host[:port]` with nothing after it, and answers its
/// serialized form as browsers send it in `Origin`: scheme and host in lower case, an IPv6
/// address compressed in brackets, the scheme's default port left out. The error says what
/// is wrong and how to write it.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let how = "write it as scheme://host[:port], e.g. https://portal.example.com";
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not an origin: {how}"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(format!(
                "`{text}`: the scheme must be http or https, not `{scheme}`"
            ));
        }
    };
    if let Some(i) = rest.find(['/', '?', '#']) {
        return Err(format!(
            "`{text}`: an origin has no path, query or fragment (remove `{}`); {how}",
            &rest[i..]
        ));
    }
    if rest.contains('@') {
        return Err(format!("`{text}`: an origin has no user name; {how}"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{text}`: an IPv6 address needs its closing `]`"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("`{text}`: `{addr}` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{text}` is not an origin: {how}"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        crate::validate::check_host(host, false).map_err(|e| format!("{e}; {how}"))?;
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("`{text}`: `{p}` is not a port (1 to 65535)")),
        },
    };
    Ok(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_read_in_their_serialized_form() {
        for (given, serialized) in [
            ("https://portal.example.com", "https://portal.example.com"),
            (
                "HTTPS://Portal.Example.COM:443",
                "https://portal.example.com",
            ),
            ("http://127.0.0.1:9400", "http://127.0.0.1:9400"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            ("https://example.com:80", "https://example.com:80"),
            ("http://[0:0::1]:9400", "http://[::1]:9400"),
            ("http://localhost", "http://localhost"),
        ] {
            assert_eq!(parse_origin(given).as_deref(), Ok(serialized), "{given}");
        }
    }

    #[test]
    fn what_is_not_an_origin_is_named() {
        for (given, says) in [
            ("not-a-url", "is not an origin"),
            ("ftp://example.com", "the scheme must be http or https"),
            ("https://example.com/portal", "no path"),
            ("https://example.com/", "no path"),
            ("https://example.com?x=1", "no path, query"),
            ("https://user@example.com", "no user name"),
            ("https://", "is not a hostname"),
            ("https://exa mple.com", "not a valid hostname"),
            ("https://example.com:0", "is not a port"),
            ("https://example.com:99999", "is not a port"),
            ("https://example.com:+80", "is not a port"),
            ("http://[::1", "closing `]`"),
            ("http://[nope]:80", "not an IPv6 address"),
        ] {
            let e = parse_origin(given).err().unwrap_or_default();
            assert!(e.contains(says), "{given}: {e}");
        }
    }
}
