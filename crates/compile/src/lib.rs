//! The control plane's compiler: what is deployed to one gateway (API revisions, raw routes,
//! the services they use) becomes the [`Snapshot`] that gateway's nodes serve. Pure and
//! deterministic: the same input gives the same snapshot, byte for byte, so its content
//! hash moves only when what the gateway serves changes.

use std::collections::BTreeMap;

mod collisions;
pub use collisions::collisions;

use portico_model::control::parse_endpoint_url;
use portico_model::packed::{ApiKeys, Consumers};
use portico_model::{
    ApiKeyGrant, ApiSpec, AuthMode, ConsumerLimits, Forward, GatewayKind, GatewaySpec, HeaderEdits,
    Lifecycle, Listener, ListenerProtocol, PathMatch, PrefixRewrite, Rewrite, Route, RouteAuth,
    RouteMatch, RouteSpec, Security, Service, Snapshot,
};

/// Why a gateway's snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two API keys with one hash, or two consumers with one name.
    #[error("{0}")]
    Packed(#[from] portico_model::packed::PackError),
    /// A raw route forwards to a service that is not stored.
    #[error("route `{route}` forwards to service `{service}`, which does not exist")]
    MissingService {
        /// The route.
        route: String,
        /// The service it names.
        service: String,
    },
    /// An HTTPS listener has no certificate for the gateway's hosts.
    #[error(
        "gateway `{gateway}` has an HTTPS listener but no uploaded certificate covers its hosts ({hosts}): upload one with `portico certificates upload` (POST /api/v1/certificates)"
    )]
    NoCertificate {
        /// The gateway.
        gateway: String,
        /// The hosts it serves.
        hosts: String,
    },
    /// An HTTPS listener on a gateway that serves no host names: no certificate can be
    /// chosen for it (each certificate goes only to the gateways serving its names).
    #[error(
        "gateway `{gateway}` has an HTTPS listener but serves no host names, so no certificate can be chosen for it: give the gateway `hosts` (or its APIs `hosts`) that an uploaded certificate covers"
    )]
    NoHosts {
        /// The gateway.
        gateway: String,
    },
    /// The result breaks a data-plane rule (two routes with one name, say).
    #[error("the snapshot for gateway `{gateway}` is not valid: {error}")]
    Invalid {
        /// The gateway.
        gateway: String,
        /// What the data plane's validation said (in the message, not also the source).
        error: portico_model::Error,
    },
}

/// An API key as a gateway's snapshot holds it: its API list sorted, without repeats.
/// Keys of every type travel: a gateway answers 403 to a key of the wrong type (a known
/// caller in the wrong environment), not 401.
pub fn key_row(mut k: ApiKeyGrant) -> ApiKeyGrant {
    k.apis.sort();
    k.apis.dedup();
    k
}

/// A consumer as a gateway's snapshot holds it, when it is subscribed or tiered: its API
/// list sorted, without repeats.
pub fn consumer_row(mut c: ConsumerLimits) -> Option<ConsumerLimits> {
    if c.tier.is_none() && c.subscriptions.is_empty() && c.apis.is_empty() {
        return None;
    }
    c.apis.sort();
    c.apis.dedup();
    Some(c)
}

/// One API revision deployed to the gateway.
#[derive(Clone, Debug)]
pub struct DeployedApi<'a> {
    /// The API's id (`name-version`).
    pub api_id: &'a str,
    /// The revision number deployed.
    pub revision: u32,
    /// The API's lifecycle state now (not the revision's: retiring an API withdraws it).
    pub lifecycle: Lifecycle,
    /// The revision's frozen definition.
    pub spec: &'a ApiSpec,
}

/// Everything deployed to one gateway.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The gateway.
    pub gateway: &'a GatewaySpec,
    /// API revisions deployed to it.
    pub apis: Vec<DeployedApi<'a>>,
    /// Raw gateway routes attached to it.
    pub routes: Vec<&'a RouteSpec>,
    /// Stored services (only the ones the routes name are included).
    pub services: &'a [Service],
    /// API keys of consumers subscribed to APIs deployed here (`apis` lists those).
    pub api_keys: &'a [ApiKeyGrant],
    /// The token service's public keys (published only to gateways with JWT routes).
    pub jwt: Option<&'a portico_model::JwtSettings>,
    /// Every throttling tier (only the ones used are included).
    pub tiers: &'a [portico_model::Tier],
    /// Consumer and subscription tiers of consumers subscribed to APIs deployed here.
    pub consumers: &'a [portico_model::ConsumerLimits],
    /// Key material already packed, used as it is in place of `api_keys` and
    /// `consumers`: the gateway's last compiled tables with what a write touched put in
    /// them by [`key_row`] and [`consumer_row`] (a million keys are not read and packed
    /// again for one).
    pub packed: Option<(ApiKeys, Consumers)>,
    /// Uploaded certificates; HTTPS listeners without their own get those for the hosts
    /// this gateway serves.
    pub certificates: &'a [portico_model::TlsCertificate],
    /// Certificates an ACME CA issued; used by listeners with `acme` for the hosts no
    /// uploaded certificate covers.
    pub acme_certificates: &'a [portico_model::TlsCertificate],
    /// Open ACME challenges and host states; only this gateway's hosts are kept.
    pub acme: &'a portico_model::AcmeState,
    /// App versions deployed to it.
    pub apps: Vec<DeployedApp<'a>>,
    /// The developer portal's origin (`https://portal.example.com`, as
    /// `portico_model::portal::parse_origin` serializes it): its Try Out may call the
    /// gateway's managed APIs from the browser.
    pub portal_origin: Option<&'a str>,
}

/// The ACME part of an input without challenges or hosts.
static NO_ACME: portico_model::AcmeState = portico_model::AcmeState {
    challenges: Vec::new(),
    hosts: Vec::new(),
};

impl<'a> Input<'a> {
    /// A gateway with nothing deployed, stored or uploaded; set what it has with
    /// `Input { apis, ..Input::new(&gw) }`.
    pub fn new(gateway: &'a GatewaySpec) -> Self {
        Self {
            gateway,
            apis: Vec::new(),
            routes: Vec::new(),
            services: &[],
            api_keys: &[],
            jwt: None,
            tiers: &[],
            consumers: &[],
            packed: None,
            certificates: &[],
            acme_certificates: &[],
            acme: &NO_ACME,
            apps: Vec::new(),
            portal_origin: None,
        }
    }
}

/// One app version deployed to the gateway.
#[derive(Clone, Debug)]
pub struct DeployedApp<'a> {
    /// The app's settings.
    pub spec: &'a portico_model::AppSpec,
    /// The version.
    pub version: u32,
    /// Its files.
    pub files: &'a BTreeMap<String, portico_model::AppFile>,
    /// Unix seconds the version was made.
    pub created_at: i64,
    /// A custom domain (host-based); the gateway's apps host by path when none.
    pub host: Option<&'a str>,
}

/// The port a gateway listens on when it defines no listener.
pub const DEFAULT_PORT: u16 = 8080;

/// Builds the gateway's snapshot and checks it as a node would.
pub fn compile(input: &Input<'_>) -> Result<Snapshot, Error> {
    let gw = input.gateway;
    let mut listeners = if gw.listeners.is_empty() {
        vec![Listener::new(DEFAULT_PORT, ListenerProtocol::Http)]
    } else {
        gw.listeners.clone()
    };
    // Hosts this gateway serves: its own and its APIs'.
    let mut served: Vec<String> = gw.hosts.clone();
    for a in &input.apis {
        served.extend(a.spec.hosts.iter().cloned());
    }
    served.extend(app_hosts(gw, &input.apps));
    served.iter_mut().for_each(|h| *h = h.to_ascii_lowercase());
    served.sort();
    served.dedup();
    // A certificate travels (with its private key) only to gateways serving a name it
    // covers: a gateway without hosts gets none, never every uploaded key.
    let covers_served = |c: &&portico_model::TlsCertificate| {
        c.hosts
            .iter()
            .any(|p| served.iter().any(|h| host_covers(p, h)))
    };
    for l in &mut listeners {
        if let Some(tls) = &mut l.tls
            && tls.certificates.is_empty()
        {
            // Uploaded first: SNI takes the first certificate naming a host, so an
            // uploaded certificate wins over an issued one.
            tls.certificates = input
                .certificates
                .iter()
                .filter(covers_served)
                .cloned()
                .collect();
            if tls.acme {
                // Issued certificates name one host each: only those this gateway serves.
                tls.certificates.extend(
                    input
                        .acme_certificates
                        .iter()
                        .filter(covers_served)
                        .cloned(),
                );
            }
            if tls.certificates.is_empty() && !tls.acme {
                if served.is_empty() {
                    return Err(Error::NoHosts {
                        gateway: gw.name.clone(),
                    });
                }
                return Err(Error::NoCertificate {
                    gateway: gw.name.clone(),
                    hosts: served.join(", "),
                });
            }
        }
    }
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut api_routes: Vec<(String, Route)> = Vec::new();
    let mut apis: Vec<&DeployedApi<'_>> = input
        .apis
        .iter()
        .filter(|a| a.lifecycle != Lifecycle::Retired)
        .collect();
    apis.sort_by(|a, b| a.api_id.cmp(b.api_id));
    // Only managed APIs are in the portal: its Try Out calls nothing else cross-origin.
    let try_out = input.portal_origin.is_some();
    for api in apis {
        compile_api(gw, api, try_out, &mut services, &mut api_routes);
    }
    let mut raw: Vec<&RouteSpec> = input.routes.clone();
    raw.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes: Vec<Route> = api_routes.into_iter().map(|(_, r)| r).collect();
    let mut apps: Vec<&DeployedApp<'_>> = input.apps.iter().collect();
    apps.sort_by(|a, b| (a.spec.slug.as_str(), a.host).cmp(&(b.spec.slug.as_str(), b.host)));
    let mut bundles: BTreeMap<(String, u32), portico_model::AppBundle> = BTreeMap::new();
    for app in apps {
        bundles
            .entry((app.spec.slug.clone(), app.version))
            .or_insert_with(|| portico_model::AppBundle {
                slug: app.spec.slug.clone(),
                version: app.version,
                files: app.files.clone(),
                spa: app.spec.spa,
                not_found: app.spec.not_found.clone(),
                cache_control: app.spec.cache_control.clone(),
                created_at: app.created_at,
            });
        compile_app(gw, app, input.services, &mut services, &mut routes)?;
    }
    for spec in raw {
        let mut route = spec.route.clone();
        route.name = Some(spec.name.clone());
        for t in route.all_targets() {
            if services.contains_key(&t.service) {
                continue;
            }
            let Some(s) = input.services.iter().find(|s| s.name == t.service) else {
                return Err(Error::MissingService {
                    route: spec.name.clone(),
                    service: t.service,
                });
            };
            services.insert(s.name.clone(), s.clone());
        }
        routes.push(route);
    }
    let (api_keys, consumers) = match &input.packed {
        Some((keys, consumers)) => (keys.clone(), consumers.clone()),
        None => (
            ApiKeys::try_from_iter(input.api_keys.iter().cloned().map(key_row))?,
            Consumers::try_from_iter(input.consumers.iter().cloned().filter_map(consumer_row))?,
        ),
    };
    let snapshot = Snapshot {
        schema: portico_model::SCHEMA,
        listeners,
        services: services.into_values().collect(),
        routes,
        security: Security {
            gateway_type: gw.kind,
            api_keys,
            jwt: None,
            tiers: Vec::new(),
            consumers: Default::default(),
        },
        acme: acme_state(gw, &served, input.acme),
        apps: bundles.into_values().collect(),
        portal: input.portal_origin.map(|origin| portico_model::Portal {
            origin: origin.to_owned(),
        }),
        sampling: input.gateway.sampling.clone(),
    };
    let mut snapshot = snapshot;
    // Tiers: those the routes and the consumers here name.
    let mut used: Vec<String> = Vec::new();
    for r in &snapshot.routes {
        if let Some(t) = &r.throttle {
            used.extend(t.api_tier.iter().chain(&t.operation_tier).cloned());
        }
    }
    // Only consumers with tiers name any: the others are not looked at.
    for (_, t) in consumers.tiered() {
        used.extend(t.tier.iter().cloned());
        used.extend(t.subscriptions.values().cloned());
    }
    let mut tiers: Vec<portico_model::Tier> = input
        .tiers
        .iter()
        .filter(|t| used.iter().any(|u| u.eq_ignore_ascii_case(&t.name)))
        .cloned()
        .collect();
    tiers.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.security.tiers = tiers;
    snapshot.security.consumers = consumers;
    // A route with nothing to throttle carries no throttle section.
    for r in &mut snapshot.routes {
        if r.throttle
            .as_ref()
            .is_some_and(|t| t.api_tier.is_none() && t.operation_tier.is_none() && r.auth.is_none())
        {
            r.throttle = None;
        }
    }
    if snapshot
        .routes
        .iter()
        .any(|r| r.auth.as_ref().is_some_and(|a| a.mode.jwt()))
    {
        snapshot.security.jwt = input.jwt.cloned();
    }
    snapshot.validate().map_err(|error| Error::Invalid {
        gateway: gw.name.clone(),
        error,
    })?;
    Ok(snapshot)
}

/// The endpoints an API uses on a gateway of this type.
pub fn endpoints_for(kind: GatewayKind, api: &ApiSpec) -> &[String] {
    match kind {
        GatewayKind::Sandbox if !api.sandbox_endpoints.is_empty() => &api.sandbox_endpoints,
        GatewayKind::Sandbox => &[],
        // Hybrid serves production until consumer keys say which environment a call is for.
        GatewayKind::Production | GatewayKind::Hybrid => &api.production_endpoints,
    }
}

fn compile_api(
    gw: &GatewaySpec,
    api: &DeployedApi<'_>,
    try_out: bool,
    services: &mut BTreeMap<String, Service>,
    routes: &mut Vec<(String, Route)>,
) {
    let spec = api.spec;
    let env = match gw.kind {
        GatewayKind::Sandbox => "sandbox",
        _ => "production",
    };
    let urls = endpoints_for(gw.kind, spec);
    let parsed: Vec<_> = urls
        .iter()
        .filter_map(|u| parse_endpoint_url(u).ok())
        .collect();
    let hosts = if spec.hosts.is_empty() {
        gw.hosts.clone()
    } else {
        spec.hosts.clone()
    };
    let mut response_headers = HeaderEdits::default();
    if api.lifecycle == Lifecycle::Deprecated {
        response_headers
            .set
            .insert("deprecation".into(), "true".into());
    }
    let service_name = format!("api.{}.{env}", api.api_id);
    let base = parsed
        .first()
        .map_or_else(|| "/".to_owned(), |e| e.base_path.clone());
    let ops: Vec<Op> = if spec.operations.is_empty() {
        vec![Op {
            method: None,
            path: String::new(),
            mode: spec.auth,
            scopes: Vec::new(),
            tier: None,
        }]
    } else {
        spec.operations
            .iter()
            .map(|o| Op {
                method: o.method.clone(),
                path: o.path.trim_end_matches('/').to_owned(),
                mode: o.auth.unwrap_or(spec.auth),
                scopes: o.scopes.clone(),
                tier: o.tier.clone(),
            })
            .collect()
    };
    // A hybrid gateway sends callers with sandbox credentials to the sandbox endpoints.
    let sandbox_forward = if gw.kind == GatewayKind::Hybrid
        && spec.auth != AuthMode::None
        && !spec.sandbox_endpoints.is_empty()
    {
        let name = format!("api.{}.sandbox", api.api_id);
        let svc = api_service(
            &name,
            spec,
            &spec.sandbox_endpoints,
            &spec.sandbox_failover_endpoints,
        );
        services.insert(name.clone(), svc);
        Some(Forward {
            service: Some(name),
            targets: Vec::new(),
        })
    } else {
        None
    };
    let forward = if parsed.is_empty() {
        None
    } else {
        let svc = api_service(&service_name, spec, urls, failover_for(gw.kind, spec));
        services.insert(service_name.clone(), svc);
        Some(Forward {
            service: Some(service_name.clone()),
            targets: Vec::new(),
        })
    };
    for (i, op) in ops.into_iter().enumerate() {
        let Op {
            method,
            path: op_path,
            mode,
            scopes,
            tier: op_tier,
        } = op;
        let name = if spec.operations.is_empty() {
            format!("api.{}", api.api_id)
        } else {
            format!("api.{}.{i}", api.api_id)
        };
        let replacement = join_path(&base, &op_path);
        let mut route = Route {
            name: Some(name.clone()),
            matches: RouteMatch {
                hosts: hosts.clone(),
                path: Some(PathMatch::PathPrefix(format!("{}{op_path}", spec.context))),
                // Preflights are OPTIONS requests: let them reach the route's CORS policy.
                // (The portal's Try Out needs no such method: a gateway routes its
                // preflights by the method they ask for.)
                methods: match method {
                    Some(m) if spec.cors.is_some() && !m.eq_ignore_ascii_case("OPTIONS") => {
                        vec![m, "OPTIONS".to_owned()]
                    }
                    m => m.into_iter().collect(),
                },
                ..Default::default()
            },
            forward: forward.clone(),
            rewrite: Some(Rewrite {
                prefix: Some(PrefixRewrite::Value(replacement)),
                ..Default::default()
            }),
            response_headers: response_headers.clone(),
            cors: spec.cors.clone(),
            try_out,
            ip: spec.ip.clone().filter(|p| !p.is_empty()),
            throttle: Some(portico_model::Throttle {
                api: api.api_id.to_owned(),
                api_tier: spec.tier.clone(),
                operation_tier: op_tier,
            }),
            auth: (mode != AuthMode::None).then(|| RouteAuth {
                api: api.api_id.to_owned(),
                mode,
                api_key_header: spec
                    .api_key_header
                    .clone()
                    .unwrap_or_else(portico_model::security::api_key_header),
                api_key_query: spec.api_key_query.clone(),
                scopes,
            }),
            sandbox_forward: if mode == AuthMode::None {
                None
            } else {
                sandbox_forward.clone()
            },
            ..Route::default()
        };
        if route.forward.is_none() {
            route.sandbox_forward = None;
            // No backend for this environment (a sandbox gateway, an API without sandbox
            // endpoints): answer so, rather than pretending the API is not there.
            route.rewrite = None;
            route.fixed_response = Some(portico_model::FixedResponse::json(
                503,
                &format!(
                    "{{\"error\":\"no_backend\",\"message\":\"API {} has no {env} endpoints\"}}",
                    api.api_id
                ),
            ));
        }
        routes.push((name, route));
    }
}

/// The ACME challenges and host states for the hosts this gateway serves, when one of its
/// listeners takes automatic certificates.
fn acme_state(
    gw: &GatewaySpec,
    served: &[String],
    all: &portico_model::AcmeState,
) -> portico_model::AcmeState {
    if !gw
        .listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.acme))
    {
        return portico_model::AcmeState::default();
    }
    let mine = |h: &str| served.iter().any(|s| s.eq_ignore_ascii_case(h));
    let mut out = portico_model::AcmeState {
        challenges: all
            .challenges
            .iter()
            .filter(|c| mine(&c.host))
            .cloned()
            .collect(),
        hosts: all
            .hosts
            .iter()
            .filter(|h| mine(&h.host))
            .cloned()
            .collect(),
    };
    out.challenges.sort_by(|a, b| a.token.cmp(&b.token));
    out.hosts.sort_by(|a, b| a.host.cmp(&b.host));
    out
}

/// The hosts gateway `gw` wants automatic certificates for: its own and its deployed APIs'
/// hosts, when one of its listeners has `acme`, less the hosts an uploaded certificate
/// covers. Wildcards stay in the list: the caller reports that they need DNS-01.
pub fn acme_hosts<'a>(
    gw: &'a GatewaySpec,
    api_hosts: impl IntoIterator<Item = &'a String>,
    uploaded: &[portico_model::TlsCertificate],
) -> Vec<String> {
    if !gw
        .listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.acme))
    {
        return Vec::new();
    }
    let mut hosts: Vec<String> = gw
        .hosts
        .iter()
        .chain(api_hosts)
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| {
            !uploaded
                .iter()
                .any(|c| c.hosts.iter().any(|p| host_covers(p, h)))
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Hosts the gateway's apps are served on: custom domains, and the apps host when an app
/// is served by path.
fn app_hosts(gw: &GatewaySpec, apps: &[DeployedApp<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for a in apps {
        match a.host {
            Some(h) => out.push(h.to_ascii_lowercase()),
            None => out.extend(gw.effective_apps_host()),
        }
    }
    out
}

/// The routes of one deployed app: its files under its root (`/<slug>` on the apps host,
/// or `/` on its own domain), and its routes to services under the same root.
fn compile_app(
    gw: &GatewaySpec,
    app: &DeployedApp<'_>,
    stored: &[Service],
    services: &mut BTreeMap<String, Service>,
    routes: &mut Vec<Route>,
) -> Result<(), Error> {
    let slug = &app.spec.slug;
    let (hosts, root, name) = match app.host {
        Some(h) => (
            vec![h.to_ascii_lowercase()],
            String::new(),
            format!("app.{slug}.{h}"),
        ),
        None => (
            gw.effective_apps_host().into_iter().collect(),
            format!("/{slug}"),
            format!("app.{slug}"),
        ),
    };
    for r in &app.spec.routes {
        let Some(s) = stored.iter().find(|s| s.name == r.service) else {
            return Err(Error::MissingService {
                route: format!("{name} {}", r.path),
                service: r.service.clone(),
            });
        };
        services.insert(s.name.clone(), s.clone());
        routes.push(Route {
            name: Some(format!("{name}{}", r.path.replace('/', "."))),
            matches: RouteMatch {
                hosts: hosts.clone(),
                path: Some(PathMatch::PathPrefix(format!("{root}{}", r.path))),
                ..RouteMatch::default()
            },
            forward: Some(Forward {
                service: Some(s.name.clone()),
                targets: Vec::new(),
            }),
            // The service sees the path inside the app: `/<slug>/api/x` -> `/api/x`.
            rewrite: Some(Rewrite {
                prefix: Some(PrefixRewrite::Value(r.path.clone())),
                ..Rewrite::default()
            }),
            ..Route::default()
        });
    }
    routes.push(Route {
        name: Some(name),
        matches: RouteMatch {
            hosts,
            path: Some(PathMatch::PathPrefix(if root.is_empty() {
                "/".into()
            } else {
                root
            })),
            ..RouteMatch::default()
        },
        app: Some(portico_model::AppRef {
            slug: slug.clone(),
            version: app.version,
        }),
        ..Route::default()
    });
    Ok(())
}

/// TLS to an API's backends when they are `https://` URLs: its `backend_tls`, else the
/// system's roots.
/// The failover endpoints that back up [`endpoints_for`].
fn failover_for(kind: GatewayKind, api: &ApiSpec) -> &[String] {
    match kind {
        GatewayKind::Sandbox if !api.sandbox_endpoints.is_empty() => {
            &api.sandbox_failover_endpoints
        }
        GatewayKind::Sandbox => &[],
        GatewayKind::Production | GatewayKind::Hybrid => &api.production_failover_endpoints,
    }
}

/// The service an API's endpoints make: the endpoints in the first failover group, each
/// failover endpoint in a group of its own after them, with the API's endpoint settings.
fn api_service(name: &str, spec: &ApiSpec, urls: &[String], failover: &[String]) -> Service {
    let parse = |list: &[String]| -> Vec<_> {
        list.iter()
            .filter_map(|u| parse_endpoint_url(u).ok())
            .collect()
    };
    let primary = parse(urls);
    let backups = parse(failover);
    let mut svc = Service::new(name, primary.iter().map(|e| e.address.clone()));
    for (k, e) in backups.iter().enumerate() {
        if svc.endpoints.iter().all(|x| x.address != e.address) {
            svc.endpoints.push(portico_model::Endpoint {
                address: e.address.clone(),
                weight: 1,
                priority: k as u32 + 1,
            });
        }
    }
    svc.tls = backend_tls(spec, &primary).or_else(|| backend_tls(spec, &backups));
    if let Some(settings) = &spec.endpoint_settings {
        settings.apply(&mut svc);
    }
    svc
}

fn backend_tls(
    spec: &ApiSpec,
    endpoints: &[portico_model::control::EndpointUrl],
) -> Option<portico_model::UpstreamTls> {
    endpoints
        .iter()
        .any(|e| e.tls)
        .then(|| spec.backend_tls.clone().unwrap_or_default())
}

/// Whether a certificate name (`api.example.com`, `*.example.com`) covers a served host
/// (which may itself be a wildcard).
pub fn host_covers(pattern: &str, host: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    if p == host {
        return true;
    }
    match p.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(_, rest)| rest == parent),
        None => false,
    }
}

/// One operation as a route is made of it.
struct Op {
    method: Option<String>,
    path: String,
    mode: AuthMode,
    scopes: Vec<String>,
    tier: Option<String>,
}

fn join_path(base: &str, rest: &str) -> String {
    if rest.is_empty() {
        return base.to_owned();
    }
    let mut out = base.trim_end_matches('/').to_owned();
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
