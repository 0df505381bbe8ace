//! sync

use super::*;
// ---- sync (gateway API token) ----

pub(super) async fn gateway_auth(
    st: &ControlPlane,
    headers: &HeaderMap,
) -> Result<crate::store::TokenOwner, Error> {
    let Some(token) = bearer(headers) else {
        return Err(Error::Unauthorized(
            "send the gateway's API token as `Authorization: Bearer <token>`".into(),
        ));
    };
    let hash = secrets::hash(token);
    if let Some(owner) = st.hub.owner(&hash) {
        return Ok(owner);
    }
    let wakes = st.hub.wakes();
    let owner = st.store.token_owner(&hash).await?.ok_or_else(|| {
        Error::Unauthorized(
            "this API token belongs to no gateway: link the gateway first, or the token was revoked or rotated".into(),
        )
    })?;
    st.hub.remember_owner(&hash, &owner, wakes);
    Ok(owner)
}

#[derive(Debug, Deserialize)]
pub(super) struct SyncQuery {
    /// The version the node holds.
    after: Option<u64>,
    /// Longest to wait for a newer one, in seconds.
    wait: Option<u64>,
    /// The node applies deltas to the version it holds (`after`).
    deltas: Option<bool>,
}

pub(super) async fn sync_snapshot(
    State(st): St,
    headers: HeaderMap,
    Query(q): Query<SyncQuery>,
) -> Res {
    let mut turn = st.node_turn().await;
    let owner = gateway_auth(&st, &headers).await?;
    let current = st.store.snapshot_version(owner.gateway_id).await?;
    let mut rx = st.hub.subscribe(owner.gateway_id, current);
    let wait = Duration::from_secs(q.wait.unwrap_or(30)).min(st.config.long_poll_max);
    let deadline = tokio::time::Instant::now() + wait;
    let mut stopping = st.stopping.clone();
    loop {
        let v = *rx.borrow_and_update();
        if v > 0 && Some(v) != q.after {
            let _turn = match turn.take() {
                Some(t) => Some(t),
                None => st.node_turn().await,
            };
            // Deltas when every step is kept; the whole snapshot otherwise, and also when
            // the steps cannot be read (the node is never left without an answer).
            let chain = match (q.after, q.deltas) {
                (Some(after), Some(true)) => st
                    .store
                    .delta_chain(owner.gateway_id, &owner.name, after, v)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(gateway = %owner.name, error = %e, "deltas unreadable; sending the whole snapshot");
                        None
                    }),
                _ => None,
            };
            let (content_type, body, version) = match chain {
                Some(chain) => (portico_model::DELTA_CONTENT_TYPE, chain, v),
                None => {
                    let snap =
                        st.store.snapshot(owner.gateway_id).await?.ok_or_else(|| {
                            Error::Internal("a published snapshot is missing".into())
                        })?;
                    ("application/json", snap.body, snap.version)
                }
            };
            let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
            if let Ok(e) = HeaderValue::from_str(&format!("\"{version}\"")) {
                resp.headers_mut().insert(header::ETAG, e);
            }
            // The deploy that made this version, when it was traced: the node's apply is
            // recorded as its child.
            let trace = match st.hub.deploy_trace(owner.gateway_id, version) {
                Some(t) => t,
                None => {
                    let t = st
                        .store
                        .snapshot_trace(owner.gateway_id, version)
                        .await
                        .unwrap_or_default();
                    st.hub
                        .remember_deploy_trace(owner.gateway_id, version, t.clone());
                    t
                }
            };
            if let Some(v) = trace.and_then(|t| HeaderValue::from_str(&t).ok()) {
                resp.headers_mut().insert(crate::trace::DEPLOY_TRACE, v);
            }
            return Ok(resp);
        }
        if *stopping.borrow() {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        // No turn is held while waiting.
        drop(turn.take());
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, rx.changed()) => match changed {
                Ok(Ok(())) => {
                    // Woken: a new version, or the token was revoked or the gateway deleted.
                    turn = st.node_turn().await;
                    gateway_auth(&st, &headers).await?;
                }
                Ok(Err(_)) | Err(_) => return Ok(StatusCode::NOT_MODIFIED.into_response()),
            },
            // The control plane stops: nothing new will come from this one.
            _ = stopping.changed() => return Ok(StatusCode::NOT_MODIFIED.into_response()),
        }
    }
}

pub(super) async fn sync_report(
    State(st): St,
    headers: HeaderMap,
    JsonBody(bytes): JsonBody,
) -> Res {
    let _turn = st.node_turn().await;
    let owner = gateway_auth(&st, &headers).await?;
    let report: NodeReport = body(&bytes)?;
    let mut fields = Vec::new();
    if report.node_id.is_empty() || report.node_id.chars().count() > limits::OBJECT_NAME {
        fields.push(FieldError::new(
            "node_id",
            format!("1 to {} characters", limits::OBJECT_NAME),
        ));
    } else if report.node_id == BUILTIN_NODE || report.node_id.starts_with("builtin-") {
        fields.push(FieldError::new(
            "node_id",
            "`builtin` and `builtin-...` are the built-in gateway's own nodes",
        ));
    }
    if let Err(m) = limits::at_most(&report.hostname, limits::HOST) {
        fields.push(FieldError::new("hostname", m));
    }
    let key_hash = match report.node_key.as_deref() {
        Some(k) if (32..=256).contains(&k.len()) => secrets::hash(k),
        _ => {
            fields.push(FieldError::new(
                "node_key",
                "send the node's key (32 to 256 characters, kept in its cache directory): nodes older than the control plane must be upgraded",
            ));
            String::new()
        }
    };
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    st.store
        .report_node(
            owner.gateway_id,
            &report,
            Some(&key_hash),
            st.config.node_limits,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
