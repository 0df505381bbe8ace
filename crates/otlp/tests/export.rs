//! The exporter against an OTLP/HTTP receiver written here on a real socket: what arrives
//! decodes as OTLP with every field; a receiver that is down, or never answers, costs
//! `record` nothing and moves the drop count.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_otlp::proto::{ExportTraceServiceRequest, any_value};
use portico_otlp::{ExportConfig, Exporter, Kind, SpanData, Value};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Requests received: (request line, content type, decoded body).
type Got = Arc<Mutex<Vec<(String, String, ExportTraceServiceRequest)>>>;

/// An OTLP/HTTP receiver: reads each request, decodes its protobuf body, answers 200 (or
/// never answers when `silent`).
async fn receiver(silent: bool) -> (String, Got) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1/traces", l.local_addr().expect("addr"));
    let got: Got = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let g = g.clone();
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let head_end = loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                            .unwrap_or_default()
                    };
                    let len: usize = header("content-length").parse().unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = ExportTraceServiceRequest::decode(&buf[head_end..head_end + len])
                        .expect("an OTLP body");
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    g.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((line, header("content-type"), body));
                    if silent {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (url, got)
}

fn span(i: u8) -> SpanData {
    SpanData {
        trace_id: [i; 16],
        span_id: [i + 1; 8],
        parent_id: Some([9; 8]),
        trace_state: "k=v".into(),
        name: format!("GET r{i}"),
        kind: Kind::Server,
        start: 1_000,
        end: 2_000,
        attributes: vec![
            ("http.request.method", Value::Str("GET".into())),
            ("http.response.status_code", Value::Int(200)),
        ],
        events: vec![("upstream connected", 1_500)],
        links: vec![([7; 16], [8; 8])],
        error: (i == 2).then(|| "upstream_timeout".to_owned()),
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_as_otlp_protobuf_in_batches() {
    let (url, got) = receiver(false).await;
    let mut cfg = ExportConfig::new(url, "edge-gateway");
    cfg.interval = Duration::from_millis(100);
    let ex = Exporter::start(cfg).expect("starts");
    for i in 1..=3 {
        ex.record(span(i));
    }
    eventually("three spans exported", || {
        ex.counts()
            .exported
            .load(std::sync::atomic::Ordering::Relaxed)
            == 3
    })
    .await;
    let got = got.lock().unwrap().clone();
    let (line, ct, body) = &got[0];
    assert_eq!(line, "POST /v1/traces HTTP/1.1");
    assert_eq!(ct, "application/x-protobuf");
    let rs = &body.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(any_value::Value::StringValue("edge-gateway".into()))
    );
    let spans: Vec<_> = got
        .iter()
        .flat_map(|(_, _, b)| b.resource_spans[0].scope_spans[0].spans.clone())
        .collect();
    assert_eq!(spans.len(), 3);
    let s = &spans[0];
    assert_eq!(s.trace_id, vec![1; 16]);
    assert_eq!(s.span_id, vec![2; 8]);
    assert_eq!(s.parent_span_id, vec![9; 8]);
    assert_eq!((s.name.as_str(), s.kind), ("GET r1", 2));
    assert_eq!(
        (s.start_time_unix_nano, s.end_time_unix_nano),
        (1_000, 2_000)
    );
    assert_eq!(s.trace_state, "k=v");
    assert_eq!(s.attributes[1].key, "http.response.status_code");
    assert_eq!(
        s.attributes[1].value.as_ref().unwrap().value,
        Some(any_value::Value::IntValue(200))
    );
    assert_eq!(s.events[0].name, "upstream connected");
    assert_eq!(s.links[0].span_id, vec![8; 8]);
    let failed = spans.iter().find(|s| s.name == "GET r2").unwrap();
    assert_eq!(failed.status.as_ref().unwrap().code, 2);
    assert_eq!(failed.status.as_ref().unwrap().message, "upstream_timeout");
    assert_eq!(
        ex.counts()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_or_silent_costs_record_nothing_and_drops_are_counted() {
    use std::sync::atomic::Ordering::Relaxed;
    // Down: nothing listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = ExportConfig::new(format!("http://127.0.0.1:{port}/v1/traces"), "g");
    cfg.interval = Duration::from_millis(20);
    let down = Exporter::start(cfg).expect("starts");
    for i in 0..50 {
        down.record(span(i));
    }
    eventually("the failed batches counted", || {
        down.counts().dropped.load(Relaxed) == 50 && down.counts().failed_posts.load(Relaxed) > 0
    })
    .await;
    assert_eq!(down.counts().exported.load(Relaxed), 0);

    // Silent: the receiver takes the request and never answers. The queue (8) fills while
    // the one post waits; every span past it is dropped at once, `record` never waits.
    let (url, got) = receiver(true).await;
    let mut cfg = ExportConfig::new(url, "g");
    cfg.queue = 8;
    cfg.batch = 4;
    cfg.interval = Duration::from_millis(20);
    cfg.timeout = Duration::from_secs(30);
    let slow = Exporter::start(cfg).expect("starts");
    for i in 0..4 {
        slow.record(span(i));
    }
    // The first batch is out (its post hangs); then 8 fit in the queue, the rest drop.
    eventually("the first batch received", || {
        got.lock().unwrap().len() == 1
    })
    .await;
    for i in 0..100 {
        slow.record(span(i));
    }
    assert_eq!(slow.counts().dropped.load(Relaxed), 100 - 8);
    assert_eq!(slow.counts().exported.load(Relaxed), 0);

    // An endpoint that is not a URL is refused up front.
    assert!(Exporter::start(ExportConfig::new("collector:4318", "g")).is_err());
}
