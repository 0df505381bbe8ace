//! W3C trace context through the gateway, with real sockets: the upstream (HTTP/1.1,
//! HTTP/2 and gRPC) sees the caller's trace with the gateway's span as its parent, a
//! malformed `traceparent` is replaced and never passed on, a request without one starts a
//! trace, and the access log line carries the trace and span ids.

mod common;

use common::*;
use http::{HeaderMap, Method};
use portico_testkit::grpc::{GrpcClient, GrpcServer};
use portico_testkit::{Client, Upstream, client::request};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// (trace id, parent id, flags) of a `traceparent` that must be well formed.
fn parts(h: &HeaderMap) -> (String, String, String) {
    let v = h
        .get("traceparent")
        .expect("the upstream got a traceparent")
        .to_str()
        .expect("ASCII")
        .to_owned();
    let f: Vec<&str> = v.split('-').collect();
    assert_eq!(f.len(), 4, "{v}");
    assert_eq!(f[0], "00", "{v}");
    assert_eq!((f[1].len(), f[2].len(), f[3].len()), (32, 16, 2), "{v}");
    assert!(
        v.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{v}"
    );
    assert_ne!(f[1], "0".repeat(32));
    assert_ne!(f[2], "0".repeat(16));
    (f[1].to_owned(), f[2].to_owned(), f[3].to_owned())
}

/// The access log's lines, once there are `n`.
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a log line is JSON"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the access log has fewer than {n} lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_goes_upstream_with_the_gateways_span_as_parent() {
    let h1 = Upstream::echo().await;
    let h2 = Upstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = format!(
        r#"{WEB}
{}
{}
[[routes]]
name = "h1"
match = {{ path = {{ prefix = "/h1" }} }}
forward = {{ service = "h1" }}
[[routes]]
name = "edited"
match = {{ path = {{ prefix = "/edited" }} }}
forward = {{ service = "h1" }}
request_headers = {{ set = {{ "x-env" = "prod" }} }}
[[routes]]
name = "h2"
match = {{ path = {{ prefix = "/h2" }} }}
forward = {{ service = "h2" }}
"#,
        service("h1", &[h1.addr], ""),
        service("h2", &[h2.addr], "protocol = \"http2\""),
    );
    let gw = Gw::start_logged(&cfg, &log).await;
    let client = Client::new();
    let parent = format!("00-{TRACE}-{PARENT}-01");
    let mut spans = Vec::new();
    // HTTP/1.1 written straight into the head, HTTP/1.1 with header edits, HTTP/2.
    for (path, up) in [("/h1/a", &h1), ("/edited/a", &h1), ("/h2/a", &h2)] {
        let r = client
            .send(request(
                Method::GET,
                &gw.url(path),
                "",
                &[
                    ("traceparent", &parent),
                    ("tracestate", "congo=t61rcWkgMzE"),
                ],
            ))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}");
        let seen = up.last().headers;
        let (trace, span, flags) = parts(&seen);
        assert_eq!(trace, TRACE, "{path}: the caller's trace");
        assert_ne!(span, PARENT, "{path}: the gateway's own span is the parent");
        assert_eq!(flags, "01", "{path}: sampled, as the caller decided");
        assert_eq!(seen["tracestate"], "congo=t61rcWkgMzE", "{path}");
        assert_eq!(seen.get_all("traceparent").iter().count(), 1, "{path}");
        spans.push(span);
    }
    // Each request is a span of its own.
    assert!(spans[0] != spans[1] && spans[1] != spans[2]);
    // Not sampled by the caller: told so.
    client
        .send(request(
            Method::GET,
            &gw.url("/h1/b"),
            "",
            &[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))],
        ))
        .await
        .unwrap();
    assert_eq!(parts(&h1.last().headers).2, "00");

    // Malformed: replaced by a new trace, its tracestate dropped.
    for bad in [
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        format!("00-{TRACE}-{PARENT}-01-extra"),
        "garbage".to_owned(),
    ] {
        client
            .send(request(
                Method::GET,
                &gw.url("/h1/c"),
                "",
                &[("traceparent", &bad), ("tracestate", "congo=t61rcWkgMzE")],
            ))
            .await
            .unwrap();
        let seen = h1.last().headers;
        let (trace, _, flags) = parts(&seen);
        assert_ne!(trace, TRACE, "{bad}");
        assert_eq!(flags, "01", "a new trace, sampled");
        assert!(!seen.contains_key("tracestate"), "{bad}");
        assert_ne!(seen["traceparent"], bad.as_str());
    }
    // None: one is made.
    client.get(&gw.url("/h1/d")).await;
    let (made, made_span, _) = parts(&h1.last().headers);

    // The access log names the trace and the gateway's span of each request.
    let lines = log_lines(&log, 9).await;
    let by_target = |t: &str| {
        lines
            .iter()
            .find(|l| l["path"] == t)
            .unwrap_or_else(|| panic!("no line for {t}"))
    };
    let first = by_target("/h1/a");
    assert_eq!(first["trace_id"], TRACE);
    assert_eq!(first["span_id"], spans[0].as_str());
    assert_eq!(by_target("/h2/a")["span_id"], spans[2].as_str());
    let last = by_target("/h1/d");
    assert_eq!(last["trace_id"], made.as_str());
    assert_eq!(last["span_id"], made_span.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_upstreams_get_the_trace_too() {
    let server = GrpcServer::start().await;
    let cfg = format!(
        "{}{}\n[[routes]]\nname = \"echo\"\nmatch = {{ grpc = {{ service = \"test.Echo\" }} }}\nforward = {{ service = \"g\" }}\n",
        "[[listeners]]\nname = \"g\"\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"grpc\"\n",
        service("g", &[server.addr], "protocol = \"grpc\""),
    );
    let gw = Gw::start(&cfg).await;
    // A gRPC call without trace context: the gateway starts the trace.
    let mut c = GrpcClient::connect(gw.addr("g")).await;
    c.unary("hi", 0).await.expect("the call passes");
    let seen = server.last_headers().expect("the server got the call");
    let (trace, span, flags) = parts(&seen);
    assert_ne!(trace, TRACE);
    assert_eq!((span.len(), flags.as_str()), (16, "01"));
    // With the caller's context: continued, the gateway's span as the parent.
    let parent = format!("00-{TRACE}-{PARENT}-01");
    c.unary_with("hi", &[("traceparent", &parent), ("tracestate", "k=v")])
        .await
        .expect("the call passes");
    let seen = server.last_headers().expect("the server got the call");
    let (trace, span, _) = parts(&seen);
    assert_eq!(trace, TRACE);
    assert_ne!(span, PARENT);
    assert_eq!(seen["tracestate"], "k=v");
}

/// A span per sampled request, exported over OTLP/HTTP: its parent is the caller's span,
/// its id is the parent the backend was told, its attributes follow the HTTP conventions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sampled_request_is_one_exported_span_with_its_parent_and_attributes() {
    use portico_testkit::otlp::{OtlpReceiver, attribute, hex};
    let rx = OtlpReceiver::start(false).await;
    let up = Upstream::echo().await;
    let dead = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = format!(
        r#"{WEB}
{}
{}
[[routes]]
name = "pets"
match = {{ path = {{ prefix = "/pets" }} }}
forward = {{ service = "up" }}
[[routes]]
name = "gone"
match = {{ path = {{ prefix = "/gone" }} }}
forward = {{ service = "gone" }}
"#,
        service("up", &[up.addr], ""),
        service("gone", &[dead(), dead()], "retries = { attempts = 1 }"),
    );
    let gw = Gw::start_traced(&cfg, &rx.url).await;
    let client = Client::new();
    let parent = format!("00-{TRACE}-{PARENT}-01");
    let r = client
        .send(request(
            Method::GET,
            &gw.url("/pets/1?x=y"),
            "",
            &[("traceparent", &parent)],
        ))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let (_, told, _) = parts(&up.last().headers);
    // Not sampled by the caller: no span.
    client
        .send(request(
            Method::GET,
            &gw.url("/pets/2"),
            "",
            &[("traceparent", &format!("00-{TRACE}-{PARENT}-00"))],
        ))
        .await
        .unwrap();
    // An upstream that refuses: the error kind and the retry.
    assert_eq!(client.get(&gw.url("/gone/x")).await.status, 502);
    // Two requests' spans, each with its phases as child spans: route, upstream connect,
    // upstream response for the one answered; route and its two failed attempts for the
    // other.
    let all = rx.wait_spans(8).await;
    let (spans, phases): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|s| s.kind == 2);
    assert_eq!(
        spans.len(),
        2,
        "the unsampled request made no span: {spans:?}"
    );
    let s = spans
        .iter()
        .find(|s| attribute(s, "http.route").as_deref() == Some("pets"))
        .expect("the pets span");
    assert_eq!(hex(&s.trace_id), TRACE);
    assert_eq!(
        hex(&s.parent_span_id),
        PARENT,
        "the caller's span is its parent"
    );
    assert_eq!(hex(&s.span_id), told, "the backend's parent is this span");
    assert_eq!((s.name.as_str(), s.kind), ("GET pets", 2));
    assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/pets/1?x=y"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("portico.service", "up"),
        ("portico.upstream.address", &up.addr.to_string()),
    ] {
        assert_eq!(attribute(s, k).as_deref(), Some(v), "{k}: {s:?}");
    }
    assert!(attribute(s, "error.type").is_none());
    assert_eq!(s.status.as_ref().map(|st| st.code), Some(0));
    let mut children: Vec<_> = phases
        .iter()
        .filter(|p| p.parent_span_id == s.span_id)
        .collect();
    children.sort_by_key(|p| p.start_time_unix_nano);
    let names: Vec<&str> = children.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["route", "upstream connect", "upstream response"],
        "{children:?}"
    );
    for p in &children {
        assert_eq!((p.kind, &p.trace_id), (1, &s.trace_id), "{p:?}");
        assert!(
            s.start_time_unix_nano <= p.start_time_unix_nano
                && p.start_time_unix_nano <= p.end_time_unix_nano
                && p.end_time_unix_nano <= s.end_time_unix_nano,
            "{p:?} within {s:?}"
        );
    }
    let g = spans
        .iter()
        .find(|s| attribute(s, "http.route").as_deref() == Some("gone"))
        .expect("the gone span");
    assert!(
        g.parent_span_id.is_empty(),
        "a trace started here: a root span"
    );
    assert_eq!(
        attribute(g, "http.response.status_code").as_deref(),
        Some("502")
    );
    assert_eq!(
        attribute(g, "error.type").as_deref(),
        Some("upstream_connect_failed")
    );
    assert_eq!(
        attribute(g, "http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(g.status.as_ref().map(|st| st.code), Some(2));
    let mut names: Vec<&str> = phases
        .iter()
        .filter(|p| p.parent_span_id == g.span_id)
        .map(|p| p.name.as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "route",
            "upstream attempt failed",
            "upstream attempt failed"
        ]
    );
}

/// A collector that is down costs the requests nothing: every one answers, and the drop
/// counter moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_drops_spans_and_counts_them() {
    let up = Upstream::echo().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = format!(
        "{WEB}\n{}\n[[routes]]\nname = \"pets\"\nforward = {{ service = \"up\" }}\n",
        service("up", &[up.addr], "")
    );
    let gw = Gw::start_traced(&cfg, &format!("http://{dead}/v1/traces")).await;
    let client = Client::new();
    for i in 0..20 {
        assert_eq!(client.get(&gw.url(&format!("/p/{i}"))).await.status, 200);
    }
    let dropped = spans_dropped(&gw, 20.0).await;
    assert_eq!(dropped, 20.0, "every span dropped and counted");
}

/// A collector that takes a batch and never answers costs the requests nothing either:
/// while its post hangs, the queue fills and every span past it is dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_requests_nothing() {
    use portico_testkit::otlp::OtlpReceiver;
    let rx = OtlpReceiver::start(true).await;
    let up = Upstream::echo().await;
    let cfg = format!(
        "{WEB}\n{}\n[[routes]]\nname = \"pets\"\nforward = {{ service = \"up\" }}\n",
        service("up", &[up.addr], "")
    );
    let gw = Gw::start_traced_queue(&cfg, &rx.url, 4).await;
    let client = Client::new();
    // The first batch goes out (within a second) and its post hangs.
    assert_eq!(client.get(&gw.url("/p/first")).await.status, 200);
    for _ in 0..200 {
        if !rx.received().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(rx.received().len(), 1, "the first batch was posted");
    for i in 0..30 {
        assert_eq!(client.get(&gw.url(&format!("/p/{i}"))).await.status, 200);
    }
    // Four wait in the queue; the other 26 are dropped (each as its response ends).
    let dropped = spans_dropped(&gw, 26.0).await;
    assert_eq!(dropped, 26.0, "spans past the queue dropped and counted");
}

/// `portico_trace_spans_dropped_total`, once it reaches `want` (or after 5 s).
async fn spans_dropped(gw: &Gw, want: f64) -> f64 {
    let mut dropped = 0.0;
    for _ in 0..200 {
        let m = gw.metrics().await;
        dropped = m
            .lines()
            .find(|l| l.starts_with("portico_trace_spans_dropped_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    dropped
}
