//! From App Mesh objects to Portico objects, in this order: node services, gateways,
//! routes (with their priorities and names), then the services as the routes use them.
//!
//! - [`names`]: Portico names for App Mesh names
//! - [`services`]: virtual nodes to services
//! - [`gateways`]: virtual gateways to gateways
//! - [`routes`]: gateway routes (and router routes) to routes
//! - [`conditions`]: hosts, headers, query, method and gRPC conditions, combined
//! - [`retries`]: router routes' retry policies
//! - [`paths`]: a gateway route's and a router route's path conditions combined
//! - [`range`]: header ranges as regular expressions
//! - [`order`]: the routes' priorities

pub(crate) mod conditions;
pub(crate) mod gateways;
pub(crate) mod names;
pub(crate) mod order;
pub(crate) mod paths;
pub(crate) mod range;
pub(crate) mod retries;
pub(crate) mod routes;
pub(crate) mod services;

use std::collections::{HashMap, HashSet};

use portico_model::{Forward, RouteSpec, Target};

use crate::import::{GatewayInfo, Import, Objects};
use crate::mesh::Cx;
use crate::mesh::gateway::{GatewayRoute, VirtualGateway};
use crate::mesh::node::VirtualNode;
use crate::mesh::router::{MeshRoute, VirtualRouter, VirtualService};
use crate::report::{Item, Report};
use names::{LONG, Names, SHORT};

/// Every App Mesh object read, with lookups by mesh and name.
#[derive(Debug, Default)]
pub(crate) struct Input {
    /// Virtual gateways.
    pub gateways: Vec<VirtualGateway>,
    /// Gateway routes.
    pub gateway_routes: Vec<GatewayRoute>,
    /// Virtual services.
    pub services: Vec<VirtualService>,
    /// Virtual routers.
    pub routers: Vec<VirtualRouter>,
    /// Routes of virtual routers.
    pub routes: Vec<MeshRoute>,
    /// Virtual nodes.
    pub nodes: Vec<VirtualNode>,
    /// The input holds more than one mesh.
    pub multi_mesh: bool,
    service_at: HashMap<(String, String), usize>,
    router_at: HashMap<(String, String), usize>,
    routes_of: HashMap<(String, String), Vec<usize>>,
}

impl Input {
    /// Sorts everything by mesh and name (the order of names and priorities) and builds the
    /// lookups.
    pub fn index(&mut self) {
        let key = |m: &crate::mesh::Meta| m.key();
        self.gateways.sort_by_key(|x| key(&x.meta));
        self.gateway_routes.sort_by_key(|x| key(&x.meta));
        self.services.sort_by_key(|x| key(&x.meta));
        self.routers.sort_by_key(|x| key(&x.meta));
        self.nodes.sort_by_key(|x| key(&x.meta));
        // A router's routes in App Mesh's order: by priority, unprioritized last.
        self.routes.sort_by_key(|r| {
            (
                r.meta.mesh.clone(),
                r.meta.parent.clone(),
                r.priority.is_none(),
                r.priority,
                r.meta.name.clone(),
            )
        });
        for (i, s) in self.services.iter().enumerate() {
            self.service_at
                .insert((s.meta.mesh.clone(), s.meta.name.clone()), i);
        }
        for (i, r) in self.routers.iter().enumerate() {
            self.router_at
                .insert((r.meta.mesh.clone(), r.meta.name.clone()), i);
        }
        for (i, r) in self.routes.iter().enumerate() {
            self.routes_of
                .entry((
                    r.meta.mesh.clone(),
                    r.meta.parent.clone().unwrap_or_default(),
                ))
                .or_default()
                .push(i);
        }
    }

    /// A virtual service.
    pub fn virtual_service(&self, mesh: &str, name: &str) -> Option<&VirtualService> {
        self.service_at
            .get(&(mesh.to_owned(), name.to_owned()))
            .map(|i| &self.services[*i])
    }

    /// A virtual router.
    pub fn virtual_router(&self, mesh: &str, name: &str) -> Option<&VirtualRouter> {
        self.router_at
            .get(&(mesh.to_owned(), name.to_owned()))
            .map(|i| &self.routers[*i])
    }

    /// A router's routes, in App Mesh's order.
    pub fn router_routes(&self, mesh: &str, router: &str) -> Vec<&MeshRoute> {
        self.routes_of
            .get(&(mesh.to_owned(), router.to_owned()))
            .map(|ids| ids.iter().map(|i| &self.routes[*i]).collect())
            .unwrap_or_default()
    }
}

/// Makes the Portico objects.
pub(crate) fn run(input: Input, mut notes: Vec<Item>) -> Import {
    let multi = input.multi_mesh;
    let mut service_names = Names::new(LONG);
    let mut services =
        services::Services::build(&input.nodes, multi, &mut service_names, &mut notes);
    // Gateways; a name in two meshes gets its mesh in front.
    let mut gateway_names = Names::new(SHORT);
    let mut count: HashMap<&str, usize> = HashMap::new();
    for g in &input.gateways {
        *count.entry(g.meta.name.as_str()).or_default() += 1;
    }
    let mut gws = Vec::new();
    for vg in &input.gateways {
        let wanted = if count[vg.meta.name.as_str()] > 1 {
            format!("{}.{}", vg.meta.mesh, vg.meta.name)
        } else {
            vg.meta.name.clone()
        };
        let named = gateway_names.take(&wanted);
        let mut cx = Cx {
            file: vg.meta.file.clone(),
            object: vg.meta.label(multi),
            notes: &mut notes,
        };
        if wanted != vg.meta.name && named.why.is_none() {
            cx.changed(
                vg.meta.path(".virtualGatewayName"),
                format!(
                    "named `{}`: another mesh has a virtual gateway {} too",
                    named.name, vg.meta.name
                ),
            );
        }
        gws.push(gateways::gateway(vg, &named, &mut cx));
    }
    // Routes, gateway by gateway.
    let mut route_names = Names::new(SHORT);
    let mut reached = HashSet::new();
    let mut drafts: Vec<(usize, routes::Draft)> = Vec::new();
    let mut used_services = HashSet::new();
    for (gi, vg) in input.gateways.iter().enumerate() {
        let mut mine = Vec::new();
        let grs = input.gateway_routes.iter().filter(|gr| {
            gr.meta.mesh == vg.meta.mesh && gr.meta.parent.as_deref() == Some(&vg.meta.name)
        });
        for gr in grs {
            used_services.insert((gr.meta.mesh.clone(), gr.target.clone()));
            let mut ctx = routes::Ctx {
                input: &input,
                services: &mut services,
                notes: &mut notes,
                reached: &mut reached,
            };
            mine.extend(routes::gateway_route(gr, &gws[gi], &mut ctx));
        }
        let orders: Vec<order::Order> = mine.iter().map(|d| d.order.clone()).collect();
        let (priorities, renumbered) = order::priorities(&orders);
        for (d, p) in mine.iter_mut().zip(priorities) {
            d.route.priority = p;
        }
        if renumbered {
            Cx {
                file: vg.meta.file.clone(),
                object: vg.meta.label(multi),
                notes: &mut notes,
            }
            .changed(
                vg.meta.path(""),
                "routes through virtual routers become Portico routes of their own, so this gateway's route priorities are renumbered to keep App Mesh's order: gateway route priority x 1002 + router route priority (see docs/appmesh.md)",
            );
        }
        drafts.extend(mine.into_iter().map(|d| (gi, d)));
    }
    for gr in &input.gateway_routes {
        let known = input.gateways.iter().any(|vg| {
            vg.meta.mesh == gr.meta.mesh && gr.meta.parent.as_deref() == Some(&vg.meta.name)
        });
        if !known {
            Cx {
                file: gr.meta.file.clone(),
                object: gr.meta.label(multi),
                notes: &mut notes,
            }
            .not_carried(
                gr.meta.path(""),
                format!(
                    "its virtual gateway {} is not in the input: add its describe-virtual-gateway output",
                    gr.meta.parent.clone().unwrap_or_default()
                ),
            );
        }
    }
    unused(&input, &used_services, &reached, &mut notes);
    // Names, then services as the routes use them.
    let mut named_drafts = Vec::new();
    for (gi, d) in drafts {
        let named = route_names.take(&d.wanted);
        if let Some(why) = &named.why {
            Cx {
                file: d.source.file.clone(),
                object: d.source.label(multi),
                notes: &mut notes,
            }
            .changed(d.source.path(".gatewayRouteName"), why.clone());
        }
        named_drafts.push((gi, named.name, d));
    }
    let (all_services, use_names) = services.finish(&mut service_names);
    let mut objects = Objects::default();
    let mut infos: Vec<GatewayInfo> = gws
        .iter()
        .zip(&input.gateways)
        .map(|(g, vg)| GatewayInfo {
            mesh: vg.meta.mesh.clone(),
            virtual_gateway: vg.meta.name.clone(),
            name: g.spec.name.clone(),
            access_log: g.access_log.clone(),
            incomplete: g.incomplete.clone(),
            routes: Vec::new(),
        })
        .collect();
    for (gi, name, d) in named_drafts {
        let mut route = d.route;
        route.name = Some(name.clone());
        let target = |k: &services::UseKey| use_names.get(k).cloned().unwrap_or_default();
        if d.single {
            route.forward = d.targets.first().map(|(k, _)| Forward {
                service: Some(target(k)),
                targets: Vec::new(),
            });
        } else if !d.targets.is_empty() {
            route.forward = Some(Forward {
                service: None,
                targets: d
                    .targets
                    .iter()
                    .map(|(k, w)| Target {
                        service: target(k),
                        weight: *w,
                    })
                    .collect(),
            });
        }
        // Bound to every listener of the gateway: no need to name them.
        if route.listeners.len() == gws[gi].listeners.len() {
            route.listeners.clear();
        }
        infos[gi].routes.push(route.clone());
        objects.routes.push(RouteSpec {
            name,
            gateways: vec![gws[gi].spec.name.clone()],
            route,
        });
    }
    for g in gws {
        for c in g.certificates {
            if !objects.certificates.iter().any(|x| x.name == c.name) {
                objects.certificates.push(c);
            }
        }
        objects.gateways.push(g.spec);
    }
    objects.services = all_services;
    // Items of one file together, in the order they were made; identical ones once.
    let mut seen = HashSet::new();
    notes.retain(|i| seen.insert(i.clone()));
    let mut files: Vec<String> = Vec::new();
    for i in &notes {
        if !files.contains(&i.file) {
            files.push(i.file.clone());
        }
    }
    files.sort();
    notes.sort_by_key(|i| files.iter().position(|f| *f == i.file));
    Import::new(objects, Report { items: notes }, infos)
}

/// Reports virtual services no gateway route sends to, and router routes none reaches.
fn unused(
    input: &Input,
    used: &HashSet<(String, String)>,
    reached: &HashSet<(String, String, String)>,
    notes: &mut Vec<Item>,
) {
    for vs in &input.services {
        if !used.contains(&(vs.meta.mesh.clone(), vs.meta.name.clone())) {
            Cx {
                file: vs.meta.file.clone(),
                object: vs.meta.label(input.multi_mesh),
                notes,
            }
            .not_carried(
                vs.meta.path(""),
                "no gateway route sends to it: traffic inside the mesh does not pass through a Portico gateway",
            );
        }
    }
    for r in &input.routes {
        let key = (
            r.meta.mesh.clone(),
            r.meta.parent.clone().unwrap_or_default(),
            r.meta.name.clone(),
        );
        if !reached.contains(&key) {
            Cx {
                file: r.meta.file.clone(),
                object: r.meta.label(input.multi_mesh),
                notes,
            }
            .not_carried(
                r.meta.path(""),
                "no gateway route reaches it (its router's virtual service is not a gateway route's target, or the protocols or ports differ): traffic inside the mesh does not pass through a Portico gateway",
            );
        }
    }
}
