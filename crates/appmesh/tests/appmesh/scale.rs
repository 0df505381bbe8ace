//! A large mesh imports: 500 gateway routes, 200 virtual nodes, 20 routers (timed by the
//! `import` bench, not here).

use portico_appmesh::{Source, import};
use serde_json::json;

use crate::common::*;

/// The generated mesh, one file per kind (arrays of describe outputs).
pub fn generated_mesh() -> Vec<Source> {
    let nodes: Vec<_> = (0..200)
        .map(|i| {
            node(
                &format!("node-{i}"),
                &format!("node-{i}.svc.cluster.local"),
                8080,
                "http",
            )
        })
        .collect();
    let mut services: Vec<_> = (0..200)
        .map(|i| vs_node(&format!("svc-{i}.local"), &format!("node-{i}")))
        .collect();
    let mut routers = Vec::new();
    for k in 0..20 {
        services.push(vs_router(
            &format!("router-{k}.local"),
            &format!("router-{k}"),
        ));
        routers.push(router(&format!("router-{k}"), 8080, "http"));
        for (n, prefix) in ["/read", "/write", "/"].iter().enumerate() {
            routers.push(rroute(
                &format!("router-{k}"),
                &format!("r{n}"),
                json!({"priority": n, "httpRoute": {
                    "match": {"prefix": prefix, "headers": [{"name": "x-shard", "match": {"range": {"start": 0, "end": 100}}}]},
                    "action": {"weightedTargets": [
                        {"virtualNode": format!("node-{}", (k * 3 + n) % 200), "weight": 70},
                        {"virtualNode": format!("node-{}", (k * 3 + n + 1) % 200), "weight": 30}
                    ]},
                    "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "s", "value": 1}, "httpRetryEvents": ["gateway-error"]}
                }}),
            ));
        }
    }
    let routes: Vec<_> = (0..500)
        .map(|j| {
            let target = if j % 25 == 0 {
                format!("router-{}.local", (j / 25) % 20)
            } else {
                format!("svc-{}.local", j % 200)
            };
            gr(
                "edge",
                &format!("route-{j}"),
                json!({"priority": j % 1000, "httpRoute": {
                    "match": {"prefix": format!("/s{j}/"), "method": "GET"},
                    "action": {"target": {"virtualService": {"virtualServiceName": target}}}
                }}),
            )
        })
        .collect();
    vec![
        Source::new("gateway.json", http_gateway("edge").to_string()),
        Source::new("gateway-routes.json", json!(routes).to_string()),
        Source::new("virtual-services.json", json!(services).to_string()),
        Source::new("routers.json", json!(routers).to_string()),
        Source::new("virtual-nodes.json", json!(nodes).to_string()),
    ]
}

#[test]
fn five_hundred_gateway_routes_and_two_hundred_nodes_import() {
    let imp = checked(import(&generated_mesh()).expect("imports"));
    // 480 straight routes; 20 through routers, each 3 router routes and a fallback.
    assert_eq!(imp.objects.routes.len(), 480 + 20 * 4);
    assert!(imp.objects.services.len() >= 200);
    let file = imp.gateway_file("edge").expect("gateway file");
    assert_eq!(file.routes.len(), imp.objects.routes.len());
}
