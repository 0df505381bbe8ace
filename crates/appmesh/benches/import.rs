//! Importing a generated mesh: one virtual gateway with 500 gateway routes (20 of them
//! through virtual routers of 3 routes each), 220 virtual services and 200 virtual nodes.
//! The baseline beside it only parses the same JSON: the floor any import pays.

#![allow(missing_docs)] // criterion_group! makes an undocumented function

use criterion::{Criterion, criterion_group, criterion_main};
use portico_appmesh::{Source, import};
use serde_json::{Value, json};

const MESH: &str = "bench";

fn node(i: usize) -> Value {
    json!({"virtualNode": {"meshName": MESH, "virtualNodeName": format!("node-{i}"), "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
            "healthCheck": {"protocol": "http", "path": "/ping", "healthyThreshold": 2, "unhealthyThreshold": 3, "timeoutMillis": 2000, "intervalMillis": 5000}}],
        "serviceDiscovery": {"dns": {"hostname": format!("node-{i}.svc.cluster.local")}}
    }}})
}

fn mesh() -> Vec<Source> {
    let nodes: Vec<Value> = (0..200).map(node).collect();
    let mut services: Vec<Value> = (0..200)
        .map(|i| json!({"virtualService": {"meshName": MESH, "virtualServiceName": format!("svc-{i}.local"),
            "spec": {"provider": {"virtualNode": {"virtualNodeName": format!("node-{i}")}}}}}))
        .collect();
    let mut routers = Vec::new();
    for k in 0..20 {
        services.push(json!({"virtualService": {"meshName": MESH, "virtualServiceName": format!("router-{k}.local"),
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": format!("router-{k}")}}}}}));
        routers.push(
            json!({"virtualRouter": {"meshName": MESH, "virtualRouterName": format!("router-{k}"),
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}}),
        );
        for (n, prefix) in ["/read", "/write", "/"].iter().enumerate() {
            routers.push(json!({"route": {"meshName": MESH, "virtualRouterName": format!("router-{k}"), "routeName": format!("r{n}"),
                "spec": {"priority": n, "httpRoute": {
                    "match": {"prefix": prefix, "headers": [{"name": "x-shard", "match": {"range": {"start": 0, "end": 100}}}]},
                    "action": {"weightedTargets": [
                        {"virtualNode": format!("node-{}", (k * 3 + n) % 200), "weight": 70},
                        {"virtualNode": format!("node-{}", (k * 3 + n + 1) % 200), "weight": 30}]},
                    "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "s", "value": 1}, "httpRetryEvents": ["gateway-error"]}}}}}));
        }
    }
    let routes: Vec<Value> = (0..500)
        .map(|j| {
            let target = if j % 25 == 0 {
                format!("router-{}.local", (j / 25) % 20)
            } else {
                format!("svc-{}.local", j % 200)
            };
            json!({"gatewayRoute": {"meshName": MESH, "virtualGatewayName": "edge", "gatewayRouteName": format!("route-{j}"),
                "spec": {"priority": j, "httpRoute": {
                    "match": {"prefix": format!("/s{j}/"), "method": "GET"},
                    "action": {"target": {"virtualService": {"virtualServiceName": target}}}}}}})
        })
        .collect();
    let gateway = json!({"virtualGateway": {"meshName": MESH, "virtualGatewayName": "edge",
        "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}});
    vec![
        Source::new("gateway.json", gateway.to_string()),
        Source::new("gateway-routes.json", json!(routes).to_string()),
        Source::new("virtual-services.json", json!(services).to_string()),
        Source::new("routers.json", json!(routers).to_string()),
        Source::new("virtual-nodes.json", json!(nodes).to_string()),
    ]
}

fn bench(c: &mut Criterion) {
    let sources = mesh();
    let routes = import(&sources)
        .map(|i| i.objects.routes.len())
        .unwrap_or(0);
    assert_eq!(routes, 480 + 20 * 4, "the generated mesh imports");
    c.bench_function("parse the mesh's JSON only (baseline)", |b| {
        b.iter(|| {
            sources
                .iter()
                .map(|s| {
                    serde_json::from_str::<Value>(&s.text)
                        .map(|_| 1)
                        .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    c.bench_function("import 500 gateway routes, 200 nodes", |b| {
        b.iter(|| {
            import(&sources)
                .map(|i| i.objects.routes.len())
                .unwrap_or(0)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
