//! Nodes: what each gateway node last reported.

use super::*;

impl Store {
    /// Records a node's report. `key_hash` is the SHA-256 of the node's key (none for the
    /// built-in node, reported in-process): the first report binds the node id to it and
    /// later ones must match. A gateway takes at most `max_nodes` nodes; nodes silent for
    /// `forget_after` make room.
    pub async fn report_node(
        &self,
        gateway_id: i64,
        report: &portico_model::NodeReport,
        key_hash: Option<&str>,
        limits: NodeLimits,
    ) -> Result<(), Error> {
        match self.backend {
            // Every write holds the writer lock: a write that started as a read would
            // otherwise meet SQLITE_BUSY_SNAPSHOT when another connection committed meanwhile.
            Backend::Sqlite => {
                let mut tx = self.write().await?;
                record_report(&mut tx, gateway_id, report, key_hash, limits).await?;
                tx.commit().await?;
            }
            // Reports touch only their gateway's node rows: they take that gateway's own
            // lock (for the count of its nodes), never the lock every write takes, so the
            // reports of a fleet never queue behind deploys or one another's gateways.
            Backend::Postgres => {
                let begin = format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({REPORT_LOCK}, {})",
                    gateway_id as i32
                );
                let mut tx = self.pool.begin_with(AssertSqlSafe(begin)).await?;
                record_report(&mut tx, gateway_id, report, key_hash, limits).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Forgets the nodes silent for longer than `after`; answers how many.
    pub async fn prune_nodes(&self, after: std::time::Duration) -> Result<u64, Error> {
        let _w = self.write.lock().await;
        let done = sqlx::query("DELETE FROM nodes WHERE last_seen < $1")
            .bind(now() - after.as_secs() as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Every node of every gateway, by gateway id.
    pub async fn all_nodes(&self) -> Result<HashMap<i64, Vec<NodeRecord>>, Error> {
        let rows = sqlx::query(
            "SELECT gateway_id, node_id, hostname, applied_version, applied_hash, last_error, last_seen, \
             last_error_at, unhealthy_endpoints FROM nodes ORDER BY gateway_id, node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<i64, Vec<NodeRecord>> = HashMap::new();
        for r in &rows {
            out.entry(r.try_get(0)?).or_default().push(NodeRecord {
                node_id: r.try_get(1)?,
                hostname: r.try_get(2)?,
                applied_version: r.try_get::<Option<i64>, _>(3)?.map(|v| v as u64),
                applied_hash: r.try_get(4)?,
                last_error: r.try_get(5)?,
                last_seen: r.try_get(6)?,
                last_error_at: r.try_get(7)?,
                unhealthy_endpoints: endpoints(r.try_get(8)?),
            });
        }
        Ok(out)
    }

    /// Every gateway with its snapshot version and hash, in name order.
    pub async fn gateways_with_snapshots(
        &self,
    ) -> Result<Vec<(i64, GatewayRecord, u64, Option<String>)>, Error> {
        let rows = sqlx::query(
            "SELECT g.id, g.spec, g.builtin, g.token_hash, g.linked_at, g.version, g.created_at, \
             g.updated_at, s.version, s.hash FROM gateways g LEFT JOIN snapshots s ON s.gateway_id = g.id \
             ORDER BY g.name_key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let g = gateway_row(r)?;
                let v: Option<i64> = r.try_get(8)?;
                Ok((g.id, g, v.unwrap_or(0) as u64, r.try_get(9)?))
            })
            .collect()
    }

    /// What the compiler noticed about each gateway's snapshot (routes that match the same
    /// requests), by gateway id.
    pub async fn snapshot_warnings(&self) -> Result<HashMap<i64, Vec<String>>, Error> {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT gateway_id, warnings FROM snapshots")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(gid, w)| Ok((gid, from_json(&w)?)))
            .collect()
    }

    /// The nodes of a gateway.
    pub async fn nodes(&self, gateway_id: i64) -> Result<Vec<NodeRecord>, Error> {
        let rows = sqlx::query(
            "SELECT node_id, hostname, applied_version, applied_hash, last_error, last_seen, \
             last_error_at, unhealthy_endpoints FROM nodes WHERE gateway_id = $1 ORDER BY node_id",
        )
        .bind(gateway_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRecord {
                    node_id: r.try_get(0)?,
                    hostname: r.try_get(1)?,
                    applied_version: r.try_get::<Option<i64>, _>(2)?.map(|v| v as u64),
                    applied_hash: r.try_get(3)?,
                    last_error: r.try_get(4)?,
                    last_seen: r.try_get(5)?,
                    last_error_at: r.try_get(6)?,
                    unhealthy_endpoints: endpoints(r.try_get(7)?),
                })
            })
            .collect()
    }
}

/// The first of the two 32-bit keys of a gateway's report lock (PostgreSQL advisory locks
/// of two keys never meet the one-key locks writes take); the second is the gateway id.
const REPORT_LOCK: i32 = 0x706f_7274;

/// Checks and stores one node report inside a transaction.
async fn record_report(
    conn: &mut AnyConnection,
    gateway_id: i64,
    report: &portico_model::NodeReport,
    key_hash: Option<&str>,
    limits: NodeLimits,
) -> Result<(), Error> {
    let t = now();
    let bound: Option<Option<String>> =
        sqlx::query_scalar("SELECT key_hash FROM nodes WHERE gateway_id = $1 AND node_id = $2")
            .bind(gateway_id)
            .bind(&report.node_id)
            .fetch_optional(&mut *conn)
            .await?;
    match (&bound, key_hash) {
        (Some(Some(held)), Some(given)) if held != given => {
            return Err(Error::Conflict(format!(
                "node id `{}` belongs to another node of this gateway (its key differs): a copied cache directory? Remove `node-id` and `node-key` from this node's cache directory to give it an identity of its own",
                report.node_id
            )));
        }
        (Some(_), _) => {}
        (None, _) => {
            sqlx::query("DELETE FROM nodes WHERE gateway_id = $1 AND last_seen < $2")
                .bind(gateway_id)
                .bind(t - limits.forget_after.as_secs() as i64)
                .execute(&mut *conn)
                .await?;
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE gateway_id = $1")
                .bind(gateway_id)
                .fetch_one(&mut *conn)
                .await?;
            if count as usize >= limits.max_nodes {
                return Err(Error::Conflict(format!(
                    "this gateway already has {count} nodes, the most it may have: stop one (nodes silent for {} s are forgotten) or start the control plane with a higher --max-nodes-per-gateway",
                    limits.forget_after.as_secs()
                )));
            }
        }
    }
    sqlx::query(
        "INSERT INTO nodes (gateway_id, node_id, hostname, applied_version, applied_hash, last_error, last_error_at, last_seen, key_hash, unhealthy_endpoints) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (gateway_id, node_id) DO UPDATE SET hostname = excluded.hostname, \
         applied_version = excluded.applied_version, applied_hash = excluded.applied_hash, \
         last_error = excluded.last_error, last_error_at = excluded.last_error_at, \
         unhealthy_endpoints = excluded.unhealthy_endpoints, \
         last_seen = excluded.last_seen, key_hash = COALESCE(nodes.key_hash, excluded.key_hash)",
    )
    .bind(gateway_id)
    .bind(&report.node_id)
    .bind(&report.hostname)
    .bind(report.applied_version.map(|v| v as i64))
    .bind(&report.applied_hash)
    .bind(&report.last_error)
    .bind(report.last_error_at.map(|v| v as i64))
    .bind(t)
    .bind(key_hash)
    .bind(if report.unhealthy_endpoints.is_empty() {
        None
    } else {
        serde_json::to_string(
            &report.unhealthy_endpoints[..report
                .unhealthy_endpoints
                .len()
                .min(portico_model::MAX_REPORTED_ENDPOINTS)],
        )
        .ok()
    })
    .execute(&mut *conn)
    .await
    .map_err(|e| match &e {
        // The gateway was deleted while its node reported (reports do not wait for writes).
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c == "23503") => {
            Error::NotFound("this node's gateway was deleted".into())
        }
        _ => Error::Db(e),
    })?;
    Ok(())
}

/// The stored list of a node's unhealthy endpoints (none when unreadable: it is advisory).
fn endpoints(text: Option<String>) -> Vec<portico_model::UnhealthyEndpoint> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}
