//! Upstream behaviour end to end: errors and their statuses, retries and the retry budget,
//! passive outlier ejection, timeouts, load balancing, DNS and connection reuse.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Gw, WEB, service};
use http::Method;
use portico_testkit::client::request;
use portico_testkit::{Client, Reply, Upstream};

/// A port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

fn route(service: &str) -> String {
    format!("[[routes]]\nname = \"r\"\nforward = {{ service = \"{service}\" }}\n")
}

fn metric(text: &str, name: &str, service: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("service=\"{service}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_502_and_retried_elsewhere() {
    let dead = closed_port();
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service("s", &[dead], "retries = { attempts = 0 }"),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let r = Client::new().get(&gw.url("/x")).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = r.json();
    assert_eq!(body["error"], "upstream_connect_failed");
    assert_eq!(body["status"], 502);
    assert!(
        body["message"].as_str().unwrap().contains("service `s`"),
        "{body}"
    );
    assert_eq!(
        body["request_id"],
        r.header("x-request-id").unwrap().as_str()
    );

    // One dead and one live endpoint: with the default single retry (and the dead one
    // ejected after five failures), nothing fails.
    let live = Upstream::named("live").await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service("s", &[dead, live.addr], ""),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    for _ in 0..20 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "live");
    }
    let m = gw.metrics().await;
    assert!(
        metric(&m, "portico_upstream_retries_total", "s") >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "portico_upstream_ejections_total", "s") >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_statuses_are_retried_for_idempotent_requests_only() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let up = Upstream::start(move |_| {
        if h.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            Reply::status(503)
        } else {
            Reply::text("ok")
        }
    })
    .await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[up.addr],
            "retries = { attempts = 2, statuses = [503] }\noutlier_detection = { consecutive_failures = 0 }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let r = client.get(&gw.url("/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 2, "the 503 was retried once");
    // A POST with a body is not replayed: the client gets the 503.
    let r = client
        .send(request(Method::POST, &gw.url("/"), "payload", &[]))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(up.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_retries() {
    let up = Upstream::start(|_| Reply::status(503)).await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[up.addr],
            "retries = { attempts = 3, statuses = [503], budget_ratio = 0.0, budget_min_per_second = 2 }\noutlier_detection = { consecutive_failures = 0 }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/")).await.status, 503);
    }
    let windows = started.elapsed().as_secs() + 2;
    let seen = up.count() as u64;
    // Without a budget this would be 20 * 4 = 80 requests.
    assert!(
        seen <= 20 + 2 * windows,
        "{seen} upstream requests in {windows} windows"
    );
    assert!(seen > 20, "some retries were allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_are_ejected() {
    let bad = Upstream::start(|_| Reply::status(502)).await;
    let good = Upstream::named("good").await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[bad.addr, good.addr],
            "retries = { attempts = 0 }\noutlier_detection = { consecutive_failures = 3, base_ejection_time = \"30s\" }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    for _ in 0..20 {
        client.get(&gw.url("/")).await;
    }
    let after_warmup = bad.count();
    assert!(after_warmup >= 3, "the bad endpoint was tried");
    for _ in 0..50 {
        let r = client.get(&gw.url("/")).await;
        assert_eq!(r.status, 200, "only the good endpoint serves now");
    }
    assert_eq!(
        bad.count(),
        after_warmup,
        "the ejected endpoint gets no traffic"
    );
    assert!(metric(&gw.metrics().await, "portico_upstream_ejections_total", "s") >= 1.0);

    // A single always-failing endpoint: once ejected, the route answers 503.
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[bad.addr],
            "retries = { attempts = 0 }\noutlier_detection = { consecutive_failures = 2, base_ejection_time = \"30s\" }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(client.get(&gw.url("/")).await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, vec![502, 502, 503, 503]);
    let r = client.get(&gw.url("/")).await;
    assert_eq!(r.json()["error"], "no_healthy_endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstreams_time_out_with_504() {
    let slow =
        Upstream::start(|_| Reply::Delay(Duration::from_secs(3), Box::new(Reply::text("late"))))
            .await;
    let cfg = format!(
        "{WEB}\n{}\n[[routes]]\nname = \"r\"\nforward = {{ service = \"s\" }}\ntimeout = \"200ms\"\n",
        service("s", &[slow.addr], "retries = { attempts = 0 }")
    );
    let gw = Gw::start(&cfg).await;
    let r = Client::new().get(&gw.url("/")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeouts_are_504() {
    // A listener that never accepts, whose backlog we fill: further SYNs are dropped, so a
    // connect hangs until the gateway's connect timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(addr),
    )
    .await;
    assert!(
        probe.is_err(),
        "the backlog is full, so a new connect must hang"
    );
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[addr],
            "connect_timeout = \"300ms\"\nretries = { attempts = 0 }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let r = Client::new().get(&gw.url("/")).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_connect_timeout");
    drop(fillers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_without_answering_is_502() {
    let up = Upstream::start(|_| Reply::Close).await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service("s", &[up.addr], "retries = { attempts = 0 }"),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let r = Client::new().get(&gw.url("/")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_is_exact_per_cycle() {
    let (a, b, c) = (
        Upstream::named("a").await,
        Upstream::named("b").await,
        Upstream::named("c").await,
    );
    let cfg = format!(
        "{WEB}\n[[services]]\nname = \"s\"\nendpoints = [\"{}\", \"{}\", {{ address = \"{}\", weight = 2 }}]\n{}",
        a.addr,
        b.addr,
        c.addr,
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    for _ in 0..400 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    for (up, want) in [(&a, 100i64), (&b, 100), (&c, 200)] {
        assert!(
            (up.count() as i64 - want).abs() <= 2,
            "{} vs {want}",
            up.count()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_slow_endpoint() {
    let slow = Upstream::start(|_| {
        Reply::Delay(Duration::from_millis(300), Box::new(Reply::text("slow")))
    })
    .await;
    let fast = Upstream::named("fast").await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[slow.addr, fast.addr],
            "load_balancing = \"least_request\""
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let url = gw.url("/");
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move { client.get(&url).await.text() }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut fast_hits = 0;
    for t in tasks {
        if t.await.unwrap() == "fast" {
            fast_hits += 1;
        }
    }
    assert!(fast_hits > 25, "the fast endpoint took {fast_hits} of 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_is_sticky() {
    let ups = [
        Upstream::named("0").await,
        Upstream::named("1").await,
        Upstream::named("2").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    for (lb, key) in [
        ("{ consistent_hash = { header = \"x-user\" } }", "header"),
        ("{ consistent_hash = { cookie = \"sid\" } }", "cookie"),
    ] {
        let cfg = format!(
            "{WEB}\n{}\n{}",
            service("s", &addrs, &format!("load_balancing = {lb}")),
            route("s")
        );
        let gw = Gw::start(&cfg).await;
        let client = Client::new();
        let mut owners: HashMap<String, String> = HashMap::new();
        for user in 0..20 {
            let id = format!("user-{user}");
            for _ in 0..5 {
                let h = if key == "header" {
                    ("x-user".to_owned(), id.clone())
                } else {
                    ("cookie".to_owned(), format!("a=1; sid={id}; b=2"))
                };
                let r = client
                    .send(request(Method::GET, &gw.url("/"), "", &[(&h.0, &h.1)]))
                    .await
                    .unwrap();
                let owner = owners.entry(id.clone()).or_insert_with(|| r.text());
                assert_eq!(*owner, r.text(), "{key}: {id} moved");
            }
        }
        let distinct: std::collections::HashSet<_> = owners.values().collect();
        assert!(
            distinct.len() > 1,
            "{key}: every user landed on one endpoint"
        );
    }
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &addrs,
            "load_balancing = { consistent_hash = \"client_ip\" }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    let first = client.get(&gw.url("/")).await.text();
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/")).await.text(), first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_names_resolve_and_connections_are_reused() {
    let up = Upstream::named("up").await;
    let cfg = format!(
        "{WEB}\n[[services]]\nname = \"s\"\nendpoints = [\"localhost:{}\"]\n{}",
        up.addr.port(),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    for _ in 0..50 {
        let r = client.get(&gw.url("/")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.count(), 50);
    assert!(
        up.connections() <= 2,
        "{} upstream connections for 50 sequential requests",
        up.connections()
    );
}

/// An HTTP/2 (h2c) upstream that resets the stream of every request to `/reset` and
/// answers others with 200.
async fn resetting_h2_upstream() -> std::net::SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/reset" {
                        // hyper answers a failed service with RST_STREAM.
                        return Err("refused".to_owned());
                    }
                    Ok(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_about_the_request_never_eject_an_endpoint() {
    // One endpoint answering 404, 500 and 501 to some requests: none of them is about its
    // health, so it is never ejected however many come in a row.
    let up = Upstream::start(|r| match r.uri.path() {
        "/missing" => Reply::status(404),
        "/broken" => Reply::status(500),
        "/unsupported" => Reply::status(501),
        "/overloaded" => Reply::status(503),
        _ => Reply::text("fine"),
    })
    .await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[up.addr],
            "retries = { attempts = 0 }\noutlier_detection = { consecutive_failures = 3, base_ejection_time = \"30s\" }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    let client = Client::new();
    for path in ["/missing", "/broken", "/unsupported"] {
        for _ in 0..6 {
            client.get(&gw.url(path)).await;
        }
        assert_eq!(
            client.get(&gw.url("/")).await.text(),
            "fine",
            "after {path}"
        );
    }
    // Clients that give up mid-body are not the endpoint's fault either.
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(gw.addr("web"))
            .await
            .unwrap();
        use tokio::io::AsyncWriteExt as _;
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\npartial")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.get(&gw.url("/")).await.text(), "fine");
    assert_eq!(
        metric(&gw.metrics().await, "portico_upstream_ejections_total", "s"),
        0.0
    );
    // 502/503/504 do say the endpoint is unwell: three in a row eject it.
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/overloaded")).await.status, 503);
    }
    let r = client.get(&gw.url("/")).await;
    assert_eq!(r.json()["error"], "no_healthy_endpoint");

    // The statuses are configurable: with [500], a 500 ejects.
    let gw = Gw::start(&cfg.replace(
        "consecutive_failures = 3,",
        "consecutive_failures = 3, failure_statuses = [500],",
    ))
    .await;
    for _ in 0..3 {
        client.get(&gw.url("/broken")).await;
    }
    assert_eq!(client.get(&gw.url("/")).await.status, 503);

    // An HTTP/2 upstream that resets a stream refuses that request, not all of them.
    let h2 = resetting_h2_upstream().await;
    let cfg = format!(
        "{WEB}\n{}\n{}",
        service(
            "s",
            &[h2],
            "protocol = \"http2\"\nretries = { attempts = 0 }\noutlier_detection = { consecutive_failures = 3, base_ejection_time = \"30s\" }"
        ),
        route("s")
    );
    let gw = Gw::start(&cfg).await;
    for _ in 0..6 {
        assert_eq!(client.get(&gw.url("/reset")).await.status, 502);
    }
    assert_eq!(client.get(&gw.url("/")).await.text(), "ok");
}
