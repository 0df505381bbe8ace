//! The store: every SQL statement of the control plane lives here, behind [`Store`]'s
//! methods. Each method that writes runs one transaction, and the gateways it affects are
//! recompiled inside that same transaction, so a definition and the snapshots built from it
//! change together or not at all. Writes are serialized in-process (SQLite has one writer);
//! every object carries a version that an update must name (optimistic concurrency).
//!
//! SQL is kept portable (`$n` placeholders, `RETURNING`, `ON CONFLICT`) for PostgreSQL later.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use portico_compile::{DeployedApi, Input};
use portico_model::{
    ApiSpec, GatewayKind, GatewaySpec, Lifecycle, Listener, ListenerProtocol, RouteSpec, Service,
    SyncEnvelope,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
// Table names in dynamic SQL come from a closed set of literals in this file, never from input.
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use crate::access::KindId;
use crate::error::Error;
pub use crate::page::Page;

mod acme;
mod apply;
mod apps;
mod certs;
mod consumers;
mod keys;
mod tiers;
mod users;
mod write;
pub use acme::AcmeHostRecord;
pub use apply::{Action, Applied, ApplyOptions, PlanItem};
pub use apps::{AppDeploymentRecord, AppRecord, AppVersionRecord};
pub use certs::CertificateRecord;
pub use consumers::{
    ClientRecord, CredentialKind, CredentialRecord, NewCredential, SubscriptionRecord,
};
pub use keys::{AUDIENCE, ISSUER, SigningKeyRecord, TOKEN_MAX_LIFETIME};
pub use users::{AuditFilter, AuditRecord, RoleRecord, TokenHolder, UserRecord, UserTokenRecord};
pub(crate) use write::Write;
pub use write::{ACTOR, actor};

/// Name of the gateway `portico server` serves itself.
pub const DEFAULT_GATEWAY: &str = "default";

/// The versioned migrations, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "consumers",
        include_str!("../../migrations/sqlite/0002_consumers.sql"),
    ),
    (
        3,
        "signing keys",
        include_str!("../../migrations/sqlite/0003_signing_keys.sql"),
    ),
    (
        4,
        "tiers",
        include_str!("../../migrations/sqlite/0004_tiers.sql"),
    ),
    (
        5,
        "users",
        include_str!("../../migrations/sqlite/0005_users.sql"),
    ),
    (
        6,
        "certificates",
        include_str!("../../migrations/sqlite/0006_certificates.sql"),
    ),
    (
        7,
        "acme",
        include_str!("../../migrations/sqlite/0007_acme.sql"),
    ),
    (
        8,
        "apps",
        include_str!("../../migrations/sqlite/0008_apps.sql"),
    ),
    (
        9,
        "node identity",
        include_str!("../../migrations/sqlite/0009_node_identity.sql"),
    ),
    (
        10,
        "path_prefix rewrites written out",
        include_str!("../../migrations/sqlite/0010_path_prefix_rewrite.sql"),
    ),
    (
        11,
        "snapshot warnings",
        include_str!("../../migrations/sqlite/0011_snapshot_warnings.sql"),
    ),
    (
        12,
        "people: roles, tokens, audit",
        include_str!("../../migrations/sqlite/0012_people.sql"),
    ),
];

/// How many nodes a gateway may have, and when a silent one is forgotten.
#[derive(Clone, Copy, Debug)]
pub struct NodeLimits {
    /// Nodes per gateway at most.
    pub max_nodes: usize,
    /// A node silent this long is forgotten.
    pub forget_after: std::time::Duration,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_nodes: 100,
            forget_after: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// The control plane's database.
#[derive(Debug)]
pub struct Store {
    pool: SqlitePool,
    write: Mutex<()>,
    /// Revisions kept per API.
    pub max_revisions: u32,
    /// Opens sealed certificate keys when snapshots are compiled.
    pub sealer: Option<std::sync::Arc<crate::secrets::Sealer>>,
    /// Told about every snapshot version a committed write moved.
    pub hub: std::sync::Arc<crate::Hub>,
}

/// Bookkeeping every stored object has.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    /// Moves up by one on every change; updates must name the version they read.
    pub version: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A stored gateway.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayRecord {
    /// Its definition.
    pub spec: GatewaySpec,
    /// The built-in gateway of `portico server` (cannot be deleted).
    pub builtin: bool,
    /// When its credentials were last linked (Unix seconds).
    pub linked_at: Option<i64>,
    /// Whether nodes can sync with an API token now (false after a revoke).
    pub token_active: bool,
    /// Bookkeeping.
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(skip)]
    id: i64,
}

/// A stored service or raw route.
#[derive(Clone, Debug, Serialize)]
pub struct Record<T> {
    /// Its definition.
    pub spec: T,
    /// Bookkeeping.
    #[serde(flatten)]
    pub meta: Meta,
}

/// A stored API.
#[derive(Clone, Debug, Serialize)]
pub struct ApiRecord {
    /// `name-version`, the key in URLs.
    pub id: String,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
    /// Its current (working) definition.
    pub spec: ApiSpec,
    /// Bookkeeping.
    #[serde(flatten)]
    pub meta: Meta,
}

/// An immutable revision of an API.
#[derive(Clone, Debug, Serialize)]
pub struct RevisionRecord {
    /// The API's id.
    pub api: String,
    /// Number, from 1 per API.
    pub number: u32,
    /// What the author said about it.
    pub note: String,
    /// The frozen definition.
    pub spec: ApiSpec,
    /// Gateways it is deployed to.
    pub deployed_on: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Revision R of an API on gateway G.
#[derive(Clone, Debug, Serialize)]
pub struct DeploymentRecord {
    /// The API's id.
    pub api: String,
    /// The gateway's name.
    pub gateway: String,
    /// The revision deployed.
    pub revision: u32,
    /// Unix seconds.
    pub deployed_at: i64,
}

/// A gateway's compiled snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotRecord {
    /// Snapshot version.
    pub version: u64,
    /// Content hash.
    pub hash: String,
    /// The [`SyncEnvelope`] as JSON.
    pub body: String,
}

/// What a node last reported.
#[derive(Clone, Debug, Serialize)]
pub struct NodeRecord {
    /// The node's id.
    pub node_id: String,
    /// Its host name.
    pub hostname: String,
    /// The version it serves.
    pub applied_version: Option<u64>,
    /// The hash it serves.
    pub applied_hash: Option<String>,
    /// The error of its last apply, until an apply succeeds.
    pub last_error: Option<String>,
    /// Unix seconds of `last_error`.
    pub last_error_at: Option<i64>,
    /// Unix seconds of its last report.
    pub last_seen: i64,
}

/// A gateway a token belongs to.
#[derive(Clone, Debug)]
pub struct TokenOwner {
    /// Row id (stable while the gateway exists).
    pub gateway_id: i64,
    /// Name.
    pub name: String,
}

/// Changes to apply to a gateway's credentials.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// Hash of the API token.
    pub token_hash: String,
    /// The JWT secret, sealed.
    pub jwt_secret_sealed: String,
}

/// Snapshot versions that moved in a write: (gateway id, new version).
pub type Moved = Vec<(i64, u64)>;

/// Now, in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn to_json<T: Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("cannot encode: {e}")))
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, Error> {
    serde_json::from_str(s).map_err(|e| Error::Internal(format!("stored data is unreadable: {e}")))
}

fn lifecycle_str(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Created => "created",
        Lifecycle::Published => "published",
        Lifecycle::Deprecated => "deprecated",
        Lifecycle::Retired => "retired",
    }
}

fn parse_lifecycle(s: &str) -> Lifecycle {
    match s {
        "published" => Lifecycle::Published,
        "deprecated" => Lifecycle::Deprecated,
        "retired" => Lifecycle::Retired,
        _ => Lifecycle::Created,
    }
}

impl Store {
    /// Opens (creating when missing) the SQLite database in `dir` and runs migrations.
    pub async fn open(dir: &Path) -> Result<Self, Error> {
        crate::secrets::private_dir(dir)?;
        // The database holds hashes, sealed secrets and who may do what: owner only. SQLite
        // gives its -wal and -shm files the database file's mode.
        let db = dir.join("portico.db");
        crate::secrets::private_file(&db)?;
        let opts = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(Error::Db)?;
        let store = Self {
            pool,
            write: Mutex::new(()),
            max_revisions: 10,
            sealer: None,
            hub: std::sync::Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let _w = self.write.lock().await;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, \
             description TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, description, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(description)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(version, description, "database migrated");
        }
        Ok(())
    }

    /// Compiles every gateway again, storing the snapshots whose content changed. Answers
    /// the gateways that did not compile (they keep their snapshot), with why.
    pub async fn recompile_all(&self) -> Result<Vec<(String, Error)>, Error> {
        let _w = self.write.lock().await;
        let ids: Vec<(i64, String)> = sqlx::query_as("SELECT id, name_key FROM gateways")
            .fetch_all(&self.pool)
            .await?;
        let mut failed = Vec::new();
        for (id, name) in ids {
            let mut tx = self.pool.begin().await?;
            match recompile(&mut tx, self.sealer.as_deref(), &[id]).await {
                Ok(_) => tx.commit().await?,
                Err(e) => failed.push((name, e)),
            }
        }
        Ok(failed)
    }

    // ---- admin tokens ----

    /// Whether any admin token exists.
    pub async fn has_admin_token(&self) -> Result<bool, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Stores an admin token's hash.
    pub async fn add_admin_token(&self, name: &str, hash: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        tx.audit("create", KindId::AdminToken, name, None, None);
        sqlx::query("INSERT INTO admin_tokens (name, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(hash)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether this hash belongs to an admin token.
    pub async fn admin_token_exists(&self, hash: &str) -> Result<bool, Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM admin_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    // ---- gateways ----

    /// Creates the built-in gateway when it does not exist yet.
    pub async fn ensure_default_gateway(&self, port: u16) -> Result<Moved, Error> {
        if self.gateway(DEFAULT_GATEWAY).await.is_ok() {
            return Ok(Vec::new());
        }
        let mut spec = GatewaySpec::new(DEFAULT_GATEWAY, GatewayKind::Hybrid);
        spec.description = "Built into the control plane".into();
        spec.listeners = vec![Listener::new(port, ListenerProtocol::Http)];
        let mut tx = self.write().await?;
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
        let rows = sqlx::query(
            "SELECT id, spec, builtin, token_hash, linked_at, version, created_at, updated_at \
             FROM gateways WHERE name_key > $1 ORDER BY name_key LIMIT $2",
        )
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(gateway_row).collect()
    }

    /// One gateway by name (case-insensitive).
    pub async fn gateway(&self, name: &str) -> Result<GatewayRecord, Error> {
        let row = sqlx::query(
            "SELECT id, spec, builtin, token_hash, linked_at, version, created_at, updated_at \
             FROM gateways WHERE name_key = $1",
        )
        .bind(key(name))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(crate::access::KindId::Gateway, name))?;
        gateway_row(&row)
    }

    /// The row id of a gateway.
    pub async fn gateway_id(&self, name: &str) -> Result<i64, Error> {
        Ok(self.gateway(name).await?.id)
    }

    /// Creates a gateway, optionally with credentials.
    pub async fn create_gateway(
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
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM gateways WHERE name_key = $1")
            .bind(key(&spec.name))
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(Error::Conflict(format!(
                "a gateway named `{}` exists already (names are case-insensitive): pick another name, or update it with PUT",
                spec.name
            )));
        }
        let t = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO gateways (name_key, spec, builtin, token_hash, jwt_secret, linked_at, version, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, $4, $5, 1, $6, $6) RETURNING id",
        )
        .bind(key(&spec.name))
        .bind(to_json(spec)?)
        .bind(creds.map(|c| c.token_hash.clone()))
        .bind(creds.map(|c| c.jwt_secret_sealed.clone()))
        .bind(creds.map(|_| t))
        .bind(t)
        .fetch_one(&mut *tx)
        .await
        .map_err(token_clash)?;
        tx.recompile(&[id]).await?;
        tx.commit().await?;
        Ok(self.gateway(&spec.name).await?)
    }

    /// Replaces a gateway's definition if `expected` is its current version; with `creds`,
    /// its credentials too, in the same transaction (a re-link).
    pub async fn update_gateway(
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
        tx.recompile(&[id]).await?;
        tx.commit().await?;
        Ok(self.gateway(&spec.name).await?)
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
        tx.audit(action, KindId::Gateway, name, None, None);
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
        tx.audit("delete", crate::access::KindId::Gateway, name, None, None);
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
        sqlx::query("DELETE FROM gateways WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.hub.wake(id);
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

    // ---- nodes ----

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
        // Every write holds the writer lock: a write that started as a read would otherwise
        // meet SQLITE_BUSY_SNAPSHOT when another connection committed meanwhile.
        let mut tx = self.write().await?;
        let t = now();
        let bound: Option<Option<String>> =
            sqlx::query_scalar("SELECT key_hash FROM nodes WHERE gateway_id = $1 AND node_id = $2")
                .bind(gateway_id)
                .bind(&report.node_id)
                .fetch_optional(&mut *tx)
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
                    .execute(&mut *tx)
                    .await?;
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE gateway_id = $1")
                        .bind(gateway_id)
                        .fetch_one(&mut *tx)
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
            "INSERT INTO nodes (gateway_id, node_id, hostname, applied_version, applied_hash, last_error, last_error_at, last_seen, key_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (gateway_id, node_id) DO UPDATE SET hostname = excluded.hostname, \
             applied_version = excluded.applied_version, applied_hash = excluded.applied_hash, \
             last_error = excluded.last_error, last_error_at = excluded.last_error_at, \
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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
             last_error_at FROM nodes ORDER BY gateway_id, node_id",
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
             last_error_at FROM nodes WHERE gateway_id = $1 ORDER BY node_id",
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
                })
            })
            .collect()
    }

    // ---- services ----

    /// Every service.
    pub async fn services(&self, page: &Page) -> Result<Vec<Record<Service>>, Error> {
        list(&self.pool, KindId::Service, page).await
    }

    /// One service.
    pub async fn service(&self, name: &str) -> Result<Record<Service>, Error> {
        get(&self.pool, KindId::Service, name).await
    }

    /// Creates a service.
    pub async fn create_service(&self, spec: &Service) -> Result<Record<Service>, Error> {
        let mut tx = self.write().await?;
        tx.insert(KindId::Service, &spec.name, spec).await?;
        tx.commit().await?;
        self.service(&spec.name).await
    }

    /// Replaces a service if `expected` is its current version; gateways using it recompile.
    pub async fn update_service(
        &self,
        name: &str,
        spec: &Service,
        expected: i64,
    ) -> Result<Record<Service>, Error> {
        if key(&spec.name) != key(name) {
            return Err(Error::Conflict(
                "a service cannot be renamed: create the new one, move routes to it, delete the old"
                    .into(),
            ));
        }
        let mut tx = self.write().await?;
        tx.update(KindId::Service, name, spec, expected).await?;
        let all = all_gateway_ids(&mut tx).await?;
        tx.recompile(&all).await?;
        tx.commit().await?;
        Ok(self.service(name).await?)
    }

    /// Deletes a service no route uses.
    pub async fn delete_service(&self, name: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        let routes: Vec<String> = sqlx::query_scalar("SELECT spec FROM routes")
            .fetch_all(&mut *tx)
            .await?;
        for r in routes {
            let r: RouteSpec = from_json(&r)?;
            if r.route
                .all_targets()
                .iter()
                .any(|t| key(&t.service) == key(name))
            {
                return Err(Error::Conflict(format!(
                    "route `{}` forwards to service `{name}`: change or delete the route first",
                    r.name
                )));
            }
        }
        tx.delete(KindId::Service, name).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- raw routes ----

    /// Every raw route.
    pub async fn routes(&self, page: &Page) -> Result<Vec<Record<RouteSpec>>, Error> {
        list(&self.pool, KindId::Route, page).await
    }

    /// One raw route.
    pub async fn route(&self, name: &str) -> Result<Record<RouteSpec>, Error> {
        get(&self.pool, KindId::Route, name).await
    }

    /// Creates a raw route; the gateways it names recompile.
    pub async fn create_route(&self, spec: &RouteSpec) -> Result<Record<RouteSpec>, Error> {
        let mut tx = self.write().await?;
        check_route_refs(&mut tx, spec).await?;
        let id = tx.insert(KindId::Route, &spec.name, spec).await?;
        let ids = set_route_gateways(&mut tx, id, spec).await?;
        tx.recompile_checked(&ids).await?;
        tx.commit().await?;
        Ok(self.route(&spec.name).await?)
    }

    /// Replaces a raw route if `expected` is its current version.
    pub async fn update_route(
        &self,
        name: &str,
        spec: &RouteSpec,
        expected: i64,
    ) -> Result<Record<RouteSpec>, Error> {
        if key(&spec.name) != key(name) {
            return Err(Error::Conflict(
                "a route cannot be renamed: create the new one and delete the old".into(),
            ));
        }
        let mut tx = self.write().await?;
        check_route_refs(&mut tx, spec).await?;
        let id = tx.update(KindId::Route, name, spec, expected).await?;
        let mut ids = route_gateway_ids(&mut tx, id).await?;
        ids.extend(set_route_gateways(&mut tx, id, spec).await?);
        ids.sort_unstable();
        ids.dedup();
        tx.recompile_checked(&ids).await?;
        tx.commit().await?;
        Ok(self.route(name).await?)
    }

    /// Deletes a raw route.
    pub async fn delete_route(&self, name: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        let id: i64 = sqlx::query_scalar("SELECT id FROM routes WHERE name_key = $1")
            .bind(key(name))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(crate::access::KindId::Route, name))?;
        let ids = route_gateway_ids(&mut tx, id).await?;
        tx.delete(KindId::Route, name).await?;
        tx.recompile(&ids).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- APIs ----

    /// Every API.
    pub async fn apis(&self, page: &Page) -> Result<Vec<ApiRecord>, Error> {
        let rows = sqlx::query(
            "SELECT api_key, spec, lifecycle, version, created_at, updated_at FROM apis \
             WHERE api_key > $1 ORDER BY api_key LIMIT $2",
        )
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_row).collect()
    }

    /// One API by id.
    pub async fn api(&self, id: &str) -> Result<ApiRecord, Error> {
        let row = sqlx::query(
            "SELECT api_key, spec, lifecycle, version, created_at, updated_at FROM apis WHERE api_key = $1",
        )
        .bind(key(id))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(crate::access::KindId::Api, id))?;
        api_row(&row)
    }

    /// Creates an API (lifecycle `created`).
    pub async fn create_api(&self, spec: &ApiSpec) -> Result<ApiRecord, Error> {
        let id = spec.id();
        let mut tx = self.write().await?;
        tx.audit("create", KindId::Api, &id, None, Some(1));
        let t = now();
        let done = sqlx::query(
            "INSERT INTO apis (api_key, spec, lifecycle, version, created_at, updated_at) \
             VALUES ($1, $2, 'created', 1, $3, $3) ON CONFLICT (api_key) DO NOTHING",
        )
        .bind(&id)
        .bind(to_json(spec)?)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::Conflict(format!(
                "API `{id}` ({} {}) exists already: update it with `portico apply -f FILE` (PUT /api/v1/apis/{id}), or give a new version",
                spec.name, spec.version
            )));
        }
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
        tx.audit(
            "update",
            KindId::Api,
            id,
            Some(expected),
            Some(expected.saturating_add(1)),
        );
        let done = sqlx::query(
            "UPDATE apis SET spec = $1, version = version + 1, updated_at = $2 \
             WHERE api_key = $3 AND version = $4",
        )
        .bind(to_json(spec)?)
        .bind(now())
        .bind(key(id))
        .bind(expected)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            self.api(id).await?;
            return Err(stale(KindId::Api, id));
        }
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
        let ids = api_gateway_ids(&mut tx, api_id).await?;
        tx.recompile(&ids).await?;
        let moved = tx.commit().await?;
        Ok((self.api(id).await?, moved))
    }

    /// Deletes an API that is deployed nowhere.
    /// Deletes an API. One deployed somewhere is refused, naming the gateways, unless
    /// `force`: then it is undeployed from them in the same write. Answers the gateways it
    /// was undeployed from and the snapshots that moved.
    pub async fn delete_api(&self, id: &str, force: bool) -> Result<(Vec<String>, Moved), Error> {
        let mut tx = self.write().await?;
        tx.audit("delete", crate::access::KindId::Api, id, None, None);
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
        sqlx::query("DELETE FROM apis WHERE id = $1")
            .bind(api_id)
            .execute(&mut *tx)
            .await?;
        tx.recompile(&gids).await?;
        let moved = tx.commit().await?;
        Ok((on, moved))
    }

    // ---- revisions ----

    /// Freezes the API's current definition as its next revision; prunes the oldest
    /// undeployed revisions beyond `max_revisions`.
    pub async fn create_revision(&self, id: &str, note: &str) -> Result<RevisionRecord, Error> {
        let mut tx = self.write().await?;
        tx.audit(
            "create_revision",
            crate::access::KindId::Api,
            id,
            None,
            None,
        );
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
            "INSERT INTO revisions (api_id, number, spec, note, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(api_id)
        .bind(number)
        .bind(&spec)
        .bind(note)
        .bind(t)
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
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT number, spec, note, created_at FROM revisions WHERE api_id = $1 ORDER BY number DESC",
        )
        .bind(api_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (number, spec, note, created_at) in rows {
            out.push(RevisionRecord {
                api: key(id),
                number: number as u32,
                note,
                spec: from_json(&spec)?,
                deployed_on: deployed_gateway_names(&mut conn, api_id, Some(number)).await?,
                created_at,
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
        tx.audit(
            "delete_revision",
            crate::access::KindId::Api,
            &format!("{id} revision {number}"),
            None,
            None,
        );
        let api_id = api_row_id(&mut tx, id).await?;
        let on = deployed_gateway_names(&mut tx, api_id, Some(number as i64)).await?;
        if !on.is_empty() {
            return Err(Error::Conflict(format!(
                "revision {number} of `{id}` is deployed on {}: undeploy it or deploy another revision first",
                on.join(", ")
            )));
        }
        let done = sqlx::query("DELETE FROM revisions WHERE api_id = $1 AND number = $2")
            .bind(api_id)
            .bind(number as i64)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!(
                "API `{id}` has no revision {number}"
            )));
        }
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
        tx.audit(
            "deploy",
            crate::access::KindId::Api,
            &format!("{id} revision {number} to {}", gateways.join(", ")),
            None,
            None,
        );
        let (api_id, lifecycle): (i64, String) =
            sqlx::query_as("SELECT id, lifecycle FROM apis WHERE api_key = $1")
                .bind(key(id))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found(crate::access::KindId::Api, id))?;
        if parse_lifecycle(&lifecycle) == Lifecycle::Retired {
            return Err(Error::Conflict(format!(
                "API `{id}` is retired and cannot be deployed: move it back to published first"
            )));
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT number FROM revisions WHERE api_id = $1 AND number = $2")
                .bind(api_id)
                .bind(number as i64)
                .fetch_optional(&mut *tx)
                .await?;
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
        tx.recompile_checked(&ids).await?;
        let moved = tx.commit().await?;
        let all = self.deployments(Some(id)).await?;
        Ok((all, moved))
    }

    /// Takes an API off a gateway.
    pub async fn undeploy(&self, id: &str, gateway: &str) -> Result<Moved, Error> {
        let mut tx = self.write().await?;
        tx.audit(
            "undeploy",
            crate::access::KindId::Api,
            &format!("{id} from {gateway}"),
            None,
            None,
        );
        let api_id = api_row_id(&mut tx, id).await?;
        let gid: i64 = sqlx::query_scalar("SELECT id FROM gateways WHERE name_key = $1")
            .bind(key(gateway))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(crate::access::KindId::Gateway, gateway))?;
        let done = sqlx::query("DELETE FROM deployments WHERE api_id = $1 AND gateway_id = $2")
            .bind(api_id)
            .bind(gid)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!(
                "API `{id}` is not deployed on gateway `{gateway}`"
            )));
        }
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

fn gateway_row(row: &sqlx::sqlite::SqliteRow) -> Result<GatewayRecord, Error> {
    let spec: String = row.try_get(1)?;
    Ok(GatewayRecord {
        id: row.try_get(0)?,
        spec: from_json(&spec)?,
        builtin: row.try_get::<i64, _>(2)? == 1,
        token_active: row.try_get::<Option<String>, _>(3)?.is_some(),
        linked_at: row.try_get(4)?,
        meta: Meta {
            version: row.try_get(5)?,
            created_at: row.try_get(6)?,
            updated_at: row.try_get(7)?,
        },
    })
}

fn api_row(row: &sqlx::sqlite::SqliteRow) -> Result<ApiRecord, Error> {
    let spec: String = row.try_get(1)?;
    let lifecycle: String = row.try_get(2)?;
    Ok(ApiRecord {
        id: row.try_get(0)?,
        spec: from_json(&spec)?,
        lifecycle: parse_lifecycle(&lifecycle),
        meta: Meta {
            version: row.try_get(3)?,
            created_at: row.try_get(4)?,
            updated_at: row.try_get(5)?,
        },
    })
}

fn stale(kind: KindId, name: &str) -> Error {
    Error::Stale(format!(
        "{} `{name}` changed since you read it: fetch it again, reapply your change and send the new version",
        kind.noun()
    ))
}

fn token_clash(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.message().contains("token_hash") => Error::Conflict(
            "this API token already belongs to another gateway: generate a new one with `portico gateway init`".into(),
        ),
        _ => Error::Db(e),
    }
}

async fn api_row_id(conn: &mut SqliteConnection, id: &str) -> Result<i64, Error> {
    sqlx::query_scalar("SELECT id FROM apis WHERE api_key = $1")
        .bind(key(id))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found(crate::access::KindId::Api, id))
}

async fn deployed_gateway_names(
    conn: &mut SqliteConnection,
    api_id: i64,
    revision: Option<i64>,
) -> Result<Vec<String>, Error> {
    let specs: Vec<String> = sqlx::query_scalar(
        "SELECT g.spec FROM deployments d JOIN gateways g ON g.id = d.gateway_id \
         WHERE d.api_id = $1 AND ($2 IS NULL OR d.revision = $2) ORDER BY g.name_key",
    )
    .bind(api_id)
    .bind(revision)
    .fetch_all(&mut *conn)
    .await?;
    specs
        .iter()
        .map(|s| from_json::<GatewaySpec>(s).map(|g| g.name))
        .collect()
}

/// The table of a kind stored as its JSON spec with the common columns.
fn table(kind: KindId) -> &'static str {
    match kind {
        KindId::Service => "services",
        KindId::Route => "routes",
        KindId::Consumer => "consumers",
        KindId::Gateway => "gateways",
        _ => "tiers",
    }
}

/// One page of a kind stored as its JSON spec: the first `page.limit + 1` after the
/// cursor, in key order (the extra one tells the caller there is more).
async fn list<T: DeserializeOwned>(
    pool: &SqlitePool,
    kind: KindId,
    page: &Page,
) -> Result<Vec<Record<T>>, Error> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT spec, version, created_at, updated_at FROM {} WHERE name_key > $1 \
         ORDER BY name_key LIMIT $2",
        table(kind)
    )))
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(spec, version, created_at, updated_at)| {
            Ok(Record {
                spec: from_json(&spec)?,
                meta: Meta {
                    version,
                    created_at,
                    updated_at,
                },
            })
        })
        .collect()
}

async fn get<T: DeserializeOwned>(
    pool: &SqlitePool,
    kind: KindId,
    name: &str,
) -> Result<Record<T>, Error> {
    let row: Option<(String, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT spec, version, created_at, updated_at FROM {} WHERE name_key = $1",
        table(kind)
    )))
    .bind(key(name))
    .fetch_optional(pool)
    .await?;
    let (spec, version, created_at, updated_at) =
        row.ok_or_else(|| Error::not_found(kind, name))?;
    Ok(Record {
        spec: from_json(&spec)?,
        meta: Meta {
            version,
            created_at,
            updated_at,
        },
    })
}

/// Inserts a new object (version 1); answers its row id.
async fn insert<T: Serialize>(
    w: &mut SqliteConnection,
    kind: KindId,
    name: &str,
    spec: &T,
) -> Result<i64, Error> {
    let t = now();
    let id: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO {} (name_key, spec, version, created_at, updated_at) VALUES ($1, $2, 1, $3, $3) \
         ON CONFLICT (name_key) DO NOTHING RETURNING id",
        table(kind)
    )))
    .bind(key(name))
    .bind(to_json(spec)?)
    .bind(t)
    .fetch_optional(&mut *w)
    .await?;
    id.ok_or_else(|| {
        Error::Conflict(format!(
            "a {} named `{name}` exists already (names are case-insensitive): pick another name, or update it with PUT",
            kind.noun()
        ))
    })
}

/// Replaces an object when `expected` is its version; answers its row id.
async fn update<T: Serialize>(
    w: &mut SqliteConnection,
    kind: KindId,
    name: &str,
    spec: &T,
    expected: i64,
) -> Result<i64, Error> {
    let id: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "UPDATE {} SET spec = $1, version = version + 1, updated_at = $2 \
         WHERE name_key = $3 AND version = $4 RETURNING id",
        table(kind)
    )))
    .bind(to_json(spec)?)
    .bind(now())
    .bind(key(name))
    .bind(expected)
    .fetch_optional(&mut *w)
    .await?;
    if let Some(id) = id {
        return Ok(id);
    }
    let exists: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM {} WHERE name_key = $1",
        table(kind)
    )))
    .bind(key(name))
    .fetch_optional(&mut *w)
    .await?;
    Err(match exists {
        Some(_) => stale(kind, name),
        None => Error::not_found(kind, name),
    })
}

/// Deletes an object; answers the version it had.
async fn delete(w: &mut SqliteConnection, kind: KindId, name: &str) -> Result<i64, Error> {
    let version: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "DELETE FROM {} WHERE name_key = $1 RETURNING version",
        table(kind)
    )))
    .bind(key(name))
    .fetch_optional(&mut *w)
    .await?;
    version.ok_or_else(|| Error::not_found(kind, name))
}

async fn check_route_refs(conn: &mut SqliteConnection, spec: &RouteSpec) -> Result<(), Error> {
    let mut errors = Vec::new();
    for (i, g) in spec.gateways.iter().enumerate() {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM gateways WHERE name_key = $1")
            .bind(key(g))
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            errors.push(portico_model::FieldError::new(
                format!("gateways[{i}]"),
                format!("no gateway named `{g}`"),
            ));
        }
    }
    for t in spec.route.all_targets() {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM services WHERE name_key = $1")
            .bind(key(&t.service))
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            errors.push(portico_model::FieldError::new(
                "route.forward",
                format!("no service named `{}`: create it first", t.service),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

async fn set_route_gateways(
    conn: &mut SqliteConnection,
    route_id: i64,
    spec: &RouteSpec,
) -> Result<Vec<i64>, Error> {
    sqlx::query("DELETE FROM route_gateways WHERE route_id = $1")
        .bind(route_id)
        .execute(&mut *conn)
        .await?;
    for g in &spec.gateways {
        sqlx::query(
            "INSERT INTO route_gateways (route_id, gateway_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(route_id)
        .bind(key(g))
        .execute(&mut *conn)
        .await?;
    }
    route_gateway_ids(conn, route_id).await
}

async fn route_gateway_ids(conn: &mut SqliteConnection, route_id: i64) -> Result<Vec<i64>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT g.id FROM route_gateways r JOIN gateways g ON g.name_key = r.gateway_key WHERE r.route_id = $1",
    )
    .bind(route_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Gateways an API is deployed on.
async fn api_gateway_ids(conn: &mut SqliteConnection, api_id: i64) -> Result<Vec<i64>, Error> {
    Ok(
        sqlx::query_scalar("SELECT gateway_id FROM deployments WHERE api_id = $1")
            .bind(api_id)
            .fetch_all(&mut *conn)
            .await?,
    )
}

async fn all_gateway_ids(conn: &mut SqliteConnection) -> Result<Vec<i64>, Error> {
    Ok(sqlx::query_scalar("SELECT id FROM gateways")
        .fetch_all(&mut *conn)
        .await?)
}

/// How a stored snapshot body that carries private keys begins: the rest is the
/// envelope's JSON sealed with the data directory's key. (The content hash is taken over
/// the clear snapshot, so a new nonce on every write never moves a version.)
const SEALED_BODY: &str = "sealed:";

/// Whether a snapshot carries private keys (certificates for HTTPS listeners).
fn carries_private_keys(s: &portico_model::Snapshot) -> bool {
    s.listeners.iter().any(|l| {
        l.tls
            .as_ref()
            .is_some_and(|t| t.certificates.iter().any(|c| c.key_pem.is_some()))
    })
}

/// The body as stored: sealed when it carries private keys.
fn seal_body(
    sealer: Option<&crate::secrets::Sealer>,
    body: String,
    private: bool,
) -> Result<String, Error> {
    if !private {
        return Ok(body);
    }
    let sealer = sealer.ok_or_else(|| {
        Error::Internal(
            "a snapshot with private keys cannot be stored without the secret key".into(),
        )
    })?;
    Ok(format!("{SEALED_BODY}{}", sealer.seal(&body)?))
}

/// The body in clear, from what is stored.
fn open_body(sealer: Option<&crate::secrets::Sealer>, stored: String) -> Result<String, Error> {
    let Some(sealed) = stored.strip_prefix(SEALED_BODY) else {
        return Ok(stored);
    };
    let sealer = sealer.ok_or_else(|| {
        Error::Internal("a sealed snapshot cannot be read without the secret key".into())
    })?;
    sealer.open(sealed)
}

/// What the compiler noticed about each gateway's stored snapshot (routes that match the
/// same requests).
async fn warnings_of(
    conn: &mut SqliteConnection,
    gateway_ids: &[i64],
) -> Result<HashMap<i64, Vec<String>>, Error> {
    let mut out = HashMap::new();
    for &gid in gateway_ids {
        let text: Option<String> =
            sqlx::query_scalar("SELECT warnings FROM snapshots WHERE gateway_id = $1")
                .bind(gid)
                .fetch_optional(&mut *conn)
                .await?;
        out.insert(
            gid,
            match text {
                Some(t) => from_json(&t)?,
                None => Vec::new(),
            },
        );
    }
    Ok(out)
}

/// [`recompile`], refusing the write when it makes routes that match the same requests
/// on a gateway (a second API on a context, a raw route written like another): the
/// second would never be reached. Collisions that were there before are left alone.
pub(crate) async fn recompile_without_new_collisions(
    conn: &mut SqliteConnection,
    sealer: Option<&crate::secrets::Sealer>,
    gateway_ids: &[i64],
) -> Result<Moved, Error> {
    let before = warnings_of(conn, gateway_ids).await?;
    let moved = recompile(conn, sealer, gateway_ids).await?;
    let after = warnings_of(conn, gateway_ids).await?;
    let mut new = Vec::new();
    for (gid, list) in &after {
        let old = before.get(gid);
        for w in list {
            if !old.is_some_and(|o| o.contains(w)) {
                let name: String = sqlx::query_scalar("SELECT spec FROM gateways WHERE id = $1")
                    .bind(gid)
                    .fetch_one(&mut *conn)
                    .await
                    .map(|s: String| {
                        from_json::<GatewaySpec>(&s)
                            .map(|g| g.name)
                            .unwrap_or_default()
                    })?;
                new.push(format!("{w} on gateway `{name}`"));
            }
        }
    }
    if !new.is_empty() {
        return Err(Error::Conflict(format!(
            "{}: the second would never be reached, so nothing was changed. Give one another context or path (or hosts), or undeploy the other first",
            new.join("; ")
        )));
    }
    Ok(moved)
}

/// Compiles each gateway from the transaction's view and stores the snapshot when its
/// content changed. A gateway that does not compile fails the whole write.
async fn recompile(
    conn: &mut SqliteConnection,
    sealer: Option<&crate::secrets::Sealer>,
    gateway_ids: &[i64],
) -> Result<Moved, Error> {
    let mut moved = Vec::new();
    if gateway_ids.is_empty() {
        return Ok(moved);
    }
    let services: Vec<Service> = sqlx::query_scalar::<_, String>("SELECT spec FROM services")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|s| from_json(s))
        .collect::<Result<_, _>>()?;
    for &gid in gateway_ids {
        let spec: String = sqlx::query_scalar("SELECT spec FROM gateways WHERE id = $1")
            .bind(gid)
            .fetch_one(&mut *conn)
            .await?;
        let gateway: GatewaySpec = from_json(&spec)?;
        let deployed: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT a.api_key, a.lifecycle, d.revision, r.spec FROM deployments d \
             JOIN apis a ON a.id = d.api_id \
             JOIN revisions r ON r.api_id = d.api_id AND r.number = d.revision \
             WHERE d.gateway_id = $1",
        )
        .bind(gid)
        .fetch_all(&mut *conn)
        .await?;
        let api_specs: Vec<ApiSpec> = deployed
            .iter()
            .map(|(_, _, _, s)| from_json(s))
            .collect::<Result<_, _>>()?;
        let route_specs: Vec<RouteSpec> = sqlx::query_scalar::<_, String>(
            "SELECT r.spec FROM routes r JOIN route_gateways g ON g.route_id = r.id WHERE g.gateway_key = $1",
        )
        .bind(key(&gateway.name))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|s| from_json(s))
        .collect::<Result<_, _>>()?;
        let api_keys = consumers::api_key_grants(conn, gid).await?;
        let jwt = keys::jwt_settings(conn).await?;
        let certificates = certs::for_snapshots(conn, sealer).await?;
        let (acme_certificates, acme_state) = acme::for_snapshots(conn, sealer).await?;
        let deployed_apps = apps::for_snapshot(conn, gid).await?;
        let tiers = tiers::all_tiers(conn).await?;
        let consumer_limits = tiers::consumer_limits(conn, gid).await?;
        let input = Input {
            gateway: &gateway,
            apis: deployed
                .iter()
                .zip(&api_specs)
                .map(|((id, lifecycle, rev, _), spec)| DeployedApi {
                    api_id: id,
                    revision: *rev as u32,
                    lifecycle: parse_lifecycle(lifecycle),
                    spec,
                })
                .collect(),
            routes: route_specs.iter().collect(),
            services: &services,
            api_keys: &api_keys,
            jwt: jwt.as_ref(),
            tiers: &tiers,
            consumers: &consumer_limits,
            certificates: &certificates,
            acme_certificates: &acme_certificates,
            acme: &acme_state,
            apps: deployed_apps
                .iter()
                .map(|a| portico_compile::DeployedApp {
                    spec: &a.spec,
                    version: a.version,
                    files: &a.files,
                    created_at: a.created_at,
                    host: a.host.as_deref(),
                })
                .collect(),
        };
        let snapshot = portico_compile::compile(&input).map_err(|e| {
            Error::Compile(format!(
                "this change would leave gateway `{}` with a snapshot its nodes refuse, so nothing was changed: {e}",
                gateway.name
            ))
        })?;
        let ids: Vec<&str> = deployed.iter().map(|(id, ..)| id.as_str()).collect();
        let warnings = portico_compile::collisions(&snapshot, &ids);
        for w in &warnings {
            tracing::warn!(gateway = %gateway.name, "{w}: the second is never reached");
        }
        let warnings = to_json(&warnings)?;
        let hash = snapshot.content_hash();
        let private = carries_private_keys(&snapshot);
        let current: Option<(i64, String)> =
            sqlx::query_as("SELECT version, hash FROM snapshots WHERE gateway_id = $1")
                .bind(gid)
                .fetch_optional(&mut *conn)
                .await?;
        let version = match &current {
            Some((_, h)) if *h == hash => {
                // Same content; keep the version but refresh the envelope (a rename).
                let (v, _) = current.clone().unwrap_or_default();
                let body = to_json(&SyncEnvelope {
                    gateway: gateway.name.clone(),
                    version: v as u64,
                    hash: hash.clone(),
                    snapshot,
                })?;
                let body = seal_body(sealer, body, private)?;
                sqlx::query("UPDATE snapshots SET body = $1, warnings = $2 WHERE gateway_id = $3")
                    .bind(body)
                    .bind(&warnings)
                    .bind(gid)
                    .execute(&mut *conn)
                    .await?;
                continue;
            }
            Some((v, _)) => v + 1,
            None => 1,
        };
        let body = to_json(&SyncEnvelope {
            gateway: gateway.name.clone(),
            version: version as u64,
            hash: hash.clone(),
            snapshot,
        })?;
        let body = seal_body(sealer, body, private)?;
        sqlx::query(
            "INSERT INTO snapshots (gateway_id, version, hash, body, compiled_at, warnings) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (gateway_id) DO UPDATE SET version = excluded.version, hash = excluded.hash, \
             body = excluded.body, compiled_at = excluded.compiled_at, warnings = excluded.warnings",
        )
        .bind(gid)
        .bind(version)
        .bind(&hash)
        .bind(body)
        .bind(now())
        .bind(&warnings)
        .execute(&mut *conn)
        .await?;
        moved.push((gid, version as u64));
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// A route stored before `path_prefix` stopped rewriting keeps rewriting; a route with a
    /// rewrite of its own, or a plain `prefix`, is left alone.
    #[tokio::test]
    async fn stored_path_prefix_routes_keep_their_rewrite() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = super::Store::open(dir.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let specs = [
            (
                "old",
                r#"{"name":"old","gateways":[],"route":{"match":{"path":{"path_prefix":"/a"}},"forward":{"service":"s"}}}"#,
            ),
            (
                "own",
                r#"{"name":"own","gateways":[],"route":{"match":{"path":{"path_prefix":"/b"}},"forward":{"service":"s"},"rewrite":{"prefix":false}}}"#,
            ),
            (
                "app",
                r#"{"name":"app","gateways":[],"route":{"match":{"path":{"prefix":"/c"}},"forward":{"service":"s"}}}"#,
            ),
        ];
        for (name, spec) in specs {
            sqlx::query(
                "INSERT INTO routes (name_key, spec, version, created_at, updated_at) VALUES ($1, $2, 1, 0, 0)",
            )
            .bind(name)
            .bind(spec)
            .execute(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        // As if the database came from a version before the migration.
        sqlx::query("DELETE FROM schema_migrations WHERE version = 10")
            .execute(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
        let spec = |name: &'static str| {
            let pool = store.pool.clone();
            async move {
                let text: String =
                    sqlx::query_scalar("SELECT spec FROM routes WHERE name_key = $1")
                        .bind(name)
                        .fetch_one(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert_eq!(spec("old").await["route"]["rewrite"]["prefix"], "/");
        assert_eq!(spec("own").await["route"]["rewrite"]["prefix"], false);
        assert!(spec("app").await["route"].get("rewrite").is_none());
        // What the migration wrote still reads as a route.
        let old: portico_model::RouteSpec =
            serde_json::from_value(spec("old").await).unwrap_or_else(|e| panic!("{e}"));
        assert!(old.route.rewrite.is_some());
    }

    fn raw_route(name: &str, path: &str) -> portico_model::RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "gateways": ["default"],
            "route": {"match": {"path": {"path_prefix": path}}, "forward": {"service": "s"}},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A write that makes a route unreachable is refused, naming both; one that was there
    /// before (from an older version) is reported and blocks nothing.
    #[tokio::test]
    async fn colliding_routes_are_refused_and_old_collisions_reported() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = super::Store::open(dir.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .ensure_default_gateway(0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .create_service(&portico_model::Service::new(
                "s",
                ["127.0.0.1:9".to_owned()],
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .create_route(&raw_route("first", "/x"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = store
            .create_route(&raw_route("second", "/x"))
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("route `first` and route `second` match the same requests")
                && refused.contains("gateway `default`"),
            "{refused}"
        );
        assert!(store.route("second").await.is_err(), "nothing was stored");

        // As if an older version had stored the second one.
        let spec = serde_json::to_string(&raw_route("second", "/x")).unwrap_or_default();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO routes (name_key, spec, version, created_at, updated_at) VALUES ('second', $1, 1, 0, 0) RETURNING id",
        )
        .bind(spec)
        .fetch_one(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("INSERT INTO route_gateways (route_id, gateway_key) VALUES ($1, 'default')")
            .bind(id)
            .execute(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(store.recompile_all().await.unwrap_or_default().is_empty());
        let warnings = store
            .snapshot_warnings()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            warnings.values().flatten().collect::<Vec<_>>(),
            vec!["route `first` and route `second` match the same requests"]
        );
        // Later writes to that gateway go on.
        store
            .create_route(&raw_route("third", "/y"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn every_migration_file_is_registered_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "{files:?}");
        for (i, (version, _, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
            let text = std::fs::read_to_string(format!("{dir}/{}", files[i]))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(*sql, text, "{}", files[i]);
        }
    }
}
