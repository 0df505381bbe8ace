//! The store: every SQL statement of the control plane lives here, behind [`Store`]'s
//! methods. Each method that writes runs one transaction, and the gateways it affects are
//! recompiled inside that same transaction, so a definition and the snapshots built from it
//! change together or not at all. Writes are serialized: within a process by the writer
//! lock, and on PostgreSQL across every control-plane node by an advisory lock each write
//! transaction takes with its `BEGIN` (`BEGIN_LOCKED`); on SQLite, which has one writer,
//! by `BEGIN IMMEDIATE`. Every object carries a version that an update must name
//! (optimistic concurrency), so a stale update is refused whichever node it comes through.
//!
//! Two backends, SQLite (embedded, the default) and PostgreSQL (`--database`), run the same
//! SQL (`$n` placeholders, `RETURNING`, `ON CONFLICT`) and migrations of the same meaning,
//! each from its own folder (`migrations/sqlite`, `migrations/postgres`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use portico_compile::{DeployedApi, Input};
use portico_model::packed::{ApiKeys, Consumers};
use portico_model::{
    ApiSpec, GatewayKind, GatewaySpec, Lifecycle, Listener, ListenerProtocol, RouteSpec,
    SyncEnvelope,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::AnyPoolOptions;
// Table names in dynamic SQL come from a closed set of literals in this file, never from input.
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Row};
use tokio::sync::Mutex;

use crate::access::KindId;
use crate::error::Error;
pub use crate::page::Page;

mod acme;
mod apis;
mod apply;
mod apps;
mod blob_chunks;
mod certs;
mod consumers;
pub mod dump;
mod gateways;
mod held;
mod inputs;
mod keys;
mod kinds;
mod nodes;
pub mod notify;
mod settings;
mod signins;
pub(crate) use kinds::SpecKind;
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

/// The versioned migrations, in order: each version in both backends' folders, the same
/// change in each one's SQL.
macro_rules! migrations {
    ($($version:literal $description:literal $file:literal,)*) => {
        const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[$(
            ($version, $description, include_str!(concat!("../../migrations/sqlite/", $file))),
        )*];
        const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[$(
            ($version, $description, include_str!(concat!("../../migrations/postgres/", $file))),
        )*];
    };
}

migrations! {
    1 "init" "0001_init.sql",
    2 "consumers" "0002_consumers.sql",
    3 "signing keys" "0003_signing_keys.sql",
    4 "tiers" "0004_tiers.sql",
    5 "users" "0005_users.sql",
    6 "certificates" "0006_certificates.sql",
    7 "acme" "0007_acme.sql",
    8 "apps" "0008_apps.sql",
    9 "node identity" "0009_node_identity.sql",
    10 "path_prefix rewrites written out" "0010_path_prefix_rewrite.sql",
    11 "snapshot warnings" "0011_snapshot_warnings.sql",
    12 "people: roles, tokens, audit" "0012_people.sql",
    13 "portal sign-ups" "0013_user_status.sql",
    14 "revision authors" "0014_revision_author.sql",
    15 "settings" "0015_settings.sql",
    16 "app files in the database" "0016_blob_chunks.sql",
    17 "sign-in failures" "0017_signin_failures.sql",
    18 "endpoint health in node reports" "0018_endpoint_health.sql",
    19 "snapshot deltas" "0019_snapshot_deltas.sql",
    20 "the deploy trace of a snapshot" "0020_snapshot_trace.sql",
}

/// The schema version this Portico writes (its last migration).
pub const SCHEMA_VERSION: i64 = SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.len() - 1].0;

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
    pool: AnyPool,
    backend: Backend,
    write: Mutex<()>,
    /// Revisions kept per API.
    pub max_revisions: u32,
    /// Opens sealed certificate keys when snapshots are compiled.
    pub sealer: Option<std::sync::Arc<crate::secrets::Sealer>>,
    /// The developer portal's origin (serialized), compiled into every gateway's snapshot
    /// so that its Try Out can call their APIs from the browser; none when unset.
    pub portal_origin: Option<String>,
    /// Told about every snapshot version a committed write moved.
    pub hub: std::sync::Arc<crate::Hub>,
    /// Delta chains recently built.
    chains: gateways::ChainCache,
    /// Gateways' last compiled snapshots, that the next change compiles from.
    held: held::HeldSnapshots,
}

/// The databases the store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded file under the data directory: one control-plane node.
    Sqlite,
    /// A PostgreSQL server: any number of control-plane nodes.
    Postgres,
}

/// PostgreSQL advisory lock keys (one namespace: Portico's).
const MIGRATE_LOCK: i64 = 0x706f_7274_0001;

/// How a write transaction starts on PostgreSQL: holding advisory lock 0x706f_7274_0002
/// (Portico's namespace) until it commits or rolls back, so that writes from every
/// control-plane node run one at a time, as the writer lock orders them within one.
pub(crate) const BEGIN_LOCKED: &str = "BEGIN; SELECT pg_advisory_xact_lock(123623963885570)";

/// A database URL with its passwords hidden, to show in messages: the one after the user
/// name, and `password=` or `sslpassword=` in the query string.
pub fn redact(url: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let mut out = match (main.find("://"), main.rfind('@')) {
        (Some(s), Some(at)) if at > s => match main[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &main[..s + 3], &main[at..]),
            None => main.to_owned(),
        },
        _ => main.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("password")
                        || k.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Pool settings for either backend: a connection that sat idle is checked before it is
/// handed out (the database may have restarted meanwhile), one in steady use is not (a
/// check is a round trip on every acquire).
/// Database connections a control-plane node keeps on SQLite.
pub const SQLITE_CONNECTIONS: u32 = 8;
/// Database connections a control-plane node keeps on PostgreSQL.
pub const POSTGRES_CONNECTIONS: u32 = 16;

fn pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= std::time::Duration::from_secs(1) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// How long opening a PostgreSQL database may take at start.
const OPEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a PostgreSQL database did not open, in words that name the problem (never the
/// URL, which may hold a password). A pool that timed out says only that: one connection
/// attempt of its own tells what it met (refused, unknown host, no answer).
async fn why_unopened(url: &str, e: sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(e) => {
            format!("the URL is not valid ({e}): give postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        sqlx::Error::PoolTimedOut => {
            let once = <sqlx::postgres::PgConnection as sqlx::Connection>::connect(url);
            match tokio::time::timeout(OPEN_WITHIN, once).await {
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!(
                    "no answer within {} s: is the host up, and its port open to this machine?",
                    OPEN_WITHIN.as_secs()
                ),
                Ok(Ok(_)) => format!(
                    "it took longer than {} s to answer: try again",
                    OPEN_WITHIN.as_secs()
                ),
            }
        }
        e => e.to_string(),
    }
}

async fn migrate_on(
    conn: &mut AnyConnection,
    migrations: &[(i64, &str, &'static str)],
    up_to: i64,
) -> Result<(), Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
         description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await?;
    let known = migrations.last().map_or(0, |m| m.0);
    if let Some(n) = applied.iter().copied().max()
        && n > known
    {
        return Err(Error::Internal(format!(
            "the database's schema is version {n}, newer than this Portico knows ({known}): \
             run the Portico that wrote it (or a newer one)"
        )));
    }
    for (version, description, sql) in migrations {
        if applied.contains(version) || *version > up_to {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(*description)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version, description, "database migrated");
    }
    Ok(())
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

impl GatewayRecord {
    /// Its row id (stable while it exists).
    pub fn id(&self) -> i64 {
        self.id
    }
}

/// A stored object's key in list order and its bookkeeping.
pub trait Keyed {
    /// Its key (lower case), the order lists follow.
    fn key(&self) -> String;
    /// Its version and times.
    fn meta(&self) -> &Meta;
}

impl Keyed for GatewayRecord {
    fn key(&self) -> String {
        key(&self.spec.name)
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
}

impl<T: SpecKind> Keyed for Record<T> {
    fn key(&self) -> String {
        key(self.spec.name())
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
}

impl Keyed for ApiRecord {
    fn key(&self) -> String {
        self.id.clone()
    }
    fn meta(&self) -> &Meta {
        &self.meta
    }
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
    /// Who made it, as the audit log names them (empty for revisions older than this field).
    pub created_by: String,
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
    /// Endpoints its health checks hold out of balancing.
    pub unhealthy_endpoints: Vec<portico_model::UnhealthyEndpoint>,
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

/// `{column} IN ($first, …)` with `n` parameters (`{column} IN (NULL)`, which no row
/// matches, for none).
fn in_list(column: &str, first: usize, n: usize) -> String {
    if n == 0 {
        return format!("{column} IN (NULL)");
    }
    let params: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("{column} IN ({})", params.join(", "))
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
        Self::open_at(dir, SCHEMA_VERSION).await
    }

    /// [`Store::open`], migrating no further than schema version `up_to`: a scratch store
    /// that loads an older dump as the Portico that wrote it would have.
    pub(crate) async fn open_at(dir: &Path, up_to: i64) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        crate::secrets::private_dir(dir)?;
        // The database holds hashes, sealed secrets and who may do what: owner only. SQLite
        // gives its -wal and -shm files the database file's mode.
        let db = dir.join("portico.db");
        crate::secrets::private_file(&db)?;
        let path = db.to_string_lossy();
        if path.contains(['?', '#']) {
            return Err(Error::BadRequest(format!(
                "the data directory's path may not hold `?` or `#`: {}",
                dir.display()
            )));
        }
        let url = format!("sqlite://{}?mode=rwc", path.replace('%', "%25"));
        let pool = pool_options(SQLITE_CONNECTIONS)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(Error::Db)?;
        Self::opened(pool, Backend::Sqlite, up_to).await
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host/db`) and
    /// runs migrations, one control-plane node at a time.
    pub async fn open_postgres(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::BadRequest(format!(
                "`{shown}` is not a PostgreSQL URL: give postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )));
        }
        let pool = match pool_options(POSTGRES_CONNECTIONS)
            .acquire_timeout(OPEN_WITHIN)
            .connect(url)
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                return Err(Error::BadRequest(format!(
                    "cannot open the database at {shown}: {}",
                    why_unopened(url, e).await
                )));
            }
        };
        Self::opened(pool, Backend::Postgres, SCHEMA_VERSION).await
    }

    async fn opened(pool: AnyPool, backend: Backend, up_to: i64) -> Result<Self, Error> {
        let store = Self {
            pool,
            backend,
            write: Mutex::new(()),
            max_revisions: 10,
            sealer: None,
            portal_origin: None,
            hub: std::sync::Arc::default(),
            chains: gateways::ChainCache::default(),
            held: held::HeldSnapshots::default(),
        };
        store.migrate(up_to).await?;
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs the migrations this database lacks, each in its own transaction; refuses a
    /// schema newer than this binary knows. On PostgreSQL, control-plane nodes starting
    /// together migrate one at a time (an advisory lock held for the whole run).
    async fn migrate(&self, up_to: i64) -> Result<(), Error> {
        let _w = self.write.lock().await;
        let mut conn = self.pool.acquire().await?;
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => {
                // `CREATE TABLE IF NOT EXISTS` of a table that exists is a NOTICE, which
                // would be logged on every start: this connection keeps to warnings.
                sqlx::query("SET client_min_messages = warning")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("SELECT 1 FROM pg_advisory_lock($1)")
                    .bind(MIGRATE_LOCK)
                    .execute(&mut *conn)
                    .await?;
                POSTGRES_MIGRATIONS
            }
        };
        let done = migrate_on(&mut conn, migrations, up_to).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_unlock($1)")
                .bind(MIGRATE_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        done
    }

    /// What compiling a snapshot takes besides the stored definitions.
    pub(crate) fn compiling(&self) -> Compiling<'_> {
        Compiling {
            sealer: self.sealer.as_deref(),
            portal_origin: self.portal_origin.as_deref(),
            held: &self.held,
        }
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
            match compile_and_store(&mut tx, &self.compiling(), &[id], false, KeysTouched::Any)
                .await
            {
                Ok(compiled) => {
                    tx.commit().await?;
                    compiled.hold(&self.held);
                }
                Err(e) => failed.push((name, e)),
            }
        }
        Ok(failed)
    }
}

fn gateway_row(row: &sqlx::any::AnyRow) -> Result<GatewayRecord, Error> {
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

fn api_row(row: &sqlx::any::AnyRow) -> Result<ApiRecord, Error> {
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

async fn api_row_id(conn: &mut AnyConnection, id: &str) -> Result<i64, Error> {
    sqlx::query_scalar("SELECT id FROM apis WHERE api_key = $1")
        .bind(key(id))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found(crate::access::KindId::Api, id))
}

async fn deployed_gateway_names(
    conn: &mut AnyConnection,
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

/// Runs a write that changes the one row it names; `missing` is the error when it matched
/// none (the object, or the link between two, is not there).
async fn change_one<'q>(
    conn: &mut AnyConnection,
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    missing: impl FnOnce() -> Error,
) -> Result<(), Error> {
    if q.execute(conn).await?.rows_affected() == 0 {
        return Err(missing());
    }
    Ok(())
}

/// One page of a kind's rows (`columns` of its table): the first `page.limit + 1` after the
/// cursor, in key order (the extra one tells the caller there is more).
async fn page_rows(
    pool: &AnyPool,
    kind: KindId,
    columns: &'static str,
    page: &Page,
) -> Result<Vec<sqlx::any::AnyRow>, Error> {
    let k = key_column(kind);
    Ok(sqlx::query(AssertSqlSafe(format!(
        "SELECT {columns} FROM {} WHERE {k} > $1 ORDER BY {k} LIMIT $2",
        table(kind)?
    )))
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(page.fetch())
    .fetch_all(pool)
    .await?)
}

/// The one row of `kind` named `name` (`columns` of its table).
async fn row_of(
    pool: &AnyPool,
    kind: KindId,
    columns: &'static str,
    name: &str,
) -> Result<sqlx::any::AnyRow, Error> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {columns} FROM {} WHERE {} = $1",
        table(kind)?,
        key_column(kind)
    )))
    .bind(key(name))
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found(kind, name))
}

/// The columns of a kind stored as its JSON spec that make its [`Record`].
const SPEC_COLUMNS: &str = "spec, version, created_at, updated_at";

/// A [`Record`] from a row of [`SPEC_COLUMNS`].
fn spec_record<T: DeserializeOwned>(row: &sqlx::any::AnyRow) -> Result<Record<T>, Error> {
    Ok(Record {
        spec: from_json(&row.try_get::<String, _>("spec")?)?,
        meta: Meta {
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        },
    })
}

/// The table of a kind stored as its JSON spec with the common columns. Every kind is
/// named: one kept elsewhere is an error here, never another kind's table.
fn table(kind: KindId) -> Result<&'static str, Error> {
    Ok(match kind {
        KindId::Service => "services",
        KindId::Route => "routes",
        KindId::Consumer => "consumers",
        KindId::Gateway => "gateways",
        KindId::Api => "apis",
        KindId::App => "apps",
        KindId::Tier => "tiers",
        KindId::Certificate
        | KindId::Acme
        | KindId::SigningKey
        | KindId::User
        | KindId::Role
        | KindId::Token
        | KindId::AdminToken
        | KindId::Audit
        | KindId::Status
        | KindId::Apply
        | KindId::Portal => {
            return Err(Error::Internal(format!(
                "{} is not stored as a definition",
                kind.as_str()
            )));
        }
    })
}

/// The column a kind's table is keyed by (lower case).
fn key_column(kind: KindId) -> &'static str {
    match kind {
        KindId::Api => "api_key",
        KindId::App => "slug",
        _ => "name_key",
    }
}

/// One page of a kind stored as its JSON spec, in key order.
async fn list<T: DeserializeOwned>(
    pool: &AnyPool,
    kind: KindId,
    page: &Page,
) -> Result<Vec<Record<T>>, Error> {
    page_rows(pool, kind, SPEC_COLUMNS, page)
        .await?
        .iter()
        .map(spec_record)
        .collect()
}

async fn get<T: DeserializeOwned>(
    pool: &AnyPool,
    kind: KindId,
    name: &str,
) -> Result<Record<T>, Error> {
    spec_record(&row_of(pool, kind, SPEC_COLUMNS, name).await?)
}

async fn insert<T: Serialize>(
    w: &mut AnyConnection,
    kind: KindId,
    name: &str,
    spec: &T,
) -> Result<i64, Error> {
    let t = now();
    // A new API starts its lifecycle as `created`.
    let (more, values) = match kind {
        KindId::Api => (", lifecycle", ", 'created'"),
        _ => ("", ""),
    };
    let id: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO {t} ({k}, spec, version, created_at, updated_at{more}) \
         VALUES ($1, $2, 1, $3, $3{values}) ON CONFLICT ({k}) DO NOTHING RETURNING id",
        t = table(kind)?,
        k = key_column(kind),
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
    w: &mut AnyConnection,
    kind: KindId,
    name: &str,
    spec: &T,
    expected: i64,
) -> Result<i64, Error> {
    let id: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "UPDATE {} SET spec = $1, version = version + 1, updated_at = $2 \
         WHERE {} = $3 AND version = $4 RETURNING id",
        table(kind)?,
        key_column(kind)
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
        "SELECT id FROM {} WHERE {} = $1",
        table(kind)?,
        key_column(kind)
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
async fn delete(w: &mut AnyConnection, kind: KindId, name: &str) -> Result<i64, Error> {
    let version: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "DELETE FROM {} WHERE {} = $1 RETURNING version",
        table(kind)?,
        key_column(kind)
    )))
    .bind(key(name))
    .fetch_optional(&mut *w)
    .await?;
    version.ok_or_else(|| Error::not_found(kind, name))
}

async fn check_route_refs(conn: &mut AnyConnection, spec: &RouteSpec) -> Result<(), Error> {
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
    conn: &mut AnyConnection,
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

async fn route_gateway_ids(conn: &mut AnyConnection, route_id: i64) -> Result<Vec<i64>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT g.id FROM route_gateways r JOIN gateways g ON g.name_key = r.gateway_key WHERE r.route_id = $1",
    )
    .bind(route_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Gateways an API is deployed on.
async fn api_gateway_ids(conn: &mut AnyConnection, api_id: i64) -> Result<Vec<i64>, Error> {
    Ok(
        sqlx::query_scalar("SELECT gateway_id FROM deployments WHERE api_id = $1")
            .bind(api_id)
            .fetch_all(&mut *conn)
            .await?,
    )
}

async fn all_gateway_ids(conn: &mut AnyConnection) -> Result<Vec<i64>, Error> {
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

/// [`compile_and_store`] for gateways this transaction inserted.
pub(crate) async fn compile_new(
    conn: &mut AnyConnection,
    with: &Compiling<'_>,
    gateway_ids: &[i64],
) -> Result<Compiled, Error> {
    compile_and_store(conn, with, gateway_ids, true, KeysTouched::Any).await
}

/// [`compile_and_store`], refusing the write when it makes routes that match the same
/// requests on a gateway (a second API on a context, a raw route written like another):
/// the second would never be reached. Collisions that were there before are left alone.
pub(crate) async fn recompile_without_new_collisions(
    conn: &mut AnyConnection,
    with: &Compiling<'_>,
    gateway_ids: &[i64],
    keys: KeysTouched<'_>,
) -> Result<Compiled, Error> {
    let compiled = compile_and_store(conn, with, gateway_ids, false, keys).await?;
    if !compiled.new_collisions.is_empty() {
        return Err(Error::Conflict(format!(
            "{}: the second would never be reached, so nothing was changed. Give one another context or path (or hosts), or undeploy the other first",
            compiled.new_collisions.join("; ")
        )));
    }
    Ok(compiled)
}

/// What compiling a snapshot takes besides the stored definitions: the control plane's
/// settings every gateway gets, and the snapshots it compiled last.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compiling<'a> {
    /// Opens sealed certificate keys.
    sealer: Option<&'a crate::secrets::Sealer>,
    /// The developer portal's origin.
    portal_origin: Option<&'a str>,
    /// Gateways' last compiled snapshots.
    held: &'a held::HeldSnapshots,
}

/// Which consumers' keys, subscriptions or tiers a write changed, on the gateways it
/// compiles again. The others' are taken from a gateway's last compiled snapshot when
/// this control-plane node holds it; with [`KeysTouched::Any`] every key is read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeysTouched<'a> {
    /// Any consumer's may have changed (or the APIs deployed on the gateway did).
    Any,
    /// Only these consumers' (by name, in any case); none for a write that changed no
    /// consumer and no API's place on the gateway.
    Of(&'a [&'a str]),
}

/// At most this many consumers are put in a held snapshot by name; a write that touches
/// more reads every key.
const TOUCHED_MAX: usize = 256;

/// What a compile did: the versions it moved, the route collisions that are new, and
/// the snapshots to hold once the write commits.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    /// Gateways whose snapshot moved, and their new versions.
    pub moved: Moved,
    /// Route collisions the new snapshots have that the stored ones had not.
    pub new_collisions: Vec<String>,
    held: Vec<(i64, Arc<held::LastCompiled>)>,
}

impl Compiled {
    /// Holds the compiled snapshots (call once their write committed).
    pub(crate) fn hold(self, held: &held::HeldSnapshots) -> Moved {
        for (gid, entry) in self.held {
            held.put(gid, entry);
        }
        self.moved
    }

    /// Adds what another compile in the same write did.
    pub(crate) fn extend(&mut self, other: Compiled) {
        self.moved.extend(other.moved);
        self.new_collisions.extend(other.new_collisions);
        // A gateway compiled twice in one write: its last compile is what commits.
        for (gid, entry) in other.held {
            self.held.retain(|(g, _)| *g != gid);
            self.held.push((gid, entry));
        }
    }
}

/// The key material of a gateway's held snapshot with consumers `names` read again:
/// their keys and their row taken out, and put back as the database has them now.
async fn patched_keys(
    conn: &mut AnyConnection,
    gid: i64,
    last: &portico_model::Snapshot,
    names: &[&str],
) -> Result<(ApiKeys, Consumers), Error> {
    let mut keys = last.security.api_keys.clone();
    let mut limits = last.security.consumers.clone();
    if names.is_empty() {
        return Ok((keys, limits));
    }
    let touched = |name: &[u8]| {
        names
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    };
    let gone_keys = keys.hashes_where(touched);
    let gone_consumers = limits.names_where(touched);
    let lower: Vec<String> = names.iter().map(|n| key(n)).collect();
    let put_keys = consumers::api_key_grants_of(conn, gid, Some(&lower)).await?;
    let put_limits = tiers::consumer_limits_of(conn, gid, Some(&lower)).await?;
    let packing = |e: portico_model::packed::PackError| {
        Error::Internal(format!(
            "cannot put the changed keys in the held snapshot: {e}"
        ))
    };
    keys.update(
        put_keys.into_iter().map(portico_compile::key_row).collect(),
        &gone_keys,
        |_| {},
    )
    .map_err(packing)?;
    limits
        .update(
            put_limits
                .into_iter()
                .filter_map(portico_compile::consumer_row)
                .collect(),
            &gone_consumers,
            |_| {},
        )
        .map_err(packing)?;
    Ok((keys, limits))
}

/// Compiles each gateway from the transaction's view and stores the snapshot when its
/// content changed. A gateway that does not compile fails the whole write. With
/// `new_rows`, the gateways were inserted by this very transaction: nothing can be
/// deployed on them or subscribed through them yet (those rows name a gateway by its
/// id), so that is not read.
///
/// A gateway whose last snapshot this node holds (and the database still stores) is
/// compiled from it: the keys of consumers `keys` does not name are taken as held, the
/// digest moves by what changed, and the delta is what changed; otherwise every key is
/// read, the digest is computed whole and the delta worked out against the stored body.
async fn compile_and_store(
    conn: &mut AnyConnection,
    with: &Compiling<'_>,
    gateway_ids: &[i64],
    new_rows: bool,
    keys: KeysTouched<'_>,
) -> Result<Compiled, Error> {
    let sealer = with.sealer;
    let mut out = Compiled::default();
    if gateway_ids.is_empty() {
        return Ok(out);
    }
    // What every gateway gets alike, read once.
    let inputs::Shared {
        services,
        jwt,
        certificates,
        acme_certificates,
        tiers,
    } = inputs::shared(conn, sealer).await?;
    let acme_state = acme::state_for_snapshots(conn).await?;
    for &gid in gateway_ids {
        // The gateway and what its stored snapshot is, in one round trip.
        let (spec, current_version, current_hash, current_warnings): (
            String,
            Option<i64>,
            Option<String>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT g.spec, s.version, s.hash, s.warnings FROM gateways g \
             LEFT JOIN snapshots s ON s.gateway_id = g.id WHERE g.id = $1",
        )
        .bind(gid)
        .fetch_one(&mut *conn)
        .await?;
        let gateway: GatewaySpec = from_json(&spec)?;
        let warned_before: Vec<String> = match &current_warnings {
            Some(t) => from_json(t)?,
            None => Vec::new(),
        };
        let last = with
            .held
            .get(gid, current_version, current_hash.as_deref())
            .filter(|_| !new_rows);
        let packed = match (&last, keys) {
            (Some(last), KeysTouched::Of(names)) if names.len() <= TOUCHED_MAX => {
                Some(patched_keys(conn, gid, last.held.snapshot(), names).await?)
            }
            _ => None,
        };
        let deployed: Vec<(String, String, i64, String)> = if new_rows {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT a.api_key, a.lifecycle, d.revision, r.spec FROM deployments d \
                 JOIN apis a ON a.id = d.api_id \
                 JOIN revisions r ON r.api_id = d.api_id AND r.number = d.revision \
                 WHERE d.gateway_id = $1",
            )
            .bind(gid)
            .fetch_all(&mut *conn)
            .await?
        };
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
        let (api_keys, consumer_limits) = if new_rows || packed.is_some() {
            (Vec::new(), Vec::new())
        } else {
            (
                consumers::api_key_grants_of(conn, gid, None).await?,
                tiers::consumer_limits_of(conn, gid, None).await?,
            )
        };
        let deployed_apps = if new_rows {
            Vec::new()
        } else {
            apps::for_snapshot(conn, gid).await?
        };
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
            packed,
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
            portal_origin: with.portal_origin,
        };
        let snapshot = portico_compile::compile(&input).map_err(|e| {
            Error::Compile(format!(
                "this change would leave gateway `{}` with a snapshot its nodes refuse, so nothing was changed: {e}",
                gateway.name
            ))
        })?;
        drop((api_keys, consumer_limits));
        let ids: Vec<&str> = deployed.iter().map(|(id, ..)| id.as_str()).collect();
        let warnings = portico_compile::collisions(&snapshot, &ids);
        for w in &warnings {
            tracing::warn!(gateway = %gateway.name, "{w}: the second is never reached");
            if !warned_before.contains(w) {
                out.new_collisions
                    .push(format!("{w} on gateway `{}`", gateway.name));
            }
        }
        let warnings = to_json(&warnings)?;
        // The digest, and what changed since the held snapshot: both from the held one
        // when there is one (moved by the entities that changed), else from scratch.
        let from_last = last.as_ref().and_then(|last| {
            let changes = portico_model::delta::diff(last.held.snapshot(), &snapshot).ok()?;
            let mut next = last.held.clone();
            next.advance(changes.clone()).ok()?;
            Some((next.digest(), changes))
        });
        let (digest, changes) = match from_last {
            Some((d, c)) => (d, Some(c)),
            None => (portico_model::delta::digest(&snapshot), None),
        };
        debug_assert_eq!(
            digest,
            portico_model::delta::digest(&snapshot),
            "a digest moved by the changes is the whole snapshot's"
        );
        let hash = digest.to_text();
        let private = carries_private_keys(&snapshot);
        let current = current_version.zip(current_hash);
        let version = match &current {
            Some((v, h)) if *h == hash => {
                let v = *v;
                // Same content. The envelope names the gateway: written again when it was
                // renamed (a held snapshot knows the name its body carries).
                let renamed = last.as_ref().is_none_or(|l| l.gateway != gateway.name);
                if renamed {
                    let envelope = SyncEnvelope {
                        gateway: gateway.name.clone(),
                        version: v as u64,
                        hash: hash.clone(),
                        snapshot,
                    };
                    let body = seal_body(sealer, to_json(&envelope)?, private)?;
                    sqlx::query("UPDATE snapshots SET body = $1 WHERE gateway_id = $2")
                        .bind(body)
                        .bind(gid)
                        .execute(&mut *conn)
                        .await?;
                    out.held
                        .push((gid, held::LastCompiled::of(envelope, digest)));
                }
                sqlx::query("UPDATE snapshots SET warnings = $1 WHERE gateway_id = $2")
                    .bind(&warnings)
                    .bind(gid)
                    .execute(&mut *conn)
                    .await?;
                continue;
            }
            Some((v, _)) => v + 1,
            None => 1,
        };
        if current.is_some() {
            match changes {
                Some(changes) => {
                    put_delta(conn, sealer, gid, version, &hash, Some(&changes), private).await?
                }
                None => store_delta(conn, sealer, gid, version, &hash, &snapshot, private).await?,
            }
        }
        let envelope = SyncEnvelope {
            gateway: gateway.name.clone(),
            version: version as u64,
            hash: hash.clone(),
            snapshot,
        };
        let body = seal_body(sealer, to_json(&envelope)?, private)?;
        sqlx::query(
            "INSERT INTO snapshots (gateway_id, version, hash, body, compiled_at, warnings) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (gateway_id) DO UPDATE SET version = excluded.version, hash = excluded.hash, \
             body = excluded.body, compiled_at = excluded.compiled_at, warnings = excluded.warnings, \
             trace = NULL",
        )
        .bind(gid)
        .bind(version)
        .bind(&hash)
        .bind(body)
        .bind(now())
        .bind(&warnings)
        .execute(&mut *conn)
        .await?;
        out.moved.push((gid, version as u64));
        out.held
            .push((gid, held::LastCompiled::of(envelope, digest)));
    }
    Ok(out)
}

/// How many versions back a gateway's deltas are kept: a node further behind fetches the
/// whole snapshot.
pub const DELTAS_KEPT: i64 = 64;

/// Stores what changed from the gateway's stored snapshot to `snapshot` (version
/// `version`), and forgets deltas more than [`DELTAS_KEPT`] versions old. When the two
/// cannot be compared (a stored snapshot from an older build, unnamed routes) nothing is
/// stored, and nodes behind this version fetch the whole snapshot.
async fn store_delta(
    conn: &mut AnyConnection,
    sealer: Option<&crate::secrets::Sealer>,
    gid: i64,
    version: i64,
    hash: &str,
    snapshot: &portico_model::Snapshot,
    private: bool,
) -> Result<(), Error> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT body FROM snapshots WHERE gateway_id = $1")
            .bind(gid)
            .fetch_optional(&mut *conn)
            .await?;
    let changes = stored
        .map(|b| open_body(sealer, b))
        .transpose()?
        .and_then(|b| serde_json::from_str::<SyncEnvelope>(&b).ok())
        .map(|old| portico_model::delta::diff(&old.snapshot, snapshot));
    let changes = match changes {
        Some(Ok(changes)) => Some(changes),
        Some(Err(e)) => {
            tracing::debug!(gateway_id = gid, version, error = %e, "no delta: nodes fetch the whole snapshot");
            None
        }
        None => None,
    };
    put_delta(conn, sealer, gid, version, hash, changes.as_ref(), private).await
}

/// Stores `changes` as version `version`'s delta (none: nodes behind it fetch the whole
/// snapshot), and forgets deltas more than [`DELTAS_KEPT`] versions old.
async fn put_delta(
    conn: &mut AnyConnection,
    sealer: Option<&crate::secrets::Sealer>,
    gid: i64,
    version: i64,
    hash: &str,
    changes: Option<&portico_model::delta::Changes>,
    private: bool,
) -> Result<(), Error> {
    // A delta row left at this version (by a store this one was imported over) must go.
    sqlx::query("DELETE FROM snapshot_deltas WHERE gateway_id = $1 AND version = $2")
        .bind(gid)
        .bind(version)
        .execute(&mut *conn)
        .await?;
    if let Some(changes) = changes {
        let body = seal_body(sealer, to_json(changes)?, private)?;
        sqlx::query(
            "INSERT INTO snapshot_deltas (gateway_id, version, hash, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(gid)
        .bind(version)
        .bind(hash)
        .bind(body)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM snapshot_deltas WHERE gateway_id = $1 AND version <= $2")
        .bind(gid)
        .bind(version - DELTAS_KEPT)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

    /// Every password a database URL can carry is hidden; the rest is kept to say where.
    #[test]
    fn database_urls_are_shown_without_their_passwords() {
        for (url, shown) in [
            (
                "postgres://portico:s3cret@db:5432/portico",
                "postgres://portico:***@db:5432/portico",
            ),
            (
                "postgres://portico@db/portico?password=s3cret&sslmode=verify-full",
                "postgres://portico@db/portico?password=***&sslmode=verify-full",
            ),
            (
                "postgres://u:p@db/x?sslmode=require&SSLPassword=k3y&application_name=a",
                "postgres://u:***@db/x?sslmode=require&SSLPassword=***&application_name=a",
            ),
            ("postgres://db/portico", "postgres://db/portico"),
        ] {
            assert_eq!(super::redact(url), shown);
            assert!(!super::redact(url).contains("s3cret"));
        }
    }

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
        store
            .migrate(super::SCHEMA_VERSION)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
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
            .create(&portico_model::Service::new(
                "s",
                ["127.0.0.1:9".to_owned()],
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .create(&raw_route("first", "/x"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = store
            .create(&raw_route("second", "/x"))
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("route `first` and route `second` match the same requests")
                && refused.contains("gateway `default`"),
            "{refused}"
        );
        assert!(
            store
                .one::<portico_model::RouteSpec>("second")
                .await
                .is_err(),
            "nothing was stored"
        );

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
            .create(&raw_route("third", "/y"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn every_migration_file_is_registered_in_order_in_both_folders() {
        for (folder, migrations) in [
            ("sqlite", SQLITE_MIGRATIONS),
            ("postgres", POSTGRES_MIGRATIONS),
        ] {
            let dir = format!("{}/migrations/{folder}", env!("CARGO_MANIFEST_DIR"));
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            files.sort();
            assert_eq!(files.len(), migrations.len(), "{files:?}");
            for (i, (version, _, sql)) in migrations.iter().enumerate() {
                assert_eq!(*version, i as i64 + 1);
                let text = std::fs::read_to_string(format!("{dir}/{}", files[i]))
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(*sql, text, "{}", files[i]);
            }
        }
    }
}
