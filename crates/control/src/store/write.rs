//! The one way the store writes: [`Store::write`] takes the writer lock and opens a
//! transaction; the change records what it did with [`Write::audit`] and the gateways it
//! touches with [`Write::recompile`]; [`Write::commit`] writes the audit rows in that same
//! transaction, commits, and only then tells the gateways' watchers (sync long-polls, the
//! built-in gateway) about their new snapshot versions. Dropping a `Write` without
//! committing rolls everything back and tells no one.

use std::ops::{Deref, DerefMut};

use sqlx::{Any, AnyConnection, Transaction};
use tokio::sync::MutexGuard;

use super::{Moved, Store, now};
use crate::access::KindId;
use crate::error::Error;

tokio::task_local! {
    /// Who the current request acts for (`admin-token:NAME`, `user:NAME`); set by the
    /// admin API's authentication for the whole request.
    pub static ACTOR: String;
}

/// Who a write acts for: the request's caller, or `system` for the control plane's own work.
pub fn actor() -> String {
    ACTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "system".to_owned())
}

/// One audit row, written at commit.
struct Entry {
    action: &'static str,
    kind: KindId,
    object: String,
    before: Option<i64>,
    after: Option<i64>,
}

/// A write in progress: the writer lock, the transaction, what it did.
pub(crate) struct Write<'a> {
    store: &'a Store,
    tx: Transaction<'static, Any>,
    _lock: MutexGuard<'a, ()>,
    moved: Moved,
    /// Snapshots compiled, held once this commits.
    held: super::Compiled,
    entries: Vec<Entry>,
    /// When it began (Unix nanoseconds): the start of its `deploy` span.
    started: u64,
}

impl Store {
    /// Starts a write (waits for the one before it).
    pub(crate) async fn write(&self) -> Result<Write<'_>, Error> {
        let lock = self.write.lock().await;
        let tx = match self.backend {
            // IMMEDIATE: the database's write lock is taken now, not at the first write
            // after some reads, so a write can never find its read snapshot stale
            // (SQLITE_BUSY).
            super::Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            // Every control-plane node's writes, one at a time: the lock is the
            // transaction's, released by its commit or rollback.
            // (One round trip: the lock is taken with the BEGIN.)
            super::Backend::Postgres => self.pool.begin_with(super::BEGIN_LOCKED).await?,
        };
        Ok(Write {
            store: self,
            tx,
            _lock: lock,
            moved: Vec::new(),
            held: super::Compiled::default(),
            entries: Vec::new(),
            started: crate::trace::unix_nanos(),
        })
    }
}

impl Write<'_> {
    /// Records that `action` was done to `kind` `object`, moving its version from `before`
    /// to `after` (either absent when the object is new, gone, or has no version).
    pub(crate) fn audit(
        &mut self,
        action: &'static str,
        kind: KindId,
        object: &str,
        before: Option<i64>,
        after: Option<i64>,
    ) {
        self.entries.push(Entry {
            action,
            kind,
            object: object.to_owned(),
            before,
            after,
        });
    }

    /// Records an action on an object that has no version (a deploy, a key, a user).
    pub(crate) fn event(&mut self, action: &'static str, kind: KindId, object: &str) {
        self.audit(action, kind, object, None, None);
    }

    /// Inserts a new object of a kind stored as its spec, audited; answers its row id.
    pub(crate) async fn insert<T: serde::Serialize>(
        &mut self,
        kind: KindId,
        name: &str,
        spec: &T,
    ) -> Result<i64, Error> {
        let id = super::insert(&mut self.tx, kind, name, spec).await?;
        self.audit("create", kind, name, None, Some(1));
        Ok(id)
    }

    /// Replaces an object of a kind stored as its spec when `expected` is its version,
    /// audited; answers its row id.
    pub(crate) async fn update<T: serde::Serialize>(
        &mut self,
        kind: KindId,
        name: &str,
        spec: &T,
        expected: i64,
    ) -> Result<i64, Error> {
        let id = super::update(&mut self.tx, kind, name, spec, expected).await?;
        self.audit(
            "update",
            kind,
            name,
            Some(expected),
            Some(expected.saturating_add(1)),
        );
        Ok(id)
    }

    /// Deletes an object of a kind stored as its spec, audited.
    pub(crate) async fn delete(&mut self, kind: KindId, name: &str) -> Result<(), Error> {
        let version = super::delete(&mut self.tx, kind, name).await?;
        self.audit("delete", kind, name, Some(version), None);
        Ok(())
    }

    /// Compiles these gateways again inside the write, reading every key; their new
    /// versions are announced at commit.
    pub(crate) async fn recompile(&mut self, gateway_ids: &[i64]) -> Result<(), Error> {
        self.recompile_keys(gateway_ids, super::KeysTouched::Any)
            .await
    }

    /// [`Write::recompile`] for a write that changed only these consumers' keys,
    /// subscriptions or tiers (see [`super::KeysTouched`]).
    pub(crate) async fn recompile_keys(
        &mut self,
        gateway_ids: &[i64],
        keys: super::KeysTouched<'_>,
    ) -> Result<(), Error> {
        self.compile(gateway_ids, keys, false).await
    }

    /// Compiles the first snapshot of gateways this write inserted; their versions are
    /// announced at commit.
    pub(crate) async fn compile_new(&mut self, gateway_ids: &[i64]) -> Result<(), Error> {
        let with = self.store.compiling();
        let compiled = super::compile_new(&mut self.tx, &with, gateway_ids).await?;
        self.took(compiled);
        Ok(())
    }

    /// [`Write::recompile`], refusing the write when it makes new routes that collide.
    pub(crate) async fn recompile_checked(&mut self, gateway_ids: &[i64]) -> Result<(), Error> {
        self.recompile_checked_keys(gateway_ids, super::KeysTouched::Any)
            .await
    }

    /// [`Write::recompile_keys`], refusing the write when it makes new routes that collide.
    pub(crate) async fn recompile_checked_keys(
        &mut self,
        gateway_ids: &[i64],
        keys: super::KeysTouched<'_>,
    ) -> Result<(), Error> {
        self.compile(gateway_ids, keys, true).await
    }

    /// Compiles these gateways again; with `checked`, new route collisions refuse it.
    async fn compile(
        &mut self,
        gateway_ids: &[i64],
        keys: super::KeysTouched<'_>,
        checked: bool,
    ) -> Result<(), Error> {
        let with = self.store.compiling();
        let compiled = if checked {
            super::recompile_without_new_collisions(&mut self.tx, &with, gateway_ids, keys).await?
        } else {
            super::compile_and_store(&mut self.tx, &with, gateway_ids, false, keys).await?
        };
        self.took(compiled);
        Ok(())
    }

    fn took(&mut self, mut compiled: super::Compiled) {
        self.moved.append(&mut compiled.moved);
        self.held.extend(compiled);
    }

    /// Writes the audit rows, commits, and announces the new snapshot versions.
    pub(crate) async fn commit(mut self) -> Result<Moved, Error> {
        // Audit rows go in statements of up to this many (a statement's parameters are
        // bounded: SQLite's 32,766, PostgreSQL's 65,535).
        const ROWS: usize = 500;
        let notify = self.store.backend == super::Backend::Postgres && !self.moved.is_empty();
        let (at, actor) = (now(), actor());
        let chunks: Vec<&[Entry]> = self.entries.chunks(ROWS).collect();
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.iter().enumerate() {
            let mut sql = String::from(
                "INSERT INTO audit (at, actor, action, kind, object, before_version, after_version) VALUES ",
            );
            for r in 0..chunk.len() {
                let n = r * 5 + 3;
                if r > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "($1, $2, ${n}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4
                ));
            }
            // The notification rides with the last rows: one round trip. It is delivered
            // to every control-plane node when (and only if) this commits.
            let with_notify = notify && i == last;
            if with_notify {
                let n = chunk.len() * 5 + 3;
                sql = format!(
                    "WITH audited AS ({sql}) SELECT 1 FROM pg_notify(${n}, ${})",
                    n + 1
                );
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).bind(&actor);
            for e in *chunk {
                q = q
                    .bind(e.action)
                    .bind(e.kind.as_str())
                    .bind(e.object.as_str())
                    .bind(e.before)
                    .bind(e.after);
            }
            if with_notify {
                q = q
                    .bind(super::notify::CHANNEL)
                    .bind(super::notify::versions_payload(&self.moved));
            }
            q.execute(&mut *self.tx).await?;
        }
        if notify && chunks.is_empty() {
            sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
                .bind(super::notify::CHANNEL)
                .bind(super::notify::versions_payload(&self.moved))
                .execute(&mut *self.tx)
                .await?;
        }
        // A traced request's write that moves snapshots is a deploy: its span's context
        // goes with the new versions, for their nodes' applies.
        let deploy = if self.moved.is_empty() {
            None
        } else {
            crate::trace::Deploy::begin(self.started)
        };
        let mut gateways = Vec::new();
        if let Some(d) = &deploy {
            let tp = d.traceparent();
            for &(gid, version) in &self.moved {
                sqlx::query(
                    "UPDATE snapshots SET trace = $1 WHERE gateway_id = $2 AND version = $3",
                )
                .bind(&tp)
                .bind(gid)
                .bind(version as i64)
                .execute(&mut *self.tx)
                .await?;
                let name: Option<String> =
                    sqlx::query_scalar("SELECT name_key FROM gateways WHERE id = $1")
                        .bind(gid)
                        .fetch_optional(&mut *self.tx)
                        .await?;
                gateways.push((name.unwrap_or_else(|| gid.to_string()), version));
            }
        }
        self.tx.commit().await?;
        std::mem::take(&mut self.held).hold(&self.store.held);
        self.store.hub.publish(&self.moved);
        if let Some(d) = deploy {
            let changes = self
                .entries
                .iter()
                .take(20)
                .map(|e| format!("{} {} {}", e.action, e.kind.as_str(), e.object))
                .collect();
            d.end(&gateways, changes, &actor);
        }
        Ok(self.moved)
    }
}

impl Deref for Write<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for Write<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A write that reads before it writes is never spoiled by a commit that slipped in
    /// between (SQLite's SQLITE_BUSY_SNAPSHOT, "database is locked"): the guard holds the
    /// database's write lock from its first statement.
    #[tokio::test]
    async fn a_write_that_reads_first_is_not_spoiled_by_another_commit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = std::sync::Arc::new(
            super::Store::open(dir.path())
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let mut w = store.write().await.unwrap_or_else(|e| panic!("{e}"));
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM roles")
            .fetch_one(&mut *w)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 3);
        // A writer that does not take the guard (as a careless one could) commits meanwhile.
        let other = store.clone();
        let outside = tokio::spawn(async move {
            sqlx::query("INSERT INTO blobs (hash, size, created_at) VALUES ('h', 1, 0)")
                .execute(&other.pool)
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query(
            "INSERT INTO roles (name_key, name, description, builtin, created_at) VALUES ('x', 'x', '', 0, 0)",
        )
        .execute(&mut *w)
        .await
        .unwrap_or_else(|e| panic!("the guarded write failed: {e}"));
        w.commit().await.unwrap_or_else(|e| panic!("{e}"));
        let done = outside.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(done.is_ok(), "the outside write waits its turn: {done:?}");
    }

    /// A write with more audit rows than one statement carries commits them all.
    #[tokio::test]
    async fn a_write_with_many_audit_rows_keeps_every_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = super::Store::open(dir.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut w = store.write().await.unwrap_or_else(|e| panic!("{e}"));
        for i in 0..1201 {
            w.event("create", crate::access::KindId::Tier, &format!("t{i}"));
        }
        w.commit().await.unwrap_or_else(|e| panic!("{e}"));
        let objects: Vec<String> = sqlx::query_scalar("SELECT object FROM audit ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(objects.len(), 1201);
        assert_eq!(objects[0], "t0");
        assert_eq!(objects[1200], "t1200");
    }

    #[test]
    fn the_locked_begin_takes_the_write_lock() {
        let key: i64 = 0x706f_7274_0002;
        assert!(
            super::super::BEGIN_LOCKED.ends_with(&format!("pg_advisory_xact_lock({key})")),
            "{}",
            super::super::BEGIN_LOCKED
        );
    }
}
