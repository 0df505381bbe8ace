//! `POST /api/v1/apply`: a whole document of objects of every kind (or one object alone),
//! checked object by object with the rules of each kind's own endpoint, then written by
//! [`Store::apply`](crate::Store::apply) in one transaction that checks every reference and
//! recompiles every gateway. `?dry_run=true` runs exactly the same path and rolls back;
//! `?prune=true` also deletes stored objects of the kinds the document names that it does
//! not name. The body is JSON, or TOML with `Content-Type: application/toml`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use portico_model::apply::{Document, Kind};
use portico_model::{FieldError, Format};
use serde::Deserialize;
use serde_json::json;

use crate::error::Error;
use crate::store::{Action, ApplyOptions};
use crate::{ControlPlane, access};

/// How messages name objects of a kind.
pub(crate) fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Api => "API",
        other => other.word(),
    }
}

/// The query of `POST /api/v1/apply`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ApplyQuery {
    /// Check everything, change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Delete what the document does not name, of the kinds it names.
    #[serde(default)]
    prune: bool,
}

/// `POST /api/v1/apply`: answers the plan, `{"items": [{kind, name, action, changes}], ...}`.
pub(crate) async fn apply(
    State(st): State<Arc<ControlPlane>>,
    who: crate::api::Who,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Error> {
    let toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("toml"));
    let format = if toml { Format::Toml } else { Format::Json };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::BadRequest("the document must be UTF-8 (TOML or JSON)".into()))?;
    let doc =
        Document::parse(text, format).map_err(|e| crate::api::unreadable("the document", e))?;
    // Every kind the document writes (or prunes) is checked as if written on its own.
    for kind in Kind::ALL {
        if !doc.names(kind).is_empty() {
            access::authorize(who.0.as_ref(), audited(kind), access::Action::Write, None)?;
        }
    }
    let mut fields = problems(&st, &doc);
    fields.extend(unknown_roles(&st, &doc).await?);
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let opts = ApplyOptions {
        prune: q.prune,
        dry_run: q.dry_run,
    };
    let done = st.store.apply(&doc, opts).await?;
    for gid in &done.deleted_gateways {
        st.store.wake(*gid).await;
    }
    if !done.orphans.is_empty() {
        st.sweep_files(done.orphans).await;
    }
    let count = |a: Action| done.items.iter().filter(|i| i.action == a).count();
    if !q.dry_run {
        tracing::info!(
            created = count(Action::Created),
            updated = count(Action::Updated),
            deleted = count(Action::Deleted),
            "document applied"
        );
    }
    Ok(axum::Json(json!({
        "dry_run": q.dry_run,
        "prune": q.prune,
        "created": count(Action::Created),
        "updated": count(Action::Updated),
        "unchanged": count(Action::Unchanged),
        "deleted": count(Action::Deleted),
        "items": done.items,
    }))
    .into_response())
}

/// The kind the access rules and the audit log name for a kind of document item.
pub(crate) fn audited(of: Kind) -> access::KindId {
    use access::KindId as K;
    match of {
        Kind::Gateway => K::Gateway,
        Kind::Service => K::Service,
        Kind::Tier => K::Tier,
        Kind::Consumer | Kind::Subscription => K::Consumer,
        Kind::Route => K::Route,
        Kind::Api => K::Api,
        Kind::App => K::App,
        Kind::Certificate => K::Certificate,
    }
}

/// Roles named by visibility rules that do not exist.
async fn unknown_roles(st: &ControlPlane, doc: &Document) -> Result<Vec<FieldError>, Error> {
    let mut out = Vec::new();
    for (i, g) in doc.gateways.iter().enumerate() {
        for f in crate::api::kind::gateway_role_problems(st, g).await? {
            out.push(FieldError::new(
                doc.path(Kind::Gateway, i, &f.path),
                format!("gateway `{}`: {}", g.name, f.message),
            ));
        }
    }
    for (i, a) in doc.apis.iter().enumerate() {
        for f in st
            .store
            .unknown_roles(&a.visible_roles, "visible_roles")
            .await?
        {
            out.push(FieldError::new(
                doc.path(Kind::Api, i, &f.path),
                format!("API `{}`: {}", a.id(), f.message),
            ));
        }
    }
    Ok(out)
}

/// Each object's own problems, found by the rules its kind's endpoint uses, and objects
/// named twice; every path is the document's, every message names the object.
fn problems(st: &ControlPlane, doc: &Document) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut add = |kind: Kind, i: usize, fields: Vec<FieldError>| {
        let name = doc.names(kind).into_iter().nth(i).unwrap_or_default();
        out.extend(fields.into_iter().map(|f| {
            FieldError::new(
                doc.path(kind, i, &f.path),
                format!("{} `{name}`: {}", label(kind), f.message),
            )
        }));
    };
    let own = |r: Result<(), portico_model::Error>| r.err().map(|e| e.field_errors());
    for (i, g) in doc.gateways.iter().enumerate() {
        add(Kind::Gateway, i, crate::api::gateway_problems(st, g));
    }
    for (i, s) in doc.services.iter().enumerate() {
        add(Kind::Service, i, crate::api::service_problems(s));
    }
    for (i, t) in doc.tiers.iter().enumerate() {
        add(Kind::Tier, i, crate::api::tier_problems(t));
    }
    for (i, a) in doc.apis.iter().enumerate() {
        add(Kind::Api, i, own(a.validate()).unwrap_or_default());
    }
    for (i, c) in doc.consumers.iter().enumerate() {
        add(Kind::Consumer, i, own(c.validate()).unwrap_or_default());
    }
    for (i, r) in doc.routes.iter().enumerate() {
        add(Kind::Route, i, own(r.validate()).unwrap_or_default());
    }
    for (i, a) in doc.apps.iter().enumerate() {
        add(Kind::App, i, own(a.validate()).unwrap_or_default());
    }
    for (i, s) in doc.subscriptions.iter().enumerate() {
        let mut fields = Vec::new();
        for (field, value) in [("consumer", &s.consumer), ("api", &s.api)] {
            if value.trim().is_empty() {
                fields.push(FieldError::new(field, "give a name"));
            }
        }
        add(Kind::Subscription, i, fields);
    }
    for (i, c) in doc.certificates.iter().enumerate() {
        let mut fields = Vec::new();
        if c.name.is_empty() || c.name.len() > 64 {
            fields.push(FieldError::new("name", "1 to 64 characters"));
        }
        for (j, h) in c.hosts.iter().enumerate() {
            if let Err(m) = portico_model::validate::check_host(h, true) {
                fields.push(FieldError::new(format!("hosts[{j}]"), m));
            }
        }
        add(Kind::Certificate, i, fields);
    }
    for kind in Kind::ALL {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, name) in doc.names(kind).into_iter().enumerate() {
            let first = *seen.entry(name.to_ascii_lowercase()).or_insert(i);
            if first != i {
                out.push(FieldError::new(
                    doc.path(kind, i, ""),
                    format!(
                        "{} `{name}` is in the document twice (also at {}; names are case-insensitive)",
                        label(kind),
                        doc.path(kind, first, "")
                    ),
                ));
            }
        }
    }
    out
}
