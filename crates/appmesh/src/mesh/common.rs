//! Shapes several App Mesh kinds share: durations, protocols, header, query and path
//! conditions, TLS, health checks, connection pools, outlier detection and timeouts.

use portico_model::Duration;
use serde_json::Value;

use crate::json::{Bad, Obj, R, object};
use crate::mesh::{Cx, port};

/// A listener or route protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Proto {
    /// HTTP/1.1.
    Http,
    /// HTTP/2.
    Http2,
    /// gRPC.
    Grpc,
    /// Plain TCP.
    Tcp,
}

impl Proto {
    /// App Mesh's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }

    /// The protocol of a route kind key (`httpRoute`, ...).
    pub fn of_route_key(key: &str) -> Self {
        match key {
            "http2Route" => Self::Http2,
            "grpcRoute" => Self::Grpc,
            "tcpRoute" => Self::Tcp,
            _ => Self::Http,
        }
    }
}

/// A protocol field; `allowed` lists the words this kind takes.
pub(crate) fn proto(o: &Obj<'_>, key: &str, allowed: &[&'static str]) -> R<Proto> {
    let word = o
        .one_of(key, allowed)?
        .ok_or_else(|| Bad::new(o.at(key), "missing: App Mesh requires this field"))?;
    Ok(match word {
        "http2" => Proto::Http2,
        "grpc" => Proto::Grpc,
        "tcp" => Proto::Tcp,
        _ => Proto::Http,
    })
}

/// A `{unit, value}` duration, with its path.
pub(crate) fn duration(v: &Value, at: &str, cx: &mut Cx<'_>) -> R<Duration> {
    let o = object(v, at)?;
    let unit = o
        .one_of("unit", &["s", "ms"])?
        .ok_or_else(|| Bad::new(o.at("unit"), "missing: App Mesh requires this field"))?;
    let value = o.req_int("value", 0, i64::MAX / 1000)? as u64;
    cx.rest(&o);
    Ok(match unit {
        "s" => Duration::from_secs(value),
        _ => Duration::from_millis(value),
    })
}

/// An optional duration field.
pub(crate) fn opt_duration(o: &Obj<'_>, key: &str, cx: &mut Cx<'_>) -> R<Option<Duration>> {
    o.get(key).map(|v| duration(v, &o.at(key), cx)).transpose()
}

/// The condition of a header (or gRPC metadata) match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeaderKind {
    /// Equals.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Matches the regular expression.
    Regex(String),
    /// A whole number in `start..end` (end excluded, as Envoy's range match).
    Range {
        /// Lowest value matched.
        start: i64,
        /// First value not matched.
        end: i64,
    },
}

/// A header or gRPC metadata condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderCond {
    /// JSON path of the condition.
    pub at: String,
    /// Header name.
    pub name: String,
    /// Negated.
    pub invert: bool,
    /// The condition; the header must be present when none.
    pub kind: Option<HeaderKind>,
}

/// The header (or metadata) conditions under `key`.
pub(crate) fn headers(o: &Obj<'_>, key: &str, cx: &mut Cx<'_>) -> R<Vec<HeaderCond>> {
    let mut out = Vec::new();
    for (at, v) in o.arr(key)? {
        let h = object(v, &at)?;
        let name = h.req_str("name")?.to_owned();
        let invert = h.bool("invert")?.unwrap_or(false);
        let kind = match h.obj("match")? {
            None => None,
            Some(m) => {
                let which = m.exactly_one(&["exact", "prefix", "suffix", "regex", "range"])?;
                let kind = if which == "range" {
                    let r = m.req_obj("range")?;
                    let start = r.req_int("start", i64::MIN, i64::MAX)?;
                    let end = r.req_int("end", i64::MIN, i64::MAX)?;
                    cx.rest(&r);
                    HeaderKind::Range { start, end }
                } else {
                    let s = m.req_str(which)?.to_owned();
                    match which {
                        "exact" => HeaderKind::Exact(s),
                        "prefix" => HeaderKind::Prefix(s),
                        "suffix" => HeaderKind::Suffix(s),
                        _ => HeaderKind::Regex(s),
                    }
                };
                cx.rest(&m);
                Some(kind)
            }
        };
        cx.rest(&h);
        out.push(HeaderCond {
            at,
            name,
            invert,
            kind,
        });
    }
    Ok(out)
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueryCond {
    /// JSON path.
    pub at: String,
    /// Parameter name.
    pub name: String,
    /// Its value equals this; present when none.
    pub exact: Option<String>,
}

/// The `queryParameters` of a match.
pub(crate) fn query(o: &Obj<'_>, cx: &mut Cx<'_>) -> R<Vec<QueryCond>> {
    let mut out = Vec::new();
    for (at, v) in o.arr("queryParameters")? {
        let q = object(v, &at)?;
        let name = q.req_str("name")?.to_owned();
        let exact = match q.obj("match")? {
            None => None,
            Some(m) => {
                let e = m.req_str("exact")?.to_owned();
                cx.rest(&m);
                Some(e)
            }
        };
        cx.rest(&q);
        out.push(QueryCond { at, name, exact });
    }
    Ok(out)
}

/// A `path` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathCond {
    /// The whole path.
    Exact(String),
    /// A regular expression over the whole path.
    Regex(String),
}

/// The `path` of a match: exactly one of `exact` and `regex`.
pub(crate) fn path_cond(o: &Obj<'_>, cx: &mut Cx<'_>) -> R<Option<PathCond>> {
    let Some(p) = o.obj("path")? else {
        return Ok(None);
    };
    let which = p.exactly_one(&["exact", "regex"])?;
    let v = p.req_str(which)?.to_owned();
    if which == "exact" && !v.starts_with('/') {
        return Err(Bad::new(
            p.at("exact"),
            format!("`{v}` must start with `/`"),
        ));
    }
    cx.rest(&p);
    Ok(Some(if which == "exact" {
        PathCond::Exact(v)
    } else {
        PathCond::Regex(v)
    }))
}

/// An HTTP match's `prefix` (starting with `/`) and `path`, at most one of them.
pub(crate) fn prefix_and_path(
    mo: &Obj<'_>,
    cx: &mut Cx<'_>,
) -> R<(Option<String>, Option<PathCond>)> {
    let prefix = mo.str("prefix")?.map(str::to_owned);
    if let Some(p) = &prefix
        && !p.starts_with('/')
    {
        return Err(Bad::new(
            mo.at("prefix"),
            format!("`{p}` must start with `/`"),
        ));
    }
    let path = path_cond(mo, cx)?;
    if prefix.is_some() && path.is_some() {
        return Err(Bad::new(
            mo.path.clone(),
            "give either `prefix` or `path`, not both",
        ));
    }
    Ok((prefix, path))
}

/// An HTTP method: App Mesh takes these nine.
pub(crate) fn method(o: &Obj<'_>) -> R<Option<String>> {
    Ok(o.one_of(
        "method",
        &[
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ],
    )?
    .map(str::to_owned))
}

/// Where a certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cert {
    /// PEM files on the proxy's host.
    File {
        /// Certificate chain file.
        chain: String,
        /// Private key file.
        key: String,
    },
    /// AWS Certificate Manager.
    Acm {
        /// The certificate's ARN.
        arn: String,
    },
    /// An Envoy SDS secret.
    Sds {
        /// The secret's name.
        secret: String,
    },
}

/// A `certificate` object; `allowed` lists the sources this place takes.
pub(crate) fn cert(v: &Value, at: &str, allowed: &[&'static str], cx: &mut Cx<'_>) -> R<Cert> {
    let c = object(v, at)?;
    let which = c.exactly_one(allowed)?;
    let inner = c.req_obj(which)?;
    let out = match which {
        "file" => Cert::File {
            chain: inner.req_str("certificateChain")?.to_owned(),
            key: inner.req_str("privateKey")?.to_owned(),
        },
        "acm" => Cert::Acm {
            arn: inner.req_str("certificateArn")?.to_owned(),
        },
        _ => Cert::Sds {
            secret: inner.req_str("secretName")?.to_owned(),
        },
    };
    cx.rest(&inner);
    cx.rest(&c);
    Ok(out)
}

/// Where the CAs a peer's certificate is checked against come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Trust {
    /// A PEM file.
    File {
        /// The CA chain file.
        chain: String,
    },
    /// AWS Private CA authorities.
    Acm {
        /// Their ARNs.
        arns: Vec<String>,
    },
    /// An Envoy SDS secret.
    Sds {
        /// The secret's name.
        secret: String,
    },
}

/// A TLS validation context: trust and subject alternative names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Validation {
    /// JSON path of `trust`.
    pub trust_at: String,
    /// The trust.
    pub trust: Trust,
    /// JSON path of `subjectAlternativeNames`, when given.
    pub sans_at: Option<String>,
    /// Names the peer's certificate must hold (any of them).
    pub sans: Vec<String>,
}

/// A `validation` object; `allowed` lists the trust sources this place takes.
pub(crate) fn validation(
    v: &Value,
    at: &str,
    allowed: &[&'static str],
    cx: &mut Cx<'_>,
) -> R<Validation> {
    let o = object(v, at)?;
    let t = o.req_obj("trust")?;
    let which = t.exactly_one(allowed)?;
    let inner = t.req_obj(which)?;
    let trust = match which {
        "file" => Trust::File {
            chain: inner.req_str("certificateChain")?.to_owned(),
        },
        "acm" => {
            let arns = inner.strs("certificateAuthorityArns")?;
            if arns.is_empty() {
                return Err(Bad::new(
                    inner.at("certificateAuthorityArns"),
                    "missing: App Mesh requires at least one authority",
                ));
            }
            Trust::Acm { arns }
        }
        _ => Trust::Sds {
            secret: inner.req_str("secretName")?.to_owned(),
        },
    };
    cx.rest(&inner);
    cx.rest(&t);
    let (sans_at, sans) = match o.obj("subjectAlternativeNames")? {
        None => (None, Vec::new()),
        Some(s) => {
            let m = s.req_obj("match")?;
            let exact = m.strs("exact")?;
            cx.rest(&m);
            cx.rest(&s);
            (Some(s.path.clone()), exact)
        }
    };
    cx.rest(&o);
    Ok(Validation {
        trust_at: t.path.clone(),
        trust,
        sans_at,
        sans,
    })
}

/// A listener's TLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// TLS only.
    Strict,
    /// TLS and plaintext on the same port.
    Permissive,
    /// No TLS.
    Disabled,
}

/// A listener's TLS (virtual gateways' and virtual nodes').
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenerTls {
    /// JSON path of `tls`.
    pub at: String,
    /// The mode.
    pub mode: TlsMode,
    /// JSON path of `certificate`.
    pub cert_at: String,
    /// The certificate.
    pub cert: Cert,
    /// Client certificates asked for.
    pub validation: Option<(String, Validation)>,
}

/// A listener's `tls` object.
pub(crate) fn listener_tls(o: &Obj<'_>, cx: &mut Cx<'_>) -> R<Option<ListenerTls>> {
    let Some(t) = o.obj("tls")? else {
        return Ok(None);
    };
    let mode = match t
        .one_of("mode", &["STRICT", "PERMISSIVE", "DISABLED"])?
        .ok_or_else(|| Bad::new(t.at("mode"), "missing: App Mesh requires this field"))?
    {
        "STRICT" => TlsMode::Strict,
        "PERMISSIVE" => TlsMode::Permissive,
        _ => TlsMode::Disabled,
    };
    let cert_at = t.at("certificate");
    let cert = cert(t.req("certificate")?, &cert_at, &["acm", "file", "sds"], cx)?;
    let validation = match t.get("validation") {
        None => None,
        Some(v) => {
            let at = t.at("validation");
            Some((at.clone(), validation(v, &at, &["file", "sds"], cx)?))
        }
    };
    cx.rest(&t);
    Ok(Some(ListenerTls {
        at: t.path.clone(),
        mode,
        cert_at,
        cert,
        validation,
    }))
}

/// Client TLS a proxy uses towards its backends (`backendDefaults.clientPolicy.tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientTls {
    /// JSON path of `tls`.
    pub at: String,
    /// Applied at all (App Mesh's default: yes).
    pub enforce: bool,
    /// Backend ports it applies to; every port when empty.
    pub ports: Vec<u16>,
    /// A client certificate, with its path.
    pub cert: Option<(String, Cert)>,
    /// How backends' certificates are checked.
    pub validation: Validation,
}

/// `backendDefaults.clientPolicy.tls` of a spec; other fields of it are reported as unknown.
pub(crate) fn backend_defaults(o: &Obj<'_>, cx: &mut Cx<'_>) -> R<Option<ClientTls>> {
    let Some(bd) = o.obj("backendDefaults")? else {
        return Ok(None);
    };
    let out = match bd.obj("clientPolicy")? {
        None => None,
        Some(cp) => {
            let tls = client_tls(&cp, cx)?;
            cx.rest(&cp);
            tls
        }
    };
    cx.rest(&bd);
    Ok(out)
}

/// A `clientPolicy`'s `tls`.
pub(crate) fn client_tls(cp: &Obj<'_>, cx: &mut Cx<'_>) -> R<Option<ClientTls>> {
    let Some(t) = cp.obj("tls")? else {
        return Ok(None);
    };
    let enforce = t.bool("enforce")?.unwrap_or(true);
    let mut ports = Vec::new();
    for (at, v) in t.arr("ports")? {
        let n = v
            .as_i64()
            .filter(|n| (1..=65_535).contains(n))
            .ok_or_else(|| Bad::new(at, "a port: 1 to 65535"))?;
        ports.push(n as u16);
    }
    let cert = match t.get("certificate") {
        None => None,
        Some(v) => {
            let at = t.at("certificate");
            Some((at.clone(), cert(v, &at, &["file", "sds"], cx)?))
        }
    };
    let vat = t.at("validation");
    let validation = validation(t.req("validation")?, &vat, &["acm", "file", "sds"], cx)?;
    cx.rest(&t);
    Ok(Some(ClientTls {
        at: t.path.clone(),
        enforce,
        ports,
        cert,
        validation,
    }))
}

/// An active health check policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Health {
    /// JSON path of `healthCheck`.
    pub at: String,
    /// Probe protocol.
    pub protocol: Proto,
    /// Path probed (HTTP).
    pub path: Option<String>,
    /// Port probed.
    pub port: Option<u16>,
    /// Time between probes, in ms.
    pub interval_ms: u64,
    /// Probe timeout, in ms.
    pub timeout_ms: u64,
    /// Passes that bring an endpoint back.
    pub healthy: u32,
    /// Failures that take it out.
    pub unhealthy: u32,
}

/// A listener's `healthCheck`; `protocols` lists the probe protocols this kind takes.
pub(crate) fn health(
    o: &Obj<'_>,
    protocols: &[&'static str],
    cx: &mut Cx<'_>,
) -> R<Option<Health>> {
    let Some(h) = o.obj("healthCheck")? else {
        return Ok(None);
    };
    let out = Health {
        at: h.path.clone(),
        protocol: proto(&h, "protocol", protocols)?,
        path: h.str("path")?.map(str::to_owned),
        port: port(&h, "port")?,
        interval_ms: h.req_int("intervalMillis", 5_000, 300_000)? as u64,
        timeout_ms: h.req_int("timeoutMillis", 2_000, 60_000)? as u64,
        healthy: h.req_int("healthyThreshold", 2, 10)? as u32,
        unhealthy: h.req_int("unhealthyThreshold", 2, 10)? as u32,
    };
    cx.rest(&h);
    Ok(Some(out))
}

/// A listener's connection pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pool {
    /// JSON path of `connectionPool`.
    pub at: String,
    /// Which protocol's pool (`http`, `http2`, `grpc`, `tcp`).
    pub kind: &'static str,
    /// HTTP/1.1 and TCP: connections at once.
    pub max_connections: Option<u32>,
    /// HTTP/1.1: requests waiting.
    pub max_pending: Option<u32>,
    /// HTTP/2 and gRPC: requests at once.
    pub max_requests: Option<u32>,
}

/// A listener's `connectionPool`; `kinds` lists the protocols this kind takes.
pub(crate) fn pool(o: &Obj<'_>, kinds: &[&'static str], cx: &mut Cx<'_>) -> R<Option<Pool>> {
    let Some(p) = o.obj("connectionPool")? else {
        return Ok(None);
    };
    let kind = p.exactly_one(kinds)?;
    let inner = p.req_obj(kind)?;
    let max = |key: &str, required: bool| -> R<Option<u32>> {
        let v = inner.int(key, 1, u32::MAX as i64)?.map(|n| n as u32);
        if required && v.is_none() {
            return Err(Bad::new(
                inner.at(key),
                "missing: App Mesh requires this field",
            ));
        }
        Ok(v)
    };
    let out = match kind {
        "http" => Pool {
            at: p.path.clone(),
            kind,
            max_connections: max("maxConnections", true)?,
            max_pending: max("maxPendingRequests", false)?,
            max_requests: None,
        },
        "tcp" => Pool {
            at: p.path.clone(),
            kind,
            max_connections: max("maxConnections", true)?,
            max_pending: None,
            max_requests: None,
        },
        _ => Pool {
            at: p.path.clone(),
            kind,
            max_connections: None,
            max_pending: None,
            max_requests: max("maxRequests", true)?,
        },
    };
    cx.rest(&inner);
    cx.rest(&p);
    Ok(Some(out))
}

/// A timeout pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Timeout {
    /// JSON path of `perRequest`, and its value.
    pub per_request: Option<(String, Duration)>,
    /// JSON path of `idle`, and its value.
    pub idle: Option<(String, Duration)>,
}

/// `{idle, perRequest}` at `t`.
pub(crate) fn timeout_pair(t: &Obj<'_>, cx: &mut Cx<'_>) -> R<Timeout> {
    let per_request = opt_duration(t, "perRequest", cx)?.map(|d| (t.at("perRequest"), d));
    let idle = opt_duration(t, "idle", cx)?.map(|d| (t.at("idle"), d));
    cx.rest(t);
    Ok(Timeout { per_request, idle })
}
