//! API keys end to end with real processes: a consumer with a production and a sandbox key,
//! subscribed to an API on a production, a sandbox and a hybrid gateway; every cell of the
//! key-type × gateway-type matrix, unsubscribed and revoked keys, expiry, and who the
//! upstream is told called.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::time::{Duration, Instant};

use portico_testkit::{Client, Reply, Upstream};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

/// Calls `url` with an API key until the status is `want` (keys reach nodes on sync).
async fn eventually_status(
    client: &Client,
    url: &str,
    key: Option<&str>,
    want: u16,
) -> (u16, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut req = portico_testkit::client::get(url);
        if let Some(k) = key {
            req.headers_mut().insert("apikey", k.parse().unwrap());
        }
        let last = match client.send(req).await {
            Ok(r) => (r.status.as_u16(), r.text()),
            Err(e) => (0, e),
        };
        if last.0 == want {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "{url} with {key:?}: wanted {want}, last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_by_environment_on_production_sandbox_and_hybrid_gateways() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let client = Client::new();
    // Backends that say which environment they are and who the gateway said called.
    let backend = |env: &'static str| {
        Upstream::start(move |r| {
            let who = r
                .headers
                .get("x-portico-consumer")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let leaked = r.headers.contains_key("apikey");
            Reply::text(format!("{env} {who} leaked={leaked}"))
        })
    };
    let prod = backend("prod").await;
    let sandbox = backend("sandbox").await;

    let mut p = init_node(root.path(), "p", &cp.url).await;
    let mut s = init_node(root.path(), "s", &cp.url).await;
    p.start().await;
    s.start().await;
    cp.link(&p, "prod-gw", "production", &[]).await;
    cp.link(&s, "sandbox-gw", "sandbox", &[]).await;
    // An API that needs an API key, and one that does not need anything.
    for (name, context, auth) in [("Pets", "/pets", "api_key"), ("Open", "/open", "none")] {
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/apis",
                Some(json!({
                    "name": name, "version": "v1", "context": context, "auth": auth,
                    "production_endpoints": [format!("http://{}", prod.addr)],
                    "sandbox_endpoints": [format!("http://{}", sandbox.addr)],
                })),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let id = format!("{}-v1", name.to_lowercase());
        cp.cli_ok(&["revisions", "create", &id]).await;
        cp.cli_ok(&[
            "deploy",
            &id,
            "--revision",
            "1",
            "--gateway",
            "prod-gw,sandbox-gw,default",
            "--wait",
        ])
        .await;
    }

    // A consumer with a key of each type, subscribed to Pets.
    cp.cli_ok(&["consumers", "create", "acme", "--owner", "team-a"])
        .await;
    cp.cli_ok(&["subscriptions", "add", "acme", "--api", "pets-v1"])
        .await;
    let key_of = |out: &str| out.lines().last().unwrap().trim().to_owned();
    let prod_key = key_of(
        &cp.cli_ok(&["keys", "create", "acme", "--type", "production"])
            .await,
    );
    let sand_key = key_of(
        &cp.cli_ok(&["keys", "create", "acme", "--type", "sandbox"])
            .await,
    );
    assert!(prod_key.starts_with("pk_") && sand_key.starts_with("pk_"));
    // Keys are never listed or returned again.
    let listed = cp.cli_ok(&["keys", "list", "acme", "-o", "json"]).await;
    assert!(
        !listed.contains(&prod_key) && !listed.contains(&sand_key),
        "{listed}"
    );
    let (_, snap) = cp
        .api("GET", "/api/v1/gateways/prod-gw/snapshot", None)
        .await;
    assert!(
        !snap.to_string().contains(&prod_key),
        "the snapshot carries only hashes"
    );

    let prod_url = p.url("/pets/x");
    let sand_url = s.url("/pets/x");
    let hybrid_url = format!("http://127.0.0.1:{}/pets/x", cp.gateway_port);
    // The matrix: production gateway takes production keys only, sandbox only sandbox keys,
    // hybrid both, each sent to its environment's endpoints.
    let (_, body) = eventually_status(&client, &prod_url, Some(&prod_key), 200).await;
    assert_eq!(body, "prod acme leaked=false");
    let (_, body) = eventually_status(&client, &prod_url, Some(&sand_key), 403).await;
    assert!(
        body.contains("sandbox credentials cannot be used on a production gateway"),
        "{body}"
    );
    assert!(!body.contains(&sand_key), "the error echoes the key");
    let (_, body) = eventually_status(&client, &sand_url, Some(&sand_key), 200).await;
    assert_eq!(body, "sandbox acme leaked=false");
    let (_, body) = eventually_status(&client, &sand_url, Some(&prod_key), 403).await;
    assert!(
        body.contains("production credentials cannot be used on a sandbox gateway"),
        "{body}"
    );
    let (_, body) = eventually_status(&client, &hybrid_url, Some(&prod_key), 200).await;
    assert_eq!(body, "prod acme leaked=false");
    let (_, body) = eventually_status(&client, &hybrid_url, Some(&sand_key), 200).await;
    assert_eq!(body, "sandbox acme leaked=false");
    // The access log says who called (never with what); its lines are written by a
    // thread of their own, a moment after the answer.
    p.process
        .as_ref()
        .unwrap()
        .wait_for("\"consumer\":\"acme\"", Duration::from_secs(10))
        .await;
    let logged = p.output();
    assert!(!logged.contains(&prod_key), "the key is in the log");

    // No key, a wrong key: 401 with a challenge; the open API needs nothing, and a client
    // cannot pretend to be a consumer there.
    let r = client.get(&prod_url).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("APIKey"));
    let (_, body) = eventually_status(&client, &prod_url, Some("pk_wrong"), 401).await;
    assert!(body.contains("not valid"), "{body}");
    let mut forged = portico_testkit::client::get(&p.url("/open/x"));
    forged
        .headers_mut()
        .insert("x-portico-consumer", "admin".parse().unwrap());
    let r = client.send(forged).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.text()),
        (200, "prod - leaked=false".to_owned())
    );

    // A second consumer, not subscribed: 403.
    cp.cli_ok(&["consumers", "create", "other"]).await;
    cp.cli_ok(&["subscriptions", "add", "other", "--api", "open-v1"])
        .await;
    let other_key = key_of(
        &cp.cli_ok(&["keys", "create", "other", "--type", "production"])
            .await,
    );
    let (_, body) = eventually_status(&client, &prod_url, Some(&other_key), 403).await;
    assert!(body.contains("not subscribed"), "{body}");

    // Unsubscribing and revoking take effect at the next sync.
    let (_, keys) = cp.api("GET", "/api/v1/consumers/acme/keys", None).await;
    let prod_id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_type"] == "production")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cp.cli_ok(&["keys", "revoke", "acme", &prod_id]).await;
    eventually_status(&client, &prod_url, Some(&prod_key), 401).await;
    eventually_status(&client, &hybrid_url, Some(&prod_key), 401).await;
    eventually_status(&client, &hybrid_url, Some(&sand_key), 200).await;
    cp.cli_ok(&["subscriptions", "remove", "acme", "--api", "pets-v1"])
        .await;
    eventually_status(&client, &sand_url, Some(&sand_key), 401).await;

    // Bad input on the key endpoints says what is wrong.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/acme/keys",
            Some(json!({"type": "staging"})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/nobody/keys",
            Some(json!({"type": "sandbox"})),
        )
        .await;
    assert_eq!(st, 404, "{v}");
    let (st, _): (u16, Value) = cp
        .api(
            "POST",
            "/api/v1/consumers/acme/subscriptions",
            Some(json!({"api": "nope-v1"})),
        )
        .await;
    assert_eq!(st, 404);

    p.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_expiry_reaches_the_gateway_and_query_keys_work() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("ok").await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(
                json!({"name": "A", "version": "v1", "context": "/a", "auth": "api_key",
                        "api_key_query": "api_key",
                        "production_endpoints": [format!("http://{}", up.addr)]}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.api("POST", "/api/v1/apis/a-v1/revisions", None).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis/a-v1/deployments",
            Some(json!({"revision": 1, "gateways": ["default"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    cp.api("POST", "/api/v1/consumers", Some(json!({"name": "c"})))
        .await;
    cp.api(
        "POST",
        "/api/v1/consumers/c/subscriptions",
        Some(json!({"api": "a-v1"})),
    )
    .await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/c/keys",
            Some(json!({"type": "production", "expires_in_days": 1})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    let client = Client::new();
    // In the query string too, when the API allows it.
    let url = format!("http://127.0.0.1:{}/a/x?api_key={key}", cp.gateway_port);
    let deadline = Instant::now() + WAIT;
    while client.get(&url).await.status != 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The access log names the request, not the key in its query.
    cp.process
        .wait_for("/a/x?api_key=[redacted]", Duration::from_secs(10))
        .await;
    assert!(
        !cp.process.output().contains(&key),
        "the query key is logged"
    );
    // Its expiry is in the snapshot: a day from now.
    let (_, snap) = cp
        .api("GET", "/api/v1/gateways/default/snapshot", None)
        .await;
    let exp = snap["snapshot"]["security"]["api_keys"][0]["expires_at"]
        .as_u64()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 86_000..now + 86_500).contains(&exp),
        "{exp} vs {now}"
    );
    // And 0 days is refused with its field named.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/c/keys",
            Some(json!({"type": "production", "expires_in_days": 0})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "expires_in_days");
}

async fn token_request(
    cp: &ControlPlane,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/oauth2/token", cp.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap());
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn call_with_token(client: &Client, method: &str, url: &str, token: &str) -> (u16, String) {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    match client.send(req).await {
        Ok(r) => (r.status.as_u16(), r.text()),
        Err(e) => (0, e),
    }
}

async fn eventually_token(
    client: &Client,
    method: &str,
    url: &str,
    token: &str,
    want: u16,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, body) = call_with_token(client, method, url, token).await;
        if s == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{method} {url}: wanted {want}, last {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_token_service_by_environment_scope_and_key_rotation() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let client = Client::new();
    let backend = Upstream::start(|r| {
        let who = r
            .headers
            .get("x-portico-consumer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let leaked = r.headers.contains_key("authorization");
        Reply::text(format!("{who} leaked={leaked}"))
    })
    .await;
    let mut p = init_node(root.path(), "p", &cp.url).await;
    let mut s = init_node(root.path(), "s", &cp.url).await;
    p.start().await;
    s.start().await;
    cp.link(&p, "prod-gw", "production", &[]).await;
    cp.link(&s, "sandbox-gw", "sandbox", &[]).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({
                "name": "Pets", "version": "v1", "context": "/pets", "auth": "jwt",
                "production_endpoints": [format!("http://{}", backend.addr)],
                "sandbox_endpoints": [format!("http://{}", backend.addr)],
                "operations": [
                    {"method": "GET", "path": "/read", "scopes": ["pets:read"]},
                    {"method": "POST", "path": "/write", "scopes": ["pets:write"]},
                ],
            })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.cli_ok(&["revisions", "create", "pets-v1"]).await;
    cp.cli_ok(&[
        "deploy",
        "pets-v1",
        "--revision",
        "1",
        "--gateway",
        "prod-gw,sandbox-gw",
        "--wait",
    ])
    .await;
    cp.cli_ok(&["consumers", "create", "acme"]).await;
    cp.cli_ok(&["subscriptions", "add", "acme", "--api", "pets-v1"])
        .await;
    let out = cp
        .cli_ok(&["keys", "create", "acme", "--type", "sandbox", "--client"])
        .await;
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label} in {out}"))
    };
    let (id, secret) = (field("client_id:"), field("client_secret:"));

    // The token service: client credentials by HTTP Basic, or in the form.
    let (st, v) = token_request(
        &cp,
        &[("grant_type", "client_credentials"), ("scope", "pets:read")],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "pets:read");
    let read_token = v["access_token"].as_str().unwrap().to_owned();
    let (st, v) = token_request(
        &cp,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["scope"], "pets:read pets:write",
        "every declared scope by default"
    );
    let all_token = v["access_token"].as_str().unwrap().to_owned();
    // The password grant: the client acts for a person.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "alice", "password": "short"})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let out = std::process::Command::new(BIN)
        .args(["users", "create", "alice"])
        .env("PORTICO_URL", &cp.url)
        .env("PORTICO_TOKEN", &cp.token)
        .env("PORTICO_CLI_CONFIG", "/nonexistent/cli.json")
        .env("PORTICO_USER_PASSWORD", "correct horse battery")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, v) = cp.api("GET", "/api/v1/users", None).await;
    assert_eq!(v["items"][0]["name"], "alice");
    assert!(!v.to_string().contains("horse") && !v.to_string().contains("argon2"));
    let (st, v) = token_request(
        &cp,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "correct horse battery"),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let user_token = v["access_token"].as_str().unwrap().to_owned();
    let claims: Value = {
        use base64::Engine as _;
        let c = user_token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        (claims["user"].as_str(), claims["sub"].as_str()),
        (Some("alice"), Some("acme"))
    );
    let (st, v) = token_request(
        &cp,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wrong horse battery"),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_grant")));
    // RFC 6749 errors.
    let (st, v) = token_request(
        &cp,
        &[("grant_type", "client_credentials")],
        Some((&id, "cs_wrong")),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")));
    let (st, v) = token_request(
        &cp,
        &[("grant_type", "authorization_code")],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (st, v) = token_request(
        &cp,
        &[("grant_type", "client_credentials"), ("scope", "admin")],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (400, Some("invalid_scope")));
    // The JWKS names the key the token was signed with.
    let jwks: Value = reqwest::get(format!("{}/oauth2/jwks", cp.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header: Value = {
        use base64::Engine as _;
        let h = read_token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "ES256");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);

    // A sandbox token: the sandbox gateway takes it, the production gateway does not.
    let body = eventually_token(&client, "GET", &s.url("/pets/read"), &read_token, 200).await;
    assert_eq!(body, "acme leaked=false");
    let body = eventually_token(&client, "GET", &p.url("/pets/read"), &read_token, 403).await;
    assert!(body.contains("sandbox credentials"), "{body}");
    // Scopes per operation.
    let body = eventually_token(&client, "POST", &s.url("/pets/write"), &read_token, 403).await;
    assert!(body.contains("scope"), "{body}");
    eventually_token(&client, "POST", &s.url("/pets/write"), &all_token, 200).await;
    // No token, a forged one.
    let (st, _) = call_with_token(
        &client,
        "GET",
        &s.url("/pets/read"),
        "eyJhbGciOiJub25lIn0.e30.",
    )
    .await;
    assert_eq!(st, 401);

    // An expired token (the admin endpoint can make one to test clients) and `portico token`.
    let (_, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/acme/token",
            Some(json!({"type": "sandbox", "expires_in": -120})),
        )
        .await;
    let body = eventually_token(
        &client,
        "GET",
        &s.url("/pets/read"),
        v["access_token"].as_str().unwrap(),
        401,
    )
    .await;
    assert!(body.contains("expired"), "{body}");
    let cli_token = cp
        .cli_ok(&["token", "--consumer", "acme", "--type", "sandbox"])
        .await;
    eventually_token(&client, "GET", &s.url("/pets/read"), cli_token.trim(), 200).await;

    // Key rotation: the old key stays published, so no request with an old token fails.
    let (st, v) = cp.api("POST", "/api/v1/signing-keys", None).await;
    assert_eq!(st, 201, "{v}");
    let new_kid = v["kid"].as_str().unwrap().to_owned();
    assert_ne!(json!(new_kid), header["kid"]);
    let (_, v) = token_request(
        &cp,
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    )
    .await;
    let new_token = v["access_token"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let (st, body) = call_with_token(&client, "GET", &s.url("/pets/read"), &read_token).await;
        assert_eq!(st, 200, "an old token failed during rotation: {body}");
        if call_with_token(&client, "GET", &s.url("/pets/read"), &new_token)
            .await
            .0
            == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new key never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jwks: Value = reqwest::get(format!("{}/oauth2/jwks", cp.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // Revoking the client: no new tokens.
    cp.cli_ok(&["keys", "revoke", "acme", &id]).await;
    let (st, v) = token_request(
        &cp,
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")));

    p.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_at_the_gateway() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("data").await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({
                "name": "Web", "version": "v1", "context": "/web", "auth": "api_key",
                "production_endpoints": [format!("http://{}", up.addr)],
                "operations": [{"method": "PUT", "path": "/items"}],
                "cors": {"allow_origins": ["https://app.example.com"], "allow_methods": ["PUT"],
                         "allow_headers": ["apikey", "content-type"], "max_age": 600},
            })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "Bad", "version": "v1", "context": "/bad",
            "production_endpoints": ["http://127.0.0.1:9"],
            "cors": {"allow_origins": ["*"], "allow_credentials": true}})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "cors.allow_credentials");
    cp.api("POST", "/api/v1/apis/web-v1/revisions", None).await;
    cp.api(
        "POST",
        "/api/v1/apis/web-v1/deployments",
        Some(json!({"revision": 1, "gateways": ["default"]})),
    )
    .await;
    cp.api("POST", "/api/v1/consumers", Some(json!({"name": "c"})))
        .await;
    cp.api(
        "POST",
        "/api/v1/consumers/c/subscriptions",
        Some(json!({"api": "web-v1"})),
    )
    .await;
    let (_, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/c/keys",
            Some(json!({"type": "production"})),
        )
        .await;
    let key = v["key"].as_str().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{}/web/items", cp.gateway_port);
    let client = Client::new();
    let send = |method: &str, headers: &[(&str, &str)]| {
        let mut b = http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        client.send(
            b.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
    };
    // The preflight needs no key and never reaches the backend.
    let deadline = Instant::now() + WAIT;
    let pre = loop {
        let r = send(
            "OPTIONS",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "apikey"),
            ],
        )
        .await
        .unwrap();
        if r.status == 204 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pre.status, 204, "{}", pre.text());
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        pre.header("access-control-allow-methods").as_deref(),
        Some("PUT")
    );
    assert_eq!(pre.header("access-control-max-age").as_deref(), Some("600"));
    assert_eq!(up.count(), 0);
    let r = send(
        "OPTIONS",
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    // The actual request: CORS headers on success and on the 401 a browser must be able to read.
    // The key reaches the gateway with a later snapshot than the route.
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let r = send(
            "PUT",
            &[("origin", "https://app.example.com"), ("apikey", &key)],
        )
        .await
        .unwrap();
        if r.status != 401 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let r = send("PUT", &[("origin", "https://app.example.com")])
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    // Without --portal-origin the portal is where the admin API is: its Try Out gets an
    // answer for a method the API's own policy does not list, other origins still do not.
    let r = send(
        "OPTIONS",
        &[
            ("origin", &cp.url),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "apikey, x-debug"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(cp.url.as_str())
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("apikey, x-debug")
    );
    assert_eq!(up.count(), 1, "preflights never reach the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portals_try_out_calls_apis_cross_origin_on_every_gateway() {
    const PORTAL: &str = "https://portal.example.com";
    let root = TempDir::new().unwrap();
    let cp = server(
        root.path(),
        &["--portal-origin", "HTTPS://Portal.Example.com:443"],
    )
    .await;
    let up = Upstream::start(|_| Reply::Full {
        status: http::StatusCode::OK,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-total-count".into(), "1".into()),
        ],
        body: r#"[{"id":1}]"#.into(),
    })
    .await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({
                "name": "Try", "version": "v1", "context": "/try", "auth": "api_key",
                "production_endpoints": [format!("http://{}", up.addr)],
                "operations": [{"method": "GET", "path": "/items"}],
            })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.api("POST", "/api/v1/apis/try-v1/revisions", None).await;
    cp.api(
        "POST",
        "/api/v1/apis/try-v1/deployments",
        Some(json!({"revision": 1, "gateways": ["default"]})),
    )
    .await;
    cp.api("POST", "/api/v1/consumers", Some(json!({"name": "c"})))
        .await;
    cp.api(
        "POST",
        "/api/v1/consumers/c/subscriptions",
        Some(json!({"api": "try-v1"})),
    )
    .await;
    let (_, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/c/keys",
            Some(json!({"type": "production"})),
        )
        .await;
    let key = v["key"].as_str().unwrap().to_owned();
    // Every gateway's snapshot carries the origin, as browsers serialize it.
    let (st, v) = cp
        .api("POST", "/api/v1/gateways", Some(json!({"name": "edge"})))
        .await;
    assert_eq!(st, 201, "{v}");
    for gw in ["default", "edge"] {
        let (_, snap) = cp
            .api("GET", &format!("/api/v1/gateways/{gw}/snapshot"), None)
            .await;
        assert_eq!(snap["snapshot"]["portal"]["origin"], PORTAL, "{gw}: {snap}");
    }

    let url = format!("http://127.0.0.1:{}/try/items", cp.gateway_port);
    let client = Client::new();
    let send = |method: &str, headers: &[(&str, &str)]| {
        let mut b = http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        client.send(
            b.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
    };
    let preflight = [
        ("origin", PORTAL),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "apikey"),
    ];
    let deadline = Instant::now() + WAIT;
    let pre = loop {
        let r = send("OPTIONS", &preflight).await.unwrap();
        if r.status == 204 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pre.status, 204, "{}", pre.text());
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    assert_eq!(
        pre.header("access-control-allow-methods").as_deref(),
        Some("GET")
    );
    assert_eq!(
        pre.header("access-control-allow-headers").as_deref(),
        Some("apikey")
    );
    assert_eq!(pre.header("access-control-max-age").as_deref(), Some("600"));
    assert!(pre.header("vary").is_some_and(|v| v.contains("Origin")));
    assert_eq!(up.count(), 0, "the preflight reached the backend");

    // The actual call, once the key has reached the gateway.
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let r = send("GET", &[("origin", PORTAL), ("apikey", &key)])
            .await
            .unwrap();
        if r.status != 401 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"[{"id":1}]"#);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for name in ["x-total-count", "content-type", "x-request-id"] {
        assert!(
            exposed.split(", ").any(|n| n == name),
            "{name} in {exposed}"
        );
    }
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    // The gateway's own 401 is readable by the Try Out too.
    let r = send("GET", &[("origin", PORTAL)]).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    assert!(
        r.header("access-control-expose-headers")
            .is_some_and(|e| e.contains("www-authenticate"))
    );
    // Another origin: no CORS headers at all.
    for origin in ["https://evil.example.com", cp.url.as_str()] {
        let r = send("GET", &[("origin", origin), ("apikey", &key)])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(r.header("access-control-expose-headers"), None, "{origin}");
    }
}

#[tokio::test]
async fn a_portal_origin_that_is_not_an_origin_stops_the_server_naming_the_flag() {
    let root = TempDir::new().unwrap();
    for bad in [
        "not-a-url",
        "https://portal.example.com/portal",
        "ftp://x.example",
    ] {
        let out = tokio::process::Command::new(BIN)
            .args(["server", "--data-dir"])
            .arg(root.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--portal-origin", bad])
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {err}");
        assert!(err.contains("--portal-origin"), "{bad}: {err}");
        assert!(err.contains(bad), "{bad}: {err}");
    }
    // Nothing was started: no data directory was made.
    assert!(!root.path().join("data").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_tiers_per_subscription_and_per_api_are_exact_at_the_boundary() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("ok").await;
    cp.cli_ok(&[
        "tiers", "create", "three", "--limit", "3", "--per", "minute",
    ])
    .await;
    cp.cli_ok(&["tiers", "create", "five", "--limit", "5", "--per", "hour"])
        .await;
    // Unknown tiers are named, not stored.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "X", "version": "v1", "context": "/x",
            "production_endpoints": ["http://127.0.0.1:9"], "tier": "platinum"})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "tier");
    for (name, context, auth, tier) in [
        ("Keyed", "/keyed", "api_key", None),
        ("Open", "/open", "none", Some("five")),
    ] {
        let mut spec = json!({"name": name, "version": "v1", "context": context, "auth": auth,
                              "production_endpoints": [format!("http://{}", up.addr)]});
        // No tier is no field: the API refuses `null`.
        if let Some(t) = tier {
            spec["tier"] = json!(t);
        }
        let (st, v) = cp.api("POST", "/api/v1/apis", Some(spec)).await;
        assert_eq!(st, 201, "{v}");
        let id = format!("{}-v1", name.to_lowercase());
        cp.api("POST", &format!("/api/v1/apis/{id}/revisions"), None)
            .await;
        let (st, v) = cp
            .api(
                "POST",
                &format!("/api/v1/apis/{id}/deployments"),
                Some(json!({"revision": 1, "gateways": ["default"]})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    cp.cli_ok(&["consumers", "create", "small"]).await;
    cp.cli_ok(&["consumers", "create", "big"]).await;
    cp.cli_ok(&[
        "subscriptions",
        "add",
        "small",
        "--api",
        "keyed-v1",
        "--tier",
        "three",
    ])
    .await;
    cp.cli_ok(&["subscriptions", "add", "big", "--api", "keyed-v1"])
        .await;
    let key_of = |out: String| out.lines().last().unwrap().trim().to_owned();
    let small = key_of(cp.cli_ok(&["keys", "create", "small"]).await);
    let big = key_of(cp.cli_ok(&["keys", "create", "big"]).await);
    let client = Client::new();
    let keyed = format!("http://127.0.0.1:{}/keyed/x", cp.gateway_port);
    // Wait until the small consumer's key works, spending its first request.
    eventually_status(&client, &keyed, Some(&small), 200).await;
    let call = |key: Option<String>, url: String| {
        let client = client.clone();
        async move {
            let mut req = portico_testkit::client::get(&url);
            if let Some(k) = key {
                req.headers_mut().insert("apikey", k.parse().unwrap());
            }
            client.send(req).await.unwrap()
        }
    };
    // Three a minute: two more pass, the fourth is refused with the headers that say when.
    for _ in 0..2 {
        assert_eq!(call(Some(small.clone()), keyed.clone()).await.status, 200);
    }
    let r = call(Some(small.clone()), keyed.clone()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(r.header("ratelimit-policy").as_deref(), Some("3;w=60"));
    assert!(
        r.text().contains("subscription's rate limit"),
        "{}",
        r.text()
    );
    // Another consumer of the same API is not affected.
    for _ in 0..5 {
        assert_eq!(call(Some(big.clone()), keyed.clone()).await.status, 200);
    }
    // A per-API tier counts every caller: five an hour on the open API.
    let open = format!("http://127.0.0.1:{}/open/x", cp.gateway_port);
    let mut passed = 0;
    for _ in 0..8 {
        if call(None, open.clone()).await.status == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 5);
    // A tier in use cannot be deleted.
    let (st, v) = cp.api("DELETE", "/api/v1/tiers/three", None).await;
    assert_eq!(st, 409, "{v}");
    let (st, v) = cp.api("DELETE", "/api/v1/tiers/five", None).await;
    assert_eq!(st, 409, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_lists_with_forwarded_for_from_trusted_proxies_only() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("ok").await;
    // The built-in gateway trusts the load balancer at 127.0.0.1 to say who the client is.
    let (_, g) = cp.api("GET", "/api/v1/gateways/default", None).await;
    let mut spec = g["spec"].clone();
    spec["listeners"][0]["trusted_proxies"] = json!(["127.0.0.1/32"]);
    let etag = format!("\"{}\"", g["version"]);
    let (st, v) = cp
        .api_with(
            "PUT",
            "/api/v1/gateways/default",
            Some(spec.clone()),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    spec["listeners"][0]["trusted_proxies"] = json!(["10.0.0.0/99"]);
    let etag = format!("\"{}\"", v["version"]);
    let (st, v) = cp
        .api_with(
            "PUT",
            "/api/v1/gateways/default",
            Some(spec),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "listeners[0].trusted_proxies[0]");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(
                json!({"name": "Office", "version": "v1", "context": "/office",
                        "production_endpoints": [format!("http://{}", up.addr)],
                        "ip": {"allow": ["203.0.113.0/24"], "deny": ["203.0.113.66"]}}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.api("POST", "/api/v1/apis/office-v1/revisions", None)
        .await;
    cp.api(
        "POST",
        "/api/v1/apis/office-v1/deployments",
        Some(json!({"revision": 1, "gateways": ["default"]})),
    )
    .await;
    let client = Client::new();
    let url = format!("http://127.0.0.1:{}/office/x", cp.gateway_port);
    let get = |xff: Option<&'static str>| {
        let mut req = portico_testkit::client::get(&url);
        if let Some(x) = xff {
            req.headers_mut()
                .insert("x-forwarded-for", x.parse().unwrap());
        }
        client.send(req)
    };
    let deadline = Instant::now() + WAIT;
    while get(Some("203.0.113.5")).await.unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "the allowed client never got through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The proxy's own address is not in the list; a denied client within the allowed
    // network is refused; a client spoofing through the trusted proxy is taken at its word
    // only for the hop the proxy appended (the right-most one).
    assert_eq!(get(None).await.unwrap().status, 403);
    let r = get(Some("203.0.113.66")).await.unwrap();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("not allowed"), "{}", r.text());
    assert_eq!(
        get(Some("203.0.113.5, 192.0.2.1")).await.unwrap().status,
        403
    );
}

/// One request on a fresh connection (so the kernel spreads them over both nodes).
async fn fresh_get(port: u16, path: &str) -> u16 {
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let text = portico_testkit::client::raw(addr, head.as_bytes()).await;
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_limit_through_redis_and_fall_back_when_it_dies() {
    let root = TempDir::new().unwrap();
    let (mut redis, redis_port) = start_redis().await;
    let cp = server(root.path(), &[]).await;
    let up = Upstream::named("ok").await;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    // Two nodes of one gateway, sharing its traffic port.
    let mut a = init_node(root.path(), "a", &cp.url).await;
    a.extra = vec!["--rate-limit-redis".into(), redis_url.clone()];
    a.start().await;
    cp.link(&a, "gw", "production", &[]).await;
    let mut b = a.sibling("b");
    b.start().await;
    for n in [&a, &b] {
        n.process
            .as_ref()
            .unwrap()
            .wait_for("rate limits shared through Redis", WAIT)
            .await;
    }
    cp.cli_ok(&["tiers", "create", "ten", "--limit", "10", "--per", "hour"])
        .await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(
                json!({"name": "L", "version": "v1", "context": "/lim", "tier": "ten",
            "production_endpoints": [format!("http://{}", up.addr)]}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.api("POST", "/api/v1/apis/l-v1/revisions", None).await;
    let (ok, out) = cp
        .cli(&[
            "deploy",
            "l-v1",
            "--revision",
            "1",
            "--gateway",
            "gw",
            "--wait",
            "--timeout",
            "10",
        ])
        .await;
    assert!(ok, "{out}\nA:\n{}\nB:\n{}", a.output(), b.output());
    // Both nodes serve the route (a 404 would mean one has not applied it yet): wait until
    // every node reports the version, then count.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = cp.api("GET", "/api/v1/gateways/gw/nodes", None).await;
        let nodes = v["items"].as_array().unwrap();
        if nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "in_sync") {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut codes = Vec::new();
    for _ in 0..40 {
        codes.push(fresh_get(a.traffic_port, "/lim/x").await);
    }
    let passed = codes.iter().filter(|c| **c == 200).count();
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert_eq!((passed, limited), (10, 30), "{codes:?}");
    // Both nodes answered some of them (one limit across two nodes, not ten each).
    for n in [&a, &b] {
        let served = n.output().matches("\"path\":\"/lim/x\"").count();
        assert!(served > 0, "a node served nothing:\n{}", n.output());
    }

    // Redis goes away: the nodes keep answering with their own limits, and say so.
    redis.signal(libc::SIGKILL);
    let _ = redis.wait(WAIT).await;
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(fresh_get(a.traffic_port, "/lim/x").await);
    }
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    let deadline = Instant::now() + WAIT;
    while !(a.output().contains("Redis did not answer")
        || b.output().contains("Redis did not answer"))
    {
        assert!(Instant::now() < deadline, "no fallback warning");
        fresh_get(a.traffic_port, "/lim/x").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}
