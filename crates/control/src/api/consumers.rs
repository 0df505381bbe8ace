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
    use crate::store::{CredentialKind, NewCredential};
    if req.expires_in_days == Some(0) {
        return Err(Error::Invalid(vec![FieldError::new(
            "expires_in_days",
            "give 1 or more days, or leave it out for a key that does not expire",
        )]));
    }
    let expires_at = req.expires_in_days.map(|d| now() + i64::from(d) * 86_400);
    let (id, secret, mut out) = match req.kind {
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
    st.store
        .add_credential(
            name,
            &NewCredential {
                id,
                kind: req.kind,
                key_type: req.key_type,
                secret_hash: secrets::hash(&secret),
                hint: secret.chars().take(8).collect(),
                expires_at,
            },
        )
        .await?;
    out["consumer"] = json!(name);
    out["type"] = json!(req.key_type.as_str());
    out["expires_at"] = json!(expires_at);
    out["message"] = json!("shown once: store it now; only its hash is kept");
    Ok(out)
}

pub(super) async fn revoke_key(State(st): St, Path((name, id)): Path<(String, String)>) -> Res {
    st.store.revoke_credential(&name, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
