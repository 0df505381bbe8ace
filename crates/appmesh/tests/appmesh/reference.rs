//! The App Mesh user guide's own example, end to end.

use portico_model::{GrpcMatch, ListenerProtocol, PathMatch, UpstreamProtocol};

use crate::common::*;

#[test]
fn the_guide_s_grpc_gateway_imports() {
    let imp = import_fixture("reference/grpc");
    let gw = &imp.objects.gateways[0];
    assert_eq!(gw.name, "myVirtualGateway");
    assert_eq!(
        (gw.listeners[0].port, gw.listeners[0].protocol),
        (80, ListenerProtocol::Grpc)
    );
    let r = route(&imp, "myVirtualGateway.myGatewayRoute");
    assert_eq!(
        r.matches.grpc,
        Some(GrpcMatch {
            service: Some("myservicea.svc.cluster.local".into()),
            method: None
        })
    );
    assert_eq!(
        r.forward
            .as_ref()
            .and_then(|f| f.service.clone())
            .as_deref(),
        Some("myservicea")
    );
    let s = service(&imp, "myservicea");
    assert_eq!(s.protocol, UpstreamProtocol::Grpc);
    assert_eq!(s.endpoints[0].address, "myservicea.svc.cluster.local:8080");
    assert_eq!(s.hostname.as_deref(), Some("myservicea.svc.cluster.local"));
    imp.gateway_file("myVirtualGateway").expect("gateway file");
}

#[test]
fn the_guide_s_http_gateways_import() {
    for (dir, protocol) in [
        ("reference/http2", ListenerProtocol::Http2),
        ("reference/http", ListenerProtocol::Http),
    ] {
        let imp = import_fixture(dir);
        assert_eq!(
            imp.objects.gateways[0].listeners[0].protocol, protocol,
            "{dir}"
        );
        let r = route(&imp, "myVirtualGateway.myGatewayRoute");
        assert_eq!(r.matches.path, Some(PathMatch::Prefix("/".into())), "{dir}");
        // "A request to www.example.com/chapter/page ... would be rewritten to
        // myservicea.svc.cluster.local/chapter/page."
        assert_eq!(
            forwarded_path(r, "/chapter/page").as_deref(),
            Some("/chapter/page")
        );
        assert!(r.rewrite.as_ref().is_some_and(|w| w.host_to_target));
        assert_eq!(
            service(&imp, "myservicea").hostname.as_deref(),
            Some("myservicea.svc.cluster.local")
        );
        let file = imp.gateway_file("myVirtualGateway").expect("gateway file");
        assert_eq!(file.routes.len(), 1);
        assert_eq!(file.services.len(), 1);
    }
}

#[test]
fn the_three_together_conflict() {
    let sources = portico_appmesh::read_path(&fixture("reference")).expect("reads");
    assert!(matches!(
        portico_appmesh::import(&sources),
        Err(portico_appmesh::Error::Conflict { .. })
    ));
}
