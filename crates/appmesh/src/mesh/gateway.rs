//! Virtual gateways and their gateway routes.

use crate::json::{Bad, Obj, R, object};
use crate::mesh::common::{
    ClientTls, HeaderCond, Health, ListenerTls, PathCond, Pool, Proto, QueryCond, backend_defaults,
    headers, health, listener_tls, method, pool, prefix_and_path, proto, query,
};
use crate::mesh::{Cx, Meta, port, req_port};

/// A virtual gateway.
#[derive(Clone, Debug)]
pub(crate) struct VirtualGateway {
    /// Who it is.
    pub meta: Meta,
    /// Its listeners.
    pub listeners: Vec<GatewayListener>,
    /// TLS towards the backends, when set.
    pub client_tls: Option<ClientTls>,
    /// The access log file.
    pub access_log: Option<AccessLog>,
}

/// `logging.accessLog.file`.
#[derive(Clone, Debug)]
pub(crate) struct AccessLog {
    /// JSON path of `path`.
    pub at: String,
    /// The file.
    pub path: String,
    /// JSON path of `format`, when set.
    pub format_at: Option<String>,
}

/// One listener of a virtual gateway.
#[derive(Clone, Debug)]
pub(crate) struct GatewayListener {
    /// JSON path of the listener.
    pub at: String,
    /// Port.
    pub port: u16,
    /// Protocol: http, http2 or grpc.
    pub protocol: Proto,
    /// TLS.
    pub tls: Option<ListenerTls>,
    /// The gateway's own health check.
    pub health: Option<Health>,
    /// Connection pool.
    pub pool: Option<Pool>,
}

/// A gateway route.
#[derive(Clone, Debug)]
pub(crate) struct GatewayRoute {
    /// Who it is (its parent is the virtual gateway).
    pub meta: Meta,
    /// Order among the gateway's routes (lower first).
    pub priority: Option<u32>,
    /// `httpRoute`, `http2Route` or `grpcRoute`.
    pub proto: Proto,
    /// JSON path of the route object (`$.spec.httpRoute`).
    pub at: String,
    /// What it matches.
    pub m: Match,
    /// The virtual service it sends to.
    pub target: String,
    /// The port of the virtual service.
    pub target_port: Option<u16>,
    /// JSON path of `action.target`.
    pub target_at: String,
    /// Rewrites.
    pub rewrite: Rewrite,
}

/// A match of a gateway route or a route: every field App Mesh has in either.
#[derive(Clone, Debug, Default)]
pub(crate) struct Match {
    /// JSON path of `match`.
    pub at: String,
    /// Path prefix.
    pub prefix: Option<String>,
    /// Path, exact or regex.
    pub path: Option<PathCond>,
    /// Hostname (gateway routes).
    pub hostname: Option<HostCond>,
    /// Headers or gRPC metadata.
    pub headers: Vec<HeaderCond>,
    /// Query parameters.
    pub query: Vec<QueryCond>,
    /// Method.
    pub method: Option<String>,
    /// Listener port.
    pub port: Option<u16>,
    /// Scheme (routes).
    pub scheme: Option<(String, String)>,
    /// gRPC service.
    pub service_name: Option<String>,
    /// gRPC method (routes).
    pub method_name: Option<String>,
}

/// A hostname condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostCond {
    /// The host, exactly.
    Exact(String),
    /// Hosts ending with this.
    Suffix(String),
}

/// What a gateway route rewrites.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rewrite {
    /// The prefix rewrite, with its path.
    pub prefix: PrefixRewrite,
    /// JSON path of `rewrite.prefix`, when given.
    pub prefix_at: Option<String>,
    /// The whole path, with its JSON path.
    pub path: Option<(String, String)>,
    /// Send the target virtual service's name as Host (App Mesh's default).
    pub host_to_target: bool,
    /// JSON path of `rewrite.hostname`, when given.
    pub host_at: Option<String>,
}

/// A gateway route's prefix rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum PrefixRewrite {
    /// The matched prefix becomes `/`.
    #[default]
    Default,
    /// The path is kept.
    Disabled,
    /// The matched prefix becomes this.
    Value(String),
}

/// Reads a virtual gateway's spec.
pub(crate) fn virtual_gateway(meta: Meta, spec: &Obj<'_>, cx: &mut Cx<'_>) -> R<VirtualGateway> {
    let mut listeners = Vec::new();
    let items = spec.arr("listeners")?;
    if items.is_empty() {
        return Err(Bad::new(
            spec.at("listeners"),
            "missing: a virtual gateway needs a listener",
        ));
    }
    for (at, v) in items {
        let l = object(v, &at)?;
        let pm = l.req_obj("portMapping")?;
        let port = req_port(&pm, "port")?;
        let protocol = proto(&pm, "protocol", &["http", "http2", "grpc"])?;
        cx.rest(&pm);
        if listeners.iter().any(|x: &GatewayListener| x.port == port) {
            return Err(Bad::new(
                pm.at("port"),
                format!("two listeners on port {port}"),
            ));
        }
        let tls = listener_tls(&l, cx)?;
        let health = health(&l, &["http", "http2", "grpc"], cx)?;
        let pool = pool(&l, &["http", "http2", "grpc"], cx)?;
        cx.rest(&l);
        listeners.push(GatewayListener {
            at,
            port,
            protocol,
            tls,
            health,
            pool,
        });
    }
    let client_tls = backend_defaults(spec, cx)?;
    let access_log = logging(spec, cx)?;
    cx.rest(spec);
    Ok(VirtualGateway {
        meta,
        listeners,
        client_tls,
        access_log,
    })
}

/// `logging.accessLog.file`.
pub(crate) fn logging(spec: &Obj<'_>, cx: &mut Cx<'_>) -> R<Option<AccessLog>> {
    let Some(lg) = spec.obj("logging")? else {
        return Ok(None);
    };
    let mut out = None;
    if let Some(al) = lg.obj("accessLog")? {
        if let Some(f) = al.obj("file")? {
            out = Some(AccessLog {
                at: f.at("path"),
                path: f.req_str("path")?.to_owned(),
                format_at: f.get("format").map(|_| f.at("format")),
            });
            cx.rest(&f);
        }
        cx.rest(&al);
    }
    cx.rest(&lg);
    Ok(out)
}

/// Reads a gateway route's spec.
pub(crate) fn gateway_route(meta: Meta, spec: &Obj<'_>, cx: &mut Cx<'_>) -> R<GatewayRoute> {
    let priority = spec.int("priority", 0, 1000)?.map(|p| p as u32);
    let key = spec.exactly_one(&["httpRoute", "http2Route", "grpcRoute"])?;
    let r = spec.req_obj(key)?;
    let proto = Proto::of_route_key(key);
    let mo = r.req_obj("match")?;
    let m = if proto == Proto::Grpc {
        grpc_match(&mo, cx)?
    } else {
        http_match(&mo, cx)?
    };
    let action = r.req_obj("action")?;
    let t = action.req_obj("target")?;
    let vs = t.req_obj("virtualService")?;
    let target = vs.req_str("virtualServiceName")?.to_owned();
    cx.rest(&vs);
    let target_port = port(&t, "port")?;
    cx.rest(&t);
    let rewrite = rewrite(&action, &m, cx)?;
    cx.rest(&action);
    cx.rest(&r);
    cx.rest(spec);
    Ok(GatewayRoute {
        meta,
        priority,
        proto,
        at: r.path.clone(),
        m,
        target,
        target_port,
        target_at: t.path.clone(),
        rewrite,
    })
}

fn http_match(mo: &Obj<'_>, cx: &mut Cx<'_>) -> R<Match> {
    let (prefix, path) = prefix_and_path(mo, cx)?;
    let hostname = hostname(mo, cx)?;
    if prefix.is_none() && path.is_none() && hostname.is_none() {
        return Err(Bad::new(
            mo.path.clone(),
            "App Mesh requires one of `prefix`, `path` or `hostname` in a gateway route's match",
        ));
    }
    let m = Match {
        at: mo.path.clone(),
        prefix,
        path,
        hostname,
        headers: headers(mo, "headers", cx)?,
        query: query(mo, cx)?,
        method: method(mo)?,
        port: port(mo, "port")?,
        ..Match::default()
    };
    cx.rest(mo);
    Ok(m)
}

fn grpc_match(mo: &Obj<'_>, cx: &mut Cx<'_>) -> R<Match> {
    let m = Match {
        at: mo.path.clone(),
        service_name: mo.str("serviceName")?.map(str::to_owned),
        hostname: hostname(mo, cx)?,
        headers: headers(mo, "metadata", cx)?,
        port: port(mo, "port")?,
        ..Match::default()
    };
    cx.rest(mo);
    Ok(m)
}

fn hostname(mo: &Obj<'_>, cx: &mut Cx<'_>) -> R<Option<HostCond>> {
    let Some(h) = mo.obj("hostname")? else {
        return Ok(None);
    };
    let which = h.exactly_one(&["exact", "suffix"])?;
    let v = h.req_str(which)?.to_owned();
    cx.rest(&h);
    Ok(Some(if which == "exact" {
        HostCond::Exact(v)
    } else {
        HostCond::Suffix(v)
    }))
}

fn rewrite(action: &Obj<'_>, m: &Match, cx: &mut Cx<'_>) -> R<Rewrite> {
    let mut out = Rewrite {
        host_to_target: true,
        ..Rewrite::default()
    };
    let Some(rw) = action.obj("rewrite")? else {
        return Ok(out);
    };
    if let Some(h) = rw.obj("hostname")? {
        out.host_at = Some(h.path.clone());
        out.host_to_target =
            h.one_of("defaultTargetHostname", &["ENABLED", "DISABLED"])? != Some("DISABLED");
        cx.rest(&h);
    }
    if let Some(p) = rw.obj("prefix")? {
        if m.prefix.is_none() {
            return Err(Bad::new(
                p.path.clone(),
                "a prefix rewrite needs a `prefix` match",
            ));
        }
        out.prefix_at = Some(p.path.clone());
        match p.exactly_one(&["defaultPrefix", "value"])? {
            "value" => {
                let v = p.req_str("value")?;
                if !v.starts_with('/') {
                    return Err(Bad::new(
                        p.at("value"),
                        format!("`{v}` must start with `/`"),
                    ));
                }
                out.prefix = PrefixRewrite::Value(v.to_owned());
            }
            _ => {
                if p.one_of("defaultPrefix", &["ENABLED", "DISABLED"])? == Some("DISABLED") {
                    out.prefix = PrefixRewrite::Disabled;
                }
            }
        }
        cx.rest(&p);
    }
    if let Some(p) = rw.obj("path")? {
        if m.path.is_none() {
            return Err(Bad::new(
                p.path.clone(),
                "a path rewrite needs a `path` match",
            ));
        }
        let e = p.req_str("exact")?;
        if !e.starts_with('/') {
            return Err(Bad::new(
                p.at("exact"),
                format!("`{e}` must start with `/`"),
            ));
        }
        out.path = Some((p.at("exact"), e.to_owned()));
        cx.rest(&p);
    }
    cx.rest(&rw);
    Ok(out)
}
