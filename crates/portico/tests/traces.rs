//! Traces end to end with real processes: `portico server --otlp-endpoint` and a node run
//! with `[node.tracing]` send their spans to an OTLP/HTTP receiver written in the test. A
//! deploy is one trace from the admin request through the control plane's `deploy` span to
//! every node's apply; a request through the node is a span with its phases as children,
//! and the backend is told the same trace; the gateway's sampling is set from the control
//! plane.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::time::{Duration, Instant};

use portico_otlp::proto::Span;
use portico_testkit::otlp::{OtlpReceiver, attribute, hex};
use portico_testkit::{Client, Upstream};
use serde_json::json;
use tempfile::TempDir;

mod common;

use common::*;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

/// The spans of `service` named `name` in the caller's trace.
fn named<'a>(spans: &'a [(String, Span)], service: &str, name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|(svc, s)| svc == service && s.name == name && hex(&s.trace_id) == TRACE)
        .map(|(_, s)| s)
        .collect()
}

/// The `traceparent` the backend was last sent: (trace, parent, flags).
fn told(up: &Upstream) -> (String, String, String) {
    let h = up.last().headers;
    let v = h["traceparent"].to_str().unwrap().to_owned();
    let f: Vec<&str> = v.split('-').collect();
    assert_eq!(f.len(), 4, "{v}");
    (f[1].to_owned(), f[2].to_owned(), f[3].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_is_one_trace_to_every_nodes_apply_and_requests_are_spans_with_their_phases() {
    let rx = OtlpReceiver::start(false).await;
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &["--otlp-endpoint", &rx.url]).await;
    let mut n = init_node(root.path(), "edge-1", &cp.url).await;
    let mut file = std::fs::read_to_string(&n.config).unwrap();
    file.push_str(&format!(
        "\n[node.tracing]\notlp_endpoint = \"{}\"\nservice_name = \"edge-node\"\n",
        rx.url
    ));
    std::fs::write(&n.config, file).unwrap();
    n.start().await;
    cp.link(&n, "edge", "production", &[]).await;

    // An API with keys and a tier, its revision made; then deployed to the node's gateway
    // and the built-in one by a request that carries the caller's trace.
    let up = Upstream::named("pets").await;
    cp.tier("gold", 1000).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({
                "name": "pets", "version": "v1", "context": "/pets",
                "production_endpoints": [format!("http://{}", up.addr)],
                "auth": "api_key", "tier": "gold",
            })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp.api("POST", "/api/v1/apis/pets-v1/revisions", None).await;
    assert_eq!(st, 201, "{v}");
    let caller = format!("00-{TRACE}-{PARENT}-01");
    let (st, v) = cp
        .api_with(
            "POST",
            "/api/v1/apis/pets-v1/deployments",
            Some(json!({"revision": 1, "gateways": ["edge", "default"]})),
            &[("traceparent", &caller)],
        )
        .await;
    assert_eq!(st, 200, "{v}");

    // The admin request, the deploy inside it, and each gateway's apply under the deploy.
    let spans = rx
        .wait_until("the deploy's spans", |s| {
            !named(s, "edge-node", "apply snapshot").is_empty()
                && !named(s, "portico-gateway", "apply snapshot").is_empty()
        })
        .await;
    let request = named(
        &spans,
        "portico-control-plane",
        "POST /api/v1/apis/{id}/deployments",
    );
    assert_eq!(request.len(), 1, "{spans:?}");
    let request = request[0];
    assert_eq!(hex(&request.trace_id), TRACE);
    assert_eq!(hex(&request.parent_span_id), PARENT, "the caller's span");
    assert_eq!(request.kind, 2);
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(request, "http.route").as_deref(),
        Some("/api/v1/apis/{id}/deployments")
    );
    let deploy = named(&spans, "portico-control-plane", "deploy");
    assert_eq!(deploy.len(), 1, "one write, one deploy: {deploy:?}");
    let deploy = deploy[0];
    assert_eq!(deploy.trace_id, request.trace_id);
    assert_eq!(deploy.parent_span_id, request.span_id);
    let gateways = attribute(deploy, "portico.gateways").unwrap();
    assert!(
        gateways.contains("edge@") && gateways.contains("default@"),
        "{gateways}"
    );
    assert!(
        attribute(deploy, "portico.changes")
            .unwrap()
            .contains("pets-v1"),
        "{deploy:?}"
    );
    for (service, gateway) in [("edge-node", "edge"), ("portico-gateway", "default")] {
        let apply = named(&spans, service, "apply snapshot");
        assert_eq!(apply.len(), 1, "{service}: {spans:?}");
        let apply = apply[0];
        assert_eq!(apply.trace_id, deploy.trace_id, "{service}");
        assert_eq!(apply.parent_span_id, deploy.span_id, "{service}");
        assert_eq!(apply.links[0].span_id, deploy.span_id, "{service}");
        assert_eq!(apply.kind, 5, "{service}: a consumer of the deploy");
        assert_eq!(
            attribute(apply, "portico.gateway").as_deref(),
            Some(gateway)
        );
        assert!(
            apply.start_time_unix_nano >= deploy.start_time_unix_nano,
            "{service}"
        );
    }

    // A request through the node: one server span, its phases as children, the backend
    // told this trace with the node's span as its parent.
    let key = cp.consumer_key("acme", "gold", "pets-v1").await;
    let client = Client::new();
    let get = |headers: Vec<(&'static str, String)>| {
        let mut r = portico_testkit::client::get(&n.url("/pets/x"));
        r.headers_mut().insert("apikey", key.parse().unwrap());
        for (k, v) in headers {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        r
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client.send(get(Vec::new())).await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = "1f2e3d4c5b6a79880123456789abcdef";
    let r = client
        .send(get(vec![(
            "traceparent",
            format!("00-{other}-00f067aa0ba902b7-01"),
        )]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let (trace, parent, flags) = told(&up);
    assert_eq!((trace.as_str(), flags.as_str()), (other, "01"));
    let spans = rx
        .wait_until("the request's span and phases", |s| {
            s.iter()
                .any(|(_, sp)| hex(&sp.trace_id) == other && sp.kind == 2)
                && s.iter()
                    .filter(|(_, sp)| hex(&sp.trace_id) == other && sp.kind == 1)
                    .count()
                    >= 5
        })
        .await;
    let mine: Vec<&Span> = spans
        .iter()
        .filter(|(svc, s)| svc == "edge-node" && hex(&s.trace_id) == other)
        .map(|(_, s)| s)
        .collect();
    let server: Vec<&&Span> = mine.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(server.len(), 1, "{mine:?}");
    let server = server[0];
    assert_eq!(hex(&server.span_id), parent, "the backend's parent");
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(server.name, "GET api.pets-v1");
    assert_eq!(hex(&server.trace_id), other);
    for (k, v) in [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("portico.consumer", "acme"),
        ("portico.upstream.address", &up.addr.to_string()),
    ] {
        assert_eq!(attribute(server, k).as_deref(), Some(v), "{k}: {server:?}");
    }
    let mut phases: Vec<&&Span> = mine
        .iter()
        .filter(|s| s.kind == 1 && s.parent_span_id == server.span_id)
        .collect();
    phases.sort_by_key(|s| s.start_time_unix_nano);
    let names: Vec<&str> = phases.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "route",
            "authenticate",
            "limit",
            "upstream connect",
            "upstream response"
        ]
    );

    // Sampling set on the gateway in the control plane reaches its nodes: `never`, and a
    // sampled caller's request is no longer recorded (nor marked sampled upstream).
    let (st, gw) = cp.api("GET", "/api/v1/gateways/edge", None).await;
    assert_eq!(st, 200, "{gw}");
    let mut spec = gw["spec"].clone();
    spec["sampling"] = json!({"sampler": "ratio", "ratio": 2});
    let path = format!("/api/v1/gateways/edge?version={}", gw["version"]);
    let (st, v) = cp.api("PUT", &path, Some(spec.clone())).await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("sampling.ratio"), "{v}");
    spec["sampling"] = json!({"sampler": "never"});
    let (st, v) = cp.api("PUT", &path, Some(spec)).await;
    assert_eq!(st, 200, "{v}");
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client.send(get(Vec::new())).await.unwrap();
        assert_eq!(r.status, 200);
        if told(&up).2 == "00" {
            break;
        }
        assert!(Instant::now() < deadline, "sampling never changed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quiet = "2f2e3d4c5b6a79880123456789abcdef";
    let r = client
        .send(get(vec![(
            "traceparent",
            format!("00-{quiet}-00f067aa0ba902b7-01"),
        )]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(told(&up).0, quiet, "the trace still goes on");
    assert_eq!(told(&up).2, "00", "not recorded here");
    // Whatever the node sends later (a batch a second), nothing of that trace.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !rx.service_spans()
            .iter()
            .any(|(_, s)| hex(&s.trace_id) == quiet),
        "a request recorded under `never`"
    );
}

/// Tracing flags that cannot work stop `portico server` before it starts, naming the flag.
#[tokio::test]
async fn bad_tracing_flags_are_refused_by_name() {
    let root = TempDir::new().unwrap();
    for (args, want) in [
        (
            vec!["--otlp-endpoint", "collector:4318"],
            "--otlp-endpoint: `collector:4318` is not a URL",
        ),
        (
            vec!["--trace-ratio", "1.5"],
            "--trace-ratio: 1.5: use 0 to 1",
        ),
    ] {
        let out = tokio::process::Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(root.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(args)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(want), "{want}: {text}");
    }
}
