//! Gateways: deploy targets, their credentials and snapshots.

use super::*;

/// The columns of a gateway's row that make its [`GatewayRecord`].
const GATEWAY_COLUMNS: &str =
    "id, spec, builtin, token_hash, linked_at, version, created_at, updated_at";

impl Store {
    /// Creates the built-in gateway when it does not exist yet.
    pub async fn ensure_default_gateway(&self, port: u16) -> Result<Moved, Error> {
        if self.gateway(DEFAULT_GATEWAY).await.is_ok() {
            return Ok(Vec::new());
        }
        let mut spec = GatewaySpec::new(DEFAULT_GATEWAY, GatewayKind::Hybrid);
        spec.description = "Built into the control plane".into();
        spec.listeners = vec![Listener::new(port, ListenerProtocol::Http)];
        let mut tx = self.write().await?;
        // Again under the writer lock: another control-plane node starting at the same
        // moment may have made it meanwhile.
        let made: Option<i64> = sqlx::query_scalar("SELECT id FROM gateways WHERE name_key = $1")
            .bind(key(DEFAULT_GATEWAY))
            .fetch_optional(&mut *tx)
            .await?;
        if made.is_some() {
            return Ok(Vec::new());
        }
        tx.audit(
            "create",
            crate::access::KindId::Gateway,
            DEFAULT_GATEWAY,
            None,
            Some(1),
        );
        let t = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO gateways (name_key, spec, builtin, version, created_at, updated_at) \
             VALUES ($1, $2, 1, 1, $3, $3) RETURNING id",
        )
        .bind(key(DEFAULT_GATEWAY))
        .bind(to_json(&spec)?)
        .bind(t)
        .fetch_one(&mut *tx)
        .await?;
        tx.recompile(&[id]).await?;
        let moved = tx.commit().await?;
        Ok(moved)
    }

    /// Every gateway, by name.
    pub async fn gateways(&self, page: &Page) -> Result<Vec<GatewayRecord>, Error> {
        super::page_rows(&self.pool, KindId::Gateway, GATEWAY_COLUMNS, page)
            .await?
            .iter()
            .map(gateway_row)
            .collect()
    }

    /// One gateway by name (case-insensitive).
    pub async fn gateway(&self, name: &str) -> Result<GatewayRecord, Error> {
        gateway_row(&super::row_of(&self.pool, KindId::Gateway, GATEWAY_COLUMNS, name).await?)
    }

    /// The row id of a gateway.
    pub async fn gateway_id(&self, name: &str) -> Result<i64, Error> {
        Ok(self.gateway(name).await?.id)
    }

    /// Creates a gateway, optionally with credentials.
    pub async fn create_gateway(&self, spec: &GatewaySpec) -> Result<GatewayRecord, Error> {
        self.create_linked_gateway(spec, None).await
    }

    /// Creates a gateway with the credentials it was installed with.
    pub async fn create_linked_gateway(
        &self,
        spec: &GatewaySpec,
        creds: Option<&Credentials>,
    ) -> Result<GatewayRecord, Error> {
        let mut tx = self.write().await?;
        tx.audit(
            "create",
            crate::access::KindId::Gateway,
            &spec.name,
            None,
            Some(1),
        );
        let t = now();
        // A name taken already inserts nothing (one round trip for the check and the write).
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO gateways (name_key, spec, builtin, token_hash, jwt_secret, linked_at, version, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, $4, $5, 1, $6, $6) ON CONFLICT (name_key) DO NOTHING RETURNING id",
        )
        .bind(key(&spec.name))
        .bind(to_json(spec)?)
        .bind(creds.map(|c| c.token_hash.clone()))
        .bind(creds.map(|c| c.jwt_secret_sealed.clone()))
        .bind(creds.map(|_| t))
        .bind(t)
        .fetch_optional(&mut *tx)
        .await
        .map_err(token_clash)?;
        let Some(id) = id else {
            return Err(Error::Conflict(format!(
                "a gateway named `{}` exists already (names are case-insensitive): pick another name, or update it with PUT",
                spec.name
            )));
        };
        // Nothing names the new row yet: only what every gateway gets, and the routes
        // placed on its name, go into its first snapshot.
        tx.compile_new(&[id]).await?;
        tx.commit().await?;
        self.gateway(&spec.name).await
    }

    /// Replaces a gateway's definition if `expected` is its current version.
    pub async fn update_gateway(
        &self,
        name: &str,
        spec: &GatewaySpec,
        expected: i64,
    ) -> Result<GatewayRecord, Error> {
        self.relink_gateway(name, spec, expected, None).await
    }

    /// [`Store::update_gateway`] with new credentials in the same transaction (a re-link).
    pub async fn relink_gateway(
        &self,
        name: &str,
        spec: &GatewaySpec,
        expected: i64,
        creds: Option<&Credentials>,
    ) -> Result<GatewayRecord, Error> {
        let mut tx = self.write().await?;
        tx.audit(
            if creds.is_some() { "link" } else { "update" },
            crate::access::KindId::Gateway,
            &spec.name,
            Some(expected),
            Some(expected.saturating_add(1)),
        );
        let (id, builtin): (i64, i64) =
            sqlx::query_as("SELECT id, builtin FROM gateways WHERE name_key = $1")
                .bind(key(name))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found(crate::access::KindId::Gateway, name))?;
        if builtin == 1 && (key(&spec.name) != key(name) || spec.kind != GatewayKind::Hybrid) {
            return Err(Error::Conflict(
                "the built-in gateway `default` keeps its name and type (hybrid); change its hosts or listeners only".into(),
            ));
        }
        if key(&spec.name) != key(name) {
            let clash: Option<i64> =
                sqlx::query_scalar("SELECT id FROM gateways WHERE name_key = $1")
                    .bind(key(&spec.name))
                    .fetch_optional(&mut *tx)
                    .await?;
            if clash.is_some() {
                return Err(Error::Conflict(format!(
                    "a gateway named `{}` exists already",
                    spec.name
                )));
            }
            // Deployments and nodes follow the id; raw routes name gateways, so move them.
            sqlx::query("UPDATE route_gateways SET gateway_key = $1 WHERE gateway_key = $2")
                .bind(key(&spec.name))
                .bind(key(name))
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "UPDATE gateways SET name_key = $1, spec = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND version = $5",
        )
        .bind(key(&spec.name))
        .bind(to_json(spec)?)
        .bind(now())
        .bind(id)
        .bind(expected)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(stale(KindId::Gateway, name));
        }
        if let Some(c) = creds {
            sqlx::query(
                "UPDATE gateways SET token_hash = $1, jwt_secret = $2, linked_at = $3 WHERE id = $4",
            )
            .bind(&c.token_hash)
            .bind(&c.jwt_secret_sealed)
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(token_clash)?;
        }
        self.finish_gateway(tx, id, &spec.name).await
    }

    /// Recompiles the gateway a write changed, commits, and answers it.
    async fn finish_gateway(
        &self,
        mut tx: Write<'_>,
        id: i64,
        name: &str,
    ) -> Result<GatewayRecord, Error> {
        tx.recompile(&[id]).await?;
        tx.commit().await?;
        self.gateway(name).await
    }

    /// Sets (link, rotate) or clears (revoke) a gateway's credentials.
    pub async fn set_credentials(
        &self,
        name: &str,
        creds: Option<&Credentials>,
        jwt_too: bool,
    ) -> Result<GatewayRecord, Error> {
        let mut tx = self.write().await?;
        let action = match (creds, jwt_too) {
            (Some(_), true) => "link",
            (Some(_), false) => "rotate_token",
            (None, _) => "revoke_token",
        };
        tx.event(action, KindId::Gateway, name);
        let t = now();
        let done =
            match (creds, jwt_too) {
                (Some(c), true) => sqlx::query(
                    "UPDATE gateways SET token_hash = $1, jwt_secret = $2, linked_at = $3, \
                 version = version + 1, updated_at = $3 WHERE name_key = $4",
                )
                .bind(&c.token_hash)
                .bind(&c.jwt_secret_sealed)
                .bind(t)
                .bind(key(name))
                .execute(&mut *tx)
                .await
                .map_err(token_clash)?,
                (Some(c), false) => sqlx::query(
                    "UPDATE gateways SET token_hash = $1, version = version + 1, updated_at = $2 \
                 WHERE name_key = $3",
                )
                .bind(&c.token_hash)
                .bind(t)
                .bind(key(name))
                .execute(&mut *tx)
                .await
                .map_err(token_clash)?,
                (None, _) => sqlx::query(
                    "UPDATE gateways SET token_hash = NULL, version = version + 1, updated_at = $1 \
                 WHERE name_key = $2",
                )
                .bind(t)
                .bind(key(name))
                .execute(&mut *tx)
                .await?,
            };
        if done.rows_affected() == 0 {
            return Err(Error::not_found(crate::access::KindId::Gateway, name));
        }
        tx.commit().await?;
        self.gateway(name).await
    }

    /// The sealed JWT secret of a gateway, if it has one.
    pub async fn jwt_secret_sealed(&self, name: &str) -> Result<Option<String>, Error> {
        let v: Option<Option<String>> =
            sqlx::query_scalar("SELECT jwt_secret FROM gateways WHERE name_key = $1")
                .bind(key(name))
                .fetch_optional(&self.pool)
                .await?;
        v.ok_or_else(|| Error::not_found(crate::access::KindId::Gateway, name))
    }

    /// Deletes a gateway (not the built-in one) with its deployments and nodes.
    /// Deletes a gateway. What it serves (API and app deployments, raw routes) and its
    /// nodes go with it only with `force`; without, a gateway that has any is refused,
    /// naming them. Answers what went besides the gateway.
    pub async fn delete_gateway(&self, name: &str, force: bool) -> Result<Vec<String>, Error> {
        let mut tx = self.write().await?;
        let (id, builtin): (i64, i64) =
            sqlx::query_as("SELECT id, builtin FROM gateways WHERE name_key = $1")
                .bind(key(name))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found(crate::access::KindId::Gateway, name))?;
        if builtin == 1 {
            return Err(Error::Conflict(
                "the built-in gateway `default` cannot be deleted; undeploy what runs on it instead"
                    .into(),
            ));
        }
        let mut going: Vec<String> = Vec::new();
        let apis: Vec<(String, i64)> = sqlx::query_as(
            "SELECT a.api_key, d.revision FROM deployments d JOIN apis a ON a.id = d.api_id \
             WHERE d.gateway_id = $1 ORDER BY a.api_key",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        going.extend(
            apis.into_iter()
                .map(|(api, rev)| format!("API `{api}` (revision {rev})")),
        );
        let apps: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT a.slug, d.version, d.host FROM app_deployments d JOIN apps a ON a.id = d.app_id \
             WHERE d.gateway_id = $1 ORDER BY a.slug, d.host",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        going.extend(apps.into_iter().map(|(slug, v, host)| {
            if host.is_empty() {
                format!("app `{slug}` (version {v})")
            } else {
                format!("app `{slug}` (version {v} on {host})")
            }
        }));
        let routes: Vec<String> = sqlx::query_scalar(
            "SELECT r.name_key FROM route_gateways g JOIN routes r ON r.id = g.route_id \
             WHERE g.gateway_key = $1 ORDER BY r.name_key",
        )
        .bind(key(name))
        .fetch_all(&mut *tx)
        .await?;
        going.extend(
            routes
                .into_iter()
                .map(|r| format!("route `{r}` (detached)")),
        );
        let nodes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE gateway_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        if nodes > 0 {
            going.push(format!(
                "{nodes} node{} (they keep serving their last snapshot, cut off)",
                if nodes == 1 { "" } else { "s" }
            ));
        }
        if !going.is_empty() && !force {
            return Err(Error::Conflict(format!(
                "gateway `{name}` is in use: {}. Undeploy first, or delete with --force (`?force=true`) to remove all of that with it",
                going.join(", ")
            )));
        }
        sqlx::query("DELETE FROM route_gateways WHERE gateway_key = $1")
            .bind(key(name))
            .execute(&mut *tx)
            .await?;
        tx.delete(KindId::Gateway, name).await?;
        tx.commit().await?;
        self.wake(id).await;
        Ok(going)
    }

    /// The gateway an API token belongs to.
    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>, Error> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT id, spec FROM gateways WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Ok(None),
            Some((id, spec)) => {
                let spec: GatewaySpec = from_json(&spec)?;
                Ok(Some(TokenOwner {
                    gateway_id: id,
                    name: spec.name,
                }))
            }
        }
    }

    /// What changed from version `after` to `current` of a gateway's snapshot, as the
    /// JSON of a [`portico_model::SyncDeltas`]: `None` when a step is no longer kept (or
    /// was never stored) or the steps together are larger than the whole snapshot, and the
    /// node should fetch that instead. Private keys in clear: for the gateway's own nodes.
    ///
    /// A gateway's nodes ask for the same chain at the same moment: each is built once and
    /// kept a minute ([`ChainCache`]), so a change costs the database one read per gateway,
    /// not one per node.
    pub async fn delta_chain(
        &self,
        gateway_id: i64,
        gateway: &str,
        after: u64,
        current: u64,
    ) -> Result<Option<String>, Error> {
        if after >= current || current - after > super::DELTAS_KEPT as u64 {
            return Ok(None);
        }
        let key = (gateway_id, after, current);
        if let Some(hit) = self.chains.get(key) {
            return Ok(hit);
        }
        let chain = self.read_chain(gateway_id, gateway, after, current).await?;
        self.chains.put(key, chain.clone());
        Ok(chain)
    }

    /// [`Store::delta_chain`] from the database.
    async fn read_chain(
        &self,
        gateway_id: i64,
        gateway: &str,
        after: u64,
        current: u64,
    ) -> Result<Option<String>, Error> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT version, hash, body FROM snapshot_deltas \
             WHERE gateway_id = $1 AND version > $2 AND version <= $3 ORDER BY version",
        )
        .bind(gateway_id)
        .bind(after as i64)
        .bind(current as i64)
        .fetch_all(&self.pool)
        .await?;
        if rows.len() as u64 != current - after {
            return Ok(None);
        }
        let whole: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(LENGTH(body) AS BIGINT) FROM snapshots WHERE gateway_id = $1",
        )
        .bind(gateway_id)
        .fetch_optional(&self.pool)
        .await?;
        let mut out = format!("{{\"gateway\":{},\"steps\":[", to_json(&gateway)?);
        let mut from = after;
        for (i, (version, hash, body)) in rows.into_iter().enumerate() {
            if version as u64 != from + 1 {
                return Ok(None);
            }
            let changes = open_body(self.sealer.as_deref(), body)?;
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"from\":{from},\"version\":{version},\"hash\":{},\"changes\":{changes}}}",
                to_json(&hash)?
            ));
            from = version as u64;
            if whole.is_some_and(|w| out.len() as i64 > w) {
                return Ok(None);
            }
        }
        out.push_str("]}");
        Ok(Some(out))
    }

    /// A gateway's compiled snapshot, its private keys in clear: for the gateway's own
    /// nodes only (the sync endpoint, the built-in gateway).
    pub async fn snapshot(&self, gateway_id: i64) -> Result<Option<SnapshotRecord>, Error> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT version, hash, body FROM snapshots WHERE gateway_id = $1")
                .bind(gateway_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(version, hash, body)| {
            Ok(SnapshotRecord {
                version: version as u64,
                hash,
                body: open_body(self.sealer.as_deref(), body)?,
            })
        })
        .transpose()
    }

    /// The deploy trace (`traceparent`) of a gateway's snapshot `version`, when that
    /// deploy was traced and the version is still the current one.
    pub async fn snapshot_trace(
        &self,
        gateway_id: i64,
        version: u64,
    ) -> Result<Option<String>, Error> {
        let t: Option<Option<String>> = sqlx::query_scalar(
            "SELECT trace FROM snapshots WHERE gateway_id = $1 AND version = $2",
        )
        .bind(gateway_id)
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(t.flatten())
    }

    /// A gateway's current snapshot version (0 before its first).
    pub async fn snapshot_version(&self, gateway_id: i64) -> Result<u64, Error> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM snapshots WHERE gateway_id = $1")
                .bind(gateway_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Current snapshot version of every gateway: (id, name, version).
    pub async fn snapshot_versions(&self) -> Result<Vec<(i64, String, u64)>, Error> {
        let rows: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT g.id, g.spec, s.version FROM gateways g LEFT JOIN snapshots s ON s.gateway_id = g.id \
             ORDER BY g.name_key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, spec, v)| {
                let spec: GatewaySpec = from_json(&spec)?;
                Ok((id, spec.name, v.unwrap_or(0) as u64))
            })
            .collect()
    }
}

/// Delta chains by (gateway id, from, to), each kept a minute: a chain between two
/// versions never changes (versions only move up), and the minute bounds what a gateway
/// deleted and made again under the same id could meet (its nodes' digest check catches
/// even that).
#[derive(Debug, Default)]
pub struct ChainCache {
    chains: std::sync::Mutex<Chains>,
}

/// Chains by (gateway id, from, to), with when each was built.
type Chains = HashMap<(i64, u64, u64), (std::time::Instant, Option<String>)>;

/// How long a chain is kept.
const CHAIN_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// The most chains kept.
const CHAINS_KEPT: usize = 10_000;

impl ChainCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Chains> {
        self.chains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The chain kept for `key`, when it is fresh: `Some(None)` says there is none.
    fn get(&self, key: (i64, u64, u64)) -> Option<Option<String>> {
        let map = self.lock();
        let (at, chain) = map.get(&key)?;
        (at.elapsed() < CHAIN_TTL).then(|| chain.clone())
    }

    fn put(&self, key: (i64, u64, u64), chain: Option<String>) {
        let mut map = self.lock();
        if map.len() >= CHAINS_KEPT {
            map.retain(|_, (at, _)| at.elapsed() < CHAIN_TTL);
            if map.len() >= CHAINS_KEPT {
                map.clear();
            }
        }
        map.insert(key, (std::time::Instant::now(), chain));
    }
}
