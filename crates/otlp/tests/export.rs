//! The exporter against an OTLP/HTTP receiver written here on a real socket: what arrives
//! decodes as OTLP with every field; a receiver that is down, or never answers, costs
//! `record` nothing and moves the drop count.

use std::time::Duration;

use portico_otlp::proto::any_value;
use portico_otlp::{ExportConfig, Exporter, Kind, Phase, SpanData, Value};
use portico_testkit::otlp::OtlpReceiver;

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
        phases: if i == 3 {
            vec![Phase {
                name: "route",
                start: 1_100,
                end: 1_200,
            }]
        } else {
            Vec::new()
        },
        error: (i == 2).then(|| "upstream_timeout".to_owned()),
        deferred: None,
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
    let rx = OtlpReceiver::start(false).await;
    let mut cfg = ExportConfig::new(rx.url.clone(), "edge-gateway");
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
    let got = rx.received();
    assert_eq!(got[0].line, "POST /v1/traces HTTP/1.1");
    assert_eq!(got[0].content_type, "application/x-protobuf");
    let rs = &got[0].body.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(any_value::Value::StringValue("edge-gateway".into()))
    );
    let spans = rx.spans();
    // The third span's phase is a child span of its own.
    assert_eq!(spans.len(), 4);
    let route = spans.iter().find(|s| s.name == "route").unwrap();
    assert_eq!(route.parent_span_id, vec![4; 8]);
    assert_eq!(route.trace_id, vec![3; 16]);
    assert_eq!(route.kind, 1);
    assert!(![vec![0; 8], vec![4; 8]].contains(&route.span_id));
    assert_eq!(
        (route.start_time_unix_nano, route.end_time_unix_nano),
        (1_100, 1_200)
    );
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
    let rx = OtlpReceiver::start(true).await;
    let mut cfg = ExportConfig::new(rx.url.clone(), "g");
    cfg.queue = 8;
    cfg.batch = 4;
    cfg.interval = Duration::from_millis(20);
    cfg.timeout = Duration::from_secs(30);
    let slow = Exporter::start(cfg).expect("starts");
    for i in 0..4 {
        slow.record(span(i));
    }
    // The first batch is out (its post hangs); then 8 fit in the queue, the rest drop.
    eventually("the first batch received", || rx.received().len() == 1).await;
    for i in 0..100 {
        slow.record(span(i));
    }
    assert_eq!(slow.counts().dropped.load(Relaxed), 100 - 8);
    assert_eq!(slow.counts().exported.load(Relaxed), 0);

    // An endpoint that is not a URL is refused up front.
    assert!(Exporter::start(ExportConfig::new("collector:4318", "g")).is_err());
}
