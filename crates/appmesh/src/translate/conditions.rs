//! The conditions of a gateway route's and a router route's matches other than the path:
//! hosts, headers (and gRPC metadata), query parameters, the method, the gRPC service and
//! method; and both sets at once.

use portico_model::validate::{anchored_regex, check_host, header_name_problem};
use portico_model::{GrpcMatch, HeaderMatch, QueryMatch, Rewrite, RouteMatch};

use crate::mesh::Cx;
use crate::mesh::common::{HeaderCond, HeaderKind, QueryCond};
use crate::mesh::gateway::{HostCond, Match};
use crate::translate::paths::Flat;
use crate::translate::range;

/// The gateway-level conditions, apart from the path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cond {
    /// Hosts (the gateway route's).
    pub hosts: Vec<String>,
    /// Header conditions, all of which hold.
    pub headers: Vec<HeaderMatch>,
    /// Query conditions, all of which hold.
    pub query: Vec<QueryMatch>,
    /// The method.
    pub method: Option<String>,
    /// The gRPC service.
    pub grpc_service: Option<String>,
    /// The gRPC method (a router route's).
    pub grpc_method: Option<String>,
}

/// Why a gateway route (or one combination of it) cannot be carried.
pub(crate) enum Fail {
    /// It can never match: dropped, harmlessly.
    Never(String),
    /// It cannot be said exactly: the whole gateway route is not carried.
    Cannot(String, String),
}

/// The conditions of a gateway route's match, apart from the path.
pub(crate) fn gateway_cond(m: &Match, cx: &mut Cx<'_>) -> Result<Cond, Fail> {
    let mut c = common_cond(m, cx)?;
    match &m.hostname {
        None => {}
        Some(HostCond::Exact(h)) => {
            check_host(h, false)
                .map_err(|w| Fail::Cannot(format!("{}.hostname.exact", m.at), w))?;
            c.hosts.push(h.clone());
        }
        Some(HostCond::Suffix(s)) => {
            let at = format!("{}.hostname.suffix", m.at);
            let wildcard = match s.strip_prefix('.') {
                Some(rest) => format!("*.{rest}"),
                None => {
                    cx.changed(
                        at.clone(),
                        format!(
                            "suffix `{s}` takes any host ending in it (`my{s}` too); Portico's `*.{s}` takes the names under `{s}` only"
                        ),
                    );
                    format!("*.{s}")
                }
            };
            check_host(&wildcard, true).map_err(|w| Fail::Cannot(at, w))?;
            c.hosts.push(wildcard);
        }
    }
    Ok(c)
}

/// The conditions of a router route's match, apart from the path.
pub(crate) fn router_cond(m: &Match, cx: &mut Cx<'_>) -> Result<Cond, Fail> {
    let mut c = common_cond(m, cx)?;
    if let Some(meth) = &m.method_name {
        check_grpc_name(meth, false, &format!("{}.methodName", m.at))?;
        c.grpc_method = Some(meth.clone());
    }
    Ok(c)
}

fn common_cond(m: &Match, cx: &mut Cx<'_>) -> Result<Cond, Fail> {
    let mut c = Cond {
        method: m.method.clone(),
        ..Cond::default()
    };
    for h in &m.headers {
        c.headers.push(header(h)?);
    }
    for q in &m.query {
        c.query.push(query(q, cx));
    }
    if let Some(s) = &m.service_name {
        check_grpc_name(s, true, &format!("{}.serviceName", m.at))?;
        c.grpc_service = Some(s.clone());
    }
    Ok(c)
}

fn check_grpc_name(s: &str, dots: bool, at: &str) -> Result<(), Fail> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
        && !s.starts_with('.')
        && !s.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(Fail::Cannot(
            at.to_owned(),
            format!("`{s}` is not a gRPC name Portico can match"),
        ))
    }
}

fn header(h: &HeaderCond) -> Result<HeaderMatch, Fail> {
    if let Some(m) = header_name_problem(&h.name) {
        return Err(Fail::Cannot(format!("{}.name", h.at), m));
    }
    let mut out = HeaderMatch {
        name: h.name.clone(),
        invert: h.invert,
        ..HeaderMatch::default()
    };
    match &h.kind {
        None => out.present = true,
        Some(HeaderKind::Exact(v)) => out.exact = Some(v.clone()),
        Some(HeaderKind::Prefix(v)) => out.prefix = Some(v.clone()),
        Some(HeaderKind::Suffix(v)) => out.suffix = Some(v.clone()),
        Some(HeaderKind::Regex(v)) => {
            anchored_regex(v).map_err(|m| {
                Fail::Cannot(
                    format!("{}.match.regex", h.at),
                    format!("`{v}` is not a regex Portico can run: {m}"),
                )
            })?;
            out.regex = Some(v.clone());
        }
        Some(HeaderKind::Range { start, end }) => match range::regex(*start, *end) {
            Some(re) => out.regex = Some(re),
            None if h.invert => {
                return Err(Fail::Cannot(
                    format!("{}.match.range", h.at),
                    format!(
                        "an inverted empty range ({start}..{end}) of header {}",
                        h.name
                    ),
                ));
            }
            None => {
                return Err(Fail::Never(format!(
                    "header {} range {start}..{end} is empty",
                    h.name
                )));
            }
        },
    }
    Ok(out)
}

fn query(q: &QueryCond, cx: &mut Cx<'_>) -> QueryMatch {
    match &q.exact {
        Some(e) => QueryMatch {
            name: q.name.clone(),
            exact: Some(e.clone()),
            ..QueryMatch::default()
        },
        None => {
            cx.changed(
                q.at.clone(),
                format!(
                    "no match: taken as \"parameter {} present\" (present = true)",
                    q.name
                ),
            );
            QueryMatch {
                name: q.name.clone(),
                present: true,
                ..QueryMatch::default()
            }
        }
    }
}

/// Both sets of conditions at once.
pub(crate) fn and(a: &Cond, b: &Cond) -> Result<Cond, Fail> {
    let one = |x: &Option<String>, y: &Option<String>, what: &str| match (x, y) {
        (Some(x), Some(y)) if x != y => Err(Fail::Never(format!(
            "the gateway route takes {what} {x} and the router route {what} {y}"
        ))),
        (Some(x), _) | (_, Some(x)) => Ok(Some(x.clone())),
        (None, None) => Ok(None),
    };
    let mut out = Cond {
        hosts: a.hosts.clone(),
        method: one(&a.method, &b.method, "method")?,
        grpc_service: one(&a.grpc_service, &b.grpc_service, "gRPC service")?,
        grpc_method: b.grpc_method.clone(),
        ..Cond::default()
    };
    // Header and query conditions all hold: Portico checks each of a list.
    out.headers = a.headers.iter().chain(&b.headers).cloned().collect();
    out.query = a.query.iter().chain(&b.query).cloned().collect();
    Ok(out)
}

pub(crate) fn to_match(c: &Cond, flat: &Flat) -> RouteMatch {
    let grpc = (c.grpc_service.is_some() || c.grpc_method.is_some()).then(|| GrpcMatch {
        service: c.grpc_service.clone(),
        method: c.grpc_method.clone(),
    });
    RouteMatch {
        hosts: c.hosts.clone(),
        path: flat.path.clone(),
        methods: c.method.iter().cloned().collect(),
        headers: c.headers.clone(),
        query: c.query.clone(),
        grpc,
    }
}

pub(crate) fn rewrite(flat: &Flat, host_to_target: bool) -> Option<Rewrite> {
    let rw = Rewrite {
        prefix: flat.prefix.clone(),
        path: flat.rewrite_path.clone(),
        host: None,
        host_to_target,
    };
    (rw != Rewrite::default()).then_some(rw)
}
