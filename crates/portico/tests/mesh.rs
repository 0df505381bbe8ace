//! Upstream policies a mesh ingress needs, through the control plane: an API's endpoint
//! settings (health checks, failover endpoints) reach a linked node, which takes a failing
//! endpoint out, fails over, and reports the endpoint in its admin status and in
//! `portico status`; bad settings are refused with their field paths.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::*;
use portico_testkit::{Client, Upstream};
use serde_json::json;
use tempfile::TempDir;

/// An upstream that answers `name`, and `/api/healthz` with 200 or 503 as `up` says.
async fn backend(name: &'static str, up: Arc<AtomicBool>) -> Upstream {
    Upstream::with_health(name, "/api/healthz", up).await
}

/// Polls `portico status` until its output does (or does not) mention `needle`.
async fn status_mentions(cp: &ControlPlane, needle: &str, want: bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = cp.cli_ok(&["status"]).await;
        if out.contains(needle) == want {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "`portico status` never {} `{needle}`:\n{out}",
            if want { "showed" } else { "stopped showing" }
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apis_endpoints_fail_over_by_health_and_the_node_reports_it() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let primary_up = Arc::new(AtomicBool::new(true));
    let primary = backend("primary", primary_up.clone()).await;
    let backup = backend("backup", Arc::new(AtomicBool::new(true))).await;
    let mut n = init_node(root.path(), "edge", &cp.url).await;
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;
    cp.deploy_api(
        json!({
            "name": "Pets", "version": "v1", "context": "/pets/v1",
            "production_endpoints": [format!("http://{}/api", primary.addr)],
            "production_failover_endpoints": [format!("http://{}/api", backup.addr)],
            "endpoint_settings": {
                "retries": {"attempts": 0},
                "outlier_detection": {"consecutive_failures": 0},
                "health_check": {"path": "/api/healthz", "interval": "200ms", "unhealthy_threshold": 1, "healthy_threshold": 1},
            },
        }),
        "edge",
    )
    .await;
    let client = Client::new();
    let url = n.url("/pets/v1/cats");
    eventually_serves(&client, &url, "primary").await;
    // The failover endpoint takes nothing while the primary is available.
    for _ in 0..10 {
        assert_eq!(client.get(&url).await.text(), "primary");
    }

    primary_up.store(false, Ordering::SeqCst);
    eventually_serves(&client, &url, "backup").await;
    let status = node_status(&n).await;
    let endpoints = status["endpoints"].as_array().unwrap();
    assert!(
        endpoints
            .iter()
            .any(|e| e["service"] == "api.pets-v1.production"
                && e["endpoint"] == primary.addr.to_string()
                && e["healthy"] == false),
        "{status}"
    );
    let out = status_mentions(&cp, &primary.addr.to_string(), true).await;
    assert!(
        out.contains("unhealthy: gateway `edge`") && out.contains("api.pets-v1.production"),
        "{out}"
    );
    let (_, v) = cp.api("GET", "/api/v1/status", None).await;
    let edge = v["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gateway"] == "edge")
        .unwrap();
    assert_eq!(
        edge["nodes"][0]["unhealthy_endpoints"][0]["endpoint"],
        primary.addr.to_string(),
        "{edge}"
    );

    primary_up.store(true, Ordering::SeqCst);
    eventually_serves(&client, &url, "primary").await;
    status_mentions(&cp, &primary.addr.to_string(), false).await;
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoint_settings_are_refused_with_their_field_paths() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let (s, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({
                "name": "x", "version": "v1", "context": "/x",
                "production_endpoints": ["http://10.0.0.1:8080/api"],
                "production_failover_endpoints": ["https://10.0.0.2/other"],
                "sandbox_failover_endpoints": ["http://10.0.0.3/api"],
                "endpoint_settings": {
                    "health_check": {"protocol": "tcp", "path": "/health", "interval": "1ms", "unhealthy_threshold": 0},
                    "connection_pool": {"max_connections": 0},
                },
            })),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let mut paths: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "endpoint_settings.connection_pool.max_connections",
            "endpoint_settings.health_check.interval",
            "endpoint_settings.health_check.path",
            "endpoint_settings.health_check.unhealthy_threshold",
            "production_failover_endpoints[0]",
            "sandbox_failover_endpoints",
        ],
        "{v}"
    );
    // Nothing was stored.
    let (s, _) = cp.api("GET", "/api/v1/apis/x-v1", None).await;
    assert_eq!(s, 404);
    // An unknown setting names itself.
    let (s, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({
                "name": "x", "version": "v1", "context": "/x",
                "production_endpoints": ["http://10.0.0.1:8080/api"],
                "endpoint_settings": {"health_check": {"intervall": "5s"}},
            })),
        )
        .await;
    assert!(s == 400 || s == 422, "{s} {v}");
    assert!(v.to_string().contains("intervall"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_route_may_name_listeners_its_gateways_have() {
    let root = TempDir::new().unwrap();
    let gw_port = free_port();
    let cp = start_server(&root.path().join("data"), free_port(), gw_port, None).await;
    let echo = Upstream::echo().await;
    let (s, v) = cp
        .api(
            "POST",
            "/api/v1/services",
            Some(json!({"name": "echo", "endpoints": [echo.addr.to_string()]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let route = |listener: &str| {
        json!({"name": "bound", "gateways": ["default"], "route": {
            "listeners": [listener], "match": {"path": {"prefix": "/bound"}},
            "forward": {"service": "echo"}}})
    };
    // A listener the gateway does not have: refused when the gateway compiles it.
    let (s, v) = cp.api("POST", "/api/v1/routes", Some(route("nope"))).await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("nope"), "{v}");
    // The gateway's own listener: served there.
    let (s, v) = cp
        .api(
            "POST",
            "/api/v1/routes",
            Some(route(&format!("http-{gw_port}"))),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let client = Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client
            .get(&format!("http://127.0.0.1:{gw_port}/bound/x"))
            .await;
        if r.status == 200 {
            assert_eq!(r.json()["path"], "/x");
            break;
        }
        assert!(Instant::now() < deadline, "never served: {}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
