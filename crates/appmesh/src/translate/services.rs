//! Virtual nodes to Portico services: one service per HTTP, HTTP/2 or gRPC listener of a
//! node found by DNS, with the listener's health check, outlier detection, connection pool
//! and timeouts. What a route or a gateway adds (the Host to send, retries, TLS to the node)
//! is a setting of the service, so routes that need different ones get copies of it.

use std::collections::{BTreeMap, HashMap};

use portico_model::{
    ConnectionPool, HealthCheck, HealthProtocol, OutlierDetection, Retries, Service, StatusRange,
    UpstreamProtocol, UpstreamTls, validate::check_host,
};
use serde::Serialize;

use crate::mesh::Cx;
use crate::mesh::common::Proto;
use crate::mesh::node::{NodeListener, VirtualNode};
use crate::report::Item;
use crate::translate::names::{Names, hash8};

/// What routes add to a node's service.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Overrides {
    /// Host sent upstream (the virtual service's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Retries of the router route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// TLS from the virtual gateway's client policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// A node's service for one listener, before routes add to it.
#[derive(Clone, Debug)]
pub(crate) struct Base {
    /// The service.
    pub service: Service,
    /// The listener's port.
    pub port: u16,
}

/// A service as a route uses it: a base and what the route adds.
pub(crate) type UseKey = (usize, String);

/// What a use adds, and how many routes make it.
type Use = (Overrides, usize);

/// Every node's services, and what routes ask of them.
#[derive(Debug, Default)]
pub(crate) struct Services {
    bases: Vec<Base>,
    by_node: HashMap<(String, String), Result<Vec<usize>, String>>,
    uses: BTreeMap<UseKey, Use>,
}

impl Services {
    /// A service per listener of each node; what cannot be carried is reported.
    pub fn build(
        nodes: &[VirtualNode],
        multi_mesh: bool,
        names: &mut Names,
        notes: &mut Vec<Item>,
    ) -> Self {
        let mut out = Self::default();
        // A node name in two meshes gets its mesh in front.
        let mut count: HashMap<&str, usize> = HashMap::new();
        for n in nodes {
            *count.entry(n.meta.name.as_str()).or_default() += 1;
        }
        for n in nodes {
            let mut cx = Cx {
                file: n.meta.file.clone(),
                object: n.meta.label(multi_mesh),
                notes,
            };
            let wanted = if count[n.meta.name.as_str()] > 1 {
                format!("{}.{}", n.meta.mesh, n.meta.name)
            } else {
                n.meta.name.clone()
            };
            let made = out.node(n, &wanted, names, &mut cx);
            out.by_node
                .insert((n.meta.mesh.clone(), n.meta.name.clone()), made);
        }
        out
    }

    fn node(
        &mut self,
        n: &VirtualNode,
        wanted: &str,
        names: &mut Names,
        cx: &mut Cx<'_>,
    ) -> Result<Vec<usize>, String> {
        let meta = &n.meta;
        if let Some(at) = &n.cloud_map {
            let why = "Cloud Map discovery is AWS-only: list the endpoints' addresses (a Portico service with `endpoints`); no service was made, and routes to this node are not carried".to_owned();
            cx.not_carried(at.clone(), why.clone());
            return Err(format!("virtual node {} uses Cloud Map", meta.name));
        }
        let Some(dns) = &n.dns else {
            cx.not_carried(
                meta.path(".spec"),
                "no service discovery: nothing to send requests to, so no service was made",
            );
            return Err(format!(
                "virtual node {} has no service discovery",
                meta.name
            ));
        };
        if let Err(m) = check_host(&dns.hostname, false) {
            cx.not_carried(
                format!("{}.hostname", dns.at),
                format!("{m}: no service was made"),
            );
            return Err(format!(
                "virtual node {}'s hostname is not one Portico can resolve",
                meta.name
            ));
        }
        match &dns.response_type {
            Some((at, t)) if t == "LOADBALANCER" => cx.changed(
                at.clone(),
                "LOADBALANCER: Envoy connects to one address of the name at a time; Portico resolves every address of it, balances across them and resolves again every 30 s (dns_refresh)",
            ),
            Some((at, _)) => cx.carried(
                at.clone(),
                "ENDPOINTS: Portico resolves every address of the name and balances across them, resolving again every 30 s (dns_refresh)",
            ),
            None => {}
        }
        let web: Vec<&NodeListener> = n
            .listeners
            .iter()
            .filter(|l| l.protocol != Proto::Tcp)
            .collect();
        for l in n.listeners.iter().filter(|l| l.protocol == Proto::Tcp) {
            cx.not_carried(
                format!("{}.portMapping", l.at),
                format!(
                    "tcp listener on port {}: Portico services speak HTTP/1.1, HTTP/2 or gRPC; no service was made for it",
                    l.port
                ),
            );
        }
        if web.is_empty() {
            if n.listeners.is_empty() {
                cx.not_carried(
                    meta.path(".spec"),
                    "no listeners: nothing can route to it, so no service was made",
                );
            }
            return Err(format!(
                "virtual node {} has no HTTP, HTTP/2 or gRPC listener",
                meta.name
            ));
        }
        let mut ids = Vec::new();
        for l in &web {
            let base_name = if web.len() == 1 {
                wanted.to_owned()
            } else {
                format!("{wanted}.{}", l.port)
            };
            let named = names.take(&base_name);
            let at = meta.path(&format!(".{}", meta.kind.name_field()));
            if let Some(why) = named.why {
                cx.changed(at, why);
            } else if wanted != meta.name {
                cx.changed(
                    at,
                    format!(
                        "service named `{}`: another mesh has a virtual node {} too",
                        named.name, meta.name
                    ),
                );
            }
            let service = listener_service(&named.name, &dns.hostname, l, cx);
            cx.carried(
                l.at.clone(),
                format!(
                    "listener {} ({}) -> service `{}`, endpoint {}:{}",
                    l.port,
                    l.protocol.word(),
                    named.name,
                    dns.hostname,
                    l.port
                ),
            );
            ids.push(self.bases.len());
            self.bases.push(Base {
                service,
                port: l.port,
            });
        }
        Ok(ids)
    }

    /// The base service a route target reaches: node `node` of `mesh`, on `port` (its only
    /// listener when none), or why there is none.
    pub fn resolve(&self, mesh: &str, node: &str, port: Option<u16>) -> Result<usize, String> {
        let ids = self
            .by_node
            .get(&(mesh.to_owned(), node.to_owned()))
            .ok_or_else(|| format!("virtual node {node} is not in the input"))?
            .as_ref()
            .map_err(Clone::clone)?;
        match port {
            Some(p) => ids
                .iter()
                .copied()
                .find(|i| self.bases[*i].port == p)
                .ok_or_else(|| {
                    format!("virtual node {node} has no HTTP, HTTP/2 or gRPC listener on port {p}")
                }),
            None if ids.len() == 1 => Ok(ids[0]),
            None => Err(format!(
                "virtual node {node} has several listeners and the target names no port"
            )),
        }
    }

    /// The base service `id`.
    pub fn base(&self, id: usize) -> &Base {
        &self.bases[id]
    }

    /// Records that a route uses base `id` with `o`; the key names the service later.
    pub fn use_with(&mut self, id: usize, o: Overrides) -> UseKey {
        // Serialising plain structs cannot fail.
        let key = (id, serde_json::to_string(&o).unwrap_or_default());
        self.uses.entry(key.clone()).or_insert((o, 0)).1 += 1;
        key
    }

    /// Every service, and the name of each use. A base keeps its name for the settings
    /// most routes use (no additions when no route uses it); other settings get copies
    /// named `<base>.<hash of the settings>`.
    pub fn finish(self, names: &mut Names) -> (Vec<Service>, HashMap<UseKey, String>) {
        let mut by_base: BTreeMap<usize, Vec<(&UseKey, &Use)>> = BTreeMap::new();
        for (k, v) in &self.uses {
            by_base.entry(k.0).or_default().push((k, v));
        }
        let mut services = Vec::new();
        let mut named = HashMap::new();
        for (id, base) in self.bases.iter().enumerate() {
            let mut uses = by_base.remove(&id).unwrap_or_default();
            // Most used first; the settings' text breaks ties.
            uses.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.1.cmp(&b.0.1)));
            if uses.is_empty() {
                services.push(base.service.clone());
                continue;
            }
            for (i, (key, (o, _))) in uses.iter().enumerate() {
                let mut s = base.service.clone();
                if i > 0 {
                    s.name = names
                        .take(&format!("{}.{}", base.service.name, hash8(&key.1)))
                        .name;
                }
                apply(&mut s, o);
                named.insert((*key).clone(), s.name.clone());
                services.push(s);
            }
        }
        (services, named)
    }
}

/// Sets what routes add on a service.
fn apply(s: &mut Service, o: &Overrides) {
    if o.hostname.is_some() {
        s.hostname = o.hostname.clone();
    }
    if let Some(r) = &o.retries {
        s.retries = r.clone();
    }
    if o.tls.is_some() {
        s.tls = o.tls.clone();
    }
}

fn listener_service(name: &str, host: &str, l: &NodeListener, cx: &mut Cx<'_>) -> Service {
    let mut s = Service::new(name, [format!("{host}:{}", l.port)]);
    s.protocol = match l.protocol {
        Proto::Http2 => UpstreamProtocol::Http2,
        Proto::Grpc => UpstreamProtocol::Grpc,
        _ => UpstreamProtocol::Http1,
    };
    if let Some(h) = &l.health {
        let protocol = match h.protocol {
            Proto::Http => HealthProtocol::Http,
            Proto::Http2 => HealthProtocol::Http2,
            Proto::Grpc => HealthProtocol::Grpc,
            Proto::Tcp => HealthProtocol::Tcp,
        };
        let http = matches!(protocol, HealthProtocol::Http | HealthProtocol::Http2);
        let path = if http { h.path.clone() } else { None };
        if http && path.as_deref().is_some_and(|p| !p.starts_with('/')) {
            cx.not_carried(
                format!("{}.path", h.at),
                "the path does not start with `/`: Portico probes `/`",
            );
        }
        s.health_check = Some(HealthCheck {
            protocol,
            path: path.filter(|p| p.starts_with('/')),
            port: h.port,
            interval: portico_model::Duration::from_millis(h.interval_ms),
            timeout: portico_model::Duration::from_millis(h.timeout_ms),
            healthy_threshold: h.healthy,
            unhealthy_threshold: h.unhealthy,
            // Envoy's HTTP checks pass on 200 only.
            expected_statuses: if http {
                vec![StatusRange { from: 200, to: 200 }]
            } else {
                portico_model::defaults::expected_statuses()
            },
            grpc_service: None,
            host: None,
            when_all_unhealthy: Default::default(),
        });
        let mut msg = format!(
            "health check -> health_check: {} every {} ms, timeout {} ms, {} passes in, {} failures out; HTTP checks pass on 200 only, as Envoy's",
            protocol_word(protocol),
            h.interval_ms,
            h.timeout_ms,
            h.healthy,
            h.unhealthy
        );
        if !http && h.path.is_some() {
            msg.push_str("; the path is ignored for this protocol, as App Mesh does");
        }
        cx.carried(h.at.clone(), msg);
    }
    if let Some(o) = &l.outlier {
        if o.base_ejection.get().is_zero() {
            cx.not_carried(
                o.at.clone(),
                "baseEjectionDuration 0 ejects nothing: outlier detection left at Portico's defaults",
            );
        } else {
            let base = o.base_ejection;
            s.outlier_detection = OutlierDetection {
                consecutive_failures: o.max_server_errors,
                failure_statuses: (500..=599).collect(),
                base_ejection_time: base,
                max_ejection_time: base.max(portico_model::defaults::max_ejection_time()),
                max_ejection_percent: o.max_ejection_percent,
            };
            cx.carried(
                o.at.clone(),
                format!(
                    "outlier detection -> outlier_detection: {} server errors (5xx, connect failures) in a row eject for {base}, longer each time, at most {}% of endpoints",
                    o.max_server_errors, o.max_ejection_percent
                ),
            );
            cx.changed(
                o.interval_at.clone(),
                "Portico counts failures in a row as they come instead of checking every interval: an endpoint is ejected at the failure that reaches maxServerErrors",
            );
        }
    }
    if let Some(p) = &l.pool {
        pool(&mut s, p, cx);
    }
    if let Some((_, t)) = &l.timeout {
        if let Some((at, d)) = &t.per_request {
            if d.get().is_zero() {
                cx.changed(
                    at.clone(),
                    "0 turns App Mesh's request timeout off; Portico always has one: request_timeout stays at its default, 60 s",
                );
            } else {
                s.request_timeout = *d;
                cx.carried(at.clone(), format!("perRequest -> request_timeout {d}"));
            }
        }
        if let Some((at, d)) = &t.idle {
            s.body_idle_timeout = *d;
            cx.changed(
                at.clone(),
                format!(
                    "idle -> body_idle_timeout {d}: the longest pause in a response body from the node (a request body's pauses are bounded by the gateway listener's request_body_idle_timeout)"
                ),
            );
        }
    }
    s
}

fn pool(s: &mut Service, p: &crate::mesh::common::Pool, cx: &mut Cx<'_>) {
    if p.kind == "tcp" {
        cx.not_carried(
            p.at.clone(),
            "a tcp connection pool: Portico services speak HTTP; nothing to limit",
        );
        return;
    }
    if p.max_connections.is_some() && s.protocol.is_http2() {
        cx.not_carried(
            p.at.clone(),
            "an http (HTTP/1.1) pool on an HTTP/2 or gRPC listener: Portico limits HTTP/2 services by max_requests; not carried",
        );
        return;
    }
    s.connection_pool = ConnectionPool {
        max_connections: p.max_connections,
        max_pending_requests: p.max_pending,
        max_requests: p.max_requests,
    };
    let mut msg = "connection pool -> connection_pool; App Mesh limits what the node's own proxy accepts from every caller together, Portico limits what each gateway node sends".to_owned();
    if p.kind == "http" && p.max_pending.is_none() {
        msg.push_str(
            "; without maxPendingRequests App Mesh queues requests over maxConnections, Portico answers them 503 at once (set max_pending_requests to queue)",
        );
    }
    cx.changed(p.at.clone(), msg);
}

fn protocol_word(p: HealthProtocol) -> &'static str {
    match p {
        HealthProtocol::Http => "http",
        HealthProtocol::Http2 => "http2",
        HealthProtocol::Grpc => "grpc",
        HealthProtocol::Tcp => "tcp",
    }
}
