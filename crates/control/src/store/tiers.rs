//! Throttling tiers, and what the gateways need of them.

use std::collections::BTreeMap;

use portico_model::{ConsumerLimits, ConsumerSpec, Tier};
use sqlx::SqliteConnection;

use super::{Record, Store, all_gateway_ids, from_json, get, key, list};
use crate::access::KindId;
use crate::error::Error;
use crate::page::Page;

/// Every tier.
pub(super) async fn all_tiers(conn: &mut SqliteConnection) -> Result<Vec<Tier>, Error> {
    sqlx::query_scalar::<_, String>("SELECT spec FROM tiers")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|s| from_json(s))
        .collect()
}

/// Consumer and subscription tiers of the consumers subscribed to APIs on a gateway.
pub(super) async fn consumer_limits(
    conn: &mut SqliteConnection,
    gateway_id: i64,
) -> Result<Vec<ConsumerLimits>, Error> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT co.spec, a.api_key, s.tier FROM subscriptions s \
         JOIN consumers co ON co.id = s.consumer_id JOIN apis a ON a.id = s.api_id \
         JOIN deployments d ON d.api_id = s.api_id AND d.gateway_id = $1 \
         ORDER BY co.name_key, a.api_key",
    )
    .bind(gateway_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<ConsumerLimits> = Vec::new();
    for (spec, api, tier) in rows {
        let spec: ConsumerSpec = from_json(&spec)?;
        if spec.blocked {
            // A blocked consumer is unknown to its gateways: its tokens open nothing.
            continue;
        }
        if out.last().is_none_or(|c| c.name != spec.name) {
            out.push(ConsumerLimits {
                name: spec.name.clone(),
                tier: spec.tier.clone(),
                subscriptions: BTreeMap::new(),
                apis: Vec::new(),
            });
        }
        if let Some(last) = out.last_mut() {
            last.apis.push(api.clone());
            if let Some(t) = tier {
                last.subscriptions.insert(api, t);
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Every tier.
    pub async fn tiers(&self, page: &Page) -> Result<Vec<Record<Tier>>, Error> {
        list(&self.pool, KindId::Tier, page).await
    }

    /// One tier.
    pub async fn tier(&self, name: &str) -> Result<Record<Tier>, Error> {
        get(&self.pool, KindId::Tier, name).await
    }

    /// Creates a tier.
    pub async fn create_tier(&self, spec: &Tier) -> Result<Record<Tier>, Error> {
        let mut tx = self.write().await?;
        tx.insert(KindId::Tier, &spec.name, spec).await?;
        tx.commit().await?;
        self.tier(&spec.name).await
    }

    /// Changes a tier; every gateway using it recompiles.
    pub async fn update_tier(
        &self,
        name: &str,
        spec: &Tier,
        expected: i64,
    ) -> Result<Record<Tier>, Error> {
        if key(&spec.name) != key(name) {
            return Err(Error::Conflict(
                "a tier cannot be renamed: create a new one".into(),
            ));
        }
        let mut tx = self.write().await?;
        tx.update(KindId::Tier, name, spec, expected).await?;
        let all = all_gateway_ids(&mut tx).await?;
        tx.recompile(&all).await?;
        tx.commit().await?;
        Ok(self.tier(name).await?)
    }

    /// Deletes a tier nothing uses.
    pub async fn delete_tier(&self, name: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        let subs: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE lower(tier) = $1")
                .bind(key(name))
                .fetch_one(&mut *tx)
                .await?;
        let consumers: Vec<String> = sqlx::query_scalar("SELECT spec FROM consumers")
            .fetch_all(&mut *tx)
            .await?;
        let by_consumer = consumers
            .iter()
            .filter_map(|s| from_json::<ConsumerSpec>(s).ok())
            .any(|c| c.tier.is_some_and(|t| key(&t) == key(name)));
        if subs > 0 || by_consumer {
            return Err(Error::Conflict(format!(
                "tier `{name}` is used by consumers or subscriptions: move them to another tier first"
            )));
        }
        tx.delete(KindId::Tier, name).await?;
        // Deployed APIs that name it would no longer compile: that refuses the delete.
        let all = all_gateway_ids(&mut tx).await?;
        tx.recompile(&all).await.map_err(|e| match e {
            Error::Compile(m) => {
                Error::Conflict(format!("tier `{name}` is used by a deployed API: {m}"))
            }
            other => other,
        })?;
        tx.commit().await?;
        Ok(())
    }
}
