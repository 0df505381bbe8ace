//! Active health checks and connection pools against real upstream servers: endpoints that
//! fail their checks (HTTP, gRPC health, TCP) leave balancing while traffic flows and come
//! back when they pass; a service whose endpoints all fail opens or closes as configured;
//! pool limits refuse what is over them, naming the limit, under a real concurrent load.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gw, WEB, service};
use portico_testkit::{Client, Reply, Upstream};

fn route(service: &str) -> String {
    format!("[[routes]]\nname = \"r\"\nforward = {{ service = \"{service}\" }}\n")
}

/// Active checks alone decide (no retries, no passive ejection), every 100 ms.
const QUIET: &str = "retries = { attempts = 0 }\noutlier_detection = { consecutive_failures = 0 }";

/// A gateway config: service `s` on `addrs` with [`QUIET`] and `extra` settings, and one
/// route to it.
fn config(addrs: &[SocketAddr], extra: &str) -> String {
    format!(
        "{WEB}\n{}\n{}",
        service("s", addrs, &format!("{QUIET}\n{extra}")),
        route("s")
    )
}

/// The value of `portico_upstream_endpoint_healthy` for an endpoint, if it is there.
fn gauge(metrics: &str, endpoint: SocketAddr) -> Option<i64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("portico_upstream_endpoint_healthy{"))
        .find(|l| l.contains(&format!("endpoint=\"{endpoint}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until the endpoint's health gauge reads `want`.
async fn wait_health(gw: &Gw, endpoint: SocketAddr, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = gw.metrics().await;
        if gauge(&m, endpoint) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint} never reached health {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upstream that answers its name, and `/healthz` with 200 or 503 as `up` says.
async fn flagged(name: &'static str, up: Arc<AtomicBool>) -> Upstream {
    Upstream::with_health(name, "/healthz", up).await
}

/// Requests that are not health probes.
fn traffic(u: &Upstream) -> usize {
    u.requests()
        .iter()
        .filter(|r| r.uri.path() != "/healthz" && !r.uri.path().starts_with("/grpc.health"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_take_a_failing_endpoint_out_while_traffic_flows_and_bring_it_back() {
    let a_up = Arc::new(AtomicBool::new(true));
    let a = flagged("a", a_up.clone()).await;
    let b = flagged("b", Arc::new(AtomicBool::new(true))).await;
    let cfg = config(
        &[a.addr, b.addr],
        "hostname = \"pets.internal\"\nhealth_check = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", unhealthy_threshold = 2, healthy_threshold = 2 }",
    );
    let gw = Gw::start(&cfg).await;
    wait_health(&gw, a.addr, 1).await;
    wait_health(&gw, b.addr, 1).await;
    // Probes are GETs of the path, with the service's hostname and our user agent.
    let probe = a
        .requests()
        .into_iter()
        .find(|r| r.uri.path() == "/healthz")
        .unwrap();
    assert_eq!(probe.method, http::Method::GET);
    assert_eq!(probe.headers["host"], "pets.internal");
    assert_eq!(probe.headers["user-agent"], "portico-health-check");

    // Traffic flows all along.
    let client = Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, url, stop) = (client.clone(), gw.url("/x"), stop.clone());
        tokio::spawn(async move {
            let mut failed = 0;
            while !stop.load(Ordering::SeqCst) {
                if client.get(&url).await.status != 200 {
                    failed += 1;
                }
            }
            failed
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(traffic(&a) > 0 && traffic(&b) > 0, "both take traffic");

    a_up.store(false, Ordering::SeqCst);
    wait_health(&gw, a.addr, 0).await;
    let seen_by_a = traffic(&a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        traffic(&a),
        seen_by_a,
        "no request reaches an endpoint once it is marked down"
    );
    let down = gw.gw.endpoint_health();
    assert!(
        down.iter()
            .any(|h| h.endpoint == a.addr.to_string() && !h.healthy),
        "{down:?}"
    );
    assert_eq!(gw.gw.unhealthy_endpoints().len(), 1);

    a_up.store(true, Ordering::SeqCst);
    wait_health(&gw, a.addr, 1).await;
    let back = traffic(&a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(traffic(&a) > back, "back in balancing once it passes");
    stop.store(true, Ordering::SeqCst);
    assert_eq!(load.await.unwrap(), 0, "no request failed");
    let m = gw.metrics().await;
    assert!(
        m.contains("portico_upstream_health_checks_total{service=\"s\",result=\"failed\"}"),
        "{m}"
    );
    assert!(gw.gw.unhealthy_endpoints().is_empty());
}

/// A `grpc.health.v1.HealthCheckResponse { status }` in a gRPC frame.
fn health_reply(status: u8) -> Reply {
    Reply::Trailers {
        body: Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]),
        trailers: vec![("grpc-status".into(), "0".into())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_ask_the_health_service() {
    // 1 SERVING, 2 NOT_SERVING.
    let status = Arc::new(AtomicU8::new(1));
    let s2 = status.clone();
    let a = Upstream::start(move |r| {
        if r.uri.path() == "/grpc.health.v1.Health/Check" {
            health_reply(s2.load(Ordering::SeqCst))
        } else {
            Reply::text("a")
        }
    })
    .await;
    let b = Upstream::start(|r| {
        if r.uri.path() == "/grpc.health.v1.Health/Check" {
            health_reply(1)
        } else {
            Reply::text("b")
        }
    })
    .await;
    let cfg = config(
        &[a.addr, b.addr],
        "protocol = \"http2\"\nhealth_check = { protocol = \"grpc\", grpc_service = \"pets.v1.Pets\", interval = \"100ms\", unhealthy_threshold = 1, healthy_threshold = 1 }",
    );
    let gw = Gw::start(&cfg).await;
    wait_health(&gw, a.addr, 1).await;
    let probe = a
        .requests()
        .into_iter()
        .find(|r| r.uri.path() == "/grpc.health.v1.Health/Check")
        .unwrap();
    assert_eq!(probe.method, http::Method::POST);
    assert_eq!(probe.headers["content-type"], "application/grpc");
    // HealthCheckRequest { service: "pets.v1.Pets" }, framed.
    let mut want = vec![0, 0, 0, 0, 14, 0x0a, 12];
    want.extend_from_slice(b"pets.v1.Pets");
    assert_eq!(&probe.body[..], &want[..]);

    status.store(2, Ordering::SeqCst);
    wait_health(&gw, a.addr, 0).await;
    let client = Client::new();
    let before = traffic(&a);
    for _ in 0..20 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.text(), "b");
    }
    assert_eq!(traffic(&a), before);
    status.store(1, Ordering::SeqCst);
    wait_health(&gw, a.addr, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checks_follow_a_server_that_goes_down_and_comes_back() {
    let a = Upstream::named("a").await;
    let a_addr = a.addr;
    let b = Upstream::named("b").await;
    let cfg = config(
        &[a.addr, b.addr],
        "health_check = { protocol = \"tcp\", interval = \"100ms\", unhealthy_threshold = 2, healthy_threshold = 1 }",
    );
    let gw = Gw::start(&cfg).await;
    wait_health(&gw, a_addr, 1).await;
    drop(a);
    wait_health(&gw, a_addr, 0).await;
    let client = Client::new();
    for _ in 0..20 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "the dead endpoint is not tried");
        assert_eq!(r.text(), "b");
    }
    let a = Upstream::start_on(a_addr, |_| Reply::text("a again")).await;
    wait_health(&gw, a_addr, 1).await;
    let mut seen = false;
    for _ in 0..20 {
        seen |= client.get(&gw.url("/x")).await.text() == "a again";
    }
    assert!(seen, "back in balancing");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_endpoints_all_fail_opens_or_closes_as_configured() {
    let down = Arc::new(AtomicBool::new(false));
    let a = flagged("a", down.clone()).await;
    let b = flagged("b", down.clone()).await;
    let check = "path = \"/healthz\", interval = \"100ms\", unhealthy_threshold = 1";
    let cfg = config(&[a.addr, b.addr], &format!("health_check = {{ {check} }}"));
    let gw = Gw::start(&cfg).await;
    wait_health(&gw, a.addr, 0).await;
    wait_health(&gw, b.addr, 0).await;
    let client = Client::new();
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status, 200, "open by default: {}", r.text());

    let closed = config(
        &[a.addr, b.addr],
        &format!("health_check = {{ {check}, when_all_unhealthy = \"closed\" }}"),
    );
    gw.apply(&closed).await.unwrap();
    // The endpoints keep their health across the reload.
    let r = client.get(&gw.url("/x")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "no_healthy_endpoint");

    // Without a health check the endpoints are in again.
    gw.apply(&config(&[a.addr, b.addr], "")).await.unwrap();
    assert_eq!(client.get(&gw.url("/x")).await.status, 200);
    assert!(gw.gw.endpoint_health().is_empty());
}

/// Sends `n` requests at once; answers their statuses and bodies.
async fn burst(url: &str, n: usize, h2: bool) -> Vec<(u16, String)> {
    let client = Client::new();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let r = if h2 {
                client.get_h2(&url).await
            } else {
                client.get(&url).await
            };
            (r.status.as_u16(), r.text())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pools_refuse_what_is_over_their_limits_naming_the_limit() {
    let slow = Upstream::start(|_| {
        Reply::Delay(Duration::from_millis(1500), Box::new(Reply::text("done")))
    })
    .await;
    let cfg = config(
        &[slow.addr],
        "connection_pool = { max_connections = 2, max_pending_requests = 1 }",
    );
    let gw = Gw::start(&cfg).await;
    let out = burst(&gw.url("/x"), 8, false).await;
    let ok = out.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = out.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok, 3, "two in use and one waiting get through: {out:?}");
    assert_eq!(refused.len(), 5, "{out:?}");
    for (_, body) in &refused {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "upstream_overflow");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains("max_connections = 2") && m.contains("max_pending_requests = 1"),
            "{m}"
        );
    }
    assert!(
        slow.connections() <= 2,
        "at most two connections were opened: {}",
        slow.connections()
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(
            "portico_upstream_overflow_total{service=\"s\",limit=\"max_pending_requests\"} 5"
        ),
        "{m}"
    );

    // HTTP/2: streams, with nothing allowed to wait.
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "h2",
            &[slow.addr],
            &format!("{QUIET}\nprotocol = \"http2\"\nconnection_pool = {{ max_requests = 1 }}")
        ),
        route("h2")
    );
    gw.apply(&cfg).await.unwrap();
    let out = burst(&gw.url("/x"), 4, true).await;
    assert_eq!(out.iter().filter(|(s, _)| *s == 200).count(), 1, "{out:?}");
    let refused: Vec<_> = out.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(refused.len(), 3, "{out:?}");
    assert!(
        refused[0].1.contains("max_requests = 1 in use"),
        "{}",
        refused[0].1
    );
    // Once the load is gone the pool is whole again.
    let r = Client::new().get(&gw.url("/x")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_checks_on_another_port_with_the_statuses_that_pass() {
    // The endpoint's traffic port always answers; its health is on a port of its own,
    // whose "fine" is a 404 (e.g. a health path only some servers have).
    let up = Arc::new(AtomicBool::new(true));
    let u2 = up.clone();
    let health = Upstream::start(move |_| {
        if u2.load(Ordering::SeqCst) {
            Reply::status(404)
        } else {
            Reply::status(500)
        }
    })
    .await;
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let cfg = config(
        &[a.addr, b.addr],
        &format!(
            "health_check = {{ protocol = \"http2\", port = {}, path = \"/status\", expected_statuses = [\"200-299\", 404], interval = \"100ms\", unhealthy_threshold = 1, healthy_threshold = 1 }}",
            health.addr.port()
        ),
    );
    let gw = Gw::start(&cfg).await;
    wait_health(&gw, a.addr, 1).await;
    assert!(
        health
            .requests()
            .iter()
            .all(|r| r.uri.path() == "/status" && r.version == http::Version::HTTP_2),
        "http2 probes of the path"
    );
    assert_eq!(
        traffic(&a),
        0,
        "probes went to the health port, not the endpoint's"
    );
    // Both endpoints share the health port here: both leave, and the service fails open.
    up.store(false, Ordering::SeqCst);
    wait_health(&gw, a.addr, 0).await;
    wait_health(&gw, b.addr, 0).await;
    assert_eq!(Client::new().get(&gw.url("/x")).await.status, 200);
    up.store(true, Ordering::SeqCst);
    wait_health(&gw, b.addr, 1).await;
}
