//! The admin REST API under `/api/v1` (admin token), and the sync endpoints nodes call with
//! their gateway's API token. Bodies are JSON; every error is
//! `{"error": code, "message": what to do, "fields": [...]}`. Updates name the version they
//! read with `If-Match` (the `ETag` of a GET); a stale one gets 409.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
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

use crate::access::{self, Action, Caller, KindId};
use crate::error::Error;
use crate::extract::{self, JsonBody, Path, Query, RawBody};
use crate::link::{self, AdminTarget};
use crate::page::{Page, PageQuery};
use crate::secrets;
use crate::store::{ApiRecord, Credentials, Meta, now};
use crate::{ControlPlane, openapi};

/// The node id of the built-in gateway's node (in the server process; never reported
/// over the sync API).
pub const BUILTIN_NODE: &str = "builtin";

type St = State<Arc<ControlPlane>>;
type Res = Result<Response, Error>;
type R = Router<Arc<ControlPlane>>;

pub(crate) mod apis;
mod apps;
pub(crate) mod certs;
pub(crate) mod consumers;
pub(crate) mod gateways;
pub(crate) mod kind;
pub(crate) mod oauth;
mod people;
pub(crate) mod portal;
mod sync;

use apis::targets_with_versions;
use kind::missing_tiers;
pub(crate) use kind::{api_tier_refs, service_problems, tier_problems};
pub(crate) use oauth::constant_time_eq;
pub(crate) use people::{
    SESSION_SECONDS, add_role, add_user, set_password, sign_in, start_session,
};
use sync::gateway_auth;

/// Which requests a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Everything, on one listener (the default).
    Both,
    /// The admin API and the publisher console.
    Admin,
    /// What gateways and API consumers reach: the token service and JWKS, gateway sync and
    /// node reports, the developer portal and its `/api/v1/portal` API.
    Public,
}

impl Side {
    fn admin(self) -> bool {
        self != Self::Public
    }

    fn public(self) -> bool {
        self != Self::Admin
    }
}

/// The whole HTTP surface of the control plane, on one listener.
pub fn router(state: Arc<ControlPlane>) -> Router {
    router_for(state, Side::Both)
}

/// The part of the HTTP surface a listener on `side` serves.
pub fn router_for(state: Arc<ControlPlane>, side: Side) -> Router {
    use KindId as K;
    let gateways = R::new()
        .route("/gateways/link", post(gateways::link_gateway))
        .route(
            "/gateways/{name}/token",
            post(gateways::rotate_token).delete(gateways::revoke_token),
        )
        .route("/gateways/{name}/snapshot", get(gateways::gateway_snapshot))
        .route("/gateways/{name}/nodes", get(gateways::gateway_nodes))
        .route("/gateways/{name}/resync", post(gateways::resync_gateway));
    let apis = R::new()
        .route("/apis/{id}/lifecycle", post(apis::set_lifecycle))
        .route(
            "/apis/{id}/revisions",
            get(apis::list_revisions).post(apis::create_revision),
        )
        .route(
            "/apis/{id}/revisions/{number}",
            get(apis::get_revision).delete(apis::delete_revision),
        )
        .route(
            "/apis/{id}/deployments",
            get(apis::api_deployments).post(apis::deploy),
        )
        .route(
            "/apis/{id}/deployments/{gateway}",
            axum::routing::delete(apis::undeploy),
        )
        .route("/deployments", get(apis::all_deployments));
    let consumers = R::new()
        .route(
            "/consumers/{name}/subscriptions",
            get(consumers::list_subscriptions).post(consumers::subscribe),
        )
        .route(
            "/consumers/{name}/subscriptions/{api}",
            axum::routing::delete(consumers::unsubscribe),
        )
        .route(
            "/consumers/{name}/keys",
            get(consumers::list_keys).post(consumers::create_key),
        )
        .route(
            "/consumers/{name}/keys/{id}",
            axum::routing::delete(consumers::revoke_key),
        )
        .route(
            "/consumers/{name}/keys/{id}/regenerate",
            post(consumers::regenerate_key),
        )
        .route("/consumers/{name}/token", post(oauth::test_token));
    let apps = R::new()
        .route(
            "/apps/{slug}/versions",
            get(apps::list_app_versions).post(apps::create_app_version),
        )
        .route("/apps/{slug}/versions/{number}", get(apps::get_app_version))
        .route(
            "/apps/{slug}/versions/{number}/publish",
            post(apps::publish_app_version),
        )
        .route(
            "/apps/{slug}/deployments",
            get(apps::list_app_deployments).post(apps::deploy_app),
        )
        .route(
            "/apps/{slug}/deployments/{gateway}",
            axum::routing::delete(apps::undeploy_app),
        )
        .route(
            "/apps/{slug}/deployments/{gateway}/rollback",
            post(apps::rollback_app),
        )
        .route("/blobs/missing", post(apps::missing_blobs))
        .route("/blobs/{hash}", axum::routing::put(apps::put_blob));
    let admin = R::new()
        .merge(kind::routes::<kind::Gateways>(gateways))
        .merge(kind::routes::<kind::Spec<Service>>(R::new()))
        .merge(kind::routes::<kind::Spec<RouteSpec>>(R::new()))
        .merge(kind::routes::<kind::Apis>(apis))
        .merge(kind::routes::<kind::Spec<ConsumerSpec>>(consumers))
        .merge(kind::routes::<kind::Spec<portico_model::Tier>>(R::new()))
        .merge(kind::routes::<kind::Apps>(apps))
        .merge(section(
            K::Certificate,
            R::new()
                .route(
                    "/certificates",
                    get(certs::list_certificates).post(certs::upload_certificate),
                )
                .route(
                    "/certificates/{name}",
                    axum::routing::delete(certs::delete_certificate),
                ),
        ))
        .merge(section(
            K::Acme,
            R::new()
                .route("/acme/hosts", get(certs::list_acme_hosts))
                .route("/acme/hosts/{host}/order", post(certs::order_acme_host)),
        ))
        .merge(section(
            K::SigningKey,
            R::new().route(
                "/signing-keys",
                get(oauth::list_signing_keys).post(oauth::rotate_signing_key),
            ),
        ))
        .merge(section(K::User, people::users()))
        .merge(section(K::Role, people::roles()))
        .merge(section(K::Token, people::tokens()))
        .merge(section(
            K::AdminToken,
            R::new().route("/admin-tokens/rotate", post(people::rotate_admin_token)),
        ))
        .merge(section(
            K::Audit,
            R::new().route("/audit", get(people::audit)),
        ))
        .merge(section(
            K::Status,
            R::new().route("/status", get(gateways::status)),
        ))
        .merge(section(
            K::Apply,
            R::new().route("/apply", post(crate::apply::apply)),
        ))
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Signing in with a password (the CLI's `login --user`): before any authentication.
    let login = R::new().route("/auth/login", post(people::login));
    let portal_api = section(K::Portal, portal::routes())
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let sync = R::new()
        .route("/sync/snapshot", get(sync::sync_snapshot))
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(tower_http::compression::CompressionLayer::new())
        .route("/sync/report", post(sync::sync_report))
        .route("/sync/blobs/{hash}", get(apps::sync_blob));
    let mut v1 = R::new();
    let mut top = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/openapi.json", get(openapi_doc));
    if side.admin() {
        v1 = v1.merge(admin).merge(login);
    }
    if side.public() {
        v1 = v1.merge(sync).merge(portal_api);
        top = top
            .route("/oauth2/token", post(oauth::oauth_token))
            .route("/oauth2/jwks", get(oauth::oauth_jwks));
    }
    top.nest("/api/v1", v1)
        .merge(crate::web::router(side))
        .method_not_allowed_fallback(extract::method_not_allowed)
        .fallback(extract::not_found)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(middleware::map_response(extract::json_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::trace::traced,
        ))
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

/// The caller of a request, set by [`authenticate`]: `None` for anonymous callers.
#[derive(Clone, Debug)]
pub(crate) struct Who(pub(crate) Option<Caller>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Who {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Who>()
            .cloned()
            .ok_or_else(|| Error::Internal("a handler ran outside authentication".into()))
    }
}

impl Who {
    /// The signed-in caller, or 401.
    pub(crate) fn signed_in(&self) -> Result<&Caller, Error> {
        self.0.as_ref().ok_or_else(|| {
            Error::Unauthorized(
                "sign in: send `Authorization: Bearer <token>` (`portico login`)".into(),
            )
        })
    }
}

/// Finds who is calling from the bearer token (the admin token, a personal access token
/// or a session; gateway API tokens and consumer credentials are none of these), and runs
/// the request as them: the audit log names them for every write it makes. No token is an
/// anonymous call; a token that is not valid is a 401.
async fn authenticate(State(st): St, mut req: Request, next: Next) -> Response {
    let caller = match bearer(req.headers()) {
        None => None,
        Some(token) => match st
            .store
            .token_holder(&secrets::hash(token), st.config.session_idle)
            .await
        {
            Ok(Some(h)) => Some(Caller {
                name: h.name,
                roles: h.roles,
                via: h.via,
                token_id: Some(h.id),
            }),
            Ok(None) => {
                return Error::Unauthorized(
                    "the token is not valid (expired, revoked, or not a Portico admin, personal or session token): sign in again with `portico login`".into(),
                )
                .into_response();
            }
            Err(e) => return e.into_response(),
        },
    };
    let actor = caller
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), Caller::actor);
    req.extensions_mut().insert(Who(caller));
    crate::store::ACTOR.scope(actor, next.run(req)).await
}

/// Routes of one kind: every request to them passes [`access::authorize`] first, with the
/// kind, the action its method stands for, and the user its path names.
fn section(kind: KindId, routes: R) -> R {
    routes.route_layer(middleware::from_fn(move |req: Request, next: Next| {
        require(kind, req, next)
    }))
}

async fn require(kind: KindId, req: Request, next: Next) -> Response {
    let action = if req.method() == Method::GET || req.method() == Method::HEAD {
        Action::Read
    } else {
        Action::Write
    };
    let (mut parts, body) = req.into_parts();
    let owner = axum::extract::RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "name")
                .map(|(_, v)| v.to_owned())
        });
    let who = parts.extensions.get::<Who>().and_then(|w| w.0.as_ref());
    let owner = if kind == KindId::Token { owner } else { None };
    match access::authorize(who, kind, action, owner.as_deref()) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
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

/// `?limit=N&cursor=C` of a list.
type Pq = Query<PageQuery>;

/// A list held in memory, answered a page at a time in the order of `key`.
fn paged<T: serde::Serialize>(q: &PageQuery, items: Vec<T>, key: impl Fn(&T) -> String) -> Res {
    ok(Page::from_query(q)?.of(items, key, to_value))
}

fn ok(value: Value) -> Res {
    Ok(axum::Json(value).into_response())
}

/// `?force=true` on deletes that would take more with them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}
