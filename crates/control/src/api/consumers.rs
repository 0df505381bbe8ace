//! consumers

use super::*;
// ---- consumers, subscriptions, keys ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscribeRequest {
    api: String,
    #[serde(default)]
    tier: Option<String>,
}

pub(super) async fn list_subscriptions(
    State(st): St,
    Path(name): Path<String>,
    Query(q): Pq,
) -> Res {
    paged(&q, st.store.subscriptions(&name).await?, |s| s.api.clone())
}

pub(super) async fn subscribe(
    State(st): St,
    Path(name): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: SubscribeRequest = body(&bytes)?;
    let fields = missing_tiers(&st, &[("tier".into(), &req.tier)]).await?;
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    st.store
        .subscribe(&name, &req.api, req.tier.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "consumer": name, "api": req.api, "tier": req.tier })),
    )
        .into_response())
}

pub(super) async fn unsubscribe(State(st): St, Path((name, api)): Path<(String, String)>) -> Res {
    st.store.unsubscribe(&name, &api).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn list_keys(State(st): St, Path(name): Path<String>, Query(q): Pq) -> Res {
    // Oldest first, as they were made.
    paged(&q, st.store.credentials(&name).await?, |c| {
        format!("{:020}-{}", c.created_at, c.id)
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRequest {
    #[serde(rename = "type")]
    pub(crate) key_type: KeyType,
    #[serde(default = "api_key_kind")]
    pub(crate) kind: crate::store::CredentialKind,
    /// Days until it stops working; never when absent.
    #[serde(default)]
    pub(crate) expires_in_days: Option<u32>,
}

pub(super) fn api_key_kind() -> crate::store::CredentialKind {
    crate::store::CredentialKind::ApiKey
}

pub(super) async fn create_key(
    State(st): St,
    Path(name): Path<String>,
    JsonBody(bytes): JsonBody,
) -> Res {
    let req: KeyRequest = body(&bytes)?;
    let out = issue_key(&st, &name, req).await?;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

/// Makes a consumer's API key or client credential; answers it with its secret, the one
/// time it is shown.
pub(crate) async fn issue_key(
    st: &ControlPlane,
    name: &str,
    req: KeyRequest,
) -> Result<Value, Error> {
    if req.expires_in_days == Some(0) {
        return Err(Error::Invalid(vec![FieldError::new(
            "expires_in_days",
            "give 1 or more days, or leave it out for a key that does not expire",
        )]));
    }
    let expires_at = req.expires_in_days.map(|d| now() + i64::from(d) * 86_400);
    let (new, out) = new_credential(name, req.kind, req.key_type, expires_at);
    st.store.add_credential(name, &new).await?;
    Ok(out)
}

/// A new secret of `kind`: what is stored (its hash) and what is shown once.
fn new_credential(
    consumer: &str,
    kind: crate::store::CredentialKind,
    key_type: portico_model::KeyType,
    expires_at: Option<i64>,
) -> (crate::store::NewCredential, Value) {
    use crate::store::CredentialKind;
    let (id, secret, mut out) = match kind {
        CredentialKind::ApiKey => {
            let key = secrets::generate("pk_");
            let id = format!("key_{}", &secrets::hash(&key)[..12]);
            let out = json!({ "id": id, "kind": "api_key", "key": key });
            (id, key, out)
        }
        CredentialKind::Client => {
            let client_id = format!("cl_{}", &secrets::hash(&secrets::generate(""))[..16]);
            let secret = secrets::generate("cs_");
            let out = json!({ "id": client_id, "kind": "client", "client_id": client_id, "client_secret": secret });
            (client_id, secret, out)
        }
    };
    out["consumer"] = json!(consumer);
    out["type"] = json!(key_type.as_str());
    out["expires_at"] = json!(expires_at);
    out["message"] = json!("shown once: store it now; only its hash is kept");
    let new = crate::store::NewCredential {
        id,
        kind,
        key_type,
        secret_hash: secrets::hash(&secret),
        hint: secret.chars().take(8).collect(),
        expires_at,
    };
    (new, out)
}

/// Replaces an active key or client secret by a new one of the same kind, type and expiry:
/// the old one stops working as the new one starts. The new secret is shown once.
pub(crate) async fn regenerate(st: &ControlPlane, name: &str, id: &str) -> Result<Value, Error> {
    let old = st
        .store
        .credentials(name)
        .await?
        .into_iter()
        .find(|c| c.id == id && c.revoked_at.is_none())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "consumer `{name}` has no active credential `{id}`: list them with `portico keys list {name}`"
            ))
        })?;
    let (new, mut out) = new_credential(name, old.kind, old.key_type, old.expires_at);
    st.store.replace_credential(name, id, &new).await?;
    out["replaces"] = json!(id);
    Ok(out)
}

pub(super) async fn regenerate_key(State(st): St, Path((name, id)): Path<(String, String)>) -> Res {
    Ok((
        StatusCode::CREATED,
        axum::Json(regenerate(&st, &name, &id).await?),
    )
        .into_response())
}

pub(super) async fn revoke_key(State(st): St, Path((name, id)): Path<(String, String)>) -> Res {
    st.store.revoke_credential(&name, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
