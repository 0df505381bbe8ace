//! Throttling tiers, and what the gateways need of them.

use std::collections::BTreeMap;

use portico_model::{ConsumerLimits, ConsumerSpec};

use super::from_json;
use crate::error::Error;

/// Consumer and subscription tiers of the consumers subscribed to APIs on a gateway, from
/// rows of (consumer spec, API, subscription tier) sorted by consumer and API.
pub(super) fn consumer_limits(
    rows: Vec<(String, String, Option<String>)>,
) -> Result<Vec<ConsumerLimits>, Error> {
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
