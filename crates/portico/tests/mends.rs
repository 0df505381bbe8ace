//! Defects found by reviewing Portico as a security engineer, each end to end with real
//! processes: private keys only on the gateways serving their names and sealed everywhere
//! the control plane keeps them; revocation (unsubscribe, block, delete) reaching API keys
//! and access tokens with the next snapshot.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use portico_testkit::{Client, Upstream};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

/// A self-signed certificate for `host`: (cert PEM, key PEM).
fn certificate(host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The base64 body of a PEM key, as it appears in JSON (one line of it is enough).
fn key_line(pem: &str) -> String {
    pem.lines().nth(1).unwrap().to_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Waits until the node's cache holds a snapshot and answers its text.
async fn cached_snapshot(n: &Node, needle: &str) -> String {
    let path = n.dir.join("cache").join("snapshot.json");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && text.contains(needle)
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never cached a snapshot with {needle}:\n{}",
            n.dir.display(),
            n.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_reach_only_their_gateways_and_stay_sealed_at_rest() {
    let root = TempDir::new().unwrap();
    let data = root.path().join("data");
    let cp = start_server(&data, free_port(), free_port(), None).await;
    let (a_cert, a_key) = certificate("a.example.test");
    let (b_cert, b_key) = certificate("b.example.test");
    for (name, cert, key) in [("a", &a_cert, &a_key), ("b", &b_cert, &b_key)] {
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/certificates",
                Some(json!({"name": name, "cert_pem": cert, "key_pem": key})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    // Two gateways with HTTPS listeners, each serving one of the names.
    let mut nodes = Vec::new();
    for (name, host) in [("gw-a", "a.example.test"), ("gw-b", "b.example.test")] {
        let mut n = init_node(root.path(), name, &cp.url).await;
        n.start().await;
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/gateways/link",
                Some(json!({
                    "name": name, "type": "production",
                    "url": format!("http://127.0.0.1:{}", n.admin_port),
                    "api_token": n.token, "jwt_secret": n.secret, "hosts": [host],
                    "listeners": [{"port": n.traffic_port, "address": "127.0.0.1", "tls": {"certificates": []}}],
                })),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        nodes.push(n);
    }
    // Each node's cache carries its own key and never the other gateway's.
    let a = cached_snapshot(&nodes[0], "a.example.test").await;
    let b = cached_snapshot(&nodes[1], "b.example.test").await;
    assert!(a.contains(&key_line(&a_key)) && !a.contains(&key_line(&b_key)));
    assert!(b.contains(&key_line(&b_key)) && !b.contains(&key_line(&a_key)));
    for n in &nodes {
        assert_eq!(mode(&n.dir.join("cache").join("snapshot.json")), 0o600);
    }

    // No admin answer carries a private key: the snapshot says it left them out.
    for gw in ["gw-a", "gw-b"] {
        let (st, snap) = cp
            .api("GET", &format!("/api/v1/gateways/{gw}/snapshot"), None)
            .await;
        assert_eq!(st, 200, "{snap}");
        let text = snap.to_string();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert_eq!(
            snap["snapshot"]["listeners"][0]["tls"]["certificates"][0]["key_pem_redacted"], true,
            "{text}"
        );
    }
    let (_, list) = cp.api("GET", "/api/v1/certificates", None).await;
    assert!(!list.to_string().contains("PRIVATE KEY"), "{list}");
    // A gateway definition that carries a key in clear is refused, naming the field.
    let (st, v) = cp
        .api(
            "PUT",
            "/api/v1/gateways/gw-a?version=1",
            Some(json!({
                "name": "gw-a", "type": "production", "hosts": ["a.example.test"],
                "listeners": [{"port": nodes[0].traffic_port, "tls": {"certificates": [
                    {"cert_pem": a_cert, "key_pem": a_key}]}}],
            })),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        v["fields"][0]["path"], "listeners[0].tls.certificates[0].key_pem",
        "{v}"
    );

    // At rest: nothing in the database files holds a key in clear, and the data
    // directory and its files are the owner's only.
    for f in ["portico.db", "portico.db-wal"] {
        let path = data.join(f);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PRIVATE KEY"), "{f} holds a key in clear");
        for k in [&a_key, &b_key] {
            assert!(!text.contains(&key_line(k)), "{f} holds a key in clear");
        }
        assert_eq!(mode(&path), 0o600, "{f}");
    }
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("secret.key")), 0o600);
    for mut n in nodes {
        n.stop().await;
    }
}

/// Calls `url` with an API key or a bearer token until the status is `want`.
async fn eventually(client: &Client, url: &str, cred: (&str, &str), want: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut req = portico_testkit::client::get(url);
        req.headers_mut().insert(
            http::HeaderName::from_bytes(cred.0.as_bytes()).unwrap(),
            cred.1.parse().unwrap(),
        );
        let last = match client.send(req).await {
            Ok(r) => (r.status.as_u16(), r.text()),
            Err(e) => (0, e),
        };
        if last.0 == want {
            return last.1;
        }
        assert!(
            Instant::now() < deadline,
            "{url} with {}: wanted {want}, last {last:?}",
            cred.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client_token(cp: &ControlPlane, id: &str, secret: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", cp.url))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_blocking_and_deleting_a_consumer_close_its_keys_and_tokens() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("pets").await;
    cp.deploy_api(
        json!({"name": "Pets", "version": "v1", "context": "/pets", "auth": "any",
               "production_endpoints": [format!("http://{}", up.addr)]}),
        "default",
    )
    .await;
    cp.cli_ok(&["consumers", "create", "acme"]).await;
    cp.cli_ok(&["subscriptions", "add", "acme", "--api", "pets-v1"])
        .await;
    let (st, k) = cp
        .api(
            "POST",
            "/api/v1/consumers/acme/keys",
            Some(json!({"type": "production"})),
        )
        .await;
    assert_eq!(st, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_owned();
    let (st, c) = cp
        .api(
            "POST",
            "/api/v1/consumers/acme/keys",
            Some(json!({"type": "production", "kind": "client"})),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    let (id, secret) = (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    );
    let (st, t) = client_token(&cp, &id, &secret).await;
    assert_eq!(st, 200, "{t}");
    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let url = format!("http://127.0.0.1:{}/pets/x", cp.gateway_port);
    let client = Client::new();
    let by_key = ("apikey", key.as_str());
    let by_token = ("authorization", bearer.as_str());
    assert_eq!(eventually(&client, &url, by_key, 200).await, "pets");
    assert_eq!(eventually(&client, &url, by_token, 200).await, "pets");

    // Unsubscribed: the token (whose `apis` claim still names the API) opens nothing.
    cp.cli_ok(&["subscriptions", "remove", "acme", "--api", "pets-v1"])
        .await;
    eventually(&client, &url, by_key, 401).await;
    let why = eventually(&client, &url, by_token, 403).await;
    assert!(why.contains("not subscribed"), "{why}");
    cp.cli_ok(&["subscriptions", "add", "acme", "--api", "pets-v1"])
        .await;
    eventually(&client, &url, by_key, 200).await;
    eventually(&client, &url, by_token, 200).await;

    // Blocked: both refused, and the token service issues it nothing.
    let out = cp.cli_ok(&["consumers", "block", "acme"]).await;
    assert!(out.contains("Blocked"), "{out}");
    eventually(&client, &url, by_key, 401).await;
    eventually(&client, &url, by_token, 403).await;
    let (st, v) = client_token(&cp, &id, &secret).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    cp.cli_ok(&["consumers", "unblock", "acme"]).await;
    eventually(&client, &url, by_key, 200).await;
    eventually(&client, &url, by_token, 200).await;

    // Deleted: both refused at the next snapshot.
    cp.cli_ok(&["consumers", "delete", "acme"]).await;
    eventually(&client, &url, by_key, 401).await;
    eventually(&client, &url, by_token, 403).await;
}

/// `POST /oauth2/token` with the password grant: (status, body).
async fn password_grant(
    cp: &ControlPlane,
    client: (&str, &str),
    user: &str,
    pw: &str,
) -> (u16, Value, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", cp.url))
        .basic_auth(client.0, Some(client.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("grant_type", "password"),
                ("username", user),
                ("password", pw),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(Value::Null),
        retry,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_grant_checks_the_client_first_answers_alike_and_backs_off() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    cp.cli_ok(&["consumers", "create", "app"]).await;
    let (st, c) = cp
        .api(
            "POST",
            "/api/v1/consumers/app/keys",
            Some(json!({"type": "production", "kind": "client"})),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    let client = (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    );
    let client = (client.0.as_str(), client.1.as_str());
    for name in ["alice", "bob"] {
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/users",
                Some(json!({"name": name, "password": "correct horse battery"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    // Without a good client, the right and a wrong password answer the same.
    let fake = ("cl_madeup", "cs_madeup");
    let right = password_grant(&cp, fake, "alice", "correct horse battery").await;
    let wrong = password_grant(&cp, fake, "alice", "wrong horse battery").await;
    assert_eq!(right.0, 401, "{right:?}");
    assert_eq!((right.0, &right.1), (wrong.0, &wrong.1));
    // With a good client: a wrong password and an unknown user answer the same.
    let wrong = password_grant(&cp, client, "alice", "wrong horse battery").await;
    let unknown = password_grant(&cp, client, "nobody", "wrong horse battery").await;
    assert_eq!(wrong.0, 400, "{wrong:?}");
    assert_eq!((wrong.0, &wrong.1), (unknown.0, &unknown.1));
    let ok = password_grant(&cp, client, "alice", "correct horse battery").await;
    assert_eq!(ok.0, 200, "{ok:?}");
    // Five failures pause the name: even the right password waits, told how long.
    for _ in 0..5 {
        let r = password_grant(&cp, client, "alice", "wrong horse battery").await;
        assert_eq!(r.0, 400, "{r:?}");
    }
    let paused = password_grant(&cp, client, "alice", "correct horse battery").await;
    assert_eq!(paused.0, 429, "{paused:?}");
    assert!(paused.2.unwrap().parse::<u64>().unwrap() > 0);
    // Another name from the same address is not paused yet...
    let r = password_grant(&cp, client, "bob", "correct horse battery").await;
    assert_eq!(r.0, 200, "{r:?}");
    // ...until the address has failed too often for any name.
    for i in 0..20 {
        password_grant(&cp, client, &format!("guess{i}"), "x").await;
    }
    let r = password_grant(&cp, client, "bob", "correct horse battery").await;
    assert_eq!(r.0, 429, "{r:?}");

    // No admin path answers to a gateway's API token, a consumer's key or an access token.
    let (st, g) = cp
        .api(
            "POST",
            "/api/v1/gateways",
            Some(json!({"name": "edge", "type": "production"})),
        )
        .await;
    assert_eq!(st, 201, "{g}");
    let (_, t) = cp.api("POST", "/api/v1/gateways/edge/token", None).await;
    let (_, k) = cp
        .api(
            "POST",
            "/api/v1/consumers/app/keys",
            Some(json!({"type": "production"})),
        )
        .await;
    let (_, tok) = cp
        .api(
            "POST",
            "/api/v1/consumers/app/token",
            Some(json!({"type": "production"})),
        )
        .await;
    for cred in [
        t["api_token"].as_str().unwrap(),
        k["key"].as_str().unwrap(),
        tok["access_token"].as_str().unwrap(),
        client.1,
    ] {
        for path in ["/api/v1/status", "/api/v1/gateways", "/api/v1/consumers"] {
            let r = reqwest::Client::new()
                .get(format!("{}{path}", cp.url))
                .bearer_auth(cred)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401, "{path} took {}", &cred[..4]);
        }
    }
}

/// Posts a node report with a gateway's API token.
async fn report_as(cp: &ControlPlane, token: &str, report: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/sync/report", cp.url))
        .bearer_auth(token)
        .json(&report)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The node ids a gateway lists.
async fn node_ids(cp: &ControlPlane, gateway: &str) -> Vec<String> {
    let (st, v) = cp
        .api("GET", &format!("/api/v1/gateways/{gateway}/nodes"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ids_are_bound_to_their_node_capped_per_gateway_and_forgotten_when_silent() {
    let root = TempDir::new().unwrap();
    let cp = server(
        root.path(),
        &["--max-nodes-per-gateway", "3", "--node-forget-after", "3"],
    )
    .await;
    let mut n = init_node(root.path(), "edge", &cp.url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    let real = std::fs::read_to_string(n.dir.join("cache").join("node-id")).unwrap();
    assert_eq!(mode(&n.dir.join("cache").join("node-key")), 0o600);
    let deadline = Instant::now() + WAIT;
    while !node_ids(&cp, "edge").await.contains(&real) {
        assert!(Instant::now() < deadline, "the node never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The gateway's token alone cannot speak for the real node: its id is bound to its key.
    let forged = json!({"node_id": real, "hostname": "forger", "applied_version": 999,
        "node_key": "f".repeat(64)});
    let (st, v) = report_as(&cp, &n.token, forged).await;
    assert_eq!(st, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("another node"),
        "{v}"
    );
    // A report without a key is refused, naming the field.
    let (st, v) = report_as(
        &cp,
        &n.token,
        json!({"node_id": "keyless", "hostname": "x"}),
    )
    .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "node_key", "{v}");
    let (st, v) = report_as(
        &cp,
        &n.token,
        json!({"node_id": "builtin", "hostname": "x", "node_key": "k".repeat(40)}),
    )
    .await;
    assert_eq!(st, 422, "{v}");
    // Nor as a control-plane node's built-in node.
    let (st, v) = report_as(
        &cp,
        &n.token,
        json!({"node_id": "builtin-1a2b3c4d", "hostname": "x", "node_key": "k".repeat(40)}),
    )
    .await;
    assert_eq!(st, 422, "{v}");

    // Three nodes at most: the real one and two more; a fourth is refused.
    for id in ["fake-1", "fake-2"] {
        let (st, v) = report_as(
            &cp,
            &n.token,
            json!({"node_id": id, "hostname": "x", "node_key": format!("{id}-{}", "k".repeat(40))}),
        )
        .await;
        assert_eq!(st, 204, "{v}");
    }
    let (st, v) = report_as(
        &cp,
        &n.token,
        json!({"node_id": "fake-3", "hostname": "x", "node_key": "k".repeat(40)}),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("3 nodes"), "{v}");

    // Silent nodes are forgotten; the real one, reporting every second, stays.
    let deadline = Instant::now() + WAIT;
    loop {
        let ids = node_ids(&cp, "edge").await;
        if ids == vec![real.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "silent nodes never forgotten: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (st, v) = report_as(
        &cp,
        &n.token,
        json!({"node_id": "fake-3", "hostname": "x", "node_key": "k".repeat(40)}),
    )
    .await;
    assert_eq!(st, 204, "{v}");
    // The node's key never shows in what the control plane answers.
    let (_, status) = cp.api("GET", "/api/v1/status", None).await;
    let key = std::fs::read_to_string(n.dir.join("cache").join("node-key")).unwrap();
    assert!(!status.to_string().contains(key.trim()));
    n.stop().await;
}

/// The state of `node` of `gateway` as the control plane lists it.
async fn node_view(cp: &ControlPlane, gateway: &str, node: &str) -> Value {
    let (st, v) = cp
        .api("GET", &format!("/api/v1/gateways/{gateway}/nodes"), None)
        .await;
    assert_eq!(st, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| {
            // On PostgreSQL each control-plane node's built-in node is `builtin-<id>`.
            let id = n["node_id"].as_str().unwrap_or_default();
            id == node || (node == "builtin" && id.starts_with("builtin-"))
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// Puts `listeners` on gateway `name` (answers the new snapshot version).
async fn set_listeners(cp: &ControlPlane, name: &str, listeners: Value) {
    let (_, gw) = cp
        .api("GET", &format!("/api/v1/gateways/{name}"), None)
        .await;
    let mut spec = gw["spec"].clone();
    spec["listeners"] = listeners;
    let (st, v) = cp
        .api_with(
            "PUT",
            &format!("/api/v1/gateways/{name}"),
            Some(spec),
            &[("if-match", &gw["version"].to_string())],
        )
        .await;
    assert_eq!(st, 200, "{v}");
}

/// Waits until `check` holds for the node's view; answers it.
async fn node_until(
    cp: &ControlPlane,
    gateway: &str,
    node: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = node_view(cp, gateway, node).await;
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{gateway}/{node}: never {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_last_error_is_its_last_applys_kept_across_heartbeats_until_one_succeeds() {
    let root = TempDir::new().unwrap();
    let data = root.path().join("data");
    let admin = free_port();
    let gw_port = free_port();
    let mut cp = start_server(&data, admin, gw_port, None).await;
    // A port held by something else: a listener there cannot be bound.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = held.local_addr().unwrap().port();

    // The built-in gateway: the error stays through heartbeats (every second here).
    set_listeners(&cp, "default", json!([{"port": gw_port}, {"port": busy}])).await;
    let v = node_until(&cp, "default", "builtin", "failed", |v| {
        v["last_error"].is_string()
    })
    .await;
    assert!(v["last_error_at"].as_i64().unwrap() > 0, "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = node_view(&cp, "default", "builtin").await;
    assert!(
        v["last_error"].is_string(),
        "a heartbeat cleared the error: {v}"
    );
    let status = cp.cli_ok(&["status"]).await;
    assert!(status.contains("ERROR AT"), "{status}");
    set_listeners(&cp, "default", json!([{"port": gw_port}])).await;
    node_until(&cp, "default", "builtin", "recovered", |v| {
        v["last_error"].is_null() && v["last_error_at"].is_null()
    })
    .await;

    // A gateway node: an apply error stays until an apply succeeds; a sync error (the
    // control plane away) is not an apply error and is not reported once it is back.
    let mut n = init_node(root.path(), "edge", &cp.url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    let id = std::fs::read_to_string(n.dir.join("cache").join("node-id")).unwrap();
    set_listeners(
        &cp,
        "edge",
        json!([{"port": n.traffic_port}, {"port": busy}]),
    )
    .await;
    node_until(&cp, "edge", &id, "failed", |v| v["last_error"].is_string()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = node_view(&cp, "edge", &id).await;
    assert!(
        v["last_error"].is_string(),
        "a heartbeat cleared the error: {v}"
    );
    set_listeners(&cp, "edge", json!([{"port": n.traffic_port}])).await;
    node_until(&cp, "edge", &id, "recovered", |v| v["last_error"].is_null()).await;

    cp.process.signal(libc::SIGTERM);
    assert!(cp.process.wait(WAIT).await.is_some());
    // The node notices the control plane is gone...
    n.process
        .as_ref()
        .unwrap()
        .wait_for("sync failed", WAIT)
        .await;
    let cp = start_server(&data, admin, gw_port, Some(&cp.token)).await;
    // ...and once it is back the node's report carries no error.
    let v = node_until(&cp, "edge", &id, "seen again", |v| {
        v["last_seen_seconds_ago"].as_i64().is_some_and(|s| s < 2)
    })
    .await;
    assert!(v["last_error"].is_null(), "{v}");
    drop(held);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gateway_or_api_in_use_needs_force_and_says_what_goes() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/gateways",
            Some(json!({"name": "edge", "type": "production"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(
                json!({"name": "Files", "version": "v1", "context": "/files",
                "production_endpoints": ["http://127.0.0.1:9"]}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.api("POST", "/api/v1/apis/files-v1/revisions", None)
        .await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis/files-v1/deployments",
            Some(json!({"revision": 1, "gateways": ["edge", "default"]})),
        )
        .await;
    assert!(st < 300, "{v}");

    // Refused, naming what is deployed; nothing is deleted.
    let (ok, out) = cp.cli(&["gateways", "delete", "edge"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("API `files-v1` (revision 1)") && out.contains("--force"),
        "{out}"
    );
    let (st, _) = cp.api("GET", "/api/v1/gateways/edge", None).await;
    assert_eq!(st, 200);
    let (ok, out) = cp.cli(&["apis", "delete", "files-v1"]).await;
    assert!(
        !ok && out.contains("edge") && out.contains("--force"),
        "{out}"
    );

    // With --force it goes, and says what went with it.
    let out = cp.cli_ok(&["gateways", "delete", "edge", "--force"]).await;
    assert!(
        out.contains("removed with it: API `files-v1` (revision 1)"),
        "{out}"
    );
    let (st, _) = cp.api("GET", "/api/v1/gateways/edge", None).await;
    assert_eq!(st, 404);
    let out = cp.cli_ok(&["apis", "delete", "files-v1", "--force"]).await;
    assert!(out.contains("undeployed from gateway `default`"), "{out}");
    let (_, d) = cp.api("GET", "/api/v1/deployments", None).await;
    assert!(!d.to_string().contains("files-v1"), "{d}");
    // An unused gateway goes without --force.
    cp.api(
        "POST",
        "/api/v1/gateways",
        Some(json!({"name": "spare", "type": "sandbox"})),
    )
    .await;
    cp.cli_ok(&["gateways", "delete", "spare"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_on_one_context_of_a_gateway_are_refused_at_deploy() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    for (name, context) in [
        ("Pets", "/pets/v1"),
        ("Animals", "/pets/v1"),
        ("Cats", "/cats"),
    ] {
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/apis",
                Some(json!({"name": name, "version": "v1", "context": context,
                    "production_endpoints": ["http://127.0.0.1:9"]})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        cp.api("POST", &format!("/api/v1/apis/{id}/revisions"), None)
            .await;
    }
    let deploy = |id: &'static str| {
        let cp = &cp;
        async move {
            cp.api(
                "POST",
                &format!("/api/v1/apis/{id}/deployments"),
                Some(json!({"revision": 1, "gateways": ["default"]})),
            )
            .await
        }
    };
    let (st, v) = deploy("pets-v1").await;
    assert!(st < 300, "{v}");
    let (st, v) = deploy("animals-v1").await;
    assert_eq!(st, 409, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("API `animals-v1`") && message.contains("API `pets-v1`"),
        "{message}"
    );
    let (_, d) = cp.api("GET", "/api/v1/deployments", None).await;
    assert!(
        !d.to_string().contains("animals-v1"),
        "nothing was deployed: {d}"
    );
    // Another context deploys; `portico status` has nothing to warn about.
    let (st, v) = deploy("cats-v1").await;
    assert!(st < 300, "{v}");
    let status = cp.cli_ok(&["status"]).await;
    assert!(!status.contains("warning"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flag_works_or_is_refused_and_every_command_answers_json() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;

    // A gateway from a file: --internal works; a linked node's flags are refused.
    let port = free_port();
    let internal = free_port();
    let file = root.path().join("file-gw.toml");
    std::fs::write(
        &file,
        format!("[[listeners]]\naddress = \"127.0.0.1\"\nport = {port}\n[[routes]]\nfixed_response = {{ status = 200, body = \"ok\" }}\n"),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .args([
            "gateway",
            "run",
            "--config",
            file.to_str().unwrap(),
            "--cache-dir",
            "/tmp/x",
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("--cache-dir is for a gateway linked to a control plane"),
        "{text}"
    );
    let mut gw = portico_testkit::process::Process::spawn(
        Path::new(BIN),
        &[
            "gateway",
            "run",
            "--config",
            file.to_str().unwrap(),
            "--internal",
            &format!("127.0.0.1:{internal}"),
        ],
        &[],
    );
    gw.wait_for("gateway running", WAIT).await;
    let health = reqwest::get(format!("http://127.0.0.1:{internal}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    gw.signal(libc::SIGTERM);
    gw.wait(WAIT).await;

    // -o json on deploy (with --wait), undeploy of a list, and plain answers.
    cp.api(
        "POST",
        "/api/v1/gateways",
        Some(json!({"name": "edge", "type": "production"})),
    )
    .await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(
                json!({"name": "Files", "version": "v1", "context": "/files",
                "production_endpoints": ["http://127.0.0.1:9"]}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.cli_ok(&["revisions", "create", "files-v1"]).await;
    let out = cp
        .cli_ok(&[
            "deploy",
            "files-v1",
            "--revision",
            "1",
            "--gateway",
            "default",
            "--wait",
            "-o",
            "json",
        ])
        .await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["wait"]["gateways"][0]["gateway"], "default", "{v}");
    cp.cli_ok(&["deploy", "files-v1", "--revision", "1", "--gateway", "edge"])
        .await;
    // A list with one gateway it is not on undeploys nothing.
    let (ok, out) = cp
        .cli(&["undeploy", "files-v1", "--gateway", "default,nowhere"])
        .await;
    assert!(!ok && out.contains("`nowhere`"), "{out}");
    let out = cp
        .cli_ok(&[
            "undeploy",
            "files-v1",
            "--gateway",
            "default,edge",
            "-o",
            "json",
        ])
        .await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["undeployed_from"], json!(["default", "edge"]), "{v}");
    let out = cp
        .cli_ok(&["tiers", "create", "gold", "--limit", "5", "--per", "second"])
        .await;
    let out = cp.cli_ok(&["tiers", "delete", "gold", "-o", "json"]).await + &out;
    assert!(out.contains("\"ok\":true"), "{out}");
    // Errors name the command to run next, not only a REST path.
    let (ok, out) = cp
        .cli(&[
            "deploy",
            "files-v1",
            "--revision",
            "7",
            "--gateway",
            "default",
        ])
        .await;
    assert!(
        !ok && out.contains("`portico revisions create files-v1`"),
        "{out}"
    );
    let (ok, out) = cp.cli(&["gateways", "get", "missing"]).await;
    assert!(!ok && out.contains("`portico gateways list`"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_drains_its_built_in_gateway_and_does_not_wait_on_long_polls() {
    let root = TempDir::new().unwrap();
    let mut cp = server(root.path(), &[]).await;
    let slow = Upstream::start(|_| {
        portico_testkit::Reply::Delay(
            Duration::from_secs(2),
            Box::new(portico_testkit::Reply::text("finished")),
        )
    })
    .await;
    cp.deploy_api(
        json!({"name": "Slow", "version": "v1", "context": "/slow",
            "production_endpoints": [format!("http://{}", slow.addr)]}),
        "default",
    )
    .await;
    // A node long-polling the server (its wait is the longest the server allows).
    let mut n = init_node(root.path(), "edge", &cp.url).await;
    n.extra = vec!["--poll-wait".into(), "30".into()];
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    n.process
        .as_ref()
        .unwrap()
        .wait_for("snapshot applied", WAIT)
        .await;

    // A request in flight when SIGTERM comes is answered, then the server exits.
    let url = format!("http://127.0.0.1:{}/slow/", cp.gateway_port);
    let in_flight = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    cp.process.signal(libc::SIGTERM);
    let status = in_flight.await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(
        cp.process.wait(WAIT).await.is_some(),
        "{}",
        cp.process.output()
    );
    // Not held by the node's long-poll: it ended before the poll's own 30 s.
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "the server waited {:?} to exit",
        asked.elapsed()
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_says_where_it_answers_and_a_linked_gateway_keeps_its_urls_port() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let mut n = init_node(root.path(), "edge", &cp.url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    // The admin port is the URL's, not a default beside it.
    let (_, g) = cp.api("GET", "/api/v1/gateways/edge", None).await;
    assert_eq!(g["spec"]["admin_port"], n.admin_port, "{g}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/gateways/link",
            Some(
                json!({"name": "edge", "url": format!("http://127.0.0.1:{}", n.admin_port),
                "admin_port": 2020, "api_token": n.token, "jwt_secret": n.secret}),
            ),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "admin_port", "{v}");

    let up = Upstream::echo().await;
    cp.deploy_api(
        json!({"name": "Files", "version": "v1", "context": "/files/v1",
            "production_endpoints": [format!("http://{}", up.addr)]}),
        "default,edge",
    )
    .await;
    let (_, v) = cp.api("GET", "/api/v1/apis/files-v1", None).await;
    let urls: Vec<String> = v["invoke_urls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["urls"].as_array().unwrap().clone())
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    let on_default = format!("http://localhost:{}/files/v1", cp.gateway_port);
    let on_edge = format!("http://127.0.0.1:{}/files/v1", n.traffic_port);
    assert_eq!(urls, vec![on_default.clone(), on_edge.clone()], "{v}");
    // They answer, and the CLI shows them.
    let client = Client::new();
    for u in [&on_default, &on_edge] {
        let r = client
            .send(portico_testkit::client::get(&format!("{u}/x")))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{u}");
    }
    let out = cp.cli_ok(&["apis", "get", "files-v1"]).await;
    assert!(
        out.contains(&on_edge) && out.contains("production gateway `edge`"),
        "{out}"
    );
    n.stop().await;
}

/// A client command whose reader has gone away (`portico status | head`) ends quietly, as
/// Unix tools do (141, 128 + SIGPIPE), instead of panicking on its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_command_whose_reader_went_away_ends_quietly() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    for args in [&["status"][..], &["apis", "list", "-o", "json"][..]] {
        // The pipe's reading end is closed before the command writes a byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("PORTICO_URL", &cp.url)
            .env("PORTICO_TOKEN", &cp.token)
            .env("PORTICO_CLI_CONFIG", "/nonexistent/cli.json")
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}
