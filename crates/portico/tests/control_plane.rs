//! The control plane end to end, with real processes on loopback: `portico server` with its
//! built-in gateway, two nodes installed with `portico gateway init` and linked (a production
//! gateway and a sandbox one), revisions deployed, rolled back, served while the control
//! plane is down and from the cache after a restart, a revoked token, links with wrong
//! credentials, and concurrent deploys that lose nothing.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::time::{Duration, Instant};

use portico_testkit::{Client, Upstream};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

fn api_def(prod: &Upstream, sandbox: &Upstream) -> Value {
    json!({
        "name": "Petstore",
        "version": "v1",
        "context": "/pets/v1",
        "production_endpoints": [format!("http://{}", prod.addr)],
        "sandbox_endpoints": [format!("http://{}", sandbox.addr)],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_revisions_to_production_and_sandbox_gateways_and_survive_outages() {
    let root = TempDir::new().unwrap();
    let data = root.path().join("data");
    let admin_port = free_port();
    let cp = start_server(&data, admin_port, free_port(), None).await;
    let client = Client::new();

    // The admin API wants the token; the OpenAPI document does not.
    let anon = reqwest::get(format!("{}/api/v1/status", cp.url))
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    let doc = reqwest::get(format!("{}/api/v1/openapi.json", cp.url))
        .await
        .unwrap();
    assert_eq!(doc.status().as_u16(), 200);
    // The built-in gateway exists and cannot be deleted.
    let (s, v) = cp.api("DELETE", "/api/v1/gateways/default", None).await;
    assert_eq!(s, 409, "{v}");

    let prod1 = Upstream::named("prod-1").await;
    let prod2 = Upstream::named("prod-2").await;
    let sandbox1 = Upstream::named("sandbox-1").await;

    // Two gateways, installed and linked.
    let mut a = init_node(root.path(), "prod", &cp.url).await;
    let mut b = init_node(root.path(), "sandbox", &cp.url).await;
    a.start().await;
    b.start().await;
    // Before linking, the control plane does not know the token.
    a.process
        .as_ref()
        .unwrap()
        .wait_for("refused this node's API token", WAIT)
        .await;

    // Wrong secret, wrong token, nobody listening: three different errors, nothing stored.
    let wrong_secret = "x".repeat(43);
    let (ok, text) = cp
        .cli(&[
            "gateways",
            "link",
            "bad",
            "--url",
            &format!("http://127.0.0.1:{}", a.admin_port),
            "--api-token",
            &a.token,
            "--jwt-secret",
            &wrong_secret,
        ])
        .await;
    assert!(!ok && text.contains("JWT secret"), "{text}");
    let (ok, text) = cp
        .cli(&[
            "gateways",
            "link",
            "bad",
            "--url",
            &format!("http://127.0.0.1:{}", a.admin_port),
            "--api-token",
            &b.token,
            "--jwt-secret",
            &a.secret,
        ])
        .await;
    assert!(!ok && text.contains("API token"), "{text}");
    let (ok, text) = cp
        .cli(&[
            "gateways",
            "link",
            "bad",
            "--url",
            &format!("http://127.0.0.1:{}", free_port()),
            "--api-token",
            &a.token,
            "--jwt-secret",
            &a.secret,
        ])
        .await;
    assert!(!ok && text.contains("cannot reach"), "{text}");
    let (s, _) = cp.api("GET", "/api/v1/gateways/bad", None).await;
    assert_eq!(s, 404);

    for (node, name, kind) in [(&a, "prod-gw", "production"), (&b, "sandbox-gw", "sandbox")] {
        let out = cp.link(node, name, kind, &["--ip", "127.0.0.1"]).await;
        assert!(out.contains("credentials match"), "{out}");
    }
    // Secrets are never returned.
    let (_, g) = cp.api("GET", "/api/v1/gateways/prod-gw", None).await;
    let text = g.to_string();
    assert!(
        !text.contains(&a.token) && !text.contains(&a.secret),
        "{text}"
    );

    // An API, two revisions.
    let api_file = root.path().join("api.json");
    std::fs::write(&api_file, api_def(&prod1, &sandbox1).to_string()).unwrap();
    cp.cli_ok(&["apis", "create", "-f", api_file.to_str().unwrap()])
        .await;
    cp.cli_ok(&["revisions", "create", "petstore-v1", "--note", "first"])
        .await;
    let out = cp
        .cli_ok(&[
            "deploy",
            "petstore-v1",
            "--revision",
            "1",
            "--gateway",
            "prod-gw,sandbox-gw",
            "--gateway",
            "default",
            "--wait",
        ])
        .await;
    assert!(out.contains("Every node serves it"), "{out}");
    // Production serves the production endpoints, sandbox the sandbox ones, hybrid production.
    eventually_serves(&client, &a.url("/pets/v1/x"), "prod-1").await;
    eventually_serves(&client, &b.url("/pets/v1/x"), "sandbox-1").await;
    let default_url = format!("http://127.0.0.1:{}/pets/v1/x", cp.gateway_port);
    eventually_serves(&client, &default_url, "prod-1").await;
    assert_eq!(prod1.last().uri.path(), "/x", "the context is stripped");

    // A second node for the production gateway (HA behind a load balancer): same token and
    // secret, its own admin port and cache; it shares the traffic port (SO_REUSEPORT).
    let mut a2 = a.sibling("second");
    a2.start().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = cp.api("GET", "/api/v1/gateways/prod-gw/nodes", None).await;
        let nodes = v["items"].as_array().unwrap();
        if nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "in_sync") {
            break;
        }
        assert!(Instant::now() < deadline, "two nodes never in sync: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The nodes come in pages like every list, by node id, the gateway's version beside them.
    let (_, all) = cp.api("GET", "/api/v1/gateways/prod-gw/nodes", None).await;
    assert_eq!(all["next"], Value::Null, "{all}");
    let (_, first) = cp
        .api("GET", "/api/v1/gateways/prod-gw/nodes?limit=1", None)
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["snapshot_version"], all["snapshot_version"]);
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = cp
        .api(
            "GET",
            &format!("/api/v1/gateways/prod-gw/nodes?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["next"], Value::Null, "{second}");
    let ids = |v: &Value| -> Vec<Value> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].clone())
            .collect()
    };
    assert_eq!([ids(&first), ids(&second)].concat(), ids(&all));
    let (st, v) = cp
        .api("GET", "/api/v1/gateways/prod-gw/nodes?limit=0", None)
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("limit"), "{v}");
    a2.stop().await;

    // Revision 2 moves production to another backend; deployed to one gateway only.
    let apply_file = root.path().join("apply.toml");
    std::fs::write(
        &apply_file,
        format!(
            "[[apis]]\nname = \"Petstore\"\nversion = \"v1\"\ncontext = \"/pets/v1\"\nproduction_endpoints = [\"http://{}\"]\nsandbox_endpoints = [\"http://{}\"]\n",
            prod2.addr, sandbox1.addr
        ),
    )
    .unwrap();
    let dry = cp
        .cli_ok(&["apply", "-f", apply_file.to_str().unwrap(), "--dry-run"])
        .await;
    assert!(
        dry.lines()
            .any(|l| l.starts_with("updated") && l.contains("petstore-v1"))
            && dry.contains("Dry run"),
        "{dry}"
    );
    let (_, before) = cp.api("GET", "/api/v1/apis/petstore-v1", None).await;
    assert_eq!(
        before["spec"]["production_endpoints"][0],
        format!("http://{}", prod1.addr)
    );
    cp.cli_ok(&["apply", "-f", apply_file.to_str().unwrap()])
        .await;
    let again = cp
        .cli_ok(&["apply", "-f", apply_file.to_str().unwrap()])
        .await;
    assert!(
        again.contains("0 created, 0 updated, 0 deleted, 1 unchanged."),
        "{again}"
    );
    // --prune removes what the file does not name, of the kinds it names: a file naming
    // APIs only leaves services alone; one that names services (even none) prunes them.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/services",
            Some(json!({"name": "old-svc", "endpoints": ["127.0.0.1:9"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let file = apply_file.to_str().unwrap();
    cp.cli_ok(&["apply", "-f", file, "--prune"]).await;
    assert_eq!(cp.api("GET", "/api/v1/services/old-svc", None).await.0, 200);
    let with_services = root.path().join("apply-services.toml");
    let text = std::fs::read_to_string(&apply_file).unwrap();
    std::fs::write(&with_services, format!("services = []\n{text}")).unwrap();
    let file = with_services.to_str().unwrap();
    let dry = cp
        .cli_ok(&["apply", "-f", file, "--prune", "--dry-run"])
        .await;
    assert!(
        dry.lines()
            .any(|l| l.starts_with("deleted") && l.contains("service") && l.contains("old-svc")),
        "{dry}"
    );
    assert_eq!(cp.api("GET", "/api/v1/services/old-svc", None).await.0, 200);
    cp.cli_ok(&["apply", "-f", file, "--prune"]).await;
    assert_eq!(cp.api("GET", "/api/v1/services/old-svc", None).await.0, 404);
    cp.cli_ok(&["revisions", "create", "petstore-v1"]).await;
    cp.cli_ok(&[
        "deploy",
        "petstore-v1",
        "--revision",
        "2",
        "--gateway",
        "prod-gw",
        "--wait",
    ])
    .await;
    eventually_serves(&client, &a.url("/pets/v1/x"), "prod-2").await;
    // The default gateway still runs revision 1 (the draft on one, the published on another).
    eventually_serves(&client, &default_url, "prod-1").await;
    eventually_serves(&client, &b.url("/pets/v1/x"), "sandbox-1").await;
    let (_, deps) = cp.api("GET", "/api/v1/deployments", None).await;
    let revs: Vec<(String, u64)> = deps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["gateway"].as_str().unwrap().to_owned(),
                d["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        revs.contains(&("prod-gw".into(), 2)) && revs.contains(&("sandbox-gw".into(), 1)),
        "{revs:?}"
    );

    // Rollback: revision 1 again.
    cp.cli_ok(&[
        "deploy",
        "petstore-v1",
        "--revision",
        "1",
        "--gateway",
        "prod-gw",
        "--wait",
    ])
    .await;
    eventually_serves(&client, &a.url("/pets/v1/x"), "prod-1").await;

    // Status: every node in sync.
    let status = cp.cli_ok(&["status", "-o", "json"]).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    let mut in_sync = 0;
    for g in status["gateways"].as_array().unwrap() {
        for n in g["nodes"].as_array().unwrap() {
            // The second production node was stopped: offline, or stale until it is.
            let builtin = n["node_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("builtin"));
            if !builtin && g["gateway"] == "prod-gw" && n["state"] != "in_sync" {
                continue;
            }
            assert_eq!(n["state"], "in_sync", "{g}");
            in_sync += 1;
        }
    }
    assert_eq!(in_sync, 3, "{status}");

    // Force a resync through the control plane (it calls the node's admin API with a JWT).
    let out = cp
        .cli_ok(&["gateways", "resync", "prod-gw", "-o", "json"])
        .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["node"]["node_id"].as_str().unwrap().starts_with("node-"),
        "{v}"
    );

    // `portico login` stores URL and token; later commands need neither.
    let cli_config = root.path().join("cli.json");
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("PORTICO_CLI_CONFIG", &cli_config)
            .env_remove("PORTICO_URL")
            .env_remove("PORTICO_TOKEN")
            .output()
            .unwrap()
    };
    let out = run(&["login", "--url", &cp.url, "--token", "pat_wrong"]);
    assert!(!out.status.success(), "a wrong token logs in");
    let out = run(&["login", "--url", &cp.url, "--token", &cp.token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["gateways", "list"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.starts_with("NAME") && table.contains("prod-gw") && table.contains("sandbox"),
        "{table}"
    );

    // The node's admin API: nothing without the JWT.
    let r = reqwest::get(format!("http://127.0.0.1:{}/admin/v1/status", a.admin_port))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.text().await.unwrap(), r#"{"error":"unauthorized"}"#);

    // The control plane goes away: the gateways keep serving.
    let mut cp = cp;
    cp.process.signal(libc::SIGTERM);
    assert!(cp.process.wait(WAIT).await.is_some());
    eventually_serves(&client, &a.url("/pets/v1/x"), "prod-1").await;
    eventually_serves(&client, &b.url("/pets/v1/x"), "sandbox-1").await;
    // A node restarted meanwhile serves from its cache.
    a.stop().await;
    a.start().await;
    a.process
        .as_ref()
        .unwrap()
        .wait_for("starting from the cached snapshot", WAIT)
        .await;
    eventually_serves(&client, &a.url("/pets/v1/x"), "prod-1").await;

    // A cache that does not match its hash is not trusted: the node starts empty.
    b.stop().await;
    let cache = b.dir.join("cache").join("snapshot.json");
    let text = std::fs::read_to_string(&cache).unwrap();
    let tampered = text.replace(&sandbox1.addr.to_string(), "127.0.0.1:1");
    assert_ne!(tampered, text);
    std::fs::write(&cache, tampered).unwrap();
    b.start().await;
    b.process
        .as_ref()
        .unwrap()
        .wait_for("ignoring it", WAIT)
        .await;
    assert!(
        client
            .send(portico_testkit::client::get(&b.url("/pets/v1/x")))
            .await
            .is_err()
    );

    // The control plane comes back (no new admin token); nodes reconnect.
    let token = cp.token.clone();
    let cp = start_server(&data, admin_port, cp.gateway_port, Some(&token)).await;
    assert!(
        !cp.process.output().contains("pat_"),
        "a second admin token was printed"
    );

    // The node that started empty gets its snapshot.
    eventually_serves(&client, &b.url("/pets/v1/x"), "sandbox-1").await;

    // Revoking the sandbox gateway's token cuts its node off: it keeps what it has.
    cp.cli_ok(&["gateways", "revoke-token", "sandbox-gw"]).await;
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/sync/snapshot?wait=0", cp.url))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let deadline = Instant::now() + WAIT;
    while b.output().matches("refused this node's API token").count() < 1
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b.output().contains("refused this node's API token"),
        "{}",
        b.output()
    );
    // Taking the API off the sandbox gateway moves its snapshot; the cut-off node never sees it.
    cp.cli_ok(&["undeploy", "petstore-v1", "--gateway", "sandbox-gw"])
        .await;
    let (_, nodes) = cp
        .api("GET", "/api/v1/gateways/sandbox-gw/nodes", None)
        .await;
    let current = nodes["snapshot_version"].as_u64().unwrap();
    let applied = nodes["items"][0]["applied_version"].as_u64().unwrap();
    assert!(
        applied < current,
        "a revoked node got version {current}: {nodes}"
    );
    eventually_serves(&client, &b.url("/pets/v1/x"), "sandbox-1").await;

    // The cut-off node stops reporting: after the offline threshold (3 s here) it shows so.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = cp
            .api("GET", "/api/v1/gateways/sandbox-gw/nodes", None)
            .await;
        if v["items"][0]["state"] == "offline" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked node never showed offline: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_and_stale_updates_lose_nothing() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("backend").await;
    let n = 8;
    for i in 0..n {
        let (s, v) = cp
            .api(
                "POST",
                "/api/v1/apis",
                Some(json!({
                    "name": format!("api{i}"), "version": "v1", "context": format!("/a{i}"),
                    "production_endpoints": [format!("http://{}", up.addr)],
                })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = cp
            .api("POST", &format!("/api/v1/apis/api{i}-v1/revisions"), None)
            .await;
        assert_eq!(s, 201, "{v}");
    }
    // Deploy all of them to the same gateway at once.
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = cp.url.clone();
        let token = cp.token.clone();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/api/v1/apis/api{i}-v1/deployments"))
                .bearer_auth(token)
                .json(&json!({"revision": 1, "gateways": ["default"]}))
                .send()
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{text}\n{}", cp.process.output());
    }
    let (_, snap) = cp
        .api("GET", "/api/v1/gateways/default/snapshot", None)
        .await;
    let routes = snap["snapshot"]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), n, "{snap}");
    let client = Client::new();
    for i in 0..n {
        eventually_serves(
            &client,
            &format!("http://127.0.0.1:{}/a{i}/x", cp.gateway_port),
            "backend",
        )
        .await;
    }

    // Optimistic concurrency: an update must name the version it read; a stale one is 409.
    let (_, api) = cp.api("GET", "/api/v1/apis/api0-v1", None).await;
    let version = api["version"].as_i64().unwrap().to_string();
    let mut spec = api["spec"].clone();
    spec["description"] = json!("first writer");
    let (s, _) = cp
        .api("PUT", "/api/v1/apis/api0-v1", Some(spec.clone()))
        .await;
    assert_eq!(s, 428, "an update without If-Match is refused");
    let etag = format!("\"{version}\"");
    let (s, v) = cp
        .api_with(
            "PUT",
            "/api/v1/apis/api0-v1",
            Some(spec.clone()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    spec["description"] = json!("second writer, stale");
    let (s, v) = cp
        .api_with(
            "PUT",
            "/api/v1/apis/api0-v1",
            Some(spec),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "stale_version");
    let (_, now) = cp.api("GET", "/api/v1/apis/api0-v1", None).await;
    assert_eq!(now["spec"]["description"], "first writer");

    // The built-in gateway stays hybrid.
    let (_, g) = cp.api("GET", "/api/v1/gateways/default", None).await;
    let mut spec = g["spec"].clone();
    spec["type"] = json!("production");
    let etag = format!("\"{}\"", g["version"]);
    let (s, v) = cp
        .api_with(
            "PUT",
            "/api/v1/gateways/default",
            Some(spec),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(s, 409, "{v}");

    // Bad input: field paths, not a 500.
    let (s, v) = cp
        .api("POST", "/api/v1/apis", Some(json!({"name": "x", "version": "v1", "context": "nope", "production_endpoints": ["ftp://x"]})))
        .await;
    assert_eq!(s, 422, "{v}");
    let paths: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["context", "production_endpoints[0]"]);
    let (s, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "x", "bogus": 1})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("bogus"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_over_https_with_a_pinned_ca_and_no_tokens_in_clear() {
    let root = TempDir::new().unwrap();
    let data = root.path().join("data");
    let port = free_port();
    let process = portico_testkit::process::Process::spawn(
        std::path::Path::new(BIN),
        &[
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--gateway-port",
            &free_port().to_string(),
            "--internal",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--tls-self-signed",
        ],
        &[],
    );
    let token = process.wait_for("    pat_", WAIT).await.trim().to_owned();
    let ready = process.wait_for("control plane ready", WAIT).await;
    let url = format!("https://127.0.0.1:{port}");
    // The portal is served where the admin API is, over HTTPS too: that is the origin
    // gateways answer the Try Out for by default.
    let portal = ready.split("portal_origin").nth(1).unwrap_or_default();
    assert!(portal.contains(&url), "{ready}");
    let ca = data.join("tls").join("ca.pem");
    let cli = |args: Vec<String>, with_ca: bool| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(&args)
            .env("PORTICO_URL", &url)
            .env("PORTICO_TOKEN", &token)
            .env("PORTICO_CLI_CONFIG", "/nonexistent/cli.json")
            .env_remove("PORTICO_CA_FILE");
        if with_ca {
            cmd.env("PORTICO_CA_FILE", &ca);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // Without the CA the server's certificate is not trusted; with it, it is.
    let (ok, out) = cli(vec!["status".into()], false);
    assert!(!ok, "{out}");
    let (ok, out) = cli(vec!["status".into()], true);
    assert!(ok, "{out}");

    // A node that pins the CA syncs over HTTPS.
    let up = Upstream::named("secure").await;
    let admin_port = free_port();
    let out = std::process::Command::new(BIN)
        .args(["gateway", "init", "--config"])
        .arg(root.path().join("n.toml"))
        .args(["--control-plane", &url, "--ca-file", ca.to_str().unwrap()])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--admin-tls-host", "127.0.0.1"])
        .arg("--cache-dir")
        .arg(root.path().join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap()
    };
    let config = std::fs::read_to_string(root.path().join("n.toml")).unwrap();
    assert!(config.contains("ca_file"), "{config}");

    let node = portico_testkit::process::Process::spawn(
        std::path::Path::new(BIN),
        &[
            "gateway",
            "run",
            "--config",
            root.path().join("n.toml").to_str().unwrap(),
            "--workers",
            "1",
            "--internal",
            "127.0.0.1:0",
            "--poll-wait",
            "5",
        ],
        &[],
    );
    node.wait_for("admin API ready", WAIT).await;
    let traffic = free_port();
    // The node's admin API is HTTPS too: linking needs its certificate.
    let admin_cert = root.path().join("n-admin.pem");
    assert!(text.contains("n-admin.pem"), "{text}");
    let link = |with_admin_ca: bool| {
        let mut args: Vec<String> = vec![
            "gateways".into(),
            "link".into(),
            "secure-gw".into(),
            "--url".into(),
            format!("https://127.0.0.1:{admin_port}"),
            "--api-token".into(),
            field("API token:"),
            "--jwt-secret".into(),
            field("JWT secret:"),
            "--listen".into(),
            traffic.to_string(),
        ];
        if with_admin_ca {
            args.push("--admin-ca".into());
            args.push(admin_cert.display().to_string());
        }
        cli(args, true)
    };
    let (ok, out) = link(false);
    assert!(
        !ok && out.contains("cannot reach"),
        "an untrusted admin certificate was accepted: {out}"
    );
    let (ok, out) = link(true);
    assert!(ok, "{out}");
    let (ok, out) = cli(
        vec!["gateways".into(), "resync".into(), "secure-gw".into()],
        true,
    );
    assert!(ok, "{out}");
    let api = root.path().join("api.json");
    std::fs::write(
        &api,
        json!({"name": "S", "version": "v1", "context": "/s", "production_endpoints": [format!("http://{}", up.addr)]})
            .to_string(),
    )
    .unwrap();
    for args in [
        vec!["apis", "create", "-f", api.to_str().unwrap()],
        vec!["revisions", "create", "s-v1"],
        vec![
            "deploy",
            "s-v1",
            "--revision",
            "1",
            "--gateway",
            "secure-gw",
            "--wait",
            "--timeout",
            "20",
        ],
    ] {
        let (ok, out) = cli(args.into_iter().map(String::from).collect(), true);
        assert!(ok, "{out}\n{}", node.output());
    }
    eventually_serves(
        &Client::new(),
        &format!("http://127.0.0.1:{traffic}/s/x"),
        "secure",
    )
    .await;

    // Plain HTTP to another machine is refused before any token is sent.
    let out = std::process::Command::new(BIN)
        .args([
            "gateway",
            "run",
            "--control-plane",
            "http://192.0.2.10:9400",
            "--token",
            "pgt_x",
        ])
        .args(["--cache-dir"])
        .arg(root.path().join("c2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("plain HTTP"), "{err}");
    let out = std::process::Command::new(BIN)
        .args([
            "status",
            "--server",
            "http://192.0.2.10:9400",
            "--admin-token",
            "pat_x",
        ])
        .env_remove("PORTICO_ALLOW_INSECURE_HTTP")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("plain HTTP"), "{err}");

    // Over HTTPS every cookie a page sets is Secure, HttpOnly and SameSite=Strict, and every
    // page carries the security headers (the sign-up pages' cookie once lacked Secure).
    let pem = std::fs::read(&ca).unwrap();
    let web = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let password = "correct horse battery staple";
    let r = web
        .post(format!("{url}/api/v1/users"))
        .bearer_auth(&token)
        .json(&json!({"name": "ada", "password": password, "roles": ["publisher"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    fn cookies(what: &str, r: &reqwest::Response) -> Vec<String> {
        let set: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(!set.is_empty(), "{what} sets no cookie");
        for c in &set {
            for flag in ["; Secure", "; HttpOnly", "; SameSite=Strict"] {
                assert!(c.contains(flag), "{what}: {c} lacks {flag}");
            }
        }
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{what}");
        for h in ["content-security-policy", "referrer-policy"] {
            assert!(r.headers().contains_key(h), "{what} lacks {h}");
        }
        set
    }
    for page in ["/console/login", "/portal/login", "/portal/signup"] {
        let r = web.get(format!("{url}{page}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{page}");
        cookies(page, &r);
    }
    let r = web
        .post(format!("{url}/portal/signup"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=stale&name=x&password=y")
        .send()
        .await
        .unwrap();
    cookies("a stale sign-up form", &r);
    let r = web
        .get(format!("{url}/console/login"))
        .send()
        .await
        .unwrap();
    let pre = cookies("the sign-in page", &r)[0].clone();
    let pre = pre.split(';').next().unwrap().to_owned();
    let csrf = pre.split_once('=').unwrap().1.to_owned();
    let r = web
        .post(format!("{url}/console/login"))
        .header("cookie", &pre)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "name=ada&password={}&csrf={csrf}",
            password.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let set = cookies("signing in", &r);
    assert!(
        set.iter().any(|c| c.starts_with("portico_session=")),
        "{set:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_certificates_reach_https_listeners_and_bad_ones_are_refused() {
    use rcgen::{CertificateParams, KeyPair};
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let make = |hosts: &[&str], expired: bool| {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    };
    let (good_pem, good_key, good_der) = make(&["secure.example.com"], false);
    let (old_pem, old_key, _) = make(&["secure.example.com"], true);
    let (_, other_key, _) = make(&["x.example.com"], false);
    let upload = |name: &str, cert: &str, key: &str| {
        cp.api(
            "POST",
            "/api/v1/certificates",
            Some(json!({"name": name, "cert_pem": cert, "key_pem": key})),
        )
    };
    let (st, v) = upload("old", &old_pem, &old_key).await;
    assert_eq!(st, 422, "{v}");
    assert!(
        v["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{v}"
    );
    let (st, v) = upload("mixed", &good_pem, &other_key).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "key_pem");
    let (st, v) = upload("secure", &good_pem, &good_key).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["hosts"], json!(["secure.example.com"]));
    let (_, list) = cp.api("GET", "/api/v1/certificates", None).await;
    assert!(!list.to_string().contains("PRIVATE KEY"), "{list}");

    // A gateway whose HTTPS listener takes the uploaded certificate for its host.
    let up = Upstream::named("tls-ok").await;
    let mut n = init_node(root.path(), "n", &cp.url).await;
    n.start().await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/gateways/link",
            Some(json!({
                "name": "tls-gw", "type": "production", "url": format!("http://127.0.0.1:{}", n.admin_port),
                "api_token": n.token, "jwt_secret": n.secret, "hosts": ["secure.example.com"],
                "listeners": [{"port": n.traffic_port, "address": "127.0.0.1", "tls": {"certificates": []}}],
            })),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    cp.deploy_api(
        json!({"name": "T", "version": "v1", "context": "/t",
        "production_endpoints": [format!("http://{}", up.addr)]}),
        "tls-gw",
    )
    .await;
    // HTTPS with the uploaded certificate, trusted as its own root.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(good_der.clone()))
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", n.traffic_port))
                .await
                .ok()?;
            let name = rustls::pki_types::ServerName::try_from("secure.example.com").ok()?;
            let mut tls = connector.connect(name, tcp).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tls.write_all(
                b"GET /t/x HTTP/1.1\r\nhost: secure.example.com\r\nconnection: close\r\n\r\n",
            )
            .await
            .ok()?;
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            Some(String::from_utf8_lossy(&out).into_owned())
        };
        if let Some(text) = attempt.await
            && text.starts_with("HTTP/1.1 200")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS answer:\n{}",
            n.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.ends_with("tls-ok"), "{body}");
    // The node's cache holds the key: owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(n.dir.join("cache").join("snapshot.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    n.stop().await;
}

/// A node whose cached snapshot cannot start (its traffic port is taken) starts empty
/// instead, with its internal health and metrics port serving: the failed first attempt
/// does not keep that port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_cache_cannot_start_starts_empty_with_its_internal_port() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("cached").await;
    let mut n = init_node(root.path(), "n", &cp.url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    cp.deploy_api(
        json!({"name": "Cached", "version": "v1", "context": "/c",
               "production_endpoints": [format!("http://{}", up.addr)]}),
        "edge",
    )
    .await;
    eventually_serves(&Client::new(), &n.url("/c/x"), "cached").await;
    n.stop().await;
    // Someone else holds the traffic port now.
    let _squatter = std::net::TcpListener::bind(("0.0.0.0", n.traffic_port)).unwrap();
    let internal = free_port();
    let p = portico_testkit::process::Process::spawn(
        std::path::Path::new(BIN),
        &[
            "gateway",
            "run",
            "--config",
            n.config.to_str().unwrap(),
            "--internal",
            &format!("127.0.0.1:{internal}"),
        ],
        &[],
    );
    p.wait_for("starting empty", WAIT).await;
    p.wait_for("admin API ready", WAIT).await;
    let r = Client::new()
        .get(&format!("http://127.0.0.1:{internal}/healthz"))
        .await;
    assert_eq!(r.status, 200, "{}", p.output());
}
