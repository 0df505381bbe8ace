//! The second compile step: a validated Snapshot becomes a [`Runtime`]: per listener a route
//! table, compiled actions, resolved services and metric handles. Built completely before
//! it is swapped in; a Snapshot that fails here is refused and the old runtime keeps serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use portico_model::{ListenerProtocol, PathMatch, PrefixRewrite, Snapshot, defaults};

use crate::Error;
use crate::access_log::AccessLog;
use crate::headers::Edits;
use crate::metrics::{ListenerStats, Metrics, RouteStats};
use crate::router::Router;
use crate::upstream::{Service, StateRegistry};

/// Everything a gateway serves, compiled.
#[derive(Debug)]
pub struct Runtime {
    /// Short content hash of the Snapshot.
    pub version: Arc<str>,
    /// Listeners with their route tables.
    pub listeners: Vec<CompiledListener>,
}

/// A listener: what to bind, and what to serve on it.
#[derive(Debug)]
pub struct CompiledListener {
    /// Socket settings.
    pub spec: ListenerSpec,
    /// Routes and settings requests on it use.
    pub runtime: Arc<ListenerRuntime>,
}

/// How a listener's socket and connections are set up.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    /// Name.
    pub name: Arc<str>,
    /// Address to bind.
    pub addr: SocketAddr,
    /// Client protocol.
    pub protocol: ListenerProtocol,
    /// Idle timeout of client connections.
    pub idle_timeout: Duration,
    /// Largest request header block.
    pub max_header_bytes: u64,
}

/// What a request on a listener is served with.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// Listener name.
    pub name: Arc<str>,
    /// Client protocol.
    pub protocol: ListenerProtocol,
    /// Route table.
    pub router: Router,
    /// Routes by router id (a removed route's slot keeps it until the slot is reused; the
    /// router no longer names it).
    pub routes: Vec<Arc<Route>>,
    /// Router ids by route name, and the ids free for reuse.
    pub ids: Arc<RouteIds>,
    /// The services the routes forward to, by name (shared by every listener).
    pub services: Arc<HashMap<String, Arc<Service>>>,
    /// The hosted apps the routes serve, by (slug, version) (shared).
    pub apps: Arc<HashMap<(String, u32), Arc<crate::apps::AppRuntime>>>,
    /// The listener's request body timeouts: idle, and total when limited.
    pub body_timeouts: (Duration, Option<Duration>),
    /// Largest request body, when limited.
    pub max_body: Option<u64>,
    /// Largest request header block.
    pub max_header: u64,
    /// Idle timeout of client connections.
    pub idle_timeout: Duration,
    /// Metrics of requests no route took.
    pub unrouted: Arc<RouteStats>,
    /// Connection metrics.
    pub stats: ListenerStats,
    /// Access log, when on.
    pub access_log: Option<Arc<AccessLog>>,
    /// Snapshot version.
    pub version: Arc<str>,
    /// Key material for routes with a policy.
    pub security: Arc<crate::auth::SecurityRuntime>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<portico_model::Cidr>,
    /// HTTPS, when the listener has certificates.
    pub tls: Option<crate::tls::TlsRuntime>,
    /// Open HTTP-01 challenges: token -> key authorization.
    pub acme_http01: Arc<HashMap<String, Bytes>>,
    /// The developer portal's Try Out rule, for routes with `try_out`, when the Snapshot
    /// names the portal's origin.
    pub portal: Option<Arc<crate::cors::CorsPolicy>>,
    /// Which requests' traces are recorded (the `sampled` flag upstream).
    pub sampler: crate::trace::Sampler,
    /// Where recorded spans go, when export is on.
    pub tracer: Option<Arc<portico_otlp::Exporter>>,
}

/// Router ids of a listener's routes by name, and ids free for reuse.
#[derive(Debug, Default, Clone)]
pub struct RouteIds {
    /// Id by route name.
    pub by_name: HashMap<Arc<str>, u32>,
    /// Ids of removed routes.
    pub free: Vec<u32>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name.
    pub name: Arc<str>,
    /// What it does.
    pub action: Action,
    /// Edits to the upstream request.
    pub request_headers: Edits,
    /// Edits to the client response.
    pub response_headers: Edits,
    /// Largest request body, when limited (route, else listener).
    pub max_body: Option<u64>,
    /// Largest request header block (route, else listener).
    pub max_header: u64,
    /// Longest pause in a request body (the listener's), when limited.
    pub body_idle: Option<Duration>,
    /// Longest a whole request body may take (the listener's), when limited.
    pub body_total: Option<Duration>,
    /// Request timeout override.
    pub timeout: Option<Duration>,
    /// Length of the matched prefix (prefix and path_prefix matches).
    pub prefix_len: Option<usize>,
    /// Metrics for redirects and fixed responses.
    pub stats: Arc<RouteStats>,
    /// Who may call, when the route checks.
    pub auth: Option<crate::auth::Auth>,
    /// Where callers with sandbox credentials go (hybrid gateways).
    pub sandbox: Option<Forward>,
    /// Client addresses allowed or denied.
    pub ip: Option<crate::ip::IpRules>,
    /// Throttling tiers.
    pub throttle: Option<crate::auth::RouteThrottle>,
    /// Cross-origin policy.
    pub cors: Option<crate::cors::CorsPolicy>,
    /// The developer portal's Try Out may call it (the listener's `portal` rule applies).
    pub try_out: bool,
    /// Protocols a client may switch to (lower case; `websocket` by default).
    pub upgrades: Box<[Box<str>]>,
}

/// A route's action.
#[derive(Debug)]
pub enum Action {
    /// Forward upstream.
    Forward(Forward),
    /// Redirect.
    Redirect(Redirect),
    /// Fixed response.
    Fixed(Fixed),
    /// A hosted app's files.
    App(Arc<crate::apps::AppRuntime>),
}

/// Forward to weighted targets.
#[derive(Debug)]
pub struct Forward {
    /// Targets with cumulative weights.
    pub targets: Vec<Target>,
    /// Sum of weights.
    pub total: u32,
    /// Path rewrite.
    pub path: PathRewrite,
    /// Host rewrite.
    pub host: HostRewrite,
}

/// A weighted target.
#[derive(Debug)]
pub struct Target {
    /// The service.
    pub service: Arc<Service>,
    /// Running sum of weights up to and including this target.
    pub cumulative: u32,
    /// Metrics of this route and service.
    pub stats: Arc<RouteStats>,
}

/// What happens to the path of a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// Unchanged.
    Keep,
    /// The matched prefix is replaced by this.
    Prefix(String),
    /// The whole path is replaced by this.
    Full(String),
}

/// What Host the upstream receives.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// The client's.
    Keep,
    /// The target service's hostname (or the endpoint's `host:port`).
    Target,
    /// This value.
    Value(HeaderValue),
}

/// A compiled redirect.
#[derive(Debug)]
pub struct Redirect {
    /// Scheme, when changed.
    pub scheme: Option<String>,
    /// Host, when changed.
    pub host: Option<String>,
    /// Port, when changed.
    pub port: Option<u16>,
    /// Path rewrite.
    pub path: PathRewrite,
    /// Status.
    pub status: StatusCode,
}

/// A compiled fixed response.
#[derive(Debug)]
pub struct Fixed {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
}

/// What compiling needs besides the Snapshot.
#[derive(Debug, Clone)]
pub struct Context {
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// State kept across Snapshots.
    pub registry: Arc<StateRegistry>,
    /// Access log sink, when on.
    pub access_log: Option<Arc<AccessLog>>,
    /// Rate limiters, kept across Snapshots.
    pub limiters: Arc<crate::throttle::Limiters>,
    /// OCSP staples, kept across Snapshots.
    pub stapler: Arc<crate::ocsp::Stapler>,
    /// Where hosted apps' files are, on nodes that serve apps.
    pub app_files: Option<Arc<crate::apps::AppFiles>>,
    /// Limits shared through Redis, when the node is set up for it.
    pub shared: Option<Arc<crate::throttle::SharedLimits>>,
    /// Which requests' traces are recorded.
    pub sampler: crate::trace::Sampler,
    /// Where recorded spans go, when export is on.
    pub tracer: Option<Arc<portico_otlp::Exporter>>,
}

impl Runtime {
    /// Validates and compiles `snapshot`, labelled `version` in logs and metrics; resolves
    /// services' DNS names.
    pub async fn compile(snapshot: &Snapshot, version: &str, cx: &Context) -> Result<Self, Error> {
        snapshot.validate()?;
        let version: Arc<str> = version.into();
        let mut services = HashMap::new();
        for s in &snapshot.services {
            let tls = s
                .tls
                .as_ref()
                .map(|t| {
                    crate::upstream::tls::TlsClient::compile(t, s.hostname.as_deref(), s.protocol)
                        .map(Arc::new)
                })
                .transpose()
                .map_err(|e| Error::Route(format!("service `{}`: TLS: {e}", s.name)))?;
            services.insert(
                s.name.clone(),
                Service::compile(s, tls, &cx.registry, &cx.metrics).await,
            );
        }
        let security = Arc::new(crate::auth::SecurityRuntime::compile_with(
            &snapshot.security,
            &cx.limiters,
            cx.shared.clone(),
        ));
        let alpn_challenges = crate::tls::alpn_challenges(&snapshot.acme).map_err(Error::Route)?;
        let http01: Arc<HashMap<String, Bytes>> = Arc::new(
            snapshot
                .acme
                .challenges
                .iter()
                .filter(|c| c.kind == portico_model::ChallengeKind::Http01)
                .map(|c| (c.token.clone(), Bytes::from(c.key_authorization.clone())))
                .collect(),
        );
        // The gateway's sampling from the control plane, else the node's own.
        let sampler = snapshot.sampling.as_ref().map_or(cx.sampler, |t| {
            crate::trace::Sampler::named(&t.sampler, t.ratio)
        });
        let portal = snapshot
            .portal
            .as_ref()
            .map(|p| crate::cors::CorsPolicy::portal(&p.origin).map(Arc::new))
            .transpose()
            .map_err(|e| Error::Route(format!("portal.origin: {e}")))?;
        let mut apps: HashMap<(String, u32), Arc<crate::apps::AppRuntime>> = HashMap::new();
        if !snapshot.apps.is_empty() {
            let store = cx.app_files.as_ref().ok_or_else(|| {
                Error::Route("this gateway serves no apps (no app file store)".into())
            })?;
            for b in &snapshot.apps {
                let app = crate::apps::AppRuntime::compile(b, store).map_err(Error::Route)?;
                apps.insert((b.slug.clone(), b.version), Arc::new(app));
            }
        }
        let services = Arc::new(services);
        let apps = Arc::new(apps);
        let mut listeners = Vec::new();
        for l in &snapshot.listeners {
            let name: Arc<str> = l.effective_name().into();
            let max_header = l
                .limits
                .max_request_header_bytes
                .unwrap_or(defaults::MAX_REQUEST_HEADER_BYTES)
                .get();
            let max_body = l.limits.max_request_body_bytes.map(|b| b.get());
            let mut routes = Vec::new();
            let mut matches = Vec::new();
            let mut ids = RouteIds::default();
            let body_timeouts = (
                l.request_body_idle_timeout.get(),
                l.request_body_timeout.map(|t| t.get()),
            );
            for (i, r) in snapshot.routes.iter().enumerate() {
                if !r.listeners.is_empty() && !r.listeners.iter().any(|n| **n == *name) {
                    continue;
                }
                let id = routes.len() as u32;
                let route = compile_route(
                    r,
                    i,
                    &name,
                    (max_header, max_body),
                    body_timeouts,
                    &services,
                    &apps,
                    &security,
                    cx,
                )?;
                ids.by_name.insert(route.name.clone(), id);
                routes.push(Arc::new(route));
                matches.push((id, r.priority, &r.matches));
            }
            let router = Router::build(matches)?;
            let tls = l
                .tls
                .as_ref()
                .map(|t| {
                    crate::tls::TlsRuntime::compile(t, l.protocol, &alpn_challenges, &cx.stapler)
                })
                .transpose()
                .map_err(|e| Error::Route(format!("listener `{name}`: TLS: {e}")))?;
            let spec = ListenerSpec {
                name: name.clone(),
                addr: SocketAddr::new(l.address, l.port),
                protocol: l.protocol,
                idle_timeout: l.idle_timeout.get(),
                max_header_bytes: max_header,
            };
            let empty: Arc<str> = "".into();
            let runtime = Arc::new(ListenerRuntime {
                unrouted: Arc::new(cx.metrics.route(&name, &"none".into(), &empty)),
                stats: cx.metrics.listener(&name),
                name,
                protocol: l.protocol,
                router,
                routes,
                ids: Arc::new(ids),
                services: services.clone(),
                apps: apps.clone(),
                body_timeouts,
                max_body,
                max_header,
                idle_timeout: l.idle_timeout.get(),
                access_log: cx.access_log.clone(),
                version: version.clone(),
                security: security.clone(),
                trusted_proxies: crate::ip::networks(&l.trusted_proxies),
                tls,
                acme_http01: http01.clone(),
                portal: portal.clone(),
                sampler,
                tracer: cx.tracer.clone(),
            });
            listeners.push(CompiledListener { spec, runtime });
        }
        let stapled: Vec<u64> = listeners
            .iter()
            .filter_map(|l: &CompiledListener| l.runtime.tls.as_ref())
            .flat_map(|t| t.stapled.iter().copied())
            .collect();
        cx.stapler.retain(&stapled);
        cx.registry.prune();
        cx.limiters.retain(&snapshot.security.tiers);
        Ok(Self { version, listeners })
    }
}

impl Runtime {
    /// The runtime after a change that touched only routes, API keys or consumers
    /// (`touched`), built from `prev` (the listeners serving now, by name): unchanged
    /// routes, services, apps, TLS and metric handles are shared, changed routes compiled,
    /// and only the route tables of the hosts they were or are on rebuilt; the key
    /// material is compiled again when keys or consumers changed. The changed entities
    /// are validated as a snapshot of their own, with the listeners, services, tiers and
    /// apps they name. `None` when the change needs a whole compile.
    pub fn update(
        prev: &HashMap<Arc<str>, Arc<ListenerRuntime>>,
        snapshot: &Snapshot,
        touched: &portico_model::delta::Touched,
        version: &str,
        cx: &Context,
    ) -> Result<Option<Self>, Error> {
        if touched.other || prev.len() != snapshot.listeners.len() || prev.is_empty() {
            return Ok(None);
        }
        let position: HashMap<&str, usize> = if touched.routes.is_empty() {
            HashMap::new()
        } else {
            snapshot
                .routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Some((r.name.as_deref()?, i)))
                .collect()
        };
        let mini = Snapshot {
            schema: snapshot.schema,
            listeners: snapshot.listeners.clone(),
            services: snapshot.services.clone(),
            routes: touched
                .routes
                .iter()
                .filter_map(|n| {
                    position
                        .get(n.as_str())
                        .map(|&i| snapshot.routes[i].clone())
                })
                .collect(),
            security: portico_model::Security {
                gateway_type: snapshot.security.gateway_type,
                api_keys: touched.put_keys.clone().into(),
                jwt: snapshot.security.jwt.clone(),
                tiers: snapshot.security.tiers.clone(),
                consumers: touched.put_consumers.clone().into(),
            },
            acme: Default::default(),
            apps: snapshot.apps.clone(),
            portal: snapshot.portal.clone(),
            sampling: snapshot.sampling.clone(),
        };
        mini.validate()?;
        let version: Arc<str> = version.into();
        let first = prev.values().next().map(|l| l.security.clone());
        let security = match first {
            Some(s) if !touched.security => s,
            _ => Arc::new(crate::auth::SecurityRuntime::compile_with(
                &snapshot.security,
                &cx.limiters,
                cx.shared.clone(),
            )),
        };
        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        for l in &snapshot.listeners {
            let name: Arc<str> = l.effective_name().into();
            let Some(lr) = prev.get(&name) else {
                return Ok(None);
            };
            let mut routes = lr.routes.clone();
            let mut ids = (*lr.ids).clone();
            let mut changes: Vec<crate::router::RouteChange<'_>> = Vec::new();
            for n in &touched.routes {
                let here = position
                    .get(n.as_str())
                    .map(|&i| (i, &snapshot.routes[i]))
                    .filter(|(_, r)| {
                        r.listeners.is_empty() || r.listeners.iter().any(|x| **x == *name)
                    });
                match here {
                    Some((i, r)) => {
                        let route = compile_route(
                            r,
                            i,
                            &name,
                            (lr.max_header, lr.max_body),
                            lr.body_timeouts,
                            &lr.services,
                            &lr.apps,
                            &security,
                            cx,
                        )?;
                        let id = match ids.by_name.get(n.as_str()) {
                            Some(&id) => id,
                            None => ids.free.pop().unwrap_or(routes.len() as u32),
                        };
                        ids.by_name.insert(route.name.clone(), id);
                        let route = Arc::new(route);
                        match routes.get_mut(id as usize) {
                            Some(slot) => *slot = route,
                            None => routes.push(route),
                        }
                        changes.push((id, Some((r.priority, &r.matches))));
                    }
                    None => {
                        if let Some(id) = ids.by_name.remove(n.as_str()) {
                            ids.free.push(id);
                            changes.push((id, None));
                        }
                    }
                }
            }
            let router = if changes.is_empty() {
                lr.router.clone()
            } else {
                let order = |id: u32| {
                    routes
                        .get(id as usize)
                        .and_then(|r| position.get(&*r.name))
                        .map_or(u32::MAX, |&i| i as u32)
                };
                lr.router.update(&changes, &order)?
            };
            let runtime = Arc::new(ListenerRuntime {
                name: lr.name.clone(),
                protocol: lr.protocol,
                router,
                routes,
                ids: Arc::new(ids),
                services: lr.services.clone(),
                apps: lr.apps.clone(),
                body_timeouts: lr.body_timeouts,
                max_body: lr.max_body,
                max_header: lr.max_header,
                idle_timeout: lr.idle_timeout,
                unrouted: lr.unrouted.clone(),
                stats: lr.stats.clone(),
                access_log: lr.access_log.clone(),
                version: version.clone(),
                security: security.clone(),
                trusted_proxies: lr.trusted_proxies.clone(),
                tls: lr.tls.clone(),
                acme_http01: lr.acme_http01.clone(),
                portal: lr.portal.clone(),
                sampler: lr.sampler,
                tracer: lr.tracer.clone(),
            });
            listeners.push(CompiledListener {
                spec: ListenerSpec {
                    name: name.clone(),
                    addr: SocketAddr::new(l.address, l.port),
                    protocol: l.protocol,
                    idle_timeout: l.idle_timeout.get(),
                    max_header_bytes: lr.max_header,
                },
                runtime,
            });
        }
        Ok(Some(Self { version, listeners }))
    }
}

#[allow(clippy::too_many_arguments)] // one caller: the listener's settings and the Snapshot's tables
fn compile_route(
    r: &portico_model::Route,
    index: usize,
    listener: &Arc<str>,
    (listener_max_header, listener_max_body): (u64, Option<u64>),
    body_timeouts: (Duration, Option<Duration>),
    services: &HashMap<String, Arc<Service>>,
    apps: &HashMap<(String, u32), Arc<crate::apps::AppRuntime>>,
    security: &crate::auth::SecurityRuntime,
    cx: &Context,
) -> Result<Route, Error> {
    let name: Arc<str> = r.effective_name(index).into();
    let label = name.clone();
    let err = move |m: String| Error::Route(format!("routes[{index}] ({label}): {m}"));
    let prefix_len = match &r.matches.path {
        Some(PathMatch::Prefix(p)) => Some(p.len()),
        Some(PathMatch::PathPrefix(p)) => {
            let t = if p.len() > 1 {
                p.trim_end_matches('/')
            } else {
                p.as_str()
            };
            Some(t.len().max(1))
        }
        _ => None,
    };
    let no_service: Arc<str> = "".into();
    let rw = r.rewrite.clone().unwrap_or_default();
    let compile_forward = |f: &portico_model::Forward| -> Result<Forward, Error> {
        let mut targets = Vec::new();
        let mut total = 0u32;
        for t in f.all_targets() {
            if t.weight == 0 {
                continue;
            }
            let service = services
                .get(&t.service)
                .ok_or_else(|| err(format!("no service `{}`", t.service)))?;
            total += t.weight;
            targets.push(Target {
                stats: Arc::new(cx.metrics.route(listener, &name, &service.name)),
                service: service.clone(),
                cumulative: total,
            });
        }
        // `prefix` (App Mesh) rewrites the matched prefix to `/` unless told otherwise;
        // `path_prefix` (Gateway API's PathPrefix) keeps the path unless a rewrite is set.
        let rewrites_by_default = matches!(r.matches.path, Some(PathMatch::Prefix(_)));
        let path = match (&rw.path, &rw.prefix, prefix_len) {
            (Some(p), _, _) => PathRewrite::Full(p.clone()),
            (None, Some(PrefixRewrite::Off), _) | (None, _, None) => PathRewrite::Keep,
            (None, Some(PrefixRewrite::Value(v)), Some(_)) => PathRewrite::Prefix(v.clone()),
            (None, None, Some(_)) if rewrites_by_default => PathRewrite::Prefix("/".into()),
            (None, None, Some(_)) => PathRewrite::Keep,
        };
        let host = match (&rw.host, rw.host_to_target) {
            (Some(h), _) => HostRewrite::Value(
                HeaderValue::from_str(h).map_err(|_| err(format!("bad host `{h}`")))?,
            ),
            (None, true) => HostRewrite::Target,
            (None, false) => HostRewrite::Keep,
        };
        Ok(Forward {
            targets,
            total,
            path,
            host,
        })
    };
    let sandbox = r
        .sandbox_forward
        .as_ref()
        .map(&compile_forward)
        .transpose()?;
    let auth = r
        .auth
        .as_ref()
        .map(crate::auth::Auth::compile)
        .transpose()
        .map_err(&err)?;
    let action = if let Some(f) = &r.forward {
        Action::Forward(compile_forward(f)?)
    } else if let Some(rd) = &r.redirect {
        let path = match (&rd.path, &rd.prefix) {
            (Some(p), _) => PathRewrite::Full(p.clone()),
            (None, Some(p)) => PathRewrite::Prefix(p.clone()),
            (None, None) => PathRewrite::Keep,
        };
        Action::Redirect(Redirect {
            scheme: rd.scheme.clone(),
            host: rd.host.clone(),
            port: rd.port,
            path,
            status: StatusCode::from_u16(rd.status)
                .map_err(|_| err(format!("bad status {}", rd.status)))?,
        })
    } else if let Some(fr) = &r.fixed_response {
        let mut headers = Vec::new();
        for (k, v) in &fr.headers {
            headers.push((
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| err(format!("bad header `{k}`")))?,
                HeaderValue::from_str(v).map_err(|_| err(format!("bad value for `{k}`")))?,
            ));
        }
        Action::Fixed(Fixed {
            status: StatusCode::from_u16(fr.status)
                .map_err(|_| err(format!("bad status {}", fr.status)))?,
            headers,
            body: Bytes::from(fr.body.clone().unwrap_or_default()),
        })
    } else if let Some(a) = &r.app {
        let app = apps
            .get(&(a.slug.clone(), a.version))
            .ok_or_else(|| err(format!("no app bundle {}@{}", a.slug, a.version)))?;
        Action::App(app.clone())
    } else {
        return Err(err("no action".into()));
    };
    Ok(Route {
        stats: Arc::new(cx.metrics.route(listener, &name, &no_service)),
        name,
        action,
        request_headers: Edits::compile(&r.request_headers).map_err(&err)?,
        response_headers: Edits::compile(&r.response_headers).map_err(&err)?,
        max_body: match (
            r.limits.max_request_body_bytes.map(|b| b.get()),
            listener_max_body,
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        max_header: r
            .limits
            .max_request_header_bytes
            .map(|b| b.get())
            .unwrap_or(listener_max_header)
            .min(listener_max_header),
        timeout: r.timeout.map(|t| t.get()),
        body_idle: Some(body_timeouts.0).filter(|d| !d.is_zero()),
        body_total: body_timeouts.1.filter(|d| !d.is_zero()),
        prefix_len,
        auth,
        sandbox,
        ip: r.ip.as_ref().map(crate::ip::IpRules::compile),
        throttle: r.throttle.as_ref().map(|t| crate::auth::RouteThrottle {
            api: t.api.as_str().into(),
            api_tier: t
                .api_tier
                .as_deref()
                .and_then(|n| security.tier(n))
                .map(|g| g.limit(&format!("a:{}", t.api))),
            operation_tier: t
                .operation_tier
                .as_deref()
                .and_then(|n| security.tier(n))
                .map(|g| g.limit(&format!("o:{}", r.effective_name(index)))),
        }),
        cors: r
            .cors
            .as_ref()
            .map(crate::cors::CorsPolicy::compile)
            .transpose()
            .map_err(&err)?,
        try_out: r.try_out,
        upgrades: match &r.upgrades {
            None => Box::new([Box::from("websocket")]),
            Some(list) => list
                .iter()
                .filter(|u| !u.eq_ignore_ascii_case("h2c"))
                .map(|u| Box::from(u.to_ascii_lowercase()))
                .collect(),
        },
    })
}

impl Forward {
    /// Picks a target by weight.
    #[inline]
    pub fn pick(&self) -> &Target {
        if self.targets.len() == 1 {
            return &self.targets[0];
        }
        let r = fastrand::u32(..self.total.max(1));
        let i = self.targets.partition_point(|t| t.cumulative <= r);
        &self.targets[i.min(self.targets.len() - 1)]
    }
}
