//! Routing, rewrites, header edits, redirects and fixed responses, end to end on real
//! sockets against recording upstreams.

mod common;

use common::{Gw, WEB, service};
use http::Method;
use portico_testkit::client::request;
use portico_testkit::{Client, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_method_header_and_query() {
    let (a, b, c, d, e) = (
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
        Upstream::named("d").await,
        Upstream::named("e").await,
    );
    let cfg = format!(
        r#"{WEB}
{}{}{}{}{}
[[routes]]
name = "api-host"
match = {{ hosts = ["api.example.com"] }}
forward = {{ service = "a" }}
[[routes]]
name = "wild"
match = {{ hosts = ["*.example.com"], path = {{ prefix = "/" }} }}
forward = {{ service = "b" }}
[[routes]]
name = "post-only"
match = {{ path = {{ prefix = "/p" }}, methods = ["POST"] }}
forward = {{ service = "c" }}
[[routes]]
name = "canary"
match = {{ path = {{ prefix = "/p" }}, headers = [{{ name = "x-canary", exact = "1" }}] }}
forward = {{ service = "d" }}
[[routes]]
name = "query"
match = {{ path = {{ prefix = "/p" }}, query = [{{ name = "v", exact = "2" }}] }}
forward = {{ service = "e" }}
"#,
        service("a", &[a.addr], ""),
        service("b", &[b.addr], ""),
        service("c", &[c.addr], ""),
        service("d", &[d.addr], ""),
        service("e", &[e.addr], ""),
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let send = |method: Method, path: &str, headers: &[(&str, &str)]| {
        let req = request(method, &gw.url(path), "", headers);
        let client = client.clone();
        async move { client.send(req).await.expect("send").text() }
    };
    assert_eq!(
        send(Method::GET, "/x", &[("host", "api.example.com")]).await,
        "a"
    );
    assert_eq!(
        send(Method::GET, "/x", &[("host", "API.Example.com:8080")]).await,
        "a"
    );
    assert_eq!(
        send(Method::GET, "/x", &[("host", "www.example.com")]).await,
        "b"
    );
    assert_eq!(send(Method::POST, "/p", &[("host", "other")]).await, "c");
    assert_eq!(
        send(Method::GET, "/p", &[("host", "other"), ("x-canary", "1")]).await,
        "d"
    );
    assert_eq!(send(Method::GET, "/p?v=2", &[("host", "other")]).await, "e");
    let miss = client
        .send(request(
            Method::GET,
            &gw.url("/p"),
            "",
            &[("host", "other")],
        ))
        .await
        .expect("send");
    assert_eq!(miss.status, 404);
    assert_eq!(
        miss.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = miss.json();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["status"], 404);
    assert!(
        body["message"].as_str().unwrap().contains("other/p"),
        "{body}"
    );
    assert_eq!(
        body["request_id"],
        miss.header("x-request-id").unwrap().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_rewrite_follows_app_mesh() {
    let up = Upstream::echo().await;
    let cfg = format!(
        r#"{WEB}
{}
[[routes]]
name = "chapter"
match = {{ path = {{ prefix = "/chapter" }} }}
forward = {{ service = "up" }}
[[routes]]
name = "keep"
match = {{ path = {{ prefix = "/keep" }} }}
forward = {{ service = "up" }}
rewrite = {{ prefix = false }}
[[routes]]
name = "v2"
match = {{ path = {{ path_prefix = "/v1/" }} }}
forward = {{ service = "up" }}
rewrite = {{ prefix = "/v2" }}
[[routes]]
name = "segment"
match = {{ path = {{ path_prefix = "/seg" }} }}
forward = {{ service = "up" }}
[[routes]]
name = "strip"
match = {{ path = {{ path_prefix = "/strip/" }} }}
forward = {{ service = "up" }}
rewrite = {{ prefix = "" }}
[[routes]]
name = "full"
match = {{ path = {{ exact = "/old" }} }}
forward = {{ service = "up" }}
rewrite = {{ path = "/new/place" }}
[[routes]]
name = "regex"
match = {{ path = {{ regex = "/items/[0-9]+" }} }}
forward = {{ service = "up" }}
"#,
        service("up", &[up.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    for (path, want) in [
        ("/chapter/page", "/page"),
        ("/chapter1", "/1"),
        ("/chapter", "/"),
        ("/chapter/page?x=1&y=2", "/page?x=1&y=2"),
        ("/keep/this", "/keep/this"),
        ("/v1/users", "/v2/users"),
        ("/v1", "/v2"),
        // `path_prefix` is the Gateway API's PathPrefix: no rewrite unless one is set...
        ("/seg/x", "/seg/x"),
        ("/seg", "/seg"),
        // ...and an empty replacement removes the prefix.
        ("/strip/a/b", "/a/b"),
        ("/strip", "/"),
        ("/old?q=1", "/new/place?q=1"),
        ("/items/42", "/items/42"),
        ("/chapter/a/../b", "/b"),
        ("/chapter/%7Euser", "/~user"),
    ] {
        let r = client.get(&gw.url(path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["uri"], want, "{path}");
    }
    // An empty replacement after a plain `prefix` could leave a path without its `/`.
    let refused = gw
        .apply(&cfg.replace(
            "rewrite = { prefix = false }",
            "rewrite = { prefix = \"\" }",
        ))
        .await
        .unwrap_err();
    assert!(
        refused.contains("rewrite.prefix") && refused.contains("path_prefix"),
        "{refused}"
    );
    // Climbing above the root is refused before routing.
    let r = client.get(&gw.url("/chapter/../../etc/passwd")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rewrite_keep_target_and_value() {
    let up = Upstream::echo().await;
    let cfg = format!(
        r#"{WEB}
{}
{}
[[routes]]
name = "keep"
match = {{ path = {{ prefix = "/keep" }} }}
forward = {{ service = "up" }}
[[routes]]
name = "target"
match = {{ path = {{ prefix = "/target" }} }}
forward = {{ service = "named" }}
rewrite = {{ host_to_target = true }}
[[routes]]
name = "target-endpoint"
match = {{ path = {{ prefix = "/endpoint" }} }}
forward = {{ service = "up" }}
rewrite = {{ host_to_target = true }}
[[routes]]
name = "value"
match = {{ path = {{ prefix = "/value" }} }}
forward = {{ service = "up" }}
rewrite = {{ host = "backend.internal" }}
"#,
        service("up", &[up.addr], ""),
        service("named", &[up.addr], "hostname = \"users.svc.local\""),
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let host = |path: &'static str| {
        let req = request(
            Method::GET,
            &gw.url(path),
            "",
            &[("host", "public.example.com")],
        );
        let client = client.clone();
        async move {
            client.send(req).await.expect("send").json()["headers"]["host"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(host("/keep").await, "public.example.com");
    assert_eq!(host("/target").await, "users.svc.local");
    assert_eq!(host("/endpoint").await, up.addr.to_string());
    assert_eq!(host("/value").await, "backend.internal");
    // X-Forwarded-Host keeps what the client asked for.
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/value"),
            "",
            &[("host", "public.example.com")],
        ))
        .await
        .unwrap();
    assert_eq!(
        r.json()["headers"]["x-forwarded-host"],
        "public.example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_edited_and_forwarded_correctly() {
    let up = Upstream::start(|r| {
        let mut reply = portico_testkit::Reply::echo(r);
        if let portico_testkit::Reply::Full { headers, .. } = &mut reply {
            headers.push(("x-upstream-secret".into(), "s".into()));
            headers.push(("connection".into(), "x-hop".into()));
            headers.push(("x-hop".into(), "1".into()));
        }
        reply
    })
    .await;
    let cfg = format!(
        r#"{WEB}
{}
[[routes]]
name = "edit"
forward = {{ service = "up" }}
request_headers = {{ set = {{ "x-env" = "prod" }}, add = {{ "x-tag" = "gw" }}, remove = ["x-remove-me"] }}
response_headers = {{ set = {{ "x-served-by" = "portico" }}, remove = ["x-upstream-secret"] }}
"#,
        service("up", &[up.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let req = request(
        Method::GET,
        &gw.url("/h"),
        "",
        &[
            ("x-env", "dev"),
            ("x-tag", "client"),
            ("x-remove-me", "1"),
            ("connection", "keep-alive, x-drop-hop"),
            ("x-drop-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "req-123"),
        ],
    );
    let r = client.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    let seen = up.last();
    let h = &seen.headers;
    assert_eq!(h["x-env"], "prod");
    assert_eq!(
        h.get_all("x-tag").iter().collect::<Vec<_>>(),
        vec!["client", "gw"]
    );
    assert!(!h.contains_key("x-remove-me"));
    assert!(
        !h.contains_key("x-drop-hop"),
        "headers named by Connection are hop-by-hop"
    );
    assert!(!h.contains_key("keep-alive"));
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["via"], "1.1 portico");
    assert_eq!(h["x-request-id"], "req-123");
    // Response side.
    assert_eq!(r.header("x-served-by").as_deref(), Some("portico"));
    assert!(r.header("x-upstream-secret").is_none());
    assert!(
        r.header("x-hop").is_none(),
        "hop-by-hop response headers are stripped"
    );
    assert_eq!(r.header("x-request-id").as_deref(), Some("req-123"));
    assert_eq!(r.header("via").as_deref(), Some("1.1 portico"));
    // Without a request id, one is generated and sent both ways.
    let r = client.get(&gw.url("/h")).await;
    let id = r.header("x-request-id").expect("generated id");
    assert_eq!(id.len(), 36);
    assert_eq!(up.last().headers["x-request-id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_fixed_responses() {
    let cfg = format!(
        r#"{WEB}
[[routes]]
name = "to-https"
match = {{ path = {{ prefix = "/secure" }} }}
redirect = {{ scheme = "https", status = 301 }}
[[routes]]
name = "moved"
match = {{ path = {{ prefix = "/old/" }} }}
redirect = {{ host = "new.example.com", port = 8443, prefix = "/new/", status = 308 }}
[[routes]]
name = "same"
match = {{ path = {{ prefix = "/same" }} }}
redirect = {{ host = "other.example.com" }}
[[routes]]
name = "plain"
match = {{ path = {{ prefix = "/plain" }} }}
redirect = {{ scheme = "http" }}
[[routes]]
name = "teapot"
match = {{ path = {{ exact = "/teapot" }} }}
fixed_response = {{ status = 418, headers = {{ "content-type" = "text/plain", "x-brew" = "tea" }}, body = "short and stout" }}
response_headers = {{ add = {{ "x-extra" = "1" }} }}
"#
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/secure/x?a=1"),
            "",
            &[("host", "shop.example.com:8080")],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://shop.example.com/secure/x?a=1")
    );
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/old/page"),
            "",
            &[("host", "shop.example.com")],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://new.example.com:8443/new/page")
    );
    // The scheme unchanged: the port stays, the Host's, else the listener's.
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/same/x"),
            "",
            &[("host", "shop.example.com:8080")],
        ))
        .await
        .unwrap();
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://other.example.com:8080/same/x")
    );
    let port = gw.addr("web").port();
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/same/x"),
            "",
            &[("host", "shop.example.com")],
        ))
        .await
        .unwrap();
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("http://other.example.com:{port}/same/x").as_str())
    );
    // `scheme = "http"` on an http listener is no change: the port stays too.
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/plain/x"),
            "",
            &[("host", "shop.example.com:8080")],
        ))
        .await
        .unwrap();
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://shop.example.com:8080/plain/x")
    );
    let r = client.get(&gw.url("/teapot")).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "short and stout");
    assert_eq!(r.header("x-brew").as_deref(), Some("tea"));
    assert_eq!(r.header("x-extra").as_deref(), Some("1"));
    assert_eq!(r.header("content-length").as_deref(), Some("15"));
    let head = client
        .send(request(Method::HEAD, &gw.url("/teapot"), "", &[]))
        .await
        .unwrap();
    assert_eq!(head.status, 418);
    assert!(head.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_targets_split_traffic() {
    let (a, b) = (Upstream::named("a").await, Upstream::named("b").await);
    let cfg = format!(
        r#"{WEB}
{}{}
[[routes]]
name = "split"
forward = {{ targets = [{{ service = "a", weight = 80 }}, {{ service = "b", weight = 20 }}] }}
"#,
        service("a", &[a.addr], ""),
        service("b", &[b.addr], "")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let n = 2000;
    let mut hits_a = 0;
    for _ in 0..n {
        if client.get(&gw.url("/")).await.text() == "a" {
            hits_a += 1;
        }
    }
    // Binomial(2000, 0.8): the standard deviation is about 18; allow five of them.
    assert!((1510..=1690).contains(&hits_a), "a got {hits_a} of {n}");
    assert_eq!(a.count() + b.count(), n);
}
