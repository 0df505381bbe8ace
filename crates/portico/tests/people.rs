//! People, roles and visibility end to end on the real binary (issue 13): sign-in and its
//! back-off, tokens and sessions, the role × kind × action matrix, what each caller sees
//! in the portal, paged lists under concurrent inserts, and the audit log.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

const PASSWORD: &str = "correct horse battery";

/// A row of the role matrix: what, read path, write (method, path), roles besides admin that
/// may read, that may write.
type KindCase<'a> = (
    &'a str,
    &'a str,
    (&'a str, &'a str),
    &'a [&'a str],
    &'a [&'a str],
);
/// A row of the visibility table: who, their token, APIs seen, gateways with URLs, try-out.
type SeenCase<'a> = (
    &'a str,
    Option<&'a str>,
    &'a [&'a str],
    &'a [&'a str],
    &'a [&'a str],
);

/// A request with `token` as the bearer (none: anonymous): (status, body).
async fn call(
    cp: &ControlPlane,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req =
        reqwest::Client::new().request(method.parse().unwrap(), format!("{}{path}", cp.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn start() -> (TempDir, ControlPlane) {
    let dir = TempDir::new().unwrap();
    let cp = start_server(dir.path(), free_port(), free_port(), None).await;
    (dir, cp)
}

/// Creates a user with these roles and signs them in: their session token.
async fn user(cp: &ControlPlane, name: &str, roles: &[&str]) -> String {
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"name": name, "password": PASSWORD, "roles": roles})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        cp,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": name, "password": PASSWORD})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["user"]["roles"], json!(roles));
    assert!(v["expires_at"].as_i64().unwrap() > 0);
    v["token"].as_str().unwrap().to_owned()
}

/// Callers that may open no admin path: a person whose only role is one of the operator's
/// own (`partner`), through a personal token (which works like a session), a gateway's API
/// token and a consumer's API key. Answers (partner's token, gateway token, API key).
async fn outsiders(cp: &ControlPlane) -> (String, String, String) {
    let (st, v) = cp
        .api("POST", "/api/v1/roles", Some(json!({"name": "partner"})))
        .await;
    assert_eq!(st, 201, "{v}");
    user(cp, "olga", &["partner"]).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/users/olga/tokens",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let partner = v["token"].as_str().unwrap().to_owned();
    let (st, v) = cp
        .api("POST", "/api/v1/gateways", Some(json!({"name": "edge"})))
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp.api("POST", "/api/v1/gateways/edge/token", None).await;
    assert_eq!(st, 201, "{v}");
    let gateway_token = v["api_token"].as_str().unwrap().to_owned();
    let (st, v) = cp
        .api("POST", "/api/v1/consumers", Some(json!({"name": "acme"})))
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/acme/keys",
            Some(json!({"type": "production"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    (
        partner,
        gateway_token,
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// Every operation the OpenAPI document lists is behind the one authorization check: each
/// that needs a caller answers 401 to nobody and to credentials that are not people's (a
/// gateway's API token, a consumer's API key), and 403 to a person whose only role is one of
/// the operator's own, before anything else is looked at. A route added outside the check
/// shows up here.
#[tokio::test]
async fn every_documented_operation_is_behind_the_authorization_check() {
    let (_dir, cp) = start().await;
    let (partner, gateway_token, api_key) = outsiders(&cp).await;

    let (st, doc) = call(&cp, None, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(st, 200);
    // Operations anyone may call, or that take other credentials than a person's.
    let open = |op: &Value| {
        op.get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| {
                s.is_empty()
                    || s.iter().any(|req| {
                        req.as_object().is_some_and(|o| {
                            o.is_empty()
                                || o.contains_key("gatewayToken")
                                || o.contains_key("clientBasic")
                        })
                    })
            })
    };
    // What every signed-in person may do for themselves, whatever their roles.
    let own = [
        "/api/v1/auth/whoami",
        "/api/v1/auth/logout",
        "/api/v1/users/olga/password",
        "/api/v1/users/olga/tokens",
    ];
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let path = path
            .replace("{name}", "olga")
            .replace("{id}", "none-v1")
            .replace("{number}", "1")
            .replace("{gateway}", "edge")
            .replace("{api}", "none-v1")
            .replace("{slug}", "none")
            .replace("{host}", "none.example")
            .replace("{hash}", &"0".repeat(64));
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
            if !["GET", "POST", "PUT", "DELETE"].contains(&method.as_str()) || open(op) {
                continue;
            }
            let body = (method == "POST" || method == "PUT").then(|| json!({"x": 1}));
            let what = format!("{method} {path}");
            for (who, token) in [
                ("anonymous", None),
                ("a gateway token", Some(gateway_token.as_str())),
                ("a consumer key", Some(api_key.as_str())),
            ] {
                let (st, v) = call(&cp, token, &method, &path, body.clone()).await;
                assert_eq!(st, 401, "{who}: {what}: {v}");
            }
            let (st, v) = call(&cp, Some(&partner), &method, &path, body.clone()).await;
            if own.iter().any(|o| path.starts_with(o)) || path.starts_with("/api/v1/portal/") {
                assert!(
                    st != 401 && st < 500,
                    "a person with a role of their own: {what}: {st} {v}"
                );
            } else {
                assert_eq!(st, 403, "a person with a role of their own: {what}: {v}");
                assert_eq!(v["error"], "forbidden", "{what}");
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} operations checked");
}

#[tokio::test]
async fn every_role_may_do_what_it_should_and_nothing_else() {
    let (_dir, cp) = start().await;
    let publisher = user(&cp, "pat", &["publisher"]).await;
    let subscriber = user(&cp, "sam", &["subscriber"]).await;
    let (custom, gateway_token, api_key) = outsiders(&cp).await;

    // (what, read, write, roles besides admin that may read, that may write). Writes send
    // bodies that do not validate: an allowed caller gets past authorization to a 4xx
    // about the body, a refused one gets 403 before the body is read.
    let kinds: [KindCase; 15] = [
        (
            "gateways",
            "/api/v1/gateways",
            ("POST", "/api/v1/gateways"),
            &["publisher"],
            &[],
        ),
        (
            "gateway nodes",
            "/api/v1/gateways/edge/nodes",
            ("POST", "/api/v1/gateways/link"),
            &["publisher"],
            &[],
        ),
        (
            "services",
            "/api/v1/services",
            ("POST", "/api/v1/services"),
            &["publisher"],
            &["publisher"],
        ),
        (
            "routes",
            "/api/v1/routes",
            ("POST", "/api/v1/routes"),
            &["publisher"],
            &["publisher"],
        ),
        (
            "apis",
            "/api/v1/apis",
            ("POST", "/api/v1/apis"),
            &["publisher"],
            &["publisher"],
        ),
        (
            "deployments",
            "/api/v1/deployments",
            ("POST", "/api/v1/apis/none-v1/deployments"),
            &["publisher"],
            &["publisher"],
        ),
        (
            "apps",
            "/api/v1/apps",
            ("POST", "/api/v1/apps"),
            &["publisher"],
            &["publisher"],
        ),
        (
            "certificates",
            "/api/v1/certificates",
            ("POST", "/api/v1/certificates"),
            &["publisher"],
            &["publisher"],
        ),
        (
            "tiers",
            "/api/v1/tiers",
            ("POST", "/api/v1/tiers"),
            &["publisher"],
            &[],
        ),
        (
            "consumers",
            "/api/v1/consumers",
            ("POST", "/api/v1/consumers"),
            &[],
            &[],
        ),
        (
            "users",
            "/api/v1/users",
            ("POST", "/api/v1/users"),
            &[],
            &[],
        ),
        (
            "roles",
            "/api/v1/roles",
            ("POST", "/api/v1/roles"),
            &[],
            &[],
        ),
        (
            "signing keys",
            "/api/v1/signing-keys",
            ("POST", "/api/v1/signing-keys"),
            &[],
            &[],
        ),
        (
            "status",
            "/api/v1/status",
            ("POST", "/api/v1/apply"),
            &["publisher"],
            &["publisher"],
        ),
        (
            "audit",
            "/api/v1/audit",
            ("POST", "/api/v1/admin-tokens/rotate"),
            &[],
            &[],
        ),
    ];
    let callers: [(&str, Option<&str>, Option<&str>); 7] = [
        ("admin", Some(&cp.token), Some("admin")),
        ("publisher", Some(&publisher), Some("publisher")),
        ("subscriber", Some(&subscriber), Some("subscriber")),
        ("custom role", Some(&custom), Some("partner")),
        ("anonymous", None, None),
        ("gateway token", Some(&gateway_token), None),
        ("consumer key", Some(&api_key), None),
    ];
    for (what, read, (method, write), readers, writers) in kinds {
        for (who, token, role) in callers {
            let may = |list: &[&str]| role.is_some_and(|r| r == "admin" || list.contains(&r));
            let (st, v) = call(&cp, token, "GET", read, None).await;
            match (may(readers), role) {
                (true, _) => assert_eq!(st, 200, "{who} reads {what}: {v}"),
                (false, Some(_)) => {
                    assert_eq!(st, 403, "{who} reads {what}: {v}");
                    assert_eq!(v["error"], "forbidden");
                    assert!(
                        v["message"].as_str().unwrap().contains("`admin`"),
                        "{who} reads {what}: the refusal names the role: {v}"
                    );
                }
                (false, None) => assert_eq!(st, 401, "{who} reads {what}: {v}"),
            }
            // The admin token and the signing key are not rotated here (the test goes on
            // with them): those writes are only checked for refusals.
            if who == "admin" && (write.ends_with("rotate") || write.ends_with("signing-keys")) {
                continue;
            }
            let (st, v) = call(&cp, token, method, write, Some(json!({"x": 1}))).await;
            match (may(writers), role) {
                (true, _) => assert!(
                    matches!(st, 400 | 404 | 405 | 422),
                    "{who} writes {what}: past authorization to the body: {st} {v}"
                ),
                (false, Some(_)) => {
                    assert_eq!(st, 403, "{who} writes {what}: {v}");
                    assert_eq!(v["error"], "forbidden");
                }
                (false, None) => assert_eq!(st, 401, "{who} writes {what}: {v}"),
            }
        }
    }
    // A publisher deploys what it publishes but cannot change a gateway, even by apply.
    let (st, v) = call(
        &cp,
        Some(&publisher),
        "POST",
        "/api/v1/apply",
        Some(json!({"tiers": [{"name": "gold", "limit": 10}]})),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = call(
        &cp,
        Some(&publisher),
        "POST",
        "/api/v1/apply",
        Some(json!({"services": [{"name": "s", "endpoints": ["127.0.0.1:9"]}]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = call(
        &cp,
        Some(&publisher),
        "POST",
        "/api/v1/gateways/edge/token",
        None,
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = call(
        &cp,
        Some(&publisher),
        "DELETE",
        "/api/v1/gateways/edge",
        None,
    )
    .await;
    assert_eq!(st, 403);
    // Everyone manages their own tokens, nobody else's but the admin.
    for (who, token, own, other) in [
        ("publisher", &publisher, "pat", "sam"),
        ("subscriber", &subscriber, "sam", "pat"),
    ] {
        let (st, v) = call(
            &cp,
            Some(token),
            "GET",
            &format!("/api/v1/users/{own}/tokens"),
            None,
        )
        .await;
        assert_eq!(st, 200, "{who}: {v}");
        let (st, v) = call(
            &cp,
            Some(token),
            "GET",
            &format!("/api/v1/users/{other}/tokens"),
            None,
        )
        .await;
        assert_eq!(st, 403, "{who}: {v}");
        let (st, v) = call(&cp, Some(token), "GET", "/api/v1/auth/whoami", None).await;
        assert_eq!((st, v["name"].as_str()), (200, Some(own)), "{v}");
        assert_eq!(v["via"], "session");
    }
    // The portal: anyone reads, subscribers keep applications.
    for (who, token, role) in callers {
        let (st, v) = call(&cp, token, "GET", "/api/v1/portal/apis", None).await;
        if role.is_none() && token.is_some() {
            // A credential that is not a person's is refused, not taken for anonymous.
            assert_eq!(st, 401, "{who}: {v}");
        } else {
            assert_eq!(st, 200, "{who}: {v}");
        }
        let (st, v) = call(
            &cp,
            token,
            "POST",
            "/api/v1/portal/applications",
            Some(json!({})),
        )
        .await;
        let expected = match role {
            Some("admin" | "subscriber") => 422,
            Some(_) => 403,
            None => 401,
        };
        if expected == 422 {
            assert!(
                matches!(st, 400 | 422),
                "{who} makes an application: {st} {v}"
            );
        } else {
            assert_eq!(st, expected, "{who} makes an application: {v}");
        }
    }
}

#[tokio::test]
async fn sign_in_sessions_tokens_and_the_admin_token() {
    let (_dir, cp) = start().await;
    let session = user(&cp, "alice", &["publisher"]).await;
    // One answer for a wrong password and an unknown user.
    let (st, wrong) = call(
        &cp,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "alice", "password": "not the password"})),
    )
    .await;
    assert_eq!(st, 401, "{wrong}");
    let (st, unknown) = call(
        &cp,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "nobody", "password": "not the password"})),
    )
    .await;
    assert_eq!((st, &unknown), (401, &wrong));
    // Failures back off per user: the fifth and later are refused without a look.
    for _ in 0..4 {
        call(
            &cp,
            None,
            "POST",
            "/api/v1/auth/login",
            Some(json!({"name": "alice", "password": "not the password"})),
        )
        .await;
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", cp.url))
        .json(&json!({"name": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    // The session signed in before still works; logging out ends it.
    let (st, v) = call(&cp, Some(&session), "GET", "/api/v1/services", None).await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = call(&cp, Some(&session), "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(st, 204);
    let (st, _) = call(&cp, Some(&session), "GET", "/api/v1/services", None).await;
    assert_eq!(st, 401);
    // Personal tokens: shown once, listed without the secret, revoked at once.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/users/alice/tokens",
            Some(json!({"name": "ci", "expires_in": 3600})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(v["expires_at"].as_i64().unwrap() > 0);
    let (st, v) = call(&cp, Some(&token), "GET", "/api/v1/auth/whoami", None).await;
    assert_eq!(
        (st, v["via"].as_str(), v["roles"].clone()),
        (200, Some("token"), json!(["publisher"]))
    );
    let (_, list) = cp.api("GET", "/api/v1/users/alice/tokens", None).await;
    assert!(!list.to_string().contains(&token), "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    // Roles change at once for tokens already given.
    let (st, v) = cp
        .api(
            "PUT",
            "/api/v1/users/alice/roles",
            Some(json!({"roles": ["subscriber"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = call(&cp, Some(&token), "GET", "/api/v1/services", None).await;
    assert_eq!(st, 403);
    let (st, v) = cp
        .api(
            "PUT",
            "/api/v1/users/alice/roles",
            Some(json!({"roles": ["nosuchrole"]})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "roles[0]");
    assert!(
        v["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("admin, publisher, subscriber"),
        "{v}"
    );
    let (st, _) = cp
        .api("DELETE", &format!("/api/v1/users/alice/tokens/{id}"), None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = call(&cp, Some(&token), "GET", "/api/v1/auth/whoami", None).await;
    assert_eq!(st, 401);
    // The admin token rotates: the old one stops, the new one works.
    let (st, v) = cp.api("POST", "/api/v1/admin-tokens/rotate", None).await;
    assert_eq!(st, 201, "{v}");
    let new_admin = v["token"].as_str().unwrap().to_owned();
    let (st, _) = cp.api("GET", "/api/v1/status", None).await;
    assert_eq!(st, 401);
    let (st, v) = call(&cp, Some(&new_admin), "GET", "/api/v1/auth/whoami", None).await;
    assert_eq!((st, v["via"].as_str()), (200, Some("admin_token")), "{v}");
}

#[tokio::test]
async fn the_password_grant_serves_subscribers_only() {
    let (_dir, cp) = start().await;
    cp.api("POST", "/api/v1/consumers", Some(json!({"name": "acme"})))
        .await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/consumers/acme/keys",
            Some(json!({"type": "production", "kind": "client"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (id, secret) = (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    );
    for (name, roles, ok) in [
        ("sub", vec!["subscriber"], true),
        ("pub", vec!["publisher"], false),
        ("boss", vec!["admin", "subscriber"], false),
        ("both", vec!["publisher", "subscriber"], false),
    ] {
        user(&cp, name, &roles).await;
        let resp = reqwest::Client::new()
            .post(format!("{}/oauth2/token", cp.url))
            .basic_auth(&id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                serde_urlencoded::to_string([
                    ("grant_type", "password"),
                    ("username", name),
                    ("password", PASSWORD),
                ])
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        if ok {
            assert_eq!(status, 200, "{name}: {v}");
        } else {
            assert_eq!(
                (status, v["error"].as_str()),
                (400, Some("invalid_grant")),
                "{name}: {v}"
            );
        }
    }
    // The grant shares the sign-in back-off: failures there pause the console's sign-in.
    for _ in 0..5 {
        reqwest::Client::new()
            .post(format!("{}/oauth2/token", cp.url))
            .basic_auth(&id, Some(&secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                serde_urlencoded::to_string([
                    ("grant_type", "password"),
                    ("username", "sub"),
                    ("password", "wrong password!"),
                ])
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let (st, _) = call(
        &cp,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": "sub", "password": PASSWORD})),
    )
    .await;
    assert_eq!(st, 429);
}

/// Creates and deploys an API to `gateways` in `lifecycle`.
async fn api(
    cp: &ControlPlane,
    name: &str,
    extra: Value,
    gateways: &[&str],
    lifecycle: &str,
) -> String {
    let mut spec = json!({
        "name": name, "version": "v1", "context": format!("/{name}"),
        "production_endpoints": ["http://127.0.0.1:9"],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let (st, v) = cp.api("POST", "/api/v1/apis", Some(spec)).await;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    cp.api("POST", &format!("/api/v1/apis/{id}/revisions"), None)
        .await;
    if !gateways.is_empty() {
        let (st, v) = cp
            .api(
                "POST",
                &format!("/api/v1/apis/{id}/deployments"),
                Some(json!({"revision": 1, "gateways": gateways})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    let steps: &[&str] = match lifecycle {
        "created" => &[],
        "published" => &["published"],
        other => &["published", other],
    };
    for state in steps {
        let (st, v) = cp
            .api(
                "POST",
                &format!("/api/v1/apis/{id}/lifecycle"),
                Some(json!({"state": state})),
            )
            .await;
        assert_eq!(st, 200, "{state}: {v}");
    }
    id
}

#[tokio::test]
async fn the_portal_shows_each_caller_what_its_roles_allow() {
    let (_dir, cp) = start().await;
    cp.api("POST", "/api/v1/roles", Some(json!({"name": "partner"})))
        .await;
    // An unknown role in a rule is refused with the roles there are.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/gateways",
            Some(json!({"name": "x", "visibility": {"roles_allowed": ["partners"]}})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["fields"][0]["path"], "visibility.roles_allowed[0]");
    assert!(
        v["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("partner"),
        "{v}"
    );
    let gateways = [
        json!({"name": "open", "hosts": ["open.example"]}),
        json!({"name": "partners", "hosts": ["p.example"], "visibility": {"roles_allowed": ["partner"]}}),
        json!({"name": "public", "hosts": ["np.example"], "visibility": {"roles_denied": ["partner"]}}),
        json!({"name": "hidden", "hosts": ["h.example"], "display_in_console": false}),
    ];
    for g in gateways {
        let (st, v) = cp.api("POST", "/api/v1/gateways", Some(g)).await;
        assert_eq!(st, 201, "{v}");
    }
    let all = ["open", "partners", "public", "hidden"];
    api(&cp, "pets", json!({}), &all, "published").await;
    api(
        &cp,
        "deals",
        json!({"visibility": "restricted", "visible_roles": ["partner"]}),
        &all,
        "published",
    )
    .await;
    api(&cp, "draft", json!({}), &all, "created").await;
    api(&cp, "old", json!({}), &["open"], "deprecated").await;
    api(&cp, "gone", json!({}), &[], "retired").await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "bad", "version": "v1", "context": "/bad",
            "production_endpoints": ["http://127.0.0.1:9"], "visibility": "restricted"})),
        )
        .await;
    assert_eq!(
        (st, v["fields"][0]["path"].as_str()),
        (422, Some("visible_roles")),
        "{v}"
    );
    let subscriber = user(&cp, "sam", &["subscriber"]).await;
    let partner = user(&cp, "pia", &["subscriber", "partner"]).await;
    let publisher = user(&cp, "pat", &["publisher"]).await;
    // caller → (APIs seen, gateways with URLs for `pets`, try-out gateways for `pets`)
    let cases: [SeenCase; 5] = [
        (
            "anonymous",
            None,
            &["old-v1", "pets-v1"],
            &["hidden", "open"],
            &["open"],
        ),
        (
            "subscriber",
            Some(&subscriber),
            &["old-v1", "pets-v1"],
            &["hidden", "open", "public"],
            &["open", "public"],
        ),
        (
            "partner",
            Some(&partner),
            &["deals-v1", "old-v1", "pets-v1"],
            &["hidden", "open", "partners"],
            &["open", "partners"],
        ),
        (
            "publisher",
            Some(&publisher),
            &["old-v1", "pets-v1"],
            &["hidden", "open", "public"],
            &["open", "public"],
        ),
        (
            "admin",
            Some(&cp.token),
            &["deals-v1", "old-v1", "pets-v1"],
            &["hidden", "open", "partners", "public"],
            &["open", "partners", "public"],
        ),
    ];
    for (who, token, apis, urls, try_out) in cases {
        let (st, v) = call(&cp, token, "GET", "/api/v1/portal/apis", None).await;
        assert_eq!(st, 200, "{who}: {v}");
        let ids: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, apis, "{who} sees");
        let (st, pets) = call(&cp, token, "GET", "/api/v1/portal/apis/pets-v1", None).await;
        assert_eq!(st, 200, "{who}: {pets}");
        let mut seen: Vec<&str> = pets["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["gateway"].as_str().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, urls, "{who}: invoke URLs of pets");
        let mut tries: Vec<&str> = pets["try_out"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["gateway"].as_str().unwrap())
            .collect();
        tries.sort_unstable();
        assert_eq!(tries, try_out, "{who}: try-out picker of pets");
        let open = pets["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["gateway"] == "open")
            .unwrap();
        assert_eq!(open["urls"][0], "http://open.example:8080/pets", "{pets}");
        // What one may not see is not there, not forbidden.
        for hidden in ["draft-v1", "gone-v1", "deals-v1"]
            .iter()
            .filter(|h| !apis.contains(h))
        {
            let (st, v) = call(
                &cp,
                token,
                "GET",
                &format!("/api/v1/portal/apis/{hidden}"),
                None,
            )
            .await;
            assert_eq!(st, 404, "{who} {hidden}: {v}");
        }
    }
    // Applications: a subscriber keeps its own, subscribes to what it may see, gets keys.
    let (st, v) = call(
        &cp,
        Some(&subscriber),
        "POST",
        "/api/v1/portal/applications",
        Some(json!({"name": "sams-app"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        &cp,
        Some(&subscriber),
        "POST",
        "/api/v1/portal/applications/sams-app/subscriptions",
        Some(json!({"api": "pets-v1"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        &cp,
        Some(&subscriber),
        "POST",
        "/api/v1/portal/applications/sams-app/subscriptions",
        Some(json!({"api": "deals-v1"})),
    )
    .await;
    assert_eq!(
        st, 404,
        "a restricted API is not subscribable by who may not see it: {v}"
    );
    let (st, v) = call(
        &cp,
        Some(&subscriber),
        "POST",
        "/api/v1/portal/applications/sams-app/keys",
        Some(json!({"type": "production"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert!(v["key"].as_str().unwrap().len() > 20);
    // Regenerated: a new key shown once, the old one revoked in the same change; only the
    // owner may, and only an active key.
    let old = v["id"].as_str().unwrap().to_owned();
    let regenerate = format!("/api/v1/portal/applications/sams-app/keys/{old}/regenerate");
    let (st, _) = call(&cp, Some(&partner), "POST", &regenerate, None).await;
    assert_eq!(st, 404, "not the partner's application");
    let (st, r) = call(&cp, Some(&subscriber), "POST", &regenerate, None).await;
    assert_eq!(
        (st, r["replaces"].as_str()),
        (201, Some(old.as_str())),
        "{r}"
    );
    assert!(r["key"].as_str().unwrap().starts_with("pk_") && r["id"] != old.as_str());
    let (st, _) = call(&cp, Some(&subscriber), "POST", &regenerate, None).await;
    assert_eq!(st, 404, "the old key is revoked");
    let (_, keys) = call(
        &cp,
        Some(&subscriber),
        "GET",
        "/api/v1/portal/applications/sams-app/keys",
        None,
    )
    .await;
    let revoked: Vec<(&str, bool)> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap(), !k["revoked_at"].is_null()))
        .collect();
    assert_eq!(revoked.len(), 2, "{keys}");
    for (id, is_revoked) in revoked {
        assert_eq!(is_revoked, id == old, "{keys}");
    }
    let (st, v) = call(
        &cp,
        Some(&subscriber),
        "GET",
        "/api/v1/portal/applications",
        None,
    )
    .await;
    assert_eq!((st, v["items"].as_array().unwrap().len()), (200, 1), "{v}");
    let (_, v) = call(
        &cp,
        Some(&subscriber),
        "GET",
        "/api/v1/portal/applications/sams-app/subscriptions",
        None,
    )
    .await;
    assert_eq!(v["items"][0]["api"], "pets-v1", "{v}");
    // Another subscriber sees none of it.
    for path in [
        "/api/v1/portal/applications/sams-app",
        "/api/v1/portal/applications/sams-app/keys",
    ] {
        let (st, v) = call(&cp, Some(&partner), "GET", path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
    }
    let (_, v) = call(
        &cp,
        Some(&partner),
        "GET",
        "/api/v1/portal/applications",
        None,
    )
    .await;
    assert_eq!(v["items"], json!([]));
    // A role in use cannot go; one nobody uses can.
    let (st, v) = cp.api("DELETE", "/api/v1/roles/partner", None).await;
    assert_eq!(st, 409, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("user `pia`")
            && msg.contains("gateway `partners`")
            && msg.contains("API `deals-v1`"),
        "{msg}"
    );
    let (st, _) = cp.api("DELETE", "/api/v1/roles/subscriber", None).await;
    assert_eq!(st, 409);
}

#[tokio::test]
async fn lists_come_in_pages_that_concurrent_inserts_do_not_shift() {
    let (dir, cp) = start().await;
    for i in 0..25 {
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/tiers",
                Some(json!({"name": format!("t{i:02}"), "limit": 10})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/v1/tiers?limit=10".to_owned(),
            Some(c) => format!("/api/v1/tiers?limit=10&cursor={c}"),
        };
        let (st, v) = cp.api("GET", &path, None).await;
        assert_eq!(st, 200, "{v}");
        seen.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["spec"]["name"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        if pages == 1 {
            // Inserted meanwhile: one before the cursor (never seen, nothing shifts), one
            // after it (seen on a later page).
            for name in ["t00a", "t99"] {
                cp.api(
                    "POST",
                    "/api/v1/tiers",
                    Some(json!({"name": name, "limit": 1})),
                )
                .await;
            }
        }
        match v["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    want.push("t99".into());
    assert_eq!(seen, want, "every tier once, in order");
    assert_eq!(pages, 3);
    // A bad limit or cursor is a 400 that names it.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=x", "limit"),
        ("cursor=%25%25", "cursor"),
    ] {
        let (st, v) = cp.api("GET", &format!("/api/v1/services?{q}"), None).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert!(
            v["message"].as_str().unwrap().starts_with(field),
            "{q}: {v}"
        );
    }
    // Without a limit a page holds 100; the CLI follows `next` and prints every one.
    let client = reqwest::Client::new();
    let mut sends = Vec::new();
    for i in 0..1010 {
        sends.push(
            client
                .post(format!("{}/api/v1/roles", cp.url))
                .bearer_auth(&cp.token)
                .json(&json!({"name": format!("r{i:04}")}))
                .send(),
        );
    }
    for r in futures_util::future::join_all(sends).await {
        assert_eq!(r.unwrap().status().as_u16(), 201);
    }
    let (_, v) = cp.api("GET", "/api/v1/roles", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 100);
    assert!(v["next"].is_string(), "{}", v["next"]);
    let out = cp.cli_ok(&["roles", "list"]).await;
    for name in ["admin", "r0000", "r0999", "r1009", "subscriber"] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing from the CLI's list"
        );
    }
    assert_eq!(out.lines().filter(|l| l.starts_with('r')).count(), 1010);
    drop(dir);
}

#[tokio::test]
async fn the_audit_log_says_who_did_what_and_keeps_no_secret() {
    let (_dir, cp) = start().await;
    let before = common_now();
    let publisher = user(&cp, "pat", &["publisher"]).await;
    let (st, v) = call(
        &cp,
        Some(&publisher),
        "POST",
        "/api/v1/services",
        Some(json!({"name": "s", "endpoints": ["127.0.0.1:9"]})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = call(
        &cp,
        Some(&publisher),
        "POST",
        "/api/v1/services",
        Some(json!({"name": "s", "endpoints": ["127.0.0.1:9"]})),
    )
    .await;
    assert_eq!(st, 409, "a refused change writes nothing: {v}");
    let (st, v) = cp
        .api_with(
            "PUT",
            "/api/v1/services/s",
            Some(json!({"name": "s", "endpoints": ["127.0.0.1:10"]})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = call(&cp, Some(&publisher), "DELETE", "/api/v1/services/s", None).await;
    assert_eq!(st, 204);
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/users/pat/tokens",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (st, v) = cp.api("GET", "/api/v1/audit?kind=service", None).await;
    assert_eq!(st, 200, "{v}");
    let rows: Vec<(String, String, String, Value, Value)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
                r["object"].as_str().unwrap().to_owned(),
                r["before_version"].clone(),
                r["after_version"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "user:pat".into(),
                "delete".into(),
                "s".into(),
                json!(2),
                Value::Null
            ),
            (
                "admin-token:first admin".into(),
                "update".into(),
                "s".into(),
                json!(1),
                json!(2)
            ),
            (
                "user:pat".into(),
                "create".into(),
                "s".into(),
                Value::Null,
                json!(1)
            ),
        ],
        "newest first"
    );
    let (_, v) = cp.api("GET", "/api/v1/audit?user=pat", None).await;
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] == "user:pat"),
        "{v}"
    );
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "sign_in"),
        "{v}"
    );
    let (_, v) = cp
        .api(
            "GET",
            &format!("/api/v1/audit?since={}", before + 3600),
            None,
        )
        .await;
    assert_eq!(v["items"], json!([]));
    let (_, v) = cp.api("GET", "/api/v1/audit?limit=2", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let (_, page2) = cp
        .api(
            "GET",
            &format!(
                "/api/v1/audit?limit=2&cursor={}",
                v["next"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert!(
        page2["items"][0]["id"].as_i64() < v["items"][1]["id"].as_i64(),
        "{page2}"
    );
    let (st, v) = cp.api("GET", "/api/v1/audit?kind=spaceship", None).await;
    assert_eq!(st, 400, "{v}");
    // No secret in it: not the password, not the token, not a hash of either.
    let (_, all) = cp.api("GET", "/api/v1/audit?limit=1000", None).await;
    let text = all.to_string();
    assert!(
        !text.contains(PASSWORD) && !text.contains(&token) && !text.contains("argon2"),
        "{text}"
    );
    // The CLI reads it too.
    let out = cp
        .cli_ok(&["audit", "--user", "pat", "--kind", "service"])
        .await;
    assert!(out.contains("user:pat") && out.contains("delete"), "{out}");
}

fn common_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_newcomer_signs_in_with_the_cli() {
    let (dir, cp) = start().await;
    cp.cli_ok(&["roles", "create", "partner"]).await;
    let cli = |args: Vec<&str>, config: &std::path::Path| {
        let mut c = std::process::Command::new(BIN);
        c.args(args)
            .env("PORTICO_CLI_CONFIG", config)
            .env("PORTICO_USER_PASSWORD", PASSWORD)
            .env_remove("PORTICO_URL")
            .env_remove("PORTICO_TOKEN");
        c
    };
    let admin_cfg = dir.path().join("admin.json");
    let out = cli(
        vec!["login", "--url", &cp.url, "--token", &cp.token],
        &admin_cfg,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, roles) in [("alice", "publisher"), ("bob", "subscriber,partner")] {
        let out = cli(vec!["users", "create", name, "--role", roles], &admin_cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(vec!["users", "list"], &admin_cfg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("bob") && l.contains("subscriber") && l.contains("partner")),
        "{text}"
    );
    let alice_cfg = dir.path().join("alice.json");
    let out = cli(
        vec!["login", "--url", &cp.url, "--user", "alice"],
        &alice_cfg,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(vec!["whoami"], &alice_cfg).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("publisher"));
    let out = cli(vec!["services", "list"], &alice_cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(vec!["tiers", "create", "gold", "--limit", "5"], &alice_cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin"), "the refusal names the role: {err}");
    let out = cli(
        vec!["users", "set-roles", "alice", "publisher,partner"],
        &admin_cfg,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(vec!["logout"], &alice_cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(vec!["services", "list"], &alice_cfg).output().unwrap();
    assert!(!out.status.success());

    // Personal tokens: made for alice (shown once), listed without the secret, used, revoked.
    let run = |args: Vec<&str>, config: &std::path::Path| {
        let out = cli(args.clone(), config).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(
        vec![
            "-o",
            "json",
            "users",
            "tokens",
            "create",
            "alice",
            "--name",
            "ci",
            "--expires-in",
            "1d",
        ],
        &admin_cfg,
    );
    assert!(ok, "{text}");
    let made: Value = serde_json::from_str(&text).unwrap();
    let secret = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    let (ok, text) = run(vec!["users", "tokens", "list", "alice"], &admin_cfg);
    assert!(ok && text.contains(&id) && text.contains("ci"), "{text}");
    assert!(
        !text.contains(&secret),
        "a listed token shows its secret: {text}"
    );
    let (st, _) = call(&cp, Some(&secret), "GET", "/api/v1/services", None).await;
    assert_eq!(st, 200, "alice's new token works");
    let (ok, text) = run(vec!["users", "tokens", "revoke", "alice", &id], &admin_cfg);
    assert!(ok, "{text}");
    let (st, _) = call(&cp, Some(&secret), "GET", "/api/v1/services", None).await;
    assert_eq!(st, 401, "a revoked token stops working");

    // Rotating the admin token: the old one stops, the saved admin login carries the new.
    let (ok, text) = run(vec!["users", "tokens", "rotate-admin"], &admin_cfg);
    assert!(ok, "{text}");
    let (st, _) = call(&cp, Some(&cp.token), "GET", "/api/v1/services", None).await;
    assert_eq!(st, 401, "the old admin token still works");
    let (ok, text) = run(vec!["users", "list"], &admin_cfg);
    assert!(
        ok && text.contains("alice"),
        "the saved admin login lost its token: {text}"
    );
}

/// Signs `name` in with `password`: (status, session token).
async fn login_as(cp: &ControlPlane, name: &str, password: &str) -> (u16, String) {
    let (st, v) = call(
        cp,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"name": name, "password": password})),
    )
    .await;
    (st, v["token"].as_str().unwrap_or_default().to_owned())
}

async fn whoami(cp: &ControlPlane, token: &str) -> u16 {
    call(cp, Some(token), "GET", "/api/v1/auth/whoami", None)
        .await
        .0
}

#[tokio::test]
async fn a_password_change_ends_every_session_and_idle_sessions_end() {
    let dir = TempDir::new().unwrap();
    let cp = start_server_with(
        dir.path(),
        free_port(),
        free_port(),
        None,
        &["--session-idle", "4s"],
    )
    .await;
    let first = user(&cp, "alice", &["publisher"]).await;
    let (_, second) = login_as(&cp, "alice", PASSWORD).await;
    let bob = user(&cp, "bob", &["subscriber"]).await;
    let (st, v) = call(
        &cp,
        Some(&first),
        "POST",
        "/api/v1/users/alice/tokens",
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let pat = v["token"].as_str().unwrap().to_owned();
    let path = "/api/v1/users/alice/password";
    let new = "a much better passphrase";
    // Your own: the current password is required, and must be right.
    let (st, v) = call(
        &cp,
        Some(&first),
        "PUT",
        path,
        Some(json!({"password": new})),
    )
    .await;
    assert_eq!(
        (st, v["fields"][0]["path"].as_str()),
        (422, Some("current_password")),
        "{v}"
    );
    let wrong = json!({"password": new, "current_password": "not the password"});
    let (st, v) = call(&cp, Some(&first), "PUT", path, Some(wrong)).await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("current password"),
        "{v}"
    );
    let short = json!({"password": "short", "current_password": PASSWORD});
    let (st, v) = call(&cp, Some(&first), "PUT", path, Some(short)).await;
    assert_eq!(
        (st, v["fields"][0]["path"].as_str()),
        (422, Some("password")),
        "{v}"
    );
    // Someone else's: admins only.
    let (st, v) = call(&cp, Some(&bob), "PUT", path, Some(json!({"password": new}))).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = call(
        &cp,
        Some(&first),
        "PUT",
        path,
        Some(json!({"password": new, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!((st, &v["sessions_ended"]), (200, &json!(2)), "{v}");
    // Both sessions are over; the personal token stays; only the new password signs in.
    assert_eq!(whoami(&cp, &first).await, 401);
    assert_eq!(whoami(&cp, &second).await, 401);
    assert_eq!(whoami(&cp, &pat).await, 200);
    assert_eq!(login_as(&cp, "alice", PASSWORD).await.0, 401);
    let (st, third) = login_as(&cp, "alice", new).await;
    assert_eq!(st, 200);
    // An admin needs no current password, and ends the user's sessions too.
    let (st, v) = cp
        .api("PUT", path, Some(json!({"password": PASSWORD})))
        .await;
    assert_eq!((st, &v["sessions_ended"]), (200, &json!(1)), "{v}");
    assert_eq!(whoami(&cp, &third).await, 401);
    let audit = cp.cli_ok(&["audit", "--kind", "user"]).await;
    assert!(audit.contains("set_password"), "{audit}");
    assert!(!audit.contains(new) && !cp.process.output().contains(new));

    // A session in use stays; one left alone past the idle limit (4 s here) ends. (The
    // limit is checked at each use; a personal token has no idle limit.)
    let (_, busy) = login_as(&cp, "alice", PASSWORD).await;
    let (_, idle) = login_as(&cp, "alice", PASSWORD).await;
    for _ in 0..20 {
        assert_eq!(whoami(&cp, &busy).await, 200);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(whoami(&cp, &idle).await, 401, "idle for 6 s");
    assert_eq!(whoami(&cp, &busy).await, 200);
    assert_eq!(whoami(&cp, &pat).await, 200);
}

#[tokio::test]
async fn a_subscriber_chooses_only_a_tier_the_api_offers() {
    let (_dir, cp) = start().await;
    for t in ["bronze", "gold"] {
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/tiers",
                Some(json!({"name": t, "limit": 10})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    // An API may offer only tiers that exist.
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "bad", "version": "v1", "context": "/bad",
                        "production_endpoints": ["http://127.0.0.1:9"],
                        "subscription_tiers": ["platinum"]})),
        )
        .await;
    assert_eq!(
        (st, v["fields"][0]["path"].as_str()),
        (422, Some("subscription_tiers[0]")),
        "{v}"
    );
    api(
        &cp,
        "pets",
        json!({"subscription_tiers": ["bronze"]}),
        &["default"],
        "published",
    )
    .await;
    api(&cp, "plain", json!({}), &["default"], "published").await;
    let sam = user(&cp, "sam", &["subscriber"]).await;
    let (st, v) = call(
        &cp,
        Some(&sam),
        "POST",
        "/api/v1/portal/applications",
        Some(json!({"name": "sams-app"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let subscribe = "/api/v1/portal/applications/sams-app/subscriptions";
    // The portal shows what each API offers.
    let (_, shown) = call(&cp, Some(&sam), "GET", "/api/v1/portal/apis/pets-v1", None).await;
    assert_eq!(shown["tiers"], json!(["bronze"]), "{shown}");
    // A plan the API does not offer is refused, naming what it offers.
    let (st, v) = call(
        &cp,
        Some(&sam),
        "POST",
        subscribe,
        Some(json!({"api": "pets-v1", "tier": "gold"})),
    )
    .await;
    assert_eq!(
        (st, v["fields"][0]["path"].as_str()),
        (422, Some("tier")),
        "{v}"
    );
    assert!(
        v["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("bronze"),
        "{v}"
    );
    let (st, v) = call(
        &cp,
        Some(&sam),
        "POST",
        subscribe,
        Some(json!({"api": "plain-v1", "tier": "gold"})),
    )
    .await;
    assert_eq!(st, 422, "an API that offers none: {v}");
    let (st, v) = call(
        &cp,
        Some(&sam),
        "POST",
        subscribe,
        Some(json!({"api": "pets-v1", "tier": "bronze"})),
    )
    .await;
    assert_eq!((st, &v["tier"]), (201, &json!("bronze")), "{v}");
    let (_, subs) = call(&cp, Some(&sam), "GET", subscribe, None).await;
    assert_eq!(subs["items"][0]["tier"], "bronze", "{subs}");
    // Without a tier: the API's or the consumer's limits, as before.
    let (st, v) = call(
        &cp,
        Some(&sam),
        "POST",
        subscribe,
        Some(json!({"api": "plain-v1"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    // A tier an API offers cannot be deleted from under it.
    cp.api("DELETE", "/api/v1/portal/applications/sams-app", None)
        .await;
    let (st, v) = cp.api("DELETE", "/api/v1/tiers/bronze", None).await;
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("pets-v1"), "{v}");
}

#[tokio::test]
async fn an_apis_openapi_document_is_read_by_the_cli_and_frozen_with_each_revision() {
    let (dir, cp) = start().await;
    let doc = json!({"openapi": "3.0.3", "info": {"title": "Orders", "version": "2"},
                     "paths": {"/orders": {"get": {"summary": "All orders",
                               "responses": {"200": {"description": "the orders"}}}}}});
    std::fs::write(dir.path().join("orders.json"), doc.to_string()).unwrap();
    let def = dir.path().join("orders.toml");
    std::fs::write(
        &def,
        "name = \"Orders\"\nversion = \"v1\"\ncontext = \"/orders\"\n\
         production_endpoints = [\"http://127.0.0.1:9\"]\nopenapi = \"orders.json\"\n",
    )
    .unwrap();
    cp.cli_ok(&["apis", "create", "-f", def.to_str().unwrap()])
        .await;
    let (_, a) = cp.api("GET", "/api/v1/apis/orders-v1", None).await;
    assert_eq!(a["spec"]["openapi"], doc, "{a}");
    let (st, r) = cp
        .api("POST", "/api/v1/apis/orders-v1/revisions", None)
        .await;
    assert_eq!((st, &r["spec"]["openapi"]), (201, &doc), "{r}");
    // A file that is not there, or not an OpenAPI document, is said with its field.
    std::fs::write(
        &def,
        std::fs::read_to_string(&def)
            .unwrap()
            .replace("orders.json", "nope.json"),
    )
    .unwrap();
    let (ok, out) = cp
        .cli(&["apis", "create", "-f", def.to_str().unwrap()])
        .await;
    assert!(
        !ok && out.contains("openapi") && out.contains("nope.json"),
        "{out}"
    );
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "bad", "version": "v1", "context": "/bad",
                        "production_endpoints": ["http://127.0.0.1:9"],
                        "openapi": {"info": {}}})),
        )
        .await;
    assert_eq!(
        (st, v["fields"][0]["path"].as_str()),
        (422, Some("openapi")),
        "{v}"
    );
}

/// What a portal sign-up answers: its status and page, with the form's one-time CSRF token
/// (the only part that differs from one answer to the next) taken out.
async fn sign_up(cp: &ControlPlane, name: &str, password: &str) -> (u16, String) {
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token_of = |r: &reqwest::Response| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("portico_signin="))
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .to_owned()
    };
    let form = web
        .get(format!("{}/portal/signup", cp.url))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let csrf = token_of(&form);
    assert!(!csrf.is_empty(), "the sign-up page sets its CSRF cookie");
    let r = web
        .post(format!("{}/portal/signup", cp.url))
        .header("cookie", format!("portico_signin={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("csrf", csrf.as_str()),
                ("name", name),
                ("password", password),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let next = token_of(&r);
    let page = r.text().await.unwrap();
    let page = if next.is_empty() {
        page
    } else {
        page.replace(&next, "TOKEN")
    };
    (status, page)
}

/// `--portal-signup`: `open` lets a new user sign in at once, `approval` after an admin
/// approves, `closed` offers no form and refuses a post; in every mode a sign-up with a
/// taken name (any case) answers exactly as one with a free name and changes nothing.
#[tokio::test]
async fn sign_up_modes_and_a_taken_name_answers_like_a_free_one() {
    for mode in ["open", "approval", "closed"] {
        let dir = TempDir::new().unwrap();
        let cp = start_server_with(
            dir.path(),
            free_port(),
            free_port(),
            None,
            &["--portal-signup", mode],
        )
        .await;
        user(&cp, "ada", &["publisher"]).await;
        let page = reqwest::get(format!("{}/portal/signup", cp.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            page.contains("id=\"signup-form\""),
            mode != "closed",
            "{mode}: {page}"
        );
        let (status, page) = sign_up(&cp, "newbie", PASSWORD).await;
        let (login, _) = login_as(&cp, "newbie", PASSWORD).await;
        let (st, v) = cp.api("GET", "/api/v1/users/newbie", None).await;
        match mode {
            "open" => {
                assert_eq!(status, 200, "{page}");
                assert!(page.contains("your account is ready"), "{page}");
                assert_eq!(login, 200, "signed in at once");
                assert_eq!((st, &v["status"]), (200, &json!("active")), "{v}");
                assert_eq!(v["roles"], json!(["subscriber"]), "{v}");
            }
            "approval" => {
                assert_eq!(status, 200, "{page}");
                assert!(page.contains("an administrator will approve"), "{page}");
                assert_eq!(login, 403, "waits for approval");
                assert_eq!((st, &v["status"]), (200, &json!("pending")), "{v}");
            }
            _ => {
                assert_eq!(status, 403, "{page}");
                assert!(page.contains("Sign-up is closed"), "{page}");
                assert!(!page.contains("id=\"signup-form\""), "{page}");
                assert_eq!(login, 401);
                assert_eq!(st, 404, "no user made: {v}");
            }
        }
        // A name taken (by an admin-made user, in another case too) and a free one: the
        // same status and the same page.
        let free = sign_up(&cp, "fresh", "another long password").await;
        for taken in ["ada", "ADA"] {
            let answer = sign_up(&cp, taken, "another long password").await;
            assert_eq!(answer, free, "{mode}: `{taken}` answered differently");
        }
        // And the taken name's owner is untouched: their password and roles stay.
        let (login, _) = login_as(&cp, "ada", PASSWORD).await;
        assert_eq!(login, 200, "{mode}");
        let (_, v) = cp.api("GET", "/api/v1/users/ada", None).await;
        assert_eq!(v["roles"], json!(["publisher"]), "{mode}: {v}");
        assert_eq!(v["status"], json!("active"), "{mode}: {v}");
    }
}
