//! apis

use super::*;
// ---- APIs, revisions, deployments ----

/// Where a deployed API answers, per gateway it is deployed to: every listener's scheme
/// and port with each host the API answers on (its own hosts, else the gateway's, else
/// the gateway's address), and the deployed revision's context.
pub(super) async fn invoke_urls(
    st: &ControlPlane,
    id: &str,
    shown: impl Fn(&GatewaySpec) -> bool,
) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for d in st.store.deployments(Some(id)).await? {
        let g = st.store.gateway(&d.gateway).await?.spec;
        if !shown(&g) {
            continue;
        }
        let rev = st.store.revision(id, d.revision).await?;
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
        // A gateway without listeners serves on the compiler's default one.
        let default_listener = [Listener::new(
            portico_compile::DEFAULT_PORT,
            portico_model::ListenerProtocol::Http,
        )];
        let listeners = if g.listeners.is_empty() {
            &default_listener[..]
        } else {
            &g.listeners[..]
        };
        for l in listeners {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LifecycleRequest {
    state: Lifecycle,
}

pub(super) async fn set_lifecycle(
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
    let (a, _) = st.store.set_lifecycle(&id, req.state, expected).await?;
    Ok(with_etag(StatusCode::OK, &a.meta, to_value(&a)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevisionRequest {
    #[serde(default)]
    note: String,
}

pub(super) async fn create_revision(
    State(st): St,
    Path(id): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: RevisionRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        RevisionRequest::default()
    } else {
        body(&bytes)?
    };
    let r = st.store.create_revision(&id, &req.note).await?;
    Ok((StatusCode::CREATED, axum::Json(to_value(&r))).into_response())
}

pub(super) async fn list_revisions(State(st): St, Path(id): Path<String>, Query(q): Pq) -> Res {
    paged(
        &q,
        st.store.revisions(&id).await?,
        // Newest first.
        |r| format!("{:010}", u32::MAX - r.number),
    )
}

pub(super) fn revision_number(raw: &str) -> Result<u32, Error> {
    raw.parse()
        .map_err(|_| Error::BadRequest(format!("`{raw}` is not a revision number")))
}

pub(super) async fn get_revision(State(st): St, Path((id, n)): Path<(String, String)>) -> Res {
    ok(to_value(
        &st.store.revision(&id, revision_number(&n)?).await?,
    ))
}

pub(super) async fn delete_revision(State(st): St, Path((id, n)): Path<(String, String)>) -> Res {
    st.store.delete_revision(&id, revision_number(&n)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployRequest {
    revision: u32,
    gateways: Vec<String>,
}

pub(super) async fn deploy(
    State(st): St,
    Path(id): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: DeployRequest = body(&bytes)?;
    if req.gateways.is_empty() {
        return Err(Error::Invalid(vec![FieldError::new(
            "gateways",
            "name at least one gateway to deploy to",
        )]));
    }
    let (deployments, _) = st.store.deploy(&id, req.revision, &req.gateways).await?;
    let versions: Vec<Value> = targets_with_versions(&st, &req.gateways).await?;
    ok(json!({ "deployments": deployments, "targets": versions }))
}

/// Each gateway's snapshot version after a change, so clients can wait for nodes to reach it.
pub(super) async fn targets_with_versions(
    st: &ControlPlane,
    names: &[String],
) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for name in names {
        let gid = st.store.gateway_id(name).await?;
        let v = st.store.snapshot_version(gid).await?;
        out.push(json!({ "gateway": name, "snapshot_version": v }));
    }
    Ok(out)
}

pub(super) async fn undeploy(State(st): St, Path((id, gateway)): Path<(String, String)>) -> Res {
    st.store.undeploy(&id, &gateway).await?;
    let targets = targets_with_versions(&st, &[gateway]).await?;
    ok(json!({ "targets": targets }))
}

pub(super) async fn api_deployments(State(st): St, Path(id): Path<String>, Query(q): Pq) -> Res {
    st.store.api(&id).await?;
    paged(&q, st.store.deployments(Some(&id)).await?, |d| {
        d.gateway.to_ascii_lowercase()
    })
}

pub(super) async fn all_deployments(State(st): St, Query(q): Pq) -> Res {
    paged(&q, st.store.deployments(None).await?, |d| {
        format!("{}/{}", d.api, d.gateway.to_ascii_lowercase())
    })
}
