//! One control-plane node at a time does the background duties that must not run twice
//! (ACME orders and renewals, forgetting silent nodes, sweeping unused app files). On
//! SQLite there is one node and it always leads. On PostgreSQL the leader is the node that
//! holds a session advisory lock on a connection of its own (not a pooled one): it leads
//! while that connection answers, stops the moment it does not, and another node takes
//! the lock within a few seconds of a leader dying (PostgreSQL releases a session's locks
//! when its connection ends).

use std::time::Duration;

use sqlx::Connection as _;
use tokio::sync::watch;

/// The advisory lock key of leadership (Portico's namespace, as the store's locks).
const LEADER_LOCK: i64 = 0x706f_7274_0003;

/// How often a follower tries for the lock, and a leader checks its connection.
const EVERY: Duration = Duration::from_secs(1);

/// Longest a leader waits for its connection to answer before it steps down.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Whether this node leads, as it changes.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    /// The only node: it always leads.
    pub fn always() -> Self {
        Self {
            rx: watch::channel(true).1,
        }
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Returns once this node leads (at once when it does).
    pub async fn until_leader(&mut self) {
        if self.rx.wait_for(|l| *l).await.is_err() && !*self.rx.borrow() {
            // The campaign ended (the process is stopping): never again.
            std::future::pending::<()>().await;
        }
    }

    /// Returns once this node stops leading (never while it leads for ever, as the only
    /// node does).
    pub async fn until_lost(&mut self) {
        if self.rx.wait_for(|l| !*l).await.is_err() {
            // Nothing will change it any more (the only node, or a campaign that ended with
            // the process): what holds now holds for good.
            if *self.rx.borrow() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Campaigns for leadership on the PostgreSQL database at `url` until `stop` turns true.
    pub fn campaign(url: String, mut stop: watch::Receiver<bool>) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = campaign(&url, &tx) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            tx.send_replace(false);
        });
        Self { rx }
    }
}

async fn campaign(url: &str, leading: &watch::Sender<bool>) {
    loop {
        let mut conn = match sqlx::postgres::PgConnection::connect(url).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the database to campaign for the background duties");
                tokio::time::sleep(EVERY).await;
                continue;
            }
        };
        // Follow: try for the lock until it is ours (or the connection fails).
        let held = loop {
            let got: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut conn)
                .await;
            match got {
                Ok(true) => break true,
                Ok(false) => tokio::time::sleep(EVERY).await,
                Err(_) => break false,
            }
        };
        // Lead while the connection answers (it holds the lock).
        if held {
            tracing::info!("this control-plane node leads the background duties (ACME, pruning)");
            leading.send_replace(true);
            loop {
                tokio::time::sleep(EVERY).await;
                let alive =
                    tokio::time::timeout(ANSWER_WITHIN, sqlx::query("SELECT 1").execute(&mut conn))
                        .await;
                if !matches!(alive, Ok(Ok(_))) {
                    break;
                }
            }
            leading.send_replace(false);
            tracing::warn!(
                "lost the database connection that held leadership: background duties stop"
            );
        }
        // A fresh connection (the old one may be half dead); its session lock is gone with it.
        drop(conn);
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_only_node_leads_for_good() {
        let mut l = Leadership::always();
        assert!(l.is_leader());
        l.until_leader().await;
        // Leadership is never lost: waiting for that does not end.
        let lost = tokio::time::timeout(Duration::from_millis(50), l.until_lost()).await;
        assert!(lost.is_err());
    }
}
