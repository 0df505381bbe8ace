//! The admin REST API under `/api/v1` (admin token), and the sync endpoints nodes call with
//! their gateway's API token. Bodies are JSON; every error is
//! `{"error": code, "message": what to do, "fields": [...]}`. Updates name the version they
//! read with `If-Match` (the `ETag` of a GET); a stale one gets 409.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portico_model::validate::limits;
use portico_model::{
    ApiSpec, ConsumerSpec, FieldError, GatewayKind, GatewaySpec, KeyType, Lifecycle, Listener,
    NodeReport, RouteSpec, Service,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::Error;
use crate::extract::{self, JsonBody, Path, Query, RawBody};
use crate::link::{self, AdminTarget};
use crate::secrets;
use crate::store::{Credentials, Meta, now};
use crate::{ControlPlane, openapi};

/// The node id of the built-in gateway's node (in the server process; never reported
/// over the sync API).
pub const BUILTIN_NODE: &str = "builtin";

type St = State<Arc<ControlPlane>>;
type Res = Result<Response, Error>;

/// The whole HTTP surface of the control plane.
pub fn router(state: Arc<ControlPlane>) -> Router {
    let admin = Router::new()
        .route("/gateways", get(list_gateways).post(create_gateway))
        .route("/gateways/link", post(link_gateway))
        .route(
            "/gateways/{name}",
            get(get_gateway).put(update_gateway).delete(delete_gateway),
        )
        .route(
            "/gateways/{name}/token",
            post(rotate_token).delete(revoke_token),
        )
        .route("/gateways/{name}/snapshot", get(gateway_snapshot))
        .route("/gateways/{name}/nodes", get(gateway_nodes))
        .route("/gateways/{name}/resync", post(resync_gateway))
        .route("/services", get(list_services).post(create_service))
        .route(
            "/services/{name}",
            get(get_service).put(update_service).delete(delete_service),
        )
        .route("/routes", get(list_routes).post(create_route))
        .route(
            "/routes/{name}",
            get(get_route).put(update_route).delete(delete_route),
        )
        .route("/apis", get(list_apis).post(create_api))
        .route(
            "/apis/{id}",
            get(get_api).put(update_api).delete(delete_api),
        )
        .route("/apis/{id}/lifecycle", post(set_lifecycle))
        .route(
            "/apis/{id}/revisions",
            get(list_revisions).post(create_revision),
        )
        .route(
            "/apis/{id}/revisions/{number}",
            get(get_revision).delete(delete_revision),
        )
        .route("/apis/{id}/deployments", get(api_deployments).post(deploy))
        .route(
            "/apis/{id}/deployments/{gateway}",
            axum::routing::delete(undeploy),
        )
        .route("/deployments", get(all_deployments))
        .route("/consumers", get(list_consumers).post(create_consumer))
        .route(
            "/consumers/{name}",
            get(get_consumer)
                .put(update_consumer)
                .delete(delete_consumer),
        )
        .route(
            "/consumers/{name}/subscriptions",
            get(list_subscriptions).post(subscribe),
        )
        .route(
            "/consumers/{name}/subscriptions/{api}",
            axum::routing::delete(unsubscribe),
        )
        .route("/consumers/{name}/keys", get(list_keys).post(create_key))
        .route("/consumers/{name}/token", post(test_token))
        .route(
            "/signing-keys",
            get(list_signing_keys).post(rotate_signing_key),
        )
        .route("/tiers", get(list_tiers).post(create_tier))
        .route("/users", get(list_users).post(create_user))
        .route(
            "/certificates",
            get(list_certificates).post(upload_certificate),
        )
        .route(
            "/certificates/{name}",
            axum::routing::delete(delete_certificate),
        )
        .route("/apps", get(list_apps).post(create_app))
        .route(
            "/apps/{slug}",
            get(get_app).put(update_app).delete(delete_app),
        )
        .route(
            "/apps/{slug}/versions",
            get(list_app_versions).post(create_app_version),
        )
        .route("/apps/{slug}/versions/{number}", get(get_app_version))
        .route(
            "/apps/{slug}/versions/{number}/publish",
            post(publish_app_version),
        )
        .route(
            "/apps/{slug}/deployments",
            get(list_app_deployments).post(deploy_app),
        )
        .route(
            "/apps/{slug}/deployments/{gateway}",
            axum::routing::delete(undeploy_app),
        )
        .route(
            "/apps/{slug}/deployments/{gateway}/rollback",
            post(rollback_app),
        )
        .route("/blobs/missing", post(missing_blobs))
        .route("/blobs/{hash}", axum::routing::put(put_blob))
        .route("/acme/hosts", get(list_acme_hosts))
        .route("/acme/hosts/{host}/order", post(order_acme_host))
        .route("/users/{name}", axum::routing::delete(delete_user))
        .route(
            "/tiers/{name}",
            get(get_tier).put(update_tier).delete(delete_tier),
        )
        .route(
            "/consumers/{name}/keys/{id}",
            axum::routing::delete(revoke_key),
        )
        .route("/apply", post(crate::apply::apply))
        .route("/status", get(status))
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), admin_auth));
    let sync = Router::new()
        .route("/sync/snapshot", get(sync_snapshot))
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(tower_http::compression::CompressionLayer::new())
        .route("/sync/report", post(sync_report))
        .route("/sync/blobs/{hash}", get(sync_blob));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/openapi.json", get(openapi_doc))
        .route("/oauth2/token", post(oauth_token))
        .route("/oauth2/jwks", get(oauth_jwks))
        .nest("/api/v1", admin.merge(sync))
        .method_not_allowed_fallback(extract::method_not_allowed)
        .fallback(extract::not_found)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(middleware::map_response(extract::json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            extract::panicked,
        ))
        .with_state(state)
}

async fn openapi_doc() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::DOCUMENT,
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn admin_auth(State(st): St, req: Request, next: Next) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return Error::Unauthorized(
            "send the admin token as `Authorization: Bearer <token>` (`portico server` printed it on first start)".into(),
        )
        .into_response();
    };
    match st.store.admin_token_exists(&secrets::hash(token)).await {
        Ok(true) => next.run(req).await,
        Ok(false) => Error::Unauthorized("the admin token is not valid".into()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parses a JSON body, naming the field that failed: JSON that does not read or has the
/// wrong shape is a 400; a `null` or a string or list over its limit is a 422 with the
/// field's path.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::BadRequest("the body must be UTF-8 JSON".into()))?;
    if text.trim().is_empty() {
        return Err(Error::BadRequest(
            "the body is empty: send a JSON object".into(),
        ));
    }
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| Error::BadRequest(format!("the body is not JSON: {e}")))?;
    let mut fields = limits::nulls(&doc);
    fields.extend(limits::check(&doc));
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    portico_model::snapshot::parse_value(doc).map_err(|e| unreadable("the body", e))
}

/// A model error reading `what`: a syntax error is 400 (the text cannot be read), broken
/// rules are 422 with their fields.
pub(crate) fn unreadable(what: &str, e: portico_model::Error) -> Error {
    match e {
        portico_model::Error::Syntax { .. } => Error::BadRequest(format!(
            "{what} cannot be read: {}",
            e.field_errors()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )),
        portico_model::Error::Invalid(f) => Error::Invalid(f),
    }
}

fn invalid(e: portico_model::Error) -> Error {
    Error::Invalid(e.field_errors())
}

/// A gateway definition's problems: its own rules, and `acme` listeners on a control plane
/// without an ACME CA (their certificates would never come).
pub(crate) fn gateway_problems(st: &ControlPlane, spec: &GatewaySpec) -> Vec<FieldError> {
    let mut fields = spec
        .validate()
        .err()
        .map(|e| e.field_errors())
        .unwrap_or_default();
    if !st.config.acme {
        for (i, l) in spec.listeners.iter().enumerate() {
            if l.tls.as_ref().is_some_and(|t| t.acme) {
                fields.push(FieldError::new(
                    format!("listeners[{i}].tls.acme"),
                    "this control plane has no ACME CA: start it with --acme-directory, or upload certificates (`portico certificates upload`, POST /api/v1/certificates) and leave acme off",
                ));
            }
        }
    }
    fields
}

fn check_gateway(st: &ControlPlane, spec: &GatewaySpec) -> Result<(), Error> {
    let fields = gateway_problems(st, spec);
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(fields))
    }
}

/// The version an update names: `If-Match: "3"` (or `?version=3`).
fn expected_version(headers: &HeaderMap, q: &VersionQuery) -> Result<i64, Error> {
    if let Some(v) = q.version {
        return Ok(v);
    }
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Err(Error::PreconditionRequired(
            "name the version you are updating: send `If-Match` with the ETag of your GET (or ?version=N), so a concurrent change is not lost".into(),
        ));
    };
    raw.to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::BadRequest("If-Match must be an ETag such as \"3\"".into()))
}

#[derive(Debug, Default, Deserialize)]
struct VersionQuery {
    version: Option<i64>,
}

fn with_etag(status: StatusCode, meta: &Meta, value: Value) -> Response {
    let mut resp = (status, axum::Json(value)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn ok(value: Value) -> Res {
    Ok(axum::Json(value).into_response())
}

// ---- gateways ----

async fn list_gateways(State(st): St) -> Res {
    let gws = st.store.gateways().await?;
    ok(json!({ "items": gws }))
}

async fn get_gateway(State(st): St, Path(name): Path<String>) -> Res {
    let g = st.store.gateway(&name).await?;
    Ok(with_etag(StatusCode::OK, &g.meta, to_value(&g)))
}

async fn create_gateway(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec: GatewaySpec = body(&bytes)?;
    check_gateway(&st, &spec)?;
    let (g, moved) = st.store.create_gateway(&spec, None).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::CREATED, &g.meta, to_value(&g)))
}

async fn update_gateway(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec: GatewaySpec = body(&bytes)?;
    check_gateway(&st, &spec)?;
    let (g, moved) = st
        .store
        .update_gateway(&name, &spec, expected, None)
        .await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::OK, &g.meta, to_value(&g)))
}

/// `?force=true` on deletes that would take more with them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_gateway(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Res {
    let gid = st.store.gateway_id(&name).await?;
    let removed = st.store.delete_gateway(&name, q.force).await?;
    st.hub.wake(gid);
    ok(json!({ "deleted": name, "removed": removed }))
}

/// What `POST /gateways/link` takes: the gateway and the credentials it was installed with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    name: String,
    #[serde(rename = "type", default)]
    kind: GatewayKind,
    #[serde(default)]
    description: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    admin_port: Option<u16>,
    #[serde(default)]
    admin_ca_pem: Option<String>,
    jwt_secret: String,
    api_token: String,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    listeners: Vec<Listener>,
    /// Check the credentials against the running gateway (default true).
    #[serde(default = "yes")]
    verify: bool,
}

fn yes() -> bool {
    true
}

async fn link_gateway(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: LinkRequest = body(&bytes)?;
    let existing = st.store.gateway(&req.name).await.ok();
    let mut spec = existing
        .as_ref()
        .map_or_else(|| GatewaySpec::new(&req.name, req.kind), |g| g.spec.clone());
    if existing.as_ref().is_some_and(|g| g.builtin) {
        return Err(Error::Conflict(
            "the built-in gateway `default` runs inside the control plane and is not linked".into(),
        ));
    }
    if existing.is_none() {
        spec.description = req.description.clone();
        spec.hosts = req.hosts.clone();
        spec.listeners = req.listeners.clone();
    }
    spec.kind = req.kind;
    spec.url = req.url.clone();
    spec.ip = req.ip.clone();
    // One port, whichever way it was given: the URL's, unless admin_port says the same.
    let url_port = req
        .url
        .as_deref()
        .and_then(|u| u.parse::<axum::http::Uri>().ok())
        .and_then(|u| u.port_u16());
    match (req.admin_port, url_port) {
        (Some(p), Some(u)) if p != u => {
            return Err(Error::Invalid(vec![FieldError::new(
                "admin_port",
                format!("{p} differs from the port of url ({u}): give one of them, or the same"),
            )]));
        }
        (Some(p), _) | (None, Some(p)) => spec.admin_port = p,
        (None, None) => {}
    }
    if req.admin_ca_pem.is_some() {
        spec.admin_ca_pem = req.admin_ca_pem.clone();
    }
    let mut fields = Vec::new();
    if req.jwt_secret.len() < 32 {
        fields.push(FieldError::new(
            "jwt_secret",
            "give the gateway's JWT secret (at least 32 characters; `portico gateway init` makes one)",
        ));
    }
    if req.api_token.len() < 32 {
        fields.push(FieldError::new(
            "api_token",
            "give the gateway's API token (at least 32 characters; `portico gateway init` makes one)",
        ));
    }
    fields.extend(gateway_problems(&st, &spec));
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let target = AdminTarget::new(
        spec.url.as_deref(),
        spec.ip.as_deref(),
        spec.admin_port,
        spec.admin_ca_pem.as_deref(),
    )?;
    let node = if req.verify {
        Some(link::verify(&spec.name, &target, &req.jwt_secret, &req.api_token).await?)
    } else {
        None
    };
    let creds = Credentials {
        token_hash: secrets::hash(&req.api_token),
        jwt_secret_sealed: st.sealer.seal(&req.jwt_secret)?,
    };
    let (g, moved) = match existing {
        None => st.store.create_gateway(&spec, Some(&creds)).await?,
        Some(g) => {
            st.store
                .update_gateway(&spec.name, &spec, g.meta.version, Some(&creds))
                .await?
        }
    };
    st.hub.publish(&moved);
    tracing::info!(gateway = %g.spec.name, verified = req.verify, "gateway linked");
    if req.verify {
        // The node has been retrying with back-off while its token was unknown: ask it to
        // fetch now (best effort; it gets there on its own otherwise).
        let name = g.spec.name.clone();
        let secret = req.jwt_secret.clone();
        tokio::spawn(async move {
            if let Err(e) = link::resync(&name, &target, &secret).await {
                tracing::debug!(gateway = %name, error = %e, "resync after link failed");
            }
        });
    }
    Ok(with_etag(
        StatusCode::OK,
        &g.meta,
        json!({ "gateway": g, "verified": req.verify, "node": node }),
    ))
}

async fn rotate_token(State(st): St, Path(name): Path<String>) -> Res {
    let g = st.store.gateway(&name).await?;
    if g.builtin {
        return Err(Error::Conflict(
            "the built-in gateway `default` runs inside the control plane and has no token".into(),
        ));
    }
    let token = secrets::generate("pgt_");
    let existing = st.store.jwt_secret_sealed(&name).await?;
    let (secret, jwt_too) = match existing {
        Some(sealed) => (st.sealer.open(&sealed)?, false),
        None => (secrets::generate("pjs_"), true),
    };
    let creds = Credentials {
        token_hash: secrets::hash(&token),
        jwt_secret_sealed: st.sealer.seal(&secret)?,
    };
    let g = st
        .store
        .set_credentials(&name, Some(&creds), jwt_too)
        .await?;
    st.hub.wake(g_id(&st, &name).await?);
    tracing::info!(gateway = %g.spec.name, "gateway API token rotated");
    let mut out = json!({
        "gateway": g.spec.name,
        "api_token": token,
        "message": "shown once: give it to the gateway's nodes (`portico gateway run --token`); the old token no longer works",
    });
    if jwt_too {
        out["jwt_secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn g_id(st: &ControlPlane, name: &str) -> Result<i64, Error> {
    st.store.gateway_id(name).await
}

async fn revoke_token(State(st): St, Path(name): Path<String>) -> Res {
    let g = st.store.set_credentials(&name, None, false).await?;
    st.hub.wake(g_id(&st, &name).await?);
    tracing::info!(gateway = %g.spec.name, "gateway API token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn gateway_snapshot(State(st): St, Path(name): Path<String>) -> Res {
    let gid = st.store.gateway_id(&name).await?;
    let snap = st
        .store
        .snapshot(gid)
        .await?
        .ok_or_else(|| Error::NotFound(format!("gateway `{name}` has no snapshot yet")))?;
    let mut env: Value = serde_json::from_str(&snap.body)
        .map_err(|e| Error::Internal(format!("a stored snapshot does not read: {e}")))?;
    redact_private_keys(&mut env);
    ok(env)
}

/// Takes the private keys out of a snapshot envelope shown to an admin: they reach only
/// the gateway's own nodes, over the sync channel.
fn redact_private_keys(env: &mut Value) {
    let Some(listeners) = env
        .pointer_mut("/snapshot/listeners")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for l in listeners {
        let Some(certs) = l
            .pointer_mut("/tls/certificates")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in certs {
            if let Some(obj) = c.as_object_mut()
                && obj.remove("key_pem").is_some()
            {
                obj.insert("key_pem_redacted".into(), Value::Bool(true));
            }
        }
    }
}

fn node_state(
    st: &ControlPlane,
    current: u64,
    applied: Option<u64>,
    last_seen: i64,
) -> &'static str {
    let age = now() - last_seen;
    if age > st.config.node_offline_after.as_secs() as i64 {
        "offline"
    } else if applied == Some(current) {
        "in_sync"
    } else {
        "stale"
    }
}

fn node_json(st: &ControlPlane, current: u64, n: &crate::store::NodeRecord, t: i64) -> Value {
    json!({
        "node_id": n.node_id,
        "hostname": n.hostname,
        "applied_version": n.applied_version,
        "applied_hash": n.applied_hash,
        "last_error": n.last_error,
        "last_error_at": n.last_error_at,
        "last_seen_seconds_ago": t - n.last_seen,
        "state": node_state(st, current, n.applied_version, n.last_seen),
    })
}

async fn nodes_view(st: &ControlPlane, gid: i64, current: u64) -> Result<Vec<Value>, Error> {
    let t = now();
    Ok(st
        .store
        .nodes(gid)
        .await?
        .iter()
        .map(|n| node_json(st, current, n, t))
        .collect())
}

async fn gateway_nodes(State(st): St, Path(name): Path<String>) -> Res {
    let gid = st.store.gateway_id(&name).await?;
    let current = st.store.snapshot_version(gid).await?;
    ok(
        json!({ "gateway": name, "snapshot_version": current, "nodes": nodes_view(&st, gid, current).await? }),
    )
}

async fn resync_gateway(State(st): St, Path(name): Path<String>) -> Res {
    let g = st.store.gateway(&name).await?;
    let sealed = st.store.jwt_secret_sealed(&name).await?.ok_or_else(|| {
        Error::Conflict(format!(
            "gateway `{name}` has no JWT secret: link it first (`portico gateways link`)"
        ))
    })?;
    let secret = st.sealer.open(&sealed)?;
    let target = AdminTarget::new(
        g.spec.url.as_deref(),
        g.spec.ip.as_deref(),
        g.spec.admin_port,
        g.spec.admin_ca_pem.as_deref(),
    )?;
    let answer = link::resync(&g.spec.name, &target, &secret).await?;
    ok(json!({ "gateway": g.spec.name, "node": answer }))
}

async fn status(State(st): St) -> Res {
    let t = now();
    let mut nodes = st.store.all_nodes().await?;
    let mut warnings = st.store.snapshot_warnings().await?;
    let mut out = Vec::new();
    for (gid, g, current, hash) in st.store.gateways_with_snapshots().await? {
        let list: Vec<Value> = nodes
            .remove(&gid)
            .unwrap_or_default()
            .iter()
            .map(|n| node_json(&st, current, n, t))
            .collect();
        out.push(json!({
            "gateway": g.spec.name,
            "type": g.spec.kind.as_str(),
            "builtin": g.builtin,
            "token_active": g.token_active || g.builtin,
            "snapshot_version": current,
            "snapshot_hash": hash,
            "nodes": list,
            "warnings": warnings.remove(&gid).unwrap_or_default(),
        }));
    }
    ok(json!({ "gateways": out }))
}

// ---- services and raw routes ----

async fn list_services(State(st): St) -> Res {
    ok(json!({ "items": st.store.services().await? }))
}

async fn get_service(State(st): St, Path(name): Path<String>) -> Res {
    let r = st.store.service(&name).await?;
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

/// A service definition's problems: the data plane's rules for it, paths from the service.
pub(crate) fn service_problems(spec: &Service) -> Vec<FieldError> {
    let probe = portico_model::Snapshot {
        services: vec![spec.clone()],
        ..Default::default()
    };
    probe
        .validate()
        .err()
        .map(|e| e.field_errors())
        .unwrap_or_default()
        .into_iter()
        .map(|mut f| {
            f.path = f.path.replacen("services[0].", "", 1);
            f
        })
        .collect()
}

fn check_service(spec: &Service) -> Result<(), Error> {
    let fields = service_problems(spec);
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(fields))
    }
}

async fn create_service(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec: Service = body(&bytes)?;
    check_service(&spec)?;
    let (r, moved) = st.store.create_service(&spec).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::CREATED, &r.meta, to_value(&r)))
}

async fn update_service(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec: Service = body(&bytes)?;
    check_service(&spec)?;
    let (r, moved) = st.store.update_service(&name, &spec, expected).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn delete_service(State(st): St, Path(name): Path<String>) -> Res {
    st.store.delete_service(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_routes(State(st): St) -> Res {
    ok(json!({ "items": st.store.routes().await? }))
}

async fn get_route(State(st): St, Path(name): Path<String>) -> Res {
    let r = st.store.route(&name).await?;
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn create_route(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec: RouteSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    let (r, moved) = st.store.create_route(&spec).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::CREATED, &r.meta, to_value(&r)))
}

async fn update_route(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec: RouteSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    let (r, moved) = st.store.update_route(&name, &spec, expected).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn delete_route(State(st): St, Path(name): Path<String>) -> Res {
    let moved = st.store.delete_route(&name).await?;
    st.hub.publish(&moved);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- APIs, revisions, deployments ----

async fn list_apis(State(st): St) -> Res {
    ok(json!({ "items": st.store.apis().await? }))
}

async fn get_api(State(st): St, Path(id): Path<String>) -> Res {
    let a = st.store.api(&id).await?;
    let mut v = to_value(&a);
    v["invoke_urls"] = json!(invoke_urls(&st, &id).await?);
    Ok(with_etag(StatusCode::OK, &a.meta, v))
}

/// Where a deployed API answers, per gateway it is deployed to: every listener's scheme
/// and port with each host the API answers on (its own hosts, else the gateway's, else
/// the gateway's address), and the deployed revision's context.
async fn invoke_urls(st: &ControlPlane, id: &str) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for d in st.store.deployments(Some(id)).await? {
        let rev = st.store.revision(id, d.revision).await?;
        let g = st.store.gateway(&d.gateway).await?.spec;
        let hosts: Vec<String> = if !rev.spec.hosts.is_empty() {
            rev.spec.hosts.clone()
        } else if !g.hosts.is_empty() {
            g.hosts.clone()
        } else if let Some(ip) = &g.ip {
            vec![ip.clone()]
        } else if let Some(h) = g
            .url
            .as_deref()
            .and_then(|u| u.parse::<axum::http::Uri>().ok())
            .and_then(|u| u.host().map(str::to_owned))
        {
            vec![h]
        } else {
            // The built-in gateway, or one whose address the control plane was not told.
            vec!["localhost".to_owned()]
        };
        let mut urls = Vec::new();
        for l in &g.listeners {
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            let default =
                (scheme == "http" && l.port == 80) || (scheme == "https" && l.port == 443);
            for h in &hosts {
                // A wildcard host stands for its names: show one of them; an IPv6 address
                // goes in brackets.
                let h = h.replace("*.", "any.");
                let h = if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]")
                } else {
                    h
                };
                let port = if default {
                    String::new()
                } else {
                    format!(":{}", l.port)
                };
                urls.push(format!("{scheme}://{h}{port}{}", rev.spec.context));
            }
        }
        out.push(json!({ "gateway": g.name, "type": g.kind.as_str(), "revision": d.revision, "urls": urls }));
    }
    Ok(out)
}

async fn create_api(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec: ApiSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    tiers_exist(&st, &api_tier_refs(&spec)).await?;
    let a = st.store.create_api(&spec).await?;
    Ok(with_etag(StatusCode::CREATED, &a.meta, to_value(&a)))
}

async fn update_api(
    State(st): St,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec: ApiSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    tiers_exist(&st, &api_tier_refs(&spec)).await?;
    let a = st.store.update_api(&id, &spec, expected).await?;
    Ok(with_etag(StatusCode::OK, &a.meta, to_value(&a)))
}

async fn delete_api(State(st): St, Path(id): Path<String>, Query(q): Query<ForceQuery>) -> Res {
    let (undeployed, moved) = st.store.delete_api(&id, q.force).await?;
    st.hub.publish(&moved);
    ok(json!({ "deleted": id, "undeployed_from": undeployed }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleRequest {
    state: Lifecycle,
}

async fn set_lifecycle(
    State(st): St,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: LifecycleRequest = body(&bytes)?;
    let expected = match expected_version(&headers, &q) {
        Ok(v) => Some(v),
        Err(Error::PreconditionRequired(_)) => None,
        Err(e) => return Err(e),
    };
    let (a, moved) = st.store.set_lifecycle(&id, req.state, expected).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::OK, &a.meta, to_value(&a)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevisionRequest {
    #[serde(default)]
    note: String,
}

async fn create_revision(State(st): St, Path(id): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    let req: RevisionRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        RevisionRequest::default()
    } else {
        body(&bytes)?
    };
    let r = st.store.create_revision(&id, &req.note).await?;
    Ok((StatusCode::CREATED, axum::Json(to_value(&r))).into_response())
}

async fn list_revisions(State(st): St, Path(id): Path<String>) -> Res {
    ok(json!({ "items": st.store.revisions(&id).await? }))
}

fn revision_number(raw: &str) -> Result<u32, Error> {
    raw.parse()
        .map_err(|_| Error::BadRequest(format!("`{raw}` is not a revision number")))
}

async fn get_revision(State(st): St, Path((id, n)): Path<(String, String)>) -> Res {
    ok(to_value(
        &st.store.revision(&id, revision_number(&n)?).await?,
    ))
}

async fn delete_revision(State(st): St, Path((id, n)): Path<(String, String)>) -> Res {
    st.store.delete_revision(&id, revision_number(&n)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    revision: u32,
    gateways: Vec<String>,
}

async fn deploy(State(st): St, Path(id): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    let req: DeployRequest = body(&bytes)?;
    if req.gateways.is_empty() {
        return Err(Error::Invalid(vec![FieldError::new(
            "gateways",
            "name at least one gateway to deploy to",
        )]));
    }
    let (deployments, moved) = st.store.deploy(&id, req.revision, &req.gateways).await?;
    st.hub.publish(&moved);
    let versions: Vec<Value> = targets_with_versions(&st, &req.gateways).await?;
    ok(json!({ "deployments": deployments, "targets": versions }))
}

/// Each gateway's snapshot version after a change, so clients can wait for nodes to reach it.
async fn targets_with_versions(st: &ControlPlane, names: &[String]) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for name in names {
        let gid = st.store.gateway_id(name).await?;
        let v = st.store.snapshot_version(gid).await?;
        out.push(json!({ "gateway": name, "snapshot_version": v }));
    }
    Ok(out)
}

async fn undeploy(State(st): St, Path((id, gateway)): Path<(String, String)>) -> Res {
    let moved = st.store.undeploy(&id, &gateway).await?;
    st.hub.publish(&moved);
    let targets = targets_with_versions(&st, &[gateway]).await?;
    ok(json!({ "targets": targets }))
}

async fn api_deployments(State(st): St, Path(id): Path<String>) -> Res {
    st.store.api(&id).await?;
    ok(json!({ "items": st.store.deployments(Some(&id)).await? }))
}

async fn all_deployments(State(st): St) -> Res {
    ok(json!({ "items": st.store.deployments(None).await? }))
}

// ---- consumers, subscriptions, keys ----

async fn list_consumers(State(st): St) -> Res {
    ok(json!({ "items": st.store.consumers().await? }))
}

async fn get_consumer(State(st): St, Path(name): Path<String>) -> Res {
    let r = st.store.consumer(&name).await?;
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn create_consumer(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec: ConsumerSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    tiers_exist(&st, &[("tier".into(), &spec.tier)]).await?;
    let r = st.store.create_consumer(&spec).await?;
    Ok(with_etag(StatusCode::CREATED, &r.meta, to_value(&r)))
}

async fn update_consumer(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec: ConsumerSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    tiers_exist(&st, &[("tier".into(), &spec.tier)]).await?;
    let (r, moved) = st.store.update_consumer(&name, &spec, expected).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn delete_consumer(State(st): St, Path(name): Path<String>) -> Res {
    let moved = st.store.delete_consumer(&name).await?;
    st.hub.publish(&moved);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    api: String,
    #[serde(default)]
    tier: Option<String>,
}

async fn list_subscriptions(State(st): St, Path(name): Path<String>) -> Res {
    ok(json!({ "items": st.store.subscriptions(&name).await? }))
}

async fn subscribe(State(st): St, Path(name): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    let req: SubscribeRequest = body(&bytes)?;
    tiers_exist(&st, &[("tier".into(), &req.tier)]).await?;
    let moved = st
        .store
        .subscribe(&name, &req.api, req.tier.as_deref())
        .await?;
    st.hub.publish(&moved);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "consumer": name, "api": req.api, "tier": req.tier })),
    )
        .into_response())
}

async fn unsubscribe(State(st): St, Path((name, api)): Path<(String, String)>) -> Res {
    let moved = st.store.unsubscribe(&name, &api).await?;
    st.hub.publish(&moved);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_keys(State(st): St, Path(name): Path<String>) -> Res {
    ok(json!({ "items": st.store.credentials(&name).await? }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    #[serde(rename = "type")]
    key_type: KeyType,
    #[serde(default = "api_key_kind")]
    kind: crate::store::CredentialKind,
    /// Days until it stops working; never when absent.
    #[serde(default)]
    expires_in_days: Option<u32>,
}

fn api_key_kind() -> crate::store::CredentialKind {
    crate::store::CredentialKind::ApiKey
}

async fn create_key(State(st): St, Path(name): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    use crate::store::{CredentialKind, NewCredential};
    let req: KeyRequest = body(&bytes)?;
    if req.expires_in_days == Some(0) {
        return Err(Error::Invalid(vec![FieldError::new(
            "expires_in_days",
            "give 1 or more days, or leave it out for a key that does not expire",
        )]));
    }
    let expires_at = req.expires_in_days.map(|d| now() + i64::from(d) * 86_400);
    let (id, secret, mut out) = match req.kind {
        CredentialKind::ApiKey => {
            let key = secrets::generate("pk_");
            let id = format!("key_{}", &secrets::hash(&key)[..12]);
            let out = json!({ "id": id, "kind": "api_key", "key": key });
            (id, key, out)
        }
        CredentialKind::Client => {
            let client_id = format!("cl_{}", &secrets::hash(&secrets::generate(""))[..16]);
            let secret = secrets::generate("cs_");
            let out = json!({ "id": client_id, "kind": "client", "client_id": client_id, "client_secret": secret });
            (client_id, secret, out)
        }
    };
    let moved = st
        .store
        .add_credential(
            &name,
            &NewCredential {
                id,
                kind: req.kind,
                key_type: req.key_type,
                secret_hash: secrets::hash(&secret),
                hint: secret.chars().take(8).collect(),
                expires_at,
            },
        )
        .await?;
    st.hub.publish(&moved);
    out["consumer"] = json!(name);
    out["type"] = json!(req.key_type.as_str());
    out["expires_at"] = json!(expires_at);
    out["message"] = json!("shown once: store it now; only its hash is kept");
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn revoke_key(State(st): St, Path((name, id)): Path<(String, String)>) -> Res {
    let moved = st.store.revoke_credential(&name, &id).await?;
    st.hub.publish(&moved);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- throttling tiers ----

/// A tier's problems.
pub(crate) fn tier_problems(t: &portico_model::Tier) -> Vec<FieldError> {
    t.problems()
        .into_iter()
        .map(|(f, m)| FieldError::new(f, m))
        .collect()
}

fn check_tier(t: &portico_model::Tier) -> Result<(), Error> {
    let fields = tier_problems(t);
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(fields))
    }
}

/// Every tier a definition names must exist.
async fn tiers_exist(st: &ControlPlane, refs: &[(String, &Option<String>)]) -> Result<(), Error> {
    let mut fields = Vec::new();
    for (path, tier) in refs {
        if let Some(t) = tier
            && st.store.tier(t).await.is_err()
        {
            fields.push(FieldError::new(
                path.clone(),
                format!("no tier is named `{t}`: create it with `portico tiers create {t}` (POST /api/v1/tiers)"),
            ));
        }
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(fields))
    }
}

/// Every tier an API names, with its field path.
pub(crate) fn api_tier_refs(spec: &ApiSpec) -> Vec<(String, &Option<String>)> {
    let mut refs = vec![("tier".to_owned(), &spec.tier)];
    for (i, op) in spec.operations.iter().enumerate() {
        refs.push((format!("operations[{i}].tier"), &op.tier));
    }
    refs
}

async fn list_tiers(State(st): St) -> Res {
    ok(json!({ "items": st.store.tiers().await? }))
}

async fn get_tier(State(st): St, Path(name): Path<String>) -> Res {
    let r = st.store.tier(&name).await?;
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn create_tier(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec: portico_model::Tier = body(&bytes)?;
    check_tier(&spec)?;
    let r = st.store.create_tier(&spec).await?;
    Ok(with_etag(StatusCode::CREATED, &r.meta, to_value(&r)))
}

async fn update_tier(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec: portico_model::Tier = body(&bytes)?;
    check_tier(&spec)?;
    let (r, moved) = st.store.update_tier(&name, &spec, expected).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::OK, &r.meta, to_value(&r)))
}

async fn delete_tier(State(st): St, Path(name): Path<String>) -> Res {
    st.store.delete_tier(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- uploaded certificates ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateUpload {
    name: String,
    cert_pem: String,
    key_pem: String,
}

async fn list_certificates(State(st): St) -> Res {
    ok(json!({ "items": st.store.certificates().await? }))
}

/// Checks an uploaded chain and key: they parse, belong together and are not expired.
/// Answers the certificate's DNS names and its expiry (Unix seconds).
fn inspect_certificate(cert_pem: &str, key_pem: &str) -> Result<(Vec<String>, i64), Error> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let field = |f: &str, m: String| Error::Invalid(vec![FieldError::new(f, m)]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| field("cert_pem", format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(field("cert_pem", "no certificate in it".into()));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| field("key_pem", format!("not a PEM private key: {e}")))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| field("key_pem", format!("unsupported key: {e}")))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|_| {
            field(
                "key_pem",
                "this key does not belong to the certificate".into(),
            )
        })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| field("cert_pem", format!("the certificate does not parse: {e}")))?;
    let not_after = cert.validity().not_after.timestamp();
    if not_after <= now() {
        return Err(field(
            "cert_pem",
            format!("the certificate expired on {}", cert.validity().not_after),
        ));
    }
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                hosts.push(d.to_ascii_lowercase());
            }
        }
    }
    if hosts.is_empty() {
        return Err(field(
            "cert_pem",
            "the certificate names no DNS host (subjectAltName)".into(),
        ));
    }
    Ok((hosts, not_after))
}

async fn upload_certificate(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: CertificateUpload = body(&bytes)?;
    if req.name.is_empty() || req.name.chars().count() > limits::NAME {
        return Err(Error::Invalid(vec![FieldError::new(
            "name",
            format!("1 to {} characters", limits::NAME),
        )]));
    }
    let (hosts, not_after) = inspect_certificate(&req.cert_pem, &req.key_pem)?;
    let sealed = st.sealer.seal(&req.key_pem)?;
    let (rec, moved) = st
        .store
        .add_certificate(&req.name, &hosts, &req.cert_pem, &sealed, not_after)
        .await?;
    st.hub.publish(&moved);
    tracing::info!(name = %rec.name, hosts = ?rec.hosts, "certificate uploaded");
    Ok((StatusCode::CREATED, axum::Json(to_value(&rec))).into_response())
}

async fn delete_certificate(State(st): St, Path(name): Path<String>) -> Res {
    let moved = st.store.delete_certificate(&name).await?;
    st.hub.publish(&moved);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- apps ----

async fn list_apps(State(st): St) -> Res {
    ok(json!({ "items": st.store.apps().await? }))
}

async fn get_app(State(st): St, Path(slug): Path<String>) -> Res {
    let a = st.store.app(&slug).await?;
    Ok(with_etag(StatusCode::OK, &a.meta, to_value(&a)))
}

async fn create_app(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let spec: portico_model::AppSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    let a = st.store.create_app(&spec).await?;
    Ok(with_etag(StatusCode::CREATED, &a.meta, to_value(&a)))
}

async fn update_app(
    State(st): St,
    Path(slug): Path<String>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let expected = expected_version(&headers, &q)?;
    let spec: portico_model::AppSpec = body(&bytes)?;
    spec.validate().map_err(invalid)?;
    let (a, moved) = st.store.update_app(&slug, &spec, expected).await?;
    st.hub.publish(&moved);
    Ok(with_etag(StatusCode::OK, &a.meta, to_value(&a)))
}

async fn delete_app(State(st): St, Path(slug): Path<String>) -> Res {
    let orphans = st.store.delete_app(&slug).await?;
    sweep_blobs(&st, orphans).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn sweep_blobs(st: &ControlPlane, orphans: Vec<String>) {
    st.sweep_files(orphans).await;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MissingRequest {
    hashes: Vec<String>,
}

/// Which of these files still need uploading (the rest are stored already).
async fn missing_blobs(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: MissingRequest = body(&bytes)?;
    if let Some((i, _)) = req
        .hashes
        .iter()
        .enumerate()
        .find(|(_, h)| !portico_model::app::hash_ok(h))
    {
        return Err(Error::Invalid(vec![FieldError::new(
            format!("hashes[{i}]"),
            "a SHA-256 in lower-case hex",
        )]));
    }
    ok(json!({ "missing": st.store.missing_blobs(&req.hashes).await? }))
}

/// Stores one file under its SHA-256 (checked while it streams to disk).
async fn put_blob(State(st): St, Path(hash): Path<String>, body: axum::body::Body) -> Res {
    if !portico_model::app::hash_ok(&hash) {
        return Err(Error::BadRequest(format!(
            "`{hash}` is not a SHA-256 in lower-case hex"
        )));
    }
    if st.store.has_blob(&hash).await? && tokio::fs::metadata(st.blobs.path(&hash)).await.is_ok() {
        // Fresh again: a version is about to use it.
        let size = tokio::fs::metadata(st.blobs.path(&hash))
            .await
            .map(|m| m.len())
            .unwrap_or_default();
        st.store.add_blob(&hash, size).await?;
        return ok(json!({ "hash": hash, "stored": "already" }));
    }
    let size = st.blobs.put(&hash, body).await?;
    st.store.add_blob(&hash, size).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "hash": hash, "size": size })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppVersionRequest {
    files: std::collections::BTreeMap<String, portico_model::AppFile>,
    #[serde(default)]
    note: String,
}

async fn create_app_version(
    State(st): St,
    Path(slug): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: AppVersionRequest = body(&bytes)?;
    let (v, orphans) = st
        .store
        .create_app_version(&slug, &req.files, &req.note)
        .await?;
    sweep_blobs(&st, orphans).await;
    Ok((StatusCode::CREATED, axum::Json(to_value(&v))).into_response())
}

async fn list_app_versions(State(st): St, Path(slug): Path<String>) -> Res {
    ok(json!({ "items": st.store.app_versions(&slug).await? }))
}

async fn get_app_version(State(st): St, Path((slug, number)): Path<(String, u32)>) -> Res {
    let files = st.store.app_version_files(&slug, number).await?;
    ok(json!({ "app": slug, "number": number, "files": files }))
}

async fn publish_app_version(State(st): St, Path((slug, number)): Path<(String, u32)>) -> Res {
    st.store.publish_app_version(&slug, number).await?;
    ok(json!({ "app": slug, "number": number, "state": "published" }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppDeployRequest {
    version: u32,
    gateways: Vec<String>,
    #[serde(default)]
    host: Option<String>,
    /// A draft version may go to a production gateway only when this says so.
    #[serde(default)]
    allow_draft: bool,
}

async fn deploy_app(State(st): St, Path(slug): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    let req: AppDeployRequest = body(&bytes)?;
    if req.gateways.is_empty() {
        return Err(Error::Invalid(vec![FieldError::new(
            "gateways",
            "name at least one gateway",
        )]));
    }
    if let Some(h) = &req.host
        && let Err(m) = portico_model::validate::check_host(h, false)
    {
        return Err(Error::Invalid(vec![FieldError::new("host", m)]));
    }
    let (items, moved) = st
        .store
        .deploy_app(
            &slug,
            req.version,
            &req.gateways,
            req.host.as_deref(),
            req.allow_draft,
        )
        .await?;
    st.hub.publish(&moved);
    let targets = targets_with_versions(&st, &req.gateways).await?;
    ok(json!({ "items": items, "targets": targets }))
}

#[derive(Debug, Deserialize)]
struct HostQuery {
    host: Option<String>,
}

async fn list_app_deployments(State(st): St, Path(slug): Path<String>) -> Res {
    let mut items = Vec::new();
    for d in st.store.app_deployments(&slug).await? {
        let gid = st.store.gateway_id(&d.gateway).await?;
        let nodes = st.store.nodes(gid).await?;
        let current = st.store.snapshot_version(gid).await?;
        let mut v = to_value(&d);
        v["nodes"] = to_value(&nodes);
        // Nodes at this snapshot serve `version`; others still serve an older one.
        v["snapshot_version"] = json!(current);
        items.push(v);
    }
    ok(json!({ "items": items }))
}

async fn undeploy_app(
    State(st): St,
    Path((slug, gateway)): Path<(String, String)>,
    Query(q): Query<HostQuery>,
) -> Res {
    let moved = st
        .store
        .undeploy_app(&slug, &gateway, q.host.as_deref())
        .await?;
    st.hub.publish(&moved);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rollback_app(
    State(st): St,
    Path((slug, gateway)): Path<(String, String)>,
    Query(q): Query<HostQuery>,
) -> Res {
    let (d, moved) = st
        .store
        .rollback_app(&slug, &gateway, q.host.as_deref())
        .await?;
    st.hub.publish(&moved);
    let targets = targets_with_versions(&st, &[gateway]).await?;
    ok(json!({ "deployment": d, "targets": targets }))
}

/// A node fetches an app file of its gateway's snapshot by hash (with the gateway's token).
async fn sync_blob(State(st): St, headers: HeaderMap, Path(hash): Path<String>) -> Res {
    let owner = gateway_auth(&st, &headers).await?;
    // Only files of what this gateway serves: another gateway's apps stay out of reach.
    let serves_it = st
        .store
        .snapshot(owner.gateway_id)
        .await?
        .is_some_and(|s| s.body.contains(&format!("\"hash\":\"{hash}\"")));
    if !portico_model::app::hash_ok(&hash) || !serves_it || !st.store.has_blob(&hash).await? {
        return Err(Error::NotFound(format!(
            "no file {hash} in what this gateway serves"
        )));
    }
    let file = tokio::fs::File::open(st.blobs.path(&hash))
        .await
        .map_err(|e| Error::Internal(format!("file {hash} is recorded but unreadable: {e}")))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

// ---- automatic certificates ----

async fn list_acme_hosts(State(st): St) -> Res {
    ok(json!({ "items": st.store.acme_hosts().await? }))
}

/// Orders a host's certificate now: an early renewal, or a retry without the back-off.
async fn order_acme_host(State(st): St, Path(host): Path<String>) -> Res {
    st.store.acme_order_now(&host).await?;
    st.hub.changed.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "host": host.to_ascii_lowercase(), "state": "ordering" })),
    )
        .into_response())
}

// ---- users (password grant) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    name: String,
    password: String,
}

async fn list_users(State(st): St) -> Res {
    ok(json!({ "items": st.store.users().await? }))
}

async fn create_user(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: UserRequest = body(&bytes)?;
    let mut fields = Vec::new();
    if req.name.is_empty()
        || req.name.chars().count() > limits::NAME
        || req.name.contains(char::is_whitespace)
    {
        fields.push(FieldError::new(
            "name",
            format!("1 to {} characters without spaces", limits::NAME),
        ));
    }
    if req.password.chars().count() < 12 {
        fields.push(FieldError::new("password", "use at least 12 characters"));
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || crate::tokens::hash_password(&password))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let u = st.store.create_user(&req.name, &hash).await?;
    Ok((StatusCode::CREATED, axum::Json(to_value(&u))).into_response())
}

async fn delete_user(State(st): St, Path(name): Path<String>) -> Res {
    st.store.delete_user(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- token service ----

/// An RFC 6749 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portico\""),
        );
    }
    r
}

#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// `POST /oauth2/token`: the client-credentials grant (RFC 6749 section 4.4), client
/// authenticated by HTTP Basic or form fields; answers a signed ES256 JWT.
async fn oauth_token(
    State(st): St,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Response {
    let form: TokenForm = match serde_urlencoded::from_bytes(&bytes) {
        Ok(f) => f,
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
    };
    let user = match form.grant_type.as_deref() {
        Some("client_credentials") => None,
        Some("password") => {
            let (Some(u), Some(p)) = (form.username.clone(), form.password.clone()) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the password grant needs username and password",
                );
            };
            Some((u, p))
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "this token service supports grant_type=client_credentials and grant_type=password",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            );
        }
    };
    let Some((client_id, secret)) = basic_credentials(&headers)
        .or_else(|| Some((form.client_id.clone()?, form.client_secret.clone()?)))
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "authenticate the client with HTTP Basic or client_id and client_secret",
        );
    };
    // The client first: without a good client nothing is said about any user.
    let client = match authenticate_client(&st, &client_id, &secret).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client, wrong secret, or the credential was revoked or has expired",
            );
        }
        Err(e) => return e.into_response(),
    };
    let user = match user {
        None => None,
        Some((name, password)) => {
            let addr = ext
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            if let Some(wait) = st.signins.paused(&name, addr) {
                let mut r = oauth_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "invalid_request",
                    &format!(
                        "too many failed sign-ins for this user or from this address: try again in {} s",
                        wait.as_secs().max(1)
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            match check_user(&st, &name, &password).await {
                Ok(Some(n)) => {
                    st.signins.succeeded(&name);
                    Some(n)
                }
                Ok(None) => {
                    st.signins.failed(&name, addr);
                    // One answer for an unknown user and a wrong password.
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "the username or password is wrong",
                    );
                }
                Err(e) => return e.into_response(),
            }
        }
    };
    match issue_for_client(&st, client, &client_id, form.scope.as_deref(), user).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The user's name when the password matches. An unknown name costs one Argon2
/// verification too, so that its answer cannot be told apart by its time. Argon2 runs off
/// the event loop.
async fn check_user(
    st: &ControlPlane,
    name: &str,
    password: &str,
) -> Result<Option<String>, Error> {
    let found = st.store.password_hash(name).await?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || match found {
        Some((name, hash)) => crate::tokens::verify_password(&password, &hash).then_some(name),
        None => {
            crate::tokens::verify_unknown_user(&password);
            None
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))
}

/// The client credential when its id and secret are good and it (and its consumer) may
/// get tokens.
async fn authenticate_client(
    st: &ControlPlane,
    client_id: &str,
    secret: &str,
) -> Result<Option<crate::store::ClientRecord>, Error> {
    let Some(client) = st.store.client(client_id).await? else {
        return Ok(None);
    };
    let t = now();
    if client.revoked_at.is_some()
        || client.expires_at.is_some_and(|e| t >= e)
        || !constant_time_eq(
            client.secret_hash.as_bytes(),
            secrets::hash(secret).as_bytes(),
        )
        || st.store.consumer(&client.consumer).await?.spec.blocked
    {
        return Ok(None);
    }
    Ok(Some(client))
}

async fn issue_for_client(
    st: &ControlPlane,
    client: crate::store::ClientRecord,
    client_id: &str,
    scope: Option<&str>,
    user: Option<String>,
) -> Result<Response, Error> {
    let (grantable, apis) = st.store.grantable(&client.consumer).await?;
    let scopes: Vec<String> = match scope {
        None => grantable.clone(),
        Some(s) => {
            let asked: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
            if let Some(bad) = asked.iter().find(|a| !grantable.contains(a)) {
                return Ok(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!(
                        "scope `{bad}` is not declared by any API this consumer is subscribed to"
                    ),
                ));
            }
            asked
        }
    };
    let token = sign_token(
        st,
        &crate::tokens::Grant {
            consumer: client.consumer,
            client_id: client_id.to_owned(),
            key_type: client.key_type,
            scopes: scopes.clone(),
            apis,
            expires_in: crate::tokens::TOKEN_LIFETIME,
            not_before_in: 0,
            user,
        },
    )
    .await?;
    let mut r = axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": crate::tokens::TOKEN_LIFETIME,
        "scope": scopes.join(" "),
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn sign_token(st: &ControlPlane, g: &crate::tokens::Grant) -> Result<String, Error> {
    let key = st
        .store
        .active_signing_key()
        .await?
        .ok_or_else(|| Error::Internal("no signing key".into()))?;
    crate::tokens::sign(&st.sealer, &key, g)
}

/// `GET /oauth2/jwks`: the public keys, the active one and those still verifying tokens.
async fn oauth_jwks(State(st): St) -> Res {
    let t = now();
    let keys: Vec<_> = st
        .store
        .signing_keys()
        .await?
        .into_iter()
        .filter(|k| {
            k.retired_at
                .is_none_or(|r| r > t - crate::store::TOKEN_MAX_LIFETIME)
        })
        .collect();
    ok(crate::tokens::jwks(&keys))
}

async fn list_signing_keys(State(st): St) -> Res {
    ok(json!({ "items": st.store.signing_keys().await? }))
}

async fn rotate_signing_key(State(st): St) -> Res {
    let key = crate::tokens::generate_key(&st.sealer)?;
    let moved = st.store.add_signing_key(&key).await?;
    st.hub.publish(&moved);
    tracing::info!(kid = %key.kid, "token signing key rotated");
    Ok((StatusCode::CREATED, axum::Json(to_value(&key))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestTokenRequest {
    #[serde(rename = "type")]
    key_type: KeyType,
    #[serde(default)]
    scope: Option<String>,
    /// Seconds until it expires; negative makes an expired token (to test clients).
    #[serde(default = "one_hour")]
    expires_in: i64,
    /// Seconds until it becomes valid.
    #[serde(default)]
    not_before_in: i64,
}

fn one_hour() -> i64 {
    crate::tokens::TOKEN_LIFETIME
}

/// `POST /api/v1/consumers/{name}/token`: a token for a consumer without a client secret
/// (admins testing an API).
async fn test_token(State(st): St, Path(name): Path<String>, JsonBody(bytes): JsonBody) -> Res {
    let req: TestTokenRequest = body(&bytes)?;
    let mut fields = Vec::new();
    if !(-86_400..=86_400).contains(&req.expires_in) {
        fields.push(FieldError::new(
            "expires_in",
            "give -86400 to 86400 seconds",
        ));
    }
    if !(0..=86_400).contains(&req.not_before_in) {
        fields.push(FieldError::new("not_before_in", "give 0 to 86400 seconds"));
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    if st.store.consumer(&name).await?.spec.blocked {
        return Err(Error::Conflict(format!(
            "consumer `{name}` is blocked: unblock it first (`portico consumers unblock {name}`)"
        )));
    }
    let (grantable, apis) = st.store.grantable(&name).await?;
    let scopes: Vec<String> = match &req.scope {
        None => grantable,
        Some(s) => s.split_whitespace().map(str::to_owned).collect(),
    };
    let token = sign_token(
        &st,
        &crate::tokens::Grant {
            consumer: name.clone(),
            client_id: "admin".into(),
            key_type: req.key_type,
            scopes: scopes.clone(),
            apis,
            expires_in: req.expires_in,
            not_before_in: req.not_before_in,
            user: None,
        },
    )
    .await?;
    ok(
        json!({ "access_token": token, "token_type": "Bearer", "expires_in": req.expires_in, "scope": scopes.join(" ") }),
    )
}

// ---- sync (gateway API token) ----

async fn gateway_auth(
    st: &ControlPlane,
    headers: &HeaderMap,
) -> Result<crate::store::TokenOwner, Error> {
    let Some(token) = bearer(headers) else {
        return Err(Error::Unauthorized(
            "send the gateway's API token as `Authorization: Bearer <token>`".into(),
        ));
    };
    st.store
        .token_owner(&secrets::hash(token))
        .await?
        .ok_or_else(|| {
            Error::Unauthorized(
                "this API token belongs to no gateway: link the gateway first, or the token was revoked or rotated".into(),
            )
        })
}

#[derive(Debug, Deserialize)]
struct SyncQuery {
    after: Option<u64>,
    wait: Option<u64>,
}

async fn sync_snapshot(State(st): St, headers: HeaderMap, Query(q): Query<SyncQuery>) -> Res {
    let owner = gateway_auth(&st, &headers).await?;
    let current = st.store.snapshot_version(owner.gateway_id).await?;
    let mut rx = st.hub.subscribe(owner.gateway_id, current);
    let wait = Duration::from_secs(q.wait.unwrap_or(30)).min(st.config.long_poll_max);
    let deadline = tokio::time::Instant::now() + wait;
    let mut stopping = st.stopping.clone();
    loop {
        let v = *rx.borrow_and_update();
        if v > 0 && Some(v) != q.after {
            let snap = st
                .store
                .snapshot(owner.gateway_id)
                .await?
                .ok_or_else(|| Error::Internal("a published snapshot is missing".into()))?;
            let mut resp =
                ([(header::CONTENT_TYPE, "application/json")], snap.body).into_response();
            if let Ok(e) = HeaderValue::from_str(&format!("\"{}\"", snap.version)) {
                resp.headers_mut().insert(header::ETAG, e);
            }
            return Ok(resp);
        }
        if *stopping.borrow() {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, rx.changed()) => match changed {
                Ok(Ok(())) => {
                    // Woken: a new version, or the token was revoked or the gateway deleted.
                    gateway_auth(&st, &headers).await?;
                }
                Ok(Err(_)) | Err(_) => return Ok(StatusCode::NOT_MODIFIED.into_response()),
            },
            // The control plane stops: nothing new will come from this one.
            _ = stopping.changed() => return Ok(StatusCode::NOT_MODIFIED.into_response()),
        }
    }
}

async fn sync_report(State(st): St, headers: HeaderMap, JsonBody(bytes): JsonBody) -> Res {
    let owner = gateway_auth(&st, &headers).await?;
    let report: NodeReport = body(&bytes)?;
    let mut fields = Vec::new();
    if report.node_id.is_empty() || report.node_id.chars().count() > limits::OBJECT_NAME {
        fields.push(FieldError::new(
            "node_id",
            format!("1 to {} characters", limits::OBJECT_NAME),
        ));
    } else if report.node_id == BUILTIN_NODE {
        fields.push(FieldError::new(
            "node_id",
            "`builtin` is the built-in gateway's own node",
        ));
    }
    if let Err(m) = limits::at_most(&report.hostname, limits::HOST) {
        fields.push(FieldError::new("hostname", m));
    }
    let key_hash = match report.node_key.as_deref() {
        Some(k) if (32..=256).contains(&k.len()) => secrets::hash(k),
        _ => {
            fields.push(FieldError::new(
                "node_key",
                "send the node's key (32 to 256 characters, kept in its cache directory): nodes older than the control plane must be upgraded",
            ));
            String::new()
        }
    };
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    st.store
        .report_node(
            owner.gateway_id,
            &report,
            Some(&key_hash),
            st.config.node_limits,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn an_unknown_user_costs_one_argon2_verification_like_a_known_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = crate::Config {
            data_dir: dir.path().to_owned(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ..crate::Config::default()
        };
        let running = crate::start(config, std::future::pending())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let st = running.state.clone();
        let hash =
            crate::tokens::hash_password("correct horse battery").unwrap_or_else(|e| panic!("{e}"));
        st.store
            .create_user("alice", &hash)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let count = || crate::tokens::VERIFICATIONS.load(Ordering::Relaxed);
        for (name, password, want) in [
            ("alice", "correct horse battery", true),
            ("alice", "wrong horse battery", false),
            ("nobody", "correct horse battery", false),
        ] {
            let before = count();
            let got = check_user(&st, name, password)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.is_some(), want, "{name}");
            assert_eq!(count() - before, 1, "{name}: one verification per attempt");
        }
        running.task.abort();
    }
}
