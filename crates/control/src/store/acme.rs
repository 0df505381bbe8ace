//! Automatic certificates: the ACME account per CA directory (credentials sealed), each
//! host's certificate and state, and the challenges open now. Hosts come and go with what
//! gateways with an `acme` listener serve; certificates and challenges reach those gateways'
//! nodes in their snapshots.

use portico_model::{
    AcmeChallenge, AcmeHostState, AcmeHostStatus, AcmeState, ApiSpec, ChallengeKind, GatewaySpec,
    TlsCertificate,
};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Moved, Store, Write, change_one, from_json, now};
use crate::error::Error;

/// A host's automatic certificate, as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AcmeHostRecord {
    /// The host.
    pub host: String,
    /// `pending`, `valid` or `error`.
    pub state: AcmeHostState,
    /// Unix seconds from which the current certificate is valid.
    pub not_before: Option<i64>,
    /// Unix seconds after which it is not.
    pub not_after: Option<i64>,
    /// Unix seconds of the next order: the renewal (two thirds into the lifetime) or a retry.
    pub next_attempt: i64,
    /// Failed orders in a row.
    pub attempts: i64,
    /// Why the last order failed.
    pub last_error: Option<String>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

const SELECT_HOSTS: &str = "SELECT host, state, not_before, not_after, next_attempt, attempts, \
     last_error, updated_at FROM acme_hosts ORDER BY host";

fn host_record(r: &sqlx::any::AnyRow) -> Result<AcmeHostRecord, Error> {
    Ok(AcmeHostRecord {
        host: r.try_get(0)?,
        state: AcmeHostState::parse(&r.try_get::<String, _>(1)?),
        not_before: r.try_get(2)?,
        not_after: r.try_get(3)?,
        next_attempt: r.try_get(4)?,
        attempts: r.try_get(5)?,
        last_error: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

/// What gateways are told about automatic certificates: every host's state and the
/// pending challenges (the certificates themselves are read with the other shared inputs).
pub(super) async fn state_for_snapshots(conn: &mut AnyConnection) -> Result<AcmeState, Error> {
    let hosts = sqlx::query(SELECT_HOSTS)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            let h = host_record(r)?;
            Ok(AcmeHostStatus {
                host: h.host,
                state: h.state,
                not_after: h.not_after,
                next_attempt: Some(h.next_attempt),
                last_error: h.last_error,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let challenges = sqlx::query_as::<_, (String, String, String, String)>(
        "SELECT host, kind, token, key_authorization FROM acme_challenges ORDER BY token",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(host, kind, token, key_authorization)| AcmeChallenge {
        host,
        kind: ChallengeKind::parse(&kind).unwrap_or_default(),
        token,
        key_authorization,
    })
    .collect();
    Ok(AcmeState { challenges, hosts })
}

/// Gateways with a listener taking automatic certificates, with their definitions.
async fn acme_gateways(conn: &mut AnyConnection) -> Result<Vec<(i64, GatewaySpec)>, Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, spec FROM gateways ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::new();
    for (id, spec) in rows {
        let spec: GatewaySpec = from_json(&spec)?;
        if spec
            .listeners
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.acme))
        {
            out.push((id, spec));
        }
    }
    Ok(out)
}

async fn acme_gateway_ids(conn: &mut AnyConnection) -> Result<Vec<i64>, Error> {
    Ok(acme_gateways(conn)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Every host some gateway wants an automatic certificate for: its own, its APIs', and its
/// apps' domains.
async fn wanted_hosts(conn: &mut AnyConnection) -> Result<Vec<String>, Error> {
    let uploaded: Vec<TlsCertificate> =
        sqlx::query_scalar::<_, String>("SELECT hosts FROM certificates WHERE not_after > $1")
            .bind(now())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|h| {
                Ok(TlsCertificate {
                    hosts: from_json(h)?,
                    ..Default::default()
                })
            })
            .collect::<Result<_, Error>>()?;
    let mut hosts = Vec::new();
    for (gid, gw) in acme_gateways(conn).await? {
        let specs: Vec<ApiSpec> = sqlx::query_scalar::<_, String>(
            "SELECT r.spec FROM deployments d \
             JOIN apis a ON a.id = d.api_id \
             JOIN revisions r ON r.api_id = d.api_id AND r.number = d.revision \
             WHERE d.gateway_id = $1 AND a.lifecycle <> 'retired'",
        )
        .bind(gid)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|s| from_json(s))
        .collect::<Result<_, _>>()?;
        // Apps: their custom domains, and the apps host when one is served by path.
        let app_hosts: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT host FROM app_deployments WHERE gateway_id = $1")
                .bind(gid)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .filter_map(|h: String| {
                    if h.is_empty() {
                        gw.effective_apps_host()
                    } else {
                        Some(h)
                    }
                })
                .collect();
        hosts.extend(portico_compile::acme_hosts(
            &gw,
            specs.iter().flat_map(|s| &s.hosts).chain(&app_hosts),
            &uploaded,
        ));
    }
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

impl Store {
    /// Brings the host list in line with what gateways serve now: new hosts start pending,
    /// hosts no longer served (or now covered by an uploaded certificate) are dropped.
    pub async fn acme_reconcile(&self) -> Result<(Vec<AcmeHostRecord>, Moved), Error> {
        let mut tx = self.write().await?;
        let wanted = wanted_hosts(&mut tx).await?;
        let have: Vec<String> = sqlx::query_scalar("SELECT host FROM acme_hosts")
            .fetch_all(&mut *tx)
            .await?;
        let mut changed = false;
        let t = now();
        for h in wanted.iter().filter(|h| !have.contains(h)) {
            sqlx::query(
                "INSERT INTO acme_hosts (host, state, next_attempt, updated_at) VALUES ($1, 'pending', 0, $2)",
            )
            .bind(h)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        for h in have.iter().filter(|h| !wanted.contains(h)) {
            sqlx::query("DELETE FROM acme_hosts WHERE host = $1")
                .bind(h)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM acme_challenges WHERE host = $1")
                .bind(h)
                .execute(&mut *tx)
                .await?;
            changed = true;
        }
        if changed {
            let ids = acme_gateway_ids(&mut tx).await?;
            tx.recompile(&ids).await?;
        }
        let rows = sqlx::query(SELECT_HOSTS)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(host_record)
            .collect::<Result<_, _>>()?;
        let moved = tx.commit().await?;
        Ok((rows, moved))
    }

    /// Every host with its automatic certificate's state.
    pub async fn acme_hosts(&self) -> Result<Vec<AcmeHostRecord>, Error> {
        sqlx::query(SELECT_HOSTS)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(host_record)
            .collect()
    }

    /// Asks for a host's certificate to be ordered now (a renewal before its time, or a
    /// retry without waiting for the back-off).
    pub async fn acme_order_now(&self, host: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        tx.event("order", crate::access::KindId::Acme, host);
        change_one(
            &mut tx,
            sqlx::query("UPDATE acme_hosts SET next_attempt = 0 WHERE host = $1")
                .bind(host.to_ascii_lowercase()),
            || Error::not_found(crate::access::KindId::Acme, host),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The sealed credentials of the account at this CA directory.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT credentials_sealed FROM acme_accounts WHERE directory = $1")
                .bind(directory)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Keeps the (sealed) credentials of a new account.
    pub async fn acme_save_account(&self, directory: &str, sealed: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials_sealed, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (directory) DO UPDATE SET credentials_sealed = excluded.credentials_sealed",
        )
        .bind(directory)
        .bind(sealed)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks an order started: the host is pending unless it has a valid certificate.
    pub async fn acme_ordering(&self, host: &str) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE acme_hosts SET state = CASE WHEN state = 'valid' THEN 'valid' ELSE 'pending' END, \
             updated_at = $2 WHERE host = $1",
        )
        .bind(host)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        self.acme_commit(tx).await
    }

    /// Publishes a challenge to the nodes of the gateways serving its host.
    pub async fn acme_add_challenge(&self, c: &AcmeChallenge) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO acme_challenges (token, host, kind, key_authorization, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token) DO NOTHING",
        )
        .bind(&c.token)
        .bind(&c.host)
        .bind(c.kind.as_str())
        .bind(&c.key_authorization)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        self.acme_commit(tx).await
    }

    /// Stores an issued certificate (key sealed) and closes the host's challenges.
    #[allow(clippy::too_many_arguments)] // one caller, the ACME engine: one row's columns
    pub async fn acme_issued(
        &self,
        host: &str,
        cert_pem: &str,
        key_sealed: &str,
        not_before: i64,
        not_after: i64,
        renew_at: i64,
    ) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE acme_hosts SET state = 'valid', cert_pem = $2, key_sealed = $3, \
             not_before = $4, not_after = $5, next_attempt = $6, attempts = 0, \
             last_error = NULL, updated_at = $7 WHERE host = $1",
        )
        .bind(host)
        .bind(cert_pem)
        .bind(key_sealed)
        .bind(not_before)
        .bind(not_after)
        .bind(renew_at)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        self.acme_settle(tx, host).await
    }

    /// Records a failed order: the host keeps a still-valid certificate, else is in error;
    /// the next attempt is `retry_at(failures in a row)`, which is returned with the moves.
    pub async fn acme_failed(
        &self,
        host: &str,
        error: &str,
        retry_at: impl Fn(i64) -> i64,
    ) -> Result<(i64, Moved), Error> {
        let mut tx = self.write().await?;
        let attempts: i64 = sqlx::query_scalar("SELECT attempts FROM acme_hosts WHERE host = $1")
            .bind(host)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0)
            + 1;
        let next = retry_at(attempts);
        sqlx::query(
            "UPDATE acme_hosts SET state = CASE WHEN not_after > $5 THEN 'valid' ELSE 'error' END, \
             last_error = $2, attempts = $3, next_attempt = $4, updated_at = $5 WHERE host = $1",
        )
        .bind(host)
        .bind(error)
        .bind(attempts)
        .bind(next)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        Ok((next, self.acme_settle(tx, host).await?))
    }

    /// Drops challenges left open by a previous run (their orders are gone with it).
    pub async fn acme_clear_challenges(&self) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM acme_challenges")
            .execute(&mut *tx)
            .await?;
        self.acme_commit(tx).await
    }

    /// Recompiles the ACME gateways in the write's transaction and commits it.
    /// Ends an order of `host` (issued or failed): its challenges go, and the write commits.
    async fn acme_settle(&self, mut tx: Write<'_>, host: &str) -> Result<Moved, Error> {
        sqlx::query("DELETE FROM acme_challenges WHERE host = $1")
            .bind(host)
            .execute(&mut *tx)
            .await?;
        self.acme_commit(tx).await
    }

    async fn acme_commit(&self, mut tx: Write<'_>) -> Result<Moved, Error> {
        let ids = acme_gateway_ids(&mut tx).await?;
        tx.recompile(&ids).await?;
        tx.commit().await
    }
}
