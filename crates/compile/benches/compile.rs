//! Compiling a gateway's snapshot with 5,000 routes (1,000 APIs of 5 operations).

#![allow(missing_docs)] // criterion_group! makes an undocumented function

use criterion::{Criterion, criterion_group, criterion_main};
use portico_compile::{DeployedApi, Input, compile};
use portico_model::{ApiSpec, GatewayKind, GatewaySpec, Lifecycle, Operation};

fn apis(n: usize) -> Vec<(String, ApiSpec)> {
    (0..n)
        .map(|i| {
            let spec = ApiSpec {
                name: format!("api{i}"),
                version: "v1".into(),
                context: format!("/api{i}/v1"),
                description: String::new(),
                hosts: vec![format!("h{}.example.com", i % 50)],
                production_endpoints: vec![format!(
                    "http://10.0.{}.{}:8080/base",
                    i / 250,
                    i % 250
                )],
                sandbox_endpoints: vec![],
                production_failover_endpoints: vec![],
                sandbox_failover_endpoints: vec![],
                endpoint_settings: None,
                backend_tls: None,
                operations: (0..5)
                    .map(|o| Operation {
                        method: Some(["GET", "POST", "PUT", "DELETE", "PATCH"][o].into()),
                        path: format!("/res{o}"),
                        auth: None,
                        scopes: vec![],
                        tier: None,
                    })
                    .collect(),
                auth: Default::default(),
                api_key_header: None,
                api_key_query: None,
                cors: None,
                tier: None,
                ip: None,
                visibility: Default::default(),
                visible_roles: vec![],
                subscription_tiers: vec![],
                openapi: None,
            };
            (spec.id(), spec)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let gw = GatewaySpec::new("gw", GatewayKind::Production);
    let defs = apis(1000);
    c.bench_function("compile 5,000 routes", |b| {
        b.iter(|| {
            let input = Input {
                apis: defs
                    .iter()
                    .map(|(id, spec)| DeployedApi {
                        api_id: id,
                        revision: 1,
                        lifecycle: Lifecycle::Published,
                        spec,
                    })
                    .collect(),
                ..Input::new(&gw)
            };
            let s = compile(&input).unwrap_or_default();
            assert_eq!(s.routes.len(), 5000);
            s.content_hash()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
