//! Consumers, their subscriptions and credentials. Writes recompile the gateways where the
//! consumer's subscribed APIs are deployed (API keys travel in those gateways' snapshots).

use portico_model::{ApiKeyGrant, ConsumerSpec, KeyType};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{KeysTouched, Moved, Record, Store, api_gateway_ids, change_one, from_json, key, now};
use crate::access::KindId;
use crate::error::Error;

/// A subscription of a consumer to an API.
#[derive(Clone, Debug, Serialize)]
pub struct SubscriptionRecord {
    /// The API's id.
    pub api: String,
    /// Throttling tier, when set.
    pub tier: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What kind of credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An API key.
    ApiKey,
    /// A client id and secret for the token service.
    Client,
}

impl CredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Client => "client",
        }
    }
}

/// A credential, without its secret.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialRecord {
    /// Its id (for a client: the client id).
    pub id: String,
    /// The consumer's name.
    pub consumer: String,
    /// API key or client.
    pub kind: CredentialKind,
    /// Production or sandbox.
    pub key_type: KeyType,
    /// The first characters of the secret, to tell keys apart.
    pub hint: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when it expires.
    pub expires_at: Option<i64>,
    /// Unix seconds, when it was revoked.
    pub revoked_at: Option<i64>,
}

/// A new credential to store.
#[derive(Clone, Debug)]
pub struct NewCredential {
    /// Its id.
    pub id: String,
    /// API key or client.
    pub kind: CredentialKind,
    /// Production or sandbox.
    pub key_type: KeyType,
    /// SHA-256 of the secret.
    pub secret_hash: String,
    /// The first characters of the secret.
    pub hint: String,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

fn parse_key_type(s: &str) -> KeyType {
    if s == "sandbox" {
        KeyType::Sandbox
    } else {
        KeyType::Production
    }
}

async fn consumer_id(conn: &mut AnyConnection, name: &str) -> Result<i64, Error> {
    sqlx::query_scalar("SELECT id FROM consumers WHERE name_key = $1")
        .bind(key(name))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found(crate::access::KindId::Consumer, name))
}

/// Gateways whose snapshots carry this consumer's keys.
pub(super) async fn consumer_gateways(
    conn: &mut AnyConnection,
    consumer: i64,
) -> Result<Vec<i64>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT d.gateway_id FROM deployments d JOIN subscriptions s ON s.api_id = d.api_id \
         WHERE s.consumer_id = $1",
    )
    .bind(consumer)
    .fetch_all(&mut *conn)
    .await?)
}

/// The API keys a gateway accepts: keys of consumers subscribed to APIs deployed on it;
/// with `only`, of those consumers (by name key) alone.
pub(super) async fn api_key_grants_of(
    conn: &mut AnyConnection,
    gateway_id: i64,
    only: Option<&[String]>,
) -> Result<Vec<ApiKeyGrant>, Error> {
    let mut sql = String::from(
        "SELECT c.secret_hash, co.spec, c.key_type, a.api_key, c.expires_at FROM credentials c \
         JOIN consumers co ON co.id = c.consumer_id \
         JOIN subscriptions s ON s.consumer_id = c.consumer_id \
         JOIN deployments d ON d.api_id = s.api_id AND d.gateway_id = $1 \
         JOIN apis a ON a.id = s.api_id \
         WHERE c.kind = 'api_key' AND c.revoked_at IS NULL",
    );
    if let Some(names) = only {
        sql.push_str(&super::in_list(" AND co.name_key", 2, names.len()));
    }
    sql.push_str(" ORDER BY c.secret_hash");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(gateway_id);
    for n in only.unwrap_or_default() {
        q = q.bind(n);
    }
    // Rows taken as they come: a million are never all held as rows.
    let mut rows = q.fetch(&mut *conn);
    let mut out: Vec<ApiKeyGrant> = Vec::new();
    while let Some(r) = futures_util::TryStreamExt::try_next(&mut rows).await? {
        let hash: String = r.try_get(0)?;
        let api: String = r.try_get(3)?;
        if let Some(last) = out.last_mut()
            && last.hash == hash
        {
            last.apis.push(api);
            continue;
        }
        let spec: ConsumerSpec = from_json(&r.try_get::<String, _>(1)?)?;
        if spec.blocked {
            continue;
        }
        out.push(ApiKeyGrant {
            hash,
            consumer: spec.name,
            key_type: parse_key_type(&r.try_get::<String, _>(2)?),
            apis: vec![api],
            expires_at: r.try_get::<Option<i64>, _>(4)?.map(|t| t.max(0) as u64),
        });
    }
    Ok(out)
}

impl Store {
    /// Creates a consumer that a portal user owns (an application of theirs).
    pub async fn create_owned_consumer(
        &self,
        spec: &ConsumerSpec,
        owner_user: Option<&str>,
    ) -> Result<Record<ConsumerSpec>, Error> {
        let mut tx = self.write().await?;
        let id = tx.insert(KindId::Consumer, &spec.name, spec).await?;
        if let Some(u) = owner_user {
            sqlx::query("UPDATE consumers SET owner_user = $1 WHERE id = $2")
                .bind(key(u))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.one(&spec.name).await
    }

    /// The consumers a portal user owns, by name.
    pub async fn owned_consumers(&self, user: &str) -> Result<Vec<Record<ConsumerSpec>>, Error> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT spec, version, created_at, updated_at FROM consumers WHERE owner_user = $1 \
             ORDER BY name_key",
        )
        .bind(key(user))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(spec, version, created_at, updated_at)| {
                Ok(Record {
                    spec: from_json(&spec)?,
                    meta: super::Meta {
                        version,
                        created_at,
                        updated_at,
                    },
                })
            })
            .collect()
    }

    /// Whether a portal user owns this consumer.
    pub async fn owns_consumer(&self, user: &str, consumer: &str) -> Result<bool, Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM consumers WHERE name_key = $1 AND owner_user = $2")
                .bind(key(consumer))
                .bind(key(user))
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// A consumer's subscriptions.
    pub async fn subscriptions(&self, consumer: &str) -> Result<Vec<SubscriptionRecord>, Error> {
        let mut conn = self.pool.acquire().await?;
        let id = consumer_id(&mut conn, consumer).await?;
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT a.api_key, s.tier, s.created_at FROM subscriptions s JOIN apis a ON a.id = s.api_id \
             WHERE s.consumer_id = $1 ORDER BY a.api_key",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(api, tier, created_at)| SubscriptionRecord {
                api,
                tier,
                created_at,
            })
            .collect())
    }

    /// Subscribes a consumer to an API (again: changes the tier).
    pub async fn subscribe(
        &self,
        consumer: &str,
        api: &str,
        tier: Option<&str>,
    ) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event(
            "subscribe",
            KindId::Consumer,
            &format!("{consumer} to {api}"),
        );
        let cid = consumer_id(&mut tx, consumer).await?;
        let aid = super::api_row_id(&mut tx, api).await?;
        sqlx::query(
            "INSERT INTO subscriptions (consumer_id, api_id, tier, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer_id, api_id) DO UPDATE SET tier = excluded.tier",
        )
        .bind(cid)
        .bind(aid)
        .bind(tier)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let gws = api_gateway_ids(&mut tx, aid).await?;
        tx.recompile_keys(&gws, KeysTouched::Of(&[consumer]))
            .await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }

    /// Ends a subscription.
    pub async fn unsubscribe(&self, consumer: &str, api: &str) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event(
            "unsubscribe",
            KindId::Consumer,
            &format!("{consumer} from {api}"),
        );
        let cid = consumer_id(&mut tx, consumer).await?;
        let aid = super::api_row_id(&mut tx, api).await?;
        change_one(
            &mut tx,
            sqlx::query("DELETE FROM subscriptions WHERE consumer_id = $1 AND api_id = $2")
                .bind(cid)
                .bind(aid),
            || {
                Error::NotFound(format!(
                    "consumer `{consumer}` is not subscribed to `{api}`"
                ))
            },
        )
        .await?;
        let gws = api_gateway_ids(&mut tx, aid).await?;
        tx.recompile_keys(&gws, KeysTouched::Of(&[consumer]))
            .await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }

    /// A consumer's credentials (never their secrets).
    pub async fn credentials(&self, consumer: &str) -> Result<Vec<CredentialRecord>, Error> {
        let mut conn = self.pool.acquire().await?;
        let cid = consumer_id(&mut conn, consumer).await?;
        let rows = sqlx::query(
            "SELECT id, kind, key_type, hint, created_at, expires_at, revoked_at FROM credentials \
             WHERE consumer_id = $1 ORDER BY created_at, id",
        )
        .bind(cid)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(1)?;
                Ok(CredentialRecord {
                    id: r.try_get(0)?,
                    consumer: consumer.to_owned(),
                    kind: if kind == "client" {
                        CredentialKind::Client
                    } else {
                        CredentialKind::ApiKey
                    },
                    key_type: parse_key_type(&r.try_get::<String, _>(2)?),
                    hint: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    expires_at: r.try_get(5)?,
                    revoked_at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Stores a new credential (its secret hashed).
    pub async fn add_credential(&self, consumer: &str, c: &NewCredential) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event(
            "add_credential",
            KindId::Consumer,
            &format!("{consumer} key {}", c.id),
        );
        let cid = consumer_id(&mut tx, consumer).await?;
        sqlx::query(
            "INSERT INTO credentials (id, consumer_id, kind, key_type, secret_hash, hint, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(cid)
        .bind(c.kind.as_str())
        .bind(c.key_type.as_str())
        .bind(&c.secret_hash)
        .bind(&c.hint)
        .bind(now())
        .bind(c.expires_at)
        .execute(&mut *tx)
        .await?;
        if c.kind == CredentialKind::ApiKey {
            let gws = consumer_gateways(&mut tx, cid).await?;
            tx.recompile_keys(&gws, KeysTouched::Of(&[consumer]))
                .await?;
        }
        tx.commit().await
    }

    /// Replaces an active credential by a new one of the same kind, type and expiry, in one
    /// transaction: the old one is revoked as the new one is added.
    pub async fn replace_credential(
        &self,
        consumer: &str,
        old: &str,
        new: &NewCredential,
    ) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event(
            "regenerate_credential",
            KindId::Consumer,
            &format!("{consumer} key {old} as {}", new.id),
        );
        let cid = consumer_id(&mut tx, consumer).await?;
        let q = sqlx::query(
            "UPDATE credentials SET revoked_at = $1 WHERE id = $2 AND consumer_id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(old)
        .bind(cid);
        change_one(&mut tx, q, || no_credential(consumer, old)).await?;
        sqlx::query(
            "INSERT INTO credentials (id, consumer_id, kind, key_type, secret_hash, hint, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.id)
        .bind(cid)
        .bind(new.kind.as_str())
        .bind(new.key_type.as_str())
        .bind(&new.secret_hash)
        .bind(&new.hint)
        .bind(now())
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        let gws = consumer_gateways(&mut tx, cid).await?;
        tx.recompile_keys(&gws, KeysTouched::Of(&[consumer]))
            .await?;
        tx.commit().await
    }

    /// Revokes a credential: API keys leave the snapshots, clients get no new tokens.
    pub async fn revoke_credential(&self, consumer: &str, id: &str) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event(
            "revoke_credential",
            KindId::Consumer,
            &format!("{consumer} key {id}"),
        );
        let cid = consumer_id(&mut tx, consumer).await?;
        let q = sqlx::query(
            "UPDATE credentials SET revoked_at = $1 WHERE id = $2 AND consumer_id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .bind(cid);
        change_one(&mut tx, q, || no_credential(consumer, id)).await?;
        let gws = consumer_gateways(&mut tx, cid).await?;
        tx.recompile_keys(&gws, KeysTouched::Of(&[consumer]))
            .await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }

    /// A client credential by id: (consumer, key type, secret hash, expires, revoked).
    pub async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, Error> {
        let row = sqlx::query(
            "SELECT co.spec, c.key_type, c.secret_hash, c.expires_at, c.revoked_at FROM credentials c \
             JOIN consumers co ON co.id = c.consumer_id WHERE c.id = $1 AND c.kind = 'client'",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let spec: ConsumerSpec = from_json(&r.try_get::<String, _>(0)?)?;
        Ok(Some(ClientRecord {
            consumer: spec.name,
            key_type: parse_key_type(&r.try_get::<String, _>(1)?),
            secret_hash: r.try_get(2)?,
            expires_at: r.try_get(3)?,
            revoked_at: r.try_get(4)?,
        }))
    }
}

/// A client credential as the token service needs it.
#[derive(Clone, Debug)]
pub struct ClientRecord {
    /// The consumer's name.
    pub consumer: String,
    /// Production or sandbox.
    pub key_type: KeyType,
    /// SHA-256 of the secret.
    pub secret_hash: String,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
}

/// The consumer has no active credential with this id.
fn no_credential(consumer: &str, id: &str) -> Error {
    Error::NotFound(format!(
        "consumer `{consumer}` has no active credential `{id}`: list them with `portico keys list {consumer}` (GET /api/v1/consumers/{consumer}/keys)"
    ))
}
