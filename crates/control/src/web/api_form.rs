//! The console's form to create and edit an API: the fields a publisher edits most, each
//! with the API's own error for it beside it; what the form does not show (operations,
//! CORS, IP rules, backend TLS) is kept as it was. Saved through the API's own check and
//! write, so the form can do nothing the API would refuse.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{Fields, Nav, St, Viewer, error_page, page};
use crate::access::{Action, KindId};
use crate::api::kind::{Apis, save};
use crate::error::Error;

/// The form's pages.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route("/console/apis/new", get(new_form).post(create))
        .route("/console/apis/{id}/edit", get(edit_form).post(update))
}

/// One field: its form name, label, value, kind of input, and the API's error for it.
struct Field {
    name: &'static str,
    label: &'static str,
    value: String,
    input: &'static str,
    help: &'static str,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/api_form.html")]
struct FormPage {
    nav: Nav,
    title: String,
    action: String,
    version: String,
    fields: Vec<Field>,
    error: Option<String>,
}

/// The fields shown, in order: form name, label, input, help, and the definition's key.
const SHOWN: &[(&str, &str, &str, &str)] = &[
    ("name", "Name", "text", ""),
    ("version", "Version", "text", "e.g. v1"),
    (
        "context",
        "Context",
        "text",
        "the path it is served under, e.g. /pets/v1",
    ),
    (
        "description",
        "Description",
        "textarea",
        "shown in the developer portal, as text",
    ),
    (
        "production_endpoints",
        "Production endpoints",
        "lines",
        "one URL a line",
    ),
    (
        "sandbox_endpoints",
        "Sandbox endpoints",
        "lines",
        "one URL a line",
    ),
    (
        "hosts",
        "Hosts",
        "list",
        "comma-separated; empty: the gateway's",
    ),
    ("auth", "Authentication", "auth", ""),
    ("tier", "Tier", "text", "a rate-limit tier's name, or empty"),
    (
        "subscription_tiers",
        "Tiers offered to subscribers",
        "list",
        "comma-separated; subscribers choose one in the portal",
    ),
    ("visibility", "Visibility", "visibility", ""),
    (
        "visible_roles",
        "Visible to roles",
        "list",
        "comma-separated; for restricted APIs",
    ),
];

/// The form for `spec` (an API definition as JSON) with `errors` beside their fields.
fn form(
    v: &Viewer,
    title: String,
    action: String,
    version: Option<i64>,
    spec: &Value,
    failed: Option<Error>,
) -> Response {
    let status = failed.as_ref().map_or(StatusCode::OK, Error::status);
    let mut general = None;
    let mut errors: Vec<(String, String)> = Vec::new();
    match failed {
        Some(Error::Invalid(fs)) => {
            errors = fs.into_iter().map(|f| (f.path, f.message)).collect();
        }
        Some(e) => general = Some(e.public_message()),
        None => {}
    }
    let fields = SHOWN
        .iter()
        .map(|(name, label, input, help)| {
            let value = match &spec[*name] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(if *input == "lines" { "\n" } else { ", " }),
                other => other.to_string(),
            };
            // `production_endpoints[1]` and `production_endpoints` both belong to the field.
            let error = errors
                .iter()
                .filter(|(p, _)| super::under(p, name))
                .map(|(p, m)| format!("{p}: {m}"))
                .reduce(|a, b| format!("{a}; {b}"));
            Field {
                name,
                label,
                value,
                input,
                help,
                error,
            }
        })
        .collect();
    // Errors on fields the form does not show are said at the top.
    let elsewhere: Vec<String> = errors
        .iter()
        .filter(|(p, _)| !SHOWN.iter().any(|(n, ..)| super::under(p, n)))
        .map(|(p, m)| format!("{p}: {m}"))
        .collect();
    if !elsewhere.is_empty() {
        general = Some(elsewhere.join("; "));
    }
    page(
        status,
        &FormPage {
            nav: v.nav(),
            title,
            action,
            version: version.map(|n| n.to_string()).unwrap_or_default(),
            fields,
            error: general,
        },
    )
}

/// The definition the form describes: `base` (the stored one, or empty) with the form's
/// fields written over it.
fn from_form(base: &Value, f: &Fields) -> Value {
    let mut spec = base.clone();
    if !spec.is_object() {
        spec = json!({});
    }
    for (name, _, input, _) in SHOWN {
        let raw = f.get(name).trim();
        let value = match *input {
            "lines" | "list" => Value::Array(
                raw.split(['\n', ','])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
            _ if raw.is_empty() && matches!(*name, "tier") => Value::Null,
            _ => Value::String(raw.to_owned()),
        };
        spec[*name] = value;
    }
    spec
}

/// The definition as the API reads it, or the reason it cannot be read (said at the top).
fn parse(spec: &Value) -> Result<portico_model::ApiSpec, Error> {
    serde_json::from_value(spec.clone())
        .map_err(|e| Error::BadRequest(format!("the definition cannot be read: {e}")))
}

async fn new_form(v: Viewer) -> Response {
    if let Err(r) = v.require(KindId::Api, Action::Write) {
        return *r;
    }
    let blank = json!({"auth": "none", "visibility": "public"});
    form(
        &v,
        "New API".into(),
        "/console/apis/new".into(),
        None,
        &blank,
        None,
    )
}

async fn create(State(st): St, v: Viewer, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::Api, Action::Write, &f) {
        return *r;
    }
    let spec = from_form(&json!({}), &f);
    let saved = async {
        let parsed = parse(&spec)?;
        v.act(save::<Apis>(&st, None, &parsed)).await
    }
    .await;
    match saved {
        Ok(r) => Redirect::to(&format!("/console/apis/{}", r.id)).into_response(),
        Err(e) => form(
            &v,
            "New API".into(),
            "/console/apis/new".into(),
            None,
            &spec,
            Some(e),
        ),
    }
}

async fn edit_form(State(st): St, v: Viewer, Path(id): Path<String>) -> Response {
    if let Err(r) = v.require(KindId::Api, Action::Write) {
        return *r;
    }
    match st.store.api(&id).await {
        Ok(r) => form(
            &v,
            format!("Edit {} {}", r.spec.name, r.spec.version),
            format!("/console/apis/{id}/edit"),
            Some(r.meta.version),
            &serde_json::to_value(&r.spec).unwrap_or_default(),
            None,
        ),
        Err(e) => error_page(v.nav(), e),
    }
}

async fn update(State(st): St, v: Viewer, Path(id): Path<String>, f: Fields) -> Response {
    if let Err(r) = v.require_form(KindId::Api, Action::Write, &f) {
        return *r;
    }
    let stored = match st.store.api(&id).await {
        Ok(r) => r,
        Err(e) => return error_page(v.nav(), e),
    };
    let spec = from_form(&serde_json::to_value(&stored.spec).unwrap_or_default(), &f);
    // The version the form was drawn at: a change made meanwhile is not overwritten.
    let expected = f.get("resource_version").parse::<i64>().unwrap_or(-1);
    let saved = async {
        let parsed = parse(&spec)?;
        v.act(save::<Apis>(&st, Some((&id, expected)), &parsed))
            .await
    }
    .await;
    match saved {
        Ok(r) => Redirect::to(&format!("/console/apis/{}", r.id)).into_response(),
        Err(e) => form(
            &v,
            format!("Edit {} {}", stored.spec.name, stored.spec.version),
            format!("/console/apis/{id}/edit"),
            Some(expected),
            &spec,
            Some(e),
        ),
    }
}
