//! The whole state as one file, to move a control plane from SQLite to PostgreSQL (or back):
//! [`Store::export`] reads every table in one consistent read and the app files' bytes;
//! [`Store::import`] checks the dump (format, schema, checksum) and writes all of it into
//! an empty store in one transaction. Sealed secrets stay sealed (the target needs the same
//! secret key), and every gateway's snapshot keeps its version and hash, so gateway nodes,
//! which ask for what is newer than what they hold, never see a version go backwards.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::{AnyConnection, AssertSqlSafe, Row as _};

use super::{Backend, Store, now};
use crate::error::Error;

/// What the file says it is.
pub const FORMAT: &str = "portico-store-dump";

/// The dump format's version this Portico writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Every table, parents before children (the order rows are written in).
const TABLES: &[&str] = &[
    "admin_tokens",
    "gateways",
    "services",
    "routes",
    "route_gateways",
    "apis",
    "revisions",
    "deployments",
    "snapshots",
    "nodes",
    "consumers",
    "subscriptions",
    "credentials",
    "signing_keys",
    "tiers",
    "users",
    "user_tokens",
    "certificates",
    "acme_accounts",
    "acme_hosts",
    "acme_challenges",
    "apps",
    "app_versions",
    "app_deployments",
    "blobs",
    "roles",
    "audit",
    "settings",
];

/// Tables whose `id` column a PostgreSQL identity fills (its sequence moves past the
/// imported ids).
const IDENTITIES: &[&str] = &[
    "admin_tokens",
    "gateways",
    "services",
    "routes",
    "apis",
    "consumers",
    "tiers",
    "users",
    "certificates",
    "apps",
    "audit",
];

/// B64 for file contents and binary columns.
const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// A whole store.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the Portico that wrote it.
    pub format_version: u32,
    /// The schema (migration) version of the store it came from.
    pub schema_version: i64,
    /// Which Portico wrote it.
    pub made_by: String,
    /// Unix seconds.
    pub made_at: i64,
    /// Rows by table.
    pub tables: BTreeMap<String, Table>,
    /// App files' bytes (base64) by SHA-256.
    pub files: BTreeMap<String, String>,
    /// SHA-256 of the tables and files as written, to tell a damaged file.
    pub checksum: String,
}

/// One table's rows.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Column names, in the order of each row's values.
    pub columns: Vec<String>,
    /// Values: numbers, text, base64 for binary, null.
    pub rows: Vec<Vec<Value>>,
}

/// How a column is read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bytes,
}

/// What a dump says about itself, read before the rest: a dump from a newer Portico may
/// have fields this one does not know, and should be refused for being newer, not for those.
#[derive(Debug, Deserialize)]
struct Header {
    format: Option<String>,
    format_version: Option<u32>,
    schema_version: Option<i64>,
    made_by: Option<String>,
}

fn checksum(tables: &BTreeMap<String, Table>, files: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(tables).unwrap_or_default());
    h.update(serde_json::to_vec(files).unwrap_or_default());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

impl Store {
    /// The columns of `table` in this database, with how each is read.
    async fn columns(
        &self,
        conn: &mut AnyConnection,
        table: &str,
    ) -> Result<Vec<(String, Kind)>, Error> {
        let rows: Vec<(String, String)> = match self.backend {
            Backend::Sqlite => {
                let sql = format!("SELECT name, type FROM pragma_table_info('{table}') ORDER BY cid");
                sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&mut *conn).await?
            }
            Backend::Postgres => {
                sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(name, ty)| {
                let ty = ty.to_ascii_uppercase();
                let kind = if ty.contains("INT") {
                    Kind::Int
                } else if ty.contains("BLOB") || ty.contains("BYTEA") {
                    Kind::Bytes
                } else {
                    Kind::Text
                };
                (name, kind)
            })
            .collect())
    }

    /// The schema version this store is at.
    async fn schema_version(&self, conn: &mut AnyConnection) -> Result<i64, Error> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Every table and every app file (read from `blobs_dir` on SQLite, from the database
    /// on PostgreSQL), read in one transaction.
    pub async fn export(&self, blobs_dir: &Path) -> Result<Dump, Error> {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
                    .await?
            }
        };
        let schema_version = self.schema_version(&mut tx).await?;
        let mut tables = BTreeMap::new();
        for table in TABLES {
            let columns = self.columns(&mut tx, table).await?;
            if columns.is_empty() {
                // Not in this store's schema (a scratch store of an older one).
                continue;
            }
            let list = columns
                .iter()
                .map(|(c, _)| c.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT {list} FROM {table}");
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *tx).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut values = Vec::with_capacity(columns.len());
                for (i, (_, kind)) in columns.iter().enumerate() {
                    values.push(match kind {
                        Kind::Int => row
                            .try_get::<Option<i64>, _>(i)?
                            .map_or(Value::Null, Value::from),
                        Kind::Text => row
                            .try_get::<Option<String>, _>(i)?
                            .map_or(Value::Null, Value::from),
                        Kind::Bytes => row
                            .try_get::<Option<Vec<u8>>, _>(i)?
                            .map_or(Value::Null, |b| Value::from(B64.encode(b))),
                    });
                }
                out.push(values);
            }
            tables.insert(
                (*table).to_owned(),
                Table {
                    columns: columns.into_iter().map(|(c, _)| c).collect(),
                    rows: out,
                },
            );
        }
        let hashes: Vec<String> = if tables.contains_key("blobs") {
            sqlx::query_scalar("SELECT hash FROM blobs")
                .fetch_all(&mut *tx)
                .await?
        } else {
            Vec::new()
        };
        let mut files = BTreeMap::new();
        for hash in hashes {
            let bytes = match self.backend {
                Backend::Sqlite => {
                    let path = portico_model::app::blob_path(blobs_dir, &hash);
                    match tokio::fs::read(&path).await {
                        Ok(b) => b,
                        // Recorded, but gone from disk: nothing to carry.
                        Err(_) => continue,
                    }
                }
                Backend::Postgres => {
                    let chunks: Vec<Vec<u8>> = sqlx::query_scalar(
                        "SELECT data FROM blob_chunks WHERE hash = $1 ORDER BY n",
                    )
                    .bind(&hash)
                    .fetch_all(&mut *tx)
                    .await?;
                    if chunks.is_empty() {
                        continue;
                    }
                    chunks.concat()
                }
            };
            files.insert(hash, B64.encode(bytes));
        }
        tx.commit().await?;
        Ok(Dump {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            schema_version,
            made_by: format!("portico {}", env!("CARGO_PKG_VERSION")),
            made_at: now(),
            checksum: checksum(&tables, &files),
            tables,
            files,
        })
    }

    /// What the store already holds beyond a fresh start (the built-in gateway, the
    /// built-in roles, its own settings): `table: rows` for each such table.
    async fn holdings(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for (table, fresh) in [
            ("gateways", "builtin = 0"),
            ("apis", "1 = 1"),
            ("services", "1 = 1"),
            ("routes", "1 = 1"),
            ("consumers", "1 = 1"),
            ("tiers", "1 = 1"),
            ("users", "1 = 1"),
            ("apps", "1 = 1"),
            ("certificates", "1 = 1"),
            ("admin_tokens", "1 = 1"),
            ("roles", "builtin = 0"),
        ] {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE {fresh}");
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
            if n > 0 {
                out.push(format!("{table}: {n}"));
            }
        }
        Ok(out)
    }

    /// Checks `dump` and writes it into this store in one transaction: refuses a damaged
    /// dump, one of another schema, and (unless `force`) a store that holds anything yet.
    /// App files go into the database on PostgreSQL, under `blobs_dir` on SQLite.
    /// Answers how many rows and files were written.
    pub async fn import(
        &self,
        dump: &Dump,
        blobs_dir: &Path,
        force: bool,
    ) -> Result<(usize, usize), Error> {
        if dump.format != FORMAT {
            return Err(bad(format!(
                "not a Portico store dump (format `{}`)",
                dump.format
            )));
        }
        if dump.format_version > FORMAT_VERSION {
            return Err(bad(format!(
                "the dump was made by a newer Portico ({}, dump format {}): import it with that one",
                dump.made_by, dump.format_version
            )));
        }
        if checksum(&dump.tables, &dump.files) != dump.checksum {
            return Err(bad(
                "the dump is damaged: its content does not match its checksum",
            ));
        }
        let mut conn = self.pool.acquire().await?;
        let ours = self.schema_version(&mut conn).await?;
        drop(conn);
        if dump.schema_version > ours {
            return Err(bad(format!(
                "the dump's schema is version {}, newer than this Portico's ({ours}): import it with the Portico that made it ({})",
                dump.schema_version, dump.made_by
            )));
        }
        if dump.schema_version < ours {
            return Err(bad(format!(
                "the dump's schema is version {}, older than this store's ({ours}): bring it up to date first (`portico store import` does, through Dump::upgraded)",
                dump.schema_version
            )));
        }
        for name in dump.tables.keys() {
            if !TABLES.contains(&name.as_str()) {
                return Err(bad(format!(
                    "the dump has a table `{name}` this Portico does not know"
                )));
            }
        }
        let held = if force {
            Vec::new()
        } else {
            self.holdings().await?
        };
        if !held.is_empty() {
            return Err(Error::Conflict(format!(
                "the target store is not empty ({}): import into an empty one, or pass --force to replace everything in it",
                held.join(", ")
            )));
        }
        let mut files = Vec::with_capacity(dump.files.len());
        for (hash, b64) in &dump.files {
            let bytes = B64
                .decode(b64)
                .map_err(|_| bad(format!("app file {hash} in the dump is not base64")))?;
            let got: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if &got != hash {
                return Err(bad(format!("app file {hash} in the dump hashes to {got}")));
            }
            files.push((hash, bytes));
        }
        let mut tx = self.write().await?;
        // What the store served until now (only `--force` gets here with a store that is
        // not empty): a gateway's nodes ask for what is newer than the version they hold,
        // so no gateway may come out of the import with a lower one.
        let served: Vec<(String, i64, String)> = if force {
            sqlx::query_as(
                "SELECT g.name_key, s.version, s.hash FROM snapshots s \
                 JOIN gateways g ON g.id = s.gateway_id",
            )
            .fetch_all(&mut *tx)
            .await?
        } else {
            Vec::new()
        };
        // A store of an older schema (a scratch one upgrading a dump) lacks later tables.
        for table in TABLES
            .iter()
            .rev()
            .chain(&["blob_chunks", "snapshot_deltas"])
        {
            if self.columns(&mut tx, table).await?.is_empty() {
                continue;
            }
            let sql = format!("DELETE FROM {table}");
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        let mut rows = 0;
        for table in TABLES {
            let Some(t) = dump.tables.get(*table) else {
                continue;
            };
            let known = self.columns(&mut tx, table).await?;
            let kinds: Vec<Kind> = t
                .columns
                .iter()
                .map(|c| {
                    known
                        .iter()
                        .find(|(k, _)| k == c)
                        .map(|(_, kind)| *kind)
                        .ok_or_else(|| {
                            bad(format!(
                                "the dump's `{table}` has a column `{c}` this Portico does not know"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            let list = t.columns.join(", ");
            let marks = (1..=t.columns.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO {table} ({list}) VALUES ({marks})");
            for (r, values) in t.rows.iter().enumerate() {
                if values.len() != kinds.len() {
                    return Err(bad(format!(
                        "row {r} of `{table}` has {} values for {} columns",
                        values.len(),
                        kinds.len()
                    )));
                }
                let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
                for (v, kind) in values.iter().zip(&kinds) {
                    let wrong = || {
                        bad(format!(
                            "row {r} of `{table}`: `{v}` does not fit its column"
                        ))
                    };
                    q = match kind {
                        Kind::Int => q.bind(match v {
                            Value::Null => None,
                            v => Some(v.as_i64().ok_or_else(wrong)?),
                        }),
                        Kind::Text => q.bind(match v {
                            Value::Null => None,
                            v => Some(v.as_str().ok_or_else(wrong)?.to_owned()),
                        }),
                        Kind::Bytes => q.bind(match v {
                            Value::Null => None,
                            v => Some(
                                B64.decode(v.as_str().ok_or_else(wrong)?)
                                    .map_err(|_| wrong())?,
                            ),
                        }),
                    };
                }
                q.execute(&mut *tx).await?;
                rows += 1;
            }
        }
        self.keep_versions(&mut tx, &served).await?;
        if self.backend == Backend::Postgres {
            for table in IDENTITIES {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                     COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                );
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
            for (hash, bytes) in &files {
                for (n, chunk) in bytes.chunks(1 << 20).enumerate() {
                    sqlx::query("INSERT INTO blob_chunks (hash, n, data) VALUES ($1, $2, $3)")
                        .bind(hash.as_str())
                        .bind(n as i64)
                        .bind(chunk.to_vec())
                        .execute(&mut *tx)
                        .await?;
                }
                if bytes.is_empty() {
                    sqlx::query("INSERT INTO blob_chunks (hash, n, data) VALUES ($1, 0, $2)")
                        .bind(hash.as_str())
                        .bind(Vec::<u8>::new())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        if !self.columns(&mut tx, "audit").await?.is_empty() {
            tx.event("import", crate::access::KindId::Apply, &dump.made_by);
        }
        tx.commit().await?;
        if self.backend == Backend::Sqlite {
            for (hash, bytes) in &files {
                let path = portico_model::app::blob_path(blobs_dir, hash);
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
                }
                tokio::fs::write(&path, bytes)
                    .await
                    .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
            }
        }
        Ok((rows, files.len()))
    }
}

impl Store {
    /// After an import over a store that served `served` (gateway key, version, hash):
    /// each gateway of both keeps at least the version it had, and moves past it when its
    /// content differs (so that its nodes fetch it). The snapshot's envelope says the
    /// version too: it is rewritten, which for a snapshot holding private keys takes the
    /// secret key they are sealed with.
    async fn keep_versions(
        &self,
        conn: &mut AnyConnection,
        served: &[(String, i64, String)],
    ) -> Result<(), Error> {
        for (name, was, was_hash) in served {
            let row: Option<(i64, i64, String, String)> = sqlx::query_as(
                "SELECT s.gateway_id, s.version, s.hash, s.body FROM snapshots s \
                 JOIN gateways g ON g.id = s.gateway_id WHERE g.name_key = $1",
            )
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((gateway_id, version, hash, body)) = row else {
                continue;
            };
            let keep = if hash == *was_hash {
                version.max(*was)
            } else if version > *was {
                version
            } else {
                was + 1
            };
            if keep == version {
                continue;
            }
            let sealed = body.starts_with(super::SEALED_BODY);
            if sealed && self.sealer.is_none() {
                return Err(bad(format!(
                    "gateway `{name}`: its snapshot in the dump is version {version}, and this \
                     store served version {was}, so it must become version {keep}; it holds \
                     private keys, sealed: give the secret key the dump's secrets are sealed \
                     with (--secret-key-file) to rewrite it"
                )));
            }
            let clear = super::open_body(self.sealer.as_deref(), body)?;
            let mut envelope: Value = super::from_json(&clear)?;
            envelope["version"] = Value::from(keep);
            let body =
                super::seal_body(self.sealer.as_deref(), super::to_json(&envelope)?, sealed)?;
            sqlx::query("UPDATE snapshots SET version = $1, body = $2 WHERE gateway_id = $3")
                .bind(keep)
                .bind(body)
                .bind(gateway_id)
                .execute(&mut *conn)
                .await?;
            tracing::info!(
                gateway = %name,
                dumped = version,
                served = was,
                now = keep,
                "snapshot version kept above what the store served"
            );
        }
        Ok(())
    }
}

impl Dump {
    /// Reads a dump from the bytes of its file: what it says about itself first (not a
    /// dump, or one from a newer Portico, is refused as such, with the versions), then the
    /// rest. The checksum is checked by [`Store::import`].
    pub fn read(bytes: &[u8]) -> Result<Dump, Error> {
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a Portico store dump: {e}")))?;
        let made_by = header.made_by.as_deref().unwrap_or("an unknown Portico");
        if header.format.as_deref() != Some(FORMAT) {
            return Err(bad(format!(
                "not a Portico store dump (its `format` is {}, not `{FORMAT}`)",
                header
                    .format
                    .as_deref()
                    .map_or("missing".to_owned(), |f| format!("`{f}`"))
            )));
        }
        if let Some(v) = header.format_version
            && v > FORMAT_VERSION
        {
            return Err(bad(format!(
                "the dump was made by a newer Portico ({made_by}): its format is version {v},                  this Portico reads version {FORMAT_VERSION} at most. Import it with that                  Portico or a newer one"
            )));
        }
        if let Some(v) = header.schema_version
            && v > super::SCHEMA_VERSION
        {
            return Err(bad(format!(
                "the dump was made by a newer Portico ({made_by}): its schema is version {v},                  newer than this Portico's ({}). Import it with that Portico or a newer one",
                super::SCHEMA_VERSION
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a Portico store dump: {e}")))
    }

    /// This dump brought to this Portico's schema when it is older: loaded into a scratch
    /// SQLite store in `scratch` (an empty directory, removed after) at the dump's own
    /// version, migrated exactly as a store of that version is when a newer Portico starts
    /// on it, and exported again. A dump of this schema is answered as it is; a newer one
    /// is left for [`Store::import`] to refuse.
    pub async fn upgraded(self, scratch: &Path) -> Result<Dump, Error> {
        if self.schema_version >= super::SCHEMA_VERSION {
            return Ok(self);
        }
        let made_by = self.made_by.clone();
        let upgraded = async {
            let store = Store::open_at(scratch, self.schema_version).await?;
            let blobs = scratch.join("blobs");
            store.import(&self, &blobs, true).await?;
            store.migrate(super::SCHEMA_VERSION).await?;
            let out = store.export(&blobs).await;
            store.pool.close().await;
            out
        }
        .await;
        let _ = std::fs::remove_dir_all(scratch);
        let mut out = upgraded?;
        tracing::info!(
            from = self.schema_version,
            to = out.schema_version,
            "the dump's schema brought up to date"
        );
        out.made_by = made_by;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table is in the dump but the ones that need not travel: a new table cannot be
    /// forgotten by `store export`.
    #[tokio::test]
    async fn the_dump_names_every_table() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        // The schema's own bookkeeping; app files travel as files; sign-in failures are
        // forgotten in minutes anyway; snapshot deltas are dropped on import (nodes fetch
        // whole snapshots after it).
        tables.retain(|t| {
            ![
                "schema_migrations",
                "blob_chunks",
                "signin_failures",
                "snapshot_deltas",
            ]
            .contains(&t.as_str())
        });
        tables.sort();
        let mut dumped: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        dumped.sort();
        assert_eq!(tables, dumped);
    }

    /// A dump of a store, read back into another: the same rows; a changed byte is refused.
    #[tokio::test]
    async fn a_dump_reads_back_and_a_changed_one_is_refused() {
        let (a, b) = (
            tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
            tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        );
        let from = Store::open(a.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut dump = from
            .export(&a.path().join("blobs"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let to = Store::open(b.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (rows, _) = to
            .import(&dump, &b.path().join("blobs"), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rows > 0);
        let again = to
            .export(&b.path().join("blobs"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let gateways = |d: &Dump| d.tables["gateways"].rows.clone();
        assert_eq!(gateways(&again), gateways(&dump));
        if let Some(t) = dump.tables.get_mut("roles")
            && let Some(row) = t.rows.first_mut()
        {
            row[1] = Value::from("changed");
        }
        let e = to
            .import(&dump, &b.path().join("blobs"), true)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("damaged"), "{e}");
    }

    fn route(name: &str, path: &str) -> portico_model::RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "gateways": ["default"],
            "route": {"match": {"path": {"path_prefix": path}}, "forward": {"service": "s"}},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The built-in gateway's snapshot: its stored version, its hash, and the version its
    /// envelope (what nodes are sent) says.
    async fn builtin(store: &Store) -> (u64, String, u64) {
        let (id, _, version) = store
            .snapshot_versions()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .find(|(_, name, _)| name == super::super::DEFAULT_GATEWAY)
            .unwrap_or_else(|| panic!("no built-in gateway"));
        let snap = store
            .snapshot(id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no snapshot"));
        let envelope: portico_model::SyncEnvelope =
            serde_json::from_str(&snap.body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(snap.version, version);
        (version, snap.hash, envelope.version)
    }

    /// `import --force` over a store whose gateways have gone further than the dump's: no
    /// version goes down. Other content moves past what the store served (its nodes, which
    /// ask for what is newer than theirs, fetch it); the same content keeps the higher
    /// version. The envelope nodes are sent says the same version as the store.
    #[tokio::test]
    async fn a_forced_import_never_moves_a_version_down() {
        let dir = || tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (dir(), dir());
        // The dump: the built-in gateway at version 1, nothing on it.
        let from = Store::open(a.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        from.ensure_default_gateway(0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dump = from
            .export(&a.path().join("blobs"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (dumped, dumped_hash, _) = builtin(&from).await;
        assert_eq!(dumped, 1);

        // The target: the same gateway, moved on by routes placed on it.
        let to = Store::open(b.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        to.ensure_default_gateway(0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        to.create(&portico_model::Service::new(
            "s",
            ["127.0.0.1:9".to_owned()],
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        for (name, path) in [("r1", "/one"), ("r2", "/two")] {
            to.create(&route(name, path))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (served, served_hash, _) = builtin(&to).await;
        assert!(served > dumped, "{served}");
        assert_ne!(served_hash, dumped_hash);

        // Other content: one past what was served, the envelope too.
        to.import(&dump, &b.path().join("blobs"), true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            builtin(&to).await,
            (served + 1, dumped_hash.clone(), served + 1)
        );

        // The same content as served: the higher version stays (nothing new to fetch).
        let again = to
            .export(&b.path().join("blobs"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut lower = again;
        let snapshots = lower
            .tables
            .get_mut("snapshots")
            .unwrap_or_else(|| panic!("no snapshots"));
        let column = snapshots
            .columns
            .iter()
            .position(|c| c == "version")
            .unwrap_or_else(|| panic!("no version column"));
        for row in &mut snapshots.rows {
            row[column] = Value::from(1);
        }
        lower.checksum = checksum(&lower.tables, &lower.files);
        to.import(&lower, &b.path().join("blobs"), true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(builtin(&to).await, (served + 1, dumped_hash, served + 1));
    }

    /// A dump from a newer Portico, whose format or schema is later than this one's (and
    /// which may have fields this one does not know), is refused for being newer.
    #[test]
    fn a_dump_from_a_newer_portico_is_refused_as_newer() {
        let dump = |field: &str, value: Value| {
            let mut v = serde_json::json!({
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "schema_version": super::super::SCHEMA_VERSION, "made_by": "portico 9.0.0",
                "made_at": 0, "tables": {}, "files": {}, "checksum": "", "added_later": true,
            });
            v[field] = value;
            serde_json::to_vec(&v).unwrap_or_default()
        };
        for (field, value) in [
            ("format_version", Value::from(FORMAT_VERSION + 1)),
            (
                "schema_version",
                Value::from(super::super::SCHEMA_VERSION + 1),
            ),
        ] {
            let e = Dump::read(&dump(field, value))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("made by a newer Portico (portico 9.0.0)"),
                "{field}: {e}"
            );
        }
        let e = Dump::read(&dump("format", Value::from("other")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not a Portico store dump"), "{e}");
    }

    /// A dump of an older schema (9: before stored `path_prefix` routes had their rewrite
    /// written out, before roles, the audit log and settings) is refused as it is, and
    /// brought up to date through a scratch store migrated as that store would have been;
    /// then it imports like any other.
    #[tokio::test]
    async fn an_older_dump_is_brought_up_to_date_and_imports() {
        let dir = || tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b, scratch) = (dir(), dir(), dir());
        let old = Store::open_at(a.path(), 9)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query(
            "INSERT INTO routes (name_key, spec, version, created_at, updated_at) VALUES ($1, $2, 1, 0, 0)",
        )
        .bind("old")
        .bind(r#"{"name":"old","gateways":[],"route":{"match":{"path":{"path_prefix":"/a"}},"forward":{"service":"s"}}}"#)
        .execute(&old.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let dump = old
            .export(&a.path().join("blobs"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dump.schema_version, 9);
        assert!(!dump.tables.contains_key("roles"));

        let to = Store::open(b.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let e = to
            .import(&dump, &b.path().join("blobs"), false)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("older"), "{e}");

        let work = scratch.path().join("upgrade");
        let up = dump.upgraded(&work).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(up.schema_version, super::super::SCHEMA_VERSION);
        assert!(!work.exists(), "the scratch store is removed");
        to.import(&up, &b.path().join("blobs"), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let spec: String = sqlx::query_scalar("SELECT spec FROM routes WHERE name_key = 'old'")
            .fetch_one(&to.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let spec: Value = serde_json::from_str(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec["route"]["rewrite"]["prefix"], "/", "{spec}");
        // The built-in roles came with the migrations the dump went through.
        let roles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM roles")
            .fetch_one(&to.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(roles, 3);
    }
}
