//! One control-plane node at a time does the background duties that must not run twice
//! (ACME orders and renewals, forgetting silent nodes, sweeping unused app files). On
//! SQLite there is one node and it always leads. On PostgreSQL the leader is the node that
//! holds a session advisory lock on a connection of its own (not a pooled one): it leads
//! while that connection answers, stops the moment it does not, and another node takes
//! the lock once PostgreSQL has ended the leader's session (which releases its locks).
//!
//! How long that takes: a leader whose process dies is seen at once (its kernel closes the
//! connection). A leader whose host vanishes silently (power, network) sends nothing more,
//! so the connection asks PostgreSQL for TCP keepalives of its own ([`KEEPALIVE`]): the
//! server probes after 5 s of silence, every 2 s, and ends the session after 3 unanswered
//! probes (and `tcp_user_timeout` ends it when a reply stays unacknowledged for 10 s), that
//! is about 11 s; a follower tries every second, so another node leads within about 12 s.
//! (Without them, the operating system's defaults hold the lock for two hours or more.) The
//! old leader, cut off, has stepped down before that: it checks its connection every
//! second and gives up when an answer takes 3 s.

use std::time::Duration;

use sqlx::Connection as _;
use tokio::sync::watch;

/// The advisory lock key of leadership (Portico's namespace, as the store's locks).
const LEADER_LOCK: i64 = 0x706f_7274_0003;

/// How often a follower tries for the lock, and a leader checks its connection.
const EVERY: Duration = Duration::from_secs(1);

/// Longest a leader waits for its connection to answer before it steps down.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Session settings of the leadership connection: PostgreSQL's own TCP keepalives (and
/// user timeout), so that the session, and the lock with it, ends about 11 s after the
/// leader's host goes silent. Ignored on a Unix-domain socket (one host: nothing to lose).
pub const KEEPALIVE: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";

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

/// Opens a connection of the kind leadership is held on: its own (never a pooled one), with
/// [`KEEPALIVE`] set. A server that refuses the settings is logged and the connection used
/// as it is (the lock then outlives a vanished host by the system's TCP timeouts).
pub async fn connect(url: &str) -> Result<sqlx::postgres::PgConnection, sqlx::Error> {
    let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
    if let Err(e) = sqlx::raw_sql(KEEPALIVE).execute(&mut conn).await {
        tracing::warn!(error = %e, "cannot set TCP keepalives on the leadership connection: if this node's host vanishes, its lock is held until the system's TCP timeouts end the session");
    }
    Ok(conn)
}

async fn campaign(url: &str, leading: &watch::Sender<bool>) {
    loop {
        let mut conn = match connect(url).await {
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
