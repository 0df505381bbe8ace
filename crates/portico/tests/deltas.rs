//! Deltas end to end with real processes: a node that holds a version receives only what
//! changed since, applies it, and checks the digest; it falls back to the whole snapshot
//! when what it holds has diverged, when it is too far behind, and on first start; a node
//! restarted from its cache catches up by deltas; every kind of entity can be deleted.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::time::{Duration, Instant};

use portico_model::{DELTA_CONTENT_TYPE, SyncDeltas, SyncEnvelope};
use portico_testkit::{Client, Reply, Upstream};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

/// One raw route on gateway `edge` answering `body` at `/<name>`.
fn fixed_route(name: &str, body: &str) -> Value {
    json!({
        "name": name,
        "gateways": ["edge"],
        "route": {
            "match": {"path": {"exact": format!("/{name}")}},
            "fixed_response": {"status": 200, "body": body},
        },
    })
}

/// Creates or replaces raw route `name`.
async fn set_route(cp: &ControlPlane, name: &str, body: &str) {
    let (st, v) = cp.api("GET", &format!("/api/v1/routes/{name}"), None).await;
    let (st, v) = if st == 404 {
        cp.api("POST", "/api/v1/routes", Some(fixed_route(name, body)))
            .await
    } else {
        assert_eq!(st, 200, "{v}");
        let version = v["version"].as_i64().unwrap();
        cp.api(
            "PUT",
            &format!("/api/v1/routes/{name}?version={version}"),
            Some(fixed_route(name, body)),
        )
        .await
    };
    assert!(st == 200 || st == 201, "{st} {v}");
}

/// The sync endpoint as a node calls it: (status, content type, body).
async fn sync(cp: &ControlPlane, token: &str, query: &str) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/sync/snapshot?wait=0&{query}", cp.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

/// The whole snapshot the control plane has for the node's gateway.
async fn whole(cp: &ControlPlane, n: &Node) -> SyncEnvelope {
    let (st, ct, body) = sync(cp, &n.token, "").await;
    assert_eq!((st, ct.as_str()), (200, "application/json"), "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the node's status says `check`, answering the status.
async fn node_until(n: &Node, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = node_status(n).await;
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the node never {what}: {s:#}\n{}",
            n.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node serves the control plane's current version, answering its status.
async fn in_step(cp: &ControlPlane, n: &Node) -> Value {
    let want = whole(cp, n).await;
    node_until(n, &format!("reached version {}", want.version), |s| {
        s["applied_version"] == want.version && s["applied_hash"] == want.hash.as_str()
    })
    .await
}

/// Starts a control plane and one node linked as production gateway `edge`, serving route
/// `hello`.
async fn setup(root: &TempDir) -> (ControlPlane, Node) {
    let cp = server(root.path(), &[]).await;
    let mut n = init_node(root.path(), "edge", &cp.url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    set_route(&cp, "hello", "one").await;
    eventually_serves(&Client::new(), &n.url("/hello"), "one").await;
    (cp, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_travels_as_the_entities_it_touched() {
    let root = TempDir::new().unwrap();
    let (cp, n) = setup(&root).await;
    let client = Client::new();
    // Forty routes: a one-route change must not carry them.
    for i in 0..40 {
        set_route(&cp, &format!("bulk-{i:02}"), "bulk").await;
    }
    let before = whole(&cp, &n).await;
    assert!(before.hash.starts_with("msha256:"), "{}", before.hash);
    assert_eq!(before.snapshot.routes.len(), 41);

    set_route(&cp, "hello", "two").await;
    let after = whole(&cp, &n).await;
    assert_eq!(after.version, before.version + 1);
    // The node holding `before` is sent one step with one route.
    let (st, ct, body) = sync(
        &cp,
        &n.token,
        &format!("after={}&deltas=true", before.version),
    )
    .await;
    assert_eq!((st, ct.as_str()), (200, DELTA_CONTENT_TYPE), "{body}");
    let chain: SyncDeltas = serde_json::from_str(&body).unwrap();
    assert_eq!(chain.gateway, "edge");
    assert_eq!(chain.steps.len(), 1);
    let step = &chain.steps[0];
    assert_eq!((step.from, step.version), (before.version, after.version));
    assert_eq!(step.hash, after.hash);
    assert_eq!(step.changes.len(), 1, "{body}");
    assert_eq!(step.changes.routes[0].route.name.as_deref(), Some("hello"));
    assert!(!body.contains("\"name\":\"bulk-"), "{body}");
    // A node that does not take deltas (an older build) still gets the whole snapshot.
    let (st, ct, _) = sync(&cp, &n.token, &format!("after={}", before.version)).await;
    assert_eq!((st, ct.as_str()), (200, "application/json"));
    // A node that holds the current version waits: nothing new.
    let (st, _, _) = sync(
        &cp,
        &n.token,
        &format!("after={}&deltas=true", after.version),
    )
    .await;
    assert_eq!(st, 304);

    // The real node took it as a delta.
    eventually_serves(&client, &n.url("/hello"), "two").await;
    let s = in_step(&cp, &n).await;
    assert!(s["updates"]["deltas"].as_u64().unwrap() >= 1, "{s:#}");
    assert_eq!(s["updates"]["resyncs"], 0, "{s:#}");
    assert_eq!(s["updates"]["snapshots"], 1, "{s:#}");
    // Nothing else moved: every bulk route still answers.
    eventually_serves(&client, &n.url("/bulk-39"), "bulk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_entity_is_deleted_by_delta() {
    let root = TempDir::new().unwrap();
    let (cp, mut n) = setup(&root).await;
    let client = Client::new();
    let up = Upstream::start(|_| Reply::text("pets")).await;
    // A second listener, a tier, an API with a service and routes, a consumer with a tier
    // and a key subscribed to it.
    let extra_port = free_port();
    let (st, gw) = cp.api("GET", "/api/v1/gateways/edge", None).await;
    assert_eq!(st, 200, "{gw}");
    let mut spec = gw["spec"].clone();
    let listeners = spec["listeners"].as_array().unwrap().clone();
    let mut more = listeners.clone();
    more.push(json!({"name": "extra", "port": extra_port, "protocol": "http"}));
    spec["listeners"] = Value::Array(more);
    let (st, v) = cp
        .api(
            "PUT",
            &format!("/api/v1/gateways/edge?version={}", gw["version"]),
            Some(spec.clone()),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    cp.tier("gold", 1000).await;
    cp.deploy_api(
        json!({
            "name": "pets", "version": "v1", "context": "/pets",
            "production_endpoints": [format!("http://{}", up.addr)],
            "auth": "api_key",
        }),
        "edge",
    )
    .await;
    let key = cp.consumer_key("acme", "gold", "pets-v1").await;
    let with_key = |url: String| {
        let mut r = portico_testkit::client::get(&url);
        r.headers_mut().insert("apikey", key.parse().unwrap());
        r
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client.send(with_key(n.url("/pets/x"))).await;
        if r.as_ref()
            .is_ok_and(|r| r.status == 200 && r.text() == "pets")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", r.map(|r| r.status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually_serves(
        &client,
        &format!("http://127.0.0.1:{extra_port}/hello"),
        "one",
    )
    .await;
    let full = whole(&cp, &n).await;
    let s = full.snapshot.security.clone();
    assert!(!s.api_keys.is_empty() && !s.consumers.is_empty() && !s.tiers.is_empty());
    assert_eq!(full.snapshot.listeners.len(), 2);
    in_step(&cp, &n).await;

    // Now take it all away, one kind at a time, each reaching the node as a delta.
    let deltas_before = node_status(&n).await["updates"]["deltas"].as_u64().unwrap();
    // The key and the consumer (and with it the tier it used).
    let (st, v) = cp.api("DELETE", "/api/v1/consumers/acme", None).await;
    assert!(st == 204 || st == 200, "{v}");
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client.send(with_key(n.url("/pets/x"))).await.unwrap();
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The API: its routes and its service.
    let (st, v) = cp
        .api("DELETE", "/api/v1/apis/pets-v1/deployments/edge", None)
        .await;
    assert!(st == 204 || st == 200, "{v}");
    let deadline = Instant::now() + WAIT;
    while client.get(&n.url("/pets/x")).await.status != 404 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The extra listener.
    let (_, gw) = cp.api("GET", "/api/v1/gateways/edge", None).await;
    let mut spec = gw["spec"].clone();
    spec["listeners"] = Value::Array(listeners);
    let (st, v) = cp
        .api(
            "PUT",
            &format!("/api/v1/gateways/edge?version={}", gw["version"]),
            Some(spec),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // A route.
    let (st, v) = cp.api("DELETE", "/api/v1/routes/hello", None).await;
    assert!(st == 204 || st == 200, "{v}");
    let s = in_step(&cp, &n).await;
    let now = whole(&cp, &n).await.snapshot;
    assert!(now.security.api_keys.is_empty() && now.security.consumers.is_empty());
    assert!(now.security.tiers.is_empty() && now.services.is_empty());
    assert!(now.routes.is_empty() && now.listeners.len() == 1);
    assert_eq!(client.get(&n.url("/hello")).await.status, 404);
    // The extra listener is closed.
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", extra_port)).is_ok() {
        assert!(Instant::now() < deadline, "port {extra_port} still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s["updates"]["deltas"].as_u64().unwrap() >= deltas_before + 4,
        "{s:#}"
    );
    assert_eq!(s["updates"]["resyncs"], 0, "{s:#}");
    assert_eq!(s["updates"]["snapshots"], 1, "{s:#}");

    // What the node wrote to its cache is the control plane's content, whole.
    n.stop().await;
    let cached: SyncEnvelope = serde_json::from_str(
        &std::fs::read_to_string(n.dir.join("cache").join("snapshot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cached.hash, s["applied_hash"].as_str().unwrap());
    assert!(cached.snapshot.hash_matches(&cached.hash));
    assert_eq!(cached.snapshot.digest(), now.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_its_cache_catches_up_by_deltas() {
    let root = TempDir::new().unwrap();
    let (cp, mut n) = setup(&root).await;
    let client = Client::new();
    // Enough content that two steps are smaller than the whole (else it comes whole).
    for i in 0..20 {
        set_route(&cp, &format!("bulk-{i:02}"), "bulk").await;
    }
    in_step(&cp, &n).await;
    n.stop().await;
    // Two versions while the node is away.
    set_route(&cp, "hello", "two").await;
    set_route(&cp, "added", "new").await;
    n.start().await;
    eventually_serves(&client, &n.url("/added"), "new").await;
    eventually_serves(&client, &n.url("/hello"), "two").await;
    let s = in_step(&cp, &n).await;
    // Started from the cache, caught up with one chain of two steps.
    assert_eq!(s["updates"]["snapshots"], 0, "{s:#}\n{}", n.output());
    assert_eq!(s["updates"]["deltas"], 1, "{s:#}");
    assert_eq!(s["updates"]["resyncs"], 0, "{s:#}");
    assert!(n.output().contains("starting from the cached snapshot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_cache_makes_the_node_fetch_the_whole_snapshot() {
    let root = TempDir::new().unwrap();
    let (cp, mut n) = setup(&root).await;
    let client = Client::new();
    set_route(&cp, "other", "fine").await;
    in_step(&cp, &n).await;
    n.stop().await;
    // The cache is changed behind the node's back, consistently (its digest recomputed),
    // so it loads: the node now holds content the control plane never had.
    let path = n.dir.join("cache").join("snapshot.json");
    let mut env: SyncEnvelope =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let r = env
        .snapshot
        .routes
        .iter_mut()
        .find(|r| r.name.as_deref() == Some("other"))
        .unwrap();
    r.fixed_response.as_mut().unwrap().body = Some("tampered".into());
    env.hash = env.snapshot.digest();
    std::fs::write(&path, serde_json::to_vec(&env).unwrap()).unwrap();
    n.start().await;
    eventually_serves(&client, &n.url("/other"), "tampered").await;
    // The next change comes as a delta; after applying it the digest is not the control
    // plane's, so the node fetches the whole snapshot, which mends the tampered route.
    set_route(&cp, "hello", "two").await;
    eventually_serves(&client, &n.url("/other"), "fine").await;
    eventually_serves(&client, &n.url("/hello"), "two").await;
    let s = in_step(&cp, &n).await;
    assert_eq!(s["updates"]["resyncs"], 1, "{s:#}");
    assert_eq!(s["updates"]["snapshots"], 1, "{s:#}");
    assert!(
        s["updates"]["last_resync"]
            .as_str()
            .unwrap()
            .contains("digest"),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_too_far_behind_gets_the_whole_snapshot() {
    let root = TempDir::new().unwrap();
    let (cp, mut n) = setup(&root).await;
    let client = Client::new();
    let held = in_step(&cp, &n).await["applied_version"].as_u64().unwrap();
    n.stop().await;
    // More versions than the control plane keeps deltas for.
    for i in 0..=portico_control::store::DELTAS_KEPT {
        set_route(&cp, "hello", &format!("v{i}")).await;
    }
    let last = format!("v{}", portico_control::store::DELTAS_KEPT);
    let (st, ct, _) = sync(&cp, &n.token, &format!("after={held}&deltas=true")).await;
    assert_eq!((st, ct.as_str()), (200, "application/json"));
    // One step behind still gets a delta.
    let now = whole(&cp, &n).await.version;
    let (_, ct, _) = sync(&cp, &n.token, &format!("after={}&deltas=true", now - 1)).await;
    assert_eq!(ct, DELTA_CONTENT_TYPE);
    n.start().await;
    eventually_serves(&client, &n.url("/hello"), &last).await;
    let s = in_step(&cp, &n).await;
    assert_eq!(s["updates"]["snapshots"], 1, "{s:#}");
    assert_eq!(s["updates"]["resyncs"], 0, "{s:#}");
}

/// A proxy in front of the control plane that passes everything whole but the first whole
/// snapshot, whose connection it closes halfway through the body. Answers its URL and how
/// many whole snapshots went through it.
async fn cutting_proxy(target: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use hyper::body::Frame;
    use std::sync::atomic::Ordering;
    type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let wholes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = wholes.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let (client, target, wholes) = (client.clone(), target.clone(), counted.clone());
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (client, target, wholes) = (client.clone(), target.clone(), wholes.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                        let mut fwd =
                            client.request(parts.method.clone(), format!("{target}{path}"));
                        for (k, v) in &parts.headers {
                            if k != "host" && k != "accept-encoding" {
                                fwd = fwd.header(k, v);
                            }
                        }
                        let resp = fwd.body(body).send().await.unwrap();
                        let mut out = hyper::Response::builder().status(resp.status());
                        for (k, v) in resp.headers() {
                            if k != "content-length" && k != "transfer-encoding" {
                                out = out.header(k, v);
                            }
                        }
                        let whole = parts.uri.path() == "/api/v1/sync/snapshot"
                            && resp.status() == 200
                            && resp
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v == "application/json");
                        let bytes = resp.bytes().await.unwrap();
                        let body: Body = if whole && wholes.fetch_add(1, Ordering::SeqCst) == 0 {
                            let half = bytes.slice(..bytes.len() / 2);
                            let frames =
                                vec![Ok(Frame::data(half)), Err(std::io::Error::other("cut"))];
                            // The head and the first half reach the node before the cut.
                            let frames = futures_util::StreamExt::then(
                                futures_util::stream::iter(frames),
                                |f| async move {
                                    if f.is_err() {
                                        tokio::time::sleep(Duration::from_millis(300)).await;
                                    }
                                    f
                                },
                            );
                            StreamBody::new(frames).boxed()
                        } else {
                            Full::new(bytes).map_err(|never| match never {}).boxed()
                        };
                        Ok::<_, hyper::Error>(out.body(body).unwrap())
                    }
                });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (url, wholes)
}

/// A whole snapshot is read as it arrives; a download that breaks off halfway is a
/// broken connection, not a bad snapshot: the node fetches it again and serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_snapshot_cut_off_halfway_is_fetched_again() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let (proxy, wholes) = cutting_proxy(cp.url.clone()).await;
    let mut n = init_node(root.path(), "edge", &proxy).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    set_route(&cp, "hello", "one").await;
    eventually_serves(&Client::new(), &n.url("/hello"), "one").await;
    let s = in_step(&cp, &n).await;
    let out = n.output();
    assert!(out.contains("the snapshot download broke off"), "{out}");
    assert!(!out.contains("unreadable"), "{out}");
    assert!(!out.contains("snapshot refused"), "{out}");
    assert_eq!(wholes.load(std::sync::atomic::Ordering::SeqCst), 2, "{out}");
    assert_eq!(s["updates"]["snapshots"], 1, "{s:#}");
    n.stop().await;
}
