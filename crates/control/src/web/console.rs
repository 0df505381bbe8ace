//! The publisher console: gateways (the link form for admins, each gateway's nodes live).

use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use portico_model::{GatewayKind, GatewaySpec, Listener, ListenerProtocol};
use serde::Deserialize;

use super::{Nav, St, Viewer, error_page, page, refusal};
use crate::access::{Action, KindId};
use crate::api::gateways::{LinkRequest, link, node_json};
use crate::error::Error;
use crate::page::Page;
use crate::store::now;

/// The console's routes.
pub(super) fn routes() -> axum::Router<std::sync::Arc<crate::ControlPlane>> {
    axum::Router::new()
        .route("/console/gateways", get(gateways))
        .route("/console/gateways/link", post(link_gateway))
        .route("/console/gateways/{name}", get(gateway))
        .route("/console/gateways/{name}/nodes", get(gateway_nodes))
}

/// A gateway as the list shows it.
struct GatewayRow {
    name: String,
    kind: &'static str,
    allowed: Vec<String>,
    denied: Vec<String>,
    rule: String,
    nodes: String,
}

/// A field of the link form.
struct Field {
    name: &'static str,
    label: &'static str,
    value: String,
    required: bool,
    secret: bool,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/gateways.html")]
struct GatewaysPage {
    nav: Nav,
    gateways: Vec<GatewayRow>,
    can_link: bool,
    link_fields: Vec<Field>,
    link_error: Option<String>,
}

/// What the link form sends: the Toca fields.
#[derive(Debug, Default, Deserialize)]
struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    admin_port: String,
    #[serde(default)]
    listen: String,
    #[serde(default)]
    hosts: String,
    #[serde(default)]
    jwt_secret: String,
    #[serde(default)]
    api_token: String,
}

fn fields(f: &LinkForm, errors: &[(String, String)]) -> Vec<Field> {
    let err = |name: &str| {
        errors
            .iter()
            .filter(|(p, _)| p == name || p.starts_with(&format!("{name}[")))
            .map(|(_, m)| m.clone())
            .reduce(|a, b| format!("{a}; {b}"))
    };
    let or = |v: &str, d: &str| {
        if v.is_empty() {
            d.to_owned()
        } else {
            v.to_owned()
        }
    };
    vec![
        Field {
            name: "name",
            label: "Name",
            value: f.name.clone(),
            required: true,
            secret: false,
            error: err("name"),
        },
        Field {
            name: "type",
            label: "Type",
            value: or(&f.kind, "production"),
            required: true,
            secret: false,
            error: err("type"),
        },
        Field {
            name: "url",
            label: "Admin URL",
            value: f.url.clone(),
            required: false,
            secret: false,
            error: err("url"),
        },
        Field {
            name: "ip",
            label: "IP address",
            value: f.ip.clone(),
            required: false,
            secret: false,
            error: err("ip"),
        },
        Field {
            name: "admin_port",
            label: "Admin port",
            value: or(&f.admin_port, "2020"),
            required: true,
            secret: false,
            error: err("admin_port"),
        },
        Field {
            name: "listen",
            label: "Traffic port",
            value: or(&f.listen, "8080"),
            required: false,
            secret: false,
            error: err("listeners"),
        },
        Field {
            name: "hosts",
            label: "Hosts (comma-separated)",
            value: f.hosts.clone(),
            required: false,
            secret: false,
            error: err("hosts"),
        },
        // Secrets are never sent back into the page.
        Field {
            name: "jwt_secret",
            label: "JWT secret",
            value: String::new(),
            required: true,
            secret: true,
            error: err("jwt_secret"),
        },
        Field {
            name: "api_token",
            label: "API token",
            value: String::new(),
            required: true,
            secret: true,
            error: err("api_token"),
        },
    ]
}

async fn gateways_page(
    st: &crate::ControlPlane,
    v: &Viewer,
    form: &LinkForm,
    errors: &[(String, String)],
    message: Option<String>,
    status: StatusCode,
) -> Response {
    if let Err(e) = crate::access::authorize(v.caller.as_ref(), KindId::Gateway, Action::Read, None)
    {
        return error_page(Nav::console(v), e);
    }
    let (list, nodes) = match (
        st.store.gateways(&Page::all()).await,
        st.store.all_nodes().await,
    ) {
        (Ok(l), Ok(n)) => (l, n),
        (Err(e), _) | (_, Err(e)) => return error_page(Nav::console(v), e),
    };
    let gateways = list
        .iter()
        .map(|g| {
            let allowed = g.spec.visibility.roles_allowed.clone();
            let denied = g.spec.visibility.roles_denied.clone();
            let rule = match (allowed.is_empty(), denied.is_empty()) {
                (false, true) => "allowed roles".into(),
                (true, false) => "denied roles".into(),
                _ => "allowed and denied roles".into(),
            };
            let count = nodes.get(&g.id()).map_or(0, Vec::len);
            GatewayRow {
                name: g.spec.name.clone(),
                kind: g.spec.kind.as_str(),
                allowed,
                denied,
                rule,
                nodes: if g.builtin {
                    "built in".into()
                } else {
                    count.to_string()
                },
            }
        })
        .collect();
    let can_link = v.may(KindId::Gateway, Action::Write);
    page(
        status,
        &GatewaysPage {
            nav: Nav::console(v),
            gateways,
            can_link,
            link_fields: fields(form, errors),
            link_error: message,
        },
    )
}

async fn gateways(State(st): St, headers: HeaderMap) -> Response {
    match Viewer::of(&st, &headers).await {
        Ok(v) => gateways_page(&st, &v, &LinkForm::default(), &[], None, StatusCode::OK).await,
        Err(e) => error_page(
            Nav::console(&Viewer {
                caller: None,
                csrf: String::new(),
            }),
            e,
        ),
    }
}

fn kind_of(s: &str) -> Option<GatewayKind> {
    match s {
        "production" => Some(GatewayKind::Production),
        "sandbox" => Some(GatewayKind::Sandbox),
        "hybrid" => Some(GatewayKind::Hybrid),
        _ => None,
    }
}

/// The link form: the API's link, field errors shown beside their fields.
async fn link_gateway(State(st): St, headers: HeaderMap, Form(f): Form<LinkForm>) -> Response {
    let v = match Viewer::of(&st, &headers).await {
        Ok(v) => v,
        Err(e) => {
            return error_page(
                Nav::console(&Viewer {
                    caller: None,
                    csrf: String::new(),
                }),
                e,
            );
        }
    };
    // The one check first: a caller the form is not offered to is refused, whatever it sends.
    if let Err(e) =
        crate::access::authorize(v.caller.as_ref(), KindId::Gateway, Action::Write, None)
    {
        let status = e.status();
        return refusal(Nav::console(&v), status, e.to_string());
    }
    if let Err(e) = v.check_csrf(&f.csrf) {
        return refusal(Nav::console(&v), StatusCode::FORBIDDEN, e.to_string());
    }
    let mut errors = Vec::new();
    let kind = kind_of(&f.kind).unwrap_or_else(|| {
        errors.push((
            "type".to_owned(),
            "production, sandbox or hybrid".to_owned(),
        ));
        GatewayKind::Production
    });
    let admin_port = match f.admin_port.trim() {
        "" => None,
        p => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                errors.push(("admin_port".into(), "a port number from 1 to 65535".into()));
                None
            }
        },
    };
    let listeners = match f.listen.trim() {
        "" => Vec::new(),
        p => match p.parse::<u16>() {
            Ok(p) if p > 0 => vec![Listener::new(p, ListenerProtocol::Http)],
            _ => {
                errors.push(("listeners".into(), "a port number from 1 to 65535".into()));
                Vec::new()
            }
        },
    };
    if !errors.is_empty() {
        return gateways_page(&st, &v, &f, &errors, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let req = LinkRequest {
        name: f.name.trim().to_owned(),
        kind,
        description: String::new(),
        url: some(&f.url),
        ip: some(&f.ip),
        admin_port,
        admin_ca_pem: None,
        jwt_secret: f.jwt_secret.clone(),
        api_token: f.api_token.clone(),
        hosts: f
            .hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        listeners,
        verify: true,
    };
    let actor = v
        .caller
        .as_ref()
        .map_or_else(String::new, crate::access::Caller::actor);
    let done = crate::store::ACTOR.scope(actor, link(&st, req)).await;
    match done {
        Ok((g, _)) => Redirect::to(&format!("/console/gateways/{}", g.spec.name)).into_response(),
        Err(Error::Invalid(fs)) => {
            let errors: Vec<(String, String)> =
                fs.into_iter().map(|f| (f.path, f.message)).collect();
            gateways_page(&st, &v, &f, &errors, None, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => {
            let status = e.status();
            gateways_page(&st, &v, &f, &[], Some(e.to_string()), status).await
        }
    }
}

/// A node as the page shows it.
struct NodeRow {
    id: String,
    host: String,
    applied: String,
    state: String,
}

#[derive(Template)]
#[template(path = "console/gateway.html")]
struct GatewayPage {
    nav: Nav,
    name: String,
    kind: &'static str,
    version: u64,
    nodes: Vec<NodeRow>,
}

/// A gateway's spec, snapshot version and nodes as the API shows them, when the viewer
/// may read gateways.
async fn gateway_state(
    st: &crate::ControlPlane,
    v: &Viewer,
    name: &str,
) -> Result<(GatewaySpec, u64, Vec<serde_json::Value>), Error> {
    crate::access::authorize(v.caller.as_ref(), KindId::Gateway, Action::Read, None)?;
    let g = st.store.gateway(name).await?;
    let gid = st.store.gateway_id(name).await?;
    let current = st.store.snapshot_version(gid).await?;
    let t = now();
    let nodes = st
        .store
        .nodes(gid)
        .await?
        .iter()
        .map(|n| node_json(st, current, n, t))
        .collect();
    Ok((g.spec, current, nodes))
}

async fn gateway(
    State(st): St,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let v = match Viewer::of(&st, &headers).await {
        Ok(v) => v,
        Err(e) => {
            return error_page(
                Nav::console(&Viewer {
                    caller: None,
                    csrf: String::new(),
                }),
                e,
            );
        }
    };
    match gateway_state(&st, &v, &name).await {
        Ok((spec, version, nodes)) => page(
            StatusCode::OK,
            &GatewayPage {
                nav: Nav::console(&v),
                name: spec.name,
                kind: spec.kind.as_str(),
                version,
                nodes: nodes
                    .iter()
                    .map(|n| NodeRow {
                        id: n["node_id"].as_str().unwrap_or_default().to_owned(),
                        host: n["hostname"].as_str().unwrap_or_default().to_owned(),
                        applied: n["applied_version"]
                            .as_u64()
                            .map_or_else(|| "-".to_owned(), |x| x.to_string()),
                        state: n["state"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect(),
            },
        ),
        Err(e) => error_page(Nav::console(&v), e),
    }
}

/// The rows the gateway page refreshes itself with.
async fn gateway_nodes(
    State(st): St,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let v = match Viewer::of(&st, &headers).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    match gateway_state(&st, &v, &name).await {
        Ok((_, version, nodes)) => {
            axum::Json(serde_json::json!({ "snapshot_version": version, "nodes": nodes }))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}
