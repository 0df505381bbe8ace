//! `portico import appmesh` end to end: the App Mesh user guide's virtual gateway and gateway
//! route (with its `/chapter` prefix), a virtual router splitting traffic by weight, and a
//! virtual node's health check, imported, applied to a real control plane, served by a
//! linked node, and called; then the same virtual gateway as a standalone gateway file.
//! Bad input names the file and position; two files defining one object differently are
//! refused naming both.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::*;
use portico_testkit::client::request;
use portico_testkit::process::Process;
use portico_testkit::{Client, Upstream};
use serde_json::{Value, json};
use tempfile::TempDir;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../appmesh/tests/fixtures/reference/http"
);

fn write_json(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn read_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(REFERENCE).join(name)).unwrap())
        .unwrap()
}

/// A virtual node (`--cli-input-json` shape) on `addr`, with an HTTP health check.
fn node(name: &str, addr: std::net::SocketAddr) -> Value {
    json!({
        "meshName": "myApps", "virtualNodeName": name,
        "spec": {
            "listeners": [{
                "portMapping": {"port": addr.port(), "protocol": "http"},
                "healthCheck": {"protocol": "http", "path": "/health", "intervalMillis": 5000,
                    "timeoutMillis": 2000, "healthyThreshold": 2, "unhealthyThreshold": 2}
            }],
            "serviceDiscovery": {"dns": {"hostname": addr.ip().to_string()}}
        }
    })
}

/// The mesh: the user guide's gateway (its listener on `port`) and route, with the
/// route's prefix `/chapter` as in the guide's rewrite example, to `myservicea` on `echo`;
/// and a second route, `/shop`, to a virtual router splitting `shop.local` between two
/// nodes by weight.
fn mesh(dir: &Path, port: u16, echo: std::net::SocketAddr, a: &Upstream, b: &Upstream) {
    let mut vg = read_json("virtual-gateway.json");
    vg["spec"]["listeners"][0]["portMapping"]["port"] = json!(port);
    write_json(dir, "virtual-gateway.json", &vg);
    let mut gr = read_json("gateway-route.json");
    gr["spec"]["httpRoute"]["match"]["prefix"] = json!("/chapter");
    write_json(dir, "gateway-route.json", &gr);
    write_json(
        dir,
        "virtual-service.json",
        &read_json("virtual-service.json"),
    );
    let mut vn = read_json("virtual-node.json");
    vn["spec"]["serviceDiscovery"]["dns"]["hostname"] = json!("127.0.0.1");
    vn["spec"]["listeners"][0]["portMapping"]["port"] = json!(echo.port());
    write_json(dir, "virtual-node.json", &vn);

    std::fs::create_dir(dir.join("shop")).unwrap();
    let shop = dir.join("shop");
    // `describe-*` print, as `aws appmesh describe-gateway-route` gives it.
    write_json(
        &shop,
        "gateway-route.json",
        &json!({"gatewayRoute": {
            "meshName": "myApps", "virtualGatewayName": "myVirtualGateway", "gatewayRouteName": "shop",
            "metadata": {"arn": "arn:aws:appmesh:eu-west-1:111122223333:mesh/myApps/virtualGateway/myVirtualGateway/gatewayRoute/shop", "version": 1},
            "spec": {"priority": 10, "httpRoute": {
                "match": {"prefix": "/shop"},
                "action": {"target": {"virtualService": {"virtualServiceName": "shop.local"}}}
            }},
            "status": {"status": "ACTIVE"}
        }}),
    );
    write_json(
        &shop,
        "virtual-service.json",
        &json!({"virtualService": {"meshName": "myApps", "virtualServiceName": "shop.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "shop-router"}}}}}),
    );
    write_json(
        &shop,
        "virtual-router.json",
        &json!({"virtualRouter": {"meshName": "myApps", "virtualRouterName": "shop-router",
            "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}}}),
    );
    write_json(
        &shop,
        "route.json",
        &json!({"route": {"meshName": "myApps", "virtualRouterName": "shop-router", "routeName": "split",
        "spec": {"httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [
                {"virtualNode": "shop-a", "weight": 50},
                {"virtualNode": "shop-b", "weight": 50}
            ]}
        }}}}),
    );
    write_json(&shop, "node-a.json", &node("shop-a", a.addr));
    write_json(&shop, "node-b.json", &node("shop-b", b.addr));
}

/// An upstream that answers `name`, and `/health` with 200 or 503 as `up` says.
async fn shop_node(name: &'static str, up: Arc<AtomicBool>) -> Upstream {
    Upstream::with_health(name, "/health", up).await
}

/// `portico import appmesh ARGS...` (no control plane needed): (success, stdout, stderr).
async fn import(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["import", "appmesh"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Calls the gateway on `port` as `www.example.com`; answers the echoed request.
async fn call(client: &Client, port: u16, path: &str) -> Value {
    let r = client
        .send(request(
            http::Method::GET,
            &format!("http://127.0.0.1:{port}{path}"),
            "",
            &[("host", "www.example.com")],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// What the App Mesh documentation promises of the guide's route and of the weighted router.
async fn check_behaviour(client: &Client, port: u16) {
    // "a request to www.example.com/chapter/page would be re-written to
    // myservicea.svc.cluster.local/page"
    let v = call(client, port, "/chapter/page").await;
    assert_eq!(v["path"], "/page", "{v}");
    assert_eq!(v["headers"]["host"], "myservicea.svc.cluster.local", "{v}");
    // "A request to www.example.com/chapter1 would be rewritten to
    // myservicea.svc.cluster.local/1"
    let v = call(client, port, "/chapter1").await;
    assert_eq!(v["path"], "/1", "{v}");
    // The router splits /shop 50/50 between its two nodes.
    let (mut a, mut b) = (0, 0);
    for _ in 0..40 {
        let r = client
            .get(&format!("http://127.0.0.1:{port}/shop/cart"))
            .await;
        match r.text().as_str() {
            "shop-a" => a += 1,
            "shop-b" => b += 1,
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(a > 5 && b > 5, "weighted 50/50: {a} and {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_gateway_imported_applied_and_called() {
    let root = TempDir::new().unwrap();
    let echo = Upstream::echo().await;
    let a_up = Arc::new(AtomicBool::new(true));
    let shop_a = shop_node("shop-a", a_up.clone()).await;
    let shop_b = shop_node("shop-b", Arc::new(AtomicBool::new(true))).await;
    let dir = root.path().join("mesh");
    std::fs::create_dir(&dir).unwrap();
    let traffic = free_port();
    mesh(&dir, traffic, echo.addr, &shop_a, &shop_b);
    let mesh_dir = dir.to_str().unwrap();

    // No flag: the plan on standard output, the report on standard error, nothing written.
    let (ok, out, err) = import(&[mesh_dir]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("gateway      myVirtualGateway"), "{out}");
    assert!(
        out.contains("would be made") && out.contains("Nothing was changed"),
        "{out}"
    );
    assert!(err.contains("report:") && err.contains("carried"), "{err}");
    assert!(
        err.contains("shop/gateway-route.json"),
        "the report names each file: {err}"
    );
    // -o json: {objects, report} for scripts.
    let (ok, out, _) = import(&[mesh_dir, "-o", "json"]).await;
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["objects"]["gateways"][0]["name"], "myVirtualGateway");
    assert!(v["report"]["items"].as_array().unwrap().iter().all(|i| {
        i["file"].is_string()
            && i["path"].as_str().unwrap().starts_with('$')
            && ["carried", "changed", "not_carried"].contains(&i["outcome"].as_str().unwrap())
    }));
    // The health check of the router's nodes became an active check on their service.
    let services = v["objects"]["services"].as_array().unwrap();
    let shop_a_svc = services
        .iter()
        .find(|s| s.to_string().contains(&shop_a.addr.to_string()))
        .unwrap_or_else(|| panic!("{}", v["objects"]));
    assert_eq!(
        shop_a_svc["health_check"]["path"], "/health",
        "{shop_a_svc}"
    );

    // --out: an apply file; `portico apply` takes it.
    let cp = server(root.path(), &[]).await;
    let file = root.path().join("mesh.toml");
    let (ok, out, err) = import(&[mesh_dir, "--out", file.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    let (ok, text) = cp
        .cli(&["apply", "-f", file.to_str().unwrap(), "--dry-run"])
        .await;
    assert!(ok && text.contains("Dry run"), "{text}");

    // --apply: straight to the control plane, one transaction.
    let (ok, text) = cp.cli(&["import", "appmesh", mesh_dir, "--apply"]).await;
    assert!(ok && text.contains("Applied."), "{text}");
    let (st, g) = cp
        .api("GET", "/api/v1/gateways/myVirtualGateway", None)
        .await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["spec"]["listeners"][0]["port"], traffic);
    // Applying again changes nothing.
    let (ok, text) = cp.cli(&["import", "appmesh", mesh_dir, "--apply"]).await;
    assert!(ok && text.contains("0 created, 0 updated"), "{text}");

    // A node of the gateway serves what App Mesh promised.
    let mut n = init_node(root.path(), "vgw", &cp.url).await;
    n.traffic_port = traffic;
    n.start().await;
    cp.link(&n, "myVirtualGateway", "production", &[]).await;
    let client = Client::new();
    eventually_answers(&client, traffic).await;
    check_behaviour(&client, traffic).await;
    n.stop().await;

    // --gateway-file: the same virtual gateway standing alone.
    let gw_file = root.path().join("gateway.toml");
    let (ok, out, err) = import(&[mesh_dir, "--gateway-file", gw_file.to_str().unwrap()]).await;
    assert!(ok, "{out}{err}");
    // It runs as written; only the internal port moves off 9401 (another test may hold it).
    let p = Process::spawn(
        Path::new(BIN),
        &[
            "gateway",
            "run",
            "--config",
            gw_file.to_str().unwrap(),
            "--internal",
            "127.0.0.1:0",
        ],
        &[],
    );
    p.wait_for("gateway running", WAIT).await;
    eventually_answers(&client, traffic).await;
    check_behaviour(&client, traffic).await;
    drop(p);
}

/// Waits until the gateway on `port` serves the guide's route.
async fn eventually_answers(client: &Client, port: u16) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = client
            .send(portico_testkit::client::get(&format!(
                "http://127.0.0.1:{port}/chapter/x"
            )))
            .await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never served the route: {:?}",
            r.map(|r| r.text())
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_file_and_the_place() {
    let root = TempDir::new().unwrap();
    let dir = root.path();
    std::fs::write(
        dir.join("broken.json"),
        "{\n  \"virtualGateway\": {\n    \"meshName\": ,\n",
    )
    .unwrap();
    let (ok, out, err) = import(&[dir.join("broken.json").to_str().unwrap()]).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("broken.json:3:17") && err.contains("not valid JSON"),
        "{err}"
    );

    // Invalid for App Mesh itself: the path of the bad field.
    std::fs::write(
        dir.join("bad-port.json"),
        json!({"meshName": "m", "virtualGatewayName": "g", "spec": {"listeners": [{"portMapping": {"port": 70000, "protocol": "http"}}]}}).to_string(),
    )
    .unwrap();
    let (ok, _, err) = import(&[dir.join("bad-port.json").to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        err.contains("bad-port.json") && err.contains("listeners[0].portMapping.port"),
        "{err}"
    );

    // One object, two different definitions: both files named.
    let two = dir.join("two");
    std::fs::create_dir(&two).unwrap();
    for (f, port) in [("a.json", 8080), ("b.json", 9090)] {
        std::fs::write(
            two.join(f),
            json!({"meshName": "m", "virtualGatewayName": "g", "spec": {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}]}}).to_string(),
        )
        .unwrap();
    }
    let (ok, _, err) = import(&[two.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(err.contains("a.json") && err.contains("b.json"), "{err}");
    // A path that is not there.
    let (ok, _, err) = import(&[dir.join("nowhere").to_str().unwrap()]).await;
    assert!(!ok && err.contains("nowhere"), "{err}");
}
