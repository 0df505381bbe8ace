//! Header handling on the proxy path: hop-by-hop stripping, forwarding headers, request ids,
//! and the route's header edits.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use portico_model::HeaderEdits;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The HTTP/2 settings of an `Upgrade: h2c` request (RFC 7540 section 3.2.1): hop-by-hop.
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Compiled header edits: remove, then set, then add.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Edits {
    /// Compiles validated edits.
    pub fn compile(e: &HeaderEdits) -> Result<Self, String> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("`{n}` is not a header name"))
        };
        let value =
            |v: &str| HeaderValue::from_str(v).map_err(|_| format!("`{v}` is not a header value"));
        Ok(Self {
            remove: e.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            set: e
                .set
                .iter()
                .map(|(n, v)| Ok((name(n)?, value(v)?)))
                .collect::<Result<_, String>>()?,
            add: e
                .add
                .iter()
                .map(|(n, v)| Ok((name(n)?, value(v)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the edits.
    #[inline]
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

/// Removes connection-level headers (RFC 9110 section 7.6.1), including any the
/// `Connection` header names. `te: trailers` survives (gRPC needs it); `upgrade` and
/// `connection: upgrade` survive when `upgrade` is true.
#[inline]
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    if let Some(conn) = h.get(header::CONNECTION) {
        if conn.as_bytes().contains(&b',') || !is_simple(conn.as_bytes()) {
            let named: Vec<HeaderName> = conn
                .to_str()
                .unwrap_or("")
                .split(',')
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .filter(|n| !(upgrade && n == header::UPGRADE))
                .collect();
            for n in named {
                h.remove(n);
            }
        }
        if upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            h.remove(header::CONNECTION);
        }
    }
    if !upgrade {
        h.remove(header::UPGRADE);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(&HTTP2_SETTINGS);
    h.remove(header::TRANSFER_ENCODING);
    if let Some(te) = h.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        h.remove(header::TE);
    }
}

/// `keep-alive`, `close` and `upgrade` name no other header.
fn is_simple(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"keep-alive")
        || v.eq_ignore_ascii_case(b"close")
        || v.eq_ignore_ascii_case(b"upgrade")
}

/// True when every protocol an `Upgrade` header offers is in `allowed` (lower-case names;
/// a `/version` suffix is ignored). `h2c` never is: a connection switched to HTTP/2 behind
/// the gateway would carry requests that no route checked.
pub fn upgrade_allowed(h: &HeaderMap, allowed: &[Box<str>]) -> bool {
    let mut any = false;
    for v in h.get_all(header::UPGRADE) {
        let Ok(v) = v.to_str() else { return false };
        for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let name = t.split('/').next().unwrap_or(t);
            if name.eq_ignore_ascii_case("h2c")
                || !allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
            {
                return false;
            }
            any = true;
        }
    }
    any
}

/// True for an HTTP/1.1 upgrade request (`Connection: upgrade` and an `Upgrade` header).
pub fn is_upgrade_request(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto` and `-Host`.
#[inline]
pub fn add_forwarded(
    h: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    match h.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + client_ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        None => {
            h.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
        }
    }
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host {
        h.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// This gateway's `Via` entry for a message received over `version`.
#[inline]
pub fn via(version: http::Version) -> &'static str {
    if version == http::Version::HTTP_2 {
        "2 portico"
    } else {
        "1.1 portico"
    }
}

/// Appends this gateway to `Via`.
#[inline]
pub fn add_via(h: &mut HeaderMap, version: http::Version) {
    h.append(header::VIA, HeaderValue::from_static(via(version)));
}

/// Names the `Connection` header lists besides `close`, `keep-alive` and `upgrade`: they are
/// hop-by-hop too. Empty (and allocation-free) in the usual case.
pub fn connection_listed(h: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in h.get_all(header::CONNECTION) {
        if is_simple(v.as_bytes()) {
            continue;
        }
        for t in v.to_str().unwrap_or("").split(',') {
            let t = t.trim();
            if is_simple(t.as_bytes()) || t.is_empty() {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                out.push(n);
            }
        }
    }
    out
}

/// Fields that have no place in trailers (RFC 9110 section 6.5.1): framing, routing, how to
/// read the content, and connection-level fields. A recipient that merges trailers into the
/// header section would act on them, so they stop here.
static NOT_IN_TRAILERS: [HeaderName; 12] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::HOST,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::CONTENT_RANGE,
    header::CONNECTION,
    header::TE,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes the fields trailers must not carry (see [`NOT_IN_TRAILERS`]).
pub fn strip_trailer_fields(t: &mut HeaderMap) {
    for name in &NOT_IN_TRAILERS {
        if t.contains_key(name) {
            t.remove(name);
        }
    }
}

/// True for headers that never cross the gateway (besides those `Connection` lists).
#[inline]
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == HTTP2_SETTINGS
}

/// The request's id: the client's `x-request-id` when it is sane, else a new UUIDv4.
#[inline]
pub fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 200
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    new_request_id()
}

/// A random UUIDv4 as a header value.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0F) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3F) | 0x80; // variant 10xx
    let mut out = [0u8; 36];
    let mut pos = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[pos] = b'-';
            pos += 1;
        }
        out[pos] = HEX[(b >> 4) as usize];
        out[pos + 1] = HEX[(b & 0xF) as usize];
        pos += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
        let mut h = map(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
        ]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("keep-alive"));
        assert!(!is_upgrade_request(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        add_forwarded(
            &mut h,
            &HeaderValue::from_static("192.0.2.7"),
            "http",
            Some(HeaderValue::from_static("a.example")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
        add_via(&mut h, http::Version::HTTP_11);
        assert_eq!(h["via"], "1.1 portico");
    }

    #[test]
    fn request_ids() {
        let a = new_request_id();
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(a, new_request_id());
        assert_eq!(request_id(&map(&[("x-request-id", "abc-123")])), "abc-123");
        assert_ne!(
            request_id(&map(&[("x-request-id", "has space")])),
            "has space"
        );
    }

    #[test]
    fn edits_remove_set_add() {
        let mut e = HeaderEdits::default();
        e.remove.push("x-drop".into());
        e.set.insert("x-set".into(), "new".into());
        e.add.insert("x-add".into(), "2".into());
        let edits = Edits::compile(&e).unwrap();
        let mut h = map(&[("x-drop", "1"), ("x-set", "old"), ("x-add", "1")]);
        edits.apply(&mut h);
        assert!(!h.contains_key("x-drop"));
        assert_eq!(h["x-set"], "new");
        assert_eq!(h.get_all("x-add").iter().count(), 2);
    }
}
