//! Committed changes reach every control-plane node. On SQLite there is one node and the
//! [`Hub`](crate::Hub) is told in process. On PostgreSQL a write also sends a notification
//! on [`CHANNEL`] inside its transaction (delivered only if it commits), every node listens
//! on a connection of its own ([`follow`]) and tells its Hub, so a gateway's long-poll on
//! node B wakes for a deploy written through node A; a periodic check of the stored
//! versions catches whatever a dropped connection missed.

use std::time::Duration;

use super::{Backend, Store};
use crate::error::Error;

/// The notification channel.
pub(crate) const CHANNEL: &str = "portico_changes";

/// Longest payload sent (PostgreSQL's limit is 8000 bytes): more changes say "check all".
const MAX_PAYLOAD: usize = 7000;

/// How often each node compares its Hub with the stored versions anyway.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The payload announcing new snapshot versions: `v:GID=VERSION,...`, or `all`.
pub(crate) fn versions_payload(moved: &[(i64, u64)]) -> String {
    let mut out = String::from("v:");
    for (i, (gid, version)) in moved.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{gid}={version}"));
        if out.len() > MAX_PAYLOAD {
            return "all".into();
        }
    }
    out
}

/// What a notification asks a node to do.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    /// These gateways have these snapshot versions.
    Versions(Vec<(i64, u64)>),
    /// Wake this gateway's watchers (its token changed).
    Wake(i64),
    /// Read every version from the database.
    All,
}

fn parse(payload: &str) -> Notice {
    let pairs = |s: &str| -> Option<Vec<(i64, u64)>> {
        s.split(',')
            .map(|p| {
                let (g, v) = p.split_once('=')?;
                Some((g.parse().ok()?, v.parse().ok()?))
            })
            .collect()
    };
    if let Some(list) = payload.strip_prefix("v:")
        && let Some(moved) = pairs(list)
    {
        return Notice::Versions(moved);
    }
    if let Some(gid) = payload.strip_prefix("w:").and_then(|g| g.parse().ok()) {
        return Notice::Wake(gid);
    }
    // Unknown (a newer node's): the safe answer is a full check.
    Notice::All
}

impl Store {
    /// Wakes a gateway's watchers on every control-plane node (its token was rotated or
    /// revoked, or it was deleted): their long-polls check the token again.
    pub async fn wake(&self, gid: i64) {
        self.hub.wake(gid);
        if self.backend == Backend::Postgres {
            let sent = sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(format!("w:{gid}"))
                .execute(&self.pool)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot tell the other control-plane nodes");
            }
        }
    }

    /// Tells the Hub every gateway's stored snapshot version (only newer ones move it).
    pub async fn announce_stored_versions(&self) -> Result<(), Error> {
        let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT gateway_id, version FROM snapshots")
            .fetch_all(&self.pool)
            .await?;
        let moved: Vec<(i64, u64)> = rows.into_iter().map(|(g, v)| (g, v as u64)).collect();
        self.hub.publish(&moved);
        Ok(())
    }
}

/// Follows the other control-plane nodes' changes (PostgreSQL only) until `stop` turns
/// true: listens on [`CHANNEL`], reconnecting after a second when the connection drops, and
/// checks the stored versions after each (re)connection and every few seconds.
pub async fn follow(
    store: std::sync::Weak<crate::ControlPlane>,
    url: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect(&url).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for the other control-plane nodes' changes; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = stopped(&mut stop) => return,
                }
            }
        };
        // Whatever happened while not listening.
        let Some(st) = store.upgrade() else { return };
        if let Err(e) = st.store.announce_stored_versions().await {
            tracing::warn!(error = %e, "cannot read the stored snapshot versions");
        }
        drop(st);
        loop {
            tokio::select! {
                () = stopped(&mut stop) => return,
                _ = check.tick() => {
                    let Some(st) = store.upgrade() else { return };
                    if let Err(e) = st.store.announce_stored_versions().await {
                        tracing::warn!(error = %e, "cannot read the stored snapshot versions");
                    }
                }
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => {
                        let Some(st) = store.upgrade() else { return };
                        match parse(n.payload()) {
                            Notice::Versions(moved) => st.hub.publish(&moved),
                            Notice::Wake(gid) => st.hub.wake(gid),
                            Notice::All => {
                                if let Err(e) = st.store.announce_stored_versions().await {
                                    tracing::warn!(error = %e, "cannot read the stored snapshot versions");
                                }
                            }
                        }
                    }
                    // The connection dropped (notifications may be lost): start over.
                    Ok(None) | Err(_) => break,
                },
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_say_what_moved_and_fall_back_to_a_full_check() {
        let p = versions_payload(&[(1, 7), (12, 3)]);
        assert_eq!(p, "v:1=7,12=3");
        assert_eq!(parse(&p), Notice::Versions(vec![(1, 7), (12, 3)]));
        assert_eq!(parse("w:4"), Notice::Wake(4));
        let many: Vec<(i64, u64)> = (0..2000).map(|g| (g, 1_000_000)).collect();
        assert_eq!(versions_payload(&many), "all");
        assert_eq!(parse("all"), Notice::All);
        assert_eq!(parse("v:1=x"), Notice::All);
        assert_eq!(parse("something new"), Notice::All);
    }
}
