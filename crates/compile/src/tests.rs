use super::*;
use portico_model::{Operation, PrefixRewrite};

fn api(name: &str, context: &str) -> ApiSpec {
    ApiSpec {
        name: name.into(),
        version: "v1".into(),
        context: context.into(),
        description: String::new(),
        hosts: vec![],
        production_endpoints: vec!["http://10.0.0.1:8080/api".into()],
        sandbox_endpoints: vec!["http://10.0.0.2:9090".into()],
        production_failover_endpoints: vec![],
        sandbox_failover_endpoints: vec![],
        endpoint_settings: None,
        backend_tls: None,
        operations: vec![],
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
    }
}

fn deployed<'a>(spec: &'a ApiSpec, id: &'a str) -> DeployedApi<'a> {
    DeployedApi {
        api_id: id,
        revision: 1,
        lifecycle: Lifecycle::Published,
        spec,
    }
}

fn build(kind: GatewayKind, apis: Vec<DeployedApi<'_>>) -> Snapshot {
    let gw = GatewaySpec::new("gw", kind);
    compile(&Input {
        apis,
        ..Input::new(&gw)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn each_gateway_type_gets_its_endpoints() {
    let a = api("Pets", "/pets/v1");
    let prod = build(GatewayKind::Production, vec![deployed(&a, "pets-v1")]);
    assert_eq!(prod.services[0].name, "api.pets-v1.production");
    assert_eq!(prod.services[0].endpoints[0].address, "10.0.0.1:8080");
    let sandbox = build(GatewayKind::Sandbox, vec![deployed(&a, "pets-v1")]);
    assert_eq!(sandbox.services[0].name, "api.pets-v1.sandbox");
    assert_eq!(sandbox.services[0].endpoints[0].address, "10.0.0.2:9090");
    let hybrid = build(GatewayKind::Hybrid, vec![deployed(&a, "pets-v1")]);
    assert_eq!(hybrid.services[0].endpoints[0].address, "10.0.0.1:8080");
    // The context is replaced by the backend's base path.
    let r = &prod.routes[0];
    assert_eq!(
        r.matches.path,
        Some(PathMatch::PathPrefix("/pets/v1".into()))
    );
    assert_eq!(
        r.rewrite.as_ref().and_then(|w| w.prefix.clone()),
        Some(PrefixRewrite::Value("/api".into()))
    );
    // No listener defined: one HTTP listener on 8080.
    assert_eq!(prod.listeners.len(), 1);
    assert_eq!(prod.listeners[0].port, DEFAULT_PORT);
}

#[test]
fn a_sandbox_gateway_without_sandbox_endpoints_answers_503() {
    let mut a = api("Pets", "/pets/v1");
    a.sandbox_endpoints.clear();
    let s = build(GatewayKind::Sandbox, vec![deployed(&a, "pets-v1")]);
    assert!(s.services.is_empty());
    assert_eq!(
        s.routes[0].fixed_response.as_ref().map(|f| f.status),
        Some(503)
    );
}

#[test]
fn operations_become_routes_with_methods_and_paths() {
    let mut a = api("Pets", "/pets/v1");
    a.operations = vec![
        Operation {
            method: Some("GET".into()),
            path: "/pets".into(),
            auth: None,
            scopes: vec![],
            tier: None,
        },
        Operation {
            method: None,
            path: "/stores".into(),
            auth: None,
            scopes: vec![],
            tier: None,
        },
    ];
    let s = build(GatewayKind::Production, vec![deployed(&a, "pets-v1")]);
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.routes[0].matches.methods, vec!["GET".to_owned()]);
    assert_eq!(
        s.routes[0].matches.path,
        Some(PathMatch::PathPrefix("/pets/v1/pets".into()))
    );
    assert_eq!(
        s.routes[0].rewrite.as_ref().and_then(|w| w.prefix.clone()),
        Some(PrefixRewrite::Value("/api/pets".into()))
    );
    assert!(s.routes[1].matches.methods.is_empty());
}

#[test]
fn output_is_deterministic_and_retired_apis_are_withdrawn() {
    let a = api("A", "/a");
    let b = api("B", "/b");
    let one = build(
        GatewayKind::Production,
        vec![deployed(&a, "a-v1"), deployed(&b, "b-v1")],
    );
    let two = build(
        GatewayKind::Production,
        vec![deployed(&b, "b-v1"), deployed(&a, "a-v1")],
    );
    assert_eq!(one.content_hash(), two.content_hash());
    let mut retired = deployed(&b, "b-v1");
    retired.lifecycle = Lifecycle::Retired;
    let three = build(GatewayKind::Production, vec![deployed(&a, "a-v1"), retired]);
    assert_eq!(three.routes.len(), 1);
    assert_ne!(three.content_hash(), one.content_hash());
}

#[test]
fn deprecated_apis_say_so_on_every_response() {
    let a = api("A", "/a");
    let mut d = deployed(&a, "a-v1");
    d.lifecycle = Lifecycle::Deprecated;
    let s = build(GatewayKind::Production, vec![d]);
    assert_eq!(
        s.routes[0]
            .response_headers
            .set
            .get("deprecation")
            .map(String::as_str),
        Some("true")
    );
}

#[test]
fn raw_routes_bring_their_services_and_missing_ones_are_named() {
    let route: RouteSpec = serde_json::from_str(
        r#"{"name":"mesh","gateways":["gw"],"route":{"match":{"path":{"prefix":"/m"}},"forward":{"service":"svc"}}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let gw = GatewaySpec::new("gw", GatewayKind::Production);
    let svc = Service::new("svc", ["127.0.0.1:9".to_owned()]);
    let other = Service::new("unused", ["127.0.0.1:10".to_owned()]);
    let services = [svc, other];
    let s = compile(&Input {
        routes: vec![&route],
        services: &services,
        ..Input::new(&gw)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.routes[0].name.as_deref(), Some("mesh"));
    let err = compile(&Input {
        routes: vec![&route],
        ..Input::new(&gw)
    });
    assert!(
        matches!(err, Err(Error::MissingService { ref service, .. }) if service == "svc"),
        "{err:?}"
    );
}

#[test]
fn https_backends_get_upstream_tls_with_the_apis_settings() {
    let mut a = api("Pets", "/pets/v1");
    a.production_endpoints = vec!["https://pets.internal/api".into()];
    let s = build(GatewayKind::Production, vec![deployed(&a, "pets-v1")]);
    assert_eq!(s.services[0].endpoints[0].address, "pets.internal:443");
    assert_eq!(s.services[0].tls, Some(Default::default()));
    a.backend_tls = Some(portico_model::UpstreamTls {
        server_name: Some("pets.example.com".into()),
        ..Default::default()
    });
    let s = build(GatewayKind::Production, vec![deployed(&a, "pets-v1")]);
    assert_eq!(
        s.services[0]
            .tls
            .as_ref()
            .and_then(|t| t.server_name.as_deref()),
        Some("pets.example.com")
    );
    // http:// backends stay cleartext.
    let s = build(GatewayKind::Sandbox, vec![deployed(&a, "pets-v1")]);
    assert_eq!(s.services[0].tls, None);
}

#[test]
fn mixed_schemes_and_tls_settings_for_cleartext_backends_are_refused() {
    let mut a = api("Pets", "/pets/v1");
    a.production_endpoints = vec!["https://a.internal".into(), "http://b.internal".into()];
    let e = a.validate().unwrap_err().to_string();
    assert!(e.contains("one scheme"), "{e}");
    let mut a = api("Pets", "/pets/v1");
    a.backend_tls = Some(Default::default());
    let e = a.validate().unwrap_err().to_string();
    assert!(e.contains("https://"), "{e}");
}

fn cert(hosts: &[&str], key: &str) -> portico_model::TlsCertificate {
    portico_model::TlsCertificate {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        cert_pem: Some(format!("cert for {key}")),
        key_pem: Some(key.to_owned()),
        ..Default::default()
    }
}

fn https_gateway(hosts: &[&str]) -> GatewaySpec {
    let mut gw = GatewaySpec::new("gw", GatewayKind::Production);
    gw.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
    let mut l = Listener::new(8443, ListenerProtocol::Http);
    l.tls = Some(portico_model::ListenerTls {
        certificates: vec![],
        client_ca_file: None,
        client_cert_required: true,
        acme: false,
    });
    gw.listeners = vec![l];
    gw
}

fn keys_in(s: &Snapshot) -> Vec<String> {
    s.listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| t.certificates.iter().filter_map(|c| c.key_pem.clone()))
        .collect()
}

#[test]
fn gateways_get_only_the_private_keys_of_names_they_serve() {
    let uploaded = [
        cert(&["a.example.com"], "key-a"),
        cert(&["*.b.example.com"], "key-b"),
    ];
    let gw = https_gateway(&["a.example.com"]);
    let s = compile(&Input {
        certificates: &uploaded,
        acme_certificates: &uploaded,
        ..Input::new(&gw)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys_in(&s), vec!["key-a".to_owned()]);
    let gw = https_gateway(&["x.b.example.com"]);
    let s = compile(&Input {
        certificates: &uploaded,
        ..Input::new(&gw)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys_in(&s), vec!["key-b".to_owned()]);
    // A gateway serving no names gets no key at all, and is told why.
    let gw = https_gateway(&[]);
    let e = compile(&Input {
        certificates: &uploaded,
        ..Input::new(&gw)
    })
    .err()
    .unwrap_or_else(|| panic!("a host-less HTTPS gateway compiled"));
    assert!(e.to_string().contains("serves no host names"), "{e}");
    // With automatic certificates it compiles, still without anyone's key.
    let mut gw = https_gateway(&[]);
    if let Some(t) = gw.listeners[0].tls.as_mut() {
        t.acme = true;
    }
    let s = compile(&Input {
        certificates: &uploaded,
        acme_certificates: &uploaded,
        ..Input::new(&gw)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(keys_in(&s).is_empty());
}

#[test]
fn the_portal_origin_reaches_the_snapshot_and_marks_only_api_routes() {
    let mut a = api("Pets", "/pets/v1");
    a.operations = vec![Operation {
        method: Some("GET".into()),
        path: "/pets".into(),
        auth: None,
        scopes: vec![],
        tier: None,
    }];
    let route: RouteSpec = serde_json::from_str(
        r#"{"name":"mesh","gateways":["gw"],"route":{"match":{"path":{"prefix":"/m"}},"forward":{"service":"svc"}}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let services = [Service::new("svc", ["127.0.0.1:9".to_owned()])];
    let gw = GatewaySpec::new("gw", GatewayKind::Production);
    let input = |portal_origin| Input {
        apis: vec![deployed(&a, "pets-v1")],
        routes: vec![&route],
        services: &services,
        portal_origin,
        ..Input::new(&gw)
    };
    let without = compile(&input(None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(without.portal, None);
    assert!(without.routes.iter().all(|r| !r.try_out));
    let with =
        compile(&input(Some("https://portal.example.com"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        with.portal.as_ref().map(|p| p.origin.as_str()),
        Some("https://portal.example.com")
    );
    let marked: Vec<(&str, bool)> = with
        .routes
        .iter()
        .map(|r| (r.name.as_deref().unwrap_or(""), r.try_out))
        .collect();
    assert_eq!(marked, [("api.pets-v1.0", true), ("mesh", false)]);
    // The operation's method list is left alone: preflights are routed by the method they
    // ask for at the gateway.
    assert_eq!(with.routes[0].matches.methods, ["GET"]);
    // The origin is content: another origin, another hash.
    let other =
        compile(&input(Some("https://other.example.com"))).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(with.content_hash(), without.content_hash());
    assert_ne!(with.content_hash(), other.content_hash());
}
