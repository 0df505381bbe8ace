//! A whole mesh read from a directory of CLI outputs in every shape.

use portico_appmesh::Outcome;
use portico_model::{PathMatch, PrefixRewrite, UpstreamProtocol};

use crate::common::*;

#[test]
fn the_shop_mesh_imports() {
    let imp = import_fixture("shop");
    let names: Vec<&str> = imp.objects.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ingress-gw.api.canary",
            "ingress-gw.api.split",
            "ingress-gw.secure",
            "ingress-gw.web"
        ]
    );
    assert!(
        imp.objects
            .routes
            .iter()
            .all(|r| r.gateways == ["ingress-gw"])
    );
    // The catch-all web route: the path as it came, the virtual service's name as Host.
    let web = route(&imp, "ingress-gw.web");
    assert_eq!(web.matches.path, Some(PathMatch::Prefix("/".into())));
    assert_eq!(forwarded_path(web, "/cart/1").as_deref(), Some("/cart/1"));
    assert_eq!(
        service(&imp, "web").hostname.as_deref(),
        Some("web.shop.local")
    );
    // Gateway priority 100 after 10 and 20.
    let p = |n: &str| route(&imp, n).priority.expect("priority");
    assert!(p("ingress-gw.api.canary") < p("ingress-gw.api.split"));
    assert!(p("ingress-gw.api.split") < p("ingress-gw.secure"));
    assert!(p("ingress-gw.secure") < p("ingress-gw.web"));
    // api: host and prefix from the gateway route, the rest from the router's routes.
    let canary = route(&imp, "ingress-gw.api.canary");
    assert_eq!(canary.matches.hosts, ["api.example.com"]);
    assert_eq!(
        canary.matches.path,
        Some(PathMatch::Prefix("/api/orders".into()))
    );
    assert_eq!(
        forwarded_path(canary, "/api/orders/7").as_deref(),
        Some("/orders/7")
    );
    let split = route(&imp, "ingress-gw.api.split");
    assert_eq!(split.timeout, Some(portico_model::Duration::from_secs(30)));
    let weights: Vec<u32> = split
        .forward
        .as_ref()
        .expect("forward")
        .targets
        .iter()
        .map(|t| t.weight)
        .collect();
    assert_eq!(weights, [90, 10]);
    let v1 = service(&imp, "api-v1");
    assert_eq!(v1.protocol, UpstreamProtocol::Http2);
    assert_eq!(v1.retries.attempts, 3);
    assert_eq!(v1.retries.statuses, [502, 503, 504]);
    assert_eq!(v1.connection_pool.max_requests, Some(256));
    // secure: the path and Host kept; TLS from the gateway's client policy (port 8443).
    let secure = route(&imp, "ingress-gw.secure");
    let rw = secure.rewrite.as_ref().expect("rewrite");
    assert_eq!(rw.prefix, Some(PrefixRewrite::Off));
    assert!(!rw.host_to_target);
    let tls = service(&imp, "secure").tls.as_ref().expect("TLS");
    assert_eq!(tls.ca_file.as_deref(), Some("/etc/appmesh/ca.pem"));
    assert_eq!(tls.server_name.as_deref(), Some("secure.shop.local"));
    assert!(
        service(&imp, "web").tls.is_none(),
        "port 8080 is not in the policy's ports"
    );
    // web's listener policies.
    let s = service(&imp, "web");
    let hc = s.health_check.as_ref().expect("health check");
    assert_eq!(hc.path.as_deref(), Some("/healthz"));
    assert_eq!(hc.interval, portico_model::Duration::from_secs(5));
    assert_eq!(s.outlier_detection.consecutive_failures, 5);
    assert_eq!(s.outlier_detection.max_ejection_percent, 50);
    assert_eq!(
        s.outlier_detection.base_ejection_time,
        portico_model::Duration::from_secs(30)
    );
    assert_eq!(s.connection_pool.max_connections, Some(100));
    assert_eq!(s.connection_pool.max_pending_requests, Some(50));
    assert_eq!(s.request_timeout, portico_model::Duration::from_secs(15));
    // A gateway file for the gateway: everything it serves, logging to standard output.
    let file = imp.gateway_file("ingress-gw").expect("gateway file");
    assert_eq!(file.node.access_log.path, "-");
    assert_eq!(file.routes.len(), 4);
    assert_eq!(file.listeners.len(), 1);
    // What is not carried, said.
    reported(
        &imp,
        Outcome::NotCarried,
        "$.virtualNodes[1]",
        "listed only",
    );
    reported(&imp, Outcome::NotCarried, "$.tags", "tags");
    reported(&imp, Outcome::NotCarried, "$.spec.backends", "outbound");
    reported(
        &imp,
        Outcome::Changed,
        ".listeners[0].healthCheck",
        "/healthz",
    );
    reported(
        &imp,
        Outcome::NotCarried,
        "$.virtualService",
        "no gateway route sends to it",
    );
    reported(&imp, Outcome::Changed, ".responseType", "LOADBALANCER");
}
