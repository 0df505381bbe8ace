//! The portal's applications (a subscriber's consumers): a page of the viewer's own, one
//! created by name, and each one's page with its subscriptions and keys (paged), a chooser
//! of the APIs to subscribe to (a bounded list, searched by name), and keys or client
//! credentials made (shown once), regenerated and revoked, all as the portal API does it.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::portal::{PORTAL_LIMIT, page_of, query};
use super::{Nav, St, Viewer, error_page, page};
use crate::access::{self, Action, KindId};
use crate::error::Error;
use crate::page::{Page, PageQuery};

/// The applications' routes.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route(
            "/portal/applications",
            get(applications).post(create_application),
        )
        .route("/portal/applications/{name}", get(application))
        .route(
            "/portal/applications/{name}/{action}",
            post(application_write),
        )
}

#[derive(Template)]
#[template(path = "portal/applications.html")]
struct ApplicationsPage {
    nav: Nav,
    applications: Vec<String>,
    /// The next page's query.
    next: Option<String>,
    error: Option<String>,
}

/// A page of the viewer's applications by name, as `GET /api/v1/portal/applications`.
async fn applications_page(
    st: &crate::ControlPlane,
    v: &Viewer,
    q: &PageQuery,
    error: Option<Error>,
) -> Response {
    let Some(c) = &v.caller else {
        return axum::response::Redirect::to("/portal/login").into_response();
    };
    let status = error.as_ref().map_or(StatusCode::OK, Error::status);
    let listed = async {
        let page = Page::from_query(&PageQuery {
            limit: Some(q.limit.clone().unwrap_or_else(|| PORTAL_LIMIT.into())),
            cursor: q.cursor.clone(),
        })?;
        let names = st
            .store
            .owned_consumers(&c.name)
            .await?
            .into_iter()
            .map(|r| r.spec.name);
        Ok::<_, Error>(page_of(&page, names, |n| n.to_ascii_lowercase()))
    }
    .await;
    match listed {
        Ok((applications, next)) => page(
            status,
            &ApplicationsPage {
                nav: v.nav(),
                applications,
                next: next.map(|c| {
                    query(&[
                        ("cursor", &c),
                        ("limit", q.limit.as_deref().unwrap_or_default()),
                    ])
                }),
                error: error.map(|e| e.public_message()),
            },
        ),
        Err(e) => error_page(v.nav(), e),
    }
}

/// The applications area is the subscriber's (anonymous viewers sign in first): the
/// same check as the portal API's writes.
async fn applications(State(st): St, v: Viewer, Query(q): Query<PageQuery>) -> Response {
    if let Err(r) = v.require(KindId::Portal, Action::Write) {
        return *r;
    }
    applications_page(&st, &v, &q, None).await
}

async fn create_application(State(st): St, v: Viewer, f: super::Fields) -> Response {
    if let Err(r) = v.require_form(KindId::Portal, Action::Write, &f) {
        return *r;
    }
    let Some(c) = v.caller.clone() else {
        return axum::response::Redirect::to("/portal/login").into_response();
    };
    let spec = portico_model::ConsumerSpec {
        name: f.get("name").trim().to_owned(),
        owner: c.name.clone(),
        description: String::new(),
        tier: None,
        blocked: false,
    };
    if let Err(e) = spec.validate() {
        let e = Error::Invalid(e.field_errors());
        return applications_page(&st, &v, &PageQuery::default(), Some(e)).await;
    }
    let done = v
        .act(st.store.create_owned_consumer(&spec, Some(&c.name)))
        .await;
    match done {
        Ok(_) => axum::response::Redirect::to(&format!("/portal/applications/{}", spec.name))
            .into_response(),
        Err(e) => applications_page(&st, &v, &PageQuery::default(), Some(e)).await,
    }
}

/// A key on an application's page.
struct KeyRow {
    id: String,
    kind: String,
    key_type: String,
    hint: String,
    revoked: bool,
}

/// A secret just made, shown once: an API key, or a client's id and secret.
struct ShownOnce {
    secret: String,
    client_id: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/application.html")]
struct ApplicationPage {
    nav: Nav,
    name: String,
    subscriptions: Vec<String>,
    /// The next page of subscriptions (a query).
    subscriptions_next: Option<String>,
    /// The APIs offered to subscribe to: a bounded list, those whose name contains `find`.
    apis: Vec<(String, String)>,
    /// More APIs match than are listed.
    more_apis: bool,
    find: String,
    /// Every tier the listed APIs offer (the server checks the one chosen against the API).
    tiers: Vec<String>,
    keys: Vec<KeyRow>,
    /// The next page of keys (a query).
    keys_next: Option<String>,
    secret: Option<ShownOnce>,
    notice: Option<String>,
    error: Option<String>,
}

/// An application page's address query: one cursor for each of its lists, the page size,
/// and the chooser's search.
#[derive(Debug, Default, Deserialize)]
struct AppQuery {
    limit: Option<String>,
    subscriptions: Option<String>,
    keys: Option<String>,
    #[serde(default)]
    find: String,
}

impl AppQuery {
    /// The query of the same page with `list`'s cursor at `cursor`.
    fn with(&self, list: &str, cursor: &str) -> String {
        let (mut subs, mut keys) = (
            self.subscriptions.as_deref().unwrap_or_default(),
            self.keys.as_deref().unwrap_or_default(),
        );
        if list == "subscriptions" {
            subs = cursor;
        } else {
            keys = cursor;
        }
        query(&[
            ("subscriptions", subs),
            ("keys", keys),
            ("find", &self.find),
            ("limit", self.limit.as_deref().unwrap_or_default()),
        ])
    }

    /// The page of `list`, checked as the API checks `?limit&cursor`.
    fn page(&self, cursor: Option<&String>) -> Result<Page, Error> {
        Page::from_query(&PageQuery {
            limit: Some(self.limit.clone().unwrap_or_else(|| PORTAL_LIMIT.into())),
            cursor: cursor.cloned(),
        })
    }
}

/// The most APIs the subscribe chooser lists at once.
const CHOOSER: usize = 20;

/// The application when the viewer owns it (admins: any), else not found.
pub(super) async fn owned(st: &crate::ControlPlane, v: &Viewer, name: &str) -> Result<(), Error> {
    let c = v
        .caller
        .as_ref()
        .ok_or_else(|| Error::Unauthorized("sign in".into()))?;
    if c.is_admin() || st.store.owns_consumer(&c.name, name).await? {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "you have no application named `{name}`"
        )))
    }
}

async fn application_page(
    st: &crate::ControlPlane,
    v: &Viewer,
    name: &str,
    q: &AppQuery,
    secret: Option<ShownOnce>,
    notice: Option<String>,
    error: Option<Error>,
) -> Response {
    let status = error.as_ref().map_or(StatusCode::OK, Error::status);
    let built = async {
        owned(st, v, name).await?;
        // Each list a page at a time, keyed as the portal API's lists are.
        let (subs, subscriptions_next) = page_of(
            &q.page(q.subscriptions.as_ref())?,
            st.store.subscriptions(name).await?,
            |s| s.api.clone(),
        );
        let (creds, keys_next) = page_of(
            &q.page(q.keys.as_ref())?,
            st.store.credentials(name).await?,
            |c| format!("{:020}-{}", c.created_at, c.id),
        );
        // The chooser: the first APIs the viewer may see whose name or id holds the search.
        let viewer = access::Viewer::new(v.caller.as_ref());
        let needle = q.find.trim().to_lowercase();
        let chooser = Page {
            after: None,
            limit: CHOOSER,
        };
        let (apis, more) = crate::api::portal::visible_apis(st, viewer, &chooser, |a| {
            needle.is_empty()
                || a.spec.name.to_lowercase().contains(&needle)
                || a.id.contains(&needle)
        })
        .await?;
        Ok::<_, Error>(ApplicationPage {
            nav: v.nav(),
            name: name.to_owned(),
            subscriptions: subs
                .into_iter()
                .map(|s| match s.tier {
                    Some(t) => format!("{} (tier {t})", s.api),
                    None => s.api,
                })
                .collect(),
            subscriptions_next: subscriptions_next.map(|c| q.with("subscriptions", &c)),
            tiers: {
                let mut t: Vec<String> = apis
                    .iter()
                    .flat_map(|a| a.spec.subscription_tiers.iter().cloned())
                    .collect();
                t.sort();
                t.dedup();
                t
            },
            apis: apis
                .into_iter()
                .map(|a| {
                    let label = format!("{} {} ({})", a.spec.name, a.spec.version, a.id);
                    (a.id, label)
                })
                .collect(),
            more_apis: more.is_some(),
            find: q.find.clone(),
            keys: creds
                .into_iter()
                .map(|k| KeyRow {
                    id: k.id,
                    kind: serde_json::to_value(k.kind)
                        .ok()
                        .and_then(|x| x.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    key_type: k.key_type.as_str().to_owned(),
                    hint: k.hint,
                    revoked: k.revoked_at.is_some(),
                })
                .collect(),
            keys_next: keys_next.map(|c| q.with("keys", &c)),
            secret,
            notice,
            error: error.map(|e| e.public_message()),
        })
    }
    .await;
    match built {
        Ok(p) => page(status, &p),
        Err(e) => error_page(v.nav(), e),
    }
}

async fn application(
    State(st): St,
    v: Viewer,
    Path(name): Path<String>,
    Query(q): Query<AppQuery>,
) -> Response {
    if let Err(r) = v.require(KindId::Portal, Action::Write) {
        return *r;
    }
    application_page(&st, &v, &name, &q, None, None, None).await
}

/// Subscribing, making and revoking keys (`subscribe`, `keys`, `revoke`): as the API does
/// it, for the viewer's own applications only, to APIs the viewer may see.
async fn application_write(
    State(st): St,
    v: Viewer,
    Path((name, what)): Path<(String, String)>,
    f: super::Fields,
) -> Response {
    if let Err(r) = v.require_form(KindId::Portal, Action::Write, &f) {
        return *r;
    }
    let (st, name) = (&*st, name.as_str());
    if let Err(e) = owned(st, &v, name).await {
        return error_page(v.nav(), e);
    }
    let done: Result<(Option<ShownOnce>, String), Error> = v
        .act(async {
            match what.as_str() {
                "subscribe" => {
                    let api = f.get("api");
                    let viewer = access::Viewer::new(v.caller.as_ref());
                    let tier =
                        crate::api::portal::offered_tier(st, viewer, api, Some(f.get("tier")))
                            .await?;
                    st.store.subscribe(name, api, tier.as_deref()).await?;
                    Ok((
                        None,
                        match tier {
                            Some(t) => format!("Subscribed to {api} on tier {t}."),
                            None => format!("Subscribed to {api}."),
                        },
                    ))
                }
                "keys" => {
                    let req: crate::api::consumers::KeyRequest =
                        serde_json::from_value(serde_json::json!({
                            "type": f.get("type"),
                            "kind": f.get("kind"),
                        }))
                        .map_err(|_| Error::BadRequest("choose a type and a kind of key".into()))?;
                    let out = crate::api::consumers::issue_key(st, name, req).await?;
                    Ok((shown_once(&out), "Made a new key.".into()))
                }
                "revoke" => {
                    let id = f.get("id");
                    st.store.revoke_credential(name, id).await?;
                    Ok((None, format!("Revoked {id}.")))
                }
                "regenerate" => {
                    let id = f.get("id");
                    let out = crate::api::consumers::regenerate(st, name, id).await?;
                    Ok((
                        shown_once(&out),
                        format!("Replaced {id}: it no longer works."),
                    ))
                }
                other => Err(Error::NotFound(format!(
                    "no action `{other}` on an application's page"
                ))),
            }
        })
        .await;
    let q = AppQuery::default();
    match done {
        Ok((secret, notice)) => {
            application_page(st, &v, name, &q, secret, Some(notice), None).await
        }
        Err(e) => application_page(st, &v, name, &q, None, None, Some(e)).await,
    }
}

/// What a new key or client shows once: the key, or the client id and secret.
fn shown_once(out: &serde_json::Value) -> Option<ShownOnce> {
    let text = |k: &str| out[k].as_str().map(str::to_owned);
    match text("key") {
        Some(key) => Some(ShownOnce {
            secret: key,
            client_id: None,
        }),
        None => Some(ShownOnce {
            secret: text("client_secret")?,
            client_id: Some(text("client_id")?),
        }),
    }
}
