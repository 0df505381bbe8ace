//! apps

use super::*;
// ---- apps ----

pub(super) async fn sweep_blobs(st: &ControlPlane, orphans: Vec<String>) {
    st.sweep_files(orphans).await;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MissingRequest {
    hashes: Vec<String>,
}

/// Which of these files still need uploading (the rest are stored already).
pub(super) async fn missing_blobs(State(st): St, JsonBody(bytes): JsonBody) -> Res {
    let req: MissingRequest = body(&bytes)?;
    if let Some((i, _)) = req
        .hashes
        .iter()
        .enumerate()
        .find(|(_, h)| !portico_model::app::hash_ok(h))
    {
        return Err(Error::Invalid(vec![FieldError::new(
            format!("hashes[{i}]"),
            "a SHA-256 in lower-case hex",
        )]));
    }
    ok(json!({ "missing": st.store.missing_blobs(&req.hashes).await? }))
}

/// Stores one file under its SHA-256 (checked while it streams to disk).
pub(super) async fn put_blob(
    State(st): St,
    Path(hash): Path<String>,
    body: axum::body::Body,
) -> Res {
    if !portico_model::app::hash_ok(&hash) {
        return Err(Error::BadRequest(format!(
            "`{hash}` is not a SHA-256 in lower-case hex"
        )));
    }
    if st.store.has_blob(&hash).await? && tokio::fs::metadata(st.blobs.path(&hash)).await.is_ok() {
        // Fresh again: a version is about to use it.
        let size = tokio::fs::metadata(st.blobs.path(&hash))
            .await
            .map(|m| m.len())
            .unwrap_or_default();
        st.keep_blob(&hash, size).await?;
        return ok(json!({ "hash": hash, "stored": "already" }));
    }
    let size = st.blobs.put(&hash, body).await?;
    st.keep_blob(&hash, size).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "hash": hash, "size": size })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppVersionRequest {
    files: std::collections::BTreeMap<String, portico_model::AppFile>,
    #[serde(default)]
    note: String,
}

pub(super) async fn create_app_version(
    State(st): St,
    Path(slug): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: AppVersionRequest = body(&bytes)?;
    let (v, orphans) = st
        .store
        .create_app_version(&slug, &req.files, &req.note)
        .await?;
    sweep_blobs(&st, orphans).await;
    Ok((StatusCode::CREATED, axum::Json(to_value(&v))).into_response())
}

pub(super) async fn list_app_versions(
    State(st): St,
    Path(slug): Path<String>,
    Query(q): Pq,
) -> Res {
    paged(
        &q,
        st.store.app_versions(&slug).await?,
        // Newest first.
        |v| format!("{:010}", u32::MAX - v.number),
    )
}

pub(super) async fn get_app_version(
    State(st): St,
    Path((slug, number)): Path<(String, u32)>,
) -> Res {
    let files = st.store.app_version_files(&slug, number).await?;
    ok(json!({ "app": slug, "number": number, "files": files }))
}

pub(super) async fn publish_app_version(
    State(st): St,
    Path((slug, number)): Path<(String, u32)>,
) -> Res {
    st.store.publish_app_version(&slug, number).await?;
    ok(json!({ "app": slug, "number": number, "state": "published" }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppDeployRequest {
    version: u32,
    gateways: Vec<String>,
    #[serde(default)]
    host: Option<String>,
    /// A draft version may go to a production gateway only when this says so.
    #[serde(default)]
    allow_draft: bool,
}

pub(super) async fn deploy_app(
    State(st): St,
    Path(slug): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: AppDeployRequest = body(&bytes)?;
    if req.gateways.is_empty() {
        return Err(Error::Invalid(vec![FieldError::new(
            "gateways",
            "name at least one gateway",
        )]));
    }
    if let Some(h) = &req.host
        && let Err(m) = portico_model::validate::check_host(h, false)
    {
        return Err(Error::Invalid(vec![FieldError::new("host", m)]));
    }
    let (items, _) = st
        .store
        .deploy_app(
            &slug,
            req.version,
            &req.gateways,
            req.host.as_deref(),
            req.allow_draft,
        )
        .await?;
    let targets = targets_with_versions(&st, &req.gateways).await?;
    ok(json!({ "items": items, "targets": targets }))
}

#[derive(Debug, Deserialize)]
pub(super) struct HostQuery {
    host: Option<String>,
}

pub(super) async fn list_app_deployments(
    State(st): St,
    Path(slug): Path<String>,
    Query(q): Pq,
) -> Res {
    let page = Page::from_query(&q)?;
    let mut items = Vec::new();
    for d in st.store.app_deployments(&slug).await? {
        let gid = st.store.gateway_id(&d.gateway).await?;
        let nodes = st.store.nodes(gid).await?;
        let current = st.store.snapshot_version(gid).await?;
        let mut v = to_value(&d);
        v["nodes"] = to_value(&nodes);
        // Nodes at this snapshot serve `version`; others still serve an older one.
        v["snapshot_version"] = json!(current);
        let key = format!(
            "{}/{}",
            d.gateway.to_ascii_lowercase(),
            d.host.as_deref().unwrap_or("")
        );
        items.push((key, v));
    }
    ok(page.of(items, |(k, _)| k.clone(), |(_, v)| v.clone()))
}

pub(super) async fn undeploy_app(
    State(st): St,
    Path((slug, gateway)): Path<(String, String)>,
    Query(q): Query<HostQuery>,
) -> Res {
    st.store
        .undeploy_app(&slug, &gateway, q.host.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn rollback_app(
    State(st): St,
    Path((slug, gateway)): Path<(String, String)>,
    Query(q): Query<HostQuery>,
) -> Res {
    let (d, _) = st
        .store
        .rollback_app(&slug, &gateway, q.host.as_deref())
        .await?;
    let targets = targets_with_versions(&st, &[gateway]).await?;
    ok(json!({ "deployment": d, "targets": targets }))
}

/// A node fetches an app file of its gateway's snapshot by hash (with the gateway's token).
pub(super) async fn sync_blob(State(st): St, headers: HeaderMap, Path(hash): Path<String>) -> Res {
    // The turn covers the checks, not the file's streaming.
    let turn = st.node_turn().await;
    let owner = gateway_auth(&st, &headers).await?;
    // Only files of what this gateway serves: another gateway's apps stay out of reach.
    let serves_it = st
        .store
        .snapshot(owner.gateway_id)
        .await?
        .is_some_and(|s| s.body.contains(&format!("\"hash\":\"{hash}\"")));
    // On PostgreSQL the file may have been uploaded through another control-plane node:
    // `local_blob` writes it to this node's disk from the database first.
    if !portico_model::app::hash_ok(&hash)
        || !serves_it
        || !st.store.has_blob(&hash).await?
        || !st.local_blob(&hash).await?
    {
        return Err(Error::NotFound(format!(
            "no file {hash} in what this gateway serves"
        )));
    }
    drop(turn);
    let file = tokio::fs::File::open(st.blobs.path(&hash))
        .await
        .map_err(|e| Error::Internal(format!("file {hash} is recorded but unreadable: {e}")))?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
