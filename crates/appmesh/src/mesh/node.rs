//! Virtual nodes: the backends, found by DNS or Cloud Map, with per-listener policies.

use crate::json::{Bad, Obj, R, object};
use crate::mesh::common::{
    Health, Pool, Proto, Timeout, health, listener_tls, opt_duration, pool, proto, timeout_pair,
};
use crate::mesh::{Cx, Meta, req_port};

/// A virtual node.
#[derive(Clone, Debug)]
pub(crate) struct VirtualNode {
    /// Who it is.
    pub meta: Meta,
    /// DNS discovery.
    pub dns: Option<Dns>,
    /// JSON path of `awsCloudMap`, when it uses Cloud Map.
    pub cloud_map: Option<String>,
    /// Its listeners.
    pub listeners: Vec<NodeListener>,
}

/// DNS service discovery.
#[derive(Clone, Debug)]
pub(crate) struct Dns {
    /// JSON path of `dns`.
    pub at: String,
    /// The name resolved.
    pub hostname: String,
    /// `LOADBALANCER` or `ENDPOINTS`, with its path, when given.
    pub response_type: Option<(String, String)>,
}

/// One listener of a virtual node.
#[derive(Clone, Debug)]
pub(crate) struct NodeListener {
    /// JSON path of the listener.
    pub at: String,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Proto,
    /// Active health check.
    pub health: Option<Health>,
    /// Outlier detection.
    pub outlier: Option<Outlier>,
    /// Connection pool.
    pub pool: Option<Pool>,
    /// Timeouts, with the JSON path of the protocol's object.
    pub timeout: Option<(String, Timeout)>,
}

/// Outlier detection of a node's listener.
#[derive(Clone, Debug)]
pub(crate) struct Outlier {
    /// JSON path.
    pub at: String,
    /// Server errors in a row that eject.
    pub max_server_errors: u32,
    /// JSON path of `interval`.
    pub interval_at: String,
    /// First ejection's length.
    pub base_ejection: portico_model::Duration,
    /// Largest share ejected, in percent.
    pub max_ejection_percent: u8,
}

/// Reads a virtual node's spec.
pub(crate) fn virtual_node(meta: Meta, spec: &Obj<'_>, cx: &mut Cx<'_>) -> R<VirtualNode> {
    let mut dns = None;
    let mut cloud_map = None;
    if let Some(sd) = spec.obj("serviceDiscovery")? {
        match sd.exactly_one(&["dns", "awsCloudMap"])? {
            "dns" => {
                let d = sd.req_obj("dns")?;
                let hostname = d.req_str("hostname")?.to_owned();
                let response_type = d
                    .one_of("responseType", &["LOADBALANCER", "ENDPOINTS"])?
                    .map(|r| (d.at("responseType"), r.to_owned()));
                if let Some(ip) = d.str("ipPreference")? {
                    cx.changed(
                        d.at("ipPreference"),
                        format!("ipPreference {ip}: Portico connects to every address the name resolves to, IPv4 and IPv6 alike"),
                    );
                }
                cx.rest(&d);
                dns = Some(Dns {
                    at: d.path.clone(),
                    hostname,
                    response_type,
                });
            }
            _ => {
                // Read as a whole: nothing of it can be carried (reported by the service).
                let _ = sd.req_obj("awsCloudMap")?;
                cloud_map = Some(sd.at("awsCloudMap"));
            }
        }
        cx.rest(&sd);
    }
    let mut listeners = Vec::new();
    for (at, v) in spec.arr("listeners")? {
        let l = object(v, &at)?;
        let pm = l.req_obj("portMapping")?;
        let port = req_port(&pm, "port")?;
        let protocol = proto(&pm, "protocol", &["http", "http2", "grpc", "tcp"])?;
        cx.rest(&pm);
        if listeners.iter().any(|x: &NodeListener| x.port == port) {
            return Err(Bad::new(
                pm.at("port"),
                format!("two listeners on port {port}"),
            ));
        }
        let health = health(&l, &["http", "http2", "grpc", "tcp"], cx)?;
        let outlier = match l.obj("outlierDetection")? {
            None => None,
            Some(o) => Some(outlier(&o, cx)?),
        };
        let pool = pool(&l, &["http", "http2", "grpc", "tcp"], cx)?;
        let timeout = match l.obj("timeout")? {
            None => None,
            Some(t) => {
                let which = t.exactly_one(&["http", "http2", "grpc", "tcp"])?;
                let inner = t.req_obj(which)?;
                let pair = timeout_pair(&inner, cx)?;
                cx.rest(&t);
                Some((inner.path.clone(), pair))
            }
        };
        if let Some(tls) = listener_tls(&l, cx)? {
            cx.not_carried(
                tls.at,
                "the node's own TLS (what its proxy serves) is the backend's concern: Portico speaks TLS to it when the virtual gateway's backendDefaults.clientPolicy.tls says so",
            );
        }
        cx.rest(&l);
        listeners.push(NodeListener {
            at,
            port,
            protocol,
            health,
            outlier,
            pool,
            timeout,
        });
    }
    for key in ["backends", "backendDefaults"] {
        if spec.get(key).is_some_and(|v| !is_empty(v)) {
            cx.not_carried(
                spec.at(key),
                "the node's own outbound calls (to its backends) do not pass through a Portico gateway: nothing to carry",
            );
        }
    }
    if spec.get("logging").is_some_and(|v| !is_empty(v)) {
        cx.not_carried(
            spec.at("logging"),
            "the node's own proxy's access log: Portico logs requests at the gateway (node.access_log)",
        );
    }
    cx.rest(spec);
    Ok(VirtualNode {
        meta,
        dns,
        cloud_map,
        listeners,
    })
}

fn outlier(o: &Obj<'_>, cx: &mut Cx<'_>) -> R<Outlier> {
    let max_server_errors = o.req_int("maxServerErrors", 1, i64::from(u32::MAX))? as u32;
    let max_ejection_percent = o.req_int("maxEjectionPercent", 0, 100)? as u8;
    let base_ejection = opt_duration(o, "baseEjectionDuration", cx)?.ok_or_else(|| {
        Bad::new(
            o.at("baseEjectionDuration"),
            "missing: App Mesh requires this field",
        )
    })?;
    if opt_duration(o, "interval", cx)?.is_none() {
        return Err(Bad::new(
            o.at("interval"),
            "missing: App Mesh requires this field",
        ));
    }
    cx.rest(o);
    Ok(Outlier {
        at: o.path.clone(),
        max_server_errors,
        interval_at: o.at("interval"),
        base_ejection,
        max_ejection_percent,
    })
}

/// `[]` or `{}`: nothing configured.
fn is_empty(v: &serde_json::Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(|o| o.is_empty())
}
