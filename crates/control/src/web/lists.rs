//! The console's lists of the other kinds (services, routes, consumers, tiers, apps, roles,
//! the audit log): one page drawn from the same calls as the API's lists,
//! with each kind's columns declared once, paged like the API.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use super::{Nav, St, Viewer, error_page, page};
use crate::access::{Action, KindId};
use crate::api::kind::{Apps, Kind, Spec};
use crate::error::Error;
use crate::page::{Page, PageQuery};

/// The list pages.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    use portico_model::{ConsumerSpec, RouteSpec, Service, Tier};
    let r = kind_pages::<Spec<Service>>(axum::Router::new(), "/console/services");
    let r = kind_pages::<Spec<RouteSpec>>(r, "/console/routes");
    let r = kind_pages::<Spec<ConsumerSpec>>(r, "/console/consumers");
    let r = kind_pages::<Spec<Tier>>(r, "/console/tiers");
    kind_pages::<Apps>(r, "/console/apps")
        .route("/console/roles", get(roles).post(create_role))
        .route("/console/audit", get(audit))
}

/// A kind's list at `base`, with its pages to create and edit one.
fn kind_pages<K: Kind>(
    r: axum::Router<std::sync::Arc<crate::ControlPlane>>,
    base: &'static str,
) -> axum::Router<std::sync::Arc<crate::ControlPlane>>
where
    K::Spec: serde::Serialize,
{
    super::editor::editable::<K>(r.route(base, get(kind_page::<K>)), base)
}

/// A list's heading, where it is, and its columns: header and JSON pointer into an item as
/// the API shows it.
struct Columns {
    title: &'static str,
    path: &'static str,
    empty: &'static str,
    columns: &'static [(&'static str, &'static str)],
}

/// Each kind's list, declared once.
fn columns(kind: KindId) -> Option<Columns> {
    let c = |title, path, empty, columns| {
        Some(Columns {
            title,
            path,
            empty,
            columns,
        })
    };
    match kind {
        KindId::Service => c(
            "Services",
            "/console/services",
            "No service yet: `portico services create`.",
            &[
                ("Name", "/spec/name"),
                ("Protocol", "/spec/protocol"),
                ("Endpoints", "/spec/endpoints"),
                ("Balancing", "/spec/load_balancing"),
                ("Version", "/version"),
            ],
        ),
        KindId::Route => c(
            "Routes",
            "/console/routes",
            "No route yet: `portico routes create`.",
            &[
                ("Name", "/spec/name"),
                ("Gateways", "/spec/gateways"),
                ("Matches", "/spec/route/matches"),
                ("Version", "/version"),
            ],
        ),
        KindId::Consumer => c(
            "Consumers",
            "/console/consumers",
            "No consumer yet: subscribers make applications in the portal.",
            &[
                ("Name", "/spec/name"),
                ("Owner", "/spec/owner"),
                ("Tier", "/spec/tier"),
                ("Blocked", "/spec/blocked"),
            ],
        ),
        KindId::Tier => c(
            "Tiers",
            "/console/tiers",
            "No tier yet: `portico tiers create NAME --limit N`.",
            &[
                ("Name", "/spec/name"),
                ("Limit", "/spec/limit"),
                ("Per", "/spec/per"),
                ("Burst", "/spec/burst"),
            ],
        ),
        KindId::App => c(
            "Apps",
            "/console/apps",
            "No app yet: `portico apps create`.",
            &[
                ("Slug", "/spec/slug"),
                ("Name", "/spec/name"),
                ("Description", "/spec/description"),
                ("Version", "/version"),
            ],
        ),
        KindId::Role => c(
            "Roles",
            "/console/roles",
            "",
            &[
                ("Name", "/name"),
                ("Description", "/description"),
                ("Built in", "/builtin"),
            ],
        ),
        KindId::Audit => c(
            "Audit log",
            "/console/audit",
            "Nothing changed yet.",
            &[
                ("When", "/at"),
                ("Who", "/actor"),
                ("Did", "/action"),
                ("Kind", "/kind"),
                ("Object", "/object"),
                ("Version", "/after_version"),
            ],
        ),
        _ => None,
    }
}

#[derive(Template)]
#[template(path = "console/list.html")]
struct ListPage {
    nav: Nav,
    title: &'static str,
    empty: &'static str,
    headers: Vec<&'static str>,
    /// Each row's cells, and its key when it can be edited here.
    rows: Vec<(Vec<String>, Option<String>)>,
    /// The list's kinds may be created and edited here by this viewer.
    can_write: bool,
    /// The roles list, to an admin: its form to create one.
    role_form: bool,
    /// Each row's first cell links to the item's own page (`path/KEY`).
    own_pages: bool,
    next: Option<String>,
    path: &'static str,
}

/// A cell: text as is, numbers and flags written out, lists joined, objects as compact JSON;
/// times (`at`, `not_after`, `created_at`) as UTC.
fn cell(pointer: &str, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if pointer.ends_with("/at") || pointer.ends_with("not_after") => {
            n.as_i64().map_or_else(|| n.to_string(), utc)
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell("", Some(x)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        // An endpoint or a named thing by its address or name; anything else as JSON.
        Some(Value::Object(o)) => ["address", "name"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str))
            .map_or_else(|| Value::Object(o.clone()).to_string(), str::to_owned),
        Some(other) => other.to_string(),
    }
}

/// Unix seconds as `2026-01-02 03:04:05 UTC`.
pub(super) fn utc(secs: i64) -> String {
    format!("{} UTC", portico_model::units::utc(secs))
}

/// Draws `kind`'s list from an API-shaped answer (`{items, next}`).
/// `editable`: the list's items are created and edited on the console's editor pages.
fn list_page(v: &Viewer, kind: KindId, editable: bool, answer: &Value) -> Response {
    let Some(c) = columns(kind) else {
        return error_page(v.nav(), Error::NotFound("no such list".into()));
    };
    let rows = answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let key = item
                .pointer("/spec/slug")
                .or_else(|| item.pointer("/spec/name"))
                .and_then(Value::as_str)
                .filter(|_| editable)
                .map(str::to_owned);
            let cells = c
                .columns
                .iter()
                .map(|(_, p)| cell(p, item.pointer(p)))
                .collect();
            (cells, key)
        })
        .collect();
    page(
        StatusCode::OK,
        &ListPage {
            nav: v.nav(),
            title: c.title,
            empty: c.empty,
            headers: c.columns.iter().map(|(h, _)| *h).collect(),
            rows,
            can_write: editable && v.may(kind, Action::Write),
            role_form: kind == KindId::Role && v.may(KindId::Role, Action::Write),
            own_pages: kind == KindId::App,
            next: answer["next"].as_str().map(str::to_owned),
            path: c.path,
        },
    )
}

/// The one check, then the list.
async fn listed(
    v: &Viewer,
    kind: KindId,
    editable: bool,
    answer: impl std::future::Future<Output = Result<Value, Error>>,
) -> Response {
    if let Err(r) = v.require(kind, Action::Read) {
        return *r;
    }
    match answer.await {
        Ok(a) => list_page(v, kind, editable, &a),
        Err(e) => error_page(v.nav(), e),
    }
}

fn json<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or_default()
}

async fn kind_page<K: Kind>(State(st): St, v: Viewer, Query(q): Query<PageQuery>) -> Response {
    let answer = async {
        let page = Page::from_query(&q)?;
        let items = K::list(&st, &page).await?;
        Ok(page.answer(
            items
                .iter()
                .map(|r| (crate::store::Keyed::key(r), json(r)))
                .collect(),
        ))
    };
    listed(&v, K::KIND, true, answer).await
}

async fn roles(State(st): St, v: Viewer, Query(q): Query<PageQuery>) -> Response {
    let answer = async {
        let page = Page::from_query(&q)?;
        let roles = st.store.roles().await?;
        Ok(page.of(roles, |r| r.name.to_ascii_lowercase(), json))
    };
    listed(&v, KindId::Role, false, answer).await
}

async fn audit(State(st): St, v: Viewer, Query(q): Query<PageQuery>) -> Response {
    let answer = async {
        let page = Page::from_query(&q)?;
        let rows = st
            .store
            .audit(&crate::store::AuditFilter::default(), &page)
            .await?;
        Ok(page.answer(rows.iter().map(|(k, r)| (k.clone(), json(r))).collect()))
    };
    listed(&v, KindId::Audit, false, answer).await
}

/// A role of the operator's own, from the roles page's form: the API's check; a refusal is
/// the page that says why.
async fn create_role(State(st): St, v: Viewer, f: super::Fields) -> Response {
    if let Err(r) = v.require_form(KindId::Role, Action::Write, &f) {
        return *r;
    }
    let done = v
        .act(crate::api::add_role(
            &st,
            f.get("name").trim(),
            f.get("description").trim(),
        ))
        .await;
    match done {
        Ok(_) => axum::response::Redirect::to("/console/roles").into_response(),
        Err(e) => v.denied(e),
    }
}
