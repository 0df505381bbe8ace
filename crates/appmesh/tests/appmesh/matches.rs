//! Every gateway route match kind and rewrite, one by one.

use portico_appmesh::Outcome;
use portico_model::{HeaderMatch, PathMatch, PrefixRewrite, QueryMatch};
use serde_json::{Value, json};

use crate::common::*;

#[test]
fn prefix_becomes_a_prefix_match_with_app_mesh_s_default_rewrite() {
    let (imp, r) = one_route(json!({"prefix": "/chapter"}), Value::Null);
    assert_eq!(r.matches.path, Some(PathMatch::Prefix("/chapter".into())));
    let rw = r.rewrite.expect("rewrite");
    assert_eq!(
        rw.prefix, None,
        "Portico's default: the matched prefix becomes `/`"
    );
    assert!(rw.host_to_target);
    assert_eq!(
        service(&imp, "svc").hostname.as_deref(),
        Some("svc.local"),
        "the virtual service's name is sent as Host"
    );
    assert_eq!(r.forward.and_then(|f| f.service).as_deref(), Some("svc"));
}

#[test]
fn the_user_guide_s_examples_hold() {
    // "If the prefix in the gateway route example were /chapter ... a request to
    // www.example.com/chapter/page would be re-written to myservicea.svc.cluster.local/page;
    // a request to www.example.com/chapter1 would be rewritten to .../1".
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        (
            "r.json",
            http_gr(
                "gw",
                "r",
                "myservicea.svc.cluster.local",
                json!({"prefix": "/chapter"}),
                Value::Null,
            ),
        ),
        (
            "vs.json",
            vs_node("myservicea.svc.cluster.local", "myservicea"),
        ),
        (
            "node.json",
            node("myservicea", "myservicea.internal", 80, "http"),
        ),
    ]);
    let r = route(&imp, "gw.r");
    assert_eq!(forwarded_path(r, "/chapter/page").as_deref(), Some("/page"));
    assert_eq!(forwarded_path(r, "/chapter1").as_deref(), Some("/1"));
    assert_eq!(forwarded_path(r, "/other"), None);
    assert!(r.rewrite.as_ref().is_some_and(|w| w.host_to_target));
    assert_eq!(
        service(&imp, "myservicea").hostname.as_deref(),
        Some("myservicea.svc.cluster.local")
    );
    // The prefix `/`: every path as it came.
    let (_, r) = one_route(json!({"prefix": "/"}), Value::Null);
    assert_eq!(
        forwarded_path(&r, "/chapter/page").as_deref(),
        Some("/chapter/page")
    );
}

#[test]
fn path_exact_and_regex() {
    let (_, r) = one_route(json!({"path": {"exact": "/health"}}), Value::Null);
    assert_eq!(r.matches.path, Some(PathMatch::Exact("/health".into())));
    let (_, r) = one_route(json!({"path": {"regex": "/items/[0-9]+"}}), Value::Null);
    assert_eq!(
        r.matches.path,
        Some(PathMatch::Regex("/items/[0-9]+".into()))
    );
    assert_eq!(
        forwarded_path(&r, "/items/42").as_deref(),
        Some("/items/42")
    );
    assert_eq!(forwarded_path(&r, "/items/x"), None);
}

#[test]
fn hostnames_exact_and_suffix() {
    let (_, r) = one_route(
        json!({"hostname": {"exact": "www.example.com"}}),
        Value::Null,
    );
    assert_eq!(r.matches.hosts, ["www.example.com"]);
    assert_eq!(r.matches.path, None);
    let (imp, r) = one_route(json!({"hostname": {"suffix": ".example.com"}}), Value::Null);
    assert_eq!(r.matches.hosts, ["*.example.com"]);
    assert!(items(&imp, Outcome::Changed, ".hostname.suffix").is_empty());
    // Not on a label boundary: App Mesh also takes `myexample.com`; reported.
    let (imp, r) = one_route(json!({"hostname": {"suffix": "example.com"}}), Value::Null);
    assert_eq!(r.matches.hosts, ["*.example.com"]);
    reported(
        &imp,
        Outcome::Changed,
        ".match.hostname.suffix",
        "myexample.com",
    );
}

#[test]
fn headers_of_every_kind_and_inverted() {
    let (_, r) = one_route(
        json!({"prefix": "/", "headers": [
            {"name": "x-exact", "match": {"exact": "a"}},
            {"name": "x-prefix", "match": {"prefix": "b"}},
            {"name": "x-suffix", "match": {"suffix": "c"}, "invert": true},
            {"name": "x-regex", "match": {"regex": "d[0-9]"}},
            {"name": "x-range", "match": {"range": {"start": 10, "end": 20}}},
            {"name": "x-present"},
            {"name": "x-absent", "invert": true}
        ]}),
        Value::Null,
    );
    let h = |name: &str| -> HeaderMatch {
        r.matches
            .headers
            .iter()
            .find(|h| h.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(h("x-exact").exact.as_deref(), Some("a"));
    assert_eq!(h("x-prefix").prefix.as_deref(), Some("b"));
    assert_eq!(h("x-suffix").suffix.as_deref(), Some("c"));
    assert!(h("x-suffix").invert);
    assert_eq!(h("x-regex").regex.as_deref(), Some("d[0-9]"));
    assert!(h("x-present").present && !h("x-present").invert);
    assert!(h("x-absent").present && h("x-absent").invert);
    // The range as an exact regex: 10 to 19, with the forms Envoy reads as numbers.
    let re = portico_model::validate::anchored_regex(h("x-range").regex.as_deref().expect("regex"))
        .expect("compiles");
    for (v, hit) in [
        ("10", true),
        ("19", true),
        ("015", true),
        ("+12", true),
        ("20", false),
        ("9", false),
        ("1x", false),
    ] {
        assert_eq!(re.is_match(v), hit, "{v}");
    }
}

#[test]
fn query_parameters_and_method() {
    let (imp, r) = one_route(
        json!({"prefix": "/", "method": "POST", "queryParameters": [
            {"name": "version", "match": {"exact": "2"}},
            {"name": "debug"}
        ]}),
        Value::Null,
    );
    assert_eq!(r.matches.methods, ["POST"]);
    assert_eq!(
        r.matches.query,
        [
            QueryMatch {
                name: "version".into(),
                exact: Some("2".into()),
                ..QueryMatch::default()
            },
            QueryMatch {
                name: "debug".into(),
                present: true,
                ..QueryMatch::default()
            }
        ]
    );
    reported(&imp, Outcome::Changed, ".queryParameters[1]", "present");
}

#[test]
fn a_port_match_binds_the_route_to_that_listener() {
    let gw = vgw(
        "gw",
        json!({"listeners": [
            {"portMapping": {"port": 8080, "protocol": "http"}},
            {"portMapping": {"port": 9090, "protocol": "http"}}
        ]}),
    );
    let imp = import_values(&[
        ("gw.json", gw),
        (
            "only.json",
            http_gr(
                "gw",
                "only",
                "svc.local",
                json!({"prefix": "/a", "port": 9090}),
                Value::Null,
            ),
        ),
        (
            "any.json",
            http_gr(
                "gw",
                "any",
                "svc.local",
                json!({"prefix": "/b"}),
                Value::Null,
            ),
        ),
        ("vs.json", vs_node("svc.local", "svc")),
        ("node.json", node("svc", "svc.internal", 8080, "http")),
    ]);
    // On every listener: in the apply document, naming none.
    assert!(route(&imp, "gw.any").listeners.is_empty());
    // On one: bound to that listener, in the apply document (the gateway compiles it
    // against its listeners) and in a gateway file alike.
    assert_eq!(route(&imp, "gw.only").listeners, ["http-9090"]);
    let spec = imp
        .objects
        .routes
        .iter()
        .find(|r| r.name == "gw.only")
        .unwrap();
    spec.validate()
        .expect("a route definition may name listeners");
    let file = imp.gateway_file("gw").expect("gateway file");
    let only = file
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("gw.only"))
        .expect("in the gateway file");
    assert_eq!(only.listeners, ["http-9090"]);
    assert!(
        !imp.report
            .items
            .iter()
            .any(|i| i.file == "only.json" && i.outcome == Outcome::NotCarried),
        "{}",
        imp.report
    );
}

#[test]
fn a_route_of_another_protocol_than_the_listener_is_not_carried() {
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        (
            "r.json",
            gr(
                "gw",
                "r",
                json!({"http2Route": {"match": {"prefix": "/"}, "action": {"target": {"virtualService": {"virtualServiceName": "svc.local"}}}}}),
            ),
        ),
        ("vs.json", vs_node("svc.local", "svc")),
        ("node.json", node("svc", "svc.internal", 8080, "http")),
    ]);
    assert!(imp.objects.routes.is_empty());
    reported(
        &imp,
        Outcome::NotCarried,
        ".spec.http2Route",
        "no http2 listener",
    );
}

#[test]
fn rewrites_default_and_overridden() {
    // defaultPrefix DISABLED: the path is kept.
    let (_, r) = one_route(
        json!({"prefix": "/keep"}),
        json!({"prefix": {"defaultPrefix": "DISABLED"}}),
    );
    assert_eq!(
        r.rewrite.as_ref().and_then(|w| w.prefix.clone()),
        Some(PrefixRewrite::Off)
    );
    assert_eq!(forwarded_path(&r, "/keep/x").as_deref(), Some("/keep/x"));
    // defaultPrefix ENABLED is the default.
    let (_, r) = one_route(
        json!({"prefix": "/chapter"}),
        json!({"prefix": {"defaultPrefix": "ENABLED"}}),
    );
    assert_eq!(r.rewrite.as_ref().and_then(|w| w.prefix.clone()), None);
    // A value replaces the prefix.
    let (_, r) = one_route(
        json!({"prefix": "/v1/"}),
        json!({"prefix": {"value": "/v2/"}}),
    );
    assert_eq!(
        r.rewrite.as_ref().and_then(|w| w.prefix.clone()),
        Some(PrefixRewrite::Value("/v2/".into()))
    );
    assert_eq!(
        forwarded_path(&r, "/v1/users").as_deref(),
        Some("/v2/users")
    );
    // A path match rewritten to another path.
    let (_, r) = one_route(
        json!({"path": {"exact": "/old"}}),
        json!({"path": {"exact": "/new"}}),
    );
    assert_eq!(
        r.rewrite.as_ref().and_then(|w| w.path.clone()).as_deref(),
        Some("/new")
    );
    assert_eq!(forwarded_path(&r, "/old").as_deref(), Some("/new"));
    // The client's Host kept.
    let (imp, r) = one_route(
        json!({"prefix": "/"}),
        json!({"hostname": {"defaultTargetHostname": "DISABLED"}}),
    );
    assert!(!r.rewrite.as_ref().is_some_and(|w| w.host_to_target));
    assert_eq!(service(&imp, "svc").hostname, None);
    // ENABLED, explicitly.
    let (_, r) = one_route(
        json!({"prefix": "/"}),
        json!({"hostname": {"defaultTargetHostname": "ENABLED"}}),
    );
    assert!(r.rewrite.as_ref().is_some_and(|w| w.host_to_target));
}

#[test]
fn priorities_are_kept_when_no_router_is_involved() {
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        (
            "a.json",
            gr(
                "gw",
                "a",
                json!({"priority": 7, "httpRoute": {"match": {"prefix": "/a"}, "action": {"target": {"virtualService": {"virtualServiceName": "svc.local"}}}}}),
            ),
        ),
        (
            "b.json",
            http_gr("gw", "b", "svc.local", json!({"prefix": "/b"}), Value::Null),
        ),
        ("vs.json", vs_node("svc.local", "svc")),
        ("node.json", node("svc", "svc.internal", 8080, "http")),
    ]);
    assert_eq!(route(&imp, "gw.a").priority, Some(7));
    assert_eq!(route(&imp, "gw.b").priority, None);
}

#[test]
fn two_virtual_services_of_one_node_send_their_own_names_as_host() {
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        (
            "a.json",
            http_gr("gw", "a", "a.local", json!({"prefix": "/a"}), Value::Null),
        ),
        (
            "b.json",
            http_gr("gw", "b", "b.local", json!({"prefix": "/b"}), Value::Null),
        ),
        ("vsa.json", vs_node("a.local", "svc")),
        ("vsb.json", vs_node("b.local", "svc")),
        ("node.json", node("svc", "svc.internal", 8080, "http")),
    ]);
    let host = |route_name: &str| {
        let s = route(&imp, route_name)
            .forward
            .as_ref()
            .and_then(|f| f.service.clone())
            .expect("a service");
        service(&imp, &s).hostname.clone()
    };
    assert_eq!(host("gw.a").as_deref(), Some("a.local"));
    assert_eq!(host("gw.b").as_deref(), Some("b.local"));
    assert_eq!(
        imp.objects.services.len(),
        2,
        "the node's service and a copy"
    );
}
