//! Helpers: fixtures, imports, and checking that what was made is valid Portico config.

use std::path::PathBuf;

use portico_appmesh::{Import, Item, Outcome, Source, import, read_path};
use portico_model::GatewayFile;
use portico_model::apply::Document;
use portico_model::snapshot::Format;
use serde_json::{Value, json};

/// A fixture's path.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Imports a fixture file or directory; everything made must validate.
pub fn import_fixture(rel: &str) -> Import {
    let sources = read_path(&fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    checked(import(&sources).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

/// Imports JSON values, each as its own file.
pub fn import_values(values: &[(&str, Value)]) -> Import {
    let sources: Vec<Source> = values
        .iter()
        .map(|(name, v)| Source::new(*name, v.to_string()))
        .collect();
    checked(import(&sources).unwrap_or_else(|e| panic!("{e}")))
}

/// Checks what an import made against Portico's own rules: each object alone, the apply
/// document (JSON and TOML), and a gateway file per gateway that can have one.
pub fn checked(imp: Import) -> Import {
    for g in &imp.objects.gateways {
        g.validate()
            .unwrap_or_else(|e| panic!("gateway {}: {e}", g.name));
    }
    for r in &imp.objects.routes {
        r.validate()
            .unwrap_or_else(|e| panic!("route {}: {e}\n{r:#?}", r.name));
    }
    let all_services = portico_model::Snapshot {
        services: imp.objects.services.clone(),
        ..portico_model::Snapshot::default()
    };
    all_services
        .validate()
        .unwrap_or_else(|e| panic!("services: {e}"));
    let json = serde_json::to_string(&imp.objects).expect("serializes");
    let doc = Document::parse(&json, Format::Json).unwrap_or_else(|e| panic!("apply JSON: {e}"));
    assert_eq!(doc.routes.len(), imp.objects.routes.len());
    assert_eq!(doc.services.len(), imp.objects.services.len());
    let toml = imp.objects.to_toml().expect("TOML");
    let doc =
        Document::parse(&toml, Format::Toml).unwrap_or_else(|e| panic!("apply TOML: {e}\n{toml}"));
    assert_eq!(doc.gateways, imp.objects.gateways);
    assert_eq!(doc.routes, imp.objects.routes);
    let names: Vec<String> = imp.gateways().map(|g| g.0.to_owned()).collect();
    for name in names {
        match imp.gateway_file(&name) {
            Ok(file) => {
                file.validate()
                    .unwrap_or_else(|e| panic!("gateway file {name}: {e}"));
                // As written to disk and read back by `portico gateway --config`.
                let text = toml::to_string(&file).expect("gateway file TOML");
                GatewayFile::parse(&text, Format::Toml)
                    .unwrap_or_else(|e| panic!("gateway file {name}: {e}\n{text}"));
            }
            Err(portico_appmesh::Error::Incomplete { message, .. })
                if message.contains("ACM") || message.contains("SDS") => {}
            Err(e) => panic!("gateway file {name}: {e}"),
        }
    }
    imp
}

/// The report items about `path` (a JSON path suffix) with `outcome`.
pub fn items<'a>(imp: &'a Import, outcome: Outcome, path_ends: &str) -> Vec<&'a Item> {
    imp.report
        .items
        .iter()
        .filter(|i| i.outcome == outcome && i.path.ends_with(path_ends))
        .collect()
}

/// Asserts the report has an item with `outcome` at a path ending in `path_ends` whose
/// message holds `words`.
#[track_caller]
pub fn reported(imp: &Import, outcome: Outcome, path_ends: &str, words: &str) {
    let hit = items(imp, outcome, path_ends)
        .iter()
        .any(|i| i.message.contains(words));
    assert!(
        hit,
        "no {outcome:?} item at ...{path_ends} saying `{words}`; report:\n{}",
        imp.report
    );
}

/// The route named `name`.
#[track_caller]
pub fn route<'a>(imp: &'a Import, name: &str) -> &'a portico_model::Route {
    &imp.objects
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no route {name}; routes: {:?}",
                imp.objects
                    .routes
                    .iter()
                    .map(|r| &r.name)
                    .collect::<Vec<_>>()
            )
        })
        .route
}

/// The service named `name`.
#[track_caller]
pub fn service<'a>(imp: &'a Import, name: &str) -> &'a portico_model::Service {
    imp.objects
        .services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no service {name}; services: {:?}",
                imp.objects
                    .services
                    .iter()
                    .map(|s| &s.name)
                    .collect::<Vec<_>>()
            )
        })
}

/// The mesh every built object is in.
pub const MESH: &str = "m";

/// `describe-virtual-gateway` output.
pub fn vgw(name: &str, spec: Value) -> Value {
    json!({"virtualGateway": {
        "meshName": MESH, "virtualGatewayName": name, "spec": spec,
        "metadata": {"arn": format!("arn:aws:appmesh:us-east-1:111122223333:mesh/{MESH}/virtualGateway/{name}"), "version": 1, "uid": "u", "meshOwner": "111122223333", "resourceOwner": "111122223333", "createdAt": "2024-01-01T00:00:00Z", "lastUpdatedAt": "2024-01-01T00:00:00Z"},
        "status": {"status": "ACTIVE"}
    }})
}

/// A virtual gateway with one http listener on 8080.
pub fn http_gateway(name: &str) -> Value {
    vgw(
        name,
        json!({"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}),
    )
}

/// `describe-gateway-route` output.
pub fn gr(gateway: &str, name: &str, spec: Value) -> Value {
    json!({"gatewayRoute": {
        "meshName": MESH, "virtualGatewayName": gateway, "gatewayRouteName": name, "spec": spec,
        "metadata": {"version": 1}, "status": {"status": "ACTIVE"}
    }})
}

/// An httpRoute gateway route to `service` with this match (and rewrite, when not null).
pub fn http_gr(gateway: &str, name: &str, service: &str, m: Value, rewrite: Value) -> Value {
    let mut action = json!({"target": {"virtualService": {"virtualServiceName": service}}});
    if !rewrite.is_null() {
        action["rewrite"] = rewrite;
    }
    gr(
        gateway,
        name,
        json!({"httpRoute": {"match": m, "action": action}}),
    )
}

/// `describe-virtual-service` output for a service provided by a node.
pub fn vs_node(name: &str, node: &str) -> Value {
    json!({"virtualService": {"meshName": MESH, "virtualServiceName": name,
        "spec": {"provider": {"virtualNode": {"virtualNodeName": node}}}}})
}

/// `describe-virtual-service` output for a service provided by a router.
pub fn vs_router(name: &str, router: &str) -> Value {
    json!({"virtualService": {"meshName": MESH, "virtualServiceName": name,
        "spec": {"provider": {"virtualRouter": {"virtualRouterName": router}}}}})
}

/// `describe-virtual-node` output: DNS `host`, one listener.
pub fn node(name: &str, host: &str, port: u16, protocol: &str) -> Value {
    json!({"virtualNode": {"meshName": MESH, "virtualNodeName": name, "spec": {
        "listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
        "serviceDiscovery": {"dns": {"hostname": host}}
    }}})
}

/// `describe-virtual-router` output with one listener.
pub fn router(name: &str, port: u16, protocol: &str) -> Value {
    json!({"virtualRouter": {"meshName": MESH, "virtualRouterName": name, "spec": {
        "listeners": [{"portMapping": {"port": port, "protocol": protocol}}]
    }}})
}

/// `describe-route` output.
pub fn rroute(router: &str, name: &str, spec: Value) -> Value {
    json!({"route": {"meshName": MESH, "virtualRouterName": router, "routeName": name, "spec": spec}})
}

/// A gateway `gw` with one route `r` (match `m`, rewrite) to `svc.local`, provided by node
/// `svc` on `svc.internal:8080`: the route made.
pub fn one_route(m: Value, rewrite: Value) -> (Import, portico_model::Route) {
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        ("r.json", http_gr("gw", "r", "svc.local", m, rewrite)),
        ("vs.json", vs_node("svc.local", "svc")),
        ("node.json", node("svc", "svc.internal", 8080, "http")),
    ]);
    let r = route(&imp, "gw.r").clone();
    (imp, r)
}

/// The path a request for `path` reaches the backend with, if `r` takes it: the model's
/// documented rewrite (a `prefix` match's prefix becomes `/`, or the value, one `/` dropped
/// where both sides have one; `false` keeps the path; `path` replaces it).
pub fn forwarded_path(r: &portico_model::Route, path: &str) -> Option<String> {
    use portico_model::{PathMatch, PrefixRewrite};
    let replace = |len: usize, with: &str| {
        let rest = &path[len..];
        let mut out = with.to_owned();
        if with.ends_with('/') && rest.starts_with('/') {
            out.push_str(&rest[1..]);
        } else {
            out.push_str(rest);
        }
        out
    };
    let rw = r.rewrite.clone().unwrap_or_default();
    let prefix_len = match &r.matches.path {
        None => None,
        Some(PathMatch::Prefix(p)) => {
            if !path.starts_with(p.as_str()) {
                return None;
            }
            Some(p.len())
        }
        Some(PathMatch::Exact(p)) => {
            if path != p {
                return None;
            }
            None
        }
        Some(PathMatch::Regex(x)) => {
            if !portico_model::validate::anchored_regex(x)
                .ok()?
                .is_match(path)
            {
                return None;
            }
            None
        }
        Some(PathMatch::PathPrefix(_)) => panic!("never made"),
    };
    Some(match (rw.path, rw.prefix, prefix_len) {
        (Some(p), _, _) => p,
        (None, Some(PrefixRewrite::Off), _) | (None, _, None) => path.to_owned(),
        (None, Some(PrefixRewrite::Value(v)), Some(n)) => replace(n, &v),
        (None, None, Some(n)) => replace(n, "/"),
    })
}
