//! Virtual services, virtual routers and the routes of virtual routers.

use crate::json::{Bad, Obj, R, object};
use crate::mesh::common::{
    Proto, Timeout, headers, method, opt_duration, prefix_and_path, proto, query, timeout_pair,
};
use crate::mesh::gateway::Match;
use crate::mesh::{Cx, Meta, port, req_port};

/// A virtual service.
#[derive(Clone, Debug)]
pub(crate) struct VirtualService {
    /// Who it is.
    pub meta: Meta,
    /// What provides it, with the JSON path of `provider`.
    pub provider: Option<(String, Provider)>,
}

/// What provides a virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// A virtual node, by name.
    Node(String),
    /// A virtual router, by name.
    Router(String),
}

/// A virtual router.
#[derive(Clone, Debug)]
pub(crate) struct VirtualRouter {
    /// Who it is.
    pub meta: Meta,
    /// Its listeners' ports and protocols.
    pub listeners: Vec<(u16, Proto)>,
}

/// A route of a virtual router.
#[derive(Clone, Debug)]
pub(crate) struct MeshRoute {
    /// Who it is (its parent is the virtual router).
    pub meta: Meta,
    /// Order among the router's routes (lower first).
    pub priority: Option<u32>,
    /// `httpRoute`, `http2Route`, `grpcRoute` or `tcpRoute`.
    pub proto: Proto,
    /// JSON path of the route object.
    pub at: String,
    /// What it matches.
    pub m: Match,
    /// Where it sends.
    pub targets: Vec<WeightedTarget>,
    /// Retries.
    pub retry: Option<RetryPolicy>,
    /// Timeouts.
    pub timeout: Option<Timeout>,
}

/// A weighted target of a route.
#[derive(Clone, Debug)]
pub(crate) struct WeightedTarget {
    /// JSON path.
    pub at: String,
    /// The virtual node.
    pub node: String,
    /// Weight, 0 to 100.
    pub weight: u32,
    /// The node's listener port.
    pub port: Option<u16>,
}

/// A route's retry policy.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    /// JSON path of `retryPolicy`.
    pub at: String,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// JSON path of `perRetryTimeout`, with its value.
    pub per_retry: Option<(String, portico_model::Duration)>,
    /// `httpRetryEvents`, with the JSON path of each.
    pub http_events: Vec<(String, String)>,
    /// `tcpRetryEvents`.
    pub tcp_events: Vec<(String, String)>,
    /// `grpcRetryEvents`.
    pub grpc_events: Vec<(String, String)>,
}

/// Reads a virtual service's spec.
pub(crate) fn virtual_service(meta: Meta, spec: &Obj<'_>, cx: &mut Cx<'_>) -> R<VirtualService> {
    let provider = match spec.obj("provider")? {
        None => None,
        Some(p) => {
            let which = p.exactly_one(&["virtualNode", "virtualRouter"])?;
            let inner = p.req_obj(which)?;
            let out = if which == "virtualNode" {
                Provider::Node(inner.req_str("virtualNodeName")?.to_owned())
            } else {
                Provider::Router(inner.req_str("virtualRouterName")?.to_owned())
            };
            cx.rest(&inner);
            cx.rest(&p);
            Some((p.path.clone(), out))
        }
    };
    cx.rest(spec);
    Ok(VirtualService { meta, provider })
}

/// Reads a virtual router's spec.
pub(crate) fn virtual_router(meta: Meta, spec: &Obj<'_>, cx: &mut Cx<'_>) -> R<VirtualRouter> {
    let mut listeners = Vec::new();
    for (at, v) in spec.arr("listeners")? {
        let l = object(v, &at)?;
        let pm = l.req_obj("portMapping")?;
        let p = req_port(&pm, "port")?;
        let pr = proto(&pm, "protocol", &["http", "http2", "grpc", "tcp"])?;
        cx.rest(&pm);
        cx.rest(&l);
        listeners.push((p, pr));
    }
    cx.rest(spec);
    Ok(VirtualRouter { meta, listeners })
}

/// Reads a route's spec.
pub(crate) fn route(meta: Meta, spec: &Obj<'_>, cx: &mut Cx<'_>) -> R<MeshRoute> {
    let priority = spec.int("priority", 0, 1000)?.map(|p| p as u32);
    let key = spec.exactly_one(&["httpRoute", "http2Route", "grpcRoute", "tcpRoute"])?;
    let r = spec.req_obj(key)?;
    let proto = Proto::of_route_key(key);
    let m = match (proto, r.obj("match")?) {
        (_, None) if proto == Proto::Tcp => Match::default(),
        (Proto::Tcp, Some(mo)) => {
            let m = Match {
                at: mo.path.clone(),
                port: port(&mo, "port")?,
                ..Match::default()
            };
            cx.rest(&mo);
            m
        }
        (_, None) => {
            return Err(Bad::new(
                r.at("match"),
                "missing: App Mesh requires this field",
            ));
        }
        (Proto::Grpc, Some(mo)) => grpc_match(&mo, cx)?,
        (_, Some(mo)) => http_match(&mo, cx)?,
    };
    let action = r.req_obj("action")?;
    let mut targets = Vec::new();
    let items = action.arr("weightedTargets")?;
    if items.is_empty() || items.len() > 10 {
        return Err(Bad::new(
            action.at("weightedTargets"),
            "App Mesh takes 1 to 10 weighted targets",
        ));
    }
    for (at, v) in items {
        let t = object(v, &at)?;
        let node = t.req_str("virtualNode")?.to_owned();
        let weight = t.req_int("weight", 0, 100)? as u32;
        let port = port(&t, "port")?;
        cx.rest(&t);
        targets.push(WeightedTarget {
            at,
            node,
            weight,
            port,
        });
    }
    cx.rest(&action);
    let retry = match r.obj("retryPolicy")? {
        None => None,
        Some(rp) => Some(retry_policy(&rp, cx)?),
    };
    let timeout = match r.obj("timeout")? {
        None => None,
        Some(t) => Some(timeout_pair(&t, cx)?),
    };
    cx.rest(&r);
    cx.rest(spec);
    Ok(MeshRoute {
        meta,
        priority,
        proto,
        at: r.path.clone(),
        m,
        targets,
        retry,
        timeout,
    })
}

fn http_match(mo: &Obj<'_>, cx: &mut Cx<'_>) -> R<Match> {
    let (prefix, path) = prefix_and_path(mo, cx)?;
    if prefix.is_none() && path.is_none() {
        return Err(Bad::new(
            mo.path.clone(),
            "App Mesh requires `prefix` or `path` in a route's match",
        ));
    }
    let scheme = mo
        .one_of("scheme", &["http", "https"])?
        .map(|s| (mo.at("scheme"), s.to_owned()));
    let m = Match {
        at: mo.path.clone(),
        prefix,
        path,
        headers: headers(mo, "headers", cx)?,
        query: query(mo, cx)?,
        method: method(mo)?,
        port: port(mo, "port")?,
        scheme,
        ..Match::default()
    };
    cx.rest(mo);
    Ok(m)
}

fn grpc_match(mo: &Obj<'_>, cx: &mut Cx<'_>) -> R<Match> {
    let service_name = mo.str("serviceName")?.map(str::to_owned);
    let method_name = mo.str("methodName")?.map(str::to_owned);
    if method_name.is_some() && service_name.is_none() {
        return Err(Bad::new(
            mo.at("methodName"),
            "a method name needs `serviceName` too",
        ));
    }
    let m = Match {
        at: mo.path.clone(),
        service_name,
        method_name,
        headers: headers(mo, "metadata", cx)?,
        port: port(mo, "port")?,
        ..Match::default()
    };
    cx.rest(mo);
    Ok(m)
}

fn retry_policy(rp: &Obj<'_>, cx: &mut Cx<'_>) -> R<RetryPolicy> {
    let max_retries = rp.req_int("maxRetries", 0, i64::from(u32::MAX))? as u32;
    let per_retry = opt_duration(rp, "perRetryTimeout", cx)?.map(|d| (rp.at("perRetryTimeout"), d));
    let events = |key: &str, allowed: &[&str]| -> R<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (at, v) in rp.arr(key)? {
            let s = v
                .as_str()
                .ok_or_else(|| Bad::new(at.clone(), "expected a string"))?;
            if !allowed.contains(&s) {
                return Err(Bad::new(
                    at,
                    format!("`{s}` is not one of {}", allowed.join(", ")),
                ));
            }
            out.push((at, s.to_owned()));
        }
        Ok(out)
    };
    let out = RetryPolicy {
        at: rp.path.clone(),
        max_retries,
        per_retry,
        http_events: events(
            "httpRetryEvents",
            &[
                "server-error",
                "gateway-error",
                "client-error",
                "stream-error",
            ],
        )?,
        tcp_events: events("tcpRetryEvents", &["connection-error"])?,
        grpc_events: events(
            "grpcRetryEvents",
            &[
                "cancelled",
                "deadline-exceeded",
                "internal",
                "resource-exhausted",
                "unavailable",
            ],
        )?,
    };
    cx.rest(rp);
    Ok(out)
}
