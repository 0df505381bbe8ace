//! The admin API's inputs and answers, end to end against the real binary: every string and
//! list it takes has a limit refused with 422 and the field's path (issue 12, item 20), the
//! CLI prints what the store holds however long it is, and every error, the framework's
//! included, answers the one JSON shape with its status (item 21). The last test runs
//! schemathesis against `/api/v1/openapi.json`: the document describes what the server
//! answers.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

/// A raw answer: status, content type, body as JSON (or `null`), headers.
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
        headers,
    }
}

/// Asserts the JSON error shape: status, `application/json`, the code, a message.
fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.content_type, "application/json", "{status}: {}", a.body);
    assert_eq!(a.body["error"], code, "{}", a.body);
    assert!(
        a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        a.body
    );
}

/// The paths of a 422's `fields`.
fn field_paths(a: &Answer) -> Vec<String> {
    assert_error(a, 422, "invalid");
    a.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
            f["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn api(name: &str, context: &str) -> Value {
    json!({
        "name": name,
        "version": "v1",
        "context": context,
        "production_endpoints": ["http://127.0.0.1:9"],
    })
}

async fn post(cp: &ControlPlane, path: &str, body: &Value) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!("{}{path}", cp.url))
            .bearer_auth(&cp.token)
            .json(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_and_lists_over_their_limits_are_refused_with_the_field_path() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;

    // The reported case: a 200,000-character context.
    let long_context = format!("/{}", "c".repeat(199_999));
    let a = post(&cp, "/api/v1/apis", &api("Long", &long_context)).await;
    assert_eq!(field_paths(&a), ["context"]);
    assert!(
        a.body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 256 characters"),
        "{}",
        a.body
    );

    // One of each kind the brief names, all in one body: every problem is listed.
    let mut spec = api("Many", "/many");
    spec["description"] = json!("d".repeat(4097));
    spec["hosts"] = json!(vec!["a.example.com"; 101]);
    spec["production_endpoints"] = json!(vec!["http://127.0.0.1:9"; 101]);
    spec["operations"] = json!(
        (0..1001)
            .map(|i| json!({"path": format!("/op{i}")}))
            .collect::<Vec<_>>()
    );
    spec["api_key_header"] = json!("h".repeat(257));
    let a = post(&cp, "/api/v1/apis", &spec).await;
    let mut paths = field_paths(&a);
    paths.sort();
    assert_eq!(
        paths,
        [
            "api_key_header",
            "description",
            "hosts",
            "operations",
            "production_endpoints"
        ]
    );

    // A long endpoint URL and a long host inside their lists.
    let mut spec = api("Urls", "/urls");
    spec["production_endpoints"] = json!([format!("http://127.0.0.1:9/{}", "p".repeat(2100))]);
    spec["hosts"] = json!([format!("{}.example.com", "h".repeat(300))]);
    let a = post(&cp, "/api/v1/apis", &spec).await;
    let mut paths = field_paths(&a);
    paths.sort();
    assert_eq!(paths, ["hosts[0]", "production_endpoints[0]"]);

    // Header names and values of a route, a gateway's description, a consumer's owner.
    let service = json!({"name": "s", "endpoints": ["127.0.0.1:9"]});
    assert_eq!(post(&cp, "/api/v1/services", &service).await.status, 201);
    let route = json!({
        "name": "r",
        "route": {
            "forward": {"service": "s"},
            "request_headers": {"set": {"x-long": "v".repeat(4097)}, "remove": ["n".repeat(257)]},
        },
    });
    let a = post(&cp, "/api/v1/routes", &route).await;
    let mut paths = field_paths(&a);
    paths.sort();
    assert_eq!(
        paths,
        [
            "route.request_headers.remove[0]",
            "route.request_headers.set.x-long"
        ]
    );
    let a = post(
        &cp,
        "/api/v1/gateways",
        &json!({"name": "g", "description": "d".repeat(5000)}),
    )
    .await;
    assert_eq!(field_paths(&a), ["description"]);
    let a = post(
        &cp,
        "/api/v1/consumers",
        &json!({"name": "c", "owner": "o".repeat(4097)}),
    )
    .await;
    assert_eq!(field_paths(&a), ["owner"]);

    // At the limits, counted in characters (not bytes), everything is taken.
    let at_limit = format!("/{}", "é".repeat(255));
    let mut spec = api(&"é".repeat(100), &at_limit);
    spec["description"] = json!("d".repeat(4096));
    spec["hosts"] = json!(
        (0..100)
            .map(|i| format!("h{i}.example.com"))
            .collect::<Vec<_>>()
    );
    let a = post(&cp, "/api/v1/apis", &spec).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["spec"]["context"], at_limit.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apis_list_prints_long_values_the_store_already_holds() {
    let root = TempDir::new().unwrap();
    let data = root.path().join("data");
    let (admin, gw) = (free_port(), free_port());
    let cp = start_server(&data, admin, gw, None).await;
    let a = post(&cp, "/api/v1/apis", &api("Old", "/old")).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let token = cp.token.clone();
    stop(cp).await;

    // A definition stored before the limits existed: a 200,001-character context.
    let out = match test_database(&data) {
        Some(url) => std::process::Command::new("psql")
            .arg(url)
            .arg("-c")
            .arg("UPDATE apis SET spec = jsonb_set(spec::jsonb, '{context}', to_jsonb('/' || repeat('0', 200000)))::text")
            .output()
            .unwrap(),
        None => std::process::Command::new("sqlite3")
            .arg(data.join("portico.db"))
            .arg("UPDATE apis SET spec = json_set(spec, '$.context', '/' || lower(hex(zeroblob(100000))))")
            .output()
            .unwrap(),
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cp = start_server(&data, admin, gw, Some(&token)).await;
    let (_, v) = cp.api("GET", "/api/v1/apis", None).await;
    let stored = v["items"][0]["spec"]["context"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stored.len(), 200_001);

    let table = cp.cli_ok(&["apis", "list"]).await;
    let row = table.lines().find(|l| l.contains("old-v1")).unwrap();
    assert!(row.contains("/0000") && row.contains('…'), "{row}");
    assert!(row.ends_with("created"), "{row}");
    assert!(row.chars().count() < 200, "{row}");
    // The whole value is still there for scripts.
    let whole = cp.cli_ok(&["apis", "list", "-o", "json"]).await;
    assert!(whole.contains(&stored));
    stop(cp).await;
}

async fn stop(mut cp: ControlPlane) {
    cp.process.signal(libc::SIGTERM);
    assert!(
        cp.process.wait(WAIT).await.is_some(),
        "the server did not stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answers_the_json_shape_with_its_status() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", cp.url);
    let authed = |r: reqwest::RequestBuilder| r.bearer_auth(&cp.token);

    // No such path, inside and outside /api/v1.
    for p in ["/api/v1/nothing-here", "/nothing", "/api/v2/apis"] {
        let a = send(authed(client.get(url(p)))).await;
        assert_error(&a, 404, "not_found");
    }
    // A path that exists, with a method it does not take: 405 and the methods it does.
    let a = send(authed(client.patch(url("/api/v1/apis")))).await;
    assert_error(&a, 405, "method_not_allowed");
    assert_eq!(a.headers["allow"], "GET,HEAD,POST");
    let a = send(client.delete(url("/healthz"))).await;
    assert_error(&a, 405, "method_not_allowed");
    let a = send(authed(client.put(url("/api/v1/sync/snapshot")))).await;
    assert_error(&a, 405, "method_not_allowed");

    // A body one byte over 2 MiB (all of it read, so the answer never races the upload).
    let frame = "{\"name\": \"\"}".len();
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat((2 << 20) + 1 - frame));
    assert_eq!(big.len(), (2 << 20) + 1);
    let a = send(
        authed(client.post(url("/api/v1/consumers")))
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_error(&a, 413, "payload_too_large");

    // A JSON body sent as something else.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut r = authed(client.post(url("/api/v1/consumers"))).body(r#"{"name":"c"}"#);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        assert_error(&send(r).await, 415, "unsupported_media_type");
    }
    // ...while JSON with a charset parameter is JSON.
    let a = send(
        authed(client.post(url("/api/v1/consumers")))
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"name":"c"}"#),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);

    // A query string, a path parameter, a percent-encoding that do not read.
    let a = send(
        authed(client.put(url("/api/v1/consumers/c?version=abc"))).json(&json!({"name": "c"})),
    )
    .await;
    assert_error(&a, 400, "bad_request");
    let a = send(authed(client.get(url("/api/v1/apps/site/versions/abc")))).await;
    assert_error(&a, 400, "bad_request");
    let a = send(authed(
        client.get(url("/api/v1/apps/site/versions/99999999999")),
    ))
    .await;
    assert_error(&a, 400, "bad_request");
    let a = send(authed(client.get(url("/api/v1/apis/%FF")))).await;
    assert_error(&a, 400, "bad_request");

    // JSON that does not read, and JSON of the wrong shape.
    for body in [
        "{",
        "[1, 2]",
        r#"{"name": 5}"#,
        r#"{"name": "c2", "extra": 1}"#,
    ] {
        let a = send(
            authed(client.post(url("/api/v1/consumers")))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_error(&a, 400, "bad_request");
    }

    // `null` for a typed optional field: refused, with the field's path.
    let a = post(
        &cp,
        "/api/v1/consumers",
        &json!({"name": "c3", "tier": null}),
    )
    .await;
    assert_eq!(field_paths(&a), ["tier"]);
    let mut spec = api("Nulls", "/nulls");
    spec["cors"] = json!({"allow_origins": ["*"], "max_age": null});
    spec["api_key_header"] = Value::Null;
    let a = post(&cp, "/api/v1/apis", &spec).await;
    let mut paths = field_paths(&a);
    paths.sort();
    assert_eq!(paths, ["api_key_header", "cors.max_age"]);
    // A whole number written with a fraction is the number (JSON Schema's integer).
    let a = post(
        &cp,
        "/api/v1/tiers",
        &json!({"name": "t", "limit": 10.0, "per": "minute"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["spec"]["limit"], 10, "{}", a.body);

    // The NUL character: PostgreSQL cannot store it, and no name needs it. Refused on every
    // backend alike, in a body (with the field), in the URL, and in an apply document
    // (TOML's escape too); a backslash before `u0000` is text, not NUL.
    let a = post(&cp, "/api/v1/users", &json!({"name": "nul\u{0}user"})).await;
    assert_error(&a, 400, "bad_request");
    assert!(
        a.body["message"].as_str().unwrap().contains("`name`"),
        "{}",
        a.body
    );
    let a = post(
        &cp,
        "/api/v1/consumers",
        &json!({"name": "nul", "description": "b\u{0}"}),
    )
    .await;
    assert_error(&a, 400, "bad_request");
    // Nothing is named with NUL: a path holding it names nothing.
    for (p, status, code) in [
        ("/api/v1/users/a%00b", 404, "not_found"),
        ("/api/v1/users/a%00b/tokens", 404, "not_found"),
        ("/api/v1/apis?cursor=%00", 400, "bad_request"),
    ] {
        let a = send(authed(client.get(url(p)))).await;
        assert_error(&a, status, code);
        assert!(
            a.body["message"].as_str().unwrap().contains("NUL"),
            "{p}: {}",
            a.body
        );
    }
    let a = send(
        authed(client.post(url("/api/v1/users/admin/tokens")))
            .header("content-type", "application/json")
            .body(r#"{"name": "t\u0000"}"#),
    )
    .await;
    assert_error(&a, 400, "bad_request");
    let a = send(
        authed(client.post(url("/api/v1/apply")))
            .header("content-type", "application/toml")
            .body("[[consumers]]\nname = \"nul\"\ndescription = \"a\\u0000b\"\n"),
    )
    .await;
    assert_error(&a, 400, "bad_request");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("consumers[0].description"),
        "{}",
        a.body
    );
    let a = send(
        authed(client.post(url("/api/v1/consumers")))
            .header("content-type", "application/json")
            .body(r#"{"name": "slashes", "description": "C:\\u0000"}"#),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["spec"]["description"], "C:\\u0000", "{}", a.body);

    // No token, a wrong token.
    let a = send(client.get(url("/api/v1/apis"))).await;
    assert_error(&a, 401, "unauthorized");
    let a = send(client.get(url("/api/v1/apis")).bearer_auth("pat_wrong")).await;
    assert_error(&a, 401, "unauthorized");
}

/// schemathesis' command (`pip install schemathesis`; scripts/test.sh installs it).
const SCHEMATHESIS: &str = "st";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_what_the_server_answers() {
    let installed = std::process::Command::new(SCHEMATHESIS)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "schemathesis is not installed: scripts/test.sh installs it (pip install schemathesis)"
    );
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    // The run authenticates with the admin token throughout. Signing out runs: the admin
    // token is not a session, so it answers 409 and stays valid. No user is ever signed in,
    // so deleting users or revoking their tokens takes nothing from the run.
    let text = schemathesis(
        &cp,
        root.path(),
        "junit.xml",
        &[
            // Linking and resyncing a gateway call the URL they are given: a generated one
            // could be anywhere on the network.
            "--exclude-path",
            "/api/v1/gateways/link",
            "--exclude-path",
            "/api/v1/gateways/{name}/resync",
            // Rotating the admin token ends the token this run authenticates with: every
            // later request would be a 401. It runs alone, last (below).
            "--exclude-path",
            "/api/v1/admin-tokens/rotate",
        ],
    )
    .await;
    // It did test: every operation but the three left out.
    assert!(
        tested(&text) >= 105,
        "schemathesis tested {} operations:\n{text}",
        tested(&text)
    );
    // The rotation, on its own: after its first 201 the admin token no longer works, and the
    // rest of its cases are 401s, which it documents too.
    let text = schemathesis(
        &cp,
        root.path(),
        "rotate.xml",
        &["--include-path", "/api/v1/admin-tokens/rotate"],
    )
    .await;
    assert_eq!(tested(&text), 1, "{text}");
}

/// Runs schemathesis against the server's own document with the admin token and the hooks
/// in scripts/schemathesis; answers its output, and fails the test (printing the seed) when
/// it found answers the document does not describe.
async fn schemathesis(cp: &ControlPlane, dir: &Path, report: &str, only: &[&str]) -> String {
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/schemathesis");
    let report = dir.join(report);
    let started = std::time::Instant::now();
    // 25 examples per operation take about a minute and a half here; five is the ceiling.
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(SCHEMATHESIS)
            .current_dir(dir)
            .env("PYTHONPATH", &hooks)
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .kill_on_drop(true)
            .args([
                "run",
                &format!("{}/api/v1/openapi.json", cp.url),
                "--header",
                &format!("Authorization: Bearer {}", cp.token),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,unsupported_method,allow_header_conformance",
                "--max-examples",
                "25",
                "--request-timeout",
                "10",
                "--workers",
                "2",
                "--generation-database",
                "none",
                "--report",
                "junit",
                "--report-junit-path",
                report.to_str().unwrap(),
                "--no-color",
                // The generator gives up on operations whose inputs it filters (path
                // parameters fit for a URL): a health check of schemathesis, not an answer.
                "--suppress-health-check",
                "filter_too_much",
            ])
            .args(only)
            .output(),
    )
    .await
    .expect("schemathesis ran for more than 5 minutes")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis {only:?} took {:.0?}:\n{}",
        started.elapsed(),
        text.lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not describe:\n{text}\nserver log:\n{}",
        cp.process.output()
    );
    text
}

/// How many operations a schemathesis run tested.
fn tested(text: &str) -> usize {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0)
}
