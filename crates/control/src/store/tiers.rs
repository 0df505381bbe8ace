//! Throttling tiers, and what the gateways need of them.

use std::collections::BTreeMap;

use portico_model::{ConsumerLimits, ConsumerSpec};
use sqlx::AnyConnection;

use super::from_json;
use crate::error::Error;

/// Consumer and subscription tiers of the consumers subscribed to APIs on a gateway.
pub(super) async fn consumer_limits(
    conn: &mut AnyConnection,
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
