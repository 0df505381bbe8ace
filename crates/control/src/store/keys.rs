//! The token service's signing keys.

use serde::Serialize;

use super::{Moved, Store, all_gateway_ids, now};
use crate::access::KindId;
use crate::error::Error;

/// Issuer of access tokens.
pub const ISSUER: &str = "portico";
/// Audience of access tokens.
pub const AUDIENCE: &str = "portico-gateways";
/// Longest lifetime of an access token: retired keys stay published this long.
pub const TOKEN_MAX_LIFETIME: i64 = 24 * 3600;

/// A signing key (its private half sealed).
#[derive(Clone, Debug, Serialize)]
pub struct SigningKeyRecord {
    /// Key id.
    pub kid: String,
    /// The PKCS#8 private key, sealed; never serialized.
    #[serde(skip)]
    pub private_sealed: String,
    /// Public X, base64url.
    pub x: String,
    /// Public Y, base64url.
    pub y: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when a newer key took over.
    pub retired_at: Option<i64>,
}

impl Store {
    /// Every signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, Error> {
        let rows: Vec<(String, String, String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT kid, private_key, x, y, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(kid, private_sealed, x, y, created_at, retired_at)| SigningKeyRecord {
                    kid,
                    private_sealed,
                    x,
                    y,
                    created_at,
                    retired_at,
                },
            )
            .collect())
    }

    /// The key that signs new tokens.
    pub async fn active_signing_key(&self) -> Result<Option<SigningKeyRecord>, Error> {
        Ok(self
            .signing_keys()
            .await?
            .into_iter()
            .find(|k| k.retired_at.is_none()))
    }

    /// Adds a key that signs from now on; the previous one is retired (still published
    /// until its tokens expire). Every gateway recompiles.
    pub async fn add_signing_key(&self, key: &SigningKeyRecord) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event("rotate", KindId::SigningKey, &key.kid);
        let t = now();
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(t)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, x, y, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.kid)
        .bind(&key.private_sealed)
        .bind(&key.x)
        .bind(&key.y)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        // The token service's keys: no consumer's keys or tiers change.
        let all = all_gateway_ids(&mut tx).await?;
        tx.recompile_keys(&all, super::KeysTouched::Of(&[])).await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }

    /// Scopes the operations of a consumer's subscribed APIs declare, and those API ids.
    pub async fn grantable(&self, consumer: &str) -> Result<(Vec<String>, Vec<String>), Error> {
        let subs = self.subscriptions(consumer).await?;
        let mut scopes = Vec::new();
        let mut apis = Vec::new();
        for s in subs {
            let api = self.api(&s.api).await?;
            for op in &api.spec.operations {
                scopes.extend(op.scopes.iter().cloned());
            }
            apis.push(s.api);
        }
        scopes.sort();
        scopes.dedup();
        Ok((scopes, apis))
    }
}
