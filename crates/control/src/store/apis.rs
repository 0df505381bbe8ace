//! APIs, their revisions and deployments.

use super::*;

/// The columns of an API's row that make its [`ApiRecord`].
const API_COLUMNS: &str = "api_key, spec, lifecycle, version, created_at, updated_at";

impl Store {
    /// Every API.
    pub async fn apis(&self, page: &Page) -> Result<Vec<ApiRecord>, Error> {
        page_rows(&self.pool, KindId::Api, API_COLUMNS, page)
            .await?
            .iter()
            .map(api_row)
            .collect()
    }

    /// One API by id.
    pub async fn api(&self, id: &str) -> Result<ApiRecord, Error> {
        api_row(&row_of(&self.pool, KindId::Api, API_COLUMNS, id).await?)
    }

    /// Creates an API (lifecycle `created`).
    pub async fn create_api(&self, spec: &ApiSpec) -> Result<ApiRecord, Error> {
        let id = spec.id();
        let mut tx = self.write().await?;
        tx.insert(KindId::Api, &id, spec).await?;
        tx.commit().await?;
        self.api(&id).await
    }

    /// Replaces an API's working definition (deployed revisions do not change).
    pub async fn update_api(
        &self,
        id: &str,
        spec: &ApiSpec,
        expected: i64,
    ) -> Result<ApiRecord, Error> {
        if spec.id() != key(id) {
            return Err(Error::Conflict(format!(
                "name and version make the API's id (`{}`), so they cannot change here: create a new API for a new version",
                spec.id()
            )));
        }
        let mut tx = self.write().await?;
        tx.update(KindId::Api, id, spec, expected).await?;
        tx.commit().await?;
        self.api(id).await
    }

    /// Moves an API to a lifecycle state; the gateways it runs on recompile.
    pub async fn set_lifecycle(
        &self,
        id: &str,
        state: Lifecycle,
        expected: Option<i64>,
    ) -> Result<(ApiRecord, Moved), Error> {
        let mut tx = self.write().await?;
        tx.audit(
            "set_lifecycle",
            crate::access::KindId::Api,
            &format!("{id} -> {}", lifecycle_str(state)),
            expected,
            expected.map(|v| v.saturating_add(1)),
        );
        let (api_id, version): (i64, i64) =
            sqlx::query_as("SELECT id, version FROM apis WHERE api_key = $1")
                .bind(key(id))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found(crate::access::KindId::Api, id))?;
        if expected.is_some_and(|e| e != version) {
            return Err(stale(KindId::Api, id));
        }
        sqlx::query(
            "UPDATE apis SET lifecycle = $1, version = version + 1, updated_at = $2 WHERE id = $3",
        )
        .bind(lifecycle_str(state))
        .bind(now())
        .bind(api_id)
        .execute(&mut *tx)
        .await?;
        // A lifecycle changes routes, not which keys open the API.
        let ids = api_gateway_ids(&mut tx, api_id).await?;
        tx.recompile_keys(&ids, super::KeysTouched::Of(&[])).await?;
        let moved = tx.commit().await?;
        Ok((self.api(id).await?, moved))
    }

    /// Deletes an API that is deployed nowhere.
    /// Deletes an API. One deployed somewhere is refused, naming the gateways, unless
    /// `force`: then it is undeployed from them in the same write. Answers the gateways it
    /// was undeployed from and the snapshots that moved.
    pub async fn delete_api(&self, id: &str, force: bool) -> Result<(Vec<String>, Moved), Error> {
        let mut tx = self.write().await?;
        let api_id = api_row_id(&mut tx, id).await?;
        let on: Vec<String> = deployed_gateway_names(&mut tx, api_id, None).await?;
        if !on.is_empty() && !force {
            return Err(Error::Conflict(format!(
                "API `{id}` is deployed on {}: undeploy it first, or delete with --force (`?force=true`) to undeploy it there too",
                on.join(", ")
            )));
        }
        let gids: Vec<i64> =
            sqlx::query_scalar("SELECT gateway_id FROM deployments WHERE api_id = $1")
                .bind(api_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.delete(KindId::Api, id).await?;
        tx.recompile(&gids).await?;
        let moved = tx.commit().await?;
        Ok((on, moved))
    }

    // ---- revisions ----

    /// Freezes the API's current definition as its next revision; prunes the oldest
    /// undeployed revisions beyond `max_revisions`.
    pub async fn create_revision(&self, id: &str, note: &str) -> Result<RevisionRecord, Error> {
        let mut tx = self.write().await?;
        tx.event("create_revision", KindId::Api, id);
        let (api_id, spec): (i64, String) =
            sqlx::query_as("SELECT id, spec FROM apis WHERE api_key = $1")
                .bind(key(id))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found(crate::access::KindId::Api, id))?;
        let numbers: Vec<i64> =
            sqlx::query_scalar("SELECT number FROM revisions WHERE api_id = $1 ORDER BY number")
                .bind(api_id)
                .fetch_all(&mut *tx)
                .await?;
        let max = self.max_revisions.max(1) as usize;
        let mut to_prune = Vec::new();
        if numbers.len() >= max {
            let deployed: Vec<i64> =
                sqlx::query_scalar("SELECT DISTINCT revision FROM deployments WHERE api_id = $1")
                    .bind(api_id)
                    .fetch_all(&mut *tx)
                    .await?;
            let mut need = numbers.len() + 1 - max;
            for n in &numbers {
                if need == 0 {
                    break;
                }
                if !deployed.contains(n) {
                    to_prune.push(*n);
                    need -= 1;
                }
            }
            if need > 0 {
                return Err(Error::Conflict(format!(
                    "API `{id}` keeps at most {max} revisions and every one of them is deployed: undeploy one first"
                )));
            }
        }
        for n in &to_prune {
            sqlx::query("DELETE FROM revisions WHERE api_id = $1 AND number = $2")
                .bind(api_id)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        }
        let number = numbers.last().copied().unwrap_or(0) + 1;
        let t = now();
        sqlx::query(
            "INSERT INTO revisions (api_id, number, spec, note, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(api_id)
        .bind(number)
        .bind(&spec)
        .bind(note)
        .bind(t)
        .bind(super::write::actor())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if !to_prune.is_empty() {
            tracing::info!(api = id, pruned = ?to_prune, "old revisions pruned");
        }
        self.revision(id, number as u32).await
    }

    /// The revisions of an API, newest first.
    pub async fn revisions(&self, id: &str) -> Result<Vec<RevisionRecord>, Error> {
        let mut conn = self.pool.acquire().await?;
        let api_id = api_row_id(&mut conn, id).await?;
        let rows: Vec<(i64, String, String, i64, String)> = sqlx::query_as(
            "SELECT number, spec, note, created_at, created_by FROM revisions WHERE api_id = $1 \
             ORDER BY number DESC",
        )
        .bind(api_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (number, spec, note, created_at, created_by) in rows {
            out.push(RevisionRecord {
                api: key(id),
                number: number as u32,
                note,
                spec: from_json(&spec)?,
                deployed_on: deployed_gateway_names(&mut conn, api_id, Some(number)).await?,
                created_at,
                created_by,
            });
        }
        Ok(out)
    }

    /// One revision.
    pub async fn revision(&self, id: &str, number: u32) -> Result<RevisionRecord, Error> {
        self.revisions(id)
            .await?
            .into_iter()
            .find(|r| r.number == number)
            .ok_or_else(|| Error::NotFound(format!("API `{id}` has no revision {number}: list them with `portico revisions list {id}` (GET /api/v1/apis/{id}/revisions)")))
    }

    /// Deletes a revision that is deployed nowhere.
    pub async fn delete_revision(&self, id: &str, number: u32) -> Result<(), Error> {
        let mut tx = self.write().await?;
        tx.event(
            "delete_revision",
            KindId::Api,
            &format!("{id} revision {number}"),
        );
        let api_id = api_row_id(&mut tx, id).await?;
        let on = deployed_gateway_names(&mut tx, api_id, Some(number as i64)).await?;
        if !on.is_empty() {
            return Err(Error::Conflict(format!(
                "revision {number} of `{id}` is deployed on {}: undeploy it or deploy another revision first",
                on.join(", ")
            )));
        }
        change_one(
            &mut tx,
            sqlx::query("DELETE FROM revisions WHERE api_id = $1 AND number = $2")
                .bind(api_id)
                .bind(number as i64),
            || Error::NotFound(format!("API `{id}` has no revision {number}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- deployments ----

    /// Deploys revision `number` of an API to every gateway named, replacing what ran there
    /// (a rollback is deploying an older revision). All or nothing.
    pub async fn deploy(
        &self,
        id: &str,
        number: u32,
        gateways: &[String],
    ) -> Result<(Vec<DeploymentRecord>, Moved), Error> {
        let mut tx = self.write().await?;
        tx.event(
            "deploy",
            KindId::Api,
            &format!("{id} revision {number} to {}", gateways.join(", ")),
        );
        // The API and whether it has that revision, in one round trip.
        let (api_id, lifecycle, exists): (i64, String, Option<i64>) = sqlx::query_as(
            "SELECT a.id, a.lifecycle, r.number FROM apis a \
             LEFT JOIN revisions r ON r.api_id = a.id AND r.number = $2 WHERE a.api_key = $1",
        )
        .bind(key(id))
        .bind(number as i64)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found(crate::access::KindId::Api, id))?;
        if parse_lifecycle(&lifecycle) == Lifecycle::Retired {
            return Err(Error::Conflict(format!(
                "API `{id}` is retired and cannot be deployed: move it back to published first"
            )));
        }
        if exists.is_none() {
            return Err(Error::NotFound(format!(
                "API `{id}` has no revision {number}: create one with `portico revisions create {id}` (POST /api/v1/apis/{id}/revisions)"
            )));
        }
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for g in gateways {
            match sqlx::query_scalar::<_, i64>("SELECT id FROM gateways WHERE name_key = $1")
                .bind(key(g))
                .fetch_optional(&mut *tx)
                .await?
            {
                Some(gid) => ids.push(gid),
                None => missing.push(g.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::NotFound(format!(
                "no gateway named {}: list them with `portico gateways list` (GET /api/v1/gateways)",
                missing.join(", ")
            )));
        }
        // Where the API already runs, a revision changes no consumer's keys: those
        // gateways compile from what they hold.
        let already: Vec<i64> =
            sqlx::query_scalar("SELECT gateway_id FROM deployments WHERE api_id = $1")
                .bind(api_id)
                .fetch_all(&mut *tx)
                .await?;
        let t = now();
        for gid in &ids {
            sqlx::query(
                "INSERT INTO deployments (api_id, gateway_id, revision, deployed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (api_id, gateway_id) DO UPDATE SET revision = excluded.revision, deployed_at = excluded.deployed_at",
            )
            .bind(api_id)
            .bind(gid)
            .bind(number as i64)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        let (running, fresh): (Vec<i64>, Vec<i64>) = ids.iter().partition(|g| already.contains(g));
        tx.recompile_checked_keys(&running, super::KeysTouched::Of(&[]))
            .await?;
        tx.recompile_checked(&fresh).await?;
        let moved = tx.commit().await?;
        let all = self.deployments(Some(id)).await?;
        Ok((all, moved))
    }

    /// Takes an API off a gateway.
    pub async fn undeploy(&self, id: &str, gateway: &str) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.event("undeploy", KindId::Api, &format!("{id} from {gateway}"));
        let api_id = api_row_id(&mut tx, id).await?;
        let gid: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE name_key = $1")
            .bind(key(gateway))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(crate::access::KindId::Gateway, gateway))?;
        change_one(
            &mut tx,
            sqlx::query("DELETE FROM deployments WHERE api_id = $1 AND gateway_id = $2")
                .bind(api_id)
                .bind(gid),
            || Error::NotFound(format!("API `{id}` is not deployed on gateway `{gateway}`")),
        )
        .await?;
        tx.recompile(&[gid]).await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }

    /// What runs where, optionally for one API.
    pub async fn deployments(&self, api: Option<&str>) -> Result<Vec<DeploymentRecord>, Error> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT a.api_key, g.spec, d.revision, d.deployed_at FROM deployments d \
             JOIN apis a ON a.id = d.api_id JOIN gateways g ON g.id = d.gateway_id \
             WHERE ($1 IS NULL OR a.api_key = $1) ORDER BY a.api_key, g.name_key",
        )
        .bind(api.map(key))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(api, g, revision, deployed_at)| {
                let g: GatewaySpec = from_json(&g)?;
                Ok(DeploymentRecord {
                    api,
                    gateway: g.name,
                    revision: revision as u32,
                    deployed_at,
                })
            })
            .collect()
    }
}
