//! The pages: the publisher console under `/console` and the developer portal under
//! `/portal`, rendered on the server from templates checked at compile time (every value
//! escaped), with a little script from `/static` for live parts. People sign in with the
//! same names, passwords and back-off as the API; a page is a session cookie (HttpOnly,
//! SameSite=Strict, Secure over HTTPS) plus a CSRF token on every form, and every page and
//! form passes the API's one authorization check ([`access::authorize`]) for what it shows
//! or does. What a role may not do is not offered.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::access::{self, Action, Caller, KindId, Via};
use crate::error::Error;
use crate::{ControlPlane, secrets};

mod api_form;
mod applications;
mod apps;
mod certs;
mod console;
mod editor;
mod lists;
mod portal;
mod users;

type St = State<Arc<ControlPlane>>;

/// The session cookie.
const SESSION: &str = "portico_session";
/// The cookie a sign-in form's CSRF token is checked against (no session yet).
const PRE_SESSION: &str = "portico_signin";

/// The pages of a listener's `side` (the console on the admin side, the portal on the
/// public side, both on one listener) and the files they load.
pub fn router(side: crate::api::Side) -> Router<Arc<ControlPlane>> {
    use crate::api::Side;
    let mut r = Router::new()
        .route("/static/portico.css", get(css))
        .route("/static/portico.js", get(js));
    if side != Side::Public {
        r = r
            .route(
                "/console",
                get(|| async { Redirect::to("/console/gateways") }),
            )
            .route("/console/login", get(login_page).post(login))
            .route("/console/logout", post(logout))
            .route("/console/account", get(account).post(change_password))
            .merge(console::routes())
            .merge(lists::routes())
            .merge(api_form::routes())
            .merge(apps::routes())
            .merge(certs::routes())
            .merge(users::routes());
    }
    if side != Side::Admin {
        r = r
            .route("/portal/logout", post(logout))
            .route("/portal/login", get(login_page).post(login))
            .route("/portal/account", get(account).post(change_password))
            .merge(portal::routes())
            .merge(applications::routes());
    }
    if side == Side::Admin {
        // The portal is on the public listener: the console's link goes there.
        r = r
            .route("/portal", get(to_portal))
            .route("/portal/{*rest}", get(to_portal));
    }
    r.layer(axum::middleware::map_response(secure_headers))
}

/// A portal page asked of the admin listener: the same page on the portal's origin.
async fn to_portal(State(st): St, uri: axum::http::Uri) -> Response {
    let origin = st.config.portal_origin.as_deref().unwrap_or_default();
    let path = uri.path_and_query().map_or("/portal", |p| p.as_str());
    Redirect::temporary(&format!("{origin}{path}")).into_response()
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/portico.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/portico.js"),
    )
        .into_response()
}

/// Headers every page carries: scripts and styles from this origin only (no inline
/// script), never framed, no referrer beyond this origin, never cached.
async fn secure_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src *; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// A cookie's value from the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The CSRF token of a session: bound to its secret, so no other site can know it.
fn csrf_for(secret: &str) -> String {
    let d = Sha256::digest(format!("portico csrf:{secret}").as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether an API error's field path (`endpoints[1].address`) is about form field `field`.
pub(crate) fn under(path: &str, field: &str) -> bool {
    path.strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['[', '.']))
}

/// An error as one line for a page's alert: each field's problem with its path, or what
/// the API would answer (never a database's or the server's own failure text).
pub(crate) fn error_text(e: Error) -> String {
    match e {
        Error::Invalid(fs) => fs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        other => other.public_message(),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    crate::api::constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// Who is looking at a page, from the session cookie (anonymous without one). As a
/// handler's argument it answers a failed lookup with an error page.
pub(crate) struct Viewer {
    /// The signed-in caller.
    pub(crate) caller: Option<Caller>,
    /// The CSRF token of the session (empty without one).
    pub(crate) csrf: String,
    /// On a portal page (else a console page): which header it shows.
    pub(crate) portal: bool,
}

impl axum::extract::FromRequestParts<Arc<ControlPlane>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &Arc<ControlPlane>,
    ) -> Result<Self, Response> {
        let portal = parts.uri.path().starts_with("/portal");
        Self::of(st, &parts.headers, portal)
            .await
            .map_err(|e| error_page(Self::anonymous(portal).nav(), e))
    }
}

impl Viewer {
    /// Nobody signed in.
    pub(crate) fn anonymous(portal: bool) -> Self {
        Self {
            caller: None,
            csrf: String::new(),
            portal,
        }
    }

    /// The viewer of a request's cookies.
    pub(crate) async fn of(
        st: &ControlPlane,
        headers: &HeaderMap,
        portal: bool,
    ) -> Result<Self, Error> {
        let Some(secret) = cookie(headers, SESSION) else {
            return Ok(Self::anonymous(portal));
        };
        let holder = st
            .store
            .token_holder(&secrets::hash(secret), st.config.session_idle)
            .await?;
        let caller = holder.filter(|h| h.via == Via::Session).map(|h| Caller {
            name: h.name,
            roles: h.roles,
            via: h.via,
            token_id: Some(h.id),
        });
        Ok(Self {
            csrf: if caller.is_some() {
                csrf_for(secret)
            } else {
                String::new()
            },
            caller,
            portal,
        })
    }

    /// The header of the viewer's pages.
    pub(crate) fn nav(&self) -> Nav {
        if self.portal {
            Nav::portal(self)
        } else {
            Nav::console(self)
        }
    }

    /// The one authorization check for a page: refused, the page that says why (sign in
    /// when nobody is).
    pub(crate) fn require(&self, kind: KindId, action: Action) -> Result<(), Box<Response>> {
        access::authorize(self.caller.as_ref(), kind, action, None)
            .map_err(|e| Box::new(self.denied(e)))
    }

    /// A form that changes something: the one check, then the session's CSRF token.
    pub(crate) fn require_form(
        &self,
        kind: KindId,
        action: Action,
        form: &Fields,
    ) -> Result<(), Box<Response>> {
        self.require(kind, action)?;
        self.check_csrf(form.get("csrf"))
            .map_err(|e| Box::new(self.denied(e)))
    }

    /// An error as the page that says why (sign in when nobody is).
    pub(crate) fn denied(&self, e: Error) -> Response {
        match e.status() {
            StatusCode::UNAUTHORIZED => Redirect::to(self.nav().signin).into_response(),
            status => refusal(self.nav(), status, e.public_message()),
        }
    }

    /// Runs a write as the viewer: the audit log names them (`anonymous` without a session).
    pub(crate) async fn act<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let actor = self
            .caller
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), Caller::actor);
        crate::store::ACTOR.scope(actor, f).await
    }

    /// The page may show `kind` for `action`: the API's one check.
    pub(crate) fn may(&self, kind: KindId, action: Action) -> bool {
        access::authorize(self.caller.as_ref(), kind, action, None).is_ok()
    }

    /// A form's CSRF token is this session's.
    pub(crate) fn check_csrf(&self, sent: &str) -> Result<(), Error> {
        if self.caller.is_some() && same(sent, &self.csrf) {
            Ok(())
        } else {
            Err(stale_form())
        }
    }
}

/// A form without this session's CSRF token.
pub(crate) fn stale_form() -> Error {
    Error::Forbidden(
        "the form is out of date or came from another site: open the page again".into(),
    )
}

/// A posted form's fields, repeated ones included (a form that does not read has none).
pub(crate) struct Fields(Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self(
            serde_urlencoded::from_bytes(&body).unwrap_or_default(),
        ))
    }
}

impl Fields {
    /// A field's (first) value, empty when absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of a repeated field.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What every page's header shows.
pub(crate) struct Nav {
    area: &'static str,
    home: &'static str,
    links: Vec<(&'static str, &'static str)>,
    user: Option<String>,
    csrf: String,
    signin: &'static str,
    signout: &'static str,
}

impl Nav {
    /// The console's header for `v`: only the sections its roles may read.
    pub(crate) fn console(v: &Viewer) -> Self {
        let mut links = Vec::new();
        for (kind, href, label) in [
            (KindId::Gateway, "/console/gateways", "Gateways"),
            (KindId::Api, "/console/apis", "APIs"),
            (KindId::Service, "/console/services", "Services"),
            (KindId::App, "/console/apps", "Apps"),
            (KindId::Certificate, "/console/certificates", "Certificates"),
            (KindId::Consumer, "/console/consumers", "Consumers"),
            (KindId::Tier, "/console/tiers", "Tiers"),
            (KindId::User, "/console/users", "Users"),
            (KindId::Role, "/console/roles", "Roles"),
            (KindId::Audit, "/console/audit", "Audit"),
        ] {
            if v.may(kind, Action::Read) {
                links.push((href, label));
            }
        }
        links.push(("/portal", "Portal"));
        Self {
            area: "console",
            home: "/console",
            links,
            user: v.caller.as_ref().map(|c| c.name.clone()),
            csrf: v.csrf.clone(),
            signin: "/console/login",
            signout: "/console/logout",
        }
    }

    /// The portal's header.
    pub(crate) fn portal(v: &Viewer) -> Self {
        let mut links = vec![("/portal", "APIs")];
        if v.caller.is_some() {
            links.push(("/portal/applications", "Applications"));
        } else {
            links.push(("/portal/signup", "Sign up"));
        }
        Self {
            area: "portal",
            home: "/portal",
            links,
            user: v.caller.as_ref().map(|c| c.name.clone()),
            csrf: v.csrf.clone(),
            signin: "/portal/login",
            signout: "/portal/logout",
        }
    }
}

/// A rendered page.
pub(crate) fn page(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page did not render").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    nav: Nav,
    heading: String,
    message: String,
}

/// An error as a page: sign in for 401, the message otherwise (never a stored secret:
/// errors say what is wrong, not what is stored).
pub(crate) fn error_page(nav: Nav, e: Error) -> Response {
    let status = e.status();
    if status == StatusCode::UNAUTHORIZED {
        return Redirect::to(nav.signin).into_response();
    }
    let heading = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let message = match status {
        // In general terms, and logged with its detail.
        s if s.is_server_error() => e.public_message(),
        _ => heading.to_owned(),
    };
    page(
        status,
        &MessagePage {
            nav,
            heading: heading.into(),
            message,
        },
    )
}

/// An error with its own message as a page.
pub(crate) fn refusal(nav: Nav, status: StatusCode, message: String) -> Response {
    let heading = if status == StatusCode::FORBIDDEN {
        "Not allowed"
    } else {
        "That did not work"
    };
    page(
        status,
        &MessagePage {
            nav,
            heading: heading.into(),
            message,
        },
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    action: &'static str,
    csrf: String,
    next: String,
    name: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where a sign-in may lead: a page of this site, never another origin.
fn safe_next(next: Option<&str>, portal: bool) -> String {
    match next {
        Some(n)
            if (n.starts_with("/console") || n.starts_with("/portal"))
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_owned()
        }
        _ if portal => "/portal".into(),
        _ => "/console/gateways".into(),
    }
}

fn is_portal(uri: &axum::http::Uri) -> bool {
    uri.path().starts_with("/portal")
}

fn login_view(
    portal: bool,
    csrf: String,
    next: String,
    name: String,
    error: Option<String>,
) -> LoginPage {
    LoginPage {
        nav: Viewer::anonymous(portal).nav(),
        action: if portal {
            "/portal/login"
        } else {
            "/console/login"
        },
        csrf,
        next,
        name,
        error,
    }
}

/// A page whose form is signed by a new pre-session token: `view` puts the token in the
/// form, and the same token goes into the pre-session cookie that the post must match.
fn form_page<T: Template>(
    st: &crate::ControlPlane,
    status: StatusCode,
    view: impl FnOnce(String) -> T,
) -> Response {
    let token = secrets::generate("");
    let mut resp = page(status, &view(token.clone()));
    set_cookie(st, &mut resp, PRE_SESSION, &token, 600);
    resp
}

async fn login_page(State(st): St, uri: axum::http::Uri, Query(q): Query<NextQuery>) -> Response {
    let portal = is_portal(&uri);
    form_page(&st, StatusCode::OK, |csrf| {
        login_view(
            portal,
            csrf,
            safe_next(q.next.as_deref(), portal),
            String::new(),
            None,
        )
    })
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: String,
}

/// Sets a cookie for the whole site (`max_age` 0 removes it): HttpOnly, SameSite=Strict,
/// and Secure whenever the control plane serves HTTPS (read here, so no caller can forget it).
fn set_cookie(
    st: &crate::ControlPlane,
    resp: &mut Response,
    name: &str,
    value: &str,
    max_age: i64,
) {
    let c = format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if st.config.tls.is_some() {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

async fn login(
    State(st): St,
    uri: axum::http::Uri,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(f): Form<LoginForm>,
) -> Response {
    let portal = is_portal(&uri);
    let next = safe_next(Some(&f.next), portal);
    let again = |error: String, status: StatusCode| {
        form_page(&st, status, |csrf| {
            login_view(portal, csrf, next.clone(), f.name.clone(), Some(error))
        })
    };
    if !cookie(&headers, PRE_SESSION).is_some_and(|c| same(c, &f.csrf)) {
        return again(
            "The form is out of date: sign in again.".into(),
            StatusCode::FORBIDDEN,
        );
    }
    let addr = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let (name, _) = match crate::api::sign_in(&st, &f.name, &f.password, addr).await {
        Ok(found) => found,
        // One answer whether the name exists or not.
        Err(Error::Unauthorized(_)) => {
            return again(
                "The name or password is wrong.".into(),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(Error::TooManyRequests(m, _)) => return again(m, StatusCode::TOO_MANY_REQUESTS),
        // Said only to who gave the right password.
        Err(Error::Forbidden(m)) => return again(m, StatusCode::FORBIDDEN),
        Err(e) => {
            return error_page(Viewer::anonymous(portal).nav(), e);
        }
    };
    let session = match crate::api::start_session(&st, &name).await {
        Ok(s) => s,
        Err(e) => {
            return error_page(Viewer::anonymous(portal).nav(), e);
        }
    };
    let mut resp = Redirect::to(&next).into_response();
    set_cookie(
        &st,
        &mut resp,
        SESSION,
        &session.0,
        crate::api::SESSION_SECONDS,
    );
    set_cookie(&st, &mut resp, PRE_SESSION, "", 0);
    resp
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(st): St, v: Viewer, Form(f): Form<CsrfForm>) -> Response {
    if let Err(e) = v.check_csrf(&f.csrf) {
        return error_page(v.nav(), e);
    }
    if let Some(c) = &v.caller
        && let Some(id) = &c.token_id
        && let Err(e) = st.store.revoke_user_token(&c.name, id).await
    {
        return error_page(v.nav(), e);
    }
    let mut resp = Redirect::to(v.nav().signin).into_response();
    set_cookie(&st, &mut resp, SESSION, "", 0);
    resp
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    action: &'static str,
    name: String,
    roles: String,
    error: Option<String>,
    current_error: Option<String>,
    password_error: Option<String>,
}

/// The signed-in viewer's account page (`error`: why the last change was refused).
fn account_page(v: &Viewer, error: Option<Error>) -> Response {
    let Some(c) = &v.caller else {
        return Redirect::to(v.nav().signin).into_response();
    };
    let status = error.as_ref().map_or(StatusCode::OK, Error::status);
    let (mut general, mut current_error, mut password_error) = (None, None, None);
    match error {
        Some(Error::Invalid(fields)) => {
            for f in fields {
                let slot = if f.path == "current_password" {
                    &mut current_error
                } else {
                    &mut password_error
                };
                *slot = Some(f.message.clone());
            }
        }
        Some(Error::Forbidden(m)) if m.contains("current password") => current_error = Some(m),
        Some(e) => general = Some(e.public_message()),
        None => {}
    }
    page(
        status,
        &AccountPage {
            nav: v.nav(),
            action: if v.portal {
                "/portal/account"
            } else {
                "/console/account"
            },
            name: c.name.clone(),
            roles: c.roles.join(", "),
            error: general,
            current_error,
            password_error,
        },
    )
}

async fn account(v: Viewer) -> Response {
    account_page(&v, None)
}

/// Changing one's own password: every session ends, so the next page is the sign-in.
async fn change_password(
    State(st): St,
    v: Viewer,
    ext: axum::http::Extensions,
    f: Fields,
) -> Response {
    let Some(c) = &v.caller else {
        return Redirect::to(v.nav().signin).into_response();
    };
    if let Err(e) = v.check_csrf(f.get("csrf")) {
        return v.denied(e);
    }
    let addr = ext
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let done = v
        .act(crate::api::set_password(
            &st,
            c,
            &c.name,
            Some(f.get("current_password")),
            f.get("password"),
            addr,
        ))
        .await;
    match done {
        Ok(_) => {
            let mut resp = Redirect::to(v.nav().signin).into_response();
            set_cookie(&st, &mut resp, SESSION, "", 0);
            resp
        }
        Err(e) => account_page(&v, Some(e)),
    }
}
