//! The request path's phases end to end: a failure in any phase becomes an answer in one
//! place (the same JSON shape, the request's id, no body for `HEAD`, CORS headers once the
//! `cors` phase accepted the origin, the error code in the access log line), and the retry
//! decision follows the error. Real sockets, a real access log file.

mod common;

use std::time::Duration;

use common::{Gw, WEB, service};
use http::Method;
use portico_testkit::client::request;
use portico_testkit::upstream::Reply;
use portico_testkit::{Client, Resp, Upstream};

const APP: &str = "https://app.example.com";

/// A closed port: connecting to it is refused.
async fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

fn config(up: &Upstream, refused: std::net::SocketAddr, closer: &Upstream) -> String {
    format!(
        r#"{WEB}
{}{}{}{}
[[routes]]
name = "limited"
match = {{ path = {{ prefix = "/limited" }} }}
forward = {{ service = "up" }}
limits = {{ max_request_body_bytes = "10B" }}
cors = {{ allow_origins = ["{APP}"] }}

[[routes]]
name = "inside"
match = {{ path = {{ prefix = "/inside" }} }}
ip = {{ allow = ["10.0.0.0/8"] }}
forward = {{ service = "up" }}
cors = {{ allow_origins = ["{APP}"] }}

[[routes]]
name = "teapot"
match = {{ path = {{ prefix = "/teapot" }} }}
fixed_response = {{ status = 418, body = "short and stout" }}

[[routes]]
name = "gone"
match = {{ path = {{ prefix = "/gone" }} }}
forward = {{ service = "gone" }}

[[routes]]
name = "half"
match = {{ path = {{ prefix = "/half" }} }}
forward = {{ service = "half" }}

[[routes]]
name = "shut"
match = {{ path = {{ prefix = "/shut" }} }}
forward = {{ service = "shut" }}
"#,
        service("up", &[up.addr], ""),
        service("gone", &[refused], ""),
        service("half", &[refused, up.addr], ""),
        service("shut", &[closer.addr, up.addr], ""),
    )
}

/// The gateway under test, its upstreams and its access log.
struct Setup {
    up: Upstream,
    closer: Upstream,
    gw: Gw,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A live upstream, one that closes every connection unanswered, a closed port, and a
/// gateway logging to a file in a temporary directory.
async fn setup() -> Setup {
    let up = Upstream::named("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let closer = Upstream::start(|_| Reply::Close).await;
    let gw = Gw::start_logged(&config(&up, closed_port().await, &closer), &log).await;
    Setup {
        up,
        closer,
        gw,
        log,
        _dir: dir,
    }
}

async fn send(c: &Client, method: Method, url: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    c.send(request(method, url, body.to_owned(), headers))
        .await
        .expect("send")
}

/// Checks the one error shape: status, JSON body with code, status and the request id,
/// and the id in the header.
fn assert_error(r: &Resp, status: u16, code: &str, id: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    assert_eq!(v["status"], status, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(v["request_id"], id, "{v}");
    assert_eq!(r.headers["x-request-id"], id);
    assert_eq!(r.headers["content-type"], "application/json");
}

/// The access log's lines, once they have all been written.
async fn log_lines(path: &std::path::Path, at_least: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a log line is JSON"))
            .collect();
        if lines.len() >= at_least {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the access log has fewer than {at_least} lines");
}

/// A request that fails in a phase: (phase, method, url, body, headers, status, code, whether
/// the answer carries CORS headers).
type Case<'a> = (
    &'a str,
    Method,
    String,
    &'a str,
    Vec<(&'a str, &'a str)>,
    u16,
    &'a str,
    bool,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_any_phase_is_answered_in_one_shape_and_logged() {
    let Setup {
        up,
        closer: _closer,
        gw,
        log,
        _dir,
    } = setup().await;
    let c = Client::new();
    let origin = [("origin", APP)];
    // (phase, request, status, code, CORS headers expected)
    let cases: Vec<Case> = vec![
        (
            "accept",
            Method::GET,
            gw.url("/limited"),
            "",
            vec![("host", "a@b")],
            400,
            "bad_request",
            false,
        ),
        (
            "route",
            Method::GET,
            gw.url("/nowhere"),
            "",
            vec![("origin", APP)],
            404,
            "no_route",
            false,
        ),
        (
            "limits",
            Method::POST,
            gw.url("/limited/x"),
            "more than ten bytes",
            origin.to_vec(),
            413,
            "body_too_large",
            true,
        ),
        (
            "ip",
            Method::GET,
            gw.url("/inside"),
            "",
            origin.to_vec(),
            403,
            "forbidden",
            true,
        ),
        (
            "forward",
            Method::GET,
            gw.url("/gone"),
            "",
            vec![],
            502,
            "upstream_connect_failed",
            false,
        ),
    ];
    for (i, (phase, method, url, body, mut headers, status, code, cors)) in
        cases.into_iter().enumerate()
    {
        let id = format!("req-{phase}-{i}");
        headers.push(("x-request-id", &id));
        let r = send(&c, method.clone(), &url, body, &headers).await;
        assert_error(&r, status, code, &id);
        assert_eq!(
            r.headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            cors.then_some(APP),
            "{phase}: CORS headers on the error"
        );
        // HEAD: the same status and headers, no body.
        if method == Method::GET {
            let r = send(&c, Method::HEAD, &url, "", &headers).await;
            assert_eq!(r.status.as_u16(), status, "{phase} HEAD");
            assert_eq!(r.headers["x-request-id"], id.as_str());
            assert!(r.body.is_empty(), "{phase}: HEAD answered with a body");
        }
    }
    // The gateway's own answers carry the request id too.
    let r = send(
        &c,
        Method::GET,
        &gw.url("/teapot"),
        "",
        &[("x-request-id", "tea-1")],
    )
    .await;
    assert_eq!(r.status.as_u16(), 418);
    assert_eq!(r.text(), "short and stout");
    assert_eq!(r.headers["x-request-id"], "tea-1");
    assert_eq!(up.count(), 0, "no failed request reached the upstream");

    // Every failure is in the log with its code; the answered one without.
    let lines = log_lines(&log, 10).await;
    let by_id = |id: &str| {
        lines
            .iter()
            .filter(|l| l["request_id"] == id)
            .map(|l| (l["status"].as_u64().unwrap_or(0), l["error"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(by_id("req-limits-2")[0], (413, "body_too_large".into()));
    assert_eq!(by_id("req-ip-3")[0], (403, "forbidden".into()));
    assert_eq!(by_id("req-route-1")[0], (404, "no_route".into()));
    assert_eq!(by_id("req-accept-0")[0], (400, "bad_request".into()));
    assert_eq!(
        by_id("req-forward-4")[0],
        (502, "upstream_connect_failed".into())
    );
    assert_eq!(by_id("tea-1")[0], (418, serde_json::Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_decides_the_retry() {
    let Setup {
        up,
        closer,
        gw,
        log,
        _dir,
    } = setup().await;
    let c = Client::new();
    // A refused connection never reached the upstream: the request goes to the other
    // endpoint, whichever the balancer tried first.
    for i in 0..4 {
        let id = format!("half-{i}");
        let r = send(
            &c,
            Method::GET,
            &gw.url("/half"),
            "",
            &[("x-request-id", &id)],
        )
        .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        assert_eq!(r.text(), "up");
    }
    assert_eq!(up.count(), 4);
    let lines = log_lines(&log, 4).await;
    let attempts: Vec<u64> = lines
        .iter()
        .map(|l| l["attempts"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        attempts.contains(&2),
        "some request was retried: {attempts:?}"
    );
    assert!(attempts.iter().all(|a| *a <= 2), "{attempts:?}");

    // A connection closed after the request was sent may have been acted on: the answer is
    // 502 and the request is not sent again, though the service has a live endpoint.
    let mut reset = 0;
    for i in 0..4 {
        let id = format!("shut-{i}");
        let r = send(
            &c,
            Method::GET,
            &gw.url("/shut"),
            "",
            &[("x-request-id", &id)],
        )
        .await;
        if r.status.as_u16() == 502 {
            assert_error(&r, 502, "upstream_reset", &id);
            reset += 1;
        } else {
            assert_eq!(r.status.as_u16(), 200, "{}", r.text());
            assert_eq!(r.text(), "up");
        }
    }
    assert!(reset > 0, "the closing endpoint was never tried");
    assert_eq!(
        closer.count(),
        reset,
        "each reset request reached the closer once"
    );
    assert_eq!(
        up.count(),
        4 + 4 - reset,
        "no reset request went on to the live one"
    );
}
