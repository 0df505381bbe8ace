//! The developer portal's Try Out: a gateway whose Snapshot names the portal's origin
//! answers that origin's CORS preflights on managed APIs' routes and marks their responses
//! for it, on real sockets against recording upstreams.

mod common;

use common::{Gw, WEB, service};
use http::{Method, StatusCode};
use portico_testkit::client::request;
use portico_testkit::upstream::Reply;
use portico_testkit::{Client, Resp, Upstream};

const PORTAL: &str = "https://portal.example.com";
const APP: &str = "https://app.example.com";

/// Two routes of managed APIs (`try_out`), one with its own CORS policy, one that asks for
/// an API key, and a raw route.
fn config(api: &Upstream, raw: &Upstream) -> String {
    format!(
        r#"{WEB}
{}{}
[[routes]]
name = "api.pets-v1.0"
match = {{ path = {{ path_prefix = "/pets" }}, methods = ["GET"] }}
forward = {{ service = "api" }}
try_out = true

[[routes]]
name = "api.secure-v1"
match = {{ path = {{ path_prefix = "/secure" }} }}
forward = {{ service = "api" }}
auth = {{ api = "secure-v1", mode = "api_key" }}
try_out = true

[[routes]]
name = "api.own-v1"
match = {{ path = {{ path_prefix = "/own" }} }}
forward = {{ service = "api" }}
cors = {{ allow_origins = ["{APP}"], allow_methods = ["GET", "PUT"], allow_headers = ["apikey"], expose_headers = ["x-request-id"], allow_credentials = true, max_age = 60 }}
try_out = true

[[routes]]
name = "mesh"
match = {{ path = {{ path_prefix = "/mesh" }} }}
forward = {{ service = "raw" }}
"#,
        service("api", &[api.addr], ""),
        service("raw", &[raw.addr], ""),
    )
}

async fn upstreams() -> (Upstream, Upstream) {
    let api = Upstream::start(|_| Reply::Full {
        status: StatusCode::OK,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-upstream".into(), "pets".into()),
        ],
        body: r#"{"pets":["rex"]}"#.into(),
    })
    .await;
    (api, Upstream::named("raw").await)
}

async fn start(api: &Upstream, raw: &Upstream) -> Gw {
    Gw::start_with(&config(api, raw), |s| {
        s.portal = Some(portico_model::Portal {
            origin: PORTAL.into(),
        });
    })
    .await
}

/// Sends a request without a body with these headers.
async fn send(client: &Client, method: Method, url: &str, headers: &[(&str, &str)]) -> Resp {
    client
        .send(request(method, url, "", headers))
        .await
        .expect("send")
}

fn preflight<'a>(origin: &'a str, method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", method),
        ("access-control-request-headers", "apikey, content-type"),
    ]
}

fn no_cors(r: &portico_testkit::client::Resp) {
    for h in [
        "access-control-allow-origin",
        "access-control-expose-headers",
        "access-control-allow-methods",
    ] {
        assert_eq!(r.header(h), None, "{h} on {:?}", r.headers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_preflights_are_answered_at_the_gateway_and_forward_nothing() {
    let (api, raw) = upstreams().await;
    let gw = start(&api, &raw).await;
    let client = Client::new();
    let r = send(
        &client,
        Method::OPTIONS,
        &gw.url("/pets/1"),
        &preflight(PORTAL, "GET"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("GET")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("apikey, content-type")
    );
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    // Before authentication: the API that asks for a key answers the preflight too.
    let r = send(
        &client,
        Method::OPTIONS,
        &gw.url("/secure/items"),
        &preflight(PORTAL, "DELETE"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("DELETE")
    );
    // After routing: a path or a method no route serves stays 404.
    for (path, method) in [("/nowhere", "GET"), ("/pets/1", "DELETE")] {
        let r = send(
            &client,
            Method::OPTIONS,
            &gw.url(path),
            &preflight(PORTAL, method),
        )
        .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    assert_eq!(api.count(), 0, "a preflight reached the API");
    // Raw routes are not in the portal: their preflights go on as requests.
    let r = send(
        &client,
        Method::OPTIONS,
        &gw.url("/mesh"),
        &preflight(PORTAL, "GET"),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "raw"));
    no_cors(&r);
    assert_eq!(raw.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_requests_get_cors_headers_and_other_origins_none() {
    let (api, raw) = upstreams().await;
    let gw = start(&api, &raw).await;
    let client = Client::new();
    let get = |path: &str, headers: &[(&str, &str)]| {
        client.send(request(Method::GET, &gw.url(path), "", headers))
    };
    let r = get("/pets/1", &[("origin", PORTAL)]).await.expect("send");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"pets":["rex"]}"#);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for name in ["x-upstream", "content-type", "x-request-id"] {
        assert!(
            exposed.split(", ").any(|n| n == name),
            "{name} in {exposed}"
        );
    }
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    // The origin is compared as browsers serialize it: scheme and host in any case.
    let r = get("/pets/1", &[("origin", "HTTPS://Portal.Example.COM")])
        .await
        .expect("send");
    assert!(r.header("access-control-allow-origin").is_some());
    // Answers the gateway makes itself carry them too: the Try Out shows the 401.
    let r = get("/secure/items", &[("origin", PORTAL)])
        .await
        .expect("send");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("www-authenticate"), "{exposed}");
    // Other origins, no origin, and raw routes: untouched.
    for (path, headers) in [
        ("/pets/1", vec![("origin", "https://evil.example.com")]),
        ("/pets/1", vec![("origin", "http://portal.example.com")]),
        ("/pets/1", vec![]),
        ("/mesh", vec![("origin", PORTAL)]),
    ] {
        let r = get(path, &headers).await.expect("send");
        assert_eq!(r.status, 200);
        no_cors(&r);
        assert_eq!(r.header("vary"), None, "{path} {headers:?}");
    }
    let r = send(
        &client,
        Method::OPTIONS,
        &gw.url("/pets/1"),
        &preflight("https://evil.example.com", "GET"),
    )
    .await;
    assert_eq!(r.status, 404, "another origin's preflight is no Try Out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apis_own_cors_policy_keeps_answering_its_origins() {
    let (api, raw) = upstreams().await;
    let gw = start(&api, &raw).await;
    let client = Client::new();
    // Its own origin: its own answer, as without a portal.
    let r = client
        .send(request(
            Method::OPTIONS,
            &gw.url("/own/x"),
            "",
            &[
                ("origin", APP),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "apikey"),
            ],
        ))
        .await
        .expect("send");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("GET, PUT")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("apikey")
    );
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("60"));
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let r = send(
        &client,
        Method::DELETE,
        &gw.url("/own/x"),
        &[("origin", APP)],
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        r.header("access-control-expose-headers").as_deref(),
        Some("x-request-id")
    );
    // A method its policy does not allow is still refused to its own origin...
    let r = send(
        &client,
        Method::OPTIONS,
        &gw.url("/own/x"),
        &preflight(APP, "DELETE"),
    )
    .await;
    assert_eq!(r.status, 403);
    // ...and allowed to the portal's Try Out, whose answer adds to the policy's.
    let r = send(
        &client,
        Method::OPTIONS,
        &gw.url("/own/x"),
        &preflight(PORTAL, "DELETE"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    let r = send(
        &client,
        Method::DELETE,
        &gw.url("/own/x"),
        &[("origin", PORTAL)],
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    assert!(
        r.header("access-control-expose-headers")
            .is_some_and(|e| e.contains("x-upstream"))
    );
    assert_eq!(api.count(), 2, "only the two actual requests went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_without_the_portal_turns_the_try_out_off() {
    let (api, raw) = upstreams().await;
    let gw = start(&api, &raw).await;
    gw.apply(&config(&api, &raw)).await.expect("applied");
    let client = Client::new();
    let r = send(
        &client,
        Method::OPTIONS,
        &gw.url("/pets/1"),
        &preflight(PORTAL, "GET"),
    )
    .await;
    assert_eq!(r.status, 404, "OPTIONS is not a method of the route");
    let r = send(
        &client,
        Method::GET,
        &gw.url("/pets/1"),
        &[("origin", PORTAL)],
    )
    .await;
    assert_eq!(r.status, 200);
    no_cors(&r);
}
