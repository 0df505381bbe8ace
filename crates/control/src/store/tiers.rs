//! Throttling tiers, and what the gateways need of them.

use std::collections::BTreeMap;

use portico_model::{ConsumerLimits, ConsumerSpec};
use sqlx::AnyConnection;

use super::from_json;
use crate::error::Error;

/// Consumer and subscription tiers of the consumers subscribed to APIs on a gateway; with
/// `only`, of those consumers (by name key) alone.
pub(super) async fn consumer_limits_of(
    conn: &mut AnyConnection,
    gateway_id: i64,
    only: Option<&[String]>,
) -> Result<Vec<ConsumerLimits>, Error> {
    let mut sql = String::from(
        "SELECT co.spec, a.api_key, s.tier FROM subscriptions s \
         JOIN consumers co ON co.id = s.consumer_id JOIN apis a ON a.id = s.api_id \
         JOIN deployments d ON d.api_id = s.api_id AND d.gateway_id = $1",
    );
    if let Some(names) = only {
        sql.push_str(&super::in_list(" WHERE co.name_key", 2, names.len()));
    }
    sql.push_str(" ORDER BY co.name_key, a.api_key");
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(gateway_id);
    for n in only.unwrap_or_default() {
        q = q.bind(n);
    }
    // Rows taken as they come: a million are never all held as rows.
    let mut rows = q.fetch(&mut *conn);
    let mut out: Vec<ConsumerLimits> = Vec::new();
    while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
        let (spec, api, tier): (String, String, Option<String>) = row;
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
