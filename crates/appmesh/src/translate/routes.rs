//! Gateway routes to Portico routes. A gateway route to a virtual service provided by a
//! virtual node becomes one route; one provided by a virtual router becomes one route per
//! router route (both matches combined, the router route's weighted targets, retries and
//! timeout) and a fallback answering 404 to what the gateway route takes and no router route
//! does, as App Mesh drops it. A gateway route any part of which cannot be said exactly is
//! not carried at all: a looser route would take requests App Mesh does not send there.

use portico_model::validate::check_host;
use portico_model::{FixedResponse, Retries, Route};

use crate::mesh::common::{PathCond, Proto};
use crate::mesh::gateway::{GatewayRoute, PrefixRewrite};
use crate::mesh::router::{MeshRoute, Provider, VirtualRouter};
use crate::mesh::{Cx, Meta};
use crate::report::Item;
use crate::translate::Input;
use crate::translate::conditions::{Cond, Fail, and, gateway_cond, rewrite, router_cond, to_match};
use crate::translate::gateways::{Bound, Gateway, Scheme};
use crate::translate::order::{Order, Place};
use crate::translate::paths::{self, Combined};
use crate::translate::retries::retries;
use crate::translate::services::{Overrides, Services, UseKey};

/// A Portico route being made; its services are named once every route is known.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    /// The name wanted (before names are made unique).
    pub wanted: String,
    /// The gateway route it comes from, for the report.
    pub source: Meta,
    /// The route (its forward is filled in from `targets`).
    pub route: Route,
    /// Forward targets: a service use and its weight; `single` when one with no weight.
    pub targets: Vec<(UseKey, u32)>,
    /// Forward to one service (`forward.service`) rather than weighted targets.
    pub single: bool,
    /// Where it sits, for priorities.
    pub order: Order,
}

/// What routes of one gateway route are made with.
pub(crate) struct Ctx<'a> {
    /// Everything read.
    pub input: &'a Input,
    /// The node services.
    pub services: &'a mut Services,
    /// The report.
    pub notes: &'a mut Vec<Item>,
    /// Router routes that some gateway route reached.
    pub reached: &'a mut std::collections::HashSet<(String, String, String)>,
}

impl Ctx<'_> {
    fn cx(&mut self, meta: &Meta) -> Cx<'_> {
        Cx {
            file: meta.file.clone(),
            object: meta.label(self.input.multi_mesh),
            notes: self.notes,
        }
    }
}

/// The Portico routes of one gateway route (none when it is not carried; reported).
pub(crate) fn gateway_route(gr: &GatewayRoute, gw: &Gateway, ctx: &mut Ctx<'_>) -> Vec<Draft> {
    // What was said about a gateway route that is then not carried does not hold: only
    // why it is not carried is left.
    let mark = ctx.notes.len();
    match drafts(gr, gw, ctx) {
        Ok(d) => d,
        Err(fails) => {
            ctx.notes.truncate(mark);
            let mut cx = ctx.cx(&gr.meta);
            for (path, why) in fails {
                cx.not_carried(path, format!("the gateway route is not carried: {why}"));
            }
            Vec::new()
        }
    }
}

fn drafts(
    gr: &GatewayRoute,
    gw: &Gateway,
    ctx: &mut Ctx<'_>,
) -> Result<Vec<Draft>, Vec<(String, String)>> {
    let one = |path: &str, why: String| vec![(path.to_owned(), why)];
    // Listeners of the route's protocol (and port).
    let bound: Vec<&Bound> = gw
        .listeners
        .iter()
        .filter(|l| l.protocol == gr.proto && gr.m.port.is_none_or(|p| p == l.port))
        .collect();
    if bound.is_empty() {
        return Err(one(
            &gr.at,
            format!(
                "the virtual gateway has no {} listener{}: App Mesh serves it on none",
                gr.proto.word(),
                gr.m.port
                    .map(|p| format!(" on port {p}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let (cond, gpath) = {
        let mut cx = ctx.cx(&gr.meta);
        let cond = gateway_cond(&gr.m, &mut cx).map_err(|f| match f {
            Fail::Never(w) => vec![(gr.m.at.clone(), w)],
            Fail::Cannot(p, w) => vec![(p, w)],
        })?;
        (cond, gateway_path(gr))
    };
    let meta = &gr.meta;
    let input = ctx.input;
    let vs = input.virtual_service(&meta.mesh, &gr.target).ok_or_else(|| {
        one(
            &gr.target_at,
            format!(
                "the virtual service {} is not in the input: add its describe-virtual-service output",
                gr.target
            ),
        )
    })?;
    let Some((_, provider)) = &vs.provider else {
        return Err(one(
            &gr.target_at,
            format!(
                "the virtual service {} has no provider: App Mesh has nowhere to send",
                gr.target
            ),
        ));
    };
    let hostname = if gr.rewrite.host_to_target {
        if let Err(m) = check_host(&gr.target, false) {
            return Err(one(
                &gr.target_at,
                format!("the virtual service's name is sent as Host, and {m}"),
            ));
        }
        Some(gr.target.clone())
    } else {
        None
    };
    let base_route = Route {
        listeners: bound.iter().map(|b| b.name.clone()).collect(),
        ..Route::default()
    };
    let wanted = format!("{}.{}", gw.spec.name, meta.name);
    let gateway_match = to_match(&cond, &paths::alone(&gpath));
    let overrides = |ctx: &Ctx<'_>, id: usize| Overrides {
        hostname: hostname.clone(),
        retries: None,
        tls: gw.client_tls.as_ref().and_then(|(ports, tls)| {
            (ports.is_empty() || ports.contains(&ctx.services.base(id).port)).then(|| tls.clone())
        }),
    };
    match provider {
        Provider::Node(node) => {
            let id = ctx
                .services
                .resolve(&meta.mesh, node, gr.target_port)
                .map_err(|m| one(&gr.target_at, m))?;
            let flat = paths::alone(&gpath);
            let mut route = base_route;
            route.matches = to_match(&cond, &flat);
            route.rewrite = rewrite(&flat, gr.rewrite.host_to_target);
            let o = overrides(ctx, id);
            let key = ctx.services.use_with(id, o);
            summary(ctx, gr, &wanted, &format!("virtual node {node}'s service"));
            Ok(vec![Draft {
                wanted,
                source: meta.clone(),
                route,
                targets: vec![(key, 1)],
                single: true,
                order: Order {
                    priority: gr.priority,
                    place: Place::Direct,
                    gateway_match,
                },
            }])
        }
        Provider::Router(name) => {
            let router = input.virtual_router(&meta.mesh, name).ok_or_else(|| {
                one(
                    &gr.target_at,
                    format!(
                        "the virtual router {name} (the provider of {}) is not in the input",
                        gr.target
                    ),
                )
            })?;
            let port = router_port(router, gr).map_err(|m| one(&gr.target_at, m))?;
            let mut out = Vec::new();
            let mut fails = Vec::new();
            for rr in input.router_routes(&meta.mesh, name) {
                let family = |p: Proto| match p {
                    Proto::Grpc => 1,
                    Proto::Tcp => 2,
                    _ => 0,
                };
                if family(rr.proto) != family(gr.proto)
                    || rr.m.port.is_some_and(|p| Some(p) != port)
                {
                    continue;
                }
                ctx.reached
                    .insert((rr.meta.mesh.clone(), name.clone(), rr.meta.name.clone()));
                match combination(gr, rr, &cond, &gpath, &bound, ctx) {
                    Ok(parts) => {
                        for (i, (route, targets)) in parts.into_iter().enumerate() {
                            let mut rwanted = format!("{wanted}.{}", rr.meta.name);
                            if i > 0 {
                                rwanted.push_str(&format!(".{}", i + 1));
                            }
                            let mut cx = ctx.cx(&rr.meta);
                            cx.carried(
                                rr.at.clone(),
                                format!("through {} -> route `{rwanted}`", gr.meta.label(false)),
                            );
                            out.push((rr, rwanted, route, targets));
                        }
                    }
                    Err(Fail::Never(why)) => {
                        let mut cx = ctx.cx(&rr.meta);
                        cx.not_carried(
                            rr.at.clone(),
                            format!(
                                "through {}: no request can meet both matches ({why}); App Mesh never routes there either",
                                gr.meta.label(false)
                            ),
                        );
                    }
                    Err(Fail::Cannot(path, why)) => fails.push((
                        gr.target_at.clone(),
                        format!(
                            "router route {} ({} {path}): {why}",
                            rr.meta.name, rr.meta.file
                        ),
                    )),
                }
            }
            if !fails.is_empty() {
                return Err(fails);
            }
            let mut drafts = Vec::new();
            for (rr, rwanted, route, targets) in out {
                let mut keys = Vec::new();
                for (id, weight, retries) in targets {
                    let mut o = overrides(ctx, id);
                    o.retries = retries;
                    keys.push((ctx.services.use_with(id, o), weight));
                }
                drafts.push(Draft {
                    wanted: rwanted,
                    source: meta.clone(),
                    route,
                    targets: keys,
                    single: false,
                    order: Order {
                        priority: gr.priority,
                        place: Place::Router(rr.priority),
                        gateway_match: gateway_match.clone(),
                    },
                });
            }
            // What the gateway route takes and no router route does: 404, as App Mesh.
            // Unless a router route takes all of it (a route that matched the same
            // requests would never be reached).
            if drafts.iter().any(|d| {
                d.route.matches == gateway_match && d.route.listeners == base_route.listeners
            }) {
                summary(
                    ctx,
                    gr,
                    &wanted,
                    &format!(
                        "virtual router {name}: {} route(s) `{wanted}.<route>`",
                        drafts.len()
                    ),
                );
                return Ok(drafts);
            }
            let mut fallback = base_route;
            fallback.matches = gateway_match.clone();
            fallback.fixed_response = Some(FixedResponse {
                status: 404,
                headers: Default::default(),
                body: None,
            });
            summary(
                ctx,
                gr,
                &wanted,
                &format!(
                    "virtual router {name}: {} route(s) `{wanted}.<route>` and the fallback `{wanted}` answering 404 to what no router route takes",
                    drafts.len()
                ),
            );
            drafts.push(Draft {
                wanted,
                source: meta.clone(),
                route: fallback,
                targets: Vec::new(),
                single: false,
                order: Order {
                    priority: gr.priority,
                    place: Place::Fallback,
                    gateway_match,
                },
            });
            Ok(drafts)
        }
    }
}

fn summary(ctx: &mut Ctx<'_>, gr: &GatewayRoute, wanted: &str, to: &str) {
    let host = if gr.rewrite.host_to_target {
        format!("Host `{}` sent upstream", gr.target)
    } else {
        "the client's Host kept".to_owned()
    };
    let mut cx = ctx.cx(&gr.meta);
    cx.carried(
        gr.at.clone(),
        format!("-> route `{wanted}` to {to}; {host}"),
    );
}

/// The port of the router's listener the gateway route reaches.
fn router_port(router: &VirtualRouter, gr: &GatewayRoute) -> Result<Option<u16>, String> {
    match (gr.target_port, router.listeners.as_slice()) {
        (Some(p), ls) if ls.iter().any(|l| l.0 == p) => Ok(Some(p)),
        (Some(p), _) => Err(format!(
            "the virtual router {} has no listener on port {p}",
            router.meta.name
        )),
        (None, [only]) => Ok(Some(only.0)),
        (None, []) => Ok(None),
        (None, _) => Err(format!(
            "the virtual router {} has several listeners and the target names no port",
            router.meta.name
        )),
    }
}

type Part = (Route, Vec<(usize, u32, Option<Retries>)>);

/// The Portico routes of one gateway route and one router route.
fn combination(
    gr: &GatewayRoute,
    rr: &MeshRoute,
    gcond: &Cond,
    gpath: &paths::Gateway,
    bound: &[&Bound],
    ctx: &mut Ctx<'_>,
) -> Result<Vec<Part>, Fail> {
    let at = rr.meta.path("");
    let rcond = {
        let mut cx = ctx.cx(&rr.meta);
        router_cond(&rr.m, &mut cx)?
    };
    let cond = and(gcond, &rcond)?;
    let rpath = match (&rr.m.prefix, &rr.m.path) {
        (Some(p), _) => paths::Router::Prefix(p.clone()),
        (_, Some(PathCond::Exact(e))) => paths::Router::Exact(e.clone()),
        (_, Some(PathCond::Regex(x))) => paths::Router::Regex(x.clone()),
        _ => paths::Router::Any,
    };
    let flats = match paths::combine(gpath, &rpath) {
        Combined::Routes(f) => f,
        Combined::Never(w) => return Err(Fail::Never(w)),
        Combined::Inexpressible(w) => {
            return Err(Fail::Cannot(rr.m.at.clone(), w));
        }
    };
    // The router route's scheme: the listeners whose clients speak it.
    let mut listeners: Vec<String> = bound.iter().map(|b| b.name.clone()).collect();
    if let Some((sat, scheme)) = &rr.m.scheme {
        let want = if scheme == "https" {
            Scheme::Tls
        } else {
            Scheme::Plain
        };
        if bound.iter().any(|b| b.scheme == Scheme::Both) {
            return Err(Fail::Cannot(
                sat.clone(),
                format!(
                    "scheme {scheme} on a PERMISSIVE listener (TLS and plaintext on one port) cannot be told apart"
                ),
            ));
        }
        listeners = bound
            .iter()
            .filter(|b| b.scheme == want)
            .map(|b| b.name.clone())
            .collect();
        if listeners.is_empty() {
            return Err(Fail::Never(format!(
                "scheme {scheme}: no listener of the gateway route speaks it"
            )));
        }
    }
    let mut targets = Vec::new();
    for t in &rr.targets {
        let id = ctx
            .services
            .resolve(&rr.meta.mesh, &t.node, t.port)
            .map_err(|m| Fail::Cannot(t.at.clone(), m))?;
        targets.push((id, t.weight));
    }
    if targets.iter().all(|t| t.1 == 0) {
        return Err(Fail::Cannot(
            at,
            "every weighted target has weight 0".to_owned(),
        ));
    }
    let (retries, timeout) = {
        let mut cx = ctx.cx(&rr.meta);
        let retries = rr.retry.as_ref().map(|p| retries(p, &mut cx));
        let mut timeout = None;
        if let Some(t) = &rr.timeout {
            if let Some((tat, d)) = &t.per_request {
                if d.get().is_zero() {
                    cx.changed(
                        tat.clone(),
                        "0 turns App Mesh's request timeout off; Portico always has one: the service's request_timeout (60 s unless the node's listener sets it)",
                    );
                } else {
                    timeout = Some(*d);
                    cx.carried(
                        tat.clone(),
                        format!("perRequest -> the route's timeout {d}"),
                    );
                }
            }
            if let Some((iat, _)) = &t.idle {
                cx.not_carried(
                    iat.clone(),
                    "a route's idle timeout: Portico has it per service (body_idle_timeout, from the virtual node listener's timeout.idle)",
                );
            }
        }
        (retries, timeout)
    };
    Ok(flats
        .into_iter()
        .map(|flat| {
            let route = Route {
                listeners: listeners.clone(),
                matches: to_match(&cond, &flat),
                rewrite: rewrite(&flat, gr.rewrite.host_to_target),
                timeout,
                ..Route::default()
            };
            let ts = targets
                .iter()
                .map(|(id, w)| (*id, *w, retries.clone()))
                .collect();
            (route, ts)
        })
        .collect())
}

/// The gateway route's path condition and rewrite.
fn gateway_path(gr: &GatewayRoute) -> paths::Gateway {
    let rw = &gr.rewrite;
    match (&gr.m.prefix, &gr.m.path) {
        (Some(p), _) => paths::Gateway::Prefix {
            prefix: p.clone(),
            replace: match &rw.prefix {
                PrefixRewrite::Default => Some("/".into()),
                PrefixRewrite::Disabled => None,
                PrefixRewrite::Value(v) => Some(v.clone()),
            },
        },
        (_, Some(PathCond::Exact(e))) => paths::Gateway::Exact {
            path: e.clone(),
            rewrite: rw.path.as_ref().map(|p| p.1.clone()),
        },
        (_, Some(PathCond::Regex(x))) => paths::Gateway::Regex {
            regex: x.clone(),
            rewrite: rw.path.as_ref().map(|p| p.1.clone()),
        },
        _ => paths::Gateway::Any,
    }
}
