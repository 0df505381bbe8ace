//! Several control-plane nodes on one PostgreSQL (issue 15): a gateway node syncing through
//! node B serves what was deployed through node A, app files included; `portico status`
//! says the same whichever node answers; a stale update through one node is refused while the other's succeeds; a
//! node given another secret key refuses to start; a node killed with SIGKILL costs the
//! gateways nothing; the other node then leads the background duties; a database that cannot
//! be used (a bad URL, nothing listening, a newer schema) stops a node at start with one line;
//! two nodes started together on an empty database both come up; `store import` refuses a
//! dump from a newer Portico as newer.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use portico_testkit::process::Process;
use portico_testkit::{Client, Upstream};
use serde_json::json;
use tempfile::TempDir;

mod common;

use common::*;

/// Starts `portico server` on `database` with `extra` arguments, expecting it to refuse to
/// start and say `says`.
async fn refused_server(data: &std::path::Path, database: &str, extra: &[&str], says: &str) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "server",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--database",
        database,
    ];
    args.extend_from_slice(extra);
    let p = Process::spawn(std::path::Path::new(BIN), &args, &[]);
    p.wait_for(says, WAIT).await;
}

/// Control-plane nodes A (with the built-in gateway) and B (without) on the database at
/// `url`, with one secret key.
async fn two_nodes(root: &std::path::Path, url: &str) -> (ControlPlane, ControlPlane) {
    let key = root.join("secret.key");
    let key = key.to_str().unwrap();
    let a = start_server_with(
        &root.join("a"),
        free_port(),
        free_port(),
        None,
        &["--database", url, "--secret-key-file", key],
    )
    .await;
    let b = start_server_with(
        &root.join("b"),
        free_port(),
        free_port(),
        Some(&a.token),
        &[
            "--database",
            url,
            "--secret-key-file",
            key,
            "--no-builtin-gateway",
        ],
    )
    .await;
    (a, b)
}

/// A gateway node `edge` that syncs through `sync_url`, linked (production) through `cp`,
/// with API Pets (`/pets`) deployed to it from an upstream that answers `one`.
async fn edge_serving_pets(
    root: &std::path::Path,
    cp: &ControlPlane,
    sync_url: &str,
) -> (Node, Upstream) {
    let mut n = init_node(root, "edge", sync_url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    let up = Upstream::named("one").await;
    cp.deploy_api(
        json!({"name": "Pets", "version": "v1", "context": "/pets",
               "production_endpoints": [format!("http://{}", up.addr)]}),
        "edge",
    )
    .await;
    (n, up)
}

/// Points API `pets-v1`'s production endpoint at `up` (an update naming the version read).
async fn point_pets_at(cp: &ControlPlane, up: &Upstream) {
    let (_, api) = cp.api("GET", "/api/v1/apis/pets-v1", None).await;
    let mut spec = api["spec"].clone();
    spec["production_endpoints"] = json!([format!("http://{}", up.addr)]);
    let (st, v) = cp
        .api(
            "PUT",
            &format!("/api/v1/apis/pets-v1?version={}", api["version"]),
            Some(spec),
        )
        .await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_plane_nodes_on_one_postgresql_serve_one_fleet() {
    let root = TempDir::new().unwrap();
    let (_pg, url) = database(&db_name("cluster", root.path()));
    let (a, b) = two_nodes(root.path(), &url).await;

    // A gateway node that knows only B.
    let (mut n, _up) = edge_serving_pets(root.path(), &a, &b.url).await;
    let client = Client::new();
    eventually_serves(&client, &n.url("/pets/x"), "one").await;

    // Either node answers the same about the fleet: the nodes, their versions and states.
    let nodes = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["gateway"] == "edge")
            .unwrap()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["node_id"].to_string(),
                    n["applied_version"].to_string(),
                    n["state"].to_string(),
                )
            })
            .collect()
    };
    let (st, from_a) = a.api("GET", "/api/v1/status", None).await;
    assert_eq!(st, 200, "{from_a}");
    let (st, from_b) = b.api("GET", "/api/v1/status", None).await;
    assert_eq!(st, 200, "{from_b}");
    assert_eq!(nodes(&from_a).len(), 1, "{from_a}");
    assert_eq!(nodes(&from_a), nodes(&from_b));
    // A's node of the built-in gateway has an id of its own (each control-plane node that
    // runs `default` reports as its own node).
    let builtin: Vec<String> = from_a["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gateway"] == "default")
        .unwrap()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(builtin.len(), 1, "{from_a}");
    assert!(builtin[0].starts_with("builtin-"), "{builtin:?}");

    // The sign-in back-off holds across nodes: failures through A pause the name on B.
    user(&a, "ada", &["admin"]).await;
    let http = reqwest::Client::new();
    let login = |base: String, password: &'static str| {
        let http = http.clone();
        async move {
            http.post(format!("{base}/api/v1/auth/login"))
                .json(&json!({"name": "ada", "password": password}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..5 {
        assert_eq!(login(a.url.clone(), "wrong password!").await, 401);
    }
    assert_eq!(login(b.url.clone(), PASSWORD).await, 429);

    // The same stale version through both nodes: one update wins, the other is refused.
    let (_, api) = a.api("GET", "/api/v1/apis/pets-v1", None).await;
    let at = format!("/api/v1/apis/pets-v1?version={}", api["version"]);
    let mut spec_a = api["spec"].clone();
    spec_a["description"] = json!("through A");
    let mut spec_b = api["spec"].clone();
    spec_b["description"] = json!("through B");
    let (ra, rb) = tokio::join!(
        a.api("PUT", &at, Some(spec_a)),
        b.api("PUT", &at, Some(spec_b)),
    );
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", ra.1, rb.1);

    // App files live in the database too: a file uploaded through A reaches a gateway that
    // syncs through B, and one uploaded through B is served by A's built-in gateway.
    let dist = root.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("index.html"), "through A").unwrap();
    a.cli_ok(&["apps", "create", "site"]).await;
    a.cli_ok(&["apps", "upload", dist.to_str().unwrap(), "--app", "site"])
        .await;
    a.cli_ok(&[
        "apps",
        "deploy",
        "site",
        "1",
        "--gateway",
        "edge",
        "--allow-draft",
        "--wait",
    ])
    .await;
    eventually_serves(&client, &n.url("/site/"), "through A").await;
    std::fs::write(dist.join("index.html"), "through B").unwrap();
    b.cli_ok(&["apps", "upload", dist.to_str().unwrap(), "--app", "site"])
        .await;
    b.cli_ok(&[
        "apps",
        "deploy",
        "site",
        "2",
        "--gateway",
        "default",
        "--wait",
    ])
    .await;
    eventually_serves(
        &client,
        &format!("http://127.0.0.1:{}/site/", a.gateway_port),
        "through B",
    )
    .await;

    // A node with another key would seal what nobody else can open: it does not start.
    let other_key = root.path().join("other.key");
    refused_server(
        &root.path().join("c"),
        &url,
        &[
            "--secret-key-file",
            other_key.to_str().unwrap(),
            "--no-builtin-gateway",
        ],
        "not the one this database's secrets are sealed with",
    )
    .await;

    // A revision 2 written through B reaches the node too, and A dying costs nothing.
    a.process.signal(libc::SIGKILL);
    let up2 = Upstream::named("two").await;
    point_pets_at(&b, &up2).await;
    let (st, v) = b.api("POST", "/api/v1/apis/pets-v1/revisions", None).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = b
        .api(
            "POST",
            "/api/v1/apis/pets-v1/deployments",
            Some(json!({"revision": 2, "gateways": ["edge"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    eventually_serves(&client, &n.url("/pets/x"), "two").await;
    n.stop().await;
}

/// The admin side and the public side on listeners of their own: each answers only its
/// own paths (404 for the other's), the console's portal link leads to the public side,
/// gateways sync through the public side only, and the portal's origin (compiled into
/// snapshots for Try Out) is the public one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_public_sides_listen_apart() {
    let root = TempDir::new().unwrap();
    let public_port = free_port();
    let public = format!("http://127.0.0.1:{public_port}");
    let cp = server(
        root.path(),
        &["--public-listen", &format!("127.0.0.1:{public_port}")],
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = |method: reqwest::Method, url: String| {
        let req = http.request(method, url).bearer_auth(&cp.token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    use reqwest::Method as M;
    // Admin paths: served on the admin side only.
    for path in ["/api/v1/apis", "/api/v1/status", "/console/login"] {
        assert_eq!(
            status(M::GET, format!("{}{path}", cp.url)).await,
            200,
            "{path}"
        );
        assert_eq!(
            status(M::GET, format!("{public}{path}")).await,
            404,
            "{path}"
        );
    }
    assert_eq!(
        status(M::POST, format!("{public}/api/v1/auth/login")).await,
        404
    );
    // Public paths: served on the public side only.
    for path in ["/oauth2/jwks", "/portal", "/api/v1/portal/apis"] {
        assert_eq!(
            status(M::GET, format!("{public}{path}")).await,
            200,
            "{path}"
        );
    }
    for path in [
        "/oauth2/jwks",
        "/api/v1/portal/apis",
        "/api/v1/sync/snapshot",
    ] {
        assert_eq!(
            status(M::GET, format!("{}{path}", cp.url)).await,
            404,
            "{path}"
        );
    }
    // The console's link to the portal leads to the public side.
    let r = http
        .get(format!("{}/portal/apis/x?y=1", cp.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("{public}/portal/apis/x?y=1")
    );
    for base in [&cp.url, &public] {
        assert_eq!(status(M::GET, format!("{base}/healthz")).await, 200);
    }

    // A gateway that knows only the public side syncs and serves; the portal's origin in
    // its snapshot is the public one.
    let (mut n, _up) = edge_serving_pets(root.path(), &cp, &public).await;
    eventually_serves(&Client::new(), &n.url("/pets/x"), "one").await;
    let r = http
        .request(M::OPTIONS, n.url("/pets/x"))
        .header("origin", &public)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some(public.clone())
    );
    n.stop().await;
}

/// Runs the `portico` binary with `args` (no control plane needed); answers whether it
/// succeeded and what it printed.
/// `portico store export DUMP --data-dir DATA`, which must succeed.
async fn export(dump: &std::path::Path, data: &std::path::Path) {
    let (ok, out) = portico(&[
        "store",
        "export",
        dump.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{out}");
}

async fn portico(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("PORTICO_DATABASE")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// From one machine to many: `store export` from SQLite, `store import` into PostgreSQL,
/// the server started on it with the same key. The gateway node serves throughout, its
/// snapshot version never goes backwards, app files come along, and a damaged dump or a
/// store that is not empty is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_from_sqlite_to_postgresql_keeps_every_gateway_serving() {
    let root = TempDir::new().unwrap();
    let old_data = root.path().join("old");
    let (admin, gw) = (free_port(), free_port());
    let cp = start_server(&old_data, admin, gw, None).await;
    let (mut n, _up) = edge_serving_pets(root.path(), &cp, &cp.url).await;
    let dist = root.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("index.html"), "moved").unwrap();
    cp.cli_ok(&["apps", "create", "site"]).await;
    cp.cli_ok(&["apps", "upload", dist.to_str().unwrap(), "--app", "site"])
        .await;
    cp.cli_ok(&[
        "apps",
        "deploy",
        "site",
        "1",
        "--gateway",
        "default",
        "--wait",
    ])
    .await;
    let client = Client::new();
    eventually_serves(&client, &n.url("/pets/x"), "one").await;
    let (_, before) = cp.api("GET", "/api/v1/status", None).await;
    let version_of = |v: &serde_json::Value| {
        v["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["gateway"] == "edge")
            .unwrap()["snapshot_version"]
            .as_u64()
            .unwrap()
    };
    let edge_version = version_of(&before);

    // The old control plane stops; the gateway keeps serving.
    let mut cp = cp;
    cp.process.signal(libc::SIGTERM);
    assert!(cp.process.wait(WAIT).await.is_some());
    eventually_serves(&client, &n.url("/pets/x"), "one").await;

    let dump = root.path().join("state.json");
    export(&dump, &old_data).await;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_pg, url) = database(&db_name("moved", root.path()));
    let new_data = root.path().join("new");
    let import = |file: std::path::PathBuf| {
        let url = url.clone();
        let new_data = new_data.clone();
        async move {
            portico(&[
                "store",
                "import",
                file.to_str().unwrap(),
                "--database",
                &url,
                "--data-dir",
                new_data.to_str().unwrap(),
            ])
            .await
        }
    };
    // A damaged dump is refused before anything is written.
    let damaged = root.path().join("damaged.json");
    let text = std::fs::read_to_string(&dump).unwrap();
    std::fs::write(&damaged, text.replacen("\"Pets\\\"", "\"Petz\\\"", 1)).unwrap();
    assert_ne!(std::fs::read_to_string(&damaged).unwrap(), text);
    let (ok, out) = import(damaged).await;
    assert!(!ok && out.contains("damaged"), "{out}");
    let (ok, out) = import(dump.clone()).await;
    assert!(ok, "{out}");
    // Once is enough: the store is not empty any more.
    let (ok, out) = import(dump.clone()).await;
    assert!(!ok && out.contains("not empty"), "{out}");

    // The server on PostgreSQL, with the old key, where the old one was.
    let key = old_data.join("secret.key");
    let cp = start_server_with(
        &new_data,
        admin,
        gw,
        Some(&cp.token),
        &[
            "--database",
            &url,
            "--secret-key-file",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let (st, after) = cp.api("GET", "/api/v1/status", None).await;
    assert_eq!(st, 200, "{after}");
    assert!(version_of(&after) >= edge_version, "{after}");
    // The node, back in touch, is in sync at once: nothing newer to fetch, nothing older.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, v) = cp.api("GET", "/api/v1/gateways/edge/nodes", None).await;
        if v["items"][0]["state"] == "in_sync" {
            assert_eq!(
                v["items"][0]["applied_version"].as_u64(),
                Some(edge_version)
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // What the old store held works: the app file (from the database), and a new deploy.
    eventually_serves(&client, &format!("http://127.0.0.1:{gw}/site/"), "moved").await;
    let up2 = Upstream::named("two").await;
    point_pets_at(&cp, &up2).await;
    cp.cli_ok(&["revisions", "create", "pets-v1"]).await;
    cp.cli_ok(&[
        "deploy",
        "pets-v1",
        "--revision",
        "2",
        "--gateway",
        "edge",
        "--wait",
    ])
    .await;
    eventually_serves(&client, &n.url("/pets/x"), "two").await;
    n.stop().await;
}

/// HAProxy in front of two control-plane nodes, as `haproxy -db` with health checks on
/// `/healthz`: answers its frontend's URL.
fn haproxy(root: &std::path::Path, backends: &[&str]) -> (Process, String) {
    let port = free_port();
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("    server cp{i} {b} check inter 300ms fall 2 rise 1\n"))
        .collect();
    let cfg = root.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    log stdout format raw local0\ndefaults\n    mode http\n    timeout connect 2s\n    \
             timeout client 90s\n    timeout server 90s\n    retries 2\n    option redispatch\n\
             frontend cp\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
             backend nodes\n    balance roundrobin\n    option httpchk GET /healthz\n{servers}"
        ),
    )
    .unwrap();
    let p = Process::spawn(
        std::path::Path::new("haproxy"),
        &["-db", "-f", cfg.to_str().unwrap()],
        &[],
    );
    (p, format!("http://127.0.0.1:{port}"))
}

/// Two control-plane nodes on one PostgreSQL behind HAProxy, a gateway node that knows only
/// HAProxy's address: node A is killed with SIGKILL under traffic; the gateway keeps serving
/// every request and takes the next deploy, written through B, through the load balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_node_killed_behind_haproxy_costs_the_gateways_nothing() {
    let root = TempDir::new().unwrap();
    let (_pg, url) = database(&db_name("lb", root.path()));
    let (a, b) = two_nodes(root.path(), &url).await;
    let (lb, lb_url) = haproxy(
        root.path(),
        &[
            a.url.trim_start_matches("http://"),
            b.url.trim_start_matches("http://"),
        ],
    );
    // The load balancer answers once a node is up behind it.
    let client = Client::new();
    eventually_serves(&client, &format!("{lb_url}/healthz"), "ok\n").await;

    let (mut n, _up) = edge_serving_pets(root.path(), &b, &lb_url).await;
    eventually_serves(&client, &n.url("/pets/x"), "one").await;

    // Traffic through the gateway all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let target = n.url("/pets/x");
        tokio::spawn(async move {
            let client = Client::new();
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.get(&target).await;
                if r.status == 200 {
                    ok += 1;
                } else {
                    failed.push(r.status);
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };

    a.process.signal(libc::SIGKILL);
    // The next change, written through B, reaches the gateway through the load balancer.
    let up2 = Upstream::named("two").await;
    point_pets_at(&b, &up2).await;
    b.cli_ok(&["revisions", "create", "pets-v1"]).await;
    b.cli_ok(&["deploy", "pets-v1", "--revision", "2", "--gateway", "edge"])
        .await;
    eventually_serves(&client, &n.url("/pets/x"), "two").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert!(ok > 0);
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    // The node reports through the load balancer too: B sees it in sync.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, v) = b.api("GET", "/api/v1/gateways/edge/nodes", None).await;
        if v["items"][0]["state"] == "in_sync" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(lb);
    n.stop().await;
}

/// PostgreSQL stopped for 10 s under admin traffic: the control plane answers 503 with a
/// message that says so (never a 500), the gateway keeps serving, and everything recovers
/// by itself with no acknowledged write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_away_for_ten_seconds_loses_no_acknowledged_write() {
    let root = TempDir::new().unwrap();
    // A cluster of its own: this test stops it.
    let pg = PgCluster::start();
    create_database(pg.url("").trim_end_matches('/'), "away");
    let url = pg.url("away");
    let cp = server(root.path(), &["--database", &url]).await;
    let (mut n, _up) = edge_serving_pets(root.path(), &cp, &cp.url).await;
    let client = Client::new();
    eventually_serves(&client, &n.url("/pets/x"), "one").await;

    // Writes all along: each tier acknowledged (201) must be there afterwards.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let (url, token) = (cp.url.clone(), cp.token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut acked, mut refused, mut other) = (Vec::new(), Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let name = format!("t{i}");
                let r = http
                    .post(format!("{url}/api/v1/tiers"))
                    .bearer_auth(&token)
                    .json(&json!({"name": name, "limit": 10}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                match status {
                    201 => acked.push(name),
                    503 => refused.push(body),
                    _ => other.push(format!("{status} {body}")),
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            (acked, refused, other)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    pg.stop();
    let away = std::time::Instant::now();
    while away.elapsed() < std::time::Duration::from_secs(10) {
        // The gateway serves from what it has.
        let r = client.get(&n.url("/pets/x")).await;
        assert_eq!(r.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    pg.start_again();
    // Back by itself: a write goes through again.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (st, _) = cp
            .api(
                "POST",
                "/api/v1/tiers",
                Some(json!({"name": "after", "limit": 1})),
            )
            .await;
        if st == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write after the database came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused, other) = writer.await.unwrap();
    assert!(
        other.is_empty(),
        "answers other than 201 and 503: {other:?}"
    );
    assert!(!refused.is_empty(), "no write met the database away");
    assert!(
        refused.iter().all(|b| b.contains("database_unavailable")),
        "{refused:?}"
    );
    let (st, v) = cp.api("GET", "/api/v1/tiers?limit=1000", None).await;
    assert_eq!(st, 200, "{v}");
    let stored: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["spec"]["name"].as_str())
        .collect();
    for name in &acked {
        assert!(
            stored.contains(&name.as_str()),
            "acknowledged {name} is gone"
        );
    }
    n.stop().await;
}

/// PostgreSQL that takes TLS only: the control plane connects with `sslmode=verify-full`
/// and the CA pinned in the URL, and says clearly why when it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_over_tls_with_a_pinned_ca() {
    let root = TempDir::new().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let pg = PgCluster::start_tls(&cert.pem(), &key.serialize_pem());
    create_database(pg.url("").trim_end_matches('/'), "secure");
    let ca_file = root.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let url = format!(
        "postgres://postgres@localhost:{}/secure?sslmode=verify-full&sslrootcert={}",
        pg.port,
        ca_file.display()
    );
    let cp = server(root.path(), &["--database", &url]).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/tiers",
            Some(json!({"name": "gold", "limit": 5})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    // Without TLS the database refuses the connection, and the server says why at start.
    let plain = format!(
        "postgres://postgres@localhost:{}/secure?sslmode=disable",
        pg.port
    );
    refused_server(
        &root.path().join("other"),
        &plain,
        &[],
        "cannot open the database at",
    )
    .await;
}

/// `--tls-self-signed` on several nodes: the CA is kept in the database, so every node
/// serves HTTPS from one CA and clients trust one `ca.pem` whichever node answers. A CA an
/// older Portico made in the data directory is adopted, so its clients keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_plane_node_serves_https_from_one_ca() {
    let root = TempDir::new().unwrap();
    let (_pg, url) = database(&db_name("https", root.path()));
    // Node A's data directory holds the CA files an older Portico made.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let tls_dir = root.path().join("a").join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    std::fs::write(tls_dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(tls_dir.join("ca.key"), ca_key.serialize_pem()).unwrap();

    let key = root.path().join("secret.key");
    let key = key.to_str().unwrap();
    let (a_port, b_port) = (free_port(), free_port());
    let a = start_server_with(
        &root.path().join("a"),
        a_port,
        free_port(),
        None,
        &[
            "--database",
            &url,
            "--secret-key-file",
            key,
            "--tls-self-signed",
            "--tls-host",
            "localhost",
        ],
    )
    .await;
    let _b = start_server_with(
        &root.path().join("b"),
        b_port,
        free_port(),
        Some(&a.token),
        &[
            "--database",
            &url,
            "--secret-key-file",
            key,
            "--no-builtin-gateway",
            "--tls-self-signed",
            "--tls-host",
            "localhost",
        ],
    )
    .await;
    // B, which never saw A's files, writes the same CA for its clients.
    let b_ca = std::fs::read_to_string(root.path().join("b").join("tls").join("ca.pem")).unwrap();
    assert_eq!(b_ca, ca.pem());
    // A client that trusts the old CA alone talks to both nodes.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    for port in [a_port, b_port] {
        let r = client
            .get(format!("https://localhost:{port}/api/v1/status"))
            .bearer_auth(&a.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("https on port {port}: {e:?}"));
        assert_eq!(r.status().as_u16(), 200, "port {port}");
    }
    // A client that trusts another CA is refused by both.
    let other = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let stranger = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(other.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    for port in [a_port, b_port] {
        let r = stranger
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await;
        assert!(
            r.is_err(),
            "port {port} served a client that trusts another CA"
        );
    }
}

/// `portico server` on `database`, which must stop at start: what it printed.
async fn server_stops(data: &std::path::Path, database: &str) -> String {
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "server",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
        "--database",
        database,
    ];
    let run = portico(&args);
    let (ok, out) = tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("the server did not stop on {database}"));
    assert!(!ok, "{out}");
    out
}

/// The one error line of `out` (there must be exactly one).
fn error_line(out: &str) -> &str {
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{out}");
    errors[0]
}

/// A database that cannot be used stops `portico server` at start with one line that names
/// the problem and never the password: a URL that does not parse, a port where nothing
/// listens, and a database whose schema a newer Portico wrote (which it leaves untouched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_used_stops_the_server_with_one_clear_line() {
    let root = TempDir::new().unwrap();

    let out = server_stops(
        &root.path().join("a"),
        "postgres://portico:s3cret@[bad/portico",
    )
    .await;
    let line = error_line(&out);
    assert!(
        line.contains("postgres://portico:***@[bad/portico") && line.contains("URL is not valid"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");

    // Nothing listens on a free port.
    let closed = format!(
        "postgres://portico:s3cret@127.0.0.1:{}/portico",
        free_port()
    );
    let out = server_stops(&root.path().join("b"), &closed).await;
    let line = error_line(&out);
    assert!(
        line.contains("cannot open the database at postgres://portico:***@127.0.0.1:")
            && line.contains("Connection refused"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");

    // A schema one version past this binary's, as a newer Portico would have left it.
    let (_pg, url) = database(&db_name("newer", root.path()));
    let newer = portico_control::store::SCHEMA_VERSION + 1;
    let psql = std::process::Command::new("psql")
        .arg(&url)
        .args(["-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, applied_at BIGINT NOT NULL); \
             INSERT INTO schema_migrations VALUES ({newer}, 'from a newer Portico', 0)"
        ))
        .output()
        .unwrap();
    assert!(psql.status.success(), "psql: {psql:?}");
    let out = server_stops(&root.path().join("c"), &url).await;
    let line = error_line(&out);
    assert!(
        line.contains(&format!(
            "schema is version {newer}, newer than this Portico knows"
        )),
        "{out}"
    );
    let tables = std::process::Command::new("psql")
        .arg(&url)
        .args([
            "-tAc",
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "1",
        "nothing migrated: {tables:?}"
    );
}

/// Two control-plane nodes started at the same moment on one empty database both come up:
/// the migrations run once (one node at a time, under a lock), the built-in gateway and the
/// first admin token are made once, and both nodes answer alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_started_together_on_an_empty_database_both_come_up() {
    let root = TempDir::new().unwrap();
    let (_pg, url) = database(&db_name("together", root.path()));
    let key = root.path().join("secret.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let args = |builtin: bool| {
        let mut a = vec!["--database", url.as_str(), "--secret-key-file"];
        a.push(key.to_str().unwrap());
        if !builtin {
            a.push("--no-builtin-gateway");
        }
        a
    };
    // Both spawned before either is waited for; the admin token is read afterwards.
    let (a_args, b_args) = (args(true), args(false));
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    let (a, b) = tokio::join!(
        start_server_with(&a_dir, free_port(), free_port(), Some(""), &a_args),
        start_server_with(&b_dir, free_port(), free_port(), Some(""), &b_args),
    );
    let tokens: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|cp| cp.process.lines())
        .filter(|l| l.starts_with("    pat_"))
        .map(|l| l.trim().to_owned())
        .collect();
    // One first admin token, shown by the node that stored it.
    assert_eq!(
        tokens.len(),
        1,
        "{}\n{}",
        a.process.output(),
        b.process.output()
    );
    let (a, b) = (
        ControlPlane {
            token: tokens[0].clone(),
            ..a
        },
        ControlPlane {
            token: tokens[0].clone(),
            ..b
        },
    );
    let migrations = std::process::Command::new("psql")
        .arg(&url)
        .args([
            "-tAc",
            "SELECT count(*), count(DISTINCT version) FROM schema_migrations",
        ])
        .output()
        .unwrap();
    let n = portico_control::store::SCHEMA_VERSION;
    assert_eq!(
        String::from_utf8_lossy(&migrations.stdout).trim(),
        format!("{n}|{n}"),
        "{migrations:?}"
    );
    let (st, from_a) = a.api("GET", "/api/v1/gateways", None).await;
    assert_eq!(st, 200, "{from_a}");
    let (st, from_b) = b.api("GET", "/api/v1/gateways", None).await;
    assert_eq!(st, 200, "{from_b}");
    assert_eq!(from_a["items"], from_b["items"]);
    assert_eq!(from_a["items"].as_array().unwrap().len(), 1, "{from_a}");
}

/// The background duties' leader killed with SIGKILL: the other control-plane node, which
/// did not lead while it lived, leads after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_node_leads_once_the_leader_is_killed() {
    let root = TempDir::new().unwrap();
    let (_pg, url) = database(&db_name("leader", root.path()));
    let (a, b) = two_nodes(root.path(), &url).await;
    a.process
        .wait_for("leads the background duties", WAIT)
        .await;
    // B is up, and follows: the lock is A's.
    let (st, v) = b.api("GET", "/api/v1/status", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        b.process.count("leads the background duties"),
        0,
        "{}",
        b.process.output()
    );
    a.process.signal(libc::SIGKILL);
    b.process
        .wait_for("leads the background duties", WAIT)
        .await;
}

/// The connection leadership is held on asks PostgreSQL for TCP keepalives of its own, so
/// that a leader whose host vanishes without a word loses the lock in seconds, not hours
/// (the bound is in the README's "More than one control-plane node").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leadership_connection_has_keepalives() {
    let root = TempDir::new().unwrap();
    let (_pg, url) = database(&db_name("keepalive", root.path()));
    let mut conn = portico_control::leader::connect(&url).await.unwrap();
    for (setting, value) in [
        ("tcp_keepalives_idle", "5"),
        ("tcp_keepalives_interval", "2"),
        ("tcp_keepalives_count", "3"),
        ("tcp_user_timeout", "10000"),
    ] {
        let shown: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(shown, value, "{setting}");
    }
}

/// `store import` of a dump from a newer Portico (a later dump format, or a later schema,
/// each with a field this one does not know) is refused as newer, before the target store
/// is even opened; the dump as written imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_from_a_newer_portico_is_refused_as_newer() {
    let root = TempDir::new().unwrap();
    let dump = root.path().join("state.json");
    let source = root.path().join("source");
    export(&dump, &source).await;
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let import = |file: &std::path::Path, target: &std::path::Path| {
        let (file, target) = (file.to_owned(), target.to_owned());
        async move {
            portico(&[
                "store",
                "import",
                file.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
            ])
            .await
        }
    };
    for (field, value) in [
        (
            "format_version",
            json!(written["format_version"].as_u64().unwrap() + 1),
        ),
        (
            "schema_version",
            json!(portico_control::store::SCHEMA_VERSION + 1),
        ),
    ] {
        // The checksum covers the tables and files, not what the dump says about itself.
        let mut newer = written.clone();
        newer[field] = value.clone();
        newer["added_later"] = json!(true);
        let file = root.path().join(format!("{field}.json"));
        std::fs::write(&file, serde_json::to_vec(&newer).unwrap()).unwrap();
        let target = root.path().join(format!("target-{field}"));
        let (ok, out) = import(&file, &target).await;
        assert!(!ok, "{out}");
        assert!(
            out.contains("made by a newer Portico") && out.contains(&format!("version {value}")),
            "{field}: {out}"
        );
        assert!(!target.exists(), "{field}: nothing opened or written");
    }
    let (ok, out) = import(&dump, &root.path().join("target")).await;
    assert!(ok, "{out}");
}
