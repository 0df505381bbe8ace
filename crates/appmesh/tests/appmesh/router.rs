//! Gateway routes through virtual routers: one Portico route per router route, conditions
//! combined, weights, retries and timeouts carried, order kept.

use portico_appmesh::Outcome;
use portico_model::{PathMatch, Target};
use serde_json::{Value, json};

use crate::common::*;

fn weighted(targets: Value, m: Value, extra: Value) -> Value {
    let mut route = json!({"match": m, "action": {"weightedTargets": targets}});
    if let Value::Object(more) = extra {
        for (k, v) in more {
            route[k] = v;
        }
    }
    route
}

/// A gateway `gw` whose route `api` (match `gm`) goes to `api.local`, a router `rt` with
/// these routes, and nodes `v1` and `v2`.
fn through_router(gm: Value, routes: Vec<(&str, Value)>) -> portico_appmesh::Import {
    let mut values = vec![
        ("gw.json".to_owned(), http_gateway("gw")),
        (
            "gr.json".to_owned(),
            http_gr("gw", "api", "api.local", gm, Value::Null),
        ),
        ("vs.json".to_owned(), vs_router("api.local", "rt")),
        ("rt.json".to_owned(), router("rt", 8080, "http")),
        (
            "v1.json".to_owned(),
            node("v1", "v1.internal", 8080, "http"),
        ),
        (
            "v2.json".to_owned(),
            node("v2", "v2.internal", 8080, "http"),
        ),
    ];
    for (name, spec) in routes {
        values.push((format!("route-{name}.json"), rroute("rt", name, spec)));
    }
    let borrowed: Vec<(&str, Value)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    import_values(&borrowed)
}

#[test]
fn a_weighted_router_with_two_routes_and_combined_conditions() {
    let imp = through_router(
        json!({"prefix": "/shop/", "headers": [{"name": "x-tenant", "match": {"exact": "acme"}}]}),
        vec![
            (
                "canary",
                json!({"priority": 1, "httpRoute": weighted(
                    json!([{"virtualNode": "v2", "weight": 1}]),
                    json!({"prefix": "/cart", "method": "POST", "headers": [{"name": "x-canary", "match": {"exact": "yes"}}]}),
                    Value::Null,
                )}),
            ),
            (
                "main",
                json!({"priority": 2, "httpRoute": weighted(
                    json!([{"virtualNode": "v1", "weight": 80}, {"virtualNode": "v2", "weight": 20}]),
                    json!({"prefix": "/"}),
                    Value::Null,
                )}),
            ),
        ],
    );
    let canary = route(&imp, "gw.api.canary");
    assert_eq!(
        canary.matches.path,
        Some(PathMatch::Prefix("/shop/cart".into()))
    );
    assert_eq!(canary.matches.methods, ["POST"]);
    let names: Vec<&str> = canary
        .matches
        .headers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["x-tenant", "x-canary"],
        "both routes' headers must hold"
    );
    assert_eq!(
        forwarded_path(canary, "/shop/cart/1").as_deref(),
        Some("/cart/1")
    );
    let main = route(&imp, "gw.api.main");
    assert_eq!(main.matches.path, Some(PathMatch::Prefix("/shop/".into())));
    assert_eq!(
        forwarded_path(main, "/shop/cart/1").as_deref(),
        Some("/cart/1")
    );
    let targets = &main.forward.as_ref().expect("forward").targets;
    assert_eq!(
        targets,
        &[
            Target {
                service: "v1".into(),
                weight: 80
            },
            Target {
                service: "v2".into(),
                weight: 20
            }
        ]
    );
    // The gateway's order first, then the router's.
    assert!(canary.priority < main.priority);
    // `main` takes all the gateway route takes: no 404 fallback (it would never be reached).
    assert!(
        imp.objects.routes.iter().all(|r| r.name != "gw.api"),
        "{:?}",
        imp.objects.routes
    );
}

#[test]
fn the_user_guide_s_router_example_holds() {
    // Gateway prefix `/chapter`, router routes `/1` and `/page`: `/chapter/page` and
    // `/chapter1` are routed, anything else under `/chapter` is dropped (404).
    let imp = through_router(
        json!({"prefix": "/chapter"}),
        vec![
            (
                "one",
                json!({"httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/1"}), Value::Null)}),
            ),
            (
                "page",
                json!({"httpRoute": weighted(json!([{"virtualNode": "v2", "weight": 1}]), json!({"prefix": "/page"}), Value::Null)}),
            ),
        ],
    );
    let routed = |path: &str| -> Option<(String, String)> {
        let mut hits: Vec<&portico_model::Route> = imp
            .objects
            .routes
            .iter()
            .map(|r| &r.route)
            .filter(|r| forwarded_path(r, path).is_some())
            .collect();
        hits.sort_by_key(|r| r.priority);
        let r = hits.first()?;
        let target = r.all_targets().first().map(|t| t.service.clone())?;
        Some((target, forwarded_path(r, path)?))
    };
    assert_eq!(routed("/chapter/page"), Some(("v2".into(), "/page".into())));
    assert_eq!(
        routed("/chapter/page/2"),
        Some(("v2".into(), "/page/2".into()))
    );
    assert_eq!(routed("/chapter1"), Some(("v1".into(), "/1".into())));
    assert_eq!(routed("/chapter/1"), Some(("v1".into(), "/1".into())));
    // Under the gateway route but no router route: the fallback, with no target.
    assert_eq!(routed("/chapter/other"), None);
    let names: Vec<&str> = imp.objects.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gw.api.one",
            "gw.api.one.2",
            "gw.api.page",
            "gw.api.page.2",
            "gw.api"
        ]
    );
}

#[test]
fn conditions_that_cannot_both_hold_drop_that_router_route() {
    let imp = through_router(
        json!({"prefix": "/", "method": "GET"}),
        vec![
            (
                "post",
                json!({"httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/", "method": "POST"}), Value::Null)}),
            ),
            (
                "get",
                json!({"httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/"}), Value::Null)}),
            ),
        ],
    );
    assert!(imp.objects.routes.iter().all(|r| r.name != "gw.api.post"));
    route(&imp, "gw.api.get");
    reported(
        &imp,
        Outcome::NotCarried,
        "$.route.spec.httpRoute",
        "method GET",
    );
}

#[test]
fn a_router_route_that_cannot_be_said_exactly_drops_the_whole_gateway_route() {
    // A regex on the path after the gateway's rewrite of `/chapter`.
    let imp = through_router(
        json!({"prefix": "/chapter"}),
        vec![
            (
                "re",
                json!({"httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"path": {"regex": "/p[0-9]+"}}), Value::Null)}),
            ),
            (
                "rest",
                json!({"httpRoute": weighted(json!([{"virtualNode": "v2", "weight": 1}]), json!({"prefix": "/"}), Value::Null)}),
            ),
        ],
    );
    assert!(
        imp.objects.routes.is_empty(),
        "no route may take the regex route's requests"
    );
    reported(
        &imp,
        Outcome::NotCarried,
        ".action.target",
        "router route re (route-re.json $.route.spec.httpRoute.match)",
    );
}

#[test]
fn retries_and_timeouts_are_carried_onto_targets() {
    let imp = through_router(
        json!({"prefix": "/"}),
        vec![(
            "r",
            json!({"httpRoute": weighted(
                json!([{"virtualNode": "v1", "weight": 1}]),
                json!({"prefix": "/"}),
                json!({
                    "retryPolicy": {
                        "maxRetries": 20,
                        "perRetryTimeout": {"unit": "s", "value": 1},
                        "httpRetryEvents": ["server-error", "client-error", "stream-error"],
                        "tcpRetryEvents": ["connection-error"]
                    },
                    "timeout": {"perRequest": {"unit": "ms", "value": 2500}, "idle": {"unit": "s", "value": 60}}
                }),
            )}),
        )],
    );
    let r = route(&imp, "gw.api.r");
    assert_eq!(r.timeout, Some(portico_model::Duration::from_millis(2500)));
    let s = service(&imp, "v1");
    assert_eq!(s.retries.attempts, 10, "capped");
    let mut want: Vec<u16> = (500..=599).collect();
    want.insert(0, 409);
    assert_eq!(s.retries.statuses, want);
    reported(
        &imp,
        Outcome::Changed,
        ".retryPolicy.maxRetries",
        "at most 10",
    );
    reported(&imp, Outcome::NotCarried, ".perRetryTimeout", "per-try");
    reported(
        &imp,
        Outcome::Changed,
        ".httpRetryEvents[2]",
        "stream-error",
    );
    reported(&imp, Outcome::Changed, ".tcpRetryEvents[0]", "connection");
    reported(&imp, Outcome::NotCarried, ".timeout.idle", "idle");
}

#[test]
fn routes_with_different_retries_get_copies_of_a_service() {
    let retry = |n: u32| json!({"retryPolicy": {"maxRetries": n, "perRetryTimeout": {"unit": "s", "value": 1}, "httpRetryEvents": ["gateway-error"]}});
    let imp = through_router(
        json!({"prefix": "/"}),
        vec![
            (
                "a",
                json!({"priority": 1, "httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/a"}), retry(2))}),
            ),
            (
                "b",
                json!({"priority": 2, "httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/b"}), retry(5))}),
            ),
        ],
    );
    let a = &route(&imp, "gw.api.a")
        .forward
        .as_ref()
        .expect("forward")
        .targets[0]
        .service;
    let b = &route(&imp, "gw.api.b")
        .forward
        .as_ref()
        .expect("forward")
        .targets[0]
        .service;
    assert_ne!(a, b);
    assert_eq!(service(&imp, a).retries.attempts, 2);
    assert_eq!(service(&imp, b).retries.attempts, 5);
    assert!(a.starts_with("v1") && b.starts_with("v1"));
}

#[test]
fn gateway_priorities_and_router_priorities_are_both_kept() {
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        (
            "first.json",
            gr(
                "gw",
                "first",
                json!({"priority": 1, "httpRoute": {"match": {"prefix": "/"}, "action": {"target": {"virtualService": {"virtualServiceName": "api.local"}}}}}),
            ),
        ),
        (
            "zero.json",
            gr(
                "gw",
                "zero",
                json!({"priority": 0, "httpRoute": {"match": {"prefix": "/direct"}, "action": {"target": {"virtualService": {"virtualServiceName": "v2.local"}}}}}),
            ),
        ),
        ("vs.json", vs_router("api.local", "rt")),
        ("vs2.json", vs_node("v2.local", "v2")),
        ("rt.json", router("rt", 8080, "http")),
        (
            "ra.json",
            rroute(
                "rt",
                "a",
                json!({"priority": 5, "httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/x"}), Value::Null)}),
            ),
        ),
        (
            "rb.json",
            rroute(
                "rt",
                "b",
                json!({"priority": 3, "httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/"}), Value::Null)}),
            ),
        ),
        ("v1.json", node("v1", "v1.internal", 8080, "http")),
        ("v2.json", node("v2", "v2.internal", 8080, "http")),
    ]);
    let p = |n: &str| route(&imp, n).priority.expect("a priority");
    // zero (gateway 0) < first's routes (gateway 1): b (router 3) < a (router 5) < fallback.
    assert!(p("gw.zero") < p("gw.first.b"));
    assert!(p("gw.first.b") < p("gw.first.a"));
    // b takes everything the gateway route does: no fallback after it.
    assert!(imp.objects.routes.iter().all(|r| r.name != "gw.first"));
    reported(&imp, Outcome::Changed, "$.virtualGateway", "renumbered");
}

#[test]
fn unprioritized_gateway_routes_keep_app_mesh_s_order_around_a_router() {
    // App Mesh tries `/api` (longer) before `/`, whatever `/`'s router routes say.
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        (
            "all.json",
            http_gr(
                "gw",
                "all",
                "api.local",
                json!({"prefix": "/"}),
                Value::Null,
            ),
        ),
        (
            "api.json",
            http_gr(
                "gw",
                "api",
                "v2.local",
                json!({"prefix": "/api"}),
                Value::Null,
            ),
        ),
        ("vs.json", vs_router("api.local", "rt")),
        ("vs2.json", vs_node("v2.local", "v2")),
        ("rt.json", router("rt", 8080, "http")),
        (
            "deep.json",
            rroute(
                "rt",
                "deep",
                json!({"httpRoute": weighted(json!([{"virtualNode": "v1", "weight": 1}]), json!({"prefix": "/api/v1"}), Value::Null)}),
            ),
        ),
        ("v1.json", node("v1", "v1.internal", 8080, "http")),
        ("v2.json", node("v2", "v2.internal", 8080, "http")),
    ]);
    let p = |n: &str| route(&imp, n).priority.expect("a priority");
    assert!(
        p("gw.api") < p("gw.all.deep"),
        "the longer gateway prefix wins first"
    );
}

#[test]
fn missing_and_unusable_targets_are_reported() {
    let imp = import_values(&[
        ("gw.json", http_gateway("gw")),
        (
            "nosvc.json",
            http_gr(
                "gw",
                "nosvc",
                "ghost.local",
                json!({"prefix": "/a"}),
                Value::Null,
            ),
        ),
        (
            "noprov.json",
            http_gr(
                "gw",
                "noprov",
                "empty.local",
                json!({"prefix": "/b"}),
                Value::Null,
            ),
        ),
        (
            "cloud.json",
            http_gr(
                "gw",
                "cloud",
                "cloud.local",
                json!({"prefix": "/c"}),
                Value::Null,
            ),
        ),
        (
            "empty.json",
            json!({"virtualService": {"meshName": MESH, "virtualServiceName": "empty.local", "spec": {}}}),
        ),
        ("vs.json", vs_node("cloud.local", "cm")),
        (
            "cm.json",
            json!({"virtualNode": {"meshName": MESH, "virtualNodeName": "cm", "spec": {
                "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                "serviceDiscovery": {"awsCloudMap": {"namespaceName": "shop.local", "serviceName": "cm", "attributes": [{"key": "stage", "value": "prod"}]}}
            }}}),
        ),
        (
            "orphan.json",
            http_gr(
                "nogw",
                "orphan",
                "cloud.local",
                json!({"prefix": "/d"}),
                Value::Null,
            ),
        ),
    ]);
    assert!(imp.objects.routes.is_empty());
    assert!(
        imp.objects.services.is_empty(),
        "a Cloud Map node makes no service"
    );
    reported(
        &imp,
        Outcome::NotCarried,
        ".action.target",
        "ghost.local is not in the input",
    );
    reported(
        &imp,
        Outcome::NotCarried,
        ".action.target",
        "has no provider",
    );
    reported(&imp, Outcome::NotCarried, ".action.target", "Cloud Map");
    reported(
        &imp,
        Outcome::NotCarried,
        ".serviceDiscovery.awsCloudMap",
        "Cloud Map discovery is AWS-only",
    );
    reported(
        &imp,
        Outcome::NotCarried,
        "$.gatewayRoute",
        "nogw is not in the input",
    );
}

#[test]
fn nothing_is_said_carried_of_a_gateway_route_that_is_not() {
    let imp = through_router(
        json!({"prefix": "/chapter"}),
        vec![
            (
                "a",
                json!({"priority": 1, "httpRoute": weighted(
                    json!([{"virtualNode": "v1", "weight": 1}]),
                    json!({"prefix": "/"}),
                    json!({"retryPolicy": {"maxRetries": 1, "perRetryTimeout": {"unit": "s", "value": 1}, "httpRetryEvents": ["gateway-error"]}}),
                )}),
            ),
            (
                "b",
                json!({"priority": 2, "httpRoute": weighted(json!([{"virtualNode": "v2", "weight": 1}]), json!({"path": {"regex": "/x.*"}}), Value::Null)}),
            ),
        ],
    );
    assert!(imp.objects.routes.is_empty());
    let about_routes: Vec<_> = imp
        .report
        .items
        .iter()
        .filter(|i| i.file.starts_with("route-"))
        .collect();
    assert!(about_routes.is_empty(), "{}", imp.report);
    assert!(service(&imp, "v1").retries.statuses.is_empty());
}
