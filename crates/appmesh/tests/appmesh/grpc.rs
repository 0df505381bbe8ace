//! gRPC: gateway routes by service and metadata, router routes by method, gRPC nodes.

use portico_appmesh::Outcome;
use portico_model::{GrpcMatch, HealthProtocol, UpstreamProtocol};

use crate::common::*;

#[test]
fn grpc_routes_by_service_and_method() {
    let imp = import_fixture("grpc/mesh.json");
    let gw = &imp.objects.gateways[0];
    assert_eq!(gw.name, "grpc-gw");
    assert_eq!(
        gw.listeners[0].protocol,
        portico_model::ListenerProtocol::Grpc
    );
    assert_eq!(gw.listeners[0].port, 50051);
    reported(
        &imp,
        Outcome::NotCarried,
        ".listeners[0].connectionPool",
        "per service",
    );

    // By service, straight to a node, the client's Host kept.
    let orders = route(&imp, "grpc-gw.orders");
    assert_eq!(
        orders.matches.grpc,
        Some(GrpcMatch {
            service: Some("store.Orders".into()),
            method: None
        })
    );
    assert!(orders.rewrite.is_none(), "no rewrite at all");
    assert_eq!(orders.matches.path, None);

    // Through the router: the method is the router route's, the metadata the gateway's.
    let list = route(&imp, "grpc-gw.catalog.list");
    assert_eq!(
        list.matches.grpc,
        Some(GrpcMatch {
            service: Some("store.Catalog".into()),
            method: Some("List".into())
        })
    );
    assert_eq!(list.matches.headers[0].name, "x-region");
    assert_eq!(list.matches.headers[0].prefix.as_deref(), Some("eu-"));
    assert_eq!(list.timeout, Some(portico_model::Duration::from_secs(5)));
    let rest = route(&imp, "grpc-gw.catalog.rest");
    assert_eq!(
        rest.matches.grpc.as_ref().and_then(|g| g.method.clone()),
        None
    );
    assert!(list.priority < rest.priority);
    // Another service than the gateway route's can never be reached through it.
    assert!(
        imp.objects
            .routes
            .iter()
            .all(|r| r.name != "grpc-gw.catalog.other-service")
    );
    reported(
        &imp,
        Outcome::NotCarried,
        "$[8].spec.grpcRoute",
        "gRPC service",
    );
    reported(
        &imp,
        Outcome::NotCarried,
        ".grpcRetryEvents[0]",
        "gRPC status",
    );

    // gRPC nodes and their health checks.
    let catalog = service(&imp, "catalog");
    assert_eq!(catalog.protocol, UpstreamProtocol::Grpc);
    assert_eq!(
        catalog.endpoints[0].address,
        "catalog.store.svc.cluster.local:50051"
    );
    let hc = catalog.health_check.as_ref().expect("health check");
    assert_eq!(hc.protocol, HealthProtocol::Grpc);
    assert_eq!(catalog.connection_pool.max_requests, Some(100));
    let orders_svc = service(&imp, "orders");
    let hc = orders_svc.health_check.as_ref().expect("health check");
    assert_eq!(hc.protocol, HealthProtocol::Tcp);
    assert_eq!(hc.path, None, "App Mesh ignores the path of a tcp check");
    assert_eq!(hc.port, Some(8081));
    assert_eq!(hc.interval, portico_model::Duration::from_secs(10));
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (3, 5));
    assert_eq!(orders_svc.hostname, None);
    reported(&imp, Outcome::Changed, ".dns.ipPreference", "IPv4");
}
