//! Gateways beyond their definitions: linking with credentials, API tokens, snapshots,
//! nodes and the fleet's status.

use super::*;

/// What `POST /gateways/link` takes: the gateway and the credentials it was installed with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkRequest {
    pub(crate) name: String,
    #[serde(rename = "type", default)]
    pub(crate) kind: GatewayKind,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) ip: Option<String>,
    #[serde(default)]
    pub(crate) admin_port: Option<u16>,
    #[serde(default)]
    pub(crate) admin_ca_pem: Option<String>,
    pub(crate) jwt_secret: String,
    pub(crate) api_token: String,
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    #[serde(default)]
    pub(crate) listeners: Vec<Listener>,
    /// Check the credentials against the running gateway (default true).
    #[serde(default = "yes")]
    pub(crate) verify: bool,
}

pub(super) fn yes() -> bool {
    true
}

pub(super) async fn link_gateway(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: LinkRequest = body(&bytes)?;
    let (g, out) = link(&st, req).await?;
    Ok(with_etag(StatusCode::OK, &g.meta, out))
}

/// Links a gateway (the API's and the console's one way): checks the definition and the
/// credentials, calls the gateway's admin API to prove them unless told not to, and stores
/// the gateway with them. Answers it and what the API shows.
pub(crate) async fn link(
    st: &ControlPlane,
    req: LinkRequest,
) -> Result<(crate::store::GatewayRecord, Value), Error> {
    let existing = st.store.gateway(&req.name).await.ok();
    let mut spec = existing
        .as_ref()
        .map_or_else(|| GatewaySpec::new(&req.name, req.kind), |g| g.spec.clone());
    if existing.as_ref().is_some_and(|g| g.builtin) {
        return Err(Error::Conflict(
            "the built-in gateway `default` runs inside the control plane and is not linked".into(),
        ));
    }
    if existing.is_none() {
        spec.description = req.description.clone();
        spec.hosts = req.hosts.clone();
        spec.listeners = req.listeners.clone();
    }
    spec.kind = req.kind;
    spec.url = req.url.clone();
    spec.ip = req.ip.clone();
    // One port, whichever way it was given: the URL's, unless admin_port says the same.
    let url_port = req
        .url
        .as_deref()
        .and_then(|u| u.parse::<axum::http::Uri>().ok())
        .and_then(|u| u.port_u16());
    match (req.admin_port, url_port) {
        (Some(p), Some(u)) if p != u => {
            return Err(Error::Invalid(vec![FieldError::new(
                "admin_port",
                format!("{p} differs from the port of url ({u}): give one of them, or the same"),
            )]));
        }
        (Some(p), _) | (None, Some(p)) => spec.admin_port = p,
        (None, None) => {}
    }
    if req.admin_ca_pem.is_some() {
        spec.admin_ca_pem = req.admin_ca_pem.clone();
    }
    let mut fields = Vec::new();
    if req.jwt_secret.len() < 32 {
        fields.push(FieldError::new(
            "jwt_secret",
            "give the gateway's JWT secret (at least 32 characters; `portico gateway init` makes one)",
        ));
    }
    if req.api_token.len() < 32 {
        fields.push(FieldError::new(
            "api_token",
            "give the gateway's API token (at least 32 characters; `portico gateway init` makes one)",
        ));
    }
    fields.extend(gateway_problems(st, &spec));
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let target = AdminTarget::new(
        spec.url.as_deref(),
        spec.ip.as_deref(),
        spec.admin_port,
        spec.admin_ca_pem.as_deref(),
    )?;
    let node = if req.verify {
        Some(link::verify(&spec.name, &target, &req.jwt_secret, &req.api_token).await?)
    } else {
        None
    };
    let creds = Credentials {
        token_hash: secrets::hash(&req.api_token),
        jwt_secret_sealed: st.sealer.seal(&req.jwt_secret)?,
    };
    let g = match existing {
        None => st.store.create_linked_gateway(&spec, Some(&creds)).await?,
        Some(g) => {
            st.store
                .relink_gateway(&spec.name, &spec, g.meta.version, Some(&creds))
                .await?
        }
    };
    tracing::info!(gateway = %g.spec.name, verified = req.verify, "gateway linked");
    if req.verify {
        // The node has been retrying with back-off while its token was unknown: ask it to
        // fetch now (best effort; it gets there on its own otherwise).
        let name = g.spec.name.clone();
        let secret = req.jwt_secret.clone();
        tokio::spawn(async move {
            if let Err(e) = link::resync(&name, &target, &secret).await {
                tracing::debug!(gateway = %name, error = %e, "resync after link failed");
            }
        });
    }
    let out = json!({ "gateway": g, "verified": req.verify, "node": node });
    Ok((g, out))
}

pub(super) async fn rotate_token(State(st): St, Path(name): Path<String>) -> Res {
    let g = st.store.gateway(&name).await?;
    if g.builtin {
        return Err(Error::Conflict(
            "the built-in gateway `default` runs inside the control plane and has no token".into(),
        ));
    }
    let token = secrets::generate("pgt_");
    let existing = st.store.jwt_secret_sealed(&name).await?;
    let (secret, jwt_too) = match existing {
        Some(sealed) => (st.sealer.open(&sealed)?, false),
        None => (secrets::generate("pjs_"), true),
    };
    let creds = Credentials {
        token_hash: secrets::hash(&token),
        jwt_secret_sealed: st.sealer.seal(&secret)?,
    };
    let g = st
        .store
        .set_credentials(&name, Some(&creds), jwt_too)
        .await?;
    st.store.wake(g_id(&st, &name).await?).await;
    tracing::info!(gateway = %g.spec.name, "gateway API token rotated");
    let mut out = json!({
        "gateway": g.spec.name,
        "api_token": token,
        "message": "shown once: give it to the gateway's nodes (`portico gateway run --token`); the old token no longer works",
    });
    if jwt_too {
        out["jwt_secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

pub(super) async fn g_id(st: &ControlPlane, name: &str) -> Result<i64, Error> {
    st.store.gateway_id(name).await
}

pub(super) async fn revoke_token(State(st): St, Path(name): Path<String>) -> Res {
    let g = st.store.set_credentials(&name, None, false).await?;
    st.store.wake(g_id(&st, &name).await?).await;
    tracing::info!(gateway = %g.spec.name, "gateway API token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn gateway_snapshot(State(st): St, Path(name): Path<String>) -> Res {
    let gid = st.store.gateway_id(&name).await?;
    let snap = st
        .store
        .snapshot(gid)
        .await?
        .ok_or_else(|| Error::NotFound(format!("gateway `{name}` has no snapshot yet")))?;
    let mut env: Value = serde_json::from_str(&snap.body)
        .map_err(|e| Error::Internal(format!("a stored snapshot does not read: {e}")))?;
    redact_private_keys(&mut env);
    ok(env)
}

/// Takes the private keys out of a snapshot envelope shown to an admin: they reach only
/// the gateway's own nodes, over the sync channel.
pub(super) fn redact_private_keys(env: &mut Value) {
    let Some(listeners) = env
        .pointer_mut("/snapshot/listeners")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for l in listeners {
        let Some(certs) = l
            .pointer_mut("/tls/certificates")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in certs {
            if let Some(obj) = c.as_object_mut()
                && obj.remove("key_pem").is_some()
            {
                obj.insert("key_pem_redacted".into(), Value::Bool(true));
            }
        }
    }
}

pub(super) fn node_state(
    st: &ControlPlane,
    current: u64,
    applied: Option<u64>,
    last_seen: i64,
) -> &'static str {
    let age = now() - last_seen;
    if age > st.config.node_offline_after.as_secs() as i64 {
        "offline"
    } else if applied == Some(current) {
        "in_sync"
    } else {
        "stale"
    }
}

pub(crate) fn node_json(
    st: &ControlPlane,
    current: u64,
    n: &crate::store::NodeRecord,
    t: i64,
) -> Value {
    json!({
        "node_id": n.node_id,
        "hostname": n.hostname,
        "applied_version": n.applied_version,
        "applied_hash": n.applied_hash,
        "last_error": n.last_error,
        "last_error_at": n.last_error_at,
        "last_seen_seconds_ago": t - n.last_seen,
        "state": node_state(st, current, n.applied_version, n.last_seen),
        "unhealthy_endpoints": n.unhealthy_endpoints,
    })
}

pub(super) async fn nodes_view(
    st: &ControlPlane,
    gid: i64,
    current: u64,
) -> Result<Vec<Value>, Error> {
    let t = now();
    Ok(st
        .store
        .nodes(gid)
        .await?
        .iter()
        .map(|n| node_json(st, current, n, t))
        .collect())
}

/// A gateway's nodes, paged by node id like every list, beside its snapshot version.
pub(super) async fn gateway_nodes(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Res {
    let page = Page::from_query(&q)?;
    let gid = st.store.gateway_id(&name).await?;
    let current = st.store.snapshot_version(gid).await?;
    let nodes = nodes_view(&st, gid, current).await?;
    let mut v = page.of(
        nodes,
        |n| n["node_id"].as_str().unwrap_or_default().to_owned(),
        Value::clone,
    );
    v["gateway"] = json!(name);
    v["snapshot_version"] = json!(current);
    ok(v)
}

pub(super) async fn resync_gateway(State(st): St, Path(name): Path<String>) -> Res {
    let g = st.store.gateway(&name).await?;
    let sealed = st.store.jwt_secret_sealed(&name).await?.ok_or_else(|| {
        Error::Conflict(format!(
            "gateway `{name}` has no JWT secret: link it first (`portico gateways link`)"
        ))
    })?;
    let secret = st.sealer.open(&sealed)?;
    let target = AdminTarget::new(
        g.spec.url.as_deref(),
        g.spec.ip.as_deref(),
        g.spec.admin_port,
        g.spec.admin_ca_pem.as_deref(),
    )?;
    let answer = link::resync(&g.spec.name, &target, &secret).await?;
    ok(json!({ "gateway": g.spec.name, "node": answer }))
}

pub(super) async fn status(State(st): St) -> Res {
    let t = now();
    let mut nodes = st.store.all_nodes().await?;
    let mut warnings = st.store.snapshot_warnings().await?;
    let mut out = Vec::new();
    for (gid, g, current, hash) in st.store.gateways_with_snapshots().await? {
        let list: Vec<Value> = nodes
            .remove(&gid)
            .unwrap_or_default()
            .iter()
            .map(|n| node_json(&st, current, n, t))
            .collect();
        out.push(json!({
            "gateway": g.spec.name,
            "type": g.spec.kind.as_str(),
            "builtin": g.builtin,
            "token_active": g.token_active || g.builtin,
            "snapshot_version": current,
            "snapshot_hash": hash,
            "nodes": list,
            "warnings": warnings.remove(&gid).unwrap_or_default(),
        }));
    }
    ok(json!({ "gateways": out }))
}
