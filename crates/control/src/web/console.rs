//! The publisher console: gateways (the link form for admins, each gateway's nodes live).

use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use portico_model::{GatewayKind, GatewaySpec, Listener, ListenerProtocol};
use serde::Deserialize;

use super::{Nav, St, Viewer, error_page, page};
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
        .route("/console/apis", get(apis))
        .route("/console/apis/{id}", get(api))
        .route("/console/apis/{id}/deployments", get(api_deployments))
        .route("/console/apis/{id}/diff", get(diff))
        .route("/console/apis/{id}/{action}", post(api_write))
}

/// A gateway as the list shows it.
pub(super) struct GatewayRow {
    pub(super) name: String,
    pub(super) kind: &'static str,
    pub(super) allowed: Vec<String>,
    pub(super) denied: Vec<String>,
    pub(super) rule: String,
    pub(super) nodes: String,
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
            .filter(|(p, _)| super::under(p, name))
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
    if let Err(r) = v.require(KindId::Gateway, Action::Read) {
        return *r;
    }
    let (list, nodes) = match (
        st.store.gateways(&Page::all()).await,
        st.store.all_nodes().await,
    ) {
        (Ok(l), Ok(n)) => (l, n),
        (Err(e), _) | (_, Err(e)) => return error_page(v.nav(), e),
    };
    let gateways = list
        .iter()
        .map(|g| {
            let count = nodes.get(&g.id()).map_or(0, Vec::len);
            GatewayRow {
                nodes: if g.builtin {
                    "built in".into()
                } else {
                    count.to_string()
                },
                ..gateway_row(g)
            }
        })
        .collect();
    let can_link = v.may(KindId::Gateway, Action::Write);
    page(
        status,
        &GatewaysPage {
            nav: v.nav(),
            gateways,
            can_link,
            link_fields: fields(form, errors),
            link_error: message,
        },
    )
}

async fn gateways(State(st): St, v: Viewer) -> Response {
    gateways_page(&st, &v, &LinkForm::default(), &[], None, StatusCode::OK).await
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
async fn link_gateway(State(st): St, v: Viewer, Form(f): Form<LinkForm>) -> Response {
    // The one check first: a caller the form is not offered to is refused, whatever it sends.
    if let Err(r) = v.require(KindId::Gateway, Action::Write) {
        return *r;
    }
    if let Err(e) = v.check_csrf(&f.csrf) {
        return v.denied(e);
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
    let done = v.act(link(&st, req)).await;
    match done {
        Ok((g, _)) => Redirect::to(&format!("/console/gateways/{}", g.spec.name)).into_response(),
        Err(Error::Invalid(fs)) => {
            let errors: Vec<(String, String)> =
                fs.into_iter().map(|f| (f.path, f.message)).collect();
            gateways_page(&st, &v, &f, &errors, None, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => {
            let status = e.status();
            gateways_page(&st, &v, &f, &[], Some(e.public_message()), status).await
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
    v: Viewer,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match gateway_state(&st, &v, &name).await {
        Ok((spec, version, nodes)) => page(
            StatusCode::OK,
            &GatewayPage {
                nav: v.nav(),
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
        Err(e) => error_page(v.nav(), e),
    }
}

/// The rows the gateway page refreshes itself with.
async fn gateway_nodes(
    State(st): St,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    // JSON for the page's script: errors stay JSON.
    let v = match Viewer::of(&st, &headers, false).await {
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

/// An API in the list.
struct ApiRow {
    id: String,
    name: String,
    version: String,
    context: String,
    lifecycle: String,
}

#[derive(Template)]
#[template(path = "console/apis.html")]
struct ApisPage {
    nav: Nav,
    apis: Vec<ApiRow>,
    can_write: bool,
}

fn lifecycle_name(l: portico_model::Lifecycle) -> String {
    serde_json::to_value(l)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn apis(State(st): St, v: Viewer) -> Response {
    if let Err(r) = v.require(KindId::Api, Action::Read) {
        return *r;
    }
    match st.store.apis(&Page::all()).await {
        Ok(list) => page(
            StatusCode::OK,
            &ApisPage {
                nav: v.nav(),
                apis: list
                    .into_iter()
                    .map(|a| ApiRow {
                        id: a.id,
                        name: a.spec.name,
                        version: a.spec.version,
                        context: a.spec.context,
                        lifecycle: lifecycle_name(a.lifecycle),
                    })
                    .collect(),
                can_write: v.may(KindId::Api, Action::Write),
            },
        ),
        Err(e) => error_page(v.nav(), e),
    }
}

/// A revision on the API's page.
struct RevisionRow {
    number: u32,
    note: String,
    deployed_on: Vec<String>,
    /// Who made it, without the audit log's `user:` prefix.
    by: String,
}

/// A deployment on the API's page: where, which revision, how its nodes are.
struct DeploymentRow {
    gateway: String,
    revision: u32,
    nodes: String,
    /// The newest revision older than the deployed one: what a rollback deploys.
    previous: Option<u32>,
}

#[derive(Template)]
#[template(path = "console/api.html")]
struct ApiPage {
    nav: Nav,
    id: String,
    name: String,
    version: String,
    context: String,
    lifecycle: String,
    can_write: bool,
    revisions: Vec<RevisionRow>,
    gateways: Vec<GatewayRow>,
    deployments: Vec<DeploymentRow>,
    notice: Option<String>,
    error: Option<String>,
}

/// How a gateway's nodes stand against its snapshot: "2 of 2 nodes at version 7".
pub(super) async fn nodes_summary(
    st: &crate::ControlPlane,
    gateway: &str,
) -> Result<String, Error> {
    let g = st.store.gateway(gateway).await?;
    let gid = g.id();
    let current = st.store.snapshot_version(gid).await?;
    if g.builtin {
        return Ok(format!("built in, version {current}"));
    }
    let nodes = st.store.nodes(gid).await?;
    let t = now();
    let in_sync = nodes
        .iter()
        .filter(|n| node_json(st, current, n, t)["state"] == "in_sync")
        .count();
    Ok(format!(
        "{in_sync} of {} nodes at version {current}",
        nodes.len()
    ))
}

async fn deployment_rows(st: &crate::ControlPlane, id: &str) -> Result<Vec<DeploymentRow>, Error> {
    let mut out = Vec::new();
    for d in st.store.deployments(Some(id)).await? {
        out.push(DeploymentRow {
            nodes: nodes_summary(st, &d.gateway).await?,
            gateway: d.gateway,
            revision: d.revision,
            previous: None,
        });
    }
    Ok(out)
}

async fn api_page(
    st: &crate::ControlPlane,
    v: &Viewer,
    id: &str,
    notice: Option<String>,
    failed: Option<Error>,
) -> Response {
    let status = failed.as_ref().map_or(StatusCode::OK, Error::status);
    let built = async {
        crate::access::authorize(v.caller.as_ref(), KindId::Api, Action::Read, None)?;
        let a = st.store.api(id).await?;
        let revisions = st.store.revisions(id).await?;
        let gateways = st.store.gateways(&Page::all()).await?;
        let mut deployments = deployment_rows(st, id).await?;
        for d in &mut deployments {
            d.previous = revisions
                .iter()
                .map(|r| r.number)
                .filter(|n| *n < d.revision)
                .max();
        }
        Ok::<_, Error>(ApiPage {
            nav: v.nav(),
            id: a.id.clone(),
            name: a.spec.name.clone(),
            version: a.spec.version.clone(),
            context: a.spec.context.clone(),
            lifecycle: lifecycle_name(a.lifecycle),
            can_write: v.may(KindId::Api, Action::Write),
            revisions: revisions
                .into_iter()
                .map(|r| RevisionRow {
                    number: r.number,
                    note: r.note,
                    deployed_on: r.deployed_on,
                    by: r
                        .created_by
                        .strip_prefix("user:")
                        .unwrap_or(&r.created_by)
                        .to_owned(),
                })
                .collect(),
            gateways: gateways.iter().map(gateway_row).collect(),
            deployments,
            notice,
            error: failed.map(super::error_text),
        })
    }
    .await;
    match built {
        Ok(p) => page(status, &p),
        Err(e) => error_page(v.nav(), e),
    }
}

/// A gateway as lists and the deploy dialog show it, visibility rules one click away.
pub(super) fn gateway_row(g: &crate::store::GatewayRecord) -> GatewayRow {
    let allowed = g.spec.visibility.roles_allowed.clone();
    let denied = g.spec.visibility.roles_denied.clone();
    let rule = match (allowed.is_empty(), denied.is_empty()) {
        (false, true) => "allowed roles".into(),
        (true, false) => "denied roles".into(),
        _ => "allowed and denied roles".into(),
    };
    GatewayRow {
        name: g.spec.name.clone(),
        kind: g.spec.kind.as_str(),
        allowed,
        denied,
        rule,
        nodes: String::new(),
    }
}

async fn api(
    State(st): St,
    v: Viewer,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    api_page(&st, &v, &id, None, None).await
}

/// The deployments table's live rows.
async fn api_deployments(
    State(st): St,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let found = async {
        let v = Viewer::of(&st, &headers, false).await?;
        crate::access::authorize(v.caller.as_ref(), KindId::Api, Action::Read, None)?;
        deployment_rows(&st, &id).await
    }
    .await;
    match found {
        Ok(rows) => axum::Json(serde_json::json!({
            "deployments": rows.iter().map(|d| serde_json::json!({
                "key": d.gateway, "gateway": d.gateway, "revision": d.revision, "nodes": d.nodes,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every write on an API's page (`revisions`, `deploy`, `undeploy`, `lifecycle`): checked
/// as the API checks it, then done as the viewer.
async fn api_write(
    State(st): St,
    v: Viewer,
    axum::extract::Path((id, what)): axum::extract::Path<(String, String)>,
    f: super::Fields,
) -> Response {
    if let Err(r) = v.require_form(KindId::Api, Action::Write, &f) {
        return *r;
    }
    let st = &*st;
    let id = id.as_str();
    let done: Result<String, Error> = v
        .act(async {
            match what.as_str() {
                "revisions" => {
                    let r = st.store.create_revision(id, f.get("note")).await?;
                    Ok(format!("Revision {} created.", r.number))
                }
                "deploy" => {
                    let revision: u32 = f
                        .get("revision")
                        .parse()
                        .map_err(|_| Error::BadRequest("choose a revision to deploy".into()))?;
                    let gateways: Vec<String> = f.all("gateway").map(str::to_owned).collect();
                    if gateways.is_empty() {
                        return Err(Error::BadRequest(
                            "choose at least one gateway to deploy to".into(),
                        ));
                    }
                    st.store.deploy(id, revision, &gateways).await?;
                    Ok(format!(
                        "Revision {revision} deployed to {}: its nodes follow below.",
                        gateways.join(", ")
                    ))
                }
                "undeploy" => {
                    let g = f.get("gateway");
                    st.store.undeploy(id, g).await?;
                    Ok(format!("Undeployed from {g}."))
                }
                "lifecycle" => {
                    let state: portico_model::Lifecycle =
                        serde_json::from_value(serde_json::Value::String(f.get("state").into()))
                            .map_err(|_| {
                                Error::BadRequest(
                                    "the state is created, published, deprecated or retired".into(),
                                )
                            })?;
                    st.store.set_lifecycle(id, state, None).await?;
                    Ok(format!("Now {}.", lifecycle_name(state)))
                }
                other => Err(Error::NotFound(format!(
                    "no action `{other}` on an API page"
                ))),
            }
        })
        .await;
    match done {
        Ok(notice) => api_page(st, &v, id, Some(notice), None).await,
        Err(e) => api_page(st, &v, id, None, Some(e)).await,
    }
}

#[derive(Template)]
#[template(path = "console/diff.html")]
struct DiffPage {
    nav: Nav,
    id: String,
    from: u32,
    to: u32,
    /// Each line of the two definitions: `' '` both, `'-'` only in `from`, `'+'` only in `to`.
    lines: Vec<(char, String)>,
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

/// Two revisions of an API side by side: their frozen definitions as JSON, line by line.
async fn diff(
    State(st): St,
    v: Viewer,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<DiffQuery>,
) -> Response {
    if let Err(r) = v.require(KindId::Api, Action::Read) {
        return *r;
    }
    let number = |name: &str, raw: Option<&str>| {
        raw.unwrap_or_default()
            .parse::<u32>()
            .map_err(|_| Error::BadRequest(format!("{name}: choose a revision number to compare")))
    };
    let built = async {
        let (from, to) = (
            number("from", q.from.as_deref())?,
            number("to", q.to.as_deref())?,
        );
        let (a, b) = (
            st.store.revision(&id, from).await?,
            st.store.revision(&id, to).await?,
        );
        let text = |spec: &portico_model::ApiSpec| {
            serde_json::to_string_pretty(spec).map_err(|e| Error::Internal(e.to_string()))
        };
        Ok::<_, Error>(DiffPage {
            nav: v.nav(),
            id: id.clone(),
            from,
            to,
            lines: line_diff(&text(&a.spec)?, &text(&b.spec)?),
        })
    }
    .await;
    match built {
        Ok(p) => page(StatusCode::OK, &p),
        Err(e) => error_page(v.nav(), e),
    }
}

/// A line diff by longest common subsequence (definitions are a few hundred lines at most).
fn line_diff(a: &str, b: &str) -> Vec<(char, String)> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len().max(b.len())));
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((' ', a[i].to_owned()));
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || common[i][j + 1] >= common[i + 1][j]) {
            out.push(('+', b[j].to_owned()));
            j += 1;
        } else {
            out.push(('-', a[i].to_owned()));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn a_line_diff_keeps_what_is_common_and_marks_the_rest() {
        let d = line_diff("a\nb\nc\nd", "a\nc\nx\nd");
        let shown: Vec<String> = d.iter().map(|(m, l)| format!("{m}{l}")).collect();
        assert_eq!(shown, [" a", "-b", " c", "+x", " d"]);
        assert!(line_diff("", "").is_empty());
        assert_eq!(line_diff("a", ""), [('-', "a".to_owned())]);
    }
}
