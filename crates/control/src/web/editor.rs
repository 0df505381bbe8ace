//! Create and edit any kind with a definition (services, routes, consumers, tiers, apps) as
//! its JSON definition, the same document the API and `portico apply` take: saved through
//! the API's check and write, each problem listed with its field path, a change made
//! meanwhile refused rather than overwritten.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::Value;

use super::{Fields, Nav, St, Viewer, error_page, page};
use crate::access::Action;
use crate::api::kind::{Kind, save};
use crate::error::Error;
use crate::store::Keyed;

/// `base/new` and `base/{key}/edit` for kind `K`, its list at `base`.
pub(super) fn editable<K: Kind>(
    r: axum::Router<std::sync::Arc<crate::ControlPlane>>,
    base: &'static str,
) -> axum::Router<std::sync::Arc<crate::ControlPlane>>
where
    K::Spec: serde::Serialize,
{
    r.route(&format!("{base}/new"), get(new_page::<K>).post(create::<K>))
        .route(
            &format!("{base}/{{key}}/edit"),
            get(edit_page::<K>).post(update::<K>),
        )
}

#[derive(Template)]
#[template(path = "console/editor.html")]
struct EditorPage {
    nav: Nav,
    title: String,
    action: String,
    back: String,
    text: String,
    version: String,
    /// `path: message` for each problem.
    problems: Vec<String>,
}

/// The list a page belongs to: its path without `/new` or `/KEY/edit`.
fn list_of(uri: &Uri) -> String {
    let p = uri.path();
    p.strip_suffix("/new")
        .or_else(|| {
            p.strip_suffix("/edit")
                .and_then(|x| x.rsplit_once('/').map(|(a, _)| a))
        })
        .unwrap_or(p)
        .to_owned()
}

fn editor(
    v: &Viewer,
    uri: &Uri,
    title: String,
    text: String,
    version: Option<i64>,
    failed: Option<Error>,
) -> Response {
    let status = failed.as_ref().map_or(StatusCode::OK, Error::status);
    let problems = match failed {
        Some(Error::Invalid(fs)) => fs.iter().map(ToString::to_string).collect(),
        Some(e) => vec![e.public_message()],
        None => Vec::new(),
    };
    page(
        status,
        &EditorPage {
            nav: v.nav(),
            title,
            action: uri.path().to_owned(),
            back: list_of(uri),
            text,
            version: version.map(|n| n.to_string()).unwrap_or_default(),
            problems,
        },
    )
}

async fn new_page<K: Kind>(v: Viewer, uri: Uri) -> Response {
    if let Err(r) = v.require(K::KIND, Action::Write) {
        return *r;
    }
    editor(
        &v,
        &uri,
        title::<K>(None),
        "{\n  \"name\": \"\"\n}".into(),
        None,
        None,
    )
}

/// The definition typed, read as the API reads a body.
fn parse<K: Kind>(text: &str) -> Result<K::Spec, Error> {
    serde_json::from_str(text).map_err(|e| Error::BadRequest(format!("the definition: {e}")))
}

async fn create<K: Kind>(State(st): St, v: Viewer, uri: Uri, f: Fields) -> Response {
    submit::<K>(&st, &v, &uri, None, &f).await
}

async fn edit_page<K: Kind>(State(st): St, v: Viewer, uri: Uri, Path(key): Path<String>) -> Response
where
    K::Spec: serde::Serialize,
{
    if let Err(r) = v.require(K::KIND, Action::Write) {
        return *r;
    }
    match K::get(&st, &key).await {
        Ok(r) => {
            let spec = serde_json::to_value(&r).map_or(Value::Null, |v| v["spec"].clone());
            editor(
                &v,
                &uri,
                title::<K>(Some(&key)),
                serde_json::to_string_pretty(&spec).unwrap_or_default(),
                Some(r.meta().version),
                None,
            )
        }
        Err(e) => error_page(v.nav(), e),
    }
}

async fn update<K: Kind>(
    State(st): St,
    v: Viewer,
    uri: Uri,
    Path(key): Path<String>,
    f: Fields,
) -> Response {
    submit::<K>(&st, &v, &uri, Some(&key), &f).await
}

/// Saves the definition typed as a new one (`key` none) or over `key` at the version the
/// page was drawn at (a change made meanwhile is not overwritten); back to the list, or
/// the editor again with the problems.
async fn submit<K: Kind>(
    st: &crate::ControlPlane,
    v: &Viewer,
    uri: &Uri,
    key: Option<&str>,
    f: &Fields,
) -> Response {
    if let Err(r) = v.require_form(K::KIND, Action::Write, f) {
        return *r;
    }
    let text = f.get("definition");
    let expected = key.map(|_| f.get("resource_version").parse::<i64>().unwrap_or(-1));
    let target = key.zip(expected);
    let saved = async {
        let spec = parse::<K>(text)?;
        v.act(save::<K>(st, target, &spec)).await
    }
    .await;
    match saved {
        Ok(_) => Redirect::to(&list_of(uri)).into_response(),
        Err(e) => editor(v, uri, title::<K>(key), text.to_owned(), expected, Some(e)),
    }
}

/// `New service` or `Edit service orders`.
fn title<K: Kind>(key: Option<&str>) -> String {
    match key {
        None => format!("New {}", K::KIND.as_str()),
        Some(k) => format!("Edit {} {k}", K::KIND.as_str()),
    }
}
